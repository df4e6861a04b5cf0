//! `after` joins (SPEC §2.3, §6): when they fire, what `FLOWRUN_UPSTREAM` says, joins that can never complete,
//! readiness joins, and a join after a reload.

use super::{Harness, Input};
use crate::event::Event;

const DAG: &str = "
name: t
jobs:
  a: { run: 'true' }
  b: { run: 'true' }
  join: { run: 'true', trigger: { after: [a, b] } }
";

fn upstream_of(h: &Harness, job: &str) -> serde_json::Value {
    let j = h.job(job);
    let run = h
        .core
        .runs
        .values()
        .find(|r| r.job == j)
        .expect("a live run");
    serde_json::from_str(run.upstream.as_deref().expect("FLOWRUN_UPSTREAM")).unwrap()
}

#[test]
fn a_join_fires_once_every_upstream_reached_its_status() {
    let mut h = Harness::new(DAG);
    h.exit("a", 0);
    assert_eq!(h.take(), ["start a#1", "start b#1", "exit a#1 succeeded"]);
    h.exit("b", 0);
    assert_eq!(h.take(), ["exit b#1 succeeded", "start join#1"]);
    let upstream = upstream_of(&h, "join");
    assert_eq!(upstream[0]["job"], "a");
    assert_eq!(upstream[1]["job"], "b");
    assert_eq!(upstream[1]["status"], "succeeded");
    assert_eq!(upstream[0]["log"], "logs/1.log");
}

#[test]
fn a_join_whose_upstream_failed_is_skipped_for_good_without_failing_by_itself() {
    let mut h = Harness::new(DAG);
    h.exit("a", 1);
    h.exit("b", 0);
    let trace = h.take();
    assert!(
        trace.contains(
            &"skipped join: `after` can never fire: a ended without reaching success".to_string()
        ),
        "{trace:?}"
    );
    assert!(h.core.finished());
    assert_eq!(h.core.jobs[h.job("join")].counts.skipped, 1);
}

#[test]
fn a_failure_handler_fires_on_failure_only() {
    let yaml = "
name: t
jobs:
  a: { run: 'false' }
  alert: { run: 'true', trigger: { after: a, status: failure } }
";
    let mut h = Harness::new(yaml);
    h.exit("a", 2);
    assert!(h.saw("start alert#1"));
    let upstream = upstream_of(&h, "alert");
    assert_eq!(upstream[0]["status"], "failed");
    assert_eq!(upstream[0]["code"], 2);
    let mut h = Harness::new(yaml);
    h.exit("a", 0);
    let trace = h.take();
    assert!(!trace.iter().any(|l| l.starts_with("start alert")));
    assert!(h.core.finished());
}

#[test]
fn status_any_fires_whatever_the_end() {
    let mut h = Harness::new(
        "
name: t
jobs:
  a: { run: 'false' }
  cleanup: { run: 'true', trigger: { after: a, status: any } }
",
    );
    h.exit("a", 9);
    assert!(h.saw("start cleanup#1"));
}

#[test]
fn a_retried_try_does_not_complete_a_join_the_last_try_does() {
    let mut h = Harness::new(
        "
name: t
jobs:
  a: { run: 'false', retry: { attempts: 1, backoff: 1s } }
  alert: { run: 'true', trigger: { after: a, status: failure } }
",
    );
    h.exit("a", 1);
    let trace = h.take();
    assert!(
        !trace.iter().any(|l| l.starts_with("start alert")),
        "{trace:?}"
    );
    h.advance(std::time::Duration::from_secs(1));
    h.exit("a", 1);
    assert!(h.saw("start alert#1"));
}

#[test]
fn a_join_on_readiness_fires_when_the_upstream_is_ready() {
    let mut h = Harness::new(
        "
name: t
jobs:
  db: { run: 'serve', ready: { tcp: '127.0.0.1:5432' } }
  app: { run: 'serve', trigger: { after: db, status: ready } }
",
    );
    let id = h.runs_of("db")[0];
    assert_eq!(h.take(), ["start db#1"]);
    h.input(Input::Ready {
        id,
        probe: "tcp".into(),
    });
    assert_eq!(h.take(), ["ready db#1", "start app#1"]);
    assert_eq!(upstream_of(&h, "app")[0]["status"], "ready");
}

#[test]
fn a_join_starts_over_after_it_fired() {
    let mut h = Harness::new(
        "
name: t
jobs:
  a: { run: 'true', trigger: [start, { interval: 1s }] }
  b: { run: 'true', trigger: { after: a } }
",
    );
    h.exit("a", 0);
    assert!(h.saw("start b#1"));
    h.exit("b", 0);
    h.advance(std::time::Duration::from_secs(1));
    h.take();
    assert!(h.runs_of("b").is_empty(), "b waits for a's next run");
    h.exit("a", 0);
    assert!(h.saw("start b#2"));
}

#[test]
fn a_join_changed_by_a_reload_starts_over_with_its_new_upstreams() {
    let mut h = Harness::new(
        "
name: t
jobs:
  a: { run: 'sleep 1' }
  b: { run: 'sleep 1' }
  c: { run: 'true', trigger: { after: [a] } }
",
    );
    let new = super::plan(
        "
name: t
jobs:
  a: { run: 'sleep 1' }
  b: { run: 'sleep 1' }
  c: { run: 'true', trigger: { after: [a, b] } }
",
    );
    let applied = h.core.reload((*new).clone(), h.now()).expect("applied");
    h.pump();
    assert_eq!(applied.changed, ["c"]);
    h.exit("a", 0);
    let trace = h.take();
    assert!(!trace.iter().any(|l| l.starts_with("start c")), "{trace:?}");
    h.exit("b", 0);
    assert!(h.saw("start c#1"));
    let upstream = upstream_of(&h, "c");
    assert_eq!(upstream.as_array().map(Vec::len), Some(2));
    assert!(h
        .events
        .iter()
        .any(|e| matches!(e, Event::ReloadApplied { .. })));
}

const ANY_FAILED: &str = "
name: t
jobs:
  a: { run: 'false', trigger: [start, { interval: 1s }] }
  b: { run: 'false' }
  alert: { run: 'true', trigger: { after: { any: [a, b], status: failure } }, max_instances: 5 }
";

#[test]
fn an_any_join_fires_for_each_upstream_that_reaches_the_status_and_names_only_it() {
    let mut h = Harness::new(ANY_FAILED);
    h.exit("b", 3);
    assert!(h.saw("start alert#1"));
    let upstream = upstream_of(&h, "alert");
    assert_eq!(upstream.as_array().map(Vec::len), Some(1), "{upstream}");
    assert_eq!(upstream[0]["job"], "b");
    h.exit("a", 0);
    assert!(
        h.take().iter().all(|l| !l.starts_with("start alert")),
        "a success fires nothing"
    );
    h.advance(std::time::Duration::from_secs(1));
    h.exit("a", 1);
    assert!(h.saw("start alert#2"));
}

#[test]
fn an_any_join_is_dead_only_when_every_upstream_ended_without_its_status() {
    let mut h = Harness::new(
        "
name: t
jobs:
  a: { run: 'true' }
  b: { run: 'true' }
  alert: { run: 'true', trigger: { after: { any: [a, b] }, status: failure } }
",
    );
    h.exit("a", 0);
    assert!(!h.core.jobs[h.job("alert")].done, "b may still fail");
    h.exit("b", 0);
    assert!(h.core.finished());
    let trace = h.take();
    assert!(
        trace.iter().any(|l| l.starts_with("skipped alert")),
        "{trace:?}"
    );
}

const HANDLED: &str = "
name: t
on_failure: alert
jobs:
  a: { run: 'false', retry: { attempts: 1, backoff: 1s } }
  b: { run: 'true' }
  alert: { run: 'notify' }
";

#[test]
fn on_failure_fires_its_job_once_for_each_run_that_failed_for_good() {
    let mut h = Harness::new(HANDLED);
    assert_eq!(
        h.take(),
        ["start a#1", "start b#1"],
        "the handler does not start by itself"
    );
    h.exit("b", 0);
    h.exit("a", 1);
    assert!(
        h.take().iter().all(|l| !l.starts_with("start alert")),
        "a retry is not an end"
    );
    h.advance(std::time::Duration::from_secs(1));
    h.exit("a", 1);
    assert!(h.saw("start alert#1"));
    let upstream = upstream_of(&h, "alert");
    assert_eq!(upstream[0]["job"], "a");
    assert_eq!(upstream[0]["status"], "failed");
    let start = h.events.iter().rev().find_map(|e| match e {
        Event::RunStart { job, trigger, .. } if job == "alert" => Some(trigger.clone()),
        _ => None,
    });
    assert_eq!(start.as_deref(), Some("on_failure of a"));
    // Its own failure does not fire it again; then nothing can fail any more: the work is over.
    h.exit("alert", 1);
    assert!(h.core.finished());
}

#[test]
fn a_handler_waits_while_a_job_it_handles_can_still_run_then_is_done() {
    let mut h = Harness::new(HANDLED);
    h.exit("b", 0);
    assert!(!h.core.jobs[h.job("alert")].done);
    h.exit("a", 0);
    assert!(h.core.jobs[h.job("alert")].done);
    assert!(h.core.finished());
}

#[test]
fn a_handler_told_of_several_failures_at_once_takes_them_in_turn() {
    let mut h = Harness::new(
        "
name: t
on_failure: alert
jobs:
  a: { run: 'false' }
  b: { run: 'false' }
  c: { run: 'false' }
  alert: { run: 'notify' }
",
    );
    h.exit("a", 1);
    h.exit("b", 1);
    h.exit("c", 1);
    let trace = h.take();
    assert_eq!(
        trace
            .iter()
            .filter(|l| l.starts_with("start alert"))
            .count(),
        1,
        "max_instances 1: {trace:?}"
    );
    assert!(
        !trace.iter().any(|l| l.starts_with("skipped alert")),
        "{trace:?}"
    );
    h.exit("alert", 0);
    assert!(h.saw("start alert#2"));
    assert_eq!(upstream_of(&h, "alert")[0]["job"], "b");
    h.exit("alert", 0);
    assert!(h.saw("start alert#3"));
    h.exit("alert", 0);
    assert!(h.core.finished());
}

#[test]
fn a_join_on_a_disabled_job_says_it_is_disabled() {
    let mut h = Harness::new(
        "
name: t
jobs:
  off: { run: 'true', enabled: false }
  dep: { run: 'true', trigger: { after: off } }
",
    );
    let trace = h.take();
    assert!(
        trace.contains(
            &"skipped dep: `after` can never fire: off is disabled (`enabled: false`)".to_string()
        ),
        "{trace:?}"
    );
    assert!(h.core.finished());
}
