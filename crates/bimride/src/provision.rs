//! `bimride provision`: create missing topics on a real cluster.

use anyhow::Context;
use bimride_kafka::{Provisioner, topics};

use crate::cli::ProvisionArgs;

pub async fn run(args: ProvisionArgs) -> anyhow::Result<()> {
    let kafka = args.kafka.validated()?;
    let specs = topics::catalogue(
        &kafka.topics(),
        &args.registry_topic,
        kafka.partitions,
        kafka.replication_factor.unwrap_or(3),
    );
    let created = Provisioner::Admin(&kafka)
        .ensure(&specs)
        .await
        .context("provisioning topics")?;
    tracing::info!(
        created = created.len(),
        total = specs.len(),
        "topics provisioned"
    );
    Ok(())
}
