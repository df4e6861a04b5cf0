//! A cluster on Redis (SPEC §9): several runners of one workflow, on several hosts, share one Redis. What they
//! share, and how each step is atomic (one command or one Lua script, never a read then a write):
//!
//! - time firings: claimed by (job, trigger fingerprint, instant) with `SET NX PX`, in one script that also moves
//!   the trigger's handled instant forward only and takes the run's number (`claims`);
//! - `after` joins: one state per join in Redis, told of each run's end by the runner that ran it, in one script
//!   that says when the end completes the join (that runner fires it: once, whatever runners come and go);
//! - run numbers: one counter per job (`INCR`);
//! - runners: a heartbeat key per runner that expires after the lease, renewed every lease/3, and the rows of its
//!   live runs, taken over (marked `interrupted`) by another runner once the heartbeat is gone (`heartbeat`);
//! - history: one hash per run (its row, its tries, the last 64 KiB of its output) and a capped stream of rows
//!   (`store`), read from any host (`runners`, and `inspect`'s `--store` commands);
//! - durable queues: a stream with one consumer group, written and read by every runner (`queue`);
//! - manual firings from any host (`flowrun trigger --store`): a list of requests each taken by one runner
//!   (`BLPOP`, then `SET NX` against the command's cancellation), answered on a reply list (`control::inbox`).
//!
//! Everything else stays with each runner: its state folder (logs, local history), `pipe`, `broadcast` and plain
//! queues, `start` triggers, pauses.

pub mod claims;
pub mod heartbeat;
pub mod keys;
pub mod queue;
pub mod runners;
pub mod scripts;
pub mod store;

use std::time::Duration;

pub use keys::Keys;

/// How a runner takes part in a cluster.
#[derive(Clone, Debug)]
pub struct Config {
    /// `redis://[user:pass@]HOST:PORT/DB`.
    pub url: String,
    /// The cluster's name: every key starts with `flowrun:NAME:`.
    pub name: String,
    pub runner_id: String,
    pub lease: Duration,
    /// The FNV-1a hash of the workflow file's bytes (runners of a different file are flagged).
    pub file_hash: String,
}

impl Config {
    pub fn keys(&self) -> Keys {
        Keys::new(&self.name)
    }

    /// The store's address with its password hidden, for messages.
    pub fn shown_url(&self) -> String {
        shown_url(&self.url)
    }

    /// How long a claim is kept: past any instant at which another runner could still ask for the same firing
    /// (its grace), with the lease and a minute for clocks that disagree between hosts.
    pub fn claim_ttl(&self, misfire_grace: Duration) -> Duration {
        misfire_grace + self.lease + Duration::from_secs(60)
    }
}

/// A store address with its password replaced by `***`.
pub fn shown_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Check a `--store` address: `redis://`, or `rediss://` (TLS).
pub fn check_url(url: &str) -> Result<redis::Client, String> {
    let scheme = url.split("://").next().unwrap_or_default();
    match scheme {
        "redis" => {}
        "rediss" => return tls_client(url),
        _ => {
            return Err(format!(
                "--store {}: not a Redis address; write redis://[USER:PASSWORD@]HOST:PORT/DB",
                shown_url(url)
            ))
        }
    }
    redis::Client::open(url).map_err(|e| format!("--store {}: {e}", shown_url(url)))
}

/// A client of a TLS store: the server's certificate is checked against the system's authorities, or against
/// the one in `$FLOWRUN_STORE_CA` (a PEM file: a private authority).
fn tls_client(url: &str) -> Result<redis::Client, String> {
    // rustls's crypto is ring, chosen once for the process (an error means it was chosen already). ring has no
    // post-quantum key exchange (hence the deprecation); aws-lc-rs has, but needs cmake and a long C build.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let shown = shown_url(url);
    match std::env::var_os("FLOWRUN_STORE_CA") {
        Some(path) => {
            let pem = std::fs::read(&path).map_err(|e| {
                format!(
                    "--store {shown}: FLOWRUN_STORE_CA {}: {e}",
                    std::path::Path::new(&path).display()
                )
            })?;
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            redis::Client::build_with_tls(url, certs).map_err(|e| format!("--store {shown}: {e}"))
        }
        None => redis::Client::open(url).map_err(|e| format!("--store {shown}: {e}")),
    }
}

/// A cluster name (`colon`: false: it is part of every key's prefix, `flowrun:NAME:`) or a runner id (HOST:HASH by
/// default): one word of printable characters, none of `*?[]` (Redis's patterns), at most 128 bytes.
pub fn check_name(what: &str, name: &str, colon: bool) -> Result<(), String> {
    let bad = name.is_empty()
        || name.len() > 128
        || name.chars().any(|c| {
            c.is_whitespace() || c.is_control() || "*?[]".contains(c) || (c == ':' && !colon)
        });
    let banned = if colon { "`*?[]`" } else { "`:*?[]`" };
    match bad {
        true => Err(format!(
            "{what} `{}`: one word of up to 128 bytes, without spaces or any of {banned}",
            name.escape_debug()
        )),
        false => Ok(()),
    }
}

/// FNV-1a, 64 bits, as hex: stable across versions and machines (std's hasher is not).
pub fn fnv_hex(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// This host's name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is ours and its length is given; the name is cut at its first NUL below.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The default runner id: HOST:STATE-HASH, the same at every start of the runner on the same state folder.
pub fn default_runner_id(state: Option<&std::path::Path>) -> String {
    let place = match state {
        Some(dir) => dir.display().to_string(),
        None => "none".into(),
    };
    format!("{}:{}", hostname(), &fnv_hex(place.as_bytes())[..8])
}

/// What the engine of a cluster's runner needs: where the store is, whether it answers, and who hears of runs
/// taken over from a dead runner.
pub struct Link {
    pub config: Config,
    pub client: redis::Client,
    /// Whether the store answers (kept by the claimer and the heartbeat; `flowrun_store_up`).
    pub up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub on_take_over: heartbeat::OnTakeOver,
}

/// What the cluster's store answered a claim or a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// This runner has it (with the run's number, when one was asked for).
    Won(Option<u64>),
    /// Another runner has it.
    Lost,
    /// The store did not answer, why.
    Unreachable(String),
    /// This runner's lease lapsed (it was paused or cut off): it may not claim until its heartbeat is renewed;
    /// the other runners had the firing meanwhile.
    Lapsed,
    /// A join heard an end: the runs that completed it (in the join's order), when this end completed it.
    Joined(Option<Vec<String>>),
}

/// What a runner says of itself in its heartbeat (read by `flowrun status --store` from any host).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct RunnerInfo {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub file: String,
    pub file_hash: String,
    pub started: chrono::DateTime<chrono::Utc>,
    pub lease_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_never_shown() {
        assert_eq!(
            shown_url("redis://u:secret@h:6379/0"),
            "redis://u:***@h:6379/0"
        );
        assert_eq!(shown_url("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(shown_url("redis://u@h/0"), "redis://u@h/0");
    }

    #[test]
    fn names_are_one_plain_word() {
        assert!(check_name("--cluster", "nightly-jobs_2", false).is_ok());
        assert!(check_name("--runner-id", "host.lan:ab12", true).is_ok());
        assert!(check_name("--cluster", "a:b", false).is_err());
        for bad in ["", "a b", "a*", "x\ny", &"n".repeat(129)] {
            assert!(check_name("--cluster", bad, false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn addresses_are_checked_with_a_hint() {
        assert!(check_url("redis://127.0.0.1:6379/0").is_ok());
        assert!(
            check_url("rediss://h:1/0").is_ok(),
            "TLS with the system's authorities"
        );
        assert!(check_url("http://h/").unwrap_err().contains("redis://"));
    }
}
