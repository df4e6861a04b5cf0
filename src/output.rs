//! Where the commands' output goes: stdout that may be closed early, and whether colour is wanted. The one place
//! `NO_COLOR` is read.

use std::io::{IsTerminal, Write};

/// Print to stdout; a closed stdout (`| head`) is a normal end, not a crash.
pub fn print_out(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
}

/// Colour on stderr: a terminal, and `NO_COLOR` not set. The one place `NO_COLOR` is read.
pub fn color_on_stderr() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

/// Colour on stdout: a terminal, and `NO_COLOR` not set.
pub fn color_on_stdout() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

/// One line to stdout (closed stdout tolerated, as [`print_out`]).
pub fn line_out(text: impl std::fmt::Display) {
    print_out(&format!("{text}\n"));
}

/// Text to stderr; a closed stderr is no crash either.
pub fn print_err(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|_| err.flush());
}

/// One line to stderr (as [`print_err`]).
pub fn line_err(text: impl std::fmt::Display) {
    print_err(&format!("{text}\n"));
}

/// Characters that must not reach a terminal as they are: controls (but tab) and the bidirectional overrides,
/// which reorder how a line is displayed.
fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\t')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

/// Replace control characters (but tab) and bidirectional overrides with visible escapes such as `\u{0}`.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if is_unsafe(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}
