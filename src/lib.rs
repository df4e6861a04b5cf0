//! flowrun: a declarative workflow-file runner.
//!
//! ```text
//! text -> yaml (spanned tree) -> decode -> Document -> validate -> Plan -> runner
//!                                  `--------------------`-> diagnostics (human | json | github)
//! ```
//!
//! `source` owns the text and spans, `yaml` the spanned tree, `document` the format as written, `decode` the
//! shape checks, `validate` the rules between parts, `plan` the validated model, `trigger` the time maths.

pub mod decode;
pub mod diagnostic;
pub mod document;
pub mod source;
pub mod trigger;
pub mod values;
pub mod yaml;
