//! The commands that read a workflow file and print something: `validate`, `next`, `man` (the others: `runner`
//! runs it, `inspect` reads its state, `control` talks to its runner).

pub mod man;
pub mod next;
pub mod validate;
