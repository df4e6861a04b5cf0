//! The control API of a running runner (SPEC §5): HTTP/1.1 on the Unix socket `STATE/control.sock` (mode 0600)
//! and, with `--listen`, on TCP; one router behind both, served by hyper with limits on what a client can hold,
//! on a thread of its own ([`thread`]).

mod api;
pub mod client;
mod cluster;
mod coalesce;
pub mod commands;
mod events;
mod graph;
mod history_pages;
pub mod inbox;
pub mod metrics;
mod pause;
mod procfs;
pub mod proxy;
mod readers;
mod reload;
mod runlog;
mod runs;
mod server;
mod stalled;
mod thread;
pub mod timeouts;

pub use api::{trigger_answer, trigger_end, trigger_waits};
pub use cluster::ClusterView;
pub use metrics::Metrics;
pub use server::{bind, Listeners};
pub use thread::ApiThread;

use std::path::PathBuf;
use std::sync::Arc;

use crate::engine::requests::EngineHandle;

/// What the routes need.
pub struct Context {
    pub engine: EngineHandle,
    pub metrics: Arc<Metrics>,
    /// The workflow file (a reload reads it again).
    pub file: PathBuf,
    /// `$FLOWRUN_TOKEN`: needed on TCP for anything that changes something.
    pub token: Option<String>,
    /// `--only`: a reload keeps to these jobs.
    pub only: Vec<String>,
    /// Where the API's own notices go (the runner's log: text or JSON events, never a raw line).
    pub reporter: Arc<crate::report::Reporter>,
    /// One reload at a time, from reading the file to applying it: two racing reloads (`--watch` and
    /// `flowrun reload`) must not apply an older text after a newer one.
    pub reloading: tokio::sync::Mutex<()>,
    /// The store's readers shared by every request (`None` without state).
    readers: Option<readers::Readers>,
    /// The plan being run (replaced by each reload applied): the graph is drawn from it.
    pub plan: std::sync::Mutex<Option<Arc<crate::plan::Plan>>>,
    /// The status, asked of the dispatcher at most once at a time however many clients ask.
    status: coalesce::Coalescer<Arc<api::Snapshot>>,
    /// Streams open at once (events, followed logs): a stream holds its connection for as long as it is read,
    /// and the connections are bounded, so streams alone must never take them all.
    pub streams: Arc<tokio::sync::Semaphore>,
    /// The runner's cluster, when it is in one (`GET /api/v1/cluster`).
    pub cluster: Option<ClusterView>,
}

/// The most streams open at once: a quarter of the TCP connections (64), so status, health checks and metrics are
/// always answered.
pub const MAX_STREAMS: usize = 16;

/// How often an idle stream writes a comment: a client gone without a word is found then, and its place given
/// back.
pub const STREAM_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(3);

impl Context {
    pub fn new(
        engine: EngineHandle,
        metrics: Arc<Metrics>,
        state_dir: Option<PathBuf>,
        file: PathBuf,
        token: Option<String>,
        only: Vec<String>,
        reporter: Arc<crate::report::Reporter>,
    ) -> Context {
        let asked = engine.clone();
        let status = coalesce::Coalescer::new(Arc::new(move || {
            let engine = asked.clone();
            Box::pin(async move { engine.status().await.map(api::Snapshot::new) })
        }));
        Context {
            engine,
            metrics,
            readers: state_dir.map(readers::Readers::new),
            file,
            token,
            only,
            reporter,
            reloading: Default::default(),
            plan: Default::default(),
            status,
            streams: Arc::new(tokio::sync::Semaphore::new(MAX_STREAMS)),
            cluster: None,
        }
    }

    /// The plan the runner started with (the graph's, until a reload replaces it).
    pub fn with_plan(self, plan: Arc<crate::plan::Plan>) -> Context {
        *self.plan.lock().unwrap_or_else(|e| e.into_inner()) = Some(plan);
        self
    }

    /// The runner's cluster (`GET /api/v1/cluster` lists its runners).
    pub fn with_cluster(mut self, cluster: Option<ClusterView>) -> Context {
        self.cluster = cluster;
        self
    }

    /// Whether the plan being run has this job.
    pub fn knows(&self, job: &str) -> bool {
        let plan = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        plan.as_ref()
            .is_some_and(|p| p.jobs.iter().any(|j| j.name == job))
    }

    /// The engine's status, coalesced with other requests' (`None`: the engine is gone).
    async fn status(&self) -> Option<Arc<api::Snapshot>> {
        self.status.get().await
    }
}

/// Serve the API on the bound listeners, on its own thread, until the returned handle is stopped (or dropped);
/// with `watch`, reload when the file changes.
pub fn serve(
    listeners: Listeners,
    ctx: Context,
    watch: bool,
    reloads: tokio::sync::mpsc::UnboundedReceiver<()>,
) -> Result<ApiThread, String> {
    thread::start(listeners, ctx, watch, reloads)
}
