//! Dispatch on Kafka: one consumer in the dispatch group reads both co-partitioned inputs,
//! feeds the engine, and publishes what it decides.
//!
//! - The range assignor gives a member the same partition numbers of both topics, so an
//!   instance sees all the demand and all the supply of the regions it owns.
//! - On assignment, the new partitions' state is rebuilt from the log before live records
//!   are processed: requests and supply within the replay window up to the committed offset,
//!   plus the assignments and cancellations already written past it.
//! - A record's offset is stored only once everything it caused is acknowledged, in order.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bimride_domain::City;
use bimride_events::{Codec, DispatchEvent, Millis, RideEvent, SupplyEvent, Topic, TopicValue};
use bimride_kafka::dead_letter::{self, DeadLetter};
use bimride_kafka::history::{self, HistoryError};
use bimride_kafka::producer::Delivery;
use bimride_kafka::rebalance::{Change, ChangeContext};
use bimride_kafka::{EventProducer, KafkaConfig, ProduceError};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, EngineError, Mode, Output, Timing};
use crate::{DispatchSettings, metrics};

/// Records whose effects are still being acknowledged; past this the loop stops reading.
const MAX_IN_FLIGHT: usize = 4096;
/// This service's name in the shared latency and lag metrics.
const STAGE: &str = "dispatch";

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("publishing a decision failed: {0}")]
    Publish(#[from] ProduceError),
    #[error("rebuilding state failed: {0}")]
    Rebuild(String),
    #[error("rebuilding state failed: {0}")]
    History(#[from] HistoryError),
}

type Acked = Pin<Box<dyn Future<Output = Result<(String, i32, i64), ProduceError>> + Send>>;

struct Dispatcher {
    consumer: Arc<StreamConsumer<ChangeContext>>,
    codec: Arc<Codec>,
    producer: EventProducer,
    kafka: KafkaConfig,
    settings: DispatchSettings,
    engine: Engine,
    owned: BTreeSet<i32>,
    /// The co-partitioned inputs.
    requests: String,
    supply: String,
}

/// Runs one dispatch instance until `shutdown` is cancelled.
pub async fn run(
    kafka: &KafkaConfig,
    codec: Arc<Codec>,
    city: City,
    settings: DispatchSettings,
    shutdown: CancellationToken,
) -> Result<(), DispatchError> {
    let producer = EventProducer::new(kafka, Arc::clone(&codec))?;
    let (context, mut changes) = ChangeContext::new(STAGE);
    let context = context.flushing(producer.inner().clone());
    let consumer: StreamConsumer<ChangeContext> = kafka
        .consumer(&settings.group)
        .set("partition.assignment.strategy", "range")
        .set(
            "statistics.interval.ms",
            bimride_kafka::metrics::STATISTICS_INTERVAL_MS,
        )
        .create_with_context(context)?;
    let topics = kafka.topics();
    let (requests, supply) = (
        topics.name(Topic::RideRequests).to_owned(),
        topics.name(Topic::DriverSupply).to_owned(),
    );
    consumer.subscribe(&[&requests, &supply])?;
    let timing = Timing {
        offer_timeout_ms: settings.offer_timeout_ms as i64,
        max_wait_ms: settings.max_wait_ms as i64,
    };
    let mut d = Dispatcher {
        consumer: Arc::new(consumer),
        producer,
        codec,
        kafka: kafka.clone(),
        engine: Engine::new(city, timing),
        settings,
        owned: BTreeSet::new(),
        requests,
        supply,
    };
    tracing::info!(group = %d.settings.group, "dispatch started");
    let mut acks: FuturesOrdered<Acked> = FuturesOrdered::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(d.settings.tick_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let consumer = Arc::clone(&d.consumer);
    let result = loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break Ok(()),
            Some(acked) = acks.next(), if !acks.is_empty() => match acked {
                Ok((topic, partition, offset)) => {
                    // librdkafka commits `offset + 1` itself.
                    let _ = d.consumer.store_offset(&topic, partition, offset);
                }
                Err(e) => break Err(e.into()),
            },
            _ = ticker.tick() => {
                // A revoke may have arrived since the last record: no timer decision for
                // regions this instance no longer owns.
                while let Ok(change) = changes.try_recv() {
                    d.apply_change(change).await?;
                }
                let now = Millis::now();
                let outputs = d.engine.tick(now);
                d.engine.forget_settled(Millis(now.0 - d.settings.replay_window_secs as i64 * 1000));
                // Timer decisions have no input offset: a new owner re-derives them.
                let pending = d.publish(outputs).await?;
                tokio::spawn(async move {
                    if let Err(e) = wait_all(pending).await {
                        tracing::warn!(error = %e, "timer decision not acknowledged");
                    }
                });
                metrics::WAITING.set(d.engine.waiting() as i64);
                metrics::DRIVERS.set(d.engine.drivers() as i64);
            }
            m = consumer.recv(), if acks.len() < MAX_IN_FLIGHT => {
                while let Ok(change) = changes.try_recv() {
                    d.apply_change(change).await?;
                }
                match m {
                    Ok(m) => {
                        let m = m.detach();
                        if let Some(acked) = d.process(m).await? {
                            acks.push_back(acked);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "consumer error"),
                }
            }
        }
    };
    // Let what was decided land, then commit what it covers.
    while let Some(acked) = acks.next().await {
        if let Ok((topic, partition, offset)) = acked {
            let _ = d.consumer.store_offset(&topic, partition, offset);
        }
    }
    let committed =
        tokio::task::spawn_blocking(move || consumer.commit_consumer_state(CommitMode::Sync))
            .await
            .map_err(|e| DispatchError::Rebuild(e.to_string()))?;
    if let Err(e) = committed
        && !matches!(e, KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))
    {
        tracing::warn!(error = %e, "final commit failed");
    }
    tracing::info!(tally = ?d.engine.tally(), "dispatch stopped");
    result
}

async fn wait_all(pending: Vec<Delivery>) -> Result<(), ProduceError> {
    for p in pending {
        p.wait().await?;
    }
    Ok(())
}

#[derive(Clone)]
enum Input {
    Dispatch(DispatchEvent),
    Supply(SupplyEvent),
}

/// The ride a dispatch decision settles: an assignment, or a cancellation by the system.
fn decision_of(input: &Input) -> Option<&str> {
    match input {
        Input::Dispatch(DispatchEvent::Assigned(a)) => Some(&a.ride_id),
        Input::Dispatch(DispatchEvent::Cancelled(c))
            if c.by == bimride_events::CancelledBy::System =>
        {
            Some(&c.ride_id)
        }
        _ => None,
    }
}

impl Dispatcher {
    async fn apply_change(&mut self, change: Change) -> Result<(), DispatchError> {
        let new = change.apply_to(&mut self.owned);
        match change {
            Change::Revoked(parts) => {
                self.engine.revoke(&parts);
                tracing::info!(partitions = ?parts, "regions handed off");
            }
            Change::Assigned(_) if !new.is_empty() => {
                let replayed = self.rebuild(&new).await?;
                tracing::info!(partitions = ?new, replayed, waiting = self.engine.waiting(), drivers = self.engine.drivers(), "regions taken over and rebuilt");
            }
            Change::Assigned(_) => {}
        }
        metrics::OWNED_PARTITIONS.set(self.owned.len() as i64);
        Ok(())
    }

    async fn decode(&self, topic: &str, bytes: &[u8]) -> Result<Input, bimride_events::CodecError> {
        Ok(if topic == self.requests {
            Input::Dispatch(self.codec.decode(bytes).await?)
        } else {
            Input::Supply(self.codec.decode(bytes).await?)
        })
    }

    fn apply(
        &mut self,
        partition: i32,
        input: Input,
        mode: Mode,
    ) -> Result<Vec<Output>, EngineError> {
        let now = Millis::now();
        match input {
            Input::Dispatch(e) => self.engine.on_dispatch(partition, e, now, mode),
            Input::Supply(e) => self.engine.on_supply(partition, e, now, mode),
        }
    }

    /// Handles one live record; returns the future that resolves once its effects are durable.
    async fn process(&mut self, m: OwnedMessage) -> Result<Option<Acked>, DispatchError> {
        let (topic, partition, offset) = (m.topic().to_owned(), m.partition(), m.offset());
        if !self.owned.contains(&partition) {
            return Ok(None);
        }
        bimride_kafka::metrics::CONSUMED
            .with_label_values(&[&topic])
            .inc();
        let decoded = loop {
            let Some(bytes) = m.payload() else {
                break Err(("empty_payload", "record has no value".to_owned()));
            };
            match self.decode(&topic, bytes).await {
                Ok(input) => break Ok(input),
                Err(e) if e.is_retriable() => {
                    tracing::warn!(topic, partition, offset, error = %e, "decode failed; retrying");
                    bimride_kafka::metrics::RETRIES
                        .with_label_values(&[&topic])
                        .inc();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => break Err((e.reason(), e.to_string())),
            }
        };
        let outputs = decoded.and_then(|input| {
            let occurred = match &input {
                Input::Dispatch(e) => e.occurred_at(),
                Input::Supply(e) => e.occurred_at(),
            };
            let outputs = self
                .apply(partition, input, Mode::Live)
                .map_err(|e| ("invalid_record", e.to_string()));
            bimride_kafka::metrics::observe_stage(STAGE, &topic, occurred.0);
            outputs
        });
        let pending = match outputs {
            Ok(outputs) => self.publish(outputs).await?,
            Err((reason, error)) => {
                tracing::warn!(
                    topic,
                    partition,
                    offset,
                    reason,
                    error,
                    "dead-lettering record"
                );
                let letter = DeadLetter::of(&m, reason, error, &self.settings.group);
                // The dead letter must be durable before the offset moves past the record.
                dead_letter::publish(
                    self.producer.inner(),
                    &letter.topic(),
                    m.key(),
                    m.payload(),
                    &letter,
                )
                .await
                .map_err(DispatchError::Kafka)?;
                Vec::new()
            }
        };
        Ok(Some(Box::pin(async move {
            wait_all(pending).await?;
            Ok((topic, partition, offset))
        })))
    }

    /// Queues every output; the deliveries resolve once the brokers acknowledge.
    async fn publish(&self, outputs: Vec<Output>) -> Result<Vec<Delivery>, ProduceError> {
        let mut pending = Vec::with_capacity(outputs.len());
        for output in outputs {
            metrics::count(&output);
            if let Output::Ride(RideEvent::DriverAssigned(a)) = &output
                && let Some(requested) = self.engine.requested_at(&a.ride_id)
            {
                metrics::observe_match(requested, a.occurred_at);
            }
            pending.push(match &output {
                // The dispatch log first: a new owner must see the decision it replays.
                Output::Log(e) => self.producer.send(e).await?,
                Output::Ride(e) => self.producer.send(e).await?,
            });
        }
        Ok(pending)
    }

    /// Replays the new partitions' history into the engine. Returns the records replayed.
    async fn rebuild(&mut self, parts: &BTreeSet<i32>) -> Result<usize, DispatchError> {
        let consumer = Arc::clone(&self.consumer);
        let kafka = self.kafka.clone();
        let group = self.settings.group.clone();
        let window = Duration::from_secs(self.settings.replay_window_secs);
        let mut tpl = TopicPartitionList::new();
        for topic in [&self.requests, &self.supply] {
            for p in parts {
                tpl.add_partition(topic, *p);
            }
        }
        let history = tokio::task::spawn_blocking(move || {
            let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
            history::read(&kafka, &group, &committed, window).map_err(DispatchError::from)
        })
        .await
        .map_err(|e| DispatchError::Rebuild(e.to_string()))??;
        let mut inputs = Vec::with_capacity(history.len());
        for h in &history {
            if let Ok(input) = self.decode(&h.topic, &h.payload).await {
                inputs.push((h, input));
            }
        }
        // Rides decided past the committed offset: their requests, also past it, are
        // replayed with the decision, or the live pass would see a request waiting far too
        // long and give up on a ride that already has a driver.
        let decided: BTreeSet<String> = inputs
            .iter()
            .filter(|(h, _)| !h.before_mark)
            .filter_map(|(_, input)| decision_of(input).map(str::to_owned))
            .collect();
        // Supply first, so that replayed assignments find their drivers.
        let mut replayed = 0;
        let supply = self.supply.clone();
        for only_supply in [true, false] {
            for (h, input) in inputs
                .iter()
                .filter(|(h, _)| (h.topic == supply) == only_supply)
            {
                // Past the committed offset only dispatch's own decisions, and the requests
                // they decide, are taken: the rest is processed live.
                let take = h.before_mark
                    || decision_of(input).is_some()
                    || matches!(input, Input::Dispatch(DispatchEvent::Requested(r)) if decided.contains(&r.ride_id));
                if take {
                    let _ = self.apply(h.partition, input.clone(), Mode::Replay);
                    replayed += 1;
                }
            }
        }
        Ok(replayed)
    }
}
