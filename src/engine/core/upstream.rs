//! `FLOWRUN_UPSTREAM`: the runs that completed a join, as JSON, bounded so a program can still be started.

use crate::engine::core::runs::Run;
use crate::plan::Job;

/// One run as `FLOWRUN_UPSTREAM` describes it to a run its milestone fired.
pub(super) fn upstream_entry(
    job: &Job,
    run: &Run,
    status: &str,
    code: Option<i32>,
    signal: Option<&str>,
    log: Option<String>,
) -> serde_json::Value {
    serde_json::json!({
        "job": job.name,
        "run": run.number,
        "status": status,
        "code": code,
        "signal": signal,
        "log": log,
    })
}

/// How much of `FLOWRUN_UPSTREAM` is given: Linux refuses to start a program with one environment string over
/// 128 KiB (`MAX_ARG_STRLEN`, "Argument list too long"), and the rest of the environment needs room too.
const UPSTREAM_MAX: usize = 96 * 1024;

/// `FLOWRUN_UPSTREAM`'s JSON array: whole entries while they fit in [`UPSTREAM_MAX`], then `{"omitted": N}` for the
/// rest; and N.
pub(super) fn upstream_text(runs: Vec<serde_json::Value>) -> (String, usize) {
    let total = runs.len();
    let mut text = String::from("[");
    let mut kept = 0;
    for entry in &runs {
        let entry = entry.to_string();
        // Room for a comma, the omitted entry and the closing bracket.
        if text.len() + entry.len() + 40 > UPSTREAM_MAX {
            break;
        }
        if kept > 0 {
            text.push(',');
        }
        text.push_str(&entry);
        kept += 1;
    }
    let omitted = total - kept;
    if omitted > 0 {
        if kept > 0 {
            text.push(',');
        }
        text.push_str(&format!("{{\"omitted\":{omitted}}}"));
    }
    text.push(']');
    (text, omitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_keeps_whole_entries_within_its_bound_and_counts_the_rest() {
        let entry =
            |n: usize| serde_json::json!({ "job": format!("job{n}"), "log": "x".repeat(200) });
        let (text, omitted) = upstream_text((0..3).map(entry).collect());
        assert_eq!(omitted, 0);
        assert_eq!(
            serde_json::from_str::<Vec<serde_json::Value>>(&text)
                .unwrap()
                .len(),
            3
        );
        let (text, omitted) = upstream_text((0..1200).map(entry).collect());
        assert!(text.len() <= UPSTREAM_MAX, "{}", text.len());
        let parsed: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        assert!(omitted > 0 && omitted < 1200);
        assert_eq!(parsed.len(), 1200 - omitted + 1);
        assert_eq!(parsed.last().unwrap()["omitted"], omitted);
        assert_eq!(parsed[0]["job"], "job0");
    }
}
