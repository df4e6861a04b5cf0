//! How long the control API and its commands wait. Fixed bounds, each with a variable that changes it (for an
//! operator on a slow machine, and for tests that would otherwise wait the whole bound out).

use std::time::Duration;

/// How long a command (`trigger`, `stop`, `reload`, `status`) waits for an answer that should come at once:
/// `$FLOWRUN_ANSWER_TIMEOUT` (a duration such as `15s`), else 15 s.
pub fn answer() -> Duration {
    from_env("FLOWRUN_ANSWER_TIMEOUT", Duration::from_secs(15))
}

/// How long the API waits for a client's request headers, between two requests of a kept-alive connection and
/// for a body: `$FLOWRUN_API_TIMEOUT`, else 10 s.
pub fn client() -> Duration {
    from_env("FLOWRUN_API_TIMEOUT", Duration::from_secs(10))
}

/// The duration in `var`, when it is set to one that is not zero; else `default`.
fn from_env(var: &str, default: Duration) -> Duration {
    std::env::var(var)
        .ok()
        .and_then(|v| crate::values::parse_duration(v.trim()).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(default)
}
