//! The one vocabulary of a run: typed events, what the reporter prints and what later consumers (history,
//! metrics, the control API) will read. Two renderings, each in one place: [`Event::record`] is the flat JSON
//! object of the event log (SPEC §3, a stable contract), [`Event::notice`] the short line for people.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::values::format_duration;

/// Something that happened in a run of a workflow.
#[derive(Debug, Clone)]
pub enum Event {
    RunnerStart {
        workflow: String,
        /// The state directory, or `None` without state.
        state: Option<String>,
        /// Runs a dead runner left alive in the history, now marked interrupted.
        recovered: u64,
    },
    /// A stop began (a signal, `--for`, the end of the work).
    RunnerStopping {
        reason: String,
        live_runs: usize,
    },
    RunnerStop {
        code: i32,
        summary: Summary,
    },
    RunStart {
        job: String,
        run: u64,
        pid: u32,
        scheduled: DateTime<Utc>,
        lateness_us: Option<i64>,
        attempt: u32,
        coalesced: u64,
        /// A time firing that fell due while no runner was alive.
        catch_up: bool,
        /// The messages of an `each` run.
        messages: Option<u64>,
        /// What fired it, in words (`cron 0 3 * * * (UTC)`, `start`, `after a`, `restart`...).
        trigger: String,
        /// Where its output goes (with `--log-dir` or a state directory), if it prints any.
        log: Option<String>,
    },
    RunExit(Box<RunExit>),
    RunSkipped {
        job: String,
        scheduled: Option<DateTime<Utc>>,
        why: SkipReason,
        trigger: String,
    },
    RunMissed {
        job: String,
        scheduled: DateTime<Utc>,
        trigger: String,
        /// It fell due while no runner was alive.
        catch_up: bool,
        /// For a catch-up: how long no runner was up (since the trigger's last handled firing).
        downtime: Option<std::time::Duration>,
        /// The job's next firing.
        next: Option<DateTime<Utc>>,
        count: u64,
        /// `count` is a lower bound (too many to count: years of a per-second cron).
        at_least: bool,
        late: std::time::Duration,
        grace: std::time::Duration,
        /// Why, when not for lateness alone (`store unreachable`: no runner of the cluster could claim it).
        reason: Option<String>,
    },
    /// Messages of an `each` run that failed its last attempt went to its dead-letter channel.
    MessageDead {
        job: String,
        run: u64,
        channel: String,
        messages: u64,
    },
    /// A service comes back after `delay` (`count`: of `limit.max` within `limit.window`, or since the start).
    RunRestart {
        job: String,
        run: u64,
        /// How the run ended (`exited 1`).
        exit: String,
        delay: std::time::Duration,
        count: u64,
        limit: Option<crate::plan::RestartLimit>,
    },
    /// A service reached its restart limit: it has failed for good.
    RestartsExhausted {
        job: String,
        run: u64,
        max: u32,
        window: Option<std::time::Duration>,
    },
    RunRetry {
        job: String,
        run: u64,
        next_attempt: u32,
        backoff: std::time::Duration,
    },
    RunTimeout {
        job: String,
        run: u64,
        pid: u32,
    },
    /// The run's readiness probe passed, `after` its start.
    RunReady {
        job: String,
        run: u64,
        pid: u32,
        after: std::time::Duration,
        /// The probe in words (`http http://127.0.0.1:8080/`).
        probe: String,
    },
    /// The run's readiness probe did not pass within its `timeout`: the run is stopped and fails.
    /// A run's liveness probe failed enough times in a row: it is stopped, and ends unhealthy.
    RunUnhealthy {
        job: String,
        run: u64,
        pid: u32,
        reason: String,
    },
    RunNotReady {
        job: String,
        run: u64,
        pid: u32,
        /// `not ready within 60s (last check: ...)`.
        reason: String,
    },
    ChannelClosed {
        channel: String,
        messages: u64,
    },
    /// Messages a reader left unread went back to the queue.
    ChannelTakeback {
        job: String,
        run: u64,
        channel: Option<String>,
        messages: u64,
    },
    /// A problem of the runner outside any run (a log file that cannot be written).
    Notice {
        text: String,
    },
    /// A reload was applied (SPEC §5).
    ReloadApplied {
        added: Vec<String>,
        removed: Vec<String>,
        changed: Vec<String>,
    },
    /// A reload was refused: the old plan goes on. `report`: the diagnostics, as text.
    /// A job was paused (until then, or until resumed); also said at a start for a pause remembered.
    JobPaused {
        job: String,
        until: Option<DateTime<Utc>>,
    },
    JobResumed {
        job: String,
    },
    ReloadRejected {
        errors: usize,
        /// The first problem, one line.
        summary: String,
        report: String,
    },
}

/// How a run ended, as reported.
#[derive(Debug, Clone)]
pub struct RunExit {
    pub job: String,
    pub run: u64,
    pub pid: Option<u32>,
    pub code: Option<i32>,
    pub signal: Option<String>,
    pub reason: Option<String>,
    pub success: bool,
    /// The runner stopped it at shutdown: neither a success nor a failure.
    pub stopped_by_runner: bool,
    /// An `each` run (successful ones are quiet: there may be thousands).
    pub each: bool,
    pub duration_ms: u64,
    /// In the history's words: succeeded, failed, timeout, stopped, spawn-failed.
    pub outcome: &'static str,
    /// The run's last try: no retry follows (the run's outcome is this try's).
    pub final_try: bool,
    /// When the run's first try began (its row's `started`; `duration_ms` is this try's).
    pub run_started: DateTime<Utc>,
    /// As its start said (a run that could not start had no `run.start`: its exit says all).
    pub trigger: String,
    pub scheduled: DateTime<Utc>,
    pub attempt: u32,
    pub messages: Option<u64>,
    pub coalesced: u64,
    pub catch_up: bool,
    /// The log file it wrote, if it printed anything.
    pub log: Option<String>,
    /// A restart follows (its `run.restart` says the exit and the restart in one line for people).
    pub restarts: bool,
}

impl RunExit {
    /// `exited 0`, `killed by SIGTERM`, `could not start`.
    pub fn status_text(&self) -> String {
        match (&self.code, &self.signal) {
            (Some(c), _) => format!("exited {c}"),
            (None, Some(s)) => format!("killed by {s}"),
            _ => "could not start".to_string(),
        }
    }
}

/// Why a firing was skipped.
#[derive(Debug, Clone)]
pub enum SkipReason {
    MaxInstances(usize),
    /// The job is paused (`flowrun pause`).
    Paused,
    /// An `after` join that can never fire: the text names the jobs and the status.
    JoinDead(String),
}

impl SkipReason {
    /// The reason in words: the event's `reason`, the history's and the API's.
    pub fn text(&self) -> String {
        match self {
            SkipReason::MaxInstances(n) => format!("max_instances ({n}) runs are alive"),
            SkipReason::Paused => "paused".to_string(),
            SkipReason::JoinDead(text) => text.clone(),
        }
    }
}

/// Why firings were missed, in words: the `run.missed` event's `reason` and the history's.
pub fn missed_reason(
    count: u64,
    at_least: bool,
    late: std::time::Duration,
    grace: std::time::Duration,
) -> String {
    format!(
        "{}handled {} late; misfire_grace is {}",
        match at_least {
            true => format!("at least {count} firings missed (too many to count); "),
            false => String::new(),
        },
        format_duration(late),
        format_duration(grace)
    )
}

/// Why firings were missed: the reason given (`store unreachable`), then their lateness.
pub fn missed_text(
    reason: &Option<String>,
    count: u64,
    at_least: bool,
    late: std::time::Duration,
    grace: std::time::Duration,
) -> String {
    let lateness = missed_reason(count, at_least, late, grace);
    match reason {
        Some(why) => format!("{why}; {lateness}"),
        None => lateness,
    }
}

/// The flat JSON object of one event (SPEC §3). Field order is the log's.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Record {
    pub event: &'static str,
    pub ts: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The try number of a retried run (1 is the first try).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// How many due firings a coalesced run stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coalesced: Option<u64>,
    /// How late the run started after its scheduled time, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lateness_us: Option<i64>,
    /// How many firings a `run.missed` stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// A time firing that fell due while no runner was alive (SPEC §4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// `reload.applied`: the jobs added, removed and changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<Vec<String>>,
    /// `run.restart`: the delay before the run comes back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// `runner.start`: the state directory, or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// `runner.start`: runs found interrupted (a previous runner died while they were alive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
}

pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl Record {
    fn new(event: &'static str, ts: DateTime<Utc>) -> Record {
        Record {
            event,
            ts: timestamp(ts),
            ..Record::default()
        }
    }
    fn job(mut self, job: &str, run: Option<u64>) -> Record {
        self.job = Some(job.to_string());
        self.run = run;
        self
    }

    /// A validation problem, before anything starts.
    pub fn diagnostic(reason: String) -> Record {
        Record {
            reason: Some(reason),
            ..Record::new("diagnostic", Utc::now())
        }
    }

    /// One line of a run's output.
    pub fn output(job: &str, run: u64, stream: &'static str, line: &str) -> Record {
        Record {
            stream: Some(stream),
            line: Some(line.to_string()),
            ..Record::new("output", Utc::now()).job(job, Some(run))
        }
    }

    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("events serialize");
        line.push(b'\n');
        line
    }
}

impl Event {
    /// The event's JSON record, stamped `ts`.
    pub fn record(&self, ts: DateTime<Utc>) -> Record {
        match self {
            Event::RunnerStart {
                workflow,
                state,
                recovered,
            } => Record {
                reason: Some(format!("workflow {workflow}")),
                state: Some(state.clone().unwrap_or_else(|| "none".to_string())),
                recovered: Some(*recovered),
                ..Record::new("runner.start", ts)
            },
            Event::RunnerStopping { reason, .. } => Record {
                reason: Some(reason.clone()),
                ..Record::new("runner.stopping", ts)
            },
            Event::JobPaused { job, .. } => Record {
                reason: self.notice(false),
                ..Record::new("job.paused", ts).job(job, None)
            },
            Event::JobResumed { job } => Record {
                reason: self.notice(false),
                ..Record::new("job.resumed", ts).job(job, None)
            },
            Event::RunnerStop { code, summary } => Record {
                code: Some(*code),
                summary: Some(summary.clone()),
                ..Record::new("runner.stop", ts)
            },
            Event::RunStart {
                job,
                run,
                pid,
                scheduled,
                lateness_us,
                attempt,
                coalesced,
                catch_up,
                messages,
                ..
            } => Record {
                pid: Some(*pid),
                scheduled: Some(timestamp(*scheduled)),
                lateness_us: *lateness_us,
                attempt: (*attempt > 1).then_some(*attempt),
                coalesced: (*coalesced > 1).then_some(*coalesced),
                catch_up: catch_up.then_some(true),
                messages: *messages,
                ..Record::new("run.start", ts).job(job, Some(*run))
            },
            Event::RunExit(x) => Record {
                pid: x.pid,
                code: x.code,
                signal: x.signal.clone(),
                reason: x.reason.clone(),
                duration_ms: Some(x.duration_ms),
                ..Record::new("run.exit", ts).job(&x.job, Some(x.run))
            },
            Event::RunSkipped {
                job,
                scheduled,
                why,
                ..
            } => Record {
                scheduled: scheduled.map(timestamp),
                reason: Some(why.text()),
                ..Record::new("run.skipped", ts).job(job, None)
            },
            Event::RunMissed {
                job,
                scheduled,
                count,
                at_least,
                late,
                grace,
                reason,
                ..
            } => Record {
                scheduled: Some(timestamp(*scheduled)),
                messages: (*count > 1).then_some(*count),
                count: Some(*count),
                reason: Some(missed_text(reason, *count, *at_least, *late, *grace)),
                ..Record::new("run.missed", ts).job(job, None)
            },
            Event::MessageDead {
                job,
                run,
                channel,
                messages,
            } => Record {
                channel: Some(channel.clone()),
                messages: Some(*messages),
                ..Record::new("message.dead", ts).job(job, Some(*run))
            },
            Event::RunRestart {
                job,
                run,
                delay,
                count,
                ..
            } => Record {
                count: Some(*count),
                delay_ms: Some(delay.as_millis() as u64),
                reason: self.notice(false),
                ..Record::new("run.restart", ts).job(job, Some(*run))
            },
            Event::RestartsExhausted { job, run, .. } => Record {
                reason: self.notice(false),
                ..Record::new("notice", ts).job(job, Some(*run))
            },
            Event::RunRetry {
                job,
                run,
                next_attempt,
                backoff,
            } => Record {
                attempt: Some(*next_attempt),
                reason: Some(format!("retry in {}", format_duration(*backoff))),
                ..Record::new("run.retry", ts).job(job, Some(*run))
            },
            Event::RunTimeout { job, run, pid } => Record {
                pid: Some(*pid),
                ..Record::new("run.timeout", ts).job(job, Some(*run))
            },
            Event::RunReady {
                job,
                run,
                pid,
                after,
                probe,
            } => Record {
                pid: Some(*pid),
                duration_ms: Some(after.as_millis() as u64),
                reason: Some(probe.clone()),
                ..Record::new("run.ready", ts).job(job, Some(*run))
            },
            // A run stopped by its probe: not ready in time, or no longer alive.
            Event::RunNotReady {
                job,
                run,
                pid,
                reason,
            }
            | Event::RunUnhealthy {
                job,
                run,
                pid,
                reason,
            } => Record {
                pid: Some(*pid),
                reason: Some(reason.clone()),
                ..Record::new(
                    match self {
                        Event::RunUnhealthy { .. } => "run.unhealthy",
                        _ => "run.unready",
                    },
                    ts,
                )
                .job(job, Some(*run))
            },
            Event::ChannelClosed { channel, messages } => Record {
                channel: Some(channel.clone()),
                messages: Some(*messages),
                ..Record::new("channel.closed", ts)
            },
            Event::ChannelTakeback {
                job,
                run,
                channel,
                messages,
            } => Record {
                channel: channel.clone(),
                messages: Some(*messages),
                ..Record::new("channel.takeback", ts).job(job, Some(*run))
            },
            Event::Notice { text } => Record {
                reason: Some(text.clone()),
                ..Record::new("notice", ts)
            },
            Event::ReloadApplied {
                added,
                removed,
                changed,
            } => Record {
                reason: Some(reload_summary(added, removed, changed)),
                added: Some(added.clone()),
                removed: Some(removed.clone()),
                changed: Some(changed.clone()),
                ..Record::new("reload.applied", ts)
            },
            Event::ReloadRejected { errors, report, .. } => Record {
                reason: Some(format!(
                    "{errors} error(s); the current plan goes on:\n{}",
                    report.trim_end()
                )),
                ..Record::new("reload.rejected", ts)
            },
        }
    }

    /// The notice for people (`flowrun: ...` on stderr), or `None` for events that are not printed. `live`: a
    /// status area is shown, so routine starts and exits are left to it.
    pub fn notice(&self, live: bool) -> Option<String> {
        match self {
            Event::RunnerStart { .. } | Event::RunnerStop { .. } => None,
            Event::ChannelClosed { .. } | Event::ChannelTakeback { .. } => None,
            Event::RunnerStopping { reason, live_runs } => {
                Some(format!("stopping ({reason}): stopping {live_runs} run(s)"))
            }
            Event::RunStart {
                job,
                run,
                pid,
                messages,
                catch_up,
                ..
            } => (messages.is_none() && !live).then(|| {
                let why = if *catch_up { ", catching up" } else { "" };
                format!("{job}#{run} started (pid {pid}{why})")
            }),
            Event::RunExit(x) => {
                if (x.success && (x.each || live)) || x.restarts {
                    return None;
                }
                let status = match (x.stopped_by_runner, x.pid) {
                    // Between its tries: its retry was called off.
                    (true, None) => format!("stopped before its try {}", x.attempt),
                    (true, Some(_)) => format!("stopped ({})", x.status_text()),
                    (false, _) => x.status_text(),
                };
                // `killed by SIGKILL: killed: memory limit` says "killed" once: `killed by SIGKILL (memory limit)`.
                let reason = x.reason.as_ref().map(|r| match r.strip_prefix("killed: ") {
                    Some(limit) if x.signal.is_some() => format!(" ({limit})"),
                    _ => format!(": {r}"),
                });
                Some(format!(
                    "{}#{} {status}{}",
                    x.job,
                    x.run,
                    reason.unwrap_or_default()
                ))
            }
            Event::RunSkipped { job, why, .. } => Some(match why {
                SkipReason::MaxInstances(n) => {
                    format!("{job} skipped: max_instances ({n}) reached")
                }
                SkipReason::JoinDead(text) => format!("{job} skipped for good: {text}"),
                SkipReason::Paused => format!("{job} skipped: paused"),
            }),
            Event::JobPaused { job, until } => Some(match until {
                Some(t) => format!("{job} is paused until {}", timestamp(*t)),
                None => format!("{job} is paused (until `flowrun resume`)"),
            }),
            Event::JobResumed { job } => Some(format!("{job} is resumed")),
            // After downtime, one line per trigger: what it missed and when it fires next.
            Event::RunMissed {
                job,
                count,
                at_least,
                grace,
                downtime: Some(down),
                next,
                ..
            } => Some(format!(
                "{job}: {}{count} firing{} missed while no runner was up ({}; misfire_grace {}){}",
                if *at_least { "at least " } else { "" },
                if *count == 1 { "" } else { "s" },
                format_duration(*down),
                format_duration(*grace),
                next.map(|n| format!("; next {}", timestamp(n)))
                    .unwrap_or_default()
            )),
            Event::RunMissed {
                job,
                scheduled,
                reason,
                ..
            } => Some(format!(
                "{job} missed its firing at {}{}",
                timestamp(*scheduled),
                reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
            )),
            Event::MessageDead {
                job,
                run,
                channel,
                messages,
            } => Some(format!(
                "{job}#{run} failed its last attempt: {messages} message(s) to the dead letter `{channel}`"
            )),
            Event::RunRestart {
                job,
                run,
                exit,
                delay,
                count,
                limit,
            } => Some(format!(
                "{job}#{run} {exit}; restarting in {} ({})",
                format_duration(*delay),
                match limit {
                    Some(l) => format!(
                        "{count} of {}{}",
                        l.max,
                        l.window
                            .map(|w| format!(" within {}", format_duration(w)))
                            .unwrap_or_default()
                    ),
                    None => format!("restart {count}"),
                }
            )),
            Event::RestartsExhausted {
                job,
                run,
                max,
                window,
            } => Some(format!(
                "{job}#{run} ended and {job} reached its restart limit ({max}{}): it has failed for good",
                window
                    .map(|w| format!(" within {}", format_duration(w)))
                    .unwrap_or_default()
            )),
            Event::RunRetry {
                job, run, backoff, ..
            } => Some(format!(
                "{job}#{run} will be retried in {}",
                format_duration(*backoff)
            )),
            Event::RunTimeout { job, run, .. } => Some(format!("{job}#{run} timed out")),
            Event::RunReady {
                job, run, after, ..
            } => Some(format!(
                "{job}#{run} is ready after {:.2}s",
                after.as_secs_f64()
            )),
            Event::RunNotReady {
                job, run, reason, ..
            } => Some(format!("{job}#{run} {reason}; stopping it")),
            Event::RunUnhealthy {
                job, run, reason, ..
            } => Some(format!("{job}#{run} is unhealthy: {reason}; stopping it")),
            Event::Notice { text } => Some(text.clone()),
            Event::ReloadApplied {
                added,
                removed,
                changed,
            } => Some(format!(
                "reloaded: {}",
                reload_summary(added, removed, changed)
            )),
            Event::ReloadRejected {
                errors, summary, ..
            } => Some(format!(
                "reload rejected ({errors} error(s), the first: {summary}); the current plan goes on"
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct JobCounts {
    /// Runs (a run's retries are tries of it, not runs).
    pub runs: u64,
    /// Tries: a run's first and every retry.
    pub tries: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Runs the runner stopped at shutdown: neither succeeded nor failed.
    pub stopped: u64,
    pub skipped: u64,
    pub missed: u64,
}

#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct ChannelCounts {
    #[serde(rename = "in")]
    pub taken_in: u64,
    pub out: u64,
    pub left: u64,
    /// A durable queue: what is left is kept in its store for the next start.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub kept: bool,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    /// In the order of the file (a JSON object whose keys come in that order).
    #[serde(serialize_with = "in_order")]
    pub jobs: Vec<(String, JobCounts)>,
    #[serde(serialize_with = "in_order")]
    pub channels: Vec<(String, ChannelCounts)>,
    /// Messages of `each` runs that failed their last attempt with no `dead_letter` to go to (always there, 0
    /// too: scripts read it).
    pub failed_messages: u64,
}

/// Pairs as a JSON object, keys in the pairs' order.
fn in_order<S: serde::Serializer, T: Serialize>(
    pairs: &[(String, T)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(pairs.iter().map(|(k, v)| (k, v)))
}

impl Summary {
    /// The summary as a small table for people; headers bold and failures red with `color`.
    pub fn table(&self, color: bool) -> String {
        let paint = |text: String, code: &str| {
            if color {
                format!("\x1b[{code}m{text}\x1b[0m")
            } else {
                text
            }
        };
        let mut out = String::new();
        let width = self
            .jobs
            .iter()
            .map(|(k, _)| k)
            .chain(self.channels.iter().map(|(k, _)| k))
            .map(|k| k.len())
            .max()
            .unwrap_or(3)
            .max(7);
        let header = format!(
            "{:<width$}  {:>8} {:>9} {:>7} {:>7} {:>7} {:>7}",
            "job", "runs", "succeeded", "failed", "stopped", "skipped", "missed"
        );
        out.push_str(&paint(header, "1"));
        out.push('\n');
        for (name, c) in &self.jobs {
            let line = format!(
                "{:<width$}  {:>8} {:>9} {:>7} {:>7} {:>7} {:>7}",
                name, c.runs, c.succeeded, c.failed, c.stopped, c.skipped, c.missed
            );
            out.push_str(&if c.failed > 0 {
                paint(line, "31")
            } else {
                line
            });
            out.push('\n');
        }
        if !self.channels.is_empty() {
            out.push_str(&format!(
                "{:<width$}  {:>8} {:>9} {:>7}\n",
                "channel", "in", "out", "left"
            ));
            for (name, c) in &self.channels {
                let kept = match c.kept && c.left > 0 {
                    true => " (kept for the next start)",
                    false => "",
                };
                out.push_str(&format!(
                    "{:<width$}  {:>8} {:>9} {:>7}{kept}\n",
                    name, c.taken_in, c.out, c.left
                ));
            }
        }
        if self.failed_messages > 0 {
            out.push_str(&format!(
                "{} message(s) failed their last attempt and had no dead_letter\n",
                self.failed_messages
            ));
        }
        out
    }
}

/// `added a, b; removed c; changed -`.
fn reload_summary(added: &[String], removed: &[String], changed: &[String]) -> String {
    let list = |v: &[String]| match v.is_empty() {
        true => "-".to_string(),
        false => v.join(", "),
    };
    format!(
        "added {}; removed {}; changed {}",
        list(added),
        list(removed),
        list(changed)
    )
}
