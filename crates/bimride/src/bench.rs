//! `bimride bench`: starts the city as `up` does, without simulated riders, and drives it.

use std::time::Duration;

use bimride_kafka::{Cleanup, TopicSpec};

use crate::cli::BenchArgs;
use crate::{shutdown, up};

#[allow(clippy::print_stdout)]
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let BenchArgs { mut up, bench } = args;
    let bench = bimride_bench::BenchSettings::from(bench);
    bench.validate()?;
    // The benchmark is the only rider, and it runs beside anything else on free ports.
    up.sim.booking_rate = 0.0;
    up.http = "127.0.0.1:0".parse()?;
    up.registry_listen = "127.0.0.1:0".parse()?;
    let drivers = up.sim.drivers;
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
    wait_for_drivers(drivers).await;

    let target = bimride_bench::Target {
        api_url: format!("http://{}", city.http),
        kafka: city.kafka.clone(),
        codec: std::sync::Arc::clone(&city.codec),
        city: city_model,
        drivers,
        authority: city.authority.clone(),
        passthrough_topic,
    };
    // The benchmark cancels `shutdown` when it is done, which stops the city.
    let report = bimride_bench::run(target, bench, shutdown).await;
    city.stopped().await?;
    let report = report?;
    println!("{report}");
    Ok(())
}

/// Waits until dispatch knows most drivers, so that the first bookings find a fleet online.
async fn wait_for_drivers(drivers: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
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
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tracing::warn!(
        drivers,
        "not every driver is online after 30 s; starting anyway"
    );
}
