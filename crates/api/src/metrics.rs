//! API metrics: requests by route template and status, and rides by status. Labels are
//! bounded: matched paths (never raw URLs), status codes and ride states.

use std::sync::LazyLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use bimride_domain::ride::RideStatus;
use bimride_kafka::metrics::{counter, gauges, histogram, latency_buckets};
use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};

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

static RIDES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauges(
        "bimride_rides",
        "Rides this API instance knows, by status.",
        &["status"],
    )
});

/// Counts and times every request that matched a route.
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

/// Moves one ride between status gauges; `before` is `None` for a ride seen first.
pub(crate) fn ride_moved(before: Option<RideStatus>, after: RideStatus) {
    if before == Some(after) {
        return;
    }
    if let Some(b) = before {
        RIDES.with_label_values(&[b.as_str()]).dec();
    }
    RIDES.with_label_values(&[after.as_str()]).inc();
}
