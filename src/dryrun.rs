//! `--dry-run`: the validated plan as a person reads it (jobs, triggers with next fire times, executors, wiring).

use chrono::{DateTime, SecondsFormat, Utc};

use crate::plan::{Plan, Trigger};

pub fn describe(plan: &Plan, now: DateTime<Utc>) -> String {
    let mut out = format!(
        "workflow {} ({})\n\nexecutors:\n",
        plan.name,
        plan.path.display()
    );
    for e in &plan.executors {
        out.push_str(&format!("  {} (max_workers {})\n", e.name, e.max_workers));
    }
    if !plan.channels.is_empty() {
        out.push_str("\nchannels:\n");
        for c in &plan.channels {
            let names = |ids: &[usize]| {
                ids.iter()
                    .map(|&j| plan.jobs[j].name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            out.push_str(&format!(
                "  {} ({}, capacity {}): {} -> {}\n",
                c.name,
                c.kind.as_str(),
                c.capacity,
                names(&c.writers),
                names(&c.readers)
            ));
        }
    }
    out.push_str("\njobs:\n");
    for (j, job) in plan.jobs.iter().enumerate() {
        out.push_str(&format!("  {}: {}\n", job.name, job.command.display()));
        out.push_str(&format!(
            "    executor {}, max_instances {}, cwd {}\n",
            plan.executors[job.executor].name,
            job.max_instances,
            job.cwd.display()
        ));
        for t in &job.triggers {
            let text = match t {
                Trigger::Start => "start".to_string(),
                Trigger::Time { rule, .. } => rule.describe(),
                Trigger::After { jobs, status } => format!(
                    "after {} ({status:?})",
                    jobs.iter()
                        .map(|&u| plan.jobs[u].name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
                .to_lowercase(),
                Trigger::Each { channel, batch } => {
                    format!("each {} (batch {batch})", plan.channels[*channel].name)
                }
            };
            out.push_str(&format!("    trigger: {text}\n"));
        }
        let next = crate::app::next_fires(plan, j, now, 3);
        if !next.is_empty() {
            let times: Vec<String> = next
                .iter()
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
                .collect();
            out.push_str(&format!("    next: {}\n", times.join(", ")));
        }
        if let Some(c) = job.stdin {
            out.push_str(&format!("    stdin: {}\n", plan.channels[c].name));
        }
        if let Some(c) = job.stdout {
            out.push_str(&format!("    stdout: {}\n", plan.channels[c].name));
        }
    }
    out
}
