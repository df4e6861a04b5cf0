//! A durable queue shared by the runners of a cluster (SPEC §9): a Redis stream with one consumer group. Writers
//! on any runner add to it (the channel's [`DurableStore`] is the stream: a commit is the `XADD`s answered, so a
//! writer's line counts as committed once Redis has it, and the committer's group commit and backpressure work as
//! for the local store); `each` and `stdin` readers on every runner consume from it through this runner's
//! consumer (`XREADGROUP`, as much as the local queue has room for); a message is done (`XACK`, then `XDEL`) by the
//! rules of §8. The messages a runner had when it died wait in its consumer's pending list: the others claim them
//! once its heartbeat is gone (`XCLAIM`, idle for at least the lease, so two runners never both get them), and a
//! runner that starts again under the same id gets its own back first.
//!
//! Every message carries its number in the channel (`seq`, from one counter: `FLOWRUN_MESSAGE_SEQ` is unique across
//! the cluster). `capacity` bounds the messages in the stream not done: a writer waits while it is full.

use redis::Commands;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::store::connect;
use super::{Config, Keys};
use crate::durable::{DurableStore, Pending, Seq, SeqRange, Sync, Usage};

/// Add a batch: KEYS the stream, the channel's counter; ARGV the capacity, then the messages (each without its
/// newline). Returns the first message's number, or -1 when the stream holds `capacity` messages not done.
static APPEND: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r#"
local n = #ARGV - 1
if redis.call('XLEN', KEYS[1]) + n > tonumber(ARGV[1]) and redis.call('XLEN', KEYS[1]) > 0 then return -1 end
local first = redis.call('INCRBY', KEYS[2], n) - n + 1
for i = 2, #ARGV do
  redis.call('XADD', KEYS[1], '*', 's', first + i - 2, 'm', ARGV[i])
end
return first
"#,
    )
});

/// The messages this runner's consumer handed out and not done: by number, their stream id and how many times
/// each was handed out.
type Held = Arc<Mutex<HashMap<Seq, (String, u32)>>>;

/// The stream of a shared durable channel, as its store.
pub struct StreamStore {
    keys: Keys,
    channel: String,
    capacity: usize,
    /// Messages appended and not yet sent, by batch.
    appended: Vec<Vec<u8>>,
    local_seq: Seq,
    /// Sent by the commit's sync outside the store's lock (kept until Redis answered, so a failed commit sends
    /// them again).
    outbox: Arc<Mutex<Outbox>>,
    /// The stream ids of the messages this runner's consumer handed out, by number (to ack them when done), and
    /// how often each was handed out.
    held: Held,
    conn: Arc<Mutex<Option<redis::Connection>>>,
    client: redis::Client,
    depth: Arc<std::sync::atomic::AtomicU64>,
}

#[derive(Default)]
struct Outbox {
    batches: Vec<Vec<Vec<u8>>>,
    acks: Vec<String>,
}

impl StreamStore {
    /// The store of `channel` (the stream and its group are made at the first connection: a store that does not
    /// answer at the start does not keep the runner from starting).
    pub fn open(
        config: &Config,
        client: redis::Client,
        channel: &str,
        capacity: usize,
    ) -> io::Result<StreamStore> {
        let keys = config.keys();
        Ok(StreamStore {
            keys,
            channel: channel.to_string(),
            capacity,
            appended: Vec::new(),
            local_seq: 0,
            outbox: Default::default(),
            held: Default::default(),
            conn: Arc::new(Mutex::new(None)),
            client,
            depth: Default::default(),
        })
    }

    /// What the consumer needs: the ids it must ack, and the connection's maker.
    pub fn consumer_side(&self) -> (Held, Arc<std::sync::atomic::AtomicU64>) {
        (self.held.clone(), self.depth.clone())
    }
}

/// Make the stream and its consumer group, unless they are there.
fn group(conn: &mut redis::Connection, stream: &str) -> redis::RedisResult<()> {
    let created: redis::RedisResult<String> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg("readers")
        .arg("0")
        .arg("MKSTREAM")
        .query(conn);
    match created {
        Err(e) if e.code() != Some("BUSYGROUP") => Err(e),
        _ => Ok(()),
    }
}

/// Send what the outbox holds: each batch (atomically: one script), then the acks. A batch the stream has no room
/// for makes the commit wait (`WouldBlock`: the writers wait, as for a full queue).
fn send(
    conn: &Mutex<Option<redis::Connection>>,
    client: &redis::Client,
    keys: &Keys,
    channel: &str,
    capacity: usize,
    outbox: &Mutex<Outbox>,
) -> io::Result<()> {
    let mut slot = conn.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_none() {
        let mut made = connect(client).map_err(io::Error::other)?;
        group(&mut made, &keys.queue(channel)).map_err(io::Error::other)?;
        *slot = Some(made);
    }
    let c = slot.as_mut().expect("made above");
    let result = (|| -> io::Result<()> {
        let stream = keys.queue(channel);
        // The acks first: they make the room a full stream's writers wait for.
        let acks = std::mem::take(&mut outbox.lock().unwrap().acks);
        if !acks.is_empty() {
            let sent: redis::RedisResult<()> = redis::pipe()
                .cmd("XACK")
                .arg(&stream)
                .arg("readers")
                .arg(&acks)
                .ignore()
                .cmd("XDEL")
                .arg(&stream)
                .arg(&acks)
                .ignore()
                .query(c);
            if let Err(e) = sent {
                outbox.lock().unwrap().acks.extend(acks);
                return Err(io::Error::other(e));
            }
        }
        loop {
            let batch = outbox.lock().unwrap().batches.first().cloned();
            let Some(batch) = batch else { break };
            let mut call = APPEND.key(&stream);
            call.key(keys.queue_seq(channel)).arg(capacity);
            for message in &batch {
                call.arg(&message[..message.len().saturating_sub(1)]);
            }
            let first: i64 = call.invoke(c).map_err(io::Error::other)?;
            if first < 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the shared queue is full",
                ));
            }
            outbox.lock().unwrap().batches.remove(0);
        }
        Ok(())
    })();
    if result
        .as_ref()
        .is_err_and(|e| e.kind() != io::ErrorKind::WouldBlock)
    {
        *slot = None;
    }
    result
}

impl DurableStore for StreamStore {
    fn append(&mut self, messages: &[u8], count: u64) -> io::Result<Seq> {
        self.appended.extend(
            messages
                .split_inclusive(|&b| b == b'\n')
                .map(<[u8]>::to_vec),
        );
        let first = self.local_seq + 1;
        self.local_seq += count;
        Ok(first)
    }

    fn stage(&mut self) -> io::Result<Sync> {
        if !self.appended.is_empty() {
            let batch = std::mem::take(&mut self.appended);
            // At most 1,000 messages a script (Redis runs one script at a time), and no more than the capacity
            // (a batch goes in whole or waits).
            let mut outbox = self.outbox.lock().unwrap();
            for part in batch.chunks(self.capacity.clamp(1, 1000)) {
                outbox.batches.push(part.to_vec());
            }
        }
        let (conn, client, keys, channel, capacity, outbox) = (
            self.conn.clone(),
            self.client.clone(),
            self.keys.clone(),
            self.channel.clone(),
            self.capacity,
            self.outbox.clone(),
        );
        Ok(Box::new(move || {
            send(&conn, &client, &keys, &channel, capacity, &outbox)
        }))
    }

    fn settle(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// Redis keeps who has which message (the consumer's pending list).
    fn delivered(&mut self, _range: SeqRange) -> io::Result<()> {
        Ok(())
    }

    fn done(&mut self, range: SeqRange) -> io::Result<()> {
        let mut held = self.held.lock().unwrap();
        let mut outbox = self.outbox.lock().unwrap();
        for seq in range.start..range.end() {
            if let Some((id, _)) = held.remove(&seq) {
                outbox.acks.push(id);
            }
        }
        Ok(())
    }

    fn deliveries(&self, seq: Seq) -> u32 {
        self.held
            .lock()
            .unwrap()
            .get(&seq)
            .map_or(0, |(_, n)| n.saturating_sub(1))
    }

    fn take_pending(&mut self) -> Vec<Pending> {
        Vec::new()
    }

    fn usage(&self) -> Usage {
        Usage {
            depth: self.depth.load(std::sync::atomic::Ordering::Relaxed),
            oldest: None,
            bytes_on_disk: 0,
        }
    }
}

/// One message read from the stream.
pub struct Read {
    pub seq: Seq,
    pub message: Vec<u8>,
}

/// This runner's consumer of a shared queue: it reads (its own pending list first: what a previous start of this
/// runner or a dead runner left it), and claims the pending messages of runners whose heartbeat is gone.
pub struct Consumer {
    keys: Keys,
    channel: String,
    runner: String,
    lease: Duration,
    client: redis::Client,
    conn: Option<redis::Connection>,
    held: Held,
    depth: Arc<std::sync::atomic::AtomicU64>,
    /// Where reading its own pending list goes on from (at the start, and after claiming a dead runner's):
    /// `None` once it is read through (new messages from then on).
    own: Option<String>,
}

impl Consumer {
    pub fn new(
        config: &Config,
        client: redis::Client,
        channel: &str,
        store: &StreamStore,
    ) -> Consumer {
        let (held, depth) = store.consumer_side();
        Consumer {
            keys: config.keys(),
            channel: channel.to_string(),
            runner: config.runner_id.clone(),
            lease: config.lease,
            client,
            conn: None,
            held,
            depth,
            own: Some("0".into()),
        }
    }

    fn conn(&mut self) -> redis::RedisResult<&mut redis::Connection> {
        if self.conn.is_none() {
            let mut conn = connect(&self.client)?;
            group(&mut conn, &self.keys.queue(&self.channel))?;
            // A read waits up to a second for messages.
            conn.set_read_timeout(Some(Duration::from_secs(3)))?;
            self.conn = Some(conn);
        }
        Ok(self.conn.as_mut().expect("made above"))
    }

    /// Up to `max` messages (waiting up to a second for some); an error drops the connection (made again next).
    pub fn read(&mut self, max: usize) -> redis::RedisResult<Vec<Read>> {
        let result = self.read_inner(max);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn read_inner(&mut self, max: usize) -> redis::RedisResult<Vec<Read>> {
        let stream = self.keys.queue(&self.channel);
        let runner = self.runner.clone();
        let own = self.own.is_some();
        let (block, from) = match &self.own {
            Some(cursor) => (None, cursor.clone()),
            None => (Some(1000), ">".to_string()),
        };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg("readers")
            .arg(&runner)
            .arg("COUNT")
            .arg(max.max(1));
        if let Some(ms) = block {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(&stream).arg(&from);
        let reply: Option<redis::streams::StreamReadReply> = cmd.query(self.conn()?)?;
        let entries: Vec<redis::streams::StreamId> = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .collect();
        if own {
            // The pending list is read a page at a time, then new messages.
            self.own = match entries.len() < max.max(1) {
                true => None,
                false => entries.last().map(|e| e.id.clone()),
            };
        }
        let len: u64 = self.conn()?.xlen(&stream)?;
        self.depth.store(len, std::sync::atomic::Ordering::Relaxed);
        let mut reads = Vec::with_capacity(entries.len());
        let mut held = self.held.lock().unwrap();
        for entry in entries {
            let (Some(seq), Some(mut message)) = (
                entry.get::<String>("s").and_then(|s| s.parse::<Seq>().ok()),
                entry.get::<Vec<u8>>("m"),
            ) else {
                continue;
            };
            // A message this runner holds already (its own pending list read again) is not handed out twice.
            if held.contains_key(&seq) {
                continue;
            }
            let delivery = if own { 2 } else { 1 };
            held.insert(seq, (entry.id.clone(), delivery));
            message.push(b'\n');
            reads.push(Read { seq, message });
        }
        Ok(reads)
    }

    /// Claim the pending messages of runners whose heartbeat is gone; whether any came (read them next).
    pub fn claim_the_dead(&mut self) -> redis::RedisResult<bool> {
        let stream = self.keys.queue(&self.channel);
        let lease = self.lease.as_millis() as u64;
        let (keys, me) = (self.keys.clone(), self.runner.clone());
        let conn = self.conn()?;
        let consumers: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&stream)
            .arg("readers")
            .query(conn)?;
        let mut any = false;
        for consumer in consumers {
            let name = consumer
                .get("name")
                .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
                .unwrap_or_default();
            let pending = consumer
                .get("pending")
                .and_then(|v| redis::from_redis_value::<u64>(v.clone()).ok())
                .unwrap_or(0);
            if name == me || pending == 0 {
                continue;
            }
            let alive: bool = conn.exists(keys.runner(&name))?;
            if alive {
                continue;
            }
            let ids: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
                .arg(&stream)
                .arg("readers")
                .arg("-")
                .arg("+")
                .arg(1000)
                .arg(&name)
                .query(conn)?;
            if ids.is_empty() {
                continue;
            }
            let claimed: Vec<String> = redis::cmd("XCLAIM")
                .arg(&stream)
                .arg("readers")
                .arg(&me)
                .arg(lease)
                .arg(ids.iter().map(|i| i.0.clone()).collect::<Vec<_>>())
                .arg("JUSTID")
                .query(conn)?;
            any |= !claimed.is_empty();
        }
        if any {
            self.own = Some("0".into());
        }
        Ok(any)
    }
}
