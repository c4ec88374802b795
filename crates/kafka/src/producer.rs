//! A typed producer: values are encoded, keyed by their topic's rule, and sent without
//! waiting, so that many sends are in flight at once.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use bimride_codec::{Codec, CodecError};
use bimride_events::{Topic, TopicValue, Topics};
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::metrics;

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("delivery was cancelled: the producer shut down")]
    Cancelled,
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// A send in flight. Await [`InFlight::wait`] to know it is durable.
#[must_use = "a send that is never awaited may fail unnoticed"]
pub struct InFlight {
    produced: prometheus::IntCounter,
    future: DeliveryFuture,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight").finish_non_exhaustive()
    }
}

impl InFlight {
    pub async fn wait(self) -> Result<Delivered, ProduceError> {
        match self.future.await {
            Ok(Ok(d)) => {
                self.produced.inc();
                Ok(Delivered {
                    partition: d.partition,
                    offset: d.offset,
                })
            }
            Ok(Err((e, _))) => Err(e.into()),
            Err(_) => Err(ProduceError::Cancelled),
        }
    }
}

#[derive(Clone)]
pub struct EventProducer {
    producer: Arc<FutureProducer>,
    codec: Arc<Codec>,
    topics: Topics,
    /// Records produced, per topic, indexed by `Topic as usize`.
    produced: Arc<[prometheus::IntCounter; Topic::ALL.len()]>,
}

impl std::fmt::Debug for EventProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventProducer").finish_non_exhaustive()
    }
}

impl EventProducer {
    pub fn new(config: &KafkaConfig, codec: Arc<Codec>) -> Result<Self, ProduceError> {
        Self::with_client(&config.producer(), config.topics(), codec)
    }

    /// A producer with settings of its own, such as a transactional id. Services in one
    /// process with the same settings share one client while any of them holds it: each
    /// client keeps threads, connections and a polling thread busy, and one client batches
    /// all their records per partition. A transactional client is never shared.
    pub fn with_client(
        client: &ClientConfig,
        topics: Topics,
        codec: Arc<Codec>,
    ) -> Result<Self, ProduceError> {
        let produced = Topic::ALL.map(|t| metrics::PRODUCED.with_label_values(&[topics.name(t)]));
        Ok(Self {
            producer: shared(client)?,
            codec,
            topics,
            produced: Arc::new(produced),
        })
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    pub fn inner(&self) -> &FutureProducer {
        &self.producer
    }

    /// Encodes and enqueues `value`. Returns once it is queued, not once it is durable.
    pub async fn send<T: TopicValue>(&self, value: &T) -> Result<InFlight, ProduceError> {
        let payload = self.codec.encode(value).await?;
        let topic = self.topics.name(T::TOPIC);
        let mut record = FutureRecord::to(topic).key(value.key()).payload(&payload);
        loop {
            match self.producer.send_result(record) {
                Ok(future) => {
                    let produced = self.produced[T::TOPIC as usize].clone();
                    return Ok(InFlight { produced, future });
                }
                // A full local queue is back-pressure, not failure: let it drain.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Sends and waits until the brokers have acknowledged.
    pub async fn send_and_wait<T: TopicValue>(&self, value: &T) -> Result<Delivered, ProduceError> {
        self.send(value).await?.wait().await
    }

    /// Sends every value with all of them in flight at once, then waits for all.
    pub async fn send_all<'a, T: TopicValue>(
        &self,
        values: impl IntoIterator<Item = &'a T>,
    ) -> Result<Vec<Delivered>, ProduceError> {
        let mut pending = Vec::new();
        for v in values {
            pending.push(self.send(v).await?);
        }
        let mut delivered = Vec::with_capacity(pending.len());
        for d in pending {
            delivered.push(d.wait().await?);
        }
        Ok(delivered)
    }

    /// Waits until everything queued is delivered or `timeout` passes; on a shared client,
    /// the other services' records too.
    pub async fn flush(&self, timeout: Duration) -> Result<(), ProduceError> {
        let producer = Arc::clone(&self.producer);
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .map_err(|_| ProduceError::Cancelled)??;
        Ok(())
    }
}

/// Clients by their settings, alive while some producer holds them.
type Clients = HashMap<Vec<(String, String)>, Weak<FutureProducer>>;

static CLIENTS: LazyLock<Mutex<Clients>> = LazyLock::new(Mutex::default);

fn shared(client: &ClientConfig) -> Result<Arc<FutureProducer>, KafkaError> {
    if client.get("transactional.id").is_some() {
        return Ok(Arc::new(client.create()?));
    }
    let settings: Vec<(String, String)> = client
        .config_map()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut clients = CLIENTS.lock().unwrap_or_else(|p| p.into_inner());
    clients.retain(|_, c| c.strong_count() > 0);
    if let Some(producer) = clients.get(&settings).and_then(Weak::upgrade) {
        return Ok(producer);
    }
    let producer = Arc::new(client.create()?);
    clients.insert(settings, Arc::downgrade(&producer));
    Ok(producer)
}
