//! Several runners sharing one real Redis (SPEC §9), as processes on this machine with their own ids and state
//! folders: a per-second cron runs each tick exactly once across three runners while one is SIGKILLed and one
//! SIGSTOPped past its lease; Redis itself killed and restarted mid-run (append-only file) runs nothing twice and
//! reports the firings it missed; a SIGKILLed runner's live run is marked interrupted by another and tried again
//! there (`failover`); `status --store` lists the runners from any host and flags one running another file.
//!
//! The tests start `redis-server` (Debian's package) on free ports. Without it they say they are skipped and pass,
//! unless `FLOWRUN_REQUIRE_REDIS=1` (CI sets it). The cron tests run for wall-clock seconds: time is what they test;
//! every wait for a condition polls it against a deadline.

mod common;

use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of a test, on a free port, in a folder of its own.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    appendonly: bool,
}

fn redis_server() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("redis-server"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("FLOWRUN_REQUIRE_REDIS").as_deref() == Ok("1") {
            panic!(
                "FLOWRUN_REQUIRE_REDIS=1 and no redis-server on PATH: apt-get install redis-server"
            );
        }
        eprintln!("skipped: no redis-server on PATH (apt-get install redis-server to run it)");
    }
    found
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    fn start(appendonly: bool) -> Option<Redis> {
        redis_server()?;
        let mut redis = Redis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            appendonly,
        };
        redis.up();
        Some(redis)
    }

    /// (Re)start the server on its port and folder, and wait until it answers.
    fn up(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", if self.appendonly { "yes" } else { "no" }])
            .args(["--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.answers() {
            assert!(Instant::now() < deadline, "redis-server did not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers(&self) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 16];
        s.write_all(b"PING\r\n").is_ok()
            && s.read(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

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
        .args(["--store", &redis.url(), "--runner-id", id, "--lease", "2s"])
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
    let history = common::cmd()
        .arg("history")
        .arg(&file)
        .args(["--store", &redis.url(), "--limit", "0", "--format", "json"])
        .output()
        .unwrap();
    assert!(history.status.success(), "{history:?}");
    let rows: Vec<Value> = serde_json::from_slice(&history.stdout).unwrap();
    let runs: Vec<&Value> = rows.iter().filter(|r| r["run"].is_u64()).collect();
    assert_eq!(runs.len(), lines.len(), "one history row per run");
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
        let out = common::cmd()
            .arg("history")
            .arg(&file)
            .args(["--store", &redis.url(), "--format", "json"])
            .output()
            .unwrap();
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        rows.iter().any(|r| r["outcome"] == "running")
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
    let history = common::cmd()
        .arg("history")
        .arg(&file)
        .args(["--store", &redis.url(), "--tries", "--format", "json"])
        .output()
        .unwrap();
    let rows: Vec<Value> = serde_json::from_slice(&history.stdout).unwrap();
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
    wait_for(Duration::from_secs(30), "six joins", || {
        lines("b.txt").len() >= 6
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
        let out = common::cmd()
            .arg("status")
            .arg(&file)
            .args(["--store", &redis.url(), "--format", "json"])
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout)
            .is_ok_and(|s| s["runners"].as_array().is_some_and(|r| r.len() == 3))
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
    let _ = child.kill();
    let _ = child.wait();
}
