//! The one place a command gets its plan: the file read and validated, its diagnostics printed (as text, or as
//! `diagnostic` events in a `--log-format json` stream), or nothing printed for a command that only peeks.

use chrono::Utc;
use std::io::Write;
use std::path::Path;

use crate::diagnostics::render;
use crate::error::Error;
use crate::event::Record;
use crate::output::color_on_stderr;
use crate::plan::Plan;
use crate::text::source::Source;
use crate::validate::validate;

/// Read and validate a workflow for a command that needs a plan; its diagnostics are printed.
pub fn load_plan(file: &Path) -> Result<Plan, Error> {
    load_plan_as(file, false)
}

/// As [`load_plan`]; with `json`, problems are `diagnostic` events on stderr (one JSON object a line), so a
/// `--log-format json` stream stays machine-readable from its first line.
pub fn load_plan_as(file: &Path, json: bool) -> Result<Plan, Error> {
    let source = Source::read(file).map_err(|e| Error::Unreadable {
        message: e.to_string(),
        json,
    })?;
    // Validation runs on a thread of its own: its garbage (the spanned tree, the document, the rules' tables, tens
    // of MiB for a large file) is then made in that thread's malloc arena, interleaved with nothing that lives on,
    // and goes back whole; the plan is copied out into the main heap, compact. Built in place, the plan kept
    // pages of the freed tree resident (10,000 jobs: 18 MiB of heap for 11 MiB of live data).
    let mut validated = std::thread::scope(|scope| {
        scope
            .spawn(|| validate(&source, Utc::now()))
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    // A deep copy, made here on the main thread (the original is freed into the validation arena).
    validated.plan = validated.plan.clone();
    // Hints say what validation could not check: `flowrun validate` shows them; every start or `status` would
    // only repeat them.
    validated
        .diagnostics
        .retain(|d| d.severity() != crate::diagnostics::Severity::Hint);
    if json {
        for d in &validated.diagnostics {
            let at = source.line_col(d.span.offset);
            let reason = format!(
                "{} {}: {} ({}:{}:{})",
                d.severity().as_str(),
                d.code.as_str(),
                d.message,
                source.name(),
                at.line,
                at.column
            );
            let _ = std::io::stderr().write_all(&Record::diagnostic(reason).to_line());
        }
    } else if !validated.diagnostics.is_empty() {
        eprint!(
            "{}",
            render::human(&source, &validated.diagnostics, color_on_stderr())
        );
    }
    let errors = validated.errors();
    match (validated.plan, errors) {
        (Some(plan), _) => Ok(plan),
        (None, 0) => Err(Error::Setup(format!(
            "{}: no diagnostic, yet no plan could be built from it (a bug in flowrun; please report it)",
            file.display()
        ))),
        (None, _) => Err(Error::Invalid),
    }
}

/// Validate a workflow without printing anything: its plan, if it is valid.
pub fn load_plan_quietly(file: &Path) -> Option<Plan> {
    let source = Source::read(file).ok()?;
    validate(&source, Utc::now()).plan
}
