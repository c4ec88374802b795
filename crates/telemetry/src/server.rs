//! The one way a BimRide process serves HTTP: request metrics, limits against slow and idle
//! clients, and a graceful end on the shutdown token.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::{canned, track};

/// What a listener allows each client. A socket that holds a connection without using it, or
/// sends a request slowly, is closed; past the connection cap, clients wait in the backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// From a connection's start, or the end of its previous response, until the request's
    /// headers are complete.
    pub header_timeout_ms: u64,
    /// From the headers until the whole body has arrived.
    pub body_timeout_ms: u64,
    /// Longest pause in a connection's traffic, either way: a client that stops reading the
    /// response is dropped too.
    pub idle_timeout_ms: u64,
    pub max_connections: usize,
    /// Larger bodies are refused with 413 before they are read.
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections: 4_096,
            max_body_bytes: 4 * 1024 * 1024,
        }
    }
}

impl HttpLimits {
    /// What cannot work, if anything.
    pub fn check(&self) -> Result<(), &'static str> {
        let timeouts = [
            self.header_timeout_ms,
            self.body_timeout_ms,
            self.idle_timeout_ms,
        ];
        if !timeouts.iter().all(|t| (100..=3_600_000).contains(t)) {
            return Err("HTTP timeouts must be 100 ms to an hour");
        }
        if !(1..=1_000_000).contains(&self.max_connections) {
            return Err("the HTTP connection cap must be 1 to 1000000");
        }
        Ok(())
    }
}

/// How long connections get to finish their requests once shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);

/// How a listener words the refusals its limits give (413, 408, 400): a status, a short code
/// and a message, in the error shape of the protocol it serves.
pub type Rejection = fn(StatusCode, &'static str, String) -> Response;

/// Serves `app` on `listener` within `limits` until `shutdown`, on a task of its own, counting
/// and timing every request. Refusals take the API's error shape.
pub fn spawn_server(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> JoinHandle<std::io::Result<()>> {
    spawn_server_shaped(listener, app, limits, rejected, shutdown)
}

/// [`spawn_server`], with refusals worded by `rejection`. Handlers find the client's address
/// as `ConnectInfo<SocketAddr>`.
pub fn spawn_server_shaped(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    rejection: Rejection,
    shutdown: CancellationToken,
) -> JoinHandle<std::io::Result<()>> {
    let app = app
        .route_layer(middleware::from_fn(track))
        .layer(middleware::from_fn_with_state(
            (limits, rejection),
            read_body,
        ));
    tokio::spawn(async move {
        let bodies = canned::Bodies::render(rejection).await;
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let connections = GracefulShutdown::new();
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(limits.header_timeout_ms));
        loop {
            let slot = tokio::select! {
                () = shutdown.cancelled() => break,
                slot = Arc::clone(&slots).acquire_owned() => slot,
            };
            let Ok(slot) = slot else { break };
            let stream = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // the listener itself is fine.
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let (stream, peer) = stream;
            let mut stream = TimeoutStream::new(stream);
            let idle = Duration::from_millis(limits.idle_timeout_ms);
            stream.set_read_timeout(Some(idle));
            stream.set_write_timeout(Some(idle));
            let service = app
                .clone()
                .map_request(move |r: Request<hyper::body::Incoming>| {
                    let mut r = r.map(Body::new);
                    r.extensions_mut().insert(ConnectInfo(peer));
                    r
                });
            let conn = http.serve_connection(
                TokioIo::new(canned::Canned::new(Box::pin(stream), bodies.clone())),
                TowerToHyperService::new(service),
            );
            let conn = connections.watch(conn);
            tokio::spawn(async move {
                // Timeouts and resets end a connection; they say nothing about the server.
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection closed");
                }
                drop(slot);
            });
        }
        if tokio::time::timeout(DRAIN, connections.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the drain; closing them");
        }
        Ok(())
    })
}

/// Reads the whole body, within the time and size the limits allow, before the handler runs:
/// a body trickled a byte at a time cannot hold its connection.
async fn read_body(
    State((limits, rejected)): State<(HttpLimits, Rejection)>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes) {
        return too_large(limits, rejected);
    }
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, limits.max_body_bytes);
    let within = Duration::from_millis(limits.body_timeout_ms);
    match tokio::time::timeout(within, read).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(_)) if declared.is_none() => too_large(limits, rejected),
        Ok(Err(_)) => rejected(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request body could not be read".into(),
        ),
        Err(_) => rejected(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive in time".into(),
        ),
    }
}

fn too_large(limits: HttpLimits, rejected: Rejection) -> Response {
    rejected(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!(
            "request body is larger than {} bytes",
            limits.max_body_bytes
        ),
    )
}

/// The API's error shape: `{"error": {"code", "message"}}`.
fn rejected(status: StatusCode, code: &'static str, message: String) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}
