//! What the core keeps besides the plan: per job (counts, joins, numbers), per run, and firings on their way.

use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Instant;

use crate::engine::core::outcome::{Join, RestartBackoff};
use crate::event::JobCounts;
use crate::plan::{ChannelId, JobId, Trigger};

/// The engine's own id of a run (run numbers are per job).
pub type RunId = u64;

/// An `each` run's messages: one buffer, how many messages it holds, and the channel they came from (where they go
/// back when the run does not finish them: kept here, as a reload that removes the reader forgets its trigger).
pub struct Batch {
    pub data: Arc<Vec<u8>>,
    pub count: usize,
    pub from: crate::plan::ChannelId,
    /// Their numbers in a durable channel (empty otherwise), in order.
    pub seqs: Vec<crate::durable::SeqRange>,
    /// How many times the first of them has been handed out, this time included.
    pub delivery: u32,
}

/// A firing waiting for a worker of its executor (or a retry, restart or jittered firing waiting for its time).
pub struct Pending {
    pub job: JobId,
    pub scheduled: DateTime<Utc>,
    /// The earliest due instant this firing stands for (lateness is counted from it).
    pub first_due: DateTime<Utc>,
    pub attempt: u32,
    pub input: Option<Batch>,
    /// How many due firings this one stands for (0: not a time firing).
    pub coalesced: u64,
    /// The trigger of the job that fired it (none: a restart).
    pub trigger: Option<usize>,
    /// A time firing that fell due while no runner was alive.
    pub catch_up: bool,
    /// A manual firing (the control API's trigger): its waiter's key.
    pub manual: Option<u64>,
    /// For a firing by `after`: the runs that completed the join, as JSON (`FLOWRUN_UPSTREAM`).
    pub upstream: Option<Arc<str>>,
    /// For a firing by `on_failure`: the job whose run failed.
    pub handles: Option<JobId>,
    /// A retry: the number of the run it is a try of (tries belong to their run), and when its first try began.
    pub number: Option<u64>,
    pub run_started: Option<DateTime<Utc>>,
    /// A new run's number the cluster's counter gave (with its claim, or asked for at its admission).
    pub granted: Option<u64>,
    /// A try of a run whose runner of the cluster stopped answering (that runner's id): tried again here.
    pub failover: Option<Arc<str>>,
}

impl Pending {
    /// A firing due at `now` (start, after, restart, a manual one).
    pub fn at(job: JobId, now: DateTime<Utc>) -> Pending {
        Pending {
            job,
            scheduled: now,
            first_due: now,
            attempt: 1,
            input: None,
            coalesced: 0,
            trigger: None,
            catch_up: false,
            manual: None,
            upstream: None,
            handles: None,
            number: None,
            run_started: None,
            granted: None,
            failover: None,
        }
    }
}

/// Why a run is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// It ran past its `timeout`: a failure.
    Timeout,
    /// Its liveness probe failed enough times in a row: a failure.
    Unhealthy,
    /// Its readiness probe did not pass within the probe's `timeout` (this long): a failure.
    NotReady(std::time::Duration),
    /// The runner is shutting down: neither success nor failure.
    Shutdown,
    /// Asked by the control API (`stop JOB`): as at shutdown, and a service is not restarted.
    Request,
}

/// Where a run is in its life (its start is the moment it is created).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// It could not be started: there is no process.
    NotStarted,
    Running {
        pid: u32,
    },
    Stopping {
        pid: u32,
        cause: StopCause,
    },
}

impl RunState {
    pub fn pid(&self) -> Option<u32> {
        match *self {
            RunState::NotStarted => None,
            RunState::Running { pid } | RunState::Stopping { pid, .. } => Some(pid),
        }
    }
}

/// A started run.
pub struct Run {
    pub job: JobId,
    pub number: u64,
    pub attempt: u32,
    pub scheduled: DateTime<Utc>,
    pub trigger: Option<usize>,
    pub manual: Option<u64>,
    pub upstream: Option<Arc<str>>,
    /// The job whose failed run it handles (`on_failure`).
    pub handles: Option<JobId>,
    /// A try taken over from a runner of the cluster that stopped answering (its id).
    pub failover: Option<Arc<str>>,
    /// The executor whose worker it holds.
    pub executor: usize,
    pub input: Option<Batch>,
    /// The earliest due instant it stands for, how many due firings, whether one fell due with no runner alive
    /// (as its firing said).
    pub first_due: DateTime<Utc>,
    pub coalesced: u64,
    pub catch_up: bool,
    pub started: Instant,
    pub started_at: DateTime<Utc>,
    /// When the run's first try began (its own start, for a first try).
    pub run_started: DateTime<Utc>,
    pub state: RunState,
    /// Its timeout and kill timers (called off when it ends: a long timeout must not outlive the run).
    pub timers: Vec<u64>,
    /// Its job has a readiness probe (the shell runs it).
    pub has_probe: bool,
    /// Its readiness probe passed.
    pub ready: bool,
    /// Why its liveness probe found it unhealthy (it is being stopped for that).
    pub unhealthy: Option<String>,
    /// The channel its output feeds and the one it reads (its `stdin:` or its batch's), as wired at its start: a
    /// reload may take them from its job while it runs, and they settle only once it has ended.
    pub writes: Option<ChannelId>,
    pub reads: Option<ChannelId>,
}

impl Run {
    pub fn new(
        pending: Pending,
        number: u64,
        executor: usize,
        state: RunState,
        now: super::Now,
    ) -> Run {
        Run {
            job: pending.job,
            number,
            attempt: pending.attempt,
            scheduled: pending.scheduled,
            trigger: pending.trigger,
            manual: pending.manual,
            upstream: pending.upstream.clone(),
            handles: pending.handles,
            failover: pending.failover.clone(),
            executor,
            input: pending.input,
            first_due: pending.first_due,
            coalesced: pending.coalesced,
            catch_up: pending.catch_up,
            started: now.mono,
            started_at: now.utc,
            run_started: pending.run_started.unwrap_or(now.utc),
            state,
            timers: Vec::new(),
            has_probe: false,
            unhealthy: None,
            ready: false,
            writes: None,
            reads: None,
        }
    }
}

/// Per job.
#[derive(Default)]
pub struct JobState {
    pub counts: JobCounts,
    pub live: usize,
    pub next_number: u64,
    /// Run numbers up to this one are reserved in the store (0: none yet, or no store).
    pub reserved: u64,
    /// Run numbers up to this one are reserved on disk: only these are given.
    pub durable: u64,
    /// The last reservation asked for and not known to be on disk yet: (the sequence number of the hand-over
    /// that carries it, up to which number).
    pub reserving: Option<(u64, u64)>,
    /// It can fire no more.
    pub done: bool,
    /// Its `after` joins that can never complete were said (`run.skipped`): once, even if a manual firing
    /// makes the job not done for a while.
    pub dead_joins_said: bool,
    /// Per trigger (`Join::default()` for triggers that are not `after`); empty for a job without `after`.
    pub joins: Vec<Join>,
    pub restart: RestartBackoff,
    pub last_exit: Option<String>,
    pub last_success: Option<DateTime<Utc>>,
    /// Per trigger (empty for triggers that are not `after`): per upstream, the run that reached the join's
    /// status since its last firing.
    pub upstream: Vec<Vec<serde_json::Value>>,
    /// When the job's recent restarts happened (kept within its restart window).
    pub restarts: std::collections::VecDeque<Instant>,
    /// Restarts since the runner started.
    pub restarted: u64,
    /// Paused (`flowrun pause`): it fires nothing until resumed.
    pub paused: Option<Paused>,
    /// `on_failure` firings beyond `max_instances`: they wait their turn (every failure is told), not skipped.
    pub handler_backlog: std::collections::VecDeque<Pending>,
}

/// A job's pause.
pub struct Paused {
    /// When it resumes by itself (`--for`), if it does.
    pub until: Option<DateTime<Utc>>,
    /// The timer that resumes it.
    pub timer: Option<u64>,
}

impl JobState {
    pub fn new(triggers: &[Trigger]) -> JobState {
        // Only a job fired by `after` keeps joins and the runs that complete them (indexed by trigger).
        if !triggers.iter().any(|t| matches!(t, Trigger::After { .. })) {
            return JobState {
                next_number: 1,
                ..JobState::default()
            };
        }
        JobState {
            next_number: 1,
            joins: triggers
                .iter()
                .map(|t| match t {
                    Trigger::After { jobs, any, .. } => Join::new(jobs.len(), *any),
                    _ => Join::default(),
                })
                .collect(),
            upstream: triggers.iter().map(|_| Vec::new()).collect(),
            ..JobState::default()
        }
    }
}
