//! `bimride bench`: starts the city as `up` does, without simulated riders, and its simulated
//! fleet in a process of its own (this binary again, with the same flags), then drives them.

use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use bimride_bench::fleet::FleetProcess;
use bimride_kafka::service::{self, Context};
use bimride_kafka::{Cleanup, TopicSpec};
use bimride_simulator::SimSettings;

use crate::cli::{BenchArgs, UpArgs};
use crate::{api, shutdown, up};

#[allow(clippy::print_stdout)]
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let BenchArgs {
        mut up,
        bench,
        fleet_brokers,
        fleet_registry,
    } = args;
    if let (Some(brokers), Some(registry)) = (fleet_brokers, fleet_registry) {
        return fleet(up, brokers, &registry).await;
    }
    let bench = bimride_bench::BenchSettings::from(bench);
    bench.validate()?;
    // The benchmark is the only rider, and it runs beside anything else on free ports.
    up.sim.booking_rate = 0.0;
    up.http = "127.0.0.1:0".parse()?;
    up.registry_listen = "127.0.0.1:0".parse()?;
    // The fleet's process drives the drivers.
    let drivers = std::mem::take(&mut up.sim.drivers);
    let speedup = up.sim.speedup;
    let city_model = up.city.city()?;
    let replication = up.kafka.replication_factor.unwrap_or(3);
    let passthrough_topic =
        bimride_events::Topics::new(&up.kafka.namespace).other("bench-passthrough");
    let shutdown = shutdown::on_signal();
    let city = up::start(up, shutdown.clone()).await?;
    city.create_topic(TopicSpec {
        name: passthrough_topic.clone(),
        partitions: 1,
        replication,
        cleanup: Cleanup::Delete,
        retention_ms: Some(10 * 60 * 1000),
    })
    .await?;
    let mut fleet = FleetProcess::spawn(
        &std::env::current_exe()?,
        fleet_args(
            city.kafka.bootstrap_servers(),
            &city.info.schema_registry_url,
        ),
        drivers,
    )?;
    wait_for_drivers(&mut fleet, drivers).await?;

    let target = bimride_bench::Target {
        api_url: format!("http://{}", city.http),
        kafka: city.kafka.clone(),
        codec: std::sync::Arc::clone(&city.codec),
        city: city_model,
        drivers,
        speedup,
        authority: city.authority.clone(),
        passthrough_topic,
    };
    // The benchmark cancels `shutdown` when it is done; one that failed early has not.
    let report = bimride_bench::run(target, bench, fleet, shutdown.clone()).await;
    shutdown.cancel();
    city.stopped().await?;
    let report = report?;
    println!("{report}");
    Ok(())
}

/// This process's own arguments, and where its fleet finds the city.
fn fleet_args(brokers: &str, registry: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    args.extend(["--fleet-brokers", brokers, "--fleet-registry", registry].map(OsString::from));
    args
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
    let pipe = tokio::spawn(bimride_bench::fleet::serve(size, stop.clone()));
    let ran = service::run(Box::new(sim), cx).await;
    stop.cancel();
    let piped = pipe.await;
    ran?;
    Ok(piped??)
}

/// Waits until dispatch knows most drivers, so that the first bookings find a fleet online;
/// fails at once if the fleet's process ends.
async fn wait_for_drivers(fleet: &mut FleetProcess, drivers: usize) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        fleet.alive()?;
        let known: i64 = prometheus::gather()
            .iter()
            .filter(|f| f.name() == "bimride_dispatch_known_drivers")
            .flat_map(|f| {
                f.get_metric()
                    .iter()
                    .map(|m| m.get_gauge().get_value() as i64)
            })
            .sum();
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
