//! What the core tells the state store (SPEC §4): a time trigger's handled firing, a history row per run, skip
//! and miss, blocks of run numbers (a number is given only once its block is on disk). Through the world's
//! `record`; with `--state none`, nothing.

use chrono::{DateTime, Utc};
use std::time::Duration;

use super::{Core, Urgency, World};
use crate::engine::outcome::{Classified, RunResult};
use crate::engine::state::{Pending, Run, RunId, RunState, StopCause};
use crate::event::SkipReason;
use crate::plan::{JobId, Trigger};
use crate::store::{Op, Outcome, RunRow};

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
    fn trigger_text(&self, job: JobId, cause: Cause) -> String {
        match cause {
            // A retry or a queued firing of a job a reload changed may name a trigger it no longer has.
            Cause::Trigger(t) => match self.plan.jobs[job].triggers.get(t) {
                Some(trigger) => self.plan.trigger_text(trigger),
                None => "a trigger a reload has changed since".to_string(),
            },
            Cause::Manual => "manual (flowrun trigger)".to_string(),
            Cause::Restart => "restart".to_string(),
        }
    }

    /// A new row for run `id`, about to start (`None` without a store).
    pub(super) fn record_row(
        &self,
        id: RunId,
        pid: Option<u32>,
        lateness_us: Option<i64>,
    ) -> Option<Box<RunRow>> {
        if !self.world.stored() {
            return None;
        }
        let run = self.runs.get(&id)?;
        let job = &self.plan.jobs[run.job];
        Some(Box::new(RunRow {
            run: Some(run.number),
            attempt: run.attempt,
            trigger: self.trigger_text(run.job, Cause::of_run(run)),
            scheduled: Some(run.scheduled),
            started: Some(self.now.utc),
            lateness_ms: lateness_us.map(|us| us as f64 / 1000.0),
            messages: run.input.as_ref().map(|b| b.count as u64),
            count: run.coalesced.max(1),
            catch_up: run.catch_up,
            pid,
            // Where its output will go; cleared at the end when it printed nothing.
            log: self.log_dir.as_ref().map(|d| {
                d.join(&job.name)
                    .join(format!("{}.log", run.number))
                    .display()
                    .to_string()
            }),
            ..RunRow::new(job.name.clone(), Outcome::Running)
        }))
    }

    /// A run started: its row, `running` until it ends (or the next runner marks it interrupted).
    pub(super) fn record_start(
        &mut self,
        id: RunId,
        pid: Option<u32>,
        lateness_us: Option<i64>,
    ) -> Option<Box<RunRow>> {
        let row = self.record_row(id, pid, lateness_us)?;
        self.world.record(Op::Append(row.clone()), Urgency::Later);
        Some(row)
    }

    /// A run ended: its row gets the end, the outcome and the log file.
    pub(super) fn record_end(
        &mut self,
        id: RunId,
        run: &mut Run,
        c: &Classified,
        duration: Duration,
    ) {
        let Some(mut row) = run.row.take() else {
            return;
        };
        row.ended = Some(self.now.utc);
        row.duration_ms = Some(duration.as_millis() as u64);
        row.code = c.code;
        row.signal = c.signal.clone();
        row.reason = c.reason.clone();
        row.outcome = outcome_of(c, run.state);
        row.log = self.world.log_written(id);
        self.world.record(Op::Update(row), Urgency::Later);
    }

    /// A firing skipped (beyond `max_instances`, or a join that can never complete).
    pub(super) fn record_skip(
        &mut self,
        job: JobId,
        cause: Cause,
        scheduled: Option<DateTime<Utc>>,
        why: &SkipReason,
    ) {
        if !self.world.stored() {
            return;
        }
        let row = Box::new(RunRow {
            reason: Some(why.text()),
            ..self.firing_row(job, cause, scheduled, Outcome::Skipped, 1)
        });
        self.world.record(Op::Append(row), Urgency::Later);
    }

    /// Firings missed (handled later than `misfire_grace`), `count` of them up to `scheduled`.
    pub(super) fn record_missed(
        &mut self,
        job: JobId,
        trigger: usize,
        scheduled: DateTime<Utc>,
        (count, at_least): (u64, bool),
        late: chrono::Duration,
    ) {
        // Handled even without a store: a reload resumes the trigger after it.
        self.record_handled(job, trigger, scheduled);
        if !self.world.stored() {
            return;
        }
        let row = Box::new(RunRow {
            reason: Some(crate::event::missed_reason(
                count,
                at_least,
                late.to_std().unwrap_or_default(),
                self.plan.jobs[job].misfire_grace,
            )),
            lateness_ms: Some(late.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0),
            catch_up: scheduled < self.started_at,
            ..self.firing_row(
                job,
                Cause::Trigger(trigger),
                Some(scheduled),
                Outcome::Missed,
                count,
            )
        });
        self.world.record(Op::Append(row), Urgency::Later);
    }

    fn firing_row(
        &self,
        job: JobId,
        cause: Cause,
        scheduled: Option<DateTime<Utc>>,
        outcome: Outcome,
        count: u64,
    ) -> RunRow {
        RunRow {
            trigger: self.trigger_text(job, cause),
            scheduled,
            ended: Some(self.now.utc),
            count,
            ..RunRow::new(self.plan.jobs[job].name.clone(), outcome)
        }
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
}

impl Cause {
    pub fn of(pending: &Pending) -> Cause {
        Cause::from_parts(pending.manual, pending.trigger)
    }

    fn of_run(run: &Run) -> Cause {
        Cause::from_parts(run.manual, run.trigger)
    }

    fn from_parts(manual: Option<u64>, trigger: Option<usize>) -> Cause {
        match (manual, trigger) {
            (Some(_), _) => Cause::Manual,
            (None, Some(t)) => Cause::Trigger(t),
            (None, None) => Cause::Restart,
        }
    }
}
