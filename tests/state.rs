//! A runner that remembers (SPEC §4), through the real binary: catch-up after downtime, `at` never twice,
//! interrupted runs, run numbers and logs that go on, one runner per state, schema versions, `--state none`,
//! the default directory, retention, and the `status`, `history` and `logs` commands.
//!
//! Downtime is made by moving the stored "last handled" instant back (what a stopped runner would have left),
//! not by sleeping: the tests stay fast and deterministic.

mod common;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use common::{cmd, events, flow, start_until};
use serde_json::Value;
use std::path::Path;
use std::process::Output;

fn run(file: &Path, state: &Path, extra: &[&str]) -> Output {
    cmd()
        .arg(file)
        .arg("--state")
        .arg(state)
        .args(["--log-format", "json"])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn flowrun(args: &[&str], state: &Path) -> Output {
    common::on_state(args, state)
}

fn of<'a>(events: &'a [Value], kind: &str, job: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["event"] == kind && e["job"] == job)
        .collect()
}

fn db(state: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(state.join("state.db")).unwrap()
}

/// As if the runner had stopped `ago` before now: the trigger's last handled firing moves back by that much.
fn move_back(state: &Path, job: &str, ago: Duration) -> DateTime<Utc> {
    let last = Utc::now() - ago;
    let changed = db(state)
        .execute(
            "UPDATE triggers SET last_handled = ?1 WHERE job = ?2",
            rusqlite::params![last.to_rfc3339_opts(SecondsFormat::Micros, true), job],
        )
        .unwrap();
    assert_eq!(changed, 1, "one trigger of {job} remembered");
    last
}

/// History is committed by a writer thread in groups (every 50 ms): wait until a row is there.
fn wait_for_a_row(file: &Path, state: &Path) {
    let mut tries = 0;
    while !state.join("state.db").exists() || history_json(file, state, &[]).is_empty() {
        tries += 1;
        assert!(tries < 1000, "no history row was ever written");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn history_json(file: &Path, state: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["history", file.to_str().unwrap(), "--format", "json"];
    args.extend(extra);
    let out = flowrun(&args, state);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// An interval of 1 s (its grid resumes from the last handled firing); `grace` and `coalesce` as given.
fn ticking(grace: &str, coalesce: bool) -> String {
    format!(
        "name: ticking\njobs:\n  tick:\n    run: echo tick\n    trigger: {{ interval: 1s }}\n    misfire_grace: {grace}\n    coalesce: {coalesce}\n"
    )
}

/// Run once until the first tick is handled (so the trigger is remembered), then stop.
fn remember_one_tick(file: &Path, state: &Path) {
    let (mut child, _, _) = start_until(file, &["--state", state.to_str().unwrap()], |e| {
        e["event"] == "run.exit"
    });
    // SIGTERM: a normal stop, which commits what was recorded.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn firings_missed_while_down_within_the_grace_run_once_coalesced() {
    let (dir, file) = flow(&ticking("1h", true));
    let state = dir.path().join("state");
    remember_one_tick(&file, &state);
    move_back(&state, "tick", Duration::milliseconds(5_500));
    let out = run(&file, &state, &["--for", "200ms"]);
    let ev = events(&out.stderr);
    let starts = of(&ev, "run.start", "tick");
    let first = starts[0];
    assert_eq!(first["catch_up"], true, "{first}");
    let coalesced = first["coalesced"].as_u64().unwrap();
    assert!(
        (5..=6).contains(&coalesced),
        "five firings fell due: {first}"
    );
    assert!(of(&ev, "run.missed", "tick").is_empty());
    // The history has the catch-up row, with the number of firings it stands for.
    let rows = history_json(&file, &state, &["tick"]);
    assert!(
        rows.iter()
            .any(|r| r["catch_up"] == true && r["count"] == coalesced),
        "{rows:#?}"
    );
}

#[test]
fn firings_beyond_the_grace_are_missed_with_their_count() {
    let (dir, file) = flow(&ticking("1s", false));
    let state = dir.path().join("state");
    remember_one_tick(&file, &state);
    // Down 5.5 s: firings 4.5, 3.5, 2.5 and 1.5 s ago are beyond the 1 s grace; 0.5 s ago runs.
    move_back(&state, "tick", Duration::milliseconds(5_500));
    let out = run(&file, &state, &["--for", "200ms"]);
    let ev = events(&out.stderr);
    let missed = of(&ev, "run.missed", "tick");
    assert_eq!(
        missed.len(),
        1,
        "consecutive misses are one event: {missed:?}"
    );
    assert_eq!(missed[0]["count"], 4, "{}", missed[0]);
    let starts = of(&ev, "run.start", "tick");
    assert_eq!(starts[0]["catch_up"], true);
    assert!(starts[0].get("coalesced").is_none());
    let summary = &common::summary(&ev)["jobs"]["tick"];
    assert_eq!(summary["missed"], 4);
    let rows = history_json(&file, &state, &["tick"]);
    let missed_row = rows.iter().find(|r| r["outcome"] == "missed").unwrap();
    assert_eq!(missed_row["count"], 4);
}

#[test]
fn an_at_trigger_that_fired_never_fires_again() {
    let at = (Utc::now() - Duration::seconds(10)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let (dir, file) = flow(&format!(
        "jobs:\n  once:\n    run: echo once\n    trigger: {{ at: \"{at}\" }}\n    misfire_grace: 1h\n"
    ));
    let state = dir.path().join("state");
    // Past but within the grace: it fires late, once; the runner then ends by itself.
    let out = run(&file, &state, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(of(&events(&out.stderr), "run.start", "once").len(), 1);
    for _ in 0..2 {
        let out = run(&file, &state, &[]);
        assert_eq!(out.status.code(), Some(0));
        let ev = events(&out.stderr);
        assert!(
            of(&ev, "run.start", "once").is_empty(),
            "fired again: {ev:?}"
        );
        assert_eq!(common::summary(&ev)["jobs"]["once"]["runs"], 0);
    }
    // Without state it would fire again: the memory is what stops it.
    let out = run(&file, Path::new("none"), &[]);
    assert_eq!(of(&events(&out.stderr), "run.start", "once").len(), 1);
}

#[test]
fn an_at_missed_while_no_runner_was_alive_is_missed_once_and_recorded() {
    let (dir, file) =
        flow("jobs:\n  once:\n    run: echo once\n    trigger: { at: \"2020-01-01T00:00:00Z\" }\n");
    let state = dir.path().join("state");
    let out = run(&file, &state, &[]);
    let ev = events(&out.stderr);
    assert_eq!(of(&ev, "run.missed", "once").len(), 1, "{ev:?}");
    assert_eq!(common::summary(&ev)["jobs"]["once"]["missed"], 1);
    let rows = history_json(&file, &state, &[]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["outcome"], "missed");
    // Handled: the next runner neither runs it nor says it again.
    let out = run(&file, &state, &[]);
    let ev = events(&out.stderr);
    assert!(of(&ev, "run.missed", "once").is_empty(), "{ev:?}");
    assert!(of(&ev, "run.start", "once").is_empty(), "{ev:?}");
}

#[test]
fn an_at_firing_is_on_disk_before_its_run_starts_so_a_crash_does_not_fire_it_again() {
    let at = (Utc::now() - Duration::seconds(5)).to_rfc3339_opts(SecondsFormat::Secs, true);
    let (dir, file) = flow(&format!(
        "jobs:\n  once:\n    run: echo fired; sleep 60\n    trigger: {{ at: \"{at}\" }}\n    misfire_grace: 1h\n"
    ));
    let state = dir.path().join("state");
    let (mut child, _, _) = start_until(&file, &["--state", state.to_str().unwrap()], |e| {
        e["event"] == "run.start"
    });
    // Killed the moment its run started: nothing after the spawn had time to be written.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let out = run(&file, &state, &[]);
    let ev = events(&out.stderr);
    assert!(
        of(&ev, "run.start", "once").is_empty(),
        "fired twice: {ev:?}"
    );
}

#[test]
fn a_relative_state_is_found_from_any_working_directory() {
    let (dir, file) = flow("jobs:\n  p:\n    run: echo from-p\n    trigger: start\n");
    let out = cmd()
        .arg(&file)
        .args(["--state", "rel-state"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let elsewhere = tempfile::tempdir().unwrap();
    // A decoy where a relative log path would wrongly point from there.
    std::fs::create_dir_all(elsewhere.path().join("rel-state/logs/p")).unwrap();
    std::fs::write(elsewhere.path().join("rel-state/logs/p/1.log"), "decoy\n").unwrap();
    let logs = cmd()
        .args(["logs", file.to_str().unwrap(), "p", "--state"])
        .arg(dir.path().join("rel-state"))
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&logs.stdout);
    assert!(text.contains("from-p") && !text.contains("decoy"), "{text}");
    // A --state that does not exist is said, not shown as an empty history.
    let missing = flowrun(
        &["status", file.to_str().unwrap()],
        &dir.path().join("typo"),
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no state directory"));
}

#[test]
fn a_run_alive_when_the_runner_is_killed_is_interrupted_and_numbers_go_on() {
    let (dir, file) = flow("jobs:\n  long:\n    run: echo started; sleep 60\n    trigger: start\n");
    let state = dir.path().join("state");
    let (mut child, _, seen) = start_until(&file, &["--state", state.to_str().unwrap()], |e| {
        e["event"] == "output" && e["job"] == "long"
    });
    let pid = seen.iter().find(|e| e["event"] == "run.start").unwrap()["pid"]
        .as_u64()
        .unwrap() as u32;
    wait_for_a_row(&file, &state);
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    // The run's process dies with the runner (parent-death signal).
    let mut tries = 0;
    while common::alive(pid) {
        tries += 1;
        assert!(tries < 1000, "the run outlived its runner");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let rows = history_json(&file, &state, &[]);
    assert_eq!(rows[0]["outcome"], "running", "before the next start");
    let out = run(&file, &state, &["--for", "100ms"]);
    let ev = events(&out.stderr);
    assert_eq!(ev[0]["event"], "runner.start");
    assert_eq!(ev[0]["recovered"], 1);
    // After a crash, numbers go on after the block the dead runner had reserved (100): a gap, never a repeat.
    assert_eq!(
        of(&ev, "run.start", "long")[0]["run"],
        101,
        "run numbers go on past the reserved block"
    );
    let rows = history_json(&file, &state, &["long"]);
    let first = rows.iter().find(|r| r["run"] == 1).unwrap();
    assert_eq!(first["outcome"], "interrupted", "{first}");
    assert!(first["ended"].is_string());
    let second = rows.iter().find(|r| r["run"] == 101).unwrap();
    assert_eq!(second["outcome"], "stopped");
    // A clean stop gives the unused numbers back: the next run is 102.
    let out = run(&file, &state, &["--for", "100ms"]);
    assert_eq!(of(&events(&out.stderr), "run.start", "long")[0]["run"], 102);
}

#[test]
fn log_files_go_on_and_logs_prints_them() {
    let (dir, file) =
        flow("jobs:\n  hello:\n    run: echo \"hello from $FLOWRUN_RUN\"\n    trigger: start\n");
    let state = dir.path().join("state");
    for _ in 0..2 {
        assert_eq!(run(&file, &state, &[]).status.code(), Some(0));
    }
    for n in [1, 2] {
        let log = std::fs::read_to_string(state.join(format!("logs/hello/{n}.log"))).unwrap();
        assert!(log.contains(&format!("hello from {n}\n")), "{log}");
        assert!(log.starts_with(&format!("# hello#{n} scheduled ")), "{log}");
        assert!(log.trim_end().ends_with("s"), "a footer: {log}");
    }
    let f = file.to_str().unwrap();
    let last = flowrun(&["logs", f, "hello"], &state);
    assert_eq!(last.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&last.stdout).contains("hello from 2"));
    let first = flowrun(&["logs", f, "hello", "1"], &state);
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    assert!(String::from_utf8_lossy(&first.stdout).contains("hello from 1"));
    // Output lines name a run `hello#1`: that form names it too, and prints the same log.
    let hashed = flowrun(&["logs", f, "hello#1"], &state);
    assert_eq!(hashed.status.code(), Some(0), "{hashed:?}");
    assert_eq!(hashed.stdout, first.stdout);
    for wrong in [&["hello#1", "2"][..], &["hello#one"], &["hello#"]] {
        let mut args = vec!["logs", f];
        args.extend(wrong);
        let out = flowrun(&args, &state);
        assert_eq!(out.status.code(), Some(2), "{wrong:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("hello#"),
            "{out:?}"
        );
    }
    let none = flowrun(&["logs", f, "hello", "9"], &state);
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no run #9 of `hello`"));
    let typo = flowrun(&["logs", f, "helo"], &state);
    assert_eq!(typo.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&typo.stderr).contains("hello"));
}

#[test]
fn logs_follow_streams_a_live_run_until_it_ends() {
    let (dir, file) = flow(
        "jobs:\n  talk:\n    run: echo first; read x < gate; echo second\n    trigger: start\n",
    );
    let gate = common::fifo(dir.path(), "gate");
    let state = dir.path().join("state");
    let runner = cmd()
        .arg(&file)
        .arg("--state")
        .arg(&state)
        .current_dir(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut runner = scopeguard(runner);
    // `logs` can follow once the run's row is committed and its first line is in the log file.
    wait_for_a_row(&file, &state);
    let log = state.join("logs/talk/1.log");
    let mut tries = 0;
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("first")) {
        tries += 1;
        assert!(tries < 2000, "no first line");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut follow = cmd()
        .args([
            "logs",
            file.to_str().unwrap(),
            "talk",
            "--follow",
            "--state",
        ])
        .arg(&state)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l == "first") {
        seen.push(lines.next().unwrap().unwrap());
    }
    std::fs::write(&gate, "go\n").unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(rest.iter().any(|l| l == "second"), "{seen:?} {rest:?}");
    assert!(rest.last().unwrap().starts_with("# exited 0"), "{rest:?}");
    assert!(follow.wait().unwrap().success());
    assert!(runner.0.wait().unwrap().success());
}

/// Kills the child if the test fails before it is waited for.
struct Guard(std::process::Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
fn scopeguard(child: std::process::Child) -> Guard {
    Guard(child)
}

#[test]
fn a_second_runner_on_the_same_state_is_refused() {
    let (dir, file) = flow("jobs:\n  long:\n    run: sleep 60\n    trigger: start\n");
    let state = dir.path().join("state");
    let (child, _, _) = start_until(&file, &["--state", state.to_str().unwrap()], |e| {
        e["event"] == "run.start"
    });
    let first = Guard(child);
    let out = run(&file, &state, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("already running (pid {})", first.0.id())),
        "{err}"
    );
    // `status` says a runner holds it.
    let status = flowrun(
        &["status", file.to_str().unwrap(), "--format", "json"],
        &state,
    );
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["runner"]["pid"], first.0.id());
}

#[test]
fn a_database_of_a_newer_schema_is_refused_and_left_untouched() {
    let (dir, file) = flow("jobs:\n  a:\n    run: 'true'\n    trigger: start\n");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    {
        let conn = db(&state);
        conn.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;")
            .unwrap();
    }
    let before = std::fs::read(state.join("state.db")).unwrap();
    let out = run(&file, &state, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("newer flowrun (schema version 99"), "{err}");
    assert_eq!(std::fs::read(state.join("state.db")).unwrap(), before);
    assert!(!state.join("state.db-wal").exists());
    let status = flowrun(&["status", file.to_str().unwrap()], &state);
    assert_eq!(status.status.code(), Some(2));
}

#[test]
fn state_none_remembers_nothing_and_writes_nothing() {
    let (dir, file) = flow("jobs:\n  a:\n    run: echo a\n    trigger: start\n");
    let home = dir.path().join("home");
    for _ in 0..2 {
        let out = cmd()
            .arg(&file)
            .args(["--state", "none", "--log-format", "json"])
            .env("XDG_STATE_HOME", &home)
            .output()
            .unwrap();
        let ev = events(&out.stderr);
        assert_eq!(ev[0]["state"], "none");
        assert_eq!(of(&ev, "run.start", "a")[0]["run"], 1, "numbers start at 1");
    }
    assert!(!home.exists());
    // FLOWRUN_STATE=none is the same.
    let out = cmd()
        .arg(&file)
        .args(["--log-format", "json"])
        .env("XDG_STATE_HOME", &home)
        .env("FLOWRUN_STATE", "none")
        .output()
        .unwrap();
    assert_eq!(events(&out.stderr)[0]["state"], "none");
    assert!(!home.exists());
}

#[test]
fn the_default_state_is_a_private_directory_named_after_the_workflow() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, file) = flow("name: my flow\njobs:\n  a:\n    run: echo a\n    trigger: start\n");
    let home = dir.path().join("home");
    let out = cmd()
        .arg(&file)
        .args(["--log-format", "json"])
        .env("XDG_STATE_HOME", &home)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let made: Vec<_> = std::fs::read_dir(home.join("flowrun"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(made.len(), 1);
    let name = made[0].file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        name.starts_with("my_flow-") && name.len() == "my_flow-".len() + 8,
        "{name}"
    );
    let mode = std::fs::metadata(&made[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert_eq!(
        events(&out.stderr)[0]["state"],
        made[0].display().to_string()
    );
    // Every command finds the same place by the same rule.
    let history = cmd()
        .args(["history", file.to_str().unwrap(), "--format", "json"])
        .env("XDG_STATE_HOME", &home)
        .output()
        .unwrap();
    let rows: Vec<Value> = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(rows.len(), 1);
}

#[test]
fn a_default_state_that_cannot_be_made_is_said_once_and_the_run_goes_on() {
    let (dir, file) = flow("jobs:\n  a:\n    run: echo a\n    trigger: start\n");
    // A file where the state home should be: nothing can be made under it.
    let blocked = dir.path().join("blocked");
    std::fs::write(&blocked, "").unwrap();
    let out = cmd()
        .arg(&file)
        .env("XDG_STATE_HOME", &blocked)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("running without state").count(), 1, "{err}");
    // A named --state that cannot be used is an error.
    let out = run(&file, &blocked.join("x"), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used"));
}

#[test]
fn rows_and_logs_older_than_keep_are_pruned_at_start() {
    let (dir, file) = flow("jobs:\n  a:\n    run: echo a\n    trigger: start\n");
    let state = dir.path().join("state");
    assert_eq!(run(&file, &state, &[]).status.code(), Some(0));
    assert!(state.join("logs/a/1.log").exists());
    let old = (Utc::now() - Duration::days(2)).to_rfc3339_opts(SecondsFormat::Micros, true);
    db(&state)
        .execute(
            "UPDATE runs SET started = ?1, ended = ?1",
            rusqlite::params![old],
        )
        .unwrap();
    assert_eq!(run(&file, &state, &["--keep", "1d"]).status.code(), Some(0));
    assert!(
        !state.join("logs/a/1.log").exists(),
        "the log went with its row"
    );
    let rows = history_json(&file, &state, &[]);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["run"], 2, "numbers go on after pruning");
}

#[test]
fn history_filters_by_job_failure_limit_and_since() {
    let (dir, file) = flow(
        "jobs:\n  ok:\n    run: 'true'\n    trigger: start\n  bad:\n    run: exit 3\n    trigger: start\n",
    );
    let state = dir.path().join("state");
    for _ in 0..3 {
        run(&file, &state, &[]);
    }
    let all = history_json(&file, &state, &[]);
    assert_eq!(all.len(), 6);
    let failed = history_json(&file, &state, &["--failed"]);
    assert_eq!(failed.len(), 3);
    assert!(failed.iter().all(|r| r["job"] == "bad" && r["code"] == 3));
    assert_eq!(
        history_json(&file, &state, &["ok", "--limit", "2"]).len(),
        2
    );
    // 0: every row (the default is 20).
    assert_eq!(history_json(&file, &state, &["--limit", "0"]).len(), 6);
    assert_eq!(history_json(&file, &state, &["--since", "1h"]).len(), 6);
    assert_eq!(
        history_json(&file, &state, &["--since", "2099-01-01T00:00:00Z"]).len(),
        0
    );
    let bad_since = flowrun(
        &["history", file.to_str().unwrap(), "--since", "yesterday"],
        &state,
    );
    assert_eq!(bad_since.status.code(), Some(2));
}

/// Times, durations and the widths they give the columns change from run to run; the words must not. The
/// alignment is checked apart ([`aligned`]) before the spaces are collapsed.
fn normalise(text: &str) -> String {
    let rules = [
        (r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC", "[TIME]"),
        // What follows the time (", if started") is words, kept.
        (
            r"\((?:(?:in )?[0-9dhms ]+(?: ago)?|now)(, if started)?\)",
            "([REL]$1)",
        ),
        (r"\b\d+ms\b|\b\d+\.\d+s\b", "[DUR]"),
        (r" {2,}", "  "),
    ];
    let mut out = text.to_string();
    for (pattern, with) in rules {
        out = regex::Regex::new(pattern)
            .unwrap()
            .replace_all(&out, with)
            .into_owned();
    }
    out
}

/// Every row of a table starts each column where its header does.
fn aligned(table: &str) {
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    let starts: Vec<usize> = regex::Regex::new(r"(^|  )(\S)")
        .unwrap()
        .captures_iter(header)
        .map(|c| c.get(2).unwrap().start())
        .collect();
    for line in lines {
        for &s in &starts[1..] {
            if s >= line.len() {
                continue; // empty last cells
            }
            let bytes = line.as_bytes();
            assert!(
                bytes[s - 1] == b' ' && bytes[s - 2] == b' ',
                "column at {s} not aligned in {line:?} (header {header:?})"
            );
        }
    }
}

#[test]
fn status_and_history_text_for_people() {
    let (dir, file) = flow(
        "name: nightly\njobs:\n  backup:\n    run: 'true'\n    trigger: [start, { cron: \"0 3 * * *\", timezone: UTC }]\n  report:\n    run: exit 4\n    trigger: start\n  later:\n    run: 'true'\n    trigger: { after: backup }\n    max_instances: 1\n",
    );
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let f = file.to_str().unwrap();
    let empty = flowrun(&["status", f], &state);
    let text =
        String::from_utf8_lossy(&empty.stdout).replace(&state.display().to_string(), "STATE");
    aligned(text.split("\n\n").nth(1).unwrap());
    insta::assert_snapshot!("status_never_run", normalise(&text.replace(f, "FILE")));
    run(&file, &state, &["--for", "500ms"]);
    let status = flowrun(&["status", f], &state);
    assert_eq!(status.status.code(), Some(0));
    let text =
        String::from_utf8_lossy(&status.stdout).replace(&state.display().to_string(), "STATE");
    aligned(text.split("\n\n").nth(1).unwrap());
    insta::assert_snapshot!("status_after_a_run", normalise(&text.replace(f, "FILE")));
    let history = flowrun(&["history", f], &state);
    let text = String::from_utf8_lossy(&history.stdout);
    aligned(&text);
    // Rows come newest first; runs of one start may commit in any order, so sort the body for the snapshot.
    let mut lines: Vec<String> = normalise(&text).lines().map(str::to_string).collect();
    let head = lines.remove(0);
    lines.sort();
    insta::assert_snapshot!("history", format!("{head}\n{}\n", lines.join("\n")));
}

#[test]
fn a_renamed_job_keeps_its_history_under_its_old_name() {
    let (dir, file) = flow("jobs:\n  old:\n    run: echo from-old\n    trigger: start\n");
    let state = dir.path().join("state");
    assert_eq!(run(&file, &state, &[]).status.code(), Some(0));
    std::fs::write(
        &file,
        "jobs:\n  new:\n    run: echo from-new\n    trigger: start\n",
    )
    .unwrap();
    let rows = history_json(&file, &state, &["old"]);
    assert_eq!(rows.len(), 1);
    let logs = flowrun(&["logs", file.to_str().unwrap(), "old"], &state);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("from-old"));
    // A name neither in the file nor in the history is still refused.
    assert_eq!(history_json_code(&file, &state, "never"), Some(2));
}

fn history_json_code(file: &Path, state: &Path, job: &str) -> Option<i32> {
    flowrun(&["history", file.to_str().unwrap(), job], state)
        .status
        .code()
}

#[test]
fn a_shared_folder_given_as_state_is_not_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, file) = flow("jobs:\n  a:\n    run: 'true'\n    trigger: start\n");
    let shared = dir.path().join("project");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("notes.txt"), "mine").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(&file, &shared, &[]);
    assert_eq!(out.status.code(), Some(0));
    let mode = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755, "left as it was");
    let ev = events(&out.stderr);
    assert!(
        ev.iter()
            .any(|e| e["event"] == "notice" && e["reason"].as_str().unwrap().contains("is shared")),
        "{ev:?}"
    );
    // A fresh directory is made private.
    let fresh = dir.path().join("fresh");
    run(&file, &fresh, &[]);
    assert_eq!(
        std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[test]
fn a_remembered_instant_ahead_of_the_clock_starts_the_trigger_afresh_with_a_notice() {
    let (dir, file) = flow(&ticking("1h", true));
    let state = dir.path().join("state");
    remember_one_tick(&file, &state);
    // As if the clock had been set back: the memory lies in the future.
    move_back(&state, "tick", Duration::days(-365 * 70));
    let out = run(&file, &state, &["--for", "1500ms"]);
    let ev = events(&out.stderr);
    assert!(
        ev.iter().any(|e| e["event"] == "notice"
            && e["reason"].as_str().unwrap().contains("ahead of the clock")),
        "{ev:?}"
    );
    assert!(
        !of(&ev, "run.start", "tick").is_empty(),
        "not silent until 2096"
    );
}

#[test]
fn an_interval_grid_starts_at_the_first_start_so_short_lives_still_fire() {
    let (dir, file) = flow("jobs:\n  slow:\n    run: 'true'\n    trigger: { interval: 3s }\n");
    let state = dir.path().join("state");
    let first = run(&file, &state, &["--for", "300ms"]);
    let first_start = events(&first.stderr)[0]["ts"].as_str().unwrap().to_string();
    let first_start = DateTime::parse_from_rfc3339(&first_start).unwrap();
    // A second life: its first firing is on the first life's grid (3 s after that start), not 3 s after its own.
    let second = run(&file, &state, &["--for", "4s"]);
    let ev = events(&second.stderr);
    let scheduled = of(&ev, "run.start", "slow")[0]["scheduled"]
        .as_str()
        .unwrap()
        .to_string();
    let scheduled = DateTime::parse_from_rfc3339(&scheduled).unwrap();
    let offset = (scheduled - first_start).num_milliseconds();
    assert!(
        (2_900..=3_100).contains(&offset),
        "{offset} ms after the first start"
    );
}

#[test]
fn a_runner_killed_during_a_firings_jitter_does_not_fire_it_again() {
    // The firing counts as handled when it falls due, before its jitter: killed in between, it is not run again.
    let (dir, file) =
        flow("jobs:\n  tick:\n    run: 'true'\n    trigger: { interval: 3s, jitter: 2900ms }\n");
    for attempt in 0..6 {
        let state = dir.path().join(format!("state-{attempt}"));
        let log = dir.path().join(format!("events-{attempt}"));
        let mut runner = cmd()
            .arg(&file)
            .arg("--state")
            .arg(&state)
            .args(["--log-format", "json"])
            .stdin(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // The grid's anchor is remembered at the start; the first firing moves it on when it falls due.
        let handled = || -> Option<String> {
            let conn = rusqlite::Connection::open(state.join("state.db")).ok()?;
            conn.query_row(
                "SELECT last_handled FROM triggers WHERE job = 'tick'",
                [],
                |r| r.get(0),
            )
            .ok()
        };
        let mut anchor = None;
        let mut tries = 0;
        loop {
            tries += 1;
            assert!(tries < 2000, "the firing never fell due");
            match (handled(), &anchor) {
                (Some(h), None) => anchor = Some(h),
                (Some(h), Some(a)) if &h != a => break,
                _ => {}
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        runner.kill().unwrap();
        runner.wait().unwrap();
        let before = events(&std::fs::read(&log).unwrap());
        if !of(&before, "run.start", "tick").is_empty() {
            // The jitter drawn was shorter than the look: nothing was tested, try again.
            continue;
        }
        let again = run(&file, &state, &["--for", "500ms"]);
        let after = events(&again.stderr);
        assert!(of(&after, "run.start", "tick").is_empty(), "{after:#?}");
        assert!(of(&after, "run.missed", "tick").is_empty(), "{after:#?}");
        return;
    }
    panic!("six jitters in a row were shorter than the look");
}

/// A store that fails to commit (here another process holds the database's write lock; a full disk fails the same
/// way) loses no history: the rows are kept, tried again every window, and written once it works; said once each
/// way.
#[test]
fn history_is_kept_while_the_store_fails_and_written_when_it_works_again() {
    let dir = tempfile::tempdir().unwrap();
    let gate = common::fifo(dir.path(), "gate");
    let hold = common::fifo(dir.path(), "hold");
    let file = dir.path().join("flow.yaml");
    std::fs::write(
        &file,
        format!(
            "jobs:\n  gate: {{ run: \"read x < {}\" }}\n  hold: {{ run: \"read x < {}\" }}\n",
            gate.display(),
            hold.display()
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    // `--for`: should the rows never be written, the runner ends and the test fails rather than hangs.
    let (child, reader, seen) = start_until(
        &file,
        &["--state", state.to_str().unwrap(), "--for", "60s"],
        |e| e["event"] == "runner.start",
    );
    let _guard = scopeguard(child);
    let mut blocker = db(&state);
    blocker
        .busy_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    let lock = blocker
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .unwrap();
    // The gate's end is history the runner cannot commit while the lock is held.
    std::fs::write(&gate, "x\n").unwrap();
    let mut lines = std::io::BufRead::lines(reader);
    let mut seen = seen;
    let mut until = |what: &str, seen: &mut Vec<Value>| loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("ended before {what}: {seen:?}"))
            .unwrap();
        let e: Value = serde_json::from_str(&line).unwrap();
        // Until the runner stops, `hold` waits at its gate, so the test's write there cannot block for ever.
        assert_ne!(
            e["event"], "runner.stopping",
            "stopping before {what}: {seen:?}"
        );
        let found = e["event"] == "notice" && e["reason"].as_str().unwrap().contains(what);
        seen.push(e);
        if found {
            return;
        }
    };
    until("history is not being written", &mut seen);
    lock.rollback().unwrap();
    until("history is being written again", &mut seen);
    std::fs::write(&hold, "x\n").unwrap();
    for line in lines {
        seen.push(serde_json::from_str(&line.unwrap()).unwrap());
    }
    let notices = |what: &str| {
        seen.iter()
            .filter(|e| e["event"] == "notice" && e["reason"].as_str().unwrap().contains(what))
            .count()
    };
    assert_eq!(notices("history is not being written"), 1, "{seen:?}");
    assert_eq!(notices("history is being written again"), 1, "{seen:?}");
    let rows = history_json(&file, &state, &[]);
    for job in ["gate", "hold"] {
        let row = rows
            .iter()
            .find(|r| r["job"] == job)
            .unwrap_or_else(|| panic!("no row of {job}: {rows:?}"));
        assert_eq!(row["outcome"], "succeeded", "{row}");
    }
}

#[test]
fn tries_belong_to_their_run_one_number_one_row_and_each_try_beneath() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flaky.yaml");
    std::fs::write(
        &file,
        "jobs:\n  flaky:\n    run: 'echo \"try $FLOWRUN_TRY of run $FLOWRUN_RUN\"; [ \"$FLOWRUN_TRY\" -ge 3 ] || exit 5'\n    retry: { attempts: 2, backoff: 10ms }\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    let out = common::cmd()
        .arg(&file)
        .args(["--log-format", "json", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "the run succeeded at its third try"
    );
    let ev = common::events(&out.stderr);
    assert_eq!(
        common::output_lines(&ev, "flaky"),
        ["try 1 of run 1", "try 2 of run 1", "try 3 of run 1"]
    );
    let counts = &common::summary(&ev)["jobs"]["flaky"];
    assert_eq!(
        (counts["runs"].as_u64(), counts["tries"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(
        counts["failed"], 0,
        "tries that were retried are not failed runs"
    );
    let f = file.to_str().unwrap();
    let rows = common::on_state(&["history", f, "--format", "json", "--tries"], &state);
    let rows: serde_json::Value = serde_json::from_slice(&rows.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "one row for the run: {rows:#?}");
    assert_eq!(rows[0]["run"], 1);
    assert_eq!(rows[0]["attempt"], 3);
    assert_eq!(rows[0]["outcome"], "succeeded");
    let tries: Vec<(u64, &str)> = rows[0]["tries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["attempt"].as_u64().unwrap(),
                t["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(tries, [(1, "failed"), (2, "failed"), (3, "succeeded")]);
    let text =
        String::from_utf8_lossy(&common::on_state(&["history", f, "--tries"], &state).stdout)
            .into_owned();
    assert!(text.contains("try 2") && text.contains("exit 5"), "{text}");
    // Every try's output is in the run's one log file, each under its own header.
    let log = String::from_utf8_lossy(&common::on_state(&["logs", f, "flaky", "1"], &state).stdout)
        .into_owned();
    assert!(
        log.contains("try 1 of run 1") && log.contains("try 3 of run 1"),
        "{log}"
    );
    assert!(log.contains("flaky#1 try 2 scheduled"), "{log}");
}

/// The line of `job` in `status`'s text, its cells one space apart.
fn status_row(text: &str, job: &str) -> String {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(job))
        .unwrap_or_else(|| panic!("no row of {job} in {text}"))
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A skipped firing is a history row, newer than the run it was skipped for; LAST RUN still shows that run and
/// its result, not the skip.
#[test]
fn status_shows_the_last_run_not_a_skip_that_came_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let gate = common::fifo(dir.path(), "gate");
    let file = dir.path().join("flow.yaml");
    std::fs::write(
        &file,
        format!(
            "jobs:\n  slow:\n    run: \"read x < {}\"\n    trigger: start\n    max_instances: 1\n",
            gate.display()
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let f = file.to_str().unwrap();
    let (child, _, _) = start_until(&file, &["--state", state.to_str().unwrap()], |e| {
        e["event"] == "run.start"
    });
    let mut runner = scopeguard(child);
    // slow#1 is running: a manual firing is skipped (max_instances) and written as a row of its own.
    let skipped = flowrun(&["trigger", f, "slow"], &state);
    assert_eq!(skipped.status.code(), Some(1), "{skipped:?}");
    std::fs::write(&gate, "x\n").unwrap();
    // slow#1 ends; nothing can fire again, so the runner ends by itself.
    assert!(runner.0.wait().unwrap().success());
    let rows = history_json(&file, &state, &[]);
    assert_eq!(
        rows[0]["outcome"], "skipped",
        "the skip is the newest row: {rows:?}"
    );
    assert_eq!(rows[1]["outcome"], "succeeded", "{rows:?}");
    let text = String::from_utf8_lossy(&flowrun(&["status", f], &state).stdout).into_owned();
    let row = status_row(&text, "slow");
    assert!(row.starts_with("slow idle #1 "), "{text}");
    assert!(row.contains(" succeeded "), "{text}");
    assert!(!row.contains("skipped"), "{text}");
    let json: Value =
        serde_json::from_slice(&flowrun(&["status", f, "--format", "json"], &state).stdout)
            .unwrap();
    let last = &json["jobs"][0]["last"];
    assert_eq!(
        (&last["run"], &last["outcome"]),
        (&1.into(), &"succeeded".into()),
        "{json}"
    );
}

/// The live runner drops a run from its answer as it ends; the history writer commits the end later (here never,
/// while the test holds the database's write lock, which makes the gap as long as the test needs). In that gap
/// the row still says `running`: status must not show the ended run as running.
#[test]
fn status_does_not_show_a_run_that_ended_as_running_while_its_end_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let gate = common::fifo(dir.path(), "gate");
    let hold = common::fifo(dir.path(), "hold");
    let file = dir.path().join("flow.yaml");
    std::fs::write(
        &file,
        format!(
            "jobs:\n  gate: {{ run: \"read x < {}\" }}\n  hold:\n    run: \"read x < {}\"\n    trigger: [start, {{ cron: \"0 3 * * *\" }}]\n",
            gate.display(),
            hold.display()
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let f = file.to_str().unwrap();
    // `--for`: should the test fail with the lock held, the runner ends rather than hangs.
    let (child, reader, _) = start_until(
        &file,
        &["--state", state.to_str().unwrap(), "--for", "60s"],
        |e| e["event"] == "runner.start",
    );
    let _guard = scopeguard(child);
    // Both runs' starts are written before the lock is taken.
    let mut tries = 0;
    while history_json(&file, &state, &[])
        .iter()
        .filter(|r| r["outcome"] == "running")
        .count()
        < 2
    {
        tries += 1;
        assert!(tries < 1000, "the runs' starts were never written");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut blocker = db(&state);
    let lock = blocker
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .unwrap();
    std::fs::write(&gate, "x\n").unwrap();
    let mut lines = std::io::BufRead::lines(reader);
    loop {
        let e: Value = serde_json::from_str(&lines.next().expect("gate#1 ends").unwrap()).unwrap();
        if e["event"] == "run.exit" && e["job"] == "gate" {
            break;
        }
    }
    let json: Value =
        serde_json::from_slice(&flowrun(&["status", f, "--format", "json"], &state).stdout)
            .unwrap();
    let (gate_job, hold_job) = (&json["jobs"][0], &json["jobs"][1]);
    assert_eq!(gate_job["state"], "idle", "{json}");
    assert_eq!(
        gate_job["last"]["outcome"], "running",
        "the end is not written yet: {json}"
    );
    assert_eq!(gate_job["last_ended"], true, "{json}");
    assert_eq!(hold_job["state"], "running 1", "{json}");
    assert!(hold_job.get("last_ended").is_none(), "{json}");
    let text = String::from_utf8_lossy(&flowrun(&["status", f], &state).stdout).into_owned();
    let gate_row = status_row(&text, "gate");
    assert!(gate_row.starts_with("gate idle #1 "), "{text}");
    assert!(gate_row.contains(" ended "), "{text}");
    assert!(!gate_row.contains("running"), "{text}");
    let hold_row = status_row(&text, "hold");
    assert!(hold_row.starts_with("hold running 1 #1 "), "{text}");
    // A runner is up: NEXT is when it will fire, not "if started".
    assert!(!text.contains("if started"), "{text}");
    lock.rollback().unwrap();
    // hold's cron can fire again: the runner would go on, so it is stopped (and writes what it kept).
    assert_eq!(flowrun(&["stop", f], &state).status.code(), Some(0));
    for line in lines {
        line.unwrap();
    }
    let offline = String::from_utf8_lossy(&flowrun(&["status", f], &state).stdout).into_owned();
    assert!(
        status_row(&offline, "hold").contains(", if started)"),
        "{offline}"
    );
    assert!(
        status_row(&offline, "gate").contains(" succeeded "),
        "{offline}"
    );
}

#[test]
fn a_retried_runs_row_spans_all_its_tries() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slow.yaml");
    std::fs::write(
        &file,
        "jobs:\n  slow:\n    run: '[ \"$FLOWRUN_TRY\" -ge 2 ]'\n    retry: { attempts: 1, backoff: 300ms }\n",
    )
    .unwrap();
    let state = dir.path().join("state");
    let out = common::cmd()
        .arg(&file)
        .arg("--state")
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let f = file.to_str().unwrap();
    let rows = common::on_state(&["history", f, "--format", "json"], &state);
    let rows: serde_json::Value = serde_json::from_slice(&rows.stdout).unwrap();
    let took = rows[0]["duration_ms"].as_u64().unwrap();
    assert!(
        took >= 300,
        "from the first try's start, across the backoff: {took} ms"
    );
}
