//! Bounds on what a run's start takes in, known to `validate` (which says them before anything runs) and to the
//! engine (which holds every run to them): here, so that neither depends on the other.

/// The longest one argument or environment string may be (with its NUL): Linux's `MAX_ARG_STRLEN`, 32 pages.
/// `execve` refuses more with "Argument list too long".
pub const MAX_ARG_STRLEN: usize = 32 * 4096;

/// The largest env file read: variables, not data.
pub const ENV_FILE_MAX: u64 = 1024 * 1024;
