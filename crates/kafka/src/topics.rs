//! Every topic, with its partitions, replication, cleanup and retention: the one table.

use bimride_events::{Topic, Topics};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    Delete,
    Compact,
}

impl Cleanup {
    pub fn as_str(self) -> &'static str {
        match self {
            Cleanup::Delete => "delete",
            Cleanup::Compact => "compact",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    pub cleanup: Cleanup,
    pub retention_ms: Option<i64>,
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

impl TopicSpec {
    /// The librdkafka/Kafka topic configs of this spec.
    pub fn configs(&self, brokers: i32) -> Vec<(&'static str, String)> {
        let mut c = vec![("cleanup.policy", self.cleanup.as_str().to_owned())];
        if let Some(ms) = self.retention_ms {
            c.push(("retention.ms", ms.to_string()));
        }
        if self.replication >= 3 && brokers >= 3 {
            c.push(("min.insync.replicas", "2".to_owned()));
        }
        c
    }
}

/// Every topic of `kafka`'s deployment, at its partitions and replication (3 unless set).
pub fn of(kafka: &crate::KafkaConfig, registry_log: &str) -> Vec<TopicSpec> {
    let replication = kafka.replication_factor.unwrap_or(3);
    catalogue(&kafka.topics(), registry_log, kafka.partitions, replication)
}

/// Every topic BimRide needs in the namespace of `topics`, and the registry's log
/// `registry_log`, given the partition count of the partitioned topics and the replication
/// factor. Ride requests and driver supply share `partitions`: co-partitioned.
pub fn catalogue(
    topics: &Topics,
    registry_log: &str,
    partitions: i32,
    replication: i32,
) -> Vec<TopicSpec> {
    let spec =
        |name: &str, partitions: i32, cleanup: Cleanup, retention_ms: Option<i64>| TopicSpec {
            name: name.to_owned(),
            partitions,
            replication,
            cleanup,
            retention_ms,
        };
    let mut specs = Vec::new();
    for topic in Topic::ALL {
        let (parts, cleanup, retention) = match topic {
            Topic::RideRequests | Topic::DriverSupply => {
                (partitions, Cleanup::Delete, Some(7 * DAY_MS))
            }
            Topic::RideEvents | Topic::Payments => (partitions, Cleanup::Delete, Some(30 * DAY_MS)),
            Topic::Notifications | Topic::Eta => (partitions, Cleanup::Delete, Some(7 * DAY_MS)),
            // Latest multiplier per cell is all anyone needs.
            Topic::Surge => (partitions, Cleanup::Compact, None),
        };
        specs.push(spec(topics.name(topic), parts, cleanup, retention));
        // Dead letters wait for a human: keep them long, and few partitions suffice.
        specs.push(spec(
            topics.dead_letter(topic),
            3,
            Cleanup::Delete,
            Some(90 * DAY_MS),
        ));
    }
    // The registry's log: one partition for a total order, compacted, kept forever.
    specs.push(TopicSpec {
        name: registry_log.to_owned(),
        partitions: 1,
        replication,
        cleanup: Cleanup::Compact,
        retention_ms: None,
    });
    specs
}

/// The registry's log, as Confluent's registry names it: the one place the name is written.
/// The registry crate takes its topic from its caller, so neither crate depends on the other.
pub const REGISTRY_LOG: &str = "_schemas";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch_inputs_are_co_partitioned() {
        let topics = Topics::default();
        let specs = catalogue(&topics, REGISTRY_LOG, 12, 3);
        let parts = |n: &str| specs.iter().find(|s| s.name == n).map(|s| s.partitions);
        assert_eq!(parts("bimride.ride-requests"), Some(12));
        assert_eq!(
            parts(topics.name(Topic::RideRequests)),
            parts(topics.name(Topic::DriverSupply))
        );
    }

    #[test]
    fn every_topic_has_a_dead_letter_topic_and_the_registry_log_is_compacted() {
        let topics = Topics::new("test-1");
        let specs = catalogue(&topics, "_schemas", 6, 1);
        for t in Topic::ALL {
            assert!(specs.iter().any(|s| s.name == topics.dead_letter(t)));
        }
        assert!(specs.iter().any(|s| s.name == "test-1.ride-events.dlq"));
        let schemas = specs
            .iter()
            .find(|s| s.name == "_schemas")
            .expect("_schemas");
        assert_eq!((schemas.partitions, schemas.cleanup), (1, Cleanup::Compact));
        let surge = specs
            .iter()
            .find(|s| s.name == topics.name(Topic::Surge))
            .expect("surge");
        assert_eq!(surge.cleanup, Cleanup::Compact);
    }
}
