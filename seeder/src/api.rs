//! The gateway's HTTP API: `GET /api/v1/devices`, `GET /api/v1/releases`, `GET /metrics`.

use std::net::SocketAddr;

use axum::{extract::State, http::header, response::IntoResponse, routing::get, Json, Router};
use tokio_util::sync::CancellationToken;

use crate::gateway::ApiState;

async fn devices(State(s): State<ApiState>) -> impl IntoResponse {
    Json(s.devices())
}

async fn releases(State(s): State<ApiState>) -> impl IntoResponse {
    Json(s.releases())
}

async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics(),
    )
}

/// The router.
pub fn router(s: ApiState) -> Router {
    Router::new()
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/releases", get(releases))
        .route("/metrics", get(metrics))
        .with_state(s)
}

/// Serves the API on a bound listener until `stop`; returns the bound address.
pub fn serve(
    s: ApiState,
    l: tokio::net::TcpListener,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let a = l.local_addr()?;
    let app = router(s);
    tokio::spawn(async move {
        let r = axum::serve(l, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "gateway API stopped");
        }
    });
    Ok(a)
}
