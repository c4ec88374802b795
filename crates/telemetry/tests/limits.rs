//! HTTP limits over real sockets: thousands of idle and slow clients do not starve normal
//! requests, and each of them is closed once its timeout passes.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::{get, post};
use bimride_telemetry::{HttpLimits, spawn_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const LIMITS: HttpLimits = HttpLimits {
    header_timeout_ms: 1_000,
    body_timeout_ms: 1_000,
    idle_timeout_ms: 3_000,
    max_connections: 4_096,
    max_body_bytes: 1_024,
};

async fn start(limits: HttpLimits) -> (String, CancellationToken) {
    let app = Router::new()
        .route("/ping", get(|| async { "pong" }))
        .route(
            "/echo",
            post(|body: Bytes| async move { body.len().to_string() }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let stop = CancellationToken::new();
    spawn_server(listener, app, limits, stop.clone());
    (addr, stop)
}

/// Latencies of `n` pings on one kept-alive connection, sorted, in ms.
async fn pings(addr: &str, n: usize) -> Vec<f64> {
    let client = reqwest::Client::new();
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let response = client
            .get(format!("http://{addr}/ping"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("a normal request is served");
        assert_eq!(response.status(), 200);
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    ms
}

fn median(sorted: &[f64]) -> f64 {
    sorted[sorted.len() / 2]
}

/// Resident memory of this process, from /proc, in MB.
fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}

/// A hostile client: it connects, maybe sends a first part, then trickles a byte every
/// 300 ms, and reports what the server sent back before closing; `None` if it never closed.
async fn hostile(addr: String, first: &'static [u8], trickle: bool) -> Option<Vec<u8>> {
    let mut socket = TcpStream::connect(&addr).await.expect("connects");
    socket.write_all(first).await.expect("writes");
    let mut answer = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let mut buf = [0u8; 512];
        let tick = tokio::time::sleep(Duration::from_millis(300));
        tokio::select! {
            read = socket.read(&mut buf) => match read {
                Ok(0) | Err(_) => return Some(answer),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            },
            () = tick => {
                if tokio::time::Instant::now() > deadline {
                    return None;
                }
                // A write to a closed socket fails; the read above then sees the close.
                if trickle {
                    let _ = socket.write_all(b"x").await;
                }
            }
        }
    }
}

/// Opens 1,500 hostile sockets (bare ones, slowloris headers, and bodies trickled a byte at
/// a time), checks that pings beside them keep their latency, waits until the server has
/// closed every one, and returns the resident memory while they were open.
async fn wave(addr: &str, quiet: &[f64]) -> f64 {
    let mut clients = Vec::new();
    for n in 0..1_500 {
        let (first, trickle): (&'static [u8], bool) = match n % 3 {
            0 => (b"", false),
            1 => (b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Slow: ", true),
            _ => (
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n",
                true,
            ),
        };
        clients.push(tokio::spawn(hostile(addr.to_owned(), first, trickle)));
        // A hundred at a time, within the listen backlog.
        if n % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = rss_mb();
    let besieged = pings(addr, 200).await;
    eprintln!(
        "ping p50 {:.2} ms quiet, {:.2} ms beside 1,500 hostile sockets",
        median(quiet),
        median(&besieged)
    );
    assert!(
        median(&besieged) < (median(quiet) * 10.0).max(20.0),
        "normal requests slowed: p50 {:.2} ms against {:.2} ms",
        median(&besieged),
        median(quiet)
    );
    let (mut open, mut timed_out_bodies) = (0, 0);
    for (n, client) in clients.into_iter().enumerate() {
        match client.await.expect("joins") {
            None => open += 1,
            Some(answer) if n % 3 == 2 && answer.starts_with(b"HTTP/1.1 408") => {
                timed_out_bodies += 1;
            }
            Some(_) => {}
        }
    }
    assert_eq!(
        (open, timed_out_bodies),
        (0, 500),
        "every socket closed by the server, every trickled body answered 408"
    );
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_are_closed_and_normal_requests_still_served() {
    let (addr, stop) = start(LIMITS).await;
    let quiet = pings(&addr, 200).await;
    let before = rss_mb();
    let held = wave(&addr, &quiet).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    eprintln!(
        "RSS {before:.1} MB before, {held:.1} MB with the sockets open, {:.1} MB after",
        rss_mb()
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_a_client_waits_until_a_slot_frees() {
    let (addr, stop) = start(HttpLimits {
        max_connections: 8,
        ..LIMITS
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let waited = pings(&addr, 1).await;
    let elapsed = started.elapsed();
    // The eight idle sockets hold every slot until their header timeout closes them.
    assert!(
        elapsed >= Duration::from_millis(800),
        "served at once past the cap: {waited:?}"
    );
    assert!(elapsed < Duration::from_secs(4), "waited {elapsed:?}");
    drop(idle);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_a_json_413() {
    let (addr, stop) = start(LIMITS).await;
    let client = reqwest::Client::new();
    let response = client
        .post(format!("http://{addr}/echo"))
        .body(vec![b'x'; 2_048])
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.expect("a JSON error");
    assert_eq!(body["error"]["code"], "body_too_large");
    let response = client
        .post(format!("http://{addr}/echo"))
        .body(vec![b'x'; 512])
        .send()
        .await
        .expect("answered");
    assert_eq!(response.text().await.expect("text"), "512");
    stop.cancel();
}

/// What the server answers to `request` written raw, whole.
async fn raw(addr: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before the whole request is written.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_too_broken_to_route_still_get_a_json_error() {
    let (addr, _stop) = start(LIMITS).await;
    let long_uri = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000));
    let huge_headers = format!(
        "GET /ping HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "b".repeat(600_000)
    );
    for (request, status, code) in [
        (
            "GET /ping HTTP/1.1 junk\r\n\r\n".to_owned(),
            400,
            "bad_request",
        ),
        (long_uri, 414, "uri_too_long"),
        (huge_headers, 431, "headers_too_large"),
    ] {
        let answer = raw(&addr, request.as_bytes()).await;
        let (head, body) = answer.split_once("\r\n\r\n").expect("a whole response");
        assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(str::to_owned)
            })
            .and_then(|n| n.parse().ok())
            .expect("content-length");
        assert_eq!(length, body.len(), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
        assert_eq!(json["error"]["code"], code, "{json}");
    }
    // A normal request on a fresh connection is untouched.
    assert_eq!(pings(&addr, 1).await.len(), 1);
}
