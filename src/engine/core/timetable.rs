//! The timetable: a min-heap of the next fire instant of every time trigger. The dispatcher sleeps until the
//! earliest entry (no polling: an idle runner uses no CPU), then asks what is due. What is due is decided here,
//! as a pure function of the wall-clock time, so misfire and coalescing rules are testable without a clock.

use chrono::{DateTime, Utc};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use crate::schedule::trigger::TimeRule;

/// One time trigger of one job.
#[derive(Debug, Clone)]
pub struct Entry {
    pub job: usize,
    pub trigger: usize,
    pub rule: TimeRule,
    pub misfire_grace: Duration,
    pub coalesce: bool,
    /// The last firing a previous runner handled (from the state store): the firings after it that fell due
    /// while no runner was alive are late firings now.
    pub resume: Option<DateTime<Utc>>,
}

/// What the timetable decided for a due firing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// Run now. `coalesced` is how many due firings this one run stands for (1 when none were merged);
    /// `first_due` is the earliest of them (the run is as late as that one).
    Fire {
        job: usize,
        trigger: usize,
        scheduled: DateTime<Utc>,
        first_due: DateTime<Utc>,
        coalesced: u64,
    },
    /// Dropped: handled later than `misfire_grace` after `scheduled`. `count` firings are dropped at once when
    /// coalescing.
    Missed {
        job: usize,
        trigger: usize,
        scheduled: DateTime<Utc>,
        late: chrono::Duration,
        count: u64,
        /// Too many to count one by one (years of a per-second cron): `count` is a lower bound.
        at_least: bool,
    },
}

pub struct Timetable {
    /// Firings missed while no runner was alive, beyond their grace: reported by the first `due` (the runner's start).
    backlog: Vec<Due>,
    entries: Vec<Entry>,
    /// The entries of each job: a job's entries are pushed together (at the start, and again by a reload), so
    /// a range (start, count) per job, without an allocation each.
    by_job: Vec<(u32, u32)>,
    next: Vec<Option<DateTime<Utc>>>,
    heap: BinaryHeap<Reverse<(DateTime<Utc>, usize)>>,
    /// Jobs one of whose entries has just run out (an `at` fired, an interval or cron reached its end): the
    /// dispatcher looks at them next, as they may be done now.
    ran_out: Vec<usize>,
}

/// Bound on firings handled in one wake-up (a clock jump of years over a per-second cron).
const MAX_DUE: usize = 100_000;

impl Timetable {
    /// The first firings are computed from `start` (the runner's start), or from the last handled firing of a
    /// previous runner when there is one (then what fell due meanwhile is due at once, and `due` applies the
    /// grace and coalescing to it). An `at` time already past is kept only when still within `misfire_grace`,
    /// so it fires late once; otherwise it never fires; an `at` a previous runner handled never fires again.
    pub fn new(entries: Vec<Entry>, start: DateTime<Utc>) -> Timetable {
        let mut table = Timetable {
            backlog: Vec::new(),
            by_job: Vec::with_capacity(entries.last().map_or(0, |e| e.job + 1)),
            next: vec![None; entries.len()],
            heap: BinaryHeap::with_capacity(entries.len()),
            ran_out: Vec::new(),
            entries,
        };
        for i in 0..table.entries.len() {
            table.index(i);
            let (first, missed) = first_firing(&table.entries[i], start);
            table.backlog.extend(missed);
            table.set_next(i, first);
        }
        table
    }

    /// A job's triggers changed (a reload): its old entries fire no more, these take their place.
    pub fn replace_job(&mut self, job: usize, entries: Vec<Entry>, now: DateTime<Utc>) {
        let old: Vec<usize> = self.entries_of(job).collect();
        if let Some(range) = self.by_job.get_mut(job) {
            *range = (0, 0);
        }
        for i in old {
            // Its heap entries become stale (`due` skips an entry whose `next` no longer matches).
            self.next[i] = None;
            self.entries[i].job = usize::MAX;
        }
        for e in entries {
            // A trigger a reload adds or changes may have missed firings already (a past `at`; a trigger changed
            // back to one an earlier runner handled long ago): they are reported by the next `due`, as at a start.
            let (first, missed) = first_firing(&e, now);
            self.backlog.extend(missed);
            self.entries.push(e);
            self.next.push(None);
            self.index(self.entries.len() - 1);
            self.set_next(self.entries.len() - 1, first);
        }
    }

    /// Entry `i` (just pushed, after the job's others) belongs to its job's range.
    fn index(&mut self, i: usize) {
        let job = self.entries[i].job;
        if self.by_job.len() <= job {
            self.by_job.resize(job + 1, (0, 0));
        }
        let (start, count) = &mut self.by_job[job];
        if *count == 0 {
            *start = i as u32;
        }
        debug_assert_eq!(
            *start as usize + *count as usize,
            i,
            "a job's entries are pushed together"
        );
        *count += 1;
    }

    fn entries_of(&self, job: usize) -> impl Iterator<Item = usize> {
        let (start, count) = self.by_job.get(job).copied().unwrap_or((0, 0));
        start as usize..(start + count) as usize
    }

    fn set_next(&mut self, i: usize, at: Option<DateTime<Utc>>) {
        self.next[i] = at;
        match at {
            Some(at) => self.heap.push(Reverse((at, i))),
            None => self.ran_out.push(self.entries[i].job),
        }
    }

    /// The jobs an entry of which ran out since the last call.
    pub fn take_ran_out(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.ran_out)
    }

    /// Whether one of this job's time triggers has an instant to come: then the job can fire again, whatever else
    /// it waits on.
    pub fn holds(&self, job: usize) -> bool {
        self.entries_of(job).any(|i| self.next[i].is_some())
    }

    /// The earliest instant something is due, if any trigger can still fire.
    pub fn earliest(&self) -> Option<DateTime<Utc>> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Whether this job's time trigger can still fire (by the job's own entries, not a search through all of
    /// them).
    pub fn can_fire(&self, job: usize, trigger: usize) -> bool {
        self.entries_of(job)
            .any(|i| self.entries[i].trigger == trigger && self.next[i].is_some())
    }

    /// The next scheduled instant of every job (`jobs` of them), in one pass.
    /// The next firing of one job's time triggers.
    pub fn next_of(&self, job: usize) -> Option<DateTime<Utc>> {
        let (start, count) = *self.by_job.get(job)?;
        let range = start as usize..(start + count) as usize;
        self.next.get(range)?.iter().flatten().min().copied()
    }

    pub fn next_per_job(&self, jobs: usize) -> Vec<Option<DateTime<Utc>>> {
        let mut next = vec![None; jobs];
        for (e, n) in self
            .entries
            .iter()
            .zip(&self.next)
            .filter(|(e, _)| e.job != usize::MAX)
        {
            if let (Some(slot), Some(at)) = (next.get_mut(e.job), n) {
                if slot.is_none_or(|s: DateTime<Utc>| *at < s) {
                    *slot = Some(*at);
                }
            }
        }
        next
    }

    /// Stop everything (shutdown).
    pub fn clear(&mut self) {
        self.heap.clear();
        self.next.iter_mut().for_each(|n| *n = None);
    }

    /// Everything due at `now`, in time order. Several due firings of one trigger (after a suspend or a clock
    /// step) run once when the job coalesces, else once each; any handled later than `misfire_grace` is missed.
    pub fn due(&mut self, now: DateTime<Utc>) -> Vec<Due> {
        let mut out = std::mem::take(&mut self.backlog);
        while let Some(&Reverse((at, i))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            if self.next[i] != Some(at) {
                continue; // stale entry
            }
            let entry = &self.entries[i];
            let (job, trigger, coalesce) = (entry.job, entry.trigger, entry.coalesce);
            let grace =
                chrono::Duration::from_std(entry.misfire_grace).unwrap_or(chrono::Duration::MAX);
            let mut due = vec![at];
            let mut cursor = at;
            while let Some(next) = entry.rule.next_after(cursor) {
                if next > now || due.len() >= MAX_DUE {
                    break;
                }
                due.push(next);
                cursor = next;
            }
            let following = entry.rule.next_after(cursor);
            self.set_next(i, following);
            match coalesce {
                true => out.push(coalesced((job, trigger), &due, now, grace)),
                false => out.extend(one_by_one((job, trigger), due, now, grace)),
            }
        }
        // Two triggers of one job due at the same instant are one firing, not a firing and a skip.
        let mut seen = std::collections::HashSet::new();
        out.retain(|d| match d {
            Due::Fire { job, scheduled, .. } => seen.insert((*job, *scheduled)),
            Due::Missed { .. } => true,
        });
        out
    }
}

/// Several due firings of a coalescing trigger: one run standing for all (its lateness counted from the first),
/// or one miss with their count when the last is already beyond the grace.
fn coalesced(
    (job, trigger): (crate::plan::JobId, usize),
    due: &[DateTime<Utc>],
    now: DateTime<Utc>,
    grace: chrono::Duration,
) -> Due {
    // `due` holds one firing at least: the one that came due.
    let (first, last) = (due.first().copied(), due.last().copied());
    let (first, last) = (first.unwrap_or(now), last.unwrap_or(now));
    let late = now - last;
    if late > grace {
        Due::Missed {
            job,
            trigger,
            scheduled: last,
            late,
            count: due.len() as u64,
            at_least: false,
        }
    } else {
        Due::Fire {
            job,
            trigger,
            scheduled: last,
            first_due: first,
            coalesced: due.len() as u64,
        }
    }
}

/// Due firings of a trigger that does not coalesce: each within the grace runs once, and consecutive misses are
/// one `Missed` with their count (a day of downtime under a per-second cron is one event, not 86,400).
fn one_by_one(
    (job, trigger): (crate::plan::JobId, usize),
    due: Vec<DateTime<Utc>>,
    now: DateTime<Utc>,
    grace: chrono::Duration,
) -> Vec<Due> {
    let mut out = Vec::new();
    let missed_until = |at: DateTime<Utc>, count: u64| Due::Missed {
        job,
        trigger,
        scheduled: at,
        late: now - at,
        count,
        at_least: false,
    };
    let mut missed: Option<(DateTime<Utc>, u64)> = None;
    for scheduled in due {
        if now - scheduled > grace {
            let count = missed.map_or(0, |(_, n)| n) + 1;
            missed = Some((scheduled, count));
            continue;
        }
        if let Some((at, count)) = missed.take() {
            out.push(missed_until(at, count));
        }
        out.push(Due::Fire {
            job,
            trigger,
            scheduled,
            first_due: scheduled,
            coalesced: 1,
        });
    }
    out.extend(missed.map(|(at, count)| missed_until(at, count)));
    out
}

/// How many firings missed during downtime are counted one by one before the rest is skipped uncounted.
const MAX_COUNTED: u64 = 100_000;

/// An entry's first firing from `start` (see [`Timetable::new`]). Resumed after a downtime, the firings beyond
/// the grace are counted here (one `Missed`, at once: years of a per-second cron take no time to skip) and the
/// first firing returned is the first within the grace, which `due` then runs (once when coalescing).
fn first_firing(e: &Entry, start: DateTime<Utc>) -> (Option<DateTime<Utc>>, Option<Due>) {
    let grace = chrono::Duration::from_std(e.misfire_grace).unwrap_or(chrono::Duration::MAX);
    let horizon = start
        .checked_sub_signed(grace)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let Some(last) = e.resume else {
        return match &e.rule {
            // Past beyond the grace: handled now, too late, so missed (said and recorded once: with a state, a
            // missed `at` is handled and never comes back).
            TimeRule::At { at } if *at < horizon => (
                None,
                Some(Due::Missed {
                    job: e.job,
                    trigger: e.trigger,
                    scheduled: *at,
                    late: start - *at,
                    count: 1,
                    at_least: false,
                }),
            ),
            TimeRule::At { at } => (Some(*at), None),
            // Inclusive of the start instant, so an interval whose `start` is now fires at once.
            rule => (
                rule.next_after(start - chrono::Duration::nanoseconds(1)),
                None,
            ),
        };
    };
    let rule = &e.rule;
    let Some(first) = rule.next_after(last).filter(|f| *f < horizon) else {
        return (rule.next_after(last), None);
    };
    let (latest, count, at_least) = match rule {
        // A grid: the misses are counted by division.
        TimeRule::Interval { every, end, .. } => {
            let every_ns = every.as_nanos().max(1) as i128;
            let bound = match end {
                Some(end) if *end < horizon => *end + chrono::Duration::nanoseconds(1),
                _ => horizon,
            };
            let span = (bound - first)
                .num_nanoseconds()
                .map_or(i128::MAX / 4, i128::from);
            // Grid points first + k*every < bound: k = 0 ..= (span - 1) / every.
            let k = ((span - 1).max(0) / every_ns) as i64;
            let latest = first
                + chrono::Duration::nanoseconds((k as i128 * every_ns).min(i64::MAX as i128) as i64);
            (latest, k as u64 + 1, false)
        }
        _ => {
            let (mut latest, mut count) = (first, 1u64);
            let mut at_least = false;
            while let Some(next) = rule.next_after(latest).filter(|n| *n < horizon) {
                if count >= MAX_COUNTED {
                    at_least = true;
                    latest = horizon - chrono::Duration::nanoseconds(1);
                    break;
                }
                latest = next;
                count += 1;
            }
            (latest, count, at_least)
        }
    };
    let missed = Due::Missed {
        job: e.job,
        trigger: e.trigger,
        scheduled: latest,
        late: start - latest,
        count,
        at_least,
    };
    (rule.next_after(latest), Some(missed))
}

/// The delay a `jitter` adds: uniform in `[0, jitter]`, from a uniform `unit` in `[0, 1]`.
pub fn jitter_delay(jitter: Duration, unit: f64) -> Duration {
    jitter.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn every_second(coalesce: bool, grace_ms: u64, start: DateTime<Utc>) -> Timetable {
        Timetable::new(
            vec![Entry {
                job: 0,
                trigger: 0,
                rule: TimeRule::Interval {
                    anchor: start,
                    every: Duration::from_secs(1),
                    first_k: 1,
                    end: None,
                },
                misfire_grace: Duration::from_millis(grace_ms),
                coalesce,
                resume: None,
            }],
            start,
        )
    }

    #[test]
    fn on_time_firings_fire_once_each() {
        let start = t("2026-01-01T00:00:00Z");
        let mut table = every_second(true, 1000, start);
        assert_eq!(table.earliest(), Some(t("2026-01-01T00:00:01Z")));
        assert_eq!(table.due(t("2026-01-01T00:00:00.5Z")), []);
        assert_eq!(
            table.due(t("2026-01-01T00:00:01.001Z")),
            [Due::Fire {
                job: 0,
                trigger: 0,
                scheduled: t("2026-01-01T00:00:01Z"),
                first_due: t("2026-01-01T00:00:01Z"),
                coalesced: 1
            }]
        );
        assert_eq!(table.earliest(), Some(t("2026-01-01T00:00:02Z")));
    }

    #[test]
    fn a_late_wake_up_coalesces_into_one_run() {
        let start = t("2026-01-01T00:00:00Z");
        let mut table = every_second(true, 1000, start);
        // Suspended for 5.2 s: firings at 1..5 are due; one run stands for all five.
        let due = table.due(t("2026-01-01T00:00:05.2Z"));
        assert_eq!(
            due,
            [Due::Fire {
                job: 0,
                trigger: 0,
                scheduled: t("2026-01-01T00:00:05Z"),
                // The run is as late as the first of the five: lateness counts from 1 s.
                first_due: t("2026-01-01T00:00:01Z"),
                coalesced: 5
            }]
        );
        // The grid is kept: the next is 6 s, not 6.2 s.
        assert_eq!(table.earliest(), Some(t("2026-01-01T00:00:06Z")));
    }

    #[test]
    fn without_coalescing_each_due_firing_is_handled_and_old_ones_are_missed() {
        let start = t("2026-01-01T00:00:00Z");
        let mut table = every_second(false, 1500, start);
        let due = table.due(t("2026-01-01T00:00:03.2Z"));
        assert_eq!(due.len(), 3);
        assert!(
            matches!(due[0], Due::Missed { count: 1, .. }),
            "1 s is 2.2 s late"
        );
        assert!(
            matches!(due[1], Due::Fire { coalesced: 1, .. }),
            "2 s is 1.2 s late, within 1.5 s"
        );
        assert!(matches!(due[2], Due::Fire { coalesced: 1, .. }));
    }

    #[test]
    fn a_coalesced_firing_past_the_grace_is_missed() {
        let start = t("2026-01-01T00:00:00Z");
        let mut table = every_second(true, 100, start);
        let due = table.due(t("2026-01-01T00:00:03.5Z"));
        assert!(matches!(due[..], [Due::Missed { count: 3, .. }]), "{due:?}");
    }

    #[test]
    fn a_past_at_fires_only_within_the_grace() {
        let start = t("2026-01-01T00:00:10Z");
        let at = |s: &str, grace_s: u64| Entry {
            job: 0,
            trigger: 0,
            rule: TimeRule::At { at: t(s) },
            misfire_grace: Duration::from_secs(grace_s),
            coalesce: true,
            resume: None,
        };
        let mut table = Timetable::new(vec![at("2026-01-01T00:00:09Z", 5)], start);
        assert!(matches!(table.due(start)[..], [Due::Fire { .. }]));
        assert!(!table.can_fire(0, 0));
        let mut table = Timetable::new(vec![at("2026-01-01T00:00:01Z", 5)], start);
        assert!(!table.can_fire(0, 0));
        assert_eq!(table.earliest(), None);
        // Beyond the grace: missed, once, 9 s late.
        let due = table.due(start);
        assert!(
            matches!(&due[..], [Due::Missed { count: 1, late, .. }] if late.num_seconds() == 9),
            "{due:?}"
        );
        assert!(table.due(start).is_empty());
    }

    #[test]
    fn triggers_of_one_job_due_together_fire_once() {
        let start = t("2026-01-01T00:00:00Z");
        let entry = |trigger, rule| Entry {
            job: 0,
            trigger,
            rule,
            misfire_grace: Duration::from_secs(1),
            coalesce: true,
            resume: None,
        };
        let every_minute = TimeRule::Interval {
            anchor: start,
            every: Duration::from_secs(60),
            first_k: 1,
            end: None,
        };
        let at_one = TimeRule::At {
            at: t("2026-01-01T00:01:00Z"),
        };
        let mut table = Timetable::new(vec![entry(0, every_minute), entry(1, at_one)], start);
        let due = table.due(t("2026-01-01T00:01:00.001Z"));
        assert_eq!(due.len(), 1, "{due:?}");
    }

    #[test]
    fn a_resumed_trigger_catches_up_within_the_grace_and_misses_beyond() {
        let last = t("2026-01-01T00:00:00Z");
        let start = t("2026-01-01T00:00:10.5Z");
        let entry = |coalesce| Entry {
            job: 0,
            trigger: 0,
            rule: TimeRule::Interval {
                anchor: last,
                every: Duration::from_secs(1),
                first_k: 1,
                end: None,
            },
            misfire_grace: Duration::from_secs(3),
            coalesce,
            resume: Some(last),
        };
        // Down from 0 s to 10.5 s: firings 1..10 fell due. Without coalescing, 1..7 are beyond the 3 s grace
        // (one miss of 7), 8, 9 and 10 run.
        let mut table = Timetable::new(vec![entry(false)], start);
        let due = table.due(start);
        assert!(
            matches!(due[0], Due::Missed { count: 7, scheduled, .. } if scheduled == t("2026-01-01T00:00:07Z")),
            "{due:?}"
        );
        assert_eq!(due.len(), 4, "{due:?}");
        // Coalescing: the seven beyond the grace are one miss, the three within it one run (SPEC §4).
        let mut table = Timetable::new(vec![entry(true)], start);
        assert!(matches!(
            table.due(start)[..],
            [Due::Missed { count: 7, .. }, Due::Fire { coalesced: 3, .. }]
        ));
    }

    #[test]
    fn an_at_handled_by_a_previous_runner_never_fires_again() {
        let at = t("2026-01-01T00:00:09Z");
        let table = Timetable::new(
            vec![Entry {
                job: 0,
                trigger: 0,
                rule: TimeRule::At { at },
                misfire_grace: Duration::from_secs(3600),
                coalesce: true,
                resume: Some(at),
            }],
            t("2026-01-01T00:00:10Z"),
        );
        assert_eq!(table.earliest(), None);
    }

    #[test]
    fn years_of_downtime_are_counted_at_once() {
        let start = t("2026-01-01T00:00:00.5Z");
        let entry = |rule, coalesce| Entry {
            job: 0,
            trigger: 0,
            rule,
            misfire_grace: Duration::from_secs(10),
            coalesce,
            resume: Some(t("2016-01-01T00:00:00Z")),
        };
        let every_second = TimeRule::Interval {
            anchor: t("2016-01-01T00:00:00Z"),
            every: Duration::from_secs(1),
            first_k: 1,
            end: None,
        };
        let clock = std::time::Instant::now();
        let mut table = Timetable::new(vec![entry(every_second, false)], start);
        let due = table.due(start);
        assert!(
            clock.elapsed() < Duration::from_secs(1),
            "{:?}",
            clock.elapsed()
        );
        // Ten years of seconds, less the ten within the grace: one miss, counted exactly.
        let seconds = (start - t("2016-01-01T00:00:00Z")).num_seconds() as u64;
        match &due[0] {
            Due::Missed {
                count, at_least, ..
            } => {
                assert_eq!(*count, seconds - 10);
                assert!(!at_least);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(due.len(), 11, "the ten firings within the grace run");
        // A per-second cron cannot be divided: counted up to a bound, the rest skipped at once.
        let cron = TimeRule::Cron {
            cron: crate::schedule::cron::parse("* * * * * *").unwrap(),
            zone: chrono_tz::UTC,
        };
        let clock = std::time::Instant::now();
        let mut table = Timetable::new(vec![entry(cron, true)], start);
        let due = table.due(start);
        assert!(
            clock.elapsed() < Duration::from_secs(2),
            "{:?}",
            clock.elapsed()
        );
        assert!(
            matches!(
                due[0],
                Due::Missed {
                    at_least: true,
                    count: MAX_COUNTED,
                    ..
                }
            ),
            "{due:?}"
        );
        assert!(matches!(due[1], Due::Fire { coalesced: 10, .. }), "{due:?}");
    }

    proptest::proptest! {
        #[test]
        fn jitter_stays_within_bounds(ms in 0u64..10_000_000, unit in proptest::num::f64::ANY) {
            let jitter = Duration::from_millis(ms);
            let d = jitter_delay(jitter, if unit.is_nan() { 0.5 } else { unit });
            proptest::prop_assert!(d <= jitter);
        }
    }
}
