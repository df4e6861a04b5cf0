//! What the dispatcher tells the state store (SPEC §4): a time trigger's handled firing, a history row per run,
//! skip and miss. Each is one non-blocking send to the writer thread; with `--state none` each is nothing.

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
}

/// The dispatcher's view of [`Persist`].
pub struct Memory {
    pub dir: PathBuf,
    pub history: History,
    pub recovered: u64,
    remembered: crate::store::Memory,
    /// Ops of the input being handled, handed to the writer at its end (one hand-over per input).
    buffer: std::cell::RefCell<Vec<Op>>,
}

impl Memory {
    pub fn new(p: Persist) -> Memory {
        Memory {
            dir: p.dir,
            history: p.history,
            recovered: p.recovered,
            remembered: p.memory,
            buffer: Default::default(),
        }
    }

    /// Hand what this input recorded to the writer.
    pub fn hand_over(&self) {
        self.history.send_all(&mut self.buffer.borrow_mut());
    }

    /// Hand over the rest and let the writer commit it and end (the lock is let go).
    pub fn close(self) {
        self.hand_over();
        self.history.close();
    }

    /// The last handled firing of each trigger, as a previous runner left them.
    pub fn remembered_handled(&self) -> std::collections::HashMap<(String, String), DateTime<Utc>> {
        self.remembered.handled.clone()
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
            self.send(Op::Handled {
                job: key.0,
                fingerprint: key.1,
                at,
            });
        }
    }

    /// What fired a run, in words.
    fn trigger_text(&self, job: JobId, trigger: Option<usize>) -> String {
        match trigger {
            Some(t) => self.plan.trigger_text(&self.plan.jobs[job].triggers[t]),
            None => "restart".to_string(),
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
            job: self.plan.jobs[pending.job].name.clone(),
            run: Some(number),
            attempt: pending.attempt,
            trigger: self.trigger_text(pending.job, pending.trigger),
            scheduled: Some(pending.scheduled),
            started: Some(Utc::now()),
            ended: None,
            duration_ms: None,
            code: None,
            signal: None,
            outcome: Outcome::Running,
            reason: None,
            lateness_ms: lateness_us.map(|us| us as f64 / 1000.0),
            messages: pending.input.as_ref().map(|(_, n)| *n as u64),
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
        trigger: Option<usize>,
        scheduled: Option<DateTime<Utc>>,
        why: &SkipReason,
    ) {
        if self.memory.is_none() {
            return;
        }
        let reason = match why {
            SkipReason::MaxInstances(max) => format!("max_instances ({max}) reached"),
            SkipReason::JoinDead(text) => text.clone(),
        };
        self.send(Op::Append(Box::new(RunRow {
            reason: Some(reason),
            ..self.firing_row(job, trigger, scheduled, Outcome::Skipped, 1)
        })));
    }

    /// Firings missed (handled later than `misfire_grace`), `count` of them up to `scheduled`.
    pub(super) fn record_missed(
        &mut self,
        job: JobId,
        trigger: usize,
        scheduled: DateTime<Utc>,
        count: u64,
        late: chrono::Duration,
    ) {
        if self.memory.is_none() {
            return;
        }
        self.record_handled(job, trigger, scheduled);
        self.send(Op::Append(Box::new(RunRow {
            reason: Some(format!(
                "{} late, beyond misfire_grace {}",
                crate::values::format_duration(late.to_std().unwrap_or_default()),
                crate::values::format_duration(self.plan.jobs[job].misfire_grace)
            )),
            lateness_ms: Some(late.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0),
            catch_up: scheduled < self.started_at,
            ..self.firing_row(job, Some(trigger), Some(scheduled), Outcome::Missed, count)
        })));
    }

    fn firing_row(
        &self,
        job: JobId,
        trigger: Option<usize>,
        scheduled: Option<DateTime<Utc>>,
        outcome: Outcome,
        count: u64,
    ) -> RunRow {
        RunRow {
            job: self.plan.jobs[job].name.clone(),
            run: None,
            attempt: 1,
            trigger: self.trigger_text(job, trigger),
            scheduled,
            started: None,
            ended: Some(Utc::now()),
            duration_ms: None,
            code: None,
            signal: None,
            outcome,
            reason: None,
            lateness_ms: None,
            messages: None,
            count,
            catch_up: false,
            pid: None,
            log: None,
        }
    }
}
