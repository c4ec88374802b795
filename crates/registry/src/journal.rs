//! Where registry log entries are made durable: nowhere (tests) or a compacted Kafka topic.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::error::RegistryError;
use crate::store::{Entry, LogKey, LogValue};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("log entry at offset {offset} is not valid: {source}")]
    Corrupt {
        offset: i64,
        source: serde_json::Error,
    },
    #[error("timed out replaying {topic} at offset {offset} of {high}")]
    ReplayTimeout {
        topic: String,
        offset: i64,
        high: i64,
    },
    #[error("task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl From<JournalError> for RegistryError {
    fn from(e: JournalError) -> Self {
        RegistryError::Storage(Box::new(e))
    }
}

pub enum Journal {
    /// Keeps nothing: for tests and throwaway registries.
    Memory,
    Kafka(KafkaJournal),
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Journal::Memory => f.write_str("Journal::Memory"),
            Journal::Kafka(k) => write!(f, "Journal::Kafka({})", k.topic),
        }
    }
}

impl Journal {
    pub async fn append(&self, entries: &[Entry]) -> Result<(), JournalError> {
        match self {
            Journal::Memory => Ok(()),
            Journal::Kafka(k) => k.append(entries).await,
        }
    }
}

impl std::fmt::Debug for KafkaJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaJournal")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

pub struct KafkaJournal {
    topic: String,
    producer: FutureProducer,
}

impl KafkaJournal {
    /// Opens the journal on `topic` (single partition, compacted) and replays what it holds.
    pub async fn open(
        client: &ClientConfig,
        topic: &str,
        replay_timeout: Duration,
    ) -> Result<(Self, Vec<Entry>), JournalError> {
        let producer: FutureProducer = client
            .clone()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .create()?;
        let entries = replay(client, topic, replay_timeout).await?;
        Ok((
            Self {
                topic: topic.to_owned(),
                producer,
            },
            entries,
        ))
    }

    async fn append(&self, entries: &[Entry]) -> Result<(), JournalError> {
        // Sent in order to one partition by an idempotent producer, so they land in order.
        let mut pending = Vec::with_capacity(entries.len());
        for entry in entries {
            let key = serde_json::to_vec(&entry.key).unwrap_or_default();
            let value = entry
                .value
                .as_ref()
                .map(|v| serde_json::to_vec(v).unwrap_or_default());
            let mut record = FutureRecord::to(&self.topic).key(&key).partition(0);
            if let Some(value) = &value {
                record = record.payload(value);
            }
            pending.push(
                self.producer
                    .send_result(record)
                    .map_err(|(e, _)| JournalError::Kafka(e))?,
            );
        }
        for delivery in pending {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(e.into()),
                Err(_) => return Err(rdkafka::error::KafkaError::Canceled.into()),
            }
        }
        Ok(())
    }
}

async fn replay(
    client: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<Entry>, JournalError> {
    let consumer: StreamConsumer = client
        .clone()
        .set("group.id", "bimride-registry-replay")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let (low, high) = {
        let topic = topic.to_owned();
        let probe: rdkafka::consumer::BaseConsumer = client.create()?;
        tokio::task::spawn_blocking(move || {
            // A topic just created may not have its leader everywhere yet.
            let deadline = std::time::Instant::now() + timeout;
            loop {
                match probe.fetch_watermarks(&topic, 0, timeout) {
                    Err(e) if std::time::Instant::now() < deadline => {
                        tracing::debug!(topic, error = %e, "registry log not readable yet");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    done => break done,
                }
            }
        })
        .await??
    };
    let mut entries = Vec::new();
    if high <= low {
        return Ok(entries);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(low))?;
    consumer.assign(&tpl)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut offset = low;
    while offset < high - 1 {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .map_err(|_| JournalError::ReplayTimeout {
                topic: topic.to_owned(),
                offset,
                high,
            })??;
        offset = message.offset();
        let Some(key) = message.key() else { continue };
        let key: LogKey = serde_json::from_slice(key)
            .map_err(|source| JournalError::Corrupt { offset, source })?;
        let value = match message.payload() {
            None => None,
            Some(v) => Some(
                serde_json::from_slice::<LogValue>(v)
                    .map_err(|source| JournalError::Corrupt { offset, source })?,
            ),
        };
        entries.push(Entry { key, value });
    }
    Ok(entries)
}
