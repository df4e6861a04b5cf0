//! Problems found in a workflow file: one stable code per rule of SPEC §2.6, each pointing at the value at fault.

pub mod render;

use crate::text::source::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
    /// What validation cannot check and the user should know (never fails `validate`, not even with
    /// `--deny-warnings`; not printed when a run starts).
    Hint,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Hint => "hint",
        }
    }
}

/// The stable codes. Their text is a public contract (CI scripts match on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Syntax,
    UnknownKey,
    MissingKey,
    DuplicateKey,
    InvalidValue,
    InvalidCron,
    UndeclaredChannel,
    UndeclaredExecutor,
    UnknownJob,
    DependencyCycle,
    PipeEndpoints,
    NoReader,
    NoWriter,
    UnusedChannel,
    ConflictingKeys,
    StarvedExecutor,
    PastTime,
    InvalidProbe,
    NoProbe,
    /// `after: [a, b], status: failure`: it fires only when every listed job failed (not the alert it looks like).
    AllMustFail,
    /// A probe address names a variable the job's `env` does not set: its `env_file` must (a hint: validation
    /// reads no file but the workflow).
    EnvFileVariable,
}

impl Code {
    pub const ALL: [Code; 21] = [
        Code::Syntax,
        Code::UnknownKey,
        Code::MissingKey,
        Code::DuplicateKey,
        Code::InvalidValue,
        Code::InvalidCron,
        Code::UndeclaredChannel,
        Code::UndeclaredExecutor,
        Code::UnknownJob,
        Code::DependencyCycle,
        Code::PipeEndpoints,
        Code::NoReader,
        Code::NoWriter,
        Code::UnusedChannel,
        Code::ConflictingKeys,
        Code::StarvedExecutor,
        Code::PastTime,
        Code::InvalidProbe,
        Code::NoProbe,
        Code::AllMustFail,
        Code::EnvFileVariable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::Syntax => "syntax",
            Code::UnknownKey => "unknown-key",
            Code::MissingKey => "missing-key",
            Code::DuplicateKey => "duplicate-key",
            Code::InvalidValue => "invalid-value",
            Code::InvalidCron => "invalid-cron",
            Code::UndeclaredChannel => "undeclared-channel",
            Code::UndeclaredExecutor => "undeclared-executor",
            Code::UnknownJob => "unknown-job",
            Code::DependencyCycle => "dependency-cycle",
            Code::PipeEndpoints => "pipe-endpoints",
            Code::NoReader => "no-reader",
            Code::NoWriter => "no-writer",
            Code::UnusedChannel => "unused-channel",
            Code::ConflictingKeys => "conflicting-keys",
            Code::StarvedExecutor => "starved-executor",
            Code::PastTime => "past-time",
            Code::InvalidProbe => "invalid-probe",
            Code::NoProbe => "no-probe",
            Code::AllMustFail => "all-must-fail",
            Code::EnvFileVariable => "env-file-variable",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            Code::NoWriter | Code::UnusedChannel | Code::PastTime | Code::AllMustFail => {
                Severity::Warning
            }
            Code::EnvFileVariable => Severity::Hint,
            _ => Severity::Error,
        }
    }
}

/// One problem: what is wrong (`message`), where (`span`), what the arrow says (`label`) and what to do (`help`).
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub code: Code,
    pub message: String,
    pub span: Span,
    pub label: String,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(code: Code, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            message: message.into(),
            span,
            label: String::new(),
            help: None,
        }
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn severity(&self) -> Severity {
        self.code.severity()
    }
}

/// The candidate nearest to `word`, if it is near enough to be a plausible typo.
/// Only called once a problem is known, so its cost never touches valid files.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word_lower = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (levenshtein(&word_lower, &c.to_lowercase()), c))
        .filter(|(d, c)| {
            *d <= (c.chars().count().max(word.chars().count()) / 3).max(1) || c.starts_with(word)
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// "did you mean" as a help line, or a list of what is allowed when nothing is close.
pub fn suggestion_help(word: &str, candidates: &[&str], what: &str) -> String {
    match did_you_mean(word, candidates.iter().copied()) {
        Some(best) => format!("did you mean `{best}`?"),
        None if candidates.is_empty() => format!("no {what} is declared"),
        None => format!(
            "the {what}s here are: {}",
            candidates
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words_only() {
        assert_eq!(
            did_you_mean("tigger", ["trigger", "timeout"]),
            Some("trigger")
        );
        assert_eq!(did_you_mean("stdot", ["stdin", "stdout"]), Some("stdout"));
        assert_eq!(did_you_mean("zzzzzz", ["trigger", "timeout"]), None);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }

    #[test]
    fn warnings_are_the_spec_names() {
        let warnings: Vec<_> = Code::ALL
            .iter()
            .filter(|c| c.severity() == Severity::Warning)
            .collect();
        assert_eq!(
            warnings,
            [
                &Code::NoWriter,
                &Code::UnusedChannel,
                &Code::PastTime,
                &Code::AllMustFail
            ]
        );
    }
}
