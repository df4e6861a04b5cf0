//! The jobs the dispatcher's `refresh` looks at after an input: those not done that no time trigger holds.
//!
//! A job whose time trigger has an instant to come can fire again whatever else it waits on, so it cannot be done;
//! it is looked at again only when that stops being true, which the timetable says (an entry ran out) or a stop or
//! reload changes for every job. So an input costs what it touches: 10,000 idle cron jobs are not walked each time
//! an interval job's run ends.

use crate::plan::JobId;

#[derive(Default)]
pub(super) struct Watch {
    list: Vec<JobId>,
    /// Whether a job is in `list` (or in the batch `take` handed out): no job twice.
    on: Vec<bool>,
}

impl Watch {
    /// Look at `job` at the next refresh.
    pub fn insert(&mut self, job: JobId) {
        if self.on.len() <= job {
            self.on.resize(job + 1, false);
        }
        if !self.on[job] {
            self.on[job] = true;
            self.list.push(job);
        }
    }

    /// Start over with these jobs (the start, a stop, a reload).
    pub fn reset(&mut self, jobs: impl Iterator<Item = JobId>) {
        self.on.iter_mut().for_each(|on| *on = false);
        self.list.clear();
        for job in jobs {
            self.insert(job);
        }
    }

    /// The jobs to look at now. Each must be handed back with `keep` or `release`; what `insert` is given meanwhile
    /// comes in the next batch.
    pub fn take(&mut self) -> Vec<JobId> {
        std::mem::take(&mut self.list)
    }

    /// Still to be looked at next time.
    pub fn keep(&mut self, job: JobId) {
        self.list.push(job);
    }

    /// Done: looked at no more (unless inserted again).
    pub fn release(&mut self, job: JobId) {
        self.on[job] = false;
    }
}

#[cfg(test)]
mod tests {
    use super::Watch;

    #[test]
    fn a_job_is_watched_once_and_added_again_after_it_is_dropped() {
        let mut w = Watch::default();
        w.insert(3);
        w.insert(3);
        w.insert(1);
        let batch = w.take();
        assert_eq!(batch, vec![3, 1]);
        // Inserted while its batch is out: already on, not listed twice.
        w.insert(3);
        w.keep(3);
        w.release(1);
        w.insert(1);
        assert_eq!(w.take(), vec![3, 1]);
    }

    #[test]
    fn reset_forgets_what_was_watched() {
        let mut w = Watch::default();
        w.insert(0);
        w.insert(5);
        w.reset([2].into_iter());
        assert_eq!(w.take(), vec![2]);
        w.release(2);
        w.insert(5);
        assert_eq!(w.take(), vec![5]);
    }
}
