//! Dead letters: the original record, with headers saying why, from where and when.

use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::metrics;

pub const REASON: &str = "bimride.dlq.reason";
pub const ERROR: &str = "bimride.dlq.error";
pub const SOURCE_TOPIC: &str = "bimride.dlq.source.topic";
pub const SOURCE_PARTITION: &str = "bimride.dlq.source.partition";
pub const SOURCE_OFFSET: &str = "bimride.dlq.source.offset";
pub const CONSUMER_GROUP: &str = "bimride.dlq.consumer.group";
pub const DEAD_LETTERED_AT: &str = "bimride.dlq.timestamp.ms";

/// Why and where a record failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub reason: String,
    pub error: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub group: String,
    pub dead_lettered_at_ms: i64,
}

impl DeadLetter {
    /// The dead letter of `message`, which `group` could not process.
    pub fn of(message: &impl Message, reason: &str, error: String, group: &str) -> Self {
        Self {
            reason: reason.to_owned(),
            error,
            source_topic: message.topic().to_owned(),
            source_partition: message.partition(),
            source_offset: message.offset(),
            group: group.to_owned(),
            dead_lettered_at_ms: bimride_events::Millis::now().0,
        }
    }

    /// The dead-letter topic of the source topic.
    pub fn topic(&self) -> String {
        bimride_events::Topic::from_name(&self.source_topic).map_or_else(
            || format!("{}.dlq", self.source_topic),
            |t| t.dead_letter().to_owned(),
        )
    }

    pub fn headers(&self) -> OwnedHeaders {
        let partition = self.source_partition.to_string();
        let offset = self.source_offset.to_string();
        let at = self.dead_lettered_at_ms.to_string();
        [
            (REASON, self.reason.as_str()),
            (ERROR, self.error.as_str()),
            (SOURCE_TOPIC, self.source_topic.as_str()),
            (SOURCE_PARTITION, partition.as_str()),
            (SOURCE_OFFSET, offset.as_str()),
            (CONSUMER_GROUP, self.group.as_str()),
            (DEAD_LETTERED_AT, at.as_str()),
        ]
        .into_iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        })
    }

    /// Reads the headers back; `None` when a header is missing or malformed.
    pub fn from_headers(headers: &impl Headers) -> Option<Self> {
        let get = |key: &str| {
            headers
                .iter()
                .find(|h| h.key == key)
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_owned)
        };
        Some(Self {
            reason: get(REASON)?,
            error: get(ERROR)?,
            source_topic: get(SOURCE_TOPIC)?,
            source_partition: get(SOURCE_PARTITION)?.parse().ok()?,
            source_offset: get(SOURCE_OFFSET)?.parse().ok()?,
            group: get(CONSUMER_GROUP)?,
            dead_lettered_at_ms: get(DEAD_LETTERED_AT)?.parse().ok()?,
        })
    }
}

/// Writes `payload` to `dlq_topic` and waits for the brokers to acknowledge it.
pub async fn publish(
    producer: &FutureProducer,
    dlq_topic: &str,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    letter: &DeadLetter,
) -> Result<(), rdkafka::error::KafkaError> {
    let mut record: FutureRecord<'_, [u8], [u8]> =
        FutureRecord::to(dlq_topic).headers(letter.headers());
    if let Some(k) = key {
        record = record.key(k);
    }
    if let Some(p) = payload {
        record = record.payload(p);
    }
    producer
        .send(record, rdkafka::util::Timeout::Never)
        .await
        .map_err(|(e, _)| e)?;
    metrics::DEAD_LETTERED
        .with_label_values(&[letter.source_topic.as_str(), letter.reason.as_str()])
        .inc();
    tracing::warn!(
        source_topic = %letter.source_topic,
        partition = letter.source_partition,
        offset = letter.source_offset,
        reason = %letter.reason,
        error = %letter.error,
        "record dead-lettered"
    );
    Ok(())
}
