//! Where events and run output go: plain prefixed lines for people, or the JSON event stream.
//!
//! Everything is written by one printer thread, fed through a queue: the dispatcher hands a line over and goes
//! on, so a slow terminal or a job flooding its output never delays a timer or a spawn. Lines are whole when
//! queued, so lines of different runs never interleave inside a line, and one queue keeps their order (a run's
//! output before its exit). Output lines of runs take room in a bounded budget, so a flood waits for the printer
//! (the run's pipe fills and the run blocks, as with a slow terminal) instead of growing the runner's memory;
//! the dispatcher's own events never wait. With a live view, lines are printed above it (indicatif's `suspend`).

use std::io::Write;
use std::sync::mpsc;
use std::sync::Arc;

use crate::event::{Event, Record};
use crate::output::escape_controls;

/// How a command prints for machines or people: `text` (people) or `json` (one JSON object a line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Text,
    Json,
}

/// Bytes of run output that may wait for the printer before pumps wait (about 4 MiB).
const OUTPUT_BUDGET: usize = 4 << 20;

enum Line {
    Stderr(Vec<u8>),
    /// Output of a run: `permits` of the budget go back once it is written.
    Output {
        stderr: bool,
        text: Vec<u8>,
        permits: u32,
    },
    Flush(mpsc::SyncSender<()>),
}

pub struct Reporter {
    mode: Mode,
    /// A status area is shown: routine starts and exits are left to it.
    live: bool,
    tx: mpsc::Sender<Line>,
    budget: Arc<tokio::sync::Semaphore>,
    /// The events as JSON records, for the API's event stream (`GET /api/v1/events`): written only while
    /// someone listens, and never waited on (a slow listener loses the oldest and is told so).
    tap: tokio::sync::broadcast::Sender<Arc<str>>,
}

/// Events a listener of the tap may fall behind by before it loses the oldest.
const TAP_BACKLOG: usize = 4096;

impl Reporter {
    pub fn new(mode: Mode, live: Option<indicatif::MultiProgress>) -> Reporter {
        let (tx, rx) = mpsc::channel();
        let budget = Arc::new(tokio::sync::Semaphore::new(OUTPUT_BUDGET));
        let printer_budget = budget.clone();
        let shown = live.is_some();
        std::thread::Builder::new()
            .name("flowrun-printer".into())
            .spawn(move || print_lines(rx, live, printer_budget))
            .expect("the printer thread starts");
        Reporter {
            mode,
            live: shown,
            tx,
            budget,
            tap: tokio::sync::broadcast::channel(TAP_BACKLOG).0,
        }
    }

    /// One line of a run's output. Waits (asynchronously) while the printer is a budget's worth behind.
    pub async fn output(&self, job: &str, run: u64, stream: &'static str, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\n', '\r']);
        let (bytes, stderr) = match self.mode {
            Mode::Text => {
                let mut bytes = Vec::with_capacity(job.len() + text.len() + 16);
                let _ = writeln!(bytes, "{job}#{run} | {text}");
                (bytes, false)
            }
            Mode::Json => (Record::output(job, run, stream, text).to_line(), true),
        };
        let permits = bytes.len().min(OUTPUT_BUDGET) as u32;
        match self.budget.acquire_many(permits).await {
            // The permits travel with the line; the printer gives them back once it is written.
            Ok(p) => p.forget(),
            Err(_) => return,
        }
        let _ = self.tx.send(Line::Output {
            stderr,
            text: bytes,
            permits,
        });
    }

    /// An event: always in JSON mode; in text mode its notice on stderr, if it has one.
    /// Control characters in a notice are escaped: a job's command or error text must not drive the terminal.
    pub fn event(&self, event: &Event) {
        if self.tap.receiver_count() > 0 {
            let record = event.record(chrono::Utc::now());
            if let Ok(json) = serde_json::to_string(&record) {
                let _ = self.tap.send(json.into());
            }
        }
        match self.mode {
            Mode::Json => {
                let line = event.record(chrono::Utc::now()).to_line();
                let _ = self.tx.send(Line::Stderr(line));
            }
            Mode::Text => {
                if let Some(text) = event.notice(self.live) {
                    let line = format!("flowrun: {}\n", escape_controls(&text));
                    let _ = self.tx.send(Line::Stderr(line.into_bytes()));
                }
            }
        }
    }

    /// Every event from now on, as its JSON record (the API's event stream).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<str>> {
        self.tap.subscribe()
    }

    /// A runner problem outside any run.
    pub fn notice(&self, text: &str) {
        self.event(&Event::Notice {
            text: text.to_string(),
        });
    }

    /// Text printed as is at the end (the summary table) in text mode.
    pub fn text(&self, text: &str) {
        if self.mode == Mode::Text {
            let _ = self.tx.send(Line::Stderr(text.as_bytes().to_vec()));
        }
    }

    /// Wait until everything queued so far is written.
    pub fn flush(&self) {
        let (tx, rx) = mpsc::sync_channel(1);
        if self.tx.send(Line::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

/// The printer thread: writes what is queued, in order, in as few system calls as it can (everything waiting is
/// written at once); stdout is flushed before each stderr line so notices follow the output they concern.
fn print_lines(
    rx: mpsc::Receiver<Line>,
    live: Option<indicatif::MultiProgress>,
    budget: Arc<tokio::sync::Semaphore>,
) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout());
    let mut err = std::io::BufWriter::with_capacity(16 * 1024, std::io::stderr());
    let mut batch = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(line) => batch.push(line),
                Err(_) => break,
            }
        }
        let mut write_all = || {
            let mut returned = 0usize;
            let mut flushes = Vec::new();
            for line in batch.drain(..) {
                match line {
                    Line::Output {
                        stderr: false,
                        text,
                        permits,
                    } => {
                        let _ = out.write_all(&text);
                        returned += permits as usize;
                    }
                    Line::Output {
                        stderr: true,
                        text,
                        permits,
                    } => {
                        let _ = out.flush();
                        let _ = err.write_all(&text);
                        returned += permits as usize;
                    }
                    Line::Stderr(text) => {
                        let _ = out.flush();
                        let _ = err.write_all(&text);
                    }
                    Line::Flush(done) => flushes.push(done),
                }
            }
            let _ = out.flush();
            let _ = err.flush();
            budget.add_permits(returned);
            flushes
        };
        let flushes = match &live {
            Some(multi) => multi.suspend(write_all),
            None => write_all(),
        };
        for done in flushes {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_in_notices() {
        assert_eq!(escape_controls("plain\ttext"), "plain\ttext");
        assert_eq!(escape_controls("a\0b\x1b[31m"), "a\\u{0}b\\u{1b}[31m");
        assert_eq!(escape_controls("x\u{202e}y"), "x\\u{202e}y");
    }
}
