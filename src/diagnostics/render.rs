//! Diagnostics as people and machines read them: miette's graphical report, the JSON document of SPEC §3, and
//! GitHub Actions workflow commands.

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};
use serde_json::json;
use std::fmt;

use crate::diagnostics::{Diagnostic, Severity};
use crate::text::source::Source;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
    Github,
}

/// The diagnostics of one file, or why it could not be read.
pub struct FileReport<'a> {
    pub file: String,
    pub source: Option<&'a Source>,
    pub diagnostics: &'a [Diagnostic],
}

/// One diagnostic wrapped for miette.
struct Shown<'a> {
    d: &'a Diagnostic,
    src: NamedSource<String>,
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.d.message)
    }
}
impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.d.message)
    }
}
impl std::error::Error for Shown<'_> {}

impl miette::Diagnostic for Shown<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(format!("flowrun({})", self.d.code.as_str())))
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.d.severity() {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
            Severity::Hint => miette::Severity::Advice,
        })
    }
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.d
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.src)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let label = (!self.d.label.is_empty()).then(|| self.d.label.clone());
        Some(Box::new(std::iter::once(LabeledSpan::new_with_span(
            label,
            self.d.span,
        ))))
    }
}

/// The graphical report of every diagnostic of one file.
pub fn human(source: &Source, diagnostics: &[Diagnostic], color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
    let mut out = String::new();
    // Control characters of the file (an escape sequence in a key) must not reach the terminal: the snippet shows
    // them as `?` (one per byte, so the spans still fit) and messages escape them.
    if diagnostics.is_empty() {
        return out;
    }
    let text = visible(&source.text);
    for d in diagnostics {
        let d = &printable(d);
        let shown = Shown {
            d,
            src: NamedSource::new(crate::output::escape_controls(&source.name()), text.clone()),
        };
        // Writing to a String cannot fail.
        let _ = handler.render_report(&mut out, &shown);
        out.push('\n');
    }
    out
}

/// The text with every control character but newline and tab (and every bidirectional override) replaced by `?`,
/// byte for byte, so spans still fit.
fn visible(text: &str) -> String {
    let unsafe_char = |c: char| {
        !matches!(c, '\n' | '\t' | '\r')
            && crate::output::escape_controls(c.encode_utf8(&mut [0; 4])).len() > c.len_utf8()
    };
    if !text.chars().any(unsafe_char) {
        return text.to_string();
    }
    text.chars()
        .map(|c| match c {
            c if unsafe_char(c) => "?".repeat(c.len_utf8()),
            c => c.to_string(),
        })
        .collect()
}

/// A diagnostic whose message, label and help have their control characters escaped.
fn printable(d: &Diagnostic) -> Diagnostic {
    let escape = |s: &str| crate::output::escape_controls(s).into_owned();
    let mut d = d.clone();
    d.message = escape(&d.message);
    d.label = escape(&d.label);
    d.help = d.help.as_deref().map(escape);
    d
}

fn position(source: &Source, d: &Diagnostic) -> (usize, usize, usize, usize) {
    let start = source.line_col(d.span.offset);
    let end = source.line_col(d.span.end());
    (start.line, start.column, end.line, end.column)
}

/// SPEC §3's one JSON document for every file.
pub fn json(reports: &[FileReport]) -> String {
    let mut errors = 0;
    let mut warnings = 0;
    let files: Vec<_> = reports
        .iter()
        .map(|r| {
            let diagnostics: Vec<_> = r
                .diagnostics
                .iter()
                .map(|d| {
                    match d.severity() {
                        Severity::Error => errors += 1,
                        Severity::Warning => warnings += 1,
                        Severity::Hint => {}
                    }
                    let (line, column, end_line, end_column) =
                        r.source.map_or((1, 1, 1, 1), |s| position(s, d));
                    json!({
                        "severity": d.severity().as_str(),
                        "code": d.code.as_str(),
                        "message": d.message,
                        "line": line,
                        "column": column,
                        "end_line": end_line,
                        "end_column": end_column,
                        "help": d.help,
                    })
                })
                .collect();
            json!({ "file": r.file, "diagnostics": diagnostics })
        })
        .collect();
    let doc = json!({ "files": files, "errors": errors, "warnings": warnings });
    let mut text = serde_json::to_string_pretty(&doc).expect("JSON values serialize");
    text.push('\n');
    text
}

/// GitHub Actions annotations: `::error file=…,line=…,col=…,title=flowrun(CODE)::message`.
pub fn github(report: &FileReport) -> String {
    let mut out = String::new();
    for d in report.diagnostics {
        // Exactly SPEC §3's form (file, line, col, title); the help follows the message on its own line.
        let (line, col, _, _) = report.source.map_or((1, 1, 1, 1), |s| position(s, d));
        let d = &printable(d);
        let mut message = d.message.clone();
        if let Some(help) = &d.help {
            message.push_str(&format!("\n{help}"));
        }
        // GitHub's three levels; a hint is its `notice`.
        let level = match d.severity() {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Hint => "notice",
        };
        out.push_str(&format!(
            "::{level} file={},line={line},col={col},title=flowrun({})::{}\n",
            escape_property(&crate::output::escape_controls(&report.file)),
            d.code.as_str(),
            escape_data(&message)
        ));
    }
    out
}

// GitHub's workflow-command escaping: data escapes %, CR, LF; properties also `:` and `,`.
fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}
