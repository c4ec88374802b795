//! The HTTP front shared by `bimride api` and `bimride up`: the trip API plus system facts,
//! health, readiness and metrics.

use std::sync::Arc;

use anyhow::Context as _;
use bimride_api::{ApiParts, ApiState, SurgeFeed};
use bimride_codec::{Codec, RegistryConfig};
use bimride_eta::learned::LearnedFeed;
use bimride_kafka::service::{self, Context};
use bimride_kafka::{EventProducer, KafkaConfig};
use bimride_telemetry::HttpLimits;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::{ApiArgs, ServiceArgs};
use crate::front::{self, FrontState, SystemInfo};
use crate::shutdown;

/// A running HTTP front, and the read models it needs fed.
pub struct Front {
    pub addr: std::net::SocketAddr,
    /// The codec, with every schema registered, for the services beside the front.
    pub codec: Arc<Codec>,
    pub feeds: SurgeFeed,
    /// What the API's quoted durations learn from.
    pub learner: LearnedFeed,
    pub server: JoinHandle<std::io::Result<()>>,
}

/// Serves the trip API, the system endpoints and `extra` on `listener`, within `limits`,
/// until `shutdown`. The API checks callers with `access` and reads rides from `store`.
pub async fn start(
    kafka: &KafkaConfig,
    info: SystemInfo,
    listener: tokio::net::TcpListener,
    limits: HttpLimits,
    extra: axum::Router,
    (access, store): (bimride_api::Access, bimride_store::Store),
    shutdown: CancellationToken,
) -> anyhow::Result<Front> {
    let city = info.city.clone();
    // The API's bodies are small: a booking, a cancellation, a token request.
    let limits = HttpLimits {
        max_body_bytes: bimride_api::MAX_BODY_BYTES,
        ..limits
    };
    let codec = registered_codec(
        &info.schema_registry_url,
        info.schema_registry_credential.clone(),
        kafka,
    )
    .await?;
    let feeds = SurgeFeed(Arc::new(bimride_api::SurgeBook::default()));
    let learner = LearnedFeed::new(Arc::default());
    let producer = EventProducer::new(kafka, Arc::clone(&codec))?;
    let api = bimride_api::app(ApiState::new(ApiParts {
        producer,
        kafka: kafka.clone(),
        city,
        store,
        surge: Arc::clone(&feeds.0),
        learned: Arc::clone(&learner.learned),
        access,
    }));
    let system = front::router(Arc::new(FrontState {
        info,
        kafka: Arc::new(kafka.client().create()?),
        http: reqwest::Client::new(),
    }));
    let addr = listener.local_addr()?;
    let server =
        bimride_telemetry::spawn_server(listener, api.merge(system).merge(extra), limits, shutdown);
    tracing::info!(%addr, "http front listening");
    Ok(Front {
        addr,
        codec,
        feeds,
        learner,
        server,
    })
}

/// A codec on the registry at `url` for the topics of `kafka`'s namespace, with every event
/// schema registered or found.
pub async fn registered_codec(
    url: &str,
    credential: Option<(String, String)>,
    kafka: &KafkaConfig,
) -> anyhow::Result<Arc<Codec>> {
    let mut registry = RegistryConfig::new(url).with_topics(kafka.topics());
    registry.basic_auth = credential;
    let codec = Arc::new(Codec::new(&registry)?);
    let deadline = tokio::time::Instant::now() + REGISTRATION_PATIENCE;
    loop {
        match codec.register_all().await {
            Ok(_) => return Ok(codec),
            // Registering again is safe: a schema the registry stored finds its id.
            Err(e) if e.is_retriable() && tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "schema registry not answering yet; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).context("registering the event schemas"),
        }
    }
}

/// How long start-up keeps trying a registry that does not answer: the registry's own writes
/// wait on Kafka, and a fresh cluster's first transactions and internal topics can hold them
/// past a client's timeout.
const REGISTRATION_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let ServiceArgs {
        kafka,
        city,
        schema_registry,
        registry_credential,
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
        schema_registry_credential: registry_credential.pair()?,
    };
    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("binding the API to {}", args.http))?;
    let limits = args.limits.limits()?;
    let database = bimride_store::Database::from(args.database);
    database
        .check()
        .map_err(|problem| bimride_kafka::SettingsError::new("database", problem))?;
    let store = database
        .connect(&shutdown)
        .await?
        .context("stopped before the ride store's database answered")?;
    let front = start(
        &kafka,
        info,
        listener,
        limits,
        axum::Router::new(),
        (access, store),
        shutdown.clone(),
    )
    .await?;
    let cx = Context {
        kafka,
        codec: front.codec,
        city,
        shutdown,
    };
    let feeds = service::spawn(Box::new(front.feeds), cx.clone());
    let learner = service::spawn(Box::new(front.learner), cx);
    front.server.await?.context("http server")?;
    feeds.await??;
    learner.await??;
    Ok(())
}
