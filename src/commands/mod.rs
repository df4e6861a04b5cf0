//! The commands that read a workflow file and print something: `validate`, `next`, `man`, `completions` (the
//! others: `runner` runs it, `inspect` reads its state, `control` talks to its runner).

pub mod complete;
pub mod man;
pub mod next;
pub mod validate;
