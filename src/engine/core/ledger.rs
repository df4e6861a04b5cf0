//! What the core tells the state store (SPEC §4) besides its events (the history rows are made from those, see
//! `store::sink`): a time trigger's handled firing and blocks of run numbers (a number is given only once its
//! block is on disk). Through the world's `record`; with `--state none`, nothing.

use chrono::{DateTime, Utc};

use super::{Core, Urgency, World};
use crate::engine::core::outcome::{Classified, RunResult};
use crate::engine::core::runs::{Pending, Run, RunState, StopCause};
use crate::plan::{JobId, Trigger};
use crate::store::{Op, Outcome};

pub use crate::engine::record::NUMBER_BLOCK;

/// How a run ended, in the history's words.
pub fn outcome_of(c: &Classified, state: RunState) -> Outcome {
    match (c.outcome, state) {
        (_, RunState::NotStarted) => Outcome::SpawnFailed,
        (None, _) => Outcome::Stopped,
        (Some(RunResult::Succeeded), _) => Outcome::Succeeded,
        (
            Some(RunResult::Failed),
            RunState::Stopping {
                cause: StopCause::Timeout,
                ..
            },
        ) => Outcome::Timeout,
        (
            Some(RunResult::Failed),
            RunState::Stopping {
                cause: StopCause::Unhealthy,
                ..
            },
        ) => Outcome::Unhealthy,
        (Some(RunResult::Failed), _) => Outcome::Failed,
    }
}

impl<W: World> Core<W> {
    /// A time trigger's firing at `at` is handled: a restart will not fire it again.
    pub(super) fn record_handled(&mut self, job: JobId, trigger: usize, at: DateTime<Utc>) {
        if let Trigger::Time { rule, .. } = &self.plan.jobs[job].triggers[trigger] {
            let key = (self.plan.jobs[job].name.clone(), rule.fingerprint());
            self.handled.insert(key.clone(), at);
            let urgency = match rule {
                crate::plan::TimeSpec::At { .. } => Urgency::Durable,
                _ => Urgency::Soon,
            };
            let op = Op::Handled {
                job: key.0,
                fingerprint: key.1,
                at,
            };
            self.world.record(op, urgency);
        }
    }

    /// An interval without `start` starts its grid at the runner's start: remembered at once, so a runner
    /// restarted more often than its period still fires on the first grid, not never.
    pub(super) fn record_anchors(&mut self) {
        for j in 0..self.plan.jobs.len() {
            for t in 0..self.plan.jobs[j].triggers.len() {
                let Trigger::Time { rule, .. } = &self.plan.jobs[j].triggers[t] else {
                    continue;
                };
                let fresh = matches!(rule, crate::plan::TimeSpec::Interval { start: None, .. })
                    && !self
                        .handled
                        .contains_key(&(self.plan.jobs[j].name.clone(), rule.fingerprint()));
                if fresh {
                    self.record_handled(j, t, self.started_at);
                }
            }
        }
    }

    /// Whether the job's next run number may be given: only once its reservation is on disk, so a crash (or a
    /// store that fails) never lets a number be given twice. The next block is asked for half a block ahead,
    /// without waiting; a number beyond what is on disk is committed now (the dispatcher waits, bounded; a
    /// failing store answers at once), and when that fails the run must wait (see `hold`).
    pub(super) fn number_ready(&mut self, job: JobId) -> bool {
        let number = self.jobs[job].next_number;
        self.reserve_up_to(job, number);
        if !self.world.stored() || number <= self.jobs[job].durable {
            return true;
        }
        if self.world.commit_all() {
            let state = &mut self.jobs[job];
            state.durable = state.reserved;
            state.reserving = None;
            return true;
        }
        false
    }

    /// Ask for the next block of the job's numbers when `number` comes within half a block of what is reserved
    /// (handed over with this input, not waited for); and take in what the writer committed meanwhile.
    pub(super) fn reserve_up_to(&mut self, job: JobId, number: u64) {
        if !self.world.stored() {
            return;
        }
        let committed = self.world.committed();
        let state = &mut self.jobs[job];
        if let Some((seq, upto)) = state.reserving {
            if committed >= seq {
                state.durable = state.durable.max(upto);
                state.reserving = None;
            }
        }
        if number + NUMBER_BLOCK / 2 > state.reserved {
            state.reserved = state.reserved.max(number) + NUMBER_BLOCK;
            let upto = state.reserved;
            // Any hand-over from now on carries it.
            state.reserving = Some((self.world.next_seq(), upto));
            let op = Op::Reserve {
                job: self.plan.jobs[job].name.clone(),
                upto,
            };
            self.world.record(op, Urgency::Soon);
        }
    }

    /// A held `at` firing that never ran (the runner stops, or it is missed): its handled mark goes back, so the
    /// next start fires it (within its grace) as if this runner had never seen it.
    pub(super) fn record_unhandled(&mut self, job: JobId, trigger: usize, at: DateTime<Utc>) {
        if let Some(Trigger::Time { rule, .. }) = self.plan.jobs[job].triggers.get(trigger) {
            let key = (self.plan.jobs[job].name.clone(), rule.fingerprint());
            if self.handled.get(&key) == Some(&at) {
                self.handled.remove(&key);
            }
            let op = Op::Unhandle {
                job: key.0,
                fingerprint: key.1,
                at,
            };
            self.world.record(op, Urgency::Later);
        }
    }

    /// At a clean stop: the numbers reserved but not given go back (no gap after a clean stop).
    pub fn record_settle(&mut self) {
        for j in 0..self.plan.jobs.len() {
            let op = Op::Settle {
                job: self.plan.jobs[j].name.clone(),
                last: self.jobs[j].next_number - 1,
            };
            self.world.record(op, Urgency::Later);
        }
    }

    /// What fired a run, in words.
    pub(super) fn trigger_text(&self, job: JobId, cause: Cause) -> String {
        match cause {
            // A retry or a queued firing of a job a reload changed may name a trigger it no longer has.
            Cause::Trigger(t) => match self.plan.jobs[job].triggers.get(t) {
                Some(trigger) => self.plan.trigger_text(trigger),
                None => "a trigger a reload has changed since".to_string(),
            },
            Cause::Manual => "manual (flowrun trigger)".to_string(),
            Cause::Restart => "restart".to_string(),
            Cause::Handler(j) => format!("on_failure of {}", self.plan.jobs[j].name),
            Cause::Failover => "failover".to_string(),
        }
    }

    /// Where run `number` of `job` writes its output, if it prints any (with `--log-dir` or a state directory).
    pub(super) fn log_path(&self, job: JobId, number: u64) -> Option<String> {
        let dir = self.log_dir.as_ref()?;
        let path = dir
            .join(&self.plan.jobs[job].name)
            .join(format!("{number}.log"));
        Some(path.display().to_string())
    }
}

/// What fired a run or a firing, for its history row.
#[derive(Clone, Copy)]
pub enum Cause {
    Trigger(usize),
    /// `flowrun trigger` or the API.
    Manual,
    /// The job's restart policy.
    Restart,
    /// The `on_failure` of this job, whose run failed for good.
    Handler(JobId),
    /// A run of the cluster whose runner stopped answering, tried again here.
    Failover,
}

impl Cause {
    pub fn of(pending: &Pending) -> Cause {
        match pending.failover {
            Some(_) => Cause::Failover,
            None => Cause::from_parts(pending.manual, pending.trigger, pending.handles),
        }
    }

    pub fn of_run(run: &Run) -> Cause {
        match run.failover {
            Some(_) => Cause::Failover,
            None => Cause::from_parts(run.manual, run.trigger, run.handles),
        }
    }

    fn from_parts(manual: Option<u64>, trigger: Option<usize>, handles: Option<JobId>) -> Cause {
        match (manual, trigger, handles) {
            (Some(_), _, _) => Cause::Manual,
            (None, Some(t), _) => Cause::Trigger(t),
            (None, None, Some(j)) => Cause::Handler(j),
            (None, None, None) => Cause::Restart,
        }
    }
}
