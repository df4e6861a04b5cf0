//! Firings that wait for the state store (issue 21): a run number is given only once its reservation is on disk
//! and an `at` firing runs only once its handling is, so a store that fails (a full disk) never lets a number be
//! given twice nor an `at` run twice after a crash. What waits is tried again every [`STORE_RETRY`]; the wait is
//! said once when it begins and once when it ends. Runs that need no new number (live ones) go on meanwhile.

use std::time::Duration;

use super::{Core, Later, Manual, World};
use crate::engine::core::runs::Pending;
use crate::plan::{JobId, Trigger};

/// How often a failing store is tried again for what waits on it.
pub(super) const STORE_RETRY: Duration = Duration::from_secs(1);

/// What waits for the store.
#[derive(Default)]
pub struct Held {
    /// `at` firings whose handling is not on disk.
    pub ats: super::waits::HeldAts,
    /// A retry is armed.
    retry: bool,
    /// The wait was said (and its end will be).
    said: bool,
    /// The cluster's counter did not give a number: runs wait for the next retry (not asked again at once).
    pub numbers_wait: bool,
}

impl<W: World> Core<W> {
    /// `at` firings just handled: they run once their handling is on disk, else they wait for it.
    pub(super) fn fire_committed(&mut self, ats: Vec<(Pending, usize)>) {
        if ats.is_empty() {
            return;
        }
        // The run's number goes to disk with the firing: a firing on disk whose run then waited for a number
        // (the disk full again) and was killed would be handled and never run.
        for (pending, _) in &ats {
            let job = pending.job;
            let number = self.jobs[job].next_number + self.instances(job) as u64;
            self.reserve_up_to(job, number);
        }
        if self.world.commit_all() {
            for (pending, _) in &ats {
                let state = &mut self.jobs[pending.job];
                state.durable = state.durable.max(state.reserved);
                state.reserving = None;
            }
            for (pending, trigger) in ats {
                self.dispatch_firing(pending, trigger);
            }
            return;
        }
        self.held.ats.extend(ats);
        self.store_failing();
    }

    /// A firing (admitted to its executor) that cannot have a run number now: back at the front of its queue,
    /// its worker free, tried again with the store.
    pub(super) fn hold(&mut self, pending: Pending, executor: usize) {
        if let Some(key) = pending.manual {
            self.manual(Manual::Queued(key));
        }
        self.executors.busy[executor] -= 1;
        self.executors.push_front(executor, pending);
        self.store_failing();
    }

    /// The store did not take a write something waits for: try again later, said once.
    fn store_failing(&mut self) {
        if !self.held.retry {
            self.held.retry = true;
            self.later(STORE_RETRY, Later::StoreRetry);
        }
        if !self.held.said && self.cluster {
            self.held.said = true;
            self.notice(format!(
                "the cluster's store does not answer: runs that need a new run number wait for it (asked every {}s)",
                STORE_RETRY.as_secs()
            ));
        }
        if !self.held.said {
            self.held.said = true;
            self.notice(format!(
                "the state store cannot be written: `at` firings and runs that need a new run number wait for it (tried every {}s); nothing runs twice after a crash",
                STORE_RETRY.as_secs()
            ));
        }
    }

    /// The store took a write: if a wait was said, its end is.
    pub(super) fn store_back(&mut self) {
        if self.held.said && self.held.ats.is_empty() {
            self.held.said = false;
            let text = match self.cluster {
                true => "the cluster's store gives run numbers again: what waited for it goes on",
                false => "the state store is written again: what waited for it goes on",
            };
            self.notice(text.into());
        }
    }

    /// Time to try the store again: held `at` firings run (or are missed, past their grace) once their handling
    /// is on disk; the executors' queues are tried by `admit`, after this input, as after any.
    pub(super) fn on_store_retry(&mut self) {
        self.held.retry = false;
        self.held.numbers_wait = false;
        if self.held.ats.is_empty() {
            // Only run numbers wait: `admit` asks for them, and says the end of the wait when they come.
            return;
        }
        if !self.world.commit_all() {
            self.store_failing();
            return;
        }
        let now = self.now.utc;
        for (pending, trigger) in self.held.ats.take(|_| true) {
            let job = pending.job;
            let late = now - pending.first_due;
            let grace = self.plan.jobs[job].misfire_grace;
            if late.to_std().unwrap_or_default() > grace {
                self.held_missed(job, trigger, &pending, late);
            } else {
                // Takes in the block committed with the firing.
                let number = self.jobs[job].next_number + self.instances(job) as u64;
                self.reserve_up_to(job, number);
                self.dispatch_firing(pending, trigger);
            }
            self.watch_job(job);
        }
        self.store_back();
    }

    /// A held `at` firing whose grace passed while the store could not be written.
    fn held_missed(
        &mut self,
        job: JobId,
        trigger: usize,
        pending: &Pending,
        late: chrono::Duration,
    ) {
        self.record_handled(job, trigger, pending.scheduled);
        let missed = super::claims::Missed {
            job,
            trigger,
            scheduled: pending.scheduled,
            late,
            count: 1,
            at_least: false,
            downtime: None,
            reason: None,
        };
        self.say_missed(missed);
    }

    /// At a stop, or when their job goes (`flowrun stop JOB`, a reload): held `at` firings of the jobs `of` picks
    /// did not run, so they are not handled (the next start fires them within their grace), and that is said.
    pub(super) fn drop_held(&mut self, of: impl Fn(JobId) -> bool) {
        for (pending, trigger) in self.held.ats.take(of) {
            self.record_unhandled(pending.job, trigger, pending.scheduled);
            if let Some(Trigger::Time { .. }) = self.plan.jobs[pending.job].triggers.get(trigger) {
                self.notice(format!(
                    "the `at` firing of {} due {} did not run: the state store could not record it; a next start fires it within its misfire_grace",
                    self.plan.jobs[pending.job].name,
                    crate::event::timestamp(pending.scheduled)
                ));
            }
        }
    }
}
