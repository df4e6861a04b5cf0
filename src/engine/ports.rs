//! The shell's side of the core's [`World`] port: the real channels' queues, the state store's writer, and the
//! runs' log files (what the core asks must be answered within a decision).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::broker::Chunk;
use super::channels::Channels;
use super::core::runs::{Batch, RunId};
use super::core::{Taken, Urgency, World};
use super::record::Recorder;
use super::runlog::RunLog;
use crate::plan::{ChannelId, JobId, Plan};
use crate::store::Op;

pub(super) struct ShellWorld {
    pub channels: Channels,
    /// The state store's writer (`None`: `--state none`).
    pub memory: Option<Recorder>,
    /// The log file of each live run (with `--log-dir`).
    pub logs: HashMap<RunId, Arc<RunLog>>,
}

impl World for ShellWorld {
    fn take(&mut self, channel: ChannelId, reader: JobId, max: usize) -> Option<Taken> {
        let queue = self.channels.reader_queue(channel, reader)?;
        loop {
            if let Some((data, count, seqs)) = queue.pop_numbered(max) {
                let delivery = queue.durable.as_ref().map_or(1, |d| d.delivered(&seqs));
                return Some(Taken {
                    data,
                    count,
                    seqs,
                    delivery,
                });
            }
            // Ask the writer pumps for a wake-up, then look again in case messages arrived meanwhile.
            queue.wake_dispatcher.store(true, Ordering::Release);
            if queue.waiting() == 0 {
                return None;
            }
        }
    }

    fn give_back(&mut self, reader: JobId, batch: &Batch) -> bool {
        let Some(queue) = self.channels.home_queue(batch.from, reader) else {
            return false;
        };
        if batch.seqs.is_empty() {
            queue.push_front(Chunk::from_vec(batch.data.to_vec(), batch.count));
            return true;
        }
        // A durable batch goes back as its numbered pieces (a redelivery may have joined two runs of numbers).
        let mut pieces = Vec::new();
        let mut rest: &[u8] = &batch.data;
        for range in &batch.seqs {
            let n = range.count as usize;
            let at = memchr::memchr_iter(b'\n', rest)
                .nth(n - 1)
                .map_or(rest.len(), |i| i + 1);
            pieces.push(Chunk::numbered(rest[..at].to_vec(), n, range.start));
            rest = &rest[at..];
        }
        for piece in pieces.into_iter().rev() {
            queue.push_front(piece);
        }
        true
    }

    fn done(&mut self, batch: &Batch) {
        if batch.seqs.is_empty() {
            return;
        }
        if let Some(durable) = &self.channels.all[batch.from].durable {
            durable.done(&batch.seqs);
        }
    }

    fn unsettled(&self, channel: ChannelId, reader: JobId) -> bool {
        self.channels
            .reader_queue(channel, reader)
            .is_some_and(|q| !q.settled())
    }

    fn input_over(&self, channel: ChannelId, reader: JobId) -> bool {
        self.channels.input_over(channel, reader)
    }

    fn pipe_readers_gone(&self, channel: ChannelId) -> bool {
        self.channels.pipe_readers_gone(channel)
    }

    fn closed(&self, channel: ChannelId) -> bool {
        self.channels.all[channel].closed
    }

    fn close(&mut self, channel: ChannelId) -> u64 {
        self.channels.close(channel)
    }

    fn reader_done(&mut self, channel: ChannelId, reader: JobId) {
        self.channels.reader_done(channel, reader);
    }

    fn readers_gone(&mut self, channel: ChannelId) {
        self.channels.readers_gone(channel);
    }

    fn reader_back(&mut self, channel: ChannelId, reader: JobId) {
        self.channels.reader_back(channel, reader);
    }

    fn rewire(&mut self, plan: Arc<Plan>, rebuilt: &[ChannelId]) {
        self.channels.rewire(plan, rebuilt);
    }

    fn left(&self, channel: ChannelId) -> u64 {
        self.channels.counts(channel).left
    }

    fn shut(&mut self) {
        self.channels.shut();
    }

    fn dead_letter(&mut self, channel: ChannelId, data: &[u8], count: usize) {
        self.channels.dead_letter(channel, data, count);
    }

    fn stored(&self) -> bool {
        self.memory.is_some()
    }

    fn record(&mut self, op: Op, urgency: Urgency) {
        if let Some(m) = &self.memory {
            m.record(op, urgency);
        }
    }

    fn commit_all(&mut self) -> bool {
        self.memory.as_ref().is_none_or(|m| m.commit_all())
    }

    fn committed(&self) -> u64 {
        self.memory.as_ref().map_or(0, |m| m.history.committed())
    }

    fn next_seq(&self) -> u64 {
        self.memory.as_ref().map_or(0, |m| m.history.next_seq())
    }

    fn hand_over_if_durable(&mut self) {
        if let Some(m) = &self.memory {
            m.hand_over_if_durable();
        }
    }

    fn log_written(&self, id: RunId) -> Option<String> {
        let log = self.logs.get(&id)?;
        log.written().map(|p| p.display().to_string())
    }

    fn random(&mut self) -> f64 {
        rand::random::<f64>()
    }
}
