//! The message broker: bounded queues of newline-framed messages, the pumps that fill them from writer runs,
//! the feeders that stream them into `stdin:` readers, and take-back of what a reader left unread.
//!
//! Messages travel in chunks (one buffer holding many whole messages, split with memchr), so the hot path
//! allocates per read, not per message. Capacity is counted in messages; a writer waits for room, which stops
//! the runner reading its pipe, which blocks the writer process (backpressure).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use super::committer::Durable;
use crate::durable::{Seq, SeqRange};

/// Whole messages (each ends with `\n`) inside a shared buffer.
#[derive(Clone, Debug)]
pub struct Chunk {
    data: Arc<Vec<u8>>,
    start: usize,
    end: usize,
    count: usize,
    /// The first message's number in a durable channel (0: not durable).
    seq: Seq,
}

impl Chunk {
    pub fn from_vec(data: Vec<u8>, count: usize) -> Chunk {
        Chunk::numbered(data, count, 0)
    }
    /// Messages of a durable channel, the first numbered `seq`.
    pub fn numbered(data: Vec<u8>, count: usize, seq: Seq) -> Chunk {
        let end = data.len();
        Chunk {
            data: Arc::new(data),
            start: 0,
            end,
            count,
            seq,
        }
    }
    /// Its messages' numbers, in a durable channel.
    pub fn range(&self) -> Option<SeqRange> {
        (self.seq > 0 && self.count > 0).then_some(SeqRange {
            start: self.seq,
            count: self.count as u64,
        })
    }
    pub fn bytes(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }
    /// Split after the `n`-th message: (first n, rest).
    fn split(&self, n: usize) -> (Chunk, Chunk) {
        let at = nth_newline(self.bytes(), n).map_or(self.end, |i| self.start + i + 1);
        (
            Chunk {
                data: self.data.clone(),
                start: self.start,
                end: at,
                count: n,
                seq: self.seq,
            },
            Chunk {
                data: self.data.clone(),
                start: at,
                end: self.end,
                count: self.count - n,
                seq: if self.seq == 0 {
                    0
                } else {
                    self.seq + n as u64
                },
            },
        )
    }
}

/// The index of the `n`-th (1-based) newline. Whole blocks are counted (vectorised) and only the last block
/// is searched newline by newline: splitting is then about as cheap as counting.
fn nth_newline(bytes: &[u8], n: usize) -> Option<usize> {
    const BLOCK: usize = 256;
    let mut remaining = n;
    let mut offset = 0;
    for block in bytes.chunks(BLOCK) {
        let count = memchr::memchr_iter(b'\n', block).count();
        if count >= remaining {
            return memchr::memchr_iter(b'\n', block)
                .nth(remaining - 1)
                .map(|i| offset + i);
        }
        remaining -= count;
        offset += block.len();
    }
    None
}

/// Message counts of one channel (SPEC §3: in = out + left).
#[derive(Default, Debug)]
pub struct Stats {
    pub taken_in: AtomicU64,
    pub handed_out: AtomicU64,
    /// Taken in when no reader could ever read them (every reader had ended, or the runner was stopping):
    /// counted, not kept. They are part of `left`.
    pub discarded: AtomicU64,
    /// The runner is stopping: a writer's remaining output is counted until it ends.
    pub stopping: AtomicBool,
}

impl Stats {
    /// Messages a writer wrote that no reader will ever read: taken in, and left.
    fn discard(&self, count: u64) {
        self.taken_in.fetch_add(count, Ordering::Relaxed);
        self.discarded.fetch_add(count, Ordering::Relaxed);
    }
}

/// One FIFO of waiting messages: a queue channel has one, a broadcast channel one per reader job.
pub struct Queue {
    inner: Mutex<Inner>,
    /// A reload may change it.
    capacity: AtomicUsize,
    pub stats: Arc<Stats>,
    /// Woken when messages arrive or the queue closes (feeders wait on it).
    data: Notify,
    /// Woken when room appears (writer pumps wait on it); shared by the queues of one channel.
    space: Arc<Notify>,
    /// Set by the dispatcher when an `each` job waits for messages; cleared by the pump that wakes it.
    pub wake_dispatcher: AtomicBool,
    orphaned: AtomicBool,
    /// A durable queue's store: messages are committed before they wait here, and done there.
    pub durable: Option<Arc<Durable>>,
}

#[derive(Default)]
struct Inner {
    chunks: VecDeque<Chunk>,
    waiting: usize,
    closed: bool,
    /// Streaming feeders parked for want of messages: a writer may hand them a whole read at once.
    idle_feeders: usize,
    /// The live `stdin:` readers' feeds: what they hold unread may come back (take-back).
    feeds: Vec<Arc<Feed>>,
}

impl Queue {
    pub fn new(capacity: usize, stats: Arc<Stats>, space: Arc<Notify>) -> Arc<Queue> {
        Queue::with_store(capacity, stats, space, None)
    }

    /// A queue whose messages are kept in `durable` until done.
    pub fn with_store(
        capacity: usize,
        stats: Arc<Stats>,
        space: Arc<Notify>,
        durable: Option<Arc<Durable>>,
    ) -> Arc<Queue> {
        Arc::new(Queue {
            inner: Mutex::new(Inner::default()),
            capacity: AtomicUsize::new(capacity.max(1)),
            stats,
            data: Notify::new(),
            space,
            wake_dispatcher: AtomicBool::new(false),
            orphaned: AtomicBool::new(false),
            durable,
        })
    }

    pub fn waiting(&self) -> usize {
        self.inner.lock().unwrap().waiting
    }

    /// Closed, empty, and no live reader holds messages that could come back: nothing will ever wait here again.
    pub fn settled(&self) -> bool {
        let inner = self.inner.lock().unwrap();
        inner.closed && inner.waiting == 0 && inner.feeds.is_empty()
    }

    /// Whether a reader other than `me` holds messages it has not read (they come back if it exits).
    fn others_hold(&self, me: &Feed) -> bool {
        let feeds = self.inner.lock().unwrap().feeds.clone();
        feeds
            .iter()
            .any(|f| !std::ptr::eq(f.as_ref(), me) && f.holds_unread())
    }

    /// No writer can add more: feeders end their readers' input once the rest is delivered.
    pub fn close(&self) {
        self.inner.lock().unwrap().closed = true;
        self.data.notify_waiters();
    }

    /// No reader job can ever read this queue again: writers stop waiting for room (what they still hold is
    /// kept and counted as left) and their pumps end, so a writer process sees a closed pipe as in a shell.
    pub fn orphan(&self) {
        self.orphaned.store(true, Ordering::Release);
        self.space.notify_waiters();
    }

    /// A reload gave the queue a reader again: writers that are still live feed it again.
    pub fn adopt(&self) {
        self.orphaned.store(false, Ordering::Release);
    }

    /// A reload changed the channel's capacity: writers waiting for room look again.
    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity.max(1), Ordering::Relaxed);
        self.space.notify_waiters();
    }

    fn is_orphaned(&self) -> bool {
        self.orphaned.load(Ordering::Acquire)
    }

    /// How many more messages may wait here before `capacity` (a cluster's consumer reads no more than this).
    pub fn free(&self) -> usize {
        let inner = self.inner.lock().unwrap();
        self.capacity
            .load(Ordering::Relaxed)
            .saturating_sub(inner.waiting)
    }

    /// Woken when room appears.
    pub fn space(&self) -> Arc<Notify> {
        self.space.clone()
    }

    /// How many messages a writer may add now. When nothing waits and a reader's feeder is parked, a whole read
    /// may go at once: it is handed straight to a ready reader rather than waiting, so `capacity` (which bounds
    /// messages that wait for want of a reader) still holds, and the pump and feeder trade large blocks instead of
    /// ping-ponging `capacity` messages at a time.
    fn room(&self) -> usize {
        let inner = self.inner.lock().unwrap();
        if inner.waiting == 0 && inner.idle_feeders > 0 {
            return usize::MAX / 2;
        }
        self.capacity
            .load(Ordering::Relaxed)
            .saturating_sub(inner.waiting)
    }

    /// Add messages without waiting for room: a writer's that had room, dead letters (which must not block the
    /// dispatcher), what a durable store kept.
    pub fn push_unbounded(&self, chunk: Chunk) {
        if chunk.count == 0 {
            return;
        }
        self.stats
            .taken_in
            .fetch_add(chunk.count as u64, Ordering::Relaxed);
        let mut inner = self.inner.lock().unwrap();
        inner.waiting += chunk.count;
        inner.chunks.push_back(chunk);
        drop(inner);
        self.data.notify_waiters();
    }

    /// Put messages back at the front (take-back); they were counted out and now wait again.
    pub fn push_front(&self, chunk: Chunk) {
        if chunk.count == 0 {
            return;
        }
        self.stats
            .handed_out
            .fetch_sub(chunk.count as u64, Ordering::Relaxed);
        let mut inner = self.inner.lock().unwrap();
        inner.waiting += chunk.count;
        inner.chunks.push_front(chunk);
        drop(inner);
        self.data.notify_waiters();
    }

    /// Take up to `n` messages as one buffer (an `each` run's input), or `None` when nothing waits; with the
    /// numbers of the messages in a durable queue (ranges, in order: a redelivery may come before newer ones).
    pub fn pop_numbered(&self, n: usize) -> Option<(Vec<u8>, usize, Vec<SeqRange>)> {
        let mut inner = self.inner.lock().unwrap();
        if inner.waiting == 0 {
            return None;
        }
        let mut out = Vec::new();
        let mut taken = 0;
        let mut ranges: Vec<SeqRange> = Vec::new();
        while taken < n {
            let Some(front) = inner.chunks.pop_front() else {
                break;
            };
            let want = n - taken;
            let chunk = if front.count > want {
                let (head, rest) = front.split(want);
                inner.chunks.push_front(rest);
                head
            } else {
                front
            };
            out.extend_from_slice(chunk.bytes());
            taken += chunk.count;
            if let Some(r) = chunk.range() {
                match ranges.last_mut() {
                    Some(last) if last.end() == r.start => last.count += r.count,
                    _ => ranges.push(r),
                }
            }
        }
        inner.waiting -= taken;
        drop(inner);
        self.stats
            .handed_out
            .fetch_add(taken as u64, Ordering::Relaxed);
        self.space.notify_waiters();
        Some((out, taken, ranges))
    }

    /// Take what waits (up to about `max_bytes`, at least one chunk) for the streaming reader fed by `me`, waiting
    /// for something; `None` once nothing can come any more: the queue is closed and empty, and no other live
    /// reader holds unread messages (a reader that exits hands them back, and they must find a reader). Several
    /// chunks go out in one vectored write.
    async fn pop_chunks(&self, max_bytes: usize, me: &Feed) -> Option<Vec<Chunk>> {
        loop {
            let notified = self.data.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let closed = {
                let mut inner = self.inner.lock().unwrap();
                if let Some(first) = inner.chunks.pop_front() {
                    let mut bytes = first.bytes().len();
                    let mut count = first.count;
                    let mut taken = vec![first];
                    while let Some(next) = inner.chunks.front() {
                        if bytes + next.bytes().len() > max_bytes || taken.len() >= 256 {
                            break;
                        }
                        bytes += next.bytes().len();
                        count += next.count;
                        taken.push(inner.chunks.pop_front().expect("front exists"));
                    }
                    inner.waiting -= count;
                    drop(inner);
                    self.stats
                        .handed_out
                        .fetch_add(count as u64, Ordering::Relaxed);
                    self.space.notify_waiters();
                    return Some(taken);
                }
                if !inner.closed {
                    inner.idle_feeders += 1;
                }
                inner.closed
            };
            if closed {
                if !self.others_hold(me) {
                    return None;
                }
                // Another reader holds unread messages. Reading them is not signalled, so look again soon; its
                // exit (a take-back) wakes this at once. Only a closed channel's last readers wait like this.
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(HOLD_RECHECK) => {}
                }
                continue;
            }
            // Counted as parked until woken or cancelled (a feeder is aborted when its reader exits).
            let _parked = Parked(self);
            self.space.notify_waiters();
            notified.await;
        }
    }
}

/// How often a reader at the end of a closed channel looks whether the other readers still hold unread messages.
const HOLD_RECHECK: Duration = Duration::from_millis(5);

/// Un-counts a parked feeder however its wait ends.
struct Parked<'a>(&'a Queue);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        let mut inner = self.0.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.idle_feeders -= 1;
    }
}

/// The queues a channel's writers feed (one for a queue channel, one per reader job for broadcast), shared with
/// the live writers' pumps: a reload may give a broadcast channel a reader, or take one away, while a writer runs.
pub struct Fanout(RwLock<Arc<[Arc<Queue>]>>);

impl Fanout {
    pub fn new(queues: Vec<Arc<Queue>>) -> Arc<Fanout> {
        Arc::new(Fanout(RwLock::new(queues.into())))
    }

    /// The queues now (a snapshot: one reference count, no copy).
    pub fn now(&self) -> Arc<[Arc<Queue>]> {
        self.0.read().unwrap().clone()
    }

    pub fn set(&self, queues: Vec<Arc<Queue>>) {
        *self.0.write().unwrap() = queues.into();
    }
}

/// What one writer feeds, and who to tell.
#[derive(Clone)]
pub struct Target {
    pub fanout: Arc<Fanout>,
    pub stats: Arc<Stats>,
    /// Woken when room appears in any of the channel's queues.
    pub space: Arc<Notify>,
    pub max_message: usize,
    /// Called when an `each` job was waiting for messages on a queue this pump just filled.
    pub wake: Arc<dyn Fn() + Send + Sync>,
    /// A durable queue's pieces appended and not yet committed, in order, with their commit: the pump reads on
    /// while the disk syncs, and they reach the queue once committed (see `Target::forward`).
    pub uncommitted: Arc<Mutex<VecDeque<(u64, Chunk, bool)>>>,
    /// The store of a durable queue (fixed for the channel's life: a reload does not change it under a writer).
    pub durable: Option<Arc<Durable>>,
}

/// How often a pump waiting for a commit looks whether the runner is stopping.
const STOP_LOOK: Duration = Duration::from_millis(100);

/// How many bytes of a durable queue's messages a pump may hold appended and not yet committed.
const UNCOMMITTED_BYTES: usize = 4 << 20;

impl Target {
    /// Hand the committed pieces of a durable queue to it, in order; wait for commits while more than `keep`
    /// bytes are held (0: until every piece is delivered, at the pump's end).
    pub async fn forward(&self, durable: &Durable, keep: usize) {
        loop {
            let (next, held) = {
                let pending = self.uncommitted.lock().unwrap();
                let held: usize = pending.iter().map(|(_, c, _)| c.bytes().len()).sum();
                (pending.front().map(|(g, _, _)| *g), held)
            };
            let Some(generation) = next else { return };
            if !durable.is_committed(generation) {
                if held <= keep {
                    return;
                }
                // A store that cannot commit (a full disk) must not hold the runner's stop: once it stops, what
                // is not committed is given up (counted as left, and said by the store's notice).
                tokio::select! {
                    _ = durable.committed(generation) => {}
                    _ = tokio::time::sleep(STOP_LOOK) => {
                        if self.stats.stopping.load(Ordering::Acquire) {
                            self.give_up_uncommitted();
                            return;
                        }
                        continue;
                    }
                }
            }
            let (_, piece, all_gone) = self
                .uncommitted
                .lock()
                .unwrap()
                .pop_front()
                .expect("a piece");
            self.deliver(piece, all_gone);
        }
    }

    /// The runner stops and the store cannot commit: the pieces still waiting for it are counted as left.
    fn give_up_uncommitted(&self) {
        let pieces: Vec<_> = self.uncommitted.lock().unwrap().drain(..).collect();
        for (_, piece, _) in pieces {
            self.stats.discard(piece.count as u64);
            if let Some(durable) = &self.durable {
                durable.lose(piece.count as u64);
            }
        }
    }

    /// A committed piece reaches the durable queue (with no reader in this runner: counted as left, and kept in
    /// the store for the next start, not held in memory).
    fn deliver(&self, piece: Chunk, all_gone: bool) {
        // Committed to the cluster's stream: the cluster's readers (this runner's too, through its consumer) take
        // it from there. Counted as in and handed out here.
        if self.durable.as_ref().is_some_and(|d| d.shared) {
            let n = piece.count as u64;
            self.stats.taken_in.fetch_add(n, Ordering::Relaxed);
            self.stats.handed_out.fetch_add(n, Ordering::Relaxed);
            return;
        }
        if all_gone {
            self.stats.discard(piece.count as u64);
            return;
        }
        for q in self.fanout.now().iter() {
            self.enqueue(q, piece.clone());
        }
    }

    /// A piece waits in `q`; its readers, and an `each` job waiting for messages, hear of it.
    fn enqueue(&self, q: &Queue, piece: Chunk) {
        q.push_unbounded(piece);
        if q.wake_dispatcher.swap(false, Ordering::AcqRel) {
            (self.wake)();
        }
    }

    /// Append a piece of a durable queue to its store and hold it until it is committed (the pump reads on, up
    /// to `UNCOMMITTED_BYTES` ahead). A store that cannot write holds the writer back, as a full queue does.
    async fn hold(&self, durable: &Arc<Durable>, mut piece: Chunk, all_gone: bool) {
        let generation = loop {
            match durable.append(piece.bytes(), piece.count as u64) {
                Ok((seq, generation)) => {
                    piece.seq = seq;
                    break generation;
                }
                Err(_) if self.stats.stopping.load(Ordering::Acquire) => {
                    durable.lose(piece.count as u64);
                    return self.stats.discard(piece.count as u64);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        self.uncommitted
            .lock()
            .unwrap()
            .push_back((generation, piece, all_gone));
        self.forward(durable, UNCOMMITTED_BYTES).await;
    }

    /// At the pump's end: every piece of a durable queue it still holds, delivered once committed.
    pub async fn flush(&self) {
        if let Some(durable) = &self.durable {
            self.forward(durable, 0).await;
        }
    }

    /// Resolves once the oldest piece the pump holds is committed (never, when it holds none): a writer that
    /// writes a line now and then must not wait for its next line to see this one delivered.
    async fn oldest_committed(&self) {
        // A plain queue's pump never waits here (no lock taken on its path).
        let Some(durable) = &self.durable else {
            return std::future::pending().await;
        };
        let oldest = self.uncommitted.lock().unwrap().front().map(|(g, _, _)| *g);
        match oldest {
            Some(generation) => durable.committed(generation).await,
            None => std::future::pending().await,
        }
    }

    /// Deliver what is committed, waiting for nothing.
    async fn deliver_committed(&self) {
        if let Some(durable) = &self.durable {
            self.forward(durable, usize::MAX).await;
        }
    }

    /// Push whole messages, waiting for room in every queue; splits the chunk to what fits. Returns false when
    /// no queue has a reader any more (the pump should stop reading).
    async fn push(&self, mut chunk: Chunk) -> bool {
        while chunk.count > 0 {
            let (queues, room) = loop {
                // A queue shared by the cluster's runners is the stream: its room is the stream's (its commit
                // waits while the stream is full), not this runner's queue's.
                if self.durable.as_ref().is_some_and(|d| d.shared) {
                    break (self.fanout.now(), chunk.count);
                }
                // The queues of one channel share one `space` signal, so one wait covers them all.
                let notified = self.space.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                // Looked at anew each time: a reload may have added or taken away a reader meanwhile.
                let queues = self.fanout.now();
                // The least room among queues that still have a reader; none left: `usize::MAX`.
                let room = queues
                    .iter()
                    .filter(|q| !q.is_orphaned())
                    .map(|q| q.room())
                    .min();
                match room {
                    None => break (queues, usize::MAX),
                    Some(room) if room > 0 => break (queues, room),
                    Some(_) => {}
                }
                notified.await;
            };
            let piece = if chunk.count > room {
                let (head, rest) = chunk.split(room);
                chunk = rest;
                head
            } else {
                let empty = Chunk::from_vec(Vec::new(), 0);
                std::mem::replace(&mut chunk, empty)
            };
            // A durable queue's messages are committed before anyone can see them (a queue channel has one
            // queue): they wait with the pump for their commit.
            if let Some(durable) = &self.durable {
                self.hold(durable, piece, room == usize::MAX).await;
                continue;
            }
            // A broadcast reader whose job has ended gets no more copies (its queue would only grow); the copy
            // was never taken in for it, so in = out + left still holds. When no reader is left at all, the
            // last piece is kept (as left) so the writer's final output is accounted for.
            let all_gone = room == usize::MAX;
            if queues.is_empty() {
                // A broadcast whose every reader a reload took away: the piece is counted, as left.
                self.stats.discard(piece.count as u64);
            }
            for q in queues.iter().filter(|q| all_gone || !q.is_orphaned()) {
                self.enqueue(q, piece.clone());
            }
            if room == usize::MAX {
                return false;
            }
        }
        // A durable queue always has a reader: the next start's.
        self.durable.is_some() || !self.fanout.now().iter().all(|q| q.is_orphaned())
    }
}

/// How a writer pump ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PumpEnd {
    /// The writer's output ended; everything was taken.
    Eof,
    /// The output ended in the middle of a line (the writer died mid-line?): those bytes were delivered as the
    /// last message, and the run's exit says so.
    Partial {
        bytes: usize,
    },
    /// A line longer than `max_message`: the run fails; what came before was kept.
    Overlong {
        length: usize,
    },
    /// The process exited but something it left behind kept the pipe open; the pipe was abandoned.
    Abandoned,
    /// No reader can take more; the pipe was closed so the writer stops, as in a shell pipeline.
    NoReader,
    Error(String),
}

/// Set when the run's process has exited. A pump reads everything the pipe holds (what the process wrote before
/// it exited is delivered, however long backpressure held the pump); once nothing is readable it waits at most
/// until `DRAIN` after the exit for a background process that still holds the pipe, and after that window it
/// takes at most `DRAIN_BYTES` more, so a background process that keeps printing cannot hold the run open.
#[derive(Default)]
pub struct ExitFlag {
    exited: std::sync::OnceLock<tokio::time::Instant>,
    notify: Notify,
}

impl ExitFlag {
    pub fn set(&self) {
        let _ = self.exited.set(tokio::time::Instant::now());
        self.notify.notify_waiters();
    }

    /// Whether the process has exited.
    pub fn is_set(&self) -> bool {
        self.exited.get().is_some()
    }

    /// Resolves `DRAIN` after the process exited. The window is counted from the exit, however often this is
    /// called: a background process that keeps printing cannot move it.
    pub async fn drained(&self) {
        loop {
            let n = self.notify.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if let Some(&at) = self.exited.get() {
                tokio::time::sleep_until(at + DRAIN).await;
                return;
            }
            n.await;
        }
    }

    /// Whether the drain window after the exit is over.
    pub fn window_over(&self) -> bool {
        self.exited
            .get()
            .is_some_and(|&at| tokio::time::Instant::now() >= at + DRAIN)
    }
}

/// Bytes read from a pipe after the drain window before it is abandoned.
pub const DRAIN_BYTES: usize = 1 << 20;

pub const DRAIN: Duration = Duration::from_millis(200);
const READ_SIZE: usize = 1024 * 1024;
/// Reads smaller than this are copied out of the pump's buffer rather than handed over with it.
const SMALL_READ: usize = 64 * 1024;

/// Read a writer run's standard output into the channel, framing it into messages.
pub async fn pump_writer<R: AsyncRead + Unpin>(
    src: R,
    target: Target,
    exit: Arc<ExitFlag>,
) -> PumpEnd {
    let end = pump_lines_into(src, &target, exit).await;
    // A durable queue's last pieces reach it before the run can be said to have ended.
    target.flush().await;
    end
}

async fn pump_lines_into<R: AsyncRead + Unpin>(
    mut src: R,
    target: &Target,
    exit: Arc<ExitFlag>,
) -> PumpEnd {
    let mut buf: Vec<u8> = Vec::with_capacity(READ_SIZE);
    let mut late_bytes = 0;
    loop {
        if buf.capacity() - buf.len() < READ_SIZE / 4 {
            buf.reserve(READ_SIZE);
        }
        let before = buf.len();
        let read = tokio::select! {
            // Reading comes first: what is in the pipe is delivered before the drain can end it.
            biased;
            r = src.read_buf(&mut buf) => r,
            _ = exit.drained() => {
                // Whatever arrived is still delivered; a partial last line counts as a message.
                finish(&mut buf, target).await;
                return PumpEnd::Abandoned;
            }
            // (Reading a pipe is cancellation-safe: what was not read stays in it.)
            _ = target.oldest_committed() => {
                target.deliver_committed().await;
                continue;
            }
        };
        if exit.window_over() {
            late_bytes += buf.len().saturating_sub(before);
            if late_bytes >= DRAIN_BYTES {
                // Printing on after the window: deliver what came, leave the rest to the background process.
                finish(&mut buf, target).await;
                return PumpEnd::Abandoned;
            }
        }
        match read {
            Ok(0) => return at_eof(&mut buf, target).await,
            Ok(_) => {}
            Err(e) => return PumpEnd::Error(e.to_string()),
        }
        // Frame the complete lines; keep the partial tail for the next read.
        let Some(last_nl) = memchr::memrchr(b'\n', &buf) else {
            if buf.len() > target.max_message {
                return PumpEnd::Overlong { length: buf.len() };
            }
            continue;
        };
        // When the whole buffer is within max_message no line can be longer: just count.
        let count = if last_nl < target.max_message {
            memchr::memchr_iter(b'\n', &buf[..=last_nl]).count()
        } else {
            match check_lengths(&buf[..=last_nl], target.max_message) {
                Ok(count) => count,
                Err((kept_len, kept_count, length)) => {
                    if kept_count > 0 {
                        target
                            .push(Chunk::from_vec(buf[..kept_len].to_vec(), kept_count))
                            .await;
                    }
                    return PumpEnd::Overlong { length };
                }
            }
        };
        let complete = take_lines(&mut buf, last_nl);
        if !target.push(Chunk::from_vec(complete, count)).await {
            // Nobody will read more. What the writer already wrote still counts (as taken in and left): at
            // shutdown everything until its output ends (it is being stopped), otherwise what the pipe holds
            // now, and then the pipe is closed so the writer stops as in a shell pipeline.
            let until_eof = target.stats.stopping.load(Ordering::Acquire);
            count_rest(&mut src, buf, target, until_eof).await;
            return PumpEnd::NoReader;
        }
    }
}

/// The writer's output ended: a last line without its newline is a message (when within `max_message`).
async fn at_eof(buf: &mut Vec<u8>, target: &Target) -> PumpEnd {
    if buf.is_empty() {
        return PumpEnd::Eof;
    }
    if buf.len() > target.max_message {
        return PumpEnd::Overlong { length: buf.len() };
    }
    let bytes = buf.len();
    finish(buf, target).await;
    PumpEnd::Partial { bytes }
}

/// The complete lines of `buf` (up to `last_nl`), taken out; the partial tail stays for the next read.
fn take_lines(buf: &mut Vec<u8>, last_nl: usize) -> Vec<u8> {
    if last_nl + 1 < SMALL_READ {
        // A small read (a message now and then): copy it out and keep the big buffer. Handing over the buffer
        // would cost an allocation of READ_SIZE (an mmap and its page faults) per message.
        let complete = buf[..=last_nl].to_vec();
        buf.drain(..=last_nl);
        complete
    } else {
        // A large read: hand the buffer itself over (no copy) and start a new one.
        let tail = buf.split_off(last_nl + 1);
        let complete = std::mem::replace(buf, tail);
        if buf.capacity() < READ_SIZE {
            buf.reserve(READ_SIZE - buf.len());
        }
        complete
    }
}

/// Count, without keeping them, the messages still coming from a writer nobody will read: until the output ends
/// (`until_eof`), or what is readable now. A partial last line counts as a message.
async fn count_rest<R: AsyncRead + Unpin>(
    src: &mut R,
    mut buf: Vec<u8>,
    target: &Target,
    until_eof: bool,
) {
    let mut count = 0u64;
    loop {
        count += memchr::memchr_iter(b'\n', &buf).count() as u64;
        let tail = buf.len() - memchr::memrchr(b'\n', &buf).map_or(0, |i| i + 1);
        buf.drain(..buf.len() - tail);
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(64 * 1024);
        }
        let read = if until_eof {
            src.read_buf(&mut buf).await
        } else {
            tokio::select! {
                biased;
                r = src.read_buf(&mut buf) => r,
                _ = std::future::ready(()) => Ok(0),
            }
        };
        if !matches!(read, Ok(n) if n > 0) {
            break;
        }
    }
    count += u64::from(!buf.is_empty());
    // A broadcast message counts once per reader job (once when a reload took every reader away).
    target
        .stats
        .discard(count * target.fanout.now().len().max(1) as u64);
}

/// Count the lines of `data` (which ends with a newline), or find the first longer than `max`:
/// `Err((bytes before it, lines before it, its length))`.
fn check_lengths(data: &[u8], max: usize) -> Result<usize, (usize, usize, usize)> {
    let mut count = 0;
    let mut line_start = 0;
    for nl in memchr::memchr_iter(b'\n', data) {
        if nl - line_start > max {
            return Err((line_start, count, nl - line_start));
        }
        count += 1;
        line_start = nl + 1;
    }
    Ok(count)
}

async fn finish(buf: &mut Vec<u8>, target: &Target) {
    if buf.is_empty() {
        return;
    }
    let mut data = std::mem::take(buf);
    if data.last() != Some(&b'\n') {
        data.push(b'\n');
    }
    let count = memchr::memchr_iter(b'\n', &data).count();
    target.push(Chunk::from_vec(data, count)).await;
}

/// What a feeder has written into one reader's pipe, kept so unread messages can be taken back.
#[derive(Default)]
pub struct FeedState {
    /// Chunks written (or being written), each with its offset in the pipe's byte stream.
    sent: VecDeque<(u64, Chunk)>,
    written: u64,
    pipe_size: usize,
}

impl FeedState {
    fn stream_end(&self) -> u64 {
        self.sent
            .back()
            .map_or(self.written, |(o, c)| o + c.bytes().len() as u64)
    }
}

/// One `stdin:` reader run's feed: what was sent into its pipe, and a read end the runner keeps, through which
/// the unread bytes are seen and, once the reader has exited, taken out.
pub struct Feed {
    state: Mutex<FeedState>,
    read_end: std::os::fd::OwnedFd,
}

impl Feed {
    /// Register a new reader's feed with its queue; `read_end` is a read end of the reader's pipe.
    pub fn register(queue: &Queue, read_end: std::os::fd::OwnedFd) -> Arc<Feed> {
        let feed = Arc::new(Feed {
            state: Mutex::new(FeedState::default()),
            read_end,
        });
        queue.inner.lock().unwrap().feeds.push(feed.clone());
        feed
    }

    /// The runner's own read end of the reader's pipe.
    pub fn read_end(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.read_end)
    }

    /// Whether some of what was sent is not read yet (in the pipe, or not yet written into it).
    fn holds_unread(&self) -> bool {
        let s = self.state.lock().unwrap();
        let unread = super::process::unread_bytes(std::os::fd::AsFd::as_fd(&self.read_end)) as u64;
        s.written.saturating_sub(unread) < s.stream_end()
    }
}

/// Stream a queue into a reader run's standard input until nothing more can come (see `pop_chunks`).
/// Cancellation-safe for take-back: between two awaits, what is taken from the queue is recorded in `sent` and
/// what is written into the pipe in `written`, so an abort leaves the two consistent.
pub async fn feed(
    queue: Arc<Queue>,
    mut pipe: tokio::net::unix::pipe::Sender,
    feed: Arc<Feed>,
    pipe_size: usize,
) {
    feed.state.lock().unwrap().pipe_size = pipe_size;
    while let Some(chunks) = next_chunks(&queue, &feed, pipe_size).await {
        {
            let mut s = feed.state.lock().unwrap();
            for chunk in &chunks {
                let stream_start = s.stream_end();
                s.sent.push_back((stream_start, chunk.clone()));
            }
            // Chunks entirely older than a pipe's worth of bytes have surely been read: done.
            let horizon = s.written.saturating_sub(s.pipe_size as u64);
            let mut read = Vec::new();
            while s.sent.len() > 1 && s.sent[0].0 + s.sent[0].1.bytes().len() as u64 <= horizon {
                read.extend(s.sent.pop_front().and_then(|(_, c)| c.range()));
            }
            if let Some(durable) = &queue.durable {
                durable.done(&read);
            }
        }
        if let Some(durable) = &queue.durable {
            let ranges: Vec<SeqRange> = chunks.iter().filter_map(Chunk::range).collect();
            durable.delivered(&ranges);
        }
        let total: usize = chunks.iter().map(|c| c.bytes().len()).sum();
        let mut done = 0;
        while done < total {
            // The slices still to write: skip whole chunks already written, then the written part of the next.
            let mut skip = done;
            let slices: Vec<std::io::IoSlice> = chunks
                .iter()
                .filter_map(|c| {
                    let b = c.bytes();
                    if skip >= b.len() {
                        skip -= b.len();
                        None
                    } else {
                        let s = &b[skip..];
                        skip = 0;
                        Some(std::io::IoSlice::new(s))
                    }
                })
                .collect();
            match pipe.write_vectored(&slices).await {
                Ok(n) => {
                    done += n;
                    feed.state.lock().unwrap().written += n as u64;
                    done_reading(&queue, &feed);
                }
                // Cannot happen while the runner holds a read end; what is left is taken back.
                Err(_) => return,
            }
        }
    }
    let _ = pipe.shutdown().await;
}

/// How often a feeder waiting for messages looks whether its reader took what it was sent out of the pipe.
const READ_LOOK: Duration = Duration::from_millis(100);

/// The next messages for a `stdin:` reader. While it waits, what the reader takes out of its pipe is done now and
/// then (a durable queue's messages must not wait for the next write to be done: a shared queue's writers wait for
/// room in the stream, which only done messages make).
async fn next_chunks(queue: &Arc<Queue>, feed: &Arc<Feed>, pipe_size: usize) -> Option<Vec<Chunk>> {
    let max = pipe_size.max(64 * 1024);
    loop {
        let holds = queue.durable.is_some() && !feed.state.lock().unwrap().sent.is_empty();
        if !holds {
            return queue.pop_chunks(max, feed).await;
        }
        tokio::select! {
            chunks = queue.pop_chunks(max, feed) => return chunks,
            _ = tokio::time::sleep(READ_LOOK) => done_reading(queue, feed),
        }
    }
}

/// A durable queue's messages the reader has taken out of its pipe (all it was sent, less what the pipe still
/// holds) are done, a chunk at a time; the feed forgets them.
fn done_reading(queue: &Queue, feed: &Feed) {
    let Some(durable) = &queue.durable else {
        return;
    };
    let unread = super::process::unread_bytes(feed.read_end()) as u64;
    let mut s = feed.state.lock().unwrap();
    let consumed = s.written.saturating_sub(unread);
    let mut read = Vec::new();
    while !s.sent.is_empty() && s.sent[0].0 + s.sent[0].1.bytes().len() as u64 <= consumed {
        read.extend(s.sent.pop_front().and_then(|(_, c)| c.range()));
    }
    drop(s);
    durable.done(&read);
}

/// After a reader run exited (and its feeder task is gone): take the bytes it left in its pipe out (so nothing
/// that outlived it can read them later), put the messages it did not read back at the front of its queue, and
/// unregister the feed. A message the reader read only part of is handed out again whole, so no message is lost;
/// returns how many messages went back.
pub fn take_back(queue: &Queue, feed: &Arc<Feed>) -> usize {
    let unread = drain_pipe(&feed.read_end);
    let (returned, read) = {
        let s = feed.state.lock().unwrap();
        unread_chunks(&s, s.written.saturating_sub(unread as u64))
    };
    if let Some(durable) = &queue.durable {
        durable.done(&read);
    }
    let count: usize = returned.iter().map(|c| c.count).sum();
    {
        let mut inner = queue.inner.lock().unwrap();
        inner.feeds.retain(|f| !Arc::ptr_eq(f, feed));
    }
    if count > 0 {
        for chunk in returned.into_iter().rev() {
            queue.push_front(chunk);
        }
    } else {
        // Readers waiting for the last holder to finish can end now.
        queue.data.notify_waiters();
    }
    count
}

/// Of what a feeder sent, the messages a reader that `consumed` this many bytes of its stream did not read (as
/// chunks, keeping their numbers), and the numbers of those it read.
fn unread_chunks(s: &FeedState, consumed: u64) -> (Vec<Chunk>, Vec<SeqRange>) {
    let mut returned = Vec::new();
    let mut read = Vec::new();
    for (start, chunk) in &s.sent {
        let end = start + chunk.bytes().len() as u64;
        if end <= consumed {
            read.extend(chunk.range());
            continue;
        }
        let bytes = chunk.bytes();
        let from = if *start < consumed {
            let within = (consumed - start) as usize;
            // Back to the start of the message that the reader was in the middle of.
            memchr::memrchr(b'\n', &bytes[..within]).map_or(0, |i| i + 1)
        } else {
            0
        };
        let whole_read = memchr::memchr_iter(b'\n', &bytes[..from]).count();
        if whole_read == 0 {
            returned.push(chunk.clone());
            continue;
        }
        let (head, rest) = chunk.split(whole_read);
        read.extend(head.range());
        if rest.count > 0 {
            returned.push(rest);
        }
    }
    (returned, read)
}

/// Read out whatever is left in a pipe through `fd`, without blocking; returns how many bytes that was.
fn drain_pipe(fd: &std::os::fd::OwnedFd) -> usize {
    use std::os::fd::{AsFd, AsRawFd};
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let available = super::process::unread_bytes(fd.as_fd());
        if available == 0 {
            return total;
        }
        let want = available.min(buf.len());
        // SAFETY: reading at most `want` bytes into a buffer of at least that size. FIONREAD said they are there,
        // so this does not block (the reader has exited; nothing else should be reading).
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, want) };
        if n <= 0 {
            return total;
        }
        total += n as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_newline_across_blocks() {
        let text: Vec<u8> = (0..5000)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        for n in [1, 2, 999, 1000, 4999, 5000] {
            let expected = memchr::memchr_iter(b'\n', &text).nth(n - 1);
            assert_eq!(nth_newline(&text, n), expected, "n = {n}");
        }
        assert_eq!(nth_newline(&text, 5001), None);
    }

    #[test]
    fn pop_batch_splits_chunks_and_counts() {
        let stats = Arc::new(Stats::default());
        let q = Queue::new(10, stats.clone(), Arc::new(Notify::new()));
        q.push_unbounded(Chunk::from_vec(b"a\nb\nc\n".to_vec(), 3));
        assert_eq!(q.pop_numbered(2), Some((b"a\nb\n".to_vec(), 2, vec![])));
        assert_eq!(q.waiting(), 1);
        assert_eq!(q.pop_numbered(5), Some((b"c\n".to_vec(), 1, vec![])));
        assert_eq!(q.pop_numbered(1), None);
        assert_eq!(stats.taken_in.load(Ordering::Relaxed), 3);
        assert_eq!(stats.handed_out.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn take_back_returns_whole_messages() {
        let stats = Arc::new(Stats::default());
        let q = Queue::new(10, stats.clone(), Arc::new(Notify::new()));
        let (r, mut w) = os_pipe::pipe().unwrap();
        let feed = Feed::register(&q, r.into());
        let chunk = Chunk::from_vec(b"one\ntwo\nthree\n".to_vec(), 3);
        stats.handed_out.fetch_add(3, Ordering::Relaxed);
        {
            let mut s = feed.state.lock().unwrap();
            s.sent.push_back((0, chunk));
            s.written = 14;
        }
        // The reader consumed "one\ntw": 8 bytes are still in the pipe; "two" is handed out again whole.
        std::io::Write::write_all(&mut w, b"o\nthree\n").unwrap();
        assert!(!q.settled());
        assert_eq!(take_back(&q, &feed), 2);
        assert_eq!(
            q.pop_numbered(10),
            Some((b"two\nthree\n".to_vec(), 2, vec![]))
        );
        assert_eq!(stats.handed_out.load(Ordering::Relaxed), 3);
        q.close();
        assert!(q.settled(), "no reader holds anything any more");
    }
}
