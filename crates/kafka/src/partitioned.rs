//! One way to own partitions: a service's state lives in a [`Processor`], which one task
//! drives through four hooks, while a thread of its own polls the consumer.
//!
//! - **Assigned**: `assigned` rebuilds the new partitions' state from the log before any of
//!   their records is processed.
//! - **Revoked**: the polling thread hands the revoke to the task and waits. The task calls
//!   `revoked`, makes everything decided so far durable, stores its offsets and acknowledges;
//!   only then are the offsets committed and the rebalance goes on.
//! - **Record**: decoded once here (a registry that is away is retried; a record that cannot
//!   be decoded is dead-lettered with its reason), then handed to `record`, whose outputs are
//!   produced. A record `record` rejects is dead-lettered too.
//! - **Tick**: `tick` runs on a timer, for decisions no record causes, such as timeouts.
//!
//! Two deliveries drive the same hooks:
//! - [`Delivery::AtLeastOnce`]: outputs are sent as they come, and a record's offset is stored
//!   once its outputs, and those of every record before it, are acknowledged.
//! - [`Delivery::Transactional`]: records are collected for a short interval, then one
//!   transaction carries their outputs, their dead letters and their offsets. If it fails it
//!   is aborted, the owned partitions are rebuilt from the log and the same records go again,
//!   less those of partitions revoked meanwhile.
//!   Revokes wait between transactions, so no partition is handed over with one open. Each
//!   transaction carries this member's place in the group, so one the group has moved on from
//!   cannot commit what it decided meanwhile.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bimride_codec::{Codec, CodecError};
use bimride_events::{Millis, Topic, TopicValue, Topics};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::Producer;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::dead_letter::{self, DeadLetter};
use crate::history::{self, Historic};
use crate::metrics;
use crate::producer::{EventProducer, InFlight as Pending, ProduceError};

/// What a processor reads: one topic's values, or an enum over several topics.
pub trait Inputs: Sized + Send + 'static {
    fn topics() -> Vec<Topic>;
    /// Whether `topic` is one of [`Inputs::topics`].
    fn reads(topic: Topic) -> bool {
        Self::topics().contains(&topic)
    }
    fn decode(
        codec: &Codec,
        topic: Topic,
        bytes: &[u8],
    ) -> impl Future<Output = Result<Self, CodecError>> + Send;
    /// When it happened, for the stage latency metric.
    fn occurred_at(&self) -> Option<Millis>;
}

impl<T: TopicValue> Inputs for T {
    fn topics() -> Vec<Topic> {
        vec![T::TOPIC]
    }

    fn reads(topic: Topic) -> bool {
        topic == T::TOPIC
    }

    async fn decode(codec: &Codec, _: Topic, bytes: &[u8]) -> Result<Self, CodecError> {
        codec.decode(bytes).await
    }

    fn occurred_at(&self) -> Option<Millis> {
        Some(TopicValue::occurred_at(self))
    }
}

const EMPTY_PAYLOAD: &str = "empty_payload";

/// Why intake dead-letters a record: no payload, or what the codec refused.
const INTAKE_REASONS: [&str; 6] = [
    EMPTY_PAYLOAD,
    bimride_codec::reasons::NOT_WIRE_FORMAT,
    bimride_codec::reasons::UNKNOWN_SCHEMA_ID,
    bimride_codec::reasons::SCHEMA_REJECTED,
    bimride_codec::reasons::UNDECODABLE,
    bimride_codec::reasons::SCHEMA_MISMATCH,
];

/// Values of two topics (or two sets of topics, nested), read by one consumer.
#[derive(Debug, Clone)]
pub enum Either<A, B> {
    First(A),
    Second(B),
}

impl<A: Inputs, B: Inputs> Inputs for Either<A, B> {
    fn topics() -> Vec<Topic> {
        let mut topics = A::topics();
        topics.extend(B::topics());
        topics
    }

    fn reads(topic: Topic) -> bool {
        A::reads(topic) || B::reads(topic)
    }

    async fn decode(codec: &Codec, topic: Topic, bytes: &[u8]) -> Result<Self, CodecError> {
        Ok(if A::reads(topic) {
            Self::First(A::decode(codec, topic, bytes).await?)
        } else {
            Self::Second(B::decode(codec, topic, bytes).await?)
        })
    }

    fn occurred_at(&self) -> Option<Millis> {
        match self {
            Self::First(a) => a.occurred_at(),
            Self::Second(b) => b.occurred_at(),
        }
    }
}

/// What a processor produces: any topic's value, or an enum over several.
pub trait Outputs: Send + Sync + 'static {
    fn send<'a>(
        &'a self,
        producer: &'a EventProducer,
    ) -> impl Future<Output = Result<Pending, ProduceError>> + Send + 'a;
}

impl<T: TopicValue> Outputs for T {
    fn send<'a>(
        &'a self,
        producer: &'a EventProducer,
    ) -> impl Future<Output = Result<Pending, ProduceError>> + Send + 'a {
        producer.send(self)
    }
}

/// The output of a processor that produces nothing through the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nothing {}

impl Outputs for Nothing {
    async fn send(&self, _: &EventProducer) -> Result<Pending, ProduceError> {
        match *self {}
    }
}

/// Where a record was read: its topic, partition and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub topic: Topic,
    pub partition: i32,
    pub offset: i64,
}

/// A record the processor will never accept: it goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: &'static str,
    pub message: String,
}

/// Partitions just gained, and where to rebuild them from.
#[derive(Debug)]
pub struct Takeover<'a> {
    pub partitions: &'a BTreeSet<i32>,
    /// The group's committed offsets of every input topic on those partitions; with no
    /// group, the offsets reading starts from.
    pub committed: TopicPartitionList,
    pub kafka: &'a KafkaConfig,
    pub codec: &'a Codec,
    pub group: &'a str,
}

impl Takeover<'_> {
    /// Reads every partition in `marks` from `window` ago to its end; see [`history::read`].
    pub async fn read(
        &self,
        marks: TopicPartitionList,
        window: Duration,
    ) -> Result<Vec<Historic>, RebuildError> {
        let (kafka, group) = (self.kafka.clone(), self.group.to_owned());
        tokio::task::spawn_blocking(move || history::read(&kafka, &group, &marks, window))
            .await
            .map_err(|e| RebuildError(e.to_string()))?
            .map_err(|e| RebuildError(e.to_string()))
    }

    /// The committed offsets, plus the taken partitions of `output` (co-partitioned with the
    /// inputs) read to their end: marks for [`Takeover::read`] of what the processor wrote.
    pub fn with_output(&self, output: &str) -> Result<TopicPartitionList, RebuildError> {
        let mut marks = self.committed.clone();
        for p in self.partitions {
            marks
                .add_partition_offset(output, *p, Offset::End)
                .map_err(|e| RebuildError(e.to_string()))?;
        }
        Ok(marks)
    }

    /// Decodes a record read back, as its topic's input.
    pub async fn decode<I: Inputs>(&self, h: &Historic) -> Option<I> {
        let topic = self.kafka.topics().topic_of(&h.topic)?;
        I::decode(self.codec, topic, &h.payload).await.ok()
    }
}

/// Why a processor could not rebuild.
#[derive(Debug, thiserror::Error)]
#[error("rebuilding state failed: {0}")]
pub struct RebuildError(pub String);

/// A service's state and the decisions it makes, driven by [`run`].
pub trait Processor: Send + 'static {
    type Input: Inputs;
    type Output: Outputs;

    /// The topics read; those of the input type unless a processor chooses them at run time.
    fn topics(&self) -> Vec<Topic> {
        Self::Input::topics()
    }

    /// Decodes a record of one of [`Processor::topics`].
    fn decode(
        &self,
        codec: &Codec,
        topic: Topic,
        bytes: &[u8],
    ) -> impl Future<Output = Result<Self::Input, CodecError>> + Send {
        Self::Input::decode(codec, topic, bytes)
    }

    /// Rebuilds the state of partitions just gained, before any of their records.
    /// Nothing by default: a processor without per-partition state has nothing to rebuild.
    fn assigned(
        &mut self,
        _takeover: Takeover<'_>,
    ) -> impl Future<Output = Result<(), RebuildError>> + Send {
        async { Ok(()) }
    }

    /// Forgets partitions given up. What it decided for them is made durable by the driver.
    fn revoked(&mut self, _partitions: &BTreeSet<i32>) {}

    /// One live record of an owned partition.
    fn record(
        &mut self,
        at: At,
        input: Self::Input,
    ) -> impl Future<Output = Result<Vec<Self::Output>, Rejected>> + Send;

    /// Decisions no record causes; called every [`Options::tick`].
    fn tick(&mut self, _now: Millis) -> Vec<Self::Output> {
        Vec::new()
    }

    /// Outputs of records now durable: acknowledged, or committed with their transaction.
    fn settled(&mut self, _outputs: &[Self::Output]) {}

    /// A record that cannot be decoded or that [`Processor::record`] rejected. Returns whether
    /// to dead-letter it; a processor that reads another's inputs leaves that to their owner.
    fn rejected(&mut self, _topic: &str, _rejected: &Rejected) -> bool {
        true
    }
}

/// The guarantee a service is run with, as its operator chooses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::EnumString)]
#[strum(serialize_all = "kebab-case")]
pub enum Guarantee {
    /// Kafka transactions: outputs and input offsets commit together, or not at all, and an
    /// instance the group has moved on from cannot commit ([`Delivery::Transactional`]).
    ExactlyOnce,
    /// For brokers without transactions: outputs are acknowledged before offsets are stored
    /// ([`Delivery::AtLeastOnce`]).
    AtLeastOnce,
}

/// How a processor's effects become durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    AtLeastOnce,
    Transactional {
        transactional_id: String,
        /// How long records are collected after the first of a transaction.
        linger: Duration,
        max_records: usize,
    },
}

impl Delivery {
    /// What a service's `guarantee` comes to: transactions under `transactional_id`, each
    /// collecting records for `linger`, up to `max_records`; or at least once.
    pub fn of(
        guarantee: Guarantee,
        transactional_id: String,
        linger: Duration,
        max_records: usize,
    ) -> Self {
        match guarantee {
            Guarantee::ExactlyOnce => Self::Transactional {
                transactional_id,
                linger,
                max_records,
            },
            Guarantee::AtLeastOnce => Self::AtLeastOnce,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub group: String,
    /// The service, as the metrics name it.
    pub stage: &'static str,
    pub delivery: Delivery,
    /// How often [`Processor::tick`] runs; never when `None`.
    pub tick: Option<Duration>,
    /// Range assignment gives a member the same partition numbers of every input topic, which
    /// co-partitioned inputs need.
    pub co_partitioned: bool,
    pub assignment: Assignment,
    pub fetch: Fetch,
}

/// How a consumer trades latency for the brokers' work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// Every record as soon as it lands: the path from a booking to its driver.
    Prompt,
    /// Records in batches, up to [`BATCHED_WAIT_MS`] late: a broker answers a fetch once it
    /// holds [`BATCHED_BYTES`] or the wait is up. At a trickle, a prompt consumer costs every
    /// broker a fetch per record, which made the brokers the larger CPU party at rest.
    Batched,
}

/// Longest a batched consumer's fetch waits for its bytes.
pub const BATCHED_WAIT_MS: u32 = 250;
/// Bytes a batched consumer's fetch waits for.
pub const BATCHED_BYTES: u32 = 64 * 1024;

/// Which partitions a processor owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// Those the group gives this member, from its committed offsets.
    Group,
    /// Every partition, read from this time on, with no group and nothing committed: each
    /// instance builds the whole state, as a processor whose state spans partitions must.
    Everything { since: Millis },
    /// Every partition, each from the next offset its processor keeps, with no group: a sink
    /// that writes its position with its rows reads from there, whatever Kafka committed. A
    /// partition without a position, or whose log no longer holds it (a recreated topic,
    /// retention), is read from its start.
    Positions(Positions),
}

/// The next offset to read, by topic and partition.
pub type Positions = BTreeMap<(Topic, i32), i64>;

impl Options {
    pub fn new(group: impl Into<String>, stage: &'static str) -> Self {
        Self {
            group: group.into(),
            stage,
            delivery: Delivery::AtLeastOnce,
            tick: None,
            co_partitioned: false,
            assignment: Assignment::Group,
            fetch: Fetch::Prompt,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PartitionedError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error(transparent)]
    Rebuild(#[from] RebuildError),
    #[error(
        "Kafka transactions are not available at {brokers} ({source}). Exactly-once delivery \
         needs them; on brokers without them, run the service at least once"
    )]
    NoTransactions { brokers: String, source: KafkaError },
    #[error("the consumer has not joined its group yet")]
    NoGroupMetadata,
    #[error("a Kafka call did not return within {0:?}")]
    Stuck(Duration),
    #[error("a blocking Kafka call failed to run: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Records whose effects are still being acknowledged; past this the driver stops reading.
const MAX_IN_FLIGHT: usize = 4096;
/// Pause between decode attempts while the schema registry is away.
const DECODE_RETRY: Duration = Duration::from_millis(200);
const POLL: Duration = Duration::from_millis(100);
/// A timer that does not fire while anyone waits.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3_600);
/// A revoke waits this long for every send to be acknowledged: past `message.timeout.ms`,
/// by which each has succeeded or failed.
const REVOKE_FLUSH: Duration = Duration::from_secs(70);
/// Bound on each blocking transaction call; well under `transaction.timeout.ms`.
const TXN_CALL: Duration = Duration::from_secs(20);
/// When a call given [`TXN_CALL`] (twice, for a commit) is taken to be stuck.
const STUCK: Duration = Duration::from_secs(60);
/// How long a commit waits for acknowledged messages to be released; past it, the commit
/// flushes the slow way.
const RELEASE_WAIT: Duration = Duration::from_millis(20);
const TXN_TIMEOUT_MS: &str = "30000";
const TXN_RETRY_BACKOFF_MS: &str = "10";
/// Bound on each call of the start-up probe, so that brokers without transactions are
/// reported promptly.
const PROBE_CALL: Duration = Duration::from_secs(10);
/// Longest the offsets of records that decided nothing wait for a transaction to carry them.
const OFFSETS_EVERY: Duration = Duration::from_secs(1);
/// Pause before the records of a failed transaction go again.
const FAILED_BACKOFF: Duration = Duration::from_millis(500);
/// How long a new transactional producer is retried while the brokers recover.
const RESTART_PATIENCE: Duration = Duration::from_secs(120);

/// What the polling thread hands to the driving task, in order.
enum Polled {
    Record(OwnedMessage),
    /// Partitions gained; with no group, also the offsets reading starts from.
    Assigned(Owned, Option<TopicPartitionList>),
    /// The rebalance waits until the driver acknowledges.
    Revoked(Owned, oneshot::Sender<()>),
}

struct PollContext {
    events: mpsc::Sender<Polled>,
    stage: &'static str,
}

/// Partitions by topic.
type Owned = BTreeMap<String, BTreeSet<i32>>;

fn partitions(list: &TopicPartitionList) -> Owned {
    let mut owned = Owned::new();
    for e in list.elements() {
        owned
            .entry(e.topic().to_owned())
            .or_default()
            .insert(e.partition());
    }
    owned
}

/// The partition numbers, whatever the topic: co-partitioned inputs share them.
fn numbers(owned: &Owned) -> BTreeSet<i32> {
    owned.values().flatten().copied().collect()
}

impl ClientContext for PollContext {
    fn stats(&self, statistics: Statistics) {
        metrics::record_lag(self.stage, &statistics);
    }
}

impl ConsumerContext for PollContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            // A closed channel: the driver has stopped and committed already.
            if self.events.is_closed() {
                return;
            }
            let (ack, acked) = oneshot::channel();
            if self
                .events
                .blocking_send(Polled::Revoked(partitions(list), ack))
                .is_ok()
            {
                let _ = acked.blocking_recv();
            }
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync)
                && !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))
            {
                tracing::warn!(stage = self.stage, error = %e, "commit on revoke failed");
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance
            && !self.events.is_closed()
        {
            let _ = self
                .events
                .blocking_send(Polled::Assigned(partitions(list), None));
        }
    }
}

type SharedConsumer = Arc<BaseConsumer<PollContext>>;

/// Polls until `stop`, on a thread of its own: rebalance callbacks may then wait for the
/// driver without holding up the async runtime.
fn poll(consumer: SharedConsumer, stop: CancellationToken) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.is_cancelled() {
            match consumer.poll(POLL) {
                Some(Ok(m)) => {
                    let m = m.detach();
                    if consumer
                        .context()
                        .events
                        .blocking_send(Polled::Record(m))
                        .is_err()
                    {
                        break;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(stage = consumer.context().stage, error = %e, "consumer error");
                }
                None => {}
            }
        }
    })
}

/// The driver's view of the consumer, the producer and the processor.
struct Driver<P: Processor> {
    processor: P,
    consumer: SharedConsumer,
    producer: EventProducer,
    kafka: KafkaConfig,
    codec: Arc<Codec>,
    topics: Topics,
    options: Options,
    owned: Owned,
    /// Timer decisions waiting for the next transaction.
    ticked: Vec<P::Output>,
    /// Records applied that decided nothing, whose offsets wait for the next transaction.
    unsaved: Vec<OwnedMessage>,
    last_commit: Instant,
    /// The next offset of owned partitions, as committed by this instance or found on
    /// takeover: a transaction of timer decisions alone carries one, to be fenced too.
    positions: BTreeMap<(String, i32), i64>,
    /// An input topic, whose offset the transactions probe carries.
    probe_topic: String,
    shutdown: CancellationToken,
}

/// Runs `processor` over its inputs until `shutdown`; what is in progress is settled first.
pub async fn run<P: Processor>(
    kafka: &KafkaConfig,
    codec: Arc<Codec>,
    processor: P,
    options: Options,
    shutdown: CancellationToken,
) -> Result<P, PartitionedError> {
    let topics = kafka.topics();
    let inputs: Vec<String> = processor
        .topics()
        .into_iter()
        .map(|t| topics.name(t).to_owned())
        .collect();
    let mut client = kafka.consumer(&options.group);
    client.set("statistics.interval.ms", metrics::STATISTICS_INTERVAL_MS);
    if options.co_partitioned {
        client.set("partition.assignment.strategy", "range");
    }
    if options.fetch == Fetch::Batched {
        client
            .set("fetch.wait.max.ms", BATCHED_WAIT_MS.to_string())
            .set("fetch.min.bytes", BATCHED_BYTES.to_string());
    }
    let probe_topic = inputs.first().cloned().unwrap_or_default();
    let transactional = matches!(options.delivery, Delivery::Transactional { .. });
    let grouped = matches!(options.assignment, Assignment::Group);
    if transactional || !grouped {
        // Offsets travel inside the transactions, or are not kept at all.
        client.set("enable.auto.commit", "false");
    }
    let producer_config = producer_config(kafka, &options.delivery);
    let producer = if transactional {
        let start = Start {
            config: &producer_config,
            kafka,
            codec: &codec,
            group: &options.group,
            probe_topic: &probe_topic,
        };
        start.transactional().await?
    } else {
        EventProducer::with_client(&producer_config, topics.clone(), Arc::clone(&codec))?
    };
    let (events, mut polled) = mpsc::channel(1024);
    let consumer: BaseConsumer<PollContext> = client.create_with_context(PollContext {
        events,
        stage: options.stage,
    })?;
    // Exported at zero from the start, so that dashboards and alerts see the series.
    for topic in &inputs {
        metrics::RETRIES.with_label_values(&[topic]);
        for reason in INTAKE_REASONS {
            metrics::DEAD_LETTERED.with_label_values(&[topic.as_str(), reason]);
        }
    }
    let consumer = Arc::new(consumer);
    let starts = match &options.assignment {
        Assignment::Group => {
            let names: Vec<&str> = inputs.iter().map(String::as_str).collect();
            consumer.subscribe(&names)?;
            None
        }
        Assignment::Everything { since } => {
            let (c, since) = (Arc::clone(&consumer), *since);
            Some(
                blocking(move || {
                    history::patiently("assigning partitions", || assign_since(&c, &inputs, since))
                })
                .await?,
            )
        }
        Assignment::Positions(positions) => {
            let (c, positions, topics) = (Arc::clone(&consumer), positions.clone(), topics.clone());
            Some(
                blocking(move || {
                    history::patiently("assigning partitions", || {
                        assign_at(&c, &inputs, &topics, &positions)
                    })
                })
                .await?,
            )
        }
    };
    if let Some(starts) = starts {
        let _ = consumer
            .context()
            .events
            .send(Polled::Assigned(partitions(&starts), Some(starts)))
            .await;
    }
    let stop_polling = CancellationToken::new();
    let poller = poll(Arc::clone(&consumer), stop_polling.clone());
    tracing::info!(stage = options.stage, group = %options.group, delivery = ?options.delivery, assignment = ?options.assignment, "consumer started");

    let mut driver = Driver {
        processor,
        consumer,
        producer,
        kafka: kafka.clone(),
        codec,
        topics,
        options,
        owned: Owned::new(),
        ticked: Vec::new(),
        unsaved: Vec::new(),
        last_commit: Instant::now(),
        positions: BTreeMap::new(),
        probe_topic,
        shutdown,
    };
    // Boxed: the drivers' futures are large, and callers hold them across awaits.
    let result = match driver.options.delivery {
        Delivery::Transactional {
            linger,
            max_records,
            ..
        } => {
            let settling = driver.transactional(&mut polled, producer_config, linger, max_records);
            Box::pin(settling).await
        }
        Delivery::AtLeastOnce => Box::pin(driver.at_least_once(&mut polled)).await,
    };
    // Stop polling, then answer any revoke still waiting so the thread can end.
    stop_polling.cancel();
    polled.close();
    while let Some(p) = polled.recv().await {
        if let Polled::Revoked(_, ack) = p {
            let _ = ack.send(());
        }
    }
    let _ = tokio::task::spawn_blocking(move || poller.join()).await;
    let consumer = Arc::clone(&driver.consumer);
    if !transactional && grouped {
        match tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync))
            .await?
        {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                tracing::warn!(stage = driver.options.stage, error = %e, "final commit failed")
            }
        }
    }
    tracing::info!(stage = driver.options.stage, "consumer stopped");
    // Closing the consumer leaves its group, which blocks: not on the runtime.
    let Driver {
        processor,
        consumer,
        ..
    } = driver;
    tokio::task::spawn_blocking(move || drop(consumer)).await?;
    result.map(|()| processor)
}

/// Every partition of `topics`.
pub(crate) fn all_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topics: &[String],
) -> Result<TopicPartitionList, KafkaError> {
    let mut all = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let known = metadata.topics().iter().find(|t| t.name() == topic);
        // A topic the brokers do not know yet would be read as one with no partitions.
        let Some(known) = known.filter(|t| t.error().is_none() && !t.partitions().is_empty())
        else {
            let code = known
                .and_then(|t| t.error())
                .map_or(RDKafkaErrorCode::UnknownTopicOrPartition, Into::into);
            return Err(KafkaError::MetadataFetch(code));
        };
        for p in known.partitions() {
            all.add_partition(topic, p.id());
        }
    }
    Ok(all)
}

/// Assigns every partition of `topics` from the first record at or after `since`, or from
/// the start where the brokers cannot look offsets up by time.
fn assign_since(
    consumer: &BaseConsumer<PollContext>,
    topics: &[String],
    since: Millis,
) -> Result<TopicPartitionList, KafkaError> {
    let all = all_partitions(consumer, topics)?;
    // Where no record is that recent the brokers answer "the end", which librdkafka would
    // resolve only when it starts fetching, skipping what is written in between; a record
    // still in flight during the lookup is not seen by it either. So such a partition starts
    // at its high watermark from before the lookup: what lies past it is read.
    let mut highs = HashMap::new();
    for e in all.elements() {
        let (_, high) =
            consumer.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))?;
        highs.insert((e.topic().to_owned(), e.partition()), high);
    }
    let mut starts = history::offsets_at(consumer, &all, since)?;
    for ((topic, partition), high) in highs {
        if starts
            .find_partition(&topic, partition)
            .is_some_and(|e| e.offset() == Offset::End)
        {
            starts.set_partition_offset(&topic, partition, Offset::Offset(high))?;
        }
    }
    consumer.assign(&starts)?;
    Ok(starts)
}

/// Assigns every partition of `inputs` at its position; see [`Assignment::Positions`].
fn assign_at(
    consumer: &BaseConsumer<PollContext>,
    inputs: &[String],
    names: &Topics,
    positions: &Positions,
) -> Result<TopicPartitionList, KafkaError> {
    let mut starts = TopicPartitionList::new();
    for e in all_partitions(consumer, inputs)?.elements() {
        let (topic, partition) = (e.topic(), e.partition());
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10))?;
        let kept = names
            .topic_of(topic)
            .and_then(|t| positions.get(&(t, partition)).copied());
        let start = match kept {
            Some(next) if (low..=high).contains(&next) => next,
            Some(next) => {
                tracing::warn!(
                    topic,
                    partition,
                    position = next,
                    low,
                    high,
                    "the log no longer holds this position (a recreated topic, or retention); reading the partition from its start"
                );
                low
            }
            None => low,
        };
        starts.add_partition_offset(topic, partition, Offset::Offset(start))?;
    }
    consumer.assign(&starts)?;
    Ok(starts)
}

fn producer_config(kafka: &KafkaConfig, delivery: &Delivery) -> ClientConfig {
    let mut config = kafka.producer();
    if let Delivery::Transactional {
        transactional_id, ..
    } = delivery
    {
        config
            .set("transactional.id", transactional_id)
            .set("transaction.timeout.ms", TXN_TIMEOUT_MS)
            // A transaction begun while the coordinator still writes the previous one's
            // markers is refused with CONCURRENT_TRANSACTIONS and retried after this backoff
            // (librdkafka's default, 100 ms, is most of a transaction's time). It doubles on
            // each further retry, up to `retry.backoff.max.ms`.
            .set("retry.backoff.ms", TXN_RETRY_BACKOFF_MS)
            // A message may not outlive the transaction it belongs to.
            .set("message.timeout.ms", TXN_TIMEOUT_MS);
    }
    config
}

/// What a new transactional producer needs.
struct Start<'a> {
    config: &'a ClientConfig,
    kafka: &'a KafkaConfig,
    codec: &'a Arc<Codec>,
    group: &'a str,
    /// An input topic, whose offset the transactions probe carries.
    probe_topic: &'a str,
}

impl Start<'_> {
    /// A transactional producer, retried while the brokers recover: a transaction coordinator
    /// moving takes a session timeout and an election. Brokers that refuse transactions
    /// outright, or never complete one within [`RESTART_PATIENCE`], have none to offer.
    async fn transactional(&self) -> Result<EventProducer, PartitionedError> {
        let give_up = Instant::now() + RESTART_PATIENCE;
        loop {
            let producer = EventProducer::with_client(
                self.config,
                self.kafka.topics(),
                Arc::clone(self.codec),
            )?;
            let error = match self.probe(&producer).await {
                Ok(()) => return Ok(producer),
                Err(e) => e,
            };
            let refused = matches!(&error, PartitionedError::Kafka(KafkaError::Transaction(e)) if e.is_fatal());
            if refused || Instant::now() >= give_up {
                return Err(match error {
                    PartitionedError::Kafka(source) => PartitionedError::NoTransactions {
                        brokers: self.kafka.bootstrap_servers().to_owned(),
                        source,
                    },
                    other => other,
                });
            }
            tracing::warn!(group = self.group, error = %error, "starting a transactional producer failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Registers the transactional id, fencing any earlier producer with the same id and
    /// aborting what it left open, then proves that the brokers can end a transaction. An
    /// empty transaction ends without asking them, so the probe carries an offset of a group
    /// of its own, which only the coordinator can discard.
    async fn probe(&self, producer: &EventProducer) -> Result<(), PartitionedError> {
        let p = producer.inner().clone();
        let any_topic = self.probe_topic.to_owned();
        let group = format!("{}-txn-probe", self.group);
        let probe: BaseConsumer = self.kafka.consumer(&group).create()?;
        blocking(move || {
            p.init_transactions(PROBE_CALL)?;
            let metadata = probe.group_metadata().ok_or(KafkaError::Canceled)?;
            let mut offsets = TopicPartitionList::new();
            offsets.add_partition_offset(&any_topic, 0, Offset::Offset(0))?;
            p.begin_transaction()?;
            p.send_offsets_to_transaction(&offsets, &metadata, PROBE_CALL)?;
            p.abort_transaction(PROBE_CALL)
        })
        .await
    }
}

/// Runs a blocking Kafka call off the async runtime, for at most [`STUCK`]. librdkafka's
/// transactional calls wait on its main thread without a bound of their own; one seen waiting
/// through a transaction coordinator's failover never returned. A call past the bound leaves
/// its thread behind, and the driver replaces the producer.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, PartitionedError> {
    match tokio::time::timeout(STUCK, tokio::task::spawn_blocking(f)).await {
        Ok(done) => Ok(done??),
        Err(_) => Err(PartitionedError::Stuck(STUCK)),
    }
}

/// Waits, briefly, until the producer has released every acknowledged message. A delivery
/// wakes its waiter a moment before the polling thread releases the message, and a commit's
/// flush that finds one not yet released polls the event queue for a whole 100 ms step.
fn released(p: &rdkafka::producer::FutureProducer) {
    let deadline = Instant::now() + RELEASE_WAIT;
    while let Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) = p.flush(Duration::ZERO)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// What became of a batch.
enum Settled {
    Committed,
    /// It decided nothing: its offsets wait for the next transaction.
    Waiting,
    /// Nothing to commit, or shutdown came first.
    Dropped,
}

/// A record's place and outputs, once they are acknowledged.
type Acked<O> = Pin<Box<dyn Future<Output = Result<(Stored, Vec<O>), ProduceError>> + Send>>;
type Stored = (String, i32, i64);

async fn wait_all(pending: Vec<Pending>) -> Result<(), ProduceError> {
    for p in pending {
        p.wait().await?;
    }
    Ok(())
}

impl<P: Processor> Driver<P> {
    /// Decodes a record, retrying while the registry is away. `None` at shutdown.
    async fn decode(&self, m: &OwnedMessage) -> Option<Result<(Topic, P::Input), Rejected>> {
        let topic = self.topics.topic_of(m.topic());
        let (Some(topic), Some(bytes)) = (topic, m.payload()) else {
            return Some(Err(Rejected {
                reason: EMPTY_PAYLOAD,
                message: "record has no value".into(),
            }));
        };
        loop {
            match self.processor.decode(&self.codec, topic, bytes).await {
                Ok(input) => return Some(Ok((topic, input))),
                Err(e) if e.is_retriable() => {
                    tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), error = %e, "decode failed; retrying");
                    metrics::RETRIES.with_label_values(&[m.topic()]).inc();
                    if self.shutdown.is_cancelled() {
                        return None;
                    }
                    tokio::time::sleep(DECODE_RETRY).await;
                }
                Err(e) => {
                    return Some(Err(Rejected {
                        reason: e.reason(),
                        message: e.to_string(),
                    }));
                }
            }
        }
    }

    /// Decodes and applies one record: its outputs, or the dead letter it becomes.
    async fn apply(&mut self, m: &OwnedMessage) -> Option<Result<Vec<P::Output>, DeadLetter>> {
        metrics::CONSUMED.with_label_values(&[m.topic()]).inc();
        let outcome = match self.decode(m).await? {
            Ok((topic, input)) => {
                let occurred = input.occurred_at();
                let at = At {
                    topic,
                    partition: m.partition(),
                    offset: m.offset(),
                };
                let out = self.processor.record(at, input).await;
                if out.is_ok()
                    && let Some(occurred) = occurred
                {
                    metrics::observe_stage(self.options.stage, m.topic(), occurred);
                }
                out
            }
            Err(rejected) => Err(rejected),
        };
        Some(match outcome {
            Ok(outputs) => Ok(outputs),
            Err(r) if !self.processor.rejected(m.topic(), &r) => Ok(Vec::new()),
            Err(r) => {
                tracing::warn!(topic = m.topic(), partition = m.partition(), offset = m.offset(), reason = r.reason, error = %r.message, "dead-lettering record");
                Err(DeadLetter::of(m, r.reason, r.message, &self.options.group))
            }
        })
    }

    async fn send(&self, outputs: &[P::Output]) -> Result<Vec<Pending>, ProduceError> {
        let mut pending = Vec::with_capacity(outputs.len());
        for o in outputs {
            pending.push(o.send(&self.producer).await?);
        }
        Ok(pending)
    }

    async fn dead_letter(&self, m: &OwnedMessage, letter: &DeadLetter) -> Result<(), KafkaError> {
        dead_letter::publish(
            self.producer.inner(),
            &letter.topic(),
            m.key(),
            m.payload(),
            letter,
        )
        .await
    }

    fn owns(&self, m: &OwnedMessage) -> bool {
        self.owned
            .get(m.topic())
            .is_some_and(|parts| parts.contains(&m.partition()))
    }

    async fn assigned(
        &mut self,
        parts: Owned,
        starts: Option<TopicPartitionList>,
    ) -> Result<(), PartitionedError> {
        let mut new = Owned::new();
        for (topic, parts) in parts {
            let owned = self.owned.entry(topic.clone()).or_default();
            let gained: BTreeSet<i32> = parts.difference(owned).copied().collect();
            owned.extend(&gained);
            if !gained.is_empty() {
                new.insert(topic, gained);
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        self.rebuild(&new, starts).await
    }

    async fn rebuild(
        &mut self,
        parts: &Owned,
        starts: Option<TopicPartitionList>,
    ) -> Result<(), PartitionedError> {
        let mut tpl = TopicPartitionList::new();
        for (topic, numbers) in parts {
            for p in numbers {
                tpl.add_partition(topic, *p);
            }
        }
        let partitions = numbers(parts);
        let committed = match starts {
            Some(starts) => starts,
            None if self.options.assignment == Assignment::Group => {
                let consumer = Arc::clone(&self.consumer);
                blocking(move || consumer.committed_offsets(tpl, TXN_CALL)).await?
            }
            None => TopicPartitionList::new(),
        };
        for e in committed.elements() {
            if let Offset::Offset(next) = e.offset() {
                self.positions
                    .insert((e.topic().to_owned(), e.partition()), next);
            }
        }
        let started = Instant::now();
        self.processor
            .assigned(Takeover {
                partitions: &partitions,
                committed,
                kafka: &self.kafka,
                codec: &self.codec,
                group: &self.options.group,
            })
            .await?;
        tracing::info!(stage = self.options.stage, partitions = ?parts, took_ms = started.elapsed().as_millis() as u64, "partitions taken over and rebuilt");
        Ok(())
    }

    fn revoked(&mut self, parts: &Owned) {
        self.processor.revoked(&numbers(parts));
        let lost = |topic: &str, p: i32| parts.get(topic).is_some_and(|lost| lost.contains(&p));
        self.positions.retain(|(topic, p), _| !lost(topic, *p));
        // The next owner reads these again.
        self.unsaved.retain(|m| !lost(m.topic(), m.partition()));
        for (topic, lost) in parts {
            if let Some(owned) = self.owned.get_mut(topic) {
                owned.retain(|p| !lost.contains(p));
            }
        }
        tracing::info!(stage = self.options.stage, partitions = ?parts, "partitions handed off");
    }

    fn ticker(&self) -> tokio::time::Interval {
        // Without a tick the branch is disabled, so the interval is never awaited.
        let mut ticker = tokio::time::interval(self.options.tick.unwrap_or(NEVER));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        ticker
    }

    /// Outputs sent as they come; offsets stored in order once acknowledged.
    async fn at_least_once(
        &mut self,
        polled: &mut mpsc::Receiver<Polled>,
    ) -> Result<(), PartitionedError> {
        let mut acks: FuturesOrdered<Acked<P::Output>> = FuturesOrdered::new();
        let mut ticker = self.ticker();
        let ticking = self.options.tick.is_some();
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                Some(acked) = acks.next(), if !acks.is_empty() => self.store(acked?),
                _ = ticker.tick(), if ticking => {
                    let outputs = self.processor.tick(Millis::now());
                    // Timer decisions have no input offset: a new owner re-derives them.
                    let pending = self.send(&outputs).await?;
                    let stage = self.options.stage;
                    if !pending.is_empty() {
                        tokio::spawn(async move {
                            if let Err(e) = wait_all(pending).await {
                                tracing::warn!(stage, error = %e, "timer decision not acknowledged");
                            }
                        });
                    }
                }
                p = polled.recv(), if acks.len() < MAX_IN_FLIGHT => match p {
                    None => break,
                    Some(Polled::Assigned(parts, starts)) => self.assigned(parts, starts).await?,
                    Some(Polled::Revoked(parts, ack)) => {
                        self.revoked(&parts);
                        // Everything decided so far lands, and its offsets are stored,
                        // before the partitions move.
                        while let Some(acked) = acks.next().await {
                            self.store(acked?);
                        }
                        // Timer decisions too: a rebuild reads the log only as far as it is.
                        if let Err(e) = self.producer.flush(REVOKE_FLUSH).await {
                            tracing::error!(stage = self.options.stage, error = %e, "decisions not acknowledged before the hand-off");
                        }
                        let _ = ack.send(());
                    }
                    Some(Polled::Record(m)) => {
                        if !self.owns(&m) {
                            continue;
                        }
                        let Some(outcome) = self.apply(&m).await else { break };
                        let (pending, outputs) = match outcome {
                            Ok(outputs) => (self.send(&outputs).await?, outputs),
                            Err(letter) => {
                                // Durable before the offset moves past the record.
                                self.dead_letter(&m, &letter).await?;
                                (Vec::new(), Vec::new())
                            }
                        };
                        let stored = (m.topic().to_owned(), m.partition(), m.offset());
                        acks.push_back(Box::pin(async move {
                            wait_all(pending).await?;
                            Ok((stored, outputs))
                        }));
                    }
                },
            }
        }
        while let Some(acked) = acks.next().await {
            if let Ok(done) = acked {
                self.store(done);
            }
        }
        Ok(())
    }

    fn store(&mut self, ((topic, partition, offset), outputs): (Stored, Vec<P::Output>)) {
        self.processor.settled(&outputs);
        if self.options.assignment != Assignment::Group {
            return;
        }
        // librdkafka commits `offset + 1` itself.
        if let Err(e) = self.consumer.store_offset(&topic, partition, offset) {
            tracing::debug!(topic, partition, error = %e, "offset not stored");
        }
    }

    /// Batches of records, each settled in one transaction.
    async fn transactional(
        &mut self,
        polled: &mut mpsc::Receiver<Polled>,
        producer_config: ClientConfig,
        linger: Duration,
        max_records: usize,
    ) -> Result<(), PartitionedError> {
        let mut ticker = self.ticker();
        let mut failed = Vec::new();
        loop {
            let (batch, stop) = self
                .collect(polled, &mut ticker, linger, max_records, failed)
                .await?;
            let waiting =
                !self.unsaved.is_empty() && (stop || self.last_commit.elapsed() >= OFFSETS_EVERY);
            failed = if batch.is_empty() && self.ticked.is_empty() && !waiting {
                Vec::new()
            } else {
                self.settle(batch, stop, &producer_config).await?
            };
            if stop {
                return Ok(());
            }
        }
    }

    /// Collects records until `linger` passes after the first (or after a timer decision),
    /// the batch is full, or shutdown. It starts with the records of a failed transaction,
    /// if any. Rebalances are handled here, with no transaction open.
    async fn collect(
        &mut self,
        polled: &mut mpsc::Receiver<Polled>,
        ticker: &mut tokio::time::Interval,
        linger: Duration,
        max_records: usize,
        mut batch: Vec<OwnedMessage>,
    ) -> Result<(Vec<OwnedMessage>, bool), PartitionedError> {
        let until = tokio::time::sleep(if batch.is_empty() {
            NEVER
        } else {
            FAILED_BACKOFF
        });
        tokio::pin!(until);
        // Offsets waiting for a transaction go in one of their own once traffic stops, so
        // that an idle group is committed to the end.
        let idle = tokio::time::sleep_until((self.last_commit + OFFSETS_EVERY).into());
        tokio::pin!(idle);
        let ticking = self.options.tick.is_some();
        loop {
            let lingering = !batch.is_empty() || !self.ticked.is_empty();
            let waiting = !lingering && !self.unsaved.is_empty();
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Ok((batch, true)),
                () = &mut until, if lingering => return Ok((batch, false)),
                () = &mut idle, if waiting => return Ok((batch, false)),
                _ = ticker.tick(), if ticking => {
                    let outputs = self.processor.tick(Millis::now());
                    if !outputs.is_empty() && !lingering {
                        until.as_mut().reset(tokio::time::Instant::now() + linger);
                    }
                    self.ticked.extend(outputs);
                }
                p = polled.recv() => match p {
                    None => return Ok((batch, true)),
                    Some(Polled::Assigned(parts, starts)) => self.assigned(parts, starts).await?,
                    Some(Polled::Revoked(parts, ack)) => {
                        // The next owner reads these records again.
                        batch.retain(|m| {
                            !parts.get(m.topic()).is_some_and(|lost| lost.contains(&m.partition()))
                        });
                        self.revoked(&parts);
                        let _ = ack.send(());
                    }
                    Some(Polled::Record(m)) if self.owns(&m) => {
                        if !lingering {
                            until.as_mut().reset(tokio::time::Instant::now() + linger);
                        }
                        batch.push(m);
                        if batch.len() >= max_records {
                            return Ok((batch, false));
                        }
                    }
                    Some(Polled::Record(_)) => {}
                },
            }
        }
    }

    /// Settles a batch in one transaction. After a failure it aborts and rebuilds, and returns
    /// the batch to be collected again: a revoke waiting meanwhile (a lost group membership
    /// fails every commit until it is handled) drops the records of the partitions lost.
    async fn settle(
        &mut self,
        batch: Vec<OwnedMessage>,
        flush: bool,
        producer_config: &ClientConfig,
    ) -> Result<Vec<OwnedMessage>, PartitionedError> {
        let error = match self.try_settle(&batch, flush).await {
            Ok(Settled::Committed) => {
                metrics::TRANSACTIONS
                    .with_label_values(&[self.options.stage, "committed"])
                    .inc();
                return Ok(Vec::new());
            }
            Ok(Settled::Waiting) => {
                self.unsaved.extend(batch);
                return Ok(Vec::new());
            }
            Ok(Settled::Dropped) => return Ok(Vec::new()),
            Err(e) => e,
        };
        let records = batch.len() + self.unsaved.len();
        metrics::TRANSACTIONS
            .with_label_values(&[self.options.stage, "aborted"])
            .inc();
        tracing::warn!(stage = self.options.stage, error = %error, records, "transaction failed; aborting and trying again");
        let fatal = matches!(&error, PartitionedError::Kafka(KafkaError::Transaction(t)) if t.is_fatal())
            || matches!(error, PartitionedError::Stuck(_));
        let p = self.producer.inner().clone();
        let aborted = if fatal {
            Ok(())
        } else {
            blocking(move || p.abort_transaction(TXN_CALL)).await
        };
        if fatal || aborted.is_err() {
            // A producer that cannot end its transaction is done for. A new one under the
            // same transactional id fences it, and the coordinator aborts what it left.
            tracing::warn!(stage = self.options.stage, abort = ?aborted.err(), "transactional producer unusable; starting a new one");
            self.restart_producer(producer_config).await?;
        }
        // What the aborted transaction decided is gone: rebuild from the logs.
        let owned = self.owned.clone();
        self.processor.revoked(&numbers(&owned));
        self.rebuild(&owned, None).await?;
        // The records whose offsets were waiting go again too: the rebuild stops at the
        // committed offsets.
        let mut retry = std::mem::take(&mut self.unsaved);
        retry.extend(batch);
        Ok(retry)
    }

    /// Applies a batch, then commits what it decided with its offsets in one transaction. A
    /// batch that decided nothing (driver supply, mostly) needs none: its offsets wait, for at
    /// most [`OFFSETS_EVERY`], to go with the next transaction, and it stays at hand in case
    /// that one fails. `flush` commits even so, at shutdown.
    async fn try_settle(
        &mut self,
        batch: &[OwnedMessage],
        flush: bool,
    ) -> Result<Settled, PartitionedError> {
        // Timer decisions go first; if this transaction fails they are derived again.
        let mut all = std::mem::take(&mut self.ticked);
        let mut letters = Vec::new();
        for m in batch {
            let Some(outcome) = self.apply(m).await else {
                // Shutdown: nothing of this batch is committed; the next owner reads it again.
                return Ok(Settled::Dropped);
            };
            match outcome {
                Ok(outputs) => all.extend(outputs),
                Err(letter) => letters.push((m, letter)),
            }
        }
        let decided = !all.is_empty() || !letters.is_empty();
        if !decided && !flush && self.last_commit.elapsed() < OFFSETS_EVERY {
            return Ok(Settled::Waiting);
        }
        if !decided && self.unsaved.is_empty() && batch.is_empty() {
            return Ok(Settled::Dropped);
        }
        let began = Instant::now();
        let p = self.producer.inner().clone();
        blocking(move || p.begin_transaction()).await?;
        let pending = self.send(&all).await?;
        for (m, letter) in &letters {
            self.dead_letter(m, letter).await?;
        }
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for m in self.unsaved.iter().chain(batch) {
            next.insert((m.topic().to_owned(), m.partition()), m.offset() + 1);
        }
        // Every transaction carries offsets with this member's place in the group, so that
        // the group coordinator refuses it once the group has moved on without the member
        // (KIP-447): one frozen or cut off past its session cannot publish what it decided
        // for partitions that now belong to another. Timer decisions alone carry an owned
        // partition's position, unchanged.
        if next.is_empty()
            && let Some((place, offset)) = self.positions.first_key_value()
        {
            next.insert(place.clone(), *offset);
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in &next {
            offsets.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        let group = (offsets.count() > 0)
            .then(|| self.consumer.group_metadata())
            .map(|g| g.ok_or(PartitionedError::NoGroupMetadata))
            .transpose()?;
        let p = self.producer.inner().clone();
        let committed = offsets.clone();
        if let Some(group) = group {
            blocking(move || p.send_offsets_to_transaction(&offsets, &group, TXN_CALL)).await?;
        }
        // Acknowledged before the commit: rust-rdkafka's commit first flushes, and a flush
        // with sends in flight waits on the event queue, which this producer's own polling
        // thread serves, in steps of 100 ms.
        wait_all(pending).await?;
        let p = self.producer.inner().clone();
        blocking(move || {
            released(&p);
            p.commit_transaction(TXN_CALL)
        })
        .await?;
        // The same offsets again, through the group: a no-op where the transaction already
        // stored them, and needed on the embedded mock cluster, which acknowledges offsets
        // sent to a transaction without storing them. It only ever follows a commit.
        if committed.count() > 0
            && let Err(e) = self.consumer.commit(&committed, CommitMode::Async)
        {
            tracing::debug!(error = %e, "group commit after the transaction failed");
        }
        metrics::TRANSACTION_SECONDS
            .with_label_values(&[self.options.stage])
            .observe(began.elapsed().as_secs_f64());
        self.positions.extend(next);
        self.unsaved.clear();
        self.last_commit = Instant::now();
        self.processor.settled(&all);
        Ok(Settled::Committed)
    }

    /// Replaces the transactional producer; the new one fences the old.
    async fn restart_producer(&mut self, config: &ClientConfig) -> Result<(), PartitionedError> {
        let start = Start {
            config,
            kafka: &self.kafka,
            codec: &self.codec,
            group: &self.options.group,
            probe_topic: &self.probe_topic,
        };
        self.producer = start.transactional().await?;
        tracing::info!(
            stage = self.options.stage,
            "new transactional producer started"
        );
        Ok(())
    }
}
