//! Promises of the README kept under stress: take-back under many readers stopping at random bytes, messages that
//! come back after the channel closed, daemons that leave their run's group, background printers, output floods
//! next to timers, failure handlers that are not needed, and the smaller edges (no grace, early signals, control
//! bytes in notices, the lateness of a coalesced run).

mod common;

use common::{alive, channel, events, flow, output_lines, rest_of, run_json, start_until, summary};
use serde_json::Value;
use std::collections::HashMap;
use std::io::{BufRead, Read};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Wait for a child with a deadline (a guard against a hang, not a synchronisation): kill it and fail past it.
fn wait_or_fail(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: the runner did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rfc3339_in(d: Duration) -> String {
    (chrono::Utc::now() + chrono::Duration::from_std(d).unwrap())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Complete lines (those ending with a newline) of every file in `dir`, counted by value.
fn complete_lines(dir: &Path) -> HashMap<u64, u32> {
    let mut seen = HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let complete = match data.iter().rposition(|&b| b == b'\n') {
            Some(i) => &data[..=i],
            None => continue,
        };
        for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let value: u64 = std::str::from_utf8(line).unwrap().parse().unwrap();
            *seen.entry(value).or_default() += 1;
        }
    }
    seen
}

/// Readers that stop at random byte counts, fired every 25 ms for `seconds`, then one reader that takes the rest.
/// Every value must be read exactly once as a complete line; a line a reader read only part of comes again whole.
fn take_back_stress(messages: u64, readers: usize, seconds: u64) {
    // Each reader run reads up to 256 KiB (4 x a random u16) and stops: many take-backs of full pipes.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let end = rfc3339_in(Duration::from_secs(seconds));
    let rest_at = rfc3339_in(Duration::from_millis(seconds * 1000 + 500));
    let mut yaml = format!(
        "channels: {{ q: {{ capacity: 1000 }} }}
jobs:
  w: {{ run: seq {messages}, stdout: q }}
  rest: {{ run: 'cat > out/rest', stdin: q, trigger: {{ at: \"{rest_at}\" }}, misfire_grace: 1h }}
"
    );
    for r in 0..readers {
        // `head -c N` reads exactly N bytes, so out/ holds exactly what each reader consumed.
        yaml.push_str(&format!(
            "  r{r}: {{ run: 'n=$(od -An -N2 -tu2 /dev/urandom); head -c $((n * 4)) > out/$FLOWRUN_JOB.$FLOWRUN_RUN', \
             stdin: q, trigger: {{ interval: 25ms, end: \"{end}\" }} }}\n"
        ));
    }
    let file = dir.path().join("flow.yaml");
    std::fs::write(&file, yaml).unwrap();
    let (code, ev) = run_json(&file, &[]);
    let takebacks = ev
        .iter()
        .filter(|e| e["event"] == "channel.takeback")
        .count();
    let seen = complete_lines(&dir.path().join("out"));
    let doubled: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).take(5).collect();
    assert!(doubled.is_empty(), "read twice: {doubled:?}");
    let missing: Vec<u64> = (1..=messages)
        .filter(|v| !seen.contains_key(v))
        .take(5)
        .collect();
    assert!(missing.is_empty(), "never read: {missing:?}");
    assert_eq!(seen.len() as u64, messages);
    assert_eq!(channel(&ev, "q"), (messages, messages, 0));
    assert!(
        takebacks > 20,
        "only {takebacks} take-backs: the test did not stress anything"
    );
    assert_eq!(code, Some(0));
}

#[test]
fn take_back_under_stress_delivers_every_message_exactly_once() {
    take_back_stress(4_000_000, 3, 4);
}

#[test]
#[ignore = "long: 20 M messages, 3 readers (cargo test -- --ignored)"]
fn take_back_under_long_stress_delivers_every_message_exactly_once() {
    take_back_stress(20_000_000, 3, 8);
}

#[test]
fn messages_taken_back_after_the_channel_closed_reach_the_other_reader() {
    // r1 reads one line and sits on the rest; r2 must not get EOF while r1 holds them.
    let (_d, file) = flow(
        "channels: { q: {} }
jobs:
  w: { run: seq 10, stdout: q }
  r1: { run: 'read -r l; echo \"got $l\"; sleep 0.5', stdin: q }
  r2: { run: 'sleep 0.1; wc -l', stdin: q }
",
    );
    let (code, ev) = run_json(&file, &[]);
    let got: u64 = output_lines(&ev, "r1")
        .iter()
        .filter(|l| l.len() > 4)
        .count() as u64;
    let counted: u64 = output_lines(&ev, "r2")[0].trim().parse().unwrap();
    assert_eq!(got + counted, 10, "{:?}", output_lines(&ev, "r1"));
    assert_eq!(channel(&ev, "q"), (10, 10, 0));
    assert_eq!(code, Some(0));
}

#[test]
fn messages_taken_back_after_the_channel_closed_reach_an_each_job() {
    let (_d, file) = flow(
        "channels: { q: {} }
jobs:
  w: { run: seq 10, stdout: q }
  r1: { run: 'read -r l; echo \"$l\"; sleep 0.5', stdin: q }
  e: { run: cat, trigger: { each: q } }
",
    );
    let (code, ev) = run_json(&file, &[]);
    let mut values: Vec<u64> = output_lines(&ev, "r1")
        .iter()
        .chain(output_lines(&ev, "e").iter())
        .map(|l| l.parse().unwrap())
        .collect();
    values.sort();
    assert_eq!(values, (1..=10).collect::<Vec<_>>());
    assert_eq!(channel(&ev, "q"), (10, 10, 0));
    assert_eq!(code, Some(0));
}

#[test]
fn a_take_back_wakes_an_idle_each_job_while_the_channel_is_open() {
    // The writer keeps the channel open for a while after its 10 lines; the taken-back messages must reach `e`
    // before that, not when the channel closes.
    let (_d, file) = flow(
        "channels: { q: {} }
jobs:
  w: { run: 'seq 10; exec sleep 3', stdout: q }
  r1: { run: 'read -r l; echo \"$l\"', stdin: q }
  e: { run: cat, trigger: { each: q } }
",
    );
    let (code, ev) = run_json(&file, &[]);
    let writer_exit = ev
        .iter()
        .position(|e| e["event"] == "run.exit" && e["job"] == "w")
        .unwrap();
    let mut values: Vec<u64> = ev[..writer_exit]
        .iter()
        .filter(|e| e["event"] == "output")
        .map(|e| e["line"].as_str().unwrap().parse().unwrap())
        .collect();
    values.sort();
    assert_eq!(values, (1..=10).collect::<Vec<_>>());
    assert_eq!(code, Some(0));
}

fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn daemons_that_leave_the_group_do_not_outlive_the_runner() {
    let (dir, file) = flow(
        "jobs:
  setsid: { run: \"setsid sh -c 'echo $$ > setsid.pid; exec sleep 301' </dev/null >/dev/null 2>&1 & sleep 0.2\" }
  jobctl: { run: \"set -m; sh -c 'echo $$ > jobctl.pid; exec sleep 302' </dev/null >/dev/null 2>&1 & sleep 0.2\" }
  double: { run: \"(setsid sh -c 'echo $$ > double.pid; exec sleep 303' </dev/null >/dev/null 2>&1 &); sleep 0.2\" }
",
    );
    let (code, _) = run_json(&file, &[]);
    assert_eq!(code, Some(0));
    for name in ["setsid", "jobctl", "double"] {
        let pid = read_pid(&dir.path().join(format!("{name}.pid")));
        assert!(
            !alive(pid),
            "the {name} daemon (pid {pid}) outlived the runner"
        );
    }
}

#[test]
fn a_daemon_is_stopped_when_its_run_ends() {
    // `check` runs after `spawner` has ended: by then the daemon spawner left behind must be gone.
    let (_d, file) = flow(
        "jobs:
  spawner: { run: \"setsid sh -c 'echo $$ > daemon.pid; exec sleep 304' </dev/null >/dev/null 2>&1 & sleep 0.2\" }
  check:
    run: 'if kill -0 $(cat daemon.pid) 2>/dev/null; then echo alive; else echo gone; fi'
    trigger: { after: spawner }
",
    );
    let (code, ev) = run_json(&file, &[]);
    assert_eq!(output_lines(&ev, "check"), ["gone"]);
    assert_eq!(code, Some(0));
}

#[test]
fn a_background_printer_does_not_hold_the_runner() {
    let (_d, file) = flow(
        "jobs:\n  printer: { run: '(while :; do echo tick; sleep 0.1; done) & echo started', stop_grace: 200ms }\n",
    );
    let mut child = common::cmd()
        .arg(&file)
        .args(["--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let status = wait_or_fail(&mut child, Duration::from_secs(20), "background printer");
    let ev = events(reader.join().unwrap().as_bytes());
    assert_eq!(status.code(), Some(0));
    let exit = ev.iter().find(|e| e["event"] == "run.exit").unwrap();
    assert!(
        exit["reason"].as_str().unwrap().contains("stayed open"),
        "{exit}"
    );
}

#[test]
fn a_flood_of_output_does_not_stall_time_triggers() {
    let (_d, file) = flow(
        "jobs:
  tick: { run: 'true', trigger: { interval: 50ms }, misfire_grace: 200ms, coalesce: false }
  noisy: { run: 'sleep 0.5; yes 0123456789 | head -n 5000000' }
",
    );
    let out = common::cmd()
        .arg(&file)
        .args(["--for", "4s", "--progress", "never"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let row = err
        .lines()
        .find(|l| l.starts_with("tick "))
        .unwrap_or_else(|| panic!("no summary row for tick in {err}"));
    let cols: Vec<u64> = row
        .split_whitespace()
        .skip(1)
        .map(|c| c.parse().unwrap())
        .collect();
    // runs succeeded failed stopped skipped missed
    assert_eq!((cols[4], cols[5]), (0, 0), "skipped/missed firings: {row}");
    assert!(cols[0] >= 60, "{row}");
}

#[test]
fn a_failure_handler_that_is_not_needed_does_not_fail_the_workflow() {
    let (_d, file) = flow(
        "jobs:
  build: { run: 'true' }
  alert: { run: 'echo alert', trigger: { after: build, status: failure } }
",
    );
    let (code, ev) = run_json(&file, &[]);
    assert_eq!(code, Some(0));
    let skipped = ev
        .iter()
        .find(|e| e["event"] == "run.skipped" && e["job"] == "alert")
        .unwrap();
    assert!(skipped["reason"].as_str().unwrap().contains("never fire"));
    assert_eq!(summary(&ev)["jobs"]["alert"]["skipped"], 1);
}

#[test]
fn stop_grace_zero_kills_at_once() {
    let (_d, file) = flow(
        "jobs:
  trapper: { run: \"trap 'echo trapped; exit 0' TERM; echo ready; while :; do sleep 0.05; done\", stop_grace: 0s }
",
    );
    let (mut child, reader, seen) = start_until(&file, &[], |e| {
        e["event"] == "output" && e["line"] == "ready"
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let ev = rest_of(reader, seen);
    child.wait().unwrap();
    assert!(output_lines(&ev, "trapper").iter().all(|l| *l != "trapped"));
    let exit = ev.iter().find(|e| e["event"] == "run.exit").unwrap();
    assert_eq!(exit["signal"], "SIGKILL", "{exit}");
}

#[test]
fn a_coalesced_run_is_as_late_as_its_earliest_firing() {
    let (_d, file) =
        flow("jobs:\n  tick: { run: 'true', trigger: { interval: 100ms }, misfire_grace: 1h }\n");
    let (mut child, mut reader, mut seen) = start_until(&file, &[], |e| e["event"] == "run.exit");
    // Stop the runner for a while: firings fall due meanwhile and are coalesced into one run.
    unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(800));
    unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
    let coalesced = loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0);
        let e: Value = serde_json::from_str(&line).unwrap();
        seen.push(e.clone());
        if e["event"] == "run.start" && e["coalesced"].as_u64().unwrap_or(1) > 1 {
            break e;
        }
    };
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = rest_of(reader, seen);
    child.wait().unwrap();
    let n = coalesced["coalesced"].as_u64().unwrap();
    let late_ms = coalesced["lateness_us"].as_i64().unwrap() / 1000;
    assert!(
        late_ms >= (n as i64 - 1) * 100,
        "a run for {n} firings 100 ms apart was only {late_ms} ms late: {coalesced}"
    );
}

#[test]
fn a_signal_while_the_workflow_is_read_stops_it_with_a_summary() {
    // A large file takes a while to validate: the signal arrives meanwhile.
    let mut yaml = String::from("jobs:\n");
    for i in 0..5000 {
        yaml.push_str(&format!(
            "  job{i}: {{ run: 'true', trigger: {{ interval: 1h }} }}\n"
        ));
    }
    let (_d, file) = flow(&yaml);
    let mut child = common::cmd()
        .arg(&file)
        .args(["--progress", "never"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Signalled once its handlers are installed (SIGTERM is caught: /proc's SigCgt) and while it still reads the
    // file: the state's writer thread, started right after validation, is not there yet.
    let pid = child.id();
    let caught = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                let mask = s.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
                u64::from_str_radix(mask.trim(), 16).ok()
            })
            .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
    };
    let validated = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim() == "flowrun-history")
            })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !caught() {
        assert!(
            Instant::now() < deadline,
            "the runner never installed its handlers"
        );
        std::thread::yield_now();
    }
    let during_validation = !validated();
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("stopping (SIGTERM)"), "{err}");
    assert!(err.contains("job0 "), "no summary: {err}");
    assert!(
        during_validation,
        "the signal came after validation: this test did not test what it says"
    );
}

#[test]
fn control_bytes_in_notices_are_escaped() {
    let (_d, file) = flow("jobs:\n  bad: { run: [\"./no\\u001b[31msuch\\u0007\"] }\n");
    let out = common::cmd()
        .arg(&file)
        .args(["--progress", "never"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains('\u{1b}') && !err.contains('\u{7}'), "{err:?}");
    assert!(err.contains("no\\u{1b}[31msuch\\u{7}"), "{err}");
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn output_left_in_the_pipe_at_exit_is_delivered_however_long_backpressure_holds_it() {
    // `w` exits with about 0.6 MB still in its pipe while the reader sleeps: the pump is held by backpressure for
    // longer than the 200 ms drain, and must still deliver every line (the drain is for background processes
    // that keep a pipe open, not for what the process wrote before it exited).
    let (_d, file) = flow(
        "channels: { q: { capacity: 10 } }
jobs:
  w: { run: seq 400000, stdout: q }
  r: { run: \"sleep 0.6; awk '{ n++; s += $1 } END { printf \\\"%d %.0f\\\\n\\\", n, s }'\", stdin: q }
",
    );
    let (code, ev) = run_json(&file, &[]);
    assert_eq!(output_lines(&ev, "r"), ["400000 80000200000"]);
    let exit = ev
        .iter()
        .find(|e| e["event"] == "run.exit" && e["job"] == "w")
        .unwrap();
    assert!(exit.get("reason").is_none(), "{exit}");
    assert_eq!(channel(&ev, "q"), (400_000, 400_000, 0));
    assert_eq!(code, Some(0));
}

#[test]
fn what_a_writer_wrote_before_the_stop_is_counted_not_lost() {
    // The writer writes all 10,000 lines at once (into its pipe and the runner's pump) and exits 0; the stop
    // comes while most of them wait behind backpressure. Each must be counted: handed out, or left.
    let (_d, file) = flow(
        "channels: { q: { capacity: 10 } }
jobs:
  p: { run: seq 10000, stdout: q }
  r: { run: 'sleep 0.01; cat > /dev/null', trigger: { each: q } }
",
    );
    let (code, ev) = run_json(&file, &["--for", "1s"]);
    assert_eq!(code, Some(0));
    let (i, o, l) = channel(&ev, "q");
    assert_eq!(i, 10_000, "out {o}, left {l}");
    assert_eq!(i, o + l);
}

#[test]
fn a_second_sigint_kills_at_once_even_while_daemons_are_swept() {
    // The daemon clears its environment (so no run owns it) and ignores SIGTERM: only the final sweep can stop
    // it, and a second Ctrl-C must not wait for its 30 s grace.
    let (dir, file) = flow(
        "jobs:
  svc:
    run: \"setsid env -i /bin/sh -c 'trap \\\"\\\" TERM INT; echo $$ > daemon.tmp; /bin/mv daemon.tmp daemon.pid; while :; do /bin/sleep 1; done' </dev/null >/dev/null 2>&1 & while [ ! -f daemon.pid ]; do sleep 0.01; done; echo ready; exec sleep 1000\"
    stop_grace: 30s
",
    );
    let (mut child, mut reader, _) = start_until(&file, &[], |e| {
        e["event"] == "output" && e["line"] == "ready"
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    // The run itself ends at once (its `sleep` dies of SIGTERM); then only the daemon is left to sweep.
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0);
        if line.contains("\"run.exit\"") {
            break;
        }
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_or_fail(&mut child, Duration::from_secs(10), "second SIGINT");
    assert_eq!(status.code(), Some(130));
    let pid = read_pid(&dir.path().join("daemon.pid"));
    assert!(!alive(pid), "the daemon outlived the runner");
}

#[test]
fn a_daemon_holding_a_readers_input_is_stopped_before_the_take_back() {
    // The daemon clears its environment (no run's marks) and keeps reading the reader's standard input after the
    // run has exited. It is stopped before the unread messages are taken back, so it cannot read them too.
    let (dir, file) = flow(
        "channels: { q: {} }
jobs:
  prod: { run: seq 1 100000, stdout: q }
  r:
    run: [bash, -c, \"setsid env -i /bin/bash -c 'while read -r l; do echo $l; done' >out.daemon 2>&1 0<&0 & sleep 0.3\"]
    stdin: q
  final: { run: 'cat > out.final', stdin: q, trigger: { after: r } }
",
    );
    let (code, ev) = run_json(&file, &[]);
    assert_eq!(code, Some(0));
    let mut seen = HashMap::new();
    for name in ["out.daemon", "out.final"] {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
        for line in text.lines() {
            *seen.entry(line.parse::<u64>().unwrap()).or_insert(0u32) += 1;
        }
    }
    let doubled: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).take(5).collect();
    assert!(doubled.is_empty(), "read twice (stray bytes?): {doubled:?}");
    assert!(seen.keys().all(|v| (1..=100_000).contains(v)));
    // At most the one line the daemon had read when it was stopped, before it could write it out.
    assert!(seen.len() >= 99_999, "only {} values arrived", seen.len());
    assert_eq!(channel(&ev, "q"), (100_000, 100_000, 0));
}

#[test]
fn messages_of_a_retry_waiting_at_the_stop_go_back_to_their_queue() {
    // The batch failed and waits 10 s for its retry when the runner stops: its messages are left, not lost.
    let (_d, file) = flow(
        "channels: { q: {} }
jobs:
  w: { run: seq 5, stdout: q }
  e: { run: 'exit 1', trigger: { each: q, batch: 5 }, retry: { attempts: 3, backoff: 10s } }
",
    );
    let (mut child, reader, seen) = start_until(&file, &[], |e| e["event"] == "run.retry");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let ev = rest_of(reader, seen);
    child.wait().unwrap();
    assert_eq!(channel(&ev, "q"), (5, 0, 5));
}

#[test]
fn a_background_flood_after_the_exit_does_not_hold_the_run() {
    // `yes` keeps the pipe full after the run's process exited: the pump takes at most 1 MiB more after the drain
    // window, then abandons the pipe, and the group (with `yes`) is stopped.
    let (_d, file) =
        flow("jobs:\n  flood: { run: 'yes flood & echo started', stop_grace: 200ms }\n");
    let mut child = common::cmd()
        .arg(&file)
        .args(["--progress", "never"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let status = wait_or_fail(&mut child, Duration::from_secs(30), "background flood");
    let err = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("stayed open"), "{err}");
}
