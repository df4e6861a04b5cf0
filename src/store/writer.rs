//! The one writer of a runner's store: a thread that owns the store and commits what the engine hands it in
//! groups, one transaction per window. The engine only appends to a shared buffer (a mutex it holds for a
//! `Vec::extend`); the writer is woken once per window, by the first ops after a quiet time, so history costs
//! the dispatcher neither a disk wait nor a wake-up per run. What must not wait (a time trigger's handled
//! firing, a new block of run numbers) is committed at once; what must be on disk before a run starts (an
//! `at` firing, which may never fire twice) is waited for. Retention runs here too, at start and every hour.

use chrono::Utc;
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

#[derive(Default)]
struct Shared {
    ops: Vec<Op>,
    /// Commit now, without waiting for the window.
    urgent: bool,
    /// Callers waiting until what they handed over is committed.
    acks: Vec<Sender<()>>,
    closed: bool,
}

/// The engine's handle on the writer thread.
pub struct History {
    shared: Arc<(Mutex<Shared>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl History {
    /// Start the writer; it owns `store` (and with it the runner's lock) until [`History::close`].
    pub fn start(
        mut store: Box<dyn Store>,
        keep: Duration,
        log_roots: Vec<std::path::PathBuf>,
        reporter: std::sync::Arc<Reporter>,
    ) -> History {
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("flowrun-history".into())
            .spawn(move || {
                let mut failing = false;
                let mut said_dropped = false;
                let mut next_prune = Instant::now();
                let mut retry: Vec<Op> = Vec::new();
                loop {
                    if Instant::now() >= next_prune {
                        if let Err(e) = prune(store.as_mut(), keep, &log_roots) {
                            reporter.notice(&format!("history could not be pruned: {e}"));
                        }
                        next_prune = Instant::now() + PRUNE_EVERY;
                    }
                    // While the store fails, what failed is tried again at the next window.
                    let until = match retry.is_empty() {
                        true => next_prune,
                        false => next_prune.min(Instant::now() + WINDOW),
                    };
                    let group = match next_group(&theirs, until) {
                        Some(g) => g,
                        None if retry.is_empty() => continue,
                        None => Group::default(),
                    };
                    let mut ops = std::mem::take(&mut retry);
                    ops.extend(group.ops);
                    if !ops.is_empty() {
                        match store.apply(&ops) {
                            Ok(()) => {
                                if failing {
                                    failing = false;
                                    reporter.notice("history is being written again");
                                }
                            }
                            Err(e) => {
                                if !failing {
                                    failing = true;
                                    reporter.notice(&format!(
                                        "history is not being written ({e}); it is kept in memory and tried again"
                                    ));
                                }
                                retry = ops;
                                if retry.len() > RETRY_LIMIT {
                                    let over = retry.len() - RETRY_LIMIT;
                                    retry.drain(..over);
                                    if !said_dropped {
                                        said_dropped = true;
                                        reporter.notice("history rows were given up: the store failed too long");
                                    }
                                }
                            }
                        }
                    }
                    for ack in group.acks {
                        let _ = ack.send(());
                    }
                    if group.closed {
                        break;
                    }
                }
            })
            .expect("the history thread can start");
        History {
            shared,
            thread: Some(thread),
        }
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
        shared.ops.append(ops);
        shared.urgent |= urgent;
        drop(shared);
        if was_empty || urgent {
            wake.notify_one();
        }
    }

    /// Hand ops over and wait until they are committed (or tried: a failing store does not hold the runner).
    pub fn commit_now(&self, ops: &mut Vec<Op>) {
        let (done, wait) = channel();
        {
            let (lock, wake) = &*self.shared;
            let mut shared = lock.lock().unwrap_or_else(|e| e.into_inner());
            shared.ops.append(ops);
            shared.urgent = true;
            shared.acks.push(done);
            wake.notify_one();
        }
        // Bounded: a writer that cannot answer (stuck in a disk write) must not hold the runner for ever.
        let _ = wait.recv_timeout(COMMIT_WAIT);
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
    acks: Vec<Sender<()>>,
    closed: bool,
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
