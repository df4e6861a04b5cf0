//! Reload (SPEC §5) as the core applies it: added jobs start, removed jobs' runs stop and what of them waits goes,
//! a reload is refused while stopping or when a channel in use would change kind.

use super::{killed, plan, Harness};

const BEFORE: &str = "
name: t
channels:
  news: { kind: broadcast }
jobs:
  feed: { run: 'seq 2', stdout: news }
  a: { run: 'cat', trigger: { each: news } }
  b: { run: 'cat', trigger: { each: news } }
";

fn put(h: &mut Harness, channel: &str, line: &str) {
    let c = h.channel(channel);
    let queue = h.core.world.queues.entry(c).or_default();
    queue.push_back(format!("{line}\n").into_bytes());
    h.input(super::Input::Wake(c));
}

#[test]
fn an_added_job_with_start_fires_at_once() {
    let mut h = Harness::new("name: t\njobs:\n  a: { run: 'sleep 9' }\n");
    h.take();
    let new = plan("name: t\njobs:\n  a: { run: 'sleep 9' }\n  b: { run: 'true' }\n");
    let applied = h.core.reload((*new).clone(), h.now()).unwrap();
    h.pump();
    assert_eq!(applied.added, ["b"]);
    assert_eq!(h.take(), ["reload +[\"b\"] -[] ~[]", "start b#1"]);
}

#[test]
fn a_removed_job_fires_no_more_its_runs_stop_and_its_waiting_firings_go() {
    let yaml = "
name: t
executors:
  one: { max_workers: 1 }
jobs:
  a: { run: 'sleep 9', executor: one }
  b: { run: 'true', executor: one, max_instances: 2 }
";
    let mut h = Harness::new(yaml);
    let b = h.job("b");
    h.core.manual_fire(b, 9, h.now());
    h.pump();
    h.take();
    let a_pid = Harness::pid(h.runs_of("a")[0]);
    let new = plan("name: t\nexecutors:\n  one: { max_workers: 1 }\njobs:\n  a: { run: 'sleep 9', executor: one }\n");
    h.core.reload((*new).clone(), h.now()).unwrap();
    h.pump();
    let trace = h.take();
    assert!(
        trace.contains(&"manual 9 skipped: the job was removed by a reload".to_string()),
        "{trace:?}"
    );
    assert!(
        !trace.contains(&format!("signal {a_pid} TERM")),
        "a is kept"
    );
    assert!(h.core.retired(b));
    h.exit("a", 0);
    let trace = h.take();
    assert!(!trace.iter().any(|l| l.starts_with("start b")), "{trace:?}");
}

#[test]
fn a_reader_removed_by_a_reload_gives_its_batch_back_to_the_others_when_its_run_ends() {
    let queue = BEFORE.replace("broadcast", "queue");
    let mut h = Harness::new(&queue);
    put(&mut h, "news", "hello");
    let a_id = h.runs_of("a")[0];
    assert!(h.runs_of("b").is_empty(), "one message, one run");
    h.take();
    let new = plan(&queue.replace("  a: { run: 'cat', trigger: { each: news } }\n", ""));
    let applied = h.core.reload((*new).clone(), h.now()).unwrap();
    h.pump();
    assert_eq!(applied.removed, ["a"]);
    assert!(h.saw(&format!("signal {} TERM", Harness::pid(a_id))));
    h.end("a", killed(libc::SIGTERM));
    assert!(h.saw("start b#1"));
    let b = h.job("b");
    let run = h.core.runs.values().find(|r| r.job == b).unwrap();
    assert_eq!(&**run.input.as_ref().unwrap().data, b"hello\n");
}

#[test]
fn a_reload_while_stopping_is_refused_and_said() {
    let mut h = Harness::new("name: t\njobs:\n  a: { run: 'sleep 9' }\n");
    h.stop();
    h.take();
    let new = plan("name: t\njobs:\n  a: { run: 'sleep 10' }\n");
    let refused = h.core.reload((*new).clone(), h.now());
    h.pump();
    assert_eq!(refused, Err("the runner is stopping".to_string()));
    assert_eq!(h.take(), ["reload rejected: the runner is stopping"]);
}

#[test]
fn a_channel_in_use_cannot_change_kind() {
    let mut h = Harness::new(BEFORE);
    put(&mut h, "news", "x");
    let new = plan(
        "
name: t
channels:
  news: { kind: queue }
jobs:
  feed: { run: 'seq 2', stdout: news }
  a: { run: 'cat', trigger: { each: news } }
",
    );
    let refused = h.core.reload((*new).clone(), h.now()).unwrap_err();
    assert!(refused.contains("changes kind"), "{refused}");
}

#[test]
fn a_rejected_reload_changes_nothing_and_is_said() {
    let mut h = Harness::new("name: t\njobs:\n  a: { run: 'sleep 9' }\n");
    h.take();
    h.core
        .reload_rejected(2, "t.yaml:3:4: unknown key".into(), "report".into());
    h.pump();
    assert_eq!(h.take(), ["reload rejected: t.yaml:3:4: unknown key"]);
    assert_eq!(h.runs_of("a").len(), 1);
}

#[test]
fn a_changed_job_keeps_its_live_run_and_takes_its_new_definition_at_its_next_firing() {
    let mut h = Harness::new(
        "name: t\njobs:\n  a: { run: 'sleep 9', trigger: [start, { interval: 1m }] }\n",
    );
    let id = h.runs_of("a")[0];
    h.take();
    let new = plan("name: t\njobs:\n  a: { run: 'sleep 1', trigger: [start, { interval: 1m }] }\n");
    let applied = h.core.reload((*new).clone(), h.now()).unwrap();
    h.pump();
    assert_eq!(applied.changed, ["a"]);
    assert_eq!(h.runs_of("a"), [id], "its run goes on");
    assert_eq!(h.take(), ["reload +[] -[] ~[\"a\"]"]);
}
