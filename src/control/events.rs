//! `GET /api/v1/events`: the runner's events as server-sent events, one JSON record (the event log's, SPEC §3)
//! per `data:` line, from the moment of the request on. A listener that falls more than the tap's backlog behind
//! gets an `event: lagged` with how many it lost (it should read the status again) and goes on.

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::broadcast::{error::RecvError, Receiver};

use super::Context;

pub async fn events(State(ctx): State<Arc<Context>>) -> Response {
    let Ok(permit) = ctx.streams.clone().try_acquire_owned() else {
        return too_many_streams();
    };
    let tap = ctx.reporter.subscribe();
    Sse::new(records(tap, permit))
        .keep_alive(KeepAlive::new().interval(super::STREAM_KEEP_ALIVE))
        .into_response()
}

/// 503: every stream is taken (see [`super::MAX_STREAMS`]).
pub fn too_many_streams() -> Response {
    let mut response = super::api::error(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "{} streams are open, the most at once: try again later",
            super::MAX_STREAMS
        ),
    );
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("5"),
    );
    response
}

/// Each record as a server-sent event, until the runner's reporter is gone; the stream's permit goes with it.
fn records(
    tap: Receiver<Arc<str>>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold((tap, permit), |(mut tap, permit)| async move {
        let event = match tap.recv().await {
            Ok(json) => Event::default().data(&*json),
            Err(RecvError::Lagged(lost)) => Event::default().event("lagged").data(lost.to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), (tap, permit)))
    })
}
