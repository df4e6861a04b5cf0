//! The one writer of a runner's store: a thread that owns the store and commits what the engine hands it in
//! groups, one transaction per window. The engine only appends to a shared buffer (a mutex it holds for a
//! `Vec::extend`); the writer is woken once per window, by the first ops after a quiet time, so history costs
//! the dispatcher neither a disk wait nor a wake-up per run. Retention runs here too, at start and every hour.

use chrono::Utc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Op, Store};
use crate::report::Reporter;

/// How long the writer gathers ops after the first before it commits them: one transaction per window instead of
/// one per run (a commit costs a WAL write and a wake-up; at thousands of runs a second, one each would cost
/// ~100 us a run on two cores). What a SIGKILL of the runner can lose is at most this window's rows.
const WINDOW: Duration = Duration::from_millis(50);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct Shared {
    ops: Vec<Op>,
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
        reporter: std::sync::Arc<Reporter>,
    ) -> History {
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("flowrun-history".into())
            .spawn(move || {
                let mut complained = false;
                let mut complain = |e: &dyn std::fmt::Display| {
                    if !complained {
                        complained = true;
                        reporter.notice(&format!("history is not being written: {e}"));
                    }
                };
                let mut next_prune = Instant::now();
                loop {
                    if Instant::now() >= next_prune {
                        prune(store.as_mut(), keep, &mut complain);
                        next_prune = Instant::now() + PRUNE_EVERY;
                    }
                    let Some((ops, closed)) = next_group(&theirs, next_prune) else {
                        continue;
                    };
                    if !ops.is_empty() {
                        if let Err(e) = store.apply(&ops) {
                            complain(&e);
                        }
                    }
                    if closed {
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

    /// Hand ops over (the writer is woken only when the buffer was empty: once per window).
    pub fn send_all(&self, ops: &mut Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        let (lock, wake) = &*self.shared;
        let mut shared = lock.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = shared.ops.is_empty();
        shared.ops.append(ops);
        drop(shared);
        if was_empty {
            wake.notify_one();
        }
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

/// Wait for ops (at most until `until`, the next pruning), give the window time to fill (cut short by the
/// close), then take everything: the ops, and whether the writer is to end.
fn next_group(shared: &(Mutex<Shared>, Condvar), until: Instant) -> Option<(Vec<Op>, bool)> {
    let (lock, wake) = shared;
    let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
    while s.ops.is_empty() && !s.closed {
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
    while !s.closed {
        let left = window_end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        s = wake
            .wait_timeout(s, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    Some((std::mem::take(&mut s.ops), s.closed))
}

fn prune(store: &mut dyn Store, keep: Duration, complain: &mut dyn FnMut(&dyn std::fmt::Display)) {
    let Ok(keep) = chrono::Duration::from_std(keep) else {
        return;
    };
    let Some(before) = Utc::now().checked_sub_signed(keep) else {
        return;
    };
    match store.prune(before) {
        Ok(logs) => {
            for log in logs {
                let _ = std::fs::remove_file(&log);
                // An emptied job folder goes too.
                if let Some(folder) = log.parent() {
                    let _ = std::fs::remove_dir(folder);
                }
            }
        }
        Err(e) => complain(&e),
    }
}
