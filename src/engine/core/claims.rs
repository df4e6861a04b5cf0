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
use crate::engine::core::outcome::Milestone;
use crate::engine::core::runs::Pending;
use crate::engine::envfile::FileEnv;
use crate::event::Event;
use crate::plan::{JobId, Trigger};

/// How soon a claim the store did not answer is asked again (within the firing's grace).
pub(super) const CLAIM_RETRY: Duration = Duration::from_millis(250);

/// A run's end told to a join (job `job`'s `after` trigger `trigger`): its job's positions among the join's
/// upstreams, and the run as `FLOWRUN_UPSTREAM` names it.
pub struct JoinEnd {
    pub job: JobId,
    pub trigger: usize,
    pub positions: Vec<usize>,
    pub run: String,
}

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
    /// Why, beyond lateness (a runner that claimed it died before starting it).
    pub reason: Option<String>,
}

/// Why a firing no runner could claim was missed.
const UNREACHABLE: &str = "store unreachable";

impl Missed {
    /// A firing (by the job's trigger `trigger`) missed `late` after its instant, for `reason`.
    fn of(pending: &Pending, trigger: usize, late: chrono::Duration, reason: &str) -> Missed {
        Missed {
            job: pending.job,
            trigger,
            scheduled: pending.scheduled,
            late,
            count: pending.coalesced.max(1),
            at_least: false,
            downtime: None,
            reason: Some(reason.into()),
        }
    }
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
        let key = self.arranged.insert(Later::Claim(what));
        self.out.push_back(Effect::Claim {
            key,
            job,
            trigger,
            at,
            number,
        });
    }

    /// A run of this runner ended for good: the joins that wait for its job hear it through the cluster's store,
    /// where each join's state is kept for every runner; when this end completes a join, this runner fires it.
    /// (Kept here too, only for whether the join can still complete.)
    pub(super) fn tell_joins(
        &mut self,
        job: JobId,
        milestone: Milestone,
        entry: serde_json::Value,
    ) {
        let plan = self.plan.clone();
        for (d, t) in self.joins_on[job].clone() {
            let Trigger::After { jobs, status, .. } = &plan.jobs[d].triggers[t] else {
                continue;
            };
            let positions: Vec<usize> = (0..jobs.len()).filter(|&k| jobs[k] == job).collect();
            for &k in &positions {
                self.jobs[d].joins[t].record(k, milestone, *status);
            }
            if milestone.meets(*status) {
                self.ask_join(JoinEnd {
                    job: d,
                    trigger: t,
                    positions,
                    run: entry.to_string(),
                });
            }
        }
    }

    pub(super) fn ask_join(&mut self, end: JoinEnd) {
        let key = self.arranged.insert(Later::JoinEnd(end));
        if let Some(Later::JoinEnd(end)) = self.arranged.get(key) {
            self.out.push_back(Effect::JoinEnd {
                key,
                job: end.job,
                trigger: end.trigger,
                positions: end.positions.clone(),
                run: end.run.clone(),
            });
        }
    }

    /// The store answered a join: the runs that completed it fire its job here (no claim: the store's one script
    /// gave the completion to this runner only); a store that did not answer is asked again.
    fn join_answered(&mut self, end: JoinEnd, answer: Answer) {
        let job = end.job;
        match answer {
            Answer::Joined(Some(runs)) => {
                let runs: Vec<serde_json::Value> = runs
                    .iter()
                    .filter_map(|r| serde_json::from_str(r).ok())
                    .collect();
                let (upstream, _) = super::upstream::upstream_text(runs);
                let pending = Pending {
                    upstream: Some(std::sync::Arc::from(upstream)),
                    ..self.pending_by(end.job, end.trigger)
                };
                self.fire(pending);
            }
            Answer::Joined(None) => {}
            _ if self.stopping => {}
            _ => {
                self.later(super::held::STORE_RETRY, Later::JoinEnd(end));
            }
        }
        self.watch_job(job);
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
            Some(Later::JoinEnd(end)) => self.join_answered(end, answer),
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
                // Won only past its grace (the store answered late): this runner holds it, and says it missed.
                let late = self.now.utc - pending.scheduled;
                if late.to_std().unwrap_or_default() > self.plan.jobs[job].misfire_grace {
                    self.say_missed(Missed::of(&pending, trigger, late, UNREACHABLE));
                } else {
                    pending.granted = number;
                    self.dispatch_firing(pending, trigger);
                }
            }
            (Answer::Won(_), Claiming::Miss(m)) => {
                self.store_answers();
                self.say_missed(m)
            }
            // Another runner has it (runs it, or said its miss).
            (Answer::Lost, _) => self.store_answers(),
            (Answer::Unreachable(why), what) => self.claim_unanswered(what, why),
            // Asked again while the firing's grace lasts (the heartbeat is renewed within a third of the lease).
            // Past it, the firing is claimed as a miss: said by whichever runner claims it, once its heartbeat is
            // renewed; a live runner that ran it has its claim already. (Every runner's lease lapses when the
            // store stalls longer than the lease: then no one ran it, and the miss must still be said.)
            (Answer::Lapsed, Claiming::Fire { pending, trigger }) if !self.stopping => {
                let late = self.now.utc - pending.first_due;
                let (late_std, grace) = (
                    late.to_std().unwrap_or_default(),
                    self.plan.jobs[job].misfire_grace,
                );
                let what = match late_std <= grace {
                    true => Claiming::Fire { pending, trigger },
                    false => Claiming::Miss(Missed::of(&pending, trigger, late, UNREACHABLE)),
                };
                let wait = CLAIM_RETRY.min(grace.saturating_sub(late_std));
                self.later(wait.max(Duration::from_millis(1)), Later::Claim(what));
            }
            (Answer::Lapsed, Claiming::Miss(m)) if !self.stopping => {
                self.later(CLAIM_RETRY, Later::Claim(Claiming::Miss(m)));
            }
            // Not an answer to a claim (or the runner stops).
            (Answer::Lapsed, _) | (Answer::Joined(_), _) => {}
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
            Claiming::Miss(m) => {
                let reason = m.reason.clone().unwrap_or_else(|| UNREACHABLE.into());
                return self.say_missed(Missed {
                    reason: Some(reason),
                    ..m
                });
            }
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
        self.say_missed(Missed::of(&pending, trigger, late, UNREACHABLE));
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
    pub(super) fn on_taken_over(&mut self, taken: crate::cluster::heartbeat::TakenOver) {
        for orphan in taken.orphans {
            self.on_orphan(orphan);
        }
        for row in taken.rows {
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

    /// A time firing a runner that stopped answering claimed and never started: it is run here if its grace still
    /// lasts, else said missed, by whichever runner takes its claim over (once).
    fn on_orphan(&mut self, orphan: crate::cluster::heartbeat::Orphan) {
        let Some(job) = self.plan.job_id(&orphan.job).filter(|&j| !self.retired(j)) else {
            return;
        };
        let trigger = self.plan.jobs[job].triggers.iter().position(
            |t| matches!(t, Trigger::Time { rule, .. } if rule.fingerprint() == orphan.fingerprint),
        );
        let Some(trigger) = trigger else { return };
        let late = self.now.utc - orphan.at;
        let grace = self.plan.jobs[job].misfire_grace;
        let what = match late.to_std().unwrap_or_default() <= grace {
            true => Claiming::Fire {
                pending: Pending {
                    scheduled: orphan.at,
                    first_due: orphan.at,
                    coalesced: 1,
                    ..self.pending_by(job, trigger)
                },
                trigger,
            },
            false => Claiming::Miss(Missed {
                job,
                trigger,
                scheduled: orphan.at,
                late,
                count: 1,
                at_least: false,
                downtime: None,
                reason: Some(format!(
                    "its runner {} claimed it and stopped answering before starting it",
                    orphan.runner
                )),
            }),
        };
        self.undo_done(job);
        let key = self.arranged.insert(Later::Claim(what));
        self.out.push_back(Effect::Reclaim {
            key,
            claim: orphan.key,
            value: orphan.value,
        });
    }

    /// Say firings missed: one history row and `run.missed`.
    pub(super) fn say_missed(&mut self, m: Missed) {
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
            reason: m.reason,
        });
    }
}
