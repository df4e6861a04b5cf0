//! Readiness probes (SPEC §6): how a run is found *ready*. A `log` probe watches the run's printed lines (in its
//! `LineSink`); `http`, `tcp` and `exec` probes are polled by a task that ends with the run. Either way the
//! probe only says "ready" once, through a callback: the dispatcher decides what readiness means (`run.ready`, the
//! `after: { status: ready }` joins) and stops a run that is not ready in time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::broker::ExitFlag;
use super::process;
use crate::plan::{Check, Command, Plan, Probe};

/// One check may take as long as the interval, and at least this long (a connect or a `pg_isready` is not
/// hurried into failing by a short interval).
const MIN_CHECK_TIME: Duration = Duration::from_secs(1);

/// A run's probe while the run lives: what it checks (as it was when the run started: a reload does not change a
/// live run's probe), the polling task (aborted when the run is stopped or dropped), whether the run's process
/// has exited (a run that exited is never found ready, nor stopped for not being ready), and what the last check
/// said, for the message of a run that never became ready.
pub(crate) struct ProbeHandle {
    pub probe: Box<Probe>,
    task: Option<tokio::task::AbortHandle>,
    exited: Arc<ExitFlag>,
    last_failure: Arc<Mutex<Option<String>>>,
}

impl ProbeHandle {
    /// The run's process has exited (what it left behind may keep the run alive a while longer).
    pub fn run_exited(&self) -> bool {
        self.exited.is_set()
    }

    /// No more checks: the run is being stopped.
    pub fn stop(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }

    /// What the last failed check said (`None`: no check failed, or the probe watches the log).
    pub fn last_failure(&self) -> Option<String> {
        self.last_failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for ProbeHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `log` probe: the first printed line that matches makes the run ready.
pub(crate) struct LogWatch {
    regex: regex::bytes::Regex,
    seen: AtomicBool,
    exited: Arc<ExitFlag>,
    ready: Box<dyn Fn() + Send + Sync>,
}

impl LogWatch {
    pub fn line(&self, line: &[u8]) {
        if self.seen.load(Ordering::Relaxed) || self.exited.is_set() {
            return;
        }
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if self.regex.is_match(line) && !self.seen.swap(true, Ordering::AcqRel) {
            (self.ready)();
        }
    }
}

/// What an `exec` probe's command needs to start like its run: the run's identity and environment.
pub(crate) struct ExecContext {
    pub plan: Arc<Plan>,
    pub job: crate::plan::JobId,
    pub run: u64,
    pub attempt: u32,
    pub workflow: String,
    pub scheduled: String,
    pub file_env: Vec<(String, String)>,
}

/// Start a run's probe. `ready` is called at most once, when it passes while the run's process lives (`exited`).
/// A `log` probe gives back the watch to hand to the run's line sink.
pub(crate) fn start(
    probe: &Probe,
    exec: ExecContext,
    exited: Arc<ExitFlag>,
    ready: impl Fn() + Send + Sync + 'static,
) -> (ProbeHandle, Option<Arc<LogWatch>>) {
    let last_failure = Arc::new(Mutex::new(None));
    // The address with the job's variables, as this run's environment has them (`env` wins over `env_file`, a
    // later file over an earlier one). A variable no one sets fails no check and passes none: the run is not ready
    // in time, and the message says which variable.
    let expanded = expanded_for(&probe.check, &exec);
    let (probe, unusable) = match expanded {
        Ok(check) => (
            Probe {
                check,
                ..probe.clone()
            },
            None,
        ),
        Err(why) => (probe.clone(), Some(why)),
    };
    let mut handle = ProbeHandle {
        probe: Box::new(probe.clone()),
        task: None,
        exited: exited.clone(),
        last_failure: last_failure.clone(),
    };
    if let Some(why) = unusable {
        *last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        return (handle, None);
    }
    if let Check::Log(regex) = &probe.check {
        let watch = LogWatch {
            regex: regex.clone(),
            seen: AtomicBool::new(false),
            exited,
            ready: Box::new(ready),
        };
        return (handle, Some(Arc::new(watch)));
    }
    let check = probe.check.clone();
    let interval = probe.interval;
    let limit = interval.max(MIN_CHECK_TIME);
    let task = tokio::spawn(async move {
        let mut resolved = None;
        loop {
            if exited.is_set() {
                return;
            }
            let check = check_once(&check, &exec, &mut resolved);
            let outcome = match tokio::time::timeout(limit, check).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!(
                    "no answer within {}",
                    crate::values::format_duration(limit)
                )),
            };
            match outcome {
                Ok(()) if !exited.is_set() => {
                    ready();
                    return;
                }
                Ok(()) => return,
                Err(why) => *last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(why),
            }
            tokio::time::sleep(interval).await;
        }
    });
    handle.task = Some(task.abort_handle());
    (handle, None)
}

/// A check's address with the job's variables, as this run's environment has them (`env` wins over `env_file`, a
/// later file over an earlier one).
pub(crate) fn expanded_for(check: &Check, exec: &ExecContext) -> Result<Check, String> {
    let job = &exec.plan.jobs[exec.job];
    check.expanded(|name| {
        job.env
            .iter()
            .chain(exec.file_env.iter().rev())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    })
}

/// One check: `Ok` when it passes, else what went wrong (for the message of a run that never became ready).
pub(crate) async fn check_once(
    check: &Check,
    exec: &ExecContext,
    resolved: &mut Resolved,
) -> Result<(), String> {
    match check {
        Check::Log(_) => Err("a log probe is not polled".into()),
        Check::Tcp(address) => connect(address, resolved).await.map(drop),
        Check::Http(url) => http_get(url, resolved).await,
        Check::Exec(command) => run_command(command, exec).await,
    }
}

/// A probe's address, once a name resolved: looked up again only while it does not resolve (a check every 10 ms
/// must not keep a DNS lookup busy).
pub(crate) type Resolved = Option<Vec<std::net::SocketAddr>>;

/// Connect to `HOST:PORT` (the name resolved once, then remembered in `resolved`).
async fn connect(address: &str, resolved: &mut Resolved) -> Result<tokio::net::TcpStream, String> {
    let addresses = match resolved {
        Some(known) => known.clone(),
        None => {
            let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host(address)
                .await
                .map_err(|e| format!("resolving {address}: {e}"))?
                .collect();
            if found.is_empty() {
                return Err(format!("{address} resolves to no address"));
            }
            resolved.insert(found).clone()
        }
    };
    tokio::net::TcpStream::connect(&addresses[..])
        .await
        .map_err(|e| format!("connecting to {address}: {e}"))
}

/// GET `url`: passes on a 2xx answer (its body is not read).
async fn http_get(url: &str, resolved: &mut Resolved) -> Result<(), String> {
    // Checked when the run started (`Check::expanded`): this parse does not fail.
    let url = crate::address::http_url(url)?;
    let authority = url.authority().ok_or("the URL names no host")?;
    let address = match authority.port_u16() {
        Some(_) => authority.as_str().to_string(),
        None => format!("{}:80", authority.as_str()),
    };
    let stream = connect(&address, resolved).await?;
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let status = crate::http::get_status(stream, authority.as_str(), path).await?;
    match status {
        200..=299 => Ok(()),
        other => Err(format!("GET {url} answered {other}")),
    }
}

/// Kills an `exec` probe's process group when the check is over or abandoned (the run ended, the check took too
/// long), and what left the group but carries the probe's marks (a daemon it started): a check leaves nothing
/// behind, even when it runs every few milliseconds.
struct GroupGuard {
    pgid: u32,
    job: String,
    run: u64,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        process::signal_group(self.pgid, libc::SIGKILL);
        if process::orphans_exist() {
            process::signal_all(&process::escaped_probes(&self.job, self.run), libc::SIGKILL);
        }
    }
}

/// Run an `exec` probe's command like a run of its job (its folder, environment and marks), in a process group of
/// its own: passes when it exits 0.
async fn run_command(command: &Command, exec: &ExecContext) -> Result<(), String> {
    let null = || process::dev_null().map_err(|e| e.to_string());
    let job = &exec.plan.jobs[exec.job];
    let child = process::spawn(process::SpawnSpec {
        job,
        command,
        run: exec.run,
        attempt: exec.attempt,
        workflow: &exec.workflow,
        scheduled: &exec.scheduled,
        stdin: null()?,
        stdout: null()?,
        stderr: null()?,
        pin: false,
        file_env: &exec.file_env,
        upstream: None,
        message: None,
        probe: true,
    })
    .map_err(|e| e.to_string())?;
    let _guard = GroupGuard {
        pgid: child.pid,
        job: job.name.clone(),
        run: exec.run,
    };
    let status = child.wait().await.map_err(|e| e.to_string())?;
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => Err(format!("`{}` exited {code}", command.display())),
        (None, signal) => Err(format!(
            "`{}` was killed by {}",
            command.display(),
            signal.map_or_else(|| "a signal".into(), process::signal_name)
        )),
    }
}
