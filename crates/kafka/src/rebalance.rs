//! A consumer context that reports rebalances to the service loop, which rebuilds or drops
//! the state of the partitions concerned before it processes another record.

use std::collections::BTreeSet;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::mpsc;

/// Partitions gained or lost, by partition number (co-partitioned topics share them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Assigned(BTreeSet<i32>),
    Revoked(BTreeSet<i32>),
}

impl Change {
    /// Applies the change to the set of owned partitions; returns those newly gained, which
    /// the service must rebuild before it processes their records.
    pub fn apply_to(&self, owned: &mut BTreeSet<i32>) -> BTreeSet<i32> {
        match self {
            Change::Revoked(parts) => {
                owned.retain(|p| !parts.contains(p));
                BTreeSet::new()
            }
            Change::Assigned(parts) => {
                let new = parts.difference(owned).copied().collect();
                owned.extend(parts.iter().copied());
                new
            }
        }
    }
}

/// Sends every [`Change`] down a channel. On revoke it first commits the offsets stored so
/// far, so that the next owner starts where this one stopped.
pub struct ChangeContext {
    changes: mpsc::UnboundedSender<Change>,
    stage: &'static str,
    /// Flushed before partitions are given up, so that the next owner's replay sees every
    /// decision this one made.
    flush: Option<FutureProducer>,
}

impl std::fmt::Debug for ChangeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeContext")
            .field("stage", &self.stage)
            .field("flushes", &self.flush.is_some())
            .finish_non_exhaustive()
    }
}

impl ChangeContext {
    /// `stage` names the service in the lag metrics.
    pub fn new(stage: &'static str) -> (Self, mpsc::UnboundedReceiver<Change>) {
        let (changes, rx) = mpsc::unbounded_channel();
        (
            Self {
                changes,
                stage,
                flush: None,
            },
            rx,
        )
    }

    /// Makes a revoke wait until everything `producer` sent so far is acknowledged.
    pub fn flushing(mut self, producer: FutureProducer) -> Self {
        self.flush = Some(producer);
        self
    }
}

fn partitions(list: &TopicPartitionList) -> BTreeSet<i32> {
    list.elements().iter().map(|e| e.partition()).collect()
}

impl ClientContext for ChangeContext {
    fn stats(&self, statistics: Statistics) {
        crate::metrics::record_lag(self.stage, &statistics);
    }
}

impl ConsumerContext for ChangeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            // The change goes out first: the service then decides nothing more for these
            // partitions, and what it already decided is flushed below.
            let _ = self.changes.send(Change::Revoked(partitions(list)));
            if let Some(producer) = &self.flush
                && let Err(e) = producer.flush(Duration::from_secs(5))
            {
                tracing::warn!(error = %e, "flush on revoke failed");
            }
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync)
                && !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))
            {
                tracing::warn!(error = %e, "commit on revoke failed");
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let _ = self.changes.send(Change::Assigned(partitions(list)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_partitions_not_owned_yet_are_new() {
        let mut owned = BTreeSet::from([1, 2]);
        let new = Change::Assigned(BTreeSet::from([2, 3])).apply_to(&mut owned);
        assert_eq!(new, BTreeSet::from([3]));
        assert_eq!(owned, BTreeSet::from([1, 2, 3]));
        assert!(
            Change::Revoked(BTreeSet::from([1]))
                .apply_to(&mut owned)
                .is_empty()
        );
        assert_eq!(owned, BTreeSet::from([2, 3]));
    }
}
