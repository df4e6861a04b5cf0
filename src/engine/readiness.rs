//! Readiness in the dispatcher (SPEC §6): a run's probe is started with it, its passing makes the run ready (an
//! event, and the `after: { status: ready }` joins hear it), and a run not ready in time is stopped as failed.
//! How a probe checks is `probe`'s business.

use std::sync::Arc;

use super::broker::ExitFlag;
use super::dispatcher::Dispatcher;
use super::outcome::{Milestone, StoppedFor};
use super::probe::{self, LogWatch, ProbeHandle};
use super::state::{RunId, RunState, StopCause};
use super::{Later, Msg};
use crate::event::Event;

impl Dispatcher {
    /// Start the probe of run `id` (its job has one): the probe, the watch for its line sink (a `log` probe) and
    /// the key of its not-ready timer.
    pub(super) fn start_probe(
        &mut self,
        id: RunId,
        exec: probe::ExecContext,
        exited: &Arc<ExitFlag>,
    ) -> (Option<ProbeHandle>, Option<Arc<LogWatch>>, Option<u64>) {
        let Some(ready) = self.plan.jobs[exec.job].ready.clone() else {
            return (None, None, None);
        };
        let tx = self.tx.clone();
        let (handle, watch) = probe::start(&ready, exec, exited.clone(), move || {
            let _ = tx.send(Msg::Ready(id));
        });
        let not_ready = self.later(ready.timeout, Later::NotReady(id));
        (Some(handle), watch, Some(not_ready))
    }

    /// A run's probe passed: it is ready (once), and the joins waiting for its readiness hear it.
    pub(super) fn on_ready(&mut self, id: RunId) {
        let Some(run) = self.runs.get_mut(&id) else {
            return;
        };
        let (RunState::Running { pid }, Some(probe)) = (run.state, &run.probe) else {
            return;
        };
        if probe.run_exited() || std::mem::replace(&mut run.ready, true) {
            return;
        }
        let plan = self.plan.clone();
        let job = &plan.jobs[run.job];
        // Made here, while the run is borrowed (a run becomes ready once: not worth deferring).
        let upstream = super::exits::upstream_entry(job, run, "ready", None, None);
        let event = Event::RunReady {
            job: job.name.clone(),
            run: run.number,
            pid,
            after: run.started.elapsed(),
            probe: probe.probe.check.describe(),
        };
        let job = run.job;
        self.emit(event);
        self.propagate(job, Milestone::Ready, || upstream);
    }

    /// A run whose probe has not passed within its `timeout` is stopped, and fails (a service that never comes
    /// up is restarted by its policy, or fails the workflow, instead of holding its dependents for ever). A run
    /// whose process has exited is left to end by itself: its exit says how it went.
    pub(super) fn on_not_ready(&mut self, id: RunId) {
        let Some(run) = self.runs.get(&id) else {
            return;
        };
        let (RunState::Running { pid }, Some(probe)) = (run.state, &run.probe) else {
            return;
        };
        if run.ready || probe.run_exited() {
            return;
        }
        let timeout = probe.probe.timeout;
        let last = probe.last_failure();
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
