//! The OS edge: spawning a run as the leader of its own process group with a parent-death signal, waiting for
//! it, and signalling whole groups.
//!
//! Runs are started with `clone(CLONE_VM | CLONE_VFORK)` and `execve`, the way glibc's `posix_spawn` does it,
//! because `posix_spawn` cannot set a parent-death signal and `fork` copies the runner's page tables for every
//! run (measured: 2,000 runs of `/bin/true` took 1.5x `xargs -P4` with fork, 0.85x with this). Between clone and
//! exec the child runs only raw system calls on memory the parent prepared and does not touch while suspended.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use crate::plan::{Command, Job};

/// What a run needs besides its job: its number, its scheduled time and its three standard streams.
pub struct SpawnSpec<'a> {
    pub job: &'a Job,
    /// The job's command, or its `exec` readiness probe's.
    pub command: &'a Command,
    pub run: u64,
    /// Which try of the run this is (`FLOWRUN_TRY`, 1 for the first).
    pub attempt: u32,
    pub workflow: &'a str,
    pub scheduled: &'a str,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// Start the child on the calling thread's CPU (lower latency for a lone firing; see `spawn`).
    pub pin: bool,
    /// Variables from the job's `env_file`s (the job's `env` wins over them).
    pub file_env: &'a [(String, String)],
    /// `FLOWRUN_UPSTREAM` for a run fired by `after`.
    pub upstream: Option<&'a str>,
    /// An `exec` readiness probe of the run (marked `FLOWRUN_PROBE=1`, so what it leaves behind is found).
    pub probe: bool,
}

/// A started run: its pid (also its process group id) and where its exit status arrives.
pub struct Child {
    pub pid: u32,
    status: tokio::sync::oneshot::Receiver<ExitStatus>,
    /// The run's cgroup, for its `limits: { memory, cpu }`.
    pub cgroup: Option<super::cgroup::RunCgroup>,
}

/// The runs' processes, by pid, waiting for their exit status. One reaper collects every child of the runner
/// (`waitpid(-1)`), because the runner is a subreaper: orphans that daemonized out of a run become its children
/// and must be reaped too. A spawn does not hold the lock across its clone (the reaper would wait that long): a
/// child that exits before it is registered has its status kept in `early` until it is.
static RUNS: std::sync::Mutex<Registry> = std::sync::Mutex::new(Registry {
    waiters: None,
    early: None,
    in_flight: 0,
});

/// How many runs are counted as the runner's children: from before their clone until they are reaped.
static REGISTERED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub(crate) struct Registry {
    waiters: Option<HashMap<u32, tokio::sync::oneshot::Sender<ExitStatus>>>,
    /// Statuses reaped while a spawn was between its clone and its registration, by pid.
    early: Option<HashMap<u32, ExitStatus>>,
    /// Spawns between their clone and their registration.
    in_flight: usize,
}

impl Registry {
    /// Run `pid` waits for its status (which may have come already).
    fn register(&mut self, pid: u32, tx: tokio::sync::oneshot::Sender<ExitStatus>) {
        self.in_flight -= 1;
        match self.early.as_mut().and_then(|e| e.remove(&pid)) {
            Some(status) => {
                REGISTERED.fetch_sub(1, std::sync::atomic::Ordering::Release);
                let _ = tx.send(status);
            }
            None => {
                self.waiters
                    .get_or_insert_with(HashMap::new)
                    .insert(pid, tx);
            }
        }
        self.forget_early();
    }

    /// With no spawn in flight, what was reaped early and not claimed was an orphan's.
    fn forget_early(&mut self) {
        if self.in_flight == 0 {
            if let Some(early) = &mut self.early {
                early.clear();
            }
        }
    }

    /// A reaped child: its run hears it, or it is kept for a run being registered, or it was an orphan.
    fn reaped(&mut self, pid: u32, status: ExitStatus) {
        if let Some(waiter) = self.waiters.as_mut().and_then(|m| m.remove(&pid)) {
            REGISTERED.fetch_sub(1, std::sync::atomic::Ordering::Release);
            let _ = waiter.send(status);
        } else if self.in_flight > 0 {
            // Counted from before its clone: uncounted now, as it is reaped (whether it was a run or an orphan).
            self.early
                .get_or_insert_with(HashMap::new)
                .insert(pid, status);
        }
    }
}

fn runs() -> std::sync::MutexGuard<'static, Registry> {
    RUNS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A count of spawns, so the reaper, finding no child, sleeps until there may be one.
static BORN: (std::sync::Mutex<u64>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

/// How long the reaper, with no child, sleeps before it looks again: an orphan that comes to the runner while no
/// run lives is reaped within this.
const IDLE_LOOK: std::time::Duration = std::time::Duration::from_secs(1);

/// Make the runner the subreaper of everything its runs start (a process that leaves a run's group by `setsid`
/// or a double fork comes back to the runner instead of init), and start the reaper. Call once, inside the
/// runtime, before the first spawn.
pub fn start_reaper() -> io::Result<()> {
    runs().waiters.get_or_insert_with(HashMap::new);
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // A thread blocked in waitpid hears a child's end at once, with no signal handler, pipe or task in between
    // (that chain cost a run's end two thread switches). Without a thread, children are reaped by looking every
    // 20 ms: runs that never end would otherwise hold the runner for ever.
    let started = std::thread::Builder::new()
        .name("flowrun-reaper".into())
        .spawn(reaper);
    if let Err(e) = started {
        tokio::spawn(async {
            loop {
                reap();
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        });
        return Err(e);
    }
    Ok(())
}

/// The reaper: collects every child of the runner as it exits.
fn reaper() {
    let lock = |m: &'static std::sync::Mutex<u64>| m.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let seen = *lock(&BORN.0);
        let mut status = 0;
        // SAFETY: a blocking wait for any child of ours (any thread's).
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid > 0 {
            runs().reaped(pid as u32, ExitStatus::from_raw(status));
            continue;
        }
        if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        // No child: wait for a spawn (or look again in a while, for an orphan that came meanwhile).
        let born = lock(&BORN.0);
        let _ = BORN
            .1
            .wait_timeout_while(born, IDLE_LOOK, |n| *n == seen)
            .unwrap_or_else(|e| e.into_inner());
    }
}

/// A child was made: the reaper, if it found none, looks again.
fn born() {
    *BORN.0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    BORN.1.notify_one();
}

/// Collect every exited child: a run's status goes to its waiter; an orphan is simply reaped.
pub fn reap() {
    let mut guard = runs();
    loop {
        let mut status = 0;
        // SAFETY: non-blocking wait for any child of ours.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        guard.reaped(pid as u32, ExitStatus::from_raw(status));
    }
}

pub fn dev_null() -> io::Result<OwnedFd> {
    Ok(OwnedFd::from(std::fs::File::open("/dev/null")?))
}

/// A pipe whose both ends are close-on-exec: `(read, write)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = os_pipe::pipe()?;
    Ok((OwnedFd::from(r), OwnedFd::from(w)))
}

/// Write what of `data` the pipe takes now, without waiting (a full pipe takes no more): how much it took.
pub fn write_now(w: &OwnedFd, data: &[u8]) -> usize {
    let fd = w.as_raw_fd();
    // SAFETY: fcntl on our own descriptor; write from a live slice of its own length.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return 0;
        }
        let mut written = 0;
        while written < data.len() {
            let rest = &data[written..];
            let n = libc::write(fd, rest.as_ptr() as *const libc::c_void, rest.len());
            if n <= 0 {
                break;
            }
            written += n as usize;
        }
        written
    }
}

/// The runner's own 0, 1 and 2 must be open, or a pipe made later could take one of those numbers and then be
/// clobbered when a child's standard streams are put in place.
pub fn ensure_standard_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries; opening /dev/null takes the lowest free number, which is `fd`.
        unsafe {
            if libc::fcntl(fd, libc::F_GETFD) == -1 {
                libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            }
        }
    }
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in an argument or variable",
        )
    })
}

/// Find `program` as `execvp` would, in the `PATH` the child will have.
fn resolve(program: &str, path_var: Option<&OsStr>, cwd: &Path) -> io::Result<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path_var = path_var
        .map(OsStr::to_os_string)
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
    for dir in std::env::split_paths(&path_var) {
        let dir = if dir.is_relative() {
            cwd.join(dir)
        } else {
            dir
        };
        let candidate = dir.join(program);
        let c = cstring(candidate.as_os_str().as_bytes())?;
        // SAFETY: access(2) reads the NUL-terminated path only.
        if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 && candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("`{program}` was not found in PATH"),
    ))
}

/// Everything the child reads between clone and exec, prepared by the parent.
#[repr(C)]
struct ChildArgs {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    fds: [libc::c_int; 3],
    parent: libc::pid_t,
    /// Where the child reports a failure before exec (which step, errno): the parent's memory, which the child
    /// shares until it execs or exits (CLONE_VM), read once the clone returns (as glibc's posix_spawn does).
    report: *mut [i32; 2],
    /// The runner's CPU set, restored in the child before exec (null: nothing to restore).
    affinity: *const libc::cpu_set_t,
    /// Resource limits to set (resource, value), `rlimit_count` of them.
    rlimits: *const (libc::c_int, libc::rlim_t),
    rlimit_count: usize,
    /// The niceness to take (`NO_NICE`: as inherited).
    nice: libc::c_int,
    /// The user and group to become (-1: stay).
    uid: i64,
    gid: i64,
    /// The run's cgroups' `cgroup.procs`, `cgroup_count` of them: the child writes itself into each.
    cgroup_procs: *const libc::c_int,
    cgroup_count: usize,
}

/// `ChildArgs::nice` when the job sets none.
const NO_NICE: libc::c_int = libc::c_int::MIN;

/// A run's limits as `setrlimit` takes them (`memory` only where no cgroup holds it).
fn rlimits_of(
    limits: &crate::plan::Limits,
    cgroup_memory: bool,
) -> Vec<(libc::c_int, libc::rlim_t)> {
    let mut out = Vec::new();
    for (resource, value) in [
        (libc::RLIMIT_AS, limits.memory.filter(|_| !cgroup_memory)),
        (libc::RLIMIT_NOFILE, limits.nofile),
        (libc::RLIMIT_NPROC, limits.nproc),
    ] {
        if let Some(v) = value {
            out.push((resource as libc::c_int, v as libc::rlim_t));
        }
    }
    out
}

/// The uid and gid of `user`: only root may become another user.
fn user_ids(user: &str) -> io::Result<(i64, i64)> {
    let name = CString::new(user).map_err(|_| io::Error::other(format!("no user `{user}`")))?;
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwnam_r writes into `pw` and `buf`, both alive for the call; `found` says whether it found one.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return Err(io::Error::other(format!(
            "no user `{user}` on this machine"
        )));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if me != 0 && me != pw.pw_uid {
        return Err(io::Error::other(format!(
            "`user: {user}` needs a runner started as root (it runs as uid {me})"
        )));
    }
    Ok((pw.pw_uid as i64, pw.pw_gid as i64))
}

const STEP_CHDIR: i32 = 1;
const STEP_EXEC: i32 = 2;
const STEP_SETUP: i32 = 3;
/// The niceness could not be taken.
const STEP_NICE: i32 = 4;
const STEP_USER: i32 = 5;
/// The child could not enter its run's cgroup.
const STEP_CGROUP: i32 = 6;
/// Resource limit `i` (of `rlimits_of`) could not be set: `STEP_LIMIT + i`.
const STEP_LIMIT: i32 = 10;

extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points at the parent's ChildArgs, alive and untouched while the parent is suspended
    // (CLONE_VFORK). Only system calls follow; nothing allocates or takes a lock.
    unsafe {
        let a = &*(arg as *const ChildArgs);
        let fail = |step: i32| -> ! {
            std::ptr::write_volatile(a.report, [step, *libc::__errno_location()]);
            libc::_exit(127)
        };
        // A fresh program starts with default dispositions (Rust ignores SIGPIPE) and no blocked signals. The
        // parent blocked every signal around the clone, so no handler of the runner can run here, on the runner's
        // memory, before the dispositions are reset; only then is the mask cleared (as glibc's posix_spawn does).
        for signal in 1..32 {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const libc::sigset_t,
            std::ptr::null_mut::<libc::sigset_t>(),
            8,
        );
        if !a.affinity.is_null() {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), a.affinity);
        }
        if libc::setpgid(0, 0) != 0 {
            fail(STEP_SETUP);
        }
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            fail(STEP_SETUP);
        }
        // The runner may have died before prctl; then nobody would ever stop this child.
        if libc::getppid() != a.parent {
            libc::_exit(127);
        }
        // Into the run's cgroups before anything of the job runs (`0`: the writer itself).
        for i in 0..a.cgroup_count {
            if libc::write(*a.cgroup_procs.add(i), b"0".as_ptr().cast(), 1) != 1 {
                fail(STEP_CGROUP);
            }
        }
        for i in 0..a.rlimit_count {
            let (resource, value) = *a.rlimits.add(i);
            let limit = libc::rlimit {
                rlim_cur: value,
                rlim_max: value,
            };
            if libc::setrlimit(resource as _, &limit) != 0 {
                fail(STEP_LIMIT + i as i32);
            }
        }
        if a.nice != NO_NICE && libc::setpriority(libc::PRIO_PROCESS, 0, a.nice) != 0 {
            fail(STEP_NICE);
        }
        // The group first: once the user changed, it could no longer be changed.
        if a.gid >= 0
            && (libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(a.gid as libc::gid_t) != 0)
        {
            fail(STEP_USER);
        }
        if a.uid >= 0 && libc::setuid(a.uid as libc::uid_t) != 0 {
            fail(STEP_USER);
        }
        for (target, &fd) in a.fds.iter().enumerate() {
            if libc::dup2(fd, target as libc::c_int) < 0 {
                fail(STEP_SETUP);
            }
        }
        if libc::chdir(a.cwd) != 0 {
            fail(STEP_CHDIR);
        }
        libc::execve(a.path, a.argv, a.envp);
        fail(STEP_EXEC)
    }
}

/// What `execve` needs, as C strings, prepared before the clone (the child may not allocate).
struct Exec {
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
}

/// The run's environment: the runner's own (read once: spawning is a hot path), the job's `env`, and the
/// `FLOWRUN_*` variables (also the marks by which what a run leaves behind is found).
fn environment(spec: &SpawnSpec) -> Vec<(OsString, OsString)> {
    static INHERITED: std::sync::OnceLock<Vec<(OsString, OsString)>> = std::sync::OnceLock::new();
    // The control API's token is the runner's secret, not its jobs'.
    let inherited = INHERITED.get_or_init(|| {
        std::env::vars_os()
            .filter(|(k, _)| k != "FLOWRUN_TOKEN")
            .collect()
    });
    // What this run sets, in order, a later value of a name winning (found by an index of what is set: an env
    // file may hold tens of thousands of variables, and a scan per variable was quadratic). The index holds only
    // what is set, not the inherited environment: spawning is a hot path, and most runs set five names.
    let mut set: Vec<(OsString, OsString)> = Vec::new();
    let mut at: HashMap<&OsStr, usize> = HashMap::new();
    let run = spec.run.to_string();
    let attempt = spec.attempt.to_string();
    let ours = [
        ("FLOWRUN_JOB", spec.job.name.as_str()),
        ("FLOWRUN_RUN", run.as_str()),
        ("FLOWRUN_TRY", attempt.as_str()),
        ("FLOWRUN_WORKFLOW", spec.workflow),
        ("FLOWRUN_SCHEDULED", spec.scheduled),
    ];
    let probe = spec.probe.then_some(("FLOWRUN_PROBE", "1"));
    let upstream = spec.upstream.map(|u| ("FLOWRUN_UPSTREAM", u));
    let given = spec.file_env.iter().chain(&spec.job.env);
    let given = given.map(|(k, v)| (k.as_str(), v.as_str()));
    for (key, value) in given.chain(ours).chain(probe).chain(upstream) {
        match at.get(OsStr::new(key)) {
            Some(&i) => set[i].1 = value.into(),
            None => {
                at.insert(OsStr::new(key), set.len());
                set.push((key.into(), value.into()));
            }
        }
    }
    // The inherited environment less what is set, and less the marks of a runner that was itself run by `after`
    // or as a probe.
    let mut env: Vec<(OsString, OsString)> = inherited
        .iter()
        .filter(|(k, _)| {
            !at.contains_key(k.as_os_str()) && k != "FLOWRUN_UPSTREAM" && k != "FLOWRUN_PROBE"
        })
        .cloned()
        .collect();
    // (A job's own `FLOWRUN_UPSTREAM` or `FLOWRUN_PROBE` does not pass for the runner's either.)
    env.extend(set.into_iter().filter(|(k, _)| {
        (spec.upstream.is_some() || k != "FLOWRUN_UPSTREAM") && (spec.probe || k != "FLOWRUN_PROBE")
    }));
    env
}

/// The program (as written, for messages) and everything `execve` needs.
fn prepare(spec: &SpawnSpec) -> io::Result<(String, Exec)> {
    let job = spec.job;
    let env = environment(spec);
    let (program, args): (String, Vec<String>) = match spec.command {
        Command::Shell(script) => (
            "/bin/sh".into(),
            vec!["/bin/sh".into(), "-c".into(), script.clone()],
        ),
        Command::Argv(argv) => (argv[0].clone(), argv.clone()),
    };
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_os_str());
    let path = resolve(&program, path_var, &job.cwd)?;
    let exec = Exec {
        path: cstring(path.as_os_str().as_bytes())?,
        argv: args
            .iter()
            .map(|a| cstring(a.as_bytes()))
            .collect::<io::Result<_>>()?,
        envp: env
            .into_iter()
            .map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend(v.into_vec());
                cstring(&kv)
            })
            .collect::<io::Result<_>>()?,
        cwd: cstring(job.cwd.as_os_str().as_bytes())?,
    };
    check_size(&exec)?;
    Ok((program, exec))
}

use crate::limits::MAX_ARG_STRLEN;

/// What `execve` would refuse with "Argument list too long", said first and by name: one string over
/// [`MAX_ARG_STRLEN`], or all of them (with their pointers) over the system's `ARG_MAX`.
fn check_size(exec: &Exec) -> io::Result<()> {
    let too_long = |what: String, len: usize| {
        io::Error::new(
            io::ErrorKind::ArgumentListTooLong,
            format!(
                "{what} is {} KiB: Linux takes at most 128 KiB for one variable or argument",
                len.div_ceil(1024)
            ),
        )
    };
    for kv in &exec.envp {
        let bytes = kv.as_bytes_with_nul();
        if bytes.len() > MAX_ARG_STRLEN {
            let key = bytes.split(|&b| b == b'=').next().unwrap_or_default();
            let what = format!("the environment variable {}", String::from_utf8_lossy(key));
            return Err(too_long(what, bytes.len()));
        }
    }
    if let Some(arg) = exec
        .argv
        .iter()
        .find(|a| a.as_bytes_with_nul().len() > MAX_ARG_STRLEN)
    {
        return Err(too_long(
            "the command".into(),
            arg.as_bytes_with_nul().len(),
        ));
    }
    let pointer = std::mem::size_of::<usize>();
    let total: usize = exec
        .envp
        .iter()
        .chain(&exec.argv)
        .map(|s| s.as_bytes_with_nul().len() + pointer)
        .sum();
    // SAFETY: sysconf only reads a system value.
    let limit = unsafe { libc::sysconf(libc::_SC_ARG_MAX) };
    if limit > 0 && total > limit as usize {
        return Err(io::Error::new(
            io::ErrorKind::ArgumentListTooLong,
            format!(
                "the environment and the command are {} KiB together: the system takes at most {} KiB",
                total.div_ceil(1024),
                limit / 1024
            ),
        ));
    }
    Ok(())
}

/// Start the child. Called on a runtime worker thread, which lives as long as the runner: the parent-death
/// signal is tied to the thread that created the child.
pub fn spawn(spec: SpawnSpec) -> io::Result<Child> {
    let job = spec.job;
    let (program, exec) = prepare(&spec)?;
    let mut argv_ptrs: Vec<*const libc::c_char> = exec.argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = exec.envp.iter().map(|e| e.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    let (path, cwd) = (&exec.path, &exec.cwd);

    // The child reports a failure (which step, errno) here; it stays zero when the child exec'd.
    let mut report = [0i32; 2];
    let cgroup = run_cgroup(&spec)?;
    let cgroup_memory = cgroup.is_some() && super::cgroup::holds_memory(&job.limits);
    let cgroup_procs = cgroup.as_ref().map(|c| c.procs_fds()).unwrap_or_default();
    let rlimits = rlimits_of(&job.limits, cgroup_memory);
    let (uid, gid) = match &job.user {
        Some(user) => user_ids(user)?,
        None => (-1, -1),
    };
    let args = ChildArgs {
        path: path.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        cwd: cwd.as_ptr(),
        fds: [
            spec.stdin.as_raw_fd(),
            spec.stdout.as_raw_fd(),
            spec.stderr.as_raw_fd(),
        ],
        parent: std::process::id() as libc::pid_t,
        report: &mut report,
        rlimits: rlimits.as_ptr(),
        rlimit_count: rlimits.len(),
        nice: job.limits.nice.unwrap_or(NO_NICE),
        uid,
        gid,
        affinity: std::ptr::null(),
        cgroup_procs: cgroup_procs.as_ptr(),
        cgroup_count: cgroup_procs.len(),
    };
    let pid = clone_counted(args, spec.pin)?;
    // SAFETY: the child wrote it, if at all, before it exited; the clone returned after that.
    let report = unsafe { std::ptr::read_volatile(&report) };
    let mut registry = runs();
    if let Some((step, error)) = exec_failure(&mut registry, report, pid) {
        return Err(failed_step(step, error, job, &program, cgroup_memory));
    }
    let (tx, status) = tokio::sync::oneshot::channel();
    registry.register(pid as u32, tx);
    drop(registry);
    Ok(Child {
        pid: pid as u32,
        status,
        cgroup,
    })
}

/// Clone the child, counted in flight from before the clone (a child that exits before it is registered is kept
/// for it: see `RUNS`).
fn clone_counted(args: ChildArgs, pin: bool) -> io::Result<libc::pid_t> {
    // Start the child on this CPU: the parent sleeps until the child has exec'd (CLONE_VFORK), so this CPU is
    // free for it, whereas the scheduler would put a new task on an idle CPU, and waking an idle (virtual) CPU
    // costs up to a millisecond. The child gets the runner's full CPU set back before exec.
    let original = if pin { pin_to_this_cpu() } else { None };
    let args = ChildArgs {
        affinity: original
            .as_ref()
            .map_or(std::ptr::null(), |o| o as *const _),
        ..args
    };
    // Counted before the clone: a child that exits before it is registered is kept for it (see `RUNS`).
    runs().in_flight += 1;
    let cloned = clone_vfork(&args);
    if let Some(original) = &original {
        // SAFETY: restoring the calling thread's own CPU set.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), original) };
    }
    match cloned {
        Ok(_) => born(),
        Err(_) => runs().in_flight -= 1,
    }
    cloned
}

/// The run's cgroup for its `limits: { memory, cpu }`; not for an `exec` probe (the run's helper, not the run).
fn run_cgroup(spec: &SpawnSpec) -> io::Result<Option<super::cgroup::RunCgroup>> {
    if spec.probe {
        return Ok(None);
    }
    super::cgroup::RunCgroup::create(&spec.job.name, spec.run, spec.attempt, &spec.job.limits)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot make the run's cgroup for its `limits`: {e}"),
            )
        })
}

/// Why a child could not start, from the step it reported and its error.
fn failed_step(
    step: i32,
    error: io::Error,
    job: &Job,
    program: &str,
    cgroup_memory: bool,
) -> io::Error {
    let what = match step {
        STEP_CHDIR => format!("cannot enter {}: {error}", job.cwd.display()),
        STEP_EXEC => format!("cannot execute `{program}`: {error}"),
        STEP_NICE => format!(
            "cannot take niceness {} (`limits: {{ nice }}`; below 0 needs root): {error}",
            job.limits.nice.unwrap_or_default()
        ),
        n if n >= STEP_LIMIT => {
            let limits = rlimits_of(&job.limits, cgroup_memory);
            let (name, value) = match limits.get((n - STEP_LIMIT) as usize) {
                Some(&(r, v)) if r == libc::RLIMIT_AS as libc::c_int => ("memory", v),
                Some(&(r, v)) if r == libc::RLIMIT_NOFILE as libc::c_int => ("nofile", v),
                Some(&(_, v)) => ("nproc", v),
                None => ("?", 0),
            };
            format!("cannot set the job's `limits: {{ {name}: {value} }}` (beyond what this user may set, or the system allows): {error}")
        }
        STEP_CGROUP => format!("cannot enter the run's cgroup (for its `limits`): {error}"),
        STEP_USER => format!(
            "cannot become user `{}`: {error}",
            job.user.as_deref().unwrap_or("")
        ),
        _ => format!("cannot set up the process: {error}"),
    };
    io::Error::new(error.kind(), what)
}

/// Pin the calling thread to the CPU it is on; returns its CPU set to restore, or `None` when it was not pinned.
fn pin_to_this_cpu() -> Option<libc::cpu_set_t> {
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: cpu_set_t is plain bits (all zero is the empty set); affinity calls on the calling thread with
    // properly sized sets.
    unsafe {
        let mut original: libc::cpu_set_t = std::mem::zeroed();
        let cpu = libc::sched_getcpu();
        if cpu < 0 || libc::sched_getaffinity(0, size, &mut original) != 0 {
            return None;
        }
        let mut here: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut here);
        (libc::sched_setaffinity(0, size, &here) == 0).then_some(original)
    }
}

/// clone(CLONE_VM | CLONE_VFORK) into `child_entry`: returns once the child has exec'd or exited. The child is
/// counted as registered from before the clone (see `orphans_exist`); the caller holds the registry lock.
fn clone_vfork(args: &ChildArgs) -> io::Result<libc::pid_t> {
    thread_local! {
        /// The child's stack until it execs, one per spawning thread and reused: not allocated and zeroed at
        /// every spawn (the child writes before it reads).
        static STACK: std::cell::RefCell<Vec<u128>> = std::cell::RefCell::new(vec![0u128; 64 * 1024 / 16]);
    }
    STACK.with_borrow_mut(|stack| clone_on(stack, args))
}

fn clone_on(stack: &mut [u128], args: &ChildArgs) -> io::Result<libc::pid_t> {
    REGISTERED.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    // Every signal blocked in this thread from before the clone until the child has exec'd: the child shares
    // the runner's memory until then, and a handler run there would run on it (see `child_entry`).
    // SAFETY: sigfillset and pthread_sigmask on sets owned here; the old mask is restored below.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
    }
    // SAFETY: the stack is ours and outlives the child's use of it (CLONE_VFORK returns after exec or exit);
    // the stack grows down, so the child starts at its top.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len()) as *mut libc::c_void;
        libc::clone(
            child_entry,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            args as *const ChildArgs as *mut libc::c_void,
        )
    };
    // SAFETY: restoring this thread's own mask as it was.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if pid < 0 {
        let error = io::Error::last_os_error();
        REGISTERED.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        return Err(error);
    }
    Ok(pid)
}

/// The step and error a child reported before it could exec (then it is reaped here and uncounted); `None`
/// when it exec'd.
fn exec_failure(
    registry: &mut Registry,
    report: [i32; 2],
    pid: libc::pid_t,
) -> Option<(i32, io::Error)> {
    if report[0] == 0 {
        return None;
    }
    registry.in_flight -= 1;
    // The reaper may have collected it already (it is not registered); else it is reaped here, under the
    // registry's lock, so the reaper does not look for it.
    if registry
        .early
        .as_mut()
        .and_then(|e| e.remove(&(pid as u32)))
        .is_none()
    {
        let mut status = 0;
        // SAFETY: reaping our own exited child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
    REGISTERED.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    registry.forget_early();
    Some((report[0], io::Error::from_raw_os_error(report[1])))
}

impl Child {
    /// Wait for the child to exit (the reaper collects it).
    pub async fn wait(self) -> io::Result<ExitStatus> {
        self.status
            .await
            .map_err(|_| io::Error::other("the child's exit status was lost"))
    }
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

/// Whether any process of the group is alive and not a zombie. A zombie runs nothing; whether it is reaped is up
/// to whoever inherited it (init, which in a container may never do it), so it must not hold a run open.
pub fn group_running(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return group_alive(pgid);
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.as_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command name in parentheses: state, ppid, pgrp, ...
        let mut fields = stat.rsplit(')').next().unwrap_or("").split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|p| p.parse::<u32>().ok());
        if pgrp == Some(pgid) && state != Some("Z") && state != Some("X") {
            return true;
        }
    }
    false
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
pub fn unread_bytes(fd: BorrowedFd) -> usize {
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
pub fn grow_pipe(fd: BorrowedFd) -> usize {
    // SAFETY: fcntl on a valid descriptor with integer arguments.
    unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
        libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ).max(4096) as usize
    }
}

/// One process as /proc tells it: pid, parent, state letter.
struct ProcEntry {
    pid: u32,
    ppid: u32,
    state: u8,
}

fn proc_entries() -> Vec<ProcEntry> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // After the command name in parentheses: state, ppid, ...
            let mut fields = stat.rsplit(')').next()?.split_whitespace();
            let state = *fields.next()?.as_bytes().first()?;
            let ppid = fields.next()?.parse().ok()?;
            Some(ProcEntry { pid, ppid, state })
        })
        .collect()
}

/// The runner's living descendants (not zombies), from one look at /proc.
fn living_descendants() -> Vec<ProcEntry> {
    let me = std::process::id();
    let entries = proc_entries();
    let parent: HashMap<u32, u32> = entries.iter().map(|e| (e.pid, e.ppid)).collect();
    let descends = |mut pid: u32| {
        for _ in 0..4096 {
            match parent.get(&pid) {
                Some(&p) if p == me => return true,
                Some(&p) if p > 1 => pid = p,
                _ => return false,
            }
        }
        false
    };
    entries
        .into_iter()
        .filter(|e| e.state != b'Z' && e.state != b'X' && descends(e.pid))
        .collect()
}

/// Whether the runner has a child that is not a run it started: an orphan that came to it as subreaper.
/// Cheap (one /proc file), so it is asked at every run's end: runs are started by the dispatcher on the main
/// thread, and orphans are handed to a subreaper's first living thread, the main thread too, so one children list
/// has them all.
pub fn orphans_exist() -> bool {
    use std::io::Read;
    static MAIN_THREAD: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let path =
        MAIN_THREAD.get_or_init(|| format!("/proc/self/task/{}/children", std::process::id()));
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    // Not under the registry's lock (a spawn holds it for a while): a count compared with the registered runs,
    // which counts a run from before its clone until it is reaped.
    let registered = REGISTERED.load(std::sync::atomic::Ordering::Acquire);
    let mut buf = [0u8; 4096];
    let mut children = 0;
    loop {
        match file.read(&mut buf) {
            Ok(0) | Err(_) => return children > registered,
            // "pid pid pid ": one space after each.
            Ok(n) => children += memchr::memchr_iter(b' ', &buf[..n]).count(),
        }
        if children > registered {
            return true;
        }
    }
}

/// The runner's descendants that carry the marks of run `job#run` in their environment (`FLOWRUN_JOB`,
/// `FLOWRUN_RUN`): what that run left behind outside its process group.
pub fn escaped_from(job: &str, run: u64) -> Vec<u32> {
    marked(job, run, false)
}

/// Like [`escaped_from`], only what the run's `exec` readiness probes left behind (`FLOWRUN_PROBE=1`).
pub fn escaped_probes(job: &str, run: u64) -> Vec<u32> {
    marked(job, run, true)
}

fn marked(job: &str, run: u64, probe: bool) -> Vec<u32> {
    let job_mark = format!("FLOWRUN_JOB={job}");
    let run_mark = format!("FLOWRUN_RUN={run}");
    living_descendants()
        .into_iter()
        .filter(|e| {
            std::fs::read(format!("/proc/{}/environ", e.pid))
                .map(|env| {
                    let mut vars = env.split(|&b| b == 0);
                    let (mut has_job, mut has_run, mut has_probe) = (false, false, false);
                    for v in &mut vars {
                        has_job |= v == job_mark.as_bytes();
                        has_run |= v == run_mark.as_bytes();
                        has_probe |= v == b"FLOWRUN_PROBE=1";
                    }
                    has_job && has_run && (has_probe || !probe)
                })
                .unwrap_or(false)
        })
        .map(|e| e.pid)
        .collect()
}

/// Signal each process and its process group (what it started itself goes too).
pub fn signal_all(pids: &[u32], signal: i32) {
    for &pid in pids {
        // SAFETY: kill(2) on a process and on the group it may lead; no memory is involved.
        unsafe {
            libc::kill(pid as libc::pid_t, signal);
            libc::kill(-(pid as libc::pid_t), signal);
        }
    }
}

/// Whether any of these processes is alive and not a zombie.
pub fn any_running(pids: &[u32]) -> bool {
    pids.iter().any(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                !state.starts_with('Z') && !state.starts_with('X')
            })
            .unwrap_or(false)
    })
}

/// The runner's living descendants.
pub fn living_descendant_pids() -> Vec<u32> {
    living_descendants().iter().map(|e| e.pid).collect()
}

/// The runner's living descendants that have the pipe behind `fd` open (a daemon that kept a run's standard
/// input, whatever its environment says).
pub fn holding_pipe(fd: BorrowedFd) -> Vec<u32> {
    // SAFETY: fstat fills a stat buffer of the right type for a descriptor we own.
    let inode = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd.as_raw_fd(), &mut st) != 0 {
            return Vec::new();
        }
        st.st_ino
    };
    let wanted = format!("pipe:[{inode}]");
    living_descendants()
        .into_iter()
        .filter(|e| {
            std::fs::read_dir(format!("/proc/{}/fd", e.pid)).is_ok_and(|fds| {
                fds.flatten().any(|f| {
                    std::fs::read_link(f.path()).is_ok_and(|l| l.as_os_str() == wanted.as_str())
                })
            })
        })
        .map(|e| e.pid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn a_child_reaped_before_it_is_registered_has_its_status_kept_for_it() {
        let mut registry = Registry {
            waiters: None,
            early: None,
            in_flight: 1,
        };
        registry.reaped(42, status(3));
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        registry.register(42, tx);
        assert_eq!(rx.try_recv().unwrap().code(), Some(3));
        assert_eq!(registry.in_flight, 0);
        assert!(registry.waiters.as_ref().is_none_or(|w| w.is_empty()));
    }

    #[test]
    fn an_orphan_reaped_with_no_spawn_in_flight_is_not_kept() {
        let mut registry = Registry {
            waiters: None,
            early: None,
            in_flight: 0,
        };
        registry.reaped(7, status(0));
        assert!(registry.early.as_ref().is_none_or(|e| e.is_empty()));
        // One reaped while a spawn was in flight is forgotten once no spawn is.
        registry.in_flight = 1;
        registry.reaped(8, status(0));
        let (tx, _rx) = tokio::sync::oneshot::channel();
        registry.register(9, tx);
        assert!(registry.early.as_ref().is_none_or(|e| e.is_empty()));
    }

    #[test]
    fn input_that_fits_the_pipe_is_written_at_once_and_the_rest_is_left() {
        let (r, w) = pipe().unwrap();
        assert_eq!(write_now(&w, b"a\nb\n"), 4);
        let big = vec![b'x'; 1 << 20];
        let taken = write_now(&w, &big);
        assert!(taken > 0 && taken < big.len(), "{taken}");
        drop(r);
    }
}
