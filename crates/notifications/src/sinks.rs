//! Where messages go. The log sink always runs; a webhook sink posts each message as JSON,
//! with retries, and with its id as the `Idempotency-Key` so a receiver can drop repeats.

use std::time::Duration;

use bimride_events::Notification;
use futures::future::BoxFuture;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("the webhook answered {0}")]
    Rejected(reqwest::StatusCode),
    #[error("the webhook failed after {attempts} attempts: {last}")]
    GaveUp { attempts: u32, last: String },
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
}

/// A destination for messages. Delivery is at least once: a sink may see a message again
/// after a crash, always with the same notification id.
pub trait Sink: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    fn deliver<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), SinkError>>;
}

/// Writes each message to the structured log.
#[derive(Debug, Default)]
pub struct LogSink;

impl Sink for LogSink {
    fn name(&self) -> &'static str {
        "log"
    }

    fn deliver<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), SinkError>> {
        tracing::info!(
            notification_id = %n.notification_id,
            recipient_kind = ?n.recipient_kind,
            recipient_id = %n.recipient_id,
            ride_id = n.ride_id.as_deref().unwrap_or_default(),
            template = %n.template,
            text = %n.text,
            "notification"
        );
        Box::pin(async { Ok(()) })
    }
}

/// Posts each message to a URL. Connection failures, 429 and 5xx are retried with
/// exponential backoff; other answers are final.
#[derive(Debug)]
pub struct WebhookSink {
    client: reqwest::Client,
    url: reqwest::Url,
    retries: u32,
    backoff: Duration,
}

impl WebhookSink {
    pub fn new(url: reqwest::Url, retries: u32, timeout: Duration) -> Result<Self, SinkError> {
        Ok(Self {
            client: reqwest::Client::builder().timeout(timeout).build()?,
            url,
            retries,
            backoff: Duration::from_millis(100),
        })
    }

    async fn post(&self, n: &Notification) -> Result<(), SinkError> {
        let mut last = String::new();
        for attempt in 0..=self.retries {
            if attempt > 0 {
                let wait = self.backoff * 2u32.saturating_pow(attempt - 1);
                tokio::time::sleep(wait.min(Duration::from_secs(5))).await;
            }
            let sent = self
                .client
                .post(self.url.clone())
                .header("Idempotency-Key", &n.notification_id)
                .json(n)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                    last = format!("status {}", r.status());
                }
                Ok(r) => return Err(SinkError::Rejected(r.status())),
                Err(e) => last = e.to_string(),
            }
            tracing::debug!(attempt, error = %last, "webhook delivery failed; retrying");
        }
        Err(SinkError::GaveUp {
            attempts: self.retries + 1,
            last,
        })
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn deliver<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.post(n))
    }
}
