//! Where a durable channel keeps its messages until they are done (SPEC §8): one interface, a local segment log
//! in the state directory now ([`local::LocalLog`]), Redis streams for a cluster next (§9).
//!
//! The store is synchronous and decides nothing about time: the engine's committer groups appends and calls
//! [`DurableStore::commit`] at most 10 ms after a writer's line, and delivers nothing that is not committed.
//! Sequence numbers count messages from 1 per channel and are never reused, so an `each` run can be idempotent on
//! `FLOWRUN_MESSAGE_SEQ`.

pub mod local;
mod ranges;

use std::io;
use std::time::SystemTime;

pub use ranges::RangeSet;

/// A message's number in its channel, from 1.
pub type Seq = u64;

/// `count` messages from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqRange {
    pub start: Seq,
    pub count: u64,
}

impl SeqRange {
    pub fn end(&self) -> Seq {
        self.start + self.count
    }
}

/// Messages that were not done when the store was opened: delivered again, first, in their order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The first message's number; the rest follow without gaps.
    pub seq: Seq,
    pub count: u64,
    /// The messages, each ending in `\n`.
    pub bytes: Vec<u8>,
    /// How many times the first of them was handed to a reader before (0: never).
    pub deliveries: u32,
}

/// What a durable channel holds, for `status`, the API and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Committed messages not done.
    pub depth: u64,
    /// When the oldest of them was appended.
    pub oldest: Option<SystemTime>,
    pub bytes_on_disk: u64,
}

/// The sync of a staged commit.
pub type Sync = Box<dyn FnOnce() -> io::Result<()> + Send>;

/// A durable channel's store.
pub trait DurableStore: Send {
    /// Append whole messages (`count` of them, each ending in `\n`): the first one's number. Not durable, and not
    /// to be delivered, until [`DurableStore::commit`] returns.
    fn append(&mut self, messages: &[u8], count: u64) -> io::Result<Seq>;
    /// Write what was appended, delivered and done so far; the sync it returns makes it durable, and may run
    /// without the store (so appends go on while the disk syncs). Then [`DurableStore::settle`].
    fn stage(&mut self) -> io::Result<Sync>;
    /// After a sync: give back what is done (segments, the journal's old records).
    fn settle(&mut self) -> io::Result<()>;
    /// Stage, sync and settle: everything so far is durable.
    fn commit(&mut self) -> io::Result<()> {
        (self.stage()?)()?;
        self.settle()
    }
    /// These messages were handed to a reader (a redelivery after a crash says how often).
    fn delivered(&mut self, range: SeqRange) -> io::Result<()>;
    /// These messages are done: never delivered again; their space is given back once all before them are too.
    fn done(&mut self, range: SeqRange) -> io::Result<()>;
    /// How many times the message `seq` was handed to a reader (and not done).
    fn deliveries(&self, seq: Seq) -> u32;
    /// What opening found that a person should hear (taken once).
    fn take_notes(&mut self) -> Vec<String> {
        Vec::new()
    }
    /// What was not done when the store was opened (taken once).
    fn take_pending(&mut self) -> Vec<Pending>;
    fn usage(&self) -> Usage;
}
