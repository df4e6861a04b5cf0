//! Where events and run output go: plain prefixed lines for people, or the JSON event stream.
//! Every line is written whole under one lock, so lines of different runs never interleave inside a line.
//! With a live view, lines are printed above it (indicatif's `suspend`).

use std::io::Write;
use std::sync::Mutex;

use crate::event::Event;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Text,
    Json,
}

pub struct Reporter {
    mode: Mode,
    lock: Mutex<()>,
    live: Option<indicatif::MultiProgress>,
}

impl Reporter {
    pub fn new(mode: Mode) -> Reporter {
        Reporter {
            mode,
            lock: Mutex::new(()),
            live: None,
        }
    }

    /// Print through the live view's status area.
    pub fn with_live(mut self, multi: indicatif::MultiProgress) -> Reporter {
        self.live = Some(multi);
        self
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn write(&self, f: impl FnOnce()) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        match &self.live {
            Some(multi) => multi.suspend(f),
            None => f(),
        }
    }

    /// One line of a run's output.
    pub fn output(&self, job: &str, run: u64, stream: &'static str, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\n', '\r']);
        match self.mode {
            Mode::Text => self.write(|| {
                let _ = writeln!(std::io::stdout().lock(), "{job}#{run} | {text}");
            }),
            Mode::Json => {
                let mut e = Event::new("output").job(job, Some(run));
                e.stream = Some(stream);
                e.line = Some(text.to_string());
                self.emit(&e);
            }
        }
    }

    /// An event: always in JSON mode; in text mode as a short line on stderr when `text` is given.
    pub fn event(&self, event: &Event, text: Option<String>) {
        match self.mode {
            Mode::Json => self.emit(event),
            Mode::Text => {
                if let Some(text) = text {
                    self.write(|| {
                        let _ = std::io::stdout().lock().flush();
                        let _ = writeln!(std::io::stderr().lock(), "flowrun: {text}");
                    });
                }
            }
        }
    }

    fn emit(&self, event: &Event) {
        let mut line = serde_json::to_vec(event).expect("events serialize");
        line.push(b'\n');
        self.write(|| {
            let _ = std::io::stderr().lock().write_all(&line);
        });
    }

    /// Text printed as is at the end (the summary table) in text mode.
    pub fn text(&self, text: &str) {
        if self.mode == Mode::Text {
            self.write(|| {
                let _ = std::io::stdout().lock().flush();
                let _ = std::io::stderr().lock().write_all(text.as_bytes());
            });
        }
    }
}
