//! `flowrun FILE` on the real binary: channels moving many messages, `each`, `after`, limits, stopping.

mod common;

use common::{alive, channel, events, output_lines, summary};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Flow {
    dir: tempfile::TempDir,
    file: PathBuf,
}

fn flow(yaml: &str) -> Flow {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yaml");
    std::fs::write(&file, yaml).unwrap();
    Flow { dir, file }
}

fn bin() -> Command {
    let mut cmd = common::cmd();
    cmd.env("NO_COLOR", "1");
    cmd
}

impl Flow {
    fn run(&self, extra: &[&str]) -> Output {
        bin()
            .arg(&self.file)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
    fn run_json(&self) -> (Output, Vec<Value>) {
        let out = self.run(&["--log-format", "json"]);
        let events = events(&out.stderr);
        (out, events)
    }
}

const N: u64 = 100_000;
const SUM: u64 = N * (N + 1) / 2;

#[test]
fn queue_moves_every_message_exactly_once() {
    let f = flow(
        "channels: { lines: { kind: queue, capacity: 1000 } }
jobs:
  produce: { run: seq 100000, stdout: lines }
  consume:
    run: awk '{ n++; s += $1 } END { printf \"%d %.0f\\n\", n, s }'
    stdin: lines
",
    );
    let (out, ev) = f.run_json();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(output_lines(&ev, "consume"), [format!("{N} {SUM}")]);
    assert_eq!(channel(&ev, "lines"), (N, N, 0));
}

#[test]
fn two_competing_readers_share_the_queue_without_loss_or_duplicates() {
    let f = flow(
        "channels: { lines: { kind: queue, capacity: 64 } }
jobs:
  produce: { run: seq 100000, stdout: lines }
  left: { run: \"awk '{ n++; s += $1 } END { printf \\\"%d %.0f\\\\n\\\", n, s }'\", stdin: lines }
  right: { run: \"awk '{ n++; s += $1 } END { printf \\\"%d %.0f\\\\n\\\", n, s }'\", stdin: lines }
",
    );
    let (out, ev) = f.run_json();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (mut n, mut s) = (0, 0);
    for job in ["left", "right"] {
        let line = output_lines(&ev, job)[0];
        let mut parts = line.split(' ').map(|p| p.parse::<u64>().unwrap());
        n += parts.next().unwrap();
        s += parts.next().unwrap();
    }
    assert_eq!((n, s), (N, SUM));
    assert_eq!(channel(&ev, "lines"), (N, N, 0));
}

#[test]
fn unread_messages_are_taken_back_for_the_next_reader_run() {
    // Each reader run reads exactly 25,000 lines (sh's `read` takes one byte at a time) and exits; what is
    // still in its pipe goes to the next run, whole and in order.
    let f = flow(
        "channels: { lines: { kind: queue, capacity: 5000 } }
jobs:
  produce: { run: seq 100000, stdout: lines }
  consume:
    run: |
      i=0
      while [ $i -lt 25000 ] && IFS= read -r line; do echo \"$line\"; i=$((i+1)); done
    stdin: lines
    restart: always
",
    );
    let (out, ev) = f.run_json();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<u64> = output_lines(&ev, "consume")
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(lines, (1..=N).collect::<Vec<_>>());
    assert!(
        ev.iter().any(|e| e["event"] == "channel.takeback"),
        "take-back happened"
    );
    assert_eq!(channel(&ev, "lines"), (N, N, 0));
}

#[test]
fn broadcast_gives_every_reader_every_message() {
    let f = flow(
        "channels: { events: { kind: broadcast, capacity: 500 } }
jobs:
  emit: { run: seq 100000, stdout: events }
  a: { run: \"awk '{ n++; s += $1 } END { printf \\\"%d %.0f\\\\n\\\", n, s }'\", stdin: events }
  b: { run: \"awk '{ n++; s += $1 } END { printf \\\"%d %.0f\\\\n\\\", n, s }'\", stdin: events }
",
    );
    let (out, ev) = f.run_json();
    assert_eq!(out.status.code(), Some(0));
    for job in ["a", "b"] {
        assert_eq!(output_lines(&ev, job), [format!("{N} {SUM}")]);
    }
    // Broadcast counts one message per reader.
    assert_eq!(channel(&ev, "events"), (2 * N, 2 * N, 0));
}

#[test]
fn pipe_joins_writer_and_reader_directly() {
    let f = flow(
        "channels: { raw: { kind: pipe } }
jobs:
  gen: { run: [seq, \"100000\"], stdout: raw }
  sum: { run: \"awk '{ n++; s += $1 } END { printf \\\"%d %.0f\\\\n\\\", n, s }'\", stdin: raw }
",
    );
    let (out, ev) = f.run_json();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(output_lines(&ev, "sum"), [format!("{N} {SUM}")]);
}

#[test]
fn each_with_failures_retries_and_dead_letters() {
    let f = flow(
        "executors: { pool: { max_workers: 4 } }
channels:
  tasks: {}
  failed: {}
jobs:
  enqueue: { run: seq 200, stdout: tasks }
  work:
    run: |
      read -r n
      if [ $((n % 7)) -eq 0 ]; then exit 3; fi
      echo \"done $n\"
    trigger: { each: tasks }
    executor: pool
    max_instances: 4
    retry: { attempts: 1, backoff: 1ms }
    dead_letter: failed
  dead:
    run: cat
    stdin: failed
",
    );
    let (out, ev) = f.run_json();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut done: Vec<u64> = output_lines(&ev, "work")
        .iter()
        .map(|l| l[5..].parse().unwrap())
        .collect();
    done.sort_unstable();
    let mut dead: Vec<u64> = output_lines(&ev, "dead")
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    dead.sort_unstable();
    assert_eq!(done, (1..=200).filter(|n| n % 7 != 0).collect::<Vec<_>>());
    assert_eq!(dead, (1..=200).filter(|n| n % 7 == 0).collect::<Vec<_>>());
    let retries = ev.iter().filter(|e| e["event"] == "run.retry").count();
    assert_eq!(retries, dead.len());
    // Tries belong to their run: 200 runs, 28 of them tried twice, 28 failed for good.
    let work = &summary(&ev)["jobs"]["work"];
    assert_eq!(work["runs"], 200);
    assert_eq!(work["tries"], 200 + 28);
    assert_eq!(work["failed"], 28);
    assert_eq!(channel(&ev, "tasks"), (200, 200, 0));
    assert_eq!(channel(&ev, "failed"), (28, 28, 0));
    // Every message went somewhere: none failed, and the summary says 0 rather than leaving the key out.
    assert_eq!(summary(&ev)["failed_messages"], 0);
    // Each dead message is said once, naming its channel.
    let dead_events: Vec<&Value> = ev.iter().filter(|e| e["event"] == "message.dead").collect();
    assert_eq!(dead_events.len(), 28);
    assert!(dead_events
        .iter()
        .all(|e| e["channel"] == "failed" && e["messages"] == 1 && e["job"] == "work"));
}

#[test]
fn each_failure_without_dead_letter_fails_the_workflow() {
    let f = flow(
        "channels: { tasks: {} }
jobs:
  enqueue: { run: seq 3, stdout: tasks }
  work: { run: 'read -r n; [ $n -ne 2 ]', trigger: { each: tasks } }
",
    );
    let (out, ev) = f.run_json();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(summary(&ev)["failed_messages"], 1);
}

#[test]
fn after_joins_run_in_order() {
    let (out, ev) = {
        let out = bin()
            .args(["--log-format", "json"])
            .arg(example("dag.yaml"))
            .output()
            .unwrap();
        let ev = events(&out.stderr);
        (out, ev)
    };
    assert_eq!(out.status.code(), Some(0));
    let order: Vec<&str> = ev
        .iter()
        .filter(|e| e["event"] == "run.start")
        .map(|e| e["job"].as_str().unwrap())
        .collect();
    let pos = |j: &str| order.iter().position(|x| *x == j).unwrap();
    assert!(pos("join") > pos("extract-a") && pos("join") > pos("extract-b"));
    assert!(pos("publish") > pos("join") && pos("cleanup") > pos("publish"));
}

#[test]
fn a_join_that_can_never_fire_is_skipped_and_the_upstream_failure_fails_the_workflow() {
    let f = flow(
        "jobs:
  build: { run: exit 1 }
  deploy: { run: echo deploy, trigger: { after: build } }
  notify: { run: echo notify, trigger: { after: build, status: failure } }
",
    );
    let (out, ev) = f.run_json();
    assert_eq!(out.status.code(), Some(1));
    let skipped: Vec<&Value> = ev.iter().filter(|e| e["event"] == "run.skipped").collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["job"], "deploy");
    assert_eq!(output_lines(&ev, "notify"), ["notify"]);
    assert!(output_lines(&ev, "deploy").is_empty());
}

#[test]
fn a_firing_beyond_max_instances_is_skipped() {
    let f = flow("jobs:\n  once: { run: 'echo hi', trigger: [start, start] }\n");
    let (out, ev) = f.run_json();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(ev.iter().filter(|e| e["event"] == "run.skipped").count(), 1);
    assert_eq!(summary(&ev)["jobs"]["once"]["skipped"], 1);
    assert_eq!(summary(&ev)["jobs"]["once"]["runs"], 1);
}

#[test]
fn a_timeout_stops_the_whole_group() {
    let f = flow(
        "jobs:\n  slow: { run: 'sleep 1000 & echo $!; wait', timeout: 300ms, stop_grace: 100ms }\n",
    );
    let (out, ev) = f.run_json();
    assert_eq!(out.status.code(), Some(1));
    assert!(ev
        .iter()
        .any(|e| e["event"] == "run.timeout" && e["job"] == "slow"));
    let pid: u32 = output_lines(&ev, "slow")[0].parse().unwrap();
    assert!(
        !alive(pid),
        "the background sleep of a timed-out run was stopped"
    );
}

#[test]
fn a_job_reading_stdin_without_a_channel_ends_at_once() {
    let f = flow("jobs:\n  reader: { run: cat }\n");
    let out = f.run(&[]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn runs_get_their_environment_and_folder() {
    let f = flow(
        "jobs:\n  show:\n    run: 'echo \"$FLOWRUN_JOB $FLOWRUN_RUN $GREETING $(pwd)\"; echo \"$FLOWRUN_SCHEDULED\"; echo \"$FLOWRUN_WORKFLOW\"'\n    env: { GREETING: hello, N: 3 }\n",
    );
    let (out, ev) = f.run_json();
    assert_eq!(out.status.code(), Some(0));
    let lines = output_lines(&ev, "show");
    let dir = f.dir.path().canonicalize().unwrap();
    assert_eq!(lines[0], format!("show 1 hello {}", dir.display()));
    assert!(
        lines[1].ends_with('Z') && lines[1].contains('T'),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], f.file.display().to_string());
}

#[test]
fn env_values_through_a_merge_key_are_the_text_where_they_are_defined() {
    let f = flow(
        "jobs:\n  base: { run: 'true', env: &base { V_VER: 1.10, V_ZIP: 01234 } }\n  show:\n    run: env | grep ^V_ | sort\n    env: { <<: *base, V_OWN: 0x1F }\n",
    );
    let (out, ev) = f.run_json();
    assert_eq!(out.status.code(), Some(0), "{ev:?}");
    assert_eq!(
        output_lines(&ev, "show"),
        ["V_OWN=0x1F", "V_VER=1.10", "V_ZIP=01234"]
    );
}

#[test]
fn one_stream_keeps_one_order_as_the_readme_says_exec_2_to_1_does() {
    let f = flow("jobs:\n  j:\n    run: 'exec 2>&1; for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done'\n");
    let (out, ev) = f.run_json();
    assert_eq!(out.status.code(), Some(0));
    let expected: Vec<String> = (1..=5)
        .flat_map(|i| [format!("out{i}"), format!("err{i}")])
        .collect();
    assert_eq!(output_lines(&ev, "j"), expected);
}

#[test]
fn env_values_are_the_text_the_file_writes() {
    // Both YAML readers: a plain file (the fast one) and one with an anchor (serde-saphyr).
    for anchor in ["", "      V_A: &a 007\n      V_B: *a\n"] {
        let f = flow(&format!(
            "jobs:\n  show:\n    run: env | grep ^V_ | sort\n    env:\n{anchor}      V_BIG: 123456789012345678901234567890\n      V_VER: 1.10\n      V_ZIP: 01234\n      V_HEX: 0x1F\n      V_BOOL: True\n      V_NULL: null\n      V_QUOTED: \"1.10\"\n      V_INT: 5 # five\n      V_INF: .inf\n      V_E: 1e400\n"
        ));
        let (out, ev) = f.run_json();
        assert_eq!(out.status.code(), Some(0));
        let mut lines = output_lines(&ev, "show");
        if !anchor.is_empty() {
            // Through an alias too, the text as written where it is defined.
            assert_eq!(lines.drain(..2).collect::<Vec<_>>(), ["V_A=007", "V_B=007"]);
        }
        assert_eq!(
            lines,
            [
                "V_BIG=123456789012345678901234567890",
                "V_BOOL=True",
                "V_E=1e400",
                "V_HEX=0x1F",
                "V_INF=.inf",
                "V_INT=5",
                "V_NULL=",
                "V_QUOTED=1.10",
                "V_VER=1.10",
                "V_ZIP=01234",
            ]
        );
    }
}

#[test]
fn exit_codes_for_failure_and_invalid_files() {
    let f = flow("jobs:\n  bad: { run: exit 4 }\n");
    let (out, ev) = f.run_json();
    assert_eq!(out.status.code(), Some(1));
    let exit = ev.iter().find(|e| e["event"] == "run.exit").unwrap();
    assert_eq!(exit["code"], 4);
    assert_eq!(exit["job"], "bad");
    assert_eq!(exit["run"], 1);
    assert!(exit["pid"].as_u64().unwrap() > 0);
    assert!(exit["ts"].as_str().unwrap().ends_with('Z'));
    let f = flow("jobs:\n  bad: { run: echo, tigger: start }\n");
    let out = f.run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown-key"));
}

#[test]
fn spawn_failures_are_failed_runs_not_crashes() {
    let f = flow(
        "jobs:
  missing: { run: [/nonexistent/program] }
  badcwd: { run: echo hi, cwd: /nonexistent/folder }
",
    );
    let (out, ev) = f.run_json();
    assert_eq!(out.status.code(), Some(1));
    for job in ["missing", "badcwd"] {
        let exit = ev
            .iter()
            .find(|e| e["event"] == "run.exit" && e["job"] == job)
            .unwrap();
        assert!(
            exit["reason"].as_str().unwrap().contains("cannot start"),
            "{exit}"
        );
        assert_eq!(summary(&ev)["jobs"][job]["failed"], 1);
    }
}

#[test]
fn an_overlong_message_fails_the_writer_and_keeps_the_rest() {
    let f = flow(
        "channels: { c: { max_message: 100 } }
jobs:
  w: { run: 'echo one; head -c 500 /dev/zero | tr \"\\\\0\" x; echo; echo three', stdout: c }
  r: { run: cat, stdin: c }
",
    );
    let (out, ev) = f.run_json();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(output_lines(&ev, "r"), ["one"]);
    let exit = ev
        .iter()
        .find(|e| e["event"] == "run.exit" && e["job"] == "w")
        .unwrap();
    assert!(
        exit["reason"].as_str().unwrap().contains("max_message"),
        "{exit}"
    );
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("workflows")
        .join(name)
}

#[test]
fn every_example_runs_and_the_finite_ones_end_by_themselves() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let source = flowrun::source::Source::read(&path).unwrap();
        let plan = flowrun::validate::validate(&source, chrono::Utc::now())
            .plan
            .unwrap();
        let finite = plan.ends_by_itself();
        // A finite one gets a generous deadline it must not reach; the others run for a moment.
        let deadline = if finite { "60s" } else { "1500ms" };
        let out = bin()
            .args(["--log-format", "json", "--for", deadline])
            .arg(&path)
            .output()
            .unwrap();
        let name = path.display();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ev = events(&out.stderr);
        let stopped_by_deadline = ev.iter().any(|e| e["event"] == "runner.stopping");
        if finite {
            assert!(!stopped_by_deadline, "{name} should end by itself");
        }
        seen += 1;
    }
    assert!(seen >= 6);
}

/// Start the runner with JSON events and wait (by reading its events, not by sleeping) for `ready`.
/// The caller signals and waits for the returned child.
fn start_until(
    yaml: &str,
    ready: impl Fn(&Value) -> bool,
) -> (
    Flow,
    std::process::Child,
    Vec<Value>,
    BufReader<std::process::ChildStderr>,
) {
    let f = flow(yaml);
    let (child, reader, seen) = common::start_until(&f.file, &[], ready);
    (f, child, seen, reader)
}

fn rest(mut reader: BufReader<std::process::ChildStderr>, seen: &mut Vec<Value>) {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut reader, &mut text).unwrap();
    seen.extend(
        text.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()),
    );
}

#[test]
fn sigterm_stops_every_run_and_prints_the_summary() {
    let (_f, mut child, mut seen, reader) = start_until(
        "jobs:\n  svc: { run: 'sleep 1000 & echo $!; wait' }\n  svc2: { run: [sleep, \"1000\"] }\n",
        |e| e["event"] == "output" && e["job"] == "svc",
    );
    let bg: u32 = seen.last().unwrap()["line"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let direct: Vec<u32> = seen
        .iter()
        .filter(|e| e["event"] == "run.start")
        .map(|e| e["pid"].as_u64().unwrap() as u32)
        .collect();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    rest(reader, &mut seen);
    assert_eq!(
        status.code(),
        Some(0),
        "runs stopped by the runner are not failures"
    );
    assert!(seen.iter().any(|e| e["event"] == "runner.stop"));
    for pid in direct.into_iter().chain([bg]) {
        assert!(!alive(pid), "pid {pid} outlived the runner");
    }
}

#[test]
fn sigkill_of_the_runner_takes_the_direct_children_with_it() {
    let (_f, mut child, seen, _reader) =
        start_until("jobs:\n  svc: { run: [sleep, \"1000\"] }\n", |e| {
            e["event"] == "run.start"
        });
    let pid = seen.last().unwrap()["pid"].as_u64().unwrap() as u32;
    assert!(alive(pid));
    child.kill().unwrap();
    child.wait().unwrap();
    // The parent-death signal is delivered by the kernel as the runner dies; the child is then reaped by init.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while alive(pid) && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(!alive(pid), "the run outlived a SIGKILLed runner");
}

#[test]
fn a_second_sigint_kills_at_once_and_exits_130() {
    let (_f, mut child, _seen, mut reader) = start_until(
        "jobs:\n  stubborn: { run: \"trap '' TERM; echo ready; while :; do sleep 0.1; done\", stop_grace: 1h }\n",
        |e| e["event"] == "output" && e["line"] == "ready",
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    // Signals of one kind coalesce; the second is sent once the first has been handled.
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0);
        if serde_json::from_str::<Value>(&line).unwrap()["event"] == "runner.stopping" {
            break;
        }
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
}

#[test]
fn writers_stopped_by_sigpipe_after_their_readers_ended_are_not_failures() {
    // `seq 10000000 | head -n 1`, through a queue and through a pipe: exit 0, like the shell.
    let f = flow(
        "channels: { q: {}, p: { kind: pipe } }
jobs:
  gen: { run: seq 10000000, stdout: q }
  first: { run: head -n 1, stdin: q }
  gen2: { run: [seq, \"10000000\"], stdout: p }
  first2: { run: head -n 1, stdin: p }
",
    );
    let (out, ev) = f.run_json();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(output_lines(&ev, "first"), ["1"]);
    assert_eq!(output_lines(&ev, "first2"), ["1"]);
    let (i, o, l) = channel(&ev, "q");
    assert_eq!(i, o + l);
    assert!(l > 0, "what no reader took is reported as left");
}

#[test]
fn runs_stopped_at_shutdown_are_counted_and_the_summary_keeps_the_file_order() {
    let f = flow(
        "jobs:
  zeta: { run: 'echo ready; exec sleep 100', stop_grace: 100ms }
  alpha: { run: 'true' }
",
    );
    let (mut child, mut reader, _) = common::start_until(&f.file, &[], |e| {
        e["event"] == "output" && e["line"] == "ready"
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let stop = rest
        .lines()
        .find(|l| l.contains("\"runner.stop\""))
        .unwrap();
    let ev: Value = serde_json::from_str(stop).unwrap();
    let zeta = &ev["summary"]["jobs"]["zeta"];
    assert_eq!(
        (
            zeta["runs"].as_u64(),
            zeta["stopped"].as_u64(),
            zeta["failed"].as_u64()
        ),
        (Some(1), Some(1), Some(0))
    );
    // The file's order, not the alphabet's.
    assert!(
        stop.find("\"zeta\"").unwrap() < stop.find("\"alpha\"").unwrap(),
        "{stop}"
    );
    let text = bin()
        .arg(&f.file)
        .args(["--for", "200ms"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&text.stderr);
    assert!(table.contains("stopped"), "{table}");
    assert!(
        table.find("zeta").unwrap() < table.find("alpha").unwrap(),
        "{table}"
    );
}

#[test]
fn a_failure_handler_waits_for_the_last_try() {
    // The first try fails, the retry succeeds: the job did not fail, so its failure handler never fires.
    let f = flow(
        "jobs:
  flaky: { run: '[ \"$FLOWRUN_TRY\" -gt 1 ]', retry: { attempts: 2, backoff: 1ms } }
  alert: { run: 'echo alert', trigger: { after: flaky, status: failure } }
  next: { run: 'echo next', trigger: { after: flaky } }
",
    );
    let (out, ev) = f.run_json();
    assert_eq!(out.status.code(), Some(0));
    assert!(output_lines(&ev, "alert").is_empty());
    assert_eq!(output_lines(&ev, "next"), ["next"]);
}

#[test]
fn retry_on_codes_retries_only_those_exit_codes() {
    // Exits 75 on its first try, then 0: retried. The other job exits 1: not in `on`, not retried.
    let f = flow(
        "jobs:\n  flaky:\n    run: test -e tried && exit 0; touch tried; exit 75\n    retry: { attempts: 3, backoff: 10ms, on: [75, 111] }\n  broken:\n    run: exit 1\n    retry: { attempts: 3, backoff: 10ms, on: 75 }\n",
    );
    let out = f.run(&["--log-format", "json"]);
    let ev = events(&out.stderr);
    let starts = |job: &str| {
        ev.iter()
            .filter(|e| e["event"] == "run.start" && e["job"] == job)
            .count()
    };
    assert_eq!(starts("flaky"), 2, "retried once, then succeeded");
    assert_eq!(starts("broken"), 1, "exit 1 is not in `on`: no retry");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn env_files_are_read_at_each_start_and_env_wins() {
    let f = flow(
        "jobs:\n  show:\n    run: echo \"$A $B $C\"\n    env_file: [one.env, two.env]\n    env: { C: from-env }\n  missing:\n    run: 'true'\n    env_file: nowhere.env\n",
    );
    std::fs::write(
        f.dir.path().join("one.env"),
        "# comment\nexport A=one\nB=\"quoted one\"\nC=one\n",
    )
    .unwrap();
    std::fs::write(f.dir.path().join("two.env"), "B='from two'\n").unwrap();
    let out = f.run(&["--log-format", "json"]);
    let ev = events(&out.stderr);
    assert_eq!(output_lines(&ev, "show"), ["one from two from-env"]);
    let exit = ev
        .iter()
        .find(|e| e["event"] == "run.exit" && e["job"] == "missing")
        .unwrap();
    let reason = exit["reason"].as_str().unwrap();
    assert!(
        reason.contains("env_file") && reason.contains("nowhere.env"),
        "{reason}"
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_restart_limit_ends_a_crashing_service_with_a_notice() {
    let f = flow(
        "jobs:\n  web:\n    run: exit 1\n    restart: { policy: on-failure, max: 2, window: 1m }\n",
    );
    let (out, ev) = f.run_json();
    assert_eq!(out.status.code(), Some(1));
    let restarts: Vec<&Value> = ev.iter().filter(|e| e["event"] == "run.restart").collect();
    assert_eq!(restarts.len(), 2, "{ev:#?}");
    assert_eq!(restarts[0]["count"], 1);
    assert_eq!(restarts[1]["count"], 2);
    assert!(restarts[0]["delay_ms"].as_u64().is_some());
    assert_eq!(
        restarts[1]["reason"],
        format!(
            "web#2 exited 1; restarting in {}ms (2 of 2 within 1m)",
            restarts[1]["delay_ms"]
        )
    );
    let starts = ev
        .iter()
        .filter(|e| e["event"] == "run.start" && e["job"] == "web")
        .count();
    assert_eq!(starts, 3, "the first run and two restarts");
    let last = ev.iter().rev().find(|e| e["event"] == "notice").unwrap();
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .contains("reached its restart limit (2 within 1m): it has failed for good"),
        "{last}"
    );
    // People see the same lines.
    let text = f.run(&[]);
    let err = String::from_utf8_lossy(&text.stderr);
    assert!(
        err.contains("web#1 exited 1; restarting in 100ms (1 of 2 within 1m)"),
        "{err}"
    );
    // One line for one event: the exit of a run that is restarted is said with its restart.
    assert!(!err.contains("web#1 exited 1\n"), "{err}");
    assert!(
        err.contains("web#3 exited 1\n"),
        "the last, not restarted: {err}"
    );
}

#[test]
fn after_gives_the_runs_that_completed_the_join_in_flowrun_upstream() {
    let f = flow(
        "jobs:\n  extract:\n    run: 'true'\n  backup:\n    run: echo disk full >&2; exit 3\n  alert:\n    run: printf '%s\\n' \"$FLOWRUN_UPSTREAM\"\n    trigger: { after: [extract, backup], status: any }\n",
    );
    let state = f.dir.path().join("state");
    let out = f.run(&["--log-format", "json", "--state", state.to_str().unwrap()]);
    let ev = events(&out.stderr);
    let lines = output_lines(&ev, "alert");
    let upstream: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(upstream[0]["job"], "extract");
    assert_eq!(upstream[0]["status"], "succeeded");
    assert_eq!(upstream[1]["job"], "backup");
    assert_eq!(upstream[1]["run"], 1);
    assert_eq!(upstream[1]["status"], "failed");
    assert_eq!(upstream[1]["code"], 3);
    assert!(upstream[1]["signal"].is_null());
    let log = upstream[1]["log"].as_str().unwrap();
    assert!(
        std::fs::read_to_string(log).unwrap().contains("disk full"),
        "{log}"
    );
}

#[test]
fn each_batches_larger_than_a_pipe_reach_their_runs_whole() {
    // 3,000 lines of 100 bytes: a batch of more than 655 of them is more than a pipe holds, so part of it is
    // written at the run's start and the rest by a task as the run reads. Whatever the batches were, every line
    // arrives once, whole.
    let f = flow(
        "channels: { rows: { kind: queue, capacity: 5000 } }
jobs:
  gen: { run: \"seq 3000 | awk '{ printf \\\"%099d\\\\n\\\", $1 }'\", stdout: rows }
  work:
    run: awk 'length($0) == 99 { n++; s += $1 } END { printf \"%d %.0f\\n\", n, s }'
    trigger: { each: rows, batch: 3000 }
",
    );
    let (out, ev) = f.run_json();
    assert_eq!(out.status.code(), Some(0));
    let (mut n, mut sum) = (0u64, 0u64);
    for line in output_lines(&ev, "work") {
        let mut parts = line.split(' ').map(|p| p.parse::<u64>().unwrap());
        n += parts.next().unwrap();
        sum += parts.next().unwrap();
    }
    assert_eq!((n, sum), (3000, 3000 * 3001 / 2));
    assert_eq!(channel(&ev, "rows"), (3000, 3000, 0));
}

#[test]
fn only_keeps_the_after_order_between_the_selected_jobs() {
    // `--only backup alert`: the alert waits for the backup it reports on, and is told about it.
    let f = flow(
        "jobs:
  backup: { run: 'echo backing up; exit 4', trigger: { cron: \"0 3 * * *\" } }
  alert:
    run: 'echo \"alert: $FLOWRUN_UPSTREAM\"'
    trigger: { after: backup, status: failure }
  other: { run: echo other }
",
    );
    let out = common::cmd()
        .arg(&f.file)
        .args([
            "--log-format",
            "json",
            "--state",
            "none",
            "--only",
            "backup",
            "alert",
        ])
        .output()
        .unwrap();
    let ev = events(&out.stderr);
    let backup_end = ev
        .iter()
        .position(|e| e["event"] == "run.exit" && e["job"] == "backup");
    let alert_start = ev
        .iter()
        .position(|e| e["event"] == "run.start" && e["job"] == "alert");
    assert!(backup_end.unwrap() < alert_start.unwrap(), "{ev:#?}");
    let said = output_lines(&ev, "alert");
    assert!(said[0].contains("\"job\":\"backup\""), "{said:?}");
    assert!(output_lines(&ev, "other").is_empty());
}

#[test]
fn on_failure_and_any_joins_alert_on_the_run_that_failed() {
    let f = flow(
        "on_failure: mail
jobs:
  backup: { run: 'exit 3' }
  report: { run: 'true' }
  mail: { run: 'echo \"mail: $FLOWRUN_UPSTREAM\"' }
  page:
    run: 'echo \"page: $FLOWRUN_UPSTREAM\"'
    trigger: { after: { any: [backup, report], status: failure } }
",
    );
    let (out, ev) = f.run_json();
    assert_eq!(out.status.code(), Some(1), "backup failed for good");
    let mail = output_lines(&ev, "mail");
    assert_eq!(mail.len(), 1, "once, for the one failed run: {mail:?}");
    assert!(
        mail[0].contains("\"job\":\"backup\"") && mail[0].contains("\"code\":3"),
        "{mail:?}"
    );
    let page = output_lines(&ev, "page");
    assert_eq!(page.len(), 1, "{page:?}");
    assert!(
        page[0].contains("\"job\":\"backup\"") && !page[0].contains("report"),
        "{page:?}"
    );
}

#[test]
fn limits_and_user_are_applied_in_the_child_before_it_starts() {
    // Without cgroups, as `memory` is then the address space (with a cgroup it is the cgroup's: see below).
    let f = flow(
        "jobs:
  limited:
    run: \"grep -E 'Max (open files|processes|address space)' /proc/self/limits | tr -s ' ' | cut -d' ' -f1-5; nice\"
    limits: { memory: 512MiB, nofile: 256, nproc: 500, nice: 5 }
  as-nobody:
    run: id -un
    user: nobody
",
    );
    let out = bin()
        .arg(&f.file)
        .args(["--log-format", "json"])
        .env("FLOWRUN_NO_CGROUP", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let ev = events(&out.stderr);
    let notice = ev.iter().find(|e| e["event"] == "notice").unwrap();
    assert_eq!(
        notice["reason"],
        "`limits: { memory }` is held as the address space (RLIMIT_AS): no cgroup for runs (FLOWRUN_NO_CGROUP is set)"
    );
    let lines = output_lines(&ev, "limited");
    assert!(
        lines.contains(&"Max processes 500 500 processes"),
        "{lines:?}"
    );
    assert!(lines.contains(&"Max open files 256 256"), "{lines:?}");
    assert!(
        lines.contains(&"Max address space 536870912 536870912"),
        "{lines:?}"
    );
    assert_eq!(lines.last(), Some(&"5"), "niceness: {lines:?}");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(output_lines(&ev, "as-nobody"), ["nobody"]);
        assert_eq!(out.status.code(), Some(0));
    } else {
        let exit = ev
            .iter()
            .find(|e| e["event"] == "run.exit" && e["job"] == "as-nobody")
            .unwrap();
        let reason = exit["reason"].as_str().unwrap();
        assert!(
            reason.contains("needs a runner started as root"),
            "{reason}"
        );
    }
}

/// A job that prints its own cgroup's CPU quota (v2's `cpu.max`, v1's `cpu.cfs_quota_us`) and memory limit.
const OWN_CGROUP: &str = r#"
      if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        d=/sys/fs/cgroup$(grep '^0::' /proc/self/cgroup | cut -d: -f3); cat $d/cpu.max $d/memory.max; echo $d
      else
        c=/sys/fs/cgroup/cpu$(grep -E '^[0-9]+:([^:]*,)?cpu(,[^:]*)?:' /proc/self/cgroup | cut -d: -f3)
        m=/sys/fs/cgroup/memory$(grep -E '^[0-9]+:memory:' /proc/self/cgroup | cut -d: -f3)
        cat $c/cpu.cfs_quota_us $m/memory.limit_in_bytes; echo $m
      fi"#;

#[test]
fn memory_and_cpu_limits_are_a_cgroup_of_the_run_and_a_run_killed_for_memory_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("daemon");
    let f = flow(&format!(
        "jobs:
  hog:
    run: [python3, -c, \"x = bytearray(256 * 1024 * 1024); print('not held')\"]
    limits: {{ memory: 32MiB }}
  quota:
    run: |{OWN_CGROUP}
    limits: {{ memory: 64MiB, cpu: 50% }}
  escapes:
    # A daemon that leaves the group and drops the run's marks: only the run's cgroup still knows it.
    # It waits until the daemon has left its group: the group's stop must not be what catches it.
    run: env -i setsid sh -c 'echo $$ > {pidfile}; exec sleep 300' >/dev/null 2>&1 & while [ ! -s {pidfile} ]; do sleep 0.01; done
    limits: {{ cpu: 200% }}
  check:
    run: s=$(cut -d' ' -f3 /proc/$(cat {pidfile})/stat 2>/dev/null); [ -z \"$s\" ] || [ \"$s\" = Z ] && echo gone
    trigger: {{ after: escapes }}
",
        pidfile = pidfile.display()
    ));
    let (out, ev) = f.run_json();
    if let Some(notice) = ev
        .iter()
        .find(|e| e["event"] == "notice" && e["reason"].as_str().unwrap().contains("no cgroup"))
    {
        // Not root, or no delegated controller: the fallback is tested above.
        eprintln!("skipped: {}", notice["reason"]);
        return;
    }
    let exit = |job: &str| {
        ev.iter()
            .find(|e| e["event"] == "run.exit" && e["job"] == job)
            .unwrap_or_else(|| panic!("no exit of {job}: {}", String::from_utf8_lossy(&out.stderr)))
            .clone()
    };
    let hog = exit("hog");
    assert_eq!(hog["signal"], "SIGKILL", "{hog}");
    assert_eq!(hog["reason"], "killed: memory limit (32MiB)", "{hog}");
    assert!(output_lines(&ev, "hog").is_empty());
    let quota = output_lines(&ev, "quota");
    assert!(
        quota[0] == "50000 100000" || quota[0] == "50000",
        "the cpu quota: {quota:?}"
    );
    assert_eq!(quota[1], (64u64 << 20).to_string(), "{quota:?}");
    assert_eq!(exit("quota")["code"], 0);
    // The run's cgroup is gone with it, and the runner's folder of cgroups with the runner.
    assert!(!Path::new(quota[2]).exists(), "{quota:?}");
    let runner_folder = Path::new(quota[2]).parent().unwrap();
    assert!(
        runner_folder
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("flowrun-"),
        "{quota:?}"
    );
    assert!(!runner_folder.exists(), "{}", runner_folder.display());
    assert_eq!(output_lines(&ev, "check"), ["gone"]);
    assert_eq!(out.status.code(), Some(1), "hog failed");
}

#[test]
fn a_limit_that_cannot_be_set_fails_the_run_and_names_it() {
    let f = flow("jobs:\n  l:\n    run: 'true'\n    limits: { nofile: 1073741824 }\n");
    let (out, ev) = f.run_json();
    assert_eq!(out.status.code(), Some(1));
    let exit = ev.iter().find(|e| e["event"] == "run.exit").unwrap();
    let reason = exit["reason"].as_str().unwrap();
    assert!(
        reason.contains("`limits: { nofile: 1073741824 }`"),
        "{reason}"
    );
}
