//! The embedded store: one SQLite database, `DIR/state.db`, in WAL mode (readers such as `flowrun status` never
//! block the runner's writer), its schema version in `PRAGMA user_version`. The runner's lock is an `flock` on
//! `DIR/runner.lock`, which the kernel releases when the runner dies, however it dies.

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::fs::File;
use std::io::{Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::{Memory, Op, Outcome, Query, RunRow, Store, StoreError, SCHEMA_VERSION};
use crate::event::timestamp;

/// The reason of a run found `running` by the next runner, as an SQL literal.
const INTERRUPTED: &str =
    "'the runner ended (killed or the machine stopped) while the run was alive'";

/// Each migration takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    job         TEXT NOT NULL,
    run         INTEGER,
    attempt     INTEGER NOT NULL DEFAULT 1,
    trigger     TEXT NOT NULL DEFAULT '',
    scheduled   TEXT,
    started     TEXT,
    ended       TEXT,
    duration_ms INTEGER,
    code        INTEGER,
    signal      TEXT,
    outcome     TEXT NOT NULL,
    reason      TEXT,
    lateness_ms REAL,
    messages    INTEGER,
    count       INTEGER NOT NULL DEFAULT 1,
    catch_up    INTEGER NOT NULL DEFAULT 0,
    pid         INTEGER,
    log         TEXT
);
CREATE UNIQUE INDEX runs_by_number ON runs (job, run) WHERE run IS NOT NULL;
CREATE INDEX runs_by_outcome ON runs (outcome);
CREATE TABLE triggers (
    job          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    last_handled TEXT NOT NULL,
    PRIMARY KEY (job, fingerprint)
);
CREATE TABLE counters (
    job      TEXT PRIMARY KEY,
    last_run INTEGER NOT NULL
);
",
    "
CREATE TABLE paused (
    job   TEXT PRIMARY KEY,
    until TEXT
);
",
    "
CREATE TABLE tries (
    job         TEXT NOT NULL,
    run         INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    started     TEXT,
    ended       TEXT,
    duration_ms INTEGER,
    code        INTEGER,
    signal      TEXT,
    outcome     TEXT NOT NULL,
    reason      TEXT,
    PRIMARY KEY (job, run, attempt)
);
",
];

/// A job and a time of it (none, or one that did not parse).
type JobTime = (String, Option<DateTime<Utc>>);

pub struct SqliteStore {
    dir: PathBuf,
    path: PathBuf,
    conn: Connection,
    lock: Option<File>,
}

impl SqliteStore {
    /// Rows of (job, a time or nothing) from `sql` (a time that does not parse is nothing).
    fn job_times(&self, sql: &str) -> Result<Vec<JobTime>, StoreError> {
        let e = |e| db_error(&self.path, e);
        let mut stmt = self.conn.prepare(sql).map_err(e)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })
            .map_err(e)?;
        rows.map(|row| row.map(|(job, at)| (job, parse_time(at))).map_err(e))
            .collect()
    }

    /// Open (creating) the database of a state directory. Nothing is written before [`Store::lock`]; a database
    /// of a newer schema is refused here.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        let path = dir.join("state.db");
        // Made (or checked) by us before SQLite opens it: a regular file of the runner's user, 0600, no symlink.
        // SQLite gives the WAL and shared-memory files the database's mode; ones that exist are checked too.
        for file in ["state.db", "state.db-wal", "state.db-shm"] {
            let file = dir.join(file);
            if file == path || std::fs::symlink_metadata(&file).is_ok() {
                super::dir::private_file(&file).map_err(|source| StoreError::Io {
                    path: file.display().to_string(),
                    source,
                })?;
            }
        }
        // Not `Connection::open`: its flags read a path starting with `file:` as a URI (another database than
        // the state directory's, and the lock would not guard it).
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(|e| db_error(&path, e))?;
        let store = SqliteStore {
            dir: dir.to_path_buf(),
            path,
            conn,
            lock: None,
        };
        store.check_version()?;
        Ok(store)
    }

    /// Open for reading only (`status`, `history`, `logs`): `None` when no runner ever wrote this state.
    pub fn open_read(dir: &Path) -> Result<Option<SqliteStore>, StoreError> {
        let path = dir.join("state.db");
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(|e| db_error(&path, e))?;
        let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
        let store = SqliteStore {
            dir: dir.to_path_buf(),
            path,
            conn,
            lock: None,
        };
        if store.version()? == 0 {
            return Ok(None);
        }
        store.check_version()?;
        Ok(Some(store))
    }

    fn version(&self) -> Result<u32, StoreError> {
        let v: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| db_error(&self.path, e))?;
        // A negative version was not written by any flowrun: refused like a newer one.
        Ok(u32::try_from(v).unwrap_or(u32::MAX))
    }

    fn check_version(&self) -> Result<(), StoreError> {
        let found = self.version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::Newer {
                path: self.path.display().to_string(),
                found,
            });
        }
        Ok(())
    }

    /// WAL, and the migrations up to [`SCHEMA_VERSION`], each in its own transaction.
    fn prepare(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = |e| db_error(&path, e);
        self.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(e)?;
        // In WAL mode, NORMAL loses at most the last commits at a power loss, never the database.
        self.conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(e)?;
        let _ = self.conn.busy_timeout(std::time::Duration::from_secs(5));
        // The writer appends; it needs no 2 MiB page cache (SQLite's default) held for the runner's life.
        self.conn
            .pragma_update(None, "cache_size", -256)
            .map_err(e)?;
        let mut version = self.version()?;
        while (version as usize) < MIGRATIONS.len() {
            let tx = self.conn.transaction().map_err(e)?;
            tx.execute_batch(MIGRATIONS[version as usize]).map_err(e)?;
            tx.pragma_update(None, "user_version", version + 1)
                .map_err(e)?;
            tx.commit().map_err(e)?;
            version += 1;
        }
        Ok(())
    }
}

/// `AND job IN (?, ...)` with its arguments, when `jobs` names any (none: every job).
fn of_jobs(sql: &mut String, args: &mut Vec<rusqlite::types::Value>, jobs: &[String]) {
    if !jobs.is_empty() {
        let marks: Vec<&str> = jobs.iter().map(|_| "?").collect();
        sql.push_str(&format!(" AND job IN ({})", marks.join(", ")));
        args.extend(jobs.iter().map(|j| j.clone().into()));
    }
}

fn db_error(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Database {
        path: path.display().to_string(),
        source,
    }
}

impl StoreError {
    /// The store can be read but not written now (a full disk, an I/O error): a runner may start and wait.
    pub fn cannot_write(&self) -> bool {
        match self {
            StoreError::Database { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure)
            ),
            StoreError::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
            _ => false,
        }
    }

    /// What to do about it, for the messages people see.
    pub fn hint(&self) -> Option<String> {
        match self {
            StoreError::Database { source, .. } => {
                let broken = matches!(
                    source.sqlite_error_code(),
                    Some(
                        rusqlite::ErrorCode::NotADatabase
                            | rusqlite::ErrorCode::DatabaseCorrupt
                            | rusqlite::ErrorCode::SystemIoFailure
                            | rusqlite::ErrorCode::CannotOpen
                    )
                );
                broken.then(|| {
                    "the state database is not usable: move it aside (history starts afresh), or give another --state DIR".to_string()
                })
            }
            _ => None,
        }
    }
}

fn parse_time(text: Option<String>) -> Option<DateTime<Utc>> {
    text.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
}

const COLUMNS: &str =
    "job, run, attempt, trigger, scheduled, started, ended, duration_ms, code, signal, \
                       outcome, reason, lateness_ms, messages, count, catch_up, pid, log";

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    let outcome: String = r.get(10)?;
    Ok(RunRow {
        job: r.get(0)?,
        run: r.get(1)?,
        attempt: r.get(2)?,
        trigger: r.get(3)?,
        scheduled: parse_time(r.get(4)?),
        started: parse_time(r.get(5)?),
        ended: parse_time(r.get(6)?),
        duration_ms: r.get(7)?,
        code: r.get(8)?,
        signal: r.get(9)?,
        // A row of an unknown outcome (written by hand) reads as failed rather than breaking `history`.
        outcome: Outcome::parse(&outcome).unwrap_or(Outcome::Failed),
        reason: r.get(11)?,
        lateness_ms: r.get(12)?,
        messages: r.get(13)?,
        count: r.get(14)?,
        catch_up: r.get(15)?,
        pid: r.get(16)?,
        log: r.get(17)?,
        runner: None,
    })
}

/// A statement run through the connection's cache: the rows of every run go through the same few statements,
/// and parsing them again for each run was most of what history cost a run.
fn cached(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// A retry of a run began: its row is running again, at this try.
fn retried(tx: &rusqlite::Transaction<'_>, row: &RunRow) -> rusqlite::Result<()> {
    cached(
        tx,
        "UPDATE runs SET attempt = ?3, pid = ?4, outcome = 'running', ended = NULL,
                         duration_ms = NULL, code = NULL, signal = NULL, reason = NULL
         WHERE job = ?1 AND run = ?2",
        params![row.job, row.run, row.attempt, row.pid],
    )
    .map(drop)
}

/// One try of a run ended.
fn tried(tx: &rusqlite::Transaction<'_>, row: &RunRow) -> rusqlite::Result<()> {
    cached(
        tx,
        "INSERT OR REPLACE INTO tries
         (job, run, attempt, started, ended, duration_ms, code, signal, outcome, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            row.job,
            row.run,
            row.attempt,
            row.started.map(timestamp),
            row.ended.map(timestamp),
            row.duration_ms,
            row.code,
            row.signal,
            row.outcome.as_str(),
            row.reason,
        ],
    )
    .map(drop)
}

fn insert(tx: &rusqlite::Transaction<'_>, row: &RunRow) -> rusqlite::Result<()> {
    cached(tx,
        &format!(
            // OR REPLACE: a run number given again (only in a cluster whose store lost its counters) replaces the
            // old row rather than stopping the history for good.
            "INSERT OR REPLACE INTO runs ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, \
             ?13, ?14, ?15, ?16, ?17, ?18)"
        ),
        params![
            row.job,
            row.run,
            row.attempt,
            row.trigger,
            row.scheduled.map(timestamp),
            row.started.map(timestamp),
            row.ended.map(timestamp),
            row.duration_ms,
            row.code,
            row.signal,
            row.outcome.as_str(),
            row.reason,
            row.lateness_ms,
            row.messages,
            row.count,
            row.catch_up,
            row.pid,
            row.log,
        ],
    )?;
    if let Some(run) = row.run {
        raise_counter(tx, &row.job, run)?;
    }
    Ok(())
}

/// The job's counter goes up to `run` (never down).
fn raise_counter(tx: &rusqlite::Transaction<'_>, job: &str, run: u64) -> rusqlite::Result<()> {
    cached(
        tx,
        "INSERT INTO counters (job, last_run) VALUES (?1, ?2)
         ON CONFLICT (job) DO UPDATE SET last_run = max(last_run, excluded.last_run)",
        params![job, run],
    )?;
    Ok(())
}

fn update(tx: &rusqlite::Transaction<'_>, row: &RunRow) -> rusqlite::Result<()> {
    let changed = cached(tx,
        "UPDATE runs SET ended = ?3, duration_ms = ?4, code = ?5, signal = ?6, outcome = ?7, reason = ?8,
                         log = ?9, pid = ?10
         WHERE job = ?1 AND run = ?2",
        params![
            row.job,
            row.run,
            row.ended.map(timestamp),
            row.duration_ms,
            row.code,
            row.signal,
            row.outcome.as_str(),
            row.reason,
            row.log,
            row.pid,
        ],
    )?;
    if changed == 0 {
        insert(tx, row)?;
    }
    Ok(())
}

fn advance(
    conn: &Connection,
    job: &str,
    fingerprint: &str,
    at: DateTime<Utc>,
) -> rusqlite::Result<bool> {
    // Forward only: an older instant (a late write) never moves the memory back. A stored value that is not a
    // time, or lies ahead of the clock (a clock set back, a hand edit), never blocks the memory either.
    let changed = cached(
        conn,
        "INSERT INTO triggers (job, fingerprint, last_handled) VALUES (?1, ?2, ?3)
         ON CONFLICT (job, fingerprint) DO UPDATE SET last_handled = excluded.last_handled
         WHERE excluded.last_handled > triggers.last_handled
            OR triggers.last_handled NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T*Z'
            OR triggers.last_handled > ?4",
        params![
            job,
            fingerprint,
            timestamp(at),
            timestamp(Utc::now() + chrono::Duration::seconds(1))
        ],
    )?;
    Ok(changed > 0)
}

/// A POSIX record lock on the whole lock file: the kernel releases it when the runner dies, and `F_GETLK` tells
/// another process who holds it without taking it (a `status` never gets in the way of a starting runner).
fn lock_request(kind: libc::c_short) -> libc::flock {
    // SAFETY: flock is a plain C struct; all-zero is a valid value, then the fields that matter are set.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = kind;
    l.l_whence = libc::SEEK_SET as libc::c_short;
    l
}

/// The pid holding a write lock on `file`, if another process does.
fn holder_of(file: &File) -> Option<u32> {
    let mut l = lock_request(libc::F_WRLCK as libc::c_short);
    // SAFETY: F_GETLK on a descriptor this process owns, with a valid flock struct.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut l) } != 0 {
        return None;
    }
    (l.l_type != libc::F_UNLCK as libc::c_short).then_some(l.l_pid as u32)
}

/// Try to take the lock file; the pid of the holder when another process has it.
fn take_lock(path: &Path) -> std::io::Result<Result<File, u32>> {
    // Never through a symlink (a planted `runner.lock -> /some/file` got the pid written over it).
    let mut file = super::dir::private_file(path)?;
    let l = lock_request(libc::F_WRLCK as libc::c_short);
    // SAFETY: F_SETLK on a descriptor this function owns, with a valid flock struct.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &l) } != 0 {
        let err = std::io::Error::last_os_error();
        if !matches!(err.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) {
            return Err(err);
        }
        // The kernel names the holder (it may have ended meanwhile: then 0, "unknown").
        return Ok(Err(holder_of(&file).unwrap_or(0)));
    }
    // For people reading the file: the pid, in a fixed width written at once (never an empty file to read).
    // Best effort: the lock is the record lock, not the text (a full disk must not keep the runner from starting).
    let _ = file
        .rewind()
        .and_then(|_| file.write_all(format!("{:<10}\n", std::process::id()).as_bytes()));
    Ok(Ok(file))
}

/// The pid of the runner holding the lock file, if one does (without taking the lock).
fn lock_holder(path: &Path) -> Option<u32> {
    holder_of(&File::open(path).ok()?)
}

impl Store for SqliteStore {
    fn lock(&mut self) -> Result<(), StoreError> {
        let path = self.dir.join("runner.lock");
        match take_lock(&path) {
            Ok(Ok(file)) => self.lock = Some(file),
            Ok(Err(pid)) => {
                return Err(StoreError::Held {
                    pid,
                    dir: self.dir.display().to_string(),
                })
            }
            Err(source) => {
                return Err(StoreError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        }
        self.prepare()
    }

    fn holder(&self) -> Option<u32> {
        match self.lock {
            Some(_) => Some(std::process::id()),
            None => lock_holder(&self.dir.join("runner.lock")),
        }
    }

    fn memory(&self) -> Result<Memory, StoreError> {
        let e = |e| db_error(&self.path, e);
        let mut memory = Memory::default();
        let mut stmt = self
            .conn
            .prepare("SELECT job, fingerprint, last_handled FROM triggers")
            .map_err(e)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
            })
            .map_err(e)?;
        let soon = Utc::now() + chrono::Duration::seconds(1);
        for row in rows {
            let (job, fingerprint, at) = row.map_err(e)?;
            match parse_time(Some(at)) {
                Some(at) if at <= soon => {
                    memory.handled.insert((job, fingerprint), at);
                }
                // Not a time, or ahead of the clock: that trigger starts afresh (and says so).
                _ => memory.forgotten.push(job),
            }
        }
        let mut stmt = self
            .conn
            .prepare("SELECT job, last_run FROM counters")
            .map_err(e)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
            })
            .map_err(e)?;
        for row in rows {
            let (job, last) = row.map_err(e)?;
            memory.last_runs.insert(job, last);
        }
        let successes = self.job_times(
            "SELECT job, max(ended) FROM runs WHERE outcome = 'succeeded' GROUP BY job",
        )?;
        for (job, at) in successes {
            if let Some(at) = at {
                memory.last_success.insert(job, at);
            }
        }
        for (job, until) in self.job_times("SELECT job, until FROM paused")? {
            memory.paused.insert(job, until);
        }
        Ok(memory)
    }

    fn recover(&mut self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let n = self
            .conn
            .execute(
                &format!(
                    "UPDATE runs SET outcome = 'interrupted', ended = ?1, reason = {INTERRUPTED}
                     WHERE outcome = 'running'"
                ),
                params![timestamp(now)],
            )
            .map_err(|e| db_error(&self.path, e))?;
        Ok(n as u64)
    }

    fn apply(&mut self, ops: &[Op]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let e = |e| db_error(&path, e);
        let tx = self.conn.transaction().map_err(e)?;
        for op in ops {
            match op {
                Op::Handled {
                    job,
                    fingerprint,
                    at,
                } => {
                    advance(&tx, job, fingerprint, *at).map_err(e)?;
                }
                Op::Unhandle {
                    job,
                    fingerprint,
                    at,
                } => {
                    tx.execute(
                        "DELETE FROM triggers WHERE job = ?1 AND fingerprint = ?2 AND last_handled = ?3",
                        params![job, fingerprint, timestamp(*at)],
                    )
                    .map_err(e)?;
                }
                Op::Recover { before } => {
                    tx.execute(
                        &format!(
                            "UPDATE runs SET outcome = 'interrupted', ended = ?1, reason = {INTERRUPTED}
                             WHERE outcome = 'running' AND coalesce(started, scheduled, '') < ?1"
                        ),
                        params![timestamp(*before)],
                    )
                    .map_err(e)?;
                }
                Op::Append(row) => insert(&tx, row).map_err(e)?,
                Op::Update(row) => update(&tx, row).map_err(e)?,
                Op::Reserve { job, upto } => raise_counter(&tx, job, *upto).map_err(e)?,
                Op::Pause { job, until } => {
                    tx.execute(
                        "INSERT INTO paused (job, until) VALUES (?1, ?2)
                         ON CONFLICT (job) DO UPDATE SET until = excluded.until",
                        params![job, until.map(timestamp)],
                    )
                    .map_err(e)?;
                }
                Op::Retry(row) => retried(&tx, row).map_err(e)?,
                Op::Try(row) => tried(&tx, row).map_err(e)?,
                Op::Resume { job } => {
                    tx.execute("DELETE FROM paused WHERE job = ?1", params![job])
                        .map_err(e)?;
                }
                Op::Settle { job, last } => {
                    tx.execute(
                        "INSERT INTO counters (job, last_run) VALUES (?1, ?2)
                         ON CONFLICT (job) DO UPDATE SET last_run = excluded.last_run",
                        params![job, last],
                    )
                    .map_err(e)?;
                }
            }
        }
        tx.commit().map_err(e)
    }

    fn compact(&mut self) {
        // Best effort: a checkpoint that cannot run now (a reader holds the WAL) runs at a later one.
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    }

    fn history(&self, query: &Query) -> Result<Vec<RunRow>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM runs WHERE 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        of_jobs(&mut sql, &mut args, &query.jobs);
        if let Some(since) = query.since {
            sql.push_str(" AND coalesce(started, scheduled, ended) >= ?");
            args.push(timestamp(since).into());
        }
        if query.failed {
            sql.push_str(
                " AND outcome IN ('failed', 'timeout', 'spawn-failed', 'interrupted', 'unhealthy')",
            );
        }
        if let Some(run) = query.run {
            sql.push_str(" AND run = ?");
            args.push((run as i64).into());
        }
        sql.push_str(" ORDER BY id DESC");
        if query.limit > 0 {
            sql.push_str(&format!(" LIMIT {}", query.limit));
        }
        let e = |e| db_error(&self.path, e);
        let mut stmt = self.conn.prepare(&sql).map_err(e)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), row_from)
            .map_err(e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(e)
    }

    fn tries(&self, job: &str, run: u64) -> Result<Vec<RunRow>, StoreError> {
        let e = |e| db_error(&self.path, e);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT attempt, started, ended, duration_ms, code, signal, outcome, reason FROM tries
                 WHERE job = ?1 AND run = ?2 ORDER BY attempt",
            )
            .map_err(e)?;
        let rows = stmt
            .query_map(params![job, run as i64], |r| {
                let outcome: String = r.get(6)?;
                Ok(RunRow {
                    run: Some(run),
                    attempt: r.get(0)?,
                    started: parse_time(r.get(1)?),
                    ended: parse_time(r.get(2)?),
                    duration_ms: r.get(3)?,
                    code: r.get(4)?,
                    signal: r.get(5)?,
                    reason: r.get(7)?,
                    ..RunRow::new(
                        job.to_string(),
                        Outcome::parse(&outcome).unwrap_or(Outcome::Failed),
                    )
                })
            })
            .map_err(e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(e)
    }

    fn prune(&mut self, before: DateTime<Utc>) -> Result<Vec<PathBuf>, StoreError> {
        let path = self.path.clone();
        let e = |e| db_error(&path, e);
        let tx = self.conn.transaction().map_err(e)?;
        let cutoff = timestamp(before);
        let logs: Vec<PathBuf> = {
            let mut stmt = tx
                .prepare(
                    "SELECT log FROM runs WHERE log IS NOT NULL AND outcome != 'running'
                     AND coalesce(ended, started, scheduled) < ?1",
                )
                .map_err(e)?;
            let rows = stmt
                .query_map(params![cutoff], |r| r.get::<_, String>(0))
                .map_err(e)?;
            rows.filter_map(Result::ok).map(PathBuf::from).collect()
        };
        tx.execute(
            "DELETE FROM runs WHERE outcome != 'running' AND coalesce(ended, started, scheduled) < ?1",
            params![cutoff],
        )
        .map_err(e)?;
        // The tries of the runs pruned go with them.
        tx.execute(
            "DELETE FROM tries WHERE NOT EXISTS
             (SELECT 1 FROM runs WHERE runs.job = tries.job AND runs.run = tries.run)",
            [],
        )
        .map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(logs)
    }
}

impl SqliteStore {
    /// Whether the history has rows of this job (a job since renamed or removed from the file).
    pub fn has_job(&self, job: &str) -> bool {
        self.conn
            .query_row(
                "SELECT 1 FROM runs WHERE job = ?1 LIMIT 1",
                params![job],
                |_| Ok(()),
            )
            .is_ok()
    }

    /// The newest row of a job's run (`logs` without a run number): the last run that has a number.
    pub fn last_run(&self, job: &str) -> Result<Option<u64>, StoreError> {
        self.conn
            .query_row(
                "SELECT max(run) FROM runs WHERE job = ?1",
                params![job],
                |r| r.get::<_, Option<u64>>(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(|e| db_error(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn row(job: &str, run: Option<u64>, outcome: Outcome, at: &str) -> RunRow {
        RunRow {
            run,
            trigger: "start".into(),
            scheduled: Some(t(at)),
            started: Some(t(at)),
            pid: Some(42),
            log: Some(format!("/logs/{job}/{}.log", run.unwrap_or(0))),
            ..RunRow::new(job.into(), outcome)
        }
    }

    fn locked() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(dir.path()).unwrap();
        store.lock().unwrap();
        (dir, store)
    }

    #[test]
    fn a_handled_instant_only_moves_forward() {
        let (_dir, mut store) = locked();
        let handled = |at: &str| Op::Handled {
            job: "a".into(),
            fingerprint: "f".into(),
            at: t(at),
        };
        store
            .apply(&[
                handled("2026-01-01T00:00:02Z"),
                handled("2026-01-01T00:00:01Z"),
            ])
            .unwrap();
        let memory = store.memory().unwrap();
        assert_eq!(
            memory.handled[&("a".to_string(), "f".to_string())],
            t("2026-01-01T00:00:02Z")
        );
    }

    #[test]
    fn runs_are_appended_updated_recovered_and_pruned() {
        let (_dir, mut store) = locked();
        let mut ended = row("a", Some(1), Outcome::Running, "2026-01-01T00:00:00Z");
        store
            .apply(&[
                Op::Append(Box::new(ended.clone())),
                Op::Append(Box::new(row(
                    "a",
                    Some(2),
                    Outcome::Running,
                    "2026-01-02T00:00:00Z",
                ))),
            ])
            .unwrap();
        ended.outcome = Outcome::Succeeded;
        ended.ended = Some(t("2026-01-01T00:00:01Z"));
        // An update of a run whose start was never written inserts it (a run that could not start).
        let never_started = row("b", Some(7), Outcome::SpawnFailed, "2026-01-01T00:00:00Z");
        store
            .apply(&[
                Op::Update(Box::new(ended)),
                Op::Update(Box::new(never_started)),
            ])
            .unwrap();
        assert_eq!(store.memory().unwrap().last_runs["b"], 7);
        assert_eq!(store.recover(t("2026-01-03T00:00:00Z")).unwrap(), 1);
        let rows = store
            .history(&Query {
                jobs: vec!["a".into()],
                ..Query::default()
            })
            .unwrap();
        assert_eq!(rows[0].outcome, Outcome::Interrupted, "run 2 was alive");
        assert_eq!(rows[1].outcome, Outcome::Succeeded);
        let failed = store
            .history(&Query {
                failed: true,
                ..Query::default()
            })
            .unwrap();
        assert_eq!(failed.len(), 2, "interrupted and spawn-failed");
        let logs = store.prune(t("2026-01-02T12:00:00Z")).unwrap();
        assert_eq!(logs.len(), 2, "{logs:?}");
        assert_eq!(store.history(&Query::default()).unwrap().len(), 1);
        // Counters outlive pruned rows: numbers never go back.
        assert_eq!(store.memory().unwrap().last_runs["a"], 2);
    }

    #[test]
    fn a_run_number_given_again_replaces_its_row_and_the_history_goes_on() {
        // A cluster's store that lost its counters gives a number again (SPEC §9): the history must not stop.
        let (_dir, mut store) = locked();
        let old = row("a", Some(1), Outcome::Succeeded, "2026-01-01T00:00:00Z");
        let again = row("a", Some(1), Outcome::Running, "2026-01-02T00:00:00Z");
        store.apply(&[Op::Append(Box::new(old))]).unwrap();
        store.apply(&[Op::Append(Box::new(again))]).unwrap();
        let rows = store.history(&Query::default()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].started, Some(t("2026-01-02T00:00:00Z")));
        store
            .apply(&[Op::Append(Box::new(row(
                "a",
                Some(2),
                Outcome::Running,
                "2026-01-03T00:00:00Z",
            )))])
            .unwrap();
        assert_eq!(store.history(&Query::default()).unwrap().len(), 2);
    }

    #[test]
    fn a_newer_schema_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("state.db")).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        assert!(matches!(
            SqliteStore::open(dir.path()),
            Err(StoreError::Newer { .. })
        ));
        assert!(matches!(
            SqliteStore::open_read(dir.path()),
            Err(StoreError::Newer { .. })
        ));
    }
}

// History read a page at a time (the control API); in its own file, beside the store it reads.
#[path = "page.rs"]
mod page;
pub use page::{Page, PageFilter};
