//! Command-line flags. Every flag has an environment fallback, named in `--help`.

use std::net::SocketAddr;

use bimride_auth::{Authority, Secret};
use bimride_kafka::topics;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::flags::{
    BenchFlags, BillingFlags, CityFlags, DatabaseFlags, DispatchFlags, EtaFlags, EtaServiceFlags,
    HttpFlags, KafkaFlags, NotificationFlags, RateFlags, SimFlags, StoreFlags, SurgeFlags,
};

/// Where the schema registry listens unless told otherwise: `bimride up`'s embedded one, or
/// `bimride registry`.
const REGISTRY_LISTEN: &str = "127.0.0.1:8081";

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
    /// Run the ETA tracker: pickup ETAs and quoted trip durations set against what happened.
    Eta(Standalone<EtaServiceFlags>),
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
    /// Read every topic back and reconcile it: every ride requested, decided and
    /// charged once, at its quote. Exits non-zero on any discrepancy.
    Audit(AuditArgs),
    /// Move a stopped service's consumer group to a point in time, so that it recomputes its
    /// outputs from there when it starts again. Prints the plan; moves only with --execute.
    Replay(ReplayArgs),
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

    /// Run only the city, announcing where it listens on stdout: how a benchmark starts the
    /// process of BimRide's services, never typed by hand.
    #[arg(long, hide = true, conflicts_with = "fleet_brokers")]
    pub bench_city: bool,

    /// Run only the simulated fleet on these brokers: how a benchmark starts its fleet's
    /// process, never typed by hand.
    #[arg(long, hide = true, requires = "fleet_registry")]
    pub fleet_brokers: Option<String>,

    /// The schema registry of the benchmark's city, for its fleet's process.
    #[arg(long, hide = true, requires = "fleet_brokers")]
    pub fleet_registry: Option<String>,
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

    #[command(flatten)]
    pub registry_credential: RegistryCredential,

    /// Where the HTTP front (API, dashboard and metrics) listens.
    #[arg(long, env = "BIMRIDE_HTTP", default_value = bimride_simulator::DEFAULT_HTTP_ADDR)]
    pub http: SocketAddr,

    #[command(flatten)]
    pub access: AccessArgs,

    /// Where the embedded schema registry listens.
    #[arg(
        long,
        env = "BIMRIDE_REGISTRY_LISTEN",
        default_value = REGISTRY_LISTEN
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

    /// The ETA tracker; its clock runs at the simulator's speed-up.
    #[command(flatten)]
    pub eta: EtaFlags,
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

    #[command(flatten)]
    pub registry_credential: RegistryCredential,
}

/// A credential for a registry that asks for basic authentication, given as Confluent's
/// clients take it (`basic.auth.user.info`).
#[derive(Debug, Args)]
pub struct RegistryCredential {
    /// `user:password` for the schema registry.
    #[arg(
        long = "schema-registry-user-info",
        env = "BIMRIDE_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"
    )]
    pub user_info: Option<Secret>,
}

impl RegistryCredential {
    /// The user and password, or an error naming what is wrong (never the password).
    pub fn pair(&self) -> anyhow::Result<Option<(String, String)>> {
        let Some(info) = &self.user_info else {
            return Ok(None);
        };
        match info.expose().split_once(':') {
            Some((user, password)) if !user.is_empty() => {
                Ok(Some((user.to_owned(), password.to_owned())))
            }
            _ => anyhow::bail!("--schema-registry-user-info must be user:password"),
        }
    }
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
                Self::random_secret()
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

    /// A token secret for one run: 64 random hex digits.
    pub fn random_secret() -> Secret {
        Secret::new(format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ))
    }
}

/// The services whose outputs are safe to recompute from an earlier point: billing charges
/// no ride twice, and the ETA tracker observes each leg again with the same figures. Dispatch
/// would decide rides again, and notifications would message riders again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Replayable {
    Billing,
    Eta,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub kafka: KafkaFlags,

    /// The service to replay. Every instance of it must be stopped.
    pub service: Replayable,

    /// Its consumer group, where it runs under another than its default.
    #[arg(long)]
    pub group: Option<String>,

    /// Where to move it: `earliest`, or a time (`2026-12-01T09:00:00Z`); each partition goes
    /// to its first record at or after the time.
    #[arg(long)]
    pub to: bimride_kafka::replay::Point,

    /// Move the group; without it, only print where it would go.
    #[arg(long)]
    pub execute: bool,

    /// How far back billing reads its own charges when it starts, in seconds, as billing
    /// runs with it: billing is not moved further back, where it would charge rides again.
    #[arg(long, env = "BIMRIDE_BILLING_REPLAY_SECS", default_value_t = bimride_billing::BillingSettings::default().billing_replay_secs)]
    pub billing_replay_secs: u64,

    /// How far back the ETA tracker reads its own observations when it starts, in seconds, as
    /// it runs with it: it is not moved further back, where it would publish legs again.
    #[arg(long, env = "BIMRIDE_ETA_REPLAY_SECS", default_value_t = bimride_eta::EtaSettings::default().eta_replay_secs)]
    pub eta_replay_secs: u64,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub kafka: KafkaFlags,

    /// URL of the schema registry.
    #[arg(long = "schema-registry", env = "BIMRIDE_SCHEMA_REGISTRY_URL")]
    pub schema_registry: String,

    #[command(flatten)]
    pub registry_credential: RegistryCredential,

    /// Audit what happened since this long ago (`90m`, `2h`, `7d`) or since this time (RFC
    /// 3339, `2026-12-01T06:00:00Z`): rides requested before it are left out. Without it,
    /// everything the topics retain.
    #[arg(long)]
    pub since: Option<bimride_audit::Since>,

    /// How long after its request a ride must be decided, and after its completion charged,
    /// before its absence counts: younger rides may still be on their way.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub settle: std::time::Duration,

    /// Where the JSON report goes; it names every ride concerned.
    #[arg(long, default_value = "bimride-audit.json")]
    pub report: std::path::PathBuf,

    /// The ride store to check against the topics, where there is one: the database URL
    /// given, or the SQLite file in --data-dir.
    #[command(flatten)]
    pub database: DatabaseFlags,
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
    #[arg(long, env = "BIMRIDE_API_URL", default_value_t = bimride_simulator::default_api_url())]
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

    /// Where the registry listens: loopback unless told otherwise, since writes are open
    /// until authentication is configured.
    #[arg(
        long,
        env = "BIMRIDE_REGISTRY_LISTEN",
        default_value = REGISTRY_LISTEN
    )]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub access: RegistryAccessFlags,

    /// The compacted topic holding the registry's log.
    #[arg(long, env = "BIMRIDE_REGISTRY_TOPIC", default_value = topics::REGISTRY_LOG)]
    pub topic: String,
}

/// Who may use the registry, configured the way Confluent's registry is
/// (`authentication.method`, `authentication.realm`, `authentication.roles`).
#[derive(Debug, Args)]
pub struct RegistryAccessFlags {
    /// `basic` asks clients for HTTP basic authentication.
    #[arg(
        long,
        env = "BIMRIDE_REGISTRY_AUTHENTICATION_METHOD",
        value_enum,
        ignore_case = true,
        default_value = "none"
    )]
    pub authentication_method: AuthenticationMethod,

    /// The users who may authenticate, one `user: password[,role...]` per line: the format
    /// Confluent's registry reads through Jetty's `PropertyFileLoginModule`.
    #[arg(long, env = "BIMRIDE_REGISTRY_USERS_FILE")]
    pub users_file: Option<std::path::PathBuf>,

    /// The realm named in the authentication challenge.
    #[arg(
        long,
        env = "BIMRIDE_REGISTRY_AUTHENTICATION_REALM",
        default_value = "SchemaRegistry"
    )]
    pub authentication_realm: String,

    /// Roles admitted, comma-separated; `*` admits every user in the file.
    #[arg(
        long,
        env = "BIMRIDE_REGISTRY_AUTHENTICATION_ROLES",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub authentication_roles: Vec<String>,

    /// Which requests need a credential: `all`, as Confluent's registry, or `writes` only.
    #[arg(
        long,
        env = "BIMRIDE_REGISTRY_AUTHENTICATE",
        value_enum,
        ignore_case = true,
        default_value = "all"
    )]
    pub authenticate: AuthenticateScope,

    /// Refuse every write, whatever the stored mode: a replica that only serves reads.
    #[arg(long, env = "BIMRIDE_REGISTRY_READ_ONLY")]
    pub read_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthenticationMethod {
    None,
    Basic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthenticateScope {
    All,
    Writes,
}

impl RegistryAccessFlags {
    /// The access these flags describe, with the users file read and checked.
    pub fn access(&self) -> anyhow::Result<bimride_registry::Access> {
        let basic = match (self.authentication_method, &self.users_file) {
            (AuthenticationMethod::None, _) => None,
            (AuthenticationMethod::Basic, None) => {
                anyhow::bail!("basic authentication needs --users-file")
            }
            (AuthenticationMethod::Basic, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                let users = bimride_registry::Users::parse(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                if self
                    .authentication_roles
                    .iter()
                    .all(|r| r.trim().is_empty())
                {
                    anyhow::bail!("--authentication-roles names no role");
                }
                Some(bimride_registry::Basic {
                    users,
                    realm: self.authentication_realm.clone(),
                    roles: self.authentication_roles.clone(),
                    scope: match self.authenticate {
                        AuthenticateScope::All => bimride_registry::Scope::All,
                        AuthenticateScope::Writes => bimride_registry::Scope::Writes,
                    },
                })
            }
        };
        Ok(bimride_registry::Access {
            basic,
            read_only: self.read_only,
        })
    }
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

    fn registry(args: &[&str]) -> RegistryArgs {
        let argv = ["bimride", "registry"].iter().chain(args).copied();
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Registry(registry) => registry,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn the_registry_binds_loopback_and_checks_its_users_file_at_start() {
        let open = registry(&[]);
        assert!(open.listen.ip().is_loopback());
        let access = open.access.access().expect("open access");
        assert!(access.basic.is_none() && !access.read_only);

        let err = registry(&["--authentication-method", "BASIC"])
            .access
            .access()
            .expect_err("no users file");
        assert!(err.to_string().contains("--users-file"), "{err}");

        let file = std::env::temp_dir().join(format!("bimride-users-{}", std::process::id()));
        std::fs::write(&file, "fred hunter2\n").expect("write users");
        let path = file.to_str().expect("utf-8 path");
        let err = registry(&["--authentication-method", "basic", "--users-file", path])
            .access
            .access()
            .expect_err("malformed users file");
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");

        std::fs::write(&file, "fred: hunter2,admin\n").expect("write users");
        let args = ["--authentication-method", "basic", "--users-file", path];
        let args = [&args[..], &["--authenticate", "writes", "--read-only"]].concat();
        let access = registry(&args).access.access().expect("basic access");
        let basic = access.basic.expect("basic");
        assert_eq!(basic.scope, bimride_registry::Scope::Writes);
        assert!(access.read_only);
        assert!(!format!("{basic:?}").contains("hunter2"));
        std::fs::remove_file(&file).expect("remove users file");
    }

    #[test]
    fn a_registry_credential_must_be_user_and_password() {
        let parsed = |info: &str| {
            RegistryCredential {
                user_info: Some(info.parse().expect("secret")),
            }
            .pair()
        };
        assert_eq!(
            parsed("fred:pa:ss").expect("pair"),
            Some(("fred".into(), "pa:ss".into()))
        );
        let err = parsed("fred").expect_err("no password");
        assert!(!err.to_string().contains("fred"), "{err}");
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
