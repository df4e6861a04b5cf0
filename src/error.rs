//! The one error type of the commands, with the exit code each error means (SPEC §3). Failures of jobs are not
//! errors: they are outcomes, reported as events and mapped to exit codes by the command.

use crate::exit;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The workflow file cannot be read (missing, too large, not UTF-8).
    #[error("{message}")]
    Unreadable {
        message: String,
        /// Say it as a `diagnostic` JSON event (the run's `--log-format json`).
        json: bool,
    },
    /// The workflow has errors; their diagnostics were printed already.
    #[error("the workflow is invalid")]
    Invalid,
    /// Wrong arguments: what is wrong, and a hint.
    #[error("{message}")]
    Usage {
        message: String,
        help: Option<String>,
    },
    /// Something the runner needs could not be had (a thread, a runtime, a signal handler).
    #[error("{0}")]
    Setup(String),
    /// Writing an output failed.
    #[error("{0}")]
    Output(String),
}

impl Error {
    pub fn code(&self) -> i32 {
        match self {
            Error::Unreadable { .. } | Error::Invalid | Error::Usage { .. } | Error::Setup(_) => {
                exit::INVALID
            }
            Error::Output(_) => exit::FAILED,
        }
    }

    pub fn usage(message: impl Into<String>) -> Error {
        Error::Usage {
            message: message.into(),
            help: None,
        }
    }
}

/// A store problem as a command error (exit 2: the state cannot be used), with what to do when there is a hint.
impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Error {
        match e.hint() {
            Some(help) => Error::Usage {
                message: e.to_string(),
                help: Some(help),
            },
            None => Error::Setup(e.to_string()),
        }
    }
}
