//! When the work is over: a job is done when nothing of it runs or waits and none of its triggers can fire again;
//! its channels close behind it, and joins that can never complete are said.

use super::ledger::Cause;
use super::{Core, Effect, World};
use crate::event::{Event, SkipReason};
use crate::plan::{ChannelId, JobId, Trigger};

impl<W: World> Core<W> {
    /// Look again at every job that is not done and that no time trigger holds (the start, a stop, a reload:
    /// whatever may change that for many jobs at once).
    pub fn watch_all(&mut self) {
        let (jobs, timetable, stopping) = (&self.jobs, &self.timetable, self.stopping);
        self.watch
            .reset((0..jobs.len()).filter(|&j| !jobs[j].done && (stopping || !timetable.holds(j))));
        self.undone = jobs.iter().filter(|j| !j.done).count();
    }

    /// A job that was done may fire again (a manual firing).
    pub fn undo_done(&mut self, j: JobId) {
        if self.jobs[j].done {
            self.undone += 1;
        }
        self.jobs[j].done = false;
        self.watch.insert(j);
    }

    /// Look at this job at the next refresh (it may be done now).
    pub fn watch_job(&mut self, job: JobId) {
        self.watch.insert(job);
    }

    /// Mark jobs that can never fire again as done, close the channels they wrote, and skip dead joins. Only the
    /// watched jobs can be done (see `watch`); one being done may finish others, hence the loop.
    pub(super) fn refresh(&mut self) {
        for j in self.timetable.take_ran_out() {
            if j < self.jobs.len() && !self.jobs[j].done {
                self.watch.insert(j);
            }
        }
        loop {
            let mut changed = false;
            for j in self.watch.take() {
                if self.jobs[j].done {
                    self.watch.release(j);
                    continue;
                }
                if !self.can_be_done(j) {
                    self.watch.keep(j);
                    continue;
                }
                self.watch.release(j);
                self.jobs[j].done = true;
                self.undone -= 1;
                changed = true;
                self.skip_dead_joins(j);
                self.close_channels_of(j);
                // Its handler may have waited only for it.
                if let Some(h) = self.plan.jobs[j].on_failure {
                    self.watch.insert(h);
                }
            }
            if !changed {
                break;
            }
        }
        // Every test drives a debug build: there a pass over every job checks that the watch missed none.
        #[cfg(debug_assertions)]
        {
            for j in 0..self.jobs.len() {
                assert!(
                    self.jobs[j].done || !self.can_be_done(j),
                    "job {} can be done but was not watched",
                    self.plan.jobs[j].name
                );
            }
            assert_eq!(self.undone, self.jobs.iter().filter(|j| !j.done).count());
        }
    }

    /// Nothing of the job is running or on its way, and none of its triggers can fire again.
    fn can_be_done(&self, j: JobId) -> bool {
        self.instances(j) == 0 && !self.can_fire_again(j)
    }

    fn can_fire_again(&self, j: JobId) -> bool {
        if self.stopping || !self.plan.jobs[j].enabled {
            return false;
        }
        // A failure handler waits while a job whose failures fire it can still run.
        if self.handled_by[j].iter().any(|&u| !self.jobs[u].done) {
            return true;
        }
        self.plan.jobs[j]
            .triggers
            .iter()
            .enumerate()
            .any(|(t, trig)| match trig {
                Trigger::Start => false,
                Trigger::Time { .. } => self.timetable.can_fire(j, t),
                Trigger::After { jobs, .. } => {
                    self.jobs[j].joins[t].possible(|k| self.jobs[jobs[k]].done)
                }
                Trigger::Each { channel, .. } => {
                    self.world.unsettled(*channel, j) || self.coming_back(*channel)
                }
            })
    }

    /// Messages of a queue held by a run or a firing waiting for a worker: while they are, the queue is not over
    /// for its other readers, as they may come back (the run or firing is stopped, or its job removed by a reload)
    /// and then go to whichever reader is free. (A broadcast reader's copy is its own.) Asked only of a queue
    /// that is closed and empty.
    fn coming_back(&self, channel: crate::plan::ChannelId) -> bool {
        let from_here = |input: &Option<crate::engine::core::runs::Batch>| {
            input.as_ref().is_some_and(|b| b.from == channel)
        };
        self.plan.channels[channel].kind == crate::document::ChannelKind::Queue
            && (self.runs.values().any(|r| from_here(&r.input))
                || self.executors.waiting().any(|p| from_here(&p.input)))
    }

    /// A join that can never complete: skipped for good. That alone does not fail the workflow: a failure handler
    /// that is not needed is the normal case, and an upstream failure already fails it.
    fn skip_dead_joins(&mut self, j: JobId) {
        if self.stopping || self.jobs[j].dead_joins_said {
            return;
        }
        self.jobs[j].dead_joins_said = true;
        let plan = self.plan.clone();
        for (t, trig) in plan.jobs[j].triggers.iter().enumerate() {
            let Trigger::After { jobs, status, .. } = trig else {
                continue;
            };
            let blocking = self.jobs[j].joins[t].blocking(|k| self.jobs[jobs[k]].done);
            if blocking.is_empty() {
                continue;
            }
            // A disabled upstream never ran: said so, not "ended without reaching".
            let (disabled, ended): (Vec<usize>, Vec<usize>) =
                blocking.iter().partition(|&&k| !plan.jobs[jobs[k]].enabled);
            let names = |ks: &[usize]| -> String {
                let names: Vec<&str> = ks
                    .iter()
                    .map(|&k| plan.jobs[jobs[k]].name.as_str())
                    .collect();
                names.join(", ")
            };
            let mut said = Vec::new();
            if !ended.is_empty() {
                said.push(format!(
                    "{} ended without reaching {}",
                    names(&ended),
                    status.goal()
                ));
            }
            if !disabled.is_empty() {
                said.push(format!(
                    "{} is disabled (`enabled: false`)",
                    names(&disabled)
                ));
            }
            self.jobs[j].counts.skipped += 1;
            let why = SkipReason::JoinDead(format!("`after` can never fire: {}", said.join("; ")));
            self.emit(Event::RunSkipped {
                job: self.plan.jobs[j].name.clone(),
                scheduled: None,
                why,
                trigger: self.trigger_text(j, Cause::Trigger(t)),
            });
        }
    }

    /// A job that can run no more: close the channels it was the last writer of, and let go of those it read.
    fn close_channels_of(&mut self, j: JobId) {
        let plan = self.plan.clone();
        for (c, channel) in plan.channels.iter().enumerate() {
            let reads = channel.readers.contains(&j);
            if reads {
                self.world.reader_done(c, j);
            }
            if reads || channel.writers.contains(&j) {
                self.settle_channel(c);
            }
        }
    }

    /// Close a channel when nothing can write it any more: its writers are done and no live run still writes it
    /// (a run of a job a reload took away from it); let its writers go when nothing can read it any more. Asked
    /// when a job is done, when a run ends and after a reload (which can take a channel's last writer or reader).
    pub fn settle_channel(&mut self, c: ChannelId) {
        let plan = self.plan.clone();
        let channel = &plan.channels[c];
        let done = |jobs: &[JobId]| jobs.iter().all(|&j| self.jobs[j].done);
        let (writers_done, readers_done) = (done(&channel.writers), done(&channel.readers));
        // A durable queue shared by a cluster never closes: writers on other runners may add to it at any time,
        // and this runner's writers write to the cluster whoever reads here.
        if self.cluster && channel.durable {
            return;
        }
        if !self.world.closed(c) && writers_done && !self.runs.values().any(|r| r.writes == Some(c))
        {
            let messages = self.world.close(c);
            self.emit(Event::ChannelClosed {
                channel: self.plan.channels[c].name.clone(),
                messages,
            });
            self.out.push_back(Effect::Wake(c));
        }
        if readers_done && !self.runs.values().any(|r| r.reads == Some(c)) {
            self.world.readers_gone(c);
        }
    }
}
