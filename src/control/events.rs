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
    let tap = ctx.reporter.subscribe();
    Sse::new(records(tap))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Each record as a server-sent event, until the runner's reporter is gone.
fn records(tap: Receiver<Arc<str>>) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(tap, |mut tap| async move {
        let event = match tap.recv().await {
            Ok(json) => Event::default().data(&*json),
            Err(RecvError::Lagged(lost)) => Event::default().event("lagged").data(lost.to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), tap))
    })
}
