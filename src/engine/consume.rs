//! This runner's consumer of a durable queue shared by its cluster (SPEC §9): it fills the channel's local queue
//! from the cluster's stream as far as the queue has room (so `capacity` bounds what this runner holds, and the
//! rest waits in the stream for any runner), and claims the messages of runners whose heartbeat is gone. The
//! reads block (up to a second), so they run on the blocking pool; the task ends with the runner.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::broker::{Chunk, Queue, Stats};
use crate::cluster::queue::{Consumer, Read};

/// How many messages one read takes at most.
const READ_MAX: usize = 1000;

/// Consume the cluster's stream into `queue` until the runner stops (`stopping`); `wake` tells the dispatcher
/// messages came (an `each` job may wait for them).
pub fn start(
    consumer: Consumer,
    queue: Arc<Queue>,
    lease: Duration,
    stats: Arc<Stats>,
    wake: Arc<dyn Fn() + Send + Sync>,
) {
    let consumer = Arc::new(Mutex::new(consumer));
    tokio::spawn(async move {
        let mut looked = Instant::now();
        loop {
            if stats.stopping.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            let free = queue.free();
            if free == 0 {
                // Wait for room (or look at the stop now and then).
                let space = queue.space();
                let _ = tokio::time::timeout(Duration::from_millis(200), space.notified()).await;
                continue;
            }
            let reader = consumer.clone();
            let claim = looked.elapsed() >= lease / 3;
            if claim {
                looked = Instant::now();
            }
            let read = tokio::task::spawn_blocking(move || {
                let mut c = reader.lock().unwrap_or_else(|e| e.into_inner());
                if claim {
                    let _ = c.claim_the_dead();
                }
                c.read(free.min(READ_MAX))
            })
            .await;
            match read {
                Ok(Ok(reads)) if !reads.is_empty() => {
                    for chunk in chunks(reads) {
                        queue.push_unbounded(chunk);
                    }
                    if queue
                        .wake_dispatcher
                        .swap(false, std::sync::atomic::Ordering::AcqRel)
                    {
                        wake();
                    }
                }
                Ok(Ok(_)) => {}
                // The store does not answer: read again a little later (the heartbeat says it is down).
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    });
}

/// Messages in runs of consecutive numbers, one chunk each (a chunk's messages are numbered from its first).
fn chunks(reads: Vec<Read>) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut data = Vec::new();
    let (mut first, mut count) = (0, 0u64);
    for r in reads {
        if count > 0 && r.seq != first + count {
            out.push(Chunk::numbered(
                std::mem::take(&mut data),
                count as usize,
                first,
            ));
            count = 0;
        }
        if count == 0 {
            first = r.seq;
        }
        data.extend_from_slice(&r.message);
        count += 1;
    }
    if count > 0 {
        out.push(Chunk::numbered(data, count as usize, first));
    }
    out
}
