//! `bimride`: every BimRide service as a subcommand, and `bimride up` for the whole city.

mod admin;
mod api;
mod audit;
mod bench;
mod cli;
mod flags;
mod front;
mod provision;
mod registry;
mod replay;
mod services;
mod shutdown;
mod up;

use bimride_billing::BillingSettings;
use bimride_dispatch::DispatchSettings;
use bimride_notifications::NotificationSettings;
use bimride_simulator::SimSettings;
use bimride_store::StoreSettings;
use bimride_surge::SurgeSettings;
use clap::Parser;

// Every record decoded allocates its strings, and every service's small, short-lived
// allocations cross tokio's worker threads: mimalloc's per-thread heaps serve both faster
// than glibc's arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // A benchmark's progress and table are its output; the services' own logs would bury them.
    let filter = match cli.command {
        cli::Command::Bench(_) => "warn,bimride_bench=info",
        _ => "info,rdkafka=warn",
    };
    bimride_telemetry::init_tracing(matches!(cli.log_format, cli::LogFormat::Json), filter);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bimride")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "could not start the runtime");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command));
    // Everything was settled before `run` returned. A Kafka call abandoned past its bound
    // (a transactional call through a coordinator's failover) may never return: do not wait.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "bimride failed");
            std::process::ExitCode::FAILURE
        }
    }
}

/// How long blocking work still running at exit is given.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

async fn run(command: cli::Command) -> anyhow::Result<()> {
    match command {
        cli::Command::Up(args) => up::run(*args).await,
        cli::Command::Api(args) => api::run(args).await,
        cli::Command::Token(args) => admin::token(&args),
        cli::Command::Audit(args) => audit::run(args).await,
        cli::Command::Replay(args) => replay::run(args).await,
        cli::Command::Dlq(args) => admin::dlq(args).await,
        cli::Command::Registry(args) => registry::run(args).await,
        cli::Command::Provision(args) => provision::run(args).await,
        cli::Command::Dispatch(a) => services::standalone::<DispatchSettings, _>(a).await,
        cli::Command::Simulate(a) => {
            let mut sim = SimSettings::from(a.sim);
            sim.authority = a
                .auth_secret
                .as_ref()
                .map(|s| bimride_auth::Authority::new(s, None))
                .transpose()?;
            services::serve(Box::new(sim), a.service, &a.metrics).await
        }
        cli::Command::Billing(a) => services::standalone::<BillingSettings, _>(a).await,
        cli::Command::Notifications(a) => services::standalone::<NotificationSettings, _>(a).await,
        cli::Command::Eta(a) => services::standalone::<bimride_eta::EtaSettings, _>(a).await,
        cli::Command::Surge(a) => services::standalone::<SurgeSettings, _>(a).await,
        cli::Command::Store(a) => services::standalone::<StoreSettings, _>(a).await,
        cli::Command::Migrate(args) => services::migrate(args).await,
        cli::Command::Dashboard(args) => services::dashboard(args).await,
        cli::Command::Bench(args) => bench::run(*args).await,
    }
}
