//! The one writer of a runner's store: a thread that owns the store and commits what the engine sends in groups
//! (everything that arrived since the last commit, one transaction). The engine only pushes onto a channel, so
//! history costs the dispatcher no disk wait; retention runs here too, at start and every hour.

use chrono::Utc;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Op, Store};
use crate::report::Reporter;

/// How many ops one commit takes at most (a flood of `each` runs is committed in slices, not one huge one).
const GROUP: usize = 4096;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

enum Msg {
    Op(Op),
    /// Commit what is queued, then answer (the end of the run).
    Flush(Sender<()>),
}

/// The engine's handle on the writer thread.
pub struct History {
    tx: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl History {
    /// Start the writer; it owns `store` (and with it the runner's lock) until [`History::close`].
    pub fn start(
        mut store: Box<dyn Store>,
        keep: Duration,
        reporter: std::sync::Arc<Reporter>,
    ) -> History {
        let (tx, rx) = channel::<Msg>();
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
                let mut batch = Vec::new();
                loop {
                    if Instant::now() >= next_prune {
                        prune(store.as_mut(), keep, &mut complain);
                        next_prune = Instant::now() + PRUNE_EVERY;
                    }
                    let first = match rx
                        .recv_timeout(next_prune.saturating_duration_since(Instant::now()))
                    {
                        Ok(m) => m,
                        Err(RecvTimeoutError::Timeout) => continue,
                        Err(RecvTimeoutError::Disconnected) => break,
                    };
                    let mut flushes = Vec::new();
                    let mut take = |m: Msg, batch: &mut Vec<Op>| match m {
                        Msg::Op(op) => batch.push(op),
                        Msg::Flush(done) => flushes.push(done),
                    };
                    take(first, &mut batch);
                    while batch.len() < GROUP {
                        match rx.try_recv() {
                            Ok(m) => take(m, &mut batch),
                            Err(_) => break,
                        }
                    }
                    if !batch.is_empty() {
                        if let Err(e) = store.apply(&batch) {
                            complain(&e);
                        }
                        batch.clear();
                    }
                    for done in flushes {
                        let _ = done.send(());
                    }
                }
            })
            .expect("the history thread can start");
        History {
            tx,
            thread: Some(thread),
        }
    }

    pub fn send(&self, op: Op) {
        let _ = self.tx.send(Msg::Op(op));
    }

    /// Wait until everything sent so far is committed.
    pub fn flush(&self) {
        let (done, wait) = channel();
        if self.tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv();
        }
    }

    /// Commit the rest and end the writer (and with it the store and its lock).
    pub fn close(mut self) {
        self.flush();
        let (dead, _) = channel();
        self.tx = dead;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
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
