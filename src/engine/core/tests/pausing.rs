//! Pause, resume and `enabled: false` (SPEC §7).

use std::time::Duration;

use super::{Harness, Input};
use crate::engine::core::{Setup, Urgency};
use crate::engine::requests::Refusal;
use crate::store::Op;

const EVERY_SECOND: &str = "
name: t
jobs:
  a: { run: 'true', trigger: { interval: 1s } }
  svc: { run: 'serve' }
";

#[test]
fn a_paused_job_fires_nothing_its_firings_are_skipped_as_paused_and_its_runs_go_on() {
    let mut h = Harness::stored(EVERY_SECOND);
    h.take();
    h.core.pause("a", None, h.now()).unwrap();
    h.core.pause("svc", None, h.now()).unwrap();
    h.pump();
    assert_eq!(
        h.take(),
        Vec::<String>::new(),
        "paused jobs are said as events, not traced"
    );
    assert_eq!(h.runs_of("svc").len(), 1, "its live run goes on");
    h.advance(Duration::from_secs(1));
    assert_eq!(h.take(), ["skipped a: paused"]);
    assert_eq!(h.core.jobs[h.job("a")].counts.skipped, 1);
    let recorded = h.core.world.ops.iter().any(|(op, u)| {
        matches!(op, Op::Pause { job, until: None } if job == "a") && *u == Urgency::Soon
    });
    assert!(recorded, "remembered across restarts");
}

#[test]
fn a_manual_firing_of_a_paused_job_is_refused_with_why() {
    let mut h = Harness::new(EVERY_SECOND);
    h.core.pause("a", None, h.now()).unwrap();
    let (why, refusal) = h.core.manual_refusal("a").unwrap_err();
    assert_eq!(refusal, Refusal::Paused);
    assert!(why.contains("paused"), "{why}");
    assert!(h.core.pause("nope", None, h.now()).is_err());
}

#[test]
fn a_pause_for_a_while_ends_by_itself() {
    let mut h = Harness::new(EVERY_SECOND);
    h.take();
    let until = h.now().utc + chrono::Duration::milliseconds(2500);
    h.core.pause("a", Some(until), h.now()).unwrap();
    h.pump();
    h.advance(Duration::from_secs(1));
    h.advance(Duration::from_secs(1));
    assert_eq!(h.take(), ["skipped a: paused", "skipped a: paused"]);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.take(), ["start a#1"]);
    assert!(h.core.jobs[h.job("a")].paused.is_none());
}

#[test]
fn resume_lets_it_fire_again_and_says_whether_it_was_paused() {
    let mut h = Harness::new(EVERY_SECOND);
    h.core.pause("a", None, h.now()).unwrap();
    assert_eq!(h.core.resume("a", h.now()), Ok(true));
    assert_eq!(h.core.resume("a", h.now()), Ok(false));
    h.pump();
    h.advance(Duration::from_secs(1));
    assert!(h.saw("start a#1"));
}

#[test]
fn a_paused_each_job_leaves_its_messages_waiting_until_resumed() {
    let mut h = Harness::new(
        "
name: t
channels:
  q: { kind: queue }
jobs:
  feed: { run: 'seq 2', stdout: q }
  work: { run: 'cat', trigger: { each: q } }
",
    );
    h.core.pause("work", None, h.now()).unwrap();
    let q = h.channel("q");
    h.core
        .world
        .queues
        .entry(q)
        .or_default()
        .push_back(b"1\n".to_vec());
    h.input(Input::Wake(q));
    assert!(h.runs_of("work").is_empty());
    h.core.resume("work", h.now()).unwrap();
    h.pump();
    assert_eq!(h.runs_of("work").len(), 1);
}

#[test]
fn a_pause_remembered_is_applied_at_the_start_and_one_that_ended_meanwhile_is_forgotten() {
    let mut setup = Setup {
        numbers_on_disk: true,
        ..Setup::default()
    };
    setup.paused.insert("svc".into(), None);
    let past = chrono::DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    setup.paused.insert("a".into(), Some(past));
    let mut h = Harness::with(EVERY_SECOND, setup, true);
    assert_eq!(h.take(), ["skipped svc: paused"], "its start is skipped");
    assert!(h.core.jobs[h.job("svc")].paused.is_some());
    assert!(h.core.jobs[h.job("a")].paused.is_none());
    let forgotten = h
        .core
        .world
        .ops
        .iter()
        .any(|(op, _)| matches!(op, Op::Resume { job } if job == "a"));
    assert!(forgotten);
}

#[test]
fn a_disabled_job_never_fires_by_its_triggers_but_a_manual_firing_runs_it() {
    let mut h = Harness::new(
        "
name: t
jobs:
  off: { run: 'true', enabled: false, trigger: [start, { interval: 1s }] }
",
    );
    h.advance(Duration::from_secs(3));
    assert!(h.take().is_empty());
    assert!(h.core.finished(), "it can fire no more: the work is over");
    let off = h.job("off");
    h.core.manual_fire(off, 1, h.now());
    h.pump();
    assert!(h.saw("start off#1"));
}
