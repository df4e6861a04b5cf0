//! Hostile input to a runner (issue 21): files a run's start reads that are not files (a FIFO, an endless
//! device), environments Linux refuses, a state folder somebody else controls, a disk that fills. Each test drives
//! the real binary; a test that could hang on a runner that blocks is bounded by a timeout, so it fails instead.

mod common;

use common::{diagnostics, events, flow, output_lines};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The runner to its end with JSON events, failing (not hanging) when it does not end within `limit`.
fn run_bounded(file: &Path, extra: &[&str], limit: Duration) -> (Option<i32>, Vec<Value>) {
    let mut cmd = assert_cmd::Command::from_std(common::cmd());
    let out = cmd
        .arg(file)
        .args(["--log-format", "json"])
        .args(extra)
        .timeout(limit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.code().is_some() || !stderr.is_empty(),
        "the runner did not end within {limit:?}"
    );
    (out.status.code(), events(&out.stderr))
}

/// A runner still alive after `secs` is killed, so a test of a runner that hangs fails instead of hanging. By
/// pidfd: the signal can only reach that process, never one that reused its pid.
fn watchdog(child: &std::process::Child, secs: u64) {
    // SAFETY: pidfd_open of a child this test started and has not reaped yet.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0u32) } as i32;
    if fd < 0 {
        return;
    }
    std::thread::spawn(move || {
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on the pidfd this thread owns; it is readable once the process has ended.
        let ended = unsafe { libc::poll(&mut poll, 1, (secs * 1000) as i32) } > 0;
        if !ended {
            // SAFETY: a signal through the pidfd, then its close.
            // (A null pointer, not a 0 integer: a variadic call would leave the pointer's upper half undefined, and
            // the kernel then refused the signal for a bad address.)
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd,
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0u32,
                )
            };
        }
        // SAFETY: closing the descriptor this thread owns.
        unsafe { libc::close(fd) };
    });
}

fn exit_reason<'a>(ev: &'a [Value], job: &str) -> &'a str {
    ev.iter()
        .find(|e| e["event"] == "run.exit" && e["job"] == job)
        .unwrap_or_else(|| panic!("no run.exit of {job}: {ev:#?}"))["reason"]
        .as_str()
        .unwrap_or_default()
}

const NEVER: &str = "{ cron: \"0 0 1 1 *\", timezone: UTC }";

/// A runner with state in `dir`, started and ready for `flowrun trigger`; ended with `finish`.
struct Live {
    child: std::process::Child,
    events: std::io::BufReader<std::process::ChildStderr>,
    seen: Vec<Value>,
    file: std::path::PathBuf,
    state: std::path::PathBuf,
}

impl Live {
    fn start(dir: &Path, file: &Path) -> Live {
        let state = dir.join("state");
        let (child, events, seen) =
            common::start_until(file, &["--state", state.to_str().unwrap()], |e| {
                e["event"] == "runner.start"
            });
        // A runner that hangs is ended, so its test fails rather than hangs.
        watchdog(&child, 120);
        Live {
            child,
            events,
            seen,
            file: file.to_path_buf(),
            state,
        }
    }

    /// `flowrun trigger FILE JOB --wait`: its exit code (`None` when it did not end within 150 s: a runner that
    /// hangs fails the test, the watchdog ends the runner first).
    fn trigger(&self, job: &str) -> Option<i32> {
        let file = self.file.to_str().unwrap();
        let mut cmd = assert_cmd::Command::from_std(common::cmd());
        cmd.args(["trigger", file, job, "--wait", "--state"])
            .arg(&self.state)
            .timeout(Duration::from_secs(150));
        cmd.output().ok()?.status.code()
    }

    /// `flowrun stop FILE`, then every event of the runner and its exit code.
    fn finish(mut self) -> (Option<i32>, Vec<Value>) {
        let file = self.file.to_str().unwrap();
        assert!(common::on_state(&["stop", file], &self.state)
            .status
            .success());
        let seen = common::rest_of(self.events, self.seen);
        (self.child.wait().unwrap().code(), seen)
    }
}

#[test]
fn an_env_file_that_becomes_a_fifo_or_a_device_fails_its_run_and_nothing_else() {
    let (dir, file) = flow(&format!(
        "jobs:\n  fifo:\n    run: 'true'\n    env_file: gate.env\n    trigger: {NEVER}\n  zero:\n    run: 'true'\n    env_file: zero.env\n    trigger: {NEVER}\n  fine:\n    run: echo fine\n    trigger: {NEVER}\n"
    ));
    for name in ["gate.env", "zero.env"] {
        std::fs::write(dir.path().join(name), "A=1\n").unwrap();
    }
    let live = Live::start(dir.path(), &file);
    // Swapped while the runner runs: a FIFO with no writer held the dispatcher in `open` for ever (no timer, no
    // signal heard); /dev/zero was read into memory without end.
    std::fs::remove_file(dir.path().join("gate.env")).unwrap();
    common::fifo(dir.path(), "gate.env");
    std::fs::remove_file(dir.path().join("zero.env")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.env")).unwrap();
    assert_eq!(live.trigger("fifo"), Some(1));
    assert_eq!(live.trigger("zero"), Some(1));
    assert_eq!(live.trigger("fine"), Some(0), "the runner goes on");
    let (code, ev) = live.finish();
    // Stopped on request, cleanly: 0 (SPEC §7); the failed runs are in the events and the history.
    assert_eq!(code, Some(0));
    for job in ["fifo", "zero"] {
        let reason = exit_reason(&ev, job);
        assert!(reason.contains("not a regular file"), "{job}: {reason}");
    }
    assert_eq!(output_lines(&ev, "fine"), ["fine"]);
    // Validation says it before anything runs, at the file's name.
    let found = diagnostics(&file);
    let said: Vec<(u64, u64)> = found
        .iter()
        .filter(|d| d.0 == "invalid-value" && d.3.contains("not a regular file"))
        .map(|d| (d.1, d.2))
        .collect();
    assert_eq!(said, [(4, 15), (8, 15)], "{found:#?}");
}

#[test]
fn an_env_file_over_its_bound_fails_its_run_with_the_reason() {
    let (dir, file) = flow(&format!(
        "jobs:\n  big:\n    run: 'true'\n    env_file: big.env\n    trigger: {NEVER}\n"
    ));
    std::fs::write(dir.path().join("big.env"), "A=1\n").unwrap();
    let live = Live::start(dir.path(), &file);
    // A manual firing whose env file is read first is still answered with its run, not `queued`.
    let file_arg = file.to_str().unwrap();
    let out = common::on_state(&["trigger", file_arg, "big"], &live.state);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "big#1 started\n");
    std::fs::write(
        dir.path().join("big.env"),
        format!("A={}\n", "x".repeat(2 << 20)),
    )
    .unwrap();
    assert_eq!(live.trigger("big"), Some(1));
    let (_, ev) = live.finish();
    let last = ev
        .iter()
        .rev()
        .find(|e| e["event"] == "run.exit" && e["job"] == "big")
        .unwrap();
    assert!(last["reason"]
        .as_str()
        .is_some_and(|r| r.contains("larger than 1024 KiB")));
    assert!(diagnostics(&file)
        .iter()
        .any(|d| d.0 == "invalid-value" && d.3.contains("at most 1024 KiB")));
}

#[test]
fn an_environment_variable_linux_refuses_is_said_by_name() {
    // From an env file (known at the run's start): the run fails naming the variable.
    let (dir, file) = flow("jobs:\n  wide:\n    run: 'true'\n    env_file: wide.env\n");
    std::fs::write(
        dir.path().join("wide.env"),
        format!("WIDE={}\n", "x".repeat(200 * 1024)),
    )
    .unwrap();
    let (code, ev) = run_bounded(&file, &["--state", "none"], Duration::from_secs(60));
    assert_eq!(code, Some(1));
    let reason = exit_reason(&ev, "wide");
    assert!(
        reason.contains("WIDE") && reason.contains("128 KiB"),
        "{reason}"
    );
    // In the file itself: validation says so, at the value.
    let (_dir, file) = flow(&format!(
        "jobs:\n  wide:\n    run: 'true'\n    env:\n      WIDE: {}\n",
        "x".repeat(200 * 1024)
    ));
    let found = diagnostics(&file);
    assert!(
        found
            .iter()
            .any(|d| d.0 == "invalid-value" && d.1 == 5 && d.2 == 13 && d.3.contains("WIDE")),
        "{found:#?}"
    );
}

#[test]
fn a_join_of_many_jobs_gives_an_upstream_that_fits_and_says_what_it_left_out() {
    let n = 1200;
    let mut yaml = String::from("jobs:\n");
    for i in 0..n {
        // Each prints, so each entry names its log file (the path makes the entries long).
        yaml.push_str(&format!("  j{i}: {{ run: 'echo {i}' }}\n"));
    }
    let names: Vec<String> = (0..n).map(|i| format!("j{i}")).collect();
    yaml.push_str(&format!(
        "  all:\n    run: printf '%s' \"$FLOWRUN_UPSTREAM\" | wc -c; printf '%s' \"$FLOWRUN_UPSTREAM\" | grep -o '\"omitted\":[0-9]*'\n    trigger: {{ after: [{}] }}\n",
        names.join(", ")
    ));
    let (_dir, file) = flow(&yaml);
    let (code, ev) = run_bounded(&file, &[], Duration::from_secs(300));
    // The run started (it could not: "Argument list too long"), with the entries that fit and a count of the rest.
    assert_eq!(code, Some(0), "{:#?}", exit_reason(&ev, "all"));
    let lines = output_lines(&ev, "all");
    let bytes: usize = lines[0].trim().parse().unwrap();
    assert!(bytes < 128 * 1024, "{bytes}");
    let omitted: usize = lines[1].trim_start_matches("\"omitted\":").parse().unwrap();
    assert!(omitted > 0 && omitted < n, "{omitted}");
    assert!(ev.iter().any(|e| e["event"] == "notice"
        && e["reason"]
            .as_str()
            .is_some_and(|m| m.contains("FLOWRUN_UPSTREAM"))));
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The runner on `state` is refused (exit 2): what it said.
fn refused(file: &Path, state: &Path) -> String {
    let out = common::cmd()
        .arg(file)
        .args(["--state", state.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    err
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn a_state_folder_of_another_user_is_refused_and_nothing_is_written_through_its_symlinks() {
    if !is_root() {
        eprintln!("skipped: making a folder of another user needs root");
        return;
    }
    let (dir, file) = flow("jobs:\n  a:\n    run: echo hi\n");
    let state = dir.path().join("theirs");
    std::fs::create_dir(&state).unwrap();
    chmod(&state, 0o777);
    let precious = dir.path().join("precious");
    std::fs::write(&precious, "keep").unwrap();
    std::os::unix::fs::symlink(&precious, state.join("runner.lock")).unwrap();
    // SAFETY: chown of a path this test made, to `nobody`.
    let c = std::ffi::CString::new(state.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);
    let err = refused(&file, &state);
    assert!(err.contains("belongs to uid 65534"), "{err}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep");
    // One of ours that anybody may write is refused too.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    chmod(&open, 0o777);
    assert!(refused(&file, &open).contains("anybody may write"));
}

#[test]
fn a_planted_symlink_is_never_written_through() {
    let (dir, file) = flow("jobs:\n  a:\n    run: echo secret-output\n");
    let state = dir.path().join("state");
    let precious = dir.path().join("precious");
    std::fs::write(&precious, "keep").unwrap();
    std::fs::create_dir_all(state.join("logs/a")).unwrap();
    std::os::unix::fs::symlink(&precious, state.join("logs/a/1.log")).unwrap();
    let (code, ev) = common::run_json(&file, &["--state", state.to_str().unwrap()]);
    assert_eq!(code, Some(0));
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep");
    assert!(
        ev.iter().any(|e| e["event"] == "notice"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("cannot write the log"))),
        "{ev:#?}"
    );
    // A job folder that is a symlink out of the state is refused as well.
    std::fs::remove_dir_all(state.join("logs/a")).unwrap();
    std::os::unix::fs::symlink(dir.path(), state.join("logs/a")).unwrap();
    common::run_json(&file, &["--state", state.to_str().unwrap()]);
    assert!(!dir.path().join("2.log").exists());
}

#[test]
fn pruning_deletes_only_log_files_under_the_state_folder() {
    let (dir, file) = flow("jobs:\n  a:\n    run: echo hi\n");
    let state = dir.path().join("state");
    assert_eq!(
        common::run_json(&file, &["--state", state.to_str().unwrap()]).0,
        Some(0)
    );
    let precious = dir.path().join("precious/file");
    std::fs::create_dir_all(precious.parent().unwrap()).unwrap();
    std::fs::write(&precious, "keep").unwrap();
    let ours = state.join("logs/a/1.log");
    assert!(ours.exists());
    // Rows that ended long ago: one names a file outside the folder (written by hand, or by a hostile user).
    let db = rusqlite::Connection::open(state.join("state.db")).unwrap();
    for (log, run) in [
        (precious.to_str().unwrap(), 90),
        (ours.to_str().unwrap(), 91),
    ] {
        db.execute(
            "INSERT INTO runs (job, run, outcome, started, ended, log) VALUES ('a', ?1, 'succeeded', \
             '2020-01-01T00:00:00.000000Z', '2020-01-01T00:00:01.000000Z', ?2)",
            rusqlite::params![run, log],
        )
        .unwrap();
    }
    drop(db);
    assert_eq!(
        common::run_json(&file, &["--state", state.to_str().unwrap()]).0,
        Some(0)
    );
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep");
    assert!(precious.parent().unwrap().exists());
    assert!(!ours.exists(), "the old log under logs/ is pruned");
}

#[test]
fn state_files_are_private_and_a_shared_folder_keeps_its_mode() {
    let (dir, file) = flow(&format!(
        "jobs:\n  a:\n    run: echo hi\n    trigger: [start, {NEVER}]\n"
    ));
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o2775);
    std::fs::write(shared.join("notes.txt"), "the project's").unwrap();
    let state = shared.to_str().unwrap();
    for _ in 0..2 {
        let (child, events, seen) =
            common::start_until(&file, &["--state", state], |e| e["event"] == "run.exit");
        // While it runs: the database, its WAL and shared memory, the lock, the socket and the log.
        for name in [
            "state.db",
            "state.db-wal",
            "state.db-shm",
            "runner.lock",
            "control.sock",
        ] {
            assert_eq!(mode(&shared.join(name)) & 0o777, 0o600, "{name}");
        }
        assert_eq!(mode(&shared.join("logs")) & 0o777, 0o700);
        assert_eq!(mode(&shared.join("logs/a")) & 0o777, 0o700);
        assert_eq!(mode(&shared.join("logs/a/1.log")), 0o600);
        let stop = common::on_state(&["stop", file.to_str().unwrap()], &shared);
        assert!(stop.status.success());
        let mut child = child;
        common::rest_of(events, seen);
        child.wait().unwrap();
        assert_eq!(
            mode(&shared),
            0o2775,
            "the shared folder keeps its mode and setgid"
        );
    }
}

/// A 2 MiB filesystem of its own (tmpfs), unmounted when dropped; `None` where mounting is not allowed (not
/// root): the test then says it is skipped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount() -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: a small filesystem cannot be mounted here (needs root)");
            return None;
        }
        Some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Another process fills it: written until the disk says no.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path().join("filler")).unwrap();
        let block = vec![0u8; 16 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.path().join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// The events of a runner until `until` says stop (bounded: the runner's stream ending is a failure).
fn read_until(
    events: &mut std::io::BufReader<std::process::ChildStderr>,
    seen: &mut Vec<Value>,
    until: impl Fn(&Value) -> bool,
) {
    use std::io::BufRead;
    loop {
        let mut line = String::new();
        assert!(
            events.read_line(&mut line).unwrap() > 0,
            "the runner ended early: {seen:#?}"
        );
        let e: Value = serde_json::from_str(&line).unwrap();
        let done = until(&e);
        seen.push(e);
        if done {
            return;
        }
    }
}

fn kill(child: &mut std::process::Child, signal: i32) {
    // SAFETY: a signal to a child this test started and has not reaped.
    unsafe { libc::kill(child.id() as i32, signal) };
}

/// Read the runner's events (run ends) until the state's history holds a row that `wanted` picks: what is on
/// disk, not what the runner said (bounded: 30 s).
fn wait_for_rows(
    events: &mut std::io::BufReader<std::process::ChildStderr>,
    seen: &mut Vec<Value>,
    (file, state): (&Path, &Path),
    wanted: impl Fn(&Value) -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !history_rows(file, state).iter().any(&wanted) {
        assert!(
            std::time::Instant::now() < deadline,
            "no such row was written"
        );
        read_until(events, seen, |e| e["event"] == "run.exit");
    }
}

/// Every history row of the state, by `flowrun history --format json`.
fn history_rows(file: &Path, state: &Path) -> Vec<Value> {
    let file = file.to_str().unwrap();
    let out = common::on_state(
        &["history", file, "--limit", "0", "--format", "json"],
        state,
    );
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn notice(e: &Value, text: &str) -> bool {
    e["event"] == "notice" && e["reason"].as_str().is_some_and(|r| r.contains(text))
}

#[test]
fn a_full_disk_never_lets_an_at_run_twice_nor_a_run_number_be_given_twice() {
    let Some(disk) = SmallDisk::mount() else {
        return;
    };
    let (dir, file) = flow("");
    let at = chrono::Utc::now() + chrono::Duration::seconds(3);
    let at_text = at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    std::fs::write(
        &file,
        format!("jobs:\n  once:\n    run: echo once\n    trigger: {{ at: \"{at_text}\" }}\n    misfire_grace: 1h\n  tick:\n    run: 'true'\n    trigger: {{ interval: 20ms }}\n"),
    )
    .unwrap();
    let state = disk.path().join("state");
    let args = ["--state", state.to_str().unwrap()];
    let (mut child, mut events, mut seen) =
        common::start_until(&file, &args, |e| e["event"] == "runner.start");
    watchdog(&child, 120);
    disk.fill();
    // Until the `at` has fallen due on the full disk: a tick scheduled after it was handled.
    read_until(&mut events, &mut seen, |e| {
        e["job"] == "tick"
            && e["scheduled"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .is_some_and(|s| s > at + chrono::Duration::milliseconds(200))
    });
    kill(&mut child, libc::SIGKILL);
    child.wait().unwrap();
    let first = common::rest_of(events, seen);
    disk.free();
    let (mut child, events, seen) = common::start_until(&file, &args, |e| {
        e["event"] == "run.exit" && e["job"] == "once"
    });
    watchdog(&child, 120);
    let file_arg = file.to_str().unwrap();
    assert!(common::on_state(&["stop", file_arg], &state)
        .status
        .success());
    let second = common::rest_of(events, seen);
    child.wait().unwrap();
    let starts = |ev: &[Value], job: &str| -> Vec<u64> {
        ev.iter()
            .filter(|e| e["event"] == "run.start" && e["job"] == job)
            .map(|e| e["run"].as_u64().unwrap())
            .collect()
    };
    let once: Vec<u64> = [starts(&first, "once"), starts(&second, "once")].concat();
    assert_eq!(once.len(), 1, "the `at` ran {once:?}");
    let mut ticks: Vec<u64> = [starts(&first, "tick"), starts(&second, "tick")].concat();
    let given = ticks.len();
    ticks.sort_unstable();
    ticks.dedup();
    assert_eq!(ticks.len(), given, "a run number was given twice");
    assert!(first
        .iter()
        .any(|e| notice(e, "the state store cannot be written")));
    drop(dir);
}

#[test]
fn a_clean_stop_on_a_full_disk_says_what_it_could_not_write_and_leaves_no_run_running() {
    let Some(disk) = SmallDisk::mount() else {
        return;
    };
    let (_dir, file) =
        flow("jobs:\n  tick:\n    run: echo tick\n    trigger: { interval: 20ms }\n");
    let state = disk.path().join("state");
    let args = ["--state", state.to_str().unwrap()];
    let (mut child, mut events, mut seen) =
        common::start_until(&file, &args, |e| e["event"] == "runner.start");
    watchdog(&child, 120);
    // Some rows on disk first (runs `running` among them), so that what follows has something to keep whole.
    wait_for_rows(&mut events, &mut seen, (&file, &state), |_| true);
    disk.fill();
    read_until(&mut events, &mut seen, |e| {
        notice(e, "the state store cannot be written")
    });
    kill(&mut child, libc::SIGTERM);
    let ev = common::rest_of(events, seen);
    child.wait().unwrap();
    let said = ev
        .iter()
        .find(|e| notice(e, "could not be written"))
        .unwrap_or_else(|| panic!("the rows not written are not said: {ev:#?}"));
    let count: u64 = said["reason"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(count > 0, "{said}");
    let log_notices = ev
        .iter()
        .filter(|e| notice(e, "cannot write the log"))
        .count();
    assert!(log_notices <= 1, "said {log_notices} times");
    disk.free();
    // The next start: every row has an end (those whose end was lost are interrupted, and said).
    let (code, ev) = common::run_json(&file, &["--state", state.to_str().unwrap(), "--for", "0s"]);
    assert!(code.is_some(), "{ev:#?}");
    let rows = history_rows(&file, &state);
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["outcome"] != "running"), "{rows:#?}");
}

#[test]
fn a_state_logs_folder_that_is_a_symlink_is_refused() {
    let (dir, file) = flow("jobs:\n  a:\n    run: echo A\n");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    chmod(&state, 0o700);
    let victim = dir.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::os::unix::fs::symlink(&victim, state.join("logs")).unwrap();
    let err = refused(&file, &state);
    assert!(err.contains("logs"), "{err}");
    assert_eq!(
        std::fs::read_dir(&victim).unwrap().count(),
        0,
        "nothing written through it"
    );
}

#[test]
fn an_env_file_of_many_variables_is_merged_whole() {
    // 50,000 variables (700 KB): each was merged by a scan of all the others, seconds on the dispatcher.
    let (dir, file) = flow("jobs:\n  many:\n    run: env | grep -c '^V[0-9]'; echo \"$V49999\"\n    env_file: many.env\n    env: { V00007: from-env }\n");
    let text: String = (0..50_000).map(|i| format!("V{i:05}={i}\n")).collect();
    std::fs::write(dir.path().join("many.env"), text).unwrap();
    let (code, ev) = run_bounded(&file, &["--state", "none"], Duration::from_secs(120));
    assert_eq!(code, Some(0), "{ev:#?}");
    assert_eq!(output_lines(&ev, "many"), ["50000", "49999"]);
}

#[test]
fn a_runner_starts_on_a_full_disk_and_its_runs_wait_for_the_store() {
    let Some(disk) = SmallDisk::mount() else {
        return;
    };
    let (_dir, file) = flow(
        "jobs:\n  long:\n    run: sleep 30\n  tick:\n    run: echo tick\n    trigger: { interval: 50ms }\n",
    );
    let state = disk.path().join("state");
    let args = ["--state", state.to_str().unwrap()];
    // A first runner killed with a run alive whose row is on disk: it stays `running` there.
    let (mut child, mut events, mut seen) =
        common::start_until(&file, &args, |e| e["event"] == "runner.start");
    watchdog(&child, 120);
    wait_for_rows(&mut events, &mut seen, (&file, &state), |r| {
        r["job"] == "long" && r["outcome"] == "running"
    });
    kill(&mut child, libc::SIGKILL);
    child.wait().unwrap();
    drop(common::rest_of(events, seen));
    disk.fill();
    let (mut child, mut events, mut seen) =
        common::start_until(&file, &args, |e| e["event"] == "runner.start");
    watchdog(&child, 120);
    read_until(&mut events, &mut seen, |e| {
        notice(e, "the state store cannot be written")
    });
    assert!(
        !seen.iter().any(|e| e["event"] == "run.start"),
        "a run started without a number on disk: {seen:#?}"
    );
    disk.free();
    read_until(&mut events, &mut seen, |e| {
        e["event"] == "run.exit" && e["job"] == "tick"
    });
    kill(&mut child, libc::SIGTERM);
    let ev = common::rest_of(events, seen);
    child.wait().unwrap();
    assert!(ev.iter().any(|e| notice(e, "written again")), "{ev:#?}");
    let rows = history_rows(&file, &state);
    assert!(
        rows.iter().any(|r| r["outcome"] == "interrupted"),
        "{rows:#?}"
    );
    assert!(rows.iter().all(|r| r["outcome"] != "running"), "{rows:#?}");
}

#[test]
fn the_watchdog_ends_a_process_that_outlives_its_bound() {
    let mut child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    watchdog(&child, 1);
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
}

#[test]
fn the_wal_a_full_disk_grew_is_given_back_when_the_store_takes_writes_again() {
    let Some(disk) = SmallDisk::mount() else {
        return;
    };
    let (_dir, file) =
        flow("jobs:\n  tick:\n    run: echo tick\n    trigger: { interval: 10ms }\n");
    let state = disk.path().join("state");
    let args = ["--state", state.to_str().unwrap()];
    let (mut child, mut events, mut seen) =
        common::start_until(&file, &args, |e| e["event"] == "runner.start");
    watchdog(&child, 120);
    // History until the WAL holds most of the small disk (bounded: the watchdog).
    let wal = || std::fs::metadata(state.join("state.db-wal")).map_or(0, |m| m.len());
    while wal() < 700 * 1024 {
        read_until(&mut events, &mut seen, |e| e["event"] == "run.exit");
    }
    disk.fill();
    read_until(&mut events, &mut seen, |e| {
        notice(e, "history is not being written")
    });
    disk.free();
    read_until(&mut events, &mut seen, |e| {
        notice(e, "history is being written again")
    });
    let kept = wal();
    kill(&mut child, libc::SIGTERM);
    drop(common::rest_of(events, seen));
    child.wait().unwrap();
    assert!(kept < 256 * 1024, "the WAL kept {kept} bytes");
}

#[test]
fn a_log_dir_is_used_by_its_real_path() {
    let (dir, file) = flow("jobs:\n  a:\n    run: echo A\n");
    let real = dir.path().join("logs-real");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, dir.path().join("logs-link")).unwrap();
    let state = dir.path().join("state");
    let link = dir.path().join("logs-link");
    let args = [
        "--state",
        state.to_str().unwrap(),
        "--log-dir",
        link.to_str().unwrap(),
    ];
    assert_eq!(common::run_json(&file, &args).0, Some(0));
    // The history names the file by its real path: pruning and `logs` never go through the link.
    let rows = history_rows(&file, &state);
    let log = rows[0]["log"].as_str().unwrap();
    let real = std::fs::canonicalize(&real).unwrap();
    assert!(log.starts_with(real.to_str().unwrap()), "{log}");
    assert!(std::path::Path::new(log).exists());
}
