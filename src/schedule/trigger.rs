//! Pure time maths for the time triggers of SPEC §2.3: the next fire instant strictly after a given instant.
//!
//! Cron expressions are matched on *local wall time* (`CronSet` over `NaiveDateTime`), then the local time is turned
//! into an instant with SPEC's DST rule: a local time skipped by a DST change fires at the first instant after the
//! gap, a local time that occurs twice fires once, at its first occurrence. Doing the matching on wall time and
//! the resolution in one place keeps both rules in a few lines that are easy to test.

use crate::schedule::cron::CronSet;
use chrono::{DateTime, NaiveDateTime, Utc};
use chrono_tz::Tz;
use std::time::Duration;

use crate::values::resolve_local;

/// One time rule, ready to answer "when next?".
#[derive(Debug, Clone)]
pub enum TimeRule {
    Cron {
        cron: CronSet,
        zone: Tz,
    },
    /// Fires at `anchor + k * every` for `k >= first_k`, never after `end`.
    Interval {
        anchor: DateTime<Utc>,
        every: Duration,
        first_k: u64,
        end: Option<DateTime<Utc>>,
    },
    At {
        at: DateTime<Utc>,
    },
}

impl TimeRule {
    /// The first fire instant strictly after `after`, or `None` when the rule can fire no more.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            TimeRule::At { at } => (*at > after).then_some(*at),
            TimeRule::Interval {
                anchor,
                every,
                first_k,
                end,
            } => {
                let every_ns = every.as_nanos().max(1) as i128;
                let since = (after - *anchor)
                    .num_nanoseconds()
                    .map(i128::from)
                    .unwrap_or(i128::MAX / 4);
                // The smallest k with anchor + k*every > after.
                let k = if since < 0 { 0 } else { since / every_ns + 1 };
                let k = k.max(*first_k as i128);
                let offset = chrono::Duration::nanoseconds(i64::try_from(k * every_ns).ok()?);
                let next = *anchor + offset;
                match end {
                    Some(end) if next > *end => None,
                    _ => Some(next),
                }
            }
            TimeRule::Cron { cron, zone } => next_cron(cron, *zone, after),
        }
    }

    /// The next `count` fire instants after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        upcoming(std::slice::from_ref(self), after, count)
    }
}

fn next_cron(cron: &CronSet, zone: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut local: NaiveDateTime = after.with_timezone(&zone).naive_local();
    // Local times in a gap collapse onto the gap's end and a repeated hour maps back to its first pass, so a
    // candidate may not be after `after`: keep searching (bounded; a gap or repeat is at most a few hours).
    for _ in 0..100_000 {
        let next_local = cron.next_after(local)?;
        let instant = resolve_local(next_local, zone);
        if instant > after {
            return Some(instant);
        }
        local = next_local;
    }
    None
}

/// Merge several rules: the earliest next instant of any.
pub fn next_of(rules: &[TimeRule], after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    rules.iter().filter_map(|r| r.next_after(after)).min()
}

/// The next `count` fire instants of several rules merged, in time order (an instant two rules share, once).
pub fn upcoming(rules: &[TimeRule], after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
    // Not `count` itself: a rule may have fewer instants than asked for (an `at` has one).
    let mut out = Vec::with_capacity(count.min(1024));
    let mut cursor = after;
    while out.len() < count {
        match next_of(rules, cursor) {
            Some(t) => {
                out.push(t);
                cursor = t;
            }
            None => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cron_rule(expr: &str, zone: &str) -> TimeRule {
        TimeRule::Cron {
            cron: crate::schedule::cron::parse(expr).unwrap(),
            zone: zone.parse().unwrap(),
        }
    }

    fn times(rule: &TimeRule, from: &str, n: usize) -> Vec<String> {
        rule.upcoming(utc(from), n)
            .into_iter()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .collect()
    }

    #[test]
    fn five_and_six_fields() {
        let r = cron_rule("*/15 * * * *", "UTC");
        assert_eq!(
            times(&r, "2026-01-01T00:00:00Z", 2),
            ["2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z"]
        );
        let r = cron_rule("*/20 * * * * *", "UTC");
        assert_eq!(
            times(&r, "2026-01-01T00:00:00Z", 2),
            ["2026-01-01T00:00:20Z", "2026-01-01T00:00:40Z"]
        );
    }

    #[test]
    fn names_and_macros_and_sunday_seven() {
        // 2026-01-01 is a Thursday.
        let r = cron_rule("0 9 * JAN MON", "UTC");
        assert_eq!(
            times(&r, "2026-01-01T00:00:00Z", 1),
            ["2026-01-05T09:00:00Z"]
        );
        let r = cron_rule("0 0 * * 7", "UTC");
        assert_eq!(
            times(&r, "2026-01-01T00:00:00Z", 1),
            ["2026-01-04T00:00:00Z"]
        );
        let r = cron_rule("0 0 * * 0", "UTC");
        assert_eq!(
            times(&r, "2026-01-01T00:00:00Z", 1),
            ["2026-01-04T00:00:00Z"]
        );
        let r = cron_rule("@daily", "UTC");
        assert_eq!(
            times(&r, "2026-01-01T10:00:00Z", 1),
            ["2026-01-02T00:00:00Z"]
        );
        let r = cron_rule("@hourly", "UTC");
        assert_eq!(
            times(&r, "2026-01-01T10:00:00Z", 1),
            ["2026-01-01T11:00:00Z"]
        );
        let r = cron_rule("@monthly", "UTC");
        assert_eq!(
            times(&r, "2026-01-01T10:00:00Z", 1),
            ["2026-02-01T00:00:00Z"]
        );
        let r = cron_rule("@yearly", "UTC");
        assert_eq!(
            times(&r, "2026-01-01T10:00:00Z", 1),
            ["2027-01-01T00:00:00Z"]
        );
        let r = cron_rule("@weekly", "UTC");
        assert_eq!(
            times(&r, "2026-01-01T10:00:00Z", 1),
            ["2026-01-04T00:00:00Z"]
        );
    }

    #[test]
    fn day_fields_are_ored_when_both_restricted() {
        // The 13th, or any Friday. 2026-02-06 is a Friday; the 13th of February 2026 is also a Friday.
        let r = cron_rule("0 0 13 * FRI", "UTC");
        assert_eq!(
            times(&r, "2026-02-01T00:00:00Z", 3),
            [
                "2026-02-06T00:00:00Z",
                "2026-02-13T00:00:00Z",
                "2026-02-20T00:00:00Z"
            ]
        );
        let r = cron_rule("0 0 1 * MON", "UTC");
        // 2026-06-01 is a Monday; the next match after it is Monday 8th, not 1st of July.
        assert_eq!(
            times(&r, "2026-05-30T00:00:00Z", 2),
            ["2026-06-01T00:00:00Z", "2026-06-08T00:00:00Z"]
        );
    }

    #[test]
    fn berlin_spring_forward_fires_after_the_gap() {
        // 2026-03-29: 02:00 CET -> 03:00 CEST (01:00 UTC). 02:30 does not exist: fire at 03:00 CEST.
        let r = cron_rule("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            times(&r, "2026-03-28T12:00:00Z", 3),
            [
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:30:00Z",
                "2026-03-31T00:30:00Z"
            ]
        );
        // Every 15 minutes: the four skipped times collapse into one firing at the gap's end.
        let r = cron_rule("*/15 * * * *", "Europe/Berlin");
        assert_eq!(
            times(&r, "2026-03-29T00:40:00Z", 4),
            [
                "2026-03-29T00:45:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T01:15:00Z",
                "2026-03-29T01:30:00Z"
            ]
        );
    }

    #[test]
    fn berlin_fall_back_fires_once_at_the_first_occurrence() {
        // 2026-10-25: 03:00 CEST -> 02:00 CET (01:00 UTC). 02:30 happens at 00:30 UTC and 01:30 UTC.
        let r = cron_rule("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            times(&r, "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
    }

    #[test]
    fn new_york_both_directions() {
        // 2026-03-08: 02:00 EST -> 03:00 EDT (07:00 UTC).
        let r = cron_rule("30 2 * * *", "America/New_York");
        assert_eq!(
            times(&r, "2026-03-07T12:00:00Z", 2),
            ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]
        );
        // 2026-11-01: 02:00 EDT -> 01:00 EST. 01:30 happens at 05:30 UTC and 06:30 UTC: fire at 05:30 only.
        let r = cron_rule("30 1 * * *", "America/New_York");
        assert_eq!(
            times(&r, "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
        );
    }

    #[test]
    fn interval_is_a_fixed_grid_in_absolute_time_across_dst() {
        let anchor = utc("2026-03-29T00:30:00Z");
        let r = TimeRule::Interval {
            anchor,
            every: Duration::from_secs(3600),
            first_k: 1,
            end: None,
        };
        assert_eq!(
            times(&r, "2026-03-29T00:30:00Z", 3),
            [
                "2026-03-29T01:30:00Z",
                "2026-03-29T02:30:00Z",
                "2026-03-29T03:30:00Z"
            ]
        );
        // From a late wake-up the grid is kept, not restarted.
        assert_eq!(
            times(&r, "2026-03-29T02:45:00Z", 1),
            ["2026-03-29T03:30:00Z"]
        );
    }

    #[test]
    fn interval_with_start_and_end() {
        let r = TimeRule::Interval {
            anchor: utc("2026-01-01T10:00:00Z"),
            every: Duration::from_secs(600),
            first_k: 0,
            end: Some(utc("2026-01-01T10:20:00Z")),
        };
        assert_eq!(
            times(&r, "2026-01-01T09:00:00Z", 5),
            [
                "2026-01-01T10:00:00Z",
                "2026-01-01T10:10:00Z",
                "2026-01-01T10:20:00Z"
            ]
        );
    }

    #[test]
    fn combined_rules_merge_in_time_order() {
        let rules = [
            TimeRule::At {
                at: utc("2026-01-01T00:07:00Z"),
            },
            cron_rule("*/5 * * * *", "UTC"),
        ];
        let mut t = utc("2026-01-01T00:00:00Z");
        let mut seen = Vec::new();
        for _ in 0..3 {
            t = next_of(&rules, t).unwrap();
            seen.push(t.format("%H:%M").to_string());
        }
        assert_eq!(seen, ["00:05", "00:07", "00:10"]);
    }

    #[test]
    fn bad_field_is_located() {
        let e = crate::schedule::cron::parse("0 25 * * *").unwrap_err();
        assert_eq!(e.field, Some((2, 2)));
        let e = crate::schedule::cron::parse("* * * * MOX").unwrap_err();
        assert_eq!(e.field, Some((8, 3)));
        let e = crate::schedule::cron::parse("* * *").unwrap_err();
        assert_eq!(e.field, None);
        assert!(crate::schedule::cron::parse("@sometimes").is_err());
    }

    proptest::proptest! {
        #[test]
        fn fire_times_strictly_increase(minute in 0u32..60, step in 1u32..30, start in 0i64..2_000_000_000) {
            let expr = format!("{minute}-59/{step} * * * *");
            let rule = TimeRule::Cron { cron: crate::schedule::cron::parse(&expr).unwrap(), zone: "Europe/Berlin".parse().unwrap() };
            let from = Utc.timestamp_opt(start, 0).unwrap();
            let times = rule.upcoming(from, 20);
            proptest::prop_assert_eq!(times.len(), 20);
            proptest::prop_assert!(times[0] > from);
            for w in times.windows(2) {
                proptest::prop_assert!(w[0] < w[1]);
            }
        }
    }
}
