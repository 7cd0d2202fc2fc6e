//! The operations endpoint: `/metrics` (Prometheus text format), `/healthz` (the process serves
//! requests) and `/readyz` (the relay streams from Postgres into Kafka and is caught up, or, on a
//! standby, stands by able to take over).
//!
//! A healthy standby answers `/readyz` with 200 (`ready: standing by`): readiness says whether the
//! instance contributes to the relay's availability, and a standby that can take over does. With
//! a standby not ready, a PodDisruptionBudget of `minAvailable: 1` would count one healthy pod
//! of two and refuse to evict the active one (a node drain would hang), and a rolling update with
//! `maxUnavailable: 0` would never finish. outboxd serves no traffic through a Service, so nothing
//! is routed by readiness; which instance is active is `outboxd_role{role="active"}`.

use std::net::SocketAddr;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::metrics::{metrics, Role};

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
        Ok(()) if metrics().role() == Role::Standby => {
            (StatusCode::OK, "ready: standing by\n".to_owned())
        }
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}
