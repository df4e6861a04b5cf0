//! What the core shows of itself: one snapshot, from which the API's status and the live view are made (with the
//! channels' counts, which are the world's).

use chrono::{DateTime, Utc};

use super::{Core, World};
use crate::event::JobCounts;

pub struct Snapshot {
    pub started_at: DateTime<Utc>,
    pub stopping: bool,
    /// Every job of the plan, in its order (a job a reload removed is `retired`).
    pub jobs: Vec<JobSnapshot>,
}

pub struct JobSnapshot {
    pub name: String,
    pub retired: bool,
    /// Its live runs, by run number.
    pub runs: Vec<RunSnapshot>,
    /// Firings waiting for a worker of its executor.
    pub waiting: usize,
    pub next: Option<DateTime<Utc>>,
    pub done: bool,
    pub counts: JobCounts,
    pub last_exit: Option<String>,
    pub last_success: Option<DateTime<Utc>>,
    /// It has a readiness probe.
    pub probed: bool,
    /// Paused, and until when (`Some(None)`: until resumed).
    pub paused: Option<Option<DateTime<Utc>>>,
    /// Runs waiting for a retry (their backoff): neither live nor ended.
    pub retrying: Vec<u64>,
}

pub struct RunSnapshot {
    pub run: u64,
    pub pid: Option<u32>,
    pub started: DateTime<Utc>,
    pub attempt: u32,
    /// Whether its probe passed (`None`: no probe).
    pub ready: Option<bool>,
}

impl<W: World> Core<W> {
    pub fn snapshot(&self) -> Snapshot {
        let mut runs: Vec<Vec<RunSnapshot>> = self.plan.jobs.iter().map(|_| Vec::new()).collect();
        for run in self.runs.values() {
            runs[run.job].push(RunSnapshot {
                run: run.number,
                pid: run.state.pid(),
                started: run.started_at,
                attempt: run.attempt,
                ready: run.has_probe.then_some(run.ready),
            });
        }
        let next = self.next_fires();
        let mut retrying = self.arranged.retrying();
        let jobs = self
            .plan
            .jobs
            .iter()
            .zip(runs)
            .enumerate()
            .map(|(j, (job, mut runs))| {
                runs.sort_by_key(|r| r.run);
                let state = &self.jobs[j];
                JobSnapshot {
                    name: job.name.clone(),
                    retired: job.retired,
                    runs,
                    waiting: self.executors.waiting_of(j),
                    next: next[j],
                    done: state.done,
                    counts: state.counts.clone(),
                    last_exit: state.last_exit.clone(),
                    last_success: state.last_success,
                    probed: job.ready.is_some(),
                    paused: state.paused.as_ref().map(|p| p.until),
                    retrying: retrying.remove(&j).unwrap_or_default(),
                }
            })
            .collect();
        Snapshot {
            started_at: self.started_at,
            stopping: self.stopping,
            jobs,
        }
    }
}
