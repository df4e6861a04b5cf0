//! A run's log file, `DIR/JOB/RUN.log`: a header line naming the run and its command, the run's unwired output,
//! a footer with how it ended. Made at the run's first line of output (a run that prints nothing leaves no
//! file: thousands of quiet `each` runs cost no file each), by the task that pumps the output, not the
//! dispatcher; opened for appending, so an existing file is never cut.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::report::Reporter;

/// A log could not be written, and that was said: the next failures are not, until a log is written again.
static FAILING: AtomicBool = AtomicBool::new(false);

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
        (run, attempt): (u64, u32),
        scheduled: &str,
        reporter: Arc<Reporter>,
    ) -> RunLog {
        // A one-line command on the header line; a script as `#   | line` lines under it. The tries of a run
        // share its file (appended), each under a header of its own.
        let text = job.command.display();
        let try_of = match attempt {
            1 => String::new(),
            n => format!(" try {n}"),
        };
        let first = format!("# {}#{run}{try_of} scheduled {scheduled}:", job.name);
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
            let made = open_private(&self.path)
                .and_then(|mut f| f.write_all(self.header.as_bytes()).map(|_| f));
            *state = match made {
                Ok(f) => {
                    if FAILING.swap(false, Ordering::Relaxed) {
                        self.reporter.notice("run logs are written again");
                    }
                    Opened::Open(f)
                }
                Err(e) => {
                    // Once while they fail (a full disk would say it of every run that prints).
                    if !FAILING.swap(true, Ordering::Relaxed) {
                        self.reporter.notice(&format!(
                            "cannot write the log {}: {e} (logs that cannot be written are not said again until one is)",
                            self.path.display()
                        ));
                    }
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

/// A log file, `ROOT/JOB/RUN.log`, opened for appending: its folders made 0700 (the job's folder must be a real
/// folder of the runner's user, not a symlink), the file 0600 and never reached through a symlink (a planted
/// `1.log -> /etc/...` would get the run's output).
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
    let job_dir = path.parent().unwrap_or(Path::new("."));
    // The root was made (or checked) at the start; one swapped for a symlink since is refused.
    if let Some(root) = job_dir.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)?;
        if std::fs::symlink_metadata(root)?.file_type().is_symlink() {
            return Err(std::io::Error::other(format!(
                "{} is a symlink: no log is written through it",
                root.display()
            )));
        }
    }
    crate::store::dir::private_dir(job_dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    // SAFETY: geteuid has no preconditions.
    if !meta.is_file() || meta.uid() != unsafe { libc::geteuid() } {
        return Err(std::io::Error::other(
            "it is not a regular file of this runner's user: it is left alone",
        ));
    }
    Ok(file)
}
