//! A good citizen under systemd (SPEC §7): a datagram socket stands in for systemd's notify socket; SIGHUP
//! reloads; a stop asked for exits 0 when it went cleanly and 1 when a run had to be killed after its grace; the
//! README's unit passes `systemd-analyze verify` where that tool is.

mod common;

use serde_json::Value;
use std::io::BufRead;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// How long a test waits for a datagram or an event before it fails (a bound, not a pause).
const BOUND: Duration = Duration::from_secs(20);

/// A runner with its event log read line by line.
struct Runner {
    child: std::process::Child,
    events: std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
    seen: Vec<Value>,
}

impl Runner {
    fn start(file: &std::path::Path, env: &[(&str, &str)]) -> Runner {
        let mut cmd = common::cmd();
        cmd.arg(file)
            .args(["--log-format", "json", "--state"])
            .arg(file.parent().unwrap().join("state"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let events = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        Runner {
            child,
            events,
            seen: Vec::new(),
        }
    }

    /// Read events until one satisfies `want`.
    fn wait_for(&mut self, want: impl Fn(&Value) -> bool) -> Value {
        for line in self.events.by_ref() {
            let e: Value = serde_json::from_str(&line.unwrap()).unwrap();
            self.seen.push(e.clone());
            if want(&e) {
                return e;
            }
        }
        panic!("the runner ended first: {:#?}", self.seen);
    }

    fn signal(&self, signal: i32) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Its exit code, and every event.
    fn finish(mut self) -> (Option<i32>, Vec<Value>) {
        for line in self.events.by_ref() {
            self.seen
                .push(serde_json::from_str(&line.unwrap()).unwrap());
        }
        (self.child.wait().unwrap().code(), self.seen)
    }
}

/// The next datagram that contains `key`, within [`BOUND`].
fn notified(socket: &UnixDatagram, key: &str, got: &mut Vec<String>) -> String {
    let mut buf = [0u8; 4096];
    loop {
        let n = socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no {key} within {BOUND:?} ({e}); got {got:#?}"));
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        got.push(text.clone());
        if text.lines().any(|l| l == key) {
            return text;
        }
    }
}

#[test]
fn the_runner_speaks_the_notify_protocol_and_runs_do_not_inherit_its_socket() {
    let (dir, file) = common::flow(
        "jobs:\n  svc:\n    run: 'echo \"${NOTIFY_SOCKET:-unset} ${WATCHDOG_USEC:-unset}\"; exec sleep 60'\n",
    );
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(BOUND)).unwrap();
    let mut runner = Runner::start(
        &file,
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let mut got = Vec::new();
    let ready = notified(&socket, "READY=1", &mut got);
    assert!(ready.contains("STATUS="), "{ready}");
    // Every 100 ms (half of WATCHDOG_USEC), while the dispatcher answers; with the status.
    let alive = notified(&socket, "WATCHDOG=1", &mut got);
    assert!(alive.contains("STATUS=1 jobs: 1 running"), "{alive}");
    runner.wait_for(|e| e["event"] == "output" && e["job"] == "svc");
    // SIGHUP reloads the file (a job added), around RELOADING=1 and READY=1; the runner goes on.
    std::fs::write(
        &file,
        "jobs:\n  svc:\n    run: 'echo \"${NOTIFY_SOCKET:-unset} ${WATCHDOG_USEC:-unset}\"; exec sleep 60'\n  added:\n    run: 'true'\n",
    )
    .unwrap();
    runner.signal(libc::SIGHUP);
    let reloading = notified(&socket, "RELOADING=1", &mut got);
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    notified(&socket, "READY=1", &mut got);
    let applied = runner.wait_for(|e| e["event"] == "reload.applied");
    assert_eq!(applied["added"], serde_json::json!(["added"]));
    runner.wait_for(|e| e["event"] == "run.exit" && e["job"] == "added");
    runner.signal(libc::SIGTERM);
    notified(&socket, "STOPPING=1", &mut got);
    let (code, events) = runner.finish();
    assert_eq!(code, Some(0), "a clean stop asked for");
    assert_eq!(common::output_lines(&events, "svc"), ["unset unset"]);
}

#[test]
fn sighup_without_systemd_reloads_and_a_bad_text_keeps_the_old_plan() {
    let (_dir, file) = common::flow("jobs:\n  svc:\n    run: exec sleep 60\n");
    let mut runner = Runner::start(&file, &[]);
    runner.wait_for(|e| e["event"] == "run.start");
    std::fs::write(&file, "jobs:\n  svc:\n    run: [unclosed\n").unwrap();
    runner.signal(libc::SIGHUP);
    let rejected = runner.wait_for(|e| e["event"] == "reload.rejected");
    assert!(rejected["reason"].as_str().is_some(), "{rejected}");
    runner.signal(libc::SIGTERM);
    let (code, events) = runner.finish();
    assert_eq!(code, Some(0));
    let stopped = events
        .iter()
        .find(|e| e["event"] == "runner.stopping")
        .unwrap();
    assert_eq!(stopped["reason"], "SIGTERM", "SIGHUP did not stop it");
}

#[test]
fn a_stop_asked_for_is_0_after_failures_and_1_when_a_run_outlived_its_grace() {
    // A run failed for good hours before: a clean stop is still 0 (the history keeps the failure).
    let (_dir, file) = common::flow(
        "jobs:\n  bad: { run: 'exit 3' }\n  svc: { run: exec sleep 60, trigger: { after: bad, status: failure } }\n",
    );
    let mut runner = Runner::start(&file, &[]);
    runner.wait_for(|e| e["event"] == "run.start" && e["job"] == "svc");
    runner.signal(libc::SIGTERM);
    let (code, events) = runner.finish();
    assert_eq!(code, Some(0));
    assert_eq!(common::summary(&events)["jobs"]["bad"]["failed"], 1);
    // A run that ignores SIGTERM is killed after its stop_grace: that stop did not go cleanly.
    let (_dir, file) = common::flow(
        "jobs:\n  stubborn:\n    run: trap '' TERM; echo up; while :; do sleep 1; done\n    stop_grace: 300ms\n",
    );
    let mut runner = Runner::start(&file, &[]);
    runner.wait_for(|e| e["event"] == "output" && e["job"] == "stubborn");
    runner.signal(libc::SIGTERM);
    let (code, events) = runner.finish();
    assert_eq!(code, Some(1), "killed after its grace");
    let exit = events.iter().find(|e| e["event"] == "run.exit").unwrap();
    assert_eq!(exit["signal"], "SIGKILL");
}

#[test]
fn the_work_ending_by_itself_and_for_keep_their_codes() {
    let (_dir, file) = common::flow("jobs:\n  bad: { run: 'exit 3' }\n");
    let (code, _) = common::run_json(&file, &["--state", "none"]);
    assert_eq!(
        code,
        Some(1),
        "a run failed for good and the work ended by itself"
    );
    let (_dir, file) = common::flow(
        "jobs:\n  bad: { run: 'exit 3' }\n  svc: { run: exec sleep 60, trigger: { after: bad, status: failure } }\n",
    );
    let (code, _) = common::run_json(&file, &["--state", "none", "--for", "1s"]);
    assert_eq!(code, Some(1), "--for keeps the codes of SPEC §3");
}

/// The unit in the README, as a user would copy it.
fn readme_unit() -> String {
    let readme = include_str!("../README.md");
    let start = readme
        .find("```ini\n[Unit]")
        .expect("the README shows a unit");
    let text = &readme[start + "```ini\n".len()..];
    text[..text.find("```").unwrap()].to_string()
}

#[test]
fn the_readme_unit_is_a_notify_service_that_reloads() {
    let unit = readme_unit();
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillMode=mixed",
    ] {
        assert!(unit.lines().any(|l| l == line), "no `{line}` in\n{unit}");
    }
    // A user unit cannot wait for a system target.
    assert!(!unit.contains("network-online.target"), "{unit}");
    let Ok(which) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    assert!(which.status.success());
    let dir = tempfile::tempdir().unwrap();
    // Its ExecStart made concrete: the binary under test, a workflow that exists.
    let flows = dir.path().join("nightly.yaml");
    std::fs::write(&flows, "jobs:\n  a: { run: 'true' }\n").unwrap();
    let concrete = unit
        .replace("%h/.cargo/bin/flowrun", common::bin().to_str().unwrap())
        .replace("%h/flows/nightly.yaml", flows.to_str().unwrap());
    let path = dir.path().join("nightly.service");
    std::fs::write(&path, concrete).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    // Without a running systemd (a container) it cannot load the default dependencies; what matters is that it
    // finds nothing wrong in the unit itself.
    let own: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("nightly.service"))
        .collect();
    assert!(own.is_empty(), "{said}");
}
