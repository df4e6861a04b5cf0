//! A runner in a cluster (SPEC §9): a time firing runs only once this runner claimed it from the shared store, and
//! every run's number comes from the cluster's counter of its job. Both are questions to the store that the core
//! asks as effects ([`Effect::Claim`], [`Effect::Number`]) and hears answered as [`Input::Claimed`]: nothing waits
//! meanwhile but the firing itself. A firing no runner can claim because the store does not answer is never run
//! unclaimed: it is asked again while its `misfire_grace` lasts, then missed with the reason `store unreachable`.
//! A missed firing is claimed too, so the cluster says it once.
//!
//! [`Input::Claimed`]: super::Input::Claimed

use chrono::{DateTime, Utc};
use std::time::Duration;

use super::ledger::Cause;
use super::{Core, Effect, Later, World};
use crate::cluster::Answer;
use crate::engine::core::outcome::{Milestone, RunResult};
use crate::engine::core::runs::Pending;
use crate::engine::envfile::FileEnv;
use crate::event::Event;
use crate::plan::JobId;

/// How soon a claim the store did not answer is asked again (within the firing's grace).
pub(super) const CLAIM_RETRY: Duration = Duration::from_millis(250);

/// What a claim is for.
pub enum Claiming {
    /// A due time firing: it runs if this runner wins it.
    Fire { pending: Pending, trigger: usize },
    /// Firings past their grace: said (one history row) if this runner wins them.
    Miss(Missed),
}

/// A miss as the timetable found it.
pub struct Missed {
    pub job: JobId,
    pub trigger: usize,
    pub scheduled: DateTime<Utc>,
    pub late: chrono::Duration,
    pub count: u64,
    pub at_least: bool,
    pub downtime: Option<Duration>,
}

impl Claiming {
    pub fn job(&self) -> JobId {
        match self {
            Claiming::Fire { pending, .. } => pending.job,
            Claiming::Miss(m) => m.job,
        }
    }

    /// The firing that counts for its job's instances while its claim is out (a miss runs nothing).
    pub fn job_to_run(&self) -> Option<JobId> {
        match self {
            Claiming::Fire { pending, .. } => Some(pending.job),
            Claiming::Miss(_) => None,
        }
    }
}

impl<W: World> Core<W> {
    /// Ask the cluster for this firing (or miss), by its job, trigger and instant.
    pub(super) fn claim(&mut self, what: Claiming) {
        let (job, trigger, at, number) = match &what {
            Claiming::Fire { pending, trigger } => (pending.job, *trigger, pending.scheduled, true),
            Claiming::Miss(m) => (m.job, m.trigger, m.scheduled, false),
        };
        // A join is claimed by the runs that completed it (the same on every runner: they hear the ends in the
        // cluster's one order), not by an instant.
        let join = match &what {
            Claiming::Fire {
                pending:
                    Pending {
                        upstream: Some(upstream),
                        ..
                    },
                ..
            } => Some(join_fingerprint(upstream)),
            _ => None,
        };
        let key = self.arranged.insert(Later::Claim(what));
        self.out.push_back(Effect::Claim {
            key,
            job,
            trigger,
            at,
            number,
            join,
        });
    }

    /// The end of a run of the cluster (this runner's or another's), from the cluster's stream of ends: the
    /// `after` joins that wait for its job hear it.
    pub(super) fn on_cluster_end(&mut self, end: crate::cluster::RunEnded) {
        let Some(job) = self.plan.job_id(&end.job) else {
            return;
        };
        let result = match end.succeeded {
            true => RunResult::Succeeded,
            false => RunResult::Failed,
        };
        let milestone = Milestone::Ended {
            result,
            was_ready: false,
        };
        self.propagate(job, milestone, || {
            serde_json::json!({
                "job": end.job,
                "run": end.run,
                "status": if end.succeeded { "succeeded" } else { "failed" },
                "code": end.code,
                "signal": end.signal,
                "log": serde_json::Value::Null,
                "runner": end.runner,
            })
        });
    }

    /// A run (admitted to a worker of `executor`) needs its number from the cluster: the worker is held until
    /// it comes.
    pub(super) fn ask_number(
        &mut self,
        pending: Pending,
        executor: usize,
        pin: bool,
        env: Result<FileEnv, String>,
    ) {
        let job = pending.job;
        let key = self.arranged.insert(Later::Number {
            pending,
            executor,
            pin,
            env,
        });
        self.out.push_back(Effect::Number { key, job });
    }

    /// The store answered the question asked under `key`.
    pub(super) fn on_claimed(&mut self, key: u64, answer: Answer) {
        match self.arranged.remove(key) {
            Some(Later::Claim(what)) => self.claim_answered(what, answer),
            Some(Later::Number {
                mut pending,
                executor,
                pin,
                env,
            }) => match answer {
                Answer::Won(Some(number)) => {
                    pending.granted = Some(number);
                    self.start_run(pending, executor, pin, env);
                }
                // The counter did not answer: the firing waits at the front of its queue, asked again with the
                // store's retry (see `held`), not at once.
                _ => {
                    self.held.numbers_wait = true;
                    self.hold(pending, executor);
                }
            },
            // Called off meanwhile (a stop, `flowrun stop JOB`, a reload).
            _ => {}
        }
    }

    fn claim_answered(&mut self, what: Claiming, answer: Answer) {
        let job = what.job();
        match (answer, what) {
            (
                Answer::Won(number),
                Claiming::Fire {
                    mut pending,
                    trigger,
                },
            ) => {
                self.store_answers();
                pending.granted = number;
                self.dispatch_firing(pending, trigger);
            }
            (Answer::Won(_), Claiming::Miss(m)) => {
                self.store_answers();
                self.say_missed(m, None)
            }
            // Another runner has it (runs it, or said its miss).
            (Answer::Lost, _) => self.store_answers(),
            (Answer::Unreachable(why), what) => self.claim_unanswered(what, why),
            // Asked again while the firing's grace lasts (the heartbeat is renewed within a third of the lease);
            // past it, the other runners had it: this one says nothing of it.
            (Answer::Lapsed, Claiming::Fire { pending, trigger }) => {
                let late = (self.now.utc - pending.first_due)
                    .to_std()
                    .unwrap_or_default();
                let grace = self.plan.jobs[job].misfire_grace;
                if late <= grace && !self.stopping {
                    let wait = CLAIM_RETRY.min(grace - late).max(Duration::from_millis(1));
                    self.later(wait, Later::Claim(Claiming::Fire { pending, trigger }));
                }
            }
            (Answer::Lapsed, Claiming::Miss(_)) => {}
        }
        self.watch_job(job);
    }

    /// The store did not answer: asked again while the firing's grace lasts; beyond it, missed (never run
    /// unclaimed). A miss that cannot be claimed is said by this runner (said twice rather than never).
    fn claim_unanswered(&mut self, what: Claiming, why: String) {
        if self.stopping {
            return;
        }
        let (pending, trigger) = match what {
            Claiming::Fire { pending, trigger } => (pending, trigger),
            Claiming::Miss(m) => return self.say_missed(m, Some("store unreachable".into())),
        };
        let job = pending.job;
        let late = self.now.utc - pending.first_due;
        let grace = self.plan.jobs[job].misfire_grace;
        self.store_unreachable(&why);
        if late.to_std().unwrap_or_default() <= grace {
            let wait = CLAIM_RETRY.min(grace.saturating_sub(late.to_std().unwrap_or_default()));
            self.later(
                wait.max(Duration::from_millis(1)),
                Later::Claim(Claiming::Fire { pending, trigger }),
            );
            return;
        }
        let missed = Missed {
            job,
            trigger,
            scheduled: pending.scheduled,
            late,
            count: pending.coalesced.max(1),
            at_least: false,
            downtime: None,
        };
        self.say_missed(missed, Some("store unreachable".into()));
    }

    /// The store did not answer a claim: said once, until it answers again (`store_back`).
    fn store_unreachable(&mut self, why: &str) {
        if !self.unreachable_said {
            self.unreachable_said = true;
            self.notice(format!(
                "the cluster's store does not answer ({why}): time firings wait for it within their misfire_grace and are missed beyond it; none runs unclaimed"
            ));
        }
    }

    /// The store answered a claim: if it was said not to, that it does again.
    fn store_answers(&mut self) {
        if self.unreachable_said {
            self.unreachable_said = false;
            self.notice("the cluster's store answers again: time firings are claimed again".into());
        }
    }

    /// Runs another runner left when it stopped answering (marked interrupted in the store): a run whose job
    /// retries and has tries left is tried again here, as its next try (its number kept).
    pub(super) fn on_taken_over(&mut self, rows: Vec<crate::store::RunRow>) {
        for row in rows {
            let (Some(job), Some(number)) = (self.plan.job_id(&row.job), row.run) else {
                continue;
            };
            let tries_left = self.plan.jobs[job]
                .retry
                .as_ref()
                .is_some_and(|r| r.again(row.attempt, None));
            if self.retired(job) || !tries_left {
                continue;
            }
            self.undo_done(job);
            let pending = Pending {
                scheduled: row.scheduled.unwrap_or(self.now.utc),
                first_due: self.now.utc,
                attempt: row.attempt + 1,
                number: Some(number),
                run_started: row.started,
                failover: row.runner.as_deref().map(std::sync::Arc::from),
                ..self.pending_now(job)
            };
            self.notice(format!(
                "{}#{number} is tried again here (try {}): its runner {} stopped answering",
                row.job,
                row.attempt + 1,
                row.runner.as_deref().unwrap_or("?")
            ));
            self.enqueue(pending);
        }
    }

    /// Say firings missed: one history row and `run.missed`.
    pub(super) fn say_missed(&mut self, m: Missed, reason: Option<String>) {
        self.jobs[m.job].counts.missed += m.count;
        self.emit(Event::RunMissed {
            job: self.plan.jobs[m.job].name.clone(),
            scheduled: m.scheduled,
            trigger: self.trigger_text(m.job, Cause::Trigger(m.trigger)),
            catch_up: m.scheduled < self.started_at,
            downtime: m.downtime,
            next: self.timetable.next_of(m.job),
            count: m.count,
            at_least: m.at_least,
            late: m.late.to_std().unwrap_or_default(),
            grace: self.plan.jobs[m.job].misfire_grace,
            reason,
        });
    }
}

/// The fingerprint of a join's firing: the runs that completed it (`job#run`, sorted), hashed.
fn join_fingerprint(upstream: &str) -> String {
    let runs: Vec<serde_json::Value> = serde_json::from_str(upstream).unwrap_or_default();
    let mut names: Vec<String> = runs
        .iter()
        .map(|r| format!("{}#{}", r["job"].as_str().unwrap_or(""), r["run"]))
        .collect();
    names.sort();
    format!(
        "after-{}",
        crate::cluster::fnv_hex(names.join(",").as_bytes())
    )
}
