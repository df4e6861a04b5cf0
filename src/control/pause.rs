//! `POST /api/v1/jobs/{job}/pause[?for=DUR]` and `POST /api/v1/jobs/{job}/resume` (SPEC §7).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

use super::api::{engine_gone, error};
use super::Context;

#[derive(serde::Deserialize)]
pub struct PauseQuery {
    /// How long (`30m`, `2h`); none: until resumed.
    #[serde(rename = "for")]
    span: Option<String>,
}

/// 200 with the job and when it resumes by itself (`until`, or null); 404 for an unknown job; 400 for a bad
/// duration.
pub async fn pause(
    State(ctx): State<Arc<Context>>,
    job: Result<Path<String>, PathRejection>,
    query: Result<Query<PauseQuery>, QueryRejection>,
) -> Response {
    let job = match job {
        Ok(Path(job)) => job,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad query: use ?for=DURATION (e.g. 2h)",
        );
    };
    let until = match query.span.as_deref().map(crate::values::parse_duration) {
        None => None,
        // At most a century: beyond it, a time the state could not write back (and then forget).
        Some(Ok(d)) if d > std::time::Duration::from_secs(100 * 366 * 86_400) => {
            return error(
                StatusCode::BAD_REQUEST,
                "`for` is too long: at most 100 years (or no `for`: until resumed)",
            )
        }
        Some(Ok(d)) => match chrono::Duration::from_std(d) {
            Ok(d) if !d.is_zero() => Some(chrono::Utc::now() + d),
            _ => return error(StatusCode::BAD_REQUEST, "`for` must be a positive duration"),
        },
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("`for`: {e}")),
    };
    match ctx.engine.pause(&job, until).await {
        Some(Ok(())) => Json(json!({ "job": job, "paused": true, "until": until })).into_response(),
        Some(Err(e)) => error(StatusCode::NOT_FOUND, e),
        None => engine_gone(),
    }
}

/// 200 with whether it was paused; 404 for an unknown job.
pub async fn resume(
    State(ctx): State<Arc<Context>>,
    job: Result<Path<String>, PathRejection>,
) -> Response {
    let job = match job {
        Ok(Path(job)) => job,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match ctx.engine.resume(&job).await {
        Some(Ok(was)) => {
            Json(json!({ "job": job, "paused": false, "was_paused": was })).into_response()
        }
        Some(Err(e)) => error(StatusCode::NOT_FOUND, e),
        None => engine_gone(),
    }
}
