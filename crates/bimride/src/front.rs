//! The HTTP front of `bimride up`: system facts, health, readiness and metrics.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
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
    /// The registry's `user:password`, when it asks for one; never reported.
    #[serde(skip)]
    pub schema_registry_credential: Option<(String, String)>,
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
        .merge(bimride_telemetry::router())
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
    let mut probe = s
        .http
        .get(format!("{}/subjects", s.info.schema_registry_url));
    if let Some((user, password)) = &s.info.schema_registry_credential {
        probe = probe.basic_auth(user, Some(password));
    }
    let schema_registry = probe
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
