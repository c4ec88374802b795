//! The HTTP front shared by `bimride api` and `bimride up`: the trip API plus system facts,
//! health, readiness and metrics.

use std::sync::Arc;

use anyhow::Context;
use bimride_api::{ApiState, RideBook, book};
use bimride_domain::City;
use bimride_events::{Codec, RegistryConfig};
use bimride_kafka::{EventProducer, KafkaConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::ApiArgs;
use crate::front::{self, FrontState, SystemInfo};
use crate::shutdown;

/// A running HTTP front and the tasks behind it.
pub struct Front {
    pub addr: std::net::SocketAddr,
    pub tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

/// Serves the trip API and the system endpoints on `listener` until `shutdown`.
pub async fn start(
    kafka: &KafkaConfig,
    info: SystemInfo,
    city: City,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<Front> {
    let codec = Arc::new(Codec::new(&RegistryConfig::new(&info.schema_registry_url))?);
    codec
        .register_all()
        .await
        .context("registering the event schemas")?;
    let rides = Arc::new(RideBook::default());
    // Every API instance reads every ride, so its group is its own.
    let group = format!("bimride-api-{}", uuid::Uuid::new_v4());
    let projection = {
        let (kafka, codec, rides, shutdown) = (
            kafka.clone(),
            Arc::clone(&codec),
            Arc::clone(&rides),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            book::run_projection(&kafka, codec, rides, &group, shutdown)
                .await
                .context("ride projection")
        })
    };
    let producer = EventProducer::new(kafka, codec)?;
    let api = bimride_api::app(ApiState::new(producer, city, rides));
    let system = front::router(Arc::new(FrontState {
        info,
        kafka: Arc::new(kafka.client().create()?),
        http: reqwest::Client::new(),
    }));
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        axum::serve(listener, api.merge(system))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("http server")
    });
    tracing::info!(%addr, "http front listening");
    Ok(Front {
        addr,
        tasks: vec![projection, server],
    })
}

pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    args.kafka.validate()?;
    let shutdown = shutdown::on_signal();
    let city = args.city.city()?;
    let info = SystemInfo {
        kafka_bootstrap_servers: args.kafka.bootstrap_servers().to_owned(),
        schema_registry_url: args.schema_registry.clone(),
        embedded: false,
        city: city.clone(),
        version: env!("CARGO_PKG_VERSION"),
    };
    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("binding the API to {}", args.http))?;
    let front = start(&args.kafka, info, city, listener, shutdown).await?;
    for task in front.tasks {
        task.await??;
    }
    Ok(())
}
