//! A runner of a cluster (SPEC §9): a time firing runs only once claimed, with the number the claim gave; a
//! firing another runner won is not run; one the store does not answer is asked again within its grace and
//! missed beyond it (never run unclaimed); a miss is said by the runner that claims it; other runs take their
//! number from the cluster's counter; a run taken over from a runner that stopped answering is tried again when
//! it has tries left.

use std::time::Duration;

use super::{Harness, Input};
use crate::cluster::heartbeat::{Orphan, TakenOver};
use crate::cluster::Answer;
use crate::engine::core::Setup;
use crate::store::{Outcome, RunRow};

fn clustered(yaml: &str) -> Harness {
    let setup = Setup {
        cluster: true,
        ..Setup::default()
    };
    Harness::with(yaml, setup, true)
}

const EVERY_SECOND: &str = "
name: t
jobs:
  a: { run: 'true', trigger: { interval: 1s }, misfire_grace: 2s }
";

#[test]
fn a_time_firing_runs_only_once_claimed_with_the_claims_number() {
    let mut h = clustered(EVERY_SECOND);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.take(), ["claim firing a at 1000ms"]);
    assert!(
        h.core.runs.is_empty(),
        "nothing runs before the claim is won"
    );
    h.answer(Answer::Won(Some(17)));
    assert_eq!(h.take(), ["start a#17"]);
    assert_eq!(h.core.jobs[0].counts.runs, 1);
}

#[test]
fn a_firing_another_runner_won_is_not_run_nor_said() {
    let mut h = clustered(EVERY_SECOND);
    h.advance(Duration::from_secs(1));
    h.take();
    h.answer(Answer::Lost);
    assert!(h.take().is_empty());
    assert!(h.core.runs.is_empty());
    assert_eq!(h.core.instances(0), 0, "the claim no longer counts");
    // The next firing is claimed as usual.
    h.advance(Duration::from_secs(1));
    assert_eq!(h.take(), ["claim firing a at 2000ms"]);
}

#[test]
fn an_unanswered_claim_is_asked_again_within_the_grace_then_missed_never_run() {
    let mut h = clustered(EVERY_SECOND);
    h.advance(Duration::from_secs(1));
    h.take();
    h.answer(Answer::Unreachable("connection refused".into()));
    let trace = h.take();
    assert!(
        trace[0].starts_with("notice: the cluster's store does not answer"),
        "{trace:?}"
    );
    // Asked again after the retry delay, while the grace (2 s) lasts.
    h.advance(Duration::from_millis(250));
    assert_eq!(h.take(), ["claim firing a at 1000ms"]);
    h.answer(Answer::Won(Some(3)));
    let trace = h.take();
    assert!(trace.contains(&"start a#3".to_string()), "{trace:?}");
    assert!(
        trace.iter().any(|l| l.contains("answers again")),
        "{trace:?}"
    );
}

#[test]
fn a_firing_past_its_grace_while_the_store_is_down_is_missed_with_the_reason() {
    let mut h = clustered(EVERY_SECOND);
    h.auto_spawn = true;
    h.advance(Duration::from_secs(1));
    h.take();
    // Answered only after the grace (2 s) is over.
    h.elapsed += Duration::from_millis(2500);
    h.answer(Answer::Unreachable("timed out".into()));
    assert!(h.core.runs.is_empty(), "never run unclaimed");
    let missed = h
        .events
        .iter()
        .find_map(|e| match e {
            crate::event::Event::RunMissed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .expect("a miss");
    assert_eq!(missed.as_deref(), Some("store unreachable"));
}

#[test]
fn a_miss_is_said_by_the_runner_that_claims_it_only() {
    let mut h = clustered(
        "
name: t
jobs:
  a: { run: 'true', trigger: { interval: 1s }, misfire_grace: 2s, coalesce: false }
",
    );
    // Late beyond the grace: the firings at 1 s and 2 s are missed (coalesced into the one at 5 s).
    h.elapsed += Duration::from_secs(5);
    h.input(Input::Timer);
    let trace = h.take();
    assert!(
        trace.iter().any(|l| l.starts_with("claim miss a")),
        "{trace:?}"
    );
    assert!(
        !trace.iter().any(|l| l.starts_with("missed")),
        "not said before it is won: {trace:?}"
    );
    h.answer(Answer::Lost);
    assert!(!h.take().iter().any(|l| l.starts_with("missed")));
}

#[test]
fn other_runs_take_their_number_from_the_clusters_counter() {
    let mut h = clustered(
        "
name: t
jobs:
  a: { run: 'true' }
",
    );
    assert_eq!(h.take(), ["number a"]);
    h.answer(Answer::Won(Some(41)));
    assert_eq!(h.take(), ["start a#41"]);
}

#[test]
fn a_number_the_store_cannot_give_holds_the_run_until_it_can() {
    let mut h = clustered(
        "
name: t
jobs:
  a: { run: 'true' }
",
    );
    h.take();
    h.answer(Answer::Unreachable("refused".into()));
    let trace = h.take();
    assert!(
        trace.iter().any(|l| l.contains("run number wait")),
        "{trace:?}"
    );
    assert!(
        !trace.iter().any(|l| l == "number a"),
        "not asked again at once: {trace:?}"
    );
    assert!(h.core.runs.is_empty());
    // Asked again with the store's retry.
    h.advance(Duration::from_secs(1));
    assert_eq!(h.take(), ["number a"]);
    h.answer(Answer::Won(Some(2)));
    assert_eq!(
        h.take(),
        [
            "notice: the cluster's store gives run numbers again: what waited for it goes on",
            "start a#2"
        ]
    );
}

#[test]
fn a_run_taken_over_is_tried_again_when_it_has_tries_left() {
    let mut h = clustered(
        "
name: t
jobs:
  a: { run: 'true', trigger: { interval: 1h }, retry: { attempts: 2 } }
  b: { run: 'true', trigger: { interval: 1h } }
",
    );
    h.take();
    let row = |job: &str, attempt| RunRow {
        run: Some(7),
        attempt,
        runner: Some("host-2".into()),
        ..RunRow::new(job.into(), Outcome::Interrupted)
    };
    h.input(Input::TakenOver(TakenOver {
        rows: vec![row("a", 1), row("b", 1), row("a", 3)],
        orphans: Vec::new(),
    }));
    let trace = h.take();
    assert_eq!(
        trace,
        [
            "notice: a#7 is tried again here (try 2): its runner host-2 stopped answering",
            "start a#7 try 2"
        ],
        "b retries not; a third try of a is past its attempts"
    );
    let start = h.events.iter().rev().find_map(|e| match e {
        crate::event::Event::RunStart { trigger, .. } => Some(trigger.clone()),
        _ => None,
    });
    assert_eq!(start.as_deref(), Some("failover"));
}

const JOIN: &str = "
name: t
jobs:
  a: { run: 'true', trigger: { interval: 1h } }
  c: { run: 'true', trigger: { interval: 1h } }
  b: { run: 'true', trigger: { after: [a, c] } }
";

#[test]
fn a_join_is_told_of_this_runners_ends_and_fires_when_the_store_says_this_end_completed_it() {
    let mut h = clustered(
        "
name: t
jobs:
  a: { run: 'true', trigger: { interval: 1s } }
  b: { run: 'true', trigger: { after: a } }
",
    );
    h.advance(Duration::from_secs(1));
    h.take();
    h.answer(Answer::Won(Some(4)));
    h.exit("a", 0);
    assert_eq!(
        h.take(),
        ["start a#4", "exit a#4 succeeded", "join b hears [0]"],
        "the join is told, not fired here on its own"
    );
    h.answer(Answer::Joined(Some(vec![
        r#"{"job":"a","run":4,"status":"succeeded","runner":"me"}"#.into(),
    ])));
    assert_eq!(h.take(), ["number b"]);
    h.answer(Answer::Won(Some(9)));
    assert_eq!(h.take(), ["start b#9"]);
}

#[test]
fn a_join_another_runner_completes_or_one_still_half_way_fires_nothing_here() {
    let mut h = clustered(JOIN);
    h.advance(Duration::from_secs(3600));
    h.take();
    h.answer(Answer::Won(Some(1)));
    h.answer(Answer::Lost);
    // `a` ends here; the store says the join is not complete (it waits for `c`, wherever it runs).
    h.exit("a", 0);
    assert_eq!(
        h.take(),
        ["start a#1", "exit a#1 succeeded", "join b hears [0]"]
    );
    h.answer(Answer::Joined(None));
    assert!(h.take().is_empty());
    assert!(!h.core.jobs[h.job("b")].done, "the join can still complete");
}

#[test]
fn an_end_the_store_did_not_take_is_told_again() {
    let mut h = clustered(
        "
name: t
jobs:
  a: { run: 'true', trigger: { interval: 1s } }
  b: { run: 'true', trigger: { after: a } }
",
    );
    h.advance(Duration::from_secs(1));
    h.answer(Answer::Won(Some(1)));
    h.exit("a", 0);
    h.take();
    h.answer(Answer::Unreachable("refused".into()));
    assert!(h.take().is_empty());
    h.advance(Duration::from_secs(1));
    let trace = h.take();
    assert!(trace.contains(&"join b hears [0]".to_string()), "{trace:?}");
}

#[test]
fn a_claim_still_out_is_not_a_run_for_max_instances() {
    let mut h = clustered(EVERY_SECOND);
    h.advance(Duration::from_secs(1));
    h.take();
    h.answer(Answer::Unreachable("stalled".into()));
    h.take();
    // The next firing comes while the first one's claim is asked again: it is claimed, not skipped.
    h.advance(Duration::from_secs(1));
    let trace = h.take();
    assert!(
        trace.contains(&"claim firing a at 2000ms".to_string()),
        "{trace:?}"
    );
    assert!(!trace.iter().any(|l| l.starts_with("skipped")), "{trace:?}");
}

#[test]
fn a_runner_whose_lease_lapsed_asks_again_within_the_grace_then_claims_the_miss() {
    let mut h = clustered(
        "
name: t
jobs:
  a: { run: 'true', trigger: { interval: 10s }, misfire_grace: 2s }
",
    );
    h.advance(Duration::from_secs(10));
    h.take();
    h.answer(Answer::Lapsed);
    assert!(
        h.take().is_empty(),
        "no notice: the heartbeat renews itself"
    );
    h.advance(Duration::from_millis(250));
    assert_eq!(h.take(), ["claim firing a at 10000ms"]);
    // Past the grace: the firing is claimed as a miss (asked again while the lease is still lapsed).
    h.elapsed += Duration::from_secs(3);
    h.answer(Answer::Lapsed);
    h.advance(Duration::from_millis(1));
    assert_eq!(h.take(), ["claim miss a at 10000ms"]);
    h.answer(Answer::Lapsed);
    h.advance(Duration::from_millis(250));
    assert_eq!(h.take(), ["claim miss a at 10000ms"]);
    // Renewed: this runner has the miss, and says it (a runner that ran it would have had the claim).
    h.answer(Answer::Won(None));
    let reason = missed_reason(&h);
    assert_eq!(reason.as_deref(), Some("store unreachable"));
    assert!(h.core.runs.is_empty());
}

/// A core whose job `a` (misfire_grace `grace`) hears, a minute in, of a firing at 0 a runner `dead` claimed
/// (run 12) and never started.
fn orphaned(grace: &str) -> Harness {
    let mut h = clustered(&format!(
        "
name: t
jobs:
  a: {{ run: 'true', trigger: {{ interval: 1h }}, misfire_grace: {grace} }}
"
    ));
    h.take();
    h.elapsed = Duration::from_secs(60);
    let fingerprint = match &h.core.plan.jobs[0].triggers[0] {
        crate::plan::Trigger::Time { rule, .. } => rule.fingerprint(),
        _ => unreachable!(),
    };
    let orphan = Orphan {
        job: "a".into(),
        fingerprint,
        at: h.utc0,
        number: 12,
        key: "flowrun:t:claim:a:x:1000".into(),
        value: "dead#1#2|12".into(),
        runner: "dead".into(),
    };
    h.input(Input::TakenOver(TakenOver {
        rows: Vec::new(),
        orphans: vec![orphan],
    }));
    h
}

/// The reason of the first firing said missed.
fn missed_reason(h: &Harness) -> Option<String> {
    h.events.iter().find_map(|e| match e {
        crate::event::Event::RunMissed { reason, .. } => reason.clone(),
        _ => None,
    })
}

#[test]
fn a_firing_a_dead_runner_claimed_and_never_started_runs_here_within_its_grace() {
    let mut h = orphaned("10m");
    assert_eq!(h.take(), ["reclaim flowrun:t:claim:a:x:1000"]);
    h.answer(Answer::Won(Some(12)));
    assert_eq!(h.take(), ["start a#12"], "its number kept");
}

#[test]
fn one_past_its_grace_is_said_missed_with_why_by_the_runner_that_takes_its_claim() {
    let mut h = orphaned("1s");
    h.take();
    h.answer(Answer::Won(Some(12)));
    let reason = missed_reason(&h);
    assert!(reason.is_some_and(|r| r.contains("runner dead claimed it and stopped answering")));
    assert!(h.core.runs.is_empty());
}

#[test]
fn a_claim_won_only_past_the_grace_is_said_missed_not_run_late() {
    let mut h = clustered(EVERY_SECOND);
    h.advance(Duration::from_secs(1));
    h.take();
    // The store answered 2.5 s later (a stall): the grace (2 s) is over.
    h.elapsed += Duration::from_millis(2500);
    h.answer(Answer::Won(Some(4)));
    assert!(h.core.runs.is_empty(), "not run late");
    let reason = missed_reason(&h);
    assert_eq!(reason.as_deref(), Some("store unreachable"));
}
