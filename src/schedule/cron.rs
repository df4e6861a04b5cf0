//! Cron expressions (SPEC §2.3): parsing, with every problem in our own words and pointing at the field, and a
//! compact schedule (a few bit sets, 32 bytes) that finds the next matching local wall time.
//!
//! The fields are `[second] minute hour day-of-month month day-of-week`. Each takes `*`, values, ranges `a-b`, lists
//! `a,b` and steps (`*/n`, `a/n`, `a-b/n`); months take `JAN`-`DEC`, days of the week `SUN`-`SAT` (0 and 7 are
//! Sunday; `SUN` ends a range as 7, so `FRI-SUN` is Friday to Sunday); `?` is `*` in the two day fields. When both
//! day fields are restricted (neither is `*` or `?`), a day matches when either does, as in Vixie cron.
//! Quartz's `L`, `W`, `#` and `+` are refused with a clear message rather than half supported.

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Timelike};

/// Why a cron expression does not parse, and which field (byte range in the expression) is at fault.
#[derive(Debug, Clone, PartialEq)]
pub struct CronProblem {
    pub message: String,
    pub label: String,
    pub help: String,
    pub field: Option<(usize, usize)>,
}

/// A schedule: which seconds, minutes, hours, days, months and weekdays match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CronSet {
    seconds: u64,
    minutes: u64,
    hours: u32,
    /// Bit d for day d of the month (1-31).
    days: u32,
    /// Bit m for month m (1-12).
    months: u16,
    /// Bit w for weekday w (0 is Sunday).
    weekdays: u8,
    /// The day-of-month field is `*` (or `?`): only the weekday decides (and the other way round).
    any_day: bool,
    any_weekday: bool,
}

/// The macros, and what each stands for.
pub const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// One field's kind: its name, its range, and which names it takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Second,
    Minute,
    Hour,
    Day,
    Month,
    Weekday,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Second => "second",
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::Day => "day-of-month",
            Field::Month => "month",
            Field::Weekday => "day-of-week",
        }
    }
    /// The values the field takes (7 is Sunday again for the weekday).
    fn range(self) -> (u32, u32) {
        match self {
            Field::Second | Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::Day => (1, 31),
            Field::Month => (1, 12),
            Field::Weekday => (0, 7),
        }
    }
    fn help(self) -> String {
        let (lo, hi) = self.range();
        let names = match self {
            Field::Month => " or JAN-DEC",
            Field::Weekday => " (0 and 7 are Sunday) or SUN-SAT",
            _ => "",
        };
        format!(
            "the {} field takes {lo}-{hi}{names}, with `*`, ranges `a-b`, lists `a,b` and steps `*/n`",
            self.name()
        )
    }
    fn names(self) -> &'static [&'static str] {
        match self {
            Field::Month => &MONTHS,
            Field::Weekday => &WEEKDAYS,
            _ => &[],
        }
    }
}

/// A problem in one field: the message (without the field), and a label.
struct FieldError {
    message: String,
    label: &'static str,
}

fn field_error(message: impl Into<String>, label: &'static str) -> FieldError {
    FieldError {
        message: message.into(),
        label,
    }
}

/// Parse a 5- or 6-field expression or a macro.
pub fn parse(text: &str) -> Result<CronSet, CronProblem> {
    let trimmed = text.trim();
    if trimmed.starts_with('@') {
        return parse_macro(trimmed);
    }
    let fields = field_positions(text);
    let kinds: &[Field] = match fields.len() {
        5 => &[Field::Minute, Field::Hour, Field::Day, Field::Month, Field::Weekday],
        6 => &[
            Field::Second,
            Field::Minute,
            Field::Hour,
            Field::Day,
            Field::Month,
            Field::Weekday,
        ],
        n => {
            return Err(CronProblem {
                message: format!("a cron expression has 5 or 6 fields; this one has {n}"),
                label: "wrong number of fields".into(),
                help: "write `minute hour day-of-month month day-of-week`, with an optional leading seconds field"
                    .into(),
                field: None,
            })
        }
    };
    let mut bits = [0u64; 6];
    let mut star = [false; 6];
    for ((offset, field), &kind) in fields.iter().zip(kinds) {
        let slot = kind as usize;
        star[slot] =
            *field == "*" || (*field == "?" && matches!(kind, Field::Day | Field::Weekday));
        bits[slot] = parse_field(field, kind).map_err(|e| CronProblem {
            message: format!("invalid {} field `{field}`: {}", kind.name(), e.message),
            label: e.label.into(),
            help: kind.help(),
            field: Some((*offset, field.len())),
        })?;
    }
    if fields.len() == 5 {
        bits[Field::Second as usize] = 1;
    }
    let weekdays = bits[Field::Weekday as usize];
    let set = CronSet {
        seconds: bits[Field::Second as usize],
        minutes: bits[Field::Minute as usize],
        hours: bits[Field::Hour as usize] as u32,
        days: bits[Field::Day as usize] as u32,
        months: bits[Field::Month as usize] as u16,
        // 7 is Sunday too.
        weekdays: ((weekdays | (weekdays >> 7)) & 0x7f) as u8,
        any_day: star[Field::Day as usize],
        any_weekday: star[Field::Weekday as usize],
    };
    if let Some(why) = set.never_fires() {
        let (offset, field) = fields[kinds
            .iter()
            .position(|&k| k == Field::Day)
            .expect("a day field")];
        return Err(CronProblem {
            message: format!("`{}` can never fire: {why}", text.trim()),
            label: "no month has this day".into(),
            help: "check the day-of-month and month fields together".into(),
            field: Some((offset, field.len())),
        });
    }
    Ok(set)
}

/// `@daily` and its kind: the expression it stands for, or what to write instead.
fn parse_macro(trimmed: &str) -> Result<CronSet, CronProblem> {
    let lower = trimmed.to_ascii_lowercase();
    match MACROS.iter().find(|(m, _)| *m == lower) {
        Some((_, expansion)) => parse(expansion),
        None => Err(CronProblem {
            message: format!("`{trimmed}` is not a cron macro"),
            label: "unknown macro".into(),
            help: match lower.as_str() {
                "@reboot" => "flowrun has no @reboot: use the `start` trigger, which fires when the runner starts".into(),
                s if s.starts_with("@every") => "flowrun has no @every: use an interval trigger, e.g. `{ interval: 5m }`".into(),
                _ => "the macros are @yearly (@annually), @monthly, @weekly, @daily (@midnight) and @hourly".into(),
            },
            field: None,
        }),
    }
}

/// The fields and their byte offsets.
fn field_positions(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                out.push((s, &text[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &text[s..]));
    }
    out
}

/// One field as a bit set of the values it selects.
fn parse_field(field: &str, kind: Field) -> Result<u64, FieldError> {
    let mut bits = 0u64;
    for item in field.split(',') {
        if item.is_empty() {
            return Err(field_error("an empty item in a list", "empty list item"));
        }
        bits |= parse_item(item, kind)?;
    }
    Ok(bits)
}

/// `*`, `?`, `a`, `a-b`, each with an optional `/step`.
fn parse_item(item: &str, kind: Field) -> Result<u64, FieldError> {
    let (lo, hi) = kind.range();
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => {
            let step: u32 = step.parse().map_err(|_| {
                field_error(format!("the step `{step}` is not a number"), "bad step")
            })?;
            if step == 0 {
                return Err(field_error("a step of 0 never advances", "zero step"));
            }
            (base, Some(step))
        }
        None => (item, None),
    };
    let (from, to) = if base == "*" || (base == "?" && matches!(kind, Field::Day | Field::Weekday))
    {
        (lo, if kind == Field::Weekday { 6 } else { hi })
    } else if let Some((a, b)) = base.split_once('-') {
        let from = value(a, kind, false)?;
        let to = value(b, kind, true)?;
        // `SUN-SUN` is Sunday alone, not the whole week.
        let to = if kind == Field::Weekday && is_sunday_name(a) && is_sunday_name(b) {
            0
        } else {
            to
        };
        if from > to {
            return Err(field_error(
                format!("the range `{base}` runs backwards"),
                "backwards range",
            ));
        }
        (from, to)
    } else {
        let v = value(base, kind, false)?;
        // `a/n` runs from a to the end of the field.
        (v, if step.is_some() { hi } else { v })
    };
    let step = step.unwrap_or(1);
    let mut bits = 0u64;
    let mut v = from;
    while v <= to {
        bits |= 1 << v;
        v += step;
    }
    Ok(bits)
}

fn is_sunday_name(text: &str) -> bool {
    text.eq_ignore_ascii_case("SUN")
}

/// One value: a number in the field's range, or a name where the field takes names. `range_end`: `SUN` ends a
/// range as 7.
fn value(text: &str, kind: Field, range_end: bool) -> Result<u32, FieldError> {
    let (lo, hi) = kind.range();
    if let Ok(n) = text.parse::<u32>() {
        if n < lo || n > hi {
            return Err(field_error(
                format!("{n} is out of range ({lo}-{hi})"),
                "out of range",
            ));
        }
        return Ok(n);
    }
    let upper = text.to_ascii_uppercase();
    if let Some(i) = kind.names().iter().position(|n| *n == upper) {
        return Ok(match kind {
            Field::Month => i as u32 + 1,
            _ if i == 0 && range_end => 7,
            _ => i as u32,
        });
    }
    let all: Vec<&str> = MONTHS.iter().chain(WEEKDAYS.iter()).copied().collect();
    let looks_like_name = text.len() >= 3 && all.iter().any(|n| upper.starts_with(n));
    if upper.contains(['L', 'W', '#']) && !looks_like_name || text.starts_with('+') {
        return Err(field_error(
            format!(
                "`{text}` uses Quartz syntax (`L`, `W`, `#`, `+`), which flowrun does not support"
            ),
            "unsupported syntax",
        ));
    }
    Err(match kind.names() {
        [] if looks_like_name => field_error(
            "this field takes numbers only (names are for months and days of the week)",
            "a name here",
        ),
        names if looks_like_name => field_error(
            format!(
                "`{text}` is not a name this field takes (it takes {}-{})",
                names[0],
                names[names.len() - 1]
            ),
            "unknown name",
        ),
        _ if text.is_empty() => field_error(
            "a number is missing (a range or a step with an empty end?)",
            "missing number",
        ),
        names if !names.is_empty() && text.chars().all(|c| c.is_ascii_alphabetic()) => field_error(
            format!(
                "`{text}` is neither a number nor a name this field takes (it takes {}-{})",
                names[0],
                names[names.len() - 1]
            ),
            "unknown name",
        ),
        _ => field_error(format!("`{text}` is not a number"), "not a number"),
    })
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    };
    next.and_then(|d| d.pred_opt()).map_or(31, |d| d.day())
}

/// The lowest set bit at or above `from`, if any.
fn next_bit(mask: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let above = mask & (!0u64 << from);
    (above != 0).then(|| above.trailing_zeros())
}

impl CronSet {
    /// Why it can never fire (a day no selected month has), if so.
    fn never_fires(&self) -> Option<String> {
        if !self.any_weekday && !self.any_day {
            return None; // either day field may match: the weekday always comes round
        }
        if self.any_day {
            return None;
        }
        // Only the day of the month decides: some selected month must have some selected day (29 February
        // counts: leap years come).
        let longest = |m: u32| if m == 2 { 29 } else { days_in_month(2001, m) };
        let months: Vec<u32> = (1..=12).filter(|m| self.months & (1 << m) != 0).collect();
        if months
            .iter()
            .any(|&m| (1..=longest(m)).any(|d| self.days & (1 << d) != 0))
        {
            return None;
        }
        let first = self.days.trailing_zeros();
        let names: Vec<&str> = months
            .iter()
            .map(|&m| MONTH_NAMES[m as usize - 1])
            .collect();
        Some(match names.as_slice() {
            [one] => format!("{one} never has day {first}"),
            many => format!("none of {} has day {first}", many.join(", ")),
        })
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().num_days_from_sunday()) != 0;
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The first local wall time strictly after `after` that matches (whole seconds), or `None` if there is none
    /// within a few years (which `parse` makes impossible).
    pub fn next_after(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut t = after.with_nanosecond(0)? + Duration::seconds(1);
        for _ in 0..100_000 {
            if self.months & (1 << t.month()) == 0 {
                t = next_month(t.date())?.and_time(NaiveTime::MIN);
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t.date().succ_opt()?.and_time(NaiveTime::MIN);
                continue;
            }
            let Some(h) = next_bit(self.hours as u64, t.hour()) else {
                t = t.date().succ_opt()?.and_time(NaiveTime::MIN);
                continue;
            };
            if h != t.hour() {
                t = t.date().and_hms_opt(h, 0, 0)?;
            }
            let Some(m) = next_bit(self.minutes, t.minute()) else {
                t = t.date().and_hms_opt(t.hour(), 0, 0)? + Duration::hours(1);
                continue;
            };
            if m != t.minute() {
                t = t.date().and_hms_opt(t.hour(), m, 0)?;
            }
            let Some(s) = next_bit(self.seconds, t.second()) else {
                t = t.date().and_hms_opt(t.hour(), t.minute(), 0)? + Duration::minutes(1);
                continue;
            };
            return t.date().and_hms_opt(t.hour(), t.minute(), s);
        }
        None
    }
}

fn next_month(date: NaiveDate) -> Option<NaiveDate> {
    match date.month() {
        12 => NaiveDate::from_ymd_opt(date.year() + 1, 1, 1),
        m => NaiveDate::from_ymd_opt(date.year(), m + 1, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn next(expr: &str, from: &str, n: usize) -> Vec<String> {
        let set = parse(expr).unwrap();
        let mut t = at(from);
        (0..n)
            .map(|_| {
                t = set.next_after(t).unwrap();
                t.format("%a %Y-%m-%d %H:%M:%S").to_string()
            })
            .collect()
    }

    fn problem(expr: &str) -> CronProblem {
        parse(expr).unwrap_err()
    }

    #[test]
    fn midnight_and_annually_are_macros() {
        assert_eq!(parse("@midnight").unwrap(), parse("0 0 * * *").unwrap());
        assert_eq!(parse("@annually").unwrap(), parse("@yearly").unwrap());
        assert!(problem("@reboot").help.contains("`start` trigger"));
        assert!(problem("@every 5m").help.contains("interval"));
    }

    #[test]
    fn sunday_to_sunday_is_sunday_alone() {
        let days = |e: &str| next(e, "2026-11-22 13:00:00", 3); // a Sunday afternoon
        assert_eq!(
            days("0 12 * * SUN-SUN"),
            [
                "Sun 2026-11-29 12:00:00",
                "Sun 2026-12-06 12:00:00",
                "Sun 2026-12-13 12:00:00"
            ]
        );
        assert_eq!(days("0 12 * * SUN-SUN/2"), days("0 12 * * SUN"));
        assert_eq!(
            days("0 12 * * FRI-SUN"),
            [
                "Fri 2026-11-27 12:00:00",
                "Sat 2026-11-28 12:00:00",
                "Sun 2026-11-29 12:00:00"
            ]
        );
        assert_eq!(
            days("0 12 * * SAT-SUN")[..2],
            ["Sat 2026-11-28 12:00:00", "Sun 2026-11-29 12:00:00"]
        );
        assert_eq!(days("0 12 * * 7"), days("0 12 * * 0"));
        // Only `SUN-SUN` is Sunday alone: `SUN-7` and `0-7` are the whole week.
        assert_eq!(days("0 12 * * SUN-7"), days("0 12 * * *"));
        assert_eq!(days("0 12 * * SUN-7/3"), days("0 12 * * 0-7/3"));
    }

    #[test]
    fn a_word_in_a_field_of_names_is_called_an_unknown_name() {
        let e = parse("0 0 * * FOO").unwrap_err();
        assert!(
            e.message.contains("neither a number nor a name"),
            "{}",
            e.message
        );
        let e = parse("0 0 * BAR *").unwrap_err();
        assert!(e.message.contains("(it takes JAN-DEC)"), "{}", e.message);
        let e = parse("0 FOO * * *").unwrap_err();
        assert!(e.message.contains("is not a number"), "{}", e.message);
    }

    #[test]
    fn names_only_where_a_field_takes_them() {
        for (expr, field) in [
            ("MON * * * *", (0, 3)),
            ("0 0 * MON *", (6, 3)),
            ("0 0 * * JAN", (8, 3)),
        ] {
            let p = problem(expr);
            assert_eq!(p.field, Some(field), "{expr}: {p:?}");
        }
        assert!(problem("MON * * * *")
            .message
            .contains("minute field `MON`: this field takes numbers only"));
        assert!(problem("0 0 * * JAN").message.contains("SUN-SAT"));
        assert!(problem("0 0 * * MONDAY").message.contains("not a name"));
    }

    #[test]
    fn expressions_that_can_never_fire_are_refused() {
        let p = problem("0 0 30 2 *");
        assert!(p.message.contains("February never has day 30"), "{p:?}");
        assert_eq!(p.field, Some((4, 2)));
        let p = problem("0 0 31 4,6,9,11 *");
        assert!(
            p.message
                .contains("none of April, June, September, November has day 31"),
            "{p:?}"
        );
        // 29 February comes in leap years; a weekday field makes the day fields an OR.
        assert!(parse("0 0 29 2 *").is_ok());
        assert!(parse("0 0 30 2 MON").is_ok());
    }

    #[test]
    fn quartz_syntax_and_garbage_are_refused_in_our_words() {
        for expr in ["0 0 L * *", "0 0 15W * *", "0 0 * * 5#3", "0 0 * * +MON"] {
            assert!(problem(expr).message.contains("Quartz"), "{expr}");
        }
        assert!(problem("0 25 * * *")
            .message
            .contains("25 is out of range (0-23)"));
        assert!(problem("*/0 * * * *").message.contains("step of 0"));
        assert!(problem("5-1 * * * *").message.contains("backwards"));
        assert!(problem("* * *").message.contains("5 or 6 fields"));
        assert_eq!(parse("0 0 ? * ?").unwrap(), parse("0 0 * * *").unwrap());
    }

    #[test]
    fn steps_ranges_and_day_fields() {
        assert_eq!(
            next("5/20 * * * *", "2026-01-01 00:00:00", 3)[2],
            "Thu 2026-01-01 00:45:00"
        );
        assert_eq!(
            next("0 9-17/4 * * *", "2026-01-01 00:00:00", 3)[2],
            "Thu 2026-01-01 17:00:00"
        );
        // Both day fields restricted: either matches (the 13th, and Fridays).
        let both = next("0 0 13 * FRI", "2026-02-01 00:00:00", 4);
        assert_eq!(
            both,
            [
                "Fri 2026-02-06 00:00:00",
                "Fri 2026-02-13 00:00:00",
                "Fri 2026-02-20 00:00:00",
                "Fri 2026-02-27 00:00:00"
            ]
        );
        assert_eq!(
            next("0 0 13 * FRI", "2026-03-01 00:00:00", 3)[1],
            "Fri 2026-03-13 00:00:00"
        );
        assert_eq!(
            next("0 0 29 2 *", "2026-01-01 00:00:00", 1),
            ["Tue 2028-02-29 00:00:00"]
        );
        assert_eq!(
            next("30 59 23 31 12 *", "2026-12-31 23:59:30", 1),
            ["Fri 2027-12-31 23:59:30"]
        );
    }

    /// The matcher agrees with croner (the reference) wherever croner's reading is the README's: plain fields,
    /// no Sunday-ending ranges.
    #[test]
    fn agrees_with_croner_on_random_expressions() {
        use proptest::prelude::*;
        let field = |lo: u32, hi: u32| {
            prop_oneof![
                Just("*".to_string()),
                (lo..=hi).prop_map(|v| v.to_string()),
                (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
                (1u32..12).prop_map(|s| format!("*/{s}")),
                (lo..=hi, lo..=hi).prop_map(|(a, b)| format!("{a},{b}")),
            ]
        };
        let exprs = (
            field(0, 59),
            field(0, 23),
            field(1, 28),
            field(1, 12),
            field(0, 6),
        )
            .prop_map(|(m, h, d, mo, w)| format!("{m} {h} {d} {mo} {w}"));
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(300));
        runner
            .run(&(exprs, 0i64..2_000_000_000), |(expr, start)| {
                let ours = parse(&expr).unwrap();
                let theirs = parser.parse(&expr).unwrap();
                let mut t = chrono::DateTime::from_timestamp(start, 0)
                    .unwrap()
                    .naive_utc();
                for _ in 0..5 {
                    let a = ours.next_after(t).unwrap();
                    let mut b = theirs.find_next_occurrence(&t, false).unwrap();
                    if b <= t {
                        b = theirs
                            .find_next_occurrence(&(t + Duration::seconds(1)), true)
                            .unwrap();
                    }
                    prop_assert_eq!(a, b, "{} after {}", expr, t);
                    t = a;
                }
                Ok(())
            })
            .unwrap();
    }
}
