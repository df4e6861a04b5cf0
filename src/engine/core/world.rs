//! The port through which the core asks what must be answered within a decision: the channels' queues and the
//! state store. The shell's world is the real channels and the store's writer (`ports::ShellWorld`); the
//! unit tests' world is made of vectors.

use crate::plan::{ChannelId, JobId};
use crate::store::Op;

use super::runs::{Batch, RunId};

/// How soon a record must reach the store.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Urgency {
    /// With the writer's next batch.
    Later,
    /// Without waiting for the writer's window (a handled firing, a block of numbers).
    Soon,
    /// On disk before a run starts (an `at` firing: it never fires twice).
    Durable,
}

/// Messages taken for an `each` run.
pub struct Taken {
    pub data: Vec<u8>,
    pub count: usize,
    /// Their numbers in a durable channel (empty otherwise).
    pub seqs: Vec<crate::durable::SeqRange>,
    /// How many times the first of them has been handed out, this time included (`FLOWRUN_DELIVERY`).
    pub delivery: u32,
}

pub trait World {
    /// Up to `max` messages for `reader` of `channel`; `None` when none waits (the writers then wake the core
    /// when some come).
    fn take(&mut self, channel: ChannelId, reader: JobId, max: usize) -> Option<Taken>;
    /// An `each` run's messages are done (it succeeded, or they went to the dead letter, or failed for good):
    /// a durable channel lets them go.
    fn done(&mut self, batch: &Batch);
    /// Messages a run or firing did not finish wait again at the front of their queue (of `reader`'s, or the
    /// copy a reader a reload removed had); whether they went anywhere.
    fn give_back(&mut self, reader: JobId, batch: &Batch) -> bool;
    /// Whether messages may still come for `reader` of `channel` (its queue is not closed and drained).
    fn unsettled(&self, channel: ChannelId, reader: JobId) -> bool;
    /// Whether nothing will ever wait for this `stdin:` reader again.
    fn input_over(&self, channel: ChannelId, reader: JobId) -> bool;
    /// Whether every reader of a pipe channel has ended.
    fn pipe_readers_gone(&self, channel: ChannelId) -> bool;
    fn closed(&self, channel: ChannelId) -> bool;
    /// No writer can add more: returns the messages the channel took in.
    fn close(&mut self, channel: ChannelId) -> u64;
    /// A reader job can run no more (a broadcast reader's copy gets no more messages).
    fn reader_done(&mut self, channel: ChannelId, reader: JobId);
    /// No reader can ever read the channel again: its writers stop waiting.
    fn readers_gone(&mut self, channel: ChannelId);
    /// A reload made a job that was done a reader again (or a new one): the writers still live feed it again.
    fn reader_back(&mut self, channel: ChannelId, reader: JobId);
    /// A reload: the channels follow the merged plan (`rebuilt`: those whose kind changed).
    fn rewire(&mut self, plan: std::sync::Arc<crate::plan::Plan>, rebuilt: &[ChannelId]);
    /// Messages waiting in the channel.
    fn left(&self, channel: ChannelId) -> u64;
    /// The runner stops: writers blocked on full queues finish, pipes' ends go.
    fn shut(&mut self);
    fn dead_letter(&mut self, channel: ChannelId, data: &[u8], count: usize);

    /// Whether there is a state store (`--state none`: nothing is recorded, every number is ready).
    fn stored(&self) -> bool;
    fn record(&mut self, op: Op, urgency: Urgency);
    /// Commit everything recorded so far, now: whether it is on disk.
    fn commit_all(&mut self) -> bool;
    /// The sequence number of the last hand-over the store committed.
    fn committed(&self) -> u64;
    /// The sequence number the next hand-over will carry.
    fn next_seq(&self) -> u64;
    /// Commit what was recorded now if it must be on disk before a run starts.
    fn hand_over_if_durable(&mut self);

    /// The log file run `id` wrote, if it wrote one.
    fn log_written(&self, id: RunId) -> Option<String>;
    /// A number in [0, 1) (a firing's jitter).
    fn random(&mut self) -> f64;
}
