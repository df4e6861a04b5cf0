//! A runner you can talk to (SPEC §5), through the real binary: the control socket and TCP, trigger (and
//! `--wait`), stop, reload (valid, invalid, removing a live job), `--watch`, `--only`, the token on TCP, error
//! shapes, a flood of status requests during a queue at full speed, and `/metrics` read by an independent parser.
//!
//! Every wait is on the runner's JSON events or on an answer, never on a sleep.

mod common;
mod openapi;

use common::{cmd, events, flow, start_until};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Output};

/// A runner under test: killed if the test fails before it ends.
struct Runner {
    child: Child,
    events: BufReader<ChildStderr>,
    seen: Vec<Value>,
    /// Events already returned by `wait_for` (each is matched once).
    taken: std::collections::HashSet<usize>,
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Runner {
    fn start(file: &Path, state: &Path, extra: &[&str]) -> Runner {
        Runner::start_until(file, state, extra, |e| e["event"] == "runner.start")
    }

    fn start_until(
        file: &Path,
        state: &Path,
        extra: &[&str],
        until: impl Fn(&Value) -> bool,
    ) -> Runner {
        let mut args = vec!["--state", state.to_str().unwrap()];
        args.extend(extra);
        let (child, events, seen) = start_until(file, &args, until);
        Runner {
            child,
            events,
            seen,
            taken: Default::default(),
        }
    }

    /// A runner started in `dir` (jobs that open files by a relative name find them there), with its JSON
    /// events, and `env` set for it.
    fn start_in(
        dir: &Path,
        file: &Path,
        state: &Path,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Runner {
        let mut command = cmd();
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .arg(file)
            .args(["--log-format", "json", "--state"])
            .arg(state)
            .args(extra)
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let events = BufReader::new(child.stderr.take().unwrap());
        Runner {
            child,
            events,
            seen: Vec::new(),
            taken: Default::default(),
        }
    }

    /// The first event not yet taken that matches, among those seen or, reading on, those to come. (Events
    /// of concurrent runs come in any order: one seen while waiting for another is kept for later.)
    fn wait_for(&mut self, what: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) =
            (0..self.seen.len()).find(|i| !self.taken.contains(i) && what(&self.seen[*i]))
        {
            self.taken.insert(i);
            return self.seen[i].clone();
        }
        loop {
            let mut line = String::new();
            if self.events.read_line(&mut line).unwrap() == 0 {
                panic!("the runner ended first: {:#?}", self.seen);
            }
            let e: Value = serde_json::from_str(&line).unwrap();
            self.seen.push(e.clone());
            if what(&e) {
                self.taken.insert(self.seen.len() - 1);
                return e;
            }
        }
    }

    /// Wait for an end that comes by itself (the work is done), not by `--for` or a signal.
    fn finish_by_itself(self) -> (Option<i32>, Vec<Value>) {
        let (code, seen) = self.finish();
        assert!(
            !seen.iter().any(|e| e["event"] == "runner.stopping"),
            "it did not end by itself: {seen:#?}"
        );
        (code, seen)
    }

    /// Wait for the end; the exit code and every event.
    fn finish(mut self) -> (Option<i32>, Vec<Value>) {
        let mut rest = String::new();
        self.events.read_to_string(&mut rest).unwrap();
        let mut seen = std::mem::take(&mut self.seen);
        seen.extend(events(rest.as_bytes()));
        let code = self.child.wait().unwrap().code();
        (code, seen)
    }
}

fn flowrun(args: &[&str], state: &Path) -> Output {
    common::on_state(args, state)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One HTTP/1.1 request on a stream, the connection closed after it: the status and the body. (The test's own
/// minimal client, so what is tested is the server, not a client library's leniency.)
fn http(
    stream: impl Read + Write,
    method: &str,
    path: &str,
    body: &str,
    headers: &[&str],
) -> (u16, String) {
    let (status, _, body) = http_with_headers(stream, method, path, body, headers);
    (status, body)
}

/// [`http`], with the answer's headers (names in lower case).
fn http_with_headers(
    mut stream: impl Read + Write,
    method: &str,
    path: &str,
    body: &str,
    headers: &[&str],
) -> (u16, Vec<(String, String)>, String) {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = text(&response);
    let status = response[9..12].parse().unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<Vec<(String, String)>>();
    // Every answer this file sees is what the OpenAPI document says (issue 24).
    openapi::conforms(method, path, status, header(&headers, "content-type"), body);
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn unix(state: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let stream = std::os::unix::net::UnixStream::connect(state.join("control.sock")).unwrap();
    http(stream, method, path, body, &[])
}

fn tcp(port: u16, method: &str, path: &str, headers: &[&str]) -> (u16, String) {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    http(stream, method, path, "", headers)
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A job that never fires by itself while the test runs (keeps the runner alive, fired by hand).
const NEVER: &str = "{ cron: \"0 0 1 1 *\", timezone: UTC }";

fn state_of(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("state")
}

#[test]
fn trigger_answers_the_run_and_wait_exits_with_its_result() {
    let (dir, file) = flow(&format!(
        "jobs:\n  ok:\n    run: 'true'\n    trigger: {NEVER}\n  bad:\n    run: exit 3\n    trigger: {NEVER}\n"
    ));
    let state = state_of(&dir);
    let mut runner = Runner::start(&file, &state, &[]);
    let f = file.to_str().unwrap();
    let ok = flowrun(&["trigger", f, "ok", "--wait"], &state);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert_eq!(text(&ok.stdout), "ok#1 succeeded (exit 0)\n");
    let bad = flowrun(&["trigger", f, "bad", "--wait"], &state);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert_eq!(text(&bad.stdout), "bad#1 failed (exit 3)\n");
    // Without --wait: the run number, at once.
    let (status, body) = unix(&state, "POST", "/api/v1/jobs/ok/trigger", "");
    assert_eq!(status, 200);
    assert_eq!(
        json(&body),
        serde_json::json!({"status": "started", "run": 2})
    );
    let started =
        runner.wait_for(|e| e["event"] == "run.start" && e["job"] == "ok" && e["run"] == 2);
    assert_eq!(started["job"], "ok");
    // History says it was fired by hand.
    let rows = flowrun(&["history", f, "ok", "--format", "json"], &state);
    assert_eq!(rows.status.code(), Some(0));
    let unknown = flowrun(&["trigger", f, "nope"], &state);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown.stderr).contains("no job `nope`"));
    let stop = flowrun(&["stop", f], &state);
    assert_eq!(stop.status.code(), Some(0));
    let (code, _) = runner.finish();
    // SPEC §7: a stop asked for that went cleanly exits 0 whatever failed before (the history keeps bad#1).
    assert_eq!(code, Some(0), "flowrun stop went cleanly");
}

#[test]
fn a_trigger_beyond_max_instances_is_answered_as_skipped() {
    let (dir, file) = flow("jobs:\n  slow:\n    run: sleep 60\n    trigger: start\n");
    let state = state_of(&dir);
    let runner = Runner::start_until(&file, &state, &[], |e| e["event"] == "run.start");
    let (status, body) = unix(&state, "POST", "/api/v1/jobs/slow/trigger", "");
    assert_eq!(status, 409);
    let body = json(&body);
    assert_eq!(body["status"], "skipped");
    assert!(body["reason"]
        .as_str()
        .unwrap()
        .contains("max_instances (1)"));
    let cli = flowrun(&["trigger", file.to_str().unwrap(), "slow"], &state);
    assert_eq!(cli.status.code(), Some(1));
    assert!(text(&cli.stderr).contains("skipped"));
    // History says what fired each: the run by its `start`, the two skipped firings by hand (not "restart").
    let stop = flowrun(&["stop", file.to_str().unwrap()], &state);
    assert_eq!(stop.status.code(), Some(0), "{stop:?}");
    runner.finish();
    let out = flowrun(
        &["history", file.to_str().unwrap(), "--format", "json"],
        &state,
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let fired_by = |outcome: &str| -> Vec<&str> {
        rows.iter()
            .filter(|r| r["outcome"] == outcome)
            .map(|r| r["trigger"].as_str().unwrap())
            .collect()
    };
    assert_eq!(fired_by("stopped"), ["start"], "{rows:?}");
    assert_eq!(
        fired_by("skipped"),
        ["manual (flowrun trigger)", "manual (flowrun trigger)"],
        "{rows:?}"
    );
}

#[test]
fn stop_ends_one_jobs_runs_without_restarting_them() {
    let (dir, file) = flow(
        "jobs:\n  svc:\n    run: sleep 60\n    trigger: start\n    restart: always\n  other:\n    run: sleep 60\n    trigger: start\n",
    );
    let state = state_of(&dir);
    let mut runner = Runner::start_until(&file, &state, &[], |e| e["event"] == "runner.start");
    runner.wait_for(|e| e["event"] == "run.start" && e["job"] == "svc");
    runner.wait_for(|e| e["event"] == "run.start" && e["job"] == "other");
    let f = file.to_str().unwrap();
    let stop = flowrun(&["stop", f, "svc"], &state);
    assert_eq!(stop.status.code(), Some(0), "{stop:?}");
    assert_eq!(text(&stop.stdout), "svc: stopping 1 run(s)\n");
    let exit = runner.wait_for(|e| e["event"] == "run.exit" && e["job"] == "svc");
    assert_eq!(exit["signal"], "SIGTERM");
    let (status, body) = unix(&state, "GET", "/api/v1/status", "");
    assert_eq!(status, 200);
    let status = json(&body);
    let job = |name: &str| {
        status["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["job"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        job("svc")["running"].as_array().unwrap().len(),
        0,
        "not restarted"
    );
    assert_eq!(job("other")["running"].as_array().unwrap().len(), 1);
    assert_eq!(flowrun(&["stop", f], &state).status.code(), Some(0));
    let (code, seen) = runner.finish();
    assert_eq!(code, Some(0), "stopped runs are no failures");
    let svc_starts = seen
        .iter()
        .filter(|e| e["event"] == "run.start" && e["job"] == "svc")
        .count();
    assert_eq!(
        svc_starts, 1,
        "a service stopped by request does not come back"
    );
    let summary = &common::summary(&seen)["jobs"];
    assert_eq!(summary["svc"]["stopped"], 1);
}

#[test]
fn reload_applies_a_valid_file_and_keeps_the_plan_on_an_invalid_one() {
    let (dir, file) = flow(&format!(
        "jobs:\n  gone:\n    run: sleep 60\n    trigger: start\n  kept:\n    run: echo old\n    trigger: {NEVER}\n"
    ));
    let state = state_of(&dir);
    let mut runner = Runner::start_until(&file, &state, &[], |e| {
        e["event"] == "run.start" && e["job"] == "gone"
    });
    let f = file.to_str().unwrap();
    std::fs::write(
        &file,
        format!(
            "jobs:\n  kept:\n    run: echo new\n    trigger: {NEVER}\n  added:\n    run: echo added\n    trigger: start\n"
        ),
    )
    .unwrap();
    let reload = flowrun(&["reload", f], &state);
    assert_eq!(reload.status.code(), Some(0), "{reload:?}");
    assert_eq!(
        text(&reload.stdout),
        "reloaded: added added; removed gone; changed kept\n"
    );
    let applied = runner.wait_for(|e| e["event"] == "reload.applied");
    assert_eq!(applied["removed"], serde_json::json!(["gone"]));
    // The removed job's live run ends as at shutdown; the added one starts (its `start` trigger).
    let exit = runner.wait_for(|e| e["event"] == "run.exit" && e["job"] == "gone");
    assert_eq!(exit["signal"], "SIGTERM");
    runner.wait_for(|e| e["event"] == "output" && e["job"] == "added");
    // The changed job takes its new definition from its next firing.
    let kept = flowrun(&["trigger", f, "kept", "--wait"], &state);
    assert_eq!(kept.status.code(), Some(0));
    runner.wait_for(|e| e["event"] == "output" && e["job"] == "kept" && e["line"] == "new");
    // Invalid text: exit 1 with the diagnostics; the runner goes on with what it has.
    std::fs::write(&file, "jobs:\n  kept:\n    run: [unclosed\n").unwrap();
    let bad = flowrun(&["reload", f], &state);
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(text(&bad.stderr).contains("keeps its current plan"));
    let rejected = runner.wait_for(|e| e["event"] == "reload.rejected");
    assert!(rejected["reason"].as_str().unwrap().contains("1 error(s)"));
    let (status, _) = unix(&state, "GET", "/healthz", "");
    assert_eq!(status, 200);
    let again = flowrun(&["trigger", f, "kept", "--wait"], &state);
    assert_eq!(again.status.code(), Some(0), "the old plan still runs");
    assert_eq!(flowrun(&["stop", f], &state).status.code(), Some(0));
    assert_eq!(runner.finish().0, Some(0));
}

#[test]
fn watch_reloads_an_edited_file() {
    let (dir, file) = flow(&format!(
        "jobs:\n  a:\n    run: echo a\n    trigger: {NEVER}\n"
    ));
    let state = state_of(&dir);
    let mut runner = Runner::start(&file, &state, &["--watch"]);
    // Written as editors do: a new file renamed over the old one.
    let tmp = dir.path().join(".flow.yaml.swp");
    std::fs::write(
        &tmp,
        format!("jobs:\n  a:\n    run: echo a\n    trigger: {NEVER}\n  b:\n    run: echo from-b\n    trigger: start\n"),
    )
    .unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let applied = runner.wait_for(|e| e["event"] == "reload.applied");
    assert_eq!(applied["added"], serde_json::json!(["b"]));
    runner.wait_for(|e| e["event"] == "output" && e["line"] == "from-b");
}

#[test]
fn only_runs_the_named_jobs_once_now() {
    let (_dir, file) = flow(&format!(
        "channels: {{ lines: {{ kind: queue }} }}\njobs:\n  gen:\n    run: seq 3\n    stdout: lines\n    trigger: {NEVER}\n  count:\n    run: wc -l\n    stdin: lines\n    trigger: {NEVER}\n  other:\n    run: echo other\n    trigger: start\n"
    ));
    let run = |only: &[&str]| {
        let mut args = vec!["--state", "none", "--log-format", "json", "--only"];
        args.extend(only);
        let out = cmd().arg(&file).args(&args).output().unwrap();
        (out.status.code(), events(&out.stderr))
    };
    let (code, ev) = run(&["gen", "count"]);
    assert_eq!(code, Some(0));
    assert_eq!(common::output_lines(&ev, "count"), ["3"]);
    assert!(common::output_lines(&ev, "other").is_empty());
    // The other end not selected: the writer's lines are printed.
    let (code, ev) = run(&["gen"]);
    assert_eq!(code, Some(0));
    assert_eq!(common::output_lines(&ev, "gen"), ["1", "2", "3"]);
    let out = cmd()
        .arg(&file)
        .args(["--state", "none", "--only", "gne"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("gen"), "a suggestion");
}

#[test]
fn tcp_is_read_only_without_a_token_and_needs_it_to_change_anything() {
    let (dir, file) = flow(&format!(
        "jobs:\n  a:\n    run: 'true'\n    trigger: {NEVER}\n"
    ));
    let state = state_of(&dir);
    let port = free_port();
    // A port alone binds loopback.
    let listen = port.to_string();
    let runner = Runner::start(&file, &state, &["--listen", &listen]);
    assert_eq!(tcp(port, "GET", "/api/v1/status", &[]).0, 200);
    let (status, body) = tcp(port, "POST", "/api/v1/jobs/a/trigger", &[]);
    assert_eq!(status, 403, "{body}");
    assert!(json(&body)["error"].as_str().unwrap().contains("read-only"));
    drop(runner);

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut runner = Runner::start_in(
        dir.path(),
        &file,
        &state,
        &[("FLOWRUN_TOKEN", "s3cret")],
        &["--listen", &listen],
    );
    runner.wait_for(|e| e["event"] == "runner.start");
    let trigger = "/api/v1/jobs/a/trigger";
    assert_eq!(tcp(port, "POST", trigger, &[]).0, 401);
    assert_eq!(
        tcp(port, "POST", trigger, &["Authorization: Bearer s3cre"]).0,
        401
    );
    assert_eq!(
        tcp(port, "POST", trigger, &["Authorization: Bearer s3cret!"]).0,
        401
    );
    let (status, body) = tcp(port, "POST", trigger, &["Authorization: Bearer s3cret"]);
    assert_eq!(
        (status, json(&body)["status"].clone()),
        (200, "started".into())
    );
    // Reading needs no token.
    assert_eq!(tcp(port, "GET", "/healthz", &[]).0, 200);
    drop(runner);

    // Not loopback, no token: refused before anything starts.
    let out = cmd()
        .arg(&file)
        .args(["--state", "none", "--listen"])
        .arg(format!("0.0.0.0:{}", free_port()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("FLOWRUN_TOKEN"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn errors_have_their_status_and_a_json_body() {
    let (dir, file) = flow(&format!(
        "jobs:\n  a:\n    run: 'true'\n    trigger: {NEVER}\n"
    ));
    let state = state_of(&dir);
    let runner = Runner::start(&file, &state, &[]);
    let check = |method: &str, path: &str, body: &str, want: u16| {
        let (status, text) = unix(&state, method, path, body);
        assert_eq!(status, want, "{method} {path}: {text}");
        assert!(json(&text)["error"].is_string(), "{text}");
    };
    check("GET", "/api/v1/nothing", "", 404);
    check("DELETE", "/api/v1/status", "", 405);
    check("GET", "/api/v1/jobs/a/trigger", "", 405);
    check("POST", "/api/v1/jobs/a/trigger", "{not json", 400);
    check("POST", "/api/v1/jobs/a/trigger", "{\"wait\": 3}", 400);
    check("GET", "/api/v1/history?limit=abc", "", 400);
    check("GET", "/api/v1/history?limit=0", "", 400);
    check("GET", "/api/v1/history?limit=100001", "", 400);
    check("GET", "/api/v1/history?outcome=bogus", "", 400);
    check("GET", "/api/v1/history?since=yesterday", "", 400);
    let (status, body) = unix(&state, "GET", "/api/v1/history?outcome=failed&since=1h", "");
    assert_eq!((status, body.as_str()), (200, "[]"));
    check("POST", "/api/v1/jobs/nope/stop", "", 404);
    // A body over the limit is refused (413, or the connection is reset while the client still writes: the
    // server does not read the rest), and the runner stays up.
    {
        let big = "x".repeat(1_000_000);
        let mut s = std::os::unix::net::UnixStream::connect(state.join("control.sock")).unwrap();
        let head = format!(
            "POST /api/v1/jobs/a/trigger HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            big.len()
        );
        let _ = s
            .write_all(head.as_bytes())
            .and_then(|_| s.write_all(big.as_bytes()));
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let out = text(&out);
        assert!(out.is_empty() || out.starts_with("HTTP/1.1 413"), "{out}");
    }
    // Garbage instead of HTTP: the connection is dropped, the runner stays up.
    {
        let mut s = std::os::unix::net::UnixStream::connect(state.join("control.sock")).unwrap();
        s.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
    }
    let (status, body) = unix(&state, "GET", "/api/v1/history?job=a&limit=5", "");
    assert_eq!(status, 200, "{body}");
    assert!(json(&body).is_array());
    assert_eq!(unix(&state, "GET", "/healthz", "").0, 200);
    drop(runner);
}

#[test]
fn a_thousand_status_requests_do_not_disturb_a_queue_at_full_speed() {
    let (dir, file) = flow(
        "channels: { lines: { kind: queue } }\njobs:\n  gen:\n    run: seq 3000000; read x < gate; seq 3000000\n    stdout: lines\n    trigger: start\n  count:\n    run: wc -l\n    stdin: lines\n    trigger: start\n",
    );
    let gate = common::fifo(dir.path(), "gate");
    let state = state_of(&dir);
    let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &[]);
    runner.wait_for(|e| e["event"] == "run.start" && e["job"] == "gen");
    let threads: Vec<_> = (0..1000)
        .map(|_| {
            let socket = state.join("control.sock");
            std::thread::Builder::new()
                // Room for the answer's check against the OpenAPI schema.
                .stack_size(512 * 1024)
                .spawn(move || {
                    let stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
                    http(stream, "GET", "/api/v1/status", "", &[]).0
                })
                .unwrap()
        })
        .collect();
    let answers: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        answers.iter().all(|&s| s == 200),
        "{:?}",
        answers.iter().filter(|&&s| s != 200).count()
    );
    std::fs::write(&gate, "go\n").unwrap();
    let (code, seen) = runner.finish();
    assert_eq!(code, Some(0));
    assert_eq!(common::output_lines(&seen, "count"), ["6000000"]);
    assert_eq!(common::channel(&seen, "lines"), (6_000_000, 6_000_000, 0));
}

#[test]
fn metrics_parse_and_match_the_summary() {
    let (dir, file) = flow(&format!(
        "jobs:\n  ok:\n    run: 'true'\n    trigger: {NEVER}\n  bad:\n    run: exit 2\n    trigger: {NEVER}\n"
    ));
    let state = state_of(&dir);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let runner = Runner::start(&file, &state, &["--listen", &listen]);
    let f = file.to_str().unwrap();
    for _ in 0..3 {
        assert_eq!(
            flowrun(&["trigger", f, "ok", "--wait"], &state)
                .status
                .code(),
            Some(0)
        );
    }
    assert_eq!(
        flowrun(&["trigger", f, "bad", "--wait"], &state)
            .status
            .code(),
        Some(1)
    );
    let (status, body) = tcp(port, "GET", "/metrics", &[]);
    assert_eq!(status, 200);
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{body}"))
    };
    let ok_runs = value(
        "flowrun_runs_total",
        &[("job", "ok"), ("outcome", "succeeded")],
    );
    let bad_runs = value(
        "flowrun_runs_total",
        &[("job", "bad"), ("outcome", "failed")],
    );
    assert!(value("flowrun_last_success_timestamp_seconds", &[("job", "ok")]) > 1.7e9);
    assert!(value("flowrun_next_fire_timestamp_seconds", &[("job", "ok")]) > 1.7e9);
    assert_eq!(value("flowrun_runs_running", &[("job", "ok")]), 0.0);
    assert!(value("process_resident_memory_bytes", &[]) > 1e6);
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric.starts_with("flowrun_fire_lateness_seconds")));
    assert_eq!(flowrun(&["stop", f], &state).status.code(), Some(0));
    let (_, seen) = runner.finish();
    let summary = &common::summary(&seen)["jobs"];
    assert_eq!(ok_runs, summary["ok"]["succeeded"].as_f64().unwrap());
    assert_eq!(bad_runs, summary["bad"]["failed"].as_f64().unwrap());
}

#[test]
fn commands_say_plainly_when_no_runner_is_up() {
    let (dir, file) = flow(&format!(
        "jobs:\n  a:\n    run: 'true'\n    trigger: {NEVER}\n"
    ));
    let state = state_of(&dir);
    std::fs::create_dir(&state).unwrap();
    let f = file.to_str().unwrap();
    for args in [vec!["trigger", f, "a"], vec!["stop", f], vec!["reload", f]] {
        let out = flowrun(&args, &state);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains("no runner is up"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn commands_give_up_on_a_hung_runner_after_their_answer_timeout() {
    let (dir, file) = flow(&format!(
        "jobs:\n  slow:\n    run: sleep 60\n    trigger: start\n  later:\n    run: 'true'\n    trigger: {NEVER}\n"
    ));
    let state = state_of(&dir);
    let runner = Runner::start(&file, &state, &[]);
    // A stopped runner: the kernel still accepts connections on its socket, nobody answers.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(runner.child.id() as i32, libc::SIGSTOP) };
    let f = file.to_str().unwrap().to_string();
    // 15 s by default; 2 s here (the bound is what is tested, not its default).
    let ask = |args: Vec<String>| {
        let state = state.clone();
        std::thread::spawn(move || {
            common::cmd()
                .args(&args)
                .arg("--state")
                .arg(&state)
                .env("NO_COLOR", "1")
                .env("FLOWRUN_ANSWER_TIMEOUT", "2s")
                .output()
                .unwrap()
        })
    };
    let trigger = ask(vec!["trigger".into(), f.clone(), "later".into()]);
    let status = ask(vec!["status".into(), f.clone()]);
    let (trigger, status) = (trigger.join().unwrap(), status.join().unwrap());
    // SAFETY: as above.
    unsafe { libc::kill(runner.child.id() as i32, libc::SIGCONT) };
    assert_ne!(trigger.status.code(), Some(0));
    let err = text(&trigger.stderr);
    assert!(err.contains("did not answer within 2s"), "{err}");
    // `status` falls back to what the store knows, and says the runner does not answer.
    assert_eq!(status.status.code(), Some(0), "{status:?}");
    let out = text(&status.stdout);
    assert!(out.contains("does not answer"), "{out}");
    assert!(out.contains("slow"), "{out}");
}

#[test]
fn a_body_that_never_arrives_is_answered_408_after_10_s() {
    let (dir, file) = flow(&format!(
        "jobs:\n  later:\n    run: 'true'\n    trigger: {NEVER}\n"
    ));
    let state = state_of(&dir);
    let _runner = Runner::start(&file, &state, &[]);
    let mut stream = std::os::unix::net::UnixStream::connect(state.join("control.sock")).unwrap();
    // Headers promise 100 bytes; 2 come, then nothing.
    let head =
        "POST /api/v1/jobs/later/trigger HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{}";
    stream.write_all(head.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut answer = [0u8; 512];
    let n = stream
        .read(&mut answer)
        .unwrap_or_else(|e| panic!("reading the answer: {e} ({:?})", e.kind()));
    let answer = text(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive in time"), "{answer}");
    // The runner goes on answering.
    assert_eq!(unix(&state, "GET", "/healthz", "").0, 200);
}

#[test]
fn concurrent_reloads_end_with_the_files_last_text() {
    let version = |n: usize| format!("jobs:\n  v{n}:\n    run: echo {n}\n    trigger: {NEVER}\n");
    let (dir, file) = flow(&version(0));
    let state = state_of(&dir);
    let _runner = Runner::start(&file, &state, &[]);
    let f = file.to_str().unwrap().to_string();
    // Each reload is asked right after a new text is written; they overlap.
    let mut reloads = Vec::new();
    for n in 1..=5 {
        // Written whole (a rename), as an editor saves: a reload never reads half a text.
        let next = dir.path().join("next.yaml");
        std::fs::write(&next, version(n)).unwrap();
        std::fs::rename(&next, &file).unwrap();
        let (f, state) = (f.clone(), state.clone());
        reloads.push(std::thread::spawn(move || flowrun(&["reload", &f], &state)));
    }
    for r in reloads {
        let out = r.join().unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
    // Whatever their order, the last text is what runs: v5 exists, v4 does not.
    let last = flowrun(&["trigger", &f, "v5", "--wait"], &state);
    assert_eq!(last.status.code(), Some(0), "{last:?}");
    let gone = flowrun(&["trigger", &f, "v4"], &state);
    assert_ne!(gone.status.code(), Some(0), "{gone:?}");
}

#[test]
fn status_shows_the_live_runner() {
    let (dir, file) = flow(
        "channels: { lines: { kind: queue } }\njobs:\n  slow:\n    run: sleep 60\n    trigger: start\n  gen:\n    run: seq 5\n    stdout: lines\n    trigger: start\n  count:\n    run: wc -l\n    stdin: lines\n    trigger: start\n",
    );
    let state = state_of(&dir);
    let mut runner = Runner::start(&file, &state, &[]);
    runner.wait_for(|e| e["event"] == "run.exit" && e["job"] == "count");
    let out = flowrun(
        &["status", file.to_str().unwrap(), "--format", "json"],
        &state,
    );
    let status = json(&text(&out.stdout));
    assert_eq!(status["runner"]["pid"], runner.child.id());
    let slow = &status["jobs"][0];
    assert_eq!(slow["state"], "running 1");
    assert!(slow["runs"][0]["pid"].as_u64().is_some());
    assert_eq!(status["channels"][0]["in"], 5);
    let out = flowrun(&["status", file.to_str().unwrap()], &state);
    let text = text(&out.stdout);
    assert!(text.contains("a runner is up"), "{text}");
    assert!(text.contains("slow#1"), "{text}");
    assert!(text.contains("CHANNEL"), "{text}");
    assert!(
        !text.contains("READY"),
        "no probes, no READY column: {text}"
    );
}

#[test]
fn status_shows_which_live_runs_are_ready() {
    let (dir, file) = flow(
        "jobs:\n  web:\n    run: echo listening; sleep 60\n    ready: { log: listening }\n  db:\n    run: sleep 60\n    ready: { exec: 'false', interval: 10ms }\n  plain:\n    run: sleep 60\n",
    );
    let state = state_of(&dir);
    let mut runner = Runner::start(&file, &state, &[]);
    runner.wait_for(|e| e["event"] == "run.ready" && e["job"] == "web");
    let out = flowrun(
        &["status", file.to_str().unwrap(), "--format", "json"],
        &state,
    );
    let status = json(&text(&out.stdout));
    let ready = |j: usize| status["jobs"][j]["runs"][0]["ready"].clone();
    assert_eq!(ready(0), true);
    assert_eq!(ready(1), false);
    assert!(ready(2).is_null(), "no probe: no readiness");
    let out = flowrun(&["status", file.to_str().unwrap()], &state);
    let text = text(&out.stdout);
    let row = |run: &str| {
        text.lines()
            .find(|l| l.starts_with(run))
            .unwrap_or_else(|| panic!("no {run} in {text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(text.contains("READY"), "{text}");
    assert!(row("web#1").ends_with(" yes"), "{text}");
    assert!(row("db#1").ends_with(" not yet"), "{text}");
    assert!(row("plain#1").ends_with(" -"), "{text}");
}

#[test]
fn a_client_added_by_a_reload_starts_at_once_when_its_service_is_ready() {
    let web = "jobs:\n  web:\n    run: echo up; sleep 60\n    ready: { log: up }\n";
    let (dir, file) = flow(web);
    let state = state_of(&dir);
    let mut runner = Runner::start_until(&file, &state, &[], |e| {
        e["event"] == "run.ready" && e["job"] == "web"
    });
    let client = "  client:\n    run: printf '%s\\n' \"$FLOWRUN_UPSTREAM\"\n    trigger: { after: web, status: ready }\n";
    std::fs::write(&file, format!("{web}{client}")).unwrap();
    let reload = flowrun(&["reload", file.to_str().unwrap()], &state);
    assert_eq!(reload.status.code(), Some(0), "{reload:?}");
    let line = runner.wait_for(|e| e["event"] == "output" && e["job"] == "client");
    let upstream = json(line["line"].as_str().unwrap());
    assert_eq!(upstream[0]["job"], "web");
    assert_eq!(upstream[0]["status"], "ready");
}

#[test]
fn a_live_run_keeps_the_probe_it_started_with_across_a_reload() {
    let before = "jobs:\n  web:\n    run: sleep 60\n    ready: { log: never, timeout: 2s }\n    stop_grace: 1s\n";
    let (dir, file) = flow(before);
    let state = state_of(&dir);
    let mut runner = Runner::start_until(&file, &state, &[], |e| {
        e["event"] == "run.start" && e["job"] == "web"
    });
    // The new text gives the job a longer timeout: the live run is still held to the one it started with.
    std::fs::write(&file, before.replace("timeout: 2s", "timeout: 10m")).unwrap();
    let reload = flowrun(&["reload", file.to_str().unwrap()], &state);
    assert_eq!(reload.status.code(), Some(0), "{reload:?}");
    let unready = runner.wait_for(|e| e["event"] == "run.unready" && e["job"] == "web");
    assert_eq!(unready["reason"], "not ready within 2s");
    let exit = runner.wait_for(|e| e["event"] == "run.exit" && e["job"] == "web");
    assert_eq!(exit["reason"], "not ready within 2s");
}

#[test]
fn a_reload_removing_a_live_broadcast_reader_stops_it_and_goes_on() {
    let (dir, file) = flow(&format!(
        "channels: {{ b: {{ kind: broadcast }} }}\njobs:\n  w:\n    run: seq 3; cat gate\n    stdout: b\n    trigger: start\n  r1:\n    run: cat\n    stdin: b\n    trigger: start\n  r2:\n    run: cat\n    stdin: b\n    trigger: start\n  keep:\n    run: 'true'\n    trigger: {NEVER}\n"
    ));
    let gate = common::fifo(dir.path(), "gate");
    let state = state_of(&dir);
    let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &[]);
    runner.wait_for(|e| e["event"] == "output" && e["job"] == "r2" && e["line"] == "3");
    // Drop the job `r2` (its four lines) while its run is alive.
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|l| *l == "  r2:").unwrap();
    let edited: Vec<&str> = lines[..at]
        .iter()
        .chain(&lines[at + 4..])
        .copied()
        .collect();
    std::fs::write(&file, edited.join("\n") + "\n").unwrap();
    let reload = flowrun(&["reload", file.to_str().unwrap()], &state);
    assert_eq!(reload.status.code(), Some(0), "{reload:?}");
    runner.wait_for(|e| e["event"] == "run.exit" && e["job"] == "r2");
    // The runner goes on: it answers, and the remaining reader gets the rest.
    assert_eq!(unix(&state, "GET", "/healthz", "").0, 200);
    std::fs::write(&gate, "4\n").unwrap();
    runner.wait_for(|e| e["event"] == "output" && e["job"] == "r1" && e["line"] == "4");
    assert_eq!(
        flowrun(&["stop", file.to_str().unwrap()], &state)
            .status
            .code(),
        Some(0)
    );
    let (code, seen) = runner.finish();
    assert_eq!(code, Some(0), "{seen:#?}");
    assert!(seen.iter().any(|e| e["event"] == "runner.stop"));
}

#[test]
fn copies_a_broadcast_reader_removed_by_a_reload_never_read_are_counted_left() {
    // `r2` reads one line of three (the shell's `read` takes no more than its line), then waits at a gate.
    let (dir, file) = flow(
        "channels: { b: { kind: broadcast } }\njobs:\n  w: { run: 'seq 3; cat gate', stdout: b }\n  r1: { run: cat, stdin: b }\n  r2: { run: 'read x; echo got $x; cat gate2', stdin: b }\n",
    );
    let gate = common::fifo(dir.path(), "gate");
    common::fifo(dir.path(), "gate2");
    let state = state_of(&dir);
    let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &["--for", "60s"]);
    runner.wait_for(|e| e["event"] == "output" && e["job"] == "r2" && e["line"] == "got 1");
    runner.wait_for(|e| e["event"] == "output" && e["job"] == "r1" && e["line"] == "3");
    reload_to(&file, &state, "channels: { b: { kind: broadcast } }\njobs:\n  w: { run: 'seq 3; cat gate', stdout: b }\n  r1: { run: cat, stdin: b }\n");
    runner.wait_for(|e| e["event"] == "run.exit" && e["job"] == "r2");
    std::fs::write(&gate, "4\n").unwrap();
    let (code, seen) = runner.finish_by_itself();
    assert_eq!(code, Some(0), "{seen:#?}");
    assert_eq!(common::output_lines(&seen, "r1"), ["1", "2", "3", "4"]);
    // Seven copies: four to `r1`, three to `r2`, which read one; its two others are left, not lost.
    assert_eq!(common::channel(&seen, "b"), (7, 5, 2), "{seen:#?}");
}

#[test]
fn a_live_run_that_a_reload_stops_reading_a_broadcast_gets_the_rest_and_its_end() {
    let (dir, file) = flow(
        "channels: { b: { kind: broadcast } }\njobs:\n  w: { run: 'seq 2; cat gate', stdout: b }\n  r1: { run: cat, stdin: b }\n  r2: { run: cat, stdin: b }\n",
    );
    let gate = common::fifo(dir.path(), "gate");
    let state = state_of(&dir);
    let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &["--for", "60s"]);
    runner.wait_for(|e| e["event"] == "output" && e["job"] == "r2" && e["line"] == "2");
    // `r2` reads the channel no more: its live run (the old definition) will get no more copies, so its input ends.
    reload_to(&file, &state, "channels: { b: { kind: broadcast } }\njobs:\n  w: { run: 'seq 2; cat gate', stdout: b }\n  r1: { run: cat, stdin: b }\n  r2: { run: 'echo other' }\n");
    let exit = runner.wait_for(|e| e["event"] == "run.exit" && e["job"] == "r2");
    assert_eq!(exit["code"], 0, "{exit}");
    std::fs::write(&gate, "3\n").unwrap();
    let (code, seen) = runner.finish_by_itself();
    assert_eq!(code, Some(0), "{seen:#?}");
    assert_eq!(common::output_lines(&seen, "r1"), ["1", "2", "3"]);
    assert_eq!(common::channel(&seen, "b"), (5, 5, 0), "{seen:#?}");
}

#[test]
fn a_broadcast_reader_a_reload_adds_gets_what_a_live_writer_writes_after_it() {
    let (dir, file) = flow(
        "channels: { b: { kind: broadcast } }\njobs:\n  w: { run: 'echo 1; cat gate', stdout: b }\n  r1: { run: cat, stdin: b }\n",
    );
    let gate = common::fifo(dir.path(), "gate");
    let state = state_of(&dir);
    let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &["--for", "60s"]);
    runner.wait_for(|e| e["event"] == "output" && e["job"] == "r1" && e["line"] == "1");
    reload_to(&file, &state, "channels: { b: { kind: broadcast } }\njobs:\n  w: { run: 'echo 1; cat gate', stdout: b }\n  r1: { run: cat, stdin: b }\n  r2: { run: cat, stdin: b }\n");
    runner.wait_for(|e| e["event"] == "run.start" && e["job"] == "r2");
    std::fs::write(&gate, "2\n").unwrap();
    let (code, seen) = runner.finish_by_itself();
    assert_eq!(code, Some(0), "{seen:#?}");
    assert_eq!(common::output_lines(&seen, "r1"), ["1", "2"]);
    assert_eq!(common::output_lines(&seen, "r2"), ["2"], "{seen:#?}");
    assert_eq!(common::channel(&seen, "b"), (3, 3, 0), "{seen:#?}");
}

#[test]
fn the_token_is_not_given_to_jobs() {
    let (dir, file) = flow(
        "jobs:\n  show:\n    run: echo \"token=${FLOWRUN_TOKEN:-none}\"\n    trigger: start\n  peek:\n    run: if grep -q s3cret /proc/$PPID/environ; then echo leaked; else echo clean; fi\n    trigger: start\n",
    );
    let out = cmd()
        .env("FLOWRUN_TOKEN", "s3cret")
        .arg(&file)
        .args(["--state", "none", "--log-format", "json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        common::output_lines(&events(&out.stderr), "show"),
        ["token=none"]
    );
    // Nor can they read it from their parent's first environment block (a job of the same user can).
    assert_eq!(
        common::output_lines(&events(&out.stderr), "peek"),
        ["clean"]
    );
    let bad = cmd()
        .env("FLOWRUN_TOKEN", "has space")
        .arg(&file)
        .args(["--state", "none"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn a_waiting_trigger_hears_when_its_queued_run_is_dropped() {
    let (dir, file) = flow(&format!(
        "executors: {{ one: {{ max_workers: 1 }} }}\njobs:\n  a:\n    run: sleep 60\n    executor: one\n    max_instances: 2\n    trigger: {NEVER}\n  b:\n    run: 'true'\n    trigger: {NEVER}\n"
    ));
    let state = state_of(&dir);
    let mut runner = Runner::start(&file, &state, &[]);
    assert_eq!(unix(&state, "POST", "/api/v1/jobs/a/trigger", "").0, 200);
    runner.wait_for(|e| e["event"] == "run.start" && e["job"] == "a");
    // The second waits for the one worker; its caller waits for its end.
    let socket_state = state.clone();
    let waiting = std::thread::spawn(move || {
        unix(
            &socket_state,
            "POST",
            "/api/v1/jobs/a/trigger?wait=true",
            "",
        )
    });
    // Its queued place shows in the status before the reload removes the job.
    loop {
        let (_, body) = unix(&state, "GET", "/api/v1/status", "");
        if json(&body)["jobs"][0]["waiting"] == 1 {
            break;
        }
        std::thread::yield_now();
    }
    std::fs::write(
        &file,
        format!("jobs:\n  b:\n    run: 'true'\n    trigger: {NEVER}\n"),
    )
    .unwrap();
    assert_eq!(
        flowrun(&["reload", file.to_str().unwrap()], &state)
            .status
            .code(),
        Some(0)
    );
    let (status, body) = waiting.join().unwrap();
    assert_eq!(status, 409, "{body}");
    let body = json(&body);
    assert_eq!(body["status"], "skipped");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("removed by a reload"),
        "{body}"
    );
    drop(runner);
}

#[test]
fn stop_job_calls_off_a_restart_waiting_for_its_delay() {
    let (dir, file) =
        flow("jobs:\n  svc:\n    run: exit 1\n    trigger: start\n    restart: always\n");
    let state = state_of(&dir);
    let mut runner = Runner::start(&file, &state, &[]);
    // Delays double from 100 ms: after the fourth end, the next start waits 800 ms.
    for n in 1..=4 {
        runner.wait_for(|e| e["event"] == "run.restart" && e["run"] == n);
    }
    let stop = flowrun(&["stop", file.to_str().unwrap(), "svc"], &state);
    assert_eq!(text(&stop.stdout), "svc: stopping 0 run(s)\n");
    // Nothing can fire any more: the runner ends by itself.
    let (_, seen) = runner.finish();
    let starts = seen
        .iter()
        .filter(|e| e["event"] == "run.start" && e["job"] == "svc")
        .count();
    assert_eq!(starts, 4, "the restart on its way was called off");
}

#[test]
fn a_job_moved_to_another_executor_by_a_reload_frees_the_worker_it_held() {
    let text = |executor: &str| {
        format!(
            "executors: {{ x: {{ max_workers: 1 }}, y: {{ max_workers: 1 }} }}\njobs:\n  a:\n    run: cat gate\n    executor: {executor}\n    trigger: [start, {NEVER}]\n"
        )
    };
    let (dir, file) = flow(&text("x"));
    let gate = common::fifo(dir.path(), "gate");
    let state = state_of(&dir);
    let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &[]);
    runner.wait_for(|e| e["event"] == "run.start" && e["job"] == "a");
    std::fs::write(&file, text("y")).unwrap();
    assert_eq!(
        flowrun(&["reload", file.to_str().unwrap()], &state)
            .status
            .code(),
        Some(0)
    );
    std::fs::write(&gate, "done\n").unwrap();
    runner.wait_for(|e| e["event"] == "run.exit" && e["job"] == "a");
    // Both executors have their worker free: a new run starts at once in `y`.
    let (status, body) = unix(&state, "POST", "/api/v1/jobs/a/trigger", "");
    assert_eq!(status, 200, "{body}");
    drop(runner);
}

#[test]
fn only_counts_dead_letters_nobody_reads_as_failed() {
    let (_dir, file) = flow(
        "channels: { tasks: {}, failed: {} }\njobs:\n  gen:\n    run: seq 3\n    stdout: tasks\n  work:\n    run: read -r n; [ \"$n\" != 2 ]\n    trigger: { each: tasks }\n    dead_letter: failed\n  dead:\n    run: cat\n    stdin: failed\n",
    );
    let out = cmd()
        .arg(&file)
        .args([
            "--state",
            "none",
            "--log-format",
            "json",
            "--only",
            "gen",
            "work",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a message failed for good");
    let ev = events(&out.stderr);
    assert_eq!(common::summary(&ev)["failed_messages"], 1);
}

#[test]
fn idle_tcp_connections_do_not_take_the_sockets_slots() {
    let (dir, file) = flow(&format!(
        "jobs:\n  a:\n    run: 'true'\n    trigger: {NEVER}\n"
    ));
    let state = state_of(&dir);
    let port = free_port();
    let runner = Runner::start(&file, &state, &["--listen", &port.to_string()]);
    // More idle connections than the TCP listener serves at once (64), fewer than it also holds in its backlog
    // (128), so every connect returns at once.
    let idle: Vec<std::net::TcpStream> = (0..150)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    assert_eq!(unix(&state, "GET", "/healthz", "").0, 200);
    drop(idle);
    drop(runner);
}

#[test]
fn watch_follows_a_swapped_symlink() {
    let (dir, _file) = flow("");
    let one = dir.path().join("one");
    let two = dir.path().join("two");
    std::fs::create_dir(&one).unwrap();
    std::fs::create_dir(&two).unwrap();
    let body = |extra: &str| format!("jobs:\n  a:\n    run: 'true'\n    trigger: {NEVER}\n{extra}");
    std::fs::write(one.join("flow.yaml"), body("")).unwrap();
    std::fs::write(
        two.join("flow.yaml"),
        body("  b:\n    run: echo from-b\n    trigger: start\n"),
    )
    .unwrap();
    let link = dir.path().join("current.yaml");
    std::os::unix::fs::symlink(one.join("flow.yaml"), &link).unwrap();
    let state = state_of(&dir);
    let mut runner = Runner::start(&link, &state, &["--watch"]);
    // The ConfigMap way: a new link renamed over the old one.
    let tmp = dir.path().join("current.tmp");
    std::os::unix::fs::symlink(two.join("flow.yaml"), &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    let applied = runner.wait_for(|e| e["event"] == "reload.applied");
    assert_eq!(applied["added"], serde_json::json!(["b"]));
}

#[test]
fn stopping_an_each_job_with_a_firing_waiting_for_a_worker_gives_its_messages_back_for_its_next_firing(
) {
    let (dir, file) = flow(
        "executors: { one: { max_workers: 1 } }\nchannels: { q: {} }\njobs:\n  blocker: { executor: one, run: cat gate }\n  w: { run: echo hello, stdout: q }\n  r: { executor: one, trigger: { each: q }, run: cat }\n",
    );
    let gate = common::fifo(dir.path(), "gate");
    let state = state_of(&dir);
    // `--for`: were the messages lost, the runner would never end by itself.
    let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &["--for", "60s"]);
    // The message is in `q` and `r`'s firing waits for the one worker, which `blocker` holds.
    runner.wait_for(|e| e["event"] == "channel.closed" && e["channel"] == "q");
    let stop = flowrun(&["stop", file.to_str().unwrap(), "r"], &state);
    assert_eq!(stop.status.code(), Some(0), "{stop:?}");
    std::fs::write(&gate, "free\n").unwrap();
    let (code, seen) = runner.finish_by_itself();
    assert_eq!(code, Some(0), "{seen:#?}");
    assert_eq!(common::output_lines(&seen, "r"), ["hello"]);
    assert_eq!(common::channel(&seen, "q"), (1, 1, 0));
}

#[test]
fn messages_of_a_queue_reader_removed_by_a_reload_go_to_the_other_readers() {
    // `a` takes all four messages in one batch; `b`, idle, could take no more once `q` is closed and empty, but
    // stays: what `a` holds may come back.
    let (dir, file) = flow(
        "channels: { q: {} }\njobs:\n  w: { run: printf 'm1\\nm2\\nm3\\nm4\\n', stdout: q }\n  a: { trigger: { each: q, batch: 100 }, run: 'cat; cat gate' }\n  b: { trigger: { each: q }, run: cat }\n",
    );
    let state = state_of(&dir);
    common::fifo(dir.path(), "gate");
    let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &["--for", "60s"]);
    runner.wait_for(|e| e["event"] == "output" && e["job"] == "a" && e["line"] == "m4");
    runner.wait_for(|e| e["event"] == "channel.closed" && e["channel"] == "q");
    reload_to(&file, &state, "channels: { q: {} }\njobs:\n  w: { run: printf 'm1\\nm2\\nm3\\nm4\\n', stdout: q }\n  b: { trigger: { each: q }, run: cat }\n");
    let (code, seen) = runner.finish_by_itself();
    assert_eq!(code, Some(0), "{seen:#?}");
    let mut got = common::output_lines(&seen, "b");
    got.sort_unstable();
    assert_eq!(got, ["m1", "m2", "m3", "m4"], "{seen:#?}");
    assert_eq!(common::channel(&seen, "q"), (4, 4, 0));
}

#[test]
fn messages_of_a_queue_reader_removed_by_a_reload_go_to_a_reader_the_reload_adds() {
    let (dir, file) = flow(
        "channels: { q: {} }\njobs:\n  w: { run: echo m1, stdout: q }\n  a: { trigger: { each: q }, run: 'cat; cat gate' }\n",
    );
    // `a` waits at the gate until the reload stops it.
    common::fifo(dir.path(), "gate");
    let state = state_of(&dir);
    let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &["--for", "60s"]);
    runner.wait_for(|e| e["event"] == "output" && e["job"] == "a" && e["line"] == "m1");
    // `a` goes, `b` comes: the message `a` held (and did not finish) is `b`'s.
    reload_to(&file, &state, "channels: { q: {} }\njobs:\n  w: { run: echo m1, stdout: q }\n  b: { trigger: { each: q }, run: cat }\n");
    let (code, seen) = runner.finish_by_itself();
    assert_eq!(code, Some(0), "{seen:#?}");
    assert_eq!(common::output_lines(&seen, "b"), ["m1"], "{seen:#?}");
    assert_eq!(common::channel(&seen, "q"), (1, 1, 0));
}

#[test]
fn a_dead_join_is_said_once_even_after_a_manual_run_of_its_job() {
    let (dir, file) = flow(
        "jobs:\n  a: { run: 'true' }\n  alert: { run: echo alert, trigger: { after: a, status: failure } }\n  keep: { run: cat gate }\n",
    );
    let gate = common::fifo(dir.path(), "gate");
    let state = state_of(&dir);
    let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &["--for", "60s"]);
    runner.wait_for(|e| e["event"] == "run.skipped" && e["job"] == "alert");
    let fired = flowrun(
        &["trigger", file.to_str().unwrap(), "alert", "--wait"],
        &state,
    );
    assert_eq!(fired.status.code(), Some(0), "{fired:?}");
    std::fs::write(&gate, "done\n").unwrap();
    let (code, seen) = runner.finish_by_itself();
    assert_eq!(code, Some(0), "{seen:#?}");
    let alert = &common::summary(&seen)["jobs"]["alert"];
    assert_eq!(alert["runs"], 1, "{seen:#?}");
    assert_eq!(alert["skipped"], 1, "{seen:#?}");
}

#[test]
fn a_past_at_added_by_a_reload_is_missed_at_once_and_recorded() {
    let (dir, file) = flow("jobs:\n  keep: { run: cat gate }\n");
    let gate = common::fifo(dir.path(), "gate");
    let state = state_of(&dir);
    let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &["--for", "60s"]);
    runner.wait_for(|e| e["event"] == "run.start" && e["job"] == "keep");
    reload_to(&file, &state, "jobs:\n  keep: { run: cat gate }\n  once: { run: echo once, trigger: { at: \"2020-01-01T00:00:00Z\" } }\n");
    let missed = runner.wait_for(|e| e["event"] == "run.missed" && e["job"] == "once");
    assert_eq!(missed["scheduled"], "2020-01-01T00:00:00.000000Z");
    std::fs::write(&gate, "done\n").unwrap();
    let (code, seen) = runner.finish_by_itself();
    assert_eq!(code, Some(0), "{seen:#?}");
    assert_eq!(common::summary(&seen)["jobs"]["once"]["missed"], 1);
    let out = flowrun(
        &[
            "history",
            file.to_str().unwrap(),
            "once",
            "--format",
            "json",
        ],
        &state,
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["outcome"], "missed");
}

/// Write `text` to the workflow file and have the runner reload it.
fn reload_to(file: &Path, state: &Path, text: &str) {
    std::fs::write(file, text).unwrap();
    let reload = flowrun(&["reload", file.to_str().unwrap()], state);
    assert_eq!(reload.status.code(), Some(0), "{reload:?}");
}

#[test]
fn a_channel_whose_last_writer_a_reload_takes_away_closes_when_its_live_run_ends() {
    let before = "channels: { q: {}, q2: {} }\njobs:\n  w: { run: 'seq 3; cat gate', stdout: q }\n  r: { run: cat, stdin: q }\n  r2: { run: cat, stdin: q2 }\n";
    // The writer removed (its run is stopped), or moved to another channel (its run goes on writing `q`).
    let removed = "channels: { q: {}, q2: {} }\njobs:\n  r: { run: cat, stdin: q }\n  r2: { run: cat, stdin: q2 }\n";
    let moved = before.replace("stdout: q }", "stdout: q2 }");
    for (after, lines) in [
        (removed, &["1", "2", "3"][..]),
        (&moved, &["1", "2", "3", "4"]),
    ] {
        let (dir, file) = flow(before);
        let gate = common::fifo(dir.path(), "gate");
        let state = state_of(&dir);
        let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &["--for", "60s"]);
        runner.wait_for(|e| e["event"] == "output" && e["job"] == "r" && e["line"] == "3");
        reload_to(&file, &state, after);
        if after == moved {
            std::fs::write(&gate, "4\n").unwrap();
        }
        let (code, seen) = runner.finish_by_itself();
        assert_eq!(code, Some(0), "{seen:#?}");
        assert_eq!(common::output_lines(&seen, "r"), lines, "{seen:#?}");
        assert_eq!(common::output_lines(&seen, "r2"), [] as [&str; 0]);
    }
}

#[test]
fn a_dead_letter_channel_whose_only_writer_a_reload_removes_closes() {
    let (dir, file) = flow(
        "channels: { q: {}, dl: {} }\njobs:\n  w: { run: echo m1, stdout: q }\n  f: { run: 'cat gate; exit 1', trigger: { each: q }, dead_letter: dl }\n  d: { run: cat, stdin: dl }\n",
    );
    common::fifo(dir.path(), "gate");
    let state = state_of(&dir);
    let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &["--for", "60s"]);
    runner.wait_for(|e| e["event"] == "run.start" && e["job"] == "f");
    reload_to(
        &file,
        &state,
        "channels: { q: {}, dl: {} }\njobs:\n  w: { run: echo m1, stdout: q }\n  g: { run: cat, trigger: { each: q } }\n  d: { run: cat, stdin: dl }\n",
    );
    let (code, seen) = runner.finish_by_itself();
    assert_eq!(code, Some(0), "{seen:#?}");
    assert_eq!(common::output_lines(&seen, "g"), ["m1"], "{seen:#?}");
    assert_eq!(common::channel(&seen, "dl"), (0, 0, 0));
}

#[test]
fn a_writer_blocked_on_a_full_queue_whose_only_reader_a_reload_removes_sees_a_closed_pipe() {
    let (dir, file) = flow(
        "channels: { q: { capacity: 2 } }\njobs:\n  w: { run: 'seq 10000000; echo seq-exit $? >&2', stdout: q }\n  r: { run: 'read x; echo $x; cat gate', stdin: q }\n",
    );
    common::fifo(dir.path(), "gate");
    let state = state_of(&dir);
    let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &["--for", "60s"]);
    runner.wait_for(|e| e["event"] == "output" && e["job"] == "r" && e["line"] == "1");
    reload_to(
        &file,
        &state,
        "jobs:\n  w: { run: 'seq 10000000; echo seq-exit $? >&2' }\n",
    );
    let (code, seen) = runner.finish_by_itself();
    assert_eq!(code, Some(0), "{seen:#?}");
    // 141: SIGPIPE, as `seq 10000000 | head -n 1` in a shell.
    assert_eq!(
        common::output_lines(&seen, "w"),
        ["seq-exit 141"],
        "{seen:#?}"
    );
    let (taken_in, out, left) = common::channel(&seen, "q");
    assert_eq!(taken_in, out + left);
}

#[test]
fn a_reader_a_reload_adds_to_a_closed_broadcast_gets_its_end_at_once() {
    let (dir, file) = flow(
        "channels: { b: { kind: broadcast } }\njobs:\n  w: { run: seq 3, stdout: b }\n  r: { run: 'cat; cat gate', stdin: b }\n",
    );
    let gate = common::fifo(dir.path(), "gate");
    let state = state_of(&dir);
    let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &["--for", "60s"]);
    runner.wait_for(|e| e["event"] == "output" && e["job"] == "r" && e["line"] == "3");
    runner.wait_for(|e| e["event"] == "channel.closed" && e["channel"] == "b");
    reload_to(
        &file,
        &state,
        "channels: { b: { kind: broadcast } }\njobs:\n  w: { run: seq 3, stdout: b }\n  r: { run: 'cat; cat gate', stdin: b }\n  r2: { run: 'cat; echo end', stdin: b }\n",
    );
    // Ended by its input's end, not by `--for` (which would leave the gate without a reader).
    let exit = runner.wait_for(|e| e["event"] == "run.exit" && e["job"] == "r2");
    assert_eq!(exit["code"], 0, "{exit}");
    std::fs::write(&gate, "done\n").unwrap();
    let (code, seen) = runner.finish_by_itself();
    assert_eq!(code, Some(0), "{seen:#?}");
    assert_eq!(common::output_lines(&seen, "r2"), ["end"]);
}

#[test]
fn a_closed_channel_whose_kind_a_reload_changes_stays_closed_with_its_counts() {
    let (dir, file) = flow(
        "channels: { q: {} }\njobs:\n  w: { run: seq 3, stdout: q }\n  r: { run: cat, trigger: { each: q } }\n  keep: { run: cat gate }\n",
    );
    let gate = common::fifo(dir.path(), "gate");
    let state = state_of(&dir);
    let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &["--for", "60s"]);
    runner.wait_for(|e| e["event"] == "channel.closed" && e["channel"] == "q");
    for _ in 0..3 {
        runner.wait_for(|e| e["event"] == "run.exit" && e["job"] == "r");
    }
    reload_to(
        &file,
        &state,
        "channels: { q: { kind: broadcast } }\njobs:\n  w: { run: seq 3, stdout: q }\n  r: { run: cat, trigger: { each: q, batch: 2 } }\n  keep: { run: cat gate }\n",
    );
    std::fs::write(&gate, "done\n").unwrap();
    let (code, seen) = runner.finish_by_itself();
    assert_eq!(code, Some(0), "{seen:#?}");
    assert_eq!(common::channel(&seen, "q"), (3, 3, 0), "{seen:#?}");
}

#[test]
fn a_queue_whose_readers_had_ended_feeds_a_reader_a_reload_adds() {
    let (dir, file) = flow(
        "channels: { q: {} }\njobs:\n  w: { run: 'echo 1; cat gate', stdout: q }\n  r: { run: 'head -n 1', stdin: q }\n",
    );
    let gate = common::fifo(dir.path(), "gate");
    let state = state_of(&dir);
    let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &["--for", "60s"]);
    runner.wait_for(|e| e["event"] == "run.exit" && e["job"] == "r");
    reload_to(
        &file,
        &state,
        "channels: { q: {} }\njobs:\n  w: { run: 'echo 1; cat gate', stdout: q }\n  r: { run: 'head -n 1', stdin: q }\n  r2: { run: cat, stdin: q }\n",
    );
    runner.wait_for(|e| e["event"] == "run.start" && e["job"] == "r2");
    std::fs::write(&gate, "2\n3\n").unwrap();
    let (code, seen) = runner.finish_by_itself();
    assert_eq!(code, Some(0), "{seen:#?}");
    assert_eq!(common::output_lines(&seen, "r"), ["1"]);
    assert_eq!(common::output_lines(&seen, "r2"), ["2", "3"], "{seen:#?}");
    assert_eq!(common::channel(&seen, "q"), (3, 3, 0), "{seen:#?}");
}

#[test]
fn an_each_run_that_finishes_its_batch_when_stopped_is_not_given_its_messages_again() {
    let (dir, file) = flow(
        "channels: { q: {} }\njobs:\n  w: { run: 'seq 2; cat gate >/dev/null', stdout: q }\n  e: { run: \"trap 'exit 0' TERM; cat; cat gate2 & wait\", trigger: { each: q, batch: 2 } }\n",
    );
    let gate = common::fifo(dir.path(), "gate");
    common::fifo(dir.path(), "gate2");
    let state = state_of(&dir);
    let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &["--for", "60s"]);
    runner.wait_for(|e| e["event"] == "output" && e["job"] == "e" && e["line"] == "2");
    let stop = flowrun(&["stop", file.to_str().unwrap(), "e"], &state);
    assert_eq!(stop.status.code(), Some(0), "{stop:?}");
    let exit = runner.wait_for(|e| e["event"] == "run.exit" && e["job"] == "e");
    assert_eq!(exit["code"], 0, "{exit}");
    std::fs::write(&gate, "done\n").unwrap();
    let (code, seen) = runner.finish_by_itself();
    assert_eq!(code, Some(0), "{seen:#?}");
    assert_eq!(common::output_lines(&seen, "e"), ["1", "2"], "{seen:#?}");
    assert_eq!(common::channel(&seen, "q"), (2, 2, 0), "{seen:#?}");
}

#[test]
fn copies_an_each_reader_of_a_broadcast_held_when_a_reload_removed_it_count_as_left() {
    let (dir, file) = flow(
        "channels: { b: { kind: broadcast } }\njobs:\n  w: { run: 'seq 3; cat gate', stdout: b }\n  e1: { run: 'cat; cat gate2', trigger: { each: b } }\n  e2: { run: cat, stdin: b }\n",
    );
    let gate = common::fifo(dir.path(), "gate");
    common::fifo(dir.path(), "gate2");
    let state = state_of(&dir);
    let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &["--for", "60s"]);
    runner.wait_for(|e| e["event"] == "output" && e["job"] == "e1" && e["line"] == "1");
    runner.wait_for(|e| e["event"] == "output" && e["job"] == "e2" && e["line"] == "3");
    reload_to(
        &file,
        &state,
        "channels: { b: { kind: broadcast } }\njobs:\n  w: { run: 'seq 3; cat gate', stdout: b }\n  e2: { run: cat, stdin: b }\n",
    );
    runner.wait_for(|e| e["event"] == "run.exit" && e["job"] == "e1");
    std::fs::write(&gate, "4\n").unwrap();
    let (code, seen) = runner.finish_by_itself();
    assert_eq!(code, Some(0), "{seen:#?}");
    // `e1` had three copies and finished none (its run was stopped): they are left, not out.
    assert_eq!(common::channel(&seen, "b"), (7, 4, 3), "{seen:#?}");
}

#[test]
fn a_capacity_a_reload_raises_lets_a_waiting_writer_go_on() {
    let (dir, file) = flow(&format!(
        "channels: {{ q: {{ capacity: 2 }} }}\njobs:\n  w: {{ run: seq 5, stdout: q }}\n  r: {{ run: cat, stdin: q, trigger: {NEVER} }}\n"
    ));
    let state = state_of(&dir);
    let runner = Runner::start(&file, &state, &[]);
    let taken_in = || {
        let (_, body) = unix(&state, "GET", "/api/v1/status", "");
        json(&body)["channels"][0]["in"].as_u64().unwrap()
    };
    let until = |n: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while taken_in() != n {
            assert!(
                std::time::Instant::now() < deadline,
                "`in` never reached {n}"
            );
            std::thread::yield_now();
        }
    };
    // The writer waits for room after two.
    until(2);
    reload_to(
        &file,
        &state,
        &format!("channels: {{ q: {{ capacity: 10 }} }}\njobs:\n  w: {{ run: seq 5, stdout: q }}\n  r: {{ run: cat, stdin: q, trigger: {NEVER} }}\n"),
    );
    until(5);
    let stop = flowrun(&["stop", file.to_str().unwrap()], &state);
    assert_eq!(stop.status.code(), Some(0), "{stop:?}");
    drop(runner);
}

#[test]
fn a_retry_waiting_for_its_backoff_goes_when_its_job_is_stopped_or_removed() {
    let text = "jobs:\n  keep: { run: cat gate }\n  f: { run: exit 1, retry: { attempts: 3, backoff: 1h } }\n";
    for how in ["stop", "reload"] {
        let (dir, file) = flow(text);
        let gate = common::fifo(dir.path(), "gate");
        let state = state_of(&dir);
        let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &["--for", "60s"]);
        runner.wait_for(|e| e["event"] == "run.retry" && e["job"] == "f");
        if how == "stop" {
            let stop = flowrun(&["stop", file.to_str().unwrap(), "f"], &state);
            assert_eq!(stop.status.code(), Some(0), "{stop:?}");
        } else {
            reload_to(&file, &state, "jobs:\n  keep: { run: cat gate }\n");
        }
        std::fs::write(&gate, "done\n").unwrap();
        // The hour's wait is called off: nothing is left that could fire.
        let (_, seen) = runner.finish_by_itself();
        let starts = seen
            .iter()
            .filter(|e| e["event"] == "run.start" && e["job"] == "f")
            .count();
        assert_eq!(starts, 1, "{how}: {seen:#?}");
    }
}

#[test]
fn a_retry_of_a_trigger_a_reload_took_away_runs_and_says_so_in_history() {
    let (dir, file) = flow(
        "jobs:\n  f:\n    run: cat gate; exit 1\n    trigger: [{ interval: 10m }, start]\n    retry: { attempts: 2, backoff: 10ms }\n",
    );
    let gate = common::fifo(dir.path(), "gate");
    let state = state_of(&dir);
    let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &["--for", "60s"]);
    runner.wait_for(|e| e["event"] == "run.start" && e["job"] == "f");
    // The start trigger (index 1) goes while its run is live; the run's retry still names it.
    reload_to(
        &file,
        &state,
        "jobs:\n  f:\n    run: exit 1\n    trigger: { interval: 10m }\n    retry: { attempts: 2, backoff: 10ms }\n",
    );
    std::fs::write(&gate, "go\n").unwrap();
    runner.wait_for(|e| e["event"] == "run.start" && e["job"] == "f" && e["attempt"] == 2);
    let stop = flowrun(&["stop", file.to_str().unwrap()], &state);
    assert_eq!(stop.status.code(), Some(0), "{stop:?}");
    let (_, seen) = runner.finish();
    assert!(
        seen.iter().any(|e| e["event"] == "runner.stop"),
        "{seen:#?}"
    );
    let history = flowrun(
        &["history", file.to_str().unwrap(), "--format", "json"],
        &state,
    );
    // The retry is a try of the run the start trigger fired: one row, at its second try, named by what fired it.
    let rows = json(&text(&history.stdout));
    let run = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run"] == 1)
        .unwrap_or_else(|| panic!("{rows}"));
    assert_eq!(run["trigger"], "start", "{run}");
    assert!(run["attempt"].as_u64().unwrap() >= 2, "{run}");
}

#[test]
fn what_a_live_reader_held_goes_back_to_the_channel_it_read_though_a_reload_moved_its_job() {
    // `r` reads one line and holds the rest in its pipe; the reload moves it to `q2` (and takes `q` away) while its
    // run is live.
    let (dir, file) = flow(
        "channels: { q: {}, q2: {} }\njobs:\n  w: { run: seq 3, stdout: q }\n  w2: { run: 'true', stdout: q2 }\n  r: { run: 'read x; echo got $x; cat gate', stdin: q }\n  r2: { run: cat, stdin: q2 }\n",
    );
    let gate = common::fifo(dir.path(), "gate");
    let state = state_of(&dir);
    let mut runner = Runner::start_in(dir.path(), &file, &state, &[], &["--for", "60s"]);
    runner.wait_for(|e| e["event"] == "output" && e["job"] == "r" && e["line"] == "got 1");
    runner.wait_for(|e| e["event"] == "channel.closed" && e["channel"] == "q");
    reload_to(
        &file,
        &state,
        "channels: { q2: {} }\njobs:\n  w2: { run: 'true', stdout: q2 }\n  r: { run: 'read x; echo got $x; cat gate', stdin: q2 }\n",
    );
    std::fs::write(&gate, "done\n").unwrap();
    let (code, seen) = runner.finish_by_itself();
    assert_eq!(code, Some(0), "{seen:#?}");
    let back = seen
        .iter()
        .find(|e| e["event"] == "channel.takeback")
        .expect("a take-back");
    assert_eq!(back["channel"], "q", "{back}");
    assert_eq!(back["messages"], 2, "{back}");
}

/// A state whose history holds `a`'s runs 1..=2501 and `b`'s runs 1..=500, interleaved (every sixth row is `b`'s),
/// written straight into the database a first short run made; the rows (job, run) in the order written.
fn history_of_3001_rows(dir: &tempfile::TempDir, file: &Path) -> (PathBuf, Vec<(String, u64)>) {
    let state = state_of(dir);
    let (code, _) = Runner::start(file, &state, &[]).finish_by_itself();
    assert_eq!(code, Some(0));
    let mut db = rusqlite::Connection::open(state.join("state.db")).unwrap();
    let tx = db.transaction().unwrap();
    let mut written = vec![("a".to_string(), 1)];
    let (mut a, mut b) = (1, 0);
    while a < 2501 || b < 500 {
        let job = match (written.len() % 6 == 5 && b < 500) || a == 2501 {
            true => "b",
            false => "a",
        };
        let run = if job == "a" { &mut a } else { &mut b };
        *run += 1;
        tx.execute(
            "INSERT INTO runs (job, run, trigger, outcome) VALUES (?1, ?2, 'start', 'succeeded')",
            rusqlite::params![job, *run],
        )
        .unwrap();
        written.push((job.to_string(), *run));
    }
    tx.execute(
        "INSERT OR REPLACE INTO counters (job, last_run) VALUES ('a', 2501), ('b', 500)",
        [],
    )
    .unwrap();
    tx.commit().unwrap();
    (state, written)
}

/// Every page of `path`, following `Link: <...>; rel="next"`: the rows of each page.
fn walk_history(state: &Path, path: &str) -> Vec<Vec<(String, u64)>> {
    let mut pages = Vec::new();
    let mut next = Some(path.to_string());
    while let Some(path) = next.take() {
        let stream = std::os::unix::net::UnixStream::connect(state.join("control.sock")).unwrap();
        let (status, headers, body) = http_with_headers(stream, "GET", &path, "", &[]);
        assert_eq!(status, 200, "{path}: {body}");
        let rows: Vec<(String, u64)> = json(&body)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["job"].as_str().unwrap().to_string(),
                    r["run"].as_u64().unwrap(),
                )
            })
            .collect();
        if let Some(link) = header(&headers, "link") {
            let url = link
                .strip_prefix('<')
                .and_then(|l| l.strip_suffix(">; rel=\"next\""))
                .unwrap_or_else(|| panic!("not a next link: {link}"));
            let cursor = url.rsplit_once("before=").unwrap().1;
            assert_eq!(header(&headers, "x-next-cursor"), Some(cursor));
            next = Some(url.to_string());
        }
        pages.push(rows);
    }
    pages
}

#[test]
fn history_comes_in_pages_of_at_most_1000_rows_walked_by_a_cursor() {
    let (dir, file) = flow("jobs:\n  a:\n    run: 'true'\n    trigger: start\n");
    let (state, written) = history_of_3001_rows(&dir, &file);
    std::fs::write(
        &file,
        format!("jobs:\n  a:\n    run: 'true'\n    trigger: {NEVER}\n  b:\n    run: 'true'\n    trigger: {NEVER}\n"),
    )
    .unwrap();
    let runner = Runner::start(&file, &state, &[]);
    // Every job: the old client's limit gets a page of 1,000 and the way to the rest.
    let pages = walk_history(&state, "/api/v1/history?limit=100000");
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [1000, 1000, 1000, 1]);
    let newest_first: Vec<(String, u64)> = written.iter().rev().cloned().collect();
    assert_eq!(pages.concat(), newest_first, "every row once, newest first");
    // One job: the link keeps the job and the limit.
    let pages = walk_history(&state, "/api/v1/history?job=a&limit=100000");
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [1000, 1000, 501]);
    let runs: Vec<u64> = pages.concat().iter().map(|(_, run)| *run).collect();
    assert_eq!(runs, (1..=2501).rev().collect::<Vec<u64>>());
    // A small limit pages too.
    let pages = walk_history(&state, "/api/v1/history?job=b&limit=300");
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [300, 200]);
    for bad in ["abc", "0", "-5", "1.5", ""] {
        let (status, body) = unix(&state, "GET", &format!("/api/v1/history?before={bad}"), "");
        assert_eq!(status, 400, "before={bad}: {body}");
        assert!(json(&body)["error"].is_string(), "{body}");
    }
    assert_eq!(unix(&state, "POST", "/api/v1/stop", "").0, 200);
    let (code, _) = runner.finish();
    assert_eq!(code, Some(0));
    assert!(
        !state.join("control.sock").exists(),
        "the socket file is removed at the end"
    );
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_client_timeout() {
    let (dir, file) = flow(&format!(
        "jobs:\n  a:\n    run: 'true'\n    trigger: {NEVER}\n"
    ));
    let state = state_of(&dir);
    let port = free_port();
    // 10 s by default; 1 s here (the bound is what is tested, not its default).
    let mut runner = Runner::start_in(
        dir.path(),
        &file,
        &state,
        &[("FLOWRUN_API_TIMEOUT", "1s")],
        &["--listen", &port.to_string()],
    );
    runner.wait_for(|e| e["event"] == "runner.start");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    // A bound on the test itself, far beyond the server's.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    // The answer ("ok\n", kept alive), then nothing more is asked: the server closes the connection.
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = text(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"),
        "{answer}"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(900),
        "closed before its time"
    );
    drop(runner);
}

/// The nice value of each thread of a process, by the thread's name.
fn threads_nice(pid: u32) -> Vec<(String, i64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .filter_map(|task| {
            let task = task.ok()?.path();
            let name = std::fs::read_to_string(task.join("comm")).ok()?;
            let stat = std::fs::read_to_string(task.join("stat")).ok()?;
            // Fields after the command: the state is the 3rd field of stat, nice the 19th.
            let nice = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(16)?
                .parse()
                .ok()?;
            Some((name.trim().to_string(), nice))
        })
        .collect()
}

#[test]
fn the_api_is_served_by_threads_of_its_own_at_a_lower_priority() {
    let (dir, file) = flow(&format!(
        "jobs:\n  a:\n    run: 'true'\n    trigger: {NEVER}\n"
    ));
    let state = state_of(&dir);
    let runner = Runner::start(&file, &state, &[]);
    // A history read: the API's blocking thread that read it is still there (idle threads live 10 s).
    assert_eq!(unix(&state, "GET", "/api/v1/history", "").0, 200);
    let threads = threads_nice(runner.child.id());
    let (api, engine): (Vec<_>, Vec<_>) = threads
        .iter()
        .partition(|(name, _)| name.starts_with("flowrun-api"));
    let names: Vec<&str> = api.iter().map(|(name, _)| name.as_str()).collect();
    assert!(
        names.contains(&"flowrun-api") && names.contains(&"flowrun-api-io"),
        "{threads:?}"
    );
    // Nicer by 10 than the engine's threads (whatever nice the test itself runs at).
    let engine_nice = engine[0].1;
    assert!(
        engine.iter().all(|(_, nice)| *nice == engine_nice),
        "{threads:?}"
    );
    let api_nice = (engine_nice + 10).min(19);
    assert!(api.iter().all(|(_, nice)| *nice == api_nice), "{threads:?}");
    drop(runner);
}

#[test]
fn a_client_that_half_closes_after_its_request_gets_its_answer() {
    let (dir, file) = flow(&format!(
        "jobs:\n  a:\n    run: 'true'\n    trigger: {NEVER}\n"
    ));
    let state = state_of(&dir);
    let port = free_port();
    let _runner = Runner::start(&file, &state, &["--listen", &port.to_string()]);
    // As `nc -N` does: the request, then the write side shut, then the answer read. It was dropped (and a
    // trigger sent so was carried out unanswered).
    let ask = |mut stream: Box<dyn ReadWrite>, shut: &dyn Fn()| {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        shut();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        text(&answer)
    };
    for _ in 0..10 {
        let unix = std::os::unix::net::UnixStream::connect(state.join("control.sock")).unwrap();
        let half = unix.try_clone().unwrap();
        let answer = ask(Box::new(unix), &|| {
            half.shutdown(std::net::Shutdown::Write).unwrap()
        });
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"),
            "{answer:?}"
        );
        let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let half = tcp.try_clone().unwrap();
        let answer = ask(Box::new(tcp), &|| {
            half.shutdown(std::net::Shutdown::Write).unwrap()
        });
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"),
            "{answer:?}"
        );
    }
    // Methods that change nothing are not refused for want of a token: they are answered by the routes.
    assert_eq!(tcp(port, "TRACE", "/healthz", &[]).0, 405);
    // A request head over the 64 KiB bound is refused by the HTTP layer (hyper checks after a read, so a head of
    // up to about twice that may pass; by default it took 400 KB a connection).
    let big = format!("X-Big: {}", "x".repeat(200 * 1024));
    assert_eq!(tcp(port, "GET", "/healthz", &[&big]).0, 431);
    // A broken chunked body is a bad request, not one too large.
    let stream = std::os::unix::net::UnixStream::connect(state.join("control.sock")).unwrap();
    let (code, body) = http(
        stream,
        "POST",
        "/api/v1/jobs/a/trigger",
        "zz\r\nab\r\n0\r\n\r\n",
        &["Transfer-Encoding: chunked"],
    );
    assert_eq!(code, 400, "{body}");
    assert!(
        json(&body)["error"].as_str().unwrap().contains("broken"),
        "{body}"
    );
}

/// A stream to read and write (Unix or TCP).
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[test]
fn a_paused_job_fires_nothing_is_shown_paused_and_stays_paused_across_a_restart() {
    let (dir, file) = flow(&format!(
        "jobs:\n  tick:\n    run: 'true'\n    trigger: {{ interval: 50ms }}\n  keep:\n    run: 'true'\n    trigger: {NEVER}\n"
    ));
    let state = state_of(&dir);
    let f = file.to_str().unwrap();
    let mut runner = Runner::start(&file, &state, &[]);
    let paused = flowrun(&["pause", f, "tick"], &state);
    assert_eq!(paused.status.code(), Some(0), "{paused:?}");
    assert_eq!(
        text(&paused.stdout),
        "tick: paused (until `flowrun resume`)\n"
    );
    runner.wait_for(|e| e["event"] == "job.paused" && e["job"] == "tick");
    // Its time firings are skipped as paused (history rows too); a manual firing is refused with why.
    runner
        .wait_for(|e| e["event"] == "run.skipped" && e["job"] == "tick" && e["reason"] == "paused");
    let (code, body) = unix(&state, "POST", "/api/v1/jobs/tick/trigger", "");
    assert_eq!(code, 409, "{body}");
    assert!(
        json(&body)["error"].as_str().unwrap().contains("paused"),
        "{body}"
    );
    let status = json(&text(
        &flowrun(&["status", f, "--format", "json"], &state).stdout,
    ));
    let tick = &status["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job"] == "tick")
        .unwrap()
        .clone();
    assert_eq!(tick["paused"], true);
    assert!(
        tick["state"].as_str().unwrap().starts_with("paused"),
        "{tick}"
    );
    let (_, metrics) = unix(&state, "GET", "/metrics", "");
    assert!(
        metrics.contains("flowrun_job_paused{job=\"tick\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("flowrun_job_paused{job=\"keep\"} 0"),
        "{metrics}"
    );
    let unknown = flowrun(&["pause", f, "nope"], &state);
    assert_eq!(unknown.status.code(), Some(2));
    // Remembered: a runner started again has it paused from its start; `status` without a runner says so too.
    let stop = flowrun(&["stop", f], &state);
    assert_eq!(stop.status.code(), Some(0));
    let (code, events) = runner.finish();
    assert_eq!(code, Some(0));
    let rows = json(&text(
        &flowrun(&["history", f, "tick", "--format", "json"], &state).stdout,
    ));
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .any(|r| r["outcome"] == "skipped" && r["reason"] == "paused"),
        "{rows}"
    );
    // Nothing of it started once it was paused (events are in the order the dispatcher decided them).
    let since = events
        .iter()
        .position(|e| e["event"] == "job.paused")
        .unwrap();
    let started = events[since..]
        .iter()
        .any(|e| e["event"] == "run.start" && e["job"] == "tick");
    assert!(!started);
    let offline = text(&flowrun(&["status", f], &state).stdout);
    assert!(offline.contains("paused"), "{offline}");
    let mut runner = Runner::start(&file, &state, &[]);
    runner.wait_for(|e| e["event"] == "job.paused" && e["job"] == "tick");
    let resumed = flowrun(&["resume", f, "tick"], &state);
    assert_eq!(text(&resumed.stdout), "tick: resumed\n");
    runner.wait_for(|e| e["event"] == "run.start" && e["job"] == "tick");
    let again = flowrun(&["resume", f, "tick"], &state);
    assert_eq!(text(&again.stdout), "tick: was not paused\n");
    assert_eq!(flowrun(&["stop", f], &state).status.code(), Some(0));
    runner.finish();
}

#[test]
fn a_pause_for_a_while_ends_by_itself() {
    let (dir, file) = flow("jobs:\n  tick:\n    run: 'true'\n    trigger: { interval: 50ms }\n");
    let state = state_of(&dir);
    let f = file.to_str().unwrap();
    let mut runner = Runner::start(&file, &state, &[]);
    let paused = flowrun(&["pause", f, "tick", "--for", "1s"], &state);
    assert!(
        text(&paused.stdout).starts_with("tick: paused until "),
        "{paused:?}"
    );
    runner.wait_for(|e| e["event"] == "job.resumed" && e["job"] == "tick");
    runner.wait_for(|e| e["event"] == "run.start" && e["job"] == "tick");
    let (status, body) = unix(&state, "POST", "/api/v1/jobs/tick/pause?for=soon", "");
    assert_eq!(status, 400, "{body}");
    assert_eq!(flowrun(&["stop", f], &state).status.code(), Some(0));
    runner.finish();
}

#[test]
fn a_disabled_job_is_validated_never_fires_and_runs_by_hand_or_with_only() {
    let (_dir, file) =
        flow("jobs:\n  off:\n    run: echo ran\n    enabled: false\n  on:\n    run: echo on\n");
    let (code, ev) = common::run_json(&file, &["--state", "none"]);
    assert_eq!(code, Some(0));
    assert!(common::output_lines(&ev, "off").is_empty());
    assert_eq!(common::output_lines(&ev, "on"), ["on"]);
    let (code, ev) = common::run_json(&file, &["--state", "none", "--only", "off"]);
    assert_eq!(code, Some(0));
    assert_eq!(common::output_lines(&ev, "off"), ["ran"]);
    let (_dir, bad) = flow("jobs:\n  off:\n    run: 'true'\n    enabled: nope\n");
    let found = common::diagnostics(&bad);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].1, found[0].2), (4, 14), "{found:?}");
}

#[test]
fn a_run_waiting_for_its_retry_is_shown_retrying_not_ended() {
    let (dir, file) =
        flow("jobs:\n  flaky:\n    run: exit 3\n    retry: { attempts: 2, backoff: 1h }\n");
    let state = state_of(&dir);
    let f = file.to_str().unwrap();
    let mut runner = Runner::start(&file, &state, &[]);
    runner.wait_for(|e| e["event"] == "run.retry" && e["job"] == "flaky");
    let status = json(&text(
        &flowrun(&["status", f, "--format", "json"], &state).stdout,
    ));
    let job = status["jobs"][0].clone();
    assert_eq!(job["state"], "retrying #1", "{job}");
    assert_ne!(job["last_ended"], true, "{job}");
    assert_eq!(flowrun(&["stop", f], &state).status.code(), Some(0));
    runner.finish();
}

#[test]
fn a_reload_of_a_fifo_is_refused_at_once_and_the_next_reload_works() {
    let (dir, file) = flow(&format!(
        "jobs:\n  a:\n    run: 'true'\n    trigger: {NEVER}\n"
    ));
    let state = state_of(&dir);
    let f = file.to_str().unwrap();
    let mut runner = Runner::start(&file, &state, &[]);
    // A FIFO nobody writes held the reload in `open` for ever, and every reload after it.
    std::fs::remove_file(&file).unwrap();
    common::fifo(dir.path(), "flow.yaml");
    let refused = flowrun(&["reload", f], &state);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    std::fs::remove_file(&file).unwrap();
    std::fs::write(&file, format!("jobs:\n  a:\n    run: 'true'\n    trigger: {NEVER}\n  b:\n    run: 'true'\n    trigger: {NEVER}\n")).unwrap();
    let applied = flowrun(&["reload", f], &state);
    assert_eq!(applied.status.code(), Some(0), "{applied:?}");
    runner.wait_for(|e| e["event"] == "reload.applied");
    // A pause longer than the state can remember is refused, not a panic.
    let (status, body) = unix(&state, "POST", "/api/v1/jobs/a/pause?for=3000000000h", "");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("too long"), "{body}");
    assert_eq!(flowrun(&["stop", f], &state).status.code(), Some(0));
    runner.finish();
}
