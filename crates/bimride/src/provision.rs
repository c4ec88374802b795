//! `bimride provision`: create missing topics on a real cluster.

use anyhow::Context;
use bimride_kafka::{Provisioner, topics};

use crate::cli::ProvisionArgs;

pub async fn run(args: ProvisionArgs) -> anyhow::Result<()> {
    args.kafka.validate()?;
    let specs = topics::catalogue(
        &args.kafka.topics(),
        &args.registry_topic,
        args.kafka.partitions,
        args.kafka.replication_factor.unwrap_or(3),
    );
    let created = Provisioner::Admin(&args.kafka)
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
