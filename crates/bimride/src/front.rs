//! The HTTP front of `bimride up`: system facts, health, readiness and metrics.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use bimride_domain::City;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde::Serialize;

/// What `/v1/system` reports: where other clients can connect.
#[derive(Debug, Clone, Serialize)]
pub struct SystemInfo {
    pub kafka_bootstrap_servers: String,
    pub schema_registry_url: String,
    pub embedded: bool,
    pub city: City,
    pub version: &'static str,
}

pub struct FrontState {
    pub info: SystemInfo,
    /// One client for readiness probes, made at start-up rather than per request.
    pub kafka: Arc<BaseConsumer>,
    pub http: reqwest::Client,
}

impl std::fmt::Debug for FrontState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontState")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

pub fn router(state: Arc<FrontState>) -> Router {
    Router::new()
        .route("/v1/system", get(system))
        .route("/readyz", get(ready))
        .with_state(state)
        .merge(metrics_router())
}

async fn system(State(s): State<Arc<FrontState>>) -> Json<SystemInfo> {
    Json(s.info.clone())
}

#[derive(Debug, Serialize)]
struct Readiness {
    kafka: bool,
    schema_registry: bool,
}

async fn ready(State(s): State<Arc<FrontState>>) -> impl IntoResponse {
    let kafka = kafka_answers(Arc::clone(&s.kafka)).await;
    let schema_registry = s
        .http
        .get(format!("{}/subjects", s.info.schema_registry_url))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    let status = if kafka && schema_registry {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            kafka,
            schema_registry,
        }),
    )
}

async fn kafka_answers(client: Arc<BaseConsumer>) -> bool {
    // A metadata request blocks, so it runs off the async runtime.
    tokio::task::spawn_blocking(move || client.fetch_metadata(None, Duration::from_secs(2)).is_ok())
        .await
        .unwrap_or(false)
}

async fn metrics() -> impl IntoResponse {
    let body = prometheus::TextEncoder::new()
        .encode_to_string(&prometheus::gather())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// `/metrics` and `/healthz`.
pub fn metrics_router() -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
}

/// Serves `/metrics` and `/healthz` on `addr` until `shutdown`: the HTTP face of a service
/// that has no API of its own.
pub async fn serve_metrics(
    addr: std::net::SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint to {addr}"))?;
    let app = metrics_router();
    tracing::info!(%addr, "metrics endpoint listening");
    Ok(tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("metrics endpoint")
    }))
}
