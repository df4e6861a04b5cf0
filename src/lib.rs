//! flowrun: a declarative workflow-file runner. The whole, from text to child process, one way:
//!
//! ```text
//! text -> yaml (spanned tree) -> decode -> Document -> validate -> Plan (Arc) ---------------------.
//!                                    `------------------`-> diagnostics -> render (human|json|github)  |
//!                                                                                                      v
//!   timetable --due--> engine loop --Input--> dispatcher --effects--> spawn / signal / channel writes
//!   signals, --for ------^      ^                  |
//!   runs, pumps, timers --------' (tasks)          `--> events --> report (printer, live view)
//! ```
//!
//! - `source`, `yaml`, `decode`, `document`, `values`: reading a file into a spanned [`document::Document`].
//! - `validate` (the rules of SPEC §2.6, diagnostics with stable codes) builds the [`plan::Plan`]; `trigger`
//!   holds the pure fire-time maths; `render` prints diagnostics.
//! - `engine`: runs a plan. Its loop turns inputs into one `Input`; the dispatcher decides; `supervise` tends
//!   each run (pumps, feeders, take-back); `channel` is the message broker; `process` the OS edge (spawn,
//!   groups, the reaper); `outcome` the pure decisions (exit classification, delays, joins).
//! - `event`: the typed events, rendered as JSON records or notices by `report`.
//! - `app` (the commands), `cli` (arguments), `error` (the one error type and its exit codes), `graph`,
//!   `dryrun`: the edges.

pub mod app;
pub mod cli;
mod control;
mod cron;
mod decode;
pub mod diagnostic;
mod document;
mod dryrun;
mod engine;
mod error;
mod event;
mod exit;
mod graph;
mod inspect;
mod plan;
mod render;
mod report;
pub mod source;
mod store;
mod timefmt;
mod trigger;
pub mod validate;
mod values;
mod yaml;
