//! The validated model the runner executes: no spans, no options left unresolved, names turned into indices.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::document::{ChannelKind, Restart, Status};
use crate::schedule::trigger::TimeRule;

pub type JobId = usize;
pub type ChannelId = usize;
pub type ExecutorId = usize;

pub const DEFAULT_WORKERS: usize = 10;
pub const DEFAULT_CAPACITY: usize = 1024;
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 20;
pub const DEFAULT_MISFIRE_GRACE: Duration = Duration::from_secs(1);
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    /// The workflow file as given on the command line (`FLOWRUN_WORKFLOW`).
    pub path: PathBuf,
    pub executors: Vec<Executor>,
    pub channels: Vec<Channel>,
    pub jobs: Vec<Job>,
}

#[derive(Debug, Clone)]
pub struct Executor {
    pub name: String,
    pub max_workers: usize,
}

#[derive(Debug, Clone)]
pub struct Channel {
    pub name: String,
    pub kind: ChannelKind,
    pub capacity: usize,
    pub max_message: usize,
    /// Jobs whose `stdout` feeds this channel, or that send dead letters to it.
    pub writers: Vec<JobId>,
    /// Jobs that read it by `stdin` or `each`.
    pub readers: Vec<JobId>,
    /// Removed by a reload: kept in place, wired to nothing new.
    pub retired: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Shell(String),
    Argv(Vec<String>),
}

impl Command {
    pub fn display(&self) -> String {
        match self {
            Command::Shell(s) => s.clone(),
            Command::Argv(a) => a.join(" "),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartLimit {
    pub max: u32,
    /// `None`: the runner's whole life.
    pub window: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Retry {
    pub attempts: u32,
    pub backoff: Duration,
    /// Retry only these exit codes (SPEC §6); every failure when `None`.
    pub on: Option<Vec<i32>>,
}

impl Retry {
    /// Whether try number `attempt`, failed with `code` (`None`: a signal, a timeout, no start), is tried again.
    pub fn again(&self, attempt: u32, code: Option<i32>) -> bool {
        attempt <= self.attempts
            && self
                .on
                .as_ref()
                .is_none_or(|on| code.is_some_and(|c| on.contains(&c)))
    }
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub command: Command,
    pub cwd: PathBuf,
    /// Dotenv files, read at each run's start (`env` wins over them).
    pub env_files: Vec<PathBuf>,
    pub env: Vec<(String, String)>,
    pub triggers: Vec<Trigger>,
    pub executor: ExecutorId,
    pub stdin: Option<ChannelId>,
    pub stdout: Option<ChannelId>,
    pub max_instances: usize,
    pub coalesce: bool,
    pub misfire_grace: Duration,
    pub timeout: Option<Duration>,
    /// Boxed, like `ready`: most jobs have neither, and a plan holds one `Job` per job (10,000 of them must fit in
    /// a few MiB).
    pub retry: Option<Box<Retry>>,
    pub restart: Restart,
    /// At most this many restarts (within the window), then the job has failed for good.
    pub restart_limit: Option<RestartLimit>,
    pub stop_grace: Duration,
    pub dead_letter: Option<ChannelId>,
    /// A readiness probe (SPEC §6).
    pub ready: Option<Box<Probe>>,
    /// A liveness probe (SPEC §7).
    pub alive: Option<Box<Liveness>>,
    /// Resource limits applied in each run's child before it starts.
    pub limits: Limits,
    /// The user each run starts as.
    pub user: Option<String>,
    /// `enabled: false`: never fired by its triggers (a manual firing or `--only` still runs it).
    pub enabled: bool,
    /// Fired once for every run of this job that failed for good (`on_failure`).
    pub on_failure: Option<JobId>,
    /// Removed by a reload: kept in place (indices stay stable for live runs), never fired again.
    pub retired: bool,
}

impl Job {
    /// Removed (by a reload) or left out (by `--only`): it fires no more, nor comes back.
    pub fn retire(&mut self) {
        self.retired = true;
        self.triggers.clear();
        self.restart = Restart::Never;
    }

    pub fn each(&self) -> Option<(ChannelId, usize)> {
        self.triggers.iter().find_map(|t| match t {
            Trigger::Each { channel, batch } => Some((*channel, *batch)),
            _ => None,
        })
    }

    pub fn has_time_trigger(&self) -> bool {
        self.triggers
            .iter()
            .any(|t| matches!(t, Trigger::Time { .. }))
    }
}

/// A readiness probe: what is checked, how often, and for how long.
#[derive(Debug, Clone)]
pub struct Probe {
    pub check: Check,
    pub interval: Duration,
    pub timeout: Duration,
}

/// A run's resource limits (none: inherited).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory: a cgroup's limit, or the address space (RLIMIT_AS) where no cgroup can be made.
    pub memory: Option<u64>,
    /// Thousandths of a CPU's time (500: half of one), through a cgroup.
    pub cpu_millis: Option<u32>,
    pub nofile: Option<u64>,
    pub nproc: Option<u64>,
    pub nice: Option<i32>,
}

/// A liveness probe: checked every `interval` once the run is ready (or started, without `ready`); `failures`
/// failed checks in a row stop the run as unhealthy.
#[derive(Debug, Clone)]
pub struct Liveness {
    pub check: LiveCheck,
    pub interval: Duration,
    pub failures: u32,
}

#[derive(Debug, Clone)]
pub enum LiveCheck {
    /// An `http`, `tcp` or `exec` check, as a readiness probe's.
    Probe(Check),
    /// The run printed nothing for this long.
    Silence(Duration),
}

pub const DEFAULT_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_ALIVE_FAILURES: u32 = 3;

#[derive(Debug, Clone)]
pub enum Check {
    /// A line of the run's printed output matches.
    Log(regex::bytes::Regex),
    /// A GET of this `http://` URL answers 2xx. As written: its `$NAME`s take the job's variables at each run's
    /// start ([`Check::expanded`]).
    Http(String),
    /// A TCP connection to `HOST:PORT` succeeds (its `$NAME`s as for `Http`).
    Tcp(String),
    /// The command exits 0.
    Exec(Command),
}

impl Check {
    /// The probe in words, for events and messages: `http http://127.0.0.1:8080/`.
    pub fn describe(&self) -> String {
        match self {
            Check::Log(r) => format!("log /{}/", r.as_str()),
            Check::Http(u) => format!("http {u}"),
            Check::Tcp(a) => format!("tcp {a}"),
            Check::Exec(c) => format!("exec {}", c.display()),
        }
    }

    /// The check with the job's variables put in its address (`value_of` knows them), checked again: a value from
    /// an `env_file` was never seen by validation. Else why it cannot be probed.
    pub fn expanded<'v>(
        &self,
        value_of: impl Fn(&str) -> Option<&'v str>,
    ) -> Result<Check, String> {
        let put_in = |text: &str| {
            crate::address::expand(text, value_of).map_err(|unset| match unset {
                crate::address::Unset::Name(name) => format!(
                    "`{text}` names `${name}`, which neither the job's `env` nor its `env_file` sets"
                ),
                crate::address::Unset::Bad(bad) => format!("`{text}`: {}", bad.problem),
            })
        };
        Ok(match self {
            Check::Http(url) => {
                let url = put_in(url)?;
                crate::address::http_url(&url)?;
                Check::Http(url)
            }
            Check::Tcp(address) => {
                let address = put_in(address)?;
                crate::address::tcp_address(&address)?;
                Check::Tcp(address)
            }
            other => other.clone(),
        })
    }
}

#[derive(Debug, Clone)]
pub enum Trigger {
    Start,
    Time {
        rule: TimeSpec,
        jitter: Duration,
    },
    /// A join: every listed job reached the status since the last firing (`any`: one of them did).
    After {
        jobs: Vec<JobId>,
        status: Status,
        any: bool,
    },
    Each {
        channel: ChannelId,
        batch: usize,
    },
}

/// A time rule before the runner's start is known (an interval without `start` is anchored at it).
#[derive(Debug, Clone)]
pub enum TimeSpec {
    Cron {
        cron: crate::schedule::cron::CronSet,
        zone: Tz,
        text: String,
    },
    Interval {
        every: Duration,
        start: Option<DateTime<Utc>>,
        end: Option<DateTime<Utc>>,
        /// The zone its `start` and `end` were read in (its `timezone`, else the system's): where `next` and the
        /// dry run show its times. Not part of the fingerprint: the instants are.
        zone: Tz,
    },
    At {
        at: DateTime<Utc>,
        /// As an interval's `zone`.
        zone: Tz,
    },
}

impl TimeSpec {
    pub fn rule(&self, runner_start: DateTime<Utc>) -> TimeRule {
        match self {
            TimeSpec::Cron { cron, zone, .. } => TimeRule::Cron {
                cron: *cron,
                zone: *zone,
            },
            TimeSpec::Interval {
                every, start, end, ..
            } => TimeRule::Interval {
                anchor: start.unwrap_or(runner_start),
                every: *every,
                first_k: if start.is_some() { 0 } else { 1 },
                end: *end,
            },
            TimeSpec::At { at, .. } => TimeRule::At { at: *at },
        }
    }

    /// The zone its times are shown in: a cron's (its `timezone`, else the system's), or the one an interval or
    /// an `at` was read in.
    pub fn zone(&self) -> Tz {
        match self {
            TimeSpec::Cron { zone, .. }
            | TimeSpec::Interval { zone, .. }
            | TimeSpec::At { zone, .. } => *zone,
        }
    }

    /// What identifies this rule in the state store: any edit of the rule (text, zone, period, dates) gives
    /// another fingerprint, so an edited trigger starts fresh instead of catching up on the old one's firings.
    pub fn fingerprint(&self) -> String {
        let canonical = match self {
            TimeSpec::Cron { text, zone, .. } => format!("cron|{}|{zone}", text.trim()),
            TimeSpec::Interval {
                every, start, end, ..
            } => format!(
                "interval|{}|{}|{}",
                every.as_nanos(),
                start.map(|t| t.timestamp_micros()).unwrap_or(-1),
                end.map(|t| t.timestamp_micros()).unwrap_or(-1)
            ),
            TimeSpec::At { at, .. } => format!("at|{}", at.timestamp_micros()),
        };
        // FNV-1a, 64 bits: stable across versions and machines (std's hasher is not).
        let hash = canonical.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        format!("{hash:016x}")
    }

    /// The rule resumed after `last`, the last firing a previous runner handled: an interval without `start`
    /// keeps the old runner's grid instead of anchoring at this start.
    pub fn resumed(&self, last: DateTime<Utc>, runner_start: DateTime<Utc>) -> TimeRule {
        match self {
            TimeSpec::Interval {
                every,
                start: None,
                end,
                ..
            } => TimeRule::Interval {
                anchor: last,
                every: *every,
                first_k: 1,
                end: *end,
            },
            _ => self.rule(runner_start),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            TimeSpec::Cron { text, zone, .. } => format!("cron `{text}` ({zone})"),
            TimeSpec::Interval { every, .. } => {
                format!("every {}", crate::values::format_duration(*every))
            }
            TimeSpec::At { at, .. } => format!("at {}", at.to_rfc3339()),
        }
    }
}

impl Plan {
    pub fn job_id(&self, name: &str) -> Option<JobId> {
        self.jobs.iter().position(|j| j.name == name)
    }

    /// The next `count` fire times of a job's time triggers, merged, from `from` (an interval without `start` is
    /// anchored at `from`, as if the runner started then), each with the zone of the trigger that fires it (of
    /// the first, when two fire at one instant, which fires once). Used by `next` and `--dry-run`.
    pub fn next_fires(
        &self,
        job: JobId,
        from: DateTime<Utc>,
        count: usize,
    ) -> Vec<(DateTime<Utc>, Tz)> {
        let mut fires: Vec<(DateTime<Utc>, Tz)> = Vec::new();
        for t in &self.jobs[job].triggers {
            if let Trigger::Time { rule, .. } = t {
                let zone = rule.zone();
                let upcoming = crate::schedule::trigger::upcoming(&[rule.rule(from)], from, count);
                fires.extend(upcoming.into_iter().map(|at| (at, zone)));
            }
        }
        // Stable: of two triggers firing at one instant, the first in the file stays.
        fires.sort_by_key(|(at, _)| *at);
        fires.dedup_by_key(|(at, _)| *at);
        fires.truncate(count);
        fires
    }

    /// One trigger of a job in words, as `graph`, the dry run and the live view show it: `start`, `every 5m`,
    /// `after a + b (on failure)`, `each tasks (batch 10)`.
    pub fn trigger_text(&self, trigger: &Trigger) -> String {
        match trigger {
            Trigger::Start => "start".to_string(),
            Trigger::Time { rule, .. } => rule.describe(),
            Trigger::After { jobs, status, any } => {
                let names: Vec<&str> = jobs.iter().map(|&j| self.jobs[j].name.as_str()).collect();
                let join = if *any { " | " } else { " + " };
                let suffix = match status {
                    Status::Success => "",
                    Status::Failure => " (on failure)",
                    Status::Any => " (any status)",
                    Status::Ready => " (ready)",
                };
                let first = if *any && names.len() > 1 {
                    "the first of "
                } else {
                    ""
                };
                format!("after {first}{}{suffix}", names.join(join))
            }
            Trigger::Each { channel, batch } => match batch {
                1 => format!("each {}", self.channels[*channel].name),
                n => format!("each {} (batch {n})", self.channels[*channel].name),
            },
        }
    }

    /// `--only JOB...`: the selected jobs fire once, now, ignoring their triggers; the others never fire. An
    /// `each` job keeps its `each` when a selected job writes its channel (channels between selected jobs work
    /// as usual); a reader whose channel has no selected writer reads EOF, and a writer whose channel has no
    /// selected reader prints its lines.
    pub fn only(&self, names: &[String]) -> Result<Plan, String> {
        let mut selected = vec![false; self.jobs.len()];
        for name in names {
            let j = self.job_id(name).ok_or_else(|| name.clone())?;
            selected[j] = true;
        }
        let writes = |c: ChannelId| {
            self.jobs.iter().enumerate().any(|(j, job)| {
                selected[j] && (job.stdout == Some(c) || job.dead_letter == Some(c))
            })
        };
        let reads = |c: ChannelId| {
            self.jobs.iter().enumerate().any(|(j, job)| {
                selected[j] && (job.stdin == Some(c) || job.each().map(|e| e.0) == Some(c))
            })
        };
        let mut plan = self.clone();
        for (j, job) in plan.jobs.iter_mut().enumerate() {
            if !selected[j] {
                job.retire();
                continue;
            }
            // Selected, it runs, whatever `enabled` says (that is how one tries a disabled job).
            job.enabled = true;
            // The order `after` gives between selected jobs is kept (an alert after the backup it reports on);
            // anything else fires once, now.
            let joins: Vec<Trigger> = job
                .triggers
                .iter()
                .filter_map(|t| match t {
                    Trigger::After { jobs, status, any } => {
                        let kept: Vec<JobId> =
                            jobs.iter().copied().filter(|&u| selected[u]).collect();
                        (!kept.is_empty()).then_some(Trigger::After {
                            jobs: kept,
                            status: *status,
                            any: *any,
                        })
                    }
                    _ => None,
                })
                .collect();
            job.triggers = match job.each() {
                Some((c, batch)) if writes(c) => vec![Trigger::Each { channel: c, batch }],
                _ if !joins.is_empty() => joins,
                _ => vec![Trigger::Start],
            };
            if job.stdin.is_some_and(|c| !writes(c)) {
                job.stdin = None;
            }
            if job.stdout.is_some_and(|c| !reads(c)) {
                job.stdout = None;
            }
            // Nobody selected reads its dead letter: failed messages count as failed (exit 1), not vanish.
            if job.dead_letter.is_some_and(|c| !reads(c)) {
                job.dead_letter = None;
            }
        }
        plan.wire_channels();
        Ok(plan)
    }

    /// For each job, the jobs whose `on_failure` it is (a handler can fire while any of them can still run).
    pub fn handled_by(&self) -> Vec<Vec<JobId>> {
        let mut by = vec![Vec::new(); self.jobs.len()];
        // A job with no trigger runs only as a handler (or by hand): its failures fire no handler (a handler's
        // failure fires none), so a handler does not wait for it (two handlers naming each other would wait for
        // each other for ever).
        for (u, job) in self
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, j)| !j.retired && !j.triggers.is_empty())
        {
            if let Some(h) = job.on_failure {
                by[h].push(u);
            }
        }
        by
    }

    /// Who writes and reads each channel, from the jobs that are not retired (in job order).
    pub fn wire_channels(&mut self) {
        for c in &mut self.channels {
            c.writers.clear();
            c.readers.clear();
        }
        for (j, job) in self.jobs.iter().enumerate().filter(|(_, j)| !j.retired) {
            for c in [job.stdout, job.dead_letter].into_iter().flatten() {
                if !self.channels[c].writers.contains(&j) {
                    self.channels[c].writers.push(j);
                }
            }
            for c in [job.stdin, job.each().map(|e| e.0)].into_iter().flatten() {
                if !self.channels[c].readers.contains(&j) {
                    self.channels[c].readers.push(j);
                }
            }
        }
    }

    /// Whether the workflow ends by itself: no job has a time trigger or restarts.
    /// Per job, the `after` triggers that name it: (downstream job, trigger index).
    pub fn joins_on(&self) -> Vec<Vec<(JobId, usize)>> {
        let mut on = vec![Vec::new(); self.jobs.len()];
        for (d, job) in self.jobs.iter().enumerate() {
            for (t, trig) in job.triggers.iter().enumerate() {
                if let Trigger::After { jobs, .. } = trig {
                    for &u in jobs {
                        if on[u].last() != Some(&(d, t)) {
                            on[u].push((d, t));
                        }
                    }
                }
            }
        }
        on
    }

    pub fn ends_by_itself(&self) -> bool {
        self.jobs
            .iter()
            .all(|j| !j.has_time_trigger() && j.restart == Restart::Never)
    }
}
