//! `GET /api/v1/graph`: the graph of the plan being run, as SVG drawn by flowrun ([`crate::graph_svg`]).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use super::api::error;
use super::Context;

pub async fn graph(State(ctx): State<Arc<Context>>) -> Response {
    let plan = ctx.plan.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(plan) = plan else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the plan is not known yet");
    };
    // Drawn off the API's one thread: a plan of thousands of jobs takes a moment.
    match tokio::task::spawn_blocking(move || crate::graph_svg::svg(&plan)).await {
        Ok(svg) => (
            [(header::CONTENT_TYPE, "image/svg+xml; charset=utf-8")],
            svg,
        )
            .into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the graph could not be drawn",
        ),
    }
}
