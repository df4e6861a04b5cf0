//! A durable channel at run time: its store, and the thread that commits it. Writers' pumps append and wait for
//! the commit that covers their messages before anything of them is delivered; commits follow one another with
//! no pause (group commit: what arrives while the disk syncs goes in the next one), so a writer's line waits at
//! most two syncs. Deliveries and done marks ride along in the same commits; nobody waits for those.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::durable::local::LocalLog;
use crate::durable::{DurableStore, Pending, Seq, SeqRange};
use crate::report::Reporter;

pub struct Durable {
    store: Mutex<Box<dyn DurableStore>>,
    /// Generations: bumped by every change, and the last one committed.
    gens: Mutex<Gens>,
    changed: Condvar,
    committed: tokio::sync::watch::Sender<u64>,
    name: String,
    /// Messages given up at a stop because the store could not commit them.
    lost: std::sync::atomic::AtomicU64,
    /// The store is the cluster's stream (SPEC §9): committed messages are read back through the consumer.
    pub shared: bool,
}

#[derive(Default)]
struct Gens {
    changed: u64,
    /// A commit failed: said once, tried again.
    failing: bool,
}

impl Durable {
    /// Open the store of channel `name` in `dir` (what was not done comes back, for the queue's front) and start
    /// its committer.
    pub fn open(
        dir: &Path,
        name: &str,
        reporter: Arc<Reporter>,
    ) -> std::io::Result<(Arc<Durable>, Vec<Pending>)> {
        let mut log = LocalLog::open(dir)?;
        for note in log.take_notes() {
            reporter.notice(&format!("channel `{name}`: {note}"));
        }
        let pending = log.take_pending();
        let durable = Durable::start(Box::new(log), name, reporter, false)?;
        Ok((durable, pending))
    }

    /// A durable channel over `store`, with its committer (`shared`: the store is the cluster's stream).
    pub fn start(
        store: Box<dyn DurableStore>,
        name: &str,
        reporter: Arc<Reporter>,
        shared: bool,
    ) -> std::io::Result<Arc<Durable>> {
        let (committed, _) = tokio::sync::watch::channel(0);
        let durable = Arc::new(Durable {
            store: Mutex::new(store),
            gens: Mutex::new(Gens::default()),
            changed: Condvar::new(),
            committed,
            name: name.to_string(),
            lost: std::sync::atomic::AtomicU64::new(0),
            shared,
        });
        let weak = Arc::downgrade(&durable);
        std::thread::Builder::new()
            .name(format!("flowrun-commit-{name}"))
            .spawn(move || commit_loop(&weak, &reporter))?;
        Ok(durable)
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Box<dyn DurableStore>> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Something changed: the committer takes it in its next commit. Returns the generation to wait for.
    fn bump(&self) -> u64 {
        let mut g = self.gens.lock().unwrap_or_else(|e| e.into_inner());
        g.changed += 1;
        self.changed.notify_one();
        g.changed
    }

    /// Append whole messages: their first number, and the commit to wait for before anything of them is
    /// delivered (see [`Durable::committed`]).
    pub fn append(&self, messages: &[u8], count: u64) -> std::io::Result<(Seq, u64)> {
        let seq = self.store().append(messages, count)?;
        Ok((seq, self.bump()))
    }

    /// Whether commit `generation` is on disk.
    pub fn is_committed(&self, generation: u64) -> bool {
        *self.committed.borrow() >= generation
    }

    /// Wait until commit `generation` is on disk. An error of the disk is retried (and said) by the committer
    /// meanwhile; the writer waits.
    pub async fn committed(&self, generation: u64) {
        let mut committed = self.committed.subscribe();
        // The committer outlives every writer: it goes only with the channel.
        let _ = committed.wait_for(|&c| c >= generation).await;
    }

    /// These messages go to a reader: how many times the first of them had been handed out before, plus one
    /// (`FLOWRUN_DELIVERY`).
    pub fn delivered(&self, ranges: &[SeqRange]) -> u32 {
        let mut store = self.store();
        let times = ranges.first().map_or(1, |r| store.deliveries(r.start) + 1);
        for &range in ranges {
            let _ = store.delivered(range);
        }
        drop(store);
        self.bump();
        times
    }

    /// These messages are done: never delivered again.
    pub fn done(&self, ranges: &[SeqRange]) {
        if ranges.is_empty() {
            return;
        }
        let mut store = self.store();
        for &range in ranges {
            let _ = store.done(range);
        }
        drop(store);
        self.bump();
    }

    /// Append and commit now, on the caller's thread: a dead letter's copy, before its original is done.
    pub fn append_now(&self, messages: &[u8], count: u64) -> std::io::Result<Seq> {
        let mut store = self.store();
        let seq = store.append(messages, count)?;
        store.commit()?;
        Ok(seq)
    }

    pub fn usage(&self) -> crate::durable::Usage {
        self.store().usage()
    }

    /// Messages given up at a stop, never committed.
    pub fn lose(&self, count: u64) {
        self.lost
            .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
    }

    /// What [`Durable::lose`] counted: said at the end, so `left` is not read as all kept.
    pub fn lost(&self) -> u64 {
        self.lost.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Commit what changed, now (the runner's end).
    pub fn flush(&self) -> std::io::Result<()> {
        self.store().commit()
    }
}

/// Commit whatever changed, one commit after another, until the channel is gone. The sync runs without the
/// store's lock, so writers append the next commit's messages meanwhile.
fn commit_loop(durable: &std::sync::Weak<Durable>, reporter: &Reporter) {
    let mut done_gen = 0;
    loop {
        let Some(d) = durable.upgrade() else { return };
        let want = {
            let mut g = d.gens.lock().unwrap_or_else(|e| e.into_inner());
            while g.changed == done_gen {
                // Woken by a change, or now and then to see whether the channel is gone.
                let (guard, _) = d
                    .changed
                    .wait_timeout(g, Duration::from_millis(500))
                    .unwrap_or_else(|e| e.into_inner());
                g = guard;
                if Arc::strong_count(&d) == 1 {
                    return;
                }
            }
            g.changed
        };
        let staged = d.store().stage();
        let result = staged
            .and_then(|sync| sync())
            .and_then(|()| d.store().settle());
        match result {
            Ok(()) => {
                done_gen = want;
                d.committed.send_replace(want);
                let mut g = d.gens.lock().unwrap_or_else(|e| e.into_inner());
                if std::mem::take(&mut g.failing) {
                    reporter.notice(&format!("channel `{}`: its store commits again", d.name));
                }
            }
            // A shared queue's stream is full: its writers wait for room, as for a full queue (not a failure).
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                drop(d);
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                let mut g = d.gens.lock().unwrap_or_else(|e| e.into_inner());
                if !std::mem::replace(&mut g.failing, true) {
                    reporter.notice(&format!(
                        "channel `{}`: its store cannot commit ({e}); its writers wait, and it is tried again",
                        d.name
                    ));
                }
                drop(g);
                drop(d);
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}
