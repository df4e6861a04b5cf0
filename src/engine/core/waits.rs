//! What waits to run, each kind in a container that counts it per job: firings in the executors' queues, firings,
//! retries and restarts arranged for later, `at` firings held for the store. A job's instances (`max_instances`)
//! are its live runs plus these counts, so no counter is kept by hand beside what it counts.

use std::collections::{HashMap, VecDeque};

use super::Later;
use crate::engine::core::runs::Pending;
use crate::plan::JobId;

/// A count per job (a reload appends jobs: it grows as asked).
#[derive(Default)]
pub struct PerJob(Vec<usize>);

impl PerJob {
    fn add(&mut self, job: JobId) {
        if self.0.len() <= job {
            self.0.resize(job + 1, 0);
        }
        self.0[job] += 1;
    }

    fn sub(&mut self, job: JobId) {
        self.0[job] -= 1;
    }

    pub fn get(&self, job: JobId) -> usize {
        self.0.get(job).copied().unwrap_or(0)
    }
}

/// The executors: their workers in use and their FIFO queues of firings waiting for one.
#[derive(Default)]
pub struct Executors {
    pub busy: Vec<usize>,
    queues: Vec<VecDeque<Pending>>,
    per_job: PerJob,
}

impl Executors {
    pub fn new(count: usize) -> Executors {
        let mut executors = Executors::default();
        executors.grow(count);
        executors
    }

    /// A reload added executors.
    pub fn grow(&mut self, count: usize) {
        self.busy.resize(count.max(self.busy.len()), 0);
        self.queues
            .resize_with(count.max(self.queues.len()), VecDeque::new);
    }

    pub fn len(&self) -> usize {
        self.queues.len()
    }

    pub fn push_back(&mut self, ex: usize, pending: Pending) {
        self.per_job.add(pending.job);
        self.queues[ex].push_back(pending);
    }

    /// Back at the head of its queue (a firing held for the store).
    pub fn push_front(&mut self, ex: usize, pending: Pending) {
        self.per_job.add(pending.job);
        self.queues[ex].push_front(pending);
    }

    pub fn pop_front(&mut self, ex: usize) -> Option<Pending> {
        let pending = self.queues[ex].pop_front()?;
        self.per_job.sub(pending.job);
        Some(pending)
    }

    pub fn is_idle(&self, ex: usize) -> bool {
        self.queues[ex].is_empty()
    }

    /// The firings of job `j` leave their queues (in queue order).
    pub fn take_job(&mut self, j: JobId) -> Vec<Pending> {
        let mut gone = Vec::new();
        for queue in &mut self.queues {
            let (taken, kept): (Vec<Pending>, Vec<Pending>) =
                std::mem::take(queue).into_iter().partition(|p| p.job == j);
            *queue = kept.into();
            gone.extend(taken);
        }
        for p in &gone {
            self.per_job.sub(p.job);
        }
        gone
    }

    /// Every waiting firing leaves (a stop), executor by executor in queue order.
    pub fn take_all(&mut self) -> Vec<Pending> {
        let mut gone = Vec::new();
        for queue in &mut self.queues {
            gone.extend(std::mem::take(queue));
        }
        for p in &gone {
            self.per_job.sub(p.job);
        }
        gone
    }

    /// Firings of job `j` waiting for a worker.
    pub fn waiting_of(&self, j: JobId) -> usize {
        self.per_job.get(j)
    }

    pub fn waiting(&self) -> impl Iterator<Item = &Pending> {
        self.queues.iter().flatten()
    }
}

/// What the core arranged for later, by key: the firings, retries and restarts among them count for their job.
#[derive(Default)]
pub struct Arranged {
    by_key: HashMap<u64, Later>,
    per_job: PerJob,
    next_key: u64,
}

impl Arranged {
    pub fn insert(&mut self, later: Later) -> u64 {
        if let Some(job) = later.job_to_run() {
            self.per_job.add(job);
        }
        let key = self.next_key;
        self.next_key += 1;
        self.by_key.insert(key, later);
        key
    }

    pub fn get(&self, key: u64) -> Option<&Later> {
        self.by_key.get(&key)
    }

    pub fn remove(&mut self, key: u64) -> Option<Later> {
        let later = self.by_key.remove(&key)?;
        if let Some(job) = later.job_to_run() {
            self.per_job.sub(job);
        }
        Some(later)
    }

    /// The keys of what will run a job that `of` picks.
    pub fn keys_of(&self, of: impl Fn(JobId) -> bool) -> Vec<u64> {
        let mut keys: Vec<u64> = self
            .by_key
            .iter()
            .filter(|(_, l)| l.job_to_run().is_some_and(&of))
            .map(|(k, _)| *k)
            .collect();
        // In the order they were arranged: what goes back to a queue goes back in that order.
        keys.sort_unstable();
        keys
    }

    /// The runs (by number) waiting for their retry's backoff, by job.
    pub fn retrying(&self) -> std::collections::HashMap<JobId, Vec<u64>> {
        let mut by_job: std::collections::HashMap<JobId, Vec<u64>> = Default::default();
        for later in self.by_key.values() {
            if let Later::Retry(Pending {
                job,
                number: Some(n),
                ..
            }) = later
            {
                by_job.entry(*job).or_default().push(*n);
            }
        }
        by_job
    }

    /// Claims of job `j`'s firings, and ends told to its joins, out to the cluster's store (or waiting to be asked
    /// again).
    pub fn claims_of(&self, j: JobId) -> usize {
        self.by_key
            .values()
            .filter(|l| match l {
                Later::Claim(c) => c.job_to_run() == Some(j),
                Later::JoinEnd(end) => end.job == j,
                _ => false,
            })
            .count()
    }

    /// Firings, retries and restarts of job `j` on their way.
    pub fn count(&self, j: JobId) -> usize {
        self.per_job.get(j)
    }
}

/// `at` firings whose handling is not on disk yet: (the firing, its trigger).
#[derive(Default)]
pub struct HeldAts {
    ats: Vec<(Pending, usize)>,
    per_job: PerJob,
}

impl HeldAts {
    pub fn extend(&mut self, ats: Vec<(Pending, usize)>) {
        for (p, _) in &ats {
            self.per_job.add(p.job);
        }
        self.ats.extend(ats);
    }

    /// Those of the jobs `of` picks leave.
    pub fn take(&mut self, of: impl Fn(JobId) -> bool) -> Vec<(Pending, usize)> {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ats)
            .into_iter()
            .partition(|(p, _)| of(p.job));
        self.ats = kept;
        for (p, _) in &gone {
            self.per_job.sub(p.job);
        }
        gone
    }

    pub fn is_empty(&self) -> bool {
        self.ats.is_empty()
    }

    pub fn count(&self, j: JobId) -> usize {
        self.per_job.get(j)
    }
}
