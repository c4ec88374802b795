//! The HTTP front shared by `bimride api` and `bimride up`: the trip API plus system facts,
//! health, readiness and metrics.

use std::sync::Arc;

use anyhow::Context;
use bimride_api::{ApiParts, ApiState, RideBook, book};
use bimride_codec::{Codec, RegistryConfig};
use bimride_domain::City;
use bimride_kafka::{EventProducer, KafkaConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::{ApiArgs, ServiceArgs};
use crate::front::{self, FrontState, SystemInfo};
use crate::shutdown;

/// A running HTTP front and the tasks behind it.
pub struct Front {
    pub addr: std::net::SocketAddr,
    /// The codec, with every schema registered, for the services beside the front.
    pub codec: Arc<Codec>,
    pub tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

/// Serves the trip API, the system endpoints and `extra` on `listener` until `shutdown`.
pub async fn start(
    kafka: &KafkaConfig,
    info: SystemInfo,
    city: City,
    listener: tokio::net::TcpListener,
    extra: axum::Router,
    access: bimride_api::Access,
    shutdown: CancellationToken,
) -> anyhow::Result<Front> {
    let codec = registered_codec(&info.schema_registry_url, kafka).await?;
    let rides = Arc::new(RideBook::default());
    // Every API instance reads every ride, so its group is its own.
    let group = format!("bimride-api-{}", uuid::Uuid::new_v4());
    let surge_book = Arc::new(bimride_api::SurgeBook::default());
    let surge = Arc::clone(&surge_book);
    let projection = {
        let (kafka, codec, rides, shutdown) = (
            kafka.clone(),
            Arc::clone(&codec),
            Arc::clone(&rides),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            book::run_projection(&kafka, codec, rides, surge, &group, shutdown)
                .await
                .context("ride projection")
        })
    };
    let producer = EventProducer::new(kafka, Arc::clone(&codec))?;
    let api = bimride_api::app(ApiState::new(ApiParts {
        producer,
        kafka: kafka.clone(),
        city,
        rides,
        surge: surge_book,
        access,
    }));
    let system = front::router(Arc::new(FrontState {
        info,
        kafka: Arc::new(kafka.client().create()?),
        http: reqwest::Client::new(),
    }));
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        let app = api
            .merge(system)
            .merge(extra)
            .route_layer(axum::middleware::from_fn(bimride_telemetry::track));
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("http server")
    });
    tracing::info!(%addr, "http front listening");
    Ok(Front {
        addr,
        codec,
        tasks: vec![projection, server],
    })
}

/// A codec on the registry at `url` for the topics of `kafka`'s namespace, with every event
/// schema registered or found.
pub async fn registered_codec(url: &str, kafka: &KafkaConfig) -> anyhow::Result<Arc<Codec>> {
    let codec = Arc::new(Codec::new(
        &RegistryConfig::new(url).with_topics(kafka.topics()),
    )?);
    codec
        .register_all()
        .await
        .context("registering the event schemas")?;
    Ok(codec)
}

pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let ServiceArgs {
        kafka,
        city,
        schema_registry,
    } = args.service;
    let kafka = kafka.validated()?;
    let (_, access) = args.access.access(false)?;
    let shutdown = shutdown::on_signal();
    let city = city.city()?;
    let info = SystemInfo {
        kafka_bootstrap_servers: kafka.bootstrap_servers().to_owned(),
        schema_registry_url: schema_registry,
        embedded: false,
        city: city.clone(),
        version: env!("CARGO_PKG_VERSION"),
    };
    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("binding the API to {}", args.http))?;
    let front = start(
        &kafka,
        info,
        city,
        listener,
        axum::Router::new(),
        access,
        shutdown,
    )
    .await?;
    for task in front.tasks {
        task.await??;
    }
    Ok(())
}
