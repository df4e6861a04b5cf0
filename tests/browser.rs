//! The web page in a real browser (SPEC §10): headless Chromium driven through WebDriver (Debian's
//! `chromium-driver`) with fantoccini. Each test starts a runner on a loopback port and a chromedriver of its
//! own, and checks what a person would see: no console error, the jobs listed, a run's end shown within a
//! second without a reload, the trigger button refused without the token and obeyed with it, a run's log
//! streaming, the graph's nodes. Screenshots of each view go to `target/ui-screenshots/`.
//!
//! Without chromedriver the tests say they are skipped and pass, unless `FLOWRUN_REQUIRE_BROWSER=1` (CI sets it).
//! Every wait polls the page or the API against a deadline.

mod redis_server;
mod web;

use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use web::{open_gate, Runner, TOKEN};

/// How often the page is looked at again while waiting for something on it.
const POLL: Duration = Duration::from_millis(25);
/// How long anything may take to show (a debug build on a busy 2-core machine).
const PATIENCE: Duration = Duration::from_secs(20);

/// One browser at a time: two cores run them, and the timing test must not share them with another page.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn workflow() -> &'static str {
    "channels:\n  readings: { kind: queue }\njobs:\n  producer:\n    run: 'echo \"reading $FLOWRUN_RUN\"'\n    \
     trigger: [start]\n    stdout: readings\n  consumer:\n    run: 'while IFS= read -r l; do echo \"got $l\"; done'\n    \
     stdin: readings\n  a:\n    run: echo hello from a\n    trigger: { cron: \"0 0 1 1 *\", timezone: UTC }\n  \
     gated:\n    run: 'echo one; while [ ! -e go ]; do sleep 0.02; done; echo two'\n    \
     trigger: { cron: \"0 0 1 1 *\", timezone: UTC }\n  report:\n    run: echo report\n    trigger: { after: a }\n"
}

struct Driver {
    child: Child,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// chromedriver, when there is one; without it, `None` (the test is skipped) unless a browser is required.
fn chromedriver() -> Option<(Driver, u16)> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("chromedriver"))
            .find(|p| p.is_file())
    });
    let Some(path) = found else {
        if std::env::var("FLOWRUN_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("FLOWRUN_REQUIRE_BROWSER=1 and no chromedriver: apt-get install chromium chromium-driver");
        }
        eprintln!(
            "skipped: no chromedriver on PATH (apt-get install chromium chromium-driver to run it)"
        );
        return None;
    };
    let port = web::free_port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver { child };
    let deadline = Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(POLL);
    }
    Some((driver, port))
}

async fn browser(port: u16) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,860"] }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a browser session")
}

/// Run `test` with a browser and a runner of the workflow (or say it is skipped).
fn with_browser<F, Fut>(name: &str, test: F)
where
    F: FnOnce(Client, Runner) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    with_browser_on(name, workflow(), test)
}

/// [`with_browser`], with a workflow of the test's own.
fn with_browser_on<F, Fut>(name: &str, yaml: &str, test: F)
where
    F: FnOnce(Client, Runner) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    with_browser_args(name, yaml, &[], test)
}

/// [`with_browser_on`], with more arguments of the runner.
fn with_browser_args<F, Fut>(name: &str, yaml: &str, args: &[&str], test: F)
where
    F: FnOnce(Client, Runner) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some((_driver, port)) = chromedriver() else {
        eprintln!("{name}: skipped");
        return;
    };
    let runner = Runner::start_with(yaml, args);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = browser(port).await;
        test(client.clone(), runner).await;
        let _ = client.close().await;
    });
}

fn page(runner: &Runner, fragment: &str) -> String {
    format!("http://127.0.0.1:{}/{fragment}", runner.port)
}

/// What a script run in the page returns.
async fn eval(client: &Client, script: &str) -> Value {
    client.execute(script, vec![]).await.expect(script)
}

/// Wait until the script returns true; how long it took.
async fn until(client: &Client, what: &str, script: &str) -> Duration {
    let start = Instant::now();
    loop {
        if eval(client, script).await == Value::Bool(true) {
            return start.elapsed();
        }
        if start.elapsed() > PATIENCE {
            let errors = eval(client, "return window.flowrunErrors").await;
            let shown = eval(client, "return document.getElementById('view').innerText").await;
            panic!("{what}: not within {PATIENCE:?}; errors {errors}; the view shows {shown}");
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn no_errors(client: &Client) {
    let errors = eval(client, "return window.flowrunErrors").await;
    assert_eq!(errors, json!([]), "errors on the page");
}

async fn screenshot(client: &Client, name: &str) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = client.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// The page opened with the token, as `flowrun ui` prints its address.
async fn open_with_token(client: &Client, runner: &Runner) {
    client
        .goto(&page(runner, &format!("#token={TOKEN}")))
        .await
        .unwrap();
    until(
        client,
        "the jobs table",
        "return document.querySelectorAll('.jobs .row').length > 0",
    )
    .await;
}

/// A job's row's cell `n` (1-based), as text.
fn cell(job: &str, n: usize) -> String {
    format!("const r = document.querySelector('.jobs .row[data-job=\"{job}\"]'); return r ? r.children[{}].innerText : ''", n - 1)
}

#[test]
fn the_page_loads_without_errors_and_lists_the_jobs_of_the_running_workflow() {
    with_browser("jobs", |client, runner| async move {
        client.goto(&page(&runner, "")).await.unwrap();
        let status = runner.get("/api/v1/status").json();
        let count = status["jobs"].as_array().unwrap().len();
        assert_eq!(count, 5);
        until(
            &client,
            "every job listed",
            &format!("return document.querySelectorAll('.jobs .row').length === {count}"),
        )
        .await;
        let names: Vec<Value> = status["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job"].clone())
            .collect();
        let shown = eval(
            &client,
            "return [...document.querySelectorAll('.jobs .row')].map(r => r.dataset.job)",
        )
        .await;
        assert_eq!(shown, Value::Array(names));
        let title = eval(
            &client,
            "return document.getElementById('workflow').textContent",
        )
        .await;
        assert_eq!(title, "flow");
        // The producer ran at the start, and the consumer read its line: both shown with their result.
        for job in ["producer", "consumer"] {
            until(
                &client,
                job,
                &format!("return ({}).startsWith('succeeded')", cell_expr(job, 3)),
            )
            .await;
        }
        until(
            &client,
            "the event stream",
            "return document.getElementById('live').textContent === 'live'",
        )
        .await;
        no_errors(&client).await;
        screenshot(&client, "jobs").await;
        // On a phone each job is a card; the page stays free of errors there too.
        client.set_window_size(390, 844).await.unwrap();
        until(
            &client,
            "the cards",
            "return document.querySelector('.jobs .head').offsetHeight === 0",
        )
        .await;
        screenshot(&client, "jobs-phone").await;
        no_errors(&client).await;
    });
}

fn cell_expr(job: &str, n: usize) -> String {
    format!("(() => {{ {} }})()", cell(job, n))
}

#[test]
fn a_run_ending_updates_the_table_within_a_second_without_a_reload() {
    with_browser("a run ending", |client, runner| async move {
        open_with_token(&client, &runner).await;
        eval(&client, "window.sameDocument = true; return true").await;
        let fired = runner.post("/api/v1/jobs/gated/trigger");
        assert_eq!(fired.json()["status"], "started");
        until(
            &client,
            "gated running",
            &format!("return ({}).startsWith('running')", cell_expr("gated", 2)),
        )
        .await;
        let opened = Instant::now();
        open_gate(&runner.path("go"));
        let shown = until(
            &client,
            "its end shown",
            &format!("return ({}).startsWith('succeeded')", cell_expr("gated", 3)),
        )
        .await;
        let after = opened.elapsed();
        eprintln!("the end of gated#1 was shown {after:?} after its gate opened");
        assert!(
            after < Duration::from_secs(1),
            "shown {after:?} after the gate opened ({shown:?} of polling)"
        );
        assert_eq!(
            eval(&client, "return window.sameDocument === true").await,
            json!(true),
            "no reload"
        );
        let mark = eval(
            &client,
            "return document.querySelector('.row[data-job=\"gated\"] .mark').className",
        )
        .await;
        assert!(mark.as_str().unwrap().contains("succeeded"), "{mark}");
        no_errors(&client).await;
    });
}

#[test]
fn the_trigger_button_is_refused_without_the_token_and_fires_the_job_with_it() {
    with_browser("trigger", |client, runner| async move {
        client.goto(&page(&runner, "#/jobs")).await.unwrap();
        until(
            &client,
            "the table, read without a token",
            "return !!document.querySelector('.row[data-job=\"a\"]')",
        )
        .await;
        let button =
            "document.querySelector('.row[data-job=\"a\"] button[data-action=\"trigger\"]')";
        eval(&client, &format!("{button}.click(); return true")).await;
        until(
            &client,
            "the refusal shown",
            "return document.getElementById('answer').dataset.status === '401'",
        )
        .await;
        let runs = |status: Value| {
            status["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|j| j["job"] == "a")
                .unwrap()["runs"]
                .clone()
        };
        assert_eq!(
            runs(runner.get("/api/v1/status").json()),
            json!(0),
            "nothing ran"
        );

        open_with_token(&client, &runner).await;
        // The button is found and pressed as a person would, with the keyboard. (A row is made again when its
        // job changes, or when its ages move on: a button found just before is then gone, and found again.)
        let deadline = Instant::now() + PATIENCE;
        loop {
            let button = client
                .find(Locator::Css(
                    ".row[data-job=\"a\"] button[data-action=\"trigger\"]",
                ))
                .await
                .unwrap();
            match button.send_keys(&Key::Enter.to_string()).await {
                Ok(()) => break,
                Err(e) if Instant::now() < deadline && e.to_string().contains("stale") => continue,
                Err(e) => panic!("the trigger button: {e}"),
            }
        }
        until(
            &client,
            "the answer",
            "return document.getElementById('answer').dataset.status === '200'",
        )
        .await;
        let answer = eval(
            &client,
            "return document.getElementById('answer').textContent",
        )
        .await;
        assert!(
            answer.as_str().unwrap().contains("\"status\":\"started\""),
            "{answer}"
        );
        assert_eq!(
            runs(runner.get("/api/v1/status").json()),
            json!(1),
            "it ran"
        );
        runner.wait_event(|e| e["event"] == "run.exit" && e["job"] == "a", PATIENCE);
        no_errors(&client).await;
    });
}

#[test]
fn a_runs_log_streams_while_it_runs() {
    with_browser("log", |client, runner| async move {
        open_with_token(&client, &runner).await;
        let run = runner.post("/api/v1/jobs/gated/trigger").json()["run"]
            .as_u64()
            .unwrap();
        let deadline = Instant::now() + PATIENCE;
        while runner.get(&format!("/api/v1/jobs/gated/runs/{run}")).status != 200 {
            assert!(Instant::now() < deadline, "the run's row");
            std::thread::sleep(POLL);
        }
        client
            .goto(&page(&runner, &format!("#/run/gated/{run}")))
            .await
            .unwrap();
        until(
            &client,
            "the first line",
            "const l = document.getElementById('log'); return !!l && l.textContent.includes('one')",
        )
        .await;
        let state = eval(
            &client,
            "return document.getElementById('log').dataset.state",
        )
        .await;
        assert_eq!(state, "streaming", "it is still running");
        let log = eval(&client, "return document.getElementById('log').textContent").await;
        assert!(!log.as_str().unwrap().lines().any(|l| l == "two"), "{log}");
        open_gate(&runner.path("go"));
        until(&client, "the rest, then the end", "const l = document.getElementById('log'); return l.textContent.split('\\n').includes('two') && l.dataset.state === 'ended'").await;
        until(
            &client,
            "the outcome",
            "return document.getElementById('run-outcome').textContent.startsWith('succeeded')",
        )
        .await;
        no_errors(&client).await;
        screenshot(&client, "run").await;
    });
}

#[test]
fn the_graph_has_a_node_per_job() {
    with_browser("graph", |client, runner| async move {
        open_with_token(&client, &runner).await;
        client.goto(&page(&runner, "#/graph")).await.unwrap();
        until(
            &client,
            "the graph",
            "return document.querySelectorAll('#graph .node').length > 0",
        )
        .await;
        let nodes = eval(
            &client,
            "return [...document.querySelectorAll('#graph .node')].map(n => n.dataset.job).sort()",
        )
        .await;
        let mut jobs: Vec<String> = runner.get("/api/v1/status").json()["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job"].as_str().unwrap().to_string())
            .collect();
        jobs.sort();
        assert_eq!(nodes, json!(jobs));
        no_errors(&client).await;
        screenshot(&client, "graph").await;
    });
}

#[test]
fn the_other_views_show_the_history_and_channels_without_errors() {
    with_browser("views", |client, runner| async move {
        open_with_token(&client, &runner).await;
        runner.post("/api/v1/jobs/a/trigger?wait=true");
        // Its row and its follower's are written by the store's writer after their ends: wait for them.
        let deadline = Instant::now() + PATIENCE;
        let rows = |job: &str| {
            runner
                .get(&format!("/api/v1/history?job={job}"))
                .json()
                .as_array()
                .map_or(0, Vec::len)
        };
        while rows("report") == 0 {
            assert!(Instant::now() < deadline, "the rows of a and report");
            std::thread::sleep(POLL);
        }
        // The channel's messages: the producer's line was read by the consumer.
        client.goto(&page(&runner, "#/channels")).await.unwrap();
        until(&client, "the channel", "const r = document.querySelector('#channels tr[data-channel=\"readings\"]'); return !!r && r.children[2].innerText === '1'").await;
        screenshot(&client, "channels").await;
        client.goto(&page(&runner, "#/history")).await.unwrap();
        until(&client, "a's run in the history", "return [...document.querySelectorAll('#history tbody tr')].some(r => r.innerText.startsWith('a#1'))").await;
        // The outcome filter keeps only what matches.
        let pick = |outcome: &str| {
            format!("const s = document.querySelector('select[aria-label=outcome]'); s.value = '{outcome}'; s.dispatchEvent(new Event('change')); return true")
        };
        eval(&client, &pick("failed")).await;
        until(&client, "no failed run", "return document.querySelector('#history tbody').children.length === 0 && document.querySelector('main .note').textContent === 'no run matches'").await;
        eval(&client, &pick("succeeded")).await;
        until(&client, "only succeeded runs", "const rows = [...document.querySelectorAll('#history tbody tr')]; return rows.length >= 3 && rows.every(r => r.dataset.outcome === 'succeeded')").await;
        screenshot(&client, "history").await;
        client.goto(&page(&runner, "#/timeline")).await.unwrap();
        until(
            &client,
            "bars",
            "return document.querySelectorAll('.timeline rect.span').length > 0",
        )
        .await;
        screenshot(&client, "timeline").await;
        no_errors(&client).await;
    });
}

#[test]
fn the_jobs_table_makes_only_the_rows_in_sight_and_scrolls_to_the_last() {
    const JOBS: usize = 2000;
    let mut yaml = String::from("jobs:\n");
    for i in 0..JOBS {
        yaml.push_str(&format!(
            "  job-{i:04}:\n    run: 'true'\n    trigger: {{ cron: \"0 0 1 1 *\", timezone: UTC }}\n"
        ));
    }
    with_browser_on("many jobs", &yaml, |client, runner| async move {
        open_with_token(&client, &runner).await;
        until(&client, "the count", &format!("return document.querySelector('.bar .note').textContent === '{JOBS} of {JOBS} jobs'")).await;
        let made = eval(
            &client,
            "return document.querySelectorAll('.jobs .row').length",
        )
        .await;
        assert!(
            made.as_u64().unwrap() < 100,
            "{made} rows made for {JOBS} jobs"
        );
        eval(&client, "const s = document.querySelector('.jobs .scroller'); s.scrollTop = s.scrollHeight; return true").await;
        until(
            &client,
            "the last job in sight",
            &format!(
                "return !!document.querySelector('.row[data-job=\"job-{:04}\"]')",
                JOBS - 1
            ),
        )
        .await;
        let made = eval(
            &client,
            "return document.querySelectorAll('.jobs .row').length",
        )
        .await;
        assert!(made.as_u64().unwrap() < 100, "{made} rows after scrolling");
        assert_eq!(
            eval(
                &client,
                "return !!document.querySelector('.row[data-job=\"job-0000\"]')"
            )
            .await,
            json!(false),
            "the first rows went"
        );
        // The filter finds a job far down.
        eval(&client, "const f = document.querySelector('input[type=search]'); f.value = 'job-1234'; f.dispatchEvent(new Event('input')); return true").await;
        until(&client, "one row", "const rows = document.querySelectorAll('.jobs .row'); return rows.length === 1 && rows[0].dataset.job === 'job-1234'").await;
        no_errors(&client).await;
    });
}

#[test]
fn a_runner_of_a_cluster_shows_the_runners_and_one_alone_does_not() {
    // Alone: no Runners link (GET /api/v1/cluster answers 404), and no error for it.
    with_browser("alone", |client, runner| async move {
        open_with_token(&client, &runner).await;
        until(
            &client,
            "the probe of the cluster",
            "return performance.getEntriesByType('resource').some(e => e.name.endsWith('/api/v1/cluster'))",
        )
        .await;
        let hidden = eval(
            &client,
            "return document.querySelector('nav a[data-view=runners]').hidden",
        )
        .await;
        assert_eq!(hidden, Value::Bool(true));
        no_errors(&client).await;
    });
    let Some(redis) = redis_server::Redis::start(false) else {
        return;
    };
    let url = redis.url();
    let args = [
        "--store",
        url.as_str(),
        "--runner-id",
        "web-1",
        "--lease",
        "2s",
    ];
    with_browser_args("cluster", workflow(), &args, |client, runner| async move {
        open_with_token(&client, &runner).await;
        until(
            &client,
            "the Runners link",
            "return !document.querySelector('nav a[data-view=runners]').hidden",
        )
        .await;
        client.goto(&page(&runner, "#/runners")).await.unwrap();
        until(
            &client,
            "this runner's row",
            "const r = document.querySelector('#runners tr[data-runner=\"web-1\"]'); return !!r && r.innerText.includes('(this one)') && r.innerText.includes('same')",
        )
        .await;
        let title = eval(
            &client,
            "return document.querySelector('main h2').textContent",
        )
        .await;
        assert!(
            title.as_str().unwrap().starts_with("Runners of cluster"),
            "{title}"
        );
        screenshot(&client, "runners").await;
        no_errors(&client).await;
    });
}
