//! The store readers of the control API: a few read-only SQLite connections, opened when first needed and kept
//! for the runner's life, shared by every request. A read runs on a blocking thread holding one of them, so
//! descriptors, threads and rows in memory are bounded by the pool, not by the number of clients. A request that
//! finds every reader busy waits a short, bounded time in a bounded line; beyond that it is told to come back
//! ([`ReadError::Busy`], answered 503 with `Retry-After`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::store::SqliteStore;

/// Connections to the store, at most: each read holds one, on its own blocking thread.
pub const READERS: usize = 2;
/// Requests waiting for a reader, at most: the rest are answered busy at once.
pub const WAITERS: usize = 64;
/// How long a request waits for a reader before it is answered busy.
pub const WAIT: Duration = Duration::from_secs(1);

/// Who may read now: [`READERS`] slots, and a line of at most [`WAITERS`] that wait at most [`WAIT`]. (The
/// decision alone, without SQLite, so it can be tested.)
pub struct Gate {
    slots: Arc<Semaphore>,
    line: Semaphore,
    wait: Duration,
}

impl Gate {
    pub fn new(slots: usize, line: usize, wait: Duration) -> Gate {
        Gate {
            slots: Arc::new(Semaphore::new(slots)),
            line: Semaphore::new(line),
            wait,
        }
    }

    /// A slot, now or after waiting in line; `None`: the line is full or the wait ran out.
    pub async fn enter(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Some(slot);
        }
        // A place in line, held while waiting: the line's length is bounded, not only the time in it.
        let _in_line = self.line.try_acquire().ok()?;
        match tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(slot)) => Some(slot),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub enum ReadError {
    /// Every reader is busy and the wait ran out (or the line was full): come back later.
    Busy,
    /// The store could not be read.
    Failed(String),
}

/// The pool of one state directory.
pub struct Readers {
    dir: PathBuf,
    gate: Gate,
    /// Connections opened and not in use: at most one per slot ever exists.
    idle: Arc<Mutex<Vec<SqliteStore>>>,
}

impl Readers {
    pub fn new(dir: PathBuf) -> Readers {
        Readers {
            dir,
            gate: Gate::new(READERS, WAITERS, WAIT),
            idle: Default::default(),
        }
    }

    /// The state directory read (where the runs' logs are, under `logs/`).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Run `read` with a connection (`None`: no runner has written this state yet) on a blocking thread.
    pub async fn read<T, F>(&self, read: F) -> Result<T, ReadError>
    where
        T: Send + 'static,
        F: FnOnce(Option<&SqliteStore>) -> Result<T, String> + Send + 'static,
    {
        let slot = self.gate.enter().await.ok_or(ReadError::Busy)?;
        let (dir, idle) = (self.dir.clone(), self.idle.clone());
        // The slot goes with the read, not with the request: a client that hangs up does not free a reader
        // that is still reading for it.
        let reading = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let kept = idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let store = match kept {
                Some(store) => Some(store),
                None => SqliteStore::open_read(&dir).map_err(|e| e.to_string())?,
            };
            let result = read(store.as_ref());
            // A connection that failed a read is closed (the next read opens a fresh one).
            if let (Some(store), Ok(_)) = (store, &result) {
                idle.lock().unwrap_or_else(|e| e.into_inner()).push(store);
            }
            result
        });
        match reading.await {
            Ok(result) => result.map_err(ReadError::Failed),
            Err(_) => Err(ReadError::Failed("the store read failed".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    /// Poll once: whether the future finished (and with what).
    fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test]
    async fn a_free_slot_is_taken_at_once_and_given_back_when_dropped() {
        let gate = Gate::new(2, 0, WAIT);
        let a = gate.enter().await.expect("a free slot");
        let b = gate.enter().await.expect("the second slot");
        // Every slot taken and no line: busy at once.
        assert!(gate.enter().await.is_none());
        drop(a);
        assert!(gate.enter().await.is_some());
        drop(b);
    }

    #[tokio::test]
    async fn a_full_line_is_answered_busy_at_once() {
        let gate = Gate::new(1, 1, Duration::from_secs(3600));
        let held = gate.enter().await.expect("the slot");
        let mut waiting = pin!(gate.enter());
        assert!(poll_once(waiting.as_mut()).is_pending(), "in line");
        // The line's one place is taken: the next is refused without waiting.
        let mut refused = pin!(gate.enter());
        assert!(matches!(poll_once(refused.as_mut()), Poll::Ready(None)));
        // The one in line gets the slot when it is given back.
        drop(held);
        assert!(waiting.await.is_some());
    }

    #[tokio::test]
    async fn a_wait_that_runs_out_is_answered_busy() {
        let gate = Gate::new(1, 4, Duration::from_millis(20));
        let _held = gate.enter().await.expect("the slot");
        // The slot is never given back: the waiter's time runs out.
        assert!(gate.enter().await.is_none());
        // It left the line: a place is free again (here too the wait runs out).
        let mut next = pin!(gate.enter());
        assert!(poll_once(next.as_mut()).is_pending());
        assert!(next.await.is_none());
    }

    #[tokio::test]
    async fn connections_are_kept_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        {
            use crate::store::Store;
            let mut store = SqliteStore::open(dir.path()).unwrap();
            store.lock().unwrap();
        }
        let readers = Readers::new(dir.path().to_path_buf());
        for _ in 0..10 {
            let found = readers.read(|store| Ok(store.is_some())).await.unwrap();
            assert!(found);
        }
        assert_eq!(
            readers.idle.lock().unwrap().len(),
            1,
            "one connection, reused"
        );
    }
}
