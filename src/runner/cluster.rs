//! A runner joining its cluster at the start (SPEC §9): `--store` read and checked, its id taken (refused while
//! another runner of that id is alive), the runs a dead runner of this id left marked interrupted, the cluster's
//! handled instants read (an interval without `start` anchored once for the whole cluster), and the writer of the
//! shared history started. The heartbeat starts with the engine and stops after it.

use chrono::Utc;
use redis::Commands;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::cli::RunArgs;
use crate::cluster::heartbeat::{Heartbeat, JoinError};
use crate::cluster::store::{connect, RedisStore};
use crate::cluster::{Config, Keys, Link, RunnerInfo};
use crate::error::Error;
use crate::plan::{Plan, TimeSpec, Trigger};
use crate::report::Reporter;
use crate::store::writer::History;
use crate::store::{Memory, Store};

/// A runner's part in its cluster.
pub struct Joined {
    pub link: Link,
    pub info: RunnerInfo,
    /// The writer of the shared history (taken by the engine's recorder).
    pub history: Option<History>,
}

impl Joined {
    /// What the API shows of the cluster (`GET /api/v1/cluster`).
    pub fn view(&self) -> crate::control::ClusterView {
        crate::control::ClusterView {
            config: self.link.config.clone(),
            client: self.link.client.clone(),
        }
    }

    /// Start the heartbeat (the runner joined its cluster: it is renewed from now).
    pub fn beat(&self, reporter: Arc<Reporter>) -> Heartbeat {
        Heartbeat::start(
            self.link.config.clone(),
            self.link.client.clone(),
            self.info.clone(),
            self.link.up.clone(),
            reporter,
            self.link.on_take_over.clone(),
        )
    }
}

/// The cluster this runner joins, if `--store` (or $FLOWRUN_STORE) names one.
pub fn config(
    args: &RunArgs,
    plan: &Plan,
    state: Option<&Path>,
) -> Result<Option<(Config, redis::Client)>, Error> {
    let Some(url) = crate::cli::store_url(args.store.as_deref()) else {
        return Ok(None);
    };
    let client = crate::cluster::check_url(&url).map_err(|message| Error::Usage {
        message,
        help: Some("e.g. --store redis://127.0.0.1:6379/0".into()),
    })?;
    if state.is_none() {
        return Err(Error::Usage {
            message: "a runner of a cluster (--store) needs a state folder: its logs, local history and durable queues stay on its host".into(),
            help: Some("leave out --state none (or FLOWRUN_STATE=none), or give --state DIR".into()),
        });
    }
    let bytes = std::fs::read(&args.file).unwrap_or_default();
    let config = Config {
        url,
        name: args.cluster.clone().unwrap_or_else(|| plan.name.clone()),
        runner_id: args
            .runner_id
            .clone()
            .unwrap_or_else(|| crate::cluster::default_runner_id(state)),
        lease: args.lease,
        file_hash: crate::cluster::fnv_hex(&bytes),
    };
    let usage = |message: String, help: &str| Error::Usage {
        message,
        help: Some(help.into()),
    };
    crate::cluster::check_name("--cluster", &config.name, false)
        .map_err(|m| usage(m, "e.g. --cluster nightly (default: the workflow's `name`)"))?;
    crate::cluster::check_name("--runner-id", &config.runner_id, true)
        .map_err(|m| usage(m, "e.g. --runner-id web-1"))?;
    Ok(Some((config, client)))
}

/// Join the cluster: the id taken, this id's leftover runs interrupted, the cluster's handled instants put into
/// `memory` (instead of this host's), the shared history's writer started. A store that does not answer does not
/// keep the runner from starting: it claims nothing until the store answers (said once).
pub fn join(
    (config, client): (Config, redis::Client),
    plan: &Plan,
    (memory, given): (&mut Memory, std::collections::HashMap<String, u64>),
    state: &Path,
    keep: std::time::Duration,
    reporter: &Arc<Reporter>,
) -> Result<(Joined, u64), Error> {
    let info = RunnerInfo {
        id: config.runner_id.clone(),
        host: crate::cluster::hostname(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        file: plan.path.display().to_string(),
        file_hash: config.file_hash.clone(),
        started: Utc::now(),
        lease_ms: config.lease.as_millis() as u64,
    };
    let up = Arc::new(AtomicBool::new(false));
    let mut recovered = 0;
    let alive = |pid| crate::engine::process::any_running(&[pid]);
    match crate::cluster::heartbeat::join(&config, &client, &info, alive) {
        Ok(n) => {
            recovered = n;
            up.store(true, std::sync::atomic::Ordering::Release);
            // A store that lost its data (no persistence) must not give numbers this runner gave already.
            if let Err(e) = raise_counters(&config, &client, &given) {
                reporter.notice(&format!("the cluster's run counters cannot be checked ({e})"));
            }
            match handled(&config, &client, plan) {
                Ok(handled) => memory.handled = handled,
                Err(e) => reporter.notice(&format!(
                    "the cluster's handled firings cannot be read ({e}): this runner's own are used; claims keep firings once"
                )),
            }
        }
        Err(JoinError::Taken(message)) => {
            return Err(Error::Usage {
                message,
                help: Some(format!(
                    "`flowrun status {} --store URL` lists the cluster's runners",
                    plan.path.display()
                )),
            })
        }
        Err(JoinError::Refused(e)) => {
            return Err(Error::Usage {
                message: format!("the cluster's store {} refuses this runner: {e}", config.shown_url()),
                help: Some("check the password (or user), the database number and that the address is Redis's".into()),
            })
        }
        Err(JoinError::Unreachable(e)) => reporter.notice(&format!(
            "the cluster's store {} does not answer ({e}): the runner starts, and claims no time firing until it does",
            config.shown_url()
        )),
    }
    let history = history_writer(&config, &client, state, keep, reporter)?;
    let joined = Joined {
        link: Link {
            config,
            client,
            up,
            on_take_over: Default::default(),
        },
        info,
        history: Some(history),
    };
    Ok((joined, recovered))
}

/// The writer of the cluster's shared history, after what the last runner could not write to it is written.
/// What a clean stop cannot write is kept for this store and cluster only (another never gets it).
fn history_writer(
    config: &Config,
    client: &redis::Client,
    state: &Path,
    keep: std::time::Duration,
    reporter: &Arc<Reporter>,
) -> Result<History, Error> {
    let which = format!("{}|{}", config.shown_url(), config.name);
    let spill = state
        .join("cluster")
        .join(&crate::cluster::fnv_hex(which.as_bytes())[..12]);
    crate::store::dir::private_dir(&state.join("cluster"))
        .and_then(|()| crate::store::dir::private_dir(&spill))
        .map_err(|e| {
            Error::Setup(format!(
                "the folder {} cannot be made: {e}",
                spill.display()
            ))
        })?;
    let mut store = RedisStore::new(config, client.clone(), keep);
    match crate::store::writer::replay(&mut store, &spill) {
        Ok(0) => {}
        Ok(n) => reporter.notice(&format!(
            "{n} writes of the shared history the last runner could not make are written now"
        )),
        Err(e) => reporter.notice(&format!(
            "what the last runner could not write to the shared history is not written now ({e}): it is left there"
        )),
    }
    Ok(History::start(
        Box::new(store),
        keep,
        Vec::new(),
        spill,
        reporter.clone(),
    ))
}

/// Raise each job's counter in the cluster to at least the last number this runner's history has.
fn raise_counters(
    config: &Config,
    client: &redis::Client,
    last_runs: &std::collections::HashMap<String, u64>,
) -> redis::RedisResult<()> {
    let mut conn = connect(client)?;
    let keys = config.keys();
    for (job, last) in last_runs {
        let _: i64 = crate::cluster::scripts::RAISE
            .key(keys.counter(job))
            .arg(*last)
            .invoke(&mut conn)?;
    }
    Ok(())
}

/// The cluster's handled instants; an interval without `start` that none has is anchored now, once for the whole
/// cluster (the first runner's anchor holds: `HSETNX`), so every runner fires on one grid.
fn handled(
    config: &Config,
    client: &redis::Client,
    plan: &Plan,
) -> Result<std::collections::HashMap<(String, String), chrono::DateTime<Utc>>, String> {
    let mut conn = connect(client).map_err(|e| e.to_string())?;
    let keys = config.keys();
    let now = Utc::now().timestamp_millis();
    for job in &plan.jobs {
        for trigger in &job.triggers {
            if let Trigger::Time {
                rule: rule @ TimeSpec::Interval { start: None, .. },
                ..
            } = trigger
            {
                let field = Keys::handled_field(&job.name, &rule.fingerprint());
                let _: bool = conn
                    .hset_nx(keys.handled(), field, now)
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    let store = RedisStore::new(config, client.clone(), std::time::Duration::ZERO);
    store.memory().map(|m| m.handled).map_err(|e| e.to_string())
}
