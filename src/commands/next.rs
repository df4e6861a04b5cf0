//! `flowrun next FILE [JOB...]`: the next fire times, pure maths from now (or `--from`). Each time is shown in the
//! zone of the trigger that fires it (its `timezone`, else the system's), with the offset: a cron meant for 02:30
//! in Berlin reads 02:30, not 01:30 UTC. JSON has the same instants in RFC 3339 with that offset.

use chrono::Utc;
use std::path::Path;

use crate::error::Error;
use crate::exit;
use crate::plan::Trigger;
use crate::report::Mode;

pub fn next(
    file: &Path,
    jobs: &[String],
    count: usize,
    from: Option<&str>,
    format: Mode,
) -> Result<i32, Error> {
    let plan = crate::load::load_plan(file)?;
    let from = match from {
        None => Utc::now(),
        Some(text) => match crate::values::parse_datetime(text) {
            Ok(dt) => dt.resolve(crate::values::system_zone()),
            Err(e) => return Err(Error::usage(format!("--from: {e}"))),
        },
    };
    for name in jobs {
        if plan.job_id(name).is_none() {
            let names: Vec<&str> = plan.jobs.iter().map(|j| j.name.as_str()).collect();
            return Err(Error::Usage {
                message: format!("`{name}` is not a job of {}", file.display()),
                help: Some(crate::diagnostics::suggestion_help(name, &names, "job")),
            });
        }
    }
    let selected: Vec<usize> = (0..plan.jobs.len())
        .filter(|&j| plan.jobs[j].has_time_trigger())
        .filter(|&j| jobs.is_empty() || jobs.contains(&plan.jobs[j].name))
        .collect();
    match format {
        Mode::Json => {
            let mut map = serde_json::Map::new();
            for &j in &selected {
                let times: Vec<_> = plan
                    .next_fires(j, from, count)
                    .into_iter()
                    .map(|(t, zone)| crate::timefmt::rfc3339_in(t, zone))
                    .collect();
                map.insert(plan.jobs[j].name.clone(), times.into());
            }
            let mut text = serde_json::to_string_pretty(&map).expect("JSON values serialize");
            text.push('\n');
            crate::output::print_out(&text);
        }
        Mode::Text => {
            let mut text = String::new();
            for &j in &selected {
                let job = &plan.jobs[j];
                let rules: Vec<String> = job
                    .triggers
                    .iter()
                    .filter_map(|t| match t {
                        Trigger::Time { rule, .. } => Some(rule.describe()),
                        _ => None,
                    })
                    .collect();
                text.push_str(&format!("{} ({})\n", job.name, rules.join(", ")));
                for (t, zone) in plan.next_fires(j, from, count) {
                    text.push_str(&format!("  {}\n", crate::timefmt::zoned(t, zone)));
                }
            }
            if selected.is_empty() {
                text.push_str("no job has a time trigger (cron, interval or at)\n");
            }
            crate::output::print_out(&text);
        }
    }
    Ok(exit::OK)
}
