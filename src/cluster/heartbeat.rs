//! A runner's heartbeat (SPEC §9): a key that expires after the lease, renewed every lease/3 on a thread of its
//! own, which also watches the others: the live runs of a runner whose heartbeat is gone are taken over, once
//! (one script takes them and deletes them), and marked `interrupted`; the engine hears of them, to try again
//! those with tries left (`failover`). A runner whose own heartbeat lapsed (it was paused, or cut off from the
//! store, longer than its lease) may not claim until it is renewed: the claim script checks it.

use chrono::Utc;
use redis::Commands;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::store::connect;
use super::{scripts, Config, Keys, RunnerInfo};
use crate::report::Reporter;
use crate::store::{Outcome, RunRow};

/// Who hears of what was taken over from a dead runner: its live runs (already marked `interrupted` in the store)
/// and the firings it claimed and never started.
pub type OnTakeOver = Arc<Mutex<Option<Box<dyn Fn(TakenOver) + Send>>>>;

/// What a runner left when its heartbeat went.
#[derive(Debug, Default)]
pub struct TakenOver {
    pub rows: Vec<RunRow>,
    pub orphans: Vec<Orphan>,
}

/// A time firing a dead runner claimed and never started (no run of its number was ever written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub job: String,
    pub fingerprint: String,
    pub at: chrono::DateTime<Utc>,
    pub number: u64,
    /// The claim's key and value as found (taken over only if still so).
    pub key: String,
    pub value: String,
    /// The runner that claimed it.
    pub runner: String,
}

/// Why a runner cannot join its cluster.
#[derive(Debug)]
pub enum JoinError {
    /// Another runner with the same id is alive.
    Taken(String),
    /// The store does not answer.
    Unreachable(String),
    /// The store answered, and refused (a wrong password, a database that does not exist, not Redis).
    Refused(String),
}

/// A store that cannot be reached now, or one that refuses this runner whatever the time.
fn join_error(e: redis::RedisError) -> JoinError {
    let text = e.to_string();
    // A certificate this runner does not trust is refused now and at every try: not a store that is away.
    let untrusted = text.to_ascii_lowercase().contains("certificate");
    let away =
        e.is_io_error() || e.is_timeout() || e.is_connection_refusal() || e.is_connection_dropped();
    match away && !untrusted {
        true => JoinError::Unreachable(text),
        false => JoinError::Refused(text),
    }
}

/// Join the cluster as `info.id`: refused while a runner of that id has a heartbeat; the runs a previous runner
/// of this id left `running` (it died) are marked interrupted (returns how many).
/// `alive`: whether a process of this host lives (a runner of this id whose process is gone is let go at once).
pub fn join(
    config: &Config,
    client: &redis::Client,
    info: &RunnerInfo,
    alive: fn(u32) -> bool,
) -> Result<u64, JoinError> {
    let keys = config.keys();
    let unreachable = join_error;
    let mut conn = connect(client).map_err(unreachable)?;
    let json = serde_json::to_string(info).expect("runner info is JSON");
    let taken = |holder: Option<String>| {
        let holder: Option<RunnerInfo> = holder.and_then(|h| serde_json::from_str(&h).ok());
        JoinError::Taken(match holder {
            Some(h) => format!(
                "runner id `{}` is already in cluster `{}` (host {}, pid {}): give this runner another --runner-id",
                info.id, config.name, h.host, h.pid
            ),
            None => format!("runner id `{}` is already in cluster `{}`: give this runner another --runner-id", info.id, config.name),
        })
    };
    let holder: Option<String> = conn.get(keys.runner(&info.id)).map_err(unreachable)?;
    if let Some(held) = &holder {
        // A runner of this id on this host whose process is gone (killed, and started again within its lease):
        // its heartbeat is let go now rather than waited out.
        let dead_here = serde_json::from_str::<RunnerInfo>(held)
            .is_ok_and(|h| h.host == info.host && !alive(h.pid));
        if !dead_here {
            return Err(taken(holder));
        }
        let _: i64 = redis::cmd("DEL")
            .arg(keys.runner(&info.id))
            .query(&mut conn)
            .map_err(unreachable)?;
    }
    let rows = take_over(&mut conn, &keys, &info.id, &info.id, config)
        .map_err(unreachable)?
        .rows;
    let set: Option<String> = redis::cmd("SET")
        .arg(keys.runner(&info.id))
        .arg(&json)
        .arg("NX")
        .arg("PX")
        .arg(config.lease.as_millis() as u64)
        .query(&mut conn)
        .map_err(unreachable)?;
    if set.is_none() {
        let holder: Option<String> = conn.get(keys.runner(&info.id)).map_err(unreachable)?;
        return Err(taken(holder));
    }
    let _: i64 = conn.sadd(keys.runners(), &info.id).map_err(unreachable)?;
    Ok(rows.len() as u64)
}

/// Take over the live runs of runner `dead` (whose heartbeat is gone), as `by`: marked interrupted in the store,
/// and returned (none when another runner took them first, or the heartbeat is back).
fn take_over(
    conn: &mut redis::Connection,
    keys: &Keys,
    dead: &str,
    by: &str,
    config: &Config,
) -> redis::RedisResult<TakenOver> {
    let mut taken: Vec<redis::Value> = scripts::TAKE_OVER
        .key(keys.runner(dead))
        .key(keys.live(dead))
        .key(keys.runners())
        .arg(dead)
        .invoke(conn)?;
    let first =
        !taken.is_empty() && redis::from_redis_value::<i64>(taken.remove(0)).is_ok_and(|f| f == 1);
    let taken: Vec<String> = taken
        .into_iter()
        .filter_map(|v| redis::from_redis_value(v).ok())
        .collect();
    let now = Utc::now();
    let mut rows = Vec::new();
    if !first {
        return Ok(TakenOver::default());
    }
    for text in taken {
        let Ok(mut row) = serde_json::from_str::<RunRow>(&text) else {
            continue;
        };
        let Some(number) = row.run else { continue };
        row.outcome = Outcome::Interrupted;
        row.ended = Some(now);
        row.duration_ms = row
            .started
            .map(|s| (now - s).num_milliseconds().max(0) as u64);
        row.reason = Some(match dead == by {
            true => "its runner died (its next start found it running)".into(),
            false => format!(
                "its runner {dead} stopped answering (no heartbeat for {}s); taken over by {by}",
                config.lease.as_secs_f64()
            ),
        });
        let json = serde_json::to_string(&row).expect("a row is JSON");
        let _: i64 = scripts::SAVE_RUN
            .key(keys.run(&row.job, number))
            .key(keys.live(dead))
            .key(keys.history())
            .arg(json)
            .arg(format!("{}#{number}", row.job))
            .arg("0")
            .arg(dead)
            .arg(100_000)
            .arg(0)
            .arg("")
            .invoke(conn)?;
        rows.push(row);
    }
    let orphans = match dead == by {
        // Its own claims a runner's next start leaves (it cannot tell them from its claims to come).
        true => Vec::new(),
        false => orphans(conn, keys, dead)?,
    };
    Ok(TakenOver { rows, orphans })
}

/// The time firings runner `dead` claimed and never started: its claims (`ID#PID#START|NUMBER`) whose run was
/// never written.
fn orphans(
    conn: &mut redis::Connection,
    keys: &Keys,
    dead: &str,
) -> redis::RedisResult<Vec<Orphan>> {
    let pattern = format!("{}*", keys.claim_prefix());
    let mut found = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query(conn)?;
        for key in batch {
            let Some(value) = conn.get::<_, Option<String>>(&key)? else {
                continue;
            };
            let Some((who, number)) = value.rsplit_once('|') else {
                continue;
            };
            let number: u64 = number.parse().unwrap_or(0);
            if number == 0 || who.split('#').next() != Some(dead) {
                continue;
            }
            let rest = &key[keys.claim_prefix().len()..];
            let mut parts = rest.rsplitn(3, ':');
            let (Some(at), Some(fingerprint), Some(job)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (Some(at), false) = (
                at.parse::<i64>()
                    .ok()
                    .and_then(|ms| chrono::TimeZone::timestamp_millis_opt(&Utc, ms).single()),
                conn.exists::<_, bool>(keys.run(job, number))?,
            ) else {
                continue;
            };
            found.push(Orphan {
                job: job.to_string(),
                fingerprint: fingerprint.to_string(),
                at,
                number,
                key: key.clone(),
                value: value.clone(),
                runner: dead.to_string(),
            });
        }
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}

/// The heartbeat thread's handle.
pub struct Heartbeat {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    /// Renew `info`'s heartbeat every lease/3 and watch the other runners. `up` says whether the store answers.
    pub fn start(
        config: Config,
        client: redis::Client,
        info: RunnerInfo,
        up: Arc<AtomicBool>,
        reporter: Arc<Reporter>,
        on_take_over: OnTakeOver,
    ) -> Heartbeat {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let beat = Beat {
            keys: config.keys(),
            config,
            client,
            info,
            up,
            reporter,
            on_take_over,
            conn: None,
            said_down: false,
            taken: Arc::new(AtomicBool::new(false)),
            quiet_until: None,
        };
        let shared = stop.clone();
        let thread = std::thread::Builder::new()
            .name("flowrun-heartbeat".into())
            .spawn(move || beat.run(&shared))
            .expect("the heartbeat thread can start");
        Heartbeat {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop beating; the heartbeat goes at once when this runner left no live run (else it expires, and another
    /// runner marks them interrupted).
    pub fn stop(mut self) {
        {
            let (lock, wake) = &*self.stop;
            *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
            wake.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Beat {
    config: Config,
    keys: Keys,
    client: redis::Client,
    info: RunnerInfo,
    up: Arc<AtomicBool>,
    reporter: Arc<Reporter>,
    on_take_over: OnTakeOver,
    conn: Option<redis::Connection>,
    said_down: bool,
    /// Another runner holds this id now: nothing more is renewed or taken over, and the heartbeat is not deleted.
    taken: Arc<AtomicBool>,
    /// After the store answered again: no take-over until then (the others need a renewal to show they live).
    quiet_until: Option<std::time::Instant>,
}

impl Beat {
    fn run(mut self, stop: &(Mutex<bool>, Condvar)) {
        let every = self.config.lease / 3;
        let mut first = true;
        loop {
            // Once another runner holds the id, it is left to it (this one is stopping).
            if !self.taken.load(Ordering::Acquire) {
                self.beat_once(first);
            }
            first = false;
            let (lock, wake) = stop;
            let stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
            let (stopped, _) = wake
                .wait_timeout_while(stopped, every, |s| !*s)
                .unwrap_or_else(|e| e.into_inner());
            if *stopped {
                drop(stopped);
                if !self.taken.load(Ordering::Acquire) {
                    self.leave();
                }
                return;
            }
        }
    }

    /// One beat, and what it says of the store.
    fn beat_once(&mut self, first: bool) {
        {
            match self.beat(first) {
                Ok(()) => {
                    self.up.store(true, Ordering::Release);
                    if self.said_down {
                        // Runners whose heartbeats lapsed while the store was away get a lease to renew them
                        // before any is taken for dead.
                        self.quiet_until = Some(std::time::Instant::now() + self.config.lease);
                        self.said_down = false;
                        self.reporter
                            .notice("the cluster's store answers the heartbeat again");
                    }
                }
                Err(e) => {
                    self.conn = None;
                    self.up.store(false, Ordering::Release);
                    if !self.said_down {
                        self.said_down = true;
                        self.reporter.notice(&format!(
                            "the cluster's store does not answer the heartbeat ({e}): once the lease ({}s) is over, this runner claims nothing until it answers again",
                            self.config.lease.as_secs_f64()
                        ));
                    }
                }
            }
        }
    }

    fn conn(&mut self) -> redis::RedisResult<&mut redis::Connection> {
        if self.conn.is_none() {
            self.conn = Some(connect(&self.client)?);
        }
        Ok(self.conn.as_mut().expect("made above"))
    }

    /// Renew this runner's heartbeat, then take over the runs of runners whose heartbeat is gone.
    fn beat(&mut self, first: bool) -> redis::RedisResult<()> {
        let json = serde_json::to_string(&self.info).expect("runner info is JSON");
        let (keys, id, lease) = (
            self.keys.clone(),
            self.info.id.clone(),
            self.config.lease.as_millis() as u64,
        );
        let conn = self.conn()?;
        let was: i64 = scripts::RENEW
            .key(keys.runner(&id))
            .key(keys.runners())
            .arg(json)
            .arg(lease)
            .arg(&id)
            .invoke(conn)?;
        if was < 0 {
            // Another runner started under this id while this one's lease had lapsed: two runners of one id would
            // claim and take over as one. This one stops.
            self.reporter.notice(&format!(
                "runner id `{id}` was taken by another runner while this one's lease had lapsed (it was paused or cut off): this runner stops"
            ));
            self.taken.store(true, std::sync::atomic::Ordering::Release);
            // SAFETY: a signal to this process; its handler stops the runner as SIGTERM does.
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
            return Ok(());
        }
        if was == 0 && !first {
            self.reporter.notice(&format!(
                "this runner's lease lapsed (it was paused, or cut off from the store, longer than {}s): other runners may have taken over its runs; it claims again from now",
                self.config.lease.as_secs_f64()
            ));
        }
        if self
            .quiet_until
            .is_some_and(|t| std::time::Instant::now() < t)
        {
            return Ok(());
        }
        let others: Vec<String> = self.conn()?.smembers(keys.runners())?;
        for other in others.into_iter().filter(|o| *o != id) {
            let config = self.config.clone();
            let taken = take_over(self.conn()?, &keys, &other, &id, &config)?;
            if taken.rows.is_empty() && taken.orphans.is_empty() {
                continue;
            }
            if !taken.rows.is_empty() {
                self.reporter.notice(&format!(
                    "runner {other} stopped answering: {} of its runs are marked interrupted ({})",
                    taken.rows.len(),
                    taken
                        .rows
                        .iter()
                        .map(|r| format!("{}#{}", r.job, r.run.unwrap_or(0)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if let Some(tell) = &*self.on_take_over.lock().unwrap_or_else(|e| e.into_inner()) {
                tell(taken);
            }
        }
        Ok(())
    }

    /// At a clean stop: the heartbeat goes when no live run is left in the store.
    fn leave(&mut self) {
        let (keys, id) = (self.keys.clone(), self.info.id.clone());
        let Ok(conn) = self.conn() else { return };
        let live: i64 = conn.hlen(keys.live(&id)).unwrap_or(1);
        if live == 0 {
            let _: redis::RedisResult<i64> = conn.del(keys.runner(&id));
            let _: redis::RedisResult<i64> = conn.srem(keys.runners(), &id);
        }
    }
}
