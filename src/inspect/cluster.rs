//! `status`, `history` and `logs` with `--store` (SPEC §9): read from the cluster's store, from any host. `status`
//! lists the runners (id, host, pid, version, file hash, heartbeat age, live runs) and flags a runner whose file
//! differs from the one given; `history` is the whole cluster's, each row naming its runner; `logs` prints the last
//! 64 KiB of a run's output as its runner kept it with its row.

use std::io::Write;
use std::path::Path;

use super::table;
use crate::cluster::store::{connect, RedisStore};
use crate::cluster::Keys;
use crate::error::Error;
use crate::report::Mode;
use crate::store::{Query, RunRow};

/// The cluster of a workflow file: its plan (checked), its name, and the file's hash.
fn cluster_of(
    file: &Path,
    given: Option<&str>,
) -> Result<(crate::plan::Plan, String, String), Error> {
    let plan = crate::load::load_plan(file)?;
    let name = given
        .map(str::to_string)
        .unwrap_or_else(|| plan.name.clone());
    let bytes = std::fs::read(file).unwrap_or_default();
    Ok((plan, name, crate::cluster::fnv_hex(&bytes)))
}

fn unreachable(url: &str, e: impl std::fmt::Display) -> Error {
    let e = e.to_string();
    // A store error names the store already.
    match e.starts_with("the cluster's store") {
        true => Error::Setup(e),
        false => Error::Setup(format!(
            "the cluster's store {} does not answer: {e}",
            crate::cluster::shown_url(url)
        )),
    }
}

pub fn status(file: &Path, url: &str, cluster: Option<&str>, format: Mode) -> Result<i32, Error> {
    let (_, name, hash) = cluster_of(file, cluster)?;
    let client = crate::cluster::check_url(url).map_err(Error::Setup)?;
    let mut conn = connect(&client).map_err(|e| unreachable(url, e))?;
    let keys = Keys::new(&name);
    let runners = crate::cluster::runners::runners(&mut conn, &keys, &hash)
        .map_err(|e| unreachable(url, e))?;
    match format {
        Mode::Json => {
            let doc = serde_json::json!({ "cluster": name, "runners": runners });
            let mut text = serde_json::to_string_pretty(&doc).expect("status serializes");
            text.push('\n');
            crate::output::print_out(&text);
        }
        Mode::Text if runners.is_empty() => crate::output::print_out(&format!(
            "no runner of cluster `{name}` is up in {}\n",
            crate::cluster::shown_url(url)
        )),
        Mode::Text => crate::output::print_out(&runners_text(&name, &runners, file, &hash)),
    }
    Ok(crate::exit::OK)
}

/// The runners as a table, with a line for a runner whose file differs.
fn runners_text(
    name: &str,
    runners: &[crate::cluster::runners::Runner],
    file: &Path,
    hash: &str,
) -> String {
    let rows: Vec<Vec<String>> = runners
        .iter()
        .map(|r| {
            vec![
                r.info.id.clone(),
                r.info.host.clone(),
                r.info.pid.to_string(),
                r.info.version.clone(),
                match r.file_differs {
                    true => format!("{} (DIFFERS)", r.info.file_hash),
                    false => r.info.file_hash.clone(),
                },
                crate::timefmt::duration_ms(r.heartbeat_age_ms),
                r.live_runs.to_string(),
            ]
        })
        .collect();
    let mut text = format!("cluster `{name}`: {} runner(s)\n", runners.len());
    text.push_str(&table(
        &[
            "RUNNER",
            "HOST",
            "PID",
            "VERSION",
            "FILE",
            "HEARTBEAT",
            "LIVE",
        ],
        &rows,
        crate::output::color_on_stdout(),
    ));
    if runners.iter().any(|r| r.file_differs) {
        text.push_str(&format!(
            "DIFFERS: that runner runs another text of the workflow than {} ({hash})\n",
            file.display()
        ));
    }
    text
}

/// The cluster's history, newest first.
pub fn history(
    file: &Path,
    url: &str,
    cluster: Option<&str>,
    query: Query,
) -> Result<Vec<RunRow>, Error> {
    let (_, name, _) = cluster_of(file, cluster)?;
    let mut store = RedisStore::reader(url, &name).map_err(Error::Setup)?;
    store.read_history(&query).map_err(|e| unreachable(url, e))
}

/// A run's tries, first first.
pub fn tries(
    file: &Path,
    url: &str,
    cluster: Option<&str>,
    rows: &[RunRow],
) -> Result<Vec<Vec<RunRow>>, Error> {
    use crate::store::Store;
    let (_, name, _) = cluster_of(file, cluster)?;
    let store = RedisStore::reader(url, &name).map_err(Error::Setup)?;
    rows.iter()
        .map(|r| match r.run {
            Some(n) => store.tries(&r.job, n).map_err(|e| unreachable(url, e)),
            None => Ok(Vec::new()),
        })
        .collect()
}

/// The last 64 KiB of a run's output (of the job's last run when no number is given).
pub fn logs(
    file: &Path,
    url: &str,
    cluster: Option<&str>,
    job: &str,
    run: Option<u64>,
) -> Result<i32, Error> {
    let (job, run) = super::logs::job_and_run(job, run)?;
    let job = job.as_str();
    let (_, name, _) = cluster_of(file, cluster)?;
    let mut store = RedisStore::reader(url, &name).map_err(Error::Setup)?;
    let not_run = |what: String| Error::Usage {
        message: what,
        help: Some(format!(
            "`flowrun history {} {job} --store URL` lists its runs",
            file.display()
        )),
    };
    let number = match run {
        Some(n) => n,
        None => store
            .read_history(&Query {
                jobs: vec![job.to_string()],
                limit: 1,
                ..Query::default()
            })
            .map_err(|e| unreachable(url, e))?
            .iter()
            .find_map(|r| r.run)
            .ok_or_else(|| not_run(format!("`{job}` has no run in cluster `{name}`")))?,
    };
    let Some((tail, row)) = store.tail(job, number).map_err(|e| unreachable(url, e))? else {
        return Err(not_run(format!(
            "there is no run #{number} of `{job}` in cluster `{name}` (never, or past --keep)"
        )));
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&tail);
    let _ = out.flush();
    if tail.is_empty() {
        crate::output::line_err(format_args!(
            "{job}#{number} ({}, on {}): no output kept{}",
            row.outcome.as_str(),
            row.runner.as_deref().unwrap_or("?"),
            match row.outcome {
                crate::store::Outcome::Running =>
                    " yet (it is running: its runner's host has its log)",
                _ => "",
            }
        ));
    }
    Ok(crate::exit::OK)
}
