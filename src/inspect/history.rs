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
    pub state: Option<&'a str>,
    pub format: Mode,
}

pub fn history(file: &Path, args: Args<'_>) -> Result<i32, Error> {
    let now = Utc::now();
    let since = args.since.map(|s| parse_since(s, now)).transpose()?;
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
    match args.format {
        Mode::Json => {
            let mut text = serde_json::to_string_pretty(&rows).expect("rows serialize");
            text.push('\n');
            crate::output::print_out(&text);
        }
        Mode::Text if rows.is_empty() => crate::output::print_out(&match opened.store {
            None => format!(
                "no history yet: no runner has run {} with the state {}\n",
                file.display(),
                opened.dir.display()
            ),
            Some(_) => "no rows match\n".to_string(),
        }),
        Mode::Text => crate::output::print_out(&text(&rows, now, color_on_stdout())),
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

fn text(rows: &[RunRow], now: DateTime<Utc>, color: bool) -> String {
    let zone = crate::values::system_zone();
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let at = r.started.or(r.scheduled).or(r.ended).unwrap_or(now);
            let status = match (r.code, &r.signal) {
                (Some(c), _) => format!("exit {c}"),
                (None, Some(s)) => s.clone(),
                _ => "-".into(),
            };
            let mut note = Vec::new();
            if r.count > 1 {
                note.push(format!("x{}", r.count));
            }
            if r.catch_up {
                note.push("catch-up".to_string());
            }
            if r.attempt > 1 {
                note.push(format!("attempt {}", r.attempt));
            }
            if let Some(reason) = &r.reason {
                note.push(crate::output::escape_controls(reason).into_owned());
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
        })
        .collect();
    table(
        &[
            "WHEN", "JOB", "RUN", "RESULT", "EXIT", "TOOK", "TRIGGER", "NOTE",
        ],
        &lines,
        color,
    )
}
