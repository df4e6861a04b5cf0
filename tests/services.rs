//! Readiness probes and `after: { status: ready }` (SPEC §6), through the real binary. Order is asserted from the
//! event log; a service that never becomes ready is bounded by its probe's `timeout`, never by a sleep here.

mod common;

use common::{events, flow, output_lines, rest_of, run_json, start_until};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashSet;
use std::path::Path;

/// Where the first event matching `what` is in the log.
fn position(ev: &[Value], what: impl Fn(&Value) -> bool) -> usize {
    ev.iter()
        .position(what)
        .unwrap_or_else(|| panic!("no such event in {ev:#?}"))
}

fn is(e: &Value, event: &str, job: &str) -> bool {
    e["event"] == event && e["job"] == job
}

fn find<'a>(ev: &'a [Value], event: &str, job: &str) -> &'a Value {
    &ev[position(ev, |e| is(e, event, job))]
}

/// A TCP port nothing listens on (bound, then let go).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_log_probe_readies_a_service_and_the_client_starts_after_it_not_before() {
    // The service stays up until its client has run; the client is fired by readiness, not by an exit.
    let (_dir, file) = flow(
        r#"
jobs:
  web:
    run: echo booting; echo "listening on 8080"; while [ ! -e served ]; do sleep 0.01; done
    ready: { log: "listening on \\d+" }
  client:
    run: touch served; printf '%s\n' "$FLOWRUN_UPSTREAM"
    trigger: { after: web, status: ready }
"#,
    );
    let (code, ev) = run_json(&file, &[]);
    assert_eq!(code, Some(0), "{ev:#?}");
    let line = position(&ev, |e| {
        is(e, "output", "web") && e["line"] == "listening on 8080"
    });
    let booting = position(&ev, |e| is(e, "output", "web") && e["line"] == "booting");
    let ready = position(&ev, |e| is(e, "run.ready", "web"));
    let client = position(&ev, |e| is(e, "run.start", "client"));
    let web_exit = position(&ev, |e| is(e, "run.exit", "web"));
    assert!(
        booting < ready && line < ready && ready < client && client < web_exit,
        "{ev:#?}"
    );
    let r = &ev[ready];
    assert_eq!(r["reason"], r"log /listening on \d+/");
    assert_eq!(r["run"], 1);
    assert!(r["pid"].as_u64().is_some() && r["duration_ms"].as_u64().is_some());
    let upstream: Value = serde_json::from_str(output_lines(&ev, "client")[0]).unwrap();
    assert_eq!(upstream[0]["job"], "web");
    assert_eq!(upstream[0]["status"], "ready");
    assert!(upstream[0]["code"].is_null());
    // The service's end after it was ready takes nothing from the join: no "skipped for good".
    assert!(!ev.iter().any(|e| e["event"] == "run.skipped"), "{ev:#?}");
}

#[test]
fn a_run_never_ready_is_stopped_and_fails_and_its_dependents_are_skipped() {
    let (_dir, file) = flow(
        r#"
jobs:
  web:
    run: echo "still booting"; sleep 30
    ready: { log: "listening", timeout: 300ms }
    stop_grace: 1s
  client:
    run: echo never
    trigger: { after: web, status: ready }
"#,
    );
    let (code, ev) = run_json(&file, &[]);
    assert_eq!(code, Some(1), "{ev:#?}");
    let unready = find(&ev, "run.unready", "web");
    assert_eq!(unready["reason"], "not ready within 300ms");
    let exit = find(&ev, "run.exit", "web");
    assert_eq!(exit["reason"], "not ready within 300ms");
    assert_eq!(exit["signal"], "SIGTERM");
    assert!(!ev.iter().any(|e| is(e, "run.ready", "web")));
    assert!(!ev.iter().any(|e| is(e, "run.start", "client")));
    let skipped = find(&ev, "run.skipped", "client");
    assert!(
        skipped["reason"].as_str().unwrap().contains("readiness"),
        "{skipped}"
    );
    assert_eq!(common::summary(&ev)["jobs"]["web"]["failed"], 1);
}

#[test]
fn exec_probes_run_with_the_jobs_environment_until_one_exits_0() {
    let (_dir, file) = flow(
        r#"
jobs:
  db:
    run: touch "up.$FLOWRUN_RUN"; while [ ! -e served ]; do sleep 0.01; done
    ready: { exec: 'test "$FLOWRUN_JOB" = db && test "$FLOWRUN_PROBE" = 1 && test -e "up.$FLOWRUN_RUN"', interval: 20ms }
  broken:
    run: sleep 30
    ready: { exec: "exit 3", interval: 20ms, timeout: 300ms }
    stop_grace: 1s
  client:
    run: touch served
    trigger: { after: db, status: ready }
"#,
    );
    let (code, ev) = run_json(&file, &[]);
    assert_eq!(code, Some(1), "broken never became ready: {ev:#?}");
    assert!(
        position(&ev, |e| is(e, "run.ready", "db"))
            < position(&ev, |e| is(e, "run.start", "client"))
    );
    assert_eq!(find(&ev, "run.exit", "client")["code"], 0);
    assert_eq!(
        find(&ev, "run.unready", "broken")["reason"],
        "not ready within 300ms (last check: `exit 3` exited 3)"
    );
    assert_eq!(common::summary(&ev)["jobs"]["db"]["failed"], 0);
}

#[test]
fn http_and_tcp_probes_against_a_real_server() {
    // The server is flowrun itself, serving its control API on a port (`/healthz` answers 200).
    let (dir, file) = flow("");
    let inner = dir.path().join("inner.yaml");
    std::fs::write(&inner, "jobs:\n  idle: { run: sleep 60 }\n").unwrap();
    let (port, closed) = (free_port(), free_port());
    let bin = common::bin();
    std::fs::write(
        &file,
        format!(
            r#"
jobs:
  web:
    run: ["{bin}", "{inner}", --state, none, --listen, "{port}"]
    ready: {{ http: "http://127.0.0.1:{port}/healthz", interval: 20ms }}
  sidecar:
    run: sleep 30
    ready: {{ tcp: "127.0.0.1:{port}", interval: 20ms }}
  client:
    run: echo both up
    trigger: {{ after: [web, sidecar], status: ready }}
  wrong-path:
    run: sleep 30
    ready: {{ http: "http://127.0.0.1:{port}/nope", interval: 20ms, timeout: 3s }}
    stop_grace: 1s
  nobody-listens:
    run: sleep 30
    ready: {{ tcp: "127.0.0.1:{closed}", interval: 20ms, timeout: 300ms }}
    stop_grace: 1s
"#,
            bin = bin.display(),
            inner = inner.display(),
        ),
    )
    .unwrap();
    let ended = RefCell::new(HashSet::new());
    let (mut child, reader, seen) = start_until(&file, &[], |e| {
        if e["event"] == "run.exit" {
            ended
                .borrow_mut()
                .insert(e["job"].as_str().unwrap().to_string());
        }
        ["client", "wrong-path", "nobody-listens"]
            .iter()
            .all(|j| ended.borrow().contains(*j))
    });
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let ev = rest_of(reader, seen);
    let code = child.wait().unwrap().code();
    // A SIGTERM that stopped everything within its grace: 0 (SPEC §7), though the two probes that never passed
    // failed their runs (their exits say so below).
    assert_eq!(code, Some(0));
    let client = position(&ev, |e| is(e, "run.start", "client"));
    assert!(position(&ev, |e| is(e, "run.ready", "web")) < client);
    assert!(position(&ev, |e| is(e, "run.ready", "sidecar")) < client);
    assert_eq!(output_lines(&ev, "client"), ["both up"]);
    assert_eq!(
        find(&ev, "run.ready", "web")["reason"],
        format!("http http://127.0.0.1:{port}/healthz")
    );
    let wrong = find(&ev, "run.unready", "wrong-path")["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        wrong.starts_with("not ready within 3s (last check: GET http://127.0.0.1:")
            && wrong.ends_with("/nope answered 404)"),
        "{wrong}"
    );
    let refused = find(&ev, "run.unready", "nobody-listens")["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        refused.contains(&format!("connecting to 127.0.0.1:{closed}"))
            && refused.contains("refused"),
        "{refused}"
    );
    // The server was stopped with the runner, not failed.
    let summary = common::summary(&ev);
    assert_eq!(summary["jobs"]["web"]["failed"], 0);
    assert_eq!(summary["jobs"]["web"]["stopped"], 1);
}

#[test]
fn a_service_that_is_restarted_becomes_ready_again_and_fires_its_client_again() {
    // web#1 is ready, then crashes; web#2 comes back and is ready again: the client runs once per readiness.
    let (_dir, file) = flow(
        r#"
jobs:
  web:
    run: |
      echo "ready $FLOWRUN_RUN"
      while [ ! -e "seen.$FLOWRUN_RUN" ]; do sleep 0.01; done
      [ "$FLOWRUN_RUN" -gt 1 ]
    ready: { log: "^ready" }
    restart: { policy: on-failure, max: 1 }
  client:
    run: 'touch "seen.$(printf "%s" "$FLOWRUN_UPSTREAM" | sed "s/.*\"run\":\([0-9]*\).*/\1/")"'
    trigger: { after: web, status: ready }
"#,
    );
    let (code, ev) = run_json(&file, &[]);
    assert_eq!(code, Some(1), "web#1 failed: {ev:#?}");
    let readies: Vec<&Value> = ev.iter().filter(|e| is(e, "run.ready", "web")).collect();
    assert_eq!(readies.len(), 2, "{ev:#?}");
    let clients = ev.iter().filter(|e| is(e, "run.start", "client")).count();
    assert_eq!(clients, 2);
    assert_eq!(common::summary(&ev)["jobs"]["web"]["succeeded"], 1);
}

#[test]
fn the_services_example_serves_its_client_and_needs_no_alert() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/services.yaml");
    let out = common::cmd()
        .arg(&example)
        .args(["--log-format", "json", "--for", "120s"])
        .output()
        .unwrap();
    let ev = events(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{ev:#?}");
    assert!(!ev.iter().any(|e| e["event"] == "runner.stopping"));
    let built = position(&ev, |e| is(e, "run.exit", "build"));
    let ready = position(&ev, |e| is(e, "run.ready", "web"));
    let client = position(&ev, |e| is(e, "run.start", "client"));
    assert!(built < ready && ready < client, "{ev:#?}");
    assert_eq!(output_lines(&ev, "client"), ["hello from web", "bye"]);
    // Nothing failed: the alert's joins can never complete and it is skipped, which fails nothing.
    assert_eq!(common::summary(&ev)["jobs"]["alert"]["runs"], 0);
    assert_eq!(
        ev.iter().filter(|e| is(e, "run.skipped", "alert")).count(),
        2
    );
}

#[test]
fn a_run_whose_process_exited_is_neither_ready_nor_stopped_for_not_being_ready() {
    // Each main process exits at once; something it left behind keeps the run alive a while (ignoring SIGTERM).
    let (_dir, file) = flow(
        r#"
jobs:
  late:
    run: sh -c 'trap "" TERM; sleep 1.5' & exit 0
    ready: { exec: "sleep 0.5", interval: 10ms, timeout: 20s }
    stop_grace: 3s
  never:
    run: sh -c 'trap "" TERM; sleep 1.5' & exit 0
    ready: { log: "never printed", timeout: 300ms }
    stop_grace: 3s
  dep:
    run: echo should not run
    trigger: { after: late, status: ready }
"#,
    );
    let (code, ev) = run_json(&file, &[]);
    assert_eq!(code, Some(0), "both exited 0: {ev:#?}");
    assert!(!ev.iter().any(|e| e["event"] == "run.ready"), "{ev:#?}");
    assert!(!ev.iter().any(|e| e["event"] == "run.unready"), "{ev:#?}");
    assert!(!ev.iter().any(|e| is(e, "run.start", "dep")));
    assert_eq!(find(&ev, "run.exit", "never")["code"], 0);
}

#[test]
fn an_exec_probe_leaves_no_daemon_behind_between_checks() {
    // Each check starts a daemon (it leaves its group by setsid) and fails. The run counts the daemons alive after
    // a few checks: the ones of finished checks are gone.
    let (_dir, file) = flow(
        r#"
jobs:
  svc:
    run: |
      until [ -f checks ] && [ "$(wc -l < checks)" -ge 5 ]; do sleep 0.01; done
      pgrep -f "sleep 30[7]" | wc -l
    ready: { exec: "echo x >> checks; setsid sleep 307 </dev/null >/dev/null 2>&1 & exit 1", interval: 20ms }
"#,
    );
    let (code, ev) = run_json(&file, &[]);
    assert_eq!(code, Some(0), "{ev:#?}");
    let alive: usize = output_lines(&ev, "svc")[0].trim().parse().unwrap();
    assert!(alive <= 1, "{alive} probe daemons alive");
}

#[test]
fn a_log_probe_matches_the_start_of_lines_not_the_middle_of_a_long_one() {
    // 64 KiB then READY on one line (printed in 64 KiB pieces: READY starts the second), then, once told, READY
    // at a line's start.
    let (dir, file) = flow(
        r#"
jobs:
  web:
    run: |
      head -c 65536 /dev/zero | tr '\0' x; echo READY in the middle
      echo waiting; while [ ! -e go ]; do sleep 0.01; done; echo READY at the start; sleep 30
    ready: { log: "^READY" }
    stop_grace: 1s
"#,
    );
    let (mut child, reader, seen) = start_until(&file, &[], |e| {
        is(e, "output", "web") && e["line"] == "waiting"
    });
    std::fs::write(dir.path().join("go"), "").unwrap();
    let (mut reader, mut seen) = (reader, seen);
    while !seen.iter().any(|e| e["event"] == "run.ready") {
        use std::io::BufRead;
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "no run.ready");
        seen.push(serde_json::from_str(&line).unwrap());
    }
    // Ready by the line that starts with READY, not by the piece of the long line that does.
    let at_start = position(&seen, |e| {
        is(e, "output", "web") && e["line"] == "READY at the start"
    });
    assert!(at_start < position(&seen, |e| is(e, "run.ready", "web")));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = rest_of(reader, seen);
    child.wait().unwrap();
}

#[test]
fn a_probe_checks_no_more_once_its_run_is_being_stopped() {
    // The run ignores SIGTERM, so it is "being stopped" for a while; every check leaves a line in `checks`.
    let (dir, file) = flow(
        r#"
jobs:
  svc:
    run: trap '' TERM; echo started; sleep 30
    ready: { exec: "echo x >> checks; exit 1", interval: 20ms }
    stop_grace: 2s
"#,
    );
    let checks = dir.path().join("checks");
    let count = || {
        std::fs::read_to_string(&checks)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    let (mut child, reader, seen) = start_until(&file, &[], |e| is(e, "output", "svc"));
    // Bounded: a probe that never checks fails the test instead of hanging it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while count() < 3 {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the probe checked {} times in 30 s", count());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let before = count();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let ev = rest_of(reader, seen);
    child.wait().unwrap();
    let stopping = position(&ev, |e| e["event"] == "runner.stopping");
    assert!(stopping < position(&ev, |e| is(e, "run.exit", "svc")));
    // The run lived its 2 s grace: a probe still checking every 20 ms would have added about 100 lines. Allowed:
    // the checks between the count and the signal, and one in flight.
    let after = count();
    assert!(
        after <= before + 3,
        "checks went on while the run was being stopped: {before} -> {after}"
    );
}

#[test]
fn probe_addresses_take_the_jobs_variables_from_env_and_env_file() {
    // The server is flowrun itself, serving its control API on the port the job's `env` names (`/healthz`
    // answers 200); one probe has the port from `env` (`$PORT`), the other from an `env_file` (`${PORT}`).
    let (dir, file) = flow("");
    let inner = dir.path().join("inner.yaml");
    std::fs::write(&inner, "jobs:\n  idle: { run: sleep 60 }\n").unwrap();
    let port = free_port();
    std::fs::write(dir.path().join("ports.env"), format!("PORT={port}\n")).unwrap();
    let bin = common::bin();
    std::fs::write(
        &file,
        format!(
            r#"
jobs:
  web:
    run: exec "{bin}" "{inner}" --state none --listen "$PORT"
    env: {{ PORT: "{port}" }}
    ready: {{ http: "http://127.0.0.1:$PORT/healthz", interval: 20ms }}
  sidecar:
    run: sleep 30
    env_file: ports.env
    ready: {{ tcp: "127.0.0.1:${{PORT}}", interval: 20ms }}
  client:
    run: echo both up
    trigger: {{ after: [web, sidecar], status: ready }}
"#,
            bin = bin.display(),
            inner = inner.display(),
        ),
    )
    .unwrap();
    let (mut child, reader, seen) = start_until(&file, &[], |e| is(e, "run.exit", "client"));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let ev = rest_of(reader, seen);
    assert_eq!(child.wait().unwrap().code(), Some(0), "{ev:#?}");
    assert_eq!(output_lines(&ev, "client"), ["both up"]);
    // The events name the address probed, with the value put in.
    assert_eq!(
        find(&ev, "run.ready", "web")["reason"],
        format!("http http://127.0.0.1:{port}/healthz")
    );
    assert_eq!(
        find(&ev, "run.ready", "sidecar")["reason"],
        format!("tcp 127.0.0.1:{port}")
    );
}

#[test]
fn a_probe_variable_the_env_file_does_not_set_says_so_when_the_run_is_not_ready() {
    let (dir, file) = flow(
        "jobs:\n  web:\n    run: sleep 30\n    env_file: empty.env\n    ready: { tcp: \"127.0.0.1:$PORT\", timeout: 300ms }\n    stop_grace: 1s\n",
    );
    std::fs::write(dir.path().join("empty.env"), "OTHER=1\n").unwrap();
    let (code, ev) = run_json(&file, &[]);
    assert_eq!(code, Some(1), "{ev:#?}");
    let reason = find(&ev, "run.unready", "web")["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("`$PORT`, which neither the job's `env` nor its `env_file` sets"),
        "{reason}"
    );
}

#[test]
fn a_liveness_probe_stops_an_unhealthy_run_and_its_restart_policy_brings_it_back() {
    // Alive while `alive.flag` exists; the test takes it away, and the run is stopped as unhealthy after two
    // failed checks in a row; `restart: on-failure` with at most one restart brings it back once.
    let (dir, file) = flow(
        "jobs:
  web:
    run: echo up; exec sleep 60
    restart: { policy: on-failure, max: 1, window: 1h }
    alive: { exec: 'test -f alive.flag', interval: 50ms, failures: 2 }
    stop_grace: 1s
",
    );
    let flag = dir.path().join("alive.flag");
    std::fs::write(&flag, "").unwrap();
    let (mut child, reader, seen) = start_until(&file, &["--state", "none"], |e| {
        e["event"] == "output" && e["job"] == "web"
    });
    std::fs::remove_file(&flag).unwrap();
    let ev = rest_of(reader, seen);
    let code = child.wait().unwrap().code();
    assert_eq!(
        code,
        Some(1),
        "the restart limit was reached: failed for good"
    );
    let unhealthy: Vec<&Value> = ev
        .iter()
        .filter(|e| e["event"] == "run.unhealthy")
        .collect();
    assert_eq!(unhealthy.len(), 2, "{ev:#?}");
    let reason = unhealthy[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("2 liveness check(s) failed in a row"),
        "{reason}"
    );
    let exit = find(&ev, "run.exit", "web");
    assert!(
        exit["reason"].as_str().unwrap().starts_with("unhealthy: "),
        "{exit}"
    );
    assert!(position(&ev, |e| is(e, "run.restart", "web")) < ev.len());
}

#[test]
fn a_log_silence_probe_finds_a_run_that_stopped_printing() {
    let (_dir, file) = flow(
        "jobs:
  worker:
    run: echo working; exec sleep 60
    alive: { log-silence: 200ms, interval: 50ms, failures: 1 }
",
    );
    let (code, ev) = run_json(&file, &["--state", "none"]);
    assert_eq!(code, Some(1));
    let unhealthy = find(&ev, "run.unhealthy", "worker");
    assert!(
        unhealthy["reason"]
            .as_str()
            .unwrap()
            .contains("no output for"),
        "{unhealthy}"
    );
}
