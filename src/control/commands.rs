//! `flowrun trigger`, `stop` and `reload FILE`: requests to the running runner over its control socket. Each
//! says plainly when no runner is up (exit 2).

use serde_json::Value;

use crate::output::{line_err, line_out, print_err};
use std::path::{Path, PathBuf};

use super::client::{request, Failure};
use super::inbox::Asked;
use crate::error::Error;
use crate::store::dir;

/// The control socket of the runner of `file`: found like the runner's state (by the file's path when its text
/// is not readable now).
pub(super) fn socket(file: &Path, state: Option<&str>) -> Result<PathBuf, Error> {
    let choice = match crate::load::load_plan_quietly(file) {
        Some(plan) => dir::choose(state, file, &plan.name),
        None => dir::find_by_file(state, file),
    };
    match choice.path() {
        Some(dir) => Ok(dir.join("control.sock")),
        None => Err(no_runner(file, None)),
    }
}

pub(super) fn no_runner(file: &Path, socket: Option<&Path>) -> Error {
    Error::Usage {
        message: format!("no runner is up for {}", file.display()),
        help: Some(match socket {
            Some(s) => format!(
                "nothing answers on {}; start one with `flowrun {}` (or give the --state it runs with)",
                s.display(),
                file.display()
            ),
            None => format!(
                "start one with `flowrun {}` (a runner with --state none has no control socket)",
                file.display()
            ),
        }),
    }
}

/// One request; the status and the JSON body (or the text of a body that is not JSON).
pub fn ask(
    file: &Path,
    state: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Option<std::time::Duration>,
) -> Result<(u16, Value), Error> {
    let socket = socket(file, state)?;
    match request(&socket, method, path, body, timeout) {
        Ok((status, text)) => Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )),
        Err(Failure::NoRunner) => Err(no_runner(file, Some(&socket))),
        Err(Failure::Other(e)) => Err(Error::Setup(e)),
    }
}

fn said(body: &Value) -> String {
    match body
        .get("error")
        .or_else(|| body.get("reason"))
        .and_then(Value::as_str)
    {
        Some(e) => e.to_string(),
        None => body.to_string(),
    }
}

pub fn trigger(file: &Path, job: &str, wait: bool, state: Option<&str>) -> Result<i32, Error> {
    let path = format!(
        "/api/v1/jobs/{}/trigger{}",
        encode_segment(job),
        if wait { "?wait=true" } else { "" }
    );
    // Without --wait the answer comes at once; with it, when the run ends (however long that is).
    let timeout = (!wait).then(super::timeouts::answer);
    let (status, body) = ask(file, state, "POST", &path, None, timeout)?;
    said_trigger(file, job, status, &body)
}

/// `flowrun trigger FILE JOB --store URL`: fired on one live runner of the cluster, from any host; the same
/// lines and exit codes as through the control socket. An unknown job is refused before anything is sent; with
/// no live runner, or none that takes the request within the answer timeout, it says so (exit 2) and the request
/// is cancelled: it never fires later.
pub fn trigger_in_cluster(
    file: &Path,
    job: &str,
    wait: bool,
    url: &str,
    cluster: Option<&str>,
) -> Result<i32, Error> {
    let plan = crate::load::load_plan(file)?;
    if !plan.jobs.iter().any(|j| j.name == job) {
        let names: Vec<&str> = plan.jobs.iter().map(|j| j.name.as_str()).collect();
        return Err(Error::Usage {
            message: format!("`{job}` is not a job of {}", file.display()),
            help: Some(crate::diagnostics::suggestion_help(job, &names, "job")),
        });
    }
    let name = cluster.map_or_else(|| plan.name.clone(), str::to_string);
    let client = crate::cluster::check_url(url).map_err(Error::Setup)?;
    let shown = crate::cluster::shown_url(url);
    let unreachable =
        |e: String| Error::Setup(format!("the cluster's store {shown} does not answer: {e}"));
    let bound = super::timeouts::answer();
    let keys = crate::cluster::Keys::new(&name);
    let status_hint = format!(
        "`flowrun status {} --store {shown}` lists the cluster's runners",
        file.display()
    );
    match super::inbox::ask(&client, &keys, job, wait, bound).map_err(unreachable)? {
        Asked::Answer(status, body) => said_trigger(file, job, status, &body),
        Asked::NoRunner => Err(Error::Usage {
            message: format!("no runner of cluster `{name}` is up in {shown}: `{job}` was not fired"),
            help: Some(format!(
                "start one with `flowrun {} --store {shown}`",
                file.display()
            )),
        }),
        Asked::NotTaken(alive) => Err(Error::Usage {
            message: format!(
                "no runner of cluster `{name}` took the request within {} ({} with a heartbeat: {}): `{job}` was not fired, and will not be",
                crate::timefmt::duration_ms(bound.as_millis() as u64),
                alive.len(),
                alive.join(", ")
            ),
            help: Some(format!("{status_hint}; FLOWRUN_ANSWER_TIMEOUT waits longer")),
        }),
        Asked::Silent(why) => {
            line_err(format_args!("{job}: {why}"));
            Ok(crate::exit::FAILED)
        }
    }
}

/// What the answer to a manual firing says: its line and the command's exit code.
fn said_trigger(file: &Path, job: &str, status: u16, body: &Value) -> Result<i32, Error> {
    let text = |key: &str| body.get(key).map(|v| v.to_string()).unwrap_or_default();
    match (status, body.get("status").and_then(Value::as_str)) {
        (200, Some("ended")) => {
            let success = body.get("success").and_then(Value::as_bool) == Some(true);
            line_out(format_args!(
                "{job}#{} {}{}",
                text("run"),
                body["outcome"].as_str().unwrap_or("ended"),
                match (&body["code"], &body["signal"]) {
                    (Value::Number(c), _) => format!(" (exit {c})"),
                    (_, Value::String(s)) => format!(" ({s})"),
                    _ => String::new(),
                }
            ));
            Ok(if success {
                crate::exit::OK
            } else {
                crate::exit::FAILED
            })
        }
        (200, _) => {
            line_out(format_args!("{job}#{} started", text("run")));
            Ok(crate::exit::OK)
        }
        (202, _) => {
            line_out(format_args!(
                "{job}: queued (waiting for a worker of its executor)"
            ));
            Ok(crate::exit::OK)
        }
        (409, status) => {
            let what = match status {
                Some("skipped") => "skipped",
                _ => "not fired",
            };
            line_err(format_args!("{job}: {what}: {}", said(body)));
            Ok(crate::exit::FAILED)
        }
        (404, _) => Err(Error::Usage {
            message: said(body),
            help: Some(format!(
                "`flowrun status {}` lists the jobs",
                file.display()
            )),
        }),
        // The runner is up but stopping (or stopped before a waited run ended): the run did not succeed.
        (503, _) => {
            line_err(format_args!("{job}: {}", said(body)));
            Ok(crate::exit::FAILED)
        }
        _ => Err(Error::Setup(said(body))),
    }
}

pub fn stop(file: &Path, job: Option<&str>, state: Option<&str>) -> Result<i32, Error> {
    let path = match job {
        Some(j) => format!("/api/v1/jobs/{}/stop", encode_segment(j)),
        None => "/api/v1/stop".to_string(),
    };
    let (status, body) = ask(
        file,
        state,
        "POST",
        &path,
        None,
        Some(super::timeouts::answer()),
    )?;
    match (status, job) {
        (200, Some(j)) => {
            line_out(format_args!("{j}: stopping {} run(s)", body["stopped"]));
            Ok(crate::exit::OK)
        }
        (200, None) => {
            line_out(format_args!("the runner is stopping"));
            Ok(crate::exit::OK)
        }
        (404, _) => Err(Error::usage(said(&body))),
        _ => Err(Error::Setup(said(&body))),
    }
}

/// A POST with no body, answered within the commands' timeout.
fn post(file: &Path, state: Option<&str>, path: &str) -> Result<(u16, Value), Error> {
    ask(
        file,
        state,
        "POST",
        path,
        None,
        Some(super::timeouts::answer()),
    )
}

/// `flowrun pause FILE JOB [--for DUR]`.
pub fn pause(
    file: &Path,
    job: &str,
    span: Option<std::time::Duration>,
    state: Option<&str>,
) -> Result<i32, Error> {
    let mut path = format!("/api/v1/jobs/{}/pause", encode_segment(job));
    if let Some(d) = span {
        if d.is_zero() {
            return Err(Error::usage("--for: a pause must last a while (e.g. `2h`)"));
        }
        path.push_str(&format!("?for={}ms", d.as_millis().max(1)));
    }
    let (status, body) = post(file, state, &path)?;
    match status {
        200 => {
            match body["until"].as_str() {
                Some(until) => line_out(format_args!("{job}: paused until {until}")),
                None => line_out(format_args!("{job}: paused (until `flowrun resume`)")),
            }
            Ok(crate::exit::OK)
        }
        404 | 400 => Err(Error::usage(said(&body))),
        _ => Err(Error::Setup(said(&body))),
    }
}

/// `flowrun resume FILE JOB`.
pub fn resume(file: &Path, job: &str, state: Option<&str>) -> Result<i32, Error> {
    let path = format!("/api/v1/jobs/{}/resume", encode_segment(job));
    let (status, body) = post(file, state, &path)?;
    match status {
        200 => {
            match body["was_paused"].as_bool() {
                Some(true) => line_out(format_args!("{job}: resumed")),
                _ => line_out(format_args!("{job}: was not paused")),
            }
            Ok(crate::exit::OK)
        }
        404 => Err(Error::usage(said(&body))),
        _ => Err(Error::Setup(said(&body))),
    }
}

pub fn reload(file: &Path, state: Option<&str>) -> Result<i32, Error> {
    // A large file takes a while to validate.
    let (status, body) = ask(
        file,
        state,
        "POST",
        "/api/v1/reload",
        None,
        Some(4 * super::timeouts::answer()),
    )?;
    match status {
        200 => {
            let list = |key: &str| {
                body[key]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "-".into())
            };
            line_out(format_args!(
                "reloaded: added {}; removed {}; changed {}",
                list("added"),
                list("removed"),
                list("changed")
            ));
            Ok(crate::exit::OK)
        }
        422 => {
            print_err(body["report"].as_str().unwrap_or_default());
            line_err(format_args!("the runner keeps its current plan"));
            Ok(crate::exit::FAILED)
        }
        // Valid text that cannot be applied live (a channel in use changing kind).
        409 => {
            line_err(format_args!("reload refused: {}", said(&body)));
            line_err(format_args!("the runner keeps its current plan"));
            Ok(crate::exit::FAILED)
        }
        _ => Err(Error::Setup(said(&body))),
    }
}

/// A job name as one URL path segment.
fn encode_segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
