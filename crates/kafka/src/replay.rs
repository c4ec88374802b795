//! Moving a stopped service's consumer group to a point in its input topics, as
//! `kafka-consumer-groups --reset-offsets --to-datetime` does, so that the service recomputes
//! its outputs from there when it starts again.
//!
//! The group must have no live members: a running member would go on from its own positions
//! and overwrite the move at its next commit. [`plan`] reads where the group stands and where
//! it would go; [`execute`] checks the group is still empty and commits the plan.
//!
//! Both block; call them off the async runtime.

use std::fmt;
use std::time::Duration;

use bimride_events::{Millis, Topic};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::TopicPartitionListElem;
use rdkafka::{Offset, TopicPartitionList};

use crate::{KafkaConfig, partitioned};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Where in the log a group is moved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Each partition's first retained record.
    Earliest,
    /// Each partition's first record at or after this time; the end where there is none.
    At(Millis),
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Point::Earliest => f.write_str("earliest"),
            Point::At(t) => {
                let at = std::time::UNIX_EPOCH
                    + Duration::from_millis(u64::try_from(t.0).unwrap_or_default());
                write!(f, "{}", humantime::format_rfc3339_millis(at))
            }
        }
    }
}

impl std::str::FromStr for Point {
    type Err = String;

    /// `earliest`, or an RFC 3339 time such as `2026-12-01T09:00:00Z`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "earliest" {
            return Ok(Point::Earliest);
        }
        let at = humantime::parse_rfc3339_weak(text)
            .map_err(|e| format!("`earliest` or an RFC 3339 time: {e}"))?;
        let ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| "a time after 1970".to_owned())?
            .as_millis();
        i64::try_from(ms)
            .map(|ms| Point::At(Millis(ms)))
            .map_err(|_| "a time within 292 million years".to_owned())
    }
}

/// One partition's move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub topic: String,
    pub partition: i32,
    /// Where the group stands now; `None` where it has committed nothing.
    pub committed: Option<i64>,
    pub to: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "the group {group} has {members} live member(s): stop every instance of its service first"
    )]
    Live { group: String, members: usize },
    #[error("{topic} partition {partition} stayed at {committed:?}, not {to}")]
    NotMoved {
        topic: String,
        partition: i32,
        committed: Option<i64>,
        to: i64,
    },
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// Where `group` stands on every partition of `topics`, and where it would go for `to`.
pub fn plan(
    kafka: &KafkaConfig,
    group: &str,
    topics: &[Topic],
    to: Point,
) -> Result<Vec<Move>, ReplayError> {
    let consumer = client(kafka, group)?;
    refuse_live(&consumer, group)?;
    let names = kafka.topics();
    let names: Vec<String> = topics.iter().map(|t| names.name(*t).to_owned()).collect();
    let all = partitioned::all_partitions(&consumer, &names)?;
    let committed = consumer.committed_offsets(all.clone(), TIMEOUT)?;
    let found = match to {
        Point::Earliest => None,
        Point::At(t) => {
            let mut times = TopicPartitionList::new();
            for e in all.elements() {
                times.add_partition_offset(e.topic(), e.partition(), Offset::Offset(t.0.max(0)))?;
            }
            Some(consumer.offsets_for_times(times, TIMEOUT)?)
        }
    };
    let mut moves = Vec::new();
    for e in all.elements() {
        let (topic, partition) = (e.topic(), e.partition());
        let (low, high) = consumer.fetch_watermarks(topic, partition, TIMEOUT)?;
        let to = match found
            .as_ref()
            .and_then(|f| f.find_partition(topic, partition))
        {
            None => low,
            Some(at) => {
                // A partition the brokers could not look up fails the plan, rather than
                // reading as one with no record after the time.
                at.error()?;
                match at.offset() {
                    Offset::Offset(o) => o.clamp(low, high),
                    // No record at or after the time: nothing to recompute here.
                    _ => high,
                }
            }
        };
        let committed = match committed.find_partition(topic, partition) {
            Some(c) => {
                c.error()?;
                offset_of(&c)
            }
            None => None,
        };
        // A replay only goes back: moving forward would skip records never processed.
        let to = committed.map_or(to, |c| to.min(c));
        moves.push(Move {
            topic: topic.to_owned(),
            partition,
            committed,
            to,
        });
    }
    Ok(moves)
}

/// Commits `moves` for `group`, once more refusing a group with live members.
pub fn execute(kafka: &KafkaConfig, group: &str, moves: &[Move]) -> Result<(), ReplayError> {
    let consumer = client(kafka, group)?;
    refuse_live(&consumer, group)?;
    let mut offsets = TopicPartitionList::new();
    for m in moves {
        offsets.add_partition_offset(&m.topic, m.partition, Offset::Offset(m.to))?;
    }
    // Never joined, this client commits as a standalone one, which the group coordinator
    // accepts only while the group has no members.
    consumer.commit(&offsets, CommitMode::Sync)?;
    // A commit that fails for some partitions only still returns success: read it back.
    let committed = consumer.committed_offsets(offsets, TIMEOUT)?;
    for m in moves {
        let now = committed
            .find_partition(&m.topic, m.partition)
            .and_then(|c| offset_of(&c));
        if now != Some(m.to) {
            return Err(ReplayError::NotMoved {
                topic: m.topic.clone(),
                partition: m.partition,
                committed: now,
                to: m.to,
            });
        }
    }
    tracing::info!(group, partitions = moves.len(), "consumer group moved");
    Ok(())
}

/// A committed offset, where there is one.
fn offset_of(e: &TopicPartitionListElem<'_>) -> Option<i64> {
    match e.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

fn client(kafka: &KafkaConfig, group: &str) -> Result<BaseConsumer, KafkaError> {
    kafka
        .consumer(group)
        .set("enable.auto.commit", "false")
        .create()
}

fn refuse_live(consumer: &BaseConsumer, group: &str) -> Result<(), ReplayError> {
    let list = consumer.fetch_group_list(Some(group), TIMEOUT)?;
    let members = list
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .map(|g| g.members().len())
        .sum();
    if members > 0 {
        return Err(ReplayError::Live {
            group: group.to_owned(),
            members,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_is_earliest_or_a_time_and_prints_as_it_is_read() {
        assert_eq!("earliest".parse(), Ok(Point::Earliest));
        let at: Point = "2026-12-01T09:00:00Z".parse().expect("a time");
        assert_eq!(at, Point::At(Millis(1_796_115_600_000)));
        assert_eq!(at.to_string(), "2026-12-01T09:00:00.000Z");
        assert_eq!(at.to_string().parse(), Ok(at));
        // Without a zone, a time is UTC.
        assert_eq!("2026-12-01 09:00:00".parse(), Ok(at));
    }

    #[test]
    fn anything_else_is_refused_with_what_is_wanted() {
        for text in [
            "",
            "latest",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
        ] {
            let refused = text.parse::<Point>().expect_err(text);
            assert!(
                refused.contains("RFC 3339") || refused.contains("after 1970"),
                "{text}: {refused}"
            );
        }
    }
}
