//! `flowrun status FILE`: one line per job, like `systemctl list-timers`, read from the state store. (The live
//! runner's own view comes with the control socket; until then this says whether a runner holds the state.)

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::Path;

use super::{open, paint_outcome, table};
use crate::error::Error;
use crate::output::color_on_stdout;
use crate::plan::Trigger;
use crate::report::Mode;
use crate::store::{Memory, Outcome, Query, RunRow, Store};
use crate::timefmt;

#[derive(Serialize)]
struct Status {
    workflow: String,
    file: String,
    state: String,
    runner: Runner,
    jobs: Vec<JobStatus>,
    /// The live runner's channels (empty when no runner answers).
    channels: Vec<serde_json::Value>,
}

#[derive(Serialize)]
struct Runner {
    running: bool,
    pid: Option<u32>,
    /// When the live runner started (from its control socket).
    started: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
struct JobStatus {
    job: String,
    /// `running 2`, `idle`, `never run`.
    state: String,
    running: u64,
    /// The live runs (from the runner's control socket): run, pid, started.
    runs: Vec<serde_json::Value>,
    /// Firings waiting for a worker.
    waiting: u64,
    /// The job's last run (a row with a run number: a skipped or missed firing is not a run).
    last: Option<RunRow>,
    /// The last run has ended though its row still says `running`: the live runner no longer runs it and its end
    /// is not in the store yet (the history is written in groups, behind the runner).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    last_ended: bool,
    next: Option<DateTime<Utc>>,
    runs_24h: u64,
    failures_24h: u64,
    /// Paused (`flowrun pause`): it fires nothing.
    paused: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    paused_until: Option<DateTime<Utc>>,
    /// `enabled: false` in the file.
    enabled: bool,
}

pub fn status(file: &Path, state: Option<&str>, format: Mode) -> Result<i32, Error> {
    let opened = open(file, state)?;
    let now = Utc::now();
    let holder = opened.store.as_ref().and_then(|s| s.holder());
    let memory = match &opened.store {
        Some(s) => s.memory().map_err(Error::from)?,
        None => Memory::default(),
    };
    let recent = match &opened.store {
        Some(s) => s
            .history(&Query {
                since: Some(now - chrono::Duration::hours(24)),
                ..Query::default()
            })
            .map_err(Error::from)?,
        None => Vec::new(),
    };
    // Each job's last run, read before the live runner is asked: a row still `running` here whose run the runner
    // no longer lists has ended since (run numbers are never reused). Read after, a run started in between would
    // be a `running` row the (older) live answer does not list, and would be taken for ended.
    let mut lasts = Vec::new();
    for job in &opened.plan.jobs {
        lasts.push(match &opened.store {
            Some(s) => last_run(s, &job.name)?,
            None => None,
        });
    }
    // The live view, when a runner holds the state and answers on its socket.
    let live: Option<serde_json::Value> = holder.and_then(|_| {
        let socket = opened.dir.join("control.sock");
        let answer = crate::control::client::request(
            &socket,
            "GET",
            "/api/v1/status",
            None,
            Some(crate::control::timeouts::answer().min(std::time::Duration::from_secs(5))),
        );
        match answer {
            Ok((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    });
    let live_job = |name: &str| {
        live.as_ref()?
            .get("jobs")?
            .as_array()?
            .iter()
            .find(|j| j["job"] == name)
            .cloned()
    };
    // The last day's rows by job, once (not a pass over all of them per job).
    let mut by_job: std::collections::HashMap<&str, Vec<&RunRow>> = Default::default();
    for row in &recent {
        by_job.entry(row.job.as_str()).or_default().push(row);
    }
    let mut jobs = Vec::new();
    for (job, last) in opened.plan.jobs.iter().zip(lasts) {
        let mine = || by_job.get(job.name.as_str()).into_iter().flatten().copied();
        // Rows `running` are live only while a runner holds the state; the next runner marks them interrupted.
        let now_live = live_job(&job.name);
        let runs: Vec<serde_json::Value> = now_live
            .as_ref()
            .and_then(|j| j["running"].as_array().cloned())
            .unwrap_or_default();
        let running = match (&now_live, holder) {
            (Some(_), _) => runs.len() as u64,
            (None, Some(_)) => mine().filter(|r| r.outcome == Outcome::Running).count() as u64,
            (None, None) => 0,
        };
        // The runner drops a run from its answer as it ends, and the history writer commits its end up to a
        // window later: until then the row says `running`, and the last run would show as running while the job
        // is idle. The live runner knows what runs; the row only what it was.
        // A run waiting for its retry is neither live nor ended.
        let retrying: Vec<u64> = now_live
            .as_ref()
            .and_then(|j| j["retrying"].as_array())
            .map(|a| a.iter().filter_map(|n| n.as_u64()).collect())
            .unwrap_or_default();
        let last_ended = now_live.is_some()
            && last.as_ref().is_some_and(|r| {
                r.outcome == Outcome::Running
                    && !runs.iter().any(|live| live["run"].as_u64() == r.run)
                    && !r.run.is_some_and(|n| retrying.contains(&n))
            });
        let waiting = now_live
            .as_ref()
            .and_then(|j| j["waiting"].as_u64())
            .unwrap_or(0);
        let next = match &now_live {
            Some(j) => j["next"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
            None => next_fire(job, &memory, now),
        };
        // Paused: as the live runner says, else as the state remembers it.
        let (paused, paused_until) = match &now_live {
            Some(j) => (
                j["paused"].as_bool().unwrap_or(false),
                j["paused_until"]
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc)),
            ),
            None => match memory.paused.get(&job.name) {
                Some(until) if until.is_none_or(|t| t > now) => (true, *until),
                _ => (false, None),
            },
        };
        let mut state = match (running, &last) {
            (n, _) if n > 0 => format!("running {n}"),
            (_, Some(_)) => "idle".to_string(),
            (_, None) => "never run".to_string(),
        };
        if let (0, Some(n)) = (running, retrying.first()) {
            state = format!("retrying #{n}");
        }
        if !job.enabled {
            state = format!("disabled, {state}");
        } else if paused {
            state = format!("paused, {state}");
        }
        jobs.push(JobStatus {
            job: job.name.clone(),
            state,
            running,
            runs,
            waiting,
            last,
            last_ended,
            next,
            runs_24h: mine().filter(|r| r.run.is_some()).count() as u64,
            failures_24h: mine().filter(|r| r.outcome.is_failure()).count() as u64,
            paused,
            paused_until,
            enabled: job.enabled,
        });
    }
    let status = Status {
        workflow: opened.plan.name.clone(),
        file: file.display().to_string(),
        state: opened.dir.display().to_string(),
        runner: Runner {
            running: holder.is_some(),
            pid: holder,
            started: live
                .as_ref()
                .and_then(|l| l["started"].as_str())
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
        },
        jobs,
        channels: live
            .as_ref()
            .and_then(|l| l["channels"].as_array().cloned())
            .unwrap_or_default(),
    };
    match format {
        Mode::Json => {
            let mut text = serde_json::to_string_pretty(&status).expect("status serializes");
            text.push('\n');
            crate::output::print_out(&text);
        }
        Mode::Text => crate::output::print_out(&text(&status, now, color_on_stdout())),
    }
    Ok(crate::exit::OK)
}

/// The job's newest row that is a run (has a number). Skipped and missed firings are rows too, and the newest row
/// would hide the last real result behind a skip (a manual trigger refused by max_instances, a paused job's ticks).
fn last_run(store: &crate::store::SqliteStore, job: &str) -> Result<Option<RunRow>, Error> {
    match store.last_run(job).map_err(Error::from)? {
        Some(number) => super::logs::find(store, job, number),
        None => Ok(None),
    }
}

/// The next fire of the job's time triggers: on the grid a runner keeps (an interval resumes from its last
/// handled firing), from now.
fn next_fire(job: &crate::plan::Job, memory: &Memory, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    job.triggers
        .iter()
        .filter_map(|t| match t {
            Trigger::Time { rule, .. } => {
                let last = memory
                    .handled
                    .get(&(job.name.clone(), rule.fingerprint()))
                    .copied();
                let resumed = match last {
                    Some(l) => rule.resumed(l, now),
                    None => rule.rule(now),
                };
                resumed.next_after(last.map_or(now, |l| l.max(now)))
            }
            _ => None,
        })
        .min()
}

fn text(status: &Status, now: DateTime<Utc>, color: bool) -> String {
    let zone = crate::values::system_zone();
    let runner = match (status.runner.pid, status.runner.started) {
        (Some(pid), Some(started)) => format!(
            "a runner is up (pid {pid}, started {})",
            timefmt::relative(started, now)
        ),
        (Some(pid), None) => {
            format!("a runner is up (pid {pid}; its control socket does not answer)")
        }
        (None, _) => "no runner is running".to_string(),
    };
    let mut out = format!(
        "{} ({}): {runner}\nstate: {}\n\n",
        status.workflow, status.file, status.state
    );
    let rows: Vec<Vec<String>> = status
        .jobs
        .iter()
        .map(|j| {
            let (when, result, took) = match &j.last {
                Some(r) => {
                    let at = r.started.or(r.scheduled).or(r.ended).unwrap_or(now);
                    let run = r.run.map(|n| format!("#{n} ")).unwrap_or_default();
                    let result = match j.last_ended {
                        // Its result is not in the store yet; `running` would contradict STATE.
                        true => "ended".to_string(),
                        false => paint_outcome(r.outcome, color),
                    };
                    (
                        format!(
                            "{run}{} ({})",
                            timefmt::local(at, zone),
                            timefmt::relative(at, now)
                        ),
                        result,
                        r.duration_ms
                            .map(timefmt::duration_ms)
                            .unwrap_or_else(|| "-".into()),
                    )
                }
                None => ("-".to_string(), "-".to_string(), "-".to_string()),
            };
            let next = match j.next {
                // With no runner up, nothing fires: it is when the job would fire if one were started now.
                Some(t) if !status.runner.running => format!(
                    "{} ({}, if started)",
                    timefmt::local(t, zone),
                    timefmt::relative(t, now)
                ),
                Some(t) => format!(
                    "{} ({})",
                    timefmt::local(t, zone),
                    timefmt::relative(t, now)
                ),
                None => "-".to_string(),
            };
            vec![
                j.job.clone(),
                j.state.clone(),
                when,
                result,
                took,
                next,
                format!(
                    "{} run{}, {} failed",
                    j.runs_24h,
                    if j.runs_24h == 1 { "" } else { "s" },
                    j.failures_24h
                ),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "JOB", "STATE", "LAST RUN", "RESULT", "TOOK", "NEXT", "LAST 24H",
        ],
        &rows,
        color,
    ));
    let runs: Vec<Vec<String>> = status
        .jobs
        .iter()
        .flat_map(|j| {
            j.runs.iter().map(move |r| {
                let started = r["started"]
                    .as_str()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc));
                vec![
                    format!("{}#{}", j.job, r["run"]),
                    r["pid"].as_u64().map_or("-".into(), |p| p.to_string()),
                    started.map_or("-".into(), |t| timefmt::relative(t, now)),
                    match r["ready"].as_bool() {
                        Some(true) => "yes".into(),
                        Some(false) => "not yet".into(),
                        None => "-".into(),
                    },
                ]
            })
        })
        .collect();
    if !runs.is_empty() {
        // READY only when some live run has a readiness probe.
        let probed = status
            .jobs
            .iter()
            .any(|j| j.runs.iter().any(|r| !r["ready"].is_null()));
        let mut headers = vec!["RUNNING", "PID", "STARTED", "READY"];
        let mut runs = runs;
        if !probed {
            headers.pop();
            runs.iter_mut().for_each(|r| drop(r.pop()));
        }
        out.push('\n');
        out.push_str(&table(&headers, &runs, color));
    }
    out.push_str(&channels_table(&status.channels, color));
    out
}

/// A durable queue's store as `status` shows it: messages not done, the oldest one's age, bytes on disk.
fn store_cells(store: &serde_json::Value) -> [String; 3] {
    if !store.is_object() {
        return ["-".into(), "-".into(), "-".into()];
    }
    let oldest = store["oldest"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            let age = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                .to_std()
                .unwrap_or_default();
            format!("{} ago", crate::values::format_duration(age))
        })
        .unwrap_or_else(|| "-".into());
    let bytes = store["bytes_on_disk"].as_u64().unwrap_or(0);
    [
        store["depth"].as_u64().unwrap_or(0).to_string(),
        oldest,
        format!("{:.1} KiB", bytes as f64 / 1024.0),
    ]
}

/// The live runner's channels, with what a durable queue's store keeps when there is one.
fn channels_table(channels: &[serde_json::Value], color: bool) -> String {
    let mut out = String::new();
    let durable = channels.iter().any(|c| c["store"].is_object());
    let channels: Vec<Vec<String>> = channels
        .iter()
        .map(|c| {
            let n = |k: &str| c[k].as_u64().unwrap_or(0).to_string();
            let mut row = vec![
                c["channel"].as_str().unwrap_or("?").to_string(),
                c["kind"].as_str().unwrap_or("?").to_string(),
                n("in"),
                n("out"),
                n("left"),
            ];
            if durable {
                row.extend(store_cells(&c["store"]));
            }
            row
        })
        .collect();
    if !channels.is_empty() {
        let mut headers = vec!["CHANNEL", "KIND", "IN", "OUT", "WAITING"];
        if durable {
            headers.extend(["STORED", "OLDEST", "ON DISK"]);
        }
        out.push('\n');
        out.push_str(&table(&headers, &channels, color));
    }
    out
}
