//! `bimride dispatch`, `simulate`, `billing`, `notifications`, `surge` and `dashboard`: one
//! service each, against a cluster and registry. Each serves its own `/metrics`.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use bimride_domain::City;
use bimride_codec::Codec;
use tokio_util::sync::CancellationToken;

use crate::api::registered_codec;
use crate::cli::{
    BillingArgs, ConnectArgs, DashboardArgs, DispatchArgs, MetricsArgs, NotificationsArgs,
    ServiceArgs, SimulateArgs, SurgeArgs,
};
use crate::shutdown;

/// Validates the shared settings, then connects: the city, a registered codec, the stop token.
async fn connect(args: &ServiceArgs) -> anyhow::Result<(City, Arc<Codec>, CancellationToken)> {
    args.kafka.validate()?;
    let city = args.city.city()?;
    let codec = registered_codec(&args.schema_registry, &args.kafka).await?;
    Ok((city, codec, shutdown::on_signal()))
}

/// Validates the cluster settings, then connects: a registered codec and the stop token.
async fn connect_only(args: &ConnectArgs) -> anyhow::Result<(Arc<Codec>, CancellationToken)> {
    args.kafka.validate()?;
    let codec = registered_codec(&args.schema_registry, &args.kafka).await?;
    Ok((codec, shutdown::on_signal()))
}

/// Runs `service` beside its metrics endpoint; when the service ends, so does the endpoint.
async fn with_metrics<E>(
    name: &'static str,
    metrics: &MetricsArgs,
    shutdown: CancellationToken,
    service: impl Future<Output = Result<(), E>>,
) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let endpoint = bimride_telemetry::serve(metrics.metrics_listen, shutdown.clone()).await?;
    let result = service.await.context(name);
    shutdown.cancel();
    endpoint.await??;
    result
}

pub async fn dispatch(args: DispatchArgs) -> anyhow::Result<()> {
    args.dispatch.validate()?;
    let (city, codec, shutdown) = connect(&args.service).await?;
    let service = bimride_dispatch::run(
        &args.service.kafka,
        codec,
        city,
        args.dispatch,
        shutdown.clone(),
    );
    with_metrics("dispatch", &args.metrics, shutdown, service).await
}

pub async fn simulate(mut args: SimulateArgs) -> anyhow::Result<()> {
    args.sim.authority = args
        .auth_secret
        .as_ref()
        .map(|s| bimride_auth::Authority::new(s, None))
        .transpose()?;
    args.sim.validate()?;
    let (city, codec, shutdown) = connect(&args.service).await?;
    let service =
        bimride_simulator::run(&args.service.kafka, codec, city, args.sim, shutdown.clone());
    with_metrics("simulator", &args.metrics, shutdown, service).await
}

pub async fn billing(args: BillingArgs) -> anyhow::Result<()> {
    args.billing.validate()?;
    let (codec, shutdown) = connect_only(&args.connect).await?;
    let service = bimride_billing::run(&args.connect.kafka, codec, args.billing, shutdown.clone());
    with_metrics("billing", &args.metrics, shutdown, service).await
}

pub async fn notifications(args: NotificationsArgs) -> anyhow::Result<()> {
    args.notifications.validate()?;
    let (codec, shutdown) = connect_only(&args.connect).await?;
    let service = bimride_notifications::run(
        &args.connect.kafka,
        codec,
        args.notifications,
        shutdown.clone(),
    );
    with_metrics("notifications", &args.metrics, shutdown, service).await
}

pub async fn surge(args: SurgeArgs) -> anyhow::Result<()> {
    args.surge.validate()?;
    let (city, codec, shutdown) = connect(&args.service).await?;
    let service = bimride_surge::run(
        &args.service.kafka,
        codec,
        city,
        args.surge,
        shutdown.clone(),
    );
    with_metrics("surge", &args.metrics, shutdown, service).await
}

/// The dashboard serves its page, its stream and `/metrics` on one port.
pub async fn dashboard(args: DashboardArgs) -> anyhow::Result<()> {
    let (city, codec, shutdown) = connect(&args.service).await?;
    let dashboard = bimride_dashboard::Dashboard::new(&city);
    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("binding the dashboard to {}", args.http))?;
    let app = bimride_dashboard::router(Arc::clone(&dashboard))
        .merge(bimride_telemetry::router())
        .route_layer(axum::middleware::from_fn(bimride_telemetry::track));
    tracing::info!(addr = %args.http, "dashboard listening");
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
        }
    });
    tokio::spawn(Arc::clone(&dashboard).publish(shutdown.clone()));
    let fed = bimride_dashboard::run_feeds(&args.service.kafka, codec, dashboard, shutdown.clone())
        .await
        .context("dashboard feeds");
    shutdown.cancel();
    server.await?.context("dashboard server")?;
    fed
}
