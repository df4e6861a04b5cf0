//! The shell's hand on the state store (SPEC §4): what the core records is pushed to a buffer handed to the writer
//! thread once per input (and waited for only when an `at` firing must be on disk before its run).

use std::path::PathBuf;

use crate::store::writer::History;
use crate::store::Op;

/// A runner's state: where, what it remembered at its start, and the writer of what happens now.
pub struct Persist {
    pub dir: PathBuf,
    pub history: History,
    pub memory: crate::store::Memory,
    /// Runs a previous runner left `running` (it died), now marked interrupted.
    pub recovered: u64,
    /// The first block of every job's run numbers is on disk (not when the store was full at the start).
    pub numbers_on_disk: bool,
    /// The writer of the cluster's shared history (SPEC §9), when the runner is in one.
    pub cluster: Option<History>,
}

/// The dispatcher's view of [`Persist`].
pub struct Recorder {
    pub dir: PathBuf,
    pub history: History,
    pub recovered: u64,
    pub numbers_on_disk: bool,
    /// The writer of the cluster's shared history: it gets a copy of every history row.
    cluster: Option<History>,
    remembered: crate::store::Memory,
    /// Ops of the input being handled, handed to the writer at its end (one hand-over per input).
    buffer: std::cell::RefCell<Vec<Op>>,
    /// Something in the buffer must not wait for the writer's window (a handled firing, a block of numbers).
    urgent: std::cell::Cell<bool>,
    /// Something in the buffer must be committed before a run starts (an `at` firing: it never fires twice).
    durable: std::cell::Cell<bool>,
}

/// Run numbers are reserved this many ahead (durably, before they are given), so a crash never lets a number be
/// given twice; a crash leaves a gap of at most this many instead.
pub const NUMBER_BLOCK: u64 = 100;

impl Recorder {
    pub fn new(p: Persist) -> Recorder {
        Recorder {
            dir: p.dir,
            history: p.history,
            recovered: p.recovered,
            numbers_on_disk: p.numbers_on_disk,
            cluster: p.cluster,
            remembered: p.memory,
            buffer: Default::default(),
            urgent: Default::default(),
            durable: Default::default(),
        }
    }

    /// Keep `op` for this input's hand-over, to be committed as soon as `urgency` says.
    pub fn record(&self, op: Op, urgency: crate::engine::core::Urgency) {
        use crate::engine::core::Urgency;
        self.buffer.borrow_mut().push(op);
        if urgency != Urgency::Later {
            self.urgent.set(true);
        }
        if urgency == Urgency::Durable {
            self.durable.set(true);
        }
    }

    /// Commit what was recorded now when it must be on disk before a run starts.
    pub fn hand_over_if_durable(&self) {
        if self.durable.get() {
            self.hand_over();
        }
    }

    /// Hand what this input recorded to the writer (and wait for the commit when it must be durable).
    pub fn hand_over(&self) {
        let mut ops = self.buffer.borrow_mut();
        self.mirror(&ops);
        if self.durable.replace(false) {
            self.urgent.set(false);
            self.history.commit_now(&mut ops);
        } else {
            self.history.send_all(&mut ops, self.urgent.replace(false));
        }
    }

    /// Commit what this input recorded, and everything before it, now: whether it is on disk.
    pub fn commit_all(&self) -> bool {
        self.durable.set(false);
        self.urgent.set(false);
        let mut ops = self.buffer.borrow_mut();
        self.mirror(&ops);
        self.history.commit_now(&mut ops)
    }

    /// The history rows among `ops` go to the cluster's shared history too.
    fn mirror(&self, ops: &[Op]) {
        let Some(cluster) = &self.cluster else { return };
        let mut rows: Vec<Op> = ops
            .iter()
            .filter(|op| {
                matches!(
                    op,
                    Op::Append(_) | Op::Update(_) | Op::Retry(_) | Op::Try(_)
                )
            })
            .cloned()
            .collect();
        cluster.send_all(&mut rows, false);
    }

    /// Hand over the rest and let the writers commit it and end (the lock is let go).
    pub fn close(self) {
        self.hand_over();
        self.history.close();
        if let Some(cluster) = self.cluster {
            cluster.close();
        }
    }

    /// What the core starts from: what a previous runner left (taken: the core keeps it from now on).
    pub fn setup(&mut self, log_dir: Option<PathBuf>) -> crate::engine::core::Setup {
        let memory = std::mem::take(&mut self.remembered);
        crate::engine::core::Setup {
            handled: memory.handled,
            last_runs: memory.last_runs,
            last_success: memory.last_success,
            numbers_on_disk: self.numbers_on_disk,
            paused: memory.paused,
            log_dir,
            cluster: self.cluster.is_some(),
        }
    }
}
