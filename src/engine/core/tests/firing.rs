//! Firings and admission (SPEC §2.2, §2.3, §2.5): triggers, `max_instances`, executors, manual firings, time
//! firings with grace, coalescing, jitter and catch-up, run numbers.

use std::time::Duration;

use super::{Harness, Input};
use crate::engine::core::Setup;
use crate::event::Event;

const TWO_STARTS: &str = "
name: t
jobs:
  a: { run: 'true' }
  b: { run: 'true' }
";

#[test]
fn start_triggers_fire_once_at_the_start() {
    let mut h = Harness::new(TWO_STARTS);
    assert_eq!(h.take(), ["start a#1", "start b#1"]);
    h.exit("a", 0);
    h.exit("b", 0);
    assert_eq!(h.take(), ["exit a#1 succeeded", "exit b#1 succeeded"]);
    assert!(
        h.core.finished(),
        "nothing can fire again: the work is over"
    );
}

#[test]
fn the_work_is_not_over_while_a_run_lives() {
    let mut h = Harness::new(TWO_STARTS);
    h.exit("a", 0);
    assert!(!h.core.finished());
    h.exit("b", 0);
    assert!(h.core.finished());
}

#[test]
fn run_numbers_go_on_from_the_last_runner() {
    let mut setup = Setup::default();
    setup.last_runs.insert("a".into(), 41);
    let mut h = Harness::with(TWO_STARTS, setup, false);
    assert_eq!(h.take(), ["start a#42", "start b#1"]);
}

#[test]
fn a_firing_beyond_max_instances_is_skipped_and_said() {
    let mut h = Harness::new(
        "
name: t
jobs:
  a: { run: 'true', trigger: [start, { interval: 1s }] }
",
    );
    assert_eq!(h.take(), ["start a#1"]);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.take(), ["skipped a: max_instances (1) runs are alive"]);
    assert_eq!(h.core.jobs[0].counts.skipped, 1);
    assert_eq!(h.core.jobs[0].counts.runs, 1);
}

#[test]
fn max_instances_two_lets_a_second_run_start() {
    let mut h = Harness::new(
        "
name: t
jobs:
  a: { run: 'true', trigger: [start, { interval: 1s }], max_instances: 2 }
",
    );
    h.advance(Duration::from_secs(1));
    assert_eq!(h.take(), ["start a#1", "start a#2"]);
    h.advance(Duration::from_secs(1));
    assert!(h.saw("skipped a: max_instances (2) runs are alive"));
}

const ONE_WORKER: &str = "
name: t
executors:
  one: { max_workers: 1 }
jobs:
  a: { run: 'true', executor: one }
  b: { run: 'true', executor: one }
  c: { run: 'true', executor: one }
";

#[test]
fn firings_wait_for_a_worker_in_fifo_order() {
    let mut h = Harness::new(ONE_WORKER);
    assert_eq!(h.take(), ["start a#1"]);
    assert_eq!(h.waiting(), [0, 1, 1]);
    h.exit("a", 0);
    assert_eq!(h.take(), ["exit a#1 succeeded", "start b#1"]);
    h.exit("b", 0);
    assert_eq!(h.take(), ["exit b#1 succeeded", "start c#1"]);
}

#[test]
fn a_waiting_firing_counts_toward_max_instances() {
    let mut h = Harness::new(ONE_WORKER);
    h.take();
    // b waits for the worker: a manual firing of b is one instance too many.
    let b = h.job("b");
    h.core.manual_fire(b, 7, h.now());
    h.pump();
    assert_eq!(
        h.take(),
        [
            "manual 7 skipped: max_instances (1) runs are alive",
            "skipped b: max_instances (1) runs are alive"
        ]
    );
}

#[test]
fn a_manual_firing_with_a_free_worker_starts_and_says_its_number() {
    let mut h = Harness::new(TWO_STARTS);
    h.exit("a", 0);
    h.take();
    let a = h.job("a");
    h.core.manual_fire(a, 3, h.now());
    h.pump();
    assert_eq!(h.take(), ["manual 3 started #2", "start a#2"]);
}

#[test]
fn a_manual_firing_without_a_worker_is_queued_then_started() {
    let mut h = Harness::new(ONE_WORKER);
    h.exit("a", 0);
    h.exit("b", 0);
    h.take();
    let a = h.job("a");
    h.core.manual_fire(a, 5, h.now());
    h.pump();
    assert_eq!(h.take(), ["manual 5 queued"]);
    h.exit("c", 0);
    assert_eq!(
        h.take(),
        ["exit c#1 succeeded", "manual 5 started #2", "start a#2"]
    );
}

#[test]
fn a_manual_firing_wakes_a_done_job_and_the_work_waits_for_it() {
    let mut h = Harness::new("name: t\njobs:\n  a: { run: 'true' }\n");
    h.exit("a", 0);
    assert!(h.core.finished());
    let a = h.job("a");
    h.core.manual_fire(a, 1, h.now());
    h.pump();
    assert!(!h.core.finished(), "a manual run is on its way");
    h.exit("a", 0);
    assert!(h.core.finished());
}

const EVERY_SECOND: &str = "
name: t
jobs:
  a: { run: 'true', trigger: { interval: 1s } }
";

#[test]
fn an_interval_fires_one_period_after_the_start_not_at_it() {
    let mut h = Harness::new(EVERY_SECOND);
    assert!(h.take().is_empty());
    h.advance(Duration::from_millis(999));
    assert!(h.take().is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(h.take(), ["start a#1"]);
}

#[test]
fn lateness_is_counted_from_the_scheduled_instant() {
    let mut h = Harness::new(EVERY_SECOND);
    h.advance(Duration::from_millis(1300));
    let lateness = h.events.iter().find_map(|e| match e {
        Event::RunStart { lateness_us, .. } => *lateness_us,
        _ => None,
    });
    assert_eq!(lateness, Some(300_000));
}

#[test]
fn a_firing_handled_past_its_grace_is_missed_not_run() {
    let mut h = Harness::new(
        "
name: t
jobs:
  a: { run: 'true', trigger: { interval: 1s }, coalesce: false }
",
    );
    // 2.5 s late for the first, 1.5 s for the second: both beyond the default 1 s grace; the third is on time.
    h.advance(Duration::from_millis(3500));
    let trace = h.take();
    assert_eq!(trace, ["missed a x2", "start a#1"]);
    assert_eq!(h.core.jobs[0].counts.missed, 2);
}

#[test]
fn coalesced_firings_run_once_and_are_as_late_as_the_first() {
    let mut h = Harness::new(
        "
name: t
jobs:
  a: { run: 'true', trigger: { interval: 1s }, misfire_grace: 1m }
",
    );
    h.advance(Duration::from_millis(3200));
    assert_eq!(h.take(), ["start a#1"]);
    let (coalesced, lateness) = h
        .events
        .iter()
        .find_map(|e| match e {
            Event::RunStart {
                coalesced,
                lateness_us,
                ..
            } => Some((*coalesced, *lateness_us)),
            _ => None,
        })
        .unwrap();
    assert_eq!(coalesced, 3);
    assert_eq!(lateness, Some(2_200_000), "from the first due instant");
}

#[test]
fn without_coalesce_each_late_firing_is_its_own_firing() {
    let mut h = Harness::new(
        "
name: t
jobs:
  a: { run: 'true', trigger: { interval: 1s }, misfire_grace: 1m, coalesce: false, max_instances: 5 }
",
    );
    h.advance(Duration::from_millis(3200));
    assert_eq!(h.take(), ["start a#1", "start a#2", "start a#3"]);
}

#[test]
fn jitter_delays_a_firing_by_its_share_of_the_jitter() {
    let mut h = Harness::new(
        "
name: t
jobs:
  a: { run: 'true', trigger: { interval: 10s, jitter: 4s } }
",
    );
    h.advance(Duration::from_secs(10));
    assert!(h.take().is_empty(), "it waits for its jitter");
    // The fake's random number is 0.5: 2 s of the 4.
    h.advance(Duration::from_millis(1999));
    assert!(h.take().is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(h.take(), ["start a#1"]);
}

#[test]
fn a_firing_due_while_no_runner_was_alive_runs_as_a_catch_up() {
    let mut setup = Setup::default();
    let h = Harness::unstarted(EVERY_SECOND, Setup::default(), false);
    let rule = match &h.core.plan.jobs[0].triggers[0] {
        crate::plan::Trigger::Time { rule, .. } => rule.fingerprint(),
        _ => unreachable!(),
    };
    // Handled 1.5 s before this start with a 1 m grace: the firing at -0.5 s is late, within its grace.
    let yaml = "
name: t
jobs:
  a: { run: 'true', trigger: { interval: 1s }, misfire_grace: 1m }
";
    setup.handled.insert(
        ("a".into(), rule),
        h.utc0 - chrono::Duration::milliseconds(1500),
    );
    let mut h = Harness::with(yaml, setup, false);
    assert_eq!(h.take(), ["start a#1"]);
    let catch_up = h
        .events
        .iter()
        .any(|e| matches!(e, Event::RunStart { catch_up: true, .. }));
    assert!(catch_up);
}

#[test]
fn firings_missed_while_no_runner_was_alive_are_said_at_the_start_with_their_count() {
    let mut setup = Setup::default();
    let h = Harness::unstarted(EVERY_SECOND, Setup::default(), false);
    let rule = match &h.core.plan.jobs[0].triggers[0] {
        crate::plan::Trigger::Time { rule, .. } => rule.fingerprint(),
        _ => unreachable!(),
    };
    setup
        .handled
        .insert(("a".into(), rule), h.utc0 - chrono::Duration::seconds(60));
    let mut h = Harness::with(EVERY_SECOND, setup, false);
    let trace = h.take();
    assert!(
        trace.iter().any(|l| l.starts_with("missed a x")),
        "said at the start, not at the next instant: {trace:?}"
    );
    assert!(
        h.core.jobs[0].counts.missed >= 58,
        "{}",
        h.core.jobs[0].counts.missed
    );
}

#[test]
fn a_job_with_env_files_waits_for_one_read_shared_by_its_firings() {
    let mut h = Harness::new(
        "
name: t
jobs:
  a: { run: 'true', env_file: a.env, trigger: [start, { interval: 1s }], max_instances: 3 }
",
    );
    assert_eq!(h.take(), ["read env 0"]);
    h.advance(Duration::from_secs(1));
    assert!(
        h.take().is_empty(),
        "the second firing takes the first read's answer"
    );
    h.input(Input::Prepared {
        job: 0,
        env: Ok(vec![("A".into(), "1".into())]),
    });
    assert_eq!(h.take(), ["start a#1", "start a#2"]);
}

#[test]
fn an_env_file_that_cannot_be_read_fails_the_run_with_its_reason() {
    let mut h = Harness::new("name: t\njobs:\n  a: { run: 'true', env_file: a.env }\n");
    h.take();
    h.input(Input::Prepared {
        job: 0,
        env: Err("a.env: no such file".into()),
    });
    assert_eq!(h.take(), ["exit a#1 spawn-failed"]);
    assert!(h.core.failed);
    let reason = h.events.iter().find_map(|e| match e {
        Event::RunExit(x) => x.reason.clone(),
        _ => None,
    });
    assert_eq!(
        reason.as_deref(),
        Some("cannot start `true`: a.env: no such file")
    );
}

#[test]
fn a_manual_firing_is_refused_for_an_unknown_job_a_stopping_runner_or_a_closed_output() {
    use crate::engine::requests::Refusal;
    let mut h = Harness::new(
        "
name: t
channels:
  out: { kind: queue }
jobs:
  w: { run: 'echo', stdout: out }
  r: { run: 'cat', stdin: out }
",
    );
    let refusal = |h: &Harness, name: &str| h.core.manual_refusal(name).map_err(|(_, why)| why);
    assert_eq!(refusal(&h, "nope"), Err(Refusal::UnknownJob));
    assert_eq!(refusal(&h, "w"), Ok(h.job("w")));
    h.exit("w", 0);
    assert!(h.saw("closed out 0"));
    assert_eq!(refusal(&h, "w"), Err(Refusal::CannotRun));
    h.stop();
    assert_eq!(refusal(&h, "r"), Err(Refusal::Stopping));
}

#[test]
fn after_downtime_each_trigger_says_once_what_it_missed_and_a_start_run_stands_for_the_catch_up() {
    let yaml = "
name: t
jobs:
  producer: { run: 'true', trigger: [start, { interval: 1s }] }
";
    let h = Harness::unstarted(yaml, Setup::default(), false);
    let rule = match &h.core.plan.jobs[0].triggers[1] {
        crate::plan::Trigger::Time { rule, .. } => rule.fingerprint(),
        _ => unreachable!(),
    };
    // The last runner handled a firing 15 minutes (and a half second) before this start.
    let mut setup = Setup::default();
    let last = h.utc0 - chrono::Duration::milliseconds(900_500);
    setup.handled.insert(("producer".into(), rule), last);
    let mut h = Harness::with(yaml, setup, false);
    let trace = h.take();
    assert_eq!(
        trace.len(),
        2,
        "one line for what was missed, one run: {trace:?}"
    );
    assert!(trace[0].starts_with("missed producer x"), "{trace:?}");
    assert_eq!(trace[1], "start producer#1", "no skip beside it");
    let missed = h
        .events
        .iter()
        .find(|e| matches!(e, Event::RunMissed { .. }))
        .unwrap();
    let said = missed.notice(false).unwrap();
    assert!(
        said.starts_with("producer: 899 firings missed while no runner was up (15m500ms; misfire_grace 1s); next "),
        "{said}"
    );
    let (catch_up, coalesced) = h
        .events
        .iter()
        .find_map(|e| match e {
            Event::RunStart {
                catch_up,
                coalesced,
                ..
            } => Some((*catch_up, *coalesced)),
            _ => None,
        })
        .unwrap();
    assert!(
        catch_up,
        "the start's run stands for the firing due within its grace"
    );
    assert_eq!(coalesced, 1);
}
