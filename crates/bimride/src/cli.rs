//! Command-line flags. Every flag has an environment fallback, named in `--help`.

use std::net::SocketAddr;

use bimride_kafka::KafkaConfig;
use clap::{Args, Parser, Subcommand, ValueEnum};

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
    Up(UpArgs),
    /// Run the trip API against a Kafka cluster and schema registry.
    Api(ApiArgs),
    /// Run the schema registry against a Kafka cluster.
    Registry(RegistryArgs),
    /// Create every missing topic on a Kafka cluster, then exit.
    Provision(ProvisionArgs),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub kafka: KafkaConfig,

    /// URL of an external schema registry. Without it, one is started on --registry-listen.
    #[arg(long = "schema-registry", env = "BIMRIDE_SCHEMA_REGISTRY_URL")]
    pub schema_registry: Option<String>,

    /// Where the HTTP front (API, dashboard and metrics) listens.
    #[arg(long, env = "BIMRIDE_HTTP", default_value = "127.0.0.1:8080")]
    pub http: SocketAddr,

    /// Where the embedded schema registry listens.
    #[arg(
        long,
        env = "BIMRIDE_REGISTRY_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub registry_listen: SocketAddr,

    /// Brokers of the embedded cluster.
    #[arg(long, env = "BIMRIDE_EMBEDDED_BROKERS", default_value_t = 3,
          value_parser = clap::value_parser!(i32).range(1..=9))]
    pub embedded_brokers: i32,
}

#[derive(Debug, Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub kafka: KafkaConfig,

    /// URL of the schema registry.
    #[arg(long = "schema-registry", env = "BIMRIDE_SCHEMA_REGISTRY_URL")]
    pub schema_registry: String,

    /// Where the API listens.
    #[arg(long, env = "BIMRIDE_HTTP", default_value = "0.0.0.0:8080")]
    pub http: SocketAddr,
}

#[derive(Debug, Args)]
pub struct RegistryArgs {
    #[command(flatten)]
    pub kafka: KafkaConfig,

    /// Where the registry listens.
    #[arg(long, env = "BIMRIDE_REGISTRY_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,

    /// The compacted topic holding the registry's log.
    #[arg(long, env = "BIMRIDE_REGISTRY_TOPIC", default_value = "_schemas")]
    pub topic: String,
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    #[command(flatten)]
    pub kafka: KafkaConfig,
}

pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BIMRIDE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
