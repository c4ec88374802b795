//! `bimride simulate`: a fleet of drivers and a stream of riders.

use std::sync::Arc;

use anyhow::Context;
use bimride_events::{Codec, RegistryConfig};

use crate::cli::SimulateArgs;
use crate::shutdown;

pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    args.kafka.validate()?;
    args.sim.validate()?;
    let city = args.city.city()?;
    let shutdown = shutdown::on_signal();
    let codec = Arc::new(Codec::new(&RegistryConfig::new(&args.schema_registry))?);
    codec
        .register_all()
        .await
        .context("registering the event schemas")?;
    bimride_simulator::run(&args.kafka, codec, city, args.sim, shutdown)
        .await
        .context("simulator")
}
