//! What follows a run's end: the take-back report, classification (pure, in `outcome`), the log footer, the
//! counts, then retry or dead letter, the joins downstream, a service's restart, and more `each` runs.

use std::sync::Arc;

use super::upstream::{upstream_entry, upstream_text};
use super::{Core, Effect, Later, Manual, World};
use crate::engine::core::outcome::{
    classify, restarts, retry_delay, Classified, ExitFacts, Milestone, RunResult, StoppedFor,
};
use crate::engine::core::runs::{Pending, Run, RunId, RunState, StopCause};
use crate::engine::supervise::RunEnd;
use crate::event::{Event, RunExit};
use crate::plan::{ChannelId, ChannelKind, Job, JobId, Status, Trigger};

impl<W: World> Core<W> {
    pub(super) fn on_exit(&mut self, id: RunId, end: RunEnd) {
        let Some(wires) = self.runs.get(&id).map(|r| [r.writes, r.reads]) else {
            return;
        };
        self.end_run(id, end);
        // A run of a job a reload took away from a channel may have been the last to use it.
        for c in wires.into_iter().flatten() {
            self.settle_channel(c);
        }
    }

    /// A manual firing's caller hears how its run ended (only a manual firing has a caller).
    fn tell_caller(&mut self, id: RunId, run: &Run, c: &Classified) {
        if run.manual.is_none() {
            return;
        }
        self.manual(Manual::Ended(
            id,
            crate::engine::requests::RunEnded {
                run: run.number,
                outcome: super::outcome_of(c, run.state).as_str(),
                code: c.code,
                signal: c.signal.clone(),
                success: c.success,
                reason: c.reason.clone(),
            },
        ));
    }

    fn end_run(&mut self, id: RunId, end: RunEnd) {
        let Some(mut run) = self.runs.remove(&id) else {
            return;
        };
        for key in std::mem::take(&mut run.timers) {
            self.call_off(key);
        }
        let plan = self.plan.clone();
        let job = &plan.jobs[run.job];
        self.jobs[run.job].live -= 1;
        // The executor it started in (a reload may have moved the job to another since).
        self.executors.busy[run.executor] -= 1;
        self.said_taken_back(&run, &end);
        let mut c = self.classified(&run, &end);
        // An unhealthy run says why its liveness probe gave up.
        if let (Some(why), Some(RunResult::Failed)) = (&run.unhealthy, c.outcome) {
            c.reason = Some(format!("unhealthy: {why}"));
        }
        let retried = c.outcome == Some(RunResult::Failed) && self.will_retry(&run, job, c.code);
        self.report_exit(id, &mut run, job, &c, !retried);
        match c.outcome {
            Some(RunResult::Succeeded) => {
                self.jobs[run.job].counts.succeeded += 1;
                self.jobs[run.job].last_success = Some(self.now.utc);
            }
            Some(RunResult::Failed) => {
                // A try that will be retried is not a failed run (its run has not ended).
                if !retried {
                    self.jobs[run.job].counts.failed += 1;
                }
                if self.after_failure(&mut run, job, c.code) {
                    // A try that will be retried has not ended the run's story: joins wait for the last try
                    // (and so does a `trigger --wait`).
                    if run.manual.is_some() {
                        self.manual(Manual::Retried(id));
                    }
                    self.pump_each(run.job);
                    return;
                }
                self.fire_handler(id, &run, job, c.code, c.signal.as_deref());
            }
            // Stopped (shutdown, `flowrun stop`, its job removed by a reload): an `each` run's messages were not
            // done; they wait again in their queue. Unless it still exited 0: it finished its batch on SIGTERM
            // (what `stop_grace` is for), and given back they would be done twice.
            None => {
                self.jobs[run.job].counts.stopped += 1;
                // (A run that exited 0 on the stop finished its batch: done, below.)
                if c.code != Some(0) {
                    if let Some(batch) = run.input.take() {
                        self.give_back_input(run.job, &batch);
                    }
                }
            }
        }
        // Messages still with the run were done by it (a success, or a stop it finished its batch in).
        if let Some(batch) = run.input.take() {
            self.world.done(&batch);
        }
        self.tell_caller(id, &run, &c);
        if let Some(result) = c.outcome {
            let status = match result {
                RunResult::Succeeded => "succeeded",
                RunResult::Failed => "failed",
            };
            let was_ready = run.ready;
            let log = self.world.log_written(id);
            self.propagate(run.job, Milestone::Ended { result, was_ready }, || {
                upstream_entry(job, &run, status, c.code, c.signal.as_deref(), log)
            });
        }
        self.restart_if_due(&run, job, c.outcome, c.code);
        self.drain_handler_backlog(run.job);
        self.pump_each(run.job);
    }

    /// Messages taken back from a run's input pipe are said, and the `each` jobs of the channel hear of them
    /// (they may be idle, waiting for messages: these are new to them).
    fn said_taken_back(&mut self, run: &Run, end: &RunEnd) {
        if end.taken_back == 0 {
            return;
        }
        self.emit(Event::ChannelTakeback {
            job: self.plan.jobs[run.job].name.clone(),
            run: run.number,
            channel: run.reads.map(|c| self.plan.channels[c].name.clone()),
            messages: end.taken_back as u64,
        });
        if let Some(c) = run.reads {
            self.out.push_back(Effect::Wake(c));
        }
    }

    /// How the run ended, from what its exit and its state say (see `outcome::classify`).
    fn classified(&self, run: &Run, end: &RunEnd) -> Classified {
        let job = &self.plan.jobs[run.job];
        classify(&ExitFacts {
            status: &end.status,
            pump: end.pump.as_ref(),
            // The channels the run was wired to, though a reload may have changed its job since.
            readers_gone: self.readers_gone(run.writes, end),
            max_message: run.writes.map_or(0, |c| self.plan.channels[c].max_message),
            failed_because: match run.state {
                RunState::Stopping {
                    cause: StopCause::Timeout,
                    ..
                } => Some(StoppedFor::Timeout(job.timeout.unwrap_or_default())),
                RunState::Stopping {
                    cause: StopCause::NotReady(timeout),
                    ..
                } => Some(StoppedFor::NotReady(timeout)),
                RunState::Stopping {
                    cause: StopCause::Unhealthy,
                    ..
                } => Some(StoppedFor::Unhealthy),
                _ => None,
            },
            stopped_by_runner: matches!(
                run.state,
                RunState::Stopping {
                    cause: StopCause::Shutdown | StopCause::Request,
                    ..
                }
            ),
            limit_hit: end.limit_hit.as_deref(),
        })
    }

    /// Whether every reader of the run's `stdout:` channel had ended.
    fn readers_gone(&self, writes: Option<ChannelId>, end: &RunEnd) -> bool {
        match writes {
            Some(c) if self.plan.channels[c].kind == ChannelKind::Pipe => {
                self.world.pipe_readers_gone(c)
            }
            Some(_) => matches!(end.pump, Some(crate::engine::broker::PumpEnd::NoReader)),
            None => false,
        }
    }

    /// The `run.exit` event and the footer of the run's log file.
    fn report_exit(
        &mut self,
        id: RunId,
        run: &mut Run,
        job: &Job,
        c: &Classified,
        final_try: bool,
    ) {
        let duration = self.now.mono.saturating_duration_since(run.started);
        let exit = RunExit {
            job: job.name.clone(),
            run: run.number,
            pid: run.state.pid(),
            code: c.code,
            signal: c.signal.clone(),
            reason: c.reason.clone(),
            success: c.success,
            stopped_by_runner: c.outcome.is_none(),
            each: run.input.is_some(),
            duration_ms: duration.as_millis() as u64,
            outcome: super::outcome_of(c, run.state).as_str(),
            final_try,
            run_started: run.run_started,
            trigger: self.trigger_text(run.job, super::ledger::Cause::of_run(run)),
            scheduled: run.scheduled,
            attempt: run.attempt,
            messages: run.input.as_ref().map(|b| b.count as u64),
            coalesced: run.coalesced,
            catch_up: run.catch_up,
            log: self.world.log_written(id),
            restarts: self.restart_wanted(run, job, c.outcome, c.code)
                && !self.restart_limit_reached(run.job, job),
        };
        let status_text = exit.status_text();
        self.jobs[run.job].last_exit = Some(status_text.clone());
        let reason = c.reason.as_ref().map(|r| format!(" ({r})"));
        let footer = format!(
            "# {status_text}{} after {:.3}s",
            reason.unwrap_or_default(),
            duration.as_secs_f64()
        );
        self.out.push_back(Effect::Ended { id, footer });
        self.emit(Event::RunExit(Box::new(exit)));
    }

    /// A failed try: retried while attempts are left (not at shutdown), else its messages go to the dead letter,
    /// or the workflow has failed. Returns whether it will be retried.
    /// A run whose retry will not come (a stop, `flowrun stop JOB`, a reload): it ends now, stopped (neither a
    /// success nor a failure, as a run stopped at shutdown), so no row stays `running`; an `each` run's messages
    /// go back to their queue.
    pub(super) fn retry_called_off(&mut self, p: Pending, why: &str) {
        let Some(number) = p.number else {
            return self.give_back(p);
        };
        let job = &self.plan.jobs[p.job];
        self.jobs[p.job].counts.stopped += 1;
        let exit = RunExit {
            job: job.name.clone(),
            run: number,
            pid: None,
            code: None,
            signal: None,
            reason: Some(why.to_string()),
            success: false,
            stopped_by_runner: true,
            each: p.input.is_some(),
            duration_ms: 0,
            outcome: crate::store::Outcome::Stopped.as_str(),
            final_try: true,
            run_started: p.run_started.unwrap_or(self.now.utc),
            trigger: self.trigger_text(p.job, super::ledger::Cause::of(&p)),
            scheduled: p.scheduled,
            // The try that will not come.
            attempt: p.attempt,
            messages: p.input.as_ref().map(|b| b.count as u64),
            coalesced: p.coalesced,
            catch_up: p.catch_up,
            log: None,
            restarts: false,
        };
        self.emit(Event::RunExit(Box::new(exit)));
        self.give_back(p);
    }

    /// Whether a failed try is tried again: attempts are left (and its code is retried), and the runner is not
    /// stopping.
    fn will_retry(&self, run: &Run, job: &Job, code: Option<i32>) -> bool {
        !self.stopping
            && job
                .retry
                .as_ref()
                .is_some_and(|r| r.again(run.attempt, code))
    }

    fn after_failure(&mut self, run: &mut Run, job: &Job, code: Option<i32>) -> bool {
        let retry = job.retry.as_ref().filter(|r| r.again(run.attempt, code));
        if let (Some(retry), false) = (retry, self.stopping) {
            let backoff = retry_delay(retry.backoff, run.attempt);
            self.emit(Event::RunRetry {
                job: job.name.clone(),
                run: run.number,
                next_attempt: run.attempt + 1,
                backoff,
            });
            let pending = Pending {
                scheduled: run.scheduled,
                first_due: run.scheduled,
                attempt: run.attempt + 1,
                input: run.input.take(),
                trigger: run.trigger,
                manual: run.manual,
                upstream: run.upstream.clone(),
                handles: run.handles,
                number: Some(run.number),
                run_started: Some(run.run_started),
                failover: run.failover.clone(),
                ..self.pending_now(run.job)
            };
            self.later(backoff, Later::Retry(pending));
            return true;
        }
        match run.input.take() {
            // The dead letter's copy first (committed, when it is durable): then the messages are done here.
            Some(batch) => {
                self.dead_letter(run.job, run.number, &batch.data, batch.count);
                self.world.done(&batch);
            }
            None => self.failed = true,
        }
        false
    }

    /// A run failed for good: its job's `on_failure` handler fires, told which run it was (`FLOWRUN_UPSTREAM`).
    fn fire_handler(
        &mut self,
        id: RunId,
        run: &Run,
        job: &Job,
        code: Option<i32>,
        signal: Option<&str>,
    ) {
        // A handler's failure fires no handler: two handlers naming each other would fire each other for ever.
        if run.handles.is_some() {
            return;
        }
        let Some(h) = job.on_failure else { return };
        let log = self.world.log_written(id);
        let entry = upstream_entry(job, run, "failed", code, signal, log);
        let (text, _) = upstream_text(vec![entry]);
        let pending = Pending {
            upstream: Some(Arc::from(text)),
            handles: Some(run.job),
            ..self.pending_now(h)
        };
        self.fire(pending);
    }

    fn dead_letter(&mut self, job: JobId, run: u64, data: &Arc<Vec<u8>>, count: usize) {
        match self.plan.jobs[job].dead_letter {
            Some(c) => {
                self.world.dead_letter(c, data, count);
                self.emit(Event::MessageDead {
                    job: self.plan.jobs[job].name.clone(),
                    run,
                    channel: self.plan.channels[c].name.clone(),
                    messages: count as u64,
                });
                self.out.push_back(Effect::Wake(c));
            }
            None => {
                self.failed_messages += count as u64;
                self.failed = true;
            }
        }
    }

    /// A run ended for good or became ready: the `after` joins that wait for its job hear it (`upstream`: the
    /// run, as `FLOWRUN_UPSTREAM` tells a downstream run about it, made only when a join names the job: most
    /// runs' ends are heard by nobody).
    pub(super) fn propagate(
        &mut self,
        job: JobId,
        milestone: Milestone,
        upstream: impl FnOnce() -> serde_json::Value,
    ) {
        if self.joins_on[job].is_empty() {
            return;
        }
        let upstream = upstream();
        // In a cluster, an end is told to the joins kept in its store, for every runner (see `claims`); readiness
        // stays with the runner whose service it is.
        if self.cluster && matches!(milestone, Milestone::Ended { .. }) {
            return self.tell_joins(job, milestone, upstream);
        }
        let mut complete = Vec::new();
        for i in 0..self.joins_on[job].len() {
            let (d, t) = self.joins_on[job][i];
            complete.extend(self.hear(d, t, job, milestone, &upstream));
        }
        self.fire_joins(complete);
    }

    /// A job's `status: ready` joins, new or changed by a reload, hear of the runs of their upstreams that are
    /// ready now (as compose's `service_healthy` looks at the service as it is, not at its past).
    pub(super) fn hear_ready_runs(&mut self, job: JobId) {
        let plan = self.plan.clone();
        let ready: Vec<(JobId, serde_json::Value)> = self
            .runs
            .iter()
            .filter(|(_, r)| r.ready && matches!(r.state, RunState::Running { .. }))
            .map(|(id, r)| {
                let log = self.world.log_written(*id);
                let entry = upstream_entry(&plan.jobs[r.job], r, "ready", None, None, log);
                (r.job, entry)
            })
            .collect();
        let mut complete = Vec::new();
        for (t, trig) in plan.jobs[job].triggers.iter().enumerate() {
            if matches!(
                trig,
                Trigger::After {
                    status: Status::Ready,
                    ..
                }
            ) {
                for (u, entry) in &ready {
                    complete.extend(self.hear(job, t, *u, Milestone::Ready, entry));
                }
            }
        }
        self.fire_joins(complete);
    }

    /// Trigger `t` of job `d` hears that job `from` reached `milestone`: when that completes its join (an `after`
    /// trigger naming `from`), the runs that completed it, as JSON.
    fn hear(
        &mut self,
        d: JobId,
        t: usize,
        from: JobId,
        milestone: Milestone,
        upstream: &serde_json::Value,
    ) -> Option<(JobId, usize, String)> {
        let Trigger::After { jobs, status, any } = &self.plan.jobs[d].triggers[t] else {
            return None;
        };
        let state = &mut self.jobs[d];
        let join = &mut state.joins[t];
        let runs = &mut state.upstream[t];
        runs.resize(jobs.len(), serde_json::Value::Null);
        for (k, _) in jobs.iter().enumerate().filter(|(_, &u)| u == from) {
            join.record(k, milestone, *status);
            if milestone.meets(*status) {
                runs[k] = upstream.clone();
            }
        }
        if !join.take_complete() {
            return None;
        }
        // An any-join names the run that completed it (the others did not take part).
        let mut took_part = std::mem::take(runs);
        if *any {
            took_part.retain(|r| !r.is_null());
        }
        let named = took_part.len();
        let (text, omitted) = upstream_text(took_part);
        if omitted > 0 {
            self.notice(format!(
                "FLOWRUN_UPSTREAM of a run of {} names {} of its {} upstream runs (it is given at most 96 KiB: Linux takes 128 KiB a variable, and the rest of the environment needs room); the last entry is {{\"omitted\": {omitted}}}",
                self.plan.jobs[d].name,
                named - omitted,
                named,
            ));
        }
        Some((d, t, text))
    }

    fn fire_joins(&mut self, complete: Vec<(JobId, usize, String)>) {
        for (d, t, upstream) in complete {
            let pending = Pending {
                upstream: Some(Arc::from(upstream)),
                ..self.pending_by(d, t)
            };
            self.fire(pending);
        }
    }

    /// Services come back (not at shutdown, nor a reader whose input is closed and drained).
    /// Whether a run that ended so is one its job's `restart` brings back (its limit aside).
    fn restart_wanted(
        &self,
        run: &Run,
        job: &Job,
        outcome: Option<RunResult>,
        code: Option<i32>,
    ) -> bool {
        let retries_left = job
            .retry
            .as_ref()
            .is_some_and(|r| r.again(run.attempt, code));
        let input_over = job.stdin.is_some_and(|c| self.world.input_over(c, run.job));
        let asked_to_stop = matches!(
            run.state,
            RunState::Stopping {
                cause: StopCause::Request,
                ..
            }
        );
        !(self.stopping
            || asked_to_stop
            || input_over
            || !restarts(job.restart, outcome, retries_left))
    }

    /// Whether the job has used up its `restart` limit within its window (as of now).
    fn restart_limit_reached(&self, j: JobId, job: &Job) -> bool {
        let Some(limit) = job.restart_limit else {
            return false;
        };
        let now = self.now.mono;
        let recent = self.jobs[j]
            .restarts
            .iter()
            .filter(|t| limit.window.is_none_or(|w| now.duration_since(**t) < w))
            .count();
        recent >= limit.max as usize
    }

    fn restart_if_due(
        &mut self,
        run: &Run,
        job: &Job,
        outcome: Option<RunResult>,
        code: Option<i32>,
    ) {
        if !self.restart_wanted(run, job, outcome, code) {
            return;
        }
        let now = self.now.mono;
        let state = &mut self.jobs[run.job];
        if let Some(limit) = job.restart_limit {
            if let Some(window) = limit.window {
                state.restarts.retain(|t| now.duration_since(*t) < window);
            }
            if state.restarts.len() >= limit.max as usize {
                // The limit is reached: no more restarts, and the job has failed for good.
                self.failed = true;
                self.emit(Event::RestartsExhausted {
                    job: job.name.clone(),
                    run: run.number,
                    max: limit.max,
                    window: limit.window,
                });
                return;
            }
        }
        let delay = state
            .restart
            .delay(now.saturating_duration_since(run.started));
        state.restarts.push_back(now);
        let count = state.restarts.len() as u32;
        if job.restart_limit.is_none() && state.restarts.len() > 1 {
            // Without a limit only the count is kept: the times are not needed.
            state.restarts.pop_front();
        }
        state.restarted += 1;
        let restarted = state.restarted;
        let exit = state.last_exit.clone().unwrap_or_default();
        self.emit(Event::RunRestart {
            job: job.name.clone(),
            run: run.number,
            exit,
            delay,
            count: match job.restart_limit {
                Some(_) => count as u64,
                None => restarted,
            },
            limit: job.restart_limit,
        });
        self.later(delay, Later::Restart(run.job));
    }
}
