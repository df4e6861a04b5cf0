//! Liveness probes (SPEC §7): once a run is ready (or started, when its job has no `ready`), its `alive` check
//! runs every `interval`; `failures` failed checks in a row tell the core the run is unhealthy (it stops it, and
//! `restart` applies). `log-silence` fails when the run printed nothing for that long. Like process-compose's
//! liveness_probe and Kubernetes' livenessProbe. The task ends with the run's process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::broker::ExitFlag;
use super::probe::{self, ExecContext};
use crate::plan::{LiveCheck, Liveness};

/// When a run last printed a line (for `log-silence`): time since the run's start, in milliseconds.
pub(crate) struct Heard {
    start: Instant,
    last_ms: AtomicU64,
}

impl Heard {
    pub fn new() -> Heard {
        Heard {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// A line was printed now.
    pub fn line(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long the run has printed nothing.
    fn silent_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// Start checking; `unhealthy` is called once, with why, when `failures` checks in a row failed.
pub(crate) fn start(
    alive: &Liveness,
    exec: ExecContext,
    exited: Arc<ExitFlag>,
    heard: Arc<Heard>,
    unhealthy: impl FnOnce(String) + Send + 'static,
) -> tokio::task::AbortHandle {
    let alive = alive.clone();
    let task = tokio::spawn(async move {
        // The address with the job's variables, as the readiness probe has it.
        let check = match &alive.check {
            LiveCheck::Probe(c) => match probe::expanded_for(c, &exec) {
                Ok(c) => Some(c),
                Err(why) => return unhealthy(why),
            },
            LiveCheck::Silence(_) => None,
        };
        let limit = alive.interval.max(Duration::from_secs(1));
        let mut resolved = None;
        let mut failed = 0;
        loop {
            tokio::time::sleep(alive.interval).await;
            if exited.is_set() {
                return;
            }
            let outcome = match (&alive.check, &check) {
                (LiveCheck::Silence(quiet), _) => match heard.silent_for() {
                    s if s >= *quiet => Err(format!(
                        "no output for {}",
                        crate::values::format_duration(s)
                    )),
                    _ => Ok(()),
                },
                (_, Some(c)) => {
                    let once = probe::check_once(c, &exec, &mut resolved);
                    match tokio::time::timeout(limit, once).await {
                        Ok(outcome) => outcome,
                        Err(_) => Err(format!(
                            "no answer within {}",
                            crate::values::format_duration(limit)
                        )),
                    }
                }
                (_, None) => Ok(()),
            };
            match outcome {
                Ok(()) => failed = 0,
                Err(why) => {
                    failed += 1;
                    if failed >= alive.failures && !exited.is_set() {
                        return unhealthy(format!(
                            "{failed} liveness check(s) failed in a row (last: {why})"
                        ));
                    }
                }
            }
        }
    });
    task.abort_handle()
}
