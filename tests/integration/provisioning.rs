//! Topic provisioning through the Admin API on Apache Kafka, and through the mock cluster.

use bimride_events::Topic;
use bimride_kafka::provision::{ProvisionError, describe};
use bimride_kafka::{Cleanup, Provisioner, TopicSpec};
use bimride_tests::*;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_admin_api_creates_every_topic_once_with_its_settings() {
    let broker = Broker::kafka();
    let config = broker.config();
    let specs = broker.catalogue(&config);
    let created = Provisioner::Admin(&config)
        .ensure(&specs)
        .await
        .expect("provisioned");
    assert_eq!(created.len(), specs.len());
    let (existing, brokers) = describe(&config).await.expect("metadata");
    assert_eq!(brokers, 3);
    for spec in &specs {
        assert_eq!(
            existing.get(&spec.name),
            Some(&(spec.partitions as usize)),
            "{}",
            spec.name
        );
    }
    let again = Provisioner::Admin(&config)
        .ensure(&specs)
        .await
        .expect("idempotent");
    assert!(again.is_empty(), "a second run creates nothing");

    // The brokers hold each topic's cleanup, retention and durability as the catalogue says.
    let admin: AdminClient<DefaultClientContext> = config.client().create().expect("admin");
    let resources: Vec<ResourceSpecifier<'_>> = specs
        .iter()
        .map(|s| ResourceSpecifier::Topic(&s.name))
        .collect();
    let described = admin
        .describe_configs(&resources, &AdminOptions::new())
        .await
        .expect("configs described");
    for (spec, result) in specs.iter().zip(described) {
        let resource = result.expect("topic config");
        let value = |key: &str| {
            resource
                .get(key)
                .and_then(|e| e.value.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            value("cleanup.policy"),
            spec.cleanup.as_str(),
            "{}",
            spec.name
        );
        assert_eq!(value("min.insync.replicas"), "2", "{}", spec.name);
        if let Some(ms) = spec.retention_ms {
            assert_eq!(value("retention.ms"), ms.to_string(), "{}", spec.name);
        }
    }
    let metadata = {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let probe: BaseConsumer = config.client().create().expect("client");
        let name = config.topics().name(Topic::Payments).to_owned();
        tokio::task::spawn_blocking(move || {
            probe
                .fetch_metadata(Some(&name), std::time::Duration::from_secs(10))
                .expect("metadata")
                .topics()[0]
                .partitions()
                .iter()
                .map(|p| p.replicas().len())
                .collect::<Vec<_>>()
        })
        .await
        .expect("joins")
    };
    assert!(
        metadata.iter().all(|r| *r == 3),
        "three replicas: {metadata:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_refuses_dispatch_inputs_that_are_not_co_partitioned() {
    let broker = Broker::kafka();
    let config = broker.config();
    let odd = TopicSpec {
        name: config.topics().name(Topic::DriverSupply).into(),
        partitions: 4,
        replication: 3,
        cleanup: Cleanup::Delete,
        retention_ms: None,
    };
    Provisioner::Admin(&config)
        .ensure(&[odd])
        .await
        .expect("odd topic created");
    let err = Provisioner::Admin(&config)
        .ensure(&broker.catalogue(&config))
        .await
        .expect_err("6 vs 4 partitions must be refused");
    assert!(
        matches!(
            err,
            ProvisionError::NotCoPartitioned {
                a_parts: 6,
                b_parts: 4,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_cluster_creates_topics_with_their_partitions() {
    let broker = Broker::embedded();
    let config = broker.config();
    broker.provision(&config).await;
    let (existing, brokers) = describe(&config).await.expect("metadata");
    assert_eq!(brokers, 3);
    assert_eq!(existing.get("bimride.ride-requests"), Some(&6));
    assert_eq!(existing.get("bimride.driver-supply"), Some(&6));
    assert_eq!(existing.get("_schemas"), Some(&1));
}

#[test]
fn a_missing_kafka_cluster_is_an_error_not_a_skip() {
    let dir = std::env::temp_dir().join(format!("bimride-no-kafka-{}", uuid::Uuid::new_v4()));
    let err =
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kafka.sh"))
            .args(["bootstrap", "--dir"])
            .arg(&dir)
            .output()
            .expect("kafka.sh runs");
    assert!(!err.status.success(), "no cluster, no bootstrap servers");
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("kafka.sh start"),
        "{err:?}"
    );
}
