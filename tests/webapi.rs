//! The API pieces the web page reads (SPEC §10), through the real binary on a loopback port: the page's files,
//! the event stream, one run and its log (whole and followed live), the graph, clear errors for bad paths,
//! `flowrun ui` (its token, its proxy to the control socket), and the OpenAPI document: every route of the
//! router is in it and every answer these tests see matches the schema it documents.

mod openapi;
mod web;

use serde_json::Value;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;
use web::{open_gate, request, Answer, Runner, Sse, TOKEN};

/// How often a condition is looked at again while polling it (against a deadline).
const POLL: Duration = Duration::from_millis(20);

const NEVER: &str = "{ cron: \"0 0 1 1 *\", timezone: UTC }";

/// `a` runs when fired; `gated` prints a line, waits for the file `go`, prints another; `b` runs after `a`
/// through a channel of lines.
fn workflow() -> String {
    format!(
        "channels:\n  lines: {{ kind: queue }}\njobs:\n  a:\n    run: echo hello\n    trigger: {NEVER}\n    stdout: lines\n  \
         b:\n    run: cat\n    stdin: lines\n  gated:\n    run: 'echo one; while [ ! -e go ]; do sleep 0.02; done; echo two'\n    \
         trigger: {NEVER}\n  after-a:\n    run: 'true'\n    trigger: {{ after: a }}\n"
    )
}

/// The OpenAPI document the server gives, and a checker of answers against it.
struct Spec {
    doc: Value,
}

impl Spec {
    fn of(runner: &Runner) -> Spec {
        let answer = runner.get("/api/v1/openapi.json");
        assert_eq!(answer.status, 200);
        let doc = answer.json();
        assert_eq!(doc["openapi"], "3.1.0");
        Spec { doc }
    }

    /// The answer to `method template` is documented with its status, and a JSON body matches its schema.
    fn check(&self, method: &str, template: &str, answer: &Answer) {
        let op = &self.doc["paths"][template][method];
        assert!(op.is_object(), "{method} {template} is not documented");
        openapi::conforms(
            method,
            template,
            answer.status,
            answer.header("content-type"),
            &answer.body,
        );
    }
}

/// Every route of the router (read from its source), with its method.
fn routes() -> Vec<(String, String)> {
    let source = include_str!("../src/control/api.rs");
    let mut routes = Vec::new();
    for line in source
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(".route(\""))
    {
        let path = line.split('"').nth(1).unwrap().to_string();
        let method = line.split(", ").nth(1).unwrap().split('(').next().unwrap();
        routes.push((path, method.to_string()));
    }
    assert!(routes.len() >= 15, "the routes were read: {routes:?}");
    routes
}

#[test]
fn every_route_of_the_router_is_documented_and_nothing_else_is() {
    let doc: Value = serde_json::from_str(include_str!("../src/control/openapi.json")).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let routes = routes();
    for (path, method) in &routes {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is routed but not documented"
        );
    }
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            assert!(
                routes.iter().any(|(p, m)| p == path && m == method),
                "{method} {path} is documented but not routed"
            );
        }
    }
}

#[test]
fn the_page_and_its_files_are_served_with_a_strict_policy() {
    let runner = Runner::start(&workflow());
    let spec = Spec::of(&runner);
    let page = runner.get("/");
    assert_eq!(page.status, 200);
    spec.check("get", "/", &page);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page
        .header("content-security-policy")
        .unwrap()
        .contains("script-src 'self'"));
    // Each file the page names is served.
    for name in ["style.css", "errors.js", "app.js"] {
        assert!(page.body.contains(&format!("/ui/{name}")), "{name}");
        let file = runner.get(&format!("/ui/{name}"));
        assert_eq!(file.status, 200, "{name}");
        spec.check("get", "/ui/{file}", &file);
    }
    let missing = runner.get("/ui/nothing.js");
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"]
        .as_str()
        .unwrap()
        .contains("nothing.js"));
    spec.check("get", "/ui/{file}", &missing);
}

#[test]
fn the_event_stream_carries_each_run_as_json_records() {
    let runner = Runner::start(&workflow());
    let spec = Spec::of(&runner);
    let mut events = Sse::open(runner.port, "/api/v1/events", &[]);
    let fired = runner.post("/api/v1/jobs/a/trigger");
    assert_eq!(fired.json()["status"], "started", "{}", fired.body);
    spec.check("post", "/api/v1/jobs/{job}/trigger", &fired);
    let run = fired.json()["run"].as_u64().unwrap();
    let seen = events
        .until(|_, data| {
            let e: Value = serde_json::from_str(data).unwrap();
            e["event"] == "run.exit" && e["job"] == "a" && e["run"] == run
        })
        .expect("the stream goes on");
    let records: Vec<Value> = seen
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let start = records
        .iter()
        .position(|e| e["event"] == "run.start" && e["job"] == "a")
        .expect("its start came first");
    let exit = records
        .iter()
        .position(|e| e["event"] == "run.exit" && e["job"] == "a")
        .unwrap();
    assert!(start < exit);
    assert_eq!(records[exit]["code"], 0);
}

#[test]
fn a_run_and_its_log_are_read_whole_and_followed_live() {
    let runner = Runner::start(&workflow());
    let spec = Spec::of(&runner);
    let fired = runner.post("/api/v1/jobs/gated/trigger");
    let run = fired.json()["run"].as_u64().unwrap();
    // The run is in the history once its start is written: poll for it with a deadline.
    let path = format!("/api/v1/jobs/gated/runs/{run}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let live = loop {
        let answer = runner.get(&path);
        if answer.status == 200 {
            break answer;
        }
        assert!(std::time::Instant::now() < deadline, "{}", answer.body);
        std::thread::sleep(POLL);
    };
    spec.check("get", "/api/v1/jobs/{job}/runs/{run}", &live);
    assert_eq!(live.json()["run"]["outcome"], "running");

    let mut log = Sse::open(runner.port, &format!("{path}/log?follow=true"), &[]);
    log.until(|kind, data| kind == "message" && data.lines().any(|l| l == "one"))
        .expect("the first line while it runs");
    open_gate(&runner.path("go"));
    let rest = log.until(|kind, _| kind == "end").expect("an end");
    let text: Vec<&str> = rest
        .iter()
        .filter(|(k, _)| k == "message")
        .map(|(_, d)| d.as_str())
        .collect();
    assert!(
        text.iter().any(|d| d.lines().any(|l| l == "two")),
        "{rest:?}"
    );
    assert_eq!(rest.last().unwrap().1, "succeeded");
    assert!(log.next().is_none(), "the stream ends after `end`");

    let whole = runner.get(&format!("{path}/log"));
    assert_eq!(whole.status, 200);
    spec.check("get", "/api/v1/jobs/{job}/runs/{run}/log", &whole);
    let lines: Vec<&str> = whole.body.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines, ["one", "two"], "{}", whole.body);
    let ended = runner.get(&path);
    assert_eq!(ended.json()["run"]["outcome"], "succeeded");
    spec.check("get", "/api/v1/jobs/{job}/runs/{run}", &ended);
}

#[test]
fn bad_paths_and_queries_get_clear_json_errors() {
    let runner = Runner::start(&workflow());
    let spec = Spec::of(&runner);
    let cases = [
        ("/api/v1/jobs/a/runs/x", 400, "not a run number"),
        ("/api/v1/jobs/a/runs/0", 400, "not a run number"),
        (
            "/api/v1/jobs/a/runs/99999999999999999999999",
            400,
            "not a run number",
        ),
        ("/api/v1/jobs/a/runs/7", 404, "no run #7"),
        ("/api/v1/jobs/nope/runs/1/log", 404, "no job `nope`"),
        ("/api/v1/jobs/a/runs/1/log", 404, "no run #1 of `a`"),
        ("/api/v1/jobs/a/runs/x/log", 400, "not a run number"),
        ("/api/v1/jobs/a/runs/1/log?follow=maybe", 400, "follow=true"),
    ];
    for (path, status, says) in cases {
        let answer = runner.get(path);
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        let error = answer.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains(says), "{path}: {error}");
        let template = match path.contains("/log") {
            true => "/api/v1/jobs/{job}/runs/{run}/log",
            false => "/api/v1/jobs/{job}/runs/{run}",
        };
        spec.check("get", template, &answer);
    }
    let refused = request(runner.port, "POST", "/api/v1/jobs/a/trigger", &[]);
    assert_eq!(refused.status, 401);
    spec.check("post", "/api/v1/jobs/{job}/trigger", &refused);
}

#[test]
fn the_graph_has_a_node_per_job_and_an_edge_per_link() {
    let runner = Runner::start(&workflow());
    let spec = Spec::of(&runner);
    let graph = runner.get("/api/v1/graph");
    assert_eq!(graph.status, 200);
    spec.check("get", "/api/v1/graph", &graph);
    for job in ["a", "b", "gated", "after-a"] {
        assert_eq!(
            graph.body.matches(&format!("data-job=\"{job}\"")).count(),
            1,
            "{job}"
        );
    }
    assert_eq!(graph.body.matches("<g class=\"node\"").count(), 4);
    assert!(graph.body.contains("lines (queue)"), "the channel's edge");
    assert_eq!(
        graph.body.matches("class=\"edge dashed\"").count(),
        1,
        "the after link"
    );
}

#[test]
fn every_answer_of_the_whole_api_matches_the_document() {
    let runner = Runner::start(&workflow());
    let spec = Spec::of(&runner);
    let gets = [
        ("/api/v1/status", "/api/v1/status"),
        ("/api/v1/history?limit=5", "/api/v1/history"),
        ("/api/v1/history?limit=x", "/api/v1/history"),
        ("/healthz", "/healthz"),
        ("/metrics", "/metrics"),
        ("/api/v1/openapi.json", "/api/v1/openapi.json"),
        // Not in a cluster: 404 with a JSON error.
        ("/api/v1/cluster", "/api/v1/cluster"),
    ];
    let fired = runner.post("/api/v1/jobs/a/trigger?wait=true");
    spec.check("post", "/api/v1/jobs/{job}/trigger", &fired);
    assert_eq!(fired.json()["status"], "ended");
    for (path, template) in gets {
        spec.check("get", template, &runner.get(path));
    }
    let cluster = runner.get("/api/v1/cluster");
    assert_eq!(cluster.status, 404, "not in a cluster: {}", cluster.body);
    assert!(cluster.json()["error"]
        .as_str()
        .unwrap()
        .contains("--store"));
    // The run's row is written by the store's writer after its end: poll for it with a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let history = loop {
        let history = runner.get("/api/v1/history?job=a");
        if history
            .json()
            .as_array()
            .is_some_and(|rows| !rows.is_empty())
        {
            break history;
        }
        assert!(std::time::Instant::now() < deadline, "no row of a");
        std::thread::sleep(POLL);
    };
    spec.check("get", "/api/v1/history", &history);
    let posts = [
        ("/api/v1/jobs/nope/trigger", "/api/v1/jobs/{job}/trigger"),
        (
            "/api/v1/jobs/gated/pause?for=1h",
            "/api/v1/jobs/{job}/pause",
        ),
        ("/api/v1/jobs/gated/trigger", "/api/v1/jobs/{job}/trigger"),
        ("/api/v1/jobs/gated/resume", "/api/v1/jobs/{job}/resume"),
        ("/api/v1/jobs/nope/resume", "/api/v1/jobs/{job}/resume"),
        (
            "/api/v1/jobs/gated/pause?for=soon",
            "/api/v1/jobs/{job}/pause",
        ),
        ("/api/v1/jobs/gated/stop", "/api/v1/jobs/{job}/stop"),
        ("/api/v1/jobs/nope/stop", "/api/v1/jobs/{job}/stop"),
        ("/api/v1/reload", "/api/v1/reload"),
    ];
    for (path, template) in posts {
        spec.check("post", template, &runner.post(path));
    }
    std::fs::write(&runner.file, "jobs: [").unwrap();
    let rejected = runner.post("/api/v1/reload");
    assert_eq!(rejected.status, 422);
    spec.check("post", "/api/v1/reload", &rejected);
    let stop = runner.post("/api/v1/stop");
    assert_eq!(stop.status, 200);
    spec.check("post", "/api/v1/stop", &stop);
}

#[test]
fn flowrun_ui_serves_the_page_and_guards_the_socket_with_its_token() {
    let runner = Runner::start(&workflow());
    let mut ui = Command::new(web::bin())
        .args([
            "ui",
            runner.file.to_str().unwrap(),
            "--state",
            runner.state.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = ui.stdout.take().unwrap();
    let _ui = KillOnDrop(ui);
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap();
    // http://127.0.0.1:PORT/#token=TOKEN
    let url = line.trim();
    let (address, token) = url.split_once("/#token=").expect(url);
    let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
    assert!(address.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(token.len(), 64);
    assert_ne!(token, TOKEN);

    assert_eq!(
        request(port, "GET", "/", &[]).status,
        200,
        "the page is open"
    );
    let bearer = format!("Authorization: Bearer {token}");
    let without = request(port, "GET", "/api/v1/status", &[]);
    assert_eq!(
        without.status, 401,
        "reading too needs the token: {}",
        without.body
    );
    let wrong = request(
        port,
        "GET",
        "/api/v1/status",
        &["Authorization: Bearer nope"],
    );
    assert_eq!(wrong.status, 401);
    let status = request(port, "GET", "/api/v1/status", &[&bearer]);
    assert_eq!(status.status, 200);
    assert_eq!(status.json()["jobs"].as_array().unwrap().len(), 4);
    assert_eq!(
        request(port, "POST", "/api/v1/jobs/a/trigger", &[]).status,
        401
    );
    // Streams come through as they are made: the event stream sees a run fired through the proxy.
    let mut events = Sse::open(port, "/api/v1/events", &[&bearer]);
    let fired = request(port, "POST", "/api/v1/jobs/a/trigger", &[&bearer]);
    assert_eq!(fired.json()["status"], "started", "{}", fired.body);
    events
        .until(|_, data| data.contains("\"run.exit\"") && data.contains("\"job\":\"a\""))
        .expect("the run's end");
}

#[test]
fn flowrun_ui_says_when_no_runner_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yaml");
    std::fs::write(&file, workflow()).unwrap();
    let out = Command::new(web::bin())
        .args(["ui", file.to_str().unwrap(), "--state"])
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no runner is up"));
}

/// `flowrun ui`, ended with the test (it serves until Ctrl-C).
struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn streams_are_bounded_so_status_and_health_are_always_answered() {
    let runner = Runner::start(&workflow());
    // As many streams as are allowed at once, held open.
    let open: Vec<web::Sse> = (0..16)
        .map(|_| web::Sse::open(runner.port, "/api/v1/events", &[]))
        .collect();
    // One more is refused at once, with when to try again; a followed log counts too.
    let refused = runner.get("/api/v1/events");
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.header("retry-after"), Some("5"));
    assert!(refused.json()["error"]
        .as_str()
        .unwrap()
        .contains("16 streams are open"));
    // Everything else is answered meanwhile.
    assert_eq!(runner.get("/healthz").status, 200);
    assert_eq!(runner.get("/api/v1/status").status, 200);
    // Clients gone without a word: their places come back once the streams' keep-alive finds them gone (3 s).
    drop(open);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while stream_status(runner.port) != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the places did not come back"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The status of a request for the event stream, read off its first line (the stream is then let go).
fn stream_status(port: u16) -> u16 {
    use std::io::{BufRead, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stream)
        .read_line(&mut line)
        .unwrap();
    line.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
