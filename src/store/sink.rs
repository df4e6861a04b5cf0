//! The history as the engine's events tell it (SPEC §4): a run's row is appended at its `run.start` and completed
//! at its `run.exit` (a run that could not start has only its exit, which says all), a skipped or missed firing is
//! a row of its own. The engine builds no row: the history is one more reader of its events, like the metrics.

use chrono::{DateTime, Utc};

use super::{Op, Outcome, RunRow};
use crate::event::{missed_text, Event, RunExit};

/// What `event`, emitted at `at`, changes in the history: every op, in order (a run's end is its try's row and,
/// for its last try, the run's row).
pub fn history_ops(at: DateTime<Utc>, event: &Event) -> Vec<Op> {
    let mut ops = Vec::new();
    if let Event::RunExit(exit) = event {
        if exit.final_try {
            // The run's row spans all its tries: from its first try's start to now.
            let mut row = ended(at, exit);
            if exit.attempt > 1 {
                row.started = Some(exit.run_started);
                row.duration_ms = Some((at - exit.run_started).num_milliseconds().max(0) as u64);
            }
            ops.push(Op::Update(Box::new(row)));
        }
    }
    ops.extend(history_op(at, event));
    ops
}

/// What `event` changes in the history, but a last try's run row (see [`history_ops`]).
fn history_op(at: DateTime<Utc>, event: &Event) -> Option<Op> {
    Some(match event {
        // A retry is a try of a run whose row exists: the row is running again.
        Event::RunStart { attempt, .. } if *attempt > 1 => Op::Retry(Box::new(started(at, event)?)),
        Event::RunStart { .. } => Op::Append(Box::new(started(at, event)?)),
        Event::RunExit(exit) => return Some(Op::Try(Box::new(ended(at, exit)))),
        Event::RunSkipped {
            job,
            scheduled,
            why,
            trigger,
        } => Op::Append(Box::new(RunRow {
            trigger: trigger.clone(),
            scheduled: *scheduled,
            ended: Some(at),
            reason: Some(why.text()),
            ..RunRow::new(job.clone(), Outcome::Skipped)
        })),
        Event::RunMissed { .. } => Op::Append(Box::new(missed(at, event)?)),
        _ => return None,
    })
}

/// A run's row as its start writes it: `running` until it ends (or the next runner marks it interrupted).
fn started(at: DateTime<Utc>, event: &Event) -> Option<RunRow> {
    let Event::RunStart {
        job,
        run,
        pid,
        scheduled,
        lateness_us,
        attempt,
        coalesced,
        catch_up,
        messages,
        trigger,
        log,
    } = event
    else {
        return None;
    };
    Some(RunRow {
        run: Some(*run),
        attempt: *attempt,
        trigger: trigger.clone(),
        scheduled: Some(*scheduled),
        started: Some(at),
        lateness_ms: lateness_us.map(|us| us as f64 / 1000.0),
        messages: *messages,
        count: (*coalesced).max(1),
        catch_up: *catch_up,
        pid: Some(*pid),
        // Where its output will go; cleared at the end when it printed nothing.
        log: log.clone(),
        ..RunRow::new(job.clone(), Outcome::Running)
    })
}

/// A run's row as its end completes it (whole, for a run that could not start: its start was never written).
fn ended(at: DateTime<Utc>, x: &RunExit) -> RunRow {
    let duration = chrono::Duration::milliseconds(x.duration_ms as i64);
    let outcome = Outcome::parse(x.outcome).unwrap_or(Outcome::Failed);
    RunRow {
        run: Some(x.run),
        attempt: x.attempt,
        trigger: x.trigger.clone(),
        scheduled: Some(x.scheduled),
        started: Some(at - duration),
        ended: Some(at),
        duration_ms: Some(x.duration_ms),
        code: x.code,
        signal: x.signal.clone(),
        reason: x.reason.clone(),
        messages: x.messages,
        count: x.coalesced.max(1),
        catch_up: x.catch_up,
        pid: x.pid,
        log: x.log.clone(),
        ..RunRow::new(x.job.clone(), outcome)
    }
}

/// Firings missed (handled later than `misfire_grace`), `count` of them up to `scheduled`.
fn missed(at: DateTime<Utc>, event: &Event) -> Option<RunRow> {
    let Event::RunMissed {
        job,
        scheduled,
        trigger,
        catch_up,
        count,
        at_least,
        late,
        grace,
        reason,
        ..
    } = event
    else {
        return None;
    };
    Some(RunRow {
        trigger: trigger.clone(),
        scheduled: Some(*scheduled),
        ended: Some(at),
        count: *count,
        reason: Some(missed_text(reason, *count, *at_least, *late, *grace)),
        lateness_ms: Some(late.as_micros().min(i64::MAX as u128) as f64 / 1000.0),
        catch_up: *catch_up,
        ..RunRow::new(job.clone(), Outcome::Missed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::SkipReason;
    use chrono::TimeZone;
    use std::time::Duration;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap()
    }

    fn row(op: Option<Op>) -> (bool, RunRow) {
        match op {
            Some(Op::Append(row)) => (true, *row),
            Some(Op::Update(row)) => (false, *row),
            _ => panic!("a row"),
        }
    }

    #[test]
    fn a_start_is_a_running_row_with_its_firing() {
        let event = Event::RunStart {
            job: "a".into(),
            run: 7,
            pid: 42,
            scheduled: at() - chrono::Duration::seconds(2),
            lateness_us: Some(1500),
            attempt: 1,
            coalesced: 3,
            catch_up: true,
            messages: Some(5),
            trigger: "interval 1s".into(),
            log: Some("logs/a/7.log".into()),
        };
        let (append, r) = row(history_op(at(), &event));
        assert!(append);
        assert_eq!((r.job.as_str(), r.run, r.attempt), ("a", Some(7), 1));
        assert_eq!(r.outcome, Outcome::Running);
        assert_eq!(r.started, Some(at()));
        assert_eq!(r.lateness_ms, Some(1.5));
        assert_eq!((r.count, r.catch_up, r.messages), (3, true, Some(5)));
        assert_eq!(r.trigger, "interval 1s");
        assert_eq!(r.log.as_deref(), Some("logs/a/7.log"));
        // A retry's start is a try of the same run: its row becomes running again, not a new row.
        let retry = match event {
            Event::RunStart { attempt: _, .. } => {
                let mut e = event.clone();
                if let Event::RunStart { attempt, .. } = &mut e {
                    *attempt = 2;
                }
                e
            }
            _ => unreachable!(),
        };
        assert!(matches!(history_op(at(), &retry), Some(Op::Retry(_))));
    }

    #[test]
    fn an_exit_completes_the_row_and_says_all_for_a_run_that_never_started() {
        let exit = RunExit {
            job: "a".into(),
            run: 3,
            pid: None,
            code: None,
            signal: None,
            reason: Some("cannot start `x`: not found".into()),
            success: false,
            stopped_by_runner: false,
            each: false,
            duration_ms: 250,
            outcome: "spawn-failed",
            final_try: true,
            run_started: at(),
            trigger: "start".into(),
            scheduled: at(),
            attempt: 1,
            messages: None,
            coalesced: 0,
            catch_up: false,
            log: None,
            restarts: false,
        };
        let ops = history_ops(at(), &Event::RunExit(Box::new(exit)));
        assert_eq!(ops.len(), 2, "the run's row and its try's");
        assert!(matches!(ops[1], Op::Try(_)));
        let (append, r) = row(ops.into_iter().next());
        assert!(!append, "an update (it inserts a row never started)");
        assert_eq!(r.outcome, Outcome::SpawnFailed);
        assert_eq!(r.ended, Some(at()));
        assert_eq!(r.started, Some(at() - chrono::Duration::milliseconds(250)));
        assert_eq!(r.trigger, "start");
        assert_eq!(r.count, 1);
    }

    #[test]
    fn skips_and_misses_are_rows_of_their_own() {
        let skipped = Event::RunSkipped {
            job: "a".into(),
            scheduled: None,
            why: SkipReason::MaxInstances(1),
            trigger: "manual (flowrun trigger)".into(),
        };
        let (_, r) = row(history_op(at(), &skipped));
        assert_eq!(r.outcome, Outcome::Skipped);
        assert_eq!(
            r.reason.as_deref(),
            Some("max_instances (1) runs are alive")
        );
        let missed = Event::RunMissed {
            job: "a".into(),
            scheduled: at(),
            trigger: "interval 1s".into(),
            catch_up: true,
            count: 4,
            at_least: false,
            late: Duration::from_millis(2500),
            grace: Duration::from_secs(1),
            downtime: None,
            next: None,
            reason: None,
        };
        let (_, r) = row(history_op(at(), &missed));
        assert_eq!((r.outcome, r.count, r.catch_up), (Outcome::Missed, 4, true));
        assert_eq!(r.lateness_ms, Some(2500.0));
    }

    #[test]
    fn other_events_leave_the_history_alone() {
        let e = Event::Notice { text: "hi".into() };
        assert!(history_op(at(), &e).is_none());
    }
}
