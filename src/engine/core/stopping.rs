//! Stopping: a run (SIGTERM to its group, SIGKILL after its `stop_grace`), what of a job waits to run, and the
//! runner (no new firings; what waits goes back; every live run stopped; a second SIGINT forces).

use super::{Core, Effect, Later, World};
use crate::engine::core::runs::{RunId, RunState, StopCause};
use crate::engine::Stop;
use crate::event::Event;
use crate::plan::JobId;

impl<W: World> Core<W> {
    /// What of job `j` waits to run goes (`flowrun stop JOB`, the job removed by a reload): its firings waiting
    /// for a worker or for their jitter, its retries waiting for their backoff, a service's restart waiting for its
    /// delay. An `each` firing's messages go back to their queue; a caller waiting on a manual firing hears `why`.
    pub fn drop_waiting_of(&mut self, j: JobId, why: &str) {
        self.jobs[j].handler_backlog.clear();
        for p in self.executors.take_job(j) {
            self.manual_skipped(p.manual, why.into());
            self.give_back(p);
        }
        self.call_off_waiting(|job| job == j, why);
        self.drop_held(|job| job == j);
    }

    /// Call off the firings, retries and restarts of the jobs `of` picks that wait for their time: an `each`
    /// firing's messages go back to their queue (left, not lost), a caller waiting on a manual firing hears `why`.
    fn call_off_waiting(&mut self, of: impl Fn(JobId) -> bool, why: &str) {
        for key in self.arranged.keys_of(of) {
            let Some(later) = self.arranged.remove(key) else {
                continue;
            };
            if !matches!(later, Later::Prepare { .. }) {
                self.out.push_back(Effect::Disarm(key));
            }
            match later {
                Later::Fire(p) => {
                    self.manual_skipped(p.manual, why.into());
                    self.give_back(p);
                }
                Later::Retry(p) => {
                    let why = format!("its failed run's retry was called off: {why}");
                    self.manual_skipped(p.manual, why.clone());
                    self.retry_called_off(p, &why);
                }
                Later::Restart(_) => {}
                Later::Prepare {
                    pending, executor, ..
                } => {
                    self.executors.busy[executor] -= 1;
                    self.manual_skipped(pending.manual, why.into());
                    self.give_back(pending);
                }
                Later::Number {
                    pending, executor, ..
                } => {
                    self.executors.busy[executor] -= 1;
                    self.manual_skipped(pending.manual, why.into());
                    self.give_back(pending);
                }
                Later::Claim(super::claims::Claiming::Fire { pending, .. }) => {
                    self.manual_skipped(pending.manual, why.into());
                    self.give_back(pending);
                }
                Later::Claim(super::claims::Claiming::Miss(_)) => {}
                // The end is told no more: the join's state in the store waits for the next.
                Later::JoinEnd(_) => {}
                Later::Timeout(_) | Later::Kill(_) | Later::StoreRetry | Later::Resume(_) => {}
            }
        }
    }

    /// At a stop: firings, retries and restarts that wait for their time happen no more. Timeouts and kills stay:
    /// they concern runs still being stopped.
    fn drop_waiting(&mut self) {
        self.call_off_waiting(|_| true, "the runner stopped before it started");
    }

    pub fn on_stop(&mut self, stop: Stop) {
        match stop {
            Stop::Interrupt if self.stopping => self.force(),
            Stop::Interrupt => self.stop_asked("SIGINT"),
            Stop::Signal(name) => self.stop_asked(name),
            Stop::Deadline => self.stop("--for elapsed"),
        }
    }

    /// A stop asked for (its exit says how cleanly it went, not what failed before).
    fn stop_asked(&mut self, why: &str) {
        if !self.stopping {
            self.asked_to_stop = true;
        }
        self.stop(why);
    }

    /// Stop: no new firings; every live run is stopped; what waits is counted at the end.
    fn stop(&mut self, why: &str) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        // No job can fire again now: any that is idle is done.
        self.watch_all();
        self.emit(Event::RunnerStopping {
            reason: why.to_string(),
            live_runs: self.runs.len(),
        });
        self.timetable.clear();
        self.drop_waiting();
        self.drop_held(|_| true);
        // Failures a handler had not yet been told of: it will not run now.
        for j in 0..self.jobs.len() {
            self.jobs[j].handler_backlog.clear();
        }
        for p in self.executors.take_all() {
            self.manual_skipped(p.manual, "the runner stopped before it started".into());
            self.give_back(p);
        }
        self.world.shut();
        let ids: Vec<RunId> = self.runs.keys().copied().collect();
        for id in ids {
            let _ = self.stop_run(id, StopCause::Shutdown);
        }
    }

    /// SIGTERM to a run's group, SIGKILL after its `stop_grace` (at once when that is zero). Whether it was
    /// running (and is now stopping).
    pub fn stop_run(&mut self, id: RunId, cause: StopCause) -> bool {
        let Some(run) = self.runs.get_mut(&id) else {
            return false;
        };
        let RunState::Running { pid } = run.state else {
            return false;
        };
        run.state = RunState::Stopping { pid, cause };
        // A stopping run is never found ready: its probe checks no more.
        if run.has_probe {
            self.out.push_back(Effect::StopProbe(id));
        }
        let grace = self.plan.jobs[run.job].stop_grace;
        if grace.is_zero() {
            // No grace: nothing (not even a TERM trap) runs between the stop and the kill.
            self.out.push_back(Effect::Signal {
                pid,
                signal: libc::SIGKILL,
            });
            return true;
        }
        self.out.push_back(Effect::Signal {
            pid,
            signal: libc::SIGTERM,
        });
        let kill = self.later(grace, Later::Kill(id));
        if let Some(run) = self.runs.get_mut(&id) {
            run.timers.push(kill);
        }
        true
    }

    fn force(&mut self) {
        self.forced = true;
        let pids: Vec<u32> = self.runs.values().filter_map(|r| r.state.pid()).collect();
        for pid in pids {
            self.out.push_back(Effect::Signal {
                pid,
                signal: libc::SIGKILL,
            });
        }
    }

    /// `flowrun stop [JOB]`: the live runs of a job (all jobs: `None`) are stopped as at shutdown (a service is
    /// not restarted), and what of it waits to run goes; how many runs were stopped.
    pub fn stop_jobs(&mut self, name: Option<&str>, now: super::Now) -> Result<usize, String> {
        self.now = now;
        let job = match name {
            Some(n) => Some(
                self.plan
                    .job_id(n)
                    .filter(|&j| !self.retired(j))
                    .ok_or_else(|| format!("no job `{n}`"))?,
            ),
            None => None,
        };
        let ids: Vec<RunId> = self
            .runs
            .iter()
            .filter(|(_, r)| job.is_none_or(|j| r.job == j))
            .map(|(id, _)| *id)
            .collect();
        let mut stopped = 0;
        for id in ids {
            if self.stop_run(id, StopCause::Request) {
                stopped += 1;
            }
        }
        // What waits to run goes too: queued firings, retries and a service's restart on their way.
        let jobs: Vec<usize> = match job {
            Some(j) => vec![j],
            None => (0..self.plan.jobs.len()).collect(),
        };
        for j in jobs {
            self.drop_waiting_of(j, "the job was stopped (flowrun stop) before it started");
        }
        Ok(stopped)
    }
}
