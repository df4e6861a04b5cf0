//! flowrun: a declarative workflow-file runner.
//!
//! ```text
//! text -> yaml (spanned tree) -> decode -> Document -> validate -> Plan ----------------.
//!                                  `-------------------`-> diagnostics -> render        |
//!                                                                                       v
//!   timers (trigger) --fire--> runner (dispatcher) <--exits-- process (one per run)
//!   signals, --for   -------->     |      ^                          |
//!                                  |      `---- channel (queues) <---' pipes
//!                                  v
//!                        event -> report (text | json)
//! ```

pub mod app;
pub mod channel;
pub mod cli;
pub mod decode;
pub mod diagnostic;
pub mod document;
pub mod dryrun;
pub mod event;
pub mod exit;
pub mod graph;
pub mod live;
pub mod plan;
pub mod process;
pub mod render;
pub mod report;
pub mod run;
pub mod runner;
pub mod scheduler;
pub mod source;
pub mod trigger;
pub mod validate;
pub mod values;
pub mod walltimer;
pub mod yaml;
