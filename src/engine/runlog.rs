//! A run's log file, `DIR/JOB/RUN.log`: a header line naming the run and its command, the run's unwired output,
//! a footer with how it ended. Made at the run's first line of output (a run that prints nothing leaves no
//! file: thousands of quiet `each` runs cost no file each), by the task that pumps the output, not the
//! dispatcher; opened for appending, so an existing file is never cut.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::report::Reporter;

pub(crate) struct RunLog {
    path: PathBuf,
    header: String,
    file: Mutex<Opened>,
    reporter: Arc<Reporter>,
}

enum Opened {
    NotYet,
    Open(std::fs::File),
    /// It could not be written (said once).
    Failed,
}

impl RunLog {
    pub fn new(
        dir: &Path,
        job: &crate::plan::Job,
        run: u64,
        scheduled: &str,
        reporter: Arc<Reporter>,
    ) -> RunLog {
        // A one-line command on the header line; a script as `#   | line` lines under it.
        let text = job.command.display();
        let first = format!("# {}#{run} scheduled {scheduled}:", job.name);
        let header = if text.trim_end().contains('\n') {
            let script: String = text
                .trim_end()
                .lines()
                .map(|l| format!("#   | {l}\n"))
                .collect();
            format!("{first}\n{script}")
        } else {
            format!("{first} {}\n", text.trim())
        };
        RunLog {
            path: dir.join(&job.name).join(format!("{run}.log")),
            header,
            file: Mutex::new(Opened::NotYet),
            reporter,
        }
    }

    /// One line of output (a newline added when it has none).
    pub fn line(&self, line: &[u8]) {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = self.open(&mut file) {
            let _ = f.write_all(line);
            if line.last() != Some(&b'\n') {
                let _ = f.write_all(b"\n");
            }
        }
    }

    /// The footer, when the file exists.
    pub fn footer(&self, text: &str) {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Opened::Open(f) = &mut *file {
            let _ = writeln!(f, "{text}");
        }
    }

    /// The file, once something was written to it.
    pub fn written(&self) -> Option<&Path> {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        matches!(*file, Opened::Open(_)).then_some(self.path.as_path())
    }

    fn open<'a>(&self, state: &'a mut Opened) -> Option<&'a mut std::fs::File> {
        if let Opened::NotYet = state {
            let made = self
                .path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|_| {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&self.path)
                })
                .and_then(|mut f| f.write_all(self.header.as_bytes()).map(|_| f));
            *state = match made {
                Ok(f) => Opened::Open(f),
                Err(e) => {
                    self.reporter.notice(&format!(
                        "cannot write the log {}: {e}",
                        self.path.display()
                    ));
                    Opened::Failed
                }
            };
        }
        match state {
            Opened::Open(f) => Some(f),
            _ => None,
        }
    }
}
