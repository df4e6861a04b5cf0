//! What the dispatcher tells the state store (SPEC §4): a time trigger's handled firing, a history row per run,
//! skip and miss, blocks of run numbers. Each is pushed to a buffer handed to the writer thread once per input
//! (and waited for only when an `at` firing must be on disk before its run); with `--state none`, nothing.

use chrono::{DateTime, Utc};
use std::path::PathBuf;
use std::time::Duration;

use super::dispatcher::Dispatcher;
use super::outcome::{Classified, RunResult};
use super::state::{Pending, Run, RunState, StopCause};
use crate::event::SkipReason;
use crate::plan::{JobId, Trigger};
use crate::store::writer::History;
use crate::store::{Op, Outcome, RunRow};

/// A runner's state: where, what it remembered at its start, and the writer of what happens now.
pub struct Persist {
    pub dir: PathBuf,
    pub history: History,
    pub memory: crate::store::Memory,
    /// Runs a previous runner left `running` (it died), now marked interrupted.
    pub recovered: u64,
    /// The first block of every job's run numbers is on disk (not when the store was full at the start).
    pub numbers_on_disk: bool,
}

/// The dispatcher's view of [`Persist`].
pub struct Recorder {
    pub dir: PathBuf,
    pub history: History,
    pub recovered: u64,
    pub numbers_on_disk: bool,
    remembered: crate::store::Memory,
    /// Ops of the input being handled, handed to the writer at its end (one hand-over per input).
    buffer: std::cell::RefCell<Vec<Op>>,
    /// Something in the buffer must not wait for the writer's window (a handled firing, a block of numbers).
    urgent: std::cell::Cell<bool>,
    /// Something in the buffer must be committed before a run starts (an `at` firing: it never fires twice).
    durable: std::cell::Cell<bool>,
}

/// Run numbers are reserved this many ahead (durably, before they are given), so a crash never lets a number be
/// given twice; a crash leaves a gap of at most this many instead.
pub const NUMBER_BLOCK: u64 = 100;

impl Recorder {
    pub fn new(p: Persist) -> Recorder {
        Recorder {
            dir: p.dir,
            history: p.history,
            recovered: p.recovered,
            numbers_on_disk: p.numbers_on_disk,
            remembered: p.memory,
            buffer: Default::default(),
            urgent: Default::default(),
            durable: Default::default(),
        }
    }

    /// Commit what was recorded now when it must be on disk before a run starts.
    pub fn hand_over_if_durable(&self) {
        if self.durable.get() {
            self.hand_over();
        }
    }

    /// Hand what this input recorded to the writer (and wait for the commit when it must be durable).
    pub fn hand_over(&self) {
        let mut ops = self.buffer.borrow_mut();
        if self.durable.replace(false) {
            self.urgent.set(false);
            self.history.commit_now(&mut ops);
        } else {
            self.history.send_all(&mut ops, self.urgent.replace(false));
        }
    }

    /// Commit what this input recorded, and everything before it, now: whether it is on disk.
    pub fn commit_all(&self) -> bool {
        self.durable.set(false);
        self.urgent.set(false);
        self.history.commit_now(&mut self.buffer.borrow_mut())
    }

    /// Hand over the rest and let the writer commit it and end (the lock is let go).
    pub fn close(self) {
        self.hand_over();
        self.history.close();
    }

    /// The last handled firing of each trigger, as a previous runner left them (taken: the dispatcher keeps
    /// them from now on).
    pub fn take_handled(&mut self) -> std::collections::HashMap<(String, String), DateTime<Utc>> {
        std::mem::take(&mut self.remembered.handled)
    }

    /// When a previous runner last saw this job succeed.
    pub fn last_success(&self, job: &str) -> Option<DateTime<Utc>> {
        self.remembered.last_success.get(job).copied()
    }

    /// The last run number a previous runner gave this job (0: none).
    pub fn last_run(&self, job: &str) -> u64 {
        self.remembered.last_runs.get(job).copied().unwrap_or(0)
    }
}

/// How a run ended, in the history's words.
pub(super) fn outcome_of(c: &Classified, state: RunState) -> Outcome {
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

impl Dispatcher {
    fn send(&self, op: Op) {
        if let Some(m) = &self.memory {
            m.buffer.borrow_mut().push(op);
        }
    }

    /// A time trigger's firing at `at` is handled: a restart will not fire it again.
    pub(super) fn record_handled(&mut self, job: JobId, trigger: usize, at: DateTime<Utc>) {
        if let Trigger::Time { rule, .. } = &self.plan.jobs[job].triggers[trigger] {
            let key = (self.plan.jobs[job].name.clone(), rule.fingerprint());
            self.handled.insert(key.clone(), at);
            if let Some(m) = &self.memory {
                m.urgent.set(true);
                if matches!(rule, crate::plan::TimeSpec::At { .. }) {
                    m.durable.set(true);
                }
            }
            self.send(Op::Handled {
                job: key.0,
                fingerprint: key.1,
                at,
            });
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
        let Some(m) = &self.memory else { return true };
        let state = &mut self.jobs[job];
        if number <= state.durable {
            return true;
        }
        if m.commit_all() {
            state.durable = state.reserved;
            state.reserving = None;
            return true;
        }
        false
    }

    /// Ask for the next block of the job's numbers when `number` comes within half a block of what is reserved
    /// (handed over with this input, not waited for); and take in what the writer committed meanwhile.
    pub(super) fn reserve_up_to(&mut self, job: JobId, number: u64) {
        let Some(m) = &self.memory else { return };
        let state = &mut self.jobs[job];
        if let Some((seq, upto)) = state.reserving {
            if m.history.committed() >= seq {
                state.durable = state.durable.max(upto);
                state.reserving = None;
            }
        }
        if number + NUMBER_BLOCK / 2 > state.reserved {
            state.reserved = state.reserved.max(number) + NUMBER_BLOCK;
            m.urgent.set(true);
            m.buffer.borrow_mut().push(Op::Reserve {
                job: self.plan.jobs[job].name.clone(),
                upto: state.reserved,
            });
            // Any hand-over from now on carries it.
            state.reserving = Some((m.history.next_seq(), state.reserved));
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
            self.send(Op::Unhandle {
                job: key.0,
                fingerprint: key.1,
                at,
            });
        }
    }

    /// At a clean stop: the numbers reserved but not given go back (no gap after a clean stop).
    pub(super) fn record_settle(&self) {
        for (j, job) in self.plan.jobs.iter().enumerate() {
            self.send(Op::Settle {
                job: job.name.clone(),
                last: self.jobs[j].next_number - 1,
            });
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

    /// A new row for a run about to start (`None` without a store).
    pub(super) fn record_row(
        &self,
        pending: &Pending,
        number: u64,
        pid: Option<u32>,
        lateness_us: Option<i64>,
    ) -> Option<Box<RunRow>> {
        self.memory.as_ref()?;
        Some(Box::new(RunRow {
            run: Some(number),
            attempt: pending.attempt,
            trigger: self.trigger_text(pending.job, Cause::of(pending)),
            scheduled: Some(pending.scheduled),
            started: Some(Utc::now()),
            lateness_ms: lateness_us.map(|us| us as f64 / 1000.0),
            messages: pending.input.as_ref().map(|b| b.count as u64),
            count: pending.coalesced.max(1),
            catch_up: pending.catch_up,
            pid,
            // Where its output will go; cleared at the end when it printed nothing.
            log: self.log_dir.as_ref().map(|d| {
                d.join(&self.plan.jobs[pending.job].name)
                    .join(format!("{number}.log"))
                    .display()
                    .to_string()
            }),
            ..RunRow::new(self.plan.jobs[pending.job].name.clone(), Outcome::Running)
        }))
    }

    /// A run started: its row, `running` until it ends (or the next runner marks it interrupted).
    pub(super) fn record_start(
        &self,
        pending: &Pending,
        number: u64,
        pid: Option<u32>,
        lateness_us: Option<i64>,
    ) -> Option<Box<RunRow>> {
        let row = self.record_row(pending, number, pid, lateness_us)?;
        self.send(Op::Append(row.clone()));
        Some(row)
    }

    /// A run ended: its row gets the end, the outcome and the log file.
    pub(super) fn record_end(&self, run: &mut Run, c: &Classified, duration: Duration) {
        let Some(mut row) = run.row.take() else {
            return;
        };
        row.ended = Some(Utc::now());
        row.duration_ms = Some(duration.as_millis() as u64);
        row.code = c.code;
        row.signal = c.signal.clone();
        row.reason = c.reason.clone();
        row.outcome = outcome_of(c, run.state);
        row.log = run
            .log
            .as_ref()
            .and_then(|l| l.written())
            .map(|p| p.display().to_string());
        self.send(Op::Update(row));
    }

    /// A firing skipped (beyond `max_instances`, or a join that can never complete).
    pub(super) fn record_skip(
        &self,
        job: JobId,
        cause: Cause,
        scheduled: Option<DateTime<Utc>>,
        why: &SkipReason,
    ) {
        if self.memory.is_none() {
            return;
        }
        self.send(Op::Append(Box::new(RunRow {
            reason: Some(why.text()),
            ..self.firing_row(job, cause, scheduled, Outcome::Skipped, 1)
        })));
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
        if self.memory.is_none() {
            return;
        }
        self.send(Op::Append(Box::new(RunRow {
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
        })));
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
            ended: Some(Utc::now()),
            count,
            ..RunRow::new(self.plan.jobs[job].name.clone(), outcome)
        }
    }
}

/// What fired a run or a firing, for its history row.
#[derive(Clone, Copy)]
pub(super) enum Cause {
    Trigger(usize),
    /// `flowrun trigger` or the API.
    Manual,
    /// The job's restart policy.
    Restart,
}

impl Cause {
    pub(super) fn of(pending: &Pending) -> Cause {
        match (pending.manual, pending.trigger) {
            (Some(_), _) => Cause::Manual,
            (None, Some(t)) => Cause::Trigger(t),
            (None, None) => Cause::Restart,
        }
    }
}
