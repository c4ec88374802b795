//! Topic provisioning through the Admin API on tansu, and through the mock cluster.

use bimride_events::Topic;
use bimride_kafka::provision::{ProvisionError, describe};
use bimride_kafka::{Cleanup, Provisioner, TopicSpec, topics};
use bimride_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_admin_api_creates_every_topic_once() {
    let broker = Broker::tansu();
    let config = broker.config();
    let specs = topics::catalogue(config.partitions, 1);
    let created = Provisioner::Admin(&config)
        .ensure(&specs)
        .await
        .expect("provisioned");
    assert_eq!(created.len(), specs.len());
    let (existing, brokers) = describe(&config).await.expect("metadata");
    assert_eq!(brokers, 1);
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_refuses_dispatch_inputs_that_are_not_co_partitioned() {
    let broker = Broker::tansu();
    let config = broker.config();
    let odd = TopicSpec {
        name: Topic::DriverSupply.name().into(),
        partitions: 4,
        replication: 1,
        cleanup: Cleanup::Delete,
        retention_ms: None,
    };
    Provisioner::Admin(&config)
        .ensure(&[odd])
        .await
        .expect("odd topic created");
    let err = Provisioner::Admin(&config)
        .ensure(&topics::catalogue(6, 1))
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
    assert_eq!(existing.get(Topic::RideRequests.name()), Some(&6));
    assert_eq!(existing.get(Topic::DriverSupply.name()), Some(&6));
    assert_eq!(existing.get("_schemas"), Some(&1));
}

#[test]
fn a_missing_tansu_binary_is_an_error_not_a_skip() {
    let err = Tansu::start_with(std::path::Path::new("/nonexistent/tansu")).expect_err("must fail");
    assert!(
        err.to_string().contains("scripts/tansu.sh install"),
        "{err}"
    );
}
