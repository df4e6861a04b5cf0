//! Durable queues (SPEC §8) through the binary: what a stop leaves is kept and delivered first at the next start,
//! in order; a SIGKILL of the runner loses nothing committed; a durable queue needs a state.

mod common;

use common::{channel, cmd, output_lines, run_json, start_until, summary};
use std::collections::BTreeMap;
use std::path::Path;

/// The file with a producer of `n` messages into durable `work` and an `each` consumer; either may be disabled.
fn workflow(dir: &Path, n: u64, produce: bool, consume: bool, out: &Path) -> std::path::PathBuf {
    workflow_slow(dir, n, (produce, consume), out, "")
}

/// `workflow`, each consumer run ending with `then` (a pause, so a test reading the events keeps up).
fn workflow_slow(
    dir: &Path,
    n: u64,
    (produce, consume): (bool, bool),
    out: &Path,
    then: &str,
) -> std::path::PathBuf {
    let file = dir.join(format!("flow-{produce}-{consume}.yaml"));
    std::fs::write(
        &file,
        format!(
            "channels:
  work: {{ durable: true }}
jobs:
  produce: {{ run: seq {n}, stdout: work, enabled: {produce} }}
  consume:
    # Each run appends its batch in one write, tagged with its first number and its delivery.
    run: b=$(sed \"s/^/$FLOWRUN_MESSAGE_SEQ $FLOWRUN_DELIVERY /\") && printf '%s\\n' \"$b\" >> {out}{then}
    trigger: {{ each: work, batch: 100 }}
    max_instances: 4
    enabled: {consume}
",
            out = out.display()
        ),
    )
    .unwrap();
    file
}

#[test]
fn a_clean_stop_keeps_what_is_left_and_the_next_start_delivers_it_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out"));
    let state_arg = state.to_str().unwrap();
    let first = workflow(dir.path(), 1000, true, false, &out);
    let (code, ev) = run_json(&first, &["--state", state_arg]);
    assert_eq!(code, Some(0), "{ev:?}");
    assert_eq!(channel(&ev, "work"), (1000, 0, 1000));
    assert_eq!(summary(&ev)["channels"]["work"]["kept"], true);
    // The text summary says where they went.
    let text = cmd()
        .arg(&first)
        .args(["--state", state_arg, "--progress", "never"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&text.stderr);
    assert!(
        stderr.contains("2000 (kept for the next start)"),
        "{stderr}"
    );

    let second = workflow(dir.path(), 1000, false, true, &out);
    let (code, ev) = run_json(&second, &["--state", state_arg]);
    assert_eq!(code, Some(0), "{ev:?}");
    let notice = ev.iter().find(|e| e["event"] == "notice").unwrap();
    assert_eq!(
        notice["reason"],
        "channel `work`: 2000 message(s) kept from before wait first"
    );
    assert_eq!(channel(&ev, "work"), (2000, 2000, 0));
    let lines = std::fs::read_to_string(&out).unwrap();
    let got: Vec<(u64, u64, u64)> = lines
        .lines()
        .map(|l| {
            let mut f = l.split(' ').map(|x| x.parse::<u64>().unwrap());
            (f.next().unwrap(), f.next().unwrap(), f.next().unwrap())
        })
        .collect();
    // Every message once, numbered in the order they came (two runs of `seq 1000`), each first delivery.
    let mut sorted = got.clone();
    sorted.sort();
    let expected: Vec<(u64, u64, u64)> = (0..2000)
        .map(|i| (i / 100 * 100 + 1, 1, i % 1000 + 1))
        .collect();
    assert_eq!(sorted, expected);
    // A third start: nothing is left, nothing comes again.
    let (code, ev) = run_json(&second, &["--state", state_arg]);
    assert_eq!(code, Some(0));
    assert_eq!(channel(&ev, "work"), (0, 0, 0));
    assert!(ev.iter().all(|e| e["event"] != "notice"), "{ev:?}");
}

#[test]
fn a_sigkilled_runner_loses_nothing_and_repeats_only_the_runs_alive_at_the_kill() {
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out"));
    let state_arg = state.to_str().unwrap();
    let n = 100_000;
    let (code, _) = run_json(
        &workflow(dir.path(), n, true, false, &out),
        &["--state", state_arg],
    );
    assert_eq!(code, Some(0));
    let consume = workflow_slow(dir.path(), n, (false, true), &out, "; sleep 0.02");
    let mut kills = 0;
    for round in 1..=20u64 {
        // Killed once this start has seen 5 to 25 runs end: in the middle of the flow, never at a sleep's whim.
        let seen = std::cell::Cell::new(0);
        let (mut child, _reader, _) = start_until(&consume, &["--state", state_arg], |e| {
            if e["event"] == "run.exit" && e["job"] == "consume" {
                seen.set(seen.get() + 1);
            }
            seen.get() >= 5 + round
        });
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    let (code, ev) = run_json(&consume, &["--state", state_arg]);
    assert_eq!(code, Some(0), "{ev:?}");
    assert_eq!(channel(&ev, "work").2, 0);
    let text = std::fs::read_to_string(&out).unwrap();
    let mut times: BTreeMap<u64, u32> = BTreeMap::new();
    for line in text.lines() {
        let message: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        *times.entry(message).or_default() += 1;
    }
    assert_eq!(times.len() as u64, n, "every message done at least once");
    assert_eq!(*times.keys().next().unwrap(), 1);
    assert_eq!(*times.keys().next_back().unwrap(), n);
    // Again only what runs alive at a kill had: at most 4 batches of 100 at each.
    let again: u32 = times.values().map(|t| t - 1).sum();
    assert!(again <= kills * 4 * 100, "{again} repeated");
}

#[test]
fn a_durable_queue_needs_a_state_and_only_a_queue_can_be_durable() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let file = workflow(dir.path(), 10, true, true, &out);
    let run = cmd().arg(&file).args(["--state", "none"]).output().unwrap();
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("channel `work` is durable: it keeps its messages in the state, and this runner has none"),
        "{stderr}"
    );
    let pipe = dir.path().join("pipe.yaml");
    std::fs::write(
        &pipe,
        "channels:\n  p: { kind: pipe, durable: true }\njobs:\n  a: { run: seq 3, stdout: p }\n  b: { run: cat, stdin: p }\n",
    )
    .unwrap();
    let diagnostics = common::diagnostics(&pipe);
    assert_eq!(
        diagnostics,
        [(
            "invalid-value".to_string(),
            2,
            29,
            "channel `p` cannot be durable: it is not a queue".to_string()
        )]
    );
}

#[test]
fn a_reload_makes_an_idle_channel_durable_and_refuses_one_in_use() {
    let (dir, file) = common::flow(
        "channels:\n  q: {}\njobs:\n  a: { run: 'sleep 30', stdout: q }\n  b: { run: cat, stdin: q }\n",
    );
    let state = dir.path().join("state");
    let state_arg = state.to_str().unwrap();
    let (mut child, reader, seen) = start_until(&file, &["--state", state_arg], |e| {
        e["event"] == "run.start" && e["job"] == "b"
    });
    let reload = |text: &str| {
        std::fs::write(&file, text).unwrap();
        cmd()
            .args(["reload"])
            .arg(&file)
            .args(["--state", state_arg])
            .output()
            .unwrap()
    };
    let busy = reload(
        "channels:\n  q: { durable: true }\njobs:\n  a: { run: 'sleep 30', stdout: q }\n  b: { run: cat, stdin: q }\n",
    );
    assert_eq!(busy.status.code(), Some(1));
    let said = String::from_utf8_lossy(&busy.stderr);
    assert!(
        said.contains("channel `q` becomes durable while runs use it or messages wait in it"),
        "{said}"
    );
    // A new channel, idle: durable at once. Its writer fires by hand; its reader is off, so what it writes is
    // kept for the next start.
    let idle = "channels:\n  q: {}\n  kept: { durable: true }\njobs:\n  a: { run: 'sleep 30', stdout: q }\n  b: { run: cat, stdin: q }\n  w: { run: seq 5, stdout: kept, trigger: { cron: '0 0 1 1 *' } }\n  r: { run: cat, stdin: kept, enabled: false }\n";
    let applied = reload(idle);
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let fired = cmd()
        .args(["trigger"])
        .arg(&file)
        .args(["w", "--wait", "--state", state_arg])
        .output()
        .unwrap();
    assert!(
        fired.status.success(),
        "{}",
        String::from_utf8_lossy(&fired.stderr)
    );
    let stop = cmd()
        .args(["stop"])
        .arg(&file)
        .args(["--state", state_arg])
        .output()
        .unwrap();
    assert!(stop.status.success());
    child.wait().unwrap();
    let ev = common::rest_of(reader, seen);
    assert!(output_lines(&ev, "b").is_empty());
    assert_eq!(channel(&ev, "kept"), (5, 0, 5));
    // The next start reads them.
    std::fs::write(
        &file,
        "channels:\n  kept: { durable: true }\njobs:\n  w: { run: seq 5, stdout: kept, enabled: false }\n  r: { run: cat, stdin: kept }\n",
    )
    .unwrap();
    let (code, ev) = run_json(&file, &["--state", state_arg]);
    assert_eq!(code, Some(0), "{ev:?}");
    assert_eq!(output_lines(&ev, "r"), ["1", "2", "3", "4", "5"]);
}

#[test]
fn a_stdin_reader_takes_what_it_read_and_the_rest_waits_for_the_next_start_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state_arg = state.to_str().unwrap();
    let file = |produce: bool, read: &str| {
        let path = dir.path().join(format!("stdin-{produce}.yaml"));
        std::fs::write(
            &path,
            format!(
                "channels:\n  work: {{ durable: true }}\njobs:\n  produce: {{ run: seq 1000, stdout: work, enabled: {produce} }}\n  read: {{ run: '{read}', stdin: work }}\n"
            ),
        )
        .unwrap();
        path
    };
    // The shell's `read` takes a pipe byte by byte: exactly 300 lines leave the pipe.
    let first = file(true, "for i in $(seq 300); do read l; echo $l; done");
    let (code, ev) = run_json(&first, &["--state", state_arg]);
    assert_eq!(code, Some(0), "{ev:?}");
    let read: Vec<u64> = output_lines(&ev, "read")
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(read, (1..=300).collect::<Vec<_>>());
    assert_eq!(channel(&ev, "work").2, 700);
    let second = file(false, "cat");
    let (code, ev) = run_json(&second, &["--state", state_arg]);
    assert_eq!(code, Some(0), "{ev:?}");
    let rest: Vec<u64> = output_lines(&ev, "read")
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(rest, (301..=1000).collect::<Vec<_>>());
    let (code, ev) = run_json(&second, &["--state", state_arg]);
    assert_eq!(code, Some(0));
    assert!(output_lines(&ev, "read").is_empty(), "all done: {ev:?}");
}

#[test]
fn status_and_metrics_show_what_a_durable_queue_keeps() {
    let (dir, file) = common::flow(
        "channels:\n  work: { durable: true }\njobs:\n  produce: { run: seq 50, stdout: work }\n  consume: { run: 'sleep 30', trigger: { each: work, batch: 10 } }\n",
    );
    let state = dir.path().join("state");
    let state_arg = state.to_str().unwrap();
    // Once the channel closed, all 50 are committed: one batch is with a run, 40 wait.
    let (mut child, _reader, _) = start_until(&file, &["--state", state_arg], |e| {
        e["event"] == "channel.closed"
    });
    let file_arg = file.to_str().unwrap();
    let status = common::on_state(&["status", file_arg, "--format", "json"], &state);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let work = &json["channels"][0];
    assert_eq!(work["channel"], "work");
    assert_eq!(work["store"]["depth"], 50, "{work}");
    assert!(work["store"]["oldest"].is_string(), "{work}");
    assert!(
        work["store"]["bytes_on_disk"].as_u64().unwrap() > 50 * 3,
        "{work}"
    );
    let text = common::on_state(&["status", file_arg], &state);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("STORED") && text.contains("ON DISK"),
        "{text}"
    );
    let metrics = {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(state.join("control.sock")).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    assert!(
        metrics.contains("flowrun_channel_stored{channel=\"work\"} 50"),
        "{metrics}"
    );
    assert!(metrics.contains("flowrun_channel_store_bytes{channel=\"work\"}"));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_sigkilled_runner_loses_nothing_a_stdin_reader_took_and_keeps_its_order() {
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out"));
    let state_arg = state.to_str().unwrap();
    let file = |produce: bool| {
        let path = dir.path().join(format!("reader-{produce}.yaml"));
        std::fs::write(
            &path,
            format!(
                "channels:\n  work: {{ durable: true }}\njobs:\n  produce: {{ run: seq 100000, stdout: work, enabled: {produce} }}\n  read:\n    run: while read l; do echo $l >> {out}; echo $l; done\n    stdin: work\n    enabled: {}\n",
                !produce,
                out = out.display()
            ),
        )
        .unwrap();
        path
    };
    let (code, _) = run_json(&file(true), &["--state", state_arg]);
    assert_eq!(code, Some(0));
    let read = file(false);
    for round in 1..=10u64 {
        // Killed once this start has printed 1,000 more lines: in the middle of the flow.
        let seen = std::cell::Cell::new(0);
        let (mut child, _reader, _) = start_until(&read, &["--state", state_arg], |e| {
            if e["event"] == "output" {
                seen.set(seen.get() + 1);
            }
            seen.get() >= 1000 * round
        });
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let (code, ev) = run_json(&read, &["--state", state_arg]);
    assert_eq!(code, Some(0), "{ev:?}");
    let lines: Vec<u64> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<u64> = lines.iter().copied().collect();
    assert_eq!(distinct.len(), 100_000, "every message read at least once");
    assert_eq!(distinct.iter().next_back(), Some(&100_000));
    // In order, but for redeliveries: a start begins again at or below where the last one got to.
    let mut restarts = 0;
    for pair in lines.windows(2) {
        if pair[1] != pair[0] + 1 {
            assert!(pair[1] <= pair[0], "a gap: {} after {}", pair[1], pair[0]);
            restarts += 1;
        }
    }
    assert!(
        (1..=10).contains(&restarts),
        "{restarts} breaks in the order for 10 kills mid-flow"
    );
}

/// A 1 MiB tmpfs for a full disk (root only); unmounted when dropped.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount() -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1M", "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn a_store_that_cannot_commit_holds_its_writers_but_not_the_stop() {
    let Some(disk) = SmallDisk::mount() else {
        eprintln!("skipped: a tmpfs cannot be mounted here (not root)");
        return;
    };
    let (_dir, file) = common::flow(
        "channels:\n  work: { durable: true }\njobs:\n  produce: { run: seq 1000000, stdout: work }\n  consume: { run: 'sleep 1; wc -l', trigger: { each: work, batch: 100000 } }\n",
    );
    let state = disk.0.path().join("state");
    let (mut child, reader, seen) =
        start_until(&file, &["--state", state.to_str().unwrap()], |e| {
            e["event"] == "notice" && e["reason"].as_str().unwrap_or("").contains("cannot commit")
        });
    // SAFETY: a signal to the runner the test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    // Bounded: a runner stuck on its store would otherwise hang the suite.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the runner did not stop within 20 s of SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "a clean stop");
    let ev = common::rest_of(reader, seen);
    let lost = ev
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .find(|r| r.contains("could not be committed before the stop and are lost"));
    assert!(lost.is_some(), "{ev:?}");
    assert_eq!(
        summary(&ev)["channels"]["work"].get("kept"),
        None,
        "not all of left is kept"
    );
}

#[test]
fn a_stdin_reader_of_a_kept_backlog_makes_progress_across_kills() {
    let dir = tempfile::tempdir().unwrap();
    let (state, out) = (dir.path().join("state"), dir.path().join("out"));
    let state_arg = state.to_str().unwrap();
    let file = |produce: bool, read: &str| {
        let path = dir.path().join(format!("backlog-{produce}.yaml"));
        std::fs::write(
            &path,
            format!(
                "channels:\n  work: {{ durable: true }}\njobs:\n  produce: {{ run: seq 300000, stdout: work, enabled: {produce} }}\n  read: {{ run: '{read}', stdin: work, enabled: {} }}\n",
                !produce
            ),
        )
        .unwrap();
        path
    };
    let (code, _) = run_json(&file(true, "cat"), &["--state", state_arg]);
    assert_eq!(code, Some(0));
    // The reader takes 100,000 of the kept 300,000, then stops reading; the runner is killed then.
    let slow = file(
        false,
        &format!(
            "i=0; while read -r l; do i=$((i+1)); echo $l >> {}; [ $i = 100000 ] && exec sleep 600; done",
            out.display()
        ),
    );
    let mut child = cmd()
        .arg(&slow)
        .args(["--state", state_arg, "--progress", "never"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_to_string(&out).map_or(0, |t| t.lines().count()) < 100_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the reader did not get to 100,000"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (code, ev) = run_json(&file(false, "head -1"), &["--state", state_arg]);
    assert_eq!(code, Some(0), "{ev:?}");
    let first: u64 = output_lines(&ev, "read")[0].parse().unwrap();
    // What left the pipe long before the kill is done: at most a pipe's worth (1 MiB, ~150,000 of these short
    // lines) and a piece come again, not the whole backlog from message 1.
    assert!(first > 1, "the backlog began again at {first}");
    assert!(first <= 100_001, "{first}");
}

#[test]
fn a_file_that_only_reads_a_durable_queue_drains_it_and_ends() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state_arg = state.to_str().unwrap();
    let fill = dir.path().join("fill.yaml");
    std::fs::write(
        &fill,
        "channels:\n  work: { durable: true }\njobs:\n  produce: { run: seq 3, stdout: work }\n  read: { run: cat, stdin: work, enabled: false }\n",
    )
    .unwrap();
    assert_eq!(run_json(&fill, &["--state", state_arg]).0, Some(0));
    // No writer at all (validate warns `no-writer`): the channel is closed at the start, its reader gets what it
    // kept, then its end.
    let drain = dir.path().join("drain.yaml");
    std::fs::write(
        &drain,
        "channels:\n  work: { durable: true }\njobs:\n  read: { run: cat, stdin: work }\n",
    )
    .unwrap();
    let (code, ev) = run_json(&drain, &["--state", state_arg]);
    assert_eq!(code, Some(0), "{ev:?}");
    assert_eq!(output_lines(&ev, "read"), ["1", "2", "3"]);
}
