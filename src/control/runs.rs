//! `GET /api/v1/jobs/{job}/runs/{run}`: one run as the history keeps it (its row, with reason, exit and outcome)
//! and its tries (the first and each retry that ended). The run's page shows this; its log is [`super::runlog`].

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

use super::api::error;
use super::readers::ReadError;
use super::Context;
use crate::store::{Query, RunRow, SqliteStore, Store};

/// Why a run cannot be answered: the status and the error's text.
pub type Refused = (StatusCode, String);

/// The answer for a refusal: `{"error": ...}` with its status.
pub fn refused((status, why): Refused) -> Response {
    error(status, why)
}

/// The job and run number of a path, checked.
pub fn job_and_run(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, u64), Refused> {
    let (job, run) = match path {
        Ok(Path(parts)) => parts,
        Err(e) => return Err((StatusCode::BAD_REQUEST, e.body_text())),
    };
    match run.parse::<u64>() {
        Ok(n) if n > 0 => Ok((job, n)),
        _ => Err((
            StatusCode::BAD_REQUEST,
            format!("`{run}` is not a run number (a whole number from 1)"),
        )),
    }
}

/// Run `run` of `job` in the history (its last try).
pub fn find(store: &SqliteStore, job: &str, run: u64) -> Result<Option<RunRow>, String> {
    let rows = store
        .history(&Query {
            jobs: vec![job.to_string()],
            run: Some(run),
            limit: 1,
            ..Query::default()
        })
        .map_err(|e| e.to_string())?;
    Ok(rows.into_iter().next())
}

/// The row and tries of a run, read by one of the store's readers; `Err`: the answer to give instead.
pub async fn read_run(
    ctx: &Context,
    job: &str,
    run: u64,
) -> Result<(RunRow, Vec<RunRow>), Refused> {
    let Some(readers) = &ctx.readers else {
        return Err((
            StatusCode::CONFLICT,
            "this runner keeps no history (--state none)".into(),
        ));
    };
    let asked = job.to_string();
    let read = readers
        .read(move |store| {
            let Some(store) = store else {
                return Ok(None);
            };
            let Some(row) = find(store, &asked, run)? else {
                return Ok(None);
            };
            let tries = store.tries(&asked, run).map_err(|e| e.to_string())?;
            Ok(Some((row, tries)))
        })
        .await;
    match read {
        Ok(Some(found)) => Ok(found),
        Ok(None) if !ctx.knows(job) => Err((
            StatusCode::NOT_FOUND,
            format!("there is no job `{job}` in this workflow, nor a run of it in the history"),
        )),
        Ok(None) => Err((
            StatusCode::NOT_FOUND,
            format!("there is no run #{run} of `{job}` in the history (never, or pruned)"),
        )),
        Err(ReadError::Busy) => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "the history readers are all busy: try again in a second".into(),
        )),
        Err(ReadError::Failed(e)) => Err((StatusCode::INTERNAL_SERVER_ERROR, e)),
    }
}

pub async fn run(
    State(ctx): State<Arc<Context>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let (job, number) = match job_and_run(path) {
        Ok(found) => found,
        Err(why) => return refused(why),
    };
    match read_run(&ctx, &job, number).await {
        Ok((row, tries)) => Json(json!({ "run": row, "tries": tries })).into_response(),
        Err(why) => refused(why),
    }
}
