//! One run of a job, once spawned: feeding its standard input, pumping its output into channels or the log,
//! waiting for it and for whatever it left in its process group. The dispatcher decides *what* runs; this file
//! owns *how* a started run is tended, and reports its end through one callback.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::broker::{self, ExitFlag, Feed, PumpEnd, Queue, Target};
use super::process::{self, Child};
use crate::report::Reporter;

/// A new run's standard streams: the child's ends, and the runner's.
pub(crate) struct Wiring {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub parent: ParentEnds,
}

#[derive(Default)]
pub(crate) struct ParentEnds {
    /// An `each` run's messages and the pipe to write them into.
    /// An `each` run's messages not written at its start: the write end, the messages, how much was written.
    pub input_writer: Option<(OwnedFd, Arc<Vec<u8>>, usize)>,
    /// A `stdin:` reader's pipe (write end, a kept read end, its size) and its queue.
    pub feeder_parts: Option<(OwnedFd, OwnedFd, usize, Arc<Queue>)>,
    /// The read end of a queue or broadcast writer's output.
    pub queue_output: Option<OwnedFd>,
    /// The read end of unwired standard output (printed, prefixed).
    pub stdout_read: Option<OwnedFd>,
    pub stderr_read: Option<OwnedFd>,
}

/// How a run ended, as its tending task saw it.
pub(crate) struct RunEnd {
    pub status: Result<std::process::ExitStatus, String>,
    /// How the writer pump ended (a `stdout:` channel), or that unwired output was abandoned.
    pub pump: Option<PumpEnd>,
    /// Messages a `stdin:` reader left unread, put back in its queue.
    pub taken_back: usize,
    /// The kernel killed in the run's cgroup for this limit (`memory limit (512MiB)`).
    pub limit_hit: Option<String>,
}

impl RunEnd {
    /// The end of a run that could not be started.
    pub fn not_started(reason: String) -> RunEnd {
        RunEnd {
            status: Err(reason),
            pump: None,
            taken_back: 0,
            limit_hit: None,
        }
    }
}

/// Tend a started run: write an `each` run's messages, feed a `stdin:` reader, pump stdout into its channel
/// (`target`) or the log, pump stderr, wait for the process, then stop whatever it left behind (its process
/// group, and processes that left the group but carry its marks), take back what a reader left unread, and call
/// `done`. All of it off the dispatcher. `exit_flag` is set when the process exits.
pub(crate) fn supervise(
    mut child: Child,
    parent_ends: ParentEnds,
    sink: LineSink,
    target: Option<Target>,
    stop_grace: Duration,
    exit_flag: Arc<ExitFlag>,
    done: impl FnOnce(RunEnd) + Send + 'static,
) {
    let io = start_io(parent_ends, &sink, target, &exit_flag);
    let pid = child.pid;
    let cgroup = child.cgroup.take();
    tokio::spawn(async move {
        // The output is pumped in this task, beside the wait: two tasks less a run than spawning them.
        let exited = async {
            let status = child.wait().await.map_err(|e| e.to_string());
            exit_flag.set();
            status
        };
        let (status, err_abandoned, out_abandoned) =
            tokio::join!(exited, pump_maybe(io.stderr), pump_maybe(io.stdout));
        let abandoned = err_abandoned || out_abandoned;
        let pump = match io.writer_pump {
            Some(t) => t.await.ok(),
            None => abandoned.then_some(PumpEnd::Abandoned),
        };
        let orphans = stop_leftovers(pid, &sink, stop_grace).await;
        // What is left in the run's cgroup is the run's, wherever it went and whatever it changed.
        let limit_hit = match cgroup {
            Some(cgroup) => {
                stop_all(&cgroup.pids(), stop_grace).await;
                cgroup.limit_hit()
            }
            None => None,
        };
        // The feeder must be gone before the pipe is looked at: it could otherwise still be writing.
        let mut taken_back = 0;
        if let Some((task, feed, queue)) = io.feeder {
            // Whatever still holds the run's input (a daemon that changed its environment) would read on
            // while the unread messages are taken back: it is part of the run, and stopped first.
            if orphans {
                let holders = process::holding_pipe(feed.read_end());
                if !holders.is_empty() {
                    process::signal_all(&holders, libc::SIGTERM);
                    stop_within(stop_grace, || process::any_running(&holders)).await;
                    process::signal_all(&holders, libc::SIGKILL);
                }
            }
            if let Some(task) = task {
                task.abort();
                let _ = task.await;
            }
            taken_back = broker::take_back(&queue, &feed);
        }
        done(RunEnd {
            status,
            pump,
            taken_back,
            limit_hit,
        });
    });
}

/// The tasks that move a run's data.
struct Io {
    /// Unwired stderr and stdout, printed; each says whether its pipe was abandoned.
    stderr: Option<Pump>,
    stdout: Option<Pump>,
    /// The pump of a `stdout:` channel.
    writer_pump: Option<tokio::task::JoinHandle<PumpEnd>>,
    /// The feeder of a `stdin:` reader, for take-back.
    feeder: Option<Feeder>,
}

/// The printing of one unwired output stream; it says whether its pipe was abandoned.
type Pump = std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>;

/// A stream's printing to its end, or nothing to print.
async fn pump_maybe(pump: Option<Pump>) -> bool {
    match pump {
        Some(p) => p.await,
        None => false,
    }
}

/// A `stdin:` reader's feeding task (none if its pipe could not be registered), its feed and its queue.
type Feeder = (Option<tokio::task::JoinHandle<()>>, Arc<Feed>, Arc<Queue>);

/// Start writing an `each` run's messages, feeding a `stdin:` reader, and pumping the run's output.
fn start_io(
    parent_ends: ParentEnds,
    sink: &LineSink,
    target: Option<Target>,
    exit_flag: &Arc<ExitFlag>,
) -> Io {
    use tokio::net::unix::pipe::{Receiver, Sender};
    let ParentEnds {
        input_writer,
        feeder_parts,
        queue_output,
        stdout_read,
        stderr_read,
    } = parent_ends;
    if let Some((w, data, written)) = input_writer {
        tokio::spawn(async move {
            if let Ok(mut w) = Sender::from_owned_fd(w) {
                let _ = w.write_all(&data[written..]).await;
            }
        });
    }
    let feeder = feeder_parts.map(|(w, keep, size, queue)| {
        let feed = Feed::register(&queue, keep);
        let task = Sender::from_owned_fd(w)
            .ok()
            .map(|sender| tokio::spawn(broker::feed(queue.clone(), sender, feed.clone(), size)));
        (task, feed, queue)
    });
    let printed = |read: Option<OwnedFd>, stream: &'static str| -> Option<Pump> {
        let pipe = read.map(Receiver::from_owned_fd)?.ok()?;
        Some(Box::pin(pump_lines(
            pipe,
            sink.clone(),
            stream,
            exit_flag.clone(),
        )))
    };
    let stderr = printed(stderr_read, "stderr");
    let stdout = printed(stdout_read, "stdout");
    let writer_pump = match (target, queue_output.map(Receiver::from_owned_fd)) {
        (Some(target), Some(Ok(stdout))) => Some(tokio::spawn(broker::pump_writer(
            stdout,
            target,
            exit_flag.clone(),
        ))),
        (Some(_), Some(Err(e))) => {
            let end = PumpEnd::Error(e.to_string());
            Some(tokio::spawn(async move { end }))
        }
        _ => None,
    };
    Io {
        stderr,
        stdout,
        writer_pump,
        feeder,
    }
}

/// Whatever the run left behind in its group is stopped too, and the run is over only when its group is:
/// SIGTERM, a wait of up to stop_grace, then SIGKILL (checked every 10 ms, and only while something is left, so a
/// tidy run costs one kill(2)). Then the processes that left the group (setsid, a double fork) but came to the
/// runner as orphans and carry this run's marks in their environment.
/// Returns whether the runner had orphans to look at (then a reader's input pipe is looked at too).
async fn stop_leftovers(pid: u32, sink: &LineSink, stop_grace: Duration) -> bool {
    if pid != 0 && process::group_alive(pid) {
        process::signal_group(pid, libc::SIGTERM);
        stop_within(stop_grace, || process::group_running(pid)).await;
        if process::group_running(pid) {
            process::signal_group(pid, libc::SIGKILL);
        }
    }
    if !process::orphans_exist() {
        return false;
    }
    stop_all(&process::escaped_from(&sink.job, sink.run), stop_grace).await;
    true
}

/// SIGTERM, a wait of up to `stop_grace` while any is running, then SIGKILL.
async fn stop_all(left: &[u32], stop_grace: Duration) {
    if !left.is_empty() {
        process::signal_all(left, libc::SIGTERM);
        stop_within(stop_grace, || process::any_running(left)).await;
        process::signal_all(left, libc::SIGKILL);
    }
}

/// Wait (checking every 10 ms) while `running` says something is left, at most `grace`.
async fn stop_within(grace: Duration, running: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + grace;
    while running() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Where a run's unwired output lines go: the reporter, and the run's log file under `--log-dir`.
#[derive(Clone)]
pub(crate) struct LineSink {
    pub reporter: Arc<Reporter>,
    pub job: String,
    pub run: u64,
    pub log: Option<Arc<super::runlog::RunLog>>,
    /// A `log` readiness probe, shown every line.
    pub watch: Option<Arc<super::probe::LogWatch>>,
    /// When the run last printed (a `log-silence` liveness probe).
    pub heard: Option<Arc<super::liveness::Heard>>,
}

impl LineSink {
    /// One printed piece of a line (`starts_line`: it is a line's first piece, not the rest of a long one).
    async fn line(&self, stream: &'static str, line: &[u8], starts_line: bool) {
        self.reporter
            .output(&self.job, self.run, stream, line)
            .await;
        if let Some(log) = &self.log {
            log.line(line);
        }
        // After the line is out: the `run.ready` it causes follows it in the event log. A `log` probe sees a
        // line's first piece only, so `^` means the start of a line.
        if let (Some(watch), true) = (&self.watch, starts_line) {
            watch.line(line);
        }
        if let Some(heard) = &self.heard {
            heard.line();
        }
    }
}

/// The longest piece of an output line printed at once.
const MAX_LINE: u64 = 64 * 1024;

/// Print a run's output line by line, prefixed; stop waiting a short drain after the process exited.
/// Returns whether the pipe was abandoned (something the run left behind kept it open).
async fn pump_lines<R: tokio::io::AsyncRead + Unpin>(
    src: R,
    sink: LineSink,
    stream: &'static str,
    exit: Arc<ExitFlag>,
) -> bool {
    // A small buffer: most runs print little, and a longer line grows `line`, not the buffer.
    let mut reader = BufReader::with_capacity(8 * 1024, src);
    let mut line = Vec::with_capacity(256);
    let mut late_bytes = 0;
    let mut starts_line = true;
    loop {
        line.clear();
        // A line is printed in pieces of at most MAX_LINE bytes, so a job that never writes a newline cannot
        // make the runner hold its whole output.
        let mut limited = (&mut reader).take(MAX_LINE);
        let read = tokio::select! {
            // Reading comes first: what is in the pipe is printed before the drain can end it.
            biased;
            r = limited.read_until(b'\n', &mut line) => r,
            _ = exit.drained() => {
                if !line.is_empty() {
                    sink.line(stream, &line, starts_line).await;
                }
                return true;
            }
        };
        if exit.window_over() {
            late_bytes += line.len();
            if late_bytes >= broker::DRAIN_BYTES {
                return true;
            }
        }
        match read {
            Ok(0) | Err(_) => return false,
            Ok(_) => sink.line(stream, &line, starts_line).await,
        }
        starts_line = line.ends_with(b"\n");
    }
}
