//! Integration tests against real brokers: Apache Kafka (the run's shared 3-node cluster,
//! each test under a topic namespace of its own), and the embedded mock cluster that
//! `bimride up` runs on by default.

/// Runs an `async fn scenario(broker: Broker)` as two tests: on the embedded cluster and on
/// Apache Kafka.
macro_rules! on_both_brokers {
    ($scenario:ident: $embedded:ident, $kafka:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $embedded() {
            $scenario(bimride_tests::Broker::embedded()).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $kafka() {
            $scenario(bimride_tests::Broker::kafka()).await;
        }
    };
}

mod billing;
mod compaction;
mod dead_letters;
mod dispatch;
mod eta;
mod evolution;
mod idempotency;
mod lifecycle;
mod notifications;
mod poison;
mod provisioning;
mod rebalance;
mod registry;
mod roundtrip;
mod store;
mod surge;

use std::sync::Arc;
use std::time::Duration;

use bimride_codec::Codec;
use bimride_events::TopicValue;
use bimride_kafka::KafkaConfig;
use bimride_kafka::partitioned::{
    self, At, Nothing, Options, PartitionedError, Processor, Rejected,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A record a test consumer handled, and its partition.
#[derive(Debug, Clone)]
pub struct Record<T> {
    pub value: T,
    pub partition: i32,
}

/// Hands every record to a channel.
struct Collect<T>(mpsc::UnboundedSender<Record<T>>);

impl<T: TopicValue> Processor for Collect<T> {
    type Input = T;
    type Output = Nothing;

    async fn record(&mut self, at: At, value: T) -> Result<Vec<Nothing>, Rejected> {
        let _ = self.0.send(Record {
            value,
            partition: at.partition,
        });
        Ok(Vec::new())
    }
}

/// A consumer running in the background, handing every record to `records`.
#[derive(Debug)]
pub struct Running<T> {
    pub records: mpsc::UnboundedReceiver<Record<T>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), PartitionedError>>,
}

impl<T> Running<T> {
    /// Receives up to `count` records, waiting at most `timeout` in all.
    pub async fn take(&mut self, count: usize, timeout: Duration) -> Vec<Record<T>> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while got.len() < count {
            match tokio::time::timeout_at(deadline, self.records.recv()).await {
                Ok(Some(r)) => got.push(r),
                _ => break,
            }
        }
        got
    }

    /// Stops the loop, checks that it ended cleanly, and returns the records it handled that
    /// were not taken yet: handled records count as consumed, and their offsets may be committed.
    pub async fn stop(mut self) -> Vec<Record<T>> {
        self.stop.cancel();
        self.task
            .await
            .expect("consumer task joins")
            .expect("consumer loop ends cleanly");
        let mut rest = Vec::new();
        while let Ok(r) = self.records.try_recv() {
            rest.push(r);
        }
        rest
    }
}

pub fn start<T: TopicValue + Clone>(
    config: &KafkaConfig,
    codec: Arc<Codec>,
    group: &str,
) -> Running<T> {
    let (tx, records) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let (config, options, loop_stop) = (config.clone(), Options::new(group, "test"), stop.clone());
    let task = tokio::spawn(async move {
        partitioned::run(&config, codec, Collect(tx), options, loop_stop)
            .await
            .map(drop)
    });
    Running {
        records,
        stop,
        task,
    }
}

/// Runs a consumer over `T`'s topic until `count` records arrive or `timeout` passes.
pub async fn consume<T: TopicValue + Clone>(
    config: &KafkaConfig,
    codec: Arc<Codec>,
    group: &str,
    count: usize,
    timeout: Duration,
) -> Vec<Record<T>> {
    let mut running = start::<T>(config, codec, group);
    let mut got = running.take(count, timeout).await;
    got.extend(running.stop().await);
    got
}

/// A group name no other test uses.
pub fn group(name: &str) -> String {
    format!("test-{name}-{}", uuid::Uuid::new_v4())
}
