//! Readiness (SPEC §6) as the core decides it: a run's passing probe makes it ready (an event, and the
//! `after: { status: ready }` joins hear it); a run not ready in time is stopped as failed. How a probe checks,
//! and whether the run's process had exited by then, is the shell's business (`probe`).

use std::time::Duration;

use super::upstream::upstream_entry;
use super::{Core, World};
use crate::engine::core::outcome::{Milestone, StoppedFor};
use crate::engine::core::runs::{RunId, RunState, StopCause};
use crate::event::Event;

impl<W: World> Core<W> {
    /// A run's probe passed (`probe`: what it checks): it is ready (once), and the joins waiting for its
    /// readiness hear it.
    pub(super) fn on_ready(&mut self, id: RunId, probe: String) {
        let log = self.world.log_written(id);
        let now = self.now.mono;
        let Some(run) = self.runs.get_mut(&id) else {
            return;
        };
        let RunState::Running { pid } = run.state else {
            return;
        };
        if !run.has_probe || std::mem::replace(&mut run.ready, true) {
            return;
        }
        let plan = self.plan.clone();
        let job = &plan.jobs[run.job];
        // Made here, while the run is borrowed (a run becomes ready once: not worth deferring).
        let upstream = upstream_entry(job, run, "ready", None, None, log);
        let event = Event::RunReady {
            job: job.name.clone(),
            run: run.number,
            pid,
            after: now.saturating_duration_since(run.started),
            probe,
        };
        let job = run.job;
        self.emit(event);
        self.propagate(job, Milestone::Ready, || upstream);
    }

    /// A run whose liveness probe failed enough times in a row is stopped, and ends unhealthy (a failure, so
    /// `restart` applies).
    pub(super) fn on_unhealthy(&mut self, id: RunId, why: String) {
        let Some(run) = self.runs.get_mut(&id) else {
            return;
        };
        let RunState::Running { pid } = run.state else {
            return;
        };
        run.unhealthy = Some(why.clone());
        let event = Event::RunUnhealthy {
            job: self.plan.jobs[run.job].name.clone(),
            run: run.number,
            pid,
            reason: why,
        };
        self.emit(event);
        let _ = self.stop_run(id, StopCause::Unhealthy);
    }

    /// A run whose probe has not passed within its `timeout` is stopped, and fails (a service that never comes
    /// up is restarted by its policy, or fails the workflow, instead of holding its dependents for ever).
    pub(super) fn on_not_ready(&mut self, id: RunId, timeout: Duration, last: Option<String>) {
        let Some(run) = self.runs.get(&id) else {
            return;
        };
        let RunState::Running { pid } = run.state else {
            return;
        };
        if run.ready || !run.has_probe {
            return;
        }
        self.emit(Event::RunNotReady {
            job: self.plan.jobs[run.job].name.clone(),
            run: run.number,
            pid,
            reason: format!(
                "{}{}",
                StoppedFor::NotReady(timeout).reason(),
                last.map(|l| format!(" (last check: {l})"))
                    .unwrap_or_default()
            ),
        });
        let _ = self.stop_run(id, StopCause::NotReady(timeout));
    }
}
