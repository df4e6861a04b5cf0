//! A wake-up at a wall-clock instant: a Linux timerfd on CLOCK_REALTIME with an absolute deadline.
//!
//! Two reasons over tokio's sleep: tokio's timer wheel has 1 ms slots and rounds up (about 2 ms of lateness per
//! firing, measured), while a timerfd fires within microseconds; and with TFD_TIMER_CANCEL_ON_SET the kernel wakes
//! us when the wall clock is stepped, so a firing is never slept past (or waited for) because the clock moved.

use chrono::{DateTime, Utc};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;

pub struct WallTimer {
    fd: AsyncFd<OwnedFd>,
    armed: Option<DateTime<Utc>>,
}

impl WallTimer {
    pub fn new() -> io::Result<WallTimer> {
        // SAFETY: timerfd_create returns a new descriptor or -1.
        let raw = unsafe {
            libc::timerfd_create(libc::CLOCK_REALTIME, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC)
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: the AsyncFd owns the timerfd for its whole registration.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)? };
        Ok(WallTimer { fd, armed: None })
    }

    /// Arm for `at` (or disarm with `None`). Re-arming for the same instant is free.
    pub fn set(&mut self, at: Option<DateTime<Utc>>) {
        if self.armed == at {
            return;
        }
        self.armed = at;
        let mut spec: libc::itimerspec = unsafe { std::mem::zeroed() };
        if let Some(at) = at {
            // A zero it_value disarms, so an instant at or before the epoch is moved to 1 ns after it.
            let secs = at.timestamp().max(0);
            let nanos = if secs == 0 && at.timestamp_subsec_nanos() == 0 {
                1
            } else {
                at.timestamp_subsec_nanos()
            };
            spec.it_value = libc::timespec {
                tv_sec: secs as libc::time_t,
                tv_nsec: nanos as libc::c_long,
            };
        }
        // SAFETY: settime on our timerfd with a valid itimerspec.
        unsafe {
            libc::timerfd_settime(
                self.fd.get_ref().as_raw_fd(),
                libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET,
                &spec,
                std::ptr::null_mut(),
            );
        }
    }

    /// Resolves when the armed instant is reached or the wall clock was set; never when disarmed.
    pub async fn wait(&mut self) {
        if self.armed.is_none() {
            return std::future::pending().await;
        }
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return std::future::pending().await;
            };
            let mut expirations = 0u64;
            // SAFETY: reading the 8-byte expiration count; ECANCELED means the clock was set (also a wake-up).
            let n = unsafe {
                libc::read(
                    self.fd.get_ref().as_raw_fd(),
                    &mut expirations as *mut u64 as *mut libc::c_void,
                    8,
                )
            };
            if n == 8 || io::Error::last_os_error().raw_os_error() == Some(libc::ECANCELED) {
                guard.clear_ready();
                // A cancelled timer stays disarmed until set again.
                self.armed = None;
                return;
            }
            guard.clear_ready();
        }
    }
}
