//! A run's life after its start (SPEC §2.2, §3, §6): outcomes, retries, timeouts, stop grace, restarts and their
//! limits, readiness, and the runner's stop.

use std::time::Duration;

use super::{killed, Harness, Input};
use crate::engine::core::runs::{RunState, StopCause};
use crate::engine::Stop;
use crate::event::Event;

fn reason_of_exit(h: &Harness) -> Option<String> {
    h.events.iter().rev().find_map(|e| match e {
        Event::RunExit(x) => x.reason.clone(),
        _ => None,
    })
}

#[test]
fn a_failed_run_without_retry_fails_the_workflow() {
    let mut h = Harness::new("name: t\njobs:\n  a: { run: 'false' }\n");
    h.exit("a", 3);
    assert_eq!(h.take(), ["start a#1", "exit a#1 failed"]);
    assert!(h.core.failed);
    assert_eq!(h.core.jobs[0].counts.failed, 1);
    assert_eq!(h.core.jobs[0].last_exit.as_deref(), Some("exited 3"));
}

#[test]
fn a_success_is_counted_and_remembered() {
    let mut h = Harness::new("name: t\njobs:\n  a: { run: 'true' }\n");
    h.advance(Duration::from_secs(2));
    h.exit("a", 0);
    assert!(!h.core.failed);
    assert_eq!(h.core.jobs[0].counts.succeeded, 1);
    assert_eq!(h.core.jobs[0].last_success, Some(h.now().utc));
}

const RETRIED: &str = "
name: t
jobs:
  a: { run: 'false', retry: { attempts: 2, backoff: 1s } }
";

#[test]
fn a_failed_try_is_retried_after_its_backoff_and_the_backoff_doubles() {
    let mut h = Harness::new(RETRIED);
    h.exit("a", 1);
    assert_eq!(
        h.take(),
        ["start a#1", "exit a#1 failed", "retry a#1 try 2 in 1s"]
    );
    assert!(
        !h.core.failed,
        "a try that is retried has not failed the workflow"
    );
    h.advance(Duration::from_millis(999));
    assert!(h.take().is_empty());
    h.advance(Duration::from_millis(1));
    // Tries belong to their run: the same number, one run, three tries, one failure.
    assert_eq!(h.take(), ["start a#1 try 2"]);
    h.exit("a", 1);
    assert!(h.saw("retry a#1 try 3 in 2s"));
    h.advance(Duration::from_secs(2));
    h.exit("a", 1);
    assert_eq!(h.take(), ["start a#1 try 3", "exit a#1 failed"]);
    assert!(h.core.failed, "the last try failed");
    assert!(h.core.finished());
    let counts = &h.core.jobs[0].counts;
    assert_eq!((counts.runs, counts.tries, counts.failed), (1, 3, 1));
    let finals: Vec<bool> = h
        .events
        .iter()
        .filter_map(|e| match e {
            crate::event::Event::RunExit(x) => Some(x.final_try),
            _ => None,
        })
        .collect();
    assert_eq!(
        finals,
        [false, false, true],
        "only the last try ends the run"
    );
}

#[test]
fn retry_on_codes_retries_only_those() {
    let mut h = Harness::new(
        "
name: t
jobs:
  a: { run: 'false', retry: { attempts: 3, backoff: 1s, on: [75] } }
",
    );
    h.exit("a", 2);
    assert_eq!(h.take(), ["start a#1", "exit a#1 failed"]);
    assert!(h.core.failed);
}

#[test]
fn a_retry_waiting_when_the_runner_stops_does_not_start() {
    let mut h = Harness::new(RETRIED);
    h.exit("a", 1);
    h.take();
    h.stop();
    h.advance(Duration::from_secs(5));
    assert_eq!(
        h.take(),
        ["stopping SIGTERM 0", "exit a#1 stopped"],
        "the run ends, stopped, with its retry"
    );
    assert!(h.core.finished());
    assert_eq!(h.core.instances(0), 0, "the retry was called off");
}

#[test]
fn a_failure_at_shutdown_is_not_retried() {
    let mut h = Harness::new(RETRIED);
    h.stop();
    h.exit("a", 1);
    let trace = h.take();
    assert!(!trace.iter().any(|l| l.starts_with("retry")), "{trace:?}");
}

const TIMED: &str = "
name: t
jobs:
  a: { run: 'sleep 100', timeout: 10s, stop_grace: 2s }
";

#[test]
fn a_run_past_its_timeout_is_stopped_then_killed_after_its_grace_and_fails() {
    let mut h = Harness::new(TIMED);
    let pid = Harness::pid(h.runs_of("a")[0]);
    h.take();
    h.advance(Duration::from_secs(10));
    assert_eq!(
        h.take(),
        ["timeout a#1", format!("signal {pid} TERM").as_str()]
    );
    h.advance(Duration::from_secs(2));
    assert_eq!(h.take(), [format!("signal {pid} KILL")]);
    h.end("a", killed(libc::SIGKILL));
    assert_eq!(h.take(), ["exit a#1 timeout"]);
    assert!(h.core.failed);
    assert_eq!(reason_of_exit(&h).as_deref(), Some("timed out after 10s"));
}

#[test]
fn a_run_that_ends_before_its_timeout_has_its_timer_called_off() {
    let mut h = Harness::new(TIMED);
    assert_eq!(h.armed.len(), 1, "its timeout");
    h.exit("a", 0);
    assert!(h.armed.is_empty());
}

#[test]
fn no_stop_grace_kills_at_once() {
    let mut h = Harness::new("name: t\njobs:\n  a: { run: 'sleep 9', stop_grace: 0s }\n");
    let pid = Harness::pid(h.runs_of("a")[0]);
    h.take();
    h.stop();
    assert_eq!(
        h.take(),
        ["stopping SIGTERM 1", format!("signal {pid} KILL").as_str()]
    );
}

#[test]
fn a_stop_terms_every_live_run_and_a_second_interrupt_kills() {
    let mut h = Harness::new("name: t\njobs:\n  a: { run: 'sleep 9' }\n  b: { run: 'sleep 9' }\n");
    let (a, b) = (
        Harness::pid(h.runs_of("a")[0]),
        Harness::pid(h.runs_of("b")[0]),
    );
    h.take();
    h.input(Input::Stop(Stop::Interrupt));
    let mut trace = h.take();
    trace.sort();
    assert_eq!(
        trace,
        [
            format!("signal {a} TERM"),
            format!("signal {b} TERM"),
            "stopping SIGINT 2".to_string()
        ]
    );
    h.input(Input::Stop(Stop::Interrupt));
    let mut trace = h.take();
    trace.sort();
    assert_eq!(
        trace,
        [format!("signal {a} KILL"), format!("signal {b} KILL")]
    );
    assert!(h.core.forced);
}

#[test]
fn a_run_stopped_at_shutdown_is_neither_success_nor_failure() {
    let mut h = Harness::new("name: t\njobs:\n  a: { run: 'sleep 9' }\n");
    h.stop();
    h.end("a", killed(libc::SIGTERM));
    assert!(h.saw("exit a#1 stopped"));
    assert!(!h.core.failed);
    assert_eq!(h.core.jobs[0].counts.stopped, 1);
    assert!(h.core.finished());
}

#[test]
fn no_time_firing_after_a_stop() {
    let mut h = Harness::new(
        "name: t\njobs:\n  a: { run: 'true', trigger: { interval: 1s }, stop_grace: 0s }\n",
    );
    h.stop();
    h.advance(Duration::from_secs(3));
    assert_eq!(h.take(), ["stopping SIGTERM 0"]);
    assert!(h.core.finished());
}

const SERVICE: &str = "
name: t
jobs:
  web: { run: 'serve', restart: always }
";

#[test]
fn a_service_comes_back_after_a_delay_that_doubles_while_its_runs_are_short() {
    let mut h = Harness::new(SERVICE);
    h.exit("web", 0);
    assert_eq!(
        h.take(),
        [
            "start web#1",
            "exit web#1 succeeded",
            "restart web in 100ms"
        ]
    );
    h.advance(Duration::from_millis(100));
    assert_eq!(h.take(), ["start web#2"]);
    h.exit("web", 1);
    assert!(h.saw("restart web in 200ms"));
    assert_eq!(h.core.jobs[0].restarted, 2);
}

#[test]
fn a_long_run_resets_the_restart_delay() {
    let mut h = Harness::new(SERVICE);
    h.exit("web", 0);
    h.advance(Duration::from_millis(100));
    h.take();
    h.advance(Duration::from_secs(60));
    h.exit("web", 0);
    assert!(h.saw("restart web in 100ms"));
}

#[test]
fn on_failure_restarts_only_after_a_failure() {
    let mut h = Harness::new("name: t\njobs:\n  web: { run: 'serve', restart: on-failure }\n");
    h.exit("web", 0);
    assert_eq!(h.take(), ["start web#1", "exit web#1 succeeded"]);
    assert!(h.core.finished());
}

#[test]
fn a_restart_limit_ends_in_failure_once_reached() {
    let mut h = Harness::new(
        "
name: t
jobs:
  web: { run: 'serve', restart: { policy: always, max: 2, window: 1m } }
",
    );
    h.exit("web", 1);
    h.advance(Duration::from_millis(100));
    h.exit("web", 1);
    h.advance(Duration::from_millis(200));
    h.exit("web", 1);
    let trace = h.take();
    assert_eq!(
        trace.last().map(String::as_str),
        Some("exhausted web after 2")
    );
    assert!(h.core.failed);
    assert!(h.core.finished());
}

#[test]
fn a_service_is_not_restarted_at_shutdown_nor_after_flowrun_stop_job() {
    let mut h = Harness::new(SERVICE);
    let stopped = h.core.stop_jobs(Some("web"), h.now());
    h.pump();
    assert_eq!(stopped, Ok(1));
    h.end("web", killed(libc::SIGTERM));
    let trace = h.take();
    assert!(!trace.iter().any(|l| l.starts_with("restart")), "{trace:?}");
    let mut h = Harness::new(SERVICE);
    h.stop();
    h.end("web", killed(libc::SIGTERM));
    let trace = h.take();
    assert!(!trace.iter().any(|l| l.starts_with("restart")), "{trace:?}");
}

#[test]
fn stopping_an_unknown_job_is_refused() {
    let mut h = Harness::new(SERVICE);
    assert_eq!(
        h.core.stop_jobs(Some("nope"), h.now()),
        Err("no job `nope`".to_string())
    );
}

const PROBED: &str = "
name: t
jobs:
  db: { run: 'serve', ready: { tcp: '127.0.0.1:5432', timeout: 5s } }
";

#[test]
fn a_passing_probe_makes_a_run_ready_once() {
    let mut h = Harness::new(PROBED);
    let id = h.runs_of("db")[0];
    h.take();
    let probe = "tcp 127.0.0.1:5432".to_string();
    h.input(Input::Ready {
        id,
        probe: probe.clone(),
    });
    h.input(Input::Ready { id, probe });
    assert_eq!(h.take(), ["ready db#1"]);
    assert!(h.core.runs[&id].ready);
}

#[test]
fn a_run_not_ready_in_time_is_stopped_and_fails_with_the_last_check() {
    let mut h = Harness::new(PROBED);
    let id = h.runs_of("db")[0];
    h.take();
    let timeout = Duration::from_secs(5);
    let last = Some("connection refused".to_string());
    h.input(Input::NotReady { id, timeout, last });
    assert_eq!(
        h.take(),
        [
            "not ready db#1".to_string(),
            format!("stop probe {id}"),
            format!("signal {} TERM", Harness::pid(id))
        ]
    );
    assert!(matches!(
        h.core.runs[&id].state,
        RunState::Stopping {
            cause: StopCause::NotReady(_),
            ..
        }
    ));
    h.end("db", killed(libc::SIGTERM));
    assert!(h.saw("exit db#1 failed"));
    assert!(h.core.failed);
}

#[test]
fn a_ready_run_is_not_stopped_for_not_being_ready() {
    let mut h = Harness::new(PROBED);
    let id = h.runs_of("db")[0];
    h.input(Input::Ready {
        id,
        probe: "tcp".into(),
    });
    h.take();
    let timeout = Duration::from_secs(5);
    h.input(Input::NotReady {
        id,
        timeout,
        last: None,
    });
    assert!(h.take().is_empty());
}

#[test]
fn a_run_that_cannot_start_is_a_failed_run_that_says_why() {
    let mut h = Harness::unstarted(
        "name: t\njobs:\n  a: { run: 'true' }\n",
        Default::default(),
        false,
    );
    h.auto_spawn = false;
    h.core.start(h.now(), None);
    h.pump();
    let id = h.spawns.pop().expect("a spawn asked for");
    h.core.spawn_failed(id, "No such file or directory".into());
    h.pump();
    assert_eq!(h.take(), ["exit a#1 spawn-failed"]);
    assert_eq!(
        reason_of_exit(&h).as_deref(),
        Some("cannot start `true`: No such file or directory")
    );
    assert!(h.core.finished());
}

#[test]
fn a_stop_signal_that_came_before_the_start_fires_nothing() {
    let mut h = Harness::unstarted(
        "name: t\njobs:\n  a: { run: 'true' }\n",
        Default::default(),
        false,
    );
    h.core.start(h.now(), Some(Stop::Signal("SIGTERM")));
    h.pump();
    assert_eq!(h.take(), ["stopping SIGTERM 0"]);
    assert!(h.core.finished());
}

#[test]
fn a_stop_asked_for_ends_in_success_whatever_failed_unless_a_run_outlived_its_grace() {
    use crate::engine::Ending;
    let yaml = "name: t\njobs:\n  bad: { run: 'false' }\n  svc: { run: 'serve', stop_grace: 2s }\n";
    // A failure, then a clean stop asked for: 0 (SPEC §7).
    let mut h = Harness::new(yaml);
    h.exit("bad", 1);
    h.stop();
    h.end("svc", killed(libc::SIGTERM));
    assert!(h.core.failed);
    assert_eq!(h.core.ending(false), Ending::Succeeded);
    assert_eq!(
        h.core.ending(true),
        Ending::Unclean,
        "leftovers had to be killed"
    );
    // A run that needed SIGKILL after its grace: not clean.
    let mut h = Harness::new(yaml);
    h.stop();
    h.advance(Duration::from_secs(2));
    h.end("svc", killed(libc::SIGKILL));
    h.exit("bad", 0);
    assert_eq!(h.core.ending(false), Ending::Unclean);
    // `--for` keeps the codes of the work: a failure is a failure.
    let mut h = Harness::new(yaml);
    h.exit("bad", 1);
    h.input(Input::Stop(Stop::Deadline));
    h.end("svc", killed(libc::SIGTERM));
    assert_eq!(h.core.ending(false), Ending::Failed);
    // A second Ctrl-C forces.
    let mut h = Harness::new(yaml);
    h.input(Input::Stop(Stop::Interrupt));
    h.input(Input::Stop(Stop::Interrupt));
    assert_eq!(h.core.ending(false), Ending::Forced);
}

#[test]
fn an_unhealthy_run_is_stopped_fails_as_unhealthy_and_its_service_comes_back() {
    let mut h = Harness::new(
        "name: t\njobs:\n  web: { run: 'serve', restart: on-failure, alive: { tcp: '127.0.0.1:9', failures: 2 } }\n",
    );
    let id = h.runs_of("web")[0];
    h.take();
    let why = "2 liveness check(s) failed in a row (last: connecting to 127.0.0.1:9: refused)"
        .to_string();
    h.input(Input::Unhealthy { id, why });
    assert_eq!(
        h.take(),
        [
            "unhealthy web#1".to_string(),
            format!("signal {} TERM", Harness::pid(id))
        ]
    );
    h.end("web", killed(libc::SIGTERM));
    assert!(h.saw("exit web#1 unhealthy"));
    let reason = reason_of_exit(&h).unwrap();
    assert!(
        reason.starts_with("unhealthy: 2 liveness check(s) failed"),
        "{reason}"
    );
    // A failure: `restart: on-failure` brings it back.
    h.advance(Duration::from_millis(100));
    assert!(h.saw("start web#2"));
}

#[test]
fn a_run_whose_retry_a_stop_calls_off_ends_stopped_and_no_row_stays_running() {
    let mut h = Harness::stored(RETRIED);
    h.exit("a", 1);
    h.take();
    h.stop();
    assert!(h.saw("exit a#1 stopped"));
    let counts = &h.core.jobs[0].counts;
    assert_eq!((counts.runs, counts.stopped, counts.failed), (1, 1, 0));
    let last = h.events.iter().rev().find_map(|e| match e {
        crate::event::Event::RunExit(x) => Some(x.clone()),
        _ => None,
    });
    let last = last.unwrap();
    assert!(
        last.final_try && last.pid.is_none() && last.attempt == 2,
        "{last:?}"
    );
    assert!(!h.core.failed);
}

#[test]
fn a_handlers_failure_fires_no_handler() {
    let mut h = Harness::new(
        "
name: t
jobs:
  a: { run: 'false', on_failure: h1 }
  h1: { run: 'false', on_failure: h2 }
  h2: { run: 'false', on_failure: h1 }
",
    );
    h.exit("a", 1);
    assert!(h.saw("start h1#1"));
    h.exit("h1", 1);
    let trace = h.take();
    assert!(
        !trace.iter().any(|l| l.starts_with("start h2")),
        "{trace:?}"
    );
    assert!(h.core.finished());
}

#[test]
fn a_run_the_kernel_killed_for_its_memory_limit_says_so() {
    let mut h = Harness::new("name: t\njobs:\n  a: { run: 'big', limits: { memory: 64MiB } }\n");
    h.take();
    let end = crate::engine::supervise::RunEnd {
        limit_hit: Some("memory limit (64MiB)".into()),
        ..killed(libc::SIGKILL)
    };
    h.end("a", end);
    assert_eq!(h.take(), ["exit a#1 failed"]);
    assert_eq!(
        reason_of_exit(&h).as_deref(),
        Some("killed: memory limit (64MiB)")
    );
}

#[test]
fn a_run_that_succeeded_despite_an_oom_kill_below_it_is_not_said_killed() {
    // A child of the run was killed and the run went on to succeed: that is the run's business.
    let mut h = Harness::new("name: t\njobs:\n  a: { run: 'big', limits: { memory: 64MiB } }\n");
    h.take();
    let end = crate::engine::supervise::RunEnd {
        limit_hit: Some("memory limit (64MiB)".into()),
        ..super::exited(0)
    };
    h.end("a", end);
    assert_eq!(h.take(), ["exit a#1 succeeded"]);
    assert_eq!(reason_of_exit(&h), None);
}
