//! `flowrun history FILE [JOB...]`: runs, skips and misses, newest first.

use chrono::{DateTime, Utc};
use std::path::Path;

use super::{open, paint_outcome, table};
use crate::error::Error;
use crate::output::color_on_stdout;
use crate::report::Mode;
use crate::store::{Query, RunRow, Store};
use crate::timefmt;

pub struct Args<'a> {
    pub jobs: &'a [String],
    pub limit: u32,
    pub since: Option<&'a str>,
    pub failed: bool,
    /// Each run's tries beneath it.
    pub tries: bool,
    pub state: Option<&'a str>,
    pub format: Mode,
    /// The cluster's store to read instead of the state (`--store`), and the cluster's name.
    pub store: Option<String>,
    pub cluster: Option<&'a str>,
}

pub fn history(file: &Path, args: Args<'_>) -> Result<i32, Error> {
    let now = Utc::now();
    let since = args.since.map(|s| parse_since(s, now)).transpose()?;
    if let Some(url) = &args.store {
        let query = Query {
            jobs: args.jobs.to_vec(),
            limit: args.limit as usize,
            since,
            failed: args.failed,
            run: None,
        };
        let rows = super::cluster::history(file, url, args.cluster, query)?;
        let tries = match args.tries {
            true => super::cluster::tries(file, url, args.cluster, &rows)?,
            false => Vec::new(),
        };
        return print(&rows, &tries, &args, now, "no rows match\n".into());
    }
    let opened = open(file, args.state)?;
    for job in args.jobs {
        opened.known_job(file, job)?;
    }
    let rows = match &opened.store {
        Some(store) => store
            .history(&Query {
                jobs: args.jobs.to_vec(),
                limit: args.limit as usize,
                since,
                failed: args.failed,
                run: None,
            })
            .map_err(Error::from)?,
        None => Vec::new(),
    };
    // A run's tries (its first and its retries), when asked for; a row that is no run (a skip) has none.
    let tries: Vec<Vec<RunRow>> = match (&opened.store, args.tries) {
        (Some(store), true) => rows
            .iter()
            .map(|r| match r.run {
                Some(run) => store.tries(&r.job, run),
                None => Ok(Vec::new()),
            })
            .collect::<Result<_, _>>()
            .map_err(Error::from)?,
        _ => Vec::new(),
    };
    let none = match opened.store {
        None => format!(
            "no history yet: no runner has run {} with the state {}\n",
            file.display(),
            opened.dir.display()
        ),
        Some(_) => "no rows match\n".to_string(),
    };
    print(&rows, &tries, &args, now, none)
}

/// The rows as asked (`none`: what is said of no row).
fn print(
    rows: &[RunRow],
    tries: &[Vec<RunRow>],
    args: &Args<'_>,
    now: DateTime<Utc>,
    none: String,
) -> Result<i32, Error> {
    match args.format {
        Mode::Json if args.tries => {
            let with: Vec<serde_json::Value> = rows
                .iter()
                .zip(tries)
                .map(|(r, t)| {
                    let mut v = serde_json::to_value(r).expect("rows serialize");
                    v["tries"] = serde_json::to_value(t).expect("tries serialize");
                    v
                })
                .collect();
            let mut text = serde_json::to_string_pretty(&with).expect("rows serialize");
            text.push('\n');
            crate::output::print_out(&text);
        }
        Mode::Json => {
            let mut text = serde_json::to_string_pretty(&rows).expect("rows serialize");
            text.push('\n');
            crate::output::print_out(&text);
        }
        Mode::Text if rows.is_empty() => crate::output::print_out(&none),
        Mode::Text => crate::output::print_out(&text(rows, tries, now, color_on_stdout())),
    }
    Ok(crate::exit::OK)
}

/// `2h`, `7d` (that long ago) or a date-time (RFC 3339, or local in the system zone).
fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, Error> {
    if let Ok(d) = crate::values::parse_duration(text) {
        let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        return Ok(now
            .checked_sub_signed(d)
            .unwrap_or(DateTime::<Utc>::MIN_UTC));
    }
    match crate::values::parse_datetime(text) {
        Ok(dt) => Ok(dt.resolve(crate::values::system_zone())),
        Err(e) => Err(Error::Usage {
            message: format!("--since `{text}`: not a duration nor a date-time ({e})"),
            help: Some("e.g. --since 2h, --since 7d, --since 2026-11-24T18:00:00".into()),
        }),
    }
}

fn text(rows: &[RunRow], tries: &[Vec<RunRow>], now: DateTime<Utc>, color: bool) -> String {
    let zone = crate::values::system_zone();
    let mut lines: Vec<Vec<String>> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        lines.push(row_line(r, now, zone, color));
        // Beneath the run, each of its tries: when, how it ended, how long it took, why.
        for t in tries.get(i).into_iter().flatten() {
            let at = t.started.or(t.ended).unwrap_or(now);
            lines.push(vec![
                format!("  {}", timefmt::local(at, zone)),
                String::new(),
                format!("  try {}", t.attempt),
                paint_outcome(t.outcome, color),
                exit_text(t),
                t.duration_ms
                    .map(timefmt::duration_ms)
                    .unwrap_or_else(|| "-".into()),
                String::new(),
                t.reason
                    .as_deref()
                    .map(|r| crate::output::escape_controls(r).into_owned())
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    table(
        &[
            "WHEN", "JOB", "RUN", "RESULT", "EXIT", "TOOK", "TRIGGER", "NOTE",
        ],
        &lines,
        color,
    )
}

/// `exit 3`, `SIGKILL`, or `-`.
fn exit_text(r: &RunRow) -> String {
    match (r.code, &r.signal) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => s.clone(),
        _ => "-".into(),
    }
}

/// One row of the table.
fn row_line(r: &RunRow, now: DateTime<Utc>, zone: chrono_tz::Tz, color: bool) -> Vec<String> {
    let at = r.started.or(r.scheduled).or(r.ended).unwrap_or(now);
    let status = exit_text(r);
    let mut note = Vec::new();
    if r.count > 1 {
        note.push(format!("x{}", r.count));
    }
    if r.catch_up {
        note.push("catch-up".to_string());
    }
    if r.attempt > 1 {
        note.push(format!("{} tries", r.attempt));
    }
    if let Some(reason) = &r.reason {
        note.push(crate::output::escape_controls(reason).into_owned());
    }
    if let Some(runner) = &r.runner {
        note.push(format!("on {}", crate::output::escape_controls(runner)));
    }
    vec![
        format!(
            "{} ({})",
            timefmt::local(at, zone),
            timefmt::relative(at, now)
        ),
        r.job.clone(),
        r.run.map(|n| format!("#{n}")).unwrap_or_else(|| "-".into()),
        paint_outcome(r.outcome, color),
        status,
        r.duration_ms
            .map(timefmt::duration_ms)
            .unwrap_or_else(|| "-".into()),
        r.trigger.clone(),
        match note.is_empty() {
            true => "-".into(),
            false => note.join("; "),
        },
    ]
}
