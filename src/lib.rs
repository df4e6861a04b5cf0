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
//! - `source`, `yaml`, `decode`, `document`, `values`: reading a file into a spanned [`document::Document`]
//!   (`quoted`: where a part of a quoted value was written).
//! - `validate` (the rules of SPEC §2.6, diagnostics with stable codes) builds the [`plan::Plan`]; `trigger`
//!   holds the pure fire-time maths; `render` prints diagnostics.
//! - `engine`: runs a plan. Its loop turns inputs into one `Input`; the dispatcher decides; `supervise` tends
//!   each run (pumps, feeders, take-back); `channel` is the message broker; `process` the OS edge (spawn,
//!   groups, the reaper); `outcome` the pure decisions (exit classification, delays, joins).
//! - `event`: the typed events, rendered as JSON records or notices by `report`.
//! - `store`: what a runner remembers (SPEC §4): the state directory, the `Store` trait and its SQLite backend,
//!   the one writer thread; the engine records into it (`engine::record`). `inspect`: `status`, `history`, `logs`.
//! - `control`: the HTTP API on the control socket and `--listen` (SPEC §5), metrics, reload and `--watch`, and the
//!   commands that talk to a running runner; the engine answers its requests by message (`engine::requests`,
//!   `engine::replan`).
//! - `app` (the commands), `cli` (arguments), `error` (the one error type and its exit codes), `graph`,
//!   `dryrun`, `timefmt`: the edges.

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
mod http;
mod inspect;
mod limits;
mod load;
mod output;
mod plan;
mod quoted;
mod render;
mod report;
mod runner;
mod secret;
pub mod source;
mod store;
mod timefmt;
mod trigger;
pub mod validate;
mod values;
mod yaml;
