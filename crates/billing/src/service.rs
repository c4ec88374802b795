//! Billing on Kafka.
//!
//! Exactly once: records are collected for a short interval with no transaction open, then
//! one transaction carries their charges, their dead letters and the input offsets
//! (`send_offsets_to_transaction`). Rebalance callbacks only run while records are being
//! collected, so a partition is never handed over with a transaction open on it. If a
//! transaction fails it is aborted, the ledger is rebuilt from the logs, and the consumer
//! seeks back to the committed offsets: the aborted records are charged again, once.
//!
//! At least once (for brokers without transactions): the same batches, but charges are
//! acknowledged before the offsets are stored. On every takeover and after every failure the
//! payments log is read back, so a ride already charged is not charged again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bimride_events::{Codec, FareCharged, Millis, RideEvent, Topic, TopicValue};
use bimride_kafka::dead_letter::{self, DeadLetter};
use bimride_kafka::history::{self, HistoryError};
use bimride_kafka::producer::Delivery as Pending;
use bimride_kafka::rebalance::{Change, ChangeContext};
use bimride_kafka::{EventProducer, KafkaConfig, ProduceError};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::Producer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use crate::ledger::{Ledger, Mode};
use crate::{BillingSettings, Delivery, SettingsError, metrics};

/// This service's name in the shared latency and lag metrics.
const STAGE: &str = "billing";
/// Bound on each blocking transaction call; well under `transaction.timeout.ms`.
const TXN_CALL: Duration = Duration::from_secs(20);
/// When a call given [`TXN_CALL`] (twice, for a commit) is taken to be stuck.
const STUCK: Duration = Duration::from_secs(60);
const TXN_TIMEOUT_MS: &str = "30000";
/// Bound on each call of the start-up probe, so that a broker without transactions is
/// reported promptly.
const PROBE_CALL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error("rebuilding state failed: {0}")]
    History(#[from] HistoryError),
    #[error(
        "Kafka transactions are not available at {brokers} ({source}). Billing charges exactly \
         once only with transactions; on brokers without them, run it with \
         --billing-delivery at-least-once, which deduplicates charges by ride"
    )]
    NoTransactions { brokers: String, source: KafkaError },
    #[error("the consumer has not joined its group yet")]
    NoGroupMetadata,
    #[error("a Kafka call did not return within {0:?}")]
    Stuck(Duration),
    #[error("a blocking Kafka call failed to run: {0}")]
    Join(#[from] tokio::task::JoinError),
}

struct Billing {
    consumer: Arc<StreamConsumer<ChangeContext>>,
    producer: EventProducer,
    /// The producer's settings, to start a new one when a fatal error ends the old one.
    producer_config: rdkafka::ClientConfig,
    codec: Arc<Codec>,
    kafka: KafkaConfig,
    settings: BillingSettings,
    ledger: Ledger,
    owned: BTreeSet<i32>,
    /// The input topic, and the output topic read back on takeover.
    events: String,
    payments: String,
}

/// Runs one billing instance until `shutdown`; the batch in progress is settled first.
pub async fn run(
    kafka: &KafkaConfig,
    codec: Arc<Codec>,
    settings: BillingSettings,
    shutdown: CancellationToken,
) -> Result<(), BillingError> {
    settings.validate()?;
    let exactly_once = settings.delivery == Delivery::ExactlyOnce;
    let mut producer = kafka.producer();
    let mut consumer = kafka.consumer(&settings.group);
    consumer.set(
        "statistics.interval.ms",
        bimride_kafka::metrics::STATISTICS_INTERVAL_MS,
    );
    if exactly_once {
        producer
            .set("transactional.id", &settings.transactional_id)
            .set("transaction.timeout.ms", TXN_TIMEOUT_MS)
            // A message may not outlive the transaction it belongs to.
            .set("message.timeout.ms", TXN_TIMEOUT_MS);
        // Offsets travel inside the transactions instead.
        consumer.set("enable.auto.commit", "false");
    }
    let producer_config = producer;
    let producer =
        EventProducer::with_client(&producer_config, kafka.topics(), Arc::clone(&codec))?;
    if exactly_once {
        start_transactions(&producer, kafka, &settings.group).await?;
    }
    let (context, mut changes) = ChangeContext::new(STAGE);
    let consumer: StreamConsumer<ChangeContext> = consumer.create_with_context(context)?;
    let topics = kafka.topics();
    let events = topics.name(Topic::RideEvents).to_owned();
    consumer.subscribe(&[&events])?;
    let mut b = Billing {
        producer_config,
        events,
        payments: topics.name(Topic::Payments).to_owned(),
        consumer: Arc::new(consumer),
        producer,
        codec,
        kafka: kafka.clone(),
        ledger: Ledger::new(settings.commission_bp),
        settings,
        owned: BTreeSet::new(),
    };
    tracing::info!(group = %b.settings.group, delivery = ?b.settings.delivery, "billing started");
    let mut forgot = Instant::now();
    loop {
        let (batch, stop) = b.collect(&mut changes, &shutdown).await?;
        if !batch.is_empty() {
            b.settle(batch).await?;
        }
        if forgot.elapsed() > Duration::from_secs(10) {
            let window = b.settings.billing_replay_secs as i64 * 1_000;
            b.ledger.forget_before(Millis(Millis::now().0 - window));
            forgot = Instant::now();
        }
        if stop {
            break;
        }
    }
    if !exactly_once {
        let consumer = Arc::clone(&b.consumer);
        match tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync))
            .await?
        {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!(error = %e, "final commit failed"),
        }
    }
    tracing::info!(tally = ?b.ledger.tally(), "billing stopped");
    Ok(())
}

/// Registers the transactional id, fencing any earlier instance with the same id and
/// aborting what it left open, then proves that the brokers can end a transaction. An empty
/// transaction ends without asking them, so the probe carries an offset of a group of its
/// own, which only the coordinator can discard.
async fn start_transactions(
    producer: &EventProducer,
    kafka: &KafkaConfig,
    group: &str,
) -> Result<(), BillingError> {
    let p = producer.inner().clone();
    let events = kafka.topics().name(Topic::RideEvents).to_owned();
    let probe: BaseConsumer = kafka.consumer(&format!("{group}-txn-probe")).create()?;
    let started = tokio::time::timeout(
        STUCK,
        tokio::task::spawn_blocking(move || {
            p.init_transactions(PROBE_CALL)?;
            let metadata = probe.group_metadata().ok_or(KafkaError::Canceled)?;
            let mut offsets = TopicPartitionList::new();
            offsets.add_partition_offset(&events, 0, Offset::Offset(0))?;
            p.begin_transaction()?;
            p.send_offsets_to_transaction(&offsets, &metadata, PROBE_CALL)?;
            p.abort_transaction(PROBE_CALL)
        }),
    )
    .await
    .map_err(|_| BillingError::Stuck(STUCK))??;
    started.map_err(|source| BillingError::NoTransactions {
        brokers: kafka.bootstrap_servers().to_owned(),
        source,
    })
}

/// Runs a blocking Kafka call off the async runtime, for at most [`STUCK`]. librdkafka's
/// transactional calls wait on its main thread without a bound of their own; one seen waiting
/// through a transaction coordinator's failover never returned. A call past the bound leaves
/// its thread behind, and billing replaces the producer.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KafkaError> + Send + 'static,
) -> Result<T, BillingError> {
    match tokio::time::timeout(STUCK, tokio::task::spawn_blocking(f)).await {
        Ok(done) => Ok(done??),
        Err(_) => Err(BillingError::Stuck(STUCK)),
    }
}

impl Billing {
    /// Collects records until the commit interval passes after the first, the batch is full,
    /// or shutdown. Returns the batch and whether to stop after it.
    async fn collect(
        &mut self,
        changes: &mut UnboundedReceiver<Change>,
        shutdown: &CancellationToken,
    ) -> Result<(Vec<OwnedMessage>, bool), BillingError> {
        let consumer = Arc::clone(&self.consumer);
        let mut batch: Vec<OwnedMessage> = Vec::new();
        let linger = tokio::time::sleep(Duration::from_secs(3_600));
        tokio::pin!(linger);
        let mut lingering = false;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok((batch, true)),
                () = &mut linger, if lingering => return Ok((batch, false)),
                m = consumer.recv() => {
                    while let Ok(change) = changes.try_recv() {
                        self.apply_change(change, &mut batch).await?;
                    }
                    match m {
                        Ok(m) if self.owned.contains(&m.partition()) => {
                            batch.push(m.detach());
                            if !lingering {
                                lingering = true;
                                let until = tokio::time::Instant::now()
                                    + Duration::from_millis(self.settings.commit_ms);
                                linger.as_mut().reset(until);
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "consumer error"),
                    }
                    if batch.len() >= self.settings.max_batch {
                        return Ok((batch, false));
                    }
                }
            }
        }
    }

    async fn apply_change(
        &mut self,
        change: Change,
        batch: &mut Vec<OwnedMessage>,
    ) -> Result<(), BillingError> {
        let new = change.apply_to(&mut self.owned);
        match change {
            Change::Revoked(parts) => {
                // No transaction is open while collecting: the next owner reads these again.
                batch.retain(|m| !parts.contains(&m.partition()));
                self.ledger.revoke(&parts);
                tracing::info!(partitions = ?parts, "billing partitions handed off");
            }
            Change::Assigned(_) if !new.is_empty() => self.rebuild(&new).await?,
            Change::Assigned(_) => {}
        }
        Ok(())
    }

    /// Replays the partitions' ride events up to the committed offsets, then marks every ride
    /// the payments log already charged.
    async fn rebuild(&mut self, parts: &BTreeSet<i32>) -> Result<(), BillingError> {
        let consumer = Arc::clone(&self.consumer);
        let kafka = self.kafka.clone();
        let group = self.settings.group.clone();
        let window = Duration::from_secs(self.settings.billing_replay_secs);
        let mut events = TopicPartitionList::new();
        for p in parts {
            events.add_partition(&self.events, *p);
        }
        let payments = self.payments.clone();
        let history = tokio::task::spawn_blocking(move || -> Result<_, BillingError> {
            let mut marks = consumer.committed_offsets(events, TXN_CALL)?;
            for e in marks.clone().elements() {
                // Ride events and payments are co-partitioned by ride.
                marks.add_partition_offset(&payments, e.partition(), Offset::End)?;
            }
            Ok(history::read(&kafka, &group, &marks, window)?)
        })
        .await??;
        let (mut replayed, mut charged) = (0, 0);
        for h in history
            .iter()
            .filter(|h| h.topic == self.events && h.before_mark)
        {
            if let Ok(e) = self.codec.decode::<RideEvent>(&h.payload).await {
                let _ = self.ledger.apply(h.partition, &e, Mode::Replay);
                replayed += 1;
            }
        }
        for h in history.iter().filter(|h| h.topic == self.payments) {
            if let Ok(c) = self.codec.decode::<FareCharged>(&h.payload).await {
                self.ledger.charged(h.partition, &c);
                charged += 1;
            }
        }
        tracing::info!(partitions = ?parts, replayed, charged, rides = self.ledger.len(), "billing partitions taken over and rebuilt");
        Ok(())
    }

    /// Makes a batch's effects durable. A failure that leaves the producer usable aborts the
    /// transaction and rewinds; anything else stops billing.
    async fn settle(&mut self, batch: Vec<OwnedMessage>) -> Result<(), BillingError> {
        match self.try_settle(&batch).await {
            Ok(charges) => {
                metrics::committed(&charges);
                metrics::TRANSACTIONS
                    .with_label_values(&["committed"])
                    .inc();
                Ok(())
            }
            Err(e) => {
                metrics::TRANSACTIONS.with_label_values(&["aborted"]).inc();
                tracing::warn!(error = %e, records = batch.len(), "batch failed; aborting and rewinding");
                if self.settings.delivery == Delivery::ExactlyOnce {
                    let fatal = matches!(&e, BillingError::Kafka(KafkaError::Transaction(t)) if t.is_fatal())
                        || matches!(e, BillingError::Stuck(_));
                    let p = self.producer.inner().clone();
                    let aborted = if fatal {
                        Ok(())
                    } else {
                        blocking(move || p.abort_transaction(TXN_CALL)).await
                    };
                    if fatal || aborted.is_err() {
                        // A producer that cannot end its transaction is done for. A new one
                        // under the same transactional id fences it, and the coordinator
                        // aborts what it left open.
                        tracing::warn!(abort = ?aborted.err(), "transactional producer unusable; starting a new one");
                        self.restart_producer().await?;
                    }
                }
                self.rewind().await
            }
        }
    }

    async fn try_settle(
        &mut self,
        batch: &[OwnedMessage],
    ) -> Result<Vec<FareCharged>, BillingError> {
        let exactly_once = self.settings.delivery == Delivery::ExactlyOnce;
        if exactly_once {
            let p = self.producer.inner().clone();
            blocking(move || p.begin_transaction()).await?;
        }
        let mut charges = Vec::new();
        let mut pending: Vec<Pending> = Vec::new();
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for m in batch {
            next.insert(m.partition(), m.offset() + 1);
            match self.process(m).await {
                Ok(Some(charge)) => {
                    pending.push(self.producer.send(&charge).await?);
                    charges.push(charge);
                }
                Ok(None) => {}
                Err(letter) => {
                    dead_letter::publish(
                        self.producer.inner(),
                        &letter.topic(),
                        m.key(),
                        m.payload(),
                        &letter,
                    )
                    .await?;
                }
            }
        }
        let mut offsets = TopicPartitionList::new();
        for (p, o) in &next {
            offsets.add_partition_offset(&self.events, *p, Offset::Offset(*o))?;
        }
        if exactly_once {
            let group = self
                .consumer
                .group_metadata()
                .ok_or(BillingError::NoGroupMetadata)?;
            let p = self.producer.inner().clone();
            let committed = offsets.clone();
            blocking(move || {
                p.send_offsets_to_transaction(&offsets, &group, TXN_CALL)?;
                p.commit_transaction(TXN_CALL)
            })
            .await?;
            // The same offsets again, through the group: a no-op where the transaction already
            // stored them, and needed on the embedded mock cluster, which acknowledges offsets
            // sent to a transaction without storing them. It only ever follows a commit.
            if let Err(e) = self.consumer.commit(&committed, CommitMode::Async) {
                tracing::debug!(error = %e, "group commit after the transaction failed");
            }
            for d in pending {
                d.wait().await?;
            }
        } else {
            for d in pending {
                d.wait().await?;
            }
            for (p, o) in &next {
                // librdkafka commits `offset + 1` itself: store the record's own.
                self.consumer.store_offset(&self.events, *p, o - 1)?;
            }
        }
        Ok(charges)
    }

    /// Replaces the transactional producer, retrying while the brokers recover (a transaction
    /// coordinator moving takes a session timeout and an election).
    async fn restart_producer(&mut self) -> Result<(), BillingError> {
        let give_up = Instant::now() + Duration::from_secs(120);
        loop {
            let started = async {
                let producer = EventProducer::with_client(
                    &self.producer_config,
                    self.kafka.topics(),
                    Arc::clone(&self.codec),
                )?;
                start_transactions(&producer, &self.kafka, &self.settings.group).await?;
                Ok::<_, BillingError>(producer)
            };
            match started.await {
                Ok(producer) => {
                    self.producer = producer;
                    tracing::info!("new transactional producer started");
                    return Ok(());
                }
                Err(e) if Instant::now() < give_up => {
                    tracing::warn!(error = %e, "starting a new transactional producer failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// After a failed batch: forget what it changed, rebuild from the logs, and read again
    /// from the committed offsets.
    async fn rewind(&mut self) -> Result<(), BillingError> {
        let owned = self.owned.clone();
        self.ledger.revoke(&owned);
        self.rebuild(&owned).await?;
        let consumer = Arc::clone(&self.consumer);
        let events = self.events.clone();
        blocking(move || {
            let mut tpl = TopicPartitionList::new();
            for p in &owned {
                tpl.add_partition(&events, *p);
            }
            for e in consumer.committed_offsets(tpl, TXN_CALL)?.elements() {
                let to = match e.offset() {
                    Offset::Offset(o) => Offset::Offset(o),
                    _ => Offset::Beginning,
                };
                consumer.seek(&events, e.partition(), to, TXN_CALL)?;
            }
            Ok(())
        })
        .await
    }

    /// Decodes and applies one live record: its charge, or the dead letter it becomes.
    async fn process(&mut self, m: &OwnedMessage) -> Result<Option<FareCharged>, DeadLetter> {
        bimride_kafka::metrics::CONSUMED
            .with_label_values(&[&self.events])
            .inc();
        let letter =
            |reason: &str, error: String| DeadLetter::of(m, reason, error, &self.settings.group);
        let Some(bytes) = m.payload() else {
            return Err(letter("empty_payload", "record has no value".into()));
        };
        let event = loop {
            match self.codec.decode::<RideEvent>(bytes).await {
                Ok(e) => break e,
                Err(e) if e.is_retriable() => {
                    tracing::warn!(partition = m.partition(), offset = m.offset(), error = %e, "decode failed; retrying");
                    bimride_kafka::metrics::RETRIES
                        .with_label_values(&[&self.events])
                        .inc();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(letter(e.reason(), e.to_string())),
            }
        };
        let before = self.ledger.tally().duplicates;
        let charge = self
            .ledger
            .apply(m.partition(), &event, Mode::Live)
            .map_err(|e| letter(e.reason(), e.to_string()))?;
        if self.ledger.tally().duplicates > before {
            metrics::DUPLICATES.with_label_values(&["trip"]).inc();
        }
        bimride_kafka::metrics::observe_stage(STAGE, &self.events, event.occurred_at().0);
        Ok(charge)
    }
}
