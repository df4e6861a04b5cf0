//! What a runner remembers (SPEC §4): the last handled instant of each time trigger, the run counters and one
//! history row per run, skip and miss. One interface, [`Store`], with the embedded SQLite backend today; each
//! method is written so that a networked store can do it atomically (see the method docs). A runner of a cluster
//! (SPEC §9) keeps this store for itself and writes its history rows to Redis too (`cluster::store`); its claims,
//! numbers and joins are the cluster's (`cluster::claims`).
//!
//! The engine never waits for the store: it sends [`Op`]s to one writer thread ([`writer::History`]) that commits
//! them in groups, so a slow disk cannot make a timer late.

pub mod dir;
pub mod sink;
mod sqlite;
pub mod writer;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;

pub use sqlite::{Page, PageFilter, SqliteStore};

/// The schema version this flowrun writes; a database of a newer one is refused, never rewritten.
pub const SCHEMA_VERSION: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("already running (pid {pid}) on the state directory {dir}")]
    Held { pid: u32, dir: String },
    #[error("{path} was written by a newer flowrun (schema version {found}; this flowrun knows up to {SCHEMA_VERSION}); it is left untouched: use a newer flowrun, or another --state directory")]
    Newer { path: String, found: u32 },
    #[error("the state database {path}: {source}")]
    Database {
        path: String,
        source: rusqlite::Error,
    },
    #[error("the state directory {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The cluster's store (Redis) did not answer, or refused.
    #[error("the cluster's store {url}: {why}")]
    Cluster { url: String, why: String },
}

/// One row of history: a run (with its number), or a skipped or missed firing (without).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRow {
    pub job: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<u64>,
    pub attempt: u32,
    /// What fired it, in words (`cron `0 3 * * *` (UTC)`, `start`, `after a`, `each tasks`, `restart`).
    pub trigger: String,
    pub scheduled: Option<DateTime<Utc>>,
    pub started: Option<DateTime<Utc>>,
    pub ended: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    pub code: Option<i32>,
    pub signal: Option<String>,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub lateness_ms: Option<f64>,
    /// The messages of an `each` run.
    pub messages: Option<u64>,
    /// How many firings a missed row (or a coalesced run) stands for.
    pub count: u64,
    pub catch_up: bool,
    pub pid: Option<u32>,
    /// The run's log file, when it printed anything.
    pub log: Option<String>,
    /// The runner of a cluster that ran it (SPEC §9); `None` in a runner's own store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
}

impl RunRow {
    /// A row of `job` with `outcome` and nothing else known yet: one try, one firing, no times, no exit.
    pub fn new(job: String, outcome: Outcome) -> RunRow {
        RunRow {
            job,
            run: None,
            attempt: 1,
            trigger: String::new(),
            scheduled: None,
            started: None,
            ended: None,
            duration_ms: None,
            code: None,
            signal: None,
            outcome,
            reason: None,
            lateness_ms: None,
            messages: None,
            count: 1,
            catch_up: false,
            pid: None,
            log: None,
            runner: None,
        }
    }
}

/// How a history row ended (`running` until it does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Running,
    Succeeded,
    Failed,
    Timeout,
    Stopped,
    SpawnFailed,
    Interrupted,
    Skipped,
    Missed,
    /// Stopped by its liveness probe.
    Unhealthy,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
            Outcome::Stopped => "stopped",
            Outcome::SpawnFailed => "spawn-failed",
            Outcome::Interrupted => "interrupted",
            Outcome::Skipped => "skipped",
            Outcome::Missed => "missed",
            Outcome::Unhealthy => "unhealthy",
        }
    }

    pub fn parse(text: &str) -> Option<Outcome> {
        Some(match text {
            "running" => Outcome::Running,
            "succeeded" => Outcome::Succeeded,
            "failed" => Outcome::Failed,
            "timeout" => Outcome::Timeout,
            "stopped" => Outcome::Stopped,
            "spawn-failed" => Outcome::SpawnFailed,
            "interrupted" => Outcome::Interrupted,
            "skipped" => Outcome::Skipped,
            "missed" => Outcome::Missed,
            "unhealthy" => Outcome::Unhealthy,
            _ => return None,
        })
    }

    /// A failure for `history --failed` and the status counts.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::Failed
                | Outcome::Timeout
                | Outcome::SpawnFailed
                | Outcome::Interrupted
                | Outcome::Unhealthy
        )
    }
}

/// One write, as the engine hands it to the writer (and as a clean stop that could not write it keeps it in
/// `unwritten.jsonl` for the next start).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Op {
    /// A time trigger's firing at `at` was handled (fired, skipped or missed).
    Handled {
        job: String,
        fingerprint: String,
        at: DateTime<Utc>,
    },
    /// The handled firing at `at` was not run after all (an `at` held while the store failed, then given up):
    /// the trigger forgets it when it is still the one remembered, so the next start fires it.
    Unhandle {
        job: String,
        fingerprint: String,
        at: DateTime<Utc>,
    },
    /// Rows left `running` by a runner that died, started before `before` (this runner's start), are
    /// `interrupted` (the start could not write it: the store was full).
    Recover {
        before: DateTime<Utc>,
    },
    /// A new row (a run that started, a skip, a miss).
    Append(Box<RunRow>),
    /// A run's row, now ended (inserted when its start was never written: a run that could not start).
    Update(Box<RunRow>),
    /// Run numbers up to `upto` may be given to this job's runs (a runner reserves blocks ahead, so numbers are
    /// never reused after a crash; a crash leaves a gap instead). Only moves up.
    Reserve {
        job: String,
        upto: u64,
    },
    /// At a clean stop: the last number really given (the unused rest of the reserved block is given back).
    Settle {
        job: String,
        last: u64,
    },
    /// The job is paused (until then, or until resumed): remembered across restarts.
    Pause {
        job: String,
        until: Option<DateTime<Utc>>,
    },
    Resume {
        job: String,
    },
    /// A retry of a run began: its row is `running` again, at this try (`attempt`), with its new pid.
    Retry(Box<RunRow>),
    /// One try of a run ended (its row in `tries`; the run's own row is updated by its last try).
    Try(Box<RunRow>),
}

/// What `history` asks for.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub jobs: Vec<String>,
    pub limit: usize,
    pub since: Option<DateTime<Utc>>,
    pub failed: bool,
    pub run: Option<u64>,
}

/// What a starting runner reads back.
#[derive(Debug, Default)]
pub struct Memory {
    /// The last handled instant per (job, trigger fingerprint).
    pub handled: HashMap<(String, String), DateTime<Utc>>,
    /// The last run number given (or reserved) per job.
    pub last_runs: HashMap<String, u64>,
    /// When each job last succeeded (for `flowrun_last_success_timestamp_seconds` across restarts).
    pub last_success: HashMap<String, DateTime<Utc>>,
    /// Jobs with a remembered instant that is not a time or lies ahead of the clock: their triggers start afresh.
    pub forgotten: Vec<String>,
    /// Paused jobs, and until when (`None`: until resumed).
    pub paused: HashMap<String, Option<DateTime<Utc>>>,
}

/// The store of one workflow's state. Each method names how a Redis backend would do it atomically.
pub trait Store: Send {
    /// Become the one runner of this state; refused with [`StoreError::Held`] naming the holder.
    /// SQLite: `flock` on `runner.lock` (released by the kernel when the runner dies). Redis: `SET owner NX PX`
    /// with a heartbeat that renews it (one runner per host id).
    fn lock(&mut self) -> Result<(), StoreError>;
    /// The pid of the runner holding the state, if one does. Redis: `GET owner` (and its heartbeat).
    fn holder(&self) -> Option<u32>;
    /// What a starting runner needs. Redis: `HGETALL` of the handled hash and of the run counters.
    fn memory(&self) -> Result<Memory, StoreError>;
    /// Rows left `running` by a runner that died are `interrupted`; returns how many. Called under the lock.
    /// Redis: the runs of holders whose heartbeat expired, each updated by a Lua script.
    fn recover(&mut self, now: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Apply a group of writes in order, all or none (one transaction: the group commit of the writer).
    /// [`Op::Handled`] moves a trigger's handled instant forward only (a late write never moves it back); under
    /// the one-runner lock, handling a firing is claiming it. Redis: `MULTI`/`EXEC` of a Lua max on the handled
    /// hash, `XADD` to the workflow's capped history stream and `HSET` of each run's hash. Several runners of
    /// one workflow (SPEC §9) claim a firing before running it, asynchronously, outside this interface (see
    /// `cluster::claims`).
    fn apply(&mut self, ops: &[Op]) -> Result<(), StoreError>;
    /// Give back the space the store's journal took (after a full disk, at a clean stop). SQLite: a TRUNCATE
    /// checkpoint of the WAL, which otherwise keeps its largest size. Redis: nothing.
    fn compact(&mut self) {}
    /// History rows, newest first. Redis: `XREVRANGE` of the stream, then `HGETALL` of each run.
    fn history(&self, query: &Query) -> Result<Vec<RunRow>, StoreError>;
    /// The tries of run `run` of `job` that ended, first first (a run's first try and its retries).
    /// Redis: `LRANGE` of the run's tries list.
    fn tries(&self, job: &str, run: u64) -> Result<Vec<RunRow>, StoreError>;
    /// Delete rows that ended before `before`; returns the log files they named, to delete with them.
    /// Redis: `XTRIM MINID` (the stream is capped) and `DEL` of the run hashes.
    fn prune(&mut self, before: DateTime<Utc>) -> Result<Vec<PathBuf>, StoreError>;
}
