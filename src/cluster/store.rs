//! The cluster's history in Redis (SPEC §9): the [`Store`] the runner's second writer thread owns, so a store
//! that does not answer holds nothing but that thread; its rows wait in memory (bounded, then counted as lost in
//! a notice, as the writer does for a full disk) and are written when Redis answers again. Each run is one hash
//! (its row, its tries, its runner, the last 64 KiB of its output) named once in a capped stream; a skip's or a
//! miss's row is in the stream itself. The live runs of this runner are kept in its live hash too, so another
//! runner can mark them interrupted when this one's heartbeat is gone.
//!
//! What the engine decides from (claims, handled instants, numbers) is not written here: the claimer does it,
//! atomically. [`Op`]s of the local state only (reservations, pauses, handled marks) are left to the local store.

use chrono::{DateTime, TimeZone, Utc};
use redis::Commands;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use super::{scripts, Config, Keys};
use crate::store::{Memory, Op, Outcome, Query, RunRow, Store, StoreError};

/// How much of a run's output is kept with its row, for `logs` and alerts from any host.
pub const TAIL: u64 = 64 * 1024;
/// The history stream's length, about (`XADD MAXLEN ~`).
const STREAM_CAP: u64 = 100_000;

pub struct RedisStore {
    client: redis::Client,
    conn: Option<redis::Connection>,
    keys: Keys,
    runner: String,
    /// How long an ended run's hash is kept (`--keep`).
    keep: Duration,
    url: String,
}

impl RedisStore {
    pub fn new(config: &Config, client: redis::Client, keep: Duration) -> RedisStore {
        RedisStore {
            client,
            conn: None,
            keys: config.keys(),
            runner: config.runner_id.clone(),
            keep,
            url: config.shown_url(),
        }
    }

    /// A reader of the cluster's history (`flowrun history --store` from any host).
    pub fn reader(url: &str, cluster: &str) -> Result<RedisStore, String> {
        let client = super::check_url(url)?;
        Ok(RedisStore {
            client,
            conn: None,
            keys: Keys::new(cluster),
            runner: String::new(),
            keep: Duration::ZERO,
            url: super::shown_url(url),
        })
    }

    fn error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Cluster {
            url: self.url.clone(),
            why: e.to_string(),
        }
    }

    /// The connection, made again after a failure.
    fn conn(&mut self) -> Result<&mut redis::Connection, StoreError> {
        if self.conn.is_none() {
            let conn = connect(&self.client).map_err(|e| self.error(e))?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("made above"))
    }

    /// Run `f` on the connection; a failure drops it (made again at the next call).
    fn with<T>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection, &Keys) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let keys = self.keys.clone();
        let result = f(self.conn()?, &keys);
        result.map_err(|e| {
            self.conn = None;
            self.error(e)
        })
    }

    fn save_run(&mut self, row: &RunRow, number: u64) -> Result<(), StoreError> {
        let live = row.outcome == Outcome::Running;
        let row = &RunRow {
            runner: Some(self.runner.clone()),
            ..row.clone()
        };
        let json = serde_json::to_string(row).map_err(|e| self.error(e))?;
        let tail = match (live, &row.log) {
            (false, Some(log)) => tail_of(log),
            _ => Vec::new(),
        };
        let ttl = match live {
            true => 0,
            false => self.keep.as_millis().min(i64::MAX as u128) as i64,
        };
        let runner = self.runner.clone();
        self.with(|c, k| {
            scripts::SAVE_RUN
                .key(k.run(&row.job, number))
                .key(k.live(&runner))
                .key(k.history())
                .arg(json)
                .arg(format!("{}#{number}", row.job))
                .arg(if live { "1" } else { "0" })
                .arg(&runner)
                .arg(STREAM_CAP)
                .arg(ttl)
                .arg(tail)
                .invoke::<i64>(c)
                .map(drop)
        })
    }

    fn apply_one(&mut self, op: &Op) -> Result<(), StoreError> {
        match op {
            Op::Append(row) | Op::Update(row) | Op::Retry(row) => match row.run {
                Some(n) => self.save_run(row, n),
                None => {
                    let row = RunRow {
                        runner: Some(self.runner.clone()),
                        ..(**row).clone()
                    };
                    let json = serde_json::to_string(&row).map_err(|e| self.error(e))?;
                    let runner = self.runner.clone();
                    self.with(|c, k| {
                        redis::cmd("XADD")
                            .arg(k.history())
                            .arg("MAXLEN")
                            .arg("~")
                            .arg(STREAM_CAP)
                            .arg("*")
                            .arg("row")
                            .arg(json)
                            .arg("runner")
                            .arg(runner)
                            .query::<String>(c)
                            .map(drop)
                    })
                }
            },
            Op::Try(row) => {
                let Some(n) = row.run else { return Ok(()) };
                let json = serde_json::to_string(row).map_err(|e| self.error(e))?;
                self.with(|c, k| {
                    c.hset::<_, _, _, i64>(
                        k.run(&row.job, n),
                        format!("try:{:05}", row.attempt),
                        json,
                    )
                    .map(drop)
                })
            }
            // The local state's own: numbers come from the cluster's counters, firings are claimed.
            Op::Handled { .. }
            | Op::Unhandle { .. }
            | Op::Recover { .. }
            | Op::Reserve { .. }
            | Op::Settle { .. }
            | Op::Pause { .. }
            | Op::Resume { .. } => Ok(()),
        }
    }

    /// The rows of the stream entries `entries`, newest first (a run's entry gives its hash's row).
    fn rows_of(
        &mut self,
        entries: Vec<(String, HashMap<String, String>)>,
    ) -> Result<Vec<RunRow>, StoreError> {
        let mut rows = Vec::with_capacity(entries.len());
        for (_, fields) in entries {
            let text = match (fields.get("run"), fields.get("row")) {
                (Some(run), _) => {
                    let run = run.clone();
                    let row: Option<String> = self.with(|c, _| c.hget(&run, "row"))?;
                    match row {
                        Some(row) => row,
                        // Pruned: its hash expired before the stream was trimmed.
                        None => continue,
                    }
                }
                (None, Some(row)) => row.clone(),
                (None, None) => continue,
            };
            if let Ok(mut row) = serde_json::from_str::<RunRow>(&text) {
                if row.runner.is_none() {
                    row.runner = fields.get("runner").cloned();
                }
                rows.push(row);
            }
        }
        Ok(rows)
    }

    /// The last of run `number` of `job`'s output, as its runner kept it.
    pub fn tail(
        &mut self,
        job: &str,
        number: u64,
    ) -> Result<Option<(Vec<u8>, RunRow)>, StoreError> {
        let fields: HashMap<String, Vec<u8>> = self.with(|c, k| c.hgetall(k.run(job, number)))?;
        let Some(row) = fields.get("row") else {
            return Ok(None);
        };
        let row: RunRow = serde_json::from_slice(row).map_err(|e| self.error(e))?;
        Ok(Some((fields.get("tail").cloned().unwrap_or_default(), row)))
    }
}

/// A blocking connection with bounded waits: a store that does not answer holds the writer two seconds at most.
pub fn connect(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let conn = client.get_connection_with_timeout(super::claims::CONNECT_TIMEOUT)?;
    conn.set_read_timeout(Some(super::claims::RESPONSE_TIMEOUT))?;
    conn.set_write_timeout(Some(super::claims::RESPONSE_TIMEOUT))?;
    Ok(conn)
}

/// The last [`TAIL`] bytes of a run's log file (empty when it cannot be read).
fn tail_of(log: &str) -> Vec<u8> {
    let Ok(mut file) = std::fs::File::open(log) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(TAIL)));
    let mut tail = Vec::new();
    let _ = file.take(TAIL).read_to_end(&mut tail);
    tail
}

fn millis(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

impl Store for RedisStore {
    /// The runner's heartbeat is its lock (see `heartbeat`).
    fn lock(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn holder(&self) -> Option<u32> {
        None
    }

    /// The handled instants of the whole cluster (the rest of a runner's memory is its own state's).
    fn memory(&self) -> Result<Memory, StoreError> {
        let mut conn = connect(&self.client).map_err(|e| self.error(e))?;
        let all: HashMap<String, i64> = conn
            .hgetall(self.keys.handled())
            .map_err(|e| self.error(e))?;
        let mut memory = Memory::default();
        for (field, ms) in all {
            let (Some((job, fp)), Some(at)) = (field.split_once(' '), millis(ms)) else {
                continue;
            };
            memory.handled.insert((job.to_string(), fp.to_string()), at);
        }
        Ok(memory)
    }

    /// This runner's runs left `running` by its last start (it died) are `interrupted` (see `heartbeat`).
    fn recover(&mut self, _now: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(0)
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        for op in ops {
            self.apply_one(op)?;
        }
        Ok(())
    }

    fn history(&self, query: &Query) -> Result<Vec<RunRow>, StoreError> {
        let mut reader = RedisStore {
            client: self.client.clone(),
            conn: None,
            keys: self.keys.clone(),
            runner: self.runner.clone(),
            keep: self.keep,
            url: self.url.clone(),
        };
        reader.read_history(query)
    }

    fn tries(&self, job: &str, run: u64) -> Result<Vec<RunRow>, StoreError> {
        let mut conn = connect(&self.client).map_err(|e| self.error(e))?;
        let fields: HashMap<String, String> = conn
            .hgetall(self.keys.run(job, run))
            .map_err(|e| self.error(e))?;
        let mut tries: Vec<(&String, &String)> = fields
            .iter()
            .filter(|(k, _)| k.starts_with("try:"))
            .collect();
        tries.sort();
        Ok(tries
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_str(v).ok())
            .collect())
    }

    /// Stream entries older than `before` go; runs' hashes expire by themselves (`--keep` after their end).
    fn prune(&mut self, before: DateTime<Utc>) -> Result<Vec<PathBuf>, StoreError> {
        let min = format!("{}-0", before.timestamp_millis().max(0));
        self.with(|c, k| {
            redis::cmd("XTRIM")
                .arg(k.history())
                .arg("MINID")
                .arg("~")
                .arg(min)
                .query::<i64>(c)
                .map(drop)
        })?;
        Ok(Vec::new())
    }
}

impl RedisStore {
    /// History rows, newest first, by the query's filters; the stream read a page at a time.
    pub fn read_history(&mut self, query: &Query) -> Result<Vec<RunRow>, StoreError> {
        const PAGE: usize = 500;
        let limit = if query.limit == 0 {
            usize::MAX
        } else {
            query.limit
        };
        let mut rows = Vec::new();
        let mut end = "+".to_string();
        loop {
            let page: redis::streams::StreamRangeReply = {
                let end = end.clone();
                self.with(|c, k| {
                    redis::cmd("XREVRANGE")
                        .arg(k.history())
                        .arg(end)
                        .arg("-")
                        .arg("COUNT")
                        .arg(PAGE)
                        .query(c)
                })?
            };
            let last = page.ids.last().map(|e| e.id.clone());
            let entries = page
                .ids
                .into_iter()
                .filter(|e| Some(&e.id) != (end != "+").then_some(&end))
                .map(|e| {
                    let fields = e
                        .map
                        .into_iter()
                        .filter_map(|(k, v)| {
                            redis::from_redis_value::<String>(v).ok().map(|v| (k, v))
                        })
                        .collect();
                    (e.id, fields)
                })
                .collect::<Vec<_>>();
            let got = entries.len();
            for row in self.rows_of(entries)? {
                if wanted(&row, query) {
                    rows.push(row);
                    if rows.len() >= limit {
                        return Ok(rows);
                    }
                }
            }
            match last {
                Some(id) if got > 0 && id != end => end = id,
                _ => return Ok(rows),
            }
            if let Some(since) = query.since {
                if rows
                    .last()
                    .and_then(|r| r.started.or(r.ended))
                    .is_some_and(|t| t < since)
                {
                    return Ok(rows);
                }
            }
        }
    }
}

/// Whether a row passes the query's filters.
fn wanted(row: &RunRow, query: &Query) -> bool {
    (query.jobs.is_empty() || query.jobs.contains(&row.job))
        && (!query.failed || row.outcome.is_failure())
        && query.run.is_none_or(|n| row.run == Some(n))
        && query
            .since
            .is_none_or(|s| row.started.or(row.ended).is_some_and(|t| t >= s))
}
