//! Command-line flags. Every flag has an environment fallback, named in `--help`.

use std::net::SocketAddr;

use bimride_auth::{Authority, Secret};
use bimride_kafka::topics;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::flags::{
    BenchFlags, BillingFlags, CityFlags, DatabaseFlags, DispatchFlags, HttpFlags, KafkaFlags,
    NotificationFlags, RateFlags, SimFlags, StoreFlags, SurgeFlags,
};

#[derive(Debug, Parser)]
#[command(
    name = "bimride",
    version,
    about = "BimRide: a ride-hailing event pipeline on Kafka"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format: human-readable text or JSON lines.
    #[arg(
        long,
        env = "BIMRIDE_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole city in one process: an embedded 3-broker Kafka cluster and schema
    /// registry unless --brokers and --schema-registry point elsewhere.
    Up(Box<UpArgs>),
    /// Run the trip API against a Kafka cluster and schema registry.
    Api(ApiArgs),
    /// Run the schema registry against a Kafka cluster.
    Registry(RegistryArgs),
    /// Create every missing topic on a Kafka cluster, then exit.
    Provision(ProvisionArgs),
    /// Run a dispatch instance: it owns the regions of the partitions it is assigned.
    Dispatch(Standalone<DispatchFlags>),
    /// Run a simulated fleet of drivers, and riders booking through the API.
    Simulate(Box<SimulateArgs>),
    /// Run billing: completed trips and late cancellations are charged exactly once.
    Billing(Standalone<BillingFlags>),
    /// Run notifications: riders and drivers are told about every step of their rides.
    Notifications(Standalone<NotificationFlags>),
    /// Print a rider's bearer token, signed with the API's secret.
    Token(TokenArgs),
    /// List, inspect and replay dead letters through the API's admin endpoints.
    Dlq(DlqArgs),
    /// Run the surge detector: multipliers per cell from demand and supply.
    Surge(Standalone<SurgeFlags>),
    /// Run the ride store: ride history from the ride topics into PostgreSQL or SQLite.
    Store(Standalone<StoreFlags>),
    /// Bring the ride store's database schema up to date, then exit.
    Migrate(MigrateArgs),
    /// Serve the live dashboard: the city map, counters and event feed, pushed as events flow.
    Dashboard(DashboardArgs),
    /// Benchmark the whole city: an open-loop booking load through the API, per-stage
    /// latency, throughput and CPU, with same-run Kafka and HTTP baselines.
    Bench(Box<BenchArgs>),
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The city under test, as `up` runs it; its simulated riders stay home.
    #[command(flatten)]
    pub up: UpArgs,

    #[command(flatten)]
    pub bench: BenchFlags,
}

/// Where a service without an HTTP API of its own serves `/metrics` and `/healthz`.
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    #[arg(
        long = "metrics-listen",
        env = "BIMRIDE_METRICS_LISTEN",
        default_value = "0.0.0.0:9464"
    )]
    pub metrics_listen: SocketAddr,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub limits: HttpFlags,

    #[command(flatten)]
    pub kafka: KafkaFlags,

    #[command(flatten)]
    pub city: CityFlags,

    /// URL of an external schema registry. Without it, one is started on --registry-listen.
    #[arg(long = "schema-registry", env = "BIMRIDE_SCHEMA_REGISTRY_URL")]
    pub schema_registry: Option<String>,

    /// Where the HTTP front (API, dashboard and metrics) listens.
    #[arg(long, env = "BIMRIDE_HTTP", default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,

    #[command(flatten)]
    pub access: AccessArgs,

    /// Where the embedded schema registry listens.
    #[arg(
        long,
        env = "BIMRIDE_REGISTRY_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub registry_listen: SocketAddr,

    /// The compacted topic holding the embedded registry's log.
    #[arg(long, env = "BIMRIDE_REGISTRY_TOPIC", default_value = topics::REGISTRY_LOG)]
    pub registry_topic: String,

    /// Brokers of the embedded cluster.
    #[arg(long, env = "BIMRIDE_EMBEDDED_BROKERS", default_value_t = 3,
          value_parser = clap::value_parser!(i32).range(1..=9))]
    pub embedded_brokers: i32,

    #[command(flatten)]
    pub dispatch: DispatchFlags,

    /// The simulated city; its riders book through this process's own API.
    #[command(flatten)]
    pub sim: SimFlags,

    #[command(flatten)]
    pub billing: BillingFlags,

    #[command(flatten)]
    pub notifications: NotificationFlags,

    #[command(flatten)]
    pub surge: SurgeFlags,

    #[command(flatten)]
    pub store: StoreFlags,
}

/// What every service run on its own needs: the cluster, the city and the registry.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    #[command(flatten)]
    pub kafka: KafkaFlags,

    #[command(flatten)]
    pub city: CityFlags,

    /// URL of the schema registry.
    #[arg(long = "schema-registry", env = "BIMRIDE_SCHEMA_REGISTRY_URL")]
    pub schema_registry: String,
}

/// A service run on its own: where it connects, its settings, and where it serves `/metrics`.
#[derive(Debug, Args)]
pub struct Standalone<F: Args> {
    #[command(flatten)]
    pub service: ServiceArgs,

    #[command(flatten)]
    pub settings: F,

    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseFlags,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub service: ServiceArgs,

    /// The API's token secret, to sign the simulated riders' tokens; needed to book.
    #[arg(long, env = "BIMRIDE_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<Secret>,

    #[command(flatten)]
    pub sim: SimFlags,

    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub limits: HttpFlags,

    #[command(flatten)]
    pub service: ServiceArgs,

    /// Where the API listens.
    #[arg(long, env = "BIMRIDE_HTTP", default_value = "0.0.0.0:8080")]
    pub http: SocketAddr,

    #[command(flatten)]
    pub access: AccessArgs,

    /// The ride store the API reads rides from and claims idempotency keys in.
    #[command(flatten)]
    pub database: DatabaseFlags,
}

/// How the API checks callers.
#[derive(Debug, Args)]
pub struct AccessArgs {
    /// Secret signing rider tokens (HS256), at least 32 bytes. `bimride up` makes a random
    /// one for the run when it is unset; `bimride api` refuses to start without it.
    #[arg(long, env = "BIMRIDE_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<Secret>,

    /// The admin credential for /v1/admin (tokens, dead letters), at least 16 bytes. Admin
    /// endpoints refuse every call when it is unset.
    #[arg(long, env = "BIMRIDE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,

    #[command(flatten)]
    pub rate: RateFlags,
}

impl AccessArgs {
    /// The authority and the API's access rules; with `random_secret`, an unset secret is
    /// replaced by a random one for this run.
    pub fn access(&self, random_secret: bool) -> anyhow::Result<(Authority, bimride_api::Access)> {
        let secret = match (&self.auth_secret, random_secret) {
            (Some(s), _) => s.clone(),
            (None, true) => {
                tracing::warn!(
                    "no BIMRIDE_AUTH_SECRET: signing rider tokens with a random secret for this run"
                );
                Secret::new(format!(
                    "{}{}",
                    uuid::Uuid::new_v4().simple(),
                    uuid::Uuid::new_v4().simple()
                ))
            }
            (None, false) => anyhow::bail!(
                "no token secret: pass --auth-secret or set BIMRIDE_AUTH_SECRET (32 bytes or more)"
            ),
        };
        let authority = Authority::new(&secret, self.admin_token.clone())?;
        let limit = bimride_api::RateLimit::from(self.rate.clone());
        Ok((
            authority.clone(),
            bimride_api::Access::new(authority, limit),
        ))
    }
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The API's token secret.
    #[arg(long, env = "BIMRIDE_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Secret,

    /// The rider the token names.
    #[arg(long)]
    pub rider: String,

    /// How long the token is valid, in seconds.
    #[arg(long, default_value_t = 86_400)]
    pub ttl_secs: u64,
}

#[derive(Debug, Args)]
pub struct DlqArgs {
    /// The trip API, whose admin endpoints serve the dead letters.
    #[arg(long, env = "BIMRIDE_API_URL", default_value = "http://127.0.0.1:8080")]
    pub api: String,

    /// The admin credential.
    #[arg(long, env = "BIMRIDE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Secret,

    #[command(subcommand)]
    pub action: DlqAction,
}

#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// Dead letters per topic and reason; with a topic, every letter of it.
    List {
        /// A dead-letter topic, such as bimride.ride-events.dlq.
        topic: Option<String>,
    },
    /// One dead letter, with its headers and original bytes.
    Show {
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// Write letters back to their source topics, once per source record.
    Replay {
        topic: String,
        /// Only letters with this reason.
        #[arg(long)]
        reason: Option<String>,
        /// Only letters from this source topic.
        #[arg(long)]
        source_topic: Option<String>,
        /// Only letters at or after this offset of the dead-letter topic.
        #[arg(long)]
        from_offset: Option<i64>,
    },
}

#[derive(Debug, Args)]
pub struct DashboardArgs {
    #[command(flatten)]
    pub limits: HttpFlags,

    #[command(flatten)]
    pub service: ServiceArgs,

    /// Where the dashboard (and its /metrics) listens.
    #[arg(long, env = "BIMRIDE_HTTP", default_value = "0.0.0.0:8090")]
    pub http: SocketAddr,

    /// The ride store, whose totals the dashboard shows.
    #[command(flatten)]
    pub database: DatabaseFlags,
}

#[derive(Debug, Args)]
pub struct RegistryArgs {
    #[command(flatten)]
    pub limits: HttpFlags,

    #[command(flatten)]
    pub kafka: KafkaFlags,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    /// Where the registry listens.
    #[arg(long, env = "BIMRIDE_REGISTRY_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,

    /// The compacted topic holding the registry's log.
    #[arg(long, env = "BIMRIDE_REGISTRY_TOPIC", default_value = topics::REGISTRY_LOG)]
    pub topic: String,
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    #[command(flatten)]
    pub kafka: KafkaFlags,

    /// The compacted topic holding the schema registry's log.
    #[arg(long, env = "BIMRIDE_REGISTRY_TOPIC", default_value = topics::REGISTRY_LOG)]
    pub registry_topic: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use bimride_domain::City;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    fn up(args: &[&str]) -> UpArgs {
        let argv = ["bimride", "up"].iter().chain(args).copied();
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Up(up) => *up,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn the_default_city_is_amsterdam_and_a_bad_one_is_refused() {
        let city = up(&[]).city.city().expect("default city");
        assert_eq!(city, City::amsterdam());
        let err = up(&["--city-radius-km=-3"])
            .city
            .city()
            .expect_err("negative radius");
        assert!(err.to_string().contains("radius"), "{err}");
        let err = up(&["--region-resolution", "9"])
            .city
            .city()
            .expect_err("finer regions");
        assert!(err.to_string().contains("resolution"), "{err}");
        let paris = up(&[
            "--city",
            "paris",
            "--city-lat",
            "48.8566",
            "--city-lng",
            "2.3522",
        ]);
        assert_eq!(paris.city.city().expect("paris").name, "paris");
    }
}
