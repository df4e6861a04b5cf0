//! The runner's state at its start (SPEC §4): the folder, the store locked, what the last runner left (its
//! unwritten writes, its runs left `running`), the first blocks of run numbers, and the log folder.

use chrono::Utc;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cli::RunArgs;
use crate::error::Error;
use crate::plan::Plan;
use crate::report::Reporter;

/// The runner's state (SPEC §4): the directory made 0700, the store opened and locked (one runner per state),
/// the runs a dead runner left marked interrupted, what it remembered read back, and the writer started.
pub fn open_state(
    args: &RunArgs,
    plan: &Plan,
    reporter: &Arc<Reporter>,
) -> Result<Option<Opened>, Error> {
    let Some(path) = state_dir(args, plan, reporter)? else {
        // A cluster's runner needs a state: said by `cluster::config`.
        super::cluster::config(args, plan, None)?;
        return Ok(None);
    };
    let cluster = super::cluster::config(args, plan, Some(&path))?;
    use crate::store::Store;
    let path = path.as_path();
    let store_error = Error::from;
    let mut store = locked_store(args, path)?;
    replay_unwritten(&mut store, path, reporter);
    // A store that can be read but not written (a full disk) does not keep the runner from starting: what the
    // start would write goes to the writer, tried again until it is written, and runs wait for their numbers.
    let now = Utc::now();
    let mut later = Vec::new();
    let cannot_write = |e: &crate::store::StoreError| {
        reporter.notice(&format!(
            "the state store cannot be written at the start ({e}): the runner starts; runs wait until it can be"
        ));
    };
    let recovered = match store.recover(now) {
        Ok(n) => n,
        Err(e) if e.cannot_write() => {
            cannot_write(&e);
            later.push(crate::store::Op::Recover { before: now });
            0
        }
        Err(e) => return Err(store_error(e)),
    };
    let mut memory = store.memory().map_err(store_error)?;
    let (mut joined, more) = match cluster {
        Some(cluster) => {
            let given = numbers_given(&store, plan);
            let (joined, n) = super::cluster::join(
                cluster,
                plan,
                (&mut memory, given),
                path,
                args.keep,
                reporter,
            )?;
            (Some(joined), n)
        }
        None => (None, 0),
    };
    let recovered = recovered + more;
    say_forgotten(&memory, reporter);
    // Run numbers are reserved a block ahead before any is given: a crash can leave a gap, never a repeat.
    let numbers_on_disk = match store.apply(&first_blocks(plan, &memory)) {
        Ok(()) => true,
        Err(e) if e.cannot_write() => {
            if later.is_empty() {
                cannot_write(&e);
            }
            false
        }
        Err(e) => return Err(store_error(e)),
    };
    let (history, logs) = start_writer(args, store, path, reporter)?;
    history.send_all(&mut later, true);
    let persist = crate::engine::Persist {
        dir: path.to_path_buf(),
        history,
        memory,
        recovered,
        numbers_on_disk,
        cluster: joined.as_mut().and_then(|j| j.history.take()),
    };
    Ok(Some(Opened {
        persist,
        logs,
        joined,
    }))
}

/// The last run number of each job this runner's history has: the cluster's counters never go below them.
fn numbers_given(
    store: &crate::store::SqliteStore,
    plan: &Plan,
) -> std::collections::HashMap<String, u64> {
    plan.jobs
        .iter()
        .filter_map(|j| Some((j.name.clone(), store.last_run(&j.name).ok()??)))
        .collect()
}

/// Triggers whose remembered instants cannot be believed start afresh: said once.
fn say_forgotten(memory: &crate::store::Memory, reporter: &Reporter) {
    if !memory.forgotten.is_empty() {
        reporter.notice(&format!(
            "the state remembered firings of {} at times that are not times or lie ahead of the clock (was the clock set back?): their triggers start afresh",
            memory.forgotten.join(", ")
        ));
    }
}

/// The store's writer, and where the runs' logs go (pruning deletes log files only under these folders, whatever
/// a history row names).
fn start_writer(
    args: &RunArgs,
    store: crate::store::SqliteStore,
    path: &Path,
    reporter: &Arc<Reporter>,
) -> Result<(crate::store::writer::History, PathBuf), Error> {
    let logs = log_root(args.log_dir.as_deref(), Some(path))?.unwrap_or_else(|| path.join("logs"));
    let log_roots = vec![path.join("logs"), logs.clone()];
    let history = crate::store::writer::History::start(
        Box::new(store),
        args.keep,
        log_roots,
        path.to_path_buf(),
        reporter.clone(),
    );
    Ok((history, logs))
}

/// The state's store, locked (one runner per state): a second runner is refused, with a hint for `--only`.
fn locked_store(args: &RunArgs, path: &Path) -> Result<crate::store::SqliteStore, Error> {
    use crate::store::Store;
    let mut store = crate::store::SqliteStore::open(path).map_err(Error::from)?;
    store.lock().map_err(|e| match (&e, args.only.first()) {
        (crate::store::StoreError::Held { .. }, Some(job)) => Error::Usage {
            message: e.to_string(),
            help: Some(format!(
                "to run {job} now in the running runner: `flowrun trigger {} {job}`",
                args.file.display()
            )),
        },
        _ => Error::from(e),
    })?;
    Ok(store)
}

/// The state opened: the engine's part, where logs go, and the runner's cluster when it joined one.
pub struct Opened {
    pub persist: crate::engine::Persist,
    pub logs: PathBuf,
    pub joined: Option<super::cluster::Joined>,
}

/// The state folder: made (or checked) by the rules of `store::dir`; `None` when there is none (`--state none`, or
/// a default place that cannot be made: said once).
fn state_dir(
    args: &RunArgs,
    plan: &Plan,
    reporter: &Reporter,
) -> Result<Option<std::path::PathBuf>, Error> {
    use crate::store::dir;
    let choice = dir::choose(args.state.as_deref(), &args.file, &plan.name);
    let Some(path) = choice.path() else {
        return Ok(None);
    };
    match dir::create(path, matches!(choice, dir::Choice::Default(_))) {
        Ok((path, warning)) => {
            if let Some(w) = warning {
                reporter.notice(&w);
            }
            Ok(Some(path))
        }
        Err(e) => match choice {
            dir::Choice::Default(_) => {
                reporter.notice(&format!(
                    "cannot make the state directory {} ({e}): running without state (no history, no catch-up; --state DIR names another place, --state none silences this)",
                    path.display()
                ));
                Ok(None)
            }
            _ => Err(Error::Setup(format!(
                "the state directory {} cannot be used: {e}",
                path.display()
            ))),
        },
    }
}

/// Where run logs go: `--log-dir` (made if missing; its real path, so the history's paths hold no symlink), else
/// the state's `logs/`, which must be a real folder of the runner's user (a planted `logs -> /etc` is refused).
/// Absolute: the history keeps each run's log path, for `logs` and pruning from any working directory.
pub fn log_root(
    given: Option<&Path>,
    state: Option<&Path>,
) -> Result<Option<std::path::PathBuf>, Error> {
    use std::os::unix::fs::DirBuilderExt;
    let cannot = |dir: &Path, e: std::io::Error| {
        Error::Setup(format!(
            "the log folder {} cannot be used: {e}",
            dir.display()
        ))
    };
    match (given, state) {
        (Some(dir), _) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .and_then(|_| std::fs::canonicalize(dir))
            .map(Some)
            .map_err(|e| cannot(dir, e)),
        (None, Some(state)) => {
            let dir = state.join("logs");
            crate::store::dir::private_dir(&dir).map_err(|e| cannot(&dir, e))?;
            Ok(Some(dir))
        }
        (None, None) => Ok(None),
    }
}

/// What the last clean stop could not write comes first: its runs' ends, before the runs left `running` are
/// taken for interrupted.
fn replay_unwritten(store: &mut crate::store::SqliteStore, dir: &Path, reporter: &Reporter) {
    match crate::store::writer::replay(store, dir) {
        Ok(0) => {}
        Ok(n) => reporter.notice(&format!(
            "{n} writes the last runner could not make at its stop are written now"
        )),
        Err(e) => reporter.notice(&format!(
            "what the last runner could not write at its stop is not written now ({e}): it is left there"
        )),
    }
}

/// The first block of run numbers of every job, reserved before any is given.
fn first_blocks(plan: &Plan, memory: &crate::store::Memory) -> Vec<crate::store::Op> {
    plan.jobs
        .iter()
        .map(|j| crate::store::Op::Reserve {
            job: j.name.clone(),
            upto: memory.last_runs.get(&j.name).copied().unwrap_or(0) + crate::engine::NUMBER_BLOCK,
        })
        .collect()
}
