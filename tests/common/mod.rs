//! Reading the runner's JSON event log in tests, shared by the test binaries.
// Each test binary uses a part of this module.
#![allow(dead_code)]

use serde_json::Value;

/// Every line of stderr as a JSON event (the whole stream must be JSON).
pub fn events(stderr: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event: {l:?}: {e}")))
        .collect()
}

/// The summary carried by `runner.stop`.
pub fn summary(events: &[Value]) -> &Value {
    &events
        .iter()
        .find(|e| e["event"] == "runner.stop")
        .expect("a runner.stop event")["summary"]
}

/// The output lines of a job, in order.
pub fn output_lines<'a>(events: &'a [Value], job: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter(|e| e["event"] == "output" && e["job"] == job)
        .map(|e| e["line"].as_str().unwrap())
        .collect()
}

/// A channel's (in, out, left) from the summary.
pub fn channel(events: &[Value], name: &str) -> (u64, u64, u64) {
    let c = &summary(events)["channels"][name];
    (
        c["in"].as_u64().unwrap(),
        c["out"].as_u64().unwrap(),
        c["left"].as_u64().unwrap(),
    )
}

/// Whether a process is alive; a zombie runs nothing and holds nothing but a table entry, so it counts as dead.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}
