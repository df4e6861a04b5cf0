//! Exit codes (SPEC §3), named in one place.

/// Every run that ended succeeded; or `validate` found no error.
pub const OK: i32 = 0;
/// A run or message failed for good, an `after` join could never fire; or `validate` found errors.
pub const FAILED: i32 = 1;
/// The workflow is invalid or unreadable, or the arguments are wrong: nothing started.
pub const INVALID: i32 = 2;
/// A second SIGINT forced the stop.
pub const FORCED: i32 = 130;
