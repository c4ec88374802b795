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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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

    /// The dead-letter topic of the source topic: its name with `.dlq` appended.
    pub fn topic(&self) -> String {
        format!("{}.dlq", self.source_topic)
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

/// Header on a replayed record naming the dead letter it came from: `topic/partition/offset`.
pub const REPLAYED_FROM: &str = "bimride.dlq.replayed.from";

/// A dead letter as it sits in its topic.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stored {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    #[serde(skip)]
    pub raw_key: Option<Vec<u8>>,
    #[serde(skip)]
    pub payload: Option<Vec<u8>>,
    pub payload_bytes: usize,
    /// The schema id of a record in the Confluent wire format.
    pub schema_id: Option<u32>,
    /// `None` when the record's headers are not dead-letter headers.
    pub letter: Option<DeadLetter>,
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("reading the dead letters: {0}")]
    Read(#[from] crate::history::HistoryError),
    #[error("{0} is not a dead-letter topic")]
    NotDeadLetterTopic(String),
}

/// Everything a dead-letter topic retains.
const ALL: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3_600);

/// Reads every record of the dead-letter topic `topic`, oldest first per partition. Blocking:
/// call it off the async runtime.
pub fn read(kafka: &crate::KafkaConfig, topic: &str) -> Result<Vec<Stored>, DlqError> {
    if !kafka.topics().dead_letters().any(|t| t == topic) {
        return Err(DlqError::NotDeadLetterTopic(topic.to_owned()));
    }
    let group = format!("bimride-dlq-reader-{}", uuid::Uuid::new_v4());
    let mut out: Vec<Stored> = crate::history::read_topic(kafka, &group, topic, ALL)?
        .into_iter()
        .map(|h| Stored {
            topic: h.topic,
            partition: h.partition,
            offset: h.offset,
            key: h.key.as_ref().map(|k| String::from_utf8_lossy(k).into()),
            raw_key: h.key,
            payload_bytes: h.payload.len(),
            schema_id: bimride_codec::WireHeader::parse(&h.payload)
                .ok()
                .map(|w| w.schema_id),
            payload: Some(h.payload),
            letter: h.headers.as_ref().and_then(DeadLetter::from_headers),
        })
        .collect();
    out.sort_by_key(|s| (s.partition, s.offset));
    Ok(out)
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Replayed {
    /// Records written back to their source topics.
    pub replayed: usize,
    /// Letters naming a source record already replayed in this call (one per failing group).
    pub duplicates: usize,
    /// Letters left alone by the filter, or without dead-letter headers.
    pub skipped: usize,
}

/// Writes the original record of each letter in `letters` that `select` accepts back to its
/// source topic, once per source record, with a header naming the letter. Consumers are
/// idempotent, so a record some group had already processed is ignored there.
pub async fn replay(
    producer: &FutureProducer,
    letters: &[Stored],
    select: impl Fn(&Stored, &DeadLetter) -> bool,
) -> Result<Replayed, DlqError> {
    let mut done = Replayed::default();
    let mut seen = std::collections::HashSet::new();
    let mut pending = Vec::new();
    for stored in letters {
        let Some(letter) = stored.letter.as_ref().filter(|l| select(stored, l)) else {
            done.skipped += 1;
            continue;
        };
        let source = (
            letter.source_topic.clone(),
            letter.source_partition,
            letter.source_offset,
        );
        if !seen.insert(source) {
            done.duplicates += 1;
            continue;
        }
        let from = format!("{}/{}/{}", stored.topic, stored.partition, stored.offset);
        let headers = OwnedHeaders::new().insert(Header {
            key: REPLAYED_FROM,
            value: Some(from.as_str()),
        });
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&letter.source_topic).headers(headers);
        if let Some(k) = &stored.raw_key {
            record = record.key(k.as_slice());
        }
        if let Some(p) = &stored.payload {
            record = record.payload(p.as_slice());
        }
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| DlqError::Kafka(e))?;
        pending.push((letter.source_topic.clone(), delivery));
    }
    for (topic, delivery) in pending {
        match delivery.await {
            Ok(Ok(_)) => {
                metrics::DEAD_LETTERS_REPLAYED
                    .with_label_values(&[topic.as_str()])
                    .inc();
                done.replayed += 1;
            }
            Ok(Err((e, _))) => return Err(DlqError::Kafka(e)),
            Err(_) => return Err(DlqError::Kafka(rdkafka::error::KafkaError::Canceled)),
        }
    }
    tracing::info!(
        replayed = done.replayed,
        duplicates = done.duplicates,
        skipped = done.skipped,
        "dead letters replayed"
    );
    Ok(done)
}
