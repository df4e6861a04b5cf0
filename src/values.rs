//! The scalar value formats of SPEC §2.1: names, durations, date-times and time zones.

use chrono::{DateTime, FixedOffset, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use std::time::Duration;

pub const MAX_NAME_LEN: usize = 64;

/// Why a name is not `[A-Za-z][A-Za-z0-9_-]*` of at most 64 characters, or `None` when it is fine.
pub fn name_problem(name: &str) -> Option<&'static str> {
    let mut chars = name.chars();
    match chars.next() {
        None => Some("a name cannot be empty"),
        Some(c) if !c.is_ascii_alphabetic() => Some("a name must start with a letter"),
        _ if name.len() > MAX_NAME_LEN => Some("a name has at most 64 characters"),
        _ if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') => {
            Some("a name holds only letters, digits, `_` and `-`")
        }
        _ => None,
    }
}

/// Parse `250ms`, `5s`, `1m30s`, `2h`, `1d`: one or more number+unit pairs.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("a duration cannot be empty".into());
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!("a duration needs a unit, e.g. `{text}s`"));
    }
    if text.contains('.') {
        return Err(format!(
            "`{text}`: durations take whole numbers; write a smaller unit instead (`0.5s` is `500ms`)"
        ));
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut total = Duration::ZERO;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!(
                "`{text}` is not a duration; write e.g. `250ms`, `5s`, `1m30s`, `2h` or `1d`"
            ));
        }
        let number: u64 = text[start..i]
            .parse()
            .map_err(|_| format!("`{text}` is too large"))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit_ms: u64 = match &text[unit_start..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!(
                    "`{text}`: the last number needs a unit (ms, s, m, h or d)"
                ))
            }
            other => {
                return Err(format!(
                    "`{other}` is not a duration unit; use ms, s, m, h or d"
                ))
            }
        };
        let part = number
            .checked_mul(unit_ms)
            .ok_or_else(|| format!("`{text}` is too large"))?;
        total = total
            .checked_add(Duration::from_millis(part))
            .ok_or_else(|| format!("`{text}` is too large"))?;
    }
    Ok(total)
}

/// A duration the way a user writes it: `1m30s`, `250ms`.
/// Whether `text` is `HOST:PORT` (a name, an IPv4 address, or `[IPv6]`; a port from 1 to 65535). Names are not
/// resolved here: that is the probe's business, at run time.
pub fn check_host_port(text: &str) -> Result<(), &'static str> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("there is no `:PORT`");
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err("the port is not a number from 1 to 65535"),
    }
    let host = match host.strip_prefix('[') {
        Some(inner) => match inner.strip_suffix(']') {
            Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => return Ok(()),
            _ => return Err("`[...]` holds no IPv6 address"),
        },
        None => host,
    };
    if host.is_empty() {
        return Err("the host is empty");
    }
    if host.contains(':') {
        return Err("an IPv6 address goes in brackets: `[::1]:PORT`");
    }
    let name_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
    if !host.chars().all(name_char) {
        return Err("the host is not a name or an address");
    }
    Ok(())
}

pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// A date-time as written: with an offset it is an instant; without one it is read in the trigger's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateTimeSpec {
    Instant(DateTime<FixedOffset>),
    Local(NaiveDateTime),
}

pub fn parse_datetime(text: &str) -> Result<DateTimeSpec, String> {
    let text = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        return Ok(DateTimeSpec::Instant(dt));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(DateTimeSpec::Local(naive));
        }
    }
    Err(format!(
        "`{text}` is not a date-time; write `2026-12-01T10:00:00+01:00` or a local `2026-12-01 10:00`"
    ))
}

pub fn parse_zone(text: &str) -> Result<Tz, String> {
    text.parse::<Tz>()
        .map_err(|_| format!("`{text}` is not an IANA time zone (e.g. `Europe/Berlin`, `UTC`)"))
}

/// The zone used when a trigger names none: the system's, or UTC when it cannot be told.
pub fn system_zone() -> Tz {
    // Asked once: finding it reads files, and a 4,000-job file may ask for every trigger.
    static ZONE: std::sync::OnceLock<Tz> = std::sync::OnceLock::new();
    *ZONE.get_or_init(|| {
        std::env::var("TZ")
            .ok()
            .and_then(|tz| zone_from_tz_var(&tz))
            .or_else(|| {
                iana_time_zone::get_timezone()
                    .ok()
                    .and_then(|name| name.parse().ok())
            })
            .unwrap_or(Tz::UTC)
    })
}

/// The zone a `TZ` variable names: `Europe/Berlin`, `:Europe/Berlin`, or a path into a zoneinfo tree
/// (`/usr/share/zoneinfo/Europe/Berlin`). POSIX rules such as `CET-1CEST` are not IANA names: `None`.
fn zone_from_tz_var(tz: &str) -> Option<Tz> {
    let name = tz.strip_prefix(':').unwrap_or(tz);
    if let Ok(zone) = name.parse() {
        return Some(zone);
    }
    let (_, after) = name.split_once("zoneinfo/")?;
    after.parse().ok()
}

impl DateTimeSpec {
    /// The instant this names. A local time in a DST gap is moved to the first instant after the gap; a repeated
    /// local time is its first occurrence (the same rule as cron firings).
    pub fn resolve(&self, zone: Tz) -> DateTime<Utc> {
        match self {
            DateTimeSpec::Instant(dt) => dt.with_timezone(&Utc),
            DateTimeSpec::Local(naive) => resolve_local(*naive, zone),
        }
    }
}

pub fn resolve_local(naive: NaiveDateTime, zone: Tz) -> DateTime<Utc> {
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(dt) => dt.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // A gap: the first valid local minute after it is the gap's end, the first instant after the gap.
            let mut probe = naive
                .with_second(0)
                .and_then(|n| n.with_nanosecond(0))
                .unwrap_or(naive);
            for _ in 0..(24 * 60) {
                probe += chrono::Duration::minutes(1);
                if let Some(dt) = zone.from_local_datetime(&probe).earliest() {
                    return dt.with_timezone(&Utc);
                }
            }
            Utc.from_utc_datetime(&naive)
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn host_and_port() {
        use super::check_host_port as check;
        for ok in [
            "127.0.0.1:80",
            "localhost:5432",
            "db.internal:1",
            "[::1]:8080",
            "my_host:65535",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            ":80",
            "host:0",
            "host:65536",
            "host:http",
            "::1:80",
            "[nope]:80",
            "a b:80",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_tz_variable_names_a_zone() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(zone_from_tz_var("Europe/Berlin"), Some(berlin));
        assert_eq!(zone_from_tz_var(":Europe/Berlin"), Some(berlin));
        assert_eq!(
            zone_from_tz_var("/usr/share/zoneinfo/Europe/Berlin"),
            Some(berlin)
        );
        assert_eq!(zone_from_tz_var("CET-1CEST"), None);
    }
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7_200)));
        assert!(parse_duration("5").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("0.01s")
            .unwrap_err()
            .contains("whole numbers"));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1m30").is_err());
    }

    #[test]
    fn names() {
        assert_eq!(name_problem("producer_1-a"), None);
        assert!(name_problem("1job").is_some());
        assert!(name_problem("a b").is_some());
        assert!(name_problem(&"a".repeat(65)).is_some());
        assert_eq!(name_problem(&"a".repeat(64)), None);
    }

    #[test]
    fn datetimes() {
        assert!(matches!(
            parse_datetime("2026-12-01T10:00:00+01:00"),
            Ok(DateTimeSpec::Instant(_))
        ));
        assert!(matches!(
            parse_datetime("2026-12-01 10:00"),
            Ok(DateTimeSpec::Local(_))
        ));
        assert!(parse_datetime("tomorrow").is_err());
    }

    #[test]
    fn local_times_across_dst() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 2026-03-29 02:30 does not exist in Berlin: the clocks jump from 02:00 to 03:00 (01:00 UTC).
        let gap = NaiveDateTime::parse_from_str("2026-03-29 02:30", "%Y-%m-%d %H:%M").unwrap();
        assert_eq!(
            resolve_local(gap, berlin).to_rfc3339(),
            "2026-03-29T01:00:00+00:00"
        );
        // 2026-10-25 02:30 happens twice: the first is 00:30 UTC.
        let twice = NaiveDateTime::parse_from_str("2026-10-25 02:30", "%Y-%m-%d %H:%M").unwrap();
        assert_eq!(
            resolve_local(twice, berlin).to_rfc3339(),
            "2026-10-25T00:30:00+00:00"
        );
    }
}
