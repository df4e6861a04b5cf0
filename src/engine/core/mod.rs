//! The decision core: every decision of the engine, with no process, no tokio, no clock and no thread. It is fed
//! one [`Input`] at a time with the instant it happens at (`Now`), decides, and leaves what must be done as
//! [`Effect`]s in `out`, which the shell (`dispatcher`) carries out: spawn, signal, arm a timer, emit an event,
//! answer a caller. An effect may be answered later by an input: a spawn by [`Core::spawned`] or a run's end, a
//! timer by [`Input::Due`], an env read by [`Input::Prepared`]. So a firing can wait for an answer (a run number
//! on disk, later a cluster's claim) without blocking anything.
//!
//! What must be answered inside a decision is asked of the [`World`] port instead: a queue's messages (a batch
//! given back must be there for the next take in the same decision) and the state store (a run number is given
//! only once it is on disk). The shell's world is the channels and the store's writer; the unit tests' world is a
//! few vectors (`tests.rs`).

mod admit;
mod claims;
mod done;
mod ending;
mod held;
mod ledger;
mod merge;
pub(super) mod outcome;
mod pause;
mod readiness;
pub(super) mod runs;
mod snapshot;
mod stopping;
#[cfg(test)]
mod tests;
pub(super) mod timetable;
mod upstream;
mod waits;
mod watch;
mod world;

use chrono::{DateTime, Utc};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::core::runs::{JobState, Pending, Run, RunId};
use super::envfile::FileEnv;
use super::supervise::RunEnd;
use super::Stop;
use crate::event::Event;
use crate::plan::{ChannelId, JobId, Plan, Trigger};
use timetable::{Entry, Timetable};
use watch::Watch;

pub(super) use ledger::{outcome_of, NUMBER_BLOCK};
pub(super) use world::{Taken, Urgency, World};

/// The instant an input happens at, on both clocks: the wall clock (what is recorded and scheduled) and the
/// monotonic one (durations).
#[derive(Clone, Copy)]
pub(super) struct Now {
    pub utc: DateTime<Utc>,
    pub mono: Instant,
}

/// What the core is told.
pub(super) enum Input {
    /// The delay of what the core arranged under this key ([`Effect::Arm`]) is over.
    Due(u64),
    /// The timetable's earliest instant came (or the wall clock was set).
    Timer,
    Exited {
        id: RunId,
        end: RunEnd,
    },
    /// The run's readiness probe passed (`probe`: what it checks, in words); its process had not exited then.
    Ready {
        id: RunId,
        probe: String,
    },
    /// The run's probe did not pass within its `timeout`; its process had not exited then.
    NotReady {
        id: RunId,
        timeout: Duration,
        last: Option<String>,
    },
    /// The run's liveness probe failed `failures` times in a row (why); its process had not exited then.
    Unhealthy {
        id: RunId,
        why: String,
    },
    /// The `env_file`s of this job were read ([`Effect::ReadEnv`]).
    Prepared {
        job: JobId,
        env: Result<FileEnv, String>,
    },
    /// Messages arrived (or came back) in this channel, where an `each` job may wait.
    Wake(ChannelId),
    Stop(Stop),
    /// The cluster's store answered the claim or number asked under this key ([`Effect::Claim`],
    /// [`Effect::Number`]).
    Claimed {
        key: u64,
        answer: crate::cluster::Answer,
    },
    /// Runs of a runner of the cluster that stopped answering, marked interrupted by this one: those with tries
    /// left are tried again here (trigger `failover`).
    TakenOver(crate::cluster::heartbeat::TakenOver),
}

/// What the core asks the shell to do.
pub(super) enum Effect {
    Emit(Event),
    /// A line for the person watching (not an event).
    Notice(String),
    /// Send [`Input::Due`] with `key` after `delay`.
    Arm {
        key: u64,
        delay: Duration,
    },
    /// What was armed under this key is not wanted any more.
    Disarm(u64),
    /// Signal a run's process group.
    Signal {
        pid: u32,
        signal: i32,
    },
    /// Spawn run `id` (in `runs`, not started yet), then tell [`Core::spawned`] or [`Core::spawn_failed`].
    Spawn {
        id: RunId,
        /// Start it on this CPU (a lone time firing, for latency).
        pin: bool,
        env: FileEnv,
    },
    /// Run `id` could not start: tell its end (not started, for `reason`) as an input of its own.
    Exit {
        id: RunId,
        reason: String,
    },
    /// Read the job's `env_file`s off the decision, then send [`Input::Prepared`].
    ReadEnv(JobId),
    /// Tell this channel's `each` readers, in a later input, that messages wait.
    Wake(ChannelId),
    /// The run's readiness probe checks no more.
    StopProbe(RunId),
    /// A run ended: the last line of its log; its log and probe are let go.
    Ended {
        id: RunId,
        footer: String,
    },
    /// News for a caller waiting on a manual firing.
    Manual(Manual),
    /// Claim the firing of the job's trigger at `at` in the cluster (with a run number from its counter when
    /// `number`), then send [`Input::Claimed`] under `key`.
    Claim {
        key: u64,
        job: JobId,
        trigger: usize,
        at: DateTime<Utc>,
        number: bool,
    },
    /// Take the job's next run number from the cluster's counter, then send [`Input::Claimed`] under `key`.
    Number {
        key: u64,
        job: JobId,
    },
    /// Take over the claim `claim` (still holding `value`) of a runner that died before starting its firing, then
    /// send [`Input::Claimed`] under `key`.
    Reclaim {
        key: u64,
        claim: String,
        value: String,
    },
    /// Tell the join (job `job`'s trigger `trigger`) kept in the cluster's store of a run's end (`run`, at the
    /// join's upstream `positions`), then send [`Input::Claimed`] under `key` ([`crate::cluster::Answer::Joined`]).
    JoinEnd {
        key: u64,
        job: JobId,
        trigger: usize,
        positions: Vec<usize>,
        run: String,
    },
}

/// What a caller waiting on a manual firing (by its key) hears.
pub(super) enum Manual {
    /// It waits for a worker or for the store.
    Queued(u64),
    /// It will not run.
    Skipped(u64, String),
    Started {
        key: u64,
        id: RunId,
        number: u64,
    },
    /// The run ended for good (its last try).
    Ended(RunId, super::requests::RunEnded),
    /// The run will be tried again: its caller follows the retry.
    Retried(RunId),
}

/// Something the core arranged to happen after a delay (or, for `Prepare`, when an env read answers).
pub(super) enum Later {
    /// A jittered time firing, now due.
    Fire(Pending),
    Retry(Pending),
    Restart(JobId),
    Timeout(RunId),
    /// The grace of a stopping run is over.
    Kill(RunId),
    /// A pause `--for` a while is over.
    Resume(JobId),
    /// Try the state store again for what waits on it (see `held`).
    StoreRetry,
    /// A firing admitted to a worker (`executor`) whose `env_file`s are being read.
    Prepare {
        pending: Pending,
        executor: usize,
        pin: bool,
    },
    /// A claim out to the cluster's store (no timer), or one to ask again (a timer: the store did not answer).
    Claim(claims::Claiming),
    /// A run's end told to a join kept in the cluster's store (waiting for the answer, or to ask again).
    JoinEnd(claims::JoinEnd),
    /// A run admitted to a worker (`executor`) waiting for its number from the cluster's counter.
    Number {
        pending: Pending,
        executor: usize,
        pin: bool,
        env: Result<FileEnv, String>,
    },
}

impl Later {
    /// The job that will run when this comes (a firing, a retry, a restart); `None` for what concerns a live run.
    fn job_to_run(&self) -> Option<JobId> {
        match self {
            Later::Fire(p) | Later::Retry(p) => Some(p.job),
            Later::Prepare { pending, .. } => Some(pending.job),
            Later::Restart(job) => Some(*job),
            Later::Claim(what) => what.job_to_run(),
            Later::JoinEnd(end) => Some(end.job),
            Later::Number { pending, .. } => Some(pending.job),
            Later::Timeout(_) | Later::Kill(_) | Later::StoreRetry | Later::Resume(_) => None,
        }
    }
}

/// What a previous runner left (the state store's memory), and how this one is set up.
#[derive(Default)]
pub(super) struct Setup {
    pub handled: HashMap<(String, String), DateTime<Utc>>,
    pub last_runs: HashMap<String, u64>,
    pub last_success: HashMap<String, DateTime<Utc>>,
    /// The first block of every job's run numbers is on disk.
    pub numbers_on_disk: bool,
    /// Jobs paused by a previous runner, and until when.
    pub paused: HashMap<String, Option<DateTime<Utc>>>,
    /// Runs' output goes to DIR/JOB/RUN.log (their history rows name it).
    pub log_dir: Option<PathBuf>,
    /// One runner of a cluster (SPEC §9): time firings are claimed, run numbers come from the cluster.
    pub cluster: bool,
}

pub(super) struct Core<W: World> {
    pub plan: Arc<Plan>,
    /// `plan.joins_on()`: who hears of a job's runs (a run's end looks at these, not at every job).
    pub joins_on: Vec<Vec<(JobId, usize)>>,
    /// `plan.handled_by()`: for a failure handler, the jobs whose failures fire it.
    pub handled_by: Vec<Vec<JobId>>,
    pub jobs: Vec<JobState>,
    pub executors: waits::Executors,
    pub runs: HashMap<RunId, Run>,
    next_id: RunId,
    /// What was arranged for later, by key, until its time comes (a firing whose env files are read waits here
    /// for its job's read, see `env_reads`, with no timer).
    arranged: waits::Arranged,
    /// Per job, the firings (keys in `waiting`) that wait for the one read of its env files in flight: a file
    /// that never answers (a hung network mount) holds one read per job, however often the job fires.
    env_reads: HashMap<JobId, Vec<u64>>,
    pub timetable: Timetable,
    /// The jobs `refresh` looks at: not done, and held by no time trigger.
    watch: Watch,
    /// How many jobs are not done: the work is over when none is and nothing runs.
    undone: usize,
    pub stopping: bool,
    /// The stop was asked for (a signal, `flowrun stop`), not the end of the work or `--for`.
    pub asked_to_stop: bool,
    /// A run had to be killed after its grace at such a stop.
    pub unclean: bool,
    pub forced: bool,
    pub failed: bool,
    pub failed_messages: u64,
    pub log_dir: Option<PathBuf>,
    /// When this runner started (a time firing due before it is a catch-up).
    pub started_at: DateTime<Utc>,
    /// The last handled firing of each time trigger, by (job, trigger fingerprint): from the store at the start,
    /// then as firings are handled (a reload resumes unchanged triggers from here).
    pub handled: HashMap<(String, String), DateTime<Utc>>,
    /// The last handled firings as the previous runner left them (how long no runner was up, for a catch-up).
    handled_at_start: HashMap<(String, String), DateTime<Utc>>,
    /// Per job, a catch-up firing due at the start that its `start` trigger's run stands for: (firings, first due).
    start_covers: HashMap<JobId, (u64, DateTime<Utc>)>,
    /// The start is being decided (its `due_timers` sees what fell due while no runner was up).
    starting: bool,
    /// The last run numbers a previous runner gave, by job (a job added by a reload goes on from its own).
    pub last_runs: HashMap<String, u64>,
    /// Pauses a previous runner left, applied at the start.
    remembered_pauses: HashMap<String, Option<DateTime<Utc>>>,
    pub(super) held: held::Held,
    /// One runner of a cluster: time firings are claimed, run numbers come from the cluster's counters.
    pub cluster: bool,
    /// That the cluster's store does not answer was said (and that it does again will be).
    unreachable_said: bool,
    /// The instant of the input being decided.
    pub now: Now,
    pub out: VecDeque<Effect>,
    pub world: W,
}

impl<W: World> Core<W> {
    pub fn new(plan: Arc<Plan>, world: W, setup: Setup, now: Now) -> Core<W> {
        let started_at = now.utc;
        // Sized up front: a collected `flat_map` doubles its way up (16,384 entries held for 10,000 jobs).
        let mut entries = Vec::with_capacity(plan.jobs.iter().map(|j| j.triggers.len()).sum());
        for j in 0..plan.jobs.len() {
            entries.extend(time_entries(&plan, j, &setup.handled, started_at));
        }
        let jobs = plan
            .jobs
            .iter()
            .map(|j| {
                let mut state = JobState::new(&j.triggers);
                // Run numbers go on from the last runner's (log files and FLOWRUN_RUN never repeat); the
                // runner's start reserved a block of them.
                let last = setup.last_runs.get(&j.name).copied().unwrap_or(0);
                state.next_number += last;
                // Committed by the runner's start, before anything ran (unless the store was full then: the
                // first run asks for them).
                if setup.numbers_on_disk {
                    state.reserved = last + NUMBER_BLOCK;
                    state.durable = state.reserved;
                }
                state.last_success = setup.last_success.get(&j.name).copied();
                state
            })
            .collect();
        let mut core = Core {
            jobs,
            executors: waits::Executors::new(plan.executors.len()),
            timetable: Timetable::new(entries, started_at),
            joins_on: plan.joins_on(),
            handled_by: plan.handled_by(),
            plan,
            runs: HashMap::new(),
            next_id: 1,
            arranged: Default::default(),
            env_reads: HashMap::new(),
            watch: Watch::default(),
            undone: 0,
            stopping: false,
            asked_to_stop: false,
            unclean: false,
            forced: false,
            failed: false,
            failed_messages: 0,
            log_dir: setup.log_dir,
            started_at,
            handled_at_start: setup.handled.clone(),
            start_covers: HashMap::new(),
            starting: false,
            handled: setup.handled,
            last_runs: setup.last_runs,
            remembered_pauses: setup.paused,
            held: Default::default(),
            cluster: setup.cluster,
            unreachable_said: false,
            now,
            out: VecDeque::new(),
            world,
        };
        core.watch_all();
        core
    }

    /// The start of the work: interval grids anchored, what fell due while no runner was alive said, the `start`
    /// triggers fired; or, when a stop signal came while the workflow was read (`stop`), the stop.
    pub fn start(&mut self, now: Now, stop: Option<Stop>) {
        self.now = now;
        self.record_anchors();
        self.pauses_remembered();
        if let Some(stop) = stop {
            return self.on_stop(stop);
        }
        // What fell due while no runner was alive is said now, not at the trigger's next instant (a nightly job's
        // misses would wait a day; a missed `at` has no next instant and would never be said).
        self.starting = true;
        self.due_timers();
        self.starting = false;
        for j in 0..self.plan.jobs.len() {
            let starts: Vec<usize> = (0..self.plan.jobs[j].triggers.len())
                .filter(|&t| matches!(self.plan.jobs[j].triggers[t], Trigger::Start))
                .collect();
            for t in starts {
                let mut pending = self.pending_by(j, t);
                // The start's run stands for what fell due meanwhile (one run, not a run and a skip).
                if let Some((coalesced, first_due)) = self.start_covers.remove(&j) {
                    pending.coalesced = coalesced;
                    pending.first_due = first_due;
                    pending.catch_up = true;
                }
                self.fire(pending);
            }
            self.pump_each(j);
        }
        // A durable queue no job writes is closed at once: its readers get what it kept, then their end (a file
        // that drains a store). Another channel with no writer waits for a reload to give it one.
        for c in 0..self.plan.channels.len() {
            if self.plan.channels[c].writers.is_empty() && self.plan.channels[c].durable {
                self.settle_channel(c);
            }
        }
        self.settle();
    }

    /// Decide what follows `input`.
    pub fn handle(&mut self, input: Input, now: Now) {
        self.now = now;
        match input {
            Input::Due(key) => self.on_due(key),
            Input::Timer => self.due_timers(),
            Input::Exited { id, end } => self.on_exit(id, end),
            Input::Ready { id, probe } => self.on_ready(id, probe),
            Input::NotReady { id, timeout, last } => self.on_not_ready(id, timeout, last),
            Input::Unhealthy { id, why } => self.on_unhealthy(id, why),
            Input::Prepared { job, env } => self.on_prepared(job, env),
            Input::Wake(c) => {
                let plan = self.plan.clone();
                for &j in &plan.channels[c].readers {
                    self.pump_each(j);
                }
            }
            Input::Stop(stop) => self.on_stop(stop),
            Input::Claimed { key, answer } => self.on_claimed(key, answer),
            Input::TakenOver(taken) => self.on_taken_over(taken),
        }
        self.settle();
    }

    /// After every decision: waiting firings start where workers are free, and jobs that can fire no more are
    /// done.
    pub fn settle(&mut self) {
        self.admit();
        self.refresh();
    }

    /// How the workflow ended (SPEC §3, §7): a stop asked for that went cleanly is a success whatever failed
    /// before (history and metrics keep the failures), so `systemctl stop` never marks the unit failed; one whose
    /// runs had to be killed after their grace (`leftovers_killed`: what was left below the runner, at the end) is
    /// not; a forced stop is its own code; the end of the work and `--for` say whether a run failed for good.
    pub fn ending(&self, leftovers_killed: bool) -> super::Ending {
        use super::Ending;
        match (self.forced, self.asked_to_stop) {
            (true, _) => Ending::Forced,
            (false, true) if self.unclean || leftovers_killed => Ending::Unclean,
            (false, true) => Ending::Succeeded,
            (false, false) if self.failed => Ending::Failed,
            (false, false) => Ending::Succeeded,
        }
    }

    /// Nothing runs, and the work is over (every job is done) or the runner stops.
    pub fn finished(&self) -> bool {
        self.runs.is_empty() && (self.stopping || self.undone == 0)
    }

    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.timetable.earliest()
    }

    /// The next time firing of every job.
    pub fn next_fires(&self) -> Vec<Option<DateTime<Utc>>> {
        self.timetable.next_per_job(self.plan.jobs.len())
    }

    /// A job removed by a reload.
    pub fn retired(&self, job: JobId) -> bool {
        self.plan.jobs[job].retired
    }

    /// Runs of a job alive or on their way (a firing beyond `max_instances` of these is skipped): live, waiting
    /// for a worker, arranged for later (jitter, retry, restart, env read), held for the store.
    pub fn instances(&self, j: JobId) -> usize {
        self.jobs[j].live
            + self.executors.waiting_of(j)
            + self.arranged.count(j)
            + self.held.ats.count(j)
            + self.jobs[j].handler_backlog.len()
    }

    fn emit(&mut self, event: Event) {
        self.out.push_back(Effect::Emit(event));
    }

    fn notice(&mut self, text: String) {
        self.out.push_back(Effect::Notice(text));
    }

    fn manual(&mut self, news: Manual) {
        self.out.push_back(Effect::Manual(news));
    }

    /// A manual firing will not run (skipped, removed by a reload, dropped at a stop): whoever waits hears why.
    fn manual_skipped(&mut self, manual: Option<u64>, reason: String) {
        if let Some(key) = manual {
            self.manual(Manual::Skipped(key, reason));
        }
    }

    /// A firing due now by nothing but itself (a restart, a manual firing).
    fn pending_now(&self, job: JobId) -> Pending {
        Pending::at(job, self.now.utc)
    }

    /// A firing by the job's trigger number `trigger`, due now.
    fn pending_by(&self, job: JobId, trigger: usize) -> Pending {
        Pending {
            trigger: Some(trigger),
            ..Pending::at(job, self.now.utc)
        }
    }

    /// Arrange `later` after `delay` (a firing, retry or restart on its way counts as an instance of its job).
    /// What waits is kept here, not in the timer: a stop must find a retry's messages to give them back.
    fn later(&mut self, delay: Duration, later: Later) -> u64 {
        let timed = !matches!(later, Later::Prepare { .. });
        let key = self.arranged.insert(later);
        if timed {
            self.out.push_back(Effect::Arm { key, delay });
        }
        key
    }

    /// Call off what was arranged under `key` (a run's timeout or kill, once the run has ended).
    fn call_off(&mut self, key: u64) {
        if self.arranged.remove(key).is_some() {
            self.out.push_back(Effect::Disarm(key));
        }
    }

    /// A delay is over: what was arranged happens, unless a stop took it back meanwhile.
    fn on_due(&mut self, key: u64) {
        let Some(later) = self.arranged.remove(key) else {
            return;
        };
        match later {
            Later::Fire(pending) => {
                self.fire(pending);
            }
            Later::Retry(pending) => {
                if self.stopping {
                    self.retry_called_off(pending, "the runner is stopping");
                } else {
                    self.enqueue(pending);
                }
            }
            Later::Restart(job) => {
                // No trigger: the history says `restart`.
                self.fire(self.pending_now(job));
            }
            Later::Timeout(id) => self.on_timeout(id),
            // Comes with its env by `Input::Prepared`, never by a timer; a number by `Input::Claimed`.
            Later::Prepare { .. } | Later::Number { .. } => {}
            // The store did not answer: ask again.
            Later::Claim(what) => self.claim(what),
            Later::JoinEnd(end) => self.ask_join(end),
            Later::StoreRetry => self.on_store_retry(),
            Later::Resume(job) => {
                if let Some(p) = &mut self.jobs[job].paused {
                    p.timer = None;
                }
                self.resume_job(job);
            }
            Later::Kill(id) => {
                if let Some(pid) = self.runs.get(&id).and_then(|r| r.state.pid()) {
                    // A run that outlived its grace at a stop the runner was asked for: not a clean stop.
                    if self.asked_to_stop {
                        self.unclean = true;
                    }
                    self.out.push_back(Effect::Signal {
                        pid,
                        signal: libc::SIGKILL,
                    });
                }
            }
        }
    }

    /// (Re)schedule a job's time triggers (a reload): each resumes after its last handled firing, if any.
    pub fn schedule_job(&mut self, j: JobId) {
        let entries = time_entries(&self.plan, j, &self.handled, self.now.utc);
        self.timetable.replace_job(j, entries, self.now.utc);
    }

    /// A new run id (runs are keyed by it; run numbers are per job).
    fn new_run_id(&mut self) -> RunId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Whether the manual firing `manual` waits in an executor's queue.
    fn is_queued(&self, manual: u64) -> bool {
        self.executors.waiting().any(|p| p.manual == Some(manual))
    }
}

/// The timetable entries of a job's time triggers, each resumed after its last handled firing when there is one.
fn time_entries(
    plan: &Plan,
    j: JobId,
    handled: &HashMap<(String, String), DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<Entry> {
    let job = &plan.jobs[j];
    let mut entries = Vec::new();
    // `enabled: false`: its time triggers are not scheduled at all.
    if !job.enabled {
        return entries;
    }
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
