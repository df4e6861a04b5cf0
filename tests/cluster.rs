//! Several runners sharing one real Redis (SPEC §9), as processes on this machine with their own ids and state
//! folders: a per-second cron runs each tick exactly once across three runners while one is SIGKILLed and one
//! SIGSTOPped past its lease; Redis itself killed and restarted mid-run (append-only file) runs nothing twice and
//! reports the firings it missed; a SIGKILLed runner's live run is marked interrupted by another and tried again
//! there (`failover`); `after` joins over runs of several runners fire once per completion, a runner restarted
//! mid-way included; `status --store` lists the runners from any host and flags one running another file;
//! `trigger --store` fires a job on exactly one live runner from any host (its answer, `--wait`, no runner up, a
//! request no runner took never fires later); `GET /api/v1/cluster` lists the runners.
//!
//! The tests start `redis-server` (Debian's package) on free ports. Without it they say they are skipped and pass,
//! unless `FLOWRUN_REQUIRE_REDIS=1` (CI sets it). The cron tests run for wall-clock seconds: time is what they test;
//! every wait for a condition polls it against a deadline.

mod common;
mod openapi;
mod redis_server;
mod web;

use redis_server::{free_port, redis_server, Redis};

use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A runner of the cluster: its process and the file its JSON events go to.
struct Runner {
    child: Child,
    events: PathBuf,
}

fn runner(file: &Path, redis: &Redis, id: &str, root: &Path, extra: &[&str]) -> Runner {
    let events = root.join(format!("{id}.events"));
    let child = common::cmd()
        .arg(file)
        .arg("--state")
        .arg(root.join(id))
        .args(["--store", &redis.url(), "--runner-id", id])
        // A test that wants another lease gives it.
        .args(match extra.contains(&"--lease") {
            true => &[][..],
            false => &["--lease", "2s"][..],
        })
        .args(["--progress", "never", "--log-format", "json"])
        .args(extra)
        .env("RUNNER", id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&events).unwrap())
        .spawn()
        .unwrap();
    Runner { child, events }
}

/// A test that fails leaves no runner behind (a stopped one is continued first, so it can end).
impl Drop for Runner {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signals to our own child, not yet reaped (try_wait said it runs).
            unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Runner {
    fn signal(&self, signal: i32) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// SIGTERM, then its exit code.
    fn stop(mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        self.child.wait().unwrap().code()
    }

    fn events(&self) -> Vec<Value> {
        common::events(&std::fs::read(&self.events).unwrap_or_default())
    }
}

/// Wait until `what` holds (polled), or fail after `limit`.
fn wait_for(limit: Duration, what: &str, mut until: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !until() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lines of the ticks file: (scheduled instant, run number, runner).
fn ticks(path: &Path) -> Vec<(String, u64, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut parts = l.split(' ');
            let at = parts.next().unwrap().to_string();
            let run = parts.next().unwrap().parse().unwrap();
            (at, run, parts.next().unwrap_or("").to_string())
        })
        .collect()
}

fn seconds_of(at: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .timestamp()
}

const TICKS: &str = r#"
name: ticks
jobs:
  tick:
    run: echo "$FLOWRUN_SCHEDULED $FLOWRUN_RUN $RUNNER" >> ticks.txt
    trigger: { cron: "* * * * * *" }
"#;

/// The ticks file's instants, checked: each at most once, and every second from the first to the last there,
/// except those within `windows` (seconds since the epoch, inclusive) where a runner died or paused holding a claim.
fn exactly_once(lines: &[(String, u64, String)], windows: &[(i64, i64)]) -> usize {
    let mut seen = std::collections::BTreeMap::new();
    for (at, run, who) in lines {
        if let Some(first) = seen.insert(seconds_of(at), (run, who)) {
            panic!(
                "the tick at {at} ran twice: #{} on {} and #{run} on {who}",
                first.0, first.1
            );
        }
    }
    let mut numbers: Vec<u64> = lines.iter().map(|l| l.1).collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), lines.len(), "a run number was given twice");
    let (first, last) = (*seen.keys().next().unwrap(), *seen.keys().last().unwrap());
    let mut missing = 0;
    for s in first..=last {
        if !seen.contains_key(&s) {
            assert!(
                windows.iter().any(|(a, b)| (*a..=*b).contains(&s)),
                "the tick at {s} never ran, outside the windows {windows:?}"
            );
            missing += 1;
        }
    }
    missing
}

#[test]
fn every_tick_runs_once_across_three_runners_with_one_killed_and_one_paused_past_its_lease() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let (dir, file) = common::flow(TICKS);
    let root = dir.path();
    let r1 = runner(&file, &redis, "r1", root, &[]);
    let r2 = runner(&file, &redis, "r2", root, &[]);
    let r3 = runner(&file, &redis, "r3", root, &[]);
    let out = root.join("ticks.txt");
    wait_for(Duration::from_secs(20), "the first ticks", || {
        ticks(&out).len() >= 3
    });
    // A runner SIGKILLed: what it claimed and had not started is lost (its window), never run twice.
    let mut r1 = r1;
    let killed_at = chrono::Utc::now().timestamp();
    r1.child.kill().unwrap();
    r1.child.wait().unwrap();
    wait_for(Duration::from_secs(20), "ticks after the kill", || {
        ticks(&out).iter().any(|t| seconds_of(&t.0) > killed_at + 2)
    });
    // A runner stopped past its lease (2 s), then continued: it claims nothing until it renews its heartbeat.
    let paused_at = chrono::Utc::now().timestamp();
    r2.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(4));
    r2.signal(libc::SIGCONT);
    let continued_at = chrono::Utc::now().timestamp();
    wait_for(Duration::from_secs(20), "ticks after the pause", || {
        ticks(&out)
            .iter()
            .any(|t| seconds_of(&t.0) > continued_at + 3)
    });
    assert_eq!(r2.stop(), Some(0));
    assert_eq!(r3.stop(), Some(0));
    let lines = ticks(&out);
    let missing = exactly_once(
        &lines,
        &[
            (killed_at - 1, killed_at + 1),
            (paused_at - 1, paused_at + 1),
        ],
    );
    assert!(missing <= 2, "{missing} ticks missing: {lines:?}");
    let runners: std::collections::HashSet<&str> = lines.iter().map(|l| l.2.as_str()).collect();
    assert!(runners.len() >= 2, "the ticks were shared: {runners:?}");
    // The shared history has each run once, naming its runner.
    let rows = history(&file, &redis, &["--limit", "0"]);
    let runs: Vec<&Value> = rows.iter().filter(|r| r["run"].is_u64()).collect();
    // One row per run, but those the SIGKILLed runner started in its last history window (50 ms) before the
    // kill: its writer never sent them (README: a SIGKILL can lose the last 50 ms of rows).
    let ran: std::collections::HashSet<u64> = lines.iter().map(|l| l.1).collect();
    let lost = lines.len() - runs.len();
    assert!(lost <= 2, "{lost} runs have no row");
    assert!(runs
        .iter()
        .all(|r| ran.contains(&r["run"].as_u64().unwrap())));
    let unwritten: Vec<&(String, u64, String)> = lines
        .iter()
        .filter(|l| !runs.iter().any(|r| r["run"] == l.1))
        .collect();
    assert!(
        unwritten.iter().all(|l| l.2 == "r1"),
        "only the killed runner's: {unwritten:?}"
    );
    assert!(runs.iter().all(|r| r["runner"].is_string()));
}

#[test]
fn redis_killed_and_restarted_runs_nothing_twice_and_says_what_was_missed() {
    let Some(mut redis) = Redis::start(true) else {
        return;
    };
    let (dir, file) = common::flow(TICKS);
    let root = dir.path();
    let port = free_port().to_string();
    let a = runner(&file, &redis, "a", root, &["--listen", &port]);
    let b = runner(&file, &redis, "b", root, &[]);
    let out = root.join("ticks.txt");
    let store_up = || -> Option<String> {
        let mut s =
            std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        text.lines()
            .find(|l| l.starts_with("flowrun_store_up "))
            .map(|l| l["flowrun_store_up ".len()..].to_string())
    };
    wait_for(Duration::from_secs(20), "the first ticks", || {
        ticks(&out).len() >= 3
    });
    assert_eq!(store_up().as_deref(), Some("1"));
    let down_at = chrono::Utc::now().timestamp();
    redis.kill();
    wait_for(Duration::from_secs(20), "flowrun_store_up 0", || {
        store_up().as_deref() == Some("0")
    });
    std::thread::sleep(Duration::from_secs(2));
    let up_at = chrono::Utc::now().timestamp();
    redis.up();
    wait_for(Duration::from_secs(20), "flowrun_store_up 1", || {
        store_up().as_deref() == Some("1")
    });
    wait_for(Duration::from_secs(20), "ticks after the restart", || {
        ticks(&out).iter().any(|t| seconds_of(&t.0) > up_at + 3)
    });
    let missed: Vec<Value> = [&a, &b]
        .iter()
        .flat_map(|r| r.events())
        .filter(|e| e["event"] == "run.missed")
        .collect();
    assert_eq!(a.stop(), Some(0));
    assert_eq!(b.stop(), Some(0));
    let lines = ticks(&out);
    let missing = exactly_once(&lines, &[(down_at - 1, up_at + 2)]);
    assert!(missing >= 1, "Redis was down 3 s: {lines:?}");
    assert!(!missed.is_empty(), "the misses are said");
    assert!(
        missed.iter().all(|e| e["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("store unreachable"))),
        "{missed:?}"
    );
}

#[test]
fn a_killed_runners_live_run_is_marked_interrupted_and_tried_again_elsewhere() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let at = (chrono::Utc::now() + chrono::Duration::seconds(3)).to_rfc3339();
    let (dir, file) = common::flow(&format!(
        r#"
name: failover
jobs:
  long:
    run: echo "$RUNNER $FLOWRUN_RUN $FLOWRUN_TRY $$" >> tries.txt; exec sleep 60
    trigger: [{{ at: "{at}" }}, {{ cron: "0 0 1 1 *" }}]
    retry: {{ attempts: 1 }}
"#
    ));
    let root = dir.path();
    let mut runners: Vec<Runner> = ["x", "y", "z"]
        .iter()
        .map(|id| runner(&file, &redis, id, root, &[]))
        .collect();
    let tries = root.join("tries.txt");
    let read = || std::fs::read_to_string(&tries).unwrap_or_default();
    wait_for(Duration::from_secs(20), "the run", || {
        read().lines().count() == 1
    });
    // Its row is in the store as running (the shared history is written a window after the start).
    let running = || {
        history(&file, &redis, &[])
            .iter()
            .any(|r| r["outcome"] == "running")
    };
    wait_for(
        Duration::from_secs(20),
        "the run's row in the store",
        running,
    );
    let first = read();
    let owner = first.split(' ').next().unwrap().to_string();
    let i = ["x", "y", "z"].iter().position(|id| *id == owner).unwrap();
    let mut dead = runners.remove(i);
    let killed = Instant::now();
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    // Taken over within the lease (2 s) and a heartbeat period.
    wait_for(Duration::from_secs(20), "the failover try", || {
        read().lines().count() == 2
    });
    let took = killed.elapsed();
    let second = read().lines().nth(1).unwrap().to_string();
    let fields: Vec<&str> = second.split(' ').collect();
    assert_ne!(fields[0], owner, "tried again on another runner");
    assert_eq!(fields[1], first.split(' ').nth(1).unwrap(), "the same run");
    assert_eq!(fields[2], "2", "its second try");
    assert!(took < Duration::from_secs(2 + 2), "failover took {took:?}");
    eprintln!("failover: the retry started {took:?} after the SIGKILL (lease 2s)");
    for r in runners {
        r.stop();
    }
    let rows = history(&file, &redis, &["--tries"]);
    let row = rows.iter().find(|r| r["job"] == "long").expect("its row");
    assert_eq!(row["attempt"], 2);
    assert_eq!(row["trigger"], "failover");
}

#[test]
fn status_lists_the_runners_from_any_host_and_flags_another_file() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let (dir, file) = common::flow(TICKS);
    let root = dir.path();
    let one = runner(&file, &redis, "one", root, &[]);
    let status = |file: &Path| {
        let out = common::cmd()
            .arg("status")
            .arg(file)
            .args(["--store", &redis.url(), "--format", "json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    wait_for(Duration::from_secs(20), "the runner's heartbeat", || {
        status(&file)["runners"]
            .as_array()
            .is_some_and(|r| r.len() == 1)
    });
    let doc = status(&file);
    let r = &doc["runners"][0];
    assert_eq!(r["id"], "one");
    assert_eq!(r["pid"], one.child.id());
    assert_eq!(r["file_differs"], false);
    assert!(r["heartbeat_age_ms"].as_u64().unwrap() < 2000);
    // The same cluster read with an edited file: that runner runs another text.
    let edited = root.join("edited.yaml");
    std::fs::write(&edited, format!("{TICKS}\n# edited\n")).unwrap();
    assert_eq!(status(&edited)["runners"][0]["file_differs"], true);
    // A second runner with the same id is refused, naming the first.
    let twin = common::cmd()
        .arg(&file)
        .arg("--state")
        .arg(root.join("twin"))
        .args(["--store", &redis.url(), "--runner-id", "one", "--for", "1s"])
        .output()
        .unwrap();
    assert_eq!(twin.status.code(), Some(2), "{twin:?}");
    let err = String::from_utf8_lossy(&twin.stderr);
    assert!(
        err.contains("runner id `one` is already in cluster `ticks`"),
        "{err}"
    );
    assert_eq!(one.stop(), Some(0));
    // A clean stop leaves the cluster at once.
    assert_eq!(status(&file)["runners"].as_array().map(Vec::len), Some(0));
}

#[test]
fn an_after_join_hears_the_whole_clusters_runs_and_fires_once_per_completion() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let (dir, file) = common::flow(
        r#"
name: joins
jobs:
  a:
    run: echo "$FLOWRUN_RUN" >> a.txt
    trigger: { cron: "* * * * * *" }
  c:
    run: echo "$FLOWRUN_RUN" >> c.txt
    trigger: { cron: "* * * * * *" }
  b:
    run: printf '%s %s\n' "$RUNNER" "$FLOWRUN_UPSTREAM" >> b.txt
    trigger: { after: [a, c] }
"#,
    );
    let root = dir.path();
    let one = runner(&file, &redis, "one", root, &[]);
    let two = runner(&file, &redis, "two", root, &[]);
    let lines = |name: &str| {
        std::fs::read_to_string(root.join(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    wait_for(Duration::from_secs(30), "three joins", || {
        lines("b.txt").len() >= 3
    });
    // A runner that stops and starts again mid-way: the joins' state is the cluster's, not its own.
    assert_eq!(one.stop(), Some(0));
    let one = runner(&file, &redis, "one", root, &[]);
    wait_for(Duration::from_secs(30), "eight joins", || {
        lines("b.txt").len() >= 8
    });
    assert_eq!(one.stop(), Some(0));
    assert_eq!(two.stop(), Some(0));
    let mut seen = std::collections::HashSet::new();
    let mut where_ran = std::collections::HashSet::new();
    for line in lines("b.txt") {
        let (who, json) = line.split_once(' ').unwrap();
        where_ran.insert(who.to_string());
        let runs: Vec<Value> = serde_json::from_str(json).unwrap();
        assert_eq!(runs.len(), 2, "{json}");
        let key: Vec<String> = runs
            .iter()
            .map(|r| format!("{}#{}", r["job"].as_str().unwrap(), r["run"]))
            .collect();
        assert!(seen.insert(key.clone()), "the join of {key:?} fired twice");
    }
    // Each a and c run took part in at most one join; the joins used runs from both runners.
    let a_runs: std::collections::HashSet<String> = lines("a.txt").into_iter().collect();
    assert!(a_runs.len() >= 6);
    let used: Vec<String> = seen.iter().map(|k| k[0].clone()).collect();
    let unique: std::collections::HashSet<&String> = used.iter().collect();
    assert_eq!(unique.len(), used.len(), "an upstream run took part twice");
    eprintln!("joins fired on {where_ran:?}");
}

#[test]
fn a_shared_durable_queue_feeds_workers_on_three_runners_and_loses_nothing_when_one_is_killed() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    const N: u64 = 100_000;
    let (dir, file) = common::flow(&format!(
        r#"
name: work
channels:
  tasks: {{ kind: queue, durable: true, capacity: 5000 }}
jobs:
  produce:
    run: seq 1 {N}
    stdout: tasks
    trigger: {{ cron: "0 0 1 1 *" }}
  work:
    run: cat >> "out-$RUNNER.txt"
    trigger: {{ each: tasks, batch: 200 }}
    max_instances: 2
"#
    ));
    let root = dir.path();
    let mut runners: Vec<Runner> = ["w1", "w2", "w3"]
        .iter()
        .map(|id| runner(&file, &redis, id, root, &[]))
        .collect();
    let done = || -> Vec<u64> {
        let mut all = Vec::new();
        for id in ["w1", "w2", "w3"] {
            let text =
                std::fs::read_to_string(root.join(format!("out-{id}.txt"))).unwrap_or_default();
            // A run killed mid-write may leave its last line cut: only whole lines count.
            all.extend(text.lines().filter_map(|l| l.parse::<u64>().ok()));
        }
        all
    };
    // The runners are up (each has its heartbeat) before the producer is fired on one of them.
    wait_for(Duration::from_secs(20), "three runners", || {
        live_runners(&file, &redis) == 3
    });
    let fired = common::cmd()
        .arg("trigger")
        .arg(&file)
        .arg("produce")
        .arg("--state")
        .arg(root.join("w1"))
        .output()
        .unwrap();
    assert!(fired.status.success(), "{fired:?}");
    // Kill a runner that is not the producer's while the work is under way.
    wait_for(Duration::from_secs(60), "a third of the work", || {
        done().len() as u64 > N / 3
    });
    let mut killed = runners.remove(1);
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    wait_for(Duration::from_secs(120), "every message done", || {
        let all: std::collections::HashSet<u64> = done().into_iter().collect();
        all.len() as u64 == N
    });
    for r in runners {
        assert_eq!(r.stop(), Some(0));
    }
    let all = done();
    let unique: std::collections::HashSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len() as u64, N);
    assert!(unique.iter().all(|m| (1..=N).contains(m)));
    // Duplicates only from the runs alive at the kill: at most max_instances x batch.
    let duplicates = all.len() - unique.len();
    assert!(duplicates <= 2 * 200, "{duplicates} messages done twice");
    let per_runner: Vec<usize> = ["w1", "w2", "w3"]
        .iter()
        .map(|id| {
            std::fs::read_to_string(root.join(format!("out-{id}.txt")))
                .unwrap_or_default()
                .lines()
                .count()
        })
        .collect();
    assert!(
        per_runner.iter().filter(|n| **n > 0).count() >= 2,
        "the work was shared: {per_runner:?}"
    );
    eprintln!("shared queue: {N} messages, per runner {per_runner:?}, {duplicates} done twice");
}

#[test]
fn run_numbers_go_on_after_the_store_lost_its_data() {
    let Some(mut redis) = Redis::start(false) else {
        return;
    };
    let (dir, file) = common::flow("name: once\njobs:\n  a: { run: 'true' }\n");
    let state = dir.path().join("s");
    let run = |redis: &Redis| {
        let out = common::cmd()
            .arg(&file)
            .arg("--state")
            .arg(&state)
            .args([
                "--store",
                &redis.url(),
                "--runner-id",
                "solo",
                "--log-format",
                "json",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let events = common::events(&out.stderr);
        let start = events
            .iter()
            .find(|e| e["event"] == "run.start")
            .expect("a run");
        start["run"].as_u64().unwrap()
    };
    assert_eq!(run(&redis), 1);
    assert_eq!(run(&redis), 2);
    // Redis restarted with nothing (no persistence): the counter goes on from this runner's history.
    redis.kill();
    redis.up();
    assert_eq!(run(&redis), 3);
}

#[test]
fn a_tls_store_is_reached_with_rediss_and_a_private_authority() {
    if redis_server().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A private authority and a certificate for 127.0.0.1 it signed.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca_cert, &ca_key)
        .unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca_pem = write("ca.pem", ca_cert.pem());
    let cert = write("server.pem", server.pem());
    let key = write("server.key", key.serialize_pem());
    let port = free_port();
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--tls-auth-clients",
            "no",
        ])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&ca_pem)
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(Duration::from_secs(20), "redis-server on TLS", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let url = format!("rediss://127.0.0.1:{port}/0");
    let (flow_dir, file) = common::flow(TICKS);
    let out = common::cmd()
        .arg(&file)
        .arg("--state")
        .arg(flow_dir.path().join("s"))
        .args([
            "--store",
            &url,
            "--runner-id",
            "tls",
            "--for",
            "2500ms",
            "--log-format",
            "json",
        ])
        .env("FLOWRUN_STORE_CA", &ca_pem)
        .env("RUNNER", "tls")
        .output()
        .unwrap();
    let events = common::events(&out.stderr);
    let starts = events.iter().filter(|e| e["event"] == "run.start").count();
    assert!(starts >= 1, "{}", String::from_utf8_lossy(&out.stderr));
    let history = common::cmd()
        .arg("history")
        .arg(&file)
        .args(["--store", &url, "--format", "json"])
        .env("FLOWRUN_STORE_CA", &ca_pem)
        .output()
        .unwrap();
    let rows: Vec<Value> = serde_json::from_slice(&history.stdout).unwrap_or_default();
    assert_eq!(rows.len(), starts, "{history:?}");
    // Without the authority, the server's certificate is not trusted, and that is said.
    let refused = common::cmd()
        .arg("history")
        .arg(&file)
        .args(["--store", &url])
        .env_remove("FLOWRUN_STORE_CA")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    // A runner that does not trust the server's certificate is refused at its start (it would never claim).
    let untrusting = common::cmd()
        .arg(&file)
        .arg("--state")
        .arg(flow_dir.path().join("s2"))
        .args(["--store", &url, "--runner-id", "doubter", "--for", "3s"])
        .env_remove("FLOWRUN_STORE_CA")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&untrusting.stderr);
    assert_eq!(untrusting.status.code(), Some(2), "{err}");
    assert!(err.contains("refuses this runner"), "{err}");
    let _ = child.kill();
    let _ = child.wait();
}

const FIRED: &str = r#"
name: fired
jobs:
  hello:
    run: echo "$RUNNER $FLOWRUN_RUN" >> fired.txt
    trigger: { cron: "0 0 1 1 *" }
  bad:
    run: exit 3
    trigger: { cron: "0 0 1 1 *" }
"#;

/// The runners with a heartbeat, as `status --store` lists them.
fn live_runners(file: &Path, redis: &Redis) -> usize {
    let out = common::cmd()
        .arg("status")
        .arg(file)
        .args(["--store", &redis.url(), "--format", "json"])
        .output()
        .unwrap();
    serde_json::from_slice::<Value>(&out.stdout).unwrap_or_default()["runners"]
        .as_array()
        .map_or(0, Vec::len)
}

/// `flowrun history FILE --store URL --format json [more]`: the cluster's rows (it must succeed).
fn history(file: &Path, redis: &Redis, more: &[&str]) -> Vec<Value> {
    let out = common::cmd()
        .arg("history")
        .arg(file)
        .args(["--store", &redis.url(), "--format", "json"])
        .args(more)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `flowrun trigger FILE JOB --store URL [more]`: its exit code, stdout and stderr.
fn trigger(file: &Path, redis: &Redis, job: &str, more: &[&str]) -> (Option<i32>, String, String) {
    let out = common::cmd()
        .arg("trigger")
        .arg(file)
        .arg(job)
        .args(["--store", &redis.url()])
        .args(more)
        .env("FLOWRUN_ANSWER_TIMEOUT", "3s")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn trigger_with_store_fires_once_on_one_of_two_runners_and_waits_for_its_end() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let (dir, file) = common::flow(FIRED);
    let root = dir.path();
    let a = runner(&file, &redis, "a", root, &[]);
    let b = runner(&file, &redis, "b", root, &[]);
    wait_for(Duration::from_secs(20), "two runners' heartbeats", || {
        live_runners(&file, &redis) == 2
    });
    let fired = root.join("fired.txt");
    // Without --wait: the answer as through the control socket, the run's number.
    let (code, out, err) = trigger(&file, &redis, "hello", &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.trim(), "hello#1 started", "{err}");
    wait_for(Duration::from_secs(10), "the run's line", || {
        !lines_of(&fired).is_empty()
    });
    // With --wait: the run's end, and the command's exit code is its result.
    for n in 2..=6 {
        let (code, out, err) = trigger(&file, &redis, "hello", &["--wait"]);
        assert_eq!(code, Some(0), "{out}{err}");
        assert_eq!(out.trim(), format!("hello#{n} succeeded (exit 0)"), "{err}");
        assert_eq!(lines_of(&fired).len(), n as usize, "one run per trigger");
    }
    let (code, out, err) = trigger(&file, &redis, "bad", &["--wait"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(out.trim(), "bad#1 failed (exit 3)", "{err}");
    // An unknown job is refused before anything is sent.
    let (code, _, err) = trigger(&file, &redis, "nope", &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("`nope` is not a job of"), "{err}");
    // Each firing ran once, on one runner: the runners' own events say so, and the numbers are all different.
    let logs = [a.events.clone(), b.events.clone()];
    assert_eq!(a.stop(), Some(0));
    assert_eq!(b.stop(), Some(0));
    let lines = lines_of(&fired);
    assert_eq!(lines.len(), 6, "{lines:?}");
    let mut numbers: Vec<&str> = lines.iter().map(|l| l.split(' ').nth(1).unwrap()).collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), 6, "{lines:?}");
    let starts: usize = logs
        .iter()
        .map(|log| {
            common::events(&std::fs::read(log).unwrap())
                .iter()
                .filter(|e| e["event"] == "run.start" && e["job"] == "hello")
                .count()
        })
        .sum();
    assert_eq!(starts, 6);
}

#[test]
fn trigger_with_store_and_no_runner_to_take_it_says_so_and_never_fires_it_later() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let (dir, file) = common::flow(FIRED);
    let root = dir.path();
    let fired = root.join("fired.txt");
    // No runner at all: said at once, nothing sent.
    let started = Instant::now();
    let (code, out, err) = trigger(&file, &redis, "hello", &[]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("no runner of cluster `fired` is up"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // A runner with a heartbeat that does not answer (stopped; its lease is long): the command waits its bound,
    // says nobody took the request, and cancels it.
    let one = runner(&file, &redis, "one", root, &["--lease", "30s"]);
    wait_for(Duration::from_secs(20), "the runner's heartbeat", || {
        live_runners(&file, &redis) == 1
    });
    one.signal(libc::SIGSTOP);
    let started = Instant::now();
    let (code, out, err) = trigger(&file, &redis, "hello", &[]);
    let took = started.elapsed();
    one.signal(libc::SIGCONT);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains(
            "no runner of cluster `fired` took the request within 3.0s (1 with a heartbeat: one)"
        ),
        "{err}"
    );
    assert!(
        err.contains("`hello` was not fired, and will not be"),
        "{err}"
    );
    assert!(took < Duration::from_secs(10), "the bound is 3 s: {took:?}");
    // Continued, the runner takes the next request; the cancelled one never runs (not before, not after).
    let (code, out, err) = trigger(&file, &redis, "hello", &["--wait"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.starts_with("hello#") && out.contains("succeeded"),
        "{out}"
    );
    assert_eq!(one.stop(), Some(0));
    assert_eq!(lines_of(&fired).len(), 1, "{:?}", lines_of(&fired));
}

#[test]
fn the_api_lists_the_runners_of_its_cluster() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let (dir, file) = common::flow(FIRED);
    let root = dir.path();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let a = runner(&file, &redis, "a", root, &["--listen", &listen]);
    // A runner of another text of the file, in the same cluster.
    let edited = root.join("edited.yaml");
    std::fs::write(&edited, format!("{FIRED}\n# edited\n")).unwrap();
    let b = runner(&edited, &redis, "b", root, &[]);
    let get = || {
        let answer = web::request(port, "GET", "/api/v1/cluster", &[]);
        openapi::conforms(
            "GET",
            "/api/v1/cluster",
            answer.status,
            answer.header("content-type"),
            &answer.body,
        );
        answer
    };
    wait_for(Duration::from_secs(20), "both runners in the API", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && get().json()["runners"]
                .as_array()
                .is_some_and(|r| r.len() == 2)
    });
    let answer = get();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let doc = answer.json();
    assert_eq!(doc["cluster"], "fired");
    assert_eq!(doc["runner"], "a");
    let runners = doc["runners"].as_array().unwrap();
    let (ra, rb) = (&runners[0], &runners[1]);
    assert_eq!(
        (ra["id"].as_str(), rb["id"].as_str()),
        (Some("a"), Some("b"))
    );
    assert_eq!(ra["pid"], a.child.id());
    assert_eq!(rb["pid"], b.child.id());
    assert_eq!(ra["file_differs"], false);
    assert_eq!(rb["file_differs"], true, "b runs another text");
    assert_eq!(ra["live_runs"], 0);
    assert!(ra["heartbeat_age_ms"].as_u64().unwrap() < 2000);
    assert_eq!(ra["version"], env!("CARGO_PKG_VERSION"));
    // The same as `status --store --format json` gives.
    let status = common::cmd()
        .arg("status")
        .arg(&file)
        .args(["--store", &redis.url(), "--format", "json"])
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    for key in [
        "id",
        "host",
        "pid",
        "version",
        "file",
        "file_hash",
        "started",
        "lease_ms",
        "file_differs",
    ] {
        assert_eq!(status["runners"][0][key], ra[key], "{key}");
        assert_eq!(status["runners"][1][key], rb[key], "{key}");
    }
    assert_eq!(a.stop(), Some(0));
    assert_eq!(b.stop(), Some(0));
}

#[test]
fn a_runs_last_output_is_read_from_any_host() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let (dir, file) = common::flow(
        "name: talk\njobs:\n  say:\n    run: for i in $(seq 1 20000); do echo \"line $i\"; done\n",
    );
    let out = common::cmd()
        .arg(&file)
        .arg("--state")
        .arg(dir.path().join("s"))
        .args([
            "--store",
            &redis.url(),
            "--runner-id",
            "talker",
            "--progress",
            "never",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // From "another host": no state, only the store.
    let logs = common::cmd()
        .arg("logs")
        .arg(&file)
        .arg("say")
        .args(["--store", &redis.url(), "--state", "none"])
        .output()
        .unwrap();
    assert!(logs.status.success(), "{logs:?}");
    let text = String::from_utf8_lossy(&logs.stdout);
    assert!(text.len() as u64 <= 64 * 1024, "{} bytes", text.len());
    assert!(
        text.len() > 60 * 1024,
        "the last 64 KiB: {} bytes",
        text.len()
    );
    assert!(text.contains("line 20000\n"), "its last lines");
    assert!(!text.contains("line 1\n"), "not its first");
    let named = common::cmd()
        .arg("logs")
        .arg(&file)
        .arg("say#1")
        .args(["--store", &redis.url()])
        .output()
        .unwrap();
    assert_eq!(named.stdout, logs.stdout);
}

#[test]
fn stdin_readers_on_two_runners_take_a_shared_queue_through_its_capacity() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    // Capacity well below the messages: the producer waits for what the readers take out of their pipes.
    let (dir, file) = common::flow(
        r#"
name: sq
channels:
  tasks: { kind: queue, durable: true, capacity: 300 }
jobs:
  produce:
    run: seq 1 5000
    stdout: tasks
    trigger: { cron: "0 0 1 1 *" }
  read:
    run: cat >> "out-$RUNNER.txt"
    stdin: tasks
"#,
    );
    let root = dir.path();
    let a = runner(&file, &redis, "a", root, &[]);
    let b = runner(&file, &redis, "b", root, &[]);
    wait_for(Duration::from_secs(20), "two runners", || {
        live_runners(&file, &redis) == 2
    });
    let (code, out, err) = trigger(&file, &redis, "produce", &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    let lines = |id: &str| -> Vec<u64> {
        std::fs::read_to_string(root.join(format!("out-{id}.txt")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    };
    wait_for(Duration::from_secs(60), "every message read", || {
        lines("a").len() + lines("b").len() == 5000
    });
    assert_eq!(a.stop(), Some(0));
    assert_eq!(b.stop(), Some(0));
    let mut all = [lines("a"), lines("b")].concat();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=5000).collect::<Vec<u64>>(),
        "each once, none lost"
    );
    assert!(
        !lines("a").is_empty() && !lines("b").is_empty(),
        "both read"
    );
}

#[test]
fn a_firing_claimed_by_a_runner_that_died_before_starting_it_is_run_by_another() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let at = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let job = |head: &str, extra: &str| {
        format!(
            "name: orphan\n{head}jobs:\n  once:\n    run: echo \"$RUNNER $FLOWRUN_RUN\" >> ran.txt\n    trigger: [{{ at: \"{at}\" }}, {{ cron: \"0 0 1 1 *\" }}]\n    misfire_grace: 1h\n{extra}"
        )
    };
    // The first runner claims the firing, then waits for a worker its blocker holds: claimed, not started. The
    // second runs the same job, with workers to spare.
    let stuck = root.join("stuck.yaml");
    std::fs::write(
        &stuck,
        job(
            "executors: { one: { max_workers: 1 } }\n",
            "    executor: one\n  blocker: { run: sleep 60, executor: one }\n",
        ),
    )
    .unwrap();
    let free = root.join("free.yaml");
    std::fs::write(&free, job("", "")).unwrap();
    let mut first = runner(&stuck, &redis, "first", root, &[]);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    wait_for(Duration::from_secs(20), "the first runner's claim", || {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("flowrun:orphan:claim:*")
            .query(&mut conn)
            .unwrap();
        !keys.is_empty()
    });
    let second = runner(&free, &redis, "second", root, &[]);
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let ran = || std::fs::read_to_string(root.join("ran.txt")).unwrap_or_default();
    // Taken over once the first one's heartbeat is gone (lease 2 s), and run, with the number it was claimed with.
    wait_for(
        Duration::from_secs(20),
        "the firing run by the second runner",
        || !ran().is_empty(),
    );
    assert_eq!(ran().trim(), "second 1");
    assert_eq!(second.stop(), Some(0));
    assert_eq!(ran().lines().count(), 1, "once");
}

#[test]
fn a_redis_stall_longer_than_the_lease_leaves_every_tick_run_or_said_missed() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let (dir, file) = common::flow(TICKS);
    let root = dir.path();
    let a = runner(&file, &redis, "a", root, &[]);
    let b = runner(&file, &redis, "b", root, &[]);
    let out = root.join("ticks.txt");
    wait_for(Duration::from_secs(20), "the first ticks", || {
        ticks(&out).len() >= 2
    });
    // Redis answers no client for 4 s: both runners' 2 s leases lapse.
    let stalled_at = chrono::Utc::now().timestamp();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(4000)
        .arg("ALL")
        .query(&mut conn)
        .unwrap();
    wait_for(Duration::from_secs(30), "ticks after the stall", || {
        ticks(&out)
            .iter()
            .any(|t| seconds_of(&t.0) > stalled_at + 8)
    });
    // Read once the runners ended: a miss waits for its claim until a heartbeat is renewed.
    let (ea_path, eb_path) = (a.events.clone(), b.events.clone());
    assert_eq!(a.stop(), Some(0));
    assert_eq!(b.stop(), Some(0));
    let read = |p: &Path| common::events(&std::fs::read(p).unwrap_or_default());
    let (ea, eb) = (read(&ea_path), read(&eb_path));
    let lines = ticks(&out);
    let ran: std::collections::HashSet<i64> = lines.iter().map(|l| seconds_of(&l.0)).collect();
    let mut said: std::collections::HashSet<i64> = std::collections::HashSet::new();
    let mut skipped: std::collections::HashSet<i64> = std::collections::HashSet::new();
    for e in ea.iter().chain(&eb) {
        let at = || seconds_of(e["scheduled"].as_str().unwrap());
        if e["event"] == "run.missed" {
            said.insert(at());
        }
        if e["event"] == "run.skipped" {
            skipped.insert(at());
        }
    }
    exactly_once(&lines, &[(stalled_at - 1, stalled_at + 8)]);
    let (first, last) = (*ran.iter().min().unwrap(), stalled_at + 8);
    for s in first..=last {
        assert!(
            ran.contains(&s) || said.contains(&s),
            "the tick at {s} was neither run nor said missed (ran {ran:?}, said {said:?}, skipped {skipped:?})"
        );
    }
}

#[test]
fn a_trigger_a_frozen_runner_popped_is_sent_again_to_a_live_one() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let (dir, file) = common::flow(FIRED);
    let root = dir.path();
    // The frozen runner alone first, stopped while it waits on the list: the request it pops gets no answer.
    let frozen = runner(&file, &redis, "frozen", root, &["--lease", "60s"]);
    wait_for(Duration::from_secs(20), "the first runner", || {
        live_runners(&file, &redis) == 1
    });
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    wait_for(Duration::from_secs(20), "its wait on the list", || {
        let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn).unwrap();
        clients.contains("cmd=blpop")
    });
    frozen.signal(libc::SIGSTOP);
    let (file2, url) = (file.clone(), redis.url());
    let asked = std::thread::spawn(move || {
        common::cmd()
            .arg("trigger")
            .arg(&file2)
            .arg("hello")
            .args(["--store", &url])
            .env("FLOWRUN_ANSWER_TIMEOUT", "15s")
            .output()
            .unwrap()
    });
    // A live runner comes: the request is sent again for it.
    let live = runner(&file, &redis, "live", root, &[]);
    let out = asked.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let fired = || std::fs::read_to_string(root.join("fired.txt")).unwrap_or_default();
    assert_eq!(fired().trim(), "live 1");
    // Continued: what it popped was cancelled, and never fires.
    frozen.signal(libc::SIGCONT);
    assert_eq!(frozen.stop(), Some(0));
    assert_eq!(live.stop(), Some(0));
    assert_eq!(fired().lines().count(), 1, "{}", fired());
}

#[test]
fn the_cluster_example_runs_on_two_runners() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // The example as it is, but its crons moved to a year's start: here `trigger --store` fires them, so no minute
    // turning during the test adds a firing.
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/cluster.yaml"),
    )
    .unwrap();
    assert!(text.contains("\"0 * * * * *\"") && text.contains("\"30 * * * * *\""));
    let file = root.join("cluster.yaml");
    let quiet = text
        .replace("\"0 * * * * *\"", "\"0 0 1 1 *\"")
        .replace("\"30 * * * * *\"", "\"0 0 1 1 *\"");
    std::fs::write(&file, quiet).unwrap();
    let one = runner(&file, &redis, "one", root, &[]);
    let two = runner(&file, &redis, "two", root, &[]);
    wait_for(Duration::from_secs(20), "two runners", || {
        live_runners(&file, &redis) == 2
    });
    for job in ["split", "report"] {
        let (code, out, err) = trigger(&file, &redis, job, &[]);
        assert_eq!(code, Some(0), "{out}{err}");
    }
    let worked = |events: &[Value]| -> u64 {
        events
            .iter()
            .filter(|e| e["event"] == "output" && e["job"] == "work")
            .filter_map(|e| e["line"].as_str()?.split(' ').nth(1)?.parse::<u64>().ok())
            .sum()
    };
    let summaries = |events: &[Value]| {
        events
            .iter()
            .filter(|e| e["event"] == "run.start" && e["job"] == "summary")
            .count()
    };
    wait_for(
        Duration::from_secs(30),
        "the 100 items worked and the summary",
        || {
            let (a, b) = (one.events(), two.events());
            worked(&a) + worked(&b) == 100 && summaries(&a) + summaries(&b) == 1
        },
    );
    let (a, b) = (one.events(), two.events());
    assert_eq!(one.stop(), Some(0));
    assert_eq!(two.stop(), Some(0));
    assert_eq!(worked(&a) + worked(&b), 100);
    assert_eq!(
        summaries(&a) + summaries(&b),
        1,
        "the join fired once for the cluster"
    );
}

#[test]
fn a_claim_is_kept_for_the_grace_the_lease_and_a_minute_then_goes() {
    let Some(redis) = Redis::start(false) else {
        return;
    };
    let (dir, file) = common::flow(TICKS);
    let one = runner(&file, &redis, "one", dir.path(), &[]);
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let claims = |conn: &mut redis::Connection| -> Vec<String> {
        redis::cmd("KEYS")
            .arg("flowrun:ticks:claim:*")
            .query(conn)
            .unwrap()
    };
    wait_for(Duration::from_secs(20), "a claim", || {
        !claims(&mut conn).is_empty()
    });
    assert_eq!(one.stop(), Some(0));
    // misfire_grace 1 s + lease 2 s + 60 s: no key lives for ever.
    for key in claims(&mut conn) {
        let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
        assert!((55_000..=63_000).contains(&ttl), "{key}: {ttl} ms");
    }
}

#[test]
fn history_rows_a_clean_stop_could_not_write_to_the_cluster_are_written_at_the_next_start() {
    let Some(mut redis) = Redis::start(false) else {
        return;
    };
    let (dir, file) = common::flow("name: spill\njobs:\n  a: { run: sleep 2 }\n");
    let state = dir.path().join("s");
    let start = |redis: &Redis| {
        common::cmd()
            .arg(&file)
            .arg("--state")
            .arg(&state)
            .args([
                "--store",
                &redis.url(),
                "--runner-id",
                "solo",
                "--log-format",
                "json",
            ])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = start(&redis);
    wait_for(
        Duration::from_secs(20),
        "the run's row in the cluster",
        || {
            history(&file, &redis, &[])
                .iter()
                .any(|r| r["outcome"] == "running")
        },
    );
    // Redis goes while the run lives: its end cannot reach the cluster, and the runner's work ends.
    redis.kill();
    let out = first.wait_with_output().unwrap();
    let notices = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{notices}");
    let spill = std::fs::read_dir(state.join("cluster"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("unwritten.jsonl"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("kept for the next start: {notices}"));
    // Back (without its data): the next start writes them first, and its file goes.
    redis.up();
    let second = start(&redis).wait_with_output().unwrap();
    assert!(second.status.success(), "{second:?}");
    assert!(!spill.exists(), "written, and its file gone");
    let rows = history(&file, &redis, &["--limit", "0"]);
    let first_run = rows
        .iter()
        .find(|r| r["run"] == 1)
        .expect("the first start's run");
    assert_eq!(first_run["outcome"], "succeeded");
    assert!(
        rows.iter().any(|r| r["run"] == 2),
        "the second start's run: {rows:?}"
    );
}
