//! What the control API asks of a running engine (SPEC §5), as messages to the dispatcher: the API never locks
//! the engine, it sends a request and awaits the answer. The answers are plain data (serialised by the API).

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc::UnboundedSender, oneshot};

use super::core::runs::RunId;
use super::dispatcher::{now, Dispatcher};
use super::Msg;
use crate::event::{ChannelCounts, JobCounts};

/// A request of the control API.
pub enum Request {
    Status(oneshot::Sender<LiveStatus>),
    /// Whether the runner is up and not stopping (cheap: `/healthz` is asked often).
    Health(oneshot::Sender<bool>),
    Trigger {
        job: String,
        /// Answered when the run starts (or is queued, or skipped).
        reply: oneshot::Sender<TriggerReply>,
        /// Answered when the run ends for good (its last try), when the caller waits for it.
        done: Option<oneshot::Sender<RunEnded>>,
    },
    /// Stop the runner, as SIGTERM does.
    Shutdown,
    /// Apply a validated plan (a reload), or report a rejected one.
    Reload(super::replan::Reload),
    /// Stop the live runs of a job (all jobs: `None`), as at shutdown.
    Stop {
        job: Option<String>,
        reply: oneshot::Sender<Result<usize, String>>,
    },
    /// Pause a job (until then, or until resumed).
    Pause {
        job: String,
        until: Option<DateTime<Utc>>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Resume a job: whether it was paused.
    Resume {
        job: String,
        reply: oneshot::Sender<Result<bool, String>>,
    },
}

/// A running runner, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LiveStatus {
    pub workflow: String,
    pub pid: u32,
    pub started: DateTime<Utc>,
    pub stopping: bool,
    pub jobs: Vec<LiveJob>,
    pub channels: Vec<LiveChannel>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LiveJob {
    pub job: String,
    pub running: Vec<LiveRun>,
    /// Firings waiting for a worker of the job's executor.
    pub waiting: usize,
    pub next: Option<DateTime<Utc>>,
    /// It can fire no more.
    pub done: bool,
    #[serde(flatten)]
    pub counts: JobCounts,
    pub last_exit: Option<String>,
    pub last_success: Option<DateTime<Utc>>,
    /// Paused (`flowrun pause`): it fires nothing.
    pub paused: bool,
    /// When a pause ends by itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<DateTime<Utc>>,
    /// Runs waiting for a retry (its backoff), by number.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retrying: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LiveRun {
    pub run: u64,
    pub pid: Option<u32>,
    pub started: DateTime<Utc>,
    pub attempt: u32,
    /// Whether its readiness probe passed (`None`: the job has no probe).
    pub ready: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LiveChannel {
    pub channel: String,
    pub kind: &'static str,
    #[serde(flatten)]
    pub counts: ChannelCounts,
    /// A durable queue's store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreUsage>,
}

/// What a durable queue's store holds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StoreUsage {
    /// Committed messages not done (waiting, or with a reader).
    pub depth: u64,
    /// When the oldest of them came.
    pub oldest: Option<chrono::DateTime<chrono::Utc>>,
    pub bytes_on_disk: u64,
}

/// The answer to a manual firing.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum TriggerReply {
    Started {
        run: u64,
    },
    /// Waiting for a worker of its executor.
    Queued,
    Skipped {
        reason: String,
    },
    /// Not done: unknown job, a job that cannot run now, or the runner is stopping.
    Refused {
        reason: String,
        #[serde(skip)]
        why: Refusal,
    },
}

/// Why a manual firing was refused (the API says it in its own terms: a status code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownJob,
    /// Its output channel is closed.
    CannotRun,
    /// It is paused.
    Paused,
    Stopping,
}

/// How a manually fired run ended.
#[derive(Debug, Clone, Serialize)]
pub struct RunEnded {
    pub run: u64,
    pub outcome: &'static str,
    pub code: Option<i32>,
    pub signal: Option<String>,
    pub success: bool,
    /// Why it never ran (`outcome: skipped`).
    pub reason: Option<String>,
}

/// The API's handle on the engine.
#[derive(Clone)]
pub struct EngineHandle {
    pub(super) tx: UnboundedSender<Msg>,
}

impl EngineHandle {
    fn ask(&self, request: Request) -> bool {
        self.tx.send(Msg::Control(request)).is_ok()
    }

    pub async fn healthy(&self) -> bool {
        let (reply, answer) = oneshot::channel();
        self.ask(Request::Health(reply)) && answer.await.unwrap_or(false)
    }

    pub async fn status(&self) -> Option<LiveStatus> {
        let (reply, answer) = oneshot::channel();
        self.ask(Request::Status(reply)).then_some(())?;
        answer.await.ok()
    }

    pub async fn trigger(
        &self,
        job: &str,
        wait: bool,
    ) -> Option<(TriggerReply, Option<oneshot::Receiver<RunEnded>>)> {
        let (reply, answer) = oneshot::channel();
        let (done, ended) = match wait {
            true => {
                let (s, r) = oneshot::channel();
                (Some(s), Some(r))
            }
            false => (None, None),
        };
        self.ask(Request::Trigger {
            job: job.to_string(),
            reply,
            done,
        })
        .then_some(())?;
        Some((answer.await.ok()?, ended))
    }

    /// A reload: the engine's answer for a plan to apply (`None`: the engine is gone).
    pub async fn apply(
        &self,
        plan: crate::plan::Plan,
    ) -> Option<Result<super::replan::Applied, String>> {
        let (reply, answer) = oneshot::channel();
        self.ask(Request::Reload(super::replan::Reload::Apply {
            plan: Box::new(plan),
            reply,
        }))
        .then_some(())?;
        answer.await.ok()
    }

    /// A reload refused for these diagnostics: the engine says so as an event.
    pub fn rejected(&self, errors: usize, summary: String, report: String) {
        self.ask(Request::Reload(super::replan::Reload::Rejected {
            errors,
            summary,
            report,
        }));
    }

    pub async fn shutdown(&self) -> bool {
        self.ask(Request::Shutdown)
    }

    pub async fn pause(
        &self,
        job: &str,
        until: Option<DateTime<Utc>>,
    ) -> Option<Result<(), String>> {
        let (reply, answer) = oneshot::channel();
        let job = job.to_string();
        self.ask(Request::Pause { job, until, reply })
            .then_some(())?;
        answer.await.ok()
    }

    pub async fn resume(&self, job: &str) -> Option<Result<bool, String>> {
        let (reply, answer) = oneshot::channel();
        let job = job.to_string();
        self.ask(Request::Resume { job, reply }).then_some(())?;
        answer.await.ok()
    }

    pub async fn stop(&self, job: Option<&str>) -> Option<Result<usize, String>> {
        let (reply, answer) = oneshot::channel();
        self.ask(Request::Stop {
            job: job.map(str::to_string),
            reply,
        })
        .then_some(())?;
        answer.await.ok()
    }
}

/// A manual firing waiting to start, and the caller waiting for its end.
pub(super) struct Waiter {
    pub reply: Option<oneshot::Sender<TriggerReply>>,
    pub done: Option<oneshot::Sender<RunEnded>>,
}

impl Dispatcher {
    pub(super) fn on_request(&mut self, request: Request) {
        match request {
            Request::Status(reply) => {
                let _ = reply.send(self.live_status());
            }
            Request::Health(reply) => {
                let _ = reply.send(!self.core.stopping);
            }
            Request::Trigger { job, reply, done } => self.manual_fire(&job, reply, done),
            Request::Reload(super::replan::Reload::Rejected {
                errors,
                summary,
                report,
            }) => self.core.reload_rejected(errors, summary, report),
            Request::Reload(super::replan::Reload::Apply { plan, reply }) => {
                let _ = reply.send(self.core.reload(*plan, now()));
            }
            Request::Shutdown => {
                let stop = super::Stop::Signal("flowrun stop");
                self.core.handle(super::core::Input::Stop(stop), now());
            }
            Request::Stop { job, reply } => {
                let _ = reply.send(self.core.stop_jobs(job.as_deref(), now()));
            }
            Request::Pause { job, until, reply } => {
                let _ = reply.send(self.core.pause(&job, until, now()));
            }
            Request::Resume { job, reply } => {
                let _ = reply.send(self.core.resume(&job, now()));
            }
        }
    }

    fn manual_fire(
        &mut self,
        name: &str,
        reply: oneshot::Sender<TriggerReply>,
        done: Option<oneshot::Sender<RunEnded>>,
    ) {
        let job = match self.core.manual_refusal(name) {
            Ok(job) => job,
            Err((reason, why)) => {
                let _ = reply.send(TriggerReply::Refused { reason, why });
                return;
            }
        };
        let key = self.next_manual;
        self.next_manual += 1;
        self.waiters.insert(
            key,
            Waiter {
                reply: Some(reply),
                done,
            },
        );
        self.core.manual_fire(job, key, now());
    }

    /// A manual firing waits (for a worker, or for the store): its caller hears `queued` now, unless it heard
    /// already; it is forgotten unless its caller waits for its end.
    pub(super) fn manual_queued(&mut self, key: u64) {
        if let Some(w) = self.waiters.get_mut(&key) {
            if let Some(reply) = w.reply.take() {
                let _ = reply.send(TriggerReply::Queued);
            }
            if w.done.is_none() {
                self.waiters.remove(&key);
            }
        }
    }

    /// A manual firing will not run (skipped, removed by a reload, dropped at a stop): whoever waits hears why,
    /// the caller of a firing not yet answered, or the caller waiting for the end of one that was queued.
    pub(super) fn manual_skipped(&mut self, key: u64, reason: String) {
        let Some(w) = self.waiters.remove(&key) else {
            return;
        };
        match (w.reply, w.done) {
            (Some(reply), _) => {
                let _ = reply.send(TriggerReply::Skipped { reason });
            }
            (None, Some(done)) => {
                let _ = done.send(RunEnded {
                    run: 0,
                    outcome: "skipped",
                    code: None,
                    signal: None,
                    success: false,
                    reason: Some(reason),
                });
            }
            (None, None) => {}
        }
    }

    /// A manual firing started as run `number` (id `run`): answer, and keep the end's waiter with the run.
    pub(super) fn manual_started(&mut self, key: u64, run: RunId, number: u64) {
        let Some(w) = self.waiters.get_mut(&key) else {
            return;
        };
        if let Some(reply) = w.reply.take() {
            let _ = reply.send(TriggerReply::Started { run: number });
        }
        if w.done.is_some() {
            self.run_waiters.insert(run, key);
        } else {
            self.waiters.remove(&key);
        }
    }

    /// A run ended for good: its waiter (a `trigger --wait`) hears how.
    pub(super) fn manual_ended(&mut self, run: RunId, ended: RunEnded) {
        if let Some(id) = self.run_waiters.remove(&run) {
            if let Some(done) = self.waiters.remove(&id).and_then(|w| w.done) {
                let _ = done.send(ended);
            }
        }
    }

    pub(super) fn live_status(&self) -> LiveStatus {
        let snapshot = self.core.snapshot();
        let jobs = snapshot
            .jobs
            .into_iter()
            .filter(|job| !job.retired)
            .map(|job| LiveJob {
                job: job.name,
                running: job
                    .runs
                    .into_iter()
                    .map(|r| LiveRun {
                        run: r.run,
                        pid: r.pid,
                        started: r.started,
                        attempt: r.attempt,
                        ready: r.ready,
                    })
                    .collect(),
                waiting: job.waiting,
                next: job.next,
                done: job.done,
                counts: job.counts,
                last_exit: job.last_exit,
                last_success: job.last_success,
                paused: job.paused.is_some(),
                paused_until: job.paused.flatten(),
                retrying: job.retrying,
            })
            .collect();
        let core = &self.core;
        let channels = core
            .plan
            .channels
            .iter()
            .enumerate()
            .filter(|(_, channel)| !channel.retired)
            .map(|(c, channel)| LiveChannel {
                channel: channel.name.clone(),
                kind: channel.kind.as_str(),
                counts: core.world.channels.counts(c),
                store: core.world.channels.all[c].durable.as_ref().map(|d| {
                    let u = d.usage();
                    StoreUsage {
                        depth: u.depth,
                        oldest: u.oldest.map(chrono::DateTime::<chrono::Utc>::from),
                        bytes_on_disk: u.bytes_on_disk,
                    }
                }),
            })
            .collect();
        LiveStatus {
            workflow: core.plan.name.clone(),
            pid: std::process::id(),
            started: snapshot.started_at,
            stopping: snapshot.stopping,
            jobs,
            channels,
        }
    }
}
