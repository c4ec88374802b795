//! `bimride up`: the whole city in one process.

use std::sync::Arc;

use anyhow::Context as _;
use bimride_billing::BillingSettings;
use bimride_dispatch::DispatchSettings;
use bimride_kafka::service::{self, AnyService, Context};
use bimride_kafka::{EmbeddedCluster, Provisioner, topics};
use bimride_notifications::NotificationSettings;
use bimride_simulator::SimSettings;
use bimride_store::StoreSettings;
use bimride_surge::SurgeSettings;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::UpArgs;
use crate::front::SystemInfo;
use crate::{api, registry, shutdown};

/// The whole city, running until its shutdown token is cancelled.
pub struct Running {
    pub info: SystemInfo,
    pub http: std::net::SocketAddr,
    pub kafka: bimride_kafka::KafkaConfig,
    pub shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    services: Vec<JoinHandle<Result<(), service::Failed>>>,
    /// The embedded registry, stopped after the services that use it.
    registry: Option<JoinHandle<std::io::Result<()>>>,
    cluster: Option<EmbeddedCluster>,
}

impl Running {
    /// Creates a topic on the city's cluster, embedded or not.
    pub async fn create_topic(&self, spec: bimride_kafka::TopicSpec) -> anyhow::Result<()> {
        Provisioner::of(self.cluster.as_ref(), &self.kafka)
            .ensure(std::slice::from_ref(&spec))
            .await
            .with_context(|| format!("creating {}", spec.name))?;
        Ok(())
    }

    /// Waits for every part to stop after shutdown, then the embedded cluster.
    pub async fn stopped(self) -> anyhow::Result<()> {
        self.server.await??;
        for service in self.services {
            service.await??;
        }
        if let Some(registry) = self.registry {
            registry.await??;
        }
        drop(self.cluster);
        Ok(())
    }
}

/// Fits a client's settings to the embedded brokers, unless the fetch wait was given.
pub fn on_embedded_brokers(kafka: &mut bimride_kafka::KafkaConfig) {
    let wait_given = kafka
        .properties
        .iter()
        .any(|p| p.starts_with("fetch.wait.max.ms"));
    if !wait_given {
        // The mock brokers answer a fetch only when its wait runs out, not when data
        // arrives, so every hop would cost the whole wait (500 ms by default). Each consumer
        // fetches from each broker once per wait, so shorter costs CPU at rest: 25 ms keeps
        // a ride's few hops well under a second.
        kafka.fetch_wait_max_ms = Some(25);
    }
}

pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let city = start(args, shutdown::on_signal()).await?;
    announce(&city.info, &format!("http://{}", city.http));
    city.shutdown.cancelled().await;
    city.stopped().await?;
    tracing::info!("bimride stopped cleanly");
    Ok(())
}

/// Starts every part of the city; they stop when `shutdown` is cancelled, or when one fails.
pub async fn start(mut args: UpArgs, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let city = args.city.city()?;
    let limits = args.limits.limits()?;
    // Every setting is checked before anything starts; the simulator's once its API is known.
    let store = StoreSettings::from(args.store);
    let database = store.database.clone();
    let eta = bimride_eta::EtaSettings {
        eta_time_scale: args.sim.speedup,
        ..args.eta.into()
    };
    // Dispatch starts once the API's learned ETAs exist, to share them.
    let mut dispatch = DispatchSettings::from(args.dispatch);
    dispatch.validate()?;
    let mut services: Vec<Box<dyn AnyService>> = vec![
        Box::new(BillingSettings::from(args.billing)),
        Box::new(SurgeSettings::from(args.surge)),
        Box::new(NotificationSettings::from(args.notifications)),
        Box::new(store),
        Box::new(eta),
    ];
    for service in &services {
        service.validate()?;
    }

    // The cluster lives until the end of this function, after every client is gone.
    let cluster = match &args.kafka.brokers {
        Some(_) => None,
        None => {
            let cluster = EmbeddedCluster::start(args.embedded_brokers)
                .context("starting the embedded Kafka cluster")?;
            args.kafka.brokers = Some(cluster.bootstrap_servers().to_owned());
            Some(cluster)
        }
    };
    let mut kafka = args.kafka.validated()?;
    if cluster.is_some() {
        on_embedded_brokers(&mut kafka);
    }

    let created = Provisioner::of(cluster.as_ref(), &kafka)
        .ensure(&topics::of(&kafka, &args.registry_topic))
        .await
        .context("provisioning topics")?;
    tracing::info!(created = created.len(), "topics ready");

    let mut registry = None;
    let registry_url = match args.schema_registry {
        Some(url) => url,
        None => {
            let server = registry::start(
                &kafka.client(),
                &args.registry_topic,
                (
                    args.registry_listen,
                    bimride_registry::Options {
                        limits,
                        access: bimride_registry::Access::default(),
                    },
                ),
                shutdown.clone(),
            )
            .await?;
            let url = server.url();
            registry = Some(server.task);
            url
        }
    };

    let info = SystemInfo {
        kafka_bootstrap_servers: kafka.bootstrap_servers().to_owned(),
        schema_registry_url: registry_url.clone(),
        embedded: cluster.is_some(),
        city: city.clone(),
        version: env!("CARGO_PKG_VERSION"),
        schema_registry_credential: args.registry_credential.pair()?,
    };
    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("binding the HTTP front to {}", args.http))?;
    let dashboard = bimride_dashboard::Dashboard::new(&city);
    let (authority, access) = args.access.access(true)?;
    let rides = database
        .connect(&shutdown)
        .await?
        .context("stopped before the ride store's database answered")?;
    let front = api::start(
        &kafka,
        info.clone(),
        listener,
        limits,
        bimride_dashboard::router(Arc::clone(&dashboard)),
        (access, rides.clone()),
        shutdown.clone(),
    )
    .await?;
    let http_addr = front.addr;

    let mut sim = SimSettings::from(args.sim);
    sim.api_url = format!("http://{http_addr}");
    sim.authority = Some(authority.clone());
    let cx = Context {
        kafka: kafka.clone(),
        codec: Arc::clone(&front.codec),
        city,
        shutdown: shutdown.clone(),
    };
    // A city without drivers or riders (a benchmark's, whose fleet runs apart) needs no
    // simulator reading the ride events.
    if sim.drivers > 0 || sim.booking_rate > 0.0 {
        services.push(Box::new(sim));
    }
    // Dispatch learns from the API's feed of the ETA topic: one consumer for both.
    dispatch.learned = Some(Arc::clone(&front.learner.learned));
    services.push(Box::new(dispatch));
    services.push(Box::new(front.feeds));
    services.push(Box::new(front.learner));
    services.push(Box::new(bimride_dashboard::Feeds {
        dashboard,
        store: rides,
    }));
    let services = services
        .into_iter()
        .map(|s| service::spawn(s, cx.clone()))
        .collect();
    Ok(Running {
        info,
        http: http_addr,
        kafka,
        shutdown,
        server: front.server,
        services,
        registry,
        cluster,
    })
}

/// The addresses a user (or another program) needs, on stdout.
#[allow(clippy::print_stdout)]
fn announce(info: &SystemInfo, http: &str) {
    println!("bimride is up");
    println!(
        "  kafka bootstrap servers: {}",
        info.kafka_bootstrap_servers
    );
    println!("  schema registry:         {}", info.schema_registry_url);
    println!("  http:                    {http}");
    println!("  dashboard:               {http}/");
    println!("  metrics:                 {http}/metrics");
    println!("  system info:             {http}/v1/system");
    println!("press Ctrl-C to stop");
}
