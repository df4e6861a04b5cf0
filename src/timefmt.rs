//! Times for people: local wall time with its zone, relative times ("in 4m", "3h ago"), short durations.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// `2026-11-25 03:00:00 CET`: the wall time in `zone` with the zone's abbreviation.
pub fn local(t: DateTime<Utc>, zone: Tz) -> String {
    t.with_timezone(&zone)
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// `2026-12-08 02:30:00 +01:00`: the wall time in `zone` with its offset from UTC (unambiguous where an
/// abbreviation is not: the repeated hour of a DST change shows which pass it is). Milliseconds when the instant
/// has a fraction (a `250ms` interval).
pub fn wall(t: DateTime<Utc>, zone: Tz) -> String {
    let format = match t.timestamp_subsec_nanos() {
        0 => "%Y-%m-%d %H:%M:%S %:z",
        _ => "%Y-%m-%d %H:%M:%S%.3f %:z",
    };
    t.with_timezone(&zone).format(format).to_string()
}

/// `2026-12-08 02:30:00 +01:00 (Europe/Berlin)`: [`wall`] and the zone's name.
pub fn zoned(t: DateTime<Utc>, zone: Tz) -> String {
    format!("{} ({})", wall(t, zone), zone.name())
}

/// RFC 3339 with the offset `zone` has at `t` (`Z` where it is 0), for scripts that want the trigger's wall time
/// as well as the instant: whole seconds when it has no fraction, else milliseconds (a `250ms` interval), never
/// the nanoseconds of a runner's start.
pub fn rfc3339_in(t: DateTime<Utc>, zone: Tz) -> String {
    let format = match t.timestamp_subsec_nanos() {
        0 => chrono::SecondsFormat::Secs,
        _ => chrono::SecondsFormat::Millis,
    };
    t.with_timezone(&zone).to_rfc3339_opts(format, true)
}

/// `in 4m`, `3h ago`, `now`: the largest unit, and the next one below for small counts (`1h 5m ago`).
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    // To the nearest second: a fire 0.9 s away is "in 1s", not "now".
    let ms = (t - now).num_milliseconds();
    let secs = (ms + ms.signum() * 500) / 1000;
    let span = span(secs.unsigned_abs());
    match secs {
        0 => "now".to_string(),
        s if s > 0 => format!("in {span}"),
        _ => format!("{span} ago"),
    }
}

fn span(secs: u64) -> String {
    const MIN: u64 = 60;
    const HOUR: u64 = 60 * MIN;
    const DAY: u64 = 24 * HOUR;
    match secs {
        s if s < MIN => format!("{s}s"),
        s if s < HOUR => format!("{}m", s / MIN),
        s if s < 10 * HOUR && s % HOUR >= MIN => format!("{}h {}m", s / HOUR, s % HOUR / MIN),
        s if s < DAY => format!("{}h", s / HOUR),
        s if s < 10 * DAY && s % DAY >= HOUR => format!("{}d {}h", s / DAY, s % DAY / HOUR),
        s => format!("{}d", s / DAY),
    }
}

/// `350ms`, `3.2s`, `4m12s`, `2h05m`.
pub fn duration_ms(ms: u64) -> String {
    match ms {
        m if m < 1000 => format!("{m}ms"),
        m if m < 60_000 => format!("{:.1}s", m as f64 / 1000.0),
        m if m < 3_600_000 => format!("{}m{:02}s", m / 60_000, m % 60_000 / 1000),
        m => format!("{}h{:02}m", m / 3_600_000, m % 3_600_000 / 60_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn relative_times_read_like_speech() {
        let now = t("2026-11-25T12:00:00Z");
        assert_eq!(relative(t("2026-11-25T12:04:00Z"), now), "in 4m");
        assert_eq!(relative(t("2026-11-25T09:00:00Z"), now), "3h ago");
        assert_eq!(relative(t("2026-11-25T10:55:00Z"), now), "1h 5m ago");
        assert_eq!(relative(t("2026-11-25T12:00:30Z"), now), "in 30s");
        assert_eq!(relative(now, now), "now");
        assert_eq!(relative(t("2026-11-27T15:00:00Z"), now), "in 2d 3h");
        assert_eq!(relative(t("2026-10-25T12:00:00Z"), now), "31d ago");
    }

    #[test]
    fn local_times_carry_their_zone() {
        let zone: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(
            local(t("2026-11-25T02:00:00Z"), zone),
            "2026-11-25 03:00:00 CET"
        );
    }

    #[test]
    fn trigger_times_are_shown_in_their_zone_with_the_offset() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let at = t("2026-12-08T01:30:00Z");
        assert_eq!(
            zoned(at, berlin),
            "2026-12-08 02:30:00 +01:00 (Europe/Berlin)"
        );
        assert_eq!(rfc3339_in(at, berlin), "2026-12-08T02:30:00+01:00");
        assert_eq!(rfc3339_in(at, Tz::UTC), "2026-12-08T01:30:00Z");
        // The repeated hour of 25 October 2026: the offset tells the two passes apart.
        assert_eq!(
            wall(t("2026-10-25T00:30:00Z"), berlin),
            "2026-10-25 02:30:00 +02:00"
        );
        assert_eq!(
            wall(t("2026-10-25T01:30:00Z"), berlin),
            "2026-10-25 02:30:00 +01:00"
        );
        let fraction = t("2026-01-01T00:00:00.25Z");
        assert_eq!(
            zoned(fraction, Tz::UTC),
            "2026-01-01 00:00:00.250 +00:00 (UTC)"
        );
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(duration_ms(350), "350ms");
        assert_eq!(duration_ms(3200), "3.2s");
        assert_eq!(duration_ms(252_000), "4m12s");
        assert_eq!(duration_ms(7_500_000), "2h05m");
    }
}
