//! The dispatcher: the one place that sees the whole run. It takes one [`Input`] at a time and decides: firings,
//! admission to executors, starts, stops, the end of the work. Effects (spawning, signalling) happen in the few
//! functions named for them; everything it reports goes through [`Dispatcher::emit`].

use chrono::Utc;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

use super::channels::Channels;
use super::envfile::FileEnv;
use super::probe;
use super::process;
use super::record::Cause;
use super::runlog::RunLog;
use super::state::{Executor, JobState, Pending, Run, RunId, RunState, StopCause};
use super::supervise::{supervise, LineSink, ParentEnds, RunEnd};
use super::timetable::{jitter_delay, Due, Entry, Timetable};
use super::watch::Watch;
use super::{Ending, Input, Later, Msg, Options, Stop};
use crate::event::{timestamp, Event, SkipReason, Summary};
use crate::plan::{ChannelId, JobId, Plan, Trigger};
use crate::report::{ChannelLine, JobLine, LiveView, Reporter};

pub(super) struct Dispatcher {
    pub(super) plan: Arc<Plan>,
    /// `plan.joins_on()`: who hears of a job's runs (a run's end looks at these, not at every job).
    pub(super) joins_on: Vec<Vec<(JobId, usize)>>,
    pub(super) reporter: Arc<Reporter>,
    pub(super) tx: UnboundedSender<Msg>,
    pub(super) jobs: Vec<JobState>,
    pub(super) channels: Channels,
    pub(super) executors: Vec<Executor>,
    pub(super) runs: HashMap<RunId, Run>,
    next_id: RunId,
    /// What `later` arranged, by key, until its time comes.
    /// (A firing whose env files are read has no timer: it waits for its job's read, see `env_reads`.)
    waiting: HashMap<u64, (Later, Option<tokio::task::AbortHandle>)>,
    /// Per job, the firings (keys in `waiting`) that wait for the one read of its env files in flight: a file
    /// that never answers (a hung network mount) holds one thread per job, however often the job fires.
    env_reads: HashMap<JobId, Vec<u64>>,
    next_later: u64,
    timetable: Timetable,
    /// The jobs `refresh` looks at: not done, and held by no time trigger.
    watch: Watch,
    /// How many jobs are not done: the runner ends when none is and nothing runs (asked after every input).
    undone: usize,
    pub(super) stopping: bool,
    forced: bool,
    pub(super) failed: bool,
    pub(super) failed_messages: u64,
    pub(super) log_dir: Option<std::path::PathBuf>,
    view: Option<LiveView>,
    color: bool,
    /// The workflow file as given (`FLOWRUN_WORKFLOW`).
    workflow: String,
    /// When this runner started (a time firing due before it is a catch-up).
    pub(super) started_at: chrono::DateTime<Utc>,
    /// The state store's writer and what the runner was started with, when it has state.
    pub(super) memory: Option<super::record::Recorder>,
    /// Manual firings (the control API) waiting to start or end, by key; and the key of each such live run.
    pub(super) waiters: HashMap<u64, super::requests::Waiter>,
    pub(super) run_waiters: HashMap<RunId, u64>,
    pub(super) next_manual: u64,
    observers: Vec<super::Observer>,
    /// The last handled firing of each time trigger, by (job, trigger fingerprint): from the store at the start,
    /// then as firings are handled (a reload resumes unchanged triggers from here).
    pub(super) handled: HashMap<(String, String), chrono::DateTime<Utc>>,
    /// What waits for the state store to take a write.
    pub(super) held: super::held::Held,
}

impl Dispatcher {
    pub(super) fn new(
        plan: Arc<Plan>,
        reporter: Arc<Reporter>,
        tx: UnboundedSender<Msg>,
        options: Options,
    ) -> Dispatcher {
        let started_at = Utc::now();
        let mut memory = options.state.map(super::record::Recorder::new);
        let handled = memory
            .as_mut()
            .map(|m| m.take_handled())
            .unwrap_or_default();
        // Sized up front: a collected `flat_map` doubles its way up (16,384 entries held for 10,000 jobs).
        let mut entries = Vec::with_capacity(plan.jobs.iter().map(|j| j.triggers.len()).sum());
        for j in 0..plan.jobs.len() {
            entries.extend(time_entries(&plan, j, &handled, started_at));
        }
        let plan_path = plan.path.display().to_string();
        let mut dispatcher = Dispatcher {
            jobs: plan
                .jobs
                .iter()
                .map(|j| {
                    let mut state = JobState::new(&j.triggers);
                    // Run numbers go on from the last runner's (log files and FLOWRUN_RUN never repeat); the
                    // runner's start reserved a block of them.
                    let last = memory.as_ref().map_or(0, |m| m.last_run(&j.name));
                    state.next_number += last;
                    // Committed by the runner's start, before anything ran (unless the store was full then: the
                    // first run asks for them).
                    if memory.as_ref().is_some_and(|m| m.numbers_on_disk) {
                        state.reserved = last + super::record::NUMBER_BLOCK;
                        state.durable = state.reserved;
                    }
                    state.last_success = memory.as_ref().and_then(|m| m.last_success(&j.name));
                    state
                })
                .collect(),
            channels: Channels::new(plan.clone()),
            executors: plan.executors.iter().map(|_| Executor::default()).collect(),
            timetable: Timetable::new(entries, started_at),
            joins_on: plan.joins_on(),
            plan,
            reporter,
            tx,
            runs: HashMap::new(),
            next_id: 1,
            waiting: HashMap::new(),
            env_reads: HashMap::new(),
            next_later: 0,
            stopping: false,
            forced: false,
            failed: false,
            failed_messages: 0,
            log_dir: options.log_dir,
            view: options.live,
            color: options.color,
            workflow: plan_path,
            started_at,
            memory,
            waiters: HashMap::new(),
            run_waiters: HashMap::new(),
            next_manual: 0,
            observers: options.observers,
            handled,
            watch: Watch::default(),
            undone: 0,
            held: Default::default(),
        };
        dispatcher.watch_all();
        dispatcher
    }

    /// Look again at every job that is not done and that no time trigger holds (the start, a stop, a reload:
    /// whatever may change that for many jobs at once).
    pub(super) fn watch_all(&mut self) {
        let (jobs, timetable, stopping) = (&self.jobs, &self.timetable, self.stopping);
        self.watch
            .reset((0..jobs.len()).filter(|&j| !jobs[j].done && (stopping || !timetable.holds(j))));
        self.undone = jobs.iter().filter(|j| !j.done).count();
    }

    /// A job that was done may fire again (a manual firing).
    pub(super) fn undo_done(&mut self, j: JobId) {
        if self.jobs[j].done {
            self.undone += 1;
        }
        self.jobs[j].done = false;
        self.watch.insert(j);
    }

    /// (Re)schedule a job's time triggers (a reload): each resumes after its last handled firing, if any.
    pub(super) fn schedule_job(&mut self, j: JobId) {
        let entries = time_entries(&self.plan, j, &self.handled, Utc::now());
        self.timetable.replace_job(j, entries, Utc::now());
    }

    /// What of job `j` waits to run goes (`flowrun stop JOB`, the job removed by a reload): its firings waiting
    /// for a worker or for their jitter, its retries waiting for their backoff, a service's restart waiting for its
    /// delay. An `each` firing's messages go back to their queue; a caller waiting on a manual firing hears `why`.
    pub(super) fn drop_waiting_of(&mut self, j: JobId, why: &str) {
        for ex in 0..self.executors.len() {
            let (gone, kept): (Vec<Pending>, Vec<Pending>) =
                std::mem::take(&mut self.executors[ex].waiting)
                    .into_iter()
                    .partition(|p| p.job == j);
            self.executors[ex].waiting = kept.into();
            for p in gone {
                self.jobs[j].pending -= 1;
                self.manual_skipped(p.manual, why.into());
                self.give_back(p);
            }
        }
        self.call_off_waiting(|job| job == j, why);
        self.drop_held(|job| job == j);
    }

    /// Call off the firings, retries and restarts of the jobs `of` picks that wait for their time: an `each`
    /// firing's messages go back to their queue (left, not lost), a caller waiting on a manual firing hears `why`.
    fn call_off_waiting(&mut self, of: impl Fn(JobId) -> bool, why: &str) {
        let keys: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, (l, _))| l.job_to_run().is_some_and(&of))
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let Some((later, timer)) = self.waiting.remove(&key) else {
                continue;
            };
            if let Some(timer) = timer {
                timer.abort();
            }
            match later {
                Later::Fire(p) => {
                    self.jobs[p.job].pending -= 1;
                    self.manual_skipped(p.manual, why.into());
                    self.give_back(p);
                }
                Later::Retry(p) => {
                    self.jobs[p.job].pending -= 1;
                    let why = format!("its failed run's retry was called off: {why}");
                    self.manual_skipped(p.manual, why);
                    self.give_back(p);
                }
                Later::Restart(job) => self.jobs[job].pending -= 1,
                Later::Prepare {
                    pending, executor, ..
                } => {
                    self.jobs[pending.job].pending -= 1;
                    self.executors[executor].busy -= 1;
                    self.manual_skipped(pending.manual, why.into());
                    self.give_back(pending);
                }
                Later::Timeout(_) | Later::NotReady(_) | Later::Kill(_) | Later::StoreRetry => {}
            }
        }
    }

    /// Announce the start and fire the `start` triggers, unless a stop signal already came.
    pub(super) fn start(&mut self, stop: Option<Stop>) {
        self.record_anchors();
        self.emit(Event::RunnerStart {
            workflow: self.plan.name.clone(),
            state: self.memory.as_ref().map(|m| m.dir.display().to_string()),
            recovered: self.memory.as_ref().map_or(0, |m| m.recovered),
        });
        if let Some(stop) = stop {
            self.on_stop(stop);
            return;
        }
        // What fell due while no runner was alive is said now, not at the trigger's next instant (a nightly job's
        // misses would wait a day; a missed `at` has no next instant and would never be said).
        self.due_timers();
        for j in 0..self.plan.jobs.len() {
            let starts: Vec<usize> = (0..self.plan.jobs[j].triggers.len())
                .filter(|&t| matches!(self.plan.jobs[j].triggers[t], Trigger::Start))
                .collect();
            for t in starts {
                self.fire(Pending::by(j, t));
            }
            self.pump_each(j);
        }
        self.admit();
        self.refresh();
        if let Some(m) = &self.memory {
            m.hand_over();
        }
    }

    pub(super) fn finished(&self) -> bool {
        self.runs.is_empty() && (self.stopping || self.undone == 0)
    }

    pub(super) fn next_due(&self) -> Option<chrono::DateTime<Utc>> {
        self.timetable.earliest()
    }

    pub(super) fn has_view(&self) -> bool {
        self.view.is_some()
    }

    pub(super) fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Everything that happens goes through here.
    pub(super) fn handle(&mut self, input: Input) {
        match input {
            Input::Msg(Msg::Exited { id, end }) => self.on_exit(id, end),
            Input::Msg(Msg::Later(key)) => self.on_due(key),
            Input::Msg(Msg::Control(request)) => self.on_request(request),
            Input::Msg(Msg::Ready(id)) => self.on_ready(id),
            Input::Msg(Msg::Prepared { job, env }) => self.on_prepared(job, env),
            Input::Msg(Msg::Wake(c)) => {
                let plan = self.plan.clone();
                for &j in &plan.channels[c].readers {
                    self.pump_each(j);
                }
            }
            Input::Timer => self.due_timers(),
            Input::Stop(stop) => self.on_stop(stop),
            Input::ViewTick => return self.refresh_view(),
        }
        self.admit();
        self.refresh();
        // What this input recorded goes to the history writer once, after its runs have started.
        if let Some(m) = &self.memory {
            m.hand_over();
        }
    }

    /// The one way events leave the engine (the reporter now; history, metrics and the API can subscribe here).
    pub(super) fn emit(&self, event: Event) {
        for observe in &self.observers {
            observe(&event);
        }
        self.reporter.event(&event);
    }

    /// Arrange `later` after `delay`. A firing, retry or restart on its way counts as pending for its job. What
    /// waits is kept here, not in the timer task: a stop must find a retry's messages to give them back.
    pub(super) fn later(&mut self, delay: Duration, later: Later) -> u64 {
        match &later {
            Later::Fire(p) | Later::Retry(p) => self.jobs[p.job].pending += 1,
            Later::Restart(job) => self.jobs[*job].pending += 1,
            Later::Prepare { pending, .. } => self.jobs[pending.job].pending += 1,
            Later::Timeout(_) | Later::NotReady(_) | Later::Kill(_) | Later::StoreRetry => {}
        }
        let key = self.next_later;
        self.next_later += 1;
        let tx = self.tx.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Msg::Later(key));
        });
        self.waiting
            .insert(key, (later, Some(timer.abort_handle())));
        key
    }

    /// Call off what was arranged under `key` (a run's timeout or kill, once the run has ended).
    pub(super) fn call_off(&mut self, key: u64) {
        if let Some((_, Some(timer))) = self.waiting.remove(&key) {
            timer.abort();
        }
    }

    /// A delay is over: what was arranged happens, unless a stop took it back meanwhile.
    fn on_due(&mut self, key: u64) {
        if let Some((later, _)) = self.waiting.remove(&key) {
            self.on_later(later);
        }
    }

    /// At a stop: firings, retries and restarts that wait for their time happen no more. Timeouts and kills stay:
    /// they concern runs still being stopped.
    fn drop_waiting(&mut self) {
        self.call_off_waiting(|_| true, "the runner stopped before it started");
    }

    fn on_later(&mut self, later: Later) {
        match later {
            Later::Fire(pending) => {
                self.jobs[pending.job].pending -= 1;
                self.fire(pending);
            }
            Later::Retry(pending) => {
                self.jobs[pending.job].pending -= 1;
                if self.stopping {
                    self.give_back(pending);
                } else {
                    self.enqueue(pending);
                }
            }
            Later::Restart(job) => {
                self.jobs[job].pending -= 1;
                // No trigger: the history says `restart`.
                self.fire(Pending::now(job));
            }
            Later::Timeout(id) => self.on_timeout(id),
            Later::NotReady(id) => self.on_not_ready(id),
            // Comes with its env by `Msg::Prepared`, never by a timer.
            Later::Prepare { .. } => {}
            Later::StoreRetry => self.on_store_retry(),
            Later::Kill(id) => {
                if let Some(pid) = self.runs.get(&id).and_then(|r| r.state.pid()) {
                    process::signal_group(pid, libc::SIGKILL);
                }
            }
        }
    }

    fn on_timeout(&mut self, id: RunId) {
        let Some(run) = self.runs.get(&id) else {
            return;
        };
        if let RunState::Running { pid } = run.state {
            self.emit(Event::RunTimeout {
                job: self.plan.jobs[run.job].name.clone(),
                run: run.number,
                pid,
            });
            let _ = self.stop_run(id, StopCause::Timeout);
        }
    }

    /// A firing: skipped beyond `max_instances`, else queued for a worker.
    pub(super) fn fire(&mut self, pending: Pending) {
        let job = pending.job;
        if self.stopping || self.jobs[job].done || self.plan.jobs[job].retired {
            self.manual_skipped(pending.manual, "the job can fire no more".into());
            return;
        }
        let max = self.plan.jobs[job].max_instances;
        if self.jobs[job].instances() >= max {
            self.jobs[job].counts.skipped += 1;
            let why = SkipReason::MaxInstances(max);
            self.record_skip(job, Cause::of(&pending), Some(pending.scheduled), &why);
            self.manual_skipped(pending.manual, why.text());
            self.emit(Event::RunSkipped {
                job: self.plan.jobs[job].name.clone(),
                scheduled: Some(pending.scheduled),
                why,
            });
            return;
        }
        self.enqueue(pending);
    }

    fn enqueue(&mut self, pending: Pending) {
        self.jobs[pending.job].pending += 1;
        let ex = self.plan.jobs[pending.job].executor;
        self.executors[ex].waiting.push_back(pending);
    }

    fn dequeue(&mut self, ex: usize) -> Option<Pending> {
        let pending = self.executors[ex].waiting.pop_front()?;
        self.jobs[pending.job].pending -= 1;
        Some(pending)
    }

    /// Start waiting runs while their executors have free workers (FIFO per executor).
    pub(super) fn admit(&mut self) {
        if self.stopping {
            return;
        }
        for ex in 0..self.executors.len() {
            while self.executors[ex].busy < self.plan.executors[ex].max_workers {
                let Some(pending) = self.dequeue(ex) else {
                    break;
                };
                self.executors[ex].busy += 1;
                // A lone time firing is started on this CPU for latency; bursts and message runs are left to
                // the scheduler, which spreads them over the CPUs for throughput.
                let alone = pending.coalesced > 0 && self.executors[ex].waiting.is_empty();
                let started = match self.plan.jobs[pending.job].env_files.is_empty() {
                    true => self.start_run(pending, ex, alone, Ok(Vec::new())),
                    false => {
                        self.prepare(pending, ex, alone);
                        true
                    }
                };
                // Held for the store: the rest of this queue waits behind it (FIFO).
                if !started {
                    break;
                }
            }
        }
    }

    /// Take messages for `each` runs while the job may start more.
    pub(super) fn pump_each(&mut self, job: JobId) {
        let Some((channel, batch)) = self.plan.jobs[job].each() else {
            return;
        };
        if self.stopping || self.jobs[job].done {
            return;
        }
        let Some(queue) = self.channels.reader_queue(channel, job).cloned() else {
            return;
        };
        let trigger = self.plan.jobs[job]
            .triggers
            .iter()
            .position(|t| matches!(t, Trigger::Each { .. }));
        while self.jobs[job].instances() < self.plan.jobs[job].max_instances {
            match queue.pop_batch(batch) {
                Some((data, count)) => self.enqueue(Pending {
                    input: Some(super::state::Batch {
                        data: Arc::new(data),
                        count,
                        from: channel,
                    }),
                    trigger,
                    ..Pending::now(job)
                }),
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

    /// A firing with a worker whose `env_file`s must be read first: read on a thread of its own (a slow or
    /// hostile file holds that thread, never the dispatcher), one read per job at a time (firings that come
    /// meanwhile take its result). It waits among what `later` arranged, so a stop or `flowrun stop JOB` calls it
    /// off like a firing waiting for its jitter; its worker is held meanwhile.
    fn prepare(&mut self, pending: Pending, executor: usize, pin: bool) {
        let job = pending.job;
        self.jobs[job].pending += 1;
        let key = self.next_later;
        self.next_later += 1;
        let later = Later::Prepare {
            pending,
            executor,
            pin,
        };
        self.waiting.insert(key, (later, None));
        if let Some(keys) = self.env_reads.get_mut(&job) {
            keys.push(key);
            return;
        }
        self.env_reads.insert(job, vec![key]);
        let files = self.plan.jobs[job].env_files.clone();
        let tx = self.tx.clone();
        let read = move || {
            let env = super::envfile::read(&files);
            let _ = tx.send(Msg::Prepared { job, env });
        };
        if let Err(e) = std::thread::Builder::new()
            .name("flowrun-envfile".into())
            .spawn(read)
        {
            let env = Err(format!("no thread could read its env files: {e}"));
            let _ = self.tx.send(Msg::Prepared { job, env });
        }
    }

    /// Whether the manual firing `manual` is waiting for its job's env files.
    pub(super) fn is_preparing(&self, manual: u64) -> bool {
        self.waiting.values().any(|(later, _)| {
            matches!(later, Later::Prepare { pending, .. } if pending.manual == Some(manual))
        })
    }

    /// A job's env files were read: the firings that waited for them start, unless they were called off.
    fn on_prepared(&mut self, job: JobId, env: Result<FileEnv, String>) {
        for key in self.env_reads.remove(&job).unwrap_or_default() {
            let Some((
                Later::Prepare {
                    pending,
                    executor,
                    pin,
                },
                _,
            )) = self.waiting.remove(&key)
            else {
                continue;
            };
            self.jobs[pending.job].pending -= 1;
            self.start_run(pending, executor, pin, env.clone());
        }
    }

    /// Start a run: give it a number (once that number is on disk: else it waits, `false`), wire it, spawn it,
    /// then announce and tend it (`started`).
    fn start_run(
        &mut self,
        pending: Pending,
        executor: usize,
        pin: bool,
        env: Result<FileEnv, String>,
    ) -> bool {
        if !self.number_ready(pending.job) {
            self.hold(pending, executor);
            return false;
        }
        self.store_back();
        let state = &mut self.jobs[pending.job];
        let number = state.next_number;
        state.next_number += 1;
        state.counts.runs += 1;
        state.live += 1;
        let id = self.next_id;
        self.next_id += 1;
        let scheduled = timestamp(pending.scheduled);
        match self.spawn(&pending, number, &scheduled, pin, env) {
            Ok(spawned) => self.started(pending, (id, number, executor), scheduled, spawned),
            Err(e) => {
                let job = &self.plan.jobs[pending.job];
                let reason = format!("cannot start `{}`: {e}", job.command.display());
                let row = self.record_row(&pending, number, None, None);
                self.manual_started(pending.manual, id, number);
                let mut run = Run::new(pending, number, executor, RunState::NotStarted);
                run.row = row;
                self.runs.insert(id, run);
                let end = RunEnd::not_started(reason);
                let _ = self.tx.send(Msg::Exited { id, end });
            }
        }
        true
    }

    /// A run's process is up: its row and `run.start`, its timeout, its log, its probe, and the task that tends
    /// its output and waits for its end.
    fn started(
        &mut self,
        pending: Pending,
        (id, number, executor): (RunId, u64, usize),
        scheduled: String,
        (child, parent_ends, file_env): (process::Child, ParentEnds, FileEnv),
    ) {
        let plan = self.plan.clone();
        let job = &plan.jobs[pending.job];
        let pid = child.pid;
        let lateness_us = (Utc::now() - pending.first_due).num_microseconds();
        let row = self.record_start(&pending, number, Some(pid), lateness_us);
        self.manual_started(pending.manual, id, number);
        self.emit(Event::RunStart {
            job: job.name.clone(),
            run: number,
            pid,
            scheduled: pending.scheduled,
            lateness_us,
            attempt: pending.attempt,
            coalesced: pending.coalesced,
            catch_up: pending.catch_up,
            messages: pending.input.as_ref().map(|b| b.count as u64),
        });
        let reads = job.stdin.or(pending.input.as_ref().map(|b| b.from));
        let mut run = Run::new(pending, number, executor, RunState::Running { pid });
        (run.writes, run.reads, run.row) = (job.stdout, reads, row);
        run.timers
            .extend(job.timeout.map(|t| self.later(t, Later::Timeout(id))));
        run.log = self.log_dir.as_ref().map(|dir| {
            Arc::new(RunLog::new(
                dir,
                job,
                number,
                &scheduled,
                self.reporter.clone(),
            ))
        });
        // Set by the tending task when the process exits (the probe stops looking then).
        let exited = Arc::new(super::broker::ExitFlag::default());
        let watch = match job.ready.is_some() {
            true => {
                let exec = probe::ExecContext {
                    plan: plan.clone(),
                    job: run.job,
                    run: number,
                    workflow: self.workflow.clone(),
                    scheduled,
                    file_env,
                };
                let (probe, watch, not_ready) = self.start_probe(id, exec, &exited);
                run.probe = probe;
                run.timers.extend(not_ready);
                watch
            }
            false => None,
        };
        self.tend(&run, id, child, parent_ends, watch, exited);
        self.runs.insert(id, run);
    }

    /// The task that pumps a live run's output (to its channel, or as lines to the log and the reporter) and
    /// tells the dispatcher of its end.
    fn tend(
        &mut self,
        run: &Run,
        id: RunId,
        child: process::Child,
        parent_ends: ParentEnds,
        watch: Option<Arc<super::probe::LogWatch>>,
        exited: Arc<super::broker::ExitFlag>,
    ) {
        let job = &self.plan.jobs[run.job];
        let target = job.stdout.map(|c| {
            let tx = self.tx.clone();
            let wake = Arc::new(move || {
                let _ = tx.send(Msg::Wake(c));
            });
            self.channels.target(c, wake)
        });
        let sink = LineSink {
            reporter: self.reporter.clone(),
            job: job.name.clone(),
            run: run.number,
            log: run.log.clone(),
            watch,
        };
        let tx = self.tx.clone();
        supervise(
            child,
            parent_ends,
            sink,
            target,
            job.stop_grace,
            exited,
            move |end| {
                let _ = tx.send(Msg::Exited { id, end });
            },
        );
    }

    /// Wire a new run's standard streams and spawn its process.
    fn spawn(
        &self,
        pending: &Pending,
        number: u64,
        scheduled: &str,
        pin: bool,
        env: Result<FileEnv, String>,
    ) -> std::io::Result<(process::Child, ParentEnds, FileEnv)> {
        let job = &self.plan.jobs[pending.job];
        let file_env = env.map_err(std::io::Error::other)?;
        let input = pending.input.as_ref().map(|b| &b.data);
        let w = self.channels.wire(pending.job, job, input)?;
        let child = process::spawn(process::SpawnSpec {
            job,
            command: &job.command,
            run: number,
            workflow: &self.workflow,
            scheduled,
            stdin: w.stdin,
            stdout: w.stdout,
            stderr: w.stderr,
            pin,
            file_env: &file_env,
            upstream: pending.upstream.as_deref(),
            probe: false,
        })?;
        Ok((child, w.parent, file_env))
    }

    /// Messages an `each` firing or run did not finish wait again at the front of the queue they came from, and
    /// that channel's readers hear of them (the job's next firing may run them). A queue is shared: a reader a
    /// reload removed gives them back to the others. A broadcast reader a reload removed gives them back to the
    /// copy it had, closed now: they count as left.
    pub(super) fn give_back_input(&mut self, job: JobId, batch: &super::state::Batch) {
        if let Some(queue) = self.channels.home_queue(batch.from, job) {
            queue.push_front(super::broker::Chunk::from_vec(
                batch.data.to_vec(),
                batch.count,
            ));
            let _ = self.tx.send(Msg::Wake(batch.from));
        }
    }

    fn give_back(&mut self, pending: Pending) {
        if let Some(batch) = &pending.input {
            self.give_back_input(pending.job, batch);
        }
    }

    /// Handle every time firing that is due (the timetable applies misfire grace and coalescing).
    pub(super) fn due_timers(&mut self) {
        if self.stopping {
            return;
        }
        let now = Utc::now();
        let mut ats = Vec::new();
        for due in self.timetable.due(now) {
            match due {
                Due::Missed {
                    job,
                    scheduled,
                    late,
                    count,
                    trigger,
                    at_least,
                } => {
                    self.jobs[job].counts.missed += count;
                    self.record_missed(job, trigger, scheduled, (count, at_least), late);
                    self.emit(Event::RunMissed {
                        job: self.plan.jobs[job].name.clone(),
                        scheduled,
                        count,
                        at_least,
                        late: late.to_std().unwrap_or_default(),
                        grace: self.plan.jobs[job].misfire_grace,
                    });
                }
                Due::Fire {
                    job,
                    trigger,
                    scheduled,
                    first_due,
                    coalesced,
                } => {
                    self.record_handled(job, trigger, scheduled);
                    let pending = Pending {
                        scheduled,
                        first_due,
                        coalesced,
                        catch_up: first_due < self.started_at,
                        ..Pending::by(job, trigger)
                    };
                    match &self.plan.jobs[job].triggers[trigger] {
                        Trigger::Time {
                            rule: crate::plan::TimeSpec::At { .. },
                            ..
                        } => ats.push((pending, trigger)),
                        _ => self.dispatch_firing(pending, trigger),
                    }
                }
            }
        }
        // An `at` firing is on disk before its run starts: it never fires twice, even after a crash. While the
        // store cannot take it, it waits.
        self.fire_committed(ats);
        if let Some(m) = &self.memory {
            m.hand_over_if_durable();
        }
    }

    /// A time firing handled now: after its jitter, or at once.
    pub(super) fn dispatch_firing(&mut self, pending: Pending, trigger: usize) {
        match self.plan.jobs[pending.job].triggers.get(trigger) {
            Some(Trigger::Time { jitter, .. }) if !jitter.is_zero() => {
                let delay = jitter_delay(*jitter, rand::random::<f64>());
                self.later(delay, Later::Fire(pending));
            }
            _ => self.fire(pending),
        }
    }

    /// Look at this job at the next refresh (it may be done now).
    pub(super) fn watch_job(&mut self, job: JobId) {
        self.watch.insert(job);
    }

    /// Mark jobs that can never fire again as done, close the channels they wrote, and skip dead joins. Only the
    /// watched jobs can be done (see `watch`); one being done may finish others, hence the loop.
    fn refresh(&mut self) {
        for j in self.timetable.take_ran_out() {
            if j < self.jobs.len() && !self.jobs[j].done {
                self.watch.insert(j);
            }
        }
        loop {
            let mut changed = false;
            for j in self.watch.take() {
                if self.jobs[j].done {
                    self.watch.release(j);
                    continue;
                }
                if !self.can_be_done(j) {
                    self.watch.keep(j);
                    continue;
                }
                self.watch.release(j);
                self.jobs[j].done = true;
                self.undone -= 1;
                changed = true;
                self.skip_dead_joins(j);
                self.close_channels_of(j);
            }
            if !changed {
                break;
            }
        }
        // Every test drives a debug build: there a pass over every job checks that the watch missed none.
        #[cfg(debug_assertions)]
        {
            for j in 0..self.jobs.len() {
                assert!(
                    self.jobs[j].done || !self.can_be_done(j),
                    "job {} can be done but was not watched",
                    self.plan.jobs[j].name
                );
            }
            assert_eq!(self.undone, self.jobs.iter().filter(|j| !j.done).count());
        }
    }

    /// Nothing of the job is running or on its way, and none of its triggers can fire again.
    fn can_be_done(&self, j: JobId) -> bool {
        let state = &self.jobs[j];
        state.live == 0 && state.pending == 0 && !self.can_fire_again(j)
    }

    fn can_fire_again(&self, j: JobId) -> bool {
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
                    .all(|(k, &u)| self.jobs[j].joins[t].reached(k) || !self.jobs[u].done),
                Trigger::Each { channel, .. } => {
                    self.channels
                        .reader_queue(*channel, j)
                        .is_some_and(|q| !q.settled())
                        || self.coming_back(*channel)
                }
            })
    }

    /// Messages of a queue held by a run or a firing waiting for a worker: while they are, the queue is not over
    /// for its other readers, as they may come back (the run or firing is stopped, or its job removed by a reload)
    /// and then go to whichever reader is free. (A broadcast reader's copy is its own.) Asked only of a queue
    /// that is closed and empty.
    fn coming_back(&self, channel: crate::plan::ChannelId) -> bool {
        let from_here =
            |input: &Option<super::state::Batch>| input.as_ref().is_some_and(|b| b.from == channel);
        self.plan.channels[channel].kind == crate::document::ChannelKind::Queue
            && (self.runs.values().any(|r| from_here(&r.input))
                || self
                    .executors
                    .iter()
                    .any(|ex| ex.waiting.iter().any(|p| from_here(&p.input))))
    }

    /// A join that can never complete: skipped for good. That alone does not fail the workflow: a failure handler
    /// that is not needed is the normal case, and an upstream failure already fails it.
    fn skip_dead_joins(&mut self, j: JobId) {
        if self.stopping || self.jobs[j].dead_joins_said {
            return;
        }
        self.jobs[j].dead_joins_said = true;
        for (t, trig) in self.plan.jobs[j].triggers.iter().enumerate() {
            let Trigger::After { jobs, status } = trig else {
                continue;
            };
            let blocking = self.jobs[j].joins[t].blocking(|k| self.jobs[jobs[k]].done);
            if blocking.is_empty() {
                continue;
            }
            let names: Vec<&str> = blocking
                .iter()
                .map(|&k| self.plan.jobs[jobs[k]].name.as_str())
                .collect();
            self.jobs[j].counts.skipped += 1;
            let why = SkipReason::JoinDead(format!(
                "`after` can never fire: {} ended without reaching {}",
                names.join(", "),
                status.goal()
            ));
            self.record_skip(j, Cause::Trigger(t), None, &why);
            self.emit(Event::RunSkipped {
                job: self.plan.jobs[j].name.clone(),
                scheduled: None,
                why,
            });
        }
    }

    /// A job that can run no more: close the channels it was the last writer of, and let go of those it read.
    fn close_channels_of(&mut self, j: JobId) {
        let plan = self.plan.clone();
        for (c, channel) in plan.channels.iter().enumerate() {
            let reads = channel.readers.contains(&j);
            if reads {
                self.channels.reader_done(c, j);
            }
            if reads || channel.writers.contains(&j) {
                self.settle_channel(c);
            }
        }
    }

    /// Close a channel when nothing can write it any more: its writers are done and no live run still writes it
    /// (a run of a job a reload took away from it); let its writers go when nothing can read it any more. Asked
    /// when a job is done, when a run ends and after a reload (which can take a channel's last writer or reader).
    pub(super) fn settle_channel(&mut self, c: ChannelId) {
        let channel = &self.plan.channels[c];
        let done = |jobs: &[JobId]| jobs.iter().all(|&j| self.jobs[j].done);
        if !self.channels.all[c].closed
            && done(&channel.writers)
            && !self.runs.values().any(|r| r.writes == Some(c))
        {
            let messages = self.channels.close(c);
            self.emit(Event::ChannelClosed {
                channel: self.plan.channels[c].name.clone(),
                messages,
            });
            let _ = self.tx.send(Msg::Wake(c));
        }
        let channel = &self.plan.channels[c];
        if done(&channel.readers) && !self.runs.values().any(|r| r.reads == Some(c)) {
            self.channels.readers_gone(c);
        }
    }

    pub(super) fn on_stop(&mut self, stop: Stop) {
        match stop {
            Stop::Interrupt if self.stopping => self.force(),
            Stop::Interrupt => self.stop("SIGINT"),
            Stop::Signal(name) => self.stop(name),
            Stop::Deadline => self.stop("--for elapsed"),
        }
    }

    /// Stop: no new firings; every live run is stopped; what waits is counted at the end.
    fn stop(&mut self, why: &str) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        // No job can fire again now: any that is idle is done.
        self.watch_all();
        self.emit(Event::RunnerStopping {
            reason: why.to_string(),
            live_runs: self.runs.len(),
        });
        self.timetable.clear();
        self.drop_waiting();
        self.drop_held(|_| true);
        for ex in 0..self.executors.len() {
            while let Some(p) = self.dequeue(ex) {
                self.manual_skipped(p.manual, "the runner stopped before it started".into());
                self.give_back(p);
            }
        }
        self.channels.shut();
        let ids: Vec<RunId> = self.runs.keys().copied().collect();
        for id in ids {
            let _ = self.stop_run(id, StopCause::Shutdown);
        }
    }

    /// SIGTERM to a run's group, SIGKILL after its `stop_grace` (at once when that is zero). Whether it was
    /// running (and is now stopping).
    pub(super) fn stop_run(&mut self, id: RunId, cause: StopCause) -> bool {
        let Some(run) = self.runs.get_mut(&id) else {
            return false;
        };
        let RunState::Running { pid } = run.state else {
            return false;
        };
        run.state = RunState::Stopping { pid, cause };
        // A stopping run is never found ready: its probe checks no more.
        if let Some(probe) = &run.probe {
            probe.stop();
        }
        let grace = self.plan.jobs[run.job].stop_grace;
        if grace.is_zero() {
            // No grace: nothing (not even a TERM trap) runs between the stop and the kill.
            process::signal_group(pid, libc::SIGKILL);
            return true;
        }
        process::signal_group(pid, libc::SIGTERM);
        let kill = self.later(grace, Later::Kill(id));
        if let Some(run) = self.runs.get_mut(&id) {
            run.timers.push(kill);
        }
        true
    }

    /// A job removed by a reload.
    pub(super) fn retired(&self, job: JobId) -> bool {
        self.plan.jobs[job].retired
    }

    /// The next time firing of every job.
    pub(super) fn next_fires(&self) -> Vec<Option<chrono::DateTime<Utc>>> {
        self.timetable.next_per_job(self.plan.jobs.len())
    }

    fn force(&mut self) {
        self.forced = true;
        for run in self.runs.values() {
            if let Some(pid) = run.state.pid() {
                process::signal_group(pid, libc::SIGKILL);
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
        let next = self.timetable.next_per_job(self.plan.jobs.len());
        let mut ready = vec![0usize; self.plan.jobs.len()];
        for run in self.runs.values().filter(|r| r.ready) {
            ready[run.job] += 1;
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
                next_fire: next[j],
                ready: job.ready.as_ref().map(|_| ready[j]),
            })
            .collect();
        let channels: Vec<ChannelLine> = self
            .plan
            .channels
            .iter()
            .enumerate()
            .map(|(c, channel)| {
                let counts = self.channels.counts(c);
                ChannelLine {
                    name: channel.name.clone(),
                    kind: channel.kind.as_str(),
                    taken_in: counts.taken_in,
                    out: counts.out,
                    waiting: counts.left,
                }
            })
            .collect();
        view.update(&jobs, &channels);
    }

    /// How long what is left below the runner gets between SIGTERM and SIGKILL at the end: the longest
    /// `stop_grace` (none after a forced stop).
    pub(super) fn final_grace(&self) -> Duration {
        match self.forced {
            true => Duration::ZERO,
            false => self
                .plan
                .jobs
                .iter()
                .map(|j| j.stop_grace)
                .max()
                .unwrap_or_default(),
        }
    }

    /// A SIGINT during the final sweep: the stop is forced.
    pub(super) fn set_forced(&mut self) {
        self.forced = true;
    }

    /// The end: the summary.
    pub(super) fn finish(&mut self) -> Ending {
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
                .push((job.name.clone(), self.jobs[j].counts.clone()));
        }
        for (c, channel) in self.plan.channels.iter().enumerate() {
            summary
                .channels
                .push((channel.name.clone(), self.channels.counts(c)));
        }
        let ending = match (self.forced, self.failed) {
            (true, _) => Ending::Forced,
            (false, true) => Ending::Failed,
            (false, false) => Ending::Succeeded,
        };
        let table = summary.table(self.color);
        self.emit(Event::RunnerStop {
            code: ending.code(),
            summary,
        });
        // Everything recorded is committed before the summary is shown (and the lock let go).
        self.record_settle();
        if let Some(memory) = self.memory.take() {
            memory.close();
        }
        self.reporter.text(&table);
        ending
    }
}

/// The timetable entries of a job's time triggers, each resumed after its last handled firing when there is one.
fn time_entries(
    plan: &Plan,
    j: JobId,
    handled: &HashMap<(String, String), chrono::DateTime<Utc>>,
    now: chrono::DateTime<Utc>,
) -> Vec<Entry> {
    let job = &plan.jobs[j];
    let mut entries = Vec::new();
    for (t, trigger) in job.triggers.iter().enumerate() {
        if let Trigger::Time { rule, .. } = trigger {
            let resume = handled
                .get(&(job.name.clone(), rule.fingerprint()))
                .copied();
            entries.push(Entry {
                job: j,
                trigger: t,
                rule: match resume {
                    Some(last) => rule.resumed(last, now),
                    None => rule.rule(now),
                },
                misfire_grace: job.misfire_grace,
                coalesce: job.coalesce,
                resume,
            });
        }
    }
    entries
}
