//! The routes of the control API (SPEC §5). Every handler asks the engine by message ([`EngineHandle`]) or reads
//! the store from a blocking task: nothing here can hold the dispatcher. Errors are JSON `{"error": ...}` with
//! the status code that says what went wrong.

use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

use super::Context;
use crate::engine::requests::{LiveStatus, Refusal, TriggerReply};

/// The largest request body taken (no route needs more than a small JSON object).
const MAX_BODY: usize = 16 * 1024;

/// The routes; `tcp`: requests that change anything need the token (the Unix socket is guarded by its mode).
pub fn router(ctx: Arc<Context>, tcp: bool) -> Router {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/history", get(super::history_pages::history))
        .route("/api/v1/jobs/{job}/trigger", post(trigger))
        .route("/api/v1/jobs/{job}/stop", post(stop_job))
        .route("/api/v1/jobs/{job}/pause", post(super::pause::pause))
        .route("/api/v1/jobs/{job}/resume", post(super::pause::resume))
        .route("/api/v1/stop", post(stop_runner))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/events", get(super::events::events))
        .route("/api/v1/graph", get(super::graph::graph))
        .route("/api/v1/cluster", get(super::cluster::cluster))
        .route("/api/v1/jobs/{job}/runs/{run}", get(super::runs::run))
        .route("/api/v1/jobs/{job}/runs/{run}/log", get(super::runlog::log))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/", get(crate::webpage::index))
        .route("/ui/{file}", get(crate::webpage::asset))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY));
    let router = match tcp {
        true => router.layer(axum::middleware::from_fn_with_state(ctx.clone(), guard)),
        false => router,
    };
    router.with_state(ctx)
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

pub(super) fn engine_gone() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the runner is shutting down",
    )
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no route {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not take {method}", uri.path()),
    )
}

/// On TCP: reading is open; changing needs `Authorization: Bearer TOKEN`, compared in constant time. Without a
/// token the TCP side is read-only.
async fn guard(State(ctx): State<Arc<Context>>, request: Request, next: Next) -> Response {
    // Only what could change something needs the token; any other method is answered by the routes (405, 404).
    let changes = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if !changes {
        return next.run(request).await;
    }
    let Some(token) = &ctx.token else {
        return error(
            StatusCode::FORBIDDEN,
            "the TCP listener is read-only: start the runner with FLOWRUN_TOKEN set to allow changes, or use the control socket",
        );
    };
    match unless_bearer(
        request.headers(),
        token,
        "a valid `Authorization: Bearer TOKEN` is needed to change anything",
    ) {
        Some(refusal) => refusal,
        None => next.run(request).await,
    }
}

/// 401 with `why` unless the request carries `Authorization: Bearer TOKEN` (compared in constant time).
pub(super) fn unless_bearer(headers: &HeaderMap, token: &str, why: &str) -> Option<Response> {
    let given = bearer(headers).unwrap_or_default();
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        return None;
    }
    let mut response = error(StatusCode::UNAUTHORIZED, why);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("valid"));
    Some(response)
}

/// The token of `Authorization: Bearer TOKEN` (the scheme is case-insensitive, RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Equal without an early exit, so the time taken does not tell how much of the token a guess got right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

async fn healthz(State(ctx): State<Arc<Context>>) -> Response {
    match ctx.engine.healthy().await {
        true => (StatusCode::OK, "ok\n").into_response(),
        false => (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response(),
    }
}

/// A status the dispatcher gave, shared by every request its ask served; its JSON is written once, for all.
pub struct Snapshot {
    status: LiveStatus,
    json: std::sync::OnceLock<axum::body::Bytes>,
}

impl Snapshot {
    pub fn new(status: LiveStatus) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            status,
            json: Default::default(),
        })
    }

    fn json(&self) -> axum::body::Bytes {
        self.json
            .get_or_init(|| serde_json::to_vec(&self.status).unwrap_or_default().into())
            .clone()
    }
}

async fn metrics(State(ctx): State<Arc<Context>>) -> Response {
    let Some(snapshot) = ctx.status().await else {
        return engine_gone();
    };
    let text = ctx.metrics.render(&snapshot.status);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn status(State(ctx): State<Arc<Context>>) -> Response {
    match ctx.status().await {
        Some(snapshot) => json_bytes(StatusCode::OK, snapshot.json()),
        None => engine_gone(),
    }
}

/// A body already written as JSON.
pub(super) fn json_bytes(status: StatusCode, body: axum::body::Bytes) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    #[serde(default)]
    wait: bool,
}

#[derive(Deserialize, Default)]
struct TriggerQuery {
    wait: Option<bool>,
}

/// A manual firing now. Answers 200 `started` with the run number, 202 `queued` (waiting for a worker), 409
/// `skipped` with why, 404 for an unknown job; with `wait` (`?wait=true` or `{"wait": true}`), 200 once the run
/// ended, with its outcome.
async fn trigger(
    State(ctx): State<Arc<Context>>,
    job: Result<Path<String>, PathRejection>,
    query: Result<Query<TriggerQuery>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Body,
) -> Response {
    let job = match job {
        Ok(Path(job)) => job,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let Ok(Query(query)) = query else {
        return error(StatusCode::BAD_REQUEST, "bad query: use ?wait=true");
    };
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let body: TriggerBody = if body.iter().all(u8::is_ascii_whitespace) {
        TriggerBody::default()
    } else {
        // An object, nothing else (serde would take `[]` for a struct).
        let parsed = serde_json::from_slice::<serde_json::Value>(&body)
            .map_err(|e| e.to_string())
            .and_then(|v| match v.is_object() {
                true => serde_json::from_value(v).map_err(|e| e.to_string()),
                false => Err("not an object".to_string()),
            });
        match parsed {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("the body must be a JSON object like {{\"wait\": true}}: {e}"),
                )
            }
        }
    };
    let wait = body.wait || query.wait.unwrap_or(false);
    let Some((reply, ended)) = ctx.engine.trigger(&job, wait).await else {
        return engine_gone();
    };
    let (code, answer) = trigger_answer(&reply);
    match (ended, trigger_waits(&reply)) {
        (Some(ended), true) => {
            let (code, end) = trigger_end(ended).await;
            json_value(code, end)
        }
        _ => json_value(code, answer),
    }
}

fn json_value(code: u16, body: serde_json::Value) -> Response {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(body)).into_response()
}

/// The answer to a manual firing, as the API gives it (status code and body): 200 `started` with the run number,
/// 202 `queued`, 409 `skipped` (or refused: paused, cannot run), 404 unknown job, 503 stopping. The same for a
/// firing asked through the cluster's store (`flowrun trigger --store`).
pub fn trigger_answer(reply: &TriggerReply) -> (u16, serde_json::Value) {
    let code = match reply {
        TriggerReply::Started { .. } => StatusCode::OK,
        TriggerReply::Queued => StatusCode::ACCEPTED,
        TriggerReply::Skipped { .. } => StatusCode::CONFLICT,
        TriggerReply::Refused { reason, why } => {
            let status = match why {
                Refusal::UnknownJob => StatusCode::NOT_FOUND,
                Refusal::CannotRun | Refusal::Paused => StatusCode::CONFLICT,
                Refusal::Stopping => StatusCode::SERVICE_UNAVAILABLE,
            };
            return (
                status.as_u16(),
                json!({ "status": "refused", "error": reason }),
            );
        }
    };
    (
        code.as_u16(),
        serde_json::to_value(reply).unwrap_or_default(),
    )
}

/// Whether a caller waiting for the end of this firing has an end to wait for (it started or was queued).
pub fn trigger_waits(reply: &TriggerReply) -> bool {
    matches!(reply, TriggerReply::Started { .. } | TriggerReply::Queued)
}

/// How a waited firing ended, as the API gives it: 200 `ended` with its outcome, 409 `skipped`, 503 when the
/// runner stopped first.
pub async fn trigger_end(
    ended: tokio::sync::oneshot::Receiver<crate::engine::requests::RunEnded>,
) -> (u16, serde_json::Value) {
    match ended.await {
        Ok(end) if end.outcome == "skipped" => (
            StatusCode::CONFLICT.as_u16(),
            json!({ "status": "skipped", "reason": end.reason }),
        ),
        Ok(end) => (
            StatusCode::OK.as_u16(),
            json!({ "status": "ended", "run": end.run, "outcome": end.outcome,
                     "code": end.code, "signal": end.signal, "success": end.success,
                     "reason": end.reason }),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE.as_u16(),
            json!({ "error": "the runner stopped before the run ended" }),
        ),
    }
}

/// The request body, at most [`MAX_BODY`] bytes within the client timeout; else the JSON error to answer.
async fn read_body(body: axum::body::Body) -> Result<axum::body::Bytes, Response> {
    match tokio::time::timeout(
        super::timeouts::client(),
        axum::body::to_bytes(body, MAX_BODY),
    )
    .await
    {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if too_large(&e) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {} KiB", MAX_BODY / 1024),
        )),
        Ok(Err(e)) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("the body is broken: {e}"),
        )),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive in time",
        )),
    }
}

/// Whether reading a body failed for its size (a broken chunked encoding is another matter: 400).
fn too_large(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

async fn stop_job(
    State(ctx): State<Arc<Context>>,
    job: Result<Path<String>, PathRejection>,
) -> Response {
    let job = match job {
        Ok(Path(job)) => job,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match ctx.engine.stop(Some(&job)).await {
        Some(Ok(n)) => Json(json!({ "job": job, "stopped": n })).into_response(),
        Some(Err(e)) => error(StatusCode::NOT_FOUND, e),
        None => engine_gone(),
    }
}

async fn stop_runner(State(ctx): State<Arc<Context>>) -> Response {
    match ctx.engine.shutdown().await {
        true => Json(json!({ "stopping": true })).into_response(),
        false => engine_gone(),
    }
}

/// The OpenAPI 3.1 document of this API (kept true by `tests/openapi.rs`).
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    json_bytes(
        StatusCode::OK,
        axum::body::Bytes::from_static(OPENAPI.as_bytes()),
    )
}

async fn reload(State(ctx): State<Arc<Context>>) -> Response {
    super::reload::reload(&ctx).await
}
