//! hyper answers a request it cannot parse (a bad request line, a URI over 64 KiB, headers
//! over its buffer) on its own, before any handler runs, with an empty body. Clients are
//! promised a JSON error on every 4xx, so the connection's writer recognises those answers,
//! and only those, and gives them the listener's error body.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::server::Rejection;

/// The statuses hyper answers by itself, with their reason phrases as it writes them.
const CANNED: [(StatusCode, &str, &str, &str); 3] = [
    (
        StatusCode::BAD_REQUEST,
        "HTTP/1.1 400 Bad Request\r\n",
        "bad_request",
        "the request could not be parsed as HTTP/1.1",
    ),
    (
        StatusCode::URI_TOO_LONG,
        "HTTP/1.1 414 URI Too Long\r\n",
        "uri_too_long",
        "the request URI is longer than 64 KiB",
    ),
    (
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "HTTP/1.1 431 Request Header Fields Too Large\r\n",
        "headers_too_large",
        "the request headers are too large",
    ),
];

const EMPTY: &[u8] = b"\r\ncontent-length: 0\r\n";

/// What replaces the empty body of each of hyper's own answers: a status line to know it by,
/// the header lines that take the place of `content-length: 0`, and the body.
#[derive(Debug, Clone)]
pub struct Bodies(Arc<Vec<Replacement>>);

#[derive(Debug)]
struct Replacement {
    status_line: &'static str,
    headers: Vec<u8>,
    body: Vec<u8>,
}

impl Bodies {
    /// Renders each canned answer through `rejection`, the listener's error shape.
    pub async fn render(rejection: Rejection) -> Self {
        let mut replacements = Vec::new();
        for (status, status_line, code, message) in CANNED {
            let response = rejection(status, code, message.to_owned());
            let content_type = response
                .headers()
                .get(axum::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_owned();
            let body = axum::body::to_bytes(response.into_body(), 64 * 1024)
                .await
                .unwrap_or_default()
                .to_vec();
            let headers = format!(
                "\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n",
                body.len()
            );
            replacements.push(Replacement {
                status_line,
                headers: headers.into_bytes(),
                body,
            });
        }
        Self(Arc::new(replacements))
    }

    /// `head` with a body, when it is one of hyper's own empty answers; `None` otherwise.
    fn rewrite(&self, head: &[u8]) -> Option<Vec<u8>> {
        let r = self
            .0
            .iter()
            .find(|r| head.starts_with(r.status_line.as_bytes()))?;
        if !head.ends_with(b"\r\n\r\n") {
            return None;
        }
        let at = head
            .windows(EMPTY.len())
            .position(|w| w.eq_ignore_ascii_case(EMPTY))?;
        let mut out = Vec::with_capacity(head.len() + r.headers.len() + r.body.len());
        out.extend_from_slice(&head[..at]);
        out.extend_from_slice(&r.headers);
        out.extend_from_slice(&head[at + EMPTY.len()..]);
        out.extend_from_slice(&r.body);
        Some(out)
    }
}

/// A connection's stream that gives hyper's own error answers a body.
#[derive(Debug)]
pub struct Canned<S> {
    inner: S,
    bodies: Bodies,
    /// Rewritten bytes not yet accepted by `inner`.
    pending: Vec<u8>,
}

impl<S> Canned<S> {
    pub fn new(inner: S, bodies: Bodies) -> Self {
        Self {
            inner,
            bodies,
            pending: Vec::new(),
        }
    }
}

impl<S: AsyncWrite + Unpin> Canned<S> {
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Canned<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Canned<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        if let Some(rewritten) = this.bodies.rewrite(buf) {
            // Taken whole: hyper sees its head written, and the rest drains before anything else.
            this.pending = rewritten;
            let _ = this.drain(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
