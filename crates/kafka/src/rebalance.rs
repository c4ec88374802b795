//! A consumer context that reports rebalances to the service loop, which rebuilds or drops
//! the state of the partitions concerned before it processes another record.

use std::collections::BTreeSet;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::mpsc;

/// Partitions gained or lost, by partition number (co-partitioned topics share them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Assigned(BTreeSet<i32>),
    Revoked(BTreeSet<i32>),
}

/// Sends every [`Change`] down a channel. On revoke it first commits the offsets stored so
/// far, so that the next owner starts where this one stopped.
#[derive(Debug)]
pub struct ChangeContext {
    changes: mpsc::UnboundedSender<Change>,
}

impl ChangeContext {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Change>) {
        let (changes, rx) = mpsc::unbounded_channel();
        (Self { changes }, rx)
    }
}

fn partitions(list: &TopicPartitionList) -> BTreeSet<i32> {
    list.elements().iter().map(|e| e.partition()).collect()
}

impl ClientContext for ChangeContext {}

impl ConsumerContext for ChangeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync)
                && !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))
            {
                tracing::warn!(error = %e, "commit on revoke failed");
            }
            let _ = self.changes.send(Change::Revoked(partitions(list)));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            let _ = self.changes.send(Change::Assigned(partitions(list)));
        }
    }
}
