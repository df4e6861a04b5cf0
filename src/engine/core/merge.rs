//! Reload (SPEC §5): a new plan applied to a running engine. Indices stay stable: jobs, channels and executors of
//! the old plan keep their places (removed ones stay as `retired` entries that never fire), new ones are appended,
//! and the new plan's references are renumbered into that order. So live runs, queued firings and channel queues
//! keep pointing at the right things, and only what changed is touched:
//! - new jobs are scheduled; removed jobs fire no more and their live runs end as at shutdown;
//! - changed jobs take their new definition from their next firing (a time trigger left as it was keeps its
//!   place on its grid: it resumes after its last handled firing);
//! - channels keep their waiting messages when their kind is unchanged.

use std::sync::Arc;

use super::{Core, World};
use crate::engine::core::runs::{JobState, RunId, StopCause};
use crate::engine::replan::Applied;
use crate::event::Event;
use crate::plan::{ChannelId, Plan, Trigger};

/// The merged plan, what changed, and the channels whose kind changed (their run-time side is rebuilt).
struct Merged {
    plan: Plan,
    applied: Applied,
    jobs_touched: Vec<usize>,
    removed: Vec<usize>,
    rebuilt: Vec<ChannelId>,
}

impl<W: World> Core<W> {
    /// A reload refused for these diagnostics: said as an event, nothing changes.
    pub fn reload_rejected(&mut self, errors: usize, summary: String, report: String) {
        self.emit(Event::ReloadRejected {
            errors,
            summary,
            report,
        });
    }

    /// A reload: a validated plan, merged into the running one and applied (or refused, and said, with why).
    pub fn reload(&mut self, plan: Plan, now: super::Now) -> Result<Applied, String> {
        self.now = now;
        let result = match self.merge(plan) {
            Ok(merged) => {
                let applied = merged.applied.clone();
                self.apply(merged);
                Ok(applied)
            }
            Err(reason) => {
                self.reload_rejected(1, reason.clone(), reason.clone());
                Err(reason)
            }
        };
        self.settle();
        result
    }

    /// Whether a channel is in use: a live run reads or writes it, or messages wait in it.
    fn channel_busy(&self, c: ChannelId) -> bool {
        let uses = |j: usize| {
            let job = &self.plan.jobs[j];
            job.stdin == Some(c)
                || job.stdout == Some(c)
                || job.dead_letter == Some(c)
                || job.each().map(|e| e.0) == Some(c)
        };
        self.runs.values().any(|r| uses(r.job)) || self.world.left(c) > 0
    }

    fn merge(&self, new: Plan) -> Result<Merged, String> {
        if self.stopping {
            return Err("the runner is stopping".into());
        }
        let old = &*self.plan;
        let mut executors = old.executors.clone();
        let ex_map = places(&mut executors, &new.executors, |e| &e.name);
        for (e, &k) in new.executors.iter().zip(&ex_map) {
            executors[k] = e.clone();
        }

        let (channels, ch_map, rebuilt) = self.merged_channels(&new.channels)?;

        let mut jobs = old.jobs.clone();
        let job_map = places(&mut jobs, &new.jobs, |j| &j.name);
        let mut applied = Applied::default();
        let mut touched = Vec::new();
        for (i, j) in new.jobs.iter().enumerate() {
            let job = renumbered(j, &ex_map, &ch_map, &job_map);
            let k = job_map[i];
            let existed = k < old.jobs.len() && !old.jobs[k].retired;
            if !existed {
                applied.added.push(job.name.clone());
                touched.push(k);
            } else if format!("{:?}", old.jobs[k]) != format!("{job:?}") {
                applied.changed.push(job.name.clone());
                touched.push(k);
            }
            jobs[k] = job;
        }
        let mut removed = Vec::new();
        let kept: std::collections::HashSet<usize> = job_map.iter().copied().collect();
        for (k, job) in old.jobs.iter().enumerate() {
            if !job.retired && !kept.contains(&k) {
                applied.removed.push(job.name.clone());
                removed.push(k);
                touched.push(k);
                jobs[k].retire();
            }
        }
        let mut plan = Plan {
            name: new.name,
            path: old.path.clone(),
            executors,
            channels,
            jobs,
        };
        // Who reads and writes what, from the merged jobs (in index order: old readers keep their order).
        plan.wire_channels();
        self.refuse_reopened(&plan)?;
        Ok(Merged {
            plan,
            applied,
            jobs_touched: touched,
            removed,
            rebuilt,
        })
    }

    /// The old channels (retired) with the new ones in their places, which index each new one has, and which
    /// must be rebuilt (their kind changes; refused while they are in use).
    fn merged_channels(&self, new: &[crate::plan::Channel]) -> Result<MergedChannels, String> {
        let old = &self.plan.channels;
        let mut channels = old.clone();
        channels.iter_mut().for_each(|c| c.retired = true);
        let ch_map = places(&mut channels, new, |c| &c.name);
        let mut rebuilt = Vec::new();
        for (c, &k) in new.iter().zip(&ch_map) {
            // A channel that becomes durable (or stops being) is built anew with (or without) its store, once
            // nothing uses it: its messages are never in two places.
            let existed = k < old.len() && !old[k].retired;
            if c.durable && !existed && !self.world.stored() {
                return Err(format!(
                    "new channel `{}` is durable: it keeps its messages in the state, and this runner has none (`--state none`)",
                    c.name
                ));
            }
            if existed && c.durable != old[k].durable {
                if c.durable && !self.world.stored() {
                    return Err(format!(
                        "channel `{}` becomes durable: it keeps its messages in the state, and this runner has none (`--state none`)",
                        c.name
                    ));
                }
                if self.channel_busy(k) {
                    return Err(format!(
                        "channel `{}` {} durable while runs use it or messages wait in it; stop its jobs first, or restart the runner",
                        c.name,
                        if c.durable { "becomes" } else { "stops being" }
                    ));
                }
                rebuilt.push(k);
            } else if k < old.len() && old[k].kind != c.kind {
                if self.channel_busy(k) {
                    return Err(format!(
                        "channel `{}` changes kind ({} to {}) while runs use it or messages wait in it; stop its jobs first, or restart the runner",
                        c.name,
                        old[k].kind.as_str(),
                        c.kind.as_str()
                    ));
                }
                rebuilt.push(k);
            }
            channels[k] = c.clone();
        }
        Ok((channels, ch_map, rebuilt))
    }

    /// A closed channel cannot take a new writer (its readers had their end).
    fn refuse_reopened(&self, plan: &Plan) -> Result<(), String> {
        let old = &self.plan.channels;
        for (c, channel) in plan.channels.iter().enumerate() {
            let reopened = c < old.len()
                && self.world.closed(c)
                && channel.writers.iter().any(|w| !old[c].writers.contains(w));
            if reopened {
                return Err(format!(
                    "channel `{}` is closed (its writers ended) and cannot take a new writer; restart the runner",
                    channel.name
                ));
            }
        }
        Ok(())
    }

    fn apply(&mut self, merged: Merged) {
        let plan = Arc::new(merged.plan);
        self.plan = plan.clone();
        self.joins_on = plan.joins_on();
        self.handled_by = plan.handled_by();
        self.world.rewire(plan.clone(), &merged.rebuilt);
        self.executors.grow(plan.executors.len());
        while self.jobs.len() < plan.jobs.len() {
            let j = self.jobs.len();
            let mut state = JobState::new(&plan.jobs[j].triggers);
            // A job that ran under this name before goes on with its numbers (its first run reserves more).
            state.next_number += self.last_runs.get(&plan.jobs[j].name).copied().unwrap_or(0);
            self.jobs.push(state);
        }
        for &j in &merged.jobs_touched {
            // A changed job's joins start over with its new triggers; it may fire again.
            let fresh = JobState::new(&plan.jobs[j].triggers);
            self.jobs[j].joins = fresh.joins;
            self.jobs[j].upstream = fresh.upstream;
            self.jobs[j].dead_joins_said = false;
            self.jobs[j].done = false;
            self.schedule_job(j);
            self.hear_ready_runs(j);
        }
        for &j in &merged.removed {
            let ids: Vec<RunId> = self
                .runs
                .iter()
                .filter(|(_, r)| r.job == j)
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                let _ = self.stop_run(id, StopCause::Request);
            }
            self.drop_waiting_of(j, "the job was removed by a reload");
        }
        let a = &merged.applied;
        self.emit(Event::ReloadApplied {
            added: a.added.clone(),
            removed: a.removed.clone(),
            changed: a.changed.clone(),
        });
        // A job added by the reload starts as it would with the runner: its `start` triggers fire now.
        for &j in &merged.jobs_touched {
            if !a.added.contains(&plan.jobs[j].name) {
                continue;
            }
            for (t, trigger) in plan.jobs[j].triggers.iter().enumerate() {
                if matches!(trigger, Trigger::Start) {
                    self.fire(self.pending_by(j, t));
                }
            }
        }
        // A reader a reload added, or made of a job that was done, is fed by the writers still live (unless they
        // wrote meanwhile and had their pipe closed: nobody could read it then); a channel whose last writer or
        // reader the reload took away settles now, or when that job's runs end. (Jobs made not done above are
        // counted again by `watch_all` below.)
        for (c, channel) in plan.channels.iter().enumerate() {
            for &r in &channel.readers {
                if !self.jobs[r].done && !self.stopping {
                    self.world.reader_back(c, r);
                }
            }
            self.settle_channel(c);
        }
        for j in 0..plan.jobs.len() {
            self.pump_each(j);
        }
        // What the rescheduled triggers missed already is said now (it would otherwise wait for a due firing).
        self.due_timers();
        // Jobs were added, and changed jobs' triggers rescheduled: any of them may be done or held anew.
        self.watch_all();
    }
}

/// Where each new item goes in the merged list (`merged` starts as the old list): the place of the old item of
/// the same name, else a new place at the end (the new item is appended there).
fn places<T: Clone>(merged: &mut Vec<T>, new: &[T], name: impl Fn(&T) -> &str) -> Vec<usize> {
    let mut at: std::collections::HashMap<String, usize> = merged
        .iter()
        .enumerate()
        .map(|(i, x)| (name(x).to_string(), i))
        .collect();
    new.iter()
        .map(|x| match at.get(name(x)) {
            Some(&k) => k,
            None => {
                merged.push(x.clone());
                at.insert(name(x).to_string(), merged.len() - 1);
                merged.len() - 1
            }
        })
        .collect()
}

/// A job of the new plan with its executor, channels and upstream jobs numbered as in the merged plan.
fn renumbered(
    j: &crate::plan::Job,
    ex_map: &[usize],
    ch_map: &[usize],
    job_map: &[usize],
) -> crate::plan::Job {
    let mut job = j.clone();
    job.executor = ex_map[job.executor];
    job.stdin = job.stdin.map(|c| ch_map[c]);
    job.stdout = job.stdout.map(|c| ch_map[c]);
    job.dead_letter = job.dead_letter.map(|c| ch_map[c]);
    for t in &mut job.triggers {
        match t {
            Trigger::After { jobs: ups, .. } => ups.iter_mut().for_each(|u| *u = job_map[*u]),
            Trigger::Each { channel, .. } => *channel = ch_map[*channel],
            Trigger::Start | Trigger::Time { .. } => {}
        }
    }
    job
}

/// The merged channels, the index of each new channel among them, and those to rebuild (their kind changed).
type MergedChannels = (Vec<crate::plan::Channel>, Vec<usize>, Vec<usize>);
