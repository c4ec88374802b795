//! `bimride dispatch`, `simulate`, `billing` and `notifications`: one service each, against a
//! cluster and registry.

use std::sync::Arc;

use anyhow::Context;
use bimride_domain::City;
use bimride_events::Codec;
use tokio_util::sync::CancellationToken;

use crate::api::registered_codec;
use crate::cli::{
    BillingArgs, ConnectArgs, DispatchArgs, NotificationsArgs, ServiceArgs, SimulateArgs, SurgeArgs,
};
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

/// Validates the cluster settings, then connects: a registered codec and the stop token.
async fn connect_only(args: &ConnectArgs) -> anyhow::Result<(Arc<Codec>, CancellationToken)> {
    args.kafka.validate()?;
    let codec = registered_codec(&args.schema_registry).await?;
    Ok((codec, shutdown::on_signal()))
}

pub async fn billing(args: BillingArgs) -> anyhow::Result<()> {
    args.billing.validate()?;
    let (codec, shutdown) = connect_only(&args.connect).await?;
    bimride_billing::run(&args.connect.kafka, codec, args.billing, shutdown)
        .await
        .context("billing")
}

pub async fn notifications(args: NotificationsArgs) -> anyhow::Result<()> {
    args.notifications.validate()?;
    let (codec, shutdown) = connect_only(&args.connect).await?;
    bimride_notifications::run(&args.connect.kafka, codec, args.notifications, shutdown)
        .await
        .context("notifications")
}

pub async fn surge(args: SurgeArgs) -> anyhow::Result<()> {
    args.surge.validate()?;
    let (city, codec, shutdown) = connect(&args.service).await?;
    bimride_surge::run(&args.service.kafka, codec, city, args.surge, shutdown)
        .await
        .context("surge")
}
