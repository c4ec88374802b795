//! Creates the topics of the catalogue that do not exist yet.

use std::collections::HashMap;
use std::time::Duration;

use bimride_events::Topic;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;
use crate::embedded::{EmbeddedCluster, EmbeddedError};
use crate::topics::TopicSpec;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("embedded cluster: {0}")]
    Embedded(#[from] EmbeddedError),
    #[error("could not create topic {topic}: {code}")]
    Create {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error(
        "{a} has {a_parts} partitions but {b} has {b_parts}: dispatch needs them co-partitioned"
    )]
    NotCoPartitioned {
        a: String,
        a_parts: usize,
        b: String,
        b_parts: usize,
    },
    #[error("topic {0} was created but has no leader for every partition yet")]
    NotVisible(String),
    #[error("task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Where topics get created.
#[derive(Debug)]
pub enum Provisioner<'a> {
    /// A real cluster, through the Admin API.
    Admin(&'a KafkaConfig),
    /// The embedded mock cluster, through its own call.
    Embedded(&'a EmbeddedCluster),
}

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

impl<'a> Provisioner<'a> {
    /// The embedded cluster, where there is one; the Admin API of `kafka` otherwise.
    pub fn of(cluster: Option<&'a EmbeddedCluster>, kafka: &'a KafkaConfig) -> Self {
        cluster.map_or(Provisioner::Admin(kafka), Provisioner::Embedded)
    }

    /// Creates every missing topic of `specs` and returns the names it created. Replication
    /// is capped at the number of brokers.
    pub async fn ensure(&self, specs: &[TopicSpec]) -> Result<Vec<String>, ProvisionError> {
        match self {
            Provisioner::Embedded(cluster) => {
                let mut created = Vec::new();
                for spec in specs {
                    let rf = spec.replication.min(cluster.brokers());
                    match cluster.create_topic(&spec.name, spec.partitions, rf) {
                        Ok(()) => created.push(spec.name.clone()),
                        Err(EmbeddedError::Kafka(KafkaError::MockCluster(
                            RDKafkaErrorCode::TopicAlreadyExists,
                        ))) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(created)
            }
            Provisioner::Admin(config) => ensure_by_admin(config, specs).await,
        }
    }
}

/// Partition counts of existing topics, and the number of brokers.
pub async fn describe(
    config: &KafkaConfig,
) -> Result<(HashMap<String, usize>, i32), ProvisionError> {
    let client: rdkafka::consumer::BaseConsumer = config.client().create()?;
    let metadata =
        tokio::task::spawn_blocking(move || client.fetch_metadata(None, METADATA_TIMEOUT))
            .await??;
    let topics = metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .map(|t| (t.name().to_owned(), t.partitions().len()))
        .collect();
    let brokers = i32::try_from(metadata.brokers().len()).unwrap_or(i32::MAX);
    Ok((topics, brokers))
}

async fn ensure_by_admin(
    config: &KafkaConfig,
    specs: &[TopicSpec],
) -> Result<Vec<String>, ProvisionError> {
    let (existing, brokers) = describe(config).await?;
    let missing: Vec<&TopicSpec> = specs
        .iter()
        .filter(|s| !existing.contains_key(&s.name))
        .collect();
    let mut created = Vec::new();
    if !missing.is_empty() {
        let admin: AdminClient<DefaultClientContext> = config.client().create()?;
        let configs: Vec<Vec<(&str, String)>> =
            missing.iter().map(|s| s.configs(brokers)).collect();
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .zip(&configs)
            .map(|(s, cfg)| {
                let rf = s.replication.min(brokers.max(1));
                cfg.iter().fold(
                    NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(rf)),
                    |t, (k, v)| t.set(k, v),
                )
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
        for result in admin.create_topics(&new_topics, &options).await? {
            match result {
                Ok(name) => created.push(name),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(ProvisionError::Create { topic, code }),
            }
        }
    }
    await_visible(config, specs).await?;
    check_co_partitioned(config).await?;
    Ok(created)
}

/// Waits until every topic of `specs` has a leader for each partition in the metadata: a
/// real cluster acknowledges CreateTopics before every broker knows the new topics.
async fn await_visible(config: &KafkaConfig, specs: &[TopicSpec]) -> Result<(), ProvisionError> {
    let client: rdkafka::consumer::BaseConsumer = config.client().create()?;
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + METADATA_TIMEOUT * 3;
        loop {
            let metadata = client.fetch_metadata(None, METADATA_TIMEOUT)?;
            let ready = |name: &String| {
                metadata.topics().iter().any(|t| {
                    t.name() == name
                        && t.error().is_none()
                        && !t.partitions().is_empty()
                        && t.partitions()
                            .iter()
                            .all(|p| p.leader() >= 0 && p.error().is_none())
                })
            };
            match names.iter().find(|n| !ready(n)) {
                None => return Ok(()),
                Some(n) if std::time::Instant::now() > deadline => {
                    return Err(ProvisionError::NotVisible(n.clone()));
                }
                Some(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    })
    .await?
}

/// Dispatch reads ride requests and driver supply of one region from the same partition
/// number, which holds only if both topics have the same partition count.
async fn check_co_partitioned(config: &KafkaConfig) -> Result<(), ProvisionError> {
    let (topics, _) = describe(config).await?;
    let names = config.topics();
    let (a, b) = (
        names.name(Topic::RideRequests),
        names.name(Topic::DriverSupply),
    );
    match (topics.get(a), topics.get(b)) {
        (Some(&a_parts), Some(&b_parts)) if a_parts != b_parts => {
            Err(ProvisionError::NotCoPartitioned {
                a: a.to_owned(),
                a_parts,
                b: b.to_owned(),
                b_parts,
            })
        }
        _ => Ok(()),
    }
}
