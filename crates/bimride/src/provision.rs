//! `bimride provision`: create missing topics on a real cluster.

use anyhow::Context;
use bimride_kafka::{Provisioner, topics};

use crate::cli::ProvisionArgs;

pub async fn run(args: ProvisionArgs) -> anyhow::Result<()> {
    let kafka = args.kafka.validated()?;
    let specs = topics::of(&kafka, &args.registry_topic);
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
