//! Metrics, logs and HTTP serving, the same way in every service.
//!
//! Metrics live in Prometheus's default registry, registered through the helpers here; every
//! process serves them at `/metrics`. Labels are bounded: topics, reasons, stages, matched
//! routes and status codes, never ids or raw URLs.

mod canned;
mod server;

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{
    Gauge, GaugeVec, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, register_gauge,
    register_gauge_vec, register_histogram_vec, register_int_counter_vec, register_int_gauge,
    register_int_gauge_vec,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use server::{HttpLimits, Rejection, spawn_server, spawn_server_shaped};
use tokio_util::sync::CancellationToken;

/// Registers a counter family with the default registry.
pub fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    // Registration fails only on a duplicate name, which is a programming error caught by
    // any test that touches the metric.
    register_int_counter_vec!(name, help, labels)
        .unwrap_or_else(|e| panic!("metric {name} registers once: {e}"))
}

/// Registers a gauge family with the default registry.
pub fn gauges(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register_int_gauge_vec!(name, help, labels)
        .unwrap_or_else(|e| panic!("metric {name} registers once: {e}"))
}

/// Registers a gauge with the default registry.
pub fn gauge(name: &str, help: &str) -> IntGauge {
    register_int_gauge!(name, help).unwrap_or_else(|e| panic!("metric {name} registers once: {e}"))
}

/// Registers a gauge of a measured quantity, such as seconds, with the default registry.
pub fn measure(name: &str, help: &str) -> Gauge {
    register_gauge!(name, help).unwrap_or_else(|e| panic!("metric {name} registers once: {e}"))
}

/// Registers gauges of a measured quantity, with labels, with the default registry.
pub fn measures(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register_gauge_vec!(name, help, labels)
        .unwrap_or_else(|e| panic!("metric {name} registers once: {e}"))
}

/// Registers a histogram family with the default registry, with buckets in seconds.
pub fn histogram(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    register_histogram_vec!(name, help, labels, buckets)
        .unwrap_or_else(|e| panic!("metric {name} registers once: {e}"))
}

/// Latency buckets from 1 ms to 30 s.
pub fn latency_buckets() -> Vec<f64> {
    vec![
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ]
}

static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_http_requests_total",
        "HTTP requests answered, by method, matched route and status code.",
        &["method", "path", "status"],
    )
});

static DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "bimride_http_request_duration_seconds",
        "Time to answer an HTTP request, by method and matched route.",
        &["method", "path"],
        latency_buckets(),
    )
});

/// Middleware that counts and times every request that matched a route.
pub async fn track(request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    DURATION
        .with_label_values(&[&method, &path])
        .observe(started.elapsed().as_secs_f64());
    REQUESTS
        .with_label_values(&[&method, &path, response.status().as_str()])
        .inc();
    response
}

async fn metrics() -> impl IntoResponse {
    let body = prometheus::TextEncoder::new()
        .encode_to_string(&prometheus::gather())
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// `/metrics` and `/healthz`.
pub fn router() -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
}

#[derive(Debug, thiserror::Error)]
#[error("the metrics endpoint on {addr}: {source}")]
pub struct EndpointError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Serves `/metrics` and `/healthz` on `addr` until `shutdown`: the HTTP face of a service
/// that has no API of its own.
pub async fn serve(
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<JoinHandle<std::io::Result<()>>, EndpointError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| EndpointError { addr, source })?;
    tracing::info!(%addr, "metrics endpoint listening");
    Ok(spawn_server(
        listener,
        router(),
        HttpLimits::default(),
        shutdown,
    ))
}

/// Logs to stderr, as text or JSON lines; `BIMRIDE_LOG` overrides `default` (an `EnvFilter`
/// directive).
pub fn init_tracing(json: bool, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BIMRIDE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal: a file or a pipe gets plain text, and
    // NO_COLOR (https://no-color.org) turns it off everywhere.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
