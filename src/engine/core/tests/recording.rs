//! What the core records (SPEC §4) and how it waits for a store that cannot be written (issue 21): history rows,
//! blocks of run numbers given only once on disk, `at` firings committed before their run, held firings.

use std::time::Duration;

use super::Harness;
use crate::engine::core::{Setup, Urgency, NUMBER_BLOCK};
use crate::store::{Op, Outcome};

/// The history rows the events make (as the store's sink makes them).
fn history(h: &Harness) -> Vec<Op> {
    let at = h.now().utc;
    h.events
        .iter()
        .flat_map(|e| crate::store::sink::history_ops(at, e))
        .collect()
}

fn rows(h: &Harness) -> Vec<String> {
    history(h)
        .iter()
        .filter_map(|op| match op {
            Op::Append(r) => Some(format!("append {} {:?} {:?}", r.job, r.run, r.outcome)),
            Op::Update(r) => Some(format!("update {} {:?} {:?}", r.job, r.run, r.outcome)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_run_has_one_row_written_at_its_start_and_updated_at_its_end() {
    let mut h = Harness::stored("name: t\njobs:\n  a: { run: 'true' }\n");
    h.exit("a", 4);
    assert_eq!(
        rows(&h),
        [
            format!("append a Some(1) {:?}", Outcome::Running),
            format!("update a Some(1) {:?}", Outcome::Failed)
        ]
    );
    let ended = history(&h).into_iter().find_map(|op| match op {
        Op::Update(r) => Some(r),
        _ => None,
    });
    let ended = ended.unwrap();
    assert_eq!(ended.code, Some(4));
    assert_eq!(ended.log.as_deref(), Some("logs/1.log"));
}

#[test]
fn skipped_and_missed_firings_are_rows_too() {
    let mut h = Harness::stored(
        "
name: t
jobs:
  a: { run: 'true', trigger: [start, { interval: 1s }], coalesce: false }
",
    );
    h.advance(Duration::from_secs(1));
    h.advance(Duration::from_millis(2500));
    let rows = rows(&h);
    assert!(
        rows.contains(&format!("append a None {:?}", Outcome::Skipped)),
        "{rows:?}"
    );
    assert!(
        rows.contains(&format!("append a None {:?}", Outcome::Missed)),
        "{rows:?}"
    );
}

#[test]
fn a_block_of_numbers_is_reserved_half_a_block_ahead() {
    let mut h = Harness::stored(
        "name: t\njobs:\n  a: { run: 'true', trigger: [start, { interval: 1s }], misfire_grace: 1h }\n",
    );
    let reserves = |h: &Harness| {
        h.core
            .world
            .ops
            .iter()
            .filter_map(|(op, u)| match op {
                Op::Reserve { upto, .. } => Some((*upto, *u)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert!(reserves(&h).is_empty(), "the start's block covers it");
    for _ in 0..(NUMBER_BLOCK / 2) {
        h.exit("a", 0);
        h.advance(Duration::from_secs(1));
    }
    assert_eq!(reserves(&h), [(2 * NUMBER_BLOCK, Urgency::Soon)]);
}

#[test]
fn a_run_needing_a_number_not_on_disk_waits_for_the_store_then_starts() {
    let setup = Setup::default(); // the start's blocks did not reach the disk
    let mut h = Harness::unstarted("name: t\njobs:\n  a: { run: 'true' }\n", setup, true);
    h.core.world.failing = true;
    h.core.start(h.now(), None);
    h.pump();
    let trace = h.take();
    assert_eq!(trace.len(), 1, "{trace:?}");
    assert!(trace[0].starts_with("notice: the state store cannot be written"));
    assert!(h.runs_of("a").is_empty());
    assert_eq!(h.waiting(), [1], "back at the head of its queue");
    h.advance(Duration::from_secs(1));
    let trace = h.take();
    assert!(trace.is_empty(), "still failing: said once: {trace:?}");
    h.core.world.failing = false;
    h.advance(Duration::from_secs(1));
    assert_eq!(
        h.take(),
        [
            "notice: the state store is written again: what waited for it goes on",
            "start a#1"
        ]
    );
}

const AT: &str = "
name: t
jobs:
  a: { run: 'true', trigger: { at: '2026-12-07T12:00:05Z' }, misfire_grace: 3s }
";

#[test]
fn an_at_firing_is_on_disk_before_its_run_starts() {
    let mut h = Harness::stored(AT);
    h.advance(Duration::from_secs(5));
    assert_eq!(h.take(), ["start a#1"]);
    let handled = h
        .core
        .world
        .ops
        .iter()
        .position(|(op, u)| matches!(op, Op::Handled { .. }) && *u == Urgency::Durable);
    // How much of what was recorded was on disk when the run was spawned.
    let on_disk = h.on_disk_at_spawns[0];
    assert!(
        handled.unwrap() < on_disk,
        "committed, not only handed over"
    );
}

#[test]
fn an_at_firing_held_by_a_failing_store_runs_when_the_store_is_back_within_its_grace() {
    let mut h = Harness::stored(AT);
    h.core.world.failing = true;
    h.advance(Duration::from_secs(5));
    assert!(h.take()[0].starts_with("notice: the state store cannot be written"));
    h.core.world.failing = false;
    h.advance(Duration::from_secs(1));
    let trace = h.take();
    assert_eq!(
        trace.last().map(String::as_str),
        Some("start a#1"),
        "{trace:?}"
    );
}

#[test]
fn an_at_firing_held_past_its_grace_is_missed() {
    let mut h = Harness::stored(AT);
    h.core.world.failing = true;
    h.advance(Duration::from_secs(5));
    h.advance(Duration::from_secs(3));
    h.core.world.failing = false;
    h.advance(Duration::from_secs(1));
    let trace = h.take();
    assert!(trace.contains(&"missed a x1".to_string()), "{trace:?}");
    assert!(h.runs_of("a").is_empty());
}

#[test]
fn a_held_at_firing_dropped_at_a_stop_is_unhandled_so_the_next_start_fires_it() {
    let mut h = Harness::stored(AT);
    h.core.world.failing = true;
    h.advance(Duration::from_secs(5));
    h.take();
    h.stop();
    let trace = h.take();
    assert!(trace.iter().any(|l| l.contains("did not run")), "{trace:?}");
    let unhandled = h
        .core
        .world
        .ops
        .iter()
        .any(|(op, _)| matches!(op, Op::Unhandle { .. }));
    assert!(unhandled);
    assert!(
        h.core.handled.is_empty(),
        "the trigger's handled mark went back"
    );
}

#[test]
fn a_clean_stop_gives_back_the_numbers_not_given() {
    let mut h = Harness::stored("name: t\njobs:\n  a: { run: 'true' }\n  b: { run: 'true' }\n");
    h.exit("a", 0);
    h.exit("b", 0);
    h.core.record_settle();
    let settles: Vec<(String, u64)> = h
        .core
        .world
        .ops
        .iter()
        .filter_map(|(op, _)| match op {
            Op::Settle { job, last } => Some((job.clone(), *last)),
            _ => None,
        })
        .collect();
    assert_eq!(settles, [("a".to_string(), 1), ("b".to_string(), 1)]);
}

#[test]
fn an_interval_without_start_is_anchored_at_once() {
    let h = Harness::stored("name: t\njobs:\n  a: { run: 'true', trigger: { interval: 1h } }\n");
    let anchored =
        h.core.world.ops.iter().any(|(op, u)| {
            matches!(op, Op::Handled { job, .. } if job == "a") && *u == Urgency::Soon
        });
    assert!(
        anchored,
        "a runner restarted more often than its period still fires"
    );
}
