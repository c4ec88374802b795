//! The typed consumer loop.
//!
//! - Records of one partition are handled in order by one worker; partitions run in parallel,
//!   so concurrency is bounded by the assignment and each worker's queue is bounded.
//! - An offset is stored only after its record's effects are durable (handled, or written to
//!   the dead-letter topic); librdkafka commits stored offsets in the background, and the loop
//!   commits synchronously on revoke and on shutdown.
//! - On revoke, queued records of the lost partitions are dropped (the new owner reads them
//!   from the committed offset) and the record in progress is drained, within
//!   `drain_timeout`, which is kept below `session.timeout.ms`.
//! - A record still in progress when that time runs out finishes on its own. If the
//!   partition comes back to this process, its new worker waits for it first: one partition's
//!   records are never handled concurrently, so a redelivered record sees the effects of the
//!   first attempt.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bimride_events::{Codec, TopicValue};
use rdkafka::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use rdkafka::statistics::Statistics;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::dead_letter::{self, DeadLetter};
use crate::metrics;

/// A decoded record and where it came from.
#[derive(Debug, Clone)]
pub struct Record<T> {
    pub value: T,
    pub key: Option<String>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
}

/// Why a handler could not process a record.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The record can never be processed (an impossible transition, say): dead-letter it.
    #[error("invalid record ({reason}): {message}")]
    Invalid {
        reason: &'static str,
        message: String,
    },
    /// Processing may succeed later (a dependency is down): retry, keeping partition order.
    #[error("retriable: {0}")]
    Retry(String),
}

/// What a consumer loop does with each record.
pub trait Handler<T>: Send + Sync + 'static {
    fn handle(&self, record: Record<T>) -> impl Future<Output = Result<(), HandleError>> + Send;
}

impl<T, F, Fut> Handler<T> for F
where
    F: Fn(Record<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandleError>> + Send,
{
    fn handle(&self, record: Record<T>) -> impl Future<Output = Result<(), HandleError>> + Send {
        self(record)
    }
}

#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    pub group: String,
    /// Records queued per partition before the loop stops reading.
    pub queue_per_partition: usize,
    /// How long a revoke waits for the record in progress; below `session.timeout.ms`.
    pub drain_timeout: Duration,
    pub retry_backoff: Duration,
    /// Where a group with no committed offset starts: the newest record instead of the oldest.
    pub from_latest: bool,
    /// The service this loop belongs to, as the metrics name it.
    pub stage: &'static str,
}

impl ConsumerOptions {
    pub fn new(group: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            queue_per_partition: 256,
            drain_timeout: Duration::from_secs(5),
            retry_backoff: Duration::from_millis(200),
            from_latest: false,
            stage: "consumer",
        }
    }

    /// Names the service in the latency and lag metrics.
    pub fn stage(mut self, stage: &'static str) -> Self {
        self.stage = stage;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("a partition worker failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

#[derive(Debug, Default)]
struct PartitionState {
    revoked: AtomicBool,
    in_flight: AtomicUsize,
}

struct LoopContext {
    topic: String,
    stage: &'static str,
    drain_timeout: Duration,
    partitions: Mutex<HashMap<i32, Arc<PartitionState>>>,
}

impl ClientContext for LoopContext {
    fn stats(&self, statistics: Statistics) {
        metrics::record_lag(self.stage, &statistics);
    }
}

impl ConsumerContext for LoopContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let revoked: Vec<Arc<PartitionState>> = {
            let mut map = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
            list.elements()
                .iter()
                .filter(|e| e.topic() == self.topic)
                .filter_map(|e| map.remove(&e.partition()))
                .collect()
        };
        revoked
            .iter()
            .for_each(|s| s.revoked.store(true, Ordering::SeqCst));
        // This runs on the polling thread; the workers run on other runtime threads.
        let deadline = Instant::now() + self.drain_timeout;
        while revoked
            .iter()
            .any(|s| s.in_flight.load(Ordering::SeqCst) > 0)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit is not a failure.
            if !matches!(
                e,
                KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)
            ) {
                tracing::warn!(topic = %self.topic, error = %e, "commit on revoke failed");
            }
        }
        tracing::info!(
            topic = %self.topic,
            partitions = revoked.len(),
            "partitions revoked and drained"
        );
    }
}

struct Shared<H> {
    consumer: StreamConsumer<LoopContext>,
    codec: Arc<Codec>,
    dlq: FutureProducer,
    handler: Arc<H>,
    options: ConsumerOptions,
    shutdown: CancellationToken,
}

/// Runs a consumer loop over `T`'s topic until `shutdown` is cancelled.
pub async fn run<T, H>(
    config: &KafkaConfig,
    codec: Arc<Codec>,
    options: ConsumerOptions,
    handler: Arc<H>,
    shutdown: CancellationToken,
) -> Result<(), ConsumerError>
where
    T: TopicValue,
    H: Handler<T>,
{
    let topics = config.topics();
    let topic = topics.name(T::TOPIC);
    let context = LoopContext {
        topic: topic.to_owned(),
        stage: options.stage,
        drain_timeout: options.drain_timeout,
        partitions: Mutex::new(HashMap::new()),
    };
    let mut client = config.consumer(&options.group);
    client.set("statistics.interval.ms", metrics::STATISTICS_INTERVAL_MS);
    if options.from_latest {
        client.set("auto.offset.reset", "latest");
    }
    let consumer: StreamConsumer<LoopContext> = client.create_with_context(context)?;
    consumer.subscribe(&[topic])?;
    let dlq: FutureProducer = config.producer().create()?;
    let shared = Arc::new(Shared {
        consumer,
        codec,
        dlq,
        handler,
        options,
        shutdown,
    });
    // Exported at zero from the start, so that dashboards and alerts see the series.
    metrics::RETRIES.with_label_values(&[topic]);
    tracing::info!(topic, group = %shared.options.group, "consumer loop started");

    let mut workers: HashMap<i32, (Arc<PartitionState>, mpsc::Sender<OwnedMessage>)> =
        HashMap::new();
    // One lane per partition, kept across revokes: held while a record is handled.
    let mut lanes: HashMap<i32, Arc<tokio::sync::Mutex<()>>> = HashMap::new();
    let mut tasks = JoinSet::new();
    loop {
        let message = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            m = shared.consumer.recv() => m,
        };
        let message = match message {
            Ok(m) => m.detach(),
            Err(e) => {
                tracing::warn!(topic, error = %e, "consumer error");
                continue;
            }
        };
        let partition = message.partition();
        let stale = workers
            .get(&partition)
            .is_none_or(|(state, _)| state.revoked.load(Ordering::SeqCst));
        if stale {
            let state = Arc::new(PartitionState::default());
            shared
                .consumer
                .context()
                .partitions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(partition, Arc::clone(&state));
            let (tx, rx) = mpsc::channel(shared.options.queue_per_partition);
            let lane = Arc::clone(lanes.entry(partition).or_default());
            tasks.spawn(worker::<T, H>(
                Arc::clone(&shared),
                Arc::clone(&state),
                lane,
                rx,
            ));
            workers.insert(partition, (state, tx));
        }
        if let Some((_, tx)) = workers.get(&partition) {
            // A closed channel means the worker stopped for shutdown; the record is not
            // stored and will be read again.
            let _ = tx.send(message).await;
        }
    }

    drop(workers);
    while let Some(done) = tasks.join_next().await {
        done?;
    }
    let closing = Arc::clone(&shared);
    let committed = tokio::task::spawn_blocking(move || {
        closing.consumer.commit_consumer_state(CommitMode::Sync)
    })
    .await?;
    match committed {
        Ok(()) | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(topic, error = %e, "final commit failed"),
    }
    tracing::info!(topic, "consumer loop stopped");
    Ok(())
}

/// Runs a consumer loop over `T`'s topic that hands every value to `apply`: for read models
/// that only fold events into memory.
pub async fn apply_each<T: TopicValue>(
    (config, codec, options, shutdown): (
        &KafkaConfig,
        Arc<Codec>,
        ConsumerOptions,
        CancellationToken,
    ),
    apply: impl Fn(&T) + Send + Sync + 'static,
) -> Result<(), ConsumerError> {
    let handler = Arc::new(move |r: Record<T>| {
        apply(&r.value);
        async { Ok::<(), HandleError>(()) }
    });
    run::<T, _>(config, codec, options, handler, shutdown).await
}

async fn worker<T: TopicValue, H: Handler<T>>(
    shared: Arc<Shared<H>>,
    state: Arc<PartitionState>,
    lane: Arc<tokio::sync::Mutex<()>>,
    mut rx: mpsc::Receiver<OwnedMessage>,
) {
    while let Some(message) = rx.recv().await {
        if shared.shutdown.is_cancelled() {
            break;
        }
        let _lane = lane.lock().await;
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        // Checked after raising in_flight, so a revoke either sees this record in progress
        // or this worker sees the revoke.
        if !state.revoked.load(Ordering::SeqCst) && process::<T, H>(&shared, &state, &message).await
        {
            // librdkafka's offset store commits `offset + 1` itself: pass the record's own.
            let stored = shared.consumer.store_offset(
                message.topic(),
                message.partition(),
                message.offset(),
            );
            if let Err(e) = stored {
                tracing::debug!(partition = message.partition(), error = %e, "offset not stored");
            }
        }
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Processes one record until its effects are durable. Returns false if it gave up because
/// the partition was revoked or the loop is shutting down; the offset is then not stored.
async fn process<T: TopicValue, H: Handler<T>>(
    shared: &Shared<H>,
    state: &PartitionState,
    message: &OwnedMessage,
) -> bool {
    let topic = message.topic();
    metrics::CONSUMED.with_label_values(&[topic]).inc();
    loop {
        if shared.shutdown.is_cancelled() || state.revoked.load(Ordering::SeqCst) {
            return false;
        }
        let outcome = match message.payload() {
            None => Err(HandleError::Invalid {
                reason: "empty_payload",
                message: "record has no value".into(),
            }),
            Some(bytes) => match shared.codec.decode::<T>(bytes).await {
                Ok(value) => {
                    let occurred = value.occurred_at().0;
                    let record = Record {
                        value,
                        key: message
                            .key()
                            .map(|k| String::from_utf8_lossy(k).into_owned()),
                        topic: topic.to_owned(),
                        partition: message.partition(),
                        offset: message.offset(),
                        timestamp_ms: message.timestamp().to_millis(),
                    };
                    let handled = shared.handler.handle(record).await;
                    if handled.is_ok() {
                        metrics::observe_stage(shared.options.stage, topic, occurred);
                    }
                    handled
                }
                Err(e) if e.is_retriable() => Err(HandleError::Retry(e.to_string())),
                Err(e) => Err(HandleError::Invalid {
                    reason: e.reason(),
                    message: e.to_string(),
                }),
            },
        };
        match outcome {
            Ok(()) => return true,
            Err(HandleError::Retry(why)) => {
                metrics::RETRIES.with_label_values(&[topic]).inc();
                tracing::warn!(topic, partition = message.partition(), offset = message.offset(), error = %why, "retrying record");
                tokio::time::sleep(shared.options.retry_backoff).await;
            }
            Err(HandleError::Invalid {
                reason,
                message: why,
            }) => {
                let letter = DeadLetter::of(message, reason, why, &shared.options.group);
                let dlq_topic = letter.topic();
                // The dead letter must be durable before the offset moves past the record.
                loop {
                    match dead_letter::publish(
                        &shared.dlq,
                        &dlq_topic,
                        message.key(),
                        message.payload(),
                        &letter,
                    )
                    .await
                    {
                        Ok(()) => return true,
                        Err(e) => {
                            tracing::error!(topic, error = %e, "dead-letter write failed; retrying");
                            if shared.shutdown.is_cancelled() {
                                return false;
                            }
                            tokio::time::sleep(shared.options.retry_backoff).await;
                        }
                    }
                }
            }
        }
    }
}
