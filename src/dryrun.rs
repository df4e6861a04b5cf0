//! `--dry-run`: the validated plan as a person reads it (jobs, triggers with next fire times, executors, wiring).

use chrono::{DateTime, Utc};

use crate::plan::Plan;
use crate::values::format_duration;

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
        let command = job.command.display();
        let command = command.trim_end();
        if command.contains('\n') {
            // A multi-line script is shown as a block under the job's name.
            out.push_str(&format!("  {}:\n", job.name));
            for line in command.lines() {
                out.push_str(&format!("      | {line}\n"));
            }
        } else {
            out.push_str(&format!("  {}: {command}\n", job.name));
        }
        out.push_str(&format!(
            "    executor {}, max_instances {}, cwd {}\n",
            plan.executors[job.executor].name,
            job.max_instances,
            job.cwd.display()
        ));
        for t in &job.triggers {
            let jitter = match t {
                crate::plan::Trigger::Time { jitter, .. } if !jitter.is_zero() => {
                    format!(", jitter up to {}", format_duration(*jitter))
                }
                _ => String::new(),
            };
            out.push_str(&format!("    trigger: {}{jitter}\n", plan.trigger_text(t)));
        }
        if job.has_time_trigger() {
            out.push_str(&format!(
                "    misfire_grace {}, {}\n",
                format_duration(job.misfire_grace),
                if job.coalesce {
                    "coalesce"
                } else {
                    "no coalescing"
                }
            ));
        }
        let next = plan.next_fires(j, now, 3);
        if let Some(&(_, first)) = next.first() {
            // In the zone of the trigger that fires each; named once when they share it (as they mostly do).
            let one_zone = next.iter().all(|(_, zone)| *zone == first);
            let times: Vec<String> = next
                .iter()
                .map(|&(t, zone)| match one_zone {
                    true => crate::timefmt::wall(t, zone),
                    false => crate::timefmt::zoned(t, zone),
                })
                .collect();
            let named = match one_zone {
                true => format!(" ({})", first.name()),
                false => String::new(),
            };
            out.push_str(&format!("    next: {}{named}\n", times.join(", ")));
        }
        if let Some(c) = job.stdin {
            out.push_str(&format!("    stdin: {}\n", plan.channels[c].name));
        }
        if let Some(c) = job.stdout {
            out.push_str(&format!("    stdout: {}\n", plan.channels[c].name));
        }
        if let Some(c) = job.dead_letter {
            out.push_str(&format!("    dead_letter: {}\n", plan.channels[c].name));
        }
        let mut limits = Vec::new();
        if let Some(t) = job.timeout {
            limits.push(format!("timeout {}", format_duration(t)));
        }
        if let Some(r) = &job.retry {
            limits.push(format!(
                "retry {} (backoff {})",
                r.attempts,
                format_duration(r.backoff)
            ));
        }
        match job.restart {
            crate::plan::Restart::Never => {}
            crate::plan::Restart::OnFailure => limits.push("restart on-failure".into()),
            crate::plan::Restart::Always => limits.push("restart always".into()),
        }
        if !limits.is_empty() {
            out.push_str(&format!("    {}\n", limits.join(", ")));
        }
    }
    out
}
