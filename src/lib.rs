//! flowrun: a declarative workflow-file runner. The whole, from text to child process, one way:
//!
//! ```text
//! text -> yaml (spanned tree) -> decode -> Document -> validate -> Plan (Arc) ---------------------.
//!                                    `------------------`-> diagnostics -> render (human|json|github)  |
//!                                                                                                      v
//!   timers, signals, --for --> engine loop --Input--> core (decides) --Effects--> dispatcher (the shell): spawn,
//!   runs' ends, requests -------^  (tasks)              |  World port:             signal, timers, answers
//!                                                       `  queues, store           `--> events --> history (store
//!                                                                                       sink), metrics, report
//! ```
//!
//! - The front half, one folder a stage: `text` (the file's bytes and spans, its spanned YAML tree, where a quoted
//!   value was written) -> `document` (the format as written, `decode`d from the tree; `values` are its names,
//!   durations, times and zones) -> `diagnostics` (codes and severities; `render` prints them) -> `validate` (the
//!   rules of SPEC §2.6, which never build anything; `validate::build` makes the [`plan::Plan`] of a sound
//!   document). `schedule` holds the pure time maths (cron sets, fire times); `limits` what a run's start may take.
//! - `engine`: runs a plan. Its loop turns inputs into one `Input`; `engine::core` decides with no I/O (unit-tested
//!   with a fake world) and leaves effects; the dispatcher, a shell, carries them out; `supervise` tends each run
//!   (pumps, feeders, take-back); `broker` is the message broker; `process` the OS edge (spawn, groups, the
//!   reaper).
//! - `event`: the typed events, rendered as JSON records or notices by `report`.
//! - `store`: what a runner remembers (SPEC §4): the state directory, the `Store` trait and its SQLite backend,
//!   the one writer thread; history rows are made from the engine's events (`store::sink`). `inspect`: `status`,
//!   `history`, `logs`.
//! - `control`: the HTTP API on the control socket and `--listen` (SPEC §5), metrics, reload and `--watch`, and the
//!   commands that talk to a running runner; the engine answers its requests by message (`engine::requests`,
//!   `engine::replan`).
//! - `webpage`: the web page's files, embedded and served at `/` of the API (`control::proxy` is `flowrun ui`).
//! - `app` (the commands), `cli` (arguments), `error` (the one error type and its exit codes), `graph` and
//!   `graph_svg`, `dryrun`, `timefmt`: the edges.

/// Probe addresses and the job's `$NAME`s in them.
mod address;
pub mod app;
pub mod cli;
/// A cluster of runners sharing Redis (SPEC §9): claims, heartbeats, the shared history.
mod cluster;
mod commands;
mod control;
/// Diagnostics: codes, severities, and how they are printed.
pub mod diagnostics;
/// The format as written (spanned), read from the tree, and its values.
mod document;
mod dryrun;
/// Durable channels' stores (SPEC §8): the interface and the local segment log.
pub mod durable;
mod engine;
mod error;
mod event;
mod exit;
mod graph;
mod graph_svg;
mod http;
mod inspect;
mod limits;
mod load;
mod output;
mod plan;
mod report;
mod runner;
/// Time maths: cron sets and the fire times of triggers.
mod schedule;
mod secret;
mod store;
/// systemd's notify protocol.
mod systemd;
/// The text of a workflow file: where it came from, its spanned YAML tree, where a quoted value was written.
pub mod text;
mod timefmt;
pub mod validate;
mod values;
mod webpage;
/// The paths tests and tools knew before the front half had folders.
pub use diagnostics as diagnostic;
pub use text::source;
