//! The claimer: the engine's questions to the cluster's store (claim this firing, give a run number), asked on
//! the async runtime over one multiplexed connection, so claims asked together travel as one pipeline and the
//! dispatcher never waits for an answer (it comes back as an input). A store that does not answer is answered
//! `Unreachable` at once (the engine asks again within the firing's grace); the connection is made again at the
//! next question, not more often than every [`RECONNECT`].

use chrono::{DateTime, Utc};
use redis::aio::MultiplexedConnection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::{scripts, Answer, Config, Keys};

/// How long a connection to the store may take to be made, and an answer to come.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failed connection, questions are answered `Unreachable` for this long before the next try.
const RECONNECT: Duration = Duration::from_millis(200);

/// A question of the engine.
pub enum Asked {
    /// Claim a time firing.
    Claim(Claim),
    /// The job's next run number.
    Number { job: String },
    /// Take over claim `claim`, if it still holds `value` (its runner died before starting its firing).
    Reclaim { claim: String, value: String },
    /// A join (job `job`'s `after` trigger `fingerprint`) hears a run's end that meets its status.
    Join {
        job: String,
        fingerprint: String,
        positions: Vec<usize>,
        run: String,
        upstreams: usize,
        any: bool,
    },
}

/// A time firing to claim: `job`'s trigger `fingerprint` at `at`, kept `ttl`, with a run number when `number`.
pub struct Claim {
    pub job: String,
    pub fingerprint: String,
    pub at: DateTime<Utc>,
    pub ttl: Duration,
    pub number: bool,
}

/// Who hears the answers: the engine's key of the question, and the answer.
pub type Reply = Arc<dyn Fn(u64, Answer) + Send + Sync>;

/// The engine's handle on the claimer task.
pub struct Claimer {
    tx: UnboundedSender<(u64, Asked)>,
}

impl Claimer {
    /// Start the claimer on the current tokio runtime. `up` is set while the store answers.
    pub fn start(
        config: &Config,
        client: redis::Client,
        reply: Reply,
        up: Arc<AtomicBool>,
    ) -> Claimer {
        let (tx, rx) = unbounded_channel();
        // Claims name this process, not only its id: a runner started under the same id while this one was
        // paused never takes this one's claims for its own.
        let incarnation = format!(
            "{}#{}#{}",
            config.runner_id,
            std::process::id(),
            chrono::Utc::now().timestamp_millis()
        );
        let task = Task {
            client,
            keys: config.keys(),
            runner: config.runner_id.clone(),
            incarnation,
            reply,
            up,
            conn: None,
            failed_at: None,
            dead: Arc::new(AtomicBool::new(false)),
        };
        tokio::spawn(task.run(rx));
        Claimer { tx }
    }

    pub fn ask(&self, key: u64, what: Asked) {
        let _ = self.tx.send((key, what));
    }
}

struct Task {
    client: redis::Client,
    keys: Keys,
    runner: String,
    /// This process in the runner's claims.
    incarnation: String,
    reply: Reply,
    up: Arc<AtomicBool>,
    conn: Option<MultiplexedConnection>,
    failed_at: Option<Instant>,
    /// A question failed on the connection: make it again at the next.
    dead: Arc<AtomicBool>,
}

impl Task {
    async fn run(mut self, mut rx: UnboundedReceiver<(u64, Asked)>) {
        while let Some((key, what)) = rx.recv().await {
            let conn = match self.connection().await {
                Ok(conn) => conn,
                Err(why) => {
                    (self.reply)(key, Answer::Unreachable(why));
                    continue;
                }
            };
            let (keys, runner, reply, dead, up) = (
                self.keys.clone(),
                (self.runner.clone(), self.incarnation.clone()),
                self.reply.clone(),
                self.dead.clone(),
                self.up.clone(),
            );
            tokio::spawn(async move {
                let (answer, failed) = ask(conn, &keys, &runner, what).await;
                match failed {
                    true => dead.store(true, Ordering::Release),
                    false => up.store(true, Ordering::Release),
                }
                reply(key, answer);
            });
        }
    }

    /// The connection, made again when the last one failed (not sooner than [`RECONNECT`] after a failed try).
    async fn connection(&mut self) -> Result<MultiplexedConnection, String> {
        if self.dead.swap(false, Ordering::AcqRel) {
            self.conn = None;
        }
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        if self.failed_at.is_some_and(|t| t.elapsed() < RECONNECT) {
            return Err("not connected".into());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        match self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(conn) => {
                self.failed_at = None;
                self.conn = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                self.failed_at = Some(Instant::now());
                self.up.store(false, Ordering::Release);
                Err(e.to_string())
            }
        }
    }
}

/// The store's answer, and whether the connection failed (to be made again).
async fn ask(
    mut conn: MultiplexedConnection,
    keys: &Keys,
    (runner, incarnation): &(String, String),
    what: Asked,
) -> (Answer, bool) {
    match what {
        Asked::Claim(claim) => claim_firing(&mut conn, keys, (runner, incarnation), &claim).await,
        Asked::Join {
            job,
            fingerprint,
            positions,
            run,
            upstreams,
            any,
        } => {
            let positions: Vec<String> = positions.iter().map(usize::to_string).collect();
            let answer: Result<Vec<String>, _> = scripts::JOIN
                .key(keys.join(&job, &fingerprint))
                .arg(positions.join(","))
                .arg(run)
                .arg(upstreams)
                .arg(if any { "1" } else { "0" })
                .invoke_async(&mut conn)
                .await;
            match answer {
                Ok(flat) => (Answer::Joined(completed(flat)), false),
                Err(e) => (Answer::Unreachable(e.to_string()), true),
            }
        }
        Asked::Reclaim { claim, value } => {
            let answer: Result<i64, _> = scripts::RECLAIM
                .key(claim)
                .arg(value)
                .arg(incarnation)
                .invoke_async(&mut conn)
                .await;
            match answer {
                Ok(n) if n > 0 => (Answer::Won(Some(n as u64)), false),
                Ok(_) => (Answer::Lost, false),
                Err(e) => (Answer::Unreachable(e.to_string()), true),
            }
        }
        Asked::Number { job } => {
            let answer: Result<u64, _> = redis::cmd("INCR")
                .arg(keys.counter(&job))
                .query_async(&mut conn)
                .await;
            match answer {
                Ok(n) => (Answer::Won(Some(n)), false),
                Err(e) => (Answer::Unreachable(e.to_string()), true),
            }
        }
    }
}

/// Claim a time firing (one script: see `scripts::CLAIM`).
async fn claim_firing(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    (runner, incarnation): (&str, &str),
    claim: &Claim,
) -> (Answer, bool) {
    let (job, fingerprint) = (claim.job.as_str(), claim.fingerprint.as_str());
    let at_ms = claim.at.timestamp_millis();
    let answer: Result<i64, _> = scripts::CLAIM
        .key(keys.claim(job, fingerprint, at_ms))
        .key(keys.handled())
        .key(keys.counter(job))
        .key(keys.runner(runner))
        .arg(incarnation)
        .arg(claim.ttl.as_millis() as u64)
        .arg(Keys::handled_field(job, fingerprint))
        .arg(at_ms)
        .arg(if claim.number { "1" } else { "0" })
        .invoke_async(conn)
        .await;
    match answer {
        Ok(-2) => (Answer::Lapsed, false),
        Ok(-1) => (Answer::Lost, false),
        Ok(0) => (Answer::Won(None), false),
        Ok(n) => (Answer::Won(Some(n as u64)), false),
        Err(e) => (Answer::Unreachable(e.to_string()), true),
    }
}

/// The runs that completed a join, in the join's order (the script's `POS, RUN, ...`), or none.
fn completed(flat: Vec<String>) -> Option<Vec<String>> {
    if flat.is_empty() {
        return None;
    }
    let mut runs: Vec<(usize, String)> = flat
        .chunks(2)
        .filter_map(|p| Some((p.first()?.parse().ok()?, p.get(1)?.clone())))
        .collect();
    runs.sort_by_key(|r| r.0);
    Some(runs.into_iter().map(|r| r.1).collect())
}
