//! `bimride registry`: the schema registry against a Kafka cluster.

use std::time::Duration;

use anyhow::Context;
use bimride_kafka::{Cleanup, Provisioner, TopicSpec};
use bimride_registry::{KafkaJournal, Registry};

use crate::cli::RegistryArgs;
use crate::shutdown;

pub async fn run(args: RegistryArgs) -> anyhow::Result<()> {
    let kafka = args.kafka.validated()?;
    let shutdown = shutdown::on_signal();
    let spec = TopicSpec {
        name: args.topic.clone(),
        partitions: 1,
        replication: kafka.replication_factor.unwrap_or(3),
        cleanup: Cleanup::Compact,
        retention_ms: None,
    };
    Provisioner::Admin(&kafka)
        .ensure(std::slice::from_ref(&spec))
        .await
        .context("creating the registry topic")?;
    let options = bimride_registry::Options {
        limits: args.limits.limits()?,
        access: args.access.access()?,
    };
    let listen = (args.listen, options);
    let server = start(&kafka.client(), &args.topic, listen, shutdown.clone()).await?;
    let metrics = bimride_telemetry::serve(args.metrics.metrics_listen, shutdown.clone()).await?;
    server.task.await??;
    shutdown.cancel();
    metrics.await??;
    Ok(())
}

/// Restores the registry from its topic and serves it.
pub async fn start(
    client: &rdkafka::ClientConfig,
    topic: &str,
    (listen, options): (std::net::SocketAddr, bimride_registry::Options),
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<bimride_registry::Server> {
    let (journal, entries) = KafkaJournal::open(client, topic, Duration::from_secs(30))
        .await
        .context("replaying the registry log")?;
    tracing::info!(entries = entries.len(), topic, "registry state restored");
    let registry = Registry::from_journal(bimride_registry::Journal::Kafka(journal), entries);
    bimride_registry::serve_with(registry, listen, options, shutdown)
        .await
        .with_context(|| format!("binding the registry to {listen}"))
}
