//! `bimride dispatch` and `bimride simulate`: one service each, against a cluster and registry.

use std::sync::Arc;

use anyhow::Context;
use bimride_domain::City;
use bimride_events::Codec;
use tokio_util::sync::CancellationToken;

use crate::api::registered_codec;
use crate::cli::{DispatchArgs, ServiceArgs, SimulateArgs};
use crate::shutdown;

/// Validates the shared settings, then connects: the city, a registered codec, the stop token.
async fn connect(args: &ServiceArgs) -> anyhow::Result<(City, Arc<Codec>, CancellationToken)> {
    args.kafka.validate()?;
    let city = args.city.city()?;
    let codec = registered_codec(&args.schema_registry).await?;
    Ok((city, codec, shutdown::on_signal()))
}

pub async fn dispatch(args: DispatchArgs) -> anyhow::Result<()> {
    args.dispatch.validate()?;
    let (city, codec, shutdown) = connect(&args.service).await?;
    bimride_dispatch::run(&args.service.kafka, codec, city, args.dispatch, shutdown)
        .await
        .context("dispatch")
}

pub async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    args.sim.validate()?;
    let (city, codec, shutdown) = connect(&args.service).await?;
    bimride_simulator::run(&args.service.kafka, codec, city, args.sim, shutdown)
        .await
        .context("simulator")
}
