//! The engine's pure decisions, apart from any process or clock so unit tests can reach them: how a run's end
//! is classified, how long a retry or a restart waits, whether a service comes back, and the bookkeeping of
//! `after` joins.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;

use crate::engine::broker::PumpEnd;
use crate::plan::{Restart, Status, MAX_BACKOFF};
use crate::values::format_duration;

/// What is known when a run has ended.
pub struct ExitFacts<'a> {
    /// The process's exit status, or why it could not start.
    pub status: &'a Result<ExitStatus, String>,
    /// How the pump of its `stdout:` channel ended (or that unwired output was abandoned).
    pub pump: Option<&'a PumpEnd>,
    /// Every reader of its `stdout:` channel had ended (a SIGPIPE is then no failure).
    pub readers_gone: bool,
    /// The `max_message` of its `stdout:` channel (for the reason of an overlong line).
    pub max_message: usize,
    /// The runner stopped it for a reason that makes it a failure.
    pub failed_because: Option<StoppedFor>,
    /// The runner stopped it at shutdown.
    pub stopped_by_runner: bool,
    /// The kernel killed in its cgroup for this limit (`memory limit (512MiB)`).
    pub limit_hit: Option<&'a str>,
}

/// Why the runner stopped a run that then counts as failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoppedFor {
    /// It ran past its `timeout`.
    Timeout(Duration),
    /// Its readiness probe did not pass within the probe's `timeout`.
    NotReady(Duration),
    /// Its liveness probe failed enough times in a row.
    Unhealthy,
}

impl StoppedFor {
    pub fn reason(self) -> String {
        match self {
            StoppedFor::Timeout(t) => format!("timed out after {}", format_duration(t)),
            StoppedFor::NotReady(t) => format!("not ready within {}", format_duration(t)),
            StoppedFor::Unhealthy => "unhealthy".to_string(),
        }
    }
}

/// How a run ended that counts: it succeeded or it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunResult {
    Succeeded,
    Failed,
}

/// What an `after` join hears of an upstream run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    /// The run ended for good; `was_ready`: it had become ready before.
    Ended { result: RunResult, was_ready: bool },
    /// Its readiness probe passed (it may run on).
    Ready,
}

impl Milestone {
    /// Whether this meets an `after` trigger's `status`.
    pub fn meets(self, want: Status) -> bool {
        match (self, want) {
            (Milestone::Ready, want) => want == Status::Ready,
            (Milestone::Ended { .. }, Status::Ready) => false,
            (Milestone::Ended { .. }, Status::Any) => true,
            (Milestone::Ended { result, .. }, Status::Success) => result == RunResult::Succeeded,
            (Milestone::Ended { result, .. }, Status::Failure) => result == RunResult::Failed,
        }
    }

    /// Whether this is news to a join waiting for `want` that can make it impossible: an end, except the end of a
    /// run that had already become ready (a service that stops after it was ready took nothing from the join).
    fn is_an_end_for(self, want: Status) -> bool {
        match self {
            Milestone::Ready => false,
            Milestone::Ended { was_ready, .. } => !(want == Status::Ready && was_ready),
        }
    }
}

/// A run's end, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub code: Option<i32>,
    pub signal: Option<String>,
    pub success: bool,
    pub reason: Option<String>,
    /// `None` when the runner stopped it at shutdown (it counts neither way).
    pub outcome: Option<RunResult>,
}

/// Exit classification: the exit status, then what the output pump saw, the SIGPIPE rule, the timeout.
pub fn classify(f: &ExitFacts) -> Classified {
    let (mut code, mut signal, mut success, mut reason) = (None, None, false, None);
    match f.status {
        Ok(s) => {
            code = s.code();
            signal = s.signal().map(crate::engine::process::signal_name);
            success = s.success();
        }
        Err(msg) => reason = Some(msg.clone()),
    }
    match f.pump {
        Some(PumpEnd::Overlong { length }) => {
            success = false;
            reason = Some(format!(
                "wrote a line of {length}+ bytes, longer than max_message ({})",
                f.max_message
            ));
        }
        Some(PumpEnd::Error(err)) => reason = Some(format!("reading its output: {err}")),
        Some(PumpEnd::Partial { bytes }) => {
            reason = Some(format!(
                "its output ended without a newline; the last {bytes} byte(s) were delivered as one message"
            ))
        }
        Some(PumpEnd::Abandoned) => {
            reason.get_or_insert_with(|| {
                "its output stayed open after it exited (a background process?)".into()
            });
        }
        _ => {}
    }
    if let (false, Some(limit)) = (success, f.limit_hit) {
        reason = Some(format!("killed: {limit}"));
    }
    // A writer stopped by SIGPIPE because every reader of its channel had ended is what a shell pipeline does
    // (`seq 1000000 | head -1`): not a failure. (Through `sh -c` the shell reports it as exit status 141.)
    let sigpipe = signal.as_deref() == Some("SIGPIPE") || code == Some(128 + libc::SIGPIPE);
    if !success && f.readers_gone && sigpipe {
        success = true;
        reason = Some("stopped by SIGPIPE: every reader of its channel had ended".into());
    }
    if let Some(why) = f.failed_because {
        success = false;
        reason = Some(why.reason());
    }
    let outcome = match (f.stopped_by_runner && f.failed_because.is_none(), success) {
        (true, _) => None,
        (false, true) => Some(RunResult::Succeeded),
        (false, false) => Some(RunResult::Failed),
    };
    Classified {
        code,
        signal,
        success,
        reason,
        outcome,
    }
}

/// The wait before retry number `attempt + 1` of a run whose try `attempt` failed: `backoff`, doubling, at most
/// five minutes.
pub fn retry_delay(backoff: Duration, attempt: u32) -> Duration {
    backoff
        .saturating_mul(1 << attempt.saturating_sub(1).min(20))
        .min(MAX_BACKOFF)
}

/// The restart delay of a service: 100 ms, doubling while runs end within 10 s of their start, at most 30 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartBackoff {
    next: Duration,
}

const RESTART_FIRST: Duration = Duration::from_millis(100);
const RESTART_MAX: Duration = Duration::from_secs(30);
const RESTART_STABLE: Duration = Duration::from_secs(10);

impl Default for RestartBackoff {
    fn default() -> RestartBackoff {
        RestartBackoff {
            next: RESTART_FIRST,
        }
    }
}

impl RestartBackoff {
    /// The delay before restarting a run that ran for `ran_for`.
    pub fn delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= RESTART_STABLE {
            self.next = RESTART_FIRST;
        }
        let delay = self.next;
        self.next = (delay * 2).min(RESTART_MAX);
        delay
    }
}

/// Whether a service comes back after a run ended with `outcome`. `retries_left`: a retry will follow instead.
pub fn restarts(policy: Restart, outcome: Option<RunResult>, retries_left: bool) -> bool {
    match policy {
        Restart::Always => true,
        Restart::OnFailure => outcome == Some(RunResult::Failed) && !retries_left,
        Restart::Never => false,
    }
}

/// One `after` trigger's join: per listed job, whether it reached the status, and whether it ended any run, since
/// the last firing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Join {
    reached: Vec<bool>,
    ended_since: Vec<bool>,
    /// The join completed at least once.
    fired: bool,
    /// Complete when one upstream reached the status (`after: { any: [...] }`), not all of them.
    any: bool,
}

impl Join {
    pub fn new(upstreams: usize, any: bool) -> Join {
        Join {
            reached: vec![false; upstreams],
            ended_since: vec![false; upstreams],
            fired: false,
            any,
        }
    }

    /// Upstream `k` reached `milestone` (`want` is the trigger's status).
    pub fn record(&mut self, k: usize, milestone: Milestone, want: Status) {
        if milestone.is_an_end_for(want) {
            self.ended_since[k] = true;
        }
        if milestone.meets(want) {
            self.reached[k] = true;
        }
    }

    /// If every upstream (or, for an any-join, one) reached the status: start over for the next firing and say
    /// so.
    pub fn take_complete(&mut self) -> bool {
        let complete = match self.any {
            true => self.reached.iter().any(|r| *r),
            false => !self.reached.is_empty() && self.reached.iter().all(|r| *r),
        };
        if !complete {
            return false;
        }
        let n = self.reached.len();
        *self = Join {
            fired: true,
            ..Join::new(n, self.any)
        };
        true
    }

    /// Whether the join can still complete, given which upstreams can run no more (`done`).
    pub fn possible(&self, done: impl Fn(usize) -> bool) -> bool {
        let open = |k: usize| self.reached[k] || !done(k);
        match self.any {
            true => (0..self.reached.len()).any(open),
            false => (0..self.reached.len()).all(open),
        }
    }

    /// The upstreams (by index) that make this join impossible, given which upstreams can run no more (`done`):
    /// done without reaching the status, and either the join never fired or they ended a run since it last did
    /// (an upstream that simply finished after its last contribution does not block).
    /// An any-join is blocked only when every upstream is.
    pub fn blocking(&self, done: impl Fn(usize) -> bool) -> Vec<usize> {
        let blocked: Vec<usize> = (0..self.reached.len())
            .filter(|&k| !self.reached[k] && done(k) && (!self.fired || self.ended_since[k]))
            .collect();
        match self.any && blocked.len() < self.reached.len() {
            true => Vec::new(),
            false => blocked,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(result: RunResult) -> Milestone {
        Milestone::Ended {
            result,
            was_ready: false,
        }
    }

    fn exited(code: i32) -> Result<ExitStatus, String> {
        Ok(ExitStatus::from_raw(code << 8))
    }

    fn killed(signal: i32) -> Result<ExitStatus, String> {
        Ok(ExitStatus::from_raw(signal))
    }

    fn facts(status: &Result<ExitStatus, String>) -> ExitFacts<'_> {
        ExitFacts {
            status,
            pump: None,
            readers_gone: false,
            max_message: 1 << 20,
            failed_because: None,
            stopped_by_runner: false,
            limit_hit: None,
        }
    }

    #[test]
    fn exit_codes_and_signals_classify() {
        let ok = exited(0);
        let c = classify(&facts(&ok));
        assert_eq!(
            (c.success, c.outcome, c.code),
            (true, Some(RunResult::Succeeded), Some(0))
        );
        let bad = exited(3);
        assert_eq!(classify(&facts(&bad)).outcome, Some(RunResult::Failed));
        let term = killed(libc::SIGTERM);
        let c = classify(&facts(&term));
        assert_eq!((c.signal.as_deref(), c.success), (Some("SIGTERM"), false));
        let spawn = Err("cannot start".to_string());
        let c = classify(&facts(&spawn));
        assert_eq!(
            (c.reason.as_deref(), c.outcome),
            (Some("cannot start"), Some(RunResult::Failed))
        );
    }

    #[test]
    fn sigpipe_is_a_success_only_when_every_reader_had_ended() {
        for status in [killed(libc::SIGPIPE), exited(141)] {
            let alone = classify(&facts(&status));
            assert!(!alone.success);
            let gone = classify(&ExitFacts {
                readers_gone: true,
                ..facts(&status)
            });
            assert!(gone.success, "{gone:?}");
        }
        let other = killed(libc::SIGTERM);
        assert!(
            !classify(&ExitFacts {
                readers_gone: true,
                ..facts(&other)
            })
            .success
        );
    }

    #[test]
    fn an_overlong_line_fails_a_run_that_exited_zero() {
        let ok = exited(0);
        let pump = PumpEnd::Overlong { length: 99 };
        let c = classify(&ExitFacts {
            pump: Some(&pump),
            max_message: 10,
            ..facts(&ok)
        });
        assert!(!c.success);
        assert!(c.reason.unwrap().contains("max_message (10)"));
    }

    #[test]
    fn a_timeout_fails_even_when_stopped_at_shutdown_and_a_shutdown_stop_counts_neither_way() {
        let term = killed(libc::SIGTERM);
        let stopped = classify(&ExitFacts {
            stopped_by_runner: true,
            ..facts(&term)
        });
        assert_eq!(stopped.outcome, None);
        let timed_out = classify(&ExitFacts {
            stopped_by_runner: true,
            failed_because: Some(StoppedFor::Timeout(Duration::from_secs(2))),
            ..facts(&term)
        });
        assert_eq!(timed_out.outcome, Some(RunResult::Failed));
        assert_eq!(timed_out.reason.as_deref(), Some("timed out after 2s"));
        let not_ready = classify(&ExitFacts {
            failed_because: Some(StoppedFor::NotReady(Duration::from_millis(1500))),
            ..facts(&term)
        });
        assert_eq!(not_ready.outcome, Some(RunResult::Failed));
        assert_eq!(
            not_ready.reason.as_deref(),
            Some("not ready within 1s500ms")
        );
    }

    #[test]
    fn retry_delays_double_up_to_five_minutes() {
        let b = Duration::from_secs(1);
        let delays: Vec<u64> = (1..=4).map(|a| retry_delay(b, a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8]);
        assert_eq!(retry_delay(b, 30), MAX_BACKOFF);
        assert_eq!(retry_delay(Duration::from_secs(3600), 1), MAX_BACKOFF);
    }

    #[test]
    fn restart_delays_double_while_runs_are_short_and_reset_after_a_long_one() {
        let mut r = RestartBackoff::default();
        let short = Duration::from_secs(1);
        let ms: Vec<u128> = (0..4).map(|_| r.delay(short).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800]);
        for _ in 0..20 {
            r.delay(short);
        }
        assert_eq!(r.delay(short), Duration::from_secs(30));
        assert_eq!(r.delay(Duration::from_secs(10)), Duration::from_millis(100));
    }

    #[test]
    fn restart_policies() {
        use RunResult::*;
        assert!(restarts(Restart::Always, Some(Succeeded), false));
        assert!(restarts(Restart::Always, None, false));
        assert!(restarts(Restart::OnFailure, Some(Failed), false));
        assert!(
            !restarts(Restart::OnFailure, Some(Failed), true),
            "a retry comes first"
        );
        assert!(!restarts(Restart::OnFailure, Some(Succeeded), false));
        assert!(!restarts(Restart::Never, Some(Failed), false));
    }

    #[test]
    fn a_join_fires_when_every_upstream_reached_its_status_then_starts_over() {
        let mut j = Join::new(2, false);
        j.record(0, ended(RunResult::Succeeded), Status::Success);
        assert!(!j.take_complete());
        j.record(1, ended(RunResult::Failed), Status::Success);
        assert!(!j.take_complete(), "a failure is not a success");
        j.record(1, ended(RunResult::Succeeded), Status::Success);
        assert!(j.take_complete());
        assert!(!j.possible(|_| true), "a new round: nothing reached yet");
        let mut any = Join::new(1, false);
        any.record(0, ended(RunResult::Failed), Status::Any);
        assert!(any.take_complete());
    }

    #[test]
    fn a_join_is_blocked_by_an_upstream_done_without_its_status() {
        let mut j = Join::new(2, false);
        j.record(0, ended(RunResult::Failed), Status::Success);
        assert_eq!(j.blocking(|_| true), [0, 1], "never fired: both block");
        assert_eq!(j.blocking(|k| k == 0), [0]);
        // After a firing, an upstream that ended nothing since does not block: it simply finished.
        let mut fired = Join::new(1, false);
        fired.record(0, ended(RunResult::Succeeded), Status::Success);
        assert!(fired.take_complete());
        assert!(fired.blocking(|_| true).is_empty());
        fired.record(0, ended(RunResult::Failed), Status::Success);
        assert_eq!(fired.blocking(|_| true), [0]);
    }

    #[test]
    fn an_any_join_fires_at_the_first_upstream_and_is_blocked_only_when_all_are() {
        let mut j = Join::new(2, true);
        j.record(1, ended(RunResult::Failed), Status::Failure);
        assert!(j.take_complete(), "one failure is enough");
        assert!(!j.take_complete(), "then it starts over");
        j.record(0, ended(RunResult::Succeeded), Status::Failure);
        assert!(j.possible(|k| k == 0), "b can still fail");
        assert!(j.blocking(|k| k == 0).is_empty());
        j.record(1, ended(RunResult::Succeeded), Status::Failure);
        assert!(!j.possible(|_| true));
        assert_eq!(j.blocking(|_| true), [0, 1]);
    }
}
