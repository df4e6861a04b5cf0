//! Pause and resume (SPEC §7): a paused job fires nothing (its time firings, joins and restarts are skipped as
//! `paused`, its `each` messages wait in their queue, a manual firing is refused), its live runs go on. A pause is
//! remembered in the state across restarts; `--for` ends it by itself.

use chrono::{DateTime, Utc};

use super::runs::Paused;
use super::{Core, Later, Urgency, World};
use crate::event::Event;
use crate::plan::JobId;
use crate::store::Op;

impl<W: World> Core<W> {
    /// Pause the job `name` until `until` (or until resumed). A pause again replaces the first one's end.
    pub fn pause(
        &mut self,
        name: &str,
        until: Option<DateTime<Utc>>,
        now: super::Now,
    ) -> Result<(), String> {
        self.now = now;
        let job = self.job_named(name)?;
        if until.is_some_and(|t| t <= now.utc) {
            return Err(format!("{name}: a pause must end in the future"));
        }
        self.set_paused(job, until);
        let op = Op::Pause {
            job: name.to_string(),
            until,
        };
        self.world.record(op, Urgency::Soon);
        Ok(())
    }

    /// Resume the job `name`; whether it was paused.
    pub fn resume(&mut self, name: &str, now: super::Now) -> Result<bool, String> {
        self.now = now;
        let job = self.job_named(name)?;
        let paused = self.jobs[job].paused.is_some();
        self.resume_job(job);
        self.settle();
        Ok(paused)
    }

    /// The job fires again; its `each` messages are taken again.
    pub(super) fn resume_job(&mut self, job: JobId) {
        let Some(paused) = self.jobs[job].paused.take() else {
            return;
        };
        if let Some(timer) = paused.timer {
            self.call_off(timer);
        }
        let name = self.plan.jobs[job].name.clone();
        self.world
            .record(Op::Resume { job: name.clone() }, Urgency::Soon);
        self.emit(Event::JobResumed { job: name });
        self.pump_each(job);
    }

    fn set_paused(&mut self, job: JobId, until: Option<DateTime<Utc>>) {
        if let Some(timer) = self.jobs[job].paused.take().and_then(|p| p.timer) {
            self.call_off(timer);
        }
        let timer = until.map(|t| {
            let delay = (t - self.now.utc).to_std().unwrap_or_default();
            self.later(delay, Later::Resume(job))
        });
        self.jobs[job].paused = Some(Paused { until, timer });
        self.emit(Event::JobPaused {
            job: self.plan.jobs[job].name.clone(),
            until,
        });
    }

    /// At the start: the pauses a previous runner left (one whose end passed meanwhile is over).
    pub(super) fn pauses_remembered(&mut self) {
        let remembered = std::mem::take(&mut self.remembered_pauses);
        for (name, until) in remembered {
            let Some(job) = self.plan.job_id(&name) else {
                continue;
            };
            match until {
                Some(t) if t <= self.now.utc => {
                    let op = Op::Resume { job: name };
                    self.world.record(op, Urgency::Soon);
                }
                _ => self.set_paused(job, until),
            }
        }
    }

    fn job_named(&self, name: &str) -> Result<JobId, String> {
        self.plan
            .job_id(name)
            .filter(|&j| !self.retired(j))
            .ok_or_else(|| format!("no job `{name}`"))
    }

    /// Whether the job fires nothing now.
    pub(super) fn is_paused(&self, job: JobId) -> bool {
        self.jobs[job].paused.is_some()
    }
}
