//! Channels as the core sees them (SPEC §2.4): `each` runs per message or batch, messages given back and taken
//! back, dead letters, closing behind the last writer, a reader's work ending with its input.

use super::{exited, killed, Harness, Input};
use crate::engine::core::World;
use crate::engine::supervise::RunEnd;

const WORK: &str = "
name: t
channels:
  jobs: { kind: queue }
  dead: { kind: queue }
jobs:
  feed: { run: 'seq 3', stdout: jobs }
  work: { run: 'cat', trigger: { each: jobs }, max_instances: 2, dead_letter: dead }
  sink: { run: 'cat', stdin: dead }
";

fn put(h: &mut Harness, channel: &str, lines: &[&str]) {
    let c = h.channel(channel);
    let queue = h.core.world.queues.entry(c).or_default();
    for line in lines {
        queue.push_back(format!("{line}\n").into_bytes());
    }
    h.input(Input::Wake(c));
}

fn messages_of(h: &Harness, job: &str) -> Vec<String> {
    let j = h.job(job);
    let mut ids: Vec<_> = h.core.runs.iter().filter(|(_, r)| r.job == j).collect();
    ids.sort_by_key(|(id, _)| **id);
    ids.iter()
        .map(|(_, r)| String::from_utf8_lossy(&r.input.as_ref().unwrap().data).into_owned())
        .collect()
}

#[test]
fn each_message_is_a_run_up_to_max_instances() {
    let mut h = Harness::new(WORK);
    h.take();
    put(&mut h, "jobs", &["1", "2", "3"]);
    assert_eq!(h.take(), ["start work#1", "start work#2"]);
    assert_eq!(messages_of(&h, "work"), ["1\n", "2\n"]);
    h.exit("work", 0);
    assert_eq!(h.take(), ["exit work#1 succeeded", "start work#3"]);
    assert_eq!(messages_of(&h, "work"), ["2\n", "3\n"]);
}

#[test]
fn a_batch_takes_up_to_n_waiting_messages() {
    let mut h = Harness::new(
        "
name: t
channels:
  jobs: { kind: queue }
jobs:
  feed: { run: 'seq 5', stdout: jobs }
  work: { run: 'cat', trigger: { each: jobs, batch: 3 } }
",
    );
    put(&mut h, "jobs", &["1", "2", "3", "4", "5"]);
    assert_eq!(messages_of(&h, "work"), ["1\n2\n3\n"]);
    h.exit("work", 0);
    assert_eq!(messages_of(&h, "work"), ["4\n5\n"]);
}

#[test]
fn a_batch_that_failed_its_last_try_goes_to_the_dead_letter() {
    let mut h = Harness::new(WORK);
    put(&mut h, "jobs", &["1"]);
    h.take();
    h.exit("work", 1);
    assert_eq!(h.take(), ["exit work#1 failed", "dead work#1 1 to dead"]);
    let dead = h.channel("dead");
    assert_eq!(h.core.world.dead, [(dead, 1)]);
    assert!(
        !h.core.failed,
        "a dead letter keeps the message: nothing failed for good"
    );
}

#[test]
fn a_failed_batch_without_a_dead_letter_counts_its_messages_as_failed() {
    let mut h = Harness::new(
        "
name: t
channels:
  jobs: { kind: queue }
jobs:
  feed: { run: 'seq 2', stdout: jobs }
  work: { run: 'cat', trigger: { each: jobs, batch: 2 } }
",
    );
    put(&mut h, "jobs", &["1", "2"]);
    h.exit("work", 1);
    assert!(h.core.failed);
    assert_eq!(h.core.failed_messages, 2);
}

#[test]
fn a_batch_stopped_at_shutdown_goes_back_to_its_queue_unless_it_exited_zero() {
    let mut h = Harness::new(WORK);
    put(&mut h, "jobs", &["1", "2"]);
    h.stop();
    let jobs = h.channel("jobs");
    h.end("work", killed(libc::SIGTERM));
    assert_eq!(h.core.world.left(jobs), 1, "the first batch is back");
    // The second finished its message on SIGTERM: given back it would be done twice.
    h.end("work", exited(0));
    assert_eq!(h.core.world.left(jobs), 1);
}

#[test]
fn a_retry_waiting_at_a_stop_gives_its_messages_back() {
    let mut h = Harness::new(
        "
name: t
channels:
  jobs: { kind: queue }
jobs:
  feed: { run: 'seq 1', stdout: jobs }
  work: { run: 'cat', trigger: { each: jobs }, retry: { attempts: 3, backoff: 1m } }
",
    );
    put(&mut h, "jobs", &["only"]);
    h.exit("work", 1);
    let jobs = h.channel("jobs");
    assert_eq!(h.core.world.left(jobs), 0, "the retry holds it");
    h.stop();
    assert_eq!(
        h.core.world.left(jobs),
        1,
        "back in its queue, counted as left"
    );
    // Neither a try that failed nor a retry called off did the message (a durable queue keeps it).
    assert!(h.core.world.done.is_empty());
}

#[test]
fn messages_taken_back_from_a_reader_are_said_and_wake_the_readers() {
    let mut h = Harness::new(WORK);
    h.take();
    let end = RunEnd {
        taken_back: 4,
        ..exited(0)
    };
    h.end("sink", end);
    let trace = h.take();
    assert!(
        trace.contains(&"taken back sink#1 4".to_string()),
        "{trace:?}"
    );
}

#[test]
fn a_channel_closes_when_its_last_writer_can_run_no_more() {
    let mut h = Harness::new(WORK);
    h.take();
    let jobs = h.channel("jobs");
    assert!(!h.core.world.closed.contains(&jobs));
    h.exit("feed", 0);
    assert!(h.saw("closed jobs 0"));
    assert!(h.core.world.closed.contains(&jobs));
}

#[test]
fn an_each_reader_is_done_once_its_channel_is_closed_and_drained() {
    let mut h = Harness::new(WORK);
    put(&mut h, "jobs", &["1"]);
    h.exit("feed", 0);
    let work = h.job("work");
    assert!(!h.core.jobs[work].done, "a run still holds a message");
    h.exit("work", 0);
    assert!(h.core.jobs[work].done);
    // The dead letter had no writer left either: its reader's input is over.
    h.exit("sink", 0);
    assert!(h.core.finished());
}

#[test]
fn a_stopped_reader_with_messages_left_keeps_the_queue_open_for_the_others() {
    let mut h = Harness::new(WORK);
    put(&mut h, "jobs", &["1"]);
    h.exit("feed", 0);
    let work = h.job("work");
    h.input(Input::Stop(crate::engine::Stop::Signal("SIGTERM")));
    h.end("work", killed(libc::SIGTERM));
    assert!(h.core.jobs[work].done, "at a stop nothing fires again");
    assert_eq!(h.core.world.left(h.channel("jobs")), 1);
}

#[test]
fn a_batch_is_done_when_its_run_succeeds_or_its_messages_reach_the_dead_letter() {
    // A durable channel lets messages go only when they are done (SPEC §8).
    let mut h = Harness::new(WORK);
    put(&mut h, "jobs", &["1", "2", "3"]);
    h.take();
    h.exit("work", 0);
    assert_eq!(h.core.world.done, [b"1\n".to_vec()]);
    h.exit("work", 1);
    assert!(h.take().contains(&"dead work#2 1 to dead".to_string()));
    assert_eq!(h.core.world.done, [b"1\n".to_vec(), b"2\n".to_vec()]);
}

#[test]
fn a_run_that_finished_its_batch_on_the_stop_has_done_it() {
    // It exited 0 on SIGTERM (what stop_grace is for): its messages are not given back, and they are done.
    let mut h = Harness::new(WORK);
    put(&mut h, "jobs", &["1"]);
    h.take();
    h.stop();
    h.end("work", super::exited(0));
    assert_eq!(h.core.world.done, [b"1\n".to_vec()]);
    assert_eq!(h.core.world.left(h.channel("jobs")), 0);
}

#[test]
fn a_durable_queue_no_job_writes_is_closed_at_the_start_another_channel_waits_for_a_writer() {
    let mut h = Harness::new(
        "name: t\nchannels:\n  q: {}\n  kept: { durable: true }\njobs:\n  read: { run: cat, stdin: q }\n  drain: { run: cat, stdin: kept }\n",
    );
    let trace = h.take();
    assert!(
        h.core.world.closed.contains(&h.channel("kept")),
        "{trace:?}"
    );
    assert!(
        !h.core.world.closed.contains(&h.channel("q")),
        "a reload may give it a writer"
    );
}
