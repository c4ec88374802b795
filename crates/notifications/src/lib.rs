//! Notifications: every step of a ride becomes templated messages for its rider and driver,
//! delivered to pluggable sinks and recorded on the notifications topic, keyed by recipient.
//!
//! - [`templates`]: which events tell whom what, as pure functions.
//! - [`sinks`]: the log sink, and an optional webhook sink with retries.
//! - [`NotificationSettings`], a [`Service`]: consumes the ride events and the committed
//!   payments.
//!
//! A message is sent once per ride, template and recipient: its id is derived from them,
//! and ids already sent (remembered, and read back from the topic at start) are skipped.

pub mod sinks;
pub mod templates;

use std::num::NonZeroUsize;
use std::sync::LazyLock;
use std::time::Duration;

use bimride_codec::Codec;
use bimride_events::{FareCharged, Notification, RideEvent};
use bimride_kafka::KafkaConfig;
use bimride_kafka::history::{self, HistoryError};
use bimride_kafka::partitioned::{
    self, At, Either, Fetch, Options, PartitionedError, Processor, Rejected,
};
use bimride_kafka::service::{Context, Service, SettingsError};
use bimride_telemetry::counter;
use lru::LruCache;
use prometheus::IntCounterVec;

use crate::sinks::{LogSink, Sink, SinkError, WebhookSink};
use crate::templates::{Source, render};

/// Notification settings. Each is a flag of `bimride` with an environment fallback,
/// described by `--help`; the defaults here are the flags' defaults.
#[derive(Debug, Clone)]
pub struct NotificationSettings {
    pub group: String,
    pub webhook_url: Option<String>,
    pub webhook_retries: u32,
    pub webhook_timeout_ms: u64,
    pub notifications_replay_secs: u64,
}

impl Default for NotificationSettings {
    fn default() -> Self {
        Self {
            group: "bimride-notifications".into(),
            webhook_url: None,
            webhook_retries: 5,
            webhook_timeout_ms: 2_000,
            notifications_replay_secs: 3_600,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Consumer(#[from] PartitionedError),
    #[error("reading the messages already sent failed: {0}")]
    History(#[from] HistoryError),
}

impl NotificationSettings {
    fn sinks(&self) -> Result<Vec<Box<dyn Sink>>, NotifyError> {
        let mut sinks: Vec<Box<dyn Sink>> = vec![Box::new(LogSink)];
        if let Some(url) = &self.webhook_url {
            let url = reqwest::Url::parse(url)
                .map_err(|_| SettingsError::new("notifications", "the webhook URL is not a URL"))?;
            sinks.push(Box::new(WebhookSink::new(
                url,
                self.webhook_retries,
                Duration::from_millis(self.webhook_timeout_ms),
            )?));
        }
        Ok(sinks)
    }
}

/// Message ids remembered as sent: far more than one replay window holds.
const SENT_REMEMBERED: NonZeroUsize = NonZeroUsize::new(1_000_000).unwrap();

static SENT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_notifications_sent_total",
        "Messages sent, by template.",
        &["template"],
    )
});

static SKIPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_notifications_duplicates_total",
        "Messages not sent again because their id was already sent, by template.",
        &["template"],
    )
});

static SINK_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_notifications_sink_failures_total",
        "Messages a sink could not take after its retries, by sink.",
        &["sink"],
    )
});

#[derive(Debug)]
struct Notifier {
    sinks: Vec<Box<dyn Sink>>,
    /// Ids of messages already sent; the least recent are forgotten first.
    sent: LruCache<String, ()>,
}

impl Processor for Notifier {
    type Input = Either<RideEvent, FareCharged>;
    type Output = Notification;

    /// Renders a source's messages and hands them to the sinks; the driver then records them
    /// on the topic. A message already sent is skipped.
    async fn record(
        &mut self,
        _: At,
        input: Either<RideEvent, FareCharged>,
    ) -> Result<Vec<Notification>, Rejected> {
        let source = match input {
            Either::First(e) => Source::Ride(e),
            Either::Second(c) => {
                check_charge(&c)?;
                Source::Charge(c)
            }
        };
        let mut out = Vec::new();
        for n in render(&source) {
            if self.sent.contains(&n.notification_id) {
                SKIPPED.with_label_values(&[&n.template]).inc();
                continue;
            }
            self.deliver(&n).await?;
            // Marked now, not once acknowledged: a copy of the source record right behind
            // this one must not send it again. A failed send stops the service.
            self.sent.put(n.notification_id.clone(), ());
            out.push(n);
        }
        Ok(out)
    }

    fn settled(&mut self, sent: &[Notification]) {
        for n in sent {
            SENT.with_label_values(&[&n.template]).inc();
        }
    }
}

impl Notifier {
    async fn deliver(&self, n: &Notification) -> Result<(), Rejected> {
        for sink in &self.sinks {
            if let Err(e) = sink.deliver(n).await {
                SINK_FAILURES.with_label_values(&[sink.name()]).inc();
                // The source record goes to the dead-letter topic, to be replayed once the
                // sink is back; messages it already sent are skipped then.
                return Err(Rejected {
                    reason: "sink_failed",
                    message: format!("{} sink: {e}", sink.name()),
                });
            }
        }
        Ok(())
    }
}

/// A charge whose parts do not add up cannot be told to anyone: it is dead-lettered.
fn check_charge(c: &FareCharged) -> Result<(), Rejected> {
    let same_currency =
        c.commission.currency == c.fare.currency && c.payout.currency == c.fare.currency;
    let adds_up =
        c.commission.amount_minor.checked_add(c.payout.amount_minor) == Some(c.fare.amount_minor);
    let non_negative = [
        c.fare.amount_minor,
        c.commission.amount_minor,
        c.payout.amount_minor,
    ]
    .iter()
    .all(|a| *a >= 0);
    if same_currency && adds_up && non_negative {
        Ok(())
    } else {
        Err(Rejected {
            reason: "impossible_charge",
            message: format!(
                "ride {}: fare {} {} is not commission {} plus payout {}",
                c.ride_id,
                c.fare.amount_minor,
                c.fare.currency,
                c.commission.amount_minor,
                c.payout.amount_minor
            ),
        })
    }
}

impl Service for NotificationSettings {
    const NAME: &'static str = "notifications";
    type Error = NotifyError;

    fn check(&self) -> Result<(), &'static str> {
        if self.group.trim().is_empty() {
            return Err("the group must not be empty");
        }
        if let Some(url) = &self.webhook_url {
            let parsed = reqwest::Url::parse(url).map_err(|_| "the webhook URL is not a URL")?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err("the webhook URL must be http or https");
            }
        }
        if self.webhook_retries > 20 {
            return Err("at most 20 webhook retries");
        }
        if !(100..=60_000).contains(&self.webhook_timeout_ms) {
            return Err("the webhook timeout must be 100 ms to 60 s");
        }
        Ok(())
    }

    /// Runs the notifier until the context's token is cancelled.
    async fn run(self, cx: Context) -> Result<(), NotifyError> {
        let mut notifier = Notifier {
            sinks: self.sinks()?,
            sent: LruCache::new(SENT_REMEMBERED),
        };
        let remembered = remember_sent(&cx.kafka, &cx.codec, &self, &mut notifier).await?;
        tracing::info!(
            remembered,
            webhook = self.webhook_url.is_some(),
            "notifications started"
        );
        let mut options = Options::new(self.group.clone(), "notifications");
        options.fetch = Fetch::Batched;
        partitioned::run(&cx.kafka, cx.codec, notifier, options, cx.shutdown).await?;
        tracing::info!("notifications stopped");
        Ok(())
    }
}

/// Reads the messages sent within the replay window, so that a restart does not repeat them.
async fn remember_sent(
    kafka: &KafkaConfig,
    codec: &Codec,
    settings: &NotificationSettings,
    notifier: &mut Notifier,
) -> Result<usize, NotifyError> {
    let window = Duration::from_secs(settings.notifications_replay_secs);
    let sent: Vec<Notification> = history::values(kafka, codec, &settings.group, window).await?;
    let remembered = sent.len();
    for n in sent {
        notifier.sent.put(n.notification_id, ());
    }
    Ok(remembered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let mut s = NotificationSettings::default();
        assert!(s.check().is_ok());
        s.webhook_url = Some("ftp://example.com".into());
        assert!(s.check().is_err());
        s.webhook_url = Some("http://127.0.0.1:9/hook".into());
        assert!(s.check().is_ok());
    }
}
