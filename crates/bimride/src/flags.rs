//! The flags of the settings each library owns. A settings struct is plain data with its
//! defaults in `Default`; here each field gets its flag, environment variable and help, and
//! takes its default from that `Default`, so that every default is written once.

use std::num::NonZeroU32;
use std::path::PathBuf;

use bimride_kafka::config::{Compression, SaslMechanism, SecurityProtocol};
use bimride_kafka::partitioned::Guarantee;

/// Declares `$flags`, the command-line face of `$settings`. A field marked `= default` shows
/// and takes the settings' default; the settings' fields left out keep theirs.
macro_rules! flags {
    ($(#[$doc:meta])* $flags:ident => $settings:ty {
        $($(#[$attr:meta])* $field:ident: $ty:ty $(= $default:ident)?,)*
    }) => {
        $(#[$doc])*
        #[derive(Clone, clap::Args)]
        pub struct $flags {
            $(
                $(#[$attr])*
                $(#[arg(default_value_t = { let $default = <$settings>::default(); $default.$field })])?
                pub $field: $ty,
            )*
        }

        impl From<$flags> for $settings {
            #[allow(clippy::needless_update)]
            fn from(flags: $flags) -> Self {
                Self {
                    $($field: flags.$field,)*
                    ..Self::default()
                }
            }
        }

        // Through the settings' own Debug, which keeps secrets out.
        impl std::fmt::Debug for $flags {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                <$settings>::from(self.clone()).fmt(f)
            }
        }
    };
}

flags! {
    /// The service area. The defaults are Amsterdam.
    CityFlags => bimride_domain::City {
        #[arg(long = "city", env = "BIMRIDE_CITY")]
        name: String = default,
        /// Latitude of the centre, in degrees.
        #[arg(long = "city-lat", env = "BIMRIDE_CITY_LAT")]
        centre_lat: f64 = default,
        /// Longitude of the centre, in degrees.
        #[arg(long = "city-lng", env = "BIMRIDE_CITY_LNG")]
        centre_lng: f64 = default,
        /// Radius of the service area, in km.
        #[arg(long = "city-radius-km", env = "BIMRIDE_CITY_RADIUS_KM")]
        radius_km: f64 = default,
        /// H3 resolution of dispatch regions (the partition key).
        #[arg(long, env = "BIMRIDE_REGION_RESOLUTION")]
        region_resolution: u8 = default,
        /// H3 resolution of matching and surge cells.
        #[arg(long, env = "BIMRIDE_CELL_RESOLUTION")]
        cell_resolution: u8 = default,
        /// Rings of cells dispatch searches around a pickup; drivers and dispatch must agree.
        #[arg(long, env = "BIMRIDE_MATCH_RINGS")]
        match_rings: u32 = default,
    }
}

flags! {
    /// How often each rider may call the API.
    RateFlags => bimride_api::RateLimit {
        /// Requests a second each rider may make, sustained.
        #[arg(long = "rider-rate", env = "BIMRIDE_RIDER_RATE")]
        per_second: NonZeroU32 = default,
        /// Requests a rider may make at once above the sustained rate.
        #[arg(long = "rider-burst", env = "BIMRIDE_RIDER_BURST")]
        burst: NonZeroU32 = default,
        /// Failed authentications an address may make at once; then one a second.
        #[arg(long = "auth-failure-burst", env = "BIMRIDE_AUTH_FAILURE_BURST")]
        failure_burst: NonZeroU32 = default,
    }
}

flags! {
    /// Limits of every HTTP listener against slow and idle clients.
    HttpFlags => bimride_telemetry::HttpLimits {
        /// Time for a request's headers to arrive, from the connection's start or the end of
        /// the previous response, in ms.
        #[arg(long = "http-header-timeout-ms", env = "BIMRIDE_HTTP_HEADER_TIMEOUT_MS")]
        header_timeout_ms: u64 = default,
        /// Time for a request's body to arrive once its headers have, in ms.
        #[arg(long = "http-body-timeout-ms", env = "BIMRIDE_HTTP_BODY_TIMEOUT_MS")]
        body_timeout_ms: u64 = default,
        /// Longest pause in a connection's traffic, either way, in ms.
        #[arg(long = "http-idle-timeout-ms", env = "BIMRIDE_HTTP_IDLE_TIMEOUT_MS")]
        idle_timeout_ms: u64 = default,
        /// Connections served at once; more wait in the listen backlog.
        #[arg(long = "http-max-connections", env = "BIMRIDE_HTTP_MAX_CONNECTIONS")]
        max_connections: usize = default,
    }
}

flags! {
    DispatchFlags => bimride_dispatch::DispatchSettings {
        /// Consumer group of the dispatch instances.
        #[arg(long = "dispatch-group", env = "BIMRIDE_DISPATCH_GROUP")]
        group: String = default,
        /// `exactly-once` or `at-least-once`. Exactly once, each decision commits in a Kafka
        /// transaction with the input offsets that caused it, and an instance the group has
        /// moved on from (frozen, or cut off past its session) cannot commit: no ride gets two
        /// drivers across a hand-off. At least once is for brokers without transactions.
        #[arg(id = "dispatch-delivery", long = "dispatch-delivery", value_name = "DELIVERY", env = "BIMRIDE_DISPATCH_DELIVERY")]
        delivery: Guarantee = default,
        /// Transactional id, unique among instances; stable across restarts of one instance
        /// (a pod's name), a restart then aborts what its previous self left open at once
        /// rather than after the transaction timeout. Empty: a new id at every start.
        #[arg(id = "dispatch-transactional-id", long = "dispatch-transactional-id", value_name = "TRANSACTIONAL_ID", env = "BIMRIDE_DISPATCH_TRANSACTIONAL_ID")]
        transactional_id: String = default,
        /// How long a transaction collects decisions before it commits, in ms.
        #[arg(id = "dispatch-commit-ms", long = "dispatch-commit-ms", value_name = "COMMIT_MS", env = "BIMRIDE_DISPATCH_COMMIT_MS")]
        commit_ms: u64 = default,
        /// How long a driver has to answer an offer, in ms.
        #[arg(long, env = "BIMRIDE_OFFER_TIMEOUT_MS")]
        offer_timeout_ms: u64 = default,
        /// How long a ride waits for a driver before it is cancelled with `no_driver`, in ms.
        #[arg(long, env = "BIMRIDE_MAX_WAIT_MS")]
        max_wait_ms: u64 = default,
        /// How much history a new owner of a region replays, in seconds.
        #[arg(long, env = "BIMRIDE_DISPATCH_REPLAY_SECS")]
        replay_window_secs: u64 = default,
        /// How much driver supply a new owner of a region replays, in seconds: longer than
        /// idle drivers take to repeat their status.
        #[arg(long, env = "BIMRIDE_DISPATCH_SUPPLY_REPLAY_SECS")]
        supply_replay_secs: u64 = default,
        /// How often offers are expired and waiting rides retried, in ms.
        #[arg(long, env = "BIMRIDE_DISPATCH_TICK_MS")]
        tick_ms: u64 = default,
    }
}

flags! {
    BillingFlags => bimride_billing::BillingSettings {
        /// Consumer group of the billing instances.
        #[arg(id = "billing-group", long = "billing-group", env = "BIMRIDE_BILLING_GROUP")]
        group: String = default,
        /// `exactly-once` or `at-least-once`. Exactly once needs brokers with transactions;
        /// billing refuses to start without them.
        #[arg(long = "billing-delivery", env = "BIMRIDE_BILLING_DELIVERY")]
        delivery: Guarantee = default,
        /// Transactional id, stable across restarts of one instance and unique among instances:
        /// a restarted instance fences its previous self and aborts what it left open.
        #[arg(long = "billing-transactional-id", env = "BIMRIDE_BILLING_TRANSACTIONAL_ID")]
        transactional_id: String = default,
        /// The platform's commission, in basis points of each charge (2500 = 25%).
        #[arg(long, env = "BIMRIDE_COMMISSION_BP")]
        commission_bp: u32 = default,
        /// How long a transaction collects records before it commits, in ms.
        #[arg(long, env = "BIMRIDE_BILLING_COMMIT_MS")]
        commit_ms: u64 = default,
        /// Most records in one transaction.
        #[arg(long, env = "BIMRIDE_BILLING_MAX_BATCH")]
        max_batch: usize = default,
        /// How much history a new owner of a partition replays, in seconds; also how long a
        /// charged ride is remembered.
        #[arg(long, env = "BIMRIDE_BILLING_REPLAY_SECS")]
        billing_replay_secs: u64 = default,
    }
}

flags! {
    SurgeFlags => bimride_surge::SurgeSettings {
        /// Tumbling window, in seconds: how often multipliers are computed.
        #[arg(long, env = "BIMRIDE_SURGE_TUMBLING_SECS")]
        surge_tumbling_secs: u64 = default,
        /// Sliding window, in seconds, a whole number of tumbling windows: how far back demand
        /// and supply count.
        #[arg(long, env = "BIMRIDE_SURGE_SLIDING_SECS")]
        surge_sliding_secs: u64 = default,
        /// How late an event may arrive and still count, in ms.
        #[arg(long, env = "BIMRIDE_SURGE_LATENESS_MS")]
        surge_lateness_ms: u64 = default,
        /// Highest multiplier, in thousandths (3000 is x3.0).
        #[arg(long, env = "BIMRIDE_SURGE_CAP_MILLI")]
        surge_cap_milli: i32 = default,
        /// Recompute and publish again every window that closes after this point (`earliest`,
        /// or an RFC 3339 time), then run as usual: surge's replay.
        #[arg(long, env = "BIMRIDE_SURGE_RECOMPUTE_FROM")]
        surge_recompute_from: Option<bimride_kafka::replay::Point>,
    }
}

flags! {
    NotificationFlags => bimride_notifications::NotificationSettings {
        /// Consumer group prefix of the notification instances.
        #[arg(id = "notifications-group", long = "notifications-group", env = "BIMRIDE_NOTIFICATIONS_GROUP")]
        group: String = default,
        /// Also post every message as JSON to this URL.
        #[arg(long, env = "BIMRIDE_NOTIFICATIONS_WEBHOOK_URL")]
        webhook_url: Option<String>,
        /// Retries of a failed webhook post, with exponential backoff.
        #[arg(long, env = "BIMRIDE_NOTIFICATIONS_WEBHOOK_RETRIES")]
        webhook_retries: u32 = default,
        #[arg(long, env = "BIMRIDE_NOTIFICATIONS_WEBHOOK_TIMEOUT_MS")]
        webhook_timeout_ms: u64 = default,
        /// How far back the sent messages are read at start, in seconds, so a restart does not
        /// send them again.
        #[arg(long, env = "BIMRIDE_NOTIFICATIONS_REPLAY_SECS")]
        notifications_replay_secs: u64 = default,
    }
}

flags! {
    EtaFlags => bimride_eta::EtaSettings {
        /// Consumer group of the ETA tracker.
        #[arg(id = "eta-group", long = "eta-group", env = "BIMRIDE_ETA_GROUP")]
        group: String = default,
        /// How long a ride's half-joined predictions wait for their outcome after its latest
        /// record, in seconds of event time.
        #[arg(long, env = "BIMRIDE_ETA_LATENESS_SECS")]
        eta_lateness_secs: u64 = default,
        /// How far back a new owner of a partition reads, in seconds, to rebuild its joins and
        /// find the legs already published; `bimride replay` moves the tracker no further back.
        #[arg(long, env = "BIMRIDE_ETA_REPLAY_SECS")]
        eta_replay_secs: u64 = default,
    }
}

/// The ETA tracker on its own, whose city's clock may run faster than event time.
#[derive(Debug, Clone, clap::Args)]
pub struct EtaServiceFlags {
    #[command(flatten)]
    pub eta: EtaFlags,
    /// Seconds of the city's clock per second of event time: the simulator's --speedup where
    /// the city is simulated, 1 for a real one. `bimride up` takes its simulator's.
    #[arg(long, env = "BIMRIDE_ETA_TIME_SCALE",
          default_value_t = bimride_eta::EtaSettings::default().eta_time_scale)]
    pub eta_time_scale: f64,
}

impl From<EtaServiceFlags> for bimride_eta::EtaSettings {
    fn from(flags: EtaServiceFlags) -> Self {
        Self {
            eta_time_scale: flags.eta_time_scale,
            ..flags.eta.into()
        }
    }
}

flags! {
    SimFlags => bimride_simulator::SimSettings {
        /// Drivers in the fleet.
        #[arg(long = "drivers", env = "BIMRIDE_SIM_DRIVERS")]
        drivers: usize = default,
        /// Rider bookings per second through the API; 0 books nothing.
        #[arg(long = "booking-rate", env = "BIMRIDE_SIM_BOOKING_RATE")]
        booking_rate: f64 = default,
        /// Share of offers an idle driver accepts, 0 to 1.
        #[arg(long = "accept-ratio", env = "BIMRIDE_SIM_ACCEPT_RATIO")]
        accept_ratio: f64 = default,
        /// Simulated seconds per real second, so that trips end while you watch.
        #[arg(long = "speedup", env = "BIMRIDE_SIM_SPEEDUP")]
        speedup: f64 = default,
        /// Base URL of the trip API riders book through.
        #[arg(long = "api-url", env = "BIMRIDE_SIM_API_URL")]
        api_url: String = default,
        /// Seed of the simulation's randomness.
        #[arg(long = "sim-seed", env = "BIMRIDE_SIM_SEED")]
        seed: u64 = default,
        /// Prefix of driver and rider ids, unique per simulator.
        #[arg(long = "sim-id", env = "BIMRIDE_SIM_ID")]
        id: String = default,
    }
}

flags! {
    /// How to reach the Kafka cluster; shared by every subcommand.
    KafkaFlags => bimride_kafka::KafkaConfig {
        /// Bootstrap servers of an external cluster. Without it, `bimride up` starts an embedded one.
        #[arg(long = "brokers", env = "BIMRIDE_BROKERS")]
        brokers: Option<String>,
        /// Namespace of the topics: `<namespace>.ride-events` and so on. Deployments, or test
        /// runs, that share a cluster keep apart under different namespaces.
        #[arg(long, env = "BIMRIDE_TOPIC_NAMESPACE")]
        namespace: String = default,
        /// Client id reported to the brokers.
        #[arg(long, env = "BIMRIDE_CLIENT_ID")]
        client_id: String = default,
        /// `plaintext`, `ssl`, `sasl-plaintext` or `sasl-ssl`.
        #[arg(long, env = "BIMRIDE_KAFKA_SECURITY_PROTOCOL")]
        security_protocol: SecurityProtocol = default,
        /// `SCRAM-SHA-256`, `SCRAM-SHA-512` or `PLAIN`.
        #[arg(long, env = "BIMRIDE_KAFKA_SASL_MECHANISM")]
        sasl_mechanism: Option<SaslMechanism>,
        #[arg(long, env = "BIMRIDE_KAFKA_SASL_USERNAME")]
        sasl_username: Option<String>,
        /// Never logged.
        #[arg(long, env = "BIMRIDE_KAFKA_SASL_PASSWORD", hide_env_values = true)]
        sasl_password: Option<String>,
        /// CA bundle that signed the brokers' certificates.
        #[arg(long, env = "BIMRIDE_KAFKA_SSL_CA_LOCATION")]
        ssl_ca_location: Option<PathBuf>,
        /// Client certificate, for mutual TLS.
        #[arg(long, env = "BIMRIDE_KAFKA_SSL_CERTIFICATE_LOCATION")]
        ssl_certificate_location: Option<PathBuf>,
        #[arg(long, env = "BIMRIDE_KAFKA_SSL_KEY_LOCATION")]
        ssl_key_location: Option<PathBuf>,
        /// How long the producer waits to fill a batch.
        #[arg(long, env = "BIMRIDE_KAFKA_LINGER_MS")]
        linger_ms: u32 = default,
        /// `none`, `lz4`, `gzip` or `snappy`.
        #[arg(long, env = "BIMRIDE_KAFKA_COMPRESSION")]
        compression: Compression = default,
        /// Partitions of the partitioned topics; ride requests and driver supply share it.
        #[arg(long, env = "BIMRIDE_PARTITIONS")]
        partitions: i32 = default,
        /// Replication factor of new topics; defaults to min(3, brokers in the cluster).
        #[arg(long, env = "BIMRIDE_REPLICATION_FACTOR")]
        replication_factor: Option<i32>,
        /// Extra librdkafka properties, `key=value`, comma separated.
        #[arg(long = "kafka-property", env = "BIMRIDE_KAFKA_PROPERTIES", value_delimiter = ',')]
        properties: Vec<String>,
    }
}

flags! {
    /// The benchmark's own flags. Scripts call `--rate`, `--duration`, `--drivers` (the city's)
    /// and `--report`; they stay stable.
    BenchFlags => bimride_bench::BenchSettings {
        /// Bookings per second, offered at fixed times whatever the answers' speed.
        #[arg(long)]
        rate: f64 = default,
        /// Seconds of load per step.
        #[arg(long)]
        duration: u64 = default,
        /// Seconds to wait after the load for rides still in progress.
        #[arg(long)]
        settle: u64 = default,
        /// Where to write the JSON report.
        #[arg(long)]
        report: Option<PathBuf>,
        /// With a target, search upward from --rate (×1.5 a step) until the booking-to-assigned
        /// p99 breaks it, and report the highest rate that held.
        #[arg(long = "target-p99-ms")]
        target_p99_ms: Option<f64>,
        /// Most steps of the search.
        #[arg(long)]
        max_steps: u32 = default,
        /// Where to draw latency against load (SVG), from the steps run.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Skip the baselines (for a quick check of the pipeline alone).
        #[arg(long)]
        no_baselines: bool,
    }
}

flags! {
    /// Where ride history is kept.
    DatabaseFlags => bimride_store::Database {
        /// The ride store's database, `postgres://…` or `sqlite:…`. Without it, the store is
        /// SQLite in --data-dir.
        #[arg(long, env = "BIMRIDE_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// Where BimRide keeps its files: the embedded ride store's database.
        #[arg(long, env = "BIMRIDE_DATA_DIR", default_value = bimride_store::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
    }
}

/// The ride store: its database, and its consumer group.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreFlags {
    #[command(flatten)]
    pub database: DatabaseFlags,
    /// Consumer group name of the ride store (it keeps its positions in its database).
    #[arg(id = "store-group", long = "store-group", env = "BIMRIDE_STORE_GROUP",
          default_value_t = bimride_store::StoreSettings::default().group)]
    pub group: String,
}

impl From<StoreFlags> for bimride_store::StoreSettings {
    fn from(flags: StoreFlags) -> Self {
        Self {
            database: flags.database.into(),
            group: flags.group,
        }
    }
}

impl CityFlags {
    /// The city, checked.
    pub fn city(&self) -> Result<bimride_domain::City, bimride_kafka::SettingsError> {
        let city = bimride_domain::City::from(self.clone());
        city.validate()
            .map_err(|e| bimride_kafka::SettingsError::new("city", e.to_string()))?;
        Ok(city)
    }
}

impl HttpFlags {
    /// The limits, checked.
    pub fn limits(&self) -> Result<bimride_telemetry::HttpLimits, bimride_kafka::SettingsError> {
        let limits = bimride_telemetry::HttpLimits::from(self.clone());
        limits
            .check()
            .map_err(|problem| bimride_kafka::SettingsError::new("http", problem))?;
        Ok(limits)
    }
}

impl KafkaFlags {
    /// The cluster settings, checked before anything connects.
    pub fn validated(self) -> Result<bimride_kafka::KafkaConfig, bimride_kafka::SettingsError> {
        let config = bimride_kafka::KafkaConfig::from(self);
        config.validate()?;
        Ok(config)
    }
}
