//! The OS edge: spawning a run as the leader of its own process group with a parent-death signal, and
//! signalling whole groups.

use std::os::unix::process::CommandExt as _;
use std::process::Stdio;

use crate::plan::{Command, Job};

/// What a run needs besides its job: its number, its scheduled time and its wiring.
pub struct SpawnSpec<'a> {
    pub job: &'a Job,
    pub run: u64,
    pub workflow: &'a str,
    pub scheduled: &'a str,
    pub stdin: Stdio,
    pub stdout: Stdio,
}

/// Start the child. Spawning happens on a runtime worker thread, which lives as long as the runner: the
/// parent-death signal is tied to the thread that forked, not to the process.
pub fn spawn(spec: SpawnSpec) -> std::io::Result<tokio::process::Child> {
    let mut cmd = match &spec.job.command {
        Command::Shell(script) => {
            let mut c = std::process::Command::new("/bin/sh");
            c.arg("-c").arg(script);
            c
        }
        Command::Argv(argv) => {
            let mut c = std::process::Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    cmd.current_dir(&spec.job.cwd)
        .envs(spec.job.env.iter().map(|(k, v)| (k, v)))
        .env("FLOWRUN_JOB", &spec.job.name)
        .env("FLOWRUN_RUN", spec.run.to_string())
        .env("FLOWRUN_WORKFLOW", spec.workflow)
        .env("FLOWRUN_SCHEDULED", spec.scheduled)
        .stdin(spec.stdin)
        .stdout(spec.stdout)
        .stderr(Stdio::piped())
        .process_group(0);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // The runner may have died between fork and prctl; then nobody would ever stop this child.
            if libc::getppid() != parent {
                return Err(std::io::Error::other(
                    "the runner exited while starting the run",
                ));
            }
            Ok(())
        });
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(false);
    cmd.spawn()
}

/// Send `signal` to every process of the group led by `pgid`. A group that is already gone is not an error.
pub fn signal_group(pgid: u32, signal: i32) {
    // SAFETY: kill(2) with a negative pid addresses the process group; no memory is involved.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), signal);
    }
}

/// Whether any process of the group is still alive.
pub fn group_alive(pgid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(-(pgid as libc::pid_t), 0) == 0 }
}

/// The name of a signal number, for events (`SIGTERM`).
pub fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGHUP => "SIGHUP".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGQUIT => "SIGQUIT".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGPIPE => "SIGPIPE".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGUSR1 => "SIGUSR1".into(),
        libc::SIGUSR2 => "SIGUSR2".into(),
        n => format!("SIG{n}"),
    }
}

/// Bytes waiting unread in a pipe, seen through any of its read ends.
pub fn unread_bytes(fd: std::os::fd::BorrowedFd) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc == 0 {
        n.max(0) as usize
    } else {
        0
    }
}

/// Grow a pipe's buffer (up to the unprivileged limit, 1 MiB) so large streams need fewer wake-ups.
pub fn grow_pipe(fd: std::os::fd::BorrowedFd) -> usize {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a valid descriptor with integer arguments.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
        libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ).max(4096) as usize
    }
}
