//! `bimride bench`: BimRide's services (the city as `up` runs it, without simulated riders)
//! and the simulated fleet, each in a process of its own (this binary again, with the same
//! flags), driven by this process, the load generator; so the CPU of each party is read apart.

use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use bimride_bench::child::{self, Announced, ChildProcess};
use bimride_kafka::service::{self, Context};
use bimride_kafka::{Cleanup, TopicSpec};
use bimride_simulator::SimSettings;

use crate::cli::{AccessArgs, BenchArgs, UpArgs};
use crate::{api, shutdown, up};

/// How long the city may take to start: an embedded cluster, the registry, every service.
const CITY_START: Duration = Duration::from_secs(180);

#[allow(clippy::print_stdout)]
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let BenchArgs {
        up,
        bench,
        bench_city,
        fleet_brokers,
        fleet_registry,
    } = args;
    if let (Some(brokers), Some(registry)) = (fleet_brokers, fleet_registry) {
        return fleet(up, brokers, &registry).await;
    }
    if bench_city {
        return city(up).await;
    }
    let bench = bimride_bench::BenchSettings::from(bench);
    bench.validate()?;
    let drivers = up.sim.drivers;
    let speedup = up.sim.speedup;
    let city_model = up.city.city()?;
    let passthrough_topic = passthrough_topic(&up);
    // This process signs the riders' tokens with the secret the city checks them with.
    let secret = up
        .access
        .auth_secret
        .clone()
        .unwrap_or_else(AccessArgs::random_secret);
    let authority = bimride_auth::Authority::new(&secret, None)?;
    let program = std::env::current_exe()?;
    let mut city = ChildProcess::spawn(
        "city",
        &program,
        child_args(["--bench-city"]),
        vec![("BIMRIDE_AUTH_SECRET", secret.expose().to_owned())],
        0,
    )?;
    let at = city.announced(CITY_START).await?;

    let embedded = up.kafka.brokers.is_none();
    let mut flags = up.kafka;
    flags.brokers = Some(at.bootstrap_servers.clone());
    let mut kafka = flags.validated()?;
    if embedded {
        up::on_embedded_brokers(&mut kafka);
    }
    let codec =
        api::registered_codec(&at.schema_registry, up.registry_credential.pair()?, &kafka).await?;
    let mut fleet = ChildProcess::spawn(
        "fleet",
        &program,
        child_args([
            "--fleet-brokers",
            &at.bootstrap_servers,
            "--fleet-registry",
            &at.schema_registry,
        ]),
        Vec::new(),
        drivers,
    )?;
    wait_for_drivers(&mut city, &mut fleet, drivers).await?;

    let target = bimride_bench::Target {
        api_url: at.http,
        kafka,
        codec,
        city: city_model,
        drivers,
        speedup,
        authority,
        passthrough_topic,
    };
    let report = bimride_bench::run(target, bench, city, fleet, shutdown::on_signal()).await?;
    println!("{report}");
    Ok(())
}

/// The one-partition topic of the raw pass-through baseline, in the city's namespace.
fn passthrough_topic(up: &UpArgs) -> String {
    bimride_events::Topics::new(&up.kafka.namespace).other("bench-passthrough")
}

/// This process's own arguments, and `extra`: how a child knows its part.
fn child_args<'a>(extra: impl IntoIterator<Item = &'a str>) -> Vec<OsString> {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    args.extend(extra.into_iter().map(OsString::from));
    args
}

/// The city's process: BimRide's services as `up` runs them, with no simulated riders or
/// drivers, on free ports; it announces where it listens, then serves the pipe until its
/// parent closes it.
async fn city(mut up: UpArgs) -> anyhow::Result<()> {
    up.sim.booking_rate = 0.0;
    up.sim.drivers = 0;
    up.http = "127.0.0.1:0".parse()?;
    up.registry_listen = "127.0.0.1:0".parse()?;
    let replication = up.kafka.replication_factor.unwrap_or(3);
    let passthrough = passthrough_topic(&up);
    let shutdown = shutdown::on_signal();
    let city = up::start(up, shutdown.clone()).await?;
    city.create_topic(TopicSpec {
        name: passthrough,
        partitions: 1,
        replication,
        cleanup: Cleanup::Delete,
        retention_ms: Some(10 * 60 * 1000),
    })
    .await?;
    child::announce(&Announced {
        http: format!("http://{}", city.http),
        schema_registry: city.info.schema_registry_url.clone(),
        bootstrap_servers: city.kafka.bootstrap_servers().to_owned(),
    })
    .await?;
    let served = child::serve(None, shutdown.clone()).await;
    shutdown.cancel();
    city.stopped().await?;
    Ok(served?)
}

/// The fleet's process: the simulated drivers of the parent's city, on its brokers and
/// registry, until the parent closes the pipe.
async fn fleet(up: UpArgs, brokers: String, registry: &str) -> anyhow::Result<()> {
    let embedded = up.kafka.brokers.is_none();
    let mut flags = up.kafka;
    flags.brokers = Some(brokers);
    let mut kafka = flags.validated()?;
    if embedded {
        up::on_embedded_brokers(&mut kafka);
    }
    let codec = api::registered_codec(registry, up.registry_credential.pair()?, &kafka).await?;
    let mut sim = SimSettings::from(up.sim);
    sim.booking_rate = 0.0;
    let size = Arc::new(AtomicUsize::new(sim.drivers));
    sim.resize = Some(Arc::clone(&size));
    let cx = Context {
        kafka,
        codec,
        city: up.city.city()?,
        shutdown: shutdown::on_signal(),
    };
    let stop = cx.shutdown.clone();
    let pipe = tokio::spawn(child::serve(Some(size), stop.clone()));
    let ran = service::run(Box::new(sim), cx).await;
    stop.cancel();
    let piped = pipe.await;
    ran?;
    Ok(piped??)
}

/// Waits until the city's dispatch knows most drivers, so that the first bookings find a fleet
/// online; fails at once if either child's process ends.
async fn wait_for_drivers(
    city: &mut ChildProcess,
    fleet: &mut ChildProcess,
    drivers: usize,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        fleet.alive()?;
        let known = city.reading().await?.known_drivers.unwrap_or(0);
        if known as usize * 10 >= drivers * 9 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tracing::warn!(
        drivers,
        "not every driver is online after 30 s; starting anyway"
    );
    Ok(())
}
