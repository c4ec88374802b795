//! An API restarted over a long history: how soon it answers, and what memory it holds, with
//! 200,000 rides in its store against one ride. Each figure comes from a fresh process that
//! starts the API on the store and reads a ride through HTTP, three times each; the report gives
//! medians, spreads and the ratio of the two.
//!
//! `cargo bench -p bimride --bench restart`: SQLite, and PostgreSQL too where
//! `BIMRIDE_POSTGRES_URL` names a server (`scripts/postgres.sh start` prints one).
//! Apart from the lifecycle records stored, every ride's history is as the store keeps it.

// A benchmark's report is its standard output.
#![allow(clippy::print_stdout)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bimride_api::{Access, ApiParts, ApiState, RateLimit, SurgeBook};
use bimride_auth::{Authority, Secret};
use bimride_codec::{Codec, RegistryConfig};
use bimride_domain::City;
use bimride_events::{
    ChargeKind, DriverArrived, DriverAssigned, FareCharged, GeoPoint, Millis, Money, Product,
    RideEvent, RideRequested, Topic, TripCompleted, TripStarted, Vehicle,
};
use bimride_kafka::partitioned::At;
use bimride_kafka::{EventProducer, KafkaConfig};
use bimride_store::{Change, Store};

/// The baseline, and the history measured. `cargo test` runs a small history once, so the
/// benchmark itself is checked without the wait.
const RIDES: [u32; 2] = [1, 200_000];
const RUNS: usize = 3;
const CHECK_RIDES: [u32; 2] = [1, 1_000];
/// Reads after the first, for the steady latency of a ride read.
const READS: usize = 200;
/// Set in the child processes that measure.
const CHILD: &str = "BIMRIDE_RESTART_CHILD";
const SECRET: &str = "restart-bench-secret-of-32-bytes!";

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    if let Ok(url) = std::env::var(CHILD) {
        return runtime.block_on(serve_once(&url));
    }
    let bench = std::env::args().any(|a| a == "--bench");
    let (sizes, repeats) = if bench {
        (RIDES, RUNS)
    } else {
        (CHECK_RIDES, 1)
    };
    let mut backends = vec![("SQLite", None)];
    if let Ok(url) = std::env::var("BIMRIDE_POSTGRES_URL") {
        backends.push(("PostgreSQL", Some(url)));
    }
    println!(
        "| Store | Rides | First answer, median (spread) | Ride read p50 | Peak RSS, median |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, server) in backends {
        let mut medians = Vec::new();
        for rides in sizes {
            let url = runtime.block_on(fresh_database(server.as_deref()))?;
            let filled = Instant::now();
            runtime.block_on(fill(&url, rides))?;
            eprintln!("{name}: {rides} rides stored in {:.1?}", filled.elapsed());
            let mut runs: Vec<Run> = (0..repeats)
                .map(|_| child(&url))
                .collect::<Result<_, _>>()?;
            runs.sort_by_key(|r| r.first_ms);
            let first: Vec<f64> = runs.iter().map(|r| r.first_ms).map(f64::from).collect();
            let n = runs.len();
            let m = runs[n / 2];
            let mut hwm: Vec<u64> = runs.iter().map(|r| r.hwm_kb).collect();
            hwm.sort_unstable();
            println!(
                "| {name} | {rides} | {} ms ({}–{}) | {:.2} ms | {:.1} MiB |",
                m.first_ms,
                first[0],
                first[n - 1],
                m.read_p50_us as f64 / 1000.0,
                hwm[n / 2] as f64 / 1024.0
            );
            medians.push((m.first_ms, hwm[n / 2]));
        }
        let (small, large) = (medians[0], medians[1]);
        println!(
            "| {name} | ratio | {:.2}× | | {:.2}× |",
            f64::from(large.0) / f64::from(small.0.max(1)),
            large.1 as f64 / small.1 as f64
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, serde::Deserialize)]
struct Run {
    first_ms: u32,
    read_p50_us: u64,
    hwm_kb: u64,
}

fn child(url: &str) -> anyhow::Result<Run> {
    let out = Command::new(std::env::current_exe()?)
        .env(CHILD, url)
        .output()?;
    if !out.status.success() {
        bail!(
            "a measuring run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)?;
    serde_json::from_str(text.trim()).with_context(|| format!("its report: {text}"))
}

/// A fresh database: a SQLite file, or a new database on the PostgreSQL server.
async fn fresh_database(server: Option<&str>) -> anyhow::Result<String> {
    let name = format!("restart_{}", uuid::Uuid::new_v4().simple());
    let Some(server) = server else {
        let file = std::env::temp_dir().join(format!("bimride-{name}.db"));
        return Ok(format!("sqlite:{}?mode=rwc", file.display()));
    };
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(server).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    let (base, _) = server
        .rsplit_once('/')
        .context("the URL names a database")?;
    Ok(format!("{base}/{name}"))
}

fn ride_id(n: u32) -> String {
    format!("ride-{n:08}")
}

fn rider_id(n: u32) -> String {
    format!("rider-{:05}", n % 10_000)
}

/// Stores `rides` completed and charged rides, as the store service would from the topics.
async fn fill(url: &str, rides: u32) -> anyhow::Result<()> {
    let store = Store::connect(url).await?;
    let money = |amount_minor| Money {
        amount_minor,
        currency: "EUR".into(),
    };
    let point = GeoPoint {
        lat: 52.37,
        lng: 4.90,
    };
    let mut batch = Vec::new();
    let mut offset = 0;
    let mut at = |topic| {
        offset += 1;
        At {
            topic,
            partition: 0,
            offset,
        }
    };
    for n in 0..rides {
        let (ride, rider, t) = (ride_id(n), rider_id(n), i64::from(n) * 1_000);
        batch.push((
            at(Topic::RideRequests),
            Some(Change::Requested(RideRequested {
                event_id: format!("{ride}-requested"),
                occurred_at: Millis(t),
                ride_id: ride.clone(),
                rider_id: rider.clone(),
                product: Product::Economy,
                pickup: point,
                dropoff: point,
                region: "86196953fffffff".into(),
                pickup_cell: "881969536dfffff".into(),
                quote: money(1_250),
                surge_milli: 1_000,
                idempotency_key: None,
                quoted_duration_secs: None,
            })),
        ));
        let driver = "driver-1".to_owned();
        let lifecycle = [
            RideEvent::DriverAssigned(DriverAssigned {
                event_id: format!("{ride}-assigned"),
                occurred_at: Millis(t + 5),
                ride_id: ride.clone(),
                rider_id: rider.clone(),
                driver_id: driver.clone(),
                vehicle: Vehicle {
                    plate: "XX-1".into(),
                    model: "Prius".into(),
                    colour: "white".into(),
                },
                pickup_eta_secs: 120,
                region: String::new(),
                product: Some(Product::Economy),
                surge_milli: 1_000,
                distance_eta_secs: None,
                quoted_duration_secs: None,
            }),
            RideEvent::DriverArrived(DriverArrived {
                event_id: format!("{ride}-arrived"),
                occurred_at: Millis(t + 120),
                ride_id: ride.clone(),
                driver_id: driver.clone(),
                rider_id: rider.clone(),
            }),
            RideEvent::TripStarted(TripStarted {
                event_id: format!("{ride}-started"),
                occurred_at: Millis(t + 150),
                ride_id: ride.clone(),
                driver_id: driver.clone(),
                rider_id: rider.clone(),
            }),
            RideEvent::TripCompleted(TripCompleted {
                event_id: format!("{ride}-completed"),
                occurred_at: Millis(t + 750),
                ride_id: ride.clone(),
                rider_id: rider.clone(),
                driver_id: driver.clone(),
                distance_m: 4_000,
                duration_secs: 600,
                dropoff: point,
            }),
        ];
        for e in lifecycle {
            batch.push((at(Topic::RideEvents), Some(Change::Event(e))));
        }
        batch.push((
            at(Topic::Payments),
            Some(Change::Charged(FareCharged {
                event_id: format!("{ride}-charged"),
                occurred_at: Millis(t + 800),
                ride_id: ride,
                rider_id: rider,
                driver_id: Some("driver-1".into()),
                kind: ChargeKind::Trip,
                fare: money(1_500),
                base_minor: 300,
                distance_minor: 700,
                time_minor: 250,
                surge_milli: 1_000,
                commission: money(375),
                payout: money(1_125),
            })),
        ));
        if batch.len() >= 510 {
            store.apply_all("bench", &batch).await?;
            batch.clear();
        }
    }
    store.apply_all("bench", &batch).await?;
    store.close().await;
    Ok(())
}

/// One restart: the API starts on the store, serves, and reads a ride over HTTP; then more
/// reads for the steady latency. Prints its figures as JSON.
async fn serve_once(url: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let store = Store::connect(url).await?;
    // No broker and no registry: reading rides needs neither, and nothing here is booked.
    let kafka = KafkaConfig::for_brokers("127.0.0.1:9");
    let codec = Arc::new(Codec::new(&RegistryConfig::new("http://127.0.0.1:9"))?);
    let authority = Authority::new(&Secret::new(SECRET), None)?;
    let token = authority.rider_token(&rider_id(0), Duration::from_secs(600))?;
    let app = bimride_api::app(ApiState::new(ApiParts {
        producer: EventProducer::new(&kafka, codec)?,
        kafka,
        city: City::amsterdam(),
        store,
        surge: Arc::new(SurgeBook::default()),
        learned: Arc::default(),
        access: Access::new(
            authority,
            RateLimit {
                per_second: std::num::NonZeroU32::MAX,
                burst: std::num::NonZeroU32::MAX,
                ..RateLimit::default()
            },
        ),
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let read = |n: u32| {
        http.get(format!("http://{addr}/v1/rides/{}", ride_id(n)))
            .bearer_auth(token.expose())
            .send()
    };
    let first = read(0).await?;
    let first_ms = u32::try_from(started.elapsed().as_millis())?;
    if first.status() != reqwest::StatusCode::OK {
        bail!("the first read answered {}", first.status());
    }
    let mut times = Vec::with_capacity(READS);
    for _ in 0..READS {
        // Rider 0's rides only: a rider may read no other's.
        let t = Instant::now();
        let answer = read(0).await?;
        times.push(t.elapsed().as_micros() as u64);
        if answer.status() != reqwest::StatusCode::OK {
            bail!("a read answered {}", answer.status());
        }
    }
    times.sort_unstable();
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmHWM in /proc/self/status")?;
    println!(
        "{}",
        serde_json::json!({"first_ms": first_ms, "read_p50_us": times[READS / 2], "hwm_kb": hwm_kb})
    );
    Ok(())
}
