//! The public vocabulary of a run: events (the JSON log of SPEC §3, one flat object per line) and the summary.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Default)]
pub struct Event {
    pub event: &'static str,
    pub ts: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The try number of a retried run (1 is the first try).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// How many due firings a coalesced run stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coalesced: Option<u64>,
    /// How late the run started after its scheduled time, in microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lateness_us: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
}

pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl Event {
    pub fn new(event: &'static str) -> Event {
        Event {
            event,
            ts: timestamp(Utc::now()),
            ..Event::default()
        }
    }
    pub fn job(mut self, job: &str, run: Option<u64>) -> Event {
        self.job = Some(job.to_string());
        self.run = run;
        self
    }
    pub fn reason(mut self, reason: impl Into<String>) -> Event {
        self.reason = Some(reason.into());
        self
    }
}

#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct JobCounts {
    pub runs: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub skipped: u64,
    pub missed: u64,
}

#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct ChannelCounts {
    #[serde(rename = "in")]
    pub taken_in: u64,
    pub out: u64,
    pub left: u64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Summary {
    pub jobs: BTreeMap<String, JobCounts>,
    pub channels: BTreeMap<String, ChannelCounts>,
    /// Messages of `each` runs that failed their last attempt with no `dead_letter` to go to.
    #[serde(skip_serializing_if = "is_zero")]
    pub failed_messages: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Summary {
    /// The summary as a small table for people; headers bold and failures red with `color`.
    pub fn table(&self, color: bool) -> String {
        let paint = |text: String, code: &str| {
            if color {
                format!("\x1b[{code}m{text}\x1b[0m")
            } else {
                text
            }
        };
        let mut out = String::new();
        let width = self
            .jobs
            .keys()
            .chain(self.channels.keys())
            .map(|k| k.len())
            .max()
            .unwrap_or(3)
            .max(7);
        let header = format!(
            "{:<width$}  {:>8} {:>9} {:>7} {:>7} {:>7}",
            "job", "runs", "succeeded", "failed", "skipped", "missed"
        );
        out.push_str(&paint(header, "1"));
        out.push('\n');
        for (name, c) in &self.jobs {
            let line = format!(
                "{:<width$}  {:>8} {:>9} {:>7} {:>7} {:>7}",
                name, c.runs, c.succeeded, c.failed, c.skipped, c.missed
            );
            out.push_str(&if c.failed > 0 {
                paint(line, "31")
            } else {
                line
            });
            out.push('\n');
        }
        if !self.channels.is_empty() {
            out.push_str(&format!(
                "{:<width$}  {:>8} {:>9} {:>7}\n",
                "channel", "in", "out", "left"
            ));
            for (name, c) in &self.channels {
                out.push_str(&format!(
                    "{:<width$}  {:>8} {:>9} {:>7}\n",
                    name, c.taken_in, c.out, c.left
                ));
            }
        }
        if self.failed_messages > 0 {
            out.push_str(&format!(
                "{} message(s) failed their last attempt and had no dead_letter\n",
                self.failed_messages
            ));
        }
        out
    }
}
