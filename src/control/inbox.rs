//! Manual firings through the cluster's store (`flowrun trigger FILE JOB --store URL`): the command needs no
//! runner on its host. It pushes a request (`RPUSH` on [`Keys::triggers`]); every runner waits on that list
//! (`BLPOP`, on a connection of its own), so exactly one takes each request; it fires the job as the control API
//! does (the same [`Request::Trigger`](crate::engine::requests::Request)) and writes the API's answer to the
//! request's reply list, which the command waits on.
//!
//! A request is fired at most once, and never after its command gave up: a runner that popped it must also take
//! it (`SET NX` of [`Keys::trigger_taken`]) before firing, and a command that heard nothing within its bound
//! cancels it the same way; whichever comes first holds. So a runner that was paused holding a popped request
//! (SIGSTOP, a long GC of the host) does not fire it when it continues after its command said it was not fired.
//! A runner that is stopping gives the request back (it lets go of it and pushes it back to the head) for another.

use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

use crate::cluster::{Config, Keys};
use crate::engine::requests::{EngineHandle, Refusal, TriggerReply};

/// How long a runner's `BLPOP` waits before it looks again whether its engine still takes requests.
const POLL: Duration = Duration::from_secs(1);
/// How long a runner waits before it connects again to a store that did not answer (no hot loop).
const RECONNECT: Duration = Duration::from_secs(1);
/// How long a request's taker (or its cancellation) is kept, and how old a request may be when a runner finds it
/// (older ones are dropped: their command gave up long ago).
const TAKEN_TTL: Duration = Duration::from_secs(2 * 3600);
const STALE: Duration = Duration::from_secs(3600);
/// How long a reply list is kept after its last answer (its command reads it at once, unless it died).
const REPLY_TTL: Duration = Duration::from_secs(600);
/// How long a request may wait unanswered before it is cancelled and sent again (a runner that took it answers
/// at once; one that popped it and froze never will).
const RESEND: Duration = Duration::from_secs(2);
/// The value of [`Keys::trigger_taken`] when the command gave up on the request.
const CANCELLED: &str = "cancelled";

/// A request of `flowrun trigger --store`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TriggerRequest {
    pub id: String,
    pub job: String,
    /// The command waits for the run's end (`--wait`).
    pub wait: bool,
    /// When the command sent it (milliseconds since the epoch, its host's clock).
    pub sent_ms: i64,
}

/// A runner's answer: the control API's status code and body, and whether another answer follows (the run's
/// end, for a command that waits).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TriggerAnswer {
    pub runner: String,
    pub status: u16,
    pub body: Value,
    pub more: bool,
}

/// Start the runner's inbox on the current tokio runtime: it takes requests until its engine stops taking them.
pub fn start(config: &Config, client: redis::Client, engine: EngineHandle) {
    let inbox = Inbox {
        keys: config.keys(),
        runner: config.runner_id.clone(),
        client,
        engine,
    };
    tokio::spawn(inbox.run());
}

#[derive(Clone)]
struct Inbox {
    keys: Keys,
    runner: String,
    client: redis::Client,
    engine: EngineHandle,
}

async fn connect(
    client: &redis::Client,
    response: Duration,
) -> redis::RedisResult<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(crate::cluster::claims::CONNECT_TIMEOUT))
        .set_response_timeout(Some(response));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

impl Inbox {
    async fn run(self) {
        let mut waiting: Option<MultiplexedConnection> = None;
        // A runner that is stopping (or gone) takes no more requests: the others do.
        while self.engine.healthy().await {
            let conn = match waiting.as_mut() {
                Some(conn) => conn,
                None => match connect(
                    &self.client,
                    POLL + crate::cluster::claims::RESPONSE_TIMEOUT,
                )
                .await
                {
                    Ok(conn) => waiting.insert(conn),
                    Err(_) => {
                        tokio::time::sleep(RECONNECT).await;
                        continue;
                    }
                },
            };
            let popped: redis::RedisResult<Option<(String, String)>> = redis::cmd("BLPOP")
                .arg(self.keys.triggers())
                .arg(POLL.as_secs_f64())
                .query_async(conn)
                .await;
            match popped {
                Ok(None) => {}
                Ok(Some((_, text))) => {
                    if let Ok(request) = serde_json::from_str::<TriggerRequest>(&text) {
                        tokio::spawn(self.clone().handle(request, text));
                    }
                }
                Err(_) => {
                    waiting = None;
                    tokio::time::sleep(RECONNECT).await;
                }
            }
        }
    }

    /// Take the request (unless its command gave up on it), fire it, answer.
    async fn handle(self, request: TriggerRequest, text: String) {
        let Ok(mut conn) = connect(&self.client, crate::cluster::claims::RESPONSE_TIMEOUT).await
        else {
            // The store went away between the pop and now: the command hears nothing, cancels and says so.
            return;
        };
        let taken: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(self.keys.trigger_taken(&request.id))
            .arg(&self.runner)
            .arg("NX")
            .arg("PX")
            .arg(TAKEN_TTL.as_millis() as u64)
            .query_async(&mut conn)
            .await;
        if !matches!(taken, Ok(Some(_))) {
            return;
        }
        let age = chrono::Utc::now().timestamp_millis() - request.sent_ms;
        if age > STALE.as_millis() as i64 {
            return;
        }
        let fired = self.engine.trigger(&request.job, request.wait).await;
        let (reply, ended) = match fired {
            Some((
                TriggerReply::Refused {
                    why: Refusal::Stopping,
                    ..
                },
                _,
            ))
            | None => return self.give_back(&mut conn, &request, &text).await,
            Some(fired) => fired,
        };
        let (status, body) = super::trigger_answer(&reply);
        let ended = ended.filter(|_| super::trigger_waits(&reply));
        self.answer(&mut conn, &request, status, body, ended.is_some())
            .await;
        if let Some(ended) = ended {
            let (status, body) = super::trigger_end(ended).await;
            // A run may take long: the connection of its start may have been dropped since.
            match connect(&self.client, crate::cluster::claims::RESPONSE_TIMEOUT).await {
                Ok(mut conn) => self.answer(&mut conn, &request, status, body, false).await,
                Err(_) => self.answer(&mut conn, &request, status, body, false).await,
            }
        }
    }

    /// This runner is stopping: the request goes back to the head of the list, for another runner.
    async fn give_back(
        &self,
        conn: &mut MultiplexedConnection,
        request: &TriggerRequest,
        text: &str,
    ) {
        let _: redis::RedisResult<()> = redis::pipe()
            .atomic()
            .del(self.keys.trigger_taken(&request.id))
            .lpush(self.keys.triggers(), text)
            .query_async(conn)
            .await;
    }

    /// Write an answer to the request's reply list (tried a few times: the command waits for it).
    async fn answer(
        &self,
        conn: &mut MultiplexedConnection,
        request: &TriggerRequest,
        status: u16,
        body: Value,
        more: bool,
    ) {
        let answer = TriggerAnswer {
            runner: self.runner.clone(),
            status,
            body,
            more,
        };
        let json = serde_json::to_string(&answer).expect("an answer is JSON");
        let key = self.keys.reply(&request.id);
        for _ in 0..5 {
            let written: redis::RedisResult<()> = redis::pipe()
                .atomic()
                .rpush(&key, &json)
                .pexpire(&key, REPLY_TTL.as_millis() as i64)
                .query_async(conn)
                .await;
            if written.is_ok() {
                return;
            }
            tokio::time::sleep(RECONNECT).await;
            if let Ok(fresh) = connect(&self.client, crate::cluster::claims::RESPONSE_TIMEOUT).await
            {
                *conn = fresh;
            }
        }
    }
}

/// What came of a request sent by [`ask`].
#[derive(Debug)]
pub enum Asked {
    /// The runner's answer: the control API's status code and body.
    Answer(u16, Value),
    /// No runner of the cluster has a heartbeat: nothing was sent.
    NoRunner,
    /// No runner took the request within the bound (the runners with a heartbeat, by id): it was cancelled and
    /// will not fire.
    NotTaken(Vec<String>),
    /// A runner took it and then gave no answer within the bound (or stopped answering), why.
    Silent(String),
}

/// Send a manual firing of `job` to one live runner of the cluster, and wait for its answer (with `wait`, for the
/// run's end): at most `bound` for a runner to take it and answer its start; the end is waited for as long as the
/// runner that took it keeps its heartbeat.
pub fn ask(
    client: &redis::Client,
    keys: &Keys,
    job: &str,
    wait: bool,
    bound: Duration,
) -> Result<Asked, String> {
    use redis::Commands;
    let mut conn = crate::cluster::store::connect(client).map_err(|e| e.to_string())?;
    let alive = live_runners(&mut conn, keys).map_err(|e| e.to_string())?;
    if alive.is_empty() {
        return Ok(Asked::NoRunner);
    }
    // Past the first send the request may fire: a store lost now may still hand it to a runner when it comes back.
    let sent =
        |e: String| format!("{e} (the request was sent: it may still fire once the store is back)");
    let deadline = std::time::Instant::now() + bound;
    let (request, first) = loop {
        let request = TriggerRequest {
            id: request_id(),
            job: job.to_string(),
            wait,
            sent_ms: chrono::Utc::now().timestamp_millis(),
        };
        let text = serde_json::to_string(&request).expect("a request is JSON");
        let _: i64 = conn
            .rpush(keys.triggers(), &text)
            .map_err(|e| e.to_string())?;
        let reply = keys.reply(&request.id);
        // A runner that took it answers at once: a request not answered within RESEND was popped by a runner
        // that froze (SIGSTOP) or died, or waits in the list; it is cancelled (unless taken meanwhile) and sent
        // again, for a live runner, while the bound lasts.
        let soon = deadline.min(std::time::Instant::now() + RESEND);
        if let Some(answer) = next_answer(&mut conn, &reply, soon).map_err(sent)? {
            break (request, answer);
        }
        if cancel(&mut conn, keys, &request.id).map_err(|e| sent(e.to_string()))? {
            let _: redis::RedisResult<i64> = conn.lrem(keys.triggers(), 1, &text);
            if std::time::Instant::now() < deadline {
                continue;
            }
            let alive = live_runners(&mut conn, keys).map_err(|e| e.to_string())?;
            return Ok(Asked::NotTaken(alive));
        }
        // Taken by a runner: its answer comes (bounded).
        let taker: Option<String> = conn.get(keys.trigger_taken(&request.id)).ok().flatten();
        match next_answer(&mut conn, &reply, std::time::Instant::now() + bound).map_err(sent)? {
            Some(answer) => break (request, answer),
            None => {
                return Ok(Asked::Silent(format!(
                    "runner {} took the request and gave no answer within {}",
                    taker.unwrap_or_else(|| "?".into()),
                    crate::timefmt::duration_ms(bound.as_millis() as u64)
                )))
            }
        }
    };
    let reply = keys.reply(&request.id);
    // Answered: the request is in no list any more, its taker need not be kept.
    let done = |conn: &mut redis::Connection| {
        let _: redis::RedisResult<i64> =
            conn.del(&[reply.clone(), keys.trigger_taken(&request.id)]);
    };
    if !first.more {
        done(&mut conn);
        return Ok(Asked::Answer(first.status, first.body));
    }
    // The run's end: as long as it takes, while its runner keeps its heartbeat.
    let end = wait_for_end(client, &mut conn, keys, &reply, &first.runner, bound);
    if let Ok(Asked::Answer(..)) = &end {
        done(&mut conn);
    }
    end
}

/// The answer that comes when the run ends, as long as it takes while its runner `runner` keeps its heartbeat; a
/// store that goes away meanwhile is waited for (bounded).
fn wait_for_end(
    client: &redis::Client,
    conn: &mut redis::Connection,
    keys: &Keys,
    reply: &str,
    runner: &str,
    bound: Duration,
) -> Result<Asked, String> {
    use redis::Commands;
    loop {
        match next_answer(conn, reply, std::time::Instant::now() + POLL) {
            Ok(Some(end)) => return Ok(Asked::Answer(end.status, end.body)),
            Ok(None) => {
                let alive: redis::RedisResult<bool> = conn.exists(keys.runner(runner));
                if alive == Ok(false) {
                    return Ok(Asked::Silent(format!(
                        "runner {runner} stopped answering (its heartbeat lapsed) before the run ended"
                    )));
                }
            }
            Err(e) => {
                // The store went away: wait for it (bounded), the runner answers when it comes back.
                let back = std::time::Instant::now() + bound;
                loop {
                    std::thread::sleep(RECONNECT);
                    if let Ok(c) = crate::cluster::store::connect(client) {
                        *conn = c;
                        break;
                    }
                    if std::time::Instant::now() > back {
                        return Err(format!(
                            "{e} (while waiting for the run's end on runner {runner})"
                        ));
                    }
                }
            }
        }
    }
}

/// Cancel request `id` unless a runner took it first: whether it is cancelled (then no runner ever fires it).
fn cancel(conn: &mut redis::Connection, keys: &Keys, id: &str) -> redis::RedisResult<bool> {
    let cancelled: Option<String> = redis::cmd("SET")
        .arg(keys.trigger_taken(id))
        .arg(CANCELLED)
        .arg("NX")
        .arg("PX")
        .arg(TAKEN_TTL.as_millis() as u64)
        .query(conn)?;
    Ok(cancelled.is_some())
}

/// The ids of the runners whose heartbeat is alive.
fn live_runners(conn: &mut redis::Connection, keys: &Keys) -> redis::RedisResult<Vec<String>> {
    use redis::Commands;
    let mut ids: Vec<String> = conn.smembers(keys.runners())?;
    ids.sort();
    let mut alive = Vec::new();
    for id in ids {
        if conn.exists(keys.runner(&id))? {
            alive.push(id);
        }
    }
    Ok(alive)
}

/// The next answer on the reply list, waiting until `deadline` (`None`: nothing came).
fn next_answer(
    conn: &mut redis::Connection,
    reply: &str,
    deadline: std::time::Instant,
) -> Result<Option<TriggerAnswer>, String> {
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        // BLPOP's timeout within the connection's read timeout (2 s).
        let wait = left.min(POLL).as_secs_f64().max(0.01);
        let popped: Option<(String, String)> = redis::cmd("BLPOP")
            .arg(reply)
            .arg(wait)
            .query(conn)
            .map_err(|e| e.to_string())?;
        if let Some((_, text)) = popped {
            if let Ok(answer) = serde_json::from_str(&text) {
                return Ok(Some(answer));
            }
        }
    }
}

/// A request id unique enough across hosts: the time, this process, a counter.
fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{nanos:x}-{:x}-{:x}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed),
        &crate::cluster::fnv_hex(crate::cluster::hostname().as_bytes())[..8]
    )
}
