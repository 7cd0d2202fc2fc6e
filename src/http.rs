//! The operations endpoint: `/metrics` (Prometheus text format), `/healthz` (the process serves
//! requests) and `/readyz` (the relay streams from Postgres into Kafka and is caught up).

use std::net::SocketAddr;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::metrics::metrics;

/// The endpoint could not listen.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {address} (metrics.listen): {source}")]
pub struct BindError {
    address: SocketAddr,
    source: std::io::Error,
}

/// Binds `address` and serves the endpoints on a task of the current runtime; returns the bound
/// address (useful with port 0).
pub async fn serve(address: SocketAddr) -> Result<SocketAddr, BindError> {
    let bind_error = |source| BindError { address, source };
    let listener = TcpListener::bind(address).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readiness));
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(error = %error, "the metrics endpoint stopped");
        }
    });
    tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
    Ok(bound)
}

async fn render_metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        metrics().render(),
    )
}

async fn readiness() -> impl IntoResponse {
    match metrics().readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}
