//! From a firing to a started run: time firings (misfire grace and coalescing are the timetable's), `max_instances`,
//! the executors' FIFO queues and workers, `each` batches, env files read first, the run's number, the spawn.

use std::sync::Arc;

use super::claims::{Claiming, Missed};
use super::ledger::Cause;
use super::{Core, Effect, Later, Manual, World};
use crate::engine::core::runs::{Batch, Pending, Run, RunId, RunState, StopCause};
use crate::engine::core::timetable::{jitter_delay, Due};
use crate::engine::envfile::FileEnv;
use crate::engine::requests::Refusal;
use crate::event::{Event, SkipReason};
use crate::plan::{JobId, TimeSpec, Trigger};

impl<W: World> Core<W> {
    /// A firing: skipped beyond `max_instances`, else queued for a worker. Whether it was queued.
    pub(super) fn fire(&mut self, pending: Pending) -> bool {
        let job = pending.job;
        if self.stopping || self.jobs[job].done || self.plan.jobs[job].retired {
            self.manual_skipped(pending.manual, "the job can fire no more".into());
            return false;
        }
        // `enabled: false`: its triggers fire nothing (a manual firing runs it).
        if !self.plan.jobs[job].enabled && pending.manual.is_none() {
            return false;
        }
        let max = self.plan.jobs[job].max_instances;
        let paused = self.is_paused(job);
        // Firings whose claims are still out to the cluster's store are not runs: they may never be.
        let alive = match self.cluster {
            true => self.instances(job) - self.arranged.claims_of(job),
            false => self.instances(job),
        };
        // A failure handler told of more failures than it may run at once takes them in turn.
        if pending.handles.is_some() && !paused && alive >= max {
            self.jobs[job].handler_backlog.push_back(pending);
            return true;
        }
        if paused || alive >= max {
            self.jobs[job].counts.skipped += 1;
            let why = match paused {
                true => SkipReason::Paused,
                false => SkipReason::MaxInstances(max),
            };
            self.manual_skipped(pending.manual, why.text());
            self.emit(Event::RunSkipped {
                job: self.plan.jobs[job].name.clone(),
                scheduled: Some(pending.scheduled),
                why,
                trigger: self.trigger_text(job, Cause::of(&pending)),
            });
            return false;
        }
        self.enqueue(pending);
        true
    }

    /// Whether a manual firing of the job `name` can be taken now: the job, or why not.
    pub fn manual_refusal(&self, name: &str) -> Result<JobId, (String, Refusal)> {
        let Some(job) = self.plan.job_id(name).filter(|&j| !self.retired(j)) else {
            return Err((format!("no job `{name}`"), Refusal::UnknownJob));
        };
        if self.stopping {
            return Err(("the runner is stopping".into(), Refusal::Stopping));
        }
        if let Some(p) = &self.jobs[job].paused {
            let until = p
                .until
                .map(|t| format!(" until {}", crate::event::timestamp(t)))
                .unwrap_or_default();
            let why = format!("`{name}` is paused{until}: `flowrun resume` it first");
            return Err((why, Refusal::Paused));
        }
        // A job whose output channel closed (its readers ended) would write into nothing.
        if let Some(c) = self.plan.jobs[job].stdout {
            if self.world.closed(c) {
                let channel = &self.plan.channels[c].name;
                let why = format!("its channel `{channel}` is closed (every writer ended): what it writes could not be read");
                return Err((why, Refusal::CannotRun));
            }
        }
        Ok(job)
    }

    /// A manual firing (the control API's trigger, its caller's key `key`): it obeys `max_instances` and the
    /// executor like any other; its caller hears `queued` when it waits for a worker.
    pub fn manual_fire(&mut self, job: JobId, key: u64, now: super::Now) {
        self.now = now;
        self.undo_done(job);
        let pending = Pending {
            manual: Some(key),
            ..self.pending_now(job)
        };
        if self.fire(pending) {
            self.admit();
            if self.is_queued(key) {
                self.manual(Manual::Queued(key));
            }
        }
        self.refresh();
    }

    /// A run of `job` ended: failures its handler was told of meanwhile start, as far as `max_instances` lets them.
    pub(super) fn drain_handler_backlog(&mut self, job: JobId) {
        let max = self.plan.jobs[job].max_instances;
        while !self.jobs[job].handler_backlog.is_empty()
            && self.instances(job) - self.jobs[job].handler_backlog.len() < max
        {
            let pending = self.jobs[job]
                .handler_backlog
                .pop_front()
                .expect("not empty");
            if self.stopping || self.is_paused(job) {
                continue;
            }
            self.enqueue(pending);
        }
    }

    pub(super) fn enqueue(&mut self, pending: Pending) {
        let ex = self.plan.jobs[pending.job].executor;
        self.executors.push_back(ex, pending);
    }

    /// Start waiting runs while their executors have free workers (FIFO per executor).
    pub(super) fn admit(&mut self) {
        if self.stopping {
            return;
        }
        for ex in 0..self.executors.len() {
            while self.executors.busy[ex] < self.plan.executors[ex].max_workers {
                let Some(pending) = self.executors.pop_front(ex) else {
                    break;
                };
                self.executors.busy[ex] += 1;
                // A lone time firing is started on this CPU for latency; bursts and message runs are left to
                // the scheduler, which spreads them over the CPUs for throughput.
                let alone = pending.coalesced > 0 && self.executors.is_idle(ex);
                let started = match self.plan.jobs[pending.job].env_files.is_empty() {
                    true => self.start_run(pending, ex, alone, Ok(FileEnv::default())),
                    false => {
                        self.prepare(pending, ex, alone);
                        true
                    }
                };
                // Held for the store: the rest of this queue waits behind it (FIFO).
                if !started {
                    break;
                }
            }
        }
    }

    /// Take messages for `each` runs while the job may start more.
    pub(super) fn pump_each(&mut self, job: JobId) {
        let Some((channel, batch)) = self.plan.jobs[job].each() else {
            return;
        };
        // A paused job's messages wait in their queue; a disabled job takes none.
        if self.stopping
            || self.jobs[job].done
            || self.is_paused(job)
            || !self.plan.jobs[job].enabled
        {
            return;
        }
        let trigger = self.plan.jobs[job]
            .triggers
            .iter()
            .position(|t| matches!(t, Trigger::Each { .. }));
        while self.instances(job) < self.plan.jobs[job].max_instances {
            let Some(taken) = self.world.take(channel, job, batch) else {
                break;
            };
            let pending = Pending {
                input: Some(Batch {
                    data: Arc::new(taken.data),
                    count: taken.count,
                    from: channel,
                    seqs: taken.seqs,
                    delivery: taken.delivery,
                }),
                trigger,
                ..self.pending_now(job)
            };
            self.enqueue(pending);
        }
    }

    /// A firing with a worker whose `env_file`s must be read first: read off the decision, one read per job at a
    /// time (firings that come meanwhile take its result). It waits among what `later` arranged, so a stop or
    /// `flowrun stop JOB` calls it off like a firing waiting for its jitter; its worker is held meanwhile.
    fn prepare(&mut self, pending: Pending, executor: usize, pin: bool) {
        let job = pending.job;
        let key = self.later(
            std::time::Duration::ZERO,
            Later::Prepare {
                pending,
                executor,
                pin,
            },
        );
        if let Some(keys) = self.env_reads.get_mut(&job) {
            keys.push(key);
            return;
        }
        self.env_reads.insert(job, vec![key]);
        self.out.push_back(Effect::ReadEnv(job));
    }

    /// A job's env files were read: the firings that waited for them start, unless they were called off.
    pub(super) fn on_prepared(&mut self, job: JobId, env: Result<FileEnv, String>) {
        for key in self.env_reads.remove(&job).unwrap_or_default() {
            let Some(Later::Prepare {
                pending,
                executor,
                pin,
            }) = self.arranged.remove(key)
            else {
                continue;
            };
            self.start_run(pending, executor, pin, env.clone());
        }
    }

    /// Start a run: give it a number (once that number is on disk: else it waits, `false`), then have it
    /// spawned ([`Effect::Spawn`], answered by `spawned` or `spawn_failed`).
    pub(super) fn start_run(
        &mut self,
        pending: Pending,
        executor: usize,
        pin: bool,
        env: Result<FileEnv, String>,
    ) -> bool {
        // A retry is a try of its run: it keeps the run's number (given already, and on disk). In a cluster a
        // new run's number comes from the cluster's counter (with its claim, or asked for now).
        if pending.number.is_none() && pending.granted.is_none() && self.cluster {
            if self.held.numbers_wait {
                self.hold(pending, executor);
                return false;
            }
            self.ask_number(pending, executor, pin, env);
            return true;
        }
        if pending.number.is_none() && !self.cluster && !self.number_ready(pending.job) {
            self.hold(pending, executor);
            return false;
        }
        self.store_back();
        let state = &mut self.jobs[pending.job];
        let number = match (pending.number, pending.granted) {
            (Some(number), _) => number,
            (None, Some(number)) => {
                state.counts.runs += 1;
                number
            }
            (None, None) => {
                let number = state.next_number;
                state.next_number += 1;
                state.counts.runs += 1;
                number
            }
        };
        self.start_numbered(pending, executor, pin, env, number);
        true
    }

    /// Start a run with its number: have it spawned.
    fn start_numbered(
        &mut self,
        pending: Pending,
        executor: usize,
        pin: bool,
        env: Result<FileEnv, String>,
        number: u64,
    ) {
        let state = &mut self.jobs[pending.job];
        state.counts.tries += 1;
        state.live += 1;
        let id = self.new_run_id();
        let run = Run::new(pending, number, executor, RunState::NotStarted, self.now);
        self.runs.insert(id, run);
        match env {
            Ok(env) => self.out.push_back(Effect::Spawn { id, pin, env }),
            Err(e) => self.spawn_failed(id, e),
        }
    }

    /// Run `id`'s process is up: its row and `run.start`, its timeout. (Its log, probe and the task that tends
    /// it are the shell's.)
    pub fn spawned(&mut self, id: RunId, pid: u32, now: super::Now) {
        self.now = now;
        let plan = self.plan.clone();
        let Some(run) = self.runs.get_mut(&id) else {
            return;
        };
        let job = &plan.jobs[run.job];
        run.state = RunState::Running { pid };
        run.writes = job.stdout;
        run.reads = job.stdin.or(run.input.as_ref().map(|b| b.from));
        run.has_probe = job.ready.is_some();
        let lateness_us = (now.utc - run.first_due).num_microseconds();
        let (manual, number) = (run.manual, run.number);
        let trigger = Cause::of_run(run);
        let run = &self.runs[&id];
        let event = Event::RunStart {
            job: job.name.clone(),
            run: number,
            pid,
            scheduled: run.scheduled,
            lateness_us,
            attempt: run.attempt,
            coalesced: run.coalesced,
            catch_up: run.catch_up,
            messages: run.input.as_ref().map(|b| b.count as u64),
            trigger: self.trigger_text(run.job, trigger),
            log: self.log_path(run.job, number),
        };
        if let Some(key) = manual {
            self.manual(Manual::Started { key, id, number });
        }
        self.emit(event);
        if let Some(t) = job.timeout {
            let key = self.later(t, Later::Timeout(id));
            if let Some(run) = self.runs.get_mut(&id) {
                run.timers.push(key);
            }
        }
    }

    /// Run `id` could not be spawned: it ends at once as not started (the shell tells its end).
    pub fn spawn_failed(&mut self, id: RunId, error: String) {
        let reason = match self.runs.get(&id) {
            Some(run) => format!(
                "cannot start `{}`: {error}",
                self.plan.jobs[run.job].command.display()
            ),
            None => error,
        };
        if let Some(run) = self.runs.get(&id) {
            if let Some(key) = run.manual {
                let number = run.number;
                self.manual(Manual::Started { key, id, number });
            }
        }
        self.out.push_back(Effect::Exit { id, reason });
    }

    pub(super) fn on_timeout(&mut self, id: RunId) {
        let Some(run) = self.runs.get(&id) else {
            return;
        };
        if let RunState::Running { pid } = run.state {
            self.emit(Event::RunTimeout {
                job: self.plan.jobs[run.job].name.clone(),
                run: run.number,
                pid,
            });
            let _ = self.stop_run(id, StopCause::Timeout);
        }
    }

    /// Messages an `each` firing or run did not finish wait again at the front of the queue they came from, and
    /// that channel's readers hear of them (the job's next firing may run them).
    pub(super) fn give_back_input(&mut self, job: JobId, batch: &Batch) {
        if self.world.give_back(job, batch) {
            self.out.push_back(Effect::Wake(batch.from));
        }
    }

    pub(super) fn give_back(&mut self, pending: Pending) {
        if let Some(batch) = &pending.input {
            self.give_back_input(pending.job, batch);
        }
    }

    /// Handle every time firing that is due (the timetable applies misfire grace and coalescing).
    pub(super) fn due_timers(&mut self) {
        if self.stopping {
            return;
        }
        let now = self.now.utc;
        let mut ats = Vec::new();
        for due in self.timetable.due(now) {
            match due {
                Due::Missed {
                    job,
                    scheduled,
                    late,
                    count,
                    trigger,
                    at_least,
                } => {
                    // Handled even without a store: a reload resumes the trigger after it.
                    self.record_handled(job, trigger, scheduled);
                    let missed = Missed {
                        job,
                        trigger,
                        scheduled,
                        late,
                        count,
                        at_least,
                        downtime: self.downtime(job, trigger, scheduled),
                        reason: None,
                    };
                    // In a cluster the runner that claims the miss says it (once for the cluster).
                    match self.cluster {
                        true => self.claim(Claiming::Miss(missed)),
                        false => self.say_missed(missed),
                    }
                }
                Due::Fire {
                    job,
                    trigger,
                    scheduled,
                    first_due,
                    coalesced,
                } => {
                    self.record_handled(job, trigger, scheduled);
                    let catch_up = first_due < self.started_at;
                    // At the start, a job that starts anyway runs once for both (see `start`); not in a cluster,
                    // where the catch-up is claimed once for all the runners that start.
                    if catch_up && self.starting && self.starts_itself(job) && !self.cluster {
                        self.start_covers.insert(job, (coalesced, first_due));
                        continue;
                    }
                    let pending = Pending {
                        scheduled,
                        first_due,
                        coalesced,
                        catch_up,
                        ..self.pending_by(job, trigger)
                    };
                    // A claimed firing is on the cluster's store before it runs: an `at` too.
                    if self.cluster {
                        self.claim(Claiming::Fire { pending, trigger });
                        continue;
                    }
                    match &self.plan.jobs[job].triggers[trigger] {
                        Trigger::Time {
                            rule: TimeSpec::At { .. },
                            ..
                        } => ats.push((pending, trigger)),
                        _ => self.dispatch_firing(pending, trigger),
                    }
                }
            }
        }
        // An `at` firing is on disk before its run starts: it never fires twice, even after a crash. While the
        // store cannot take it, it waits.
        self.fire_committed(ats);
        self.world.hand_over_if_durable();
    }

    /// For a firing missed while no runner was up: how long none was (since its trigger's last handled firing).
    fn downtime(
        &self,
        job: JobId,
        trigger: usize,
        scheduled: chrono::DateTime<chrono::Utc>,
    ) -> Option<std::time::Duration> {
        if scheduled >= self.started_at {
            return None;
        }
        let Some(Trigger::Time { rule, .. }) = self.plan.jobs[job].triggers.get(trigger) else {
            return None;
        };
        let key = (self.plan.jobs[job].name.clone(), rule.fingerprint());
        let since = self.handled_at_start.get(&key)?;
        (self.started_at - *since).to_std().ok()
    }

    /// The job has a `start` trigger (and fires at the runner's start).
    fn starts_itself(&self, job: JobId) -> bool {
        self.plan.jobs[job]
            .triggers
            .iter()
            .any(|t| matches!(t, Trigger::Start))
    }

    /// A time firing handled now: after its jitter, or at once.
    pub(super) fn dispatch_firing(&mut self, pending: Pending, trigger: usize) {
        match self.plan.jobs[pending.job].triggers.get(trigger) {
            Some(Trigger::Time { jitter, .. }) if !jitter.is_zero() => {
                let delay = jitter_delay(*jitter, self.world.random());
                self.later(delay, Later::Fire(pending));
            }
            _ => {
                self.fire(pending);
            }
        }
    }
}
