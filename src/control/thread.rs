//! The API's own thread: both listeners and `--watch` are served by a current-thread tokio runtime on a thread of
//! their own, at a lower CPU priority, so a flood of requests competes with the dispatcher neither for the
//! engine's runtime workers nor, under load, for the CPU. (Tokio channels work across runtimes: the API asks the
//! engine by message as before.)

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

use super::{reload, server, Context, Listeners};

/// How much nicer the API thread is than the dispatcher: the kernel runs the engine first when both want the CPU.
/// On Linux nice is per thread, and the threads this one starts (the store readers) inherit it.
const NICER: libc::c_int = 10;

/// How long tasks still blocked at the end (a store read, a reload's check) may hold the runner's exit.
const END_GRACE: Duration = Duration::from_millis(100);

/// The running API; stopping it (or dropping it) ends its thread and removes the control socket.
pub struct ApiThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiThread {
    /// End the API and wait for its thread (bounded: the runtime gives blocked tasks [`END_GRACE`]).
    pub fn stop(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ApiThread {
    fn drop(&mut self) {
        self.end();
    }
}

/// Start the API's thread and wait until it serves: when the runner says it started, the listeners accept and
/// `--watch` sees changes (a file edited right after is reloaded). `Err` with the reason when it cannot start
/// (the listeners are closed then).
pub fn start(
    listeners: Listeners,
    ctx: Context,
    watch: bool,
    reloads: tokio::sync::mpsc::UnboundedReceiver<()>,
) -> Result<ApiThread, String> {
    let (stop, stopped) = oneshot::channel();
    let (serving, ready) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("flowrun-api".into())
        .spawn(move || run(listeners, ctx, (watch, reloads), serving, stopped))
        .map_err(|e| format!("the control API's thread cannot start: {e}"))?;
    let api = ApiThread {
        stop: Some(stop),
        thread: Some(thread),
    };
    match ready.recv() {
        Ok(Ok(())) => Ok(api),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("the control API's thread ended before it served".into()),
    }
}

fn run(
    listeners: Listeners,
    ctx: Context,
    (watch, mut reloads): (bool, tokio::sync::mpsc::UnboundedReceiver<()>),
    serving: std::sync::mpsc::Sender<Result<(), String>>,
    stopped: oneshot::Receiver<()>,
) {
    lower_priority();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        // Its blocking threads (store reads, a reload's check): named to be told from the engine's.
        .thread_name("flowrun-api-io")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = serving.send(Err(format!(
                "the control API cannot start its runtime: {e}"
            )));
            return;
        }
    };
    runtime.block_on(async move {
        let ctx = Arc::new(ctx);
        if watch {
            reload::watch(ctx.clone());
        }
        // SIGHUP, heard by the engine, reloads here as `flowrun reload` does.
        let hup = ctx.clone();
        tokio::spawn(async move {
            while reloads.recv().await.is_some() {
                let _ = reload::reload(&hup).await;
            }
        });
        if crate::systemd::active() {
            tokio::spawn(keepalive(ctx.clone()));
        }
        server::serve(listeners, ctx);
        let _ = serving.send(Ok(()));
        let _ = stopped.await;
    });
    // Dropping the tasks closes the connections and removes the socket file (see `server::serve`).
    runtime.shutdown_timeout(END_GRACE);
}

/// How often systemd hears the runner's status when it asked for no watchdog.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// While the dispatcher answers, systemd hears WATCHDOG=1 (when it asked) and a one-line status: a dispatcher
/// that hangs stops the pings, and systemd's watchdog restarts the runner.
async fn keepalive(ctx: Arc<Context>) {
    // Not more often than every 100 ms, whatever WATCHDOG_USEC says (1 µs would be a busy loop).
    let every = crate::systemd::watchdog_every()
        .unwrap_or(STATUS_EVERY)
        .max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(status) = ctx.engine.status().await else {
            return;
        };
        crate::systemd::alive(&status_line(&status));
    }
}

/// `4 jobs: 1 running, 2 waiting; 120 runs, 3 failed`
fn status_line(status: &crate::engine::requests::LiveStatus) -> String {
    let running: usize = status.jobs.iter().map(|j| j.running.len()).sum();
    let waiting: usize = status.jobs.iter().map(|j| j.waiting).sum();
    let runs: u64 = status.jobs.iter().map(|j| j.counts.runs).sum();
    let failed: u64 = status.jobs.iter().map(|j| j.counts.failed).sum();
    format!(
        "{} jobs: {running} running, {waiting} waiting; {runs} runs, {failed} failed",
        status.jobs.len()
    )
}

/// Nice this thread (not the process: `PRIO_PROCESS` with a thread id names one thread on Linux) by [`NICER`]
/// than it was: relative, so a runner started nice stays below it (and at most 19, the lowest priority).
fn lower_priority() {
    // SAFETY: gettid has no preconditions; getpriority and setpriority only read and change this thread's
    // scheduling priority (a failure leaves it as it was, which is harmless).
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, (now + NICER).min(19));
    }
}
