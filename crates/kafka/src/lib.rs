//! Kafka plumbing shared by every BimRide service.
//!
//! - [`config`]: client settings from flags and environment, validated at start-up.
//! - [`topics`]: every topic with its partitions, replication and retention, in one table.
//! - [`provision`]: creates missing topics, by the Admin API or on the embedded cluster.
//! - [`embedded`]: librdkafka's in-process mock cluster, reachable over loopback TCP.
//! - [`history`]: reads a partition's recent past, to rebuild state on takeover.
//! - [`producer`]: a typed producer that keeps many sends in flight.
//! - [`partitioned`]: one way to own partitions: a service's state behind assignment, revoke,
//!   record and timer hooks, at least once or in transactions.
//! - [`projection`]: read models on the same driver: one consumer, a function per topic.
//! - [`service`]: services as values, with one context and one settings error.

pub mod config;
pub mod dead_letter;
pub mod embedded;
pub mod history;
pub mod metrics;
pub mod partitioned;
pub mod producer;
pub mod projection;
pub mod provision;
pub mod replay;
pub mod service;
pub mod topics;

pub use config::KafkaConfig;
pub use embedded::EmbeddedCluster;
pub use producer::{EventProducer, ProduceError};
pub use provision::{ProvisionError, Provisioner};
pub use service::{AnyService, Context, Service, ServiceError, SettingsError};
pub use topics::{Cleanup, TopicSpec};
