//! Test support: real brokers (the embedded mock cluster, or Apache Kafka), registries,
//! databases and sample events. A missing broker is a failure with a clear message, never a skip.

pub mod databases;
pub mod kafka;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bimride_codec::{Codec, RegistryConfig};
use bimride_events::*;
use bimride_kafka::service::{self, Context, Service};
use bimride_kafka::{EmbeddedCluster, KafkaConfig, Provisioner, TopicSpec, topics};
use bimride_registry::{Registry, Server};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

pub use kafka::KafkaCluster;

/// A real broker for a test.
#[derive(Debug)]
pub enum Broker {
    /// librdkafka's mock cluster, in process, of this test alone.
    Embedded(EmbeddedCluster),
    /// Apache Kafka. Tests share the run's cluster, each under a topic namespace (and
    /// consumer groups, and a registry log) of its own.
    Kafka {
        bootstrap: String,
        namespace: String,
    },
}

impl Broker {
    pub fn embedded() -> Self {
        Broker::Embedded(EmbeddedCluster::start(3).expect("embedded cluster starts"))
    }

    /// The run's shared Apache Kafka cluster. Panics, failing the test, when there is none.
    pub fn kafka() -> Self {
        Self::kafka_at(kafka::shared_brokers())
    }

    /// Apache Kafka at `bootstrap`, under a fresh namespace.
    pub fn kafka_at(bootstrap: impl Into<String>) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Broker::Kafka {
            bootstrap: bootstrap.into(),
            namespace: format!("t{}", &id[..12]),
        }
    }

    pub fn bootstrap(&self) -> String {
        match self {
            Broker::Embedded(c) => c.bootstrap_servers().to_owned(),
            Broker::Kafka { bootstrap, .. } => bootstrap.clone(),
        }
    }

    pub fn config(&self) -> KafkaConfig {
        let mut c = KafkaConfig::for_brokers(self.bootstrap());
        c.partitions = 6;
        c.linger_ms = 1;
        if let Broker::Kafka { namespace, .. } = self {
            c.namespace.clone_from(namespace);
        }
        c
    }

    /// The registry's log: `_schemas` on a cluster of the test's own, else one per test.
    pub fn registry_log(&self) -> String {
        match self {
            Broker::Embedded(_) => topics::REGISTRY_LOG.to_owned(),
            Broker::Kafka { namespace, .. } => format!("{namespace}._schemas"),
        }
    }

    /// Replication of the catalogue: what production uses on Apache Kafka.
    pub fn replication(&self) -> i32 {
        match self {
            Broker::Embedded(_) => 1,
            Broker::Kafka { .. } => 3,
        }
    }

    pub fn provisioner<'a>(&'a self, config: &'a KafkaConfig) -> Provisioner<'a> {
        match self {
            Broker::Embedded(c) => Provisioner::Embedded(c),
            Broker::Kafka { .. } => Provisioner::Admin(config),
        }
    }

    /// Every topic of the catalogue, in this test's namespace.
    pub fn catalogue(&self, config: &KafkaConfig) -> Vec<TopicSpec> {
        topics::catalogue(
            &config.topics(),
            &self.registry_log(),
            config.partitions,
            self.replication(),
        )
    }

    /// Creates every topic of the catalogue.
    pub async fn provision(&self, config: &KafkaConfig) -> Vec<TopicSpec> {
        let specs = self.catalogue(config);
        self.provisioner(config)
            .ensure(&specs)
            .await
            .expect("topics provisioned");
        specs
    }
}

/// A registry on loopback, persisted to the log `log` on `config`'s cluster.
pub async fn kafka_registry(
    config: &KafkaConfig,
    log: &str,
    shutdown: CancellationToken,
) -> Server {
    let (journal, entries) =
        bimride_registry::KafkaJournal::open(&config.client(), log, Duration::from_secs(20))
            .await
            .expect("registry log replays");
    let registry = Registry::from_journal(bimride_registry::Journal::Kafka(journal), entries);
    bimride_registry::serve(registry, "127.0.0.1:0".parse().expect("addr"), shutdown)
        .await
        .expect("registry serves")
}

/// What most scenarios need: provisioned topics, a registry persisted to `_schemas`, a codec
/// and a producer. Dropping it stops the registry.
#[derive(Debug)]
pub struct Pipeline {
    pub config: KafkaConfig,
    pub stop: CancellationToken,
    pub registry: Server,
    pub codec: Arc<Codec>,
    pub producer: bimride_kafka::EventProducer,
    /// The ride store's database: SQLite, in a file of this pipeline's own.
    pub database: String,
}

impl Pipeline {
    pub async fn start(broker: &Broker) -> Self {
        let config = broker.config();
        broker.provision(&config).await;
        let stop = CancellationToken::new();
        let registry = kafka_registry(&config, &broker.registry_log(), stop.clone()).await;
        let codec = codec(&registry, &config);
        let producer =
            bimride_kafka::EventProducer::new(&config, Arc::clone(&codec)).expect("producer");
        Self {
            config,
            stop,
            registry,
            codec,
            producer,
            database: databases::fresh_sqlite(),
        }
    }
}

impl Pipeline {
    /// The full name of `topic` in this pipeline's namespace.
    pub fn topic(&self, topic: Topic) -> String {
        self.config.topics().name(topic).to_owned()
    }

    /// `bimride audit`'s reconciliation over this pipeline's topics, every ride settled;
    /// fails the test unless it is clean and covers exactly `rides` rides within a minute.
    /// Read again until then: the services' last records (receipts after charges, say) may
    /// still be on their way, while what is wrong with a log that only grows (a record twice,
    /// a ride too many) stays wrong.
    pub async fn audit(&self, rides: usize) -> bimride_audit::Report {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let report =
                bimride_audit::read_ledger(&self.config, &self.codec, Duration::from_secs(3_600))
                    .await
                    .expect("the ride topics read back")
                    .audit(0, true);
            if report.clean && report.rides == rides {
                return report;
            }
            if tokio::time::Instant::now() >= deadline {
                assert!(report.clean, "{}", report.table());
                assert_eq!(report.rides, rides, "{}", report.table());
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Whether `group` has committed every partition of `topic` up to its end.
    pub async fn committed_to_the_end(&self, group: &str, topic: Topic) -> bool {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let (config, group, topic) = (self.config.clone(), group.to_owned(), self.topic(topic));
        tokio::task::spawn_blocking(move || {
            let wait = Duration::from_secs(10);
            let consumer: BaseConsumer = config
                .consumer(&group)
                .set("enable.auto.commit", "false")
                .create()
                .expect("consumer");
            let metadata = consumer
                .fetch_metadata(Some(&topic), wait)
                .expect("metadata");
            let mut list = rdkafka::TopicPartitionList::new();
            for partition in metadata.topics()[0].partitions() {
                list.add_partition(&topic, partition.id());
            }
            let committed = consumer.committed_offsets(list, wait).expect("committed");
            committed.elements().iter().all(|e| {
                let (_, high) = consumer
                    .fetch_watermarks(&topic, e.partition(), wait)
                    .expect("watermarks");
                high == 0 || e.offset() == rdkafka::Offset::Offset(high)
            })
        })
        .await
        .expect("joins")
    }

    /// A consumer group (or transactional id) for `role`, unique to this pipeline's namespace
    /// on a shared cluster.
    pub fn group(&self, role: &str) -> String {
        format!("{}-{role}", self.config.namespace)
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A codec on `registry` for the topics of `config`'s namespace.
pub fn codec(registry: &Server, config: &KafkaConfig) -> Arc<Codec> {
    let registry = RegistryConfig::new(registry.url()).with_topics(config.topics());
    Arc::new(Codec::new(&registry).expect("codec"))
}

fn id(prefix: &str, n: u32) -> String {
    format!("{prefix}-{n}")
}

fn head(n: u32) -> (String, Millis) {
    (
        uuid::Uuid::new_v4().to_string(),
        Millis(1_764_000_000_000 + i64::from(n)),
    )
}

fn point() -> GeoPoint {
    GeoPoint {
        lat: 52.37,
        lng: 4.90,
    }
}

fn vehicle() -> Vehicle {
    Vehicle {
        plate: "GX-123-B".into(),
        model: "Toyota Prius".into(),
        colour: "white".into(),
    }
}

fn eur(amount_minor: i64) -> Money {
    Money {
        amount_minor,
        currency: "EUR".into(),
    }
}

pub fn ride_requested(n: u32) -> RideRequested {
    let (event_id, occurred_at) = head(n);
    RideRequested {
        event_id,
        occurred_at,
        ride_id: id("ride", n),
        rider_id: id("rider", n),
        product: Product::Comfort,
        pickup: point(),
        dropoff: GeoPoint {
            lat: 52.36,
            lng: 4.88,
        },
        region: "861969537ffffff".into(),
        pickup_cell: "881969536dfffff".into(),
        quote: eur(1_450),
        surge_milli: 1_000,
        idempotency_key: Some(id("key", n)),
        quoted_duration_secs: None,
    }
}

/// One of each ride lifecycle event, for ride `n`.
pub fn ride_events(n: u32) -> Vec<RideEvent> {
    let ride_id = id("ride", n);
    let driver_id = id("driver", n);
    let h = |k: u32| head(n * 10 + k);
    vec![
        OfferSent {
            event_id: h(0).0,
            occurred_at: h(0).1,
            ride_id: ride_id.clone(),
            offer_id: id("offer", n),
            driver_id: driver_id.clone(),
            attempt: 1,
            pickup_eta_secs: 180,
            expires_at: Millis(h(0).1.0 + 15_000),
            region: "861969537ffffff".into(),
            pickup: Some(point()),
            dropoff: None,
        }
        .into(),
        OfferAnswered {
            event_id: h(1).0,
            occurred_at: h(1).1,
            ride_id: ride_id.clone(),
            offer_id: id("offer", n),
            driver_id: driver_id.clone(),
            answer: OfferAnswer::Accepted,
            region: "861969537ffffff".into(),
        }
        .into(),
        DriverAssigned {
            event_id: h(2).0,
            occurred_at: h(2).1,
            ride_id: ride_id.clone(),
            rider_id: id("rider", n),
            driver_id: driver_id.clone(),
            vehicle: vehicle(),
            pickup_eta_secs: 180,
            region: "861969537ffffff".into(),
            product: Some(Product::Economy),
            surge_milli: 1_000,
            distance_eta_secs: None,
            quoted_duration_secs: None,
        }
        .into(),
        DriverArrived {
            event_id: h(3).0,
            occurred_at: h(3).1,
            ride_id: ride_id.clone(),
            driver_id: driver_id.clone(),
            rider_id: id("rider", n),
        }
        .into(),
        TripStarted {
            event_id: h(4).0,
            occurred_at: h(4).1,
            ride_id: ride_id.clone(),
            driver_id: driver_id.clone(),
            rider_id: id("rider", n),
        }
        .into(),
        TripTelemetry {
            event_id: h(5).0,
            occurred_at: h(5).1,
            ride_id: ride_id.clone(),
            driver_id: driver_id.clone(),
            position: point(),
            distance_m: 1_200,
        }
        .into(),
        TripCompleted {
            event_id: h(6).0,
            occurred_at: h(6).1,
            ride_id: ride_id.clone(),
            rider_id: id("rider", n),
            driver_id: driver_id.clone(),
            distance_m: 3_400,
            duration_secs: 620,
            dropoff: point(),
        }
        .into(),
        RideCancelled {
            event_id: h(7).0,
            occurred_at: h(7).1,
            ride_id,
            rider_id: id("rider", n),
            driver_id: Some(driver_id),
            by: CancelledBy::Rider,
            reason: "rider_request".into(),
            region: String::new(),
        }
        .into(),
    ]
}

/// The steps of ride `n` from assignment to completion, as a driver's app and dispatch
/// publish them: a Comfort ride quoted at 1.2x surge.
pub fn completed_trip(n: u32) -> Vec<RideEvent> {
    let (ride_id, driver_id, rider_id) = (id("ride", n), id("driver", n), id("rider", n));
    let h = |k: u32| head(n * 10 + k);
    vec![
        DriverAssigned {
            event_id: h(0).0,
            occurred_at: h(0).1,
            ride_id: ride_id.clone(),
            rider_id: rider_id.clone(),
            driver_id: driver_id.clone(),
            vehicle: vehicle(),
            pickup_eta_secs: 180,
            region: "861969537ffffff".into(),
            product: Some(Product::Comfort),
            surge_milli: 1_200,
            distance_eta_secs: None,
            quoted_duration_secs: None,
        }
        .into(),
        DriverArrived {
            event_id: h(1).0,
            occurred_at: h(1).1,
            ride_id: ride_id.clone(),
            driver_id: driver_id.clone(),
            rider_id: rider_id.clone(),
        }
        .into(),
        TripStarted {
            event_id: h(2).0,
            occurred_at: h(2).1,
            ride_id: ride_id.clone(),
            driver_id: driver_id.clone(),
            rider_id: rider_id.clone(),
        }
        .into(),
        TripCompleted {
            event_id: h(3).0,
            occurred_at: h(3).1,
            ride_id,
            rider_id,
            driver_id,
            distance_m: 2_000 + i64::from(n % 7) * 1_000,
            duration_secs: 300 + i64::from(n % 5) * 60,
            dropoff: point(),
        }
        .into(),
    ]
}

pub fn supply_events(n: u32) -> Vec<SupplyEvent> {
    let (e1, t1) = head(n);
    let (e2, t2) = head(n + 1);
    vec![
        DriverStatusChanged {
            event_id: e1,
            occurred_at: t1,
            driver_id: id("driver", n),
            status: DriverStatus::Available,
            position: point(),
            region: "861969537ffffff".into(),
            product: Product::Economy,
            vehicle: vehicle(),
        }
        .into(),
        DriverLocationUpdated {
            event_id: e2,
            occurred_at: t2,
            driver_id: id("driver", n),
            position: point(),
            region: "861969537ffffff".into(),
            cell: "881969536dfffff".into(),
        }
        .into(),
    ]
}

pub fn surge_updated(n: u32) -> SurgeUpdated {
    let (event_id, occurred_at) = head(n);
    SurgeUpdated {
        event_id,
        occurred_at,
        cell: "881969536dfffff".into(),
        multiplier_milli: 1_400,
        demand: 14,
        supply: 10,
        window_end: occurred_at,
    }
}

pub fn fare_charged(n: u32) -> FareCharged {
    let (event_id, occurred_at) = head(n);
    FareCharged {
        event_id,
        occurred_at,
        ride_id: id("ride", n),
        rider_id: id("rider", n),
        driver_id: Some(id("driver", n)),
        kind: ChargeKind::Trip,
        fare: eur(1_500),
        base_minor: 300,
        distance_minor: 900,
        time_minor: 300,
        surge_milli: 1_000,
        commission: eur(375),
        payout: eur(1_125),
    }
}

pub fn notification(n: u32) -> Notification {
    let (event_id, occurred_at) = head(n);
    Notification {
        event_id,
        occurred_at,
        notification_id: id("note", n),
        recipient_kind: RecipientKind::Rider,
        recipient_id: id("rider", n),
        ride_id: Some(id("ride", n)),
        template: "driver_assigned".into(),
        text: "Your driver is on the way".into(),
    }
}

/// The total of counter `name` in this process's registry, over the series that carry a label
/// with value `label` (every series where `None`).
pub fn counter_total(name: &str, label: Option<&str>) -> f64 {
    prometheus::gather()
        .iter()
        .filter(|f| f.name() == name)
        .flat_map(|f| f.get_metric())
        .filter(|m| label.is_none_or(|v| m.get_label().iter().any(|l| l.value() == v)))
        .map(|m| m.get_counter().get_value())
        .sum()
}

/// Sends `tracing` output to the test's stderr, once; for debugging a failing test.
pub fn trace() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("info,rdkafka=info")
        .try_init();
}

/// The trip API on a real socket, with the ride store that feeds it, its surge feed and its
/// learned corrections,
/// until `stop`. Every API of a pipeline shares the pipeline's store.
#[derive(Debug)]
pub struct ApiServer {
    pub url: String,
    pub store: bimride_store::Store,
    /// The learned ETA corrections the API's feed keeps, for a dispatch to share as in `up`.
    pub learned: Arc<bimride_domain::eta::Learned>,
    pub tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Pipeline {
    pub async fn serve_api(
        &self,
        city: bimride_domain::City,
        stop: CancellationToken,
    ) -> ApiServer {
        let feed = bimride_api::SurgeFeed(Arc::new(bimride_api::SurgeBook::default()));
        let surge_book = Arc::clone(&feed.0);
        let projection = self.spawn(feed, stop.clone());
        let learned = Arc::new(bimride_domain::eta::Learned::default());
        let learner = self.spawn(
            bimride_eta::learned::LearnedFeed::new(Arc::clone(&learned)),
            stop.clone(),
        );
        let database = bimride_store::Database {
            database_url: Some(self.database.clone()),
            ..Default::default()
        };
        let sink = self.spawn(
            bimride_store::StoreSettings {
                database: database.clone(),
                group: self.group("store"),
            },
            stop.clone(),
        );
        let store = bimride_store::Store::connect(&database.url())
            .await
            .expect("the ride store's database");
        let state = bimride_api::ApiState::new(bimride_api::ApiParts {
            producer: self.producer.clone(),
            kafka: self.config.clone(),
            city,
            store: store.clone(),
            surge: surge_book,
            learned: Arc::clone(&learned),
            access: bimride_api::Access::new(authority(), bimride_api::RateLimit::default()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            axum::serve(listener, bimride_api::app(state))
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .context("server")
        });
        ApiServer {
            url,
            store,
            learned,
            tasks: vec![projection, learner, sink, server],
        }
    }

    /// What every service is given, on this pipeline's cluster and codec, in Amsterdam.
    pub fn context(&self, stop: CancellationToken) -> Context {
        Context {
            kafka: self.config.clone(),
            codec: Arc::clone(&self.codec),
            city: bimride_domain::City::amsterdam(),
            shutdown: stop,
        }
    }

    /// Any service, on this pipeline, until `stop`.
    pub fn spawn(
        &self,
        service: impl Service,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<anyhow::Result<()>> {
        let cx = self.context(stop);
        tokio::spawn(async move { Ok(service::run(Box::new(service), cx).await?) })
    }
}

/// Waits for every task and fails the test if one failed.
pub async fn join_all(tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>) {
    for t in tasks {
        t.await
            .expect("task joins")
            .unwrap_or_else(|e| panic!("task failed: {e:#}"));
    }
}

/// Every record of every partition of `topic`, from the beginning until nothing more arrives
/// for two seconds, as a consumer with `isolation` (`read_committed` or `read_uncommitted`)
/// sees them: (partition, payload).
pub fn read_back(config: &KafkaConfig, topic: &str, isolation: &str) -> Vec<(i32, Vec<u8>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let reader: BaseConsumer = config
        .consumer(&format!("read-back-{}", uuid::Uuid::new_v4()))
        .set("isolation.level", isolation)
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let metadata = reader
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut assign = TopicPartitionList::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        assign
            .add_partition_offset(topic, p.id(), Offset::Beginning)
            .expect("partition");
    }
    reader.assign(&assign).expect("assign");
    let mut out = Vec::new();
    let mut idle_since = Instant::now();
    while idle_since.elapsed() < Duration::from_secs(2) {
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) {
            out.push((m.partition(), m.payload().unwrap_or_default().to_vec()));
            idle_since = Instant::now();
        }
    }
    out
}

/// Decodes what [`read_back`] returns.
pub async fn decode_all<T: TopicValue>(codec: &Codec, records: &[(i32, Vec<u8>)]) -> Vec<T> {
    let mut out = Vec::with_capacity(records.len());
    for (_, payload) in records {
        out.push(codec.decode::<T>(payload).await.expect("decodes"));
    }
    out
}

/// The signing secret of every test API.
pub const TEST_SECRET: &str = "bimride-test-secret-bimride-test-secret";
/// The admin credential of every test API.
pub const TEST_ADMIN_TOKEN: &str = "bimride-test-admin-credential";

/// Signs and checks tokens as the test APIs do.
pub fn authority() -> bimride_auth::Authority {
    bimride_auth::Authority::new(
        &bimride_auth::Secret::new(TEST_SECRET),
        Some(bimride_auth::Secret::new(TEST_ADMIN_TOKEN)),
    )
    .expect("test authority")
}

/// A bearer token for `rider` on the test APIs.
pub fn rider_token(rider: &str) -> String {
    authority()
        .rider_token(rider, Duration::from_secs(3600))
        .expect("token")
        .expose()
        .to_owned()
}

/// Books `n` rides over HTTP, `first` onwards, spread over the centre; returns their ids.
pub async fn book(api: &str, first: usize, n: usize) -> std::collections::BTreeSet<String> {
    let http = reqwest::Client::new();
    let city = bimride_domain::City::amsterdam();
    let results: Vec<String> = futures::stream::iter(first..first + n)
        .map(|i| {
            let http = http.clone();
            // A golden-angle spiral: even cover of a 3 km disc.
            let angle = i as f64 * 2.399_963;
            let r = 3_000.0 * ((i % 997) as f64 / 997.0).sqrt();
            let at = |r: f64, a: f64| {
                (
                    city.centre_lat + r * a.cos() / 111_320.0,
                    city.centre_lng
                        + r * a.sin() / (111_320.0 * city.centre_lat.to_radians().cos()),
                )
            };
            let (pickup, dropoff) = (at(r, angle), at(2_000.0, angle + 2.0));
            let rider = format!("rider-{i}");
            let token = rider_token(&rider);
            let body = serde_json::json!({
                "rider_id": rider,
                "pickup": {"lat": pickup.0, "lng": pickup.1},
                "dropoff": {"lat": dropoff.0, "lng": dropoff.1},
                "product": "economy",
            });
            let url = format!("{api}/v1/rides");
            async move {
                let response = http
                    .post(&url)
                    .bearer_auth(token)
                    .header("Idempotency-Key", format!("key-{i}"))
                    .json(&body)
                    .send()
                    .await
                    .expect("booking answered");
                assert_eq!(response.status(), 202, "booking {i} accepted");
                let body: serde_json::Value = response.json().await.expect("json");
                body["ride_id"].as_str().expect("ride id").to_owned()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let ids: std::collections::BTreeSet<String> = results.into_iter().collect();
    assert_eq!(ids.len(), n, "every booking is a distinct ride");
    ids
}

/// The ride-events value schema, evolved compatibly: `TripCompleted` gains `tip_minor`, an
/// optional long that defaults to null. Readers of either version read the other.
pub fn ride_events_v2_json() -> String {
    let mut schema: serde_json::Value =
        serde_json::from_str(&Topic::RideEvents.value_schema_json()).expect("schema json");
    let branch = schema
        .as_array_mut()
        .expect("a union")
        .iter_mut()
        .find(|b| {
            b["name"]
                .as_str()
                .is_some_and(|n| n.rsplit('.').next() == Some("TripCompleted"))
        })
        .expect("TripCompleted in the union");
    branch["fields"]
        .as_array_mut()
        .expect("fields")
        .push(serde_json::json!({
            "name": "tip_minor",
            "type": ["null", "long"],
            "default": null,
            "doc": "A tip added by the rider, in minor units."
        }));
    schema.to_string()
}

/// Registers `schema` under `subject` on the registry at `url`: the id, or the registry's
/// HTTP status and error body.
pub async fn register_schema(
    url: &str,
    subject: &str,
    schema: &str,
) -> Result<u32, (u16, serde_json::Value)> {
    let response = reqwest::Client::new()
        .post(format!("{url}/subjects/{subject}/versions"))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .json(&serde_json::json!({ "schema": schema }))
        .send()
        .await
        .expect("registry answers");
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    match body["id"].as_u64() {
        Some(id) if status == 200 => Ok(u32::try_from(id).expect("id")),
        _ => Err((status, body)),
    }
}

/// `event` written with the v2 schema under schema id `id`, with `tip_minor` set on a
/// `TripCompleted`: what a producer built on v2 sends.
pub fn encode_v2(codec_bytes: &[u8], id: u32, tip_minor: i64) -> Vec<u8> {
    use apache_avro::types::Value;
    let v1 = Codec::value_schema(Topic::RideEvents);
    let v2 = apache_avro::Schema::parse_str(&ride_events_v2_json()).expect("v2 parses");
    let mut datum = &codec_bytes[5..];
    let value = apache_avro::reader::datum::GenericDatumReader::builder(&v1)
        .build()
        .expect("reader")
        .read_value(&mut datum)
        .expect("v1 datum");
    let value = match value {
        Value::Union(i, inner) => match *inner {
            Value::Record(mut fields) if fields.iter().any(|(n, _)| n == "duration_secs") => {
                fields.push((
                    "tip_minor".into(),
                    Value::Union(1, Box::new(Value::Long(tip_minor))),
                ));
                Value::Union(i, Box::new(Value::Record(fields)))
            }
            other => Value::Union(i, Box::new(other)),
        },
        other => other,
    };
    let mut out = vec![0];
    out.extend_from_slice(&id.to_be_bytes());
    out.extend(
        apache_avro::writer::datum::GenericDatumWriter::builder(&v2)
            .build()
            .expect("writer")
            .write_value_to_vec(value)
            .expect("v2 datum"),
    );
    out
}

/// How many charges each ride has in the payments topic, as `read_committed` readers see it.
pub async fn charges_by_ride(
    config: &KafkaConfig,
    codec: &Codec,
) -> std::collections::BTreeMap<String, usize> {
    let config = config.clone();
    let records = tokio::task::spawn_blocking(move || {
        read_back(
            &config,
            config.topics().name(Topic::Payments),
            "read_committed",
        )
    })
    .await
    .expect("reader joins");
    let mut out = std::collections::BTreeMap::new();
    // Poison written by a test is not a charge.
    for (_, payload) in &records {
        if let Ok(c) = codec.decode::<FareCharged>(payload).await {
            *out.entry(c.ride_id).or_default() += 1;
        }
    }
    out
}
