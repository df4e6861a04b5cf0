//! The commands that read a workflow's state without running it (SPEC §4): `status`, `history`, `logs`.

mod cluster;
mod history;
mod logs;
mod status;

pub use cluster::{logs as cluster_logs, status as cluster_status};
pub use history::{history, Args as HistoryArgs};
pub use logs::logs;
pub use status::status;

use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::plan::Plan;
use crate::store::{dir, SqliteStore};

/// A workflow, its state directory, and its store when a runner ever wrote one.
struct Opened {
    plan: Plan,
    dir: PathBuf,
    store: Option<SqliteStore>,
}

impl Opened {
    /// A job of the file, or one the history still has (since renamed or removed); else a usage error with the
    /// nearest name.
    fn known_job(&self, file: &Path, job: &str) -> Result<(), Error> {
        let in_history = self.store.as_ref().is_some_and(|s| s.has_job(job));
        if self.plan.job_id(job).is_some() || in_history {
            return Ok(());
        }
        let names: Vec<&str> = self.plan.jobs.iter().map(|j| j.name.as_str()).collect();
        Err(Error::Usage {
            message: format!("`{job}` is not a job of {}", file.display()),
            help: Some(crate::diagnostics::suggestion_help(job, &names, "job")),
        })
    }
}

/// Read the workflow (for its name and jobs) and open its state for reading.
fn open(file: &Path, state: Option<&str>) -> Result<Opened, Error> {
    let plan = crate::load::load_plan(file)?;
    let choice = dir::choose(state, file, &plan.name);
    let Some(dir) = choice.path() else {
        return Err(Error::Usage {
            message: "there is no state to read with --state none (or FLOWRUN_STATE=none)".into(),
            help: Some(
                "give the --state DIR the runner used, or leave it out for the default place"
                    .into(),
            ),
        });
    };
    if let dir::Choice::Given(given) = &choice {
        if !given.exists() {
            return Err(Error::Usage {
                message: format!("there is no state directory {}", given.display()),
                help: Some("give the --state DIR the runner used (or FLOWRUN_STATE)".into()),
            });
        }
    }
    // A state that exists but cannot be read is said, not shown as "never run".
    if let Err(e) = std::fs::read_dir(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(Error::Setup(format!(
                "the state directory {} cannot be read: {e}",
                dir.display()
            )));
        }
    }
    let store = SqliteStore::open_read(dir).map_err(Error::from)?;
    Ok(Opened {
        dir: dir.to_path_buf(),
        plan,
        store,
    })
}

/// Columns aligned by their display width (colour codes take none), two spaces apart; the last column is not
/// padded.
fn table(header: &[&str], rows: &[Vec<String>], color: bool) -> String {
    let width = |s: &str| console::measure_text_width(s);
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(width(cell));
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        let cells: Vec<&str> = cells.collect();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < cells.len() {
                out.push_str(&" ".repeat(widths[i] - width(cell) + 2));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    };
    let head = line(&mut header.iter().copied());
    let mut out = match color {
        true => {
            console::style(head.trim_end())
                .bold()
                .force_styling(true)
                .to_string()
                + "\n"
        }
        false => head,
    };
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// An outcome word, coloured on a terminal: green for success, red for failures, yellow for the rest.
fn paint_outcome(outcome: crate::store::Outcome, color: bool) -> String {
    use crate::store::Outcome;
    let text = outcome.as_str();
    if !color {
        return text.to_string();
    }
    let style = match outcome {
        Outcome::Succeeded => console::Style::new().green(),
        o if o.is_failure() => console::Style::new().red(),
        Outcome::Running => console::Style::new().cyan(),
        _ => console::Style::new().yellow(),
    };
    style.force_styling(true).apply_to(text).to_string()
}
