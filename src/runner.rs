//! The dispatcher: the one place that sees the whole run. A single loop selects over run events, timer fires,
//! signals and the `--for` deadline; it admits runs to executors, wires channels, and decides when the work is
//! over. Runs, pumps and feeders are tasks that only report back to it.

use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::channel::{Chunk, PumpEnd, Queue, Stats, Target};
use crate::cli::{Progress, RunArgs, TextOrJson};
use crate::event::{timestamp, ChannelCounts, Event, JobCounts, Summary};
use crate::exit;
use crate::live::{ChannelLine, JobLine, LiveView};
use crate::plan::{ChannelKind, Plan, Restart, Status, Trigger, MAX_BACKOFF};
use crate::process;
use crate::report::{Mode, Reporter};
use crate::run::{open_log, supervise, LineSink, ParentEnds, RunEnd, Wiring};
use crate::scheduler::{jitter_delay, Due, Entry, Timetable};
use crate::walltimer::WallTimer;

/// `flowrun run`: validate, then run on a multi-threaded runtime (its worker threads live as long as the runner,
/// which the parent-death signal needs).
pub fn run_command(args: RunArgs) -> i32 {
    process::ensure_standard_fds();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the async runtime starts");
    // Handlers first, before validation: a signal that arrives while the file is read or the first runs start
    // must stop the workflow with a summary, not kill the runner.
    let signals = {
        let _guard = runtime.enter();
        Signals::install()
    };
    let plan = match crate::app::load_plan_as(&args.file, args.log_format == TextOrJson::Json) {
        Ok(plan) => plan,
        Err(code) => return code,
    };
    if args.dry_run {
        crate::app::print_out(&crate::dryrun::describe(&plan, Utc::now()));
        return exit::OK;
    }
    let mode = match args.log_format {
        TextOrJson::Text => Mode::Text,
        TextOrJson::Json => Mode::Json,
    };
    let stderr_tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let color = stderr_tty && std::env::var_os("NO_COLOR").is_none();
    let show_live = match args.progress {
        Progress::Always => true,
        Progress::Never => false,
        Progress::Auto => stderr_tty && mode == Mode::Text,
    };
    let live = show_live.then(|| {
        let names: Vec<String> = plan.channels.iter().map(|c| c.name.clone()).collect();
        let always = args.progress == Progress::Always;
        LiveView::new(
            plan.jobs.len(),
            &names,
            color,
            always,
            plan.ends_by_itself(),
        )
    });
    let reporter = Arc::new(Reporter::new(mode, live.as_ref().map(|v| v.multi())));
    let options = Options {
        run_for: args.run_for,
        log_dir: args.log_dir,
        live,
        color,
    };
    let code = runtime.block_on(run(plan, reporter.clone(), options, signals));
    reporter.flush();
    // Tasks blocked on pipes of orphaned grandchildren must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}

/// The signals that stop the runner, installed once at its very start.
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    /// A closed terminal (SIGHUP) stops the workflow as gracefully as SIGTERM.
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Install the handlers (inside a runtime).
    pub fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            int: signal(SignalKind::interrupt()).expect("SIGINT handler"),
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            hup: signal(SignalKind::hangup()).expect("SIGHUP handler"),
        }
    }

    /// A stop signal that already arrived (while the workflow was being read), if any.
    fn pending(&mut self) -> Option<&'static str> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        if self.int.poll_recv(&mut cx).is_ready() {
            return Some("SIGINT");
        }
        if self.term.poll_recv(&mut cx).is_ready() {
            return Some("SIGTERM");
        }
        if self.hup.poll_recv(&mut cx).is_ready() {
            return Some("SIGHUP");
        }
        None
    }
}

type RunId = u64;

enum Msg {
    Exited {
        id: RunId,
        end: RunEnd,
    },
    Timeout {
        id: RunId,
    },
    KillNow {
        id: RunId,
    },
    Fire {
        job: usize,
        scheduled: DateTime<Utc>,
        first_due: DateTime<Utc>,
        coalesced: u64,
    },
    Retry {
        pending: Pending,
    },
    Restart {
        job: usize,
    },
    Wake,
}

/// A run waiting for a worker of its executor.
struct Pending {
    job: usize,
    scheduled: DateTime<Utc>,
    /// The earliest due instant this firing stands for (lateness is counted from it).
    first_due: DateTime<Utc>,
    attempt: u32,
    /// The messages of an `each` run, and how many.
    input: Option<(Arc<Vec<u8>>, usize)>,
    coalesced: u64,
}

struct Live {
    job: usize,
    number: u64,
    pid: u32,
    started: Instant,
    attempt: u32,
    input: Option<(Arc<Vec<u8>>, usize)>,
    scheduled: DateTime<Utc>,
    stopping: bool,
    by_runner: bool,
    timed_out: bool,
    /// The run's file under `--log-dir`.
    log: Option<Arc<Mutex<std::fs::File>>>,
}

impl Live {
    fn new(
        pending: Pending,
        number: u64,
        pid: u32,
        log: Option<Arc<Mutex<std::fs::File>>>,
    ) -> Live {
        Live {
            job: pending.job,
            number,
            pid,
            started: Instant::now(),
            attempt: pending.attempt,
            input: pending.input,
            scheduled: pending.scheduled,
            stopping: false,
            by_runner: false,
            timed_out: false,
            log,
        }
    }
}

#[derive(Default)]
struct JobState {
    counts: JobCounts,
    live: usize,
    /// Runs in an executor's queue, retries and restarts waiting on a timer, delayed (jitter) firings.
    pending: usize,
    next_number: u64,
    done: bool,
    /// Per trigger: for `after`, which listed jobs reached the status / ended any run since the last firing.
    joins: Vec<Join>,
    fired_via_join: Vec<bool>,
    restart_delay: Duration,
    last_exit: Option<String>,
}

#[derive(Default, Clone)]
struct Join {
    reached: Vec<bool>,
    ended_since: Vec<bool>,
}

struct ChannelRt {
    /// One queue for a queue channel; one per reader job (in `readers` order) for broadcast; none for pipe.
    queues: Vec<Arc<Queue>>,
    stats: Arc<Stats>,
    pipe_read: Option<OwnedFd>,
    pipe_write: Option<OwnedFd>,
    closed: bool,
}

struct Executor {
    busy: usize,
    waiting: VecDeque<Pending>,
}

struct Dispatcher {
    plan: Plan,
    reporter: Arc<Reporter>,
    tx: UnboundedSender<Msg>,
    jobs: Vec<JobState>,
    channels: Vec<ChannelRt>,
    executors: Vec<Executor>,
    live: std::collections::HashMap<RunId, Live>,
    next_id: RunId,
    timetable: Timetable,
    stopping: bool,
    forced: bool,
    failed: bool,
    failed_messages: u64,
    workflow_path: String,
    started_at: DateTime<Utc>,
    log_dir: Option<std::path::PathBuf>,
    view: Option<LiveView>,
    color: bool,
}

/// How a run is shown and bounded, beyond the plan.
#[derive(Default)]
pub struct Options {
    pub run_for: Option<Duration>,
    /// Also write each run's output to DIR/JOB/RUN.log.
    pub log_dir: Option<std::path::PathBuf>,
    pub live: Option<LiveView>,
    pub color: bool,
}

pub async fn run(
    plan: Plan,
    reporter: Arc<Reporter>,
    options: Options,
    mut signals: Signals,
) -> i32 {
    let run_for = options.run_for;
    let (tx, mut rx) = unbounded_channel();
    if let Err(e) = process::start_reaper() {
        reporter.notice(&format!(
            "cannot become the subreaper of the runs ({e}): a process that leaves its run's group may outlive it"
        ));
    }
    let mut d = Dispatcher::new(plan, reporter, tx);
    d.log_dir = options.log_dir;
    d.view = options.live;
    d.color = options.color;
    match signals.pending() {
        Some(why) => {
            d.announce();
            d.stop(why);
        }
        None => d.start(),
    }
    d.main_loop(&mut rx, run_for, &mut signals).await
}

impl Dispatcher {
    fn new(plan: Plan, reporter: Arc<Reporter>, tx: UnboundedSender<Msg>) -> Dispatcher {
        let started_at = Utc::now();
        let jobs = plan
            .jobs
            .iter()
            .map(|job| JobState {
                next_number: 1,
                joins: job
                    .triggers
                    .iter()
                    .map(|t| match t {
                        Trigger::After { jobs, .. } => Join {
                            reached: vec![false; jobs.len()],
                            ended_since: vec![false; jobs.len()],
                        },
                        _ => Join::default(),
                    })
                    .collect(),
                fired_via_join: vec![false; job.triggers.len()],
                restart_delay: Duration::from_millis(100),
                ..JobState::default()
            })
            .collect();
        let channels = plan
            .channels
            .iter()
            .map(|c| {
                let stats = Arc::new(Stats::default());
                let space = Arc::new(tokio::sync::Notify::new());
                let queues = match c.kind {
                    ChannelKind::Queue => {
                        vec![Queue::new(c.capacity, stats.clone(), space.clone())]
                    }
                    ChannelKind::Broadcast => c
                        .readers
                        .iter()
                        .map(|_| Queue::new(c.capacity, stats.clone(), space.clone()))
                        .collect(),
                    ChannelKind::Pipe => Vec::new(),
                };
                let (pipe_read, pipe_write) = if c.kind == ChannelKind::Pipe {
                    let (r, w) = os_pipe::pipe().expect("a pipe can be created");
                    process::grow_pipe(w.as_fd());
                    (Some(OwnedFd::from(r)), Some(OwnedFd::from(w)))
                } else {
                    (None, None)
                };
                ChannelRt {
                    queues,
                    stats,
                    pipe_read,
                    pipe_write,
                    closed: false,
                }
            })
            .collect();
        let executors = plan
            .executors
            .iter()
            .map(|_| Executor {
                busy: 0,
                waiting: VecDeque::new(),
            })
            .collect();
        let workflow_path = plan.path.display().to_string();
        let mut entries = Vec::new();
        for (j, job) in plan.jobs.iter().enumerate() {
            for (t, trigger) in job.triggers.iter().enumerate() {
                if let Trigger::Time { rule, .. } = trigger {
                    entries.push(Entry {
                        job: j,
                        trigger: t,
                        rule: rule.rule(started_at),
                        misfire_grace: job.misfire_grace,
                        coalesce: job.coalesce,
                    });
                }
            }
        }
        let timetable = Timetable::new(entries, started_at);
        Dispatcher {
            plan,
            reporter,
            tx,
            jobs,
            channels,
            executors,
            live: Default::default(),
            next_id: 1,
            timetable,
            stopping: false,
            forced: false,
            failed: false,
            failed_messages: 0,
            workflow_path,
            started_at,
            log_dir: None,
            view: None,
            color: false,
        }
    }

    fn announce(&self) {
        let mut e = Event::new("runner.start");
        e.reason = Some(format!("workflow {}", self.plan.name));
        self.reporter.event(&e, None);
    }

    fn start(&mut self) {
        self.announce();
        let now = self.started_at;
        for j in 0..self.plan.jobs.len() {
            let starts = self.plan.jobs[j]
                .triggers
                .iter()
                .filter(|t| matches!(t, Trigger::Start))
                .count();
            for _ in 0..starts {
                self.fire(j, now, now, 0);
            }
            if self.plan.jobs[j].each().is_some() {
                self.pump_each(j);
            }
        }
        self.admit();
        self.refresh();
    }

    async fn main_loop(
        &mut self,
        rx: &mut UnboundedReceiver<Msg>,
        run_for: Option<Duration>,
        signals: &mut Signals,
    ) -> i32 {
        let deadline = run_for.map(|d| tokio::time::Instant::now() + d);
        let mut timer = WallTimer::new().expect("a timerfd can be created");
        let mut view_tick = tokio::time::interval(crate::live::TICK);
        view_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            if self.finished() {
                break;
            }
            timer.set(self.timetable.earliest());
            tokio::select! {
                msg = rx.recv() => {
                    if let Some(msg) = msg {
                        self.handle(msg);
                    }
                }
                _ = timer.wait() => self.due_timers(),
                _ = view_tick.tick(), if self.view.is_some() => self.refresh_view(),
                _ = signals.int.recv() => {
                    if self.stopping {
                        self.force();
                    } else {
                        self.stop("SIGINT");
                    }
                }
                _ = signals.term.recv() => self.stop("SIGTERM"),
                _ = signals.hup.recv() => self.stop("SIGHUP"),
                _ = sleep_until_opt(deadline), if deadline.is_some() && !self.stopping => self.stop("--for elapsed"),
            }
        }
        self.finish()
    }

    fn finished(&self) -> bool {
        self.live.is_empty() && (self.stopping || self.jobs.iter().all(|j| j.done))
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Exited { id, end } => self.on_exit(id, end),
            Msg::Timeout { id } => {
                if let Some(run) = self.live.get_mut(&id) {
                    if !run.stopping {
                        run.timed_out = true;
                        let (job, number) = (run.job, run.number);
                        let mut e =
                            Event::new("run.timeout").job(&self.plan.jobs[job].name, Some(number));
                        e.pid = Some(run.pid);
                        self.reporter.event(
                            &e,
                            Some(format!("{}#{number} timed out", self.plan.jobs[job].name)),
                        );
                        self.stop_run(id, false);
                    }
                }
            }
            Msg::KillNow { id } => {
                if let Some(run) = self.live.get(&id) {
                    process::signal_group(run.pid, libc::SIGKILL);
                }
            }
            Msg::Fire {
                job,
                scheduled,
                first_due,
                coalesced,
            } => {
                self.jobs[job].pending -= 1;
                self.fire(job, scheduled, first_due, coalesced);
            }
            Msg::Retry { pending } => {
                self.jobs[pending.job].pending -= 1;
                if self.stopping {
                    self.give_back(pending);
                } else {
                    self.jobs[pending.job].pending += 1;
                    self.enqueue(pending);
                }
            }
            Msg::Restart { job } => {
                self.jobs[job].pending -= 1;
                let now = Utc::now();
                self.fire(job, now, now, 0);
            }
            Msg::Wake => {
                for j in 0..self.plan.jobs.len() {
                    if self.plan.jobs[j].each().is_some() {
                        self.pump_each(j);
                    }
                }
            }
        }
        self.admit();
        self.refresh();
    }

    /// A firing: skipped beyond `max_instances`, else queued for a worker.
    fn fire(
        &mut self,
        job: usize,
        scheduled: DateTime<Utc>,
        first_due: DateTime<Utc>,
        coalesced: u64,
    ) {
        if self.stopping || self.jobs[job].done {
            return;
        }
        let spec = &self.plan.jobs[job];
        let state = &mut self.jobs[job];
        if state.live + state.pending >= spec.max_instances {
            state.counts.skipped += 1;
            let mut e = Event::new("run.skipped").job(&spec.name, None);
            e.scheduled = Some(timestamp(scheduled));
            e.reason = Some(format!(
                "max_instances ({}) runs are alive",
                spec.max_instances
            ));
            self.reporter.event(
                &e,
                Some(format!(
                    "{} skipped: max_instances ({}) reached",
                    spec.name, spec.max_instances
                )),
            );
            return;
        }
        state.pending += 1;
        self.enqueue(Pending {
            job,
            scheduled,
            first_due,
            attempt: 1,
            input: None,
            coalesced,
        });
    }

    fn enqueue(&mut self, pending: Pending) {
        let ex = self.plan.jobs[pending.job].executor;
        self.executors[ex].waiting.push_back(pending);
    }

    /// Start waiting runs while their executors have free workers (FIFO per executor).
    fn admit(&mut self) {
        if self.stopping {
            return;
        }
        for ex in 0..self.executors.len() {
            while self.executors[ex].busy < self.plan.executors[ex].max_workers {
                let Some(pending) = self.executors[ex].waiting.pop_front() else {
                    break;
                };
                self.jobs[pending.job].pending -= 1;
                self.executors[ex].busy += 1;
                // A lone time firing is started on this CPU for latency; bursts and message runs are left to
                // the scheduler, which spreads them over the CPUs for throughput.
                let alone = pending.coalesced > 0 && self.executors[ex].waiting.is_empty();
                self.start_run(pending, alone);
            }
        }
    }

    /// Take messages for `each` runs while the job may start more.
    fn pump_each(&mut self, job: usize) {
        let Some((channel, batch)) = self.plan.jobs[job].each() else {
            return;
        };
        if self.stopping || self.jobs[job].done {
            return;
        }
        let queue = self.reader_queue(channel, job);
        loop {
            let state = &self.jobs[job];
            if state.live + state.pending >= self.plan.jobs[job].max_instances {
                break;
            }
            match queue.pop_batch(batch) {
                Some((data, count)) => {
                    self.jobs[job].pending += 1;
                    let now = Utc::now();
                    self.enqueue(Pending {
                        job,
                        scheduled: now,
                        first_due: now,
                        attempt: 1,
                        input: Some((Arc::new(data), count)),
                        coalesced: 0,
                    });
                }
                None => {
                    // Ask the writer pumps for a wake-up, then look again in case messages arrived meanwhile.
                    queue
                        .wake_dispatcher
                        .store(true, std::sync::atomic::Ordering::Release);
                    if queue.waiting() == 0 {
                        break;
                    }
                }
            }
        }
    }

    fn reader_queue(&self, channel: usize, job: usize) -> Arc<Queue> {
        let c = &self.plan.channels[channel];
        match c.kind {
            ChannelKind::Broadcast => {
                let i = c
                    .readers
                    .iter()
                    .position(|&r| r == job)
                    .expect("a reader of its channel");
                self.channels[channel].queues[i].clone()
            }
            _ => self.channels[channel].queues[0].clone(),
        }
    }

    fn start_run(&mut self, pending: Pending, pin: bool) {
        let job_id = pending.job;
        let number = self.jobs[job_id].next_number;
        self.jobs[job_id].next_number += 1;
        self.jobs[job_id].counts.runs += 1;
        self.jobs[job_id].live += 1;
        let id = self.next_id;
        self.next_id += 1;
        let job = self.plan.jobs[job_id].clone();
        let scheduled = timestamp(pending.scheduled);

        let spawned = self.wire(job_id, &job, &pending).and_then(|w| {
            let child = process::spawn(process::SpawnSpec {
                job: &job,
                run: number,
                workflow: &self.workflow_path,
                scheduled: &scheduled,
                stdin: w.stdin,
                stdout: w.stdout,
                stderr: w.stderr,
                pin,
            })?;
            Ok((child, w.parent))
        });
        let (child, parent_ends) = match spawned {
            Ok(started) => started,
            Err(e) => {
                let reason = format!("cannot start `{}`: {e}", job.command.display());
                self.live.insert(id, Live::new(pending, number, 0, None));
                let _ = self.tx.send(Msg::Exited {
                    id,
                    end: RunEnd {
                        status: Err(reason),
                        pump: None,
                        taken_back: 0,
                    },
                });
                return;
            }
        };
        let pid = child.pid;
        let lateness = Utc::now() - pending.first_due;
        let mut e = Event::new("run.start").job(&job.name, Some(number));
        e.pid = Some(pid);
        e.scheduled = Some(scheduled.clone());
        e.lateness_us = lateness.num_microseconds();
        if pending.attempt > 1 {
            e.attempt = Some(pending.attempt);
        }
        if pending.coalesced > 1 {
            e.coalesced = Some(pending.coalesced);
        }
        if let Some((_, n)) = &pending.input {
            e.messages = Some(*n as u64);
        }
        // Routine starts are in the status area when it is shown; plain output lists them.
        let quiet = pending.input.is_some() || self.view.is_some();
        self.reporter.event(
            &e,
            (!quiet).then(|| format!("{}#{number} started (pid {pid})", job.name)),
        );

        if let Some(timeout) = job.timeout {
            let tx = self.tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                let _ = tx.send(Msg::Timeout { id });
            });
        }
        let target = job.stdout.map(|c| {
            let tx = self.tx.clone();
            Target {
                queues: self.channels[c].queues.clone(),
                max_message: self.plan.channels[c].max_message,
                wake: Arc::new(move || {
                    let _ = tx.send(Msg::Wake);
                }),
            }
        });
        let log = self
            .log_dir
            .as_ref()
            .and_then(|dir| open_log(dir, &job, number, &scheduled, &self.reporter));
        let sink = LineSink {
            reporter: self.reporter.clone(),
            job: job.name.clone(),
            run: number,
            log: log.clone(),
        };
        let tx = self.tx.clone();
        supervise(
            child,
            parent_ends,
            sink,
            target,
            job.stop_grace,
            move |end| {
                let _ = tx.send(Msg::Exited { id, end });
            },
        );
        self.live.insert(id, Live::new(pending, number, pid, log));
    }

    /// The three standard streams of a new run (child ends) and the runner's ends of them.
    fn wire(
        &self,
        job_id: usize,
        job: &crate::plan::Job,
        pending: &Pending,
    ) -> std::io::Result<Wiring> {
        let mut parent = ParentEnds::default();
        // Standard input: an `each` batch, a channel, or /dev/null (never the runner's own stdin).
        let stdin = if let Some((data, _)) = &pending.input {
            let (r, w) = process::pipe()?;
            parent.input_writer = Some((w, data.clone()));
            r
        } else if let Some(c) = job.stdin {
            match self.plan.channels[c].kind {
                ChannelKind::Pipe => match &self.channels[c].pipe_read {
                    Some(fd) => fd.try_clone()?,
                    None => process::dev_null()?,
                },
                _ => {
                    let (r, w) = process::pipe()?;
                    let size = process::grow_pipe(w.as_fd());
                    // The runner keeps a read end: unread messages can be counted and taken back.
                    let keep = r.try_clone()?;
                    parent.feeder_parts = Some((w, keep, size, self.reader_queue(c, job_id)));
                    r
                }
            }
        } else {
            process::dev_null()?
        };
        // Standard output: a pipe channel's write end, a pump into a queue, or prefixed log lines.
        let stdout = match job.stdout {
            Some(c) if self.plan.channels[c].kind == ChannelKind::Pipe => {
                match &self.channels[c].pipe_write {
                    Some(fd) => fd.try_clone()?,
                    None => process::dev_null()?,
                }
            }
            // A queue or broadcast writer gets a large pipe so the pump reads big blocks.
            Some(_) => {
                let (r, w) = process::pipe()?;
                process::grow_pipe(w.as_fd());
                parent.queue_output = Some(r);
                w
            }
            None => {
                let (r, w) = process::pipe()?;
                parent.stdout_read = Some(r);
                w
            }
        };
        let (stderr_read, stderr) = process::pipe()?;
        parent.stderr_read = Some(stderr_read);
        Ok(Wiring {
            stdin,
            stdout,
            stderr,
            parent,
        })
    }

    fn on_exit(&mut self, id: RunId, end: RunEnd) {
        let RunEnd {
            status,
            pump,
            taken_back,
        } = end;
        let Some(mut run) = self.live.remove(&id) else {
            return;
        };
        let job_id = run.job;
        let job = self.plan.jobs[job_id].clone();
        self.jobs[job_id].live -= 1;
        self.executors[job.executor].busy -= 1;
        if taken_back > 0 {
            let mut e = Event::new("channel.takeback").job(&job.name, Some(run.number));
            e.channel = job.stdin.map(|c| self.plan.channels[c].name.clone());
            e.messages = Some(taken_back as u64);
            self.reporter.event(&e, None);
            // `each` jobs of the channel may be idle, waiting for messages: these are new to them.
            let _ = self.tx.send(Msg::Wake);
        }
        use std::os::unix::process::ExitStatusExt;
        let mut e = Event::new("run.exit").job(&job.name, Some(run.number));
        e.pid = (run.pid != 0).then_some(run.pid);
        let mut reason = None;
        let mut success = match &status {
            Ok(s) => {
                e.code = s.code();
                e.signal = s.signal().map(process::signal_name);
                s.success()
            }
            Err(msg) => {
                reason = Some(msg.clone());
                false
            }
        };
        match &pump {
            Some(PumpEnd::Overlong { length }) => {
                success = false;
                let limit = self.plan.channels[job.stdout.unwrap_or(0)].max_message;
                reason = Some(format!(
                    "wrote a line of {length}+ bytes, longer than max_message ({limit})"
                ));
            }
            Some(PumpEnd::Error(err)) => reason = Some(format!("reading its output: {err}")),
            Some(PumpEnd::Partial { bytes }) => {
                reason = Some(format!(
                    "its output ended without a newline; the last {bytes} byte(s) were delivered as one message"
                ))
            }
            Some(PumpEnd::Abandoned) => {
                reason.get_or_insert_with(|| {
                    "its output stayed open after it exited (a background process?)".into()
                });
            }
            _ => {}
        }
        // A writer stopped by SIGPIPE because every reader of its channel had ended is what a shell pipeline
        // does (`seq 1000000 | head -1`): not a failure.
        let readers_gone = match job.stdout {
            Some(c) if self.plan.channels[c].kind == ChannelKind::Pipe => {
                self.channels[c].pipe_read.is_none()
            }
            Some(_) => matches!(pump, Some(PumpEnd::NoReader)),
            None => false,
        };
        // (Through `sh -c` the shell reports its child's SIGPIPE as exit status 141.)
        let sigpipe = e.signal.as_deref() == Some("SIGPIPE") || e.code == Some(128 + libc::SIGPIPE);
        if !success && readers_gone && sigpipe {
            success = true;
            reason = Some("stopped by SIGPIPE: every reader of its channel had ended".into());
        }
        if run.timed_out {
            success = false;
            reason = Some(format!(
                "timed out after {}",
                crate::values::format_duration(job.timeout.unwrap_or_default())
            ));
        }
        e.reason = reason.clone();
        let stopped_by_runner = run.by_runner && !run.timed_out;
        let status_text = match (&e.code, &e.signal) {
            (Some(c), _) => format!("exited {c}"),
            (None, Some(s)) => format!("killed by {s}"),
            _ => "could not start".to_string(),
        };
        self.jobs[job_id].last_exit = Some(status_text.clone());
        if let Some(log) = &run.log {
            use std::io::Write;
            let mut file = log.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(
                file,
                "# {status_text}{} after {:.3}s",
                reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                run.started.elapsed().as_secs_f64()
            );
        }
        let shown_status = if stopped_by_runner {
            format!("stopped ({status_text})")
        } else {
            status_text.clone()
        };
        let text = format!(
            "{}#{} {}{}",
            job.name,
            run.number,
            shown_status,
            reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        let quiet = success && (run.input.is_some() || self.view.is_some());
        self.reporter.event(&e, (!quiet).then_some(text));

        // Outcome: stopped by the runner at shutdown counts neither way.
        let outcome = if stopped_by_runner {
            None
        } else if success {
            self.jobs[job_id].counts.succeeded += 1;
            Some(Status::Success)
        } else {
            self.jobs[job_id].counts.failed += 1;
            Some(Status::Failure)
        };

        if outcome == Some(Status::Failure) {
            let retry = job.retry.as_ref().filter(|r| run.attempt <= r.attempts);
            if let (Some(retry), false) = (retry, self.stopping) {
                let backoff = retry
                    .backoff
                    .saturating_mul(1 << (run.attempt - 1).min(20))
                    .min(MAX_BACKOFF);
                let mut e = Event::new("run.retry").job(&job.name, Some(run.number));
                e.attempt = Some(run.attempt + 1);
                e.reason = Some(format!(
                    "retry in {}",
                    crate::values::format_duration(backoff)
                ));
                self.reporter.event(
                    &e,
                    Some(format!(
                        "{}#{} will be retried in {}",
                        job.name,
                        run.number,
                        crate::values::format_duration(backoff)
                    )),
                );
                self.jobs[job_id].pending += 1;
                let pending = Pending {
                    job: job_id,
                    scheduled: run.scheduled,
                    first_due: run.scheduled,
                    attempt: run.attempt + 1,
                    input: run.input.take(),
                    coalesced: 0,
                };
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(backoff).await;
                    let _ = tx.send(Msg::Retry { pending });
                });
            } else if let Some((data, count)) = run.input.take() {
                self.dead_letter(job_id, data, count);
            } else if !self.stopping || !run.by_runner {
                self.failed = true;
            }
        } else if outcome.is_none() {
            // Stopped at shutdown: an `each` run's messages were not done; they wait again.
            if let Some((data, count)) = run.input.take() {
                self.give_back_input(job_id, data, count);
            }
        }

        // Joins downstream.
        for d in 0..self.plan.jobs.len() {
            for (t, trig) in self.plan.jobs[d].triggers.iter().enumerate() {
                if let Trigger::After { jobs, status } = trig {
                    for (k, &u) in jobs.iter().enumerate() {
                        if u == job_id && outcome.is_some() {
                            self.jobs[d].joins[t].ended_since[k] = true;
                            if *status == Status::Any || outcome == Some(*status) {
                                self.jobs[d].joins[t].reached[k] = true;
                            }
                        }
                    }
                }
            }
        }
        let ready: Vec<(usize, usize)> = (0..self.plan.jobs.len())
            .flat_map(|d| (0..self.plan.jobs[d].triggers.len()).map(move |t| (d, t)))
            .filter(|&(d, t)| {
                matches!(self.plan.jobs[d].triggers[t], Trigger::After { .. })
                    && self.jobs[d].joins[t].reached.iter().all(|r| *r)
            })
            .collect();
        for (d, t) in ready {
            let n = self.jobs[d].joins[t].reached.len();
            self.jobs[d].joins[t] = Join {
                reached: vec![false; n],
                ended_since: vec![false; n],
            };
            self.jobs[d].fired_via_join[t] = true;
            let now = Utc::now();
            self.fire(d, now, now, 0);
        }

        // Services come back.
        let restart = match job.restart {
            Restart::Always => true,
            Restart::OnFailure => {
                outcome == Some(Status::Failure)
                    && job.retry.as_ref().is_none_or(|r| run.attempt > r.attempts)
            }
            Restart::Never => false,
        };
        // A reader whose input is closed and drained has nothing left to do: it is not brought back.
        let input_over = job.stdin.is_some_and(|c| match self.plan.channels[c].kind {
            ChannelKind::Pipe => self.channels[c].closed,
            _ => self.reader_queue(c, job_id).settled(),
        });
        if restart && !self.stopping && !input_over {
            let state = &mut self.jobs[job_id];
            if run.started.elapsed() >= Duration::from_secs(10) {
                state.restart_delay = Duration::from_millis(100);
            }
            let delay = state.restart_delay;
            state.restart_delay = (delay * 2).min(Duration::from_secs(30));
            state.pending += 1;
            let tx = self.tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = tx.send(Msg::Restart { job: job_id });
            });
        }
        if job.each().is_some() {
            self.pump_each(job_id);
        }
    }

    fn dead_letter(&mut self, job: usize, data: Arc<Vec<u8>>, count: usize) {
        match self.plan.jobs[job].dead_letter {
            Some(c) => {
                let chunk = Chunk::from_vec(data.as_ref().clone(), count);
                match self.plan.channels[c].kind {
                    ChannelKind::Pipe => {}
                    _ => {
                        let queues = self.channels[c].queues.clone();
                        for q in &queues {
                            q.push_unbounded(chunk.clone());
                        }
                        for q in &queues {
                            q.wake_dispatcher
                                .store(false, std::sync::atomic::Ordering::Release);
                        }
                        let _ = self.tx.send(Msg::Wake);
                    }
                }
            }
            None => {
                self.failed_messages += count as u64;
                self.failed = true;
            }
        }
    }

    /// Messages of an `each` run that never completed go back to the front of their queue.
    fn give_back_input(&mut self, job: usize, data: Arc<Vec<u8>>, count: usize) {
        if let Some((channel, _)) = self.plan.jobs[job].each() {
            let queue = self.reader_queue(channel, job);
            queue.push_front(Chunk::from_vec(data.as_ref().clone(), count));
        }
    }

    fn give_back(&mut self, pending: Pending) {
        if let Some((data, count)) = pending.input {
            self.give_back_input(pending.job, data, count);
        }
    }

    /// Handle every time firing that is due (the timetable applies misfire grace and coalescing).
    fn due_timers(&mut self) {
        let now = Utc::now();
        if self.stopping {
            return;
        }
        for due in self.timetable.due(now) {
            match due {
                Due::Missed {
                    job,
                    scheduled,
                    late,
                    count,
                    ..
                } => {
                    let spec = &self.plan.jobs[job];
                    self.jobs[job].counts.missed += count;
                    let mut e = Event::new("run.missed").job(&spec.name, None);
                    e.scheduled = Some(timestamp(scheduled));
                    e.messages = (count > 1).then_some(count);
                    e.reason = Some(format!(
                        "handled {}ms late; misfire_grace is {}",
                        late.num_milliseconds(),
                        crate::values::format_duration(spec.misfire_grace)
                    ));
                    self.reporter.event(
                        &e,
                        Some(format!(
                            "{} missed its firing at {}",
                            spec.name,
                            timestamp(scheduled)
                        )),
                    );
                }
                Due::Fire {
                    job,
                    trigger,
                    scheduled,
                    first_due,
                    coalesced,
                } => {
                    let jitter = match &self.plan.jobs[job].triggers[trigger] {
                        Trigger::Time { jitter, .. } => *jitter,
                        _ => Duration::ZERO,
                    };
                    if jitter.is_zero() {
                        self.fire(job, scheduled, first_due, coalesced);
                    } else {
                        let delay = jitter_delay(jitter, rand::random::<f64>());
                        self.jobs[job].pending += 1;
                        let tx = self.tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let _ = tx.send(Msg::Fire {
                                job,
                                scheduled,
                                first_due,
                                coalesced,
                            });
                        });
                    }
                }
            }
        }
        self.admit();
        self.refresh();
    }

    /// Mark jobs that can never fire again as done, close the channels they wrote, and fail dead joins.
    fn refresh(&mut self) {
        loop {
            let mut changed = false;
            for j in 0..self.plan.jobs.len() {
                if self.jobs[j].done || self.jobs[j].live > 0 || self.jobs[j].pending > 0 {
                    continue;
                }
                if !self.can_fire_again(j) {
                    self.jobs[j].done = true;
                    changed = true;
                    self.on_job_done(j);
                }
            }
            if !changed {
                break;
            }
        }
    }

    fn can_fire_again(&self, j: usize) -> bool {
        if self.stopping {
            return false;
        }
        self.plan.jobs[j]
            .triggers
            .iter()
            .enumerate()
            .any(|(t, trig)| match trig {
                Trigger::Start => false,
                Trigger::Time { .. } => self.timetable.can_fire(j, t),
                Trigger::After { jobs, .. } => jobs
                    .iter()
                    .enumerate()
                    .all(|(k, &u)| self.jobs[j].joins[t].reached[k] || !self.jobs[u].done),
                Trigger::Each { channel, .. } => !self.reader_queue(*channel, j).settled(),
            })
    }

    fn on_job_done(&mut self, j: usize) {
        // A join that can never complete: skipped for good (unless its upstream simply ended after the last firing
        // it contributed to). That alone does not fail the workflow: a failure handler that is not needed is the
        // normal case, and an upstream failure already fails it.
        for (t, trig) in self.plan.jobs[j].triggers.iter().enumerate() {
            if let Trigger::After { jobs, status } = trig {
                let join = &self.jobs[j].joins[t];
                let never_fired = !self.jobs[j].fired_via_join[t];
                let blocking: Vec<&str> = jobs
                    .iter()
                    .enumerate()
                    .filter(|&(k, &u)| {
                        !join.reached[k]
                            && self.jobs[u].done
                            && (never_fired || join.ended_since[k])
                    })
                    .map(|(_, &u)| self.plan.jobs[u].name.as_str())
                    .collect();
                if !blocking.is_empty() && !self.stopping {
                    let want = match status {
                        Status::Success => "success",
                        Status::Failure => "failure",
                        Status::Any => "an end",
                    };
                    let reason = format!(
                        "`after` can never fire: {} ended without reaching {want}",
                        blocking.join(", ")
                    );
                    self.jobs[j].counts.skipped += 1;
                    let e = Event::new("run.skipped")
                        .job(&self.plan.jobs[j].name, None)
                        .reason(reason.clone());
                    self.reporter.event(
                        &e,
                        Some(format!(
                            "{} skipped for good: {reason}",
                            self.plan.jobs[j].name
                        )),
                    );
                }
            }
        }
        for c in 0..self.plan.channels.len() {
            let channel = &self.plan.channels[c];
            let writers_done = channel.writers.iter().all(|&w| self.jobs[w].done);
            if channel.writers.contains(&j) && writers_done && !self.channels[c].closed {
                self.channels[c].closed = true;
                // Dropping the runner's write end lets the reader see EOF once the writer's runs are gone.
                self.channels[c].pipe_write = None;
                for q in &self.channels[c].queues {
                    q.close();
                }
                let mut e = Event::new("channel.closed");
                e.channel = Some(channel.name.clone());
                e.messages = Some(
                    self.channels[c]
                        .stats
                        .taken_in
                        .load(std::sync::atomic::Ordering::Relaxed),
                );
                self.reporter.event(&e, None);
                let _ = self.tx.send(Msg::Wake);
            }
            if channel.readers.contains(&j) {
                match channel.kind {
                    ChannelKind::Pipe => self.channels[c].pipe_read = None,
                    ChannelKind::Queue => {
                        if channel.readers.iter().all(|&r| self.jobs[r].done) {
                            self.channels[c].queues[0].orphan();
                        }
                    }
                    ChannelKind::Broadcast => {
                        let i = channel
                            .readers
                            .iter()
                            .position(|&r| r == j)
                            .expect("reader");
                        self.channels[c].queues[i].orphan();
                    }
                }
            }
        }
    }

    fn stop(&mut self, why: &str) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        let mut e = Event::new("runner.stopping");
        e.reason = Some(why.to_string());
        self.reporter.event(
            &e,
            Some(format!(
                "stopping ({why}): stopping {} run(s)",
                self.live.len()
            )),
        );
        self.timetable.clear();
        for ex in 0..self.executors.len() {
            while let Some(p) = self.executors[ex].waiting.pop_front() {
                self.jobs[p.job].pending -= 1;
                self.give_back(p);
            }
        }
        // Writers blocked on full queues must be able to finish: nobody will read now.
        for c in &self.channels {
            for q in &c.queues {
                q.orphan();
            }
        }
        let ids: Vec<RunId> = self.live.keys().copied().collect();
        for id in ids {
            self.stop_run(id, true);
        }
        for c in &mut self.channels {
            c.pipe_write = None;
            c.pipe_read = None;
        }
    }

    fn stop_run(&mut self, id: RunId, by_runner: bool) {
        let Some(run) = self.live.get_mut(&id) else {
            return;
        };
        if run.stopping {
            return;
        }
        run.stopping = true;
        run.by_runner = by_runner;
        if run.pid == 0 {
            return;
        }
        let grace = self.plan.jobs[run.job].stop_grace;
        if grace.is_zero() {
            // No grace: nothing (not even a TERM trap) runs between the stop and the kill.
            process::signal_group(run.pid, libc::SIGKILL);
            return;
        }
        process::signal_group(run.pid, libc::SIGTERM);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let _ = tx.send(Msg::KillNow { id });
        });
    }

    fn force(&mut self) {
        self.forced = true;
        for run in self.live.values() {
            if run.pid != 0 {
                process::signal_group(run.pid, libc::SIGKILL);
            }
        }
    }

    fn refresh_view(&mut self) {
        let Some(view) = &mut self.view else { return };
        let mut waiting = vec![0usize; self.plan.jobs.len()];
        for ex in &self.executors {
            for p in &ex.waiting {
                waiting[p.job] += 1;
            }
        }
        let jobs: Vec<JobLine> = self
            .plan
            .jobs
            .iter()
            .enumerate()
            .map(|(j, job)| JobLine {
                name: job.name.clone(),
                running: self.jobs[j].live,
                waiting: waiting[j],
                done: self.jobs[j].done,
                runs: self.jobs[j].counts.runs,
                succeeded: self.jobs[j].counts.succeeded,
                failed: self.jobs[j].counts.failed,
                last_exit: self.jobs[j].last_exit.clone(),
                next_fire: self.timetable.next_for(j),
            })
            .collect();
        let channels: Vec<ChannelLine> = self
            .plan
            .channels
            .iter()
            .enumerate()
            .map(|(c, channel)| ChannelLine {
                name: channel.name.clone(),
                kind: channel.kind.as_str(),
                taken_in: self.channels[c]
                    .stats
                    .taken_in
                    .load(std::sync::atomic::Ordering::Relaxed),
                out: self.channels[c]
                    .stats
                    .handed_out
                    .load(std::sync::atomic::Ordering::Relaxed),
                waiting: self.channels[c]
                    .queues
                    .iter()
                    .map(|q| q.waiting() as u64)
                    .sum(),
            })
            .collect();
        view.update(&jobs, &channels);
    }

    fn finish(&mut self) -> i32 {
        if let Some(view) = self.view.take() {
            view.finish();
        }
        let mut summary = Summary {
            failed_messages: self.failed_messages,
            ..Summary::default()
        };
        for (j, job) in self.plan.jobs.iter().enumerate() {
            summary
                .jobs
                .insert(job.name.clone(), self.jobs[j].counts.clone());
        }
        for (c, channel) in self.plan.channels.iter().enumerate() {
            let stats = &self.channels[c].stats;
            let left: usize = self.channels[c].queues.iter().map(|q| q.waiting()).sum();
            summary.channels.insert(
                channel.name.clone(),
                ChannelCounts {
                    taken_in: stats.taken_in.load(std::sync::atomic::Ordering::Relaxed),
                    out: stats.handed_out.load(std::sync::atomic::Ordering::Relaxed),
                    left: left as u64,
                },
            );
        }
        let code = if self.forced {
            exit::FORCED
        } else if self.failed {
            exit::FAILED
        } else {
            exit::OK
        };
        // Daemons of runs that escaped every earlier clean-up (a changed environment) end with the runner.
        let grace = match self.forced {
            true => Duration::ZERO,
            false => self
                .plan
                .jobs
                .iter()
                .map(|j| j.stop_grace)
                .max()
                .unwrap_or_default(),
        };
        process::stop_descendants(grace);
        let mut e = Event::new("runner.stop");
        e.code = Some(code);
        e.summary = Some(summary.clone());
        self.reporter.event(&e, None);
        self.reporter.text(&summary.table(self.color));
        code
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
