//! `GET /api/v1/cluster`: the runners of this runner's cluster, as `flowrun status --store --format json` lists
//! them (read from the store, off the API's thread), with this runner's id; 404 when it is not in a cluster, 503
//! when the store does not answer.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

use super::api::error;
use super::Context;

/// What the route needs of the runner's cluster.
#[derive(Clone)]
pub struct ClusterView {
    pub config: crate::cluster::Config,
    pub client: redis::Client,
}

pub async fn cluster(State(ctx): State<Arc<Context>>) -> Response {
    let Some(view) = ctx.cluster.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "this runner is not in a cluster (it was started without --store)",
        );
    };
    let read = tokio::task::spawn_blocking(move || {
        let config = &view.config;
        let mut conn = crate::cluster::store::connect(&view.client).map_err(|e| e.to_string())?;
        crate::cluster::runners::runners(&mut conn, &config.keys(), &config.file_hash)
            .map_err(|e| e.to_string())
            .map(|runners| {
                serde_json::json!({
                    "cluster": config.name,
                    "runner": config.runner_id,
                    "runners": runners,
                })
            })
    })
    .await;
    match read {
        Ok(Ok(doc)) => Json(doc).into_response(),
        Ok(Err(e)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the cluster's store does not answer: {e}"),
        ),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the cluster's runners could not be read",
        ),
    }
}
