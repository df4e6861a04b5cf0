//! The channels of a running workflow: their queues (one for a queue channel, one per reader job for broadcast),
//! the one OS pipe of a pipe channel, and how a new run's standard streams are wired to them.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::broker::{Chunk, Fanout, Queue, Stats, Target};
use super::committer::Durable;
use crate::durable::Pending;

/// The durable queues' stores, by channel, with what they held not done.
pub type Stores = std::collections::HashMap<ChannelId, (Arc<Durable>, Vec<Pending>)>;
use super::process;
use super::supervise::{ParentEnds, Wiring};
use crate::event::ChannelCounts;
use crate::plan::{ChannelId, ChannelKind, Job, JobId, Plan};

/// One channel at run time.
pub struct ChannelRt {
    /// One queue for a queue channel; one per reader job (in `readers` order) for broadcast; none for pipe.
    pub queues: Vec<Arc<Queue>>,
    /// The same queues, as the live writers' pumps see them (behind a lock, so kept beside `queues`, which the
    /// dispatcher borrows without one; `build` and `rewire` set both).
    fanout: Arc<Fanout>,
    /// For broadcast: the reader job of each queue (a reload may add and remove readers).
    readers: Vec<JobId>,
    /// Broadcast queues of readers a reload took away: closed (a live run of the old reader reads the rest, then
    /// its end) and still counted, so that what nobody read stays `left` (in = out + left).
    gone: Vec<(JobId, Arc<Queue>)>,
    pub stats: Arc<Stats>,
    /// Writers wait here for room (shared by the channel's queues).
    space: Arc<tokio::sync::Notify>,
    pipe_read: Option<OwnedFd>,
    pipe_write: Option<OwnedFd>,
    /// Why a pipe channel has no pipe (the runner was out of descriptors): its runs fail with this reason.
    broken: Option<String>,
    pub closed: bool,
    /// A durable queue's store.
    pub durable: Option<Arc<Durable>>,
}

impl ChannelRt {
    fn close(&mut self) {
        self.closed = true;
        // Dropping the runner's write end lets the reader see EOF once the writer's runs are gone.
        self.pipe_write = None;
        for q in &self.queues {
            q.close();
        }
    }
}

/// What a durable queue's store kept waits first, in pieces of about `KEPT_PIECE` bytes: a `stdin:` reader's
/// messages are done a piece at a time, so after a crash it is given again no more than a piece and a pipe.
fn kept_first(rt: &ChannelRt, pending: impl IntoIterator<Item = Pending>) {
    for p in pending {
        // Only a durable queue keeps messages, and it has one queue.
        let queue = &rt.queues[0];
        let mut rest: &[u8] = &p.bytes;
        let mut seq = p.seq;
        while !rest.is_empty() {
            let cut = KEPT_PIECE.min(rest.len());
            let end = memchr::memchr(b'\n', &rest[cut - 1..]).map_or(rest.len(), |i| cut + i);
            let piece = &rest[..end];
            let count = memchr::memchr_iter(b'\n', piece).count();
            queue.push_unbounded(Chunk::numbered(piece.to_vec(), count, seq));
            seq += count as u64;
            rest = &rest[end..];
        }
    }
}

/// About how many bytes of kept messages one piece holds.
const KEPT_PIECE: usize = 64 * 1024;

/// The run-time side of one channel of the plan (its counts: `stats`; a durable queue's store).
fn build(c: &crate::plan::Channel, stats: Arc<Stats>, durable: Option<Arc<Durable>>) -> ChannelRt {
    let space = Arc::new(tokio::sync::Notify::new());
    let queue = || Queue::with_store(c.capacity, stats.clone(), space.clone(), durable.clone());
    let (queues, readers) = match c.kind {
        ChannelKind::Queue => (vec![queue()], Vec::new()),
        ChannelKind::Broadcast => (
            c.readers.iter().map(|_| queue()).collect(),
            c.readers.clone(),
        ),
        ChannelKind::Pipe => (Vec::new(), Vec::new()),
    };
    let (pipe_read, pipe_write, broken) = match c.kind {
        // Out of descriptors (a start or a reload) is no panic: the channel's runs fail and say why.
        ChannelKind::Pipe => match os_pipe::pipe() {
            Ok((r, w)) => {
                process::grow_pipe(w.as_fd());
                (Some(OwnedFd::from(r)), Some(OwnedFd::from(w)), None)
            }
            Err(e) => (
                None,
                None,
                Some(format!(
                    "the pipe of channel `{}` could not be made: {e}",
                    c.name
                )),
            ),
        },
        _ => (None, None, None),
    };
    ChannelRt {
        fanout: Fanout::new(queues.clone()),
        queues,
        readers,
        gone: Vec::new(),
        stats,
        space,
        pipe_read,
        pipe_write,
        broken,
        closed: false,
        durable,
    }
}

pub struct Channels {
    plan: Arc<Plan>,
    pub all: Vec<ChannelRt>,
    /// Where a reload opens the store of a channel it makes durable (`STATE/queues`), and who hears of it.
    stores_at: Option<(std::path::PathBuf, Arc<crate::report::Reporter>)>,
}

impl Channels {
    /// The channels of `plan`; durable queues with their stores, and what their stores held not done waiting
    /// first, in order.
    pub fn new(
        plan: Arc<Plan>,
        mut stores: Stores,
        stores_at: Option<(std::path::PathBuf, Arc<crate::report::Reporter>)>,
    ) -> Channels {
        let all = plan
            .channels
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (durable, pending) = stores.remove(&i).unzip();
                let rt = build(c, Arc::default(), durable);
                kept_first(&rt, pending.into_iter().flatten());
                rt
            })
            .collect();
        Channels {
            plan,
            all,
            stores_at,
        }
    }

    /// A durable channel's store, opened for a reload that made it durable (or added it): what it held not done
    /// waits first. Without one (it cannot be opened), the channel runs as a plain queue, and says so.
    fn open_store(&self, channel: &crate::plan::Channel) -> (Option<Arc<Durable>>, Vec<Pending>) {
        let Some((root, reporter)) = self.stores_at.as_ref().filter(|_| channel.durable) else {
            return (None, Vec::new());
        };
        match Durable::open(&root.join(&channel.name), &channel.name, reporter.clone()) {
            Ok((durable, pending)) => (Some(durable), pending),
            Err(e) => {
                reporter.notice(&format!(
                    "channel `{}`: its store cannot be opened ({e}): it is a plain queue until a restart",
                    channel.name
                ));
                (None, Vec::new())
            }
        }
    }

    /// Build channel `c` of `plan` anew: with its store when durable.
    fn build_new(&self, plan: &Plan, c: ChannelId, stats: Arc<Stats>) -> ChannelRt {
        let (durable, pending) = self.open_store(&plan.channels[c]);
        let rt = build(&plan.channels[c], stats, durable);
        kept_first(&rt, pending);
        rt
    }

    /// A reload: the new plan (same indices, channels appended); channels whose kind changed are built anew,
    /// new ones built, and a broadcast's queues follow its readers (kept by job; a new reader gets a new queue, a
    /// reader gone gets no more copies and its queue is closed).
    pub fn rewire(&mut self, plan: Arc<Plan>, rebuilt: &[ChannelId]) {
        for &c in rebuilt {
            // Its counts go on (with the copies of broadcast readers gone before), and a channel that closed stays
            // closed: its writers are done.
            let old = &mut self.all[c];
            let (stats, closed, gone) =
                (old.stats.clone(), old.closed, std::mem::take(&mut old.gone));
            // Nothing uses it (a reload refuses otherwise): built anew, with its store when it is durable now.
            self.all[c] = self.build_new(&plan, c, stats);
            self.all[c].gone = gone;
            if closed {
                self.all[c].close();
            }
        }
        while self.all.len() < plan.channels.len() {
            let rt = self.build_new(&plan, self.all.len(), Arc::default());
            self.all.push(rt);
        }
        for (c, channel) in plan.channels.iter().enumerate() {
            let rt = &mut self.all[c];
            for q in &rt.queues {
                q.set_capacity(channel.capacity);
            }
            if channel.kind != ChannelKind::Broadcast {
                continue;
            }
            let mut queues = Vec::new();
            for &reader in &channel.readers {
                match rt.readers.iter().position(|&r| r == reader) {
                    Some(i) => queues.push(rt.queues[i].clone()),
                    None => {
                        let queue =
                            Queue::new(channel.capacity, rt.stats.clone(), rt.space.clone());
                        // No copy will ever come to a reader of a closed channel: it gets its end at once.
                        if rt.closed {
                            queue.close();
                        }
                        queues.push(queue);
                    }
                }
            }
            for (i, r) in rt.readers.iter().enumerate() {
                if !channel.readers.contains(r) {
                    let queue = &rt.queues[i];
                    queue.orphan();
                    queue.close();
                    rt.gone.push((*r, queue.clone()));
                }
            }
            rt.fanout.set(queues.clone());
            rt.queues = queues;
            rt.readers = channel.readers.clone();
        }
        self.plan = plan;
    }

    /// The queue a reader job reads from a channel (its own copy for broadcast); `None` for a job that is no
    /// reader of it (any more: a reload removed it while a run of it was alive).
    pub fn reader_queue(&self, channel: ChannelId, job: JobId) -> Option<&Arc<Queue>> {
        let rt = &self.all[channel];
        let i = match self.plan.channels[channel].kind {
            ChannelKind::Broadcast => rt.readers.iter().position(|&r| r == job)?,
            _ => 0,
        };
        rt.queues.get(i)
    }

    /// Where messages a reader's run held go back: its queue, or, for a broadcast reader a reload took away, the
    /// copy it had (they count as left there, never read).
    pub fn home_queue(&self, channel: ChannelId, job: JobId) -> Option<&Arc<Queue>> {
        self.reader_queue(channel, job).or_else(|| {
            let gone = &self.all[channel].gone;
            gone.iter().rev().find(|(j, _)| *j == job).map(|(_, q)| q)
        })
    }

    /// Whether nothing will ever wait for this reader again: a pipe that closed, or a queue that settled.
    pub fn input_over(&self, channel: ChannelId, job: JobId) -> bool {
        match self.plan.channels[channel].kind {
            ChannelKind::Pipe => self.all[channel].closed,
            _ => self.reader_queue(channel, job).is_none_or(|q| q.settled()),
        }
    }

    /// Whether every reader of a pipe channel has ended (its writer's SIGPIPE is then no failure).
    pub fn pipe_readers_gone(&self, channel: ChannelId) -> bool {
        self.all[channel].pipe_read.is_none()
    }

    /// What a writer job's pump feeds, and whom it wakes when an idle `each` job waits for messages.
    pub fn target(&self, channel: ChannelId, wake: Arc<dyn Fn() + Send + Sync>) -> Target {
        let c = &self.all[channel];
        Target {
            fanout: c.fanout.clone(),
            stats: c.stats.clone(),
            space: c.space.clone(),
            max_message: self.plan.channels[channel].max_message,
            wake,
            uncommitted: Arc::default(),
            durable: c.durable.clone(),
        }
    }

    /// Messages of an `each` run that failed its last attempt, into its dead-letter channel; without waiting for
    /// room, so the dispatcher never blocks.
    pub fn dead_letter(&self, channel: ChannelId, data: &[u8], count: usize) {
        // Into a durable dead letter, committed before the original messages are let go.
        let seq = match &self.all[channel].durable {
            Some(durable) => durable.append_now(data, count as u64).unwrap_or(0),
            None => 0,
        };
        let chunk = Chunk::numbered(data.to_vec(), count, seq);
        for q in &self.all[channel].queues {
            q.push_unbounded(chunk.clone());
            q.wake_dispatcher.store(false, Ordering::Release);
        }
    }

    /// No writer can add more: readers get the rest and EOF. Returns the messages the channel took in.
    pub fn close(&mut self, channel: ChannelId) -> u64 {
        let c = &mut self.all[channel];
        c.close();
        c.stats.taken_in.load(Ordering::Relaxed)
    }

    /// A broadcast reader job can run no more: its copy gets no more messages.
    pub fn reader_done(&self, channel: ChannelId, job: JobId) {
        if self.plan.channels[channel].kind == ChannelKind::Broadcast {
            if let Some(q) = self.reader_queue(channel, job) {
                q.orphan();
            }
        }
    }

    /// No reader can ever read the channel again: its writers stop waiting (and a pipe's read end goes).
    pub fn readers_gone(&mut self, channel: ChannelId) {
        let c = &mut self.all[channel];
        match self.plan.channels[channel].kind {
            ChannelKind::Pipe => c.pipe_read = None,
            ChannelKind::Queue => c.queues[0].orphan(),
            // Each reader has a copy of its own, let go when that reader is done.
            ChannelKind::Broadcast => {}
        }
    }

    /// A reload made a job that was done a reader again (or a new one): the writers still live feed it again.
    pub fn reader_back(&self, channel: ChannelId, job: JobId) {
        if let Some(q) = self.reader_queue(channel, job) {
            q.adopt();
        }
    }

    /// Shutdown: writers blocked on full queues must be able to finish (nobody will read now), and the pipe
    /// channels' ends go.
    pub fn shut(&mut self) {
        for c in &mut self.all {
            c.stats.stopping.store(true, Ordering::Release);
            for q in &c.queues {
                q.orphan();
            }
            c.pipe_write = None;
            c.pipe_read = None;
        }
    }

    pub fn counts(&self, channel: ChannelId) -> ChannelCounts {
        let c = &self.all[channel];
        ChannelCounts {
            taken_in: c.stats.taken_in.load(Ordering::Relaxed),
            out: c.stats.handed_out.load(Ordering::Relaxed),
            left: c
                .queues
                .iter()
                .chain(c.gone.iter().map(|(_, q)| q))
                .map(|q| q.waiting() as u64)
                .sum::<u64>()
                + c.stats.discarded.load(Ordering::Relaxed),
            // Not when the store lost messages at the stop (said by a notice): then not all of `left` is kept.
            kept: c.durable.as_ref().is_some_and(|d| d.lost() == 0),
        }
    }

    /// The three standard streams of a new run (child ends) and the runner's ends of them.
    pub fn wire(
        &self,
        job_id: JobId,
        job: &Job,
        input: Option<&Arc<Vec<u8>>>,
    ) -> std::io::Result<Wiring> {
        let mut parent = ParentEnds::default();
        let stdin = self.wire_stdin(job_id, job, input, &mut parent)?;
        // Standard output: a pipe channel's write end, a pump into a queue, or prefixed log lines.
        let stdout = match job.stdout {
            Some(c) if self.plan.channels[c].kind == ChannelKind::Pipe => {
                self.unbroken(c)?;
                match &self.all[c].pipe_write {
                    Some(fd) => fd.try_clone()?,
                    None => process::dev_null()?,
                }
            }
            // A queue or broadcast writer gets a large pipe so the pump reads big blocks.
            Some(_) => {
                let (r, w) = process::pipe()?;
                process::grow_pipe(w.as_fd());
                parent.queue_output = Some(r);
                w
            }
            None => {
                let (r, w) = process::pipe()?;
                parent.stdout_read = Some(r);
                w
            }
        };
        let (stderr_read, stderr) = process::pipe()?;
        parent.stderr_read = Some(stderr_read);
        Ok(Wiring {
            stdin,
            stdout,
            stderr,
            parent,
        })
    }

    /// A pipe channel whose pipe could not be made fails the runs wired to it, with the reason.
    fn unbroken(&self, c: ChannelId) -> std::io::Result<()> {
        match &self.all[c].broken {
            Some(why) => Err(std::io::Error::other(why.clone())),
            None => Ok(()),
        }
    }

    /// Standard input: an `each` batch, a channel, or /dev/null (never the runner's own stdin).
    fn wire_stdin(
        &self,
        job_id: JobId,
        job: &Job,
        input: Option<&Arc<Vec<u8>>>,
        parent: &mut ParentEnds,
    ) -> std::io::Result<OwnedFd> {
        if let Some(data) = input {
            let (r, w) = process::pipe()?;
            // Most batches fit in the pipe: written now, and the write end closed (the run reads them, then EOF),
            // with no task to write them. Only the rest of a larger one is left to a task.
            let written = process::write_now(&w, data);
            if written < data.len() {
                parent.input_writer = Some((w, data.clone(), written));
            }
            return Ok(r);
        }
        let Some(c) = job.stdin else {
            return process::dev_null();
        };
        if self.plan.channels[c].kind == ChannelKind::Pipe {
            self.unbroken(c)?;
            return match &self.all[c].pipe_read {
                Some(fd) => fd.try_clone(),
                None => process::dev_null(),
            };
        }
        let (r, w) = process::pipe()?;
        let size = process::grow_pipe(w.as_fd());
        // The runner keeps a read end: unread messages can be counted and taken back.
        let keep = r.try_clone()?;
        let queue = self
            .reader_queue(c, job_id)
            .ok_or_else(|| std::io::Error::other("the job no longer reads this channel"))?;
        parent.feeder_parts = Some((w, keep, size, queue.clone()));
        Ok(r)
    }
}
