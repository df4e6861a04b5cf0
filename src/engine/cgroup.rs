//! A cgroup for each run whose job sets `limits: { memory, cpu }`: the kernel holds the run and everything it
//! starts to its memory and CPU time, and says afterwards whether it killed something for memory (so the run's
//! reason can say `killed: memory limit`). cgroup v2 where the runner may delegate, else v1's memory and cpu
//! controllers; where neither can be used, `memory` falls back to RLIMIT_AS and `cpu` is not held (said once at
//! the start).

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::plan::Limits;

/// CFS's accounting period: a `cpu` share is so many microseconds of it.
const PERIOD_US: u64 = 100_000;

/// Where the runner makes its runs' cgroups.
#[derive(Debug, Clone, PartialEq)]
enum Hierarchy {
    /// cgroup v2: the runs' cgroups go in `runs`, with the memory controller enabled for them, and the cpu
    /// controller when `cpu`.
    V2 { runs: PathBuf, cpu: bool },
    /// cgroup v1: a tree per controller; this runner's folder in each that exists.
    V1 {
        memory: Option<PathBuf>,
        cpu: Option<PathBuf>,
    },
}

static HIERARCHY: OnceLock<Result<Hierarchy, String>> = OnceLock::new();

/// The runs' cgroups' place, found (and made) once: `Err` says why there is none.
fn hierarchy() -> &'static Result<Hierarchy, String> {
    HIERARCHY.get_or_init(|| {
        if std::env::var_os("FLOWRUN_NO_CGROUP").is_some_and(|v| !v.is_empty() && v != "0") {
            return Err("FLOWRUN_NO_CGROUP is set".into());
        }
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let found = locate(&own, Path::new("/sys/fs/cgroup"))?;
        prepare(found)
    })
}

/// What `limits` the runs get where they are asked for, for the runner's start: `None` when cgroups hold them
/// all, else what is not held as asked, and why.
pub fn fallback_notice(any_memory: bool, any_cpu: bool) -> Option<String> {
    if !any_memory && !any_cpu {
        return None;
    }
    let (memory_held, cpu_held, why) = match hierarchy() {
        Ok(h) => (
            h.holds_memory(),
            h.holds_cpu(),
            "the controller is not available to the runner".to_string(),
        ),
        Err(why) => (false, false, why.clone()),
    };
    let memory_short = any_memory && !memory_held;
    let cpu_short = any_cpu && !cpu_held;
    let what = match (memory_short, cpu_short) {
        (false, false) => return None,
        (true, true) => {
            "`limits: { memory }` is held as the address space (RLIMIT_AS) and `cpu` not at all"
        }
        (true, false) => "`limits: { memory }` is held as the address space (RLIMIT_AS)",
        (false, true) => "`limits: { cpu }` is not held",
    };
    Some(format!("{what}: no cgroup for runs ({why})"))
}

impl Hierarchy {
    fn holds_memory(&self) -> bool {
        match self {
            Hierarchy::V2 { .. } => true,
            Hierarchy::V1 { memory, .. } => memory.is_some(),
        }
    }

    fn holds_cpu(&self) -> bool {
        match self {
            Hierarchy::V2 { cpu, .. } => *cpu,
            Hierarchy::V1 { cpu, .. } => cpu.is_some(),
        }
    }
}

/// Whether a run with these limits gets its memory limit from a cgroup (then not also as RLIMIT_AS).
pub fn holds_memory(limits: &Limits) -> bool {
    limits.memory.is_some() && hierarchy().as_ref().is_ok_and(Hierarchy::holds_memory)
}

/// Where the runner's own cgroup is, from `/proc/self/cgroup`'s text and the cgroup file systems' root.
fn locate(own: &str, root: &Path) -> Result<Hierarchy, String> {
    let lines: Vec<(&str, &str)> = own
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            Some((controllers, path.trim_start_matches('/')))
        })
        .collect();
    if root.join("cgroup.controllers").exists() {
        let path = lines
            .iter()
            .find(|(c, _)| c.is_empty())
            .map(|(_, p)| *p)
            .ok_or("the runner's cgroup v2 is not in /proc/self/cgroup")?;
        return Ok(Hierarchy::V2 {
            runs: root.join(path),
            cpu: false,
        });
    }
    let tree = |name: &str| {
        lines
            .iter()
            .find(|(c, _)| c.split(',').any(|c| c == name))
            .map(|(c, p)| {
                let mount = if root.join(name).is_dir() { name } else { c };
                root.join(mount).join(p)
            })
            .filter(|dir| dir.is_dir())
    };
    let (memory, cpu) = (tree("memory"), tree("cpu"));
    if memory.is_none() && cpu.is_none() {
        return Err("neither cgroup v2 nor v1's memory or cpu controller is mounted".into());
    }
    Ok(Hierarchy::V1 { memory, cpu })
}

/// Make this runner's folder for its runs' cgroups (and clear those of runners that died without clearing).
fn prepare(found: Hierarchy) -> Result<Hierarchy, String> {
    let mine = format!("flowrun-{}", std::process::id());
    let made = |parent: &Path| -> Result<PathBuf, String> {
        sweep_dead(parent);
        let dir = parent.join(&mine);
        match fs::create_dir(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(dir),
            Err(e) => Err(format!("cannot make {}: {e}", dir.display())),
        }
    };
    match found {
        Hierarchy::V1 { memory, cpu } => {
            let memory = memory.and_then(|m| made(&m).ok());
            let cpu = cpu.and_then(|c| made(&c).ok());
            if memory.is_none() && cpu.is_none() {
                return Err("the runner may not make cgroups (v1) here".into());
            }
            Ok(Hierarchy::V1 { memory, cpu })
        }
        Hierarchy::V2 { runs: own, .. } => {
            let controllers =
                fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default();
            if !controllers.split_whitespace().any(|c| c == "memory") {
                return Err(format!(
                    "the memory controller is not delegated to {} (systemd: `Delegate=yes`)",
                    own.display()
                ));
            }
            enable(&own)?;
            let runs = made(&own)?;
            enable(&runs)?;
            let enabled =
                fs::read_to_string(runs.join("cgroup.subtree_control")).unwrap_or_default();
            let cpu = enabled.split_whitespace().any(|c| c == "cpu");
            Ok(Hierarchy::V2 { runs, cpu })
        }
    }
}

/// Enable the memory and cpu controllers for `dir`'s children. A cgroup v2 with processes of its own cannot
/// (no internal processes): then the runner first moves itself into a leaf of its own, as systemd asks of a
/// delegated service.
fn enable(dir: &Path) -> Result<(), String> {
    let control = dir.join("cgroup.subtree_control");
    let write = || fs::write(&control, "+memory +cpu").or_else(|_| fs::write(&control, "+memory"));
    if write().is_ok() {
        return Ok(());
    }
    let leaf = dir.join(format!("flowrun-runner-{}", std::process::id()));
    let moved = fs::create_dir(&leaf)
        .or_else(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => Ok(()),
            _ => Err(e),
        })
        .and_then(|()| fs::write(leaf.join("cgroup.procs"), std::process::id().to_string()));
    moved.and_then(|()| write()).map_err(|e| {
        format!(
            "cannot enable the memory controller in {}: {e}",
            dir.display()
        )
    })
}

/// Remove the folders that runners which are gone left behind (a runner killed by SIGKILL clears nothing).
fn sweep_dead(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("flowrun-")) else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            remove_tree(&entry.path());
        }
    }
}

/// Remove a cgroup folder and the ones in it (best effort: one with a process left stays).
fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Remove this runner's folders at its end (its runs' cgroups are gone by then).
pub fn remove_mine() {
    match HIERARCHY.get() {
        Some(Ok(Hierarchy::V2 { runs, .. })) => remove_tree(runs),
        Some(Ok(Hierarchy::V1 { memory, cpu })) => {
            for dir in [memory, cpu].into_iter().flatten() {
                remove_tree(dir);
            }
        }
        _ => {}
    }
}

/// One run's cgroup (one folder under v2, one per controller under v1), removed when dropped.
#[derive(Debug)]
pub struct RunCgroup {
    dirs: Vec<PathBuf>,
    /// The `cgroup.procs` files, open for the child to write itself into before exec.
    procs: Vec<OwnedFd>,
    /// Where the kernel counts the processes it killed for memory.
    oom_counter: Option<(PathBuf, &'static str)>,
    memory: Option<u64>,
}

impl RunCgroup {
    /// The cgroup of try `attempt` of run `run` of `job`, if its limits need one and one can be made
    /// (`Ok(None)`: no cgroup, the fallback applies).
    pub fn create(
        job: &str,
        run: u64,
        attempt: u32,
        limits: &Limits,
    ) -> io::Result<Option<RunCgroup>> {
        if limits.memory.is_none() && limits.cpu_millis.is_none() {
            return Ok(None);
        }
        let Ok(hierarchy) = hierarchy() else {
            return Ok(None);
        };
        let name = format!("{job}-{run}-{attempt}");
        let mut cg = RunCgroup {
            dirs: Vec::new(),
            procs: Vec::new(),
            oom_counter: None,
            memory: limits.memory,
        };
        let quota = limits
            .cpu_millis
            .map(|m| (u64::from(m) * PERIOD_US / 1000).max(1000));
        match hierarchy {
            Hierarchy::V2 { runs, cpu } => {
                let dir = cg.make(runs, &name)?;
                if let Some(bytes) = limits.memory {
                    write(&dir, "memory.max", &bytes.to_string())?;
                    // Without this the limit would only push the run into swap.
                    let _ = write(&dir, "memory.swap.max", "0");
                    cg.oom_counter = Some((dir.join("memory.events"), "oom_kill"));
                }
                if let (Some(quota), true) = (quota, cpu) {
                    write(&dir, "cpu.max", &format!("{quota} {PERIOD_US}"))?;
                }
            }
            Hierarchy::V1 { memory, cpu } => {
                if let (Some(bytes), Some(parent)) = (limits.memory, memory) {
                    let dir = cg.make(parent, &name)?;
                    write(&dir, "memory.limit_in_bytes", &bytes.to_string())?;
                    let _ = write(&dir, "memory.memsw.limit_in_bytes", &bytes.to_string());
                    cg.oom_counter = Some((dir.join("memory.oom_control"), "oom_kill"));
                }
                if let (Some(quota), Some(parent)) = (quota, cpu) {
                    let dir = cg.make(parent, &name)?;
                    write(&dir, "cpu.cfs_period_us", &PERIOD_US.to_string())?;
                    write(&dir, "cpu.cfs_quota_us", &quota.to_string())?;
                }
            }
        }
        Ok((!cg.dirs.is_empty()).then_some(cg))
    }

    /// Make the folder `name` under `parent`, and open its `cgroup.procs` for the child.
    fn make(&mut self, parent: &Path, name: &str) -> io::Result<PathBuf> {
        let dir = parent.join(name);
        // A folder of the same name is a leftover of an earlier run of this runner with that number: empty.
        let _ = fs::remove_dir(&dir);
        fs::create_dir(&dir)?;
        self.dirs.push(dir.clone());
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))?;
        self.procs.push(procs.into());
        Ok(dir)
    }

    /// The `cgroup.procs` files the child writes `0` (itself) into before exec.
    pub fn procs_fds(&self) -> Vec<libc::c_int> {
        self.procs.iter().map(|f| f.as_raw_fd()).collect()
    }

    /// Why the kernel killed in this run, if it did: `memory limit (512 MiB)`.
    pub fn limit_hit(&self) -> Option<String> {
        let (file, key) = self.oom_counter.as_ref()?;
        let text = fs::read_to_string(file).ok()?;
        let kills = counter(&text, key)?;
        (kills > 0).then(|| format!("memory limit ({})", size(self.memory.unwrap_or_default())))
    }

    /// The processes still in the run's cgroup (what the run left behind, wherever it went).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .dirs
            .iter()
            .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        self.procs.clear();
        for dir in &self.dirs {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// A size as the file would write it: `512MiB`, or bytes.
fn size(bytes: u64) -> String {
    for (unit, name) in [
        (1u64 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ] {
        if bytes >= unit && bytes % unit == 0 {
            return format!("{}{name}", bytes / unit);
        }
    }
    format!("{bytes} bytes")
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    fs::write(dir.join(file), value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot write {}: {e}", dir.join(file).display()),
        )
    })
}

/// The number after `key` in a flat-keyed cgroup file (`oom_kill 1`).
fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next() == Some(key))
            .then(|| parts.next()?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_trees_are_found_by_controller_and_the_runners_path() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("memory/svc/a")).unwrap();
        fs::create_dir_all(root.path().join("cpu,cpuacct")).unwrap();
        let own = "12:pids:/\n4:memory:/svc/a\n2:cpu,cpuacct:/\n0::/\n";
        assert_eq!(
            locate(own, root.path()).unwrap(),
            Hierarchy::V1 {
                memory: Some(root.path().join("memory/svc/a")),
                cpu: Some(root.path().join("cpu,cpuacct/")),
            }
        );
    }

    #[test]
    fn v2_is_the_unified_tree_at_the_runners_path() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.controllers"), "cpu memory").unwrap();
        assert_eq!(
            locate("0::/user.slice/flowrun.service\n", root.path()).unwrap(),
            Hierarchy::V2 {
                runs: root.path().join("user.slice/flowrun.service"),
                cpu: false,
            }
        );
    }

    #[test]
    fn no_controller_is_a_reason_not_a_panic() {
        let root = tempfile::tempdir().unwrap();
        let why = locate("0::/\n", root.path()).unwrap_err();
        assert!(why.contains("neither cgroup v2"), "{why}");
    }

    #[test]
    fn the_oom_kill_counter_is_read_from_its_line() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(counter(v1, "oom_kill"), Some(2));
        let v2 = "low 0\nhigh 0\nmax 5\noom 1\noom_kill 0\n";
        assert_eq!(counter(v2, "oom_kill"), Some(0));
        assert_eq!(counter("oom 1\n", "oom_kill"), None);
    }
}
