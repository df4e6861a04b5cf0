//! The control API of a running runner (SPEC §5): HTTP/1.1 on the Unix socket `STATE/control.sock` (mode 0600)
//! and, with `--listen`, on TCP; one router behind both, served by hyper with limits on what a client can hold.

mod api;
pub mod client;
pub mod commands;
pub mod metrics;
mod process;
mod reload;
mod server;

pub use metrics::Metrics;
pub use server::{bind, Listeners};

use std::path::PathBuf;
use std::sync::Arc;

use crate::engine::control::EngineHandle;

/// What the routes need.
pub struct Context {
    pub engine: EngineHandle,
    pub metrics: Arc<Metrics>,
    pub state_dir: Option<PathBuf>,
    /// The workflow file (a reload reads it again).
    pub file: PathBuf,
    /// `$FLOWRUN_TOKEN`: needed on TCP for anything that changes something.
    pub token: Option<String>,
    /// `--only`: a reload keeps to these jobs.
    pub only: Vec<String>,
    /// One reload at a time, from reading the file to applying it: two racing reloads (`--watch` and
    /// `flowrun reload`) must not apply an older text after a newer one.
    pub reloading: tokio::sync::Mutex<()>,
}

/// Serve the API on the bound listeners until the runner ends (the tasks die with the runtime); with `watch`,
/// reload when the file changes.
pub fn serve(listeners: Listeners, ctx: Context, watch: bool) {
    let ctx = Arc::new(ctx);
    if watch {
        reload::watch(ctx.clone());
    }
    server::serve(listeners, ctx);
}
