//! systemd's notify protocol (sd_notify(3), SPEC §7): with `Type=notify` the runner says READY=1 once its plan is
//! loaded and its control socket serves, RELOADING=1 / READY=1 around a reload, STOPPING=1, a one-line STATUS=,
//! and WATCHDOG=1 while its dispatcher answers, when `WATCHDOG_USEC` asks for it.
//!
//! Written here rather than with the sd-notify crate: the socket's address is taken out of the environment once,
//! at the start (before any thread), so no run inherits `NOTIFY_SOCKET` and speaks for the runner; the crate reads
//! the environment at every call.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::OnceLock;
use std::time::Duration;

struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// How often systemd wants a WATCHDOG=1 (`WATCHDOG_USEC`), when it wants them from this process.
    watchdog: Option<Duration>,
}

static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();

/// Take `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` out of the environment. Call once, before any thread
/// starts (changing the environment is only sound then).
pub fn take_from_env() {
    let socket = std::env::var_os("NOTIFY_SOCKET");
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        // SAFETY: called at the start of the process, before any other thread exists.
        unsafe { std::env::remove_var(name) };
    }
    let ours = pid.is_none_or(|p| p.parse::<u32>() == Ok(std::process::id()));
    let watchdog = usec
        .and_then(|u| u.parse::<u64>().ok())
        .filter(|&u| u > 0 && ours)
        .map(Duration::from_micros);
    let notifier = socket.and_then(|s| {
        let addr = address(s.as_encoded_bytes())?;
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notifier {
            socket,
            addr,
            watchdog,
        })
    });
    let _ = NOTIFIER.set(notifier);
}

/// `/path` or `@abstract` (Linux's abstract namespace), as systemd gives it.
fn address(raw: &[u8]) -> Option<SocketAddr> {
    match raw.split_first()? {
        (b'@', name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name).ok()
        }
        (b'/', _) => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(raw)).ok(),
        _ => None,
    }
}

/// Whether a service manager listens.
pub fn active() -> bool {
    NOTIFIER.get().is_some_and(Option::is_some)
}

/// How often to say WATCHDOG=1 (half of what systemd asked), when it asked.
pub fn watchdog_every() -> Option<Duration> {
    NOTIFIER.get()?.as_ref()?.watchdog.map(|w| w / 2)
}

/// Send one notification (`KEY=VALUE` lines); nothing without a service manager. A lost datagram is not an
/// error of the runner's.
fn send(text: &str) {
    if let Some(Some(n)) = NOTIFIER.get() {
        let _ = n.socket.send_to_addr(text.as_bytes(), &n.addr);
    }
}

/// A status line: one line (a newline would end the field).
fn status_field(status: &str) -> String {
    format!("STATUS={}", status.replace('\n', " "))
}

pub fn ready(status: &str) {
    send(&format!("READY=1\n{}", status_field(status)));
}

/// Before a reload: RELOADING=1 with the monotonic clock (systemd 253 and later want it with RELOADING=1).
pub fn reloading() {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
    send(&format!(
        "RELOADING=1\nMONOTONIC_USEC={usec}\n{}",
        status_field("reloading the workflow file")
    ));
}

/// STOPPING=1, once (a stop asked for says it as it begins, the end of the work as the runner ends).
pub fn stopping() {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        send(&format!("STOPPING=1\n{}", status_field("stopping")));
    }
}

/// The dispatcher answered: WATCHDOG=1 (when asked for) with the current status.
pub fn alive(status: &str) {
    let watchdog = if watchdog_every().is_some() {
        "WATCHDOG=1\n"
    } else {
        ""
    };
    send(&format!("{watchdog}{}", status_field(status)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_paths_or_abstract_names() {
        assert!(address(b"/run/systemd/notify").is_some());
        assert!(address(b"@abstract").is_some());
        assert!(address(b"relative").is_none());
        assert!(address(b"").is_none());
    }

    #[test]
    fn a_status_is_one_line() {
        assert_eq!(status_field("a\nb"), "STATUS=a b");
    }
}
