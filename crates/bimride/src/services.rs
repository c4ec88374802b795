//! `bimride dispatch`, `simulate`, `billing`, `notifications`, `surge`, `store` and
//! `dashboard`: one service each, against a cluster and registry. Each serves its own
//! `/metrics`. And `bimride migrate`, the store's schema on its own.

use std::sync::Arc;

use anyhow::Context as _;
use bimride_kafka::service::{self, AnyService, Context, Service};

use crate::api::registered_codec;
use crate::cli::{DashboardArgs, MetricsArgs, MigrateArgs, ServiceArgs, Standalone};
use crate::shutdown;

/// Checks the settings, connects, then runs `service` beside its metrics endpoint; when the
/// service ends, so does the endpoint.
pub async fn serve(
    service: Box<dyn AnyService>,
    args: ServiceArgs,
    metrics: &MetricsArgs,
) -> anyhow::Result<()> {
    service.validate()?;
    let cx = connect(args).await?;
    let endpoint = bimride_telemetry::serve(metrics.metrics_listen, cx.shutdown.clone()).await?;
    let shutdown = cx.shutdown.clone();
    let result = service::run(service, cx).await;
    shutdown.cancel();
    endpoint.await??;
    Ok(result?)
}

/// Runs the service whose settings `args` gives.
pub async fn standalone<S, F>(args: Standalone<F>) -> anyhow::Result<()>
where
    S: Service + From<F>,
    F: clap::Args,
{
    let service = Box::new(S::from(args.settings));
    serve(service, args.service, &args.metrics).await
}

/// Validates the shared settings, then connects: the city, a registered codec, the stop token.
async fn connect(args: ServiceArgs) -> anyhow::Result<Context> {
    let kafka = args.kafka.validated()?;
    let city = args.city.city()?;
    let credential = args.registry_credential.pair()?;
    let codec = registered_codec(&args.schema_registry, credential, &kafka).await?;
    Ok(Context {
        kafka,
        codec,
        city,
        shutdown: shutdown::on_signal(),
    })
}

/// The dashboard serves its page, its stream and `/metrics` on one port.
pub async fn dashboard(args: DashboardArgs) -> anyhow::Result<()> {
    let cx = connect(args.service).await?;
    let database = bimride_store::Database::from(args.database);
    let Some(store) = database.connect(&cx.shutdown).await? else {
        return Ok(());
    };
    let dashboard = bimride_dashboard::Dashboard::new(&cx.city);
    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("binding the dashboard to {}", args.http))?;
    let app = bimride_dashboard::router(Arc::clone(&dashboard)).merge(bimride_telemetry::router());
    tracing::info!(addr = %args.http, "dashboard listening");
    let limits = args.limits.limits()?;
    let server = bimride_telemetry::spawn_server(listener, app, limits, cx.shutdown.clone());
    let shutdown = cx.shutdown.clone();
    let feeds = bimride_dashboard::Feeds { dashboard, store };
    let fed = service::run(Box::new(feeds), cx).await;
    shutdown.cancel();
    server.await?.context("dashboard server")?;
    Ok(fed?)
}

/// Runs the store's migrations, for deployments that migrate before the services start.
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let database = bimride_store::Database::from(args.database);
    let store = database
        .connect(&shutdown::on_signal())
        .await
        .with_context(|| format!("migrating {database:?}"))?
        .context("interrupted")?;
    store.close().await;
    tracing::info!(?database, "the ride store's schema is up to date");
    Ok(())
}
