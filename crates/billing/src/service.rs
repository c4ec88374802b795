//! Billing on Kafka: the ledger as a partition-owning processor over the ride events.
//!
//! - Exactly once: records are collected for a short interval, then one transaction carries
//!   their charges, their dead letters and the input offsets. A failed transaction is aborted,
//!   the ledger rebuilt from the logs, and the same records charged again, once.
//! - At least once (for brokers without transactions): charges are acknowledged before the
//!   offsets are stored. On every takeover the payments log is read back, so a ride already
//!   charged is not charged again.

use std::collections::BTreeSet;
use std::time::Duration;

use bimride_events::{FareCharged, Millis, RideEvent, Topic};
use bimride_kafka::partitioned::{
    self, At, Fetch, Options, PartitionedError, Processor, RebuildError, Rejected, Takeover,
};
use bimride_kafka::service::{Context, Service};

use bimride_domain::Mode;

use crate::ledger::Ledger;
use crate::{BillingSettings, metrics};

/// How often rides charged longer ago than the replay window are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error(
        "Kafka transactions are not available at {brokers} ({source}). Billing charges exactly \
         once only with transactions; on brokers without them, run it with \
         --billing-delivery at-least-once, which deduplicates charges by ride"
    )]
    NoTransactions {
        brokers: String,
        source: rdkafka::error::KafkaError,
    },
    #[error(transparent)]
    Consumer(#[from] PartitionedError),
}

struct Billing {
    ledger: Ledger,
    /// Read back on takeover: the charges already made.
    payments: String,
    window: Duration,
}

impl Service for BillingSettings {
    const NAME: &'static str = "billing";
    type Error = BillingError;

    fn check(&self) -> Result<(), &'static str> {
        if self.group.trim().is_empty() {
            return Err("the billing group must not be empty");
        }
        if self.transactional_id.trim().is_empty() {
            return Err("the transactional id must not be empty");
        }
        if self.commission_bp > 10_000 {
            return Err("the commission must be 0 to 10000 basis points");
        }
        if !(1..=10_000).contains(&self.commit_ms) {
            return Err("the commit interval must be 1 ms to 10 s");
        }
        if !(1..=100_000).contains(&self.max_batch) {
            return Err("the batch must be 1 to 100000 records");
        }
        if !(60..=7 * 24 * 3_600).contains(&self.billing_replay_secs) {
            return Err("the replay window must be a minute to a week");
        }
        Ok(())
    }

    /// Runs one billing instance until the context's token is cancelled; the batch in progress
    /// is settled first.
    async fn run(self, cx: Context) -> Result<(), BillingError> {
        let mut options = Options::new(self.group.clone(), "billing");
        options.fetch = Fetch::Batched;
        options.tick = Some(FORGET_EVERY);
        options.delivery = partitioned::Delivery::of(
            self.delivery,
            self.transactional_id.clone(),
            Duration::from_millis(self.commit_ms),
            self.max_batch,
        );
        let billing = Billing {
            ledger: Ledger::new(self.commission_bp),
            payments: cx.kafka.topics().name(Topic::Payments).to_owned(),
            window: Duration::from_secs(self.billing_replay_secs),
        };
        let done = partitioned::run(&cx.kafka, cx.codec, billing, options, cx.shutdown)
            .await
            .map_err(|e| match e {
                PartitionedError::NoTransactions { brokers, source } => {
                    BillingError::NoTransactions { brokers, source }
                }
                other => other.into(),
            })?;
        tracing::info!(tally = ?done.ledger.tally(), "billing stopped");
        Ok(())
    }
}

impl Processor for Billing {
    type Input = RideEvent;
    type Output = FareCharged;

    /// Replays the partitions' ride events up to the committed offsets, then marks every ride
    /// the payments log already charged.
    async fn assigned(&mut self, takeover: Takeover<'_>) -> Result<(), RebuildError> {
        // Ride events and payments are co-partitioned by ride.
        let marks = takeover.with_output(&self.payments)?;
        let history = takeover.read(marks, self.window).await?;
        let (mut replayed, mut charged) = (0, 0);
        for h in &history {
            if h.topic == self.payments {
                if let Some(c) = takeover.decode::<FareCharged>(h).await {
                    self.ledger.charged(h.partition, &c);
                    charged += 1;
                }
            } else if h.before_mark
                && let Some(e) = takeover.decode::<RideEvent>(h).await
            {
                let _ = self.ledger.apply(h.partition, &e, Mode::Replay);
                replayed += 1;
            }
        }
        tracing::info!(partitions = ?takeover.partitions, replayed, charged, rides = self.ledger.len(), "billing partitions rebuilt");
        Ok(())
    }

    fn revoked(&mut self, partitions: &BTreeSet<i32>) {
        self.ledger.revoke(partitions);
    }

    async fn record(
        &mut self,
        At { partition, .. }: At,
        event: RideEvent,
    ) -> Result<Vec<FareCharged>, Rejected> {
        let before = self.ledger.tally().duplicates;
        let charge = self
            .ledger
            .apply(partition, &event, Mode::Live)
            .map_err(|e| Rejected {
                reason: e.reason(),
                message: e.to_string(),
            })?;
        if self.ledger.tally().duplicates > before {
            metrics::DUPLICATES.with_label_values(&["trip"]).inc();
        }
        Ok(charge.into_iter().collect())
    }

    fn tick(&mut self, now: Millis) -> Vec<FareCharged> {
        let window = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        self.ledger.forget_before(Millis(now.0 - window));
        Vec::new()
    }

    fn settled(&mut self, charges: &[FareCharged]) {
        metrics::committed(charges);
    }
}
