//! The one writer of a runner's store: a thread that owns the store and commits what the engine hands it in
//! groups, one transaction per window. The engine only appends to a shared buffer (a mutex it holds for a
//! `Vec::extend`); the writer is woken once per window, by the first ops after a quiet time, so history costs
//! the dispatcher neither a disk wait nor a wake-up per run. What must not wait (a time trigger's handled
//! firing, a new block of run numbers) is committed at once; what must be on disk before a run starts (an
//! `at` firing, which may never fire twice) is waited for. Retention runs here too, at start and every hour.
//!
//! Every hand-over has a sequence number, and the writer publishes the last one it committed: the dispatcher gives
//! a run number only once its reservation is on disk, and runs an `at` only once its firing is. A store that fails
//! keeps what it could not write and tries again; at a clean stop, what still cannot be written is said, counted
//! and kept in `unwritten.jsonl` beside the database for the next start, where that file can be written.

use chrono::Utc;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Op, Store};
use crate::report::Reporter;

/// How long the writer gathers ops after the first before it commits them: one transaction per window instead of
/// one per run (a commit costs a WAL write and a wake-up; at thousands of runs a second, one each would cost
/// ~100 us a run on two cores). What a SIGKILL of the runner can lose is at most this window's history rows.
const WINDOW: Duration = Duration::from_millis(50);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How long a run that must be on disk before it starts waits for the commit at most.
const COMMIT_WAIT: Duration = Duration::from_secs(5);
/// Ops kept for another try while the store fails (a full disk); beyond this the oldest are given up, said once.
const RETRY_LIMIT: usize = 100_000;
/// At a clean stop, how often a failing store is tried again before what it holds is kept in the spill file.
const LAST_TRIES: u32 = 3;
/// The file beside the database that keeps, for the next start, what a clean stop could not write.
pub const UNWRITTEN: &str = "unwritten.jsonl";

#[derive(Default)]
struct Shared {
    ops: Vec<Op>,
    /// Commit now, without waiting for the window.
    urgent: bool,
    /// Callers waiting until what they handed over is committed (told whether it was).
    acks: Vec<Sender<bool>>,
    closed: bool,
    /// Hand-overs so far: the sequence number of the last.
    handed: u64,
}

/// The engine's handle on the writer thread.
pub struct History {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    thread: Option<JoinHandle<()>>,
    /// The sequence number of the last hand-over on disk (with everything handed before it).
    committed: Arc<AtomicU64>,
}

impl History {
    /// Start the writer; it owns `store` (and with it the runner's lock) until [`History::close`]. `spill`: the
    /// state directory, where what a clean stop cannot write is kept.
    pub fn start(
        store: Box<dyn Store>,
        keep: Duration,
        log_roots: Vec<PathBuf>,
        spill: PathBuf,
        reporter: std::sync::Arc<Reporter>,
    ) -> History {
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let committed = Arc::new(AtomicU64::new(0));
        let mut writer = Writer {
            store,
            keep,
            log_roots,
            spill,
            reporter,
            shared: shared.clone(),
            committed: committed.clone(),
            failing: false,
            said_dropped: false,
            retry: Vec::new(),
            taken: 0,
        };
        let thread = std::thread::Builder::new()
            .name("flowrun-history".into())
            .spawn(move || writer.run())
            .expect("the history thread can start");
        History {
            shared,
            thread: Some(thread),
            committed,
        }
    }

    /// The sequence number of the last hand-over committed (everything handed up to it is on disk).
    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// The sequence number the next hand-over will have.
    pub fn next_seq(&self) -> u64 {
        let (lock, _) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).handed + 1
    }

    /// Hand ops over. The writer is woken only when the buffer was empty (once per window), or at once when
    /// `urgent`.
    pub fn send_all(&self, ops: &mut Vec<Op>, urgent: bool) {
        if ops.is_empty() {
            return;
        }
        let (lock, wake) = &*self.shared;
        let mut shared = lock.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = shared.ops.is_empty();
        shared.handed += 1;
        shared.ops.append(ops);
        shared.urgent |= urgent;
        drop(shared);
        if was_empty || urgent {
            wake.notify_one();
        }
    }

    /// Hand ops over and wait until they are committed, with everything handed before: whether they were (a
    /// failing store answers at once; one that does not answer within [`COMMIT_WAIT`] has not committed them).
    pub fn commit_now(&self, ops: &mut Vec<Op>) -> bool {
        let (done, wait) = channel();
        {
            let (lock, wake) = &*self.shared;
            let mut shared = lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.handed += 1;
            shared.ops.append(ops);
            shared.urgent = true;
            shared.acks.push(done);
            wake.notify_one();
        }
        // Bounded: a writer that cannot answer (stuck in a disk write) must not hold the runner for ever.
        wait.recv_timeout(COMMIT_WAIT).unwrap_or(false)
    }

    /// Commit the rest and end the writer (and with it the store and its lock).
    pub fn close(mut self) {
        {
            let (lock, wake) = &*self.shared;
            lock.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
            wake.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[derive(Default)]
struct Group {
    ops: Vec<Op>,
    acks: Vec<Sender<bool>>,
    closed: bool,
    /// The sequence number of the last hand-over in it.
    upto: u64,
}

/// The writer thread's own state.
struct Writer {
    store: Box<dyn Store>,
    keep: Duration,
    log_roots: Vec<PathBuf>,
    spill: PathBuf,
    reporter: std::sync::Arc<Reporter>,
    shared: Arc<(Mutex<Shared>, Condvar)>,
    committed: Arc<AtomicU64>,
    failing: bool,
    said_dropped: bool,
    /// What the store failed to take, tried again first (all or none, in order).
    retry: Vec<Op>,
    /// The sequence number of the last hand-over taken: committed once the retry is empty after a commit.
    taken: u64,
}

impl Writer {
    fn run(&mut self) {
        let mut next_prune = Instant::now();
        loop {
            if Instant::now() >= next_prune {
                if let Err(e) = prune(self.store.as_mut(), self.keep, &self.log_roots) {
                    self.reporter
                        .notice(&format!("history could not be pruned: {e}"));
                }
                next_prune = Instant::now() + PRUNE_EVERY;
            }
            // While the store fails, what failed is tried again at the next window.
            let until = match self.retry.is_empty() {
                true => next_prune,
                false => next_prune.min(Instant::now() + WINDOW),
            };
            let group = match next_group(&self.shared, until) {
                Some(g) => g,
                None if self.retry.is_empty() => continue,
                None => Group::default(),
            };
            self.taken = self.taken.max(group.upto);
            self.retry.extend(group.ops);
            let ok = self.commit();
            for ack in group.acks {
                let _ = ack.send(ok);
            }
            if group.closed {
                self.last_tries();
                self.store.compact();
                return;
            }
        }
    }

    /// Commit what waits (the retry, then the group); whether everything taken is on disk.
    fn commit(&mut self) -> bool {
        if !self.retry.is_empty() {
            if let Err(e) = self.store.apply(&self.retry) {
                if !self.failing {
                    self.failing = true;
                    self.reporter.notice(&format!(
                        "history is not being written ({e}); it is kept in memory and tried again"
                    ));
                }
                self.bound_retry();
                return false;
            }
            self.retry.clear();
        }
        if self.failing {
            self.failing = false;
            // The WAL grew to what the disk had: give that space back (it keeps its largest size otherwise),
            // before saying the store is well again.
            self.store.compact();
            self.reporter.notice("history is being written again");
        }
        self.committed.store(self.taken, Ordering::Release);
        true
    }

    /// Beyond [`RETRY_LIMIT`] the oldest history rows are given up, and that is said. Never a handled firing or a
    /// reservation of run numbers: what the dispatcher waits for must reach the disk or never be claimed.
    fn bound_retry(&mut self) {
        if self.retry.len() > RETRY_LIMIT {
            let mut over = self.retry.len() - RETRY_LIMIT;
            let before = self.retry.len();
            self.retry.retain(|op| {
                let row = matches!(op, Op::Append(_) | Op::Update(_));
                let drop = row && over > 0;
                over -= usize::from(drop);
                !drop
            });
            let over = before - self.retry.len();
            if !self.said_dropped {
                self.said_dropped = true;
                self.reporter.notice(&format!(
                    "{over} history writes were given up: the store failed too long (more are said at the stop)"
                ));
            }
        }
    }

    /// At a clean stop: a failing store is tried a few more times; what it still cannot take is kept in the
    /// spill file for the next start, and said with its count either way.
    fn last_tries(&mut self) {
        for _ in 0..LAST_TRIES {
            if self.retry.is_empty() || self.commit() {
                return;
            }
            std::thread::sleep(WINDOW);
        }
        let rows = self
            .retry
            .iter()
            .filter(|op| matches!(op, Op::Append(_) | Op::Update(_)))
            .count();
        let what = format!(
            "{rows} history rows ({} writes in all) could not be written",
            self.retry.len()
        );
        match spill(&self.spill, &self.retry) {
            Ok(path) => self.reporter.notice(&format!(
                "{what}: they are kept in {} and written at the next start",
                path.display()
            )),
            Err(e) => self.reporter.notice(&format!(
                "{what} and are lost (nor could they be kept for the next start: {e}); the next start marks the runs left `running` as interrupted"
            )),
        }
    }
}

/// Append `ops` to the spill file of the state directory `dir`, one JSON line each.
fn spill(dir: &Path, ops: &[Op]) -> std::io::Result<PathBuf> {
    use std::io::{Seek, Write};
    let path = dir.join(UNWRITTEN);
    let mut file = super::dir::private_file(&path)?;
    let mut text = Vec::new();
    for op in ops {
        serde_json::to_writer(&mut text, op).map_err(std::io::Error::other)?;
        text.push(b'\n');
    }
    let written = file
        .seek(std::io::SeekFrom::End(0))
        .and_then(|_| file.write_all(&text))
        .and_then(|_| file.sync_all());
    if let Err(e) = written {
        // An empty file made for nothing (the disk is full) is not left behind.
        if file.metadata().is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(&path);
        }
        return Err(e);
    }
    Ok(path)
}

/// At a start, under the lock and before the runs left `running` are recovered: what a clean stop could not
/// write is written now, then its file goes. Returns how many writes it held.
pub fn replay(store: &mut dyn Store, dir: &Path) -> Result<usize, String> {
    use std::io::Read;
    let path = dir.join(UNWRITTEN);
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(0);
    }
    let say = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut text = String::new();
    super::dir::private_file(&path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| say(&e))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut ops = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<Op>(line) {
            Ok(op) => ops.push(op),
            // A last line cut short (the disk filled while it was written) is what could not be kept.
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => return Err(say(&e)),
        }
    }
    store.apply(&ops).map_err(|e| say(&e))?;
    std::fs::remove_file(&path).map_err(|e| say(&e))?;
    Ok(ops.len())
}

/// Wait for ops (at most until `until`), give the window time to fill (cut short when something is urgent or
/// the writer is closing), then take everything.
fn next_group(shared: &(Mutex<Shared>, Condvar), until: Instant) -> Option<Group> {
    let (lock, wake) = shared;
    let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
    while s.ops.is_empty() && s.acks.is_empty() && !s.closed {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        s = wake
            .wait_timeout(s, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    let window_end = Instant::now() + WINDOW;
    while !s.urgent && !s.closed {
        let left = window_end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        s = wake
            .wait_timeout(s, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    s.urgent = false;
    Some(Group {
        ops: std::mem::take(&mut s.ops),
        acks: std::mem::take(&mut s.acks),
        closed: s.closed,
        upto: s.handed,
    })
}

/// Rows older than `keep` go, and the log files they name that lie under one of `roots` (a row naming any
/// other file leaves it alone: see [`super::dir::prunable`]).
fn prune(
    store: &mut dyn Store,
    keep: Duration,
    roots: &[std::path::PathBuf],
) -> Result<(), super::StoreError> {
    let Ok(keep) = chrono::Duration::from_std(keep) else {
        return Ok(());
    };
    let Some(before) = Utc::now().checked_sub_signed(keep) else {
        return Ok(());
    };
    for log in store.prune(before)? {
        let Some(root) = roots.iter().find(|r| super::dir::prunable(&log, r)) else {
            continue;
        };
        let _ = std::fs::remove_file(&log);
        // An emptied job folder goes too (never the root).
        if let Some(folder) = log.parent().filter(|f| f != root) {
            let _ = std::fs::remove_dir(folder);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Mode;
    use crate::store::{Memory, Outcome, Query, RunRow, SqliteStore, StoreError};

    /// A store whose every write fails (a full disk).
    struct Full;

    impl Store for Full {
        fn lock(&mut self) -> Result<(), StoreError> {
            Ok(())
        }
        fn holder(&self) -> Option<u32> {
            None
        }
        fn memory(&self) -> Result<Memory, StoreError> {
            Ok(Memory::default())
        }
        fn recover(&mut self, _: chrono::DateTime<Utc>) -> Result<u64, StoreError> {
            Ok(0)
        }
        fn apply(&mut self, _: &[Op]) -> Result<(), StoreError> {
            Err(StoreError::Io {
                path: "full".into(),
                source: std::io::Error::from_raw_os_error(libc::ENOSPC),
            })
        }
        fn history(&self, _: &Query) -> Result<Vec<RunRow>, StoreError> {
            Ok(Vec::new())
        }
        fn tries(&self, _: &str, _: u64) -> Result<Vec<RunRow>, StoreError> {
            Ok(Vec::new())
        }
        fn prune(&mut self, _: chrono::DateTime<Utc>) -> Result<Vec<PathBuf>, StoreError> {
            Ok(Vec::new())
        }
    }

    fn row(run: u64, outcome: Outcome) -> Op {
        Op::Update(Box::new(RunRow {
            run: Some(run),
            ..RunRow::new("a".into(), outcome)
        }))
    }

    #[test]
    fn what_a_failing_store_never_took_is_not_claimed_and_is_kept_for_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let reporter = Arc::new(Reporter::new(Mode::Json, None));
        let history = History::start(
            Box::new(Full),
            Duration::from_secs(3600),
            Vec::new(),
            dir.path().to_path_buf(),
            reporter,
        );
        let seq = history.next_seq();
        assert!(!history.commit_now(&mut vec![row(1, Outcome::Running)]));
        assert!(history.committed() < seq, "nothing is on disk");
        history.send_all(&mut vec![row(1, Outcome::Succeeded)], false);
        history.close();
        let kept = std::fs::read_to_string(dir.path().join(UNWRITTEN)).unwrap();
        assert_eq!(kept.lines().count(), 2, "{kept}");
        // The next start writes them, in order, then the file goes.
        let mut store = SqliteStore::open(dir.path()).unwrap();
        store.lock().unwrap();
        assert_eq!(replay(&mut store, dir.path()).unwrap(), 2);
        assert!(!dir.path().join(UNWRITTEN).exists());
        let rows = store.history(&Query::default()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].outcome, Outcome::Succeeded);
    }
}
