//! What a reload is, as the control API hands it to the engine and hears back (the merge is `core::merge`).

use serde::Serialize;
use tokio::sync::oneshot;

use crate::plan::Plan;

/// What the control API hands the engine.
pub enum Reload {
    /// A validated plan, to apply.
    Apply {
        plan: Box<Plan>,
        reply: oneshot::Sender<Result<Applied, String>>,
    },
    /// The new text has errors (its report was rendered by the caller): said as an event, nothing changes.
    Rejected {
        errors: usize,
        /// The first problem, one line (`file:line:col: message`).
        summary: String,
        report: String,
    },
}

/// What a reload changed, by job name.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Applied {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}
