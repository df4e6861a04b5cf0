//! Faults on the real binary: killed readers and writers, a killed or stopped runner, a reader that never reads,
//! stubborn and leaky jobs, spawn failures, many jobs, many failing messages. Nothing lost, nothing escapes.

mod common;

use common::{alive, bin, channel, flow, output_lines as output, run_json};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Run flowrun under `/usr/bin/time` and return (exit code, peak resident KiB, JSON events, stdout), or `None`
/// when `/usr/bin/time` is not installed (the memory tests then say so and pass).
fn run_measured(file: &PathBuf, extra: &[&str]) -> Option<(Option<i32>, u64, Vec<Value>, String)> {
    if !std::path::Path::new("/usr/bin/time").exists() {
        eprintln!("/usr/bin/time is not installed: skipping the memory measurement");
        return None;
    }
    let out = Command::new("/usr/bin/time")
        .env("XDG_STATE_HOME", common::state_home())
        .args(["-f", "maxrss_kib=%M"])
        .arg(bin())
        .arg(file)
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let rss = err
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kib="))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let events = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    Some((
        out.status.code(),
        rss,
        events,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

#[test]
fn a_reader_killed_mid_stream_loses_nothing() {
    // Each reader run SIGKILLs itself after every 7,000th line; the next run gets what it left unread.
    let (_d, file) = flow(
        "channels: { lines: { capacity: 3000 } }
jobs:
  produce: { run: seq 30000, stdout: lines }
  consume:
    run: |
      while IFS= read -r l; do echo \"$l\"; if [ $((l % 7000)) -eq 0 ]; then kill -9 $$; fi; done
    stdin: lines
    restart: always
",
    );
    let (code, ev) = run_json(&file, &[]);
    let got: Vec<u64> = output(&ev, "consume")
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(got, (1..=30000).collect::<Vec<_>>());
    let kills = ev
        .iter()
        .filter(|e| e["event"] == "run.exit" && e["signal"] == "SIGKILL")
        .count();
    assert_eq!(kills, 4);
    let (i, o, l) = channel(&ev, "lines");
    assert_eq!((i, o, l), (30000, 30000, 0));
    assert_eq!(code, Some(1), "killed runs are failures");
}

#[test]
fn a_writer_killed_mid_line_delivers_the_partial_message_and_says_so() {
    let (_d, file) = flow(
        "channels: { c: {} }
jobs:
  w: { run: \"printf 'one\\\\ntwo\\\\nthr'; kill -9 $$\", stdout: c }
  r: { run: cat, stdin: c }
",
    );
    let (_, ev) = run_json(&file, &[]);
    assert_eq!(output(&ev, "r"), ["one", "two", "thr"]);
    let exit = ev
        .iter()
        .find(|e| e["event"] == "run.exit" && e["job"] == "w")
        .unwrap();
    assert_eq!(exit["signal"], "SIGKILL");
    assert!(
        exit["reason"]
            .as_str()
            .unwrap()
            .contains("without a newline"),
        "{exit}"
    );
    assert_eq!(channel(&ev, "c"), (3, 3, 0));
}

#[test]
fn sigterm_during_heavy_traffic_gives_a_consistent_summary() {
    let (_d, file) = flow(
        "channels: { lines: {} }
jobs:
  produce: { run: yes 0123456789, stdout: lines }
  consume: { run: \"sleep 0.001; cat > /dev/null\", stdin: lines }
",
    );
    let mut child = common::cmd()
        .arg(&file)
        .args(["--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stderr.take().unwrap());
    let mut started = 0;
    let mut events = Vec::new();
    while started < 2 {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0);
        let e: Value = serde_json::from_str(&line).unwrap();
        if e["event"] == "run.start" {
            started += 1;
        }
        events.push(e);
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    let status = child.wait().unwrap();
    events.extend(
        rest.lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()),
    );
    assert_eq!(status.code(), Some(0));
    let (i, o, l) = channel(&events, "lines");
    assert_eq!(i, o + l, "in = out + left");
}

#[test]
fn a_reader_that_never_reads_holds_the_writer_back_with_bounded_memory() {
    let (_d, file) = flow(
        "channels: { lines: {} }
jobs:
  offer: { run: yes 0123456789abcdef | head -c 1000000000, stdout: lines }
  ignore: { run: sleep 1000, stdin: lines, stop_grace: 100ms }
",
    );
    let Some((_, rss, ev, _)) = run_measured(&file, &["--for", "3s", "--log-format", "json"])
    else {
        return;
    };
    assert!(
        rss < 64 * 1024,
        "the runner used {rss} KiB while a writer offered 1 GB"
    );
    let (i, o, l) = channel(&ev, "lines");
    assert_eq!(i, o + l);
    assert!(
        i < 1_000_000,
        "backpressure held the writer: {i} messages taken"
    );
}

#[test]
fn a_job_ignoring_sigterm_is_killed_after_stop_grace() {
    let (_d, file) = flow("jobs:\n  stubborn: { run: \"trap '' TERM; while :; do sleep 0.05; done\", stop_grace: 300ms }\n");
    // Long enough for the shell to have set its trap before the stop.
    let (code, ev) = run_json(&file, &["--for", "1500ms"]);
    assert_eq!(code, Some(0));
    let exit = ev.iter().find(|e| e["event"] == "run.exit").unwrap();
    assert_eq!(exit["signal"], "SIGKILL", "{exit}");
}

#[test]
fn a_background_process_holding_the_output_does_not_hold_the_run() {
    let (_d, file) = flow("jobs:\n  leaky: { run: 'sleep 1000 & echo $!', stop_grace: 200ms }\n");
    let (code, ev) = run_json(&file, &[]);
    assert_eq!(code, Some(0));
    let pid: u32 = output(&ev, "leaky")[0].parse().unwrap();
    let exit = ev.iter().find(|e| e["event"] == "run.exit").unwrap();
    assert_eq!(exit["code"], 0);
    assert!(
        exit["reason"].as_str().unwrap().contains("stayed open"),
        "{exit}"
    );
    // The group was stopped: the background sleep is gone (SIGTERM is immediate for sleep).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while alive(pid) && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert!(!alive(pid), "the background process outlived its run");
}

#[test]
fn a_program_without_permission_is_a_failed_run() {
    let (dir, file) = flow("jobs:\n  noexec: { run: [./script.sh] }\n");
    std::fs::write(dir.path().join("script.sh"), "#!/bin/sh\necho hi\n").unwrap();
    let (code, ev) = run_json(&file, &[]);
    assert_eq!(code, Some(1));
    let exit = ev.iter().find(|e| e["event"] == "run.exit").unwrap();
    assert!(
        exit["reason"]
            .as_str()
            .unwrap()
            .contains("ermission denied"),
        "{exit}"
    );
}

#[test]
fn a_thousand_jobs_in_one_file() {
    let mut yaml = String::from("executors: { default: { max_workers: 50 } }\njobs:\n");
    for i in 0..1000 {
        yaml.push_str(&format!("  job{i}: {{ run: [echo, \"{i}\"] }}\n"));
    }
    let (_d, file) = flow(&yaml);
    let (code, ev) = run_json(&file, &[]);
    assert_eq!(code, Some(0));
    let outputs = ev.iter().filter(|e| e["event"] == "output").count();
    assert_eq!(outputs, 1000);
    let jobs = &ev.iter().find(|e| e["event"] == "runner.stop").unwrap()["summary"]["jobs"];
    assert_eq!(jobs.as_object().unwrap().len(), 1000);
    assert!(jobs
        .as_object()
        .unwrap()
        .values()
        .all(|c| c["succeeded"] == 1));
}

#[test]
fn a_hundred_thousand_messages_with_random_failures_are_each_done_or_dead_exactly_once() {
    let (_d, file) = flow(
        "executors: { pool: { max_workers: 4 } }
channels:
  tasks: { capacity: 5000 }
  ok: {}
  dead: {}
jobs:
  enqueue: { run: seq 100000, stdout: tasks }
  work:
    run: |
      if awk -v seed=\"$FLOWRUN_RUN\" 'BEGIN { srand(seed); exit !(rand() < 0.3) }'; then exit 1; fi
      cat
    trigger: { each: tasks, batch: 250 }
    executor: pool
    max_instances: 4
    retry: { attempts: 2, backoff: 1ms }
    dead_letter: dead
    stdout: ok
  count-ok: { run: \"awk '{ if (seen[$1]++) d++; n++; s += $1 } END { printf \\\"%d %.0f %d\\\\n\\\", n, s, d }'\", stdin: ok }
  count-dead: { run: \"awk '{ if (seen[$1]++) d++; n++; s += $1 } END { printf \\\"%d %.0f %d\\\\n\\\", n, s, d }'\", stdin: dead }
",
    );
    let (code, ev) = run_json(&file, &[]);
    assert_eq!(code, Some(0));
    let ok = output(&ev, "count-ok");
    let dead = output(&ev, "count-dead");
    let parse = |l: &str| -> (u64, u64) {
        let p: Vec<u64> = l.split(' ').map(|x| x.parse::<u64>().unwrap()).collect();
        assert_eq!(p[2], 0, "duplicates in {l}");
        (p[0], p[1])
    };
    let (ok_n, ok_s) = parse(ok[0]);
    let (dead_n, dead_s) = parse(dead[0]);
    assert_eq!(ok_n + dead_n, 100_000);
    assert_eq!(ok_s + dead_s, 100_000 * 100_001 / 2);
    assert!(dead_n > 0, "with 30% failures and 3 tries some batches die");
    let retries = ev.iter().filter(|e| e["event"] == "run.retry").count();
    assert!(retries > 0);
    assert_eq!(channel(&ev, "tasks"), (100_000, 100_000, 0));
    assert_eq!(channel(&ev, "dead"), (dead_n, dead_n, 0));
}

#[test]
fn a_broadcast_reader_that_ends_early_neither_blocks_nor_bloats_the_others() {
    let (_d, file) = flow(
        "channels: { ev: { kind: broadcast, capacity: 100 } }
jobs:
  emit: { run: yes 0123456789abcdef | head -n 5000000, stdout: ev }
  quick: { run: head -n 1, stdin: ev }
  all: { run: wc -l, stdin: ev }
",
    );
    let Some((code, rss, ev, _)) = run_measured(&file, &["--log-format", "json"]) else {
        return;
    };
    assert_eq!(code, Some(0));
    assert!(rss < 64 * 1024, "the runner used {rss} KiB");
    assert_eq!(output(&ev, "all"), ["5000000"]);
    assert_eq!(output(&ev, "quick"), ["0123456789abcdef"]);
    let (i, o, l) = channel(&ev, "ev");
    assert_eq!(i, o + l);
}

#[test]
fn output_without_newlines_is_printed_in_pieces_with_bounded_memory() {
    let (_d, file) =
        flow("jobs:\n  noisy: { run: \"head -c 100000000 /dev/zero | tr '\\\\0' x\" }\n");
    let Some((code, rss, _, stdout)) = run_measured(&file, &[]) else {
        return;
    };
    assert_eq!(code, Some(0));
    assert!(
        rss < 64 * 1024,
        "the runner used {rss} KiB for one 100 MB line"
    );
    let pieces: Vec<&str> = stdout.lines().collect();
    assert_eq!(pieces.len(), 100_000_000usize.div_ceil(64 * 1024));
    assert!(pieces.iter().all(|p| p.starts_with("noisy#1 | x")));
}

#[test]
fn ten_thousand_cron_jobs_validate_and_run() {
    let mut yaml = String::from("jobs:\n");
    for i in 0..10_000 {
        yaml.push_str(&format!(
            "  job{i}: {{ run: [/bin/true], trigger: {{ cron: \"{} {} * * *\", timezone: Europe/Berlin }} }}\n",
            i % 60,
            (i / 60) % 24
        ));
    }
    let (_d, file) = flow(&yaml);
    let out = common::cmd().arg("validate").arg(&file).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, ev) = run_json(&file, &["--for", "1s"]);
    assert_eq!(code, Some(0));
    let jobs = &ev.iter().find(|e| e["event"] == "runner.stop").unwrap()["summary"]["jobs"];
    assert_eq!(jobs.as_object().unwrap().len(), 10_000);
}

#[test]
fn runs_spawned_under_a_storm_of_signals_all_start_and_end() {
    // Every run is started by clone+exec sharing the runner's memory until exec: a signal handler of the runner
    // running in that child would run on the runner's memory. Signals are blocked around the clone; a storm of
    // SIGCHLD (which the runner handles: its reaper) must not lose or break a run.
    let (_d, file) = flow(
        "channels: { q: {} }\njobs:\n  feed: { run: seq 2000, stdout: q }\n  work:\n    run: 'true'\n    trigger: { each: q }\n    max_instances: 4\n",
    );
    let mut child = common::cmd()
        .arg(&file)
        .args(["--state", "none", "--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let storm = std::thread::spawn(move || {
        // Bounded: at most 200,000 signals or until the runner is gone.
        for _ in 0..200_000 {
            // SAFETY: a signal to the runner this test started; ESRCH once it ended.
            if unsafe { libc::kill(pid, libc::SIGCHLD) } != 0 {
                break;
            }
            std::thread::yield_now();
        }
    });
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let status = child.wait().unwrap();
    storm.join().unwrap();
    let ev = common::events(err.as_bytes());
    assert_eq!(status.code(), Some(0), "{err}");
    let work = &common::summary(&ev)["jobs"]["work"];
    assert_eq!(work["runs"], 2000, "{work}");
    assert_eq!(work["succeeded"], 2000, "{work}");
}
