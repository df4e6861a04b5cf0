//! Reading the runner's JSON event log in tests, shared by the test binaries.
// Each test binary uses a part of this module.
#![allow(dead_code)]

use serde_json::Value;

/// Every line of stderr as a JSON event (the whole stream must be JSON).
pub fn events(stderr: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event: {l:?}: {e}")))
        .collect()
}

/// The summary carried by `runner.stop`.
pub fn summary(events: &[Value]) -> &Value {
    &events
        .iter()
        .find(|e| e["event"] == "runner.stop")
        .expect("a runner.stop event")["summary"]
}

/// The output lines of a job, in order.
pub fn output_lines<'a>(events: &'a [Value], job: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e["event"] == "output" && e["job"] == job)
        .map(|e| e["line"].as_str().unwrap())
        .collect()
}

/// A channel's (in, out, left) from the summary.
pub fn channel(events: &[Value], name: &str) -> (u64, u64, u64) {
    let c = &summary(events)["channels"][name];
    (
        c["in"].as_u64().unwrap(),
        c["out"].as_u64().unwrap(),
        c["left"].as_u64().unwrap(),
    )
}

/// Whether a process is alive; a zombie runs nothing and holds nothing but a table entry, so it counts as dead.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// The flowrun binary under test.
pub fn bin() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("flowrun")
}

/// A state home of its own for one runner (`XDG_STATE_HOME`): the suite never writes to the real home, and two
/// tests running one example file never share a state (the second would be refused as "already running").
pub fn state_home() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("state-home");
    // State homes outlive their test (a failed test's is worth reading); those of test processes that have ended
    // go at the next run, so repeated runs do not fill the disk.
    SWEPT.call_once(|| sweep_ended(&root));
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    root.join(format!("{}-{n}", std::process::id()))
}

/// Remove the state homes of test processes that are no longer alive.
fn sweep_ended(root: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.split('-').next()?.parse::<u32>().ok());
        if pid.is_some_and(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The binary as a command, with a state home of its own.
pub fn cmd() -> std::process::Command {
    let mut cmd = std::process::Command::new(bin());
    cmd.env("XDG_STATE_HOME", state_home())
        .env_remove("FLOWRUN_STATE");
    cmd
}

/// A workflow file with this text in a new temporary folder (the folder goes when the guard is dropped).
pub fn flow(yaml: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yaml");
    std::fs::write(&file, yaml).unwrap();
    (dir, file)
}

/// Run a workflow to its end with the JSON event log: (exit code, events).
pub fn run_json(file: &std::path::Path, extra: &[&str]) -> (Option<i32>, Vec<Value>) {
    let out = cmd()
        .arg(file)
        .args(["--log-format", "json"])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (out.status.code(), events(&out.stderr))
}

/// Start the runner with JSON events and read them until `until` says stop; returns the child, the reader of the
/// rest and the events so far.
// The child is handed to the caller, which waits for it.
#[allow(clippy::zombie_processes)]
pub fn start_until(
    file: &std::path::Path,
    extra: &[&str],
    until: impl Fn(&Value) -> bool,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStderr>,
    Vec<Value>,
) {
    use std::io::BufRead;
    let mut child = cmd()
        .arg(file)
        .args(["--log-format", "json"])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stderr.take().unwrap());
    // A runner that never says what is awaited must fail the test, not hang it: killed after two minutes, its
    // stream ends and the test says so.
    let awaited = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (awaited, pid) = (awaited.clone(), child.id() as i32);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(120));
            if !awaited.load(std::sync::atomic::Ordering::Acquire) {
                // SAFETY: a signal to the test's own child, still unwaited (the test holds it).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
    }
    let mut seen = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            // Reaped now: its pid may be another's soon, and must not be killed.
            awaited.store(true, std::sync::atomic::Ordering::Release);
            let _ = child.wait();
            panic!("the runner ended early (or was killed after 120 s): {seen:?}");
        }
        let e: Value = serde_json::from_str(&line).unwrap();
        let done = until(&e);
        seen.push(e);
        if done {
            awaited.store(true, std::sync::atomic::Ordering::Release);
            return (child, reader, seen);
        }
    }
}

/// The rest of the events, to the end of the stream, after those already seen.
pub fn rest_of(
    reader: std::io::BufReader<std::process::ChildStderr>,
    mut seen: Vec<Value>,
) -> Vec<Value> {
    use std::io::BufRead;
    seen.extend(
        reader
            .lines()
            .map(|l| serde_json::from_str::<Value>(&l.unwrap()).unwrap()),
    );
    seen
}

/// A named pipe `name` in `dir`: a job that reads it waits until the test writes it (a gate, not a sleep).
pub fn fifo(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
    path
}

/// A command of the binary (`status`, `trigger`, ...) on the state directory `state`, without colour, in UTC.
pub fn on_state(args: &[&str], state: &std::path::Path) -> std::process::Output {
    cmd()
        .args(args)
        .arg("--state")
        .arg(state)
        .env("NO_COLOR", "1")
        .env("TZ", "UTC")
        .output()
        .unwrap()
}

/// (code, line, column, message) of each diagnostic of `flowrun validate --format json FILE`.
pub fn diagnostics(file: &std::path::Path) -> Vec<(String, u64, u64, String)> {
    let out = cmd()
        .args(["validate", "--format", "json"])
        .arg(file)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report["files"][0]["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["code"].as_str().unwrap().to_string(),
                d["line"].as_u64().unwrap(),
                d["column"].as_u64().unwrap(),
                d["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}
