//! The shell around the decision core: it turns what happens (a run's end, a timer, a signal, a request) into the
//! core's inputs, and carries out the core's effects: spawning and tending runs, signals, timers, env reads, the
//! events to the reporter and the observers, the answers to callers waiting on manual firings. It decides nothing.

use chrono::Utc;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::AbortHandle;

use super::channels::Channels;
use super::core::runs::RunId;
use super::core::{Core, Effect, Input as CoreInput, Manual, Now, Setup};
use super::envfile::FileEnv;
use super::liveness::Heard;
use super::ports::ShellWorld;
use super::probe::{self, ProbeHandle};
use super::process;
use super::runlog::RunLog;
use super::supervise::{supervise, LineSink, RunEnd};
use super::{Ending, Input, Msg, Options, Stop};
use crate::cluster::claims::{Asked, Claim, Claimer};
use crate::cluster::Answer;
use crate::event::{timestamp, Event, Summary};
use crate::plan::{JobId, Plan, Trigger};
use crate::report::{ChannelLine, JobLine, LiveView, Reporter};

/// What the shell holds of a live run besides its log (in the world): its probe and the probe's deadline, its
/// liveness probe (or what starts it once the run is ready).
#[derive(Default)]
struct RunIo {
    probe: Option<ProbeHandle>,
    not_ready: Option<AbortHandle>,
    alive: Option<AbortHandle>,
    alive_later: Option<(probe::ExecContext, Arc<super::broker::ExitFlag>, Arc<Heard>)>,
}

impl Drop for RunIo {
    fn drop(&mut self) {
        for task in [&self.not_ready, &self.alive].into_iter().flatten() {
            task.abort();
        }
    }
}

pub(super) struct Dispatcher {
    pub(super) core: Core<ShellWorld>,
    pub(super) reporter: Arc<Reporter>,
    pub(super) tx: UnboundedSender<Msg>,
    /// The timers the core armed, by its key.
    timers: HashMap<u64, AbortHandle>,
    io: HashMap<RunId, RunIo>,
    view: Option<LiveView>,
    color: bool,
    /// The workflow file as given (`FLOWRUN_WORKFLOW`).
    workflow: String,
    /// Manual firings (the control API) waiting to start or end, by key; and the key of each such live run.
    pub(super) waiters: HashMap<u64, super::requests::Waiter>,
    pub(super) run_waiters: HashMap<RunId, u64>,
    pub(super) next_manual: u64,
    observers: Vec<super::Observer>,
    /// Runs a previous runner left `running`, now marked interrupted (said at the start).
    recovered: u64,
    /// Where a SIGHUP asks the control API's thread for a reload.
    pub(super) reload_on_hup: Option<tokio::sync::mpsc::UnboundedSender<()>>,
    /// The runner's cluster: who asks its store, and how long claims are kept.
    cluster: Option<(Claimer, crate::cluster::Config)>,
}

/// The instant of an input.
pub(super) fn now() -> Now {
    Now {
        utc: Utc::now(),
        mono: Instant::now(),
    }
}

impl Dispatcher {
    pub(super) fn new(
        plan: Arc<Plan>,
        reporter: Arc<Reporter>,
        tx: UnboundedSender<Msg>,
        options: Options,
    ) -> Dispatcher {
        let mut memory = options.state.map(super::record::Recorder::new);
        let mut setup = match &mut memory {
            Some(m) => m.setup(options.log_dir.clone()),
            None => Setup {
                log_dir: options.log_dir.clone(),
                ..Setup::default()
            },
        };
        let cluster = options
            .cluster
            .map(|link| super::clustered::link(link, &tx));
        setup.cluster = cluster.is_some();
        let recovered = memory.as_ref().map_or(0, |m| m.recovered);
        let stores_at = memory
            .as_ref()
            .map(|m| (m.dir.join("queues"), reporter.clone()));
        let world = ShellWorld {
            channels: Channels::new(plan.clone(), options.stores, stores_at),
            memory,
            logs: HashMap::new(),
        };
        if let Some((_, config)) = &cluster {
            super::clustered::consume(options.consumers, &world.channels, &plan, config, &tx);
        }
        let workflow = plan.path.display().to_string();
        Dispatcher {
            core: Core::new(plan, world, setup, now()),
            reporter,
            tx,
            timers: HashMap::new(),
            io: HashMap::new(),
            view: options.live,
            color: options.color,
            workflow,
            waiters: HashMap::new(),
            run_waiters: HashMap::new(),
            next_manual: 0,
            observers: options.observers,
            recovered,
            reload_on_hup: None,
            cluster,
        }
    }

    /// Announce the start and begin the work, unless a stop signal already came.
    pub(super) fn start(&mut self, stop: Option<Stop>) {
        let memory = &self.core.world.memory;
        self.emit(&Event::RunnerStart {
            workflow: self.core.plan.name.clone(),
            state: memory.as_ref().map(|m| m.dir.display().to_string()),
            recovered: self.recovered,
        });
        self.core.start(now(), stop);
        self.carry_out();
    }

    pub(super) fn finished(&self) -> bool {
        self.core.finished()
    }

    pub(super) fn next_due(&self) -> Option<chrono::DateTime<Utc>> {
        self.core.next_due()
    }

    pub(super) fn has_view(&self) -> bool {
        self.view.is_some()
    }

    pub(super) fn is_stopping(&self) -> bool {
        self.core.stopping
    }

    /// Everything that happens goes through here.
    pub(super) fn handle(&mut self, input: Input) {
        let input = match input {
            Input::Msg(Msg::Exited { id, end }) => CoreInput::Exited { id, end },
            Input::Msg(Msg::Later(key)) => {
                self.timers.remove(&key);
                CoreInput::Due(key)
            }
            Input::Msg(Msg::Control(request)) => {
                self.on_request(request);
                self.core.settle();
                return self.carry_out();
            }
            Input::Msg(Msg::Ready(id)) => match self.probe_of(id) {
                Some(probe) => {
                    let probe = probe.probe.check.describe();
                    self.core.handle(CoreInput::Ready { id, probe }, now());
                    // Ready: its liveness probe starts now.
                    self.start_liveness(id);
                    return self.carry_out();
                }
                None => return,
            },
            Input::Msg(Msg::Unhealthy(id, why)) => CoreInput::Unhealthy { id, why },
            Input::Msg(Msg::NotReady(id)) => match self.probe_of(id) {
                Some(probe) => CoreInput::NotReady {
                    id,
                    timeout: probe.probe.timeout,
                    last: probe.last_failure(),
                },
                None => return,
            },
            Input::Msg(Msg::Prepared { job, env }) => CoreInput::Prepared { job, env },
            Input::Msg(Msg::Wake(c)) => CoreInput::Wake(c),
            Input::Msg(Msg::Claimed { key, answer }) => CoreInput::Claimed { key, answer },
            Input::Msg(Msg::TakenOver(taken)) => CoreInput::TakenOver(taken),
            Input::Timer => CoreInput::Timer,
            Input::Stop(stop) => CoreInput::Stop(stop),
            Input::ViewTick => return self.refresh_view(),
            Input::Hup => return self.on_hup(),
        };
        self.core.handle(input, now());
        self.carry_out();
    }

    /// SIGHUP: the file is read and validated again and applied as by `flowrun reload`, off the dispatcher.
    fn on_hup(&self) {
        let asked = self
            .reload_on_hup
            .as_ref()
            .is_some_and(|r| r.send(()).is_ok());
        if !asked {
            self.reporter
                .notice("SIGHUP: the file cannot be reloaded (the control API did not start); the runner goes on");
        }
    }

    /// The probe of a run whose process has not exited (a run that exited is never found ready, nor stopped for
    /// not being ready: its exit says how it went).
    fn probe_of(&self, id: RunId) -> Option<&ProbeHandle> {
        let probe = self.io.get(&id)?.probe.as_ref()?;
        (!probe.run_exited()).then_some(probe)
    }

    /// Carry out what the core decided, then hand what it recorded to the history writer, once.
    pub(super) fn carry_out(&mut self) {
        while let Some(effect) = self.core.out.pop_front() {
            self.apply(effect);
        }
        if let Some(m) = &self.core.world.memory {
            m.hand_over();
        }
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Emit(event) => self.emit(&event),
            Effect::Notice(text) => self.reporter.notice(&text),
            Effect::Arm { key, delay } => {
                let tx = self.tx.clone();
                let timer = tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(Msg::Later(key));
                });
                self.timers.insert(key, timer.abort_handle());
            }
            Effect::Disarm(key) => {
                if let Some(timer) = self.timers.remove(&key) {
                    timer.abort();
                }
            }
            Effect::Signal { pid, signal } => process::signal_group(pid, signal),
            Effect::Spawn { id, pin, env } => self.spawn(id, pin, env),
            Effect::Exit { id, reason } => {
                let end = RunEnd::not_started(reason);
                let _ = self.tx.send(Msg::Exited { id, end });
            }
            Effect::ReadEnv(job) => self.read_env(job),
            Effect::Wake(c) => {
                let _ = self.tx.send(Msg::Wake(c));
            }
            Effect::StopProbe(id) => {
                if let Some(probe) = self.io.get(&id).and_then(|io| io.probe.as_ref()) {
                    probe.stop();
                }
            }
            Effect::Ended { id, footer } => {
                if let Some(log) = self.core.world.logs.remove(&id) {
                    log.footer(&footer);
                }
                self.io.remove(&id);
            }
            Effect::Manual(news) => self.tell(news),
            Effect::Claim {
                key,
                job,
                trigger,
                at,
                number,
            } => self.claim(key, (job, trigger), at, number),
            Effect::Reclaim { key, claim, value } => match &self.cluster {
                Some((claimer, _)) => claimer.ask(key, Asked::Reclaim { claim, value }),
                None => self.answer_alone(key),
            },
            Effect::JoinEnd {
                key,
                job,
                trigger,
                positions,
                run,
            } => self.join_end(key, (job, trigger), positions, run),
            Effect::Number { key, job } => {
                let name = self.core.plan.jobs[job].name.clone();
                match &self.cluster {
                    Some((claimer, _)) => claimer.ask(key, Asked::Number { job: name }),
                    None => self.answer_alone(key),
                }
            }
        }
    }

    /// Ask the cluster's store for a firing of `job`'s trigger at `at` (kept past any instant another runner
    /// could ask for it).
    fn claim(
        &mut self,
        key: u64,
        (job, trigger): (JobId, usize),
        at: chrono::DateTime<Utc>,
        number: bool,
    ) {
        let j = &self.core.plan.jobs[job];
        let (Some((claimer, config)), Some(Trigger::Time { rule, .. })) =
            (&self.cluster, j.triggers.get(trigger))
        else {
            return self.answer_alone(key);
        };
        let claim = Claim {
            job: j.name.clone(),
            fingerprint: rule.fingerprint(),
            at,
            ttl: config.claim_ttl(j.misfire_grace),
            number,
        };
        claimer.ask(key, Asked::Claim(claim));
    }

    /// Tell a join kept in the cluster's store of a run's end (by the join's job and a fingerprint of its
    /// trigger, the same on every runner of the same file).
    fn join_end(
        &mut self,
        key: u64,
        (job, trigger): (JobId, usize),
        positions: Vec<usize>,
        run: String,
    ) {
        let j = &self.core.plan.jobs[job];
        let (Some((claimer, _)), Some(Trigger::After { jobs, status, any })) =
            (&self.cluster, j.triggers.get(trigger))
        else {
            return self.answer_alone(key);
        };
        let names: Vec<&str> = jobs
            .iter()
            .map(|&u| self.core.plan.jobs[u].name.as_str())
            .collect();
        let shape = format!("{trigger}|{}|{status:?}|{any}", names.join(","));
        // `FLOWRUN_UPSTREAM` names the runner of each run.
        let run = match serde_json::from_str::<serde_json::Value>(&run) {
            Ok(mut entry) => {
                entry["runner"] = serde_json::Value::String(config_id(&self.cluster));
                entry.to_string()
            }
            Err(_) => run,
        };
        claimer.ask(
            key,
            Asked::Join {
                job: j.name.clone(),
                fingerprint: crate::cluster::fnv_hex(shape.as_bytes()),
                positions,
                run,
                upstreams: jobs.len(),
                any: *any,
            },
        );
    }

    /// A question for a cluster this runner is not in (or of a trigger a reload took away): nobody else has it.
    fn answer_alone(&self, key: u64) {
        let _ = self.tx.send(Msg::Claimed {
            key,
            answer: Answer::Lost,
        });
    }

    fn tell(&mut self, news: Manual) {
        match news {
            Manual::Queued(key) => self.manual_queued(key),
            Manual::Skipped(key, reason) => self.manual_skipped(key, reason),
            Manual::Started { key, id, number } => self.manual_started(key, id, number),
            Manual::Ended(id, ended) => self.manual_ended(id, ended),
            Manual::Retried(id) => {
                self.run_waiters.remove(&id);
            }
        }
    }

    /// The one way events leave the engine: the history (rows are made from events), the observers (metrics)
    /// and the reporter.
    pub(super) fn emit(&self, event: &Event) {
        if let Some(m) = &self.core.world.memory {
            for op in crate::store::sink::history_ops(Utc::now(), event) {
                m.record(op, super::core::Urgency::Later);
            }
        }
        for observe in &self.observers {
            observe(event);
        }
        self.reporter.event(event);
    }

    /// Read a job's `env_file`s on a thread of its own: a slow or hostile file holds that thread, never the
    /// dispatcher (the core asks for one read per job at a time).
    fn read_env(&self, job: JobId) {
        let files = self.core.plan.jobs[job].env_files.clone();
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

    /// Spawn run `id` as the core made it: wire its standard streams, start its process; then its log, its
    /// probe, and the task that tends its output and tells its end.
    fn spawn(&mut self, id: RunId, pin: bool, file_env: FileEnv) {
        let plan = self.core.plan.clone();
        let Some(run) = self.core.runs.get(&id) else {
            return;
        };
        let (j, number, attempt) = (run.job, run.number, run.attempt);
        let job = &plan.jobs[j];
        let scheduled = timestamp(run.scheduled);
        let input = run.input.as_ref().map(|b| b.data.clone());
        let message = run
            .input
            .as_ref()
            .and_then(|b| b.seqs.first().map(|r| (r.start, b.delivery)));
        let upstream = run.upstream.clone();
        let spawned = self
            .core
            .world
            .channels
            .wire(j, job, input.as_ref())
            .and_then(|w| {
                let child = process::spawn(process::SpawnSpec {
                    job,
                    command: &job.command,
                    run: number,
                    attempt,
                    workflow: &self.workflow,
                    scheduled: &scheduled,
                    stdin: w.stdin,
                    stdout: w.stdout,
                    stderr: w.stderr,
                    pin,
                    file_env: &file_env,
                    upstream: upstream.as_deref(),
                    message,
                    probe: false,
                })?;
                Ok((child, w.parent))
            });
        let (child, parent_ends) = match spawned {
            Ok(spawned) => spawned,
            Err(e) => return self.core.spawn_failed(id, e.to_string()),
        };
        self.core.spawned(id, child.pid, now());
        let log = self.core.log_dir.as_ref().map(|dir| {
            let log = RunLog::new(
                dir,
                job,
                (number, attempt),
                &scheduled,
                self.reporter.clone(),
            );
            Arc::new(log)
        });
        if let Some(log) = &log {
            self.core.world.logs.insert(id, log.clone());
        }
        // Set by the tending task when the process exits (the probe stops looking then).
        let exited = Arc::new(super::broker::ExitFlag::default());
        let context = || probe::ExecContext {
            plan: plan.clone(),
            job: j,
            run: number,
            attempt,
            workflow: self.workflow.clone(),
            scheduled: scheduled.clone(),
            file_env: file_env.clone(),
        };
        let alive = job.alive.as_ref().map(|_| context());
        let watch = self.start_probe(id, context(), &exited);
        let heard = alive.and_then(|context| self.arm_liveness(id, job, context, &exited));
        let sink = LineSink {
            reporter: self.reporter.clone(),
            job: job.name.clone(),
            run: number,
            log,
            watch,
            heard,
        };
        self.tend(id, job, (child, parent_ends), sink, exited);
    }

    /// A run of a job with `alive`: what its liveness probe needs, kept until the run is ready (started at once
    /// without `ready`); the record of when it last printed, for its line sink.
    fn arm_liveness(
        &mut self,
        id: RunId,
        job: &crate::plan::Job,
        context: probe::ExecContext,
        exited: &Arc<super::broker::ExitFlag>,
    ) -> Option<Arc<Heard>> {
        let heard = Arc::new(Heard::new());
        let io = self.io.get_mut(&id)?;
        io.alive_later = Some((context, exited.clone(), heard.clone()));
        // Without a readiness probe, the run is alive from its start.
        if job.ready.is_none() {
            self.start_liveness(id);
        }
        Some(heard)
    }

    /// The run's liveness probe starts checking (its job has `alive`; once, when the run is ready or started).
    fn start_liveness(&mut self, id: RunId) {
        let Some(run) = self.core.runs.get(&id) else {
            return;
        };
        let plan = self.core.plan.clone();
        let Some(alive) = plan.jobs[run.job].alive.as_ref() else {
            return;
        };
        let Some(io) = self.io.get_mut(&id) else {
            return;
        };
        let Some((context, exited, heard)) = io.alive_later.take() else {
            return;
        };
        let tx = self.tx.clone();
        io.alive = Some(crate::engine::liveness::start(
            alive,
            context,
            exited,
            heard,
            move |why| {
                let _ = tx.send(Msg::Unhealthy(id, why));
            },
        ));
    }

    /// A run's readiness probe (its job has `ready`), and the deadline that tells the core it was not ready in
    /// time: the watch for its line sink when the probe reads the log.
    fn start_probe(
        &mut self,
        id: RunId,
        context: probe::ExecContext,
        exited: &Arc<super::broker::ExitFlag>,
    ) -> Option<Arc<probe::LogWatch>> {
        let mut io = RunIo::default();
        let plan = context.plan.clone();
        let watch = plan.jobs[context.job].ready.as_ref().and_then(|ready| {
            let tx = self.tx.clone();
            let (handle, watch) = probe::start(ready, context, exited.clone(), move || {
                let _ = tx.send(Msg::Ready(id));
            });
            io.probe = Some(handle);
            let (tx, timeout) = (self.tx.clone(), ready.timeout);
            let timer = tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                let _ = tx.send(Msg::NotReady(id));
            });
            io.not_ready = Some(timer.abort_handle());
            watch
        });
        self.io.insert(id, io);
        watch
    }

    /// The task that pumps a live run's output (to its channel, or as lines to the log and the reporter) and
    /// tells the core of its end.
    fn tend(
        &self,
        id: RunId,
        job: &crate::plan::Job,
        (child, parent_ends): (process::Child, super::supervise::ParentEnds),
        sink: LineSink,
        exited: Arc<super::broker::ExitFlag>,
    ) {
        let target = job.stdout.map(|c| {
            let tx = self.tx.clone();
            let wake = Arc::new(move || {
                let _ = tx.send(Msg::Wake(c));
            });
            self.core.world.channels.target(c, wake)
        });
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

    fn refresh_view(&mut self) {
        let Some(view) = &mut self.view else { return };
        let jobs: Vec<JobLine> = self
            .core
            .snapshot()
            .jobs
            .into_iter()
            .map(|job| JobLine {
                running: job.runs.len(),
                ready: job
                    .probed
                    .then(|| job.runs.iter().filter(|r| r.ready == Some(true)).count()),
                name: job.name,
                waiting: job.waiting,
                done: job.done,
                runs: job.counts.runs,
                succeeded: job.counts.succeeded,
                failed: job.counts.failed,
                last_exit: job.last_exit,
                next_fire: job.next,
                paused: job.paused.is_some(),
            })
            .collect();
        let core = &self.core;
        let channels: Vec<ChannelLine> = core
            .plan
            .channels
            .iter()
            .enumerate()
            .map(|(c, channel)| {
                let counts = core.world.channels.counts(c);
                ChannelLine {
                    name: channel.name.clone(),
                    kind: channel.kind.as_str(),
                    taken_in: counts.taken_in,
                    out: counts.out,
                    waiting: counts.left,
                    stored: core.world.channels.all[c]
                        .durable
                        .as_ref()
                        .map(|d| d.usage().depth),
                }
            })
            .collect();
        view.update(&jobs, &channels);
    }

    /// How long what is left below the runner gets between SIGTERM and SIGKILL at the end: the longest
    /// `stop_grace` (none after a forced stop).
    pub(super) fn final_grace(&self) -> Duration {
        match self.core.forced {
            true => Duration::ZERO,
            false => self
                .core
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
        self.core.forced = true;
    }

    /// The end: the summary (`leftovers_killed`: what was left below the runner had to be killed).
    pub(super) fn finish(&mut self, leftovers_killed: bool) -> Ending {
        if let Some(view) = self.view.take() {
            view.finish();
        }
        // The last deliveries and done marks of durable queues, on disk before the runner goes.
        for (c, rt) in self.core.world.channels.all.iter().enumerate() {
            let Some(durable) = &rt.durable else { continue };
            let name = &self.core.plan.channels[c].name;
            if let Err(e) = durable.flush() {
                self.reporter
                    .notice(&format!("channel `{name}`: its last commit failed: {e}"));
            }
            if durable.lost() > 0 {
                self.reporter.notice(&format!(
                    "channel `{name}`: {} message(s) could not be committed before the stop and are lost (the rest of `left` is kept)",
                    durable.lost()
                ));
            }
        }
        let core = &self.core;
        let mut summary = Summary {
            failed_messages: core.failed_messages,
            ..Summary::default()
        };
        for (j, job) in core.plan.jobs.iter().enumerate() {
            summary
                .jobs
                .push((job.name.clone(), core.jobs[j].counts.clone()));
        }
        for (c, channel) in core.plan.channels.iter().enumerate() {
            summary
                .channels
                .push((channel.name.clone(), core.world.channels.counts(c)));
        }
        let ending = core.ending(leftovers_killed);
        let table = summary.table(self.color);
        self.emit(&Event::RunnerStop {
            code: ending.code(),
            summary,
        });
        // Everything recorded is committed before the summary is shown (and the lock let go).
        self.core.record_settle();
        if let Some(memory) = self.core.world.memory.take() {
            memory.close();
        }
        self.reporter.text(&table);
        ending
    }
}

/// This runner's id in its cluster.
fn config_id(cluster: &Option<(Claimer, crate::cluster::Config)>) -> String {
    cluster
        .as_ref()
        .map(|(_, c)| c.runner_id.clone())
        .unwrap_or_default()
}
