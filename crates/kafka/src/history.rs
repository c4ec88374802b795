//! Reading a partition's recent past, to rebuild a service's state when it takes the
//! partition over: from the start of a replay window (found by time) to the partition's end.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bimride_codec::Codec;
use bimride_events::{Millis, TopicValue};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedHeaders, Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;

/// One record of the past.
#[derive(Debug, Clone)]
pub struct Historic {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Option<OwnedHeaders>,
    /// True when the group had already processed this record: it lies before the mark.
    pub before_mark: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("partitions {0} were not read to their end in time")]
    Incomplete(String),
    #[error("the reading thread failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A reader's context: reaching a partition's end is what it waits for, not an error.
struct EndIsNormal;

impl rdkafka::ClientContext for EndIsNormal {
    fn error(&self, error: KafkaError, reason: &str) {
        if is_end(&error) {
            tracing::debug!(%error, reason, "end of partition");
        } else {
            tracing::warn!(%error, reason, "reading the past: client error");
        }
    }
}

/// Whether `error` only says that a partition's end was reached: librdkafka reports it both
/// per partition and, through the error callback, as a global error.
fn is_end(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
    )
}

impl ConsumerContext for EndIsNormal {}

/// How long a read of the past keeps trying through broker failures: a leader that fails over
/// takes the controller's session timeout and an election. Well under `max.poll.interval.ms`,
/// which bounds a rebuild that runs between polls.
const READ_PATIENCE: Duration = Duration::from_secs(120);

/// Reads every partition in `marks` from `window` ago to its end, blocking. Each element's
/// offset is the mark (usually the group's committed offset): records before it are flagged
/// `before_mark`. A partition with no mark has no processed past. Only committed
/// transactional data is read. A failed attempt (a broker down, a leader moving) is started
/// again, for up to two minutes: reading is free of effects. Call it off the async runtime.
pub fn read(
    kafka: &KafkaConfig,
    group: &str,
    marks: &TopicPartitionList,
    window: Duration,
) -> Result<Vec<Historic>, HistoryError> {
    patiently("reading the past", || {
        read_once(kafka, group, marks, window)
    })
}

/// Runs `attempt` until it succeeds or [`READ_PATIENCE`] has passed, blocking: for steps that
/// have no effects and fail while brokers recover or a new topic's leaders are elected.
pub(crate) fn patiently<T, E: std::fmt::Display>(
    what: &str,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let give_up = Instant::now() + READ_PATIENCE;
    loop {
        match attempt() {
            Err(e) if Instant::now() < give_up => {
                tracing::warn!(step = what, error = %e, "failed; trying again");
                std::thread::sleep(Duration::from_millis(500));
            }
            done => return done,
        }
    }
}

fn read_once(
    kafka: &KafkaConfig,
    group: &str,
    marks: &TopicPartitionList,
    window: Duration,
) -> Result<Vec<Historic>, HistoryError> {
    let timeout = Duration::from_secs(10);
    let reader: BaseConsumer<EndIsNormal> = kafka
        .consumer(&format!("{group}-replay"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create_with_context(EndIsNormal)?;
    let since = Millis(Millis::now().0 - window.as_millis() as i64);
    let starts = offsets_at(&reader, marks, since)?;
    let mut ends = HashMap::new();
    let mut assign = TopicPartitionList::new();
    for e in marks.elements() {
        let key = (e.topic().to_owned(), e.partition());
        let (low, high) = reader.fetch_watermarks(e.topic(), e.partition(), timeout)?;
        let mark = match e.offset() {
            Offset::Offset(o) => o,
            Offset::End => high,
            // Nothing committed: the group starts at the beginning, so there is no past.
            _ => low,
        };
        // Where the brokers give no offset for the time, the whole partition is read.
        let start = match starts.find_partition(e.topic(), e.partition()) {
            Some(s) => match s.offset() {
                Offset::Offset(o) => o.max(low),
                _ => low,
            },
            None => low,
        };
        if start < high {
            assign.add_partition_offset(e.topic(), e.partition(), Offset::Offset(start))?;
            ends.insert(key, (mark, high));
        }
    }
    let mut history = Vec::new();
    if ends.is_empty() {
        return Ok(history);
    }
    reader.assign(&assign)?;
    let mut open: BTreeSet<(String, i32)> = ends.keys().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !open.is_empty() && Instant::now() < deadline {
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let key = (m.topic().to_owned(), m.partition());
                let Some(&(mark, high)) = ends.get(&key) else {
                    continue;
                };
                if m.offset() < high {
                    history.push(Historic {
                        topic: key.0.clone(),
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        payload: m.payload().unwrap_or_default().to_vec(),
                        headers: m.headers().map(BorrowedHeaders::detach),
                        before_mark: m.offset() < mark,
                    });
                }
                if m.offset() + 1 >= high {
                    open.remove(&key);
                }
            }
            // The end of a partition with gaps (compaction, control records) shows as EOF.
            Some(Err(KafkaError::PartitionEOF(_))) | None => {
                for e in reader.position()?.elements() {
                    let key = (e.topic().to_owned(), e.partition());
                    if let (Offset::Offset(at), Some(&(_, high))) = (e.offset(), ends.get(&key))
                        && at >= high
                    {
                        open.remove(&key);
                    }
                }
            }
            // Broker transport failures and the like are reported here and retried by
            // librdkafka; the deadline bounds them.
            Some(Err(KafkaError::MessageConsumption(code))) => {
                tracing::debug!(error = %code, "reading the past: consumer error");
            }
            Some(Err(e)) => return Err(e.into()),
        }
    }
    if !open.is_empty() {
        return Err(HistoryError::Incomplete(format!("{open:?}")));
    }
    Ok(history)
}

/// Where each of `partitions` reaches `since`: the first offset at or after it (`End` where the
/// brokers know none), and the beginning where they cannot look offsets up by time.
pub(crate) fn offsets_at<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    partitions: &TopicPartitionList,
    since: Millis,
) -> Result<TopicPartitionList, KafkaError> {
    let mut times = TopicPartitionList::new();
    for e in partitions.elements() {
        // Not before the epoch: a negative time would name a logical offset.
        times.add_partition_offset(e.topic(), e.partition(), Offset::Offset(since.0.max(0)))?;
    }
    match consumer.offsets_for_times(times.clone(), Duration::from_secs(10)) {
        Ok(starts) => Ok(starts),
        Err(e) => {
            tracing::warn!(error = %e, "offsets by time unavailable; reading from the start");
            times.set_all_offsets(Offset::Beginning)?;
            Ok(times)
        }
    }
}

/// Reads every partition of `topic` from `window` ago to its end, blocking.
pub fn read_topic(
    kafka: &KafkaConfig,
    group: &str,
    topic: &str,
    window: Duration,
) -> Result<Vec<Historic>, HistoryError> {
    let probe: BaseConsumer = kafka.client().create()?;
    let metadata = probe.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut marks = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            marks.add_partition_offset(topic, p.id(), Offset::End)?;
        }
    }
    read(kafka, group, &marks, window)
}

/// The values of `T`'s topic from `window` ago, decoded; what does not decode is skipped, as
/// the topic's own readers dead-letter it.
pub async fn values<T: TopicValue>(
    kafka: &KafkaConfig,
    codec: &Codec,
    group: &str,
    window: Duration,
) -> Result<Vec<T>, HistoryError> {
    let (kafka, group) = (kafka.clone(), group.to_owned());
    let records = tokio::task::spawn_blocking(move || {
        read_topic(&kafka, &group, kafka.topics().name(T::TOPIC), window)
    })
    .await??;
    let mut values = Vec::with_capacity(records.len());
    for h in records {
        if let Ok(value) = codec.decode(&h.payload).await {
            values.push(value);
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_partition_is_not_an_error_however_it_is_reported() {
        assert!(is_end(&KafkaError::PartitionEOF(3)));
        assert!(is_end(&KafkaError::Global(RDKafkaErrorCode::PartitionEOF)));
        assert!(!is_end(&KafkaError::Global(
            RDKafkaErrorCode::BrokerTransportFailure
        )));
    }
}
