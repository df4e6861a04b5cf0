//! The live status area on a terminal (indicatif): one line per job and per channel under the scrolling output.
//!
//! The dispatcher refreshes it from a 5 Hz tick, only while it is shown, and indicatif redraws at most 10 times a
//! second, so it costs nothing measurable on the channel benches. Output lines go above it through `suspend`.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::{Duration, Instant};

/// What the view shows of one job.
pub struct JobLine {
    pub name: String,
    pub running: usize,
    pub waiting: usize,
    pub done: bool,
    pub runs: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub last_exit: Option<String>,
    pub next_fire: Option<chrono::DateTime<chrono::Utc>>,
    /// Of the running runs, how many passed their readiness probe (`None`: the job has no probe).
    pub ready: Option<usize>,
    /// Paused (`flowrun pause`).
    pub paused: bool,
}

/// What the view shows of one channel.
pub struct ChannelLine {
    pub name: String,
    pub kind: &'static str,
    pub taken_in: u64,
    pub out: u64,
    pub waiting: u64,
    /// A durable queue's store: messages not done.
    pub stored: Option<u64>,
}

pub struct LiveView {
    multi: MultiProgress,
    jobs: Vec<ProgressBar>,
    channels: Vec<ProgressBar>,
    /// Per channel, recent (time, out) samples: the rate is taken over the last few seconds.
    samples: Vec<std::collections::VecDeque<(Instant, u64)>>,
    color: bool,
    overall: Option<ProgressBar>,
    /// Held for its drop, last: the terminal's settings come back after the area is cleared.
    _echo: QuietControlEcho,
}

fn style(color: bool) -> ProgressStyle {
    let template = if color {
        "{spinner:.cyan} {wide_msg}"
    } else {
        "{spinner} {wide_msg}"
    };
    ProgressStyle::with_template(template)
        .expect("a valid template")
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏·")
}

impl LiveView {
    /// `finite`: the workflow ends by itself (no time trigger, no restart), so an overall bar of runs done
    /// against the runs known so far means something.
    pub fn new(
        jobs: usize,
        channels: &[String],
        color: bool,
        force: bool,
        finite: bool,
    ) -> LiveView {
        let target = if force {
            // `--progress always` draws even when stderr is not a terminal (a TermLike is never hidden).
            ProgressDrawTarget::term_like_with_hz(Box::new(console::Term::stderr()), 10)
        } else {
            ProgressDrawTarget::stderr_with_hz(10)
        };
        let multi = MultiProgress::with_draw_target(target);
        let mk = |multi: &MultiProgress| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style(color));
            bar
        };
        let job_bars = (0..jobs).map(|_| mk(&multi)).collect();
        let channel_bars = channels.iter().map(|_| mk(&multi)).collect();
        let overall = finite.then(|| {
            let bar = multi.add(ProgressBar::new(0));
            let template = if color {
                "{bar:30.cyan/blue} {pos}/{len} runs done  {elapsed}"
            } else {
                "{bar:30} {pos}/{len} runs done  {elapsed}"
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar
        });
        LiveView {
            _echo: QuietControlEcho::start(),
            multi,
            overall,
            jobs: job_bars,
            channels: channel_bars,
            samples: channels
                .iter()
                .map(|_| std::collections::VecDeque::new())
                .collect(),
            color,
        }
    }

    /// The handle output goes through (printed above the status area).
    pub fn multi(&self) -> indicatif::MultiProgress {
        self.multi.clone()
    }

    pub fn update(&mut self, jobs: &[JobLine], channels: &[ChannelLine]) {
        if let Some(bar) = &self.overall {
            // Runs known so far: started ones plus those waiting for a worker.
            let done: u64 = jobs.iter().map(|j| j.runs - j.running as u64).sum();
            let known: u64 = jobs.iter().map(|j| j.runs + j.waiting as u64).sum();
            bar.set_length(known);
            bar.set_position(done);
        }
        let paint = |text: String, code: &str| {
            if self.color {
                format!("\x1b[{code}m{text}\x1b[0m")
            } else {
                text
            }
        };
        let width = jobs
            .iter()
            .map(|j| j.name.len())
            .chain(channels.iter().map(|c| c.name.len()))
            .max()
            .unwrap_or(8);
        for (bar, j) in self.jobs.iter().zip(jobs) {
            // Padded before painting: escape codes have no width on screen.
            let state = if let (true, Some(ready)) = (j.running > 0, j.ready) {
                match (ready, j.running) {
                    (0, _) => paint(format!("{:<12}", "starting"), "33"),
                    (r, n) if r == n => paint(format!("{:<12}", "ready"), "32"),
                    (r, n) => paint(format!("{:<12}", format!("ready {r}/{n}")), "33"),
                }
            } else if j.running > 0 {
                paint(format!("{:<12}", format!("running {}", j.running)), "32")
            } else if j.paused {
                paint(format!("{:<12}", "paused"), "33")
            } else if j.waiting > 0 {
                paint(format!("{:<12}", format!("waiting {}", j.waiting)), "33")
            } else if j.done {
                paint(format!("{:<12}", "done"), "2")
            } else {
                format!("{:<12}", "idle")
            };
            let failed = if j.failed > 0 {
                paint(format!("{} failed", j.failed), "31")
            } else {
                "0 failed".into()
            };
            let mut msg = format!(
                "{:<width$}  {state} runs {:>5}  ok {:>5}  {failed}",
                j.name, j.runs, j.succeeded
            );
            if let Some(exit) = &j.last_exit {
                msg.push_str(&format!("  last {exit}"));
            }
            if let Some(next) = j.next_fire {
                let zone = crate::values::system_zone();
                msg.push_str(&format!("  next {}", when(next, chrono::Utc::now(), zone)));
            }
            // An unchanged line is not redrawn: an idle runner under a live view stays (nearly) idle.
            if bar.message() != msg {
                bar.set_message(msg);
            }
            if j.running > 0 {
                bar.tick();
            }
        }
        let now = Instant::now();
        for ((bar, c), samples) in self
            .channels
            .iter()
            .zip(channels)
            .zip(self.samples.iter_mut())
        {
            let msg = channel_line(c, samples, now, width);
            if bar.message() != msg {
                bar.set_message(msg);
            }
        }
    }

    /// Remove the status area (the summary is printed after it).
    pub fn finish(&self) {
        for bar in self.jobs.iter().chain(&self.channels).chain(&self.overall) {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

pub const TICK: Duration = Duration::from_millis(200);
const RATE_WINDOW: Duration = Duration::from_secs(3);

/// A fire time for people: the local time with the zone, and the day when it is not today.
fn when(
    next: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
    zone: chrono_tz::Tz,
) -> String {
    let local = next.with_timezone(&zone);
    if local.date_naive() == now.with_timezone(&zone).date_naive() {
        local.format("%H:%M:%S %Z").to_string()
    } else {
        local.format("%a %d %b %H:%M %Z").to_string()
    }
}

/// While the status area is shown, the terminal does not echo control characters: the `^C` it would print where
/// the cursor stands shifts the area's lines, and a stale status line stays on the screen. Restored on drop.
struct QuietControlEcho {
    saved: Option<libc::termios>,
}

impl QuietControlEcho {
    fn start() -> QuietControlEcho {
        // SAFETY: tcgetattr/tcsetattr on standard error (the terminal the view is drawn on) with a termios of
        // the right type; nothing happens when it is not a terminal.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            // Only in the terminal's foreground: a runner started with `&` must not be stopped by SIGTTOU.
            if libc::isatty(2) != 1
                || libc::tcgetpgrp(2) != libc::getpgrp()
                || libc::tcgetattr(2, &mut t) != 0
            {
                return QuietControlEcho { saved: None };
            }
            let saved = t;
            t.c_lflag &= !libc::ECHOCTL;
            libc::tcsetattr(2, libc::TCSANOW, &t);
            QuietControlEcho { saved: Some(saved) }
        }
    }
}

impl Drop for QuietControlEcho {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // SAFETY: restoring the settings read at the start. SIGTTOU is ignored meanwhile: the runner may have
            // been put in the background since (Ctrl-Z, bg), and must not be stopped for putting them back.
            unsafe {
                let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                libc::tcsetattr(2, libc::TCSANOW, saved);
                libc::signal(libc::SIGTTOU, old);
            }
        }
    }
}

/// One channel's line: its counts, and its rate over the last few seconds (`samples`, updated here), or what a
/// durable queue's store keeps.
fn channel_line(
    c: &ChannelLine,
    samples: &mut std::collections::VecDeque<(Instant, u64)>,
    now: Instant,
    width: usize,
) -> String {
    samples.push_back((now, c.out));
    while samples.len() > 2 && now.duration_since(samples[0].0) > RATE_WINDOW {
        samples.pop_front();
    }
    let (t0, out0) = samples[0];
    let elapsed = now.duration_since(t0).as_secs_f64();
    let rate = if elapsed > 0.0 {
        (c.out - out0) as f64 / elapsed
    } else {
        0.0
    };
    // A durable queue says what its store keeps where others say their rate (a line fits 80 columns).
    let last = match c.stored {
        Some(depth) => format!("stored {depth:>6}"),
        None => format!("{rate:>9.1}/s"),
    };
    format!(
        "{:<width$}  {:<9} in {:>9}  out {:>9}  waiting {:>6}  {last}",
        c.name, c.kind, c.taken_in, c.out, c.waiting
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fire_times_show_the_zone_and_the_day_when_not_today() {
        let t = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        let berlin: chrono_tz::Tz = "Europe/Berlin".parse().unwrap();
        let now = t("2026-11-25T10:00:00Z");
        assert_eq!(when(t("2026-11-25T12:30:00Z"), now, berlin), "13:30:00 CET");
        assert_eq!(
            when(t("2026-11-26T00:30:00Z"), now, berlin),
            "Thu 26 Nov 01:30 CET"
        );
    }
}
