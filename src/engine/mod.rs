//! The engine: runs a validated plan. Decisions and actions are apart:
//!
//! ```text
//! signals, --for, timers, runs' ends,     Input      core::Core::handle      Effects     dispatcher (the shell):
//! probes, env reads, requests  --------> (one at a  (decides; no process, ---------> spawn, signal, arm timers,
//!   (Msg, from tasks; the loop below)     time)      clock or tokio)                 emit events, answer callers
//!                                                       |  ask now: queues, store            |
//!                                                       v                                    v
//!                                              ports::ShellWorld            events -> history (store::sink),
//!                                              (channels, store writer)     metrics, reporter, live view
//! ```
//!
//! The loop below only turns what happens (a run's end, a timer, a signal, the deadline, a view tick) into one
//! [`Input`]; the core alone decides, and the shell alone acts. Runs are tended by tasks (`supervise`) that only
//! report back.

mod broker;
pub(crate) mod cgroup;
mod channels;
mod clustered;
mod committer;
mod consume;
mod core;
mod dispatcher;
mod envfile;
mod liveness;
mod ports;
mod probe;
pub(crate) mod process;
mod record;
pub mod replan;
pub mod requests;
mod runlog;
mod supervise;
mod walltimer;

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use self::core::runs::RunId;
use crate::plan::Plan;
use crate::report::{LiveView, Reporter};
use dispatcher::Dispatcher;
use supervise::RunEnd;
use walltimer::WallTimer;

pub use record::{Persist, NUMBER_BLOCK};

/// How a run is shown and bounded, beyond the plan.
#[derive(Default)]
pub struct Options {
    pub run_for: Option<Duration>,
    /// Also write each run's output to DIR/JOB/RUN.log.
    pub log_dir: Option<std::path::PathBuf>,
    pub live: Option<LiveView>,
    pub color: bool,
    /// The state store (SPEC §4); `None` runs without memory.
    pub state: Option<Persist>,
    /// Who else hears every event (the metrics).
    pub observers: Vec<Observer>,
    /// Started with the engine's handle once it runs (the control API).
    pub serve: Option<Serve>,
    /// The durable queues' stores (opened with the state, see [`open_stores`]).
    pub stores: channels::Stores,
    /// The runner's cluster (SPEC §9): time firings are claimed there, run numbers come from there.
    pub cluster: Option<crate::cluster::Link>,
    /// Its consumers of the durable queues the cluster shares.
    pub consumers: Consumers,
}

/// Open the store of every durable queue of `plan` under `state/queues/NAME` (what they hold not done waits
/// first), and say what stores of channels the file no longer has keep. Needs a state.
pub fn open_stores(
    plan: &Plan,
    state: Option<&std::path::Path>,
    reporter: &Arc<Reporter>,
    cluster: Option<&crate::cluster::Link>,
) -> Result<(channels::Stores, Consumers), String> {
    let mut stores = channels::Stores::new();
    if let Some(link) = cluster {
        return open_shared(plan, link, reporter).map(|(s, c)| {
            stores.extend(s);
            (stores, c)
        });
    }
    let durable: Vec<usize> = (0..plan.channels.len())
        .filter(|&c| plan.channels[c].durable)
        .collect();
    let root = match (state, durable.first()) {
        (Some(dir), _) => dir.join("queues"),
        (None, Some(&c)) => {
            return Err(format!(
                "channel `{}` is durable: it keeps its messages in the state, and this runner has none (`--state none`); give it a state, or make the channel not durable",
                plan.channels[c].name
            ))
        }
        (None, None) => return Ok((stores, Consumers::new())),
    };
    for c in durable {
        let name = &plan.channels[c].name;
        let (store, pending) = committer::Durable::open(&root.join(name), name, reporter.clone())
            .map_err(|e| {
            format!("the store of durable channel `{name}` cannot be opened: {e}")
        })?;
        let waiting: u64 = pending.iter().map(|p| p.count).sum();
        if waiting > 0 {
            reporter.notice(&format!(
                "channel `{name}`: {waiting} message(s) kept from before wait first"
            ));
        }
        stores.insert(c, (store, pending));
    }
    let stores = (stores, Consumers::new());
    for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // An empty store (a reload took its channel away before anything was written) says nothing.
        let bytes: u64 = std::fs::read_dir(entry.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|f| f.metadata().ok())
            .map(|m| m.len())
            .sum();
        if bytes > 0 && !plan.channels.iter().any(|c| c.durable && c.name == name) {
            reporter.notice(&format!(
                "{} holds the store of a durable channel `{name}` this file does not have ({bytes} bytes): what it kept stays there (remove the folder to drop it)",
                entry.path().display()
            ));
        }
    }
    Ok(stores)
}

/// This runner's consumers of the durable queues its cluster shares, by channel.
pub type Consumers =
    std::collections::HashMap<crate::plan::ChannelId, crate::cluster::queue::Consumer>;

/// A cluster's runner: every durable queue is a stream of the cluster's store, read through a consumer.
fn open_shared(
    plan: &Plan,
    link: &crate::cluster::Link,
    reporter: &Arc<Reporter>,
) -> Result<(channels::Stores, Consumers), String> {
    let mut stores = channels::Stores::new();
    let mut consumers = Consumers::new();
    for (c, channel) in plan.channels.iter().enumerate().filter(|(_, c)| c.durable) {
        let name = &channel.name;
        let store = crate::cluster::queue::StreamStore::open(&link.config, link.client.clone(), name, channel.capacity)
            .map_err(|e| format!("the stream of durable channel `{name}` in the cluster's store cannot be opened: {e}"))?;
        consumers.insert(
            c,
            crate::cluster::queue::Consumer::new(&link.config, link.client.clone(), name, &store),
        );
        let durable = committer::Durable::start(Box::new(store), name, reporter.clone(), true)
            .map_err(|e| format!("durable channel `{name}`: {e}"))?;
        stores.insert(c, (durable, Vec::new()));
    }
    Ok((stores, consumers))
}

/// Starts the control API with the engine's handle; gives back where a SIGHUP asks for a reload (`None`: the API
/// could not start, and a SIGHUP cannot reload).
pub type Serve = Box<
    dyn FnOnce(requests::EngineHandle) -> Option<tokio::sync::mpsc::UnboundedSender<()>> + Send,
>;

/// A subscriber to the engine's events, called on the dispatcher thread: it must be quick.
pub type Observer = Arc<dyn Fn(&crate::event::Event) + Send + Sync>;

/// How the workflow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Every run that ended succeeded.
    Succeeded,
    /// A run or a message failed for good.
    Failed,
    /// A second SIGINT forced the stop.
    Forced,
    /// A stop asked for did not go cleanly: a run (or what it left) had to be killed after its grace.
    Unclean,
}

impl Ending {
    /// The exit code of the run command (SPEC §3).
    pub fn code(self) -> i32 {
        match self {
            Ending::Succeeded => crate::exit::OK,
            Ending::Failed => crate::exit::FAILED,
            Ending::Forced => crate::exit::FORCED,
            Ending::Unclean => crate::exit::FAILED,
        }
    }
}

/// The signals that stop the runner, installed once at its very start (before the file is read).
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    /// SIGHUP reloads the file (as `flowrun reload`), as daemons do (SPEC §7).
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Install the handlers (inside a runtime).
    pub fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// A stop signal that already arrived (while the workflow was being read), if any.
    fn pending(&mut self) -> Option<Stop> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut ready = |s: &mut tokio::signal::unix::Signal| s.poll_recv(&mut cx).is_ready();
        if ready(&mut self.int) {
            Some(Stop::Interrupt)
        } else if ready(&mut self.term) {
            Some(Stop::Signal("SIGTERM"))
        } else {
            // A SIGHUP while the file was read: the plan is that file already.
            let _ = ready(&mut self.hup);
            None
        }
    }
}

/// What asks the runner to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGINT: a stop, or at the second one a forced stop.
    Interrupt,
    Signal(&'static str),
    Deadline,
}

/// What tasks tell the dispatcher.
enum Msg {
    Exited {
        id: RunId,
        end: RunEnd,
    },
    /// The delay of what the core arranged under this key is over.
    Later(u64),
    /// Messages arrived (or came back) in this channel, where an `each` job waits.
    Wake(crate::plan::ChannelId),
    /// A request of the control API.
    Control(requests::Request),
    /// The run's readiness probe passed.
    Ready(RunId),
    /// The run's readiness probe has had its time.
    NotReady(RunId),
    /// The run's liveness probe failed enough times in a row (why).
    Unhealthy(RunId, String),
    /// The `env_file`s of this job were read (for the [`Later::Prepare`]s waiting on them).
    Prepared {
        job: crate::plan::JobId,
        env: Result<envfile::FileEnv, String>,
    },
    /// The cluster's store answered a claim or a number.
    Claimed {
        key: u64,
        answer: crate::cluster::Answer,
    },
    /// Runs of a runner that stopped answering, taken over by this one.
    TakenOver(crate::cluster::heartbeat::TakenOver),
}

/// One input of the dispatcher.
enum Input {
    Msg(Msg),
    /// The timetable's earliest instant came (or the wall clock was set).
    Timer,
    Stop(Stop),
    /// Refresh the live view.
    ViewTick,
    /// SIGHUP: reload the workflow file.
    Hup,
}

/// Run the plan until the work is done, `run_for` elapses or a signal stops it; the summary is reported.
pub async fn run(
    plan: Arc<Plan>,
    reporter: Arc<Reporter>,
    mut options: Options,
    mut signals: Signals,
) -> Result<Ending, String> {
    // Before anything starts: a runner that cannot wait for wall-clock instants (out of descriptors) says so.
    let mut timer =
        WallTimer::new().map_err(|e| format!("the wall-clock timer cannot be made: {e}"))?;
    let (tx, mut rx) = unbounded_channel();
    if let Err(e) = process::start_reaper() {
        reporter.notice(&format!(
            "cannot become the subreaper of the runs or hear SIGCHLD ({e}): a process that leaves its run's group may outlive it"
        ));
    }
    let deadline = options.run_for.map(|d| tokio::time::Instant::now() + d);
    let serve = options.serve.take();
    let mut d = Dispatcher::new(plan, reporter, tx.clone(), options);
    if let Some(serve) = serve {
        d.reload_on_hup = serve(requests::EngineHandle { tx });
    }
    d.start(signals.pending());
    let mut view_tick = tokio::time::interval(crate::report::TICK);
    view_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !d.finished() {
        timer.set(d.next_due());
        let input = next_input(
            &mut rx,
            &mut timer,
            &mut view_tick,
            &mut signals,
            &d,
            deadline,
        );
        d.handle(input.await);
    }
    // Daemons of runs that escaped every earlier clean-up (a changed environment) end with the runner.
    let (forced, killed) = stop_what_is_left(d.final_grace(), &mut signals).await;
    if forced {
        d.set_forced();
    }
    Ok(d.finish(killed))
}

/// Stop every process still below the runner: SIGTERM (each once, as they come up: a stopped daemon's children
/// come to the runner in turn), then SIGKILL after `grace`. A SIGINT meanwhile kills at once. Returns whether one
/// came, and whether anything had to be killed.
async fn stop_what_is_left(grace: Duration, signals: &mut Signals) -> (bool, bool) {
    let mut signalled = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + grace;
    let (mut forced, mut killed) = (false, false);
    loop {
        process::reap();
        let left = process::living_descendant_pids();
        if left.is_empty() {
            return (forced, killed);
        }
        if forced || tokio::time::Instant::now() >= deadline {
            killed = true;
            process::signal_all(&left, libc::SIGKILL);
        } else {
            let new: Vec<u32> = left.into_iter().filter(|p| signalled.insert(*p)).collect();
            process::signal_all(&new, libc::SIGTERM);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            _ = signals.int.recv() => forced = true,
        }
    }
}

async fn next_input(
    rx: &mut UnboundedReceiver<Msg>,
    timer: &mut WallTimer,
    view_tick: &mut tokio::time::Interval,
    signals: &mut Signals,
    d: &Dispatcher,
    deadline: Option<tokio::time::Instant>,
) -> Input {
    let view = d.has_view();
    let stopping = d.is_stopping();
    loop {
        return tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => Input::Msg(msg),
                None => continue,
            },
            _ = timer.wait() => Input::Timer,
            _ = view_tick.tick(), if view => Input::ViewTick,
            _ = signals.int.recv() => Input::Stop(Stop::Interrupt),
            _ = signals.term.recv() => Input::Stop(Stop::Signal("SIGTERM")),
            _ = signals.hup.recv() => Input::Hup,
            _ = sleep_until_opt(deadline), if deadline.is_some() && !stopping => Input::Stop(Stop::Deadline),
        };
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
