//! `bimride bench`: an open-loop, fixed-rate booking load through the real HTTP API, with the
//! latency of every stage of the booked rides (assigned, completed, charged, notified), the
//! throughput and CPU it cost by party (BimRide's services, the load generator, the simulated
//! fleet, and the brokers where they run apart), and
//! baselines measured in the same run, before the load and three times each: raw rdkafka
//! pass-through on the same brokers, and a bare axum handler beside the booking POST.

pub mod baseline;
pub mod child;
pub mod cpu;
pub mod report;
pub mod track;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bimride_codec::Codec;
use bimride_domain::City;
use bimride_events::{ChargeKind, FareCharged, Notification, RideEvent};
use bimride_kafka::KafkaConfig;
use bimride_kafka::SettingsError;
use bimride_kafka::partitioned::Options;
use bimride_kafka::projection::Projection;
// Points in the service area, denser towards the centre, as the simulated riders pick them.
use bimride_simulator::fleet::random_point;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use tokio_util::sync::CancellationToken;

use crate::baseline::Trials;
use crate::child::{ChildError, ChildProcess};
use crate::report::{Baselines, Report, Step};
use crate::track::{Percentiles, Stage, Tracker, histogram};

/// The benchmark's own settings, flags of `bimride bench`; the defaults here are the flags'.
#[derive(Debug, Clone)]
pub struct BenchSettings {
    pub rate: f64,
    pub duration: u64,
    pub settle: u64,
    pub report: Option<PathBuf>,
    pub target_p99_ms: Option<f64>,
    pub max_steps: u32,
    pub plot: Option<PathBuf>,
    pub no_baselines: bool,
}

impl Default for BenchSettings {
    fn default() -> Self {
        Self {
            rate: 200.0,
            duration: 20,
            settle: 30,
            report: None,
            target_p99_ms: None,
            max_steps: 8,
            plot: None,
            no_baselines: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("plotting: {0}")]
    Plot(String),
    #[error("warm-up: {0}")]
    WarmUp(&'static str),
    #[error(transparent)]
    Child(#[from] ChildError),
    #[error("the bare HTTP baseline could not listen: {0}")]
    Listen(std::io::Error),
}

impl BenchSettings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |problem| Err(SettingsError::new("bench", problem));
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 100_000.0) {
            return invalid("--rate must be in (0, 100000]");
        }
        if !(1..=3_600).contains(&self.duration) {
            return invalid("--duration must be 1 to 3600 seconds");
        }
        if self
            .target_p99_ms
            .is_some_and(|t| !(t.is_finite() && t > 0.0))
        {
            return invalid("--target-p99-ms must be positive");
        }
        if !(1..=30).contains(&self.max_steps) {
            return invalid("--max-steps must be 1 to 30");
        }
        Ok(())
    }
}

/// What the benchmark drives: a running city's API and the cluster under it.
#[derive(Debug, Clone)]
pub struct Target {
    pub api_url: String,
    pub kafka: KafkaConfig,
    pub codec: Arc<Codec>,
    pub city: City,
    /// The fewest drivers the fleet has; it grows beyond for rates that need more.
    pub drivers: usize,
    /// Simulated seconds per real second.
    pub speedup: f64,
    /// Signs the riders' tokens.
    pub authority: bimride_auth::Authority,
    /// A one-partition topic, created by the caller, for the pass-through baseline.
    pub passthrough_topic: String,
}

/// Runs the baselines, then the steps, and writes the report. BimRide's services run in
/// `city`'s process and the simulated fleet in `fleet`'s, so that the CPU of each is measured
/// apart from this process, the load generator.
pub async fn run(
    target: Target,
    settings: BenchSettings,
    mut city: ChildProcess,
    mut fleet: ChildProcess,
    shutdown: CancellationToken,
) -> Result<Report, BenchError> {
    settings.validate()?;
    let tracker = Arc::new(Tracker::default());
    let feeds = tokio::spawn(feed(
        target.kafka.clone(),
        Arc::clone(&target.codec),
        Arc::clone(&tracker),
        shutdown.clone(),
    ));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .timeout(Duration::from_secs(10))
        .build()?;

    warm_up(&target, &client, &tracker).await?;
    // An embedded cluster listens in the city's process: its brokers are not apart.
    let brokers = cpu::Brokers::find(target.kafka.bootstrap_servers(), city.pid());
    tracing::info!(
        processes = brokers.processes(),
        "brokers found for CPU accounting (0: they run in the city's process)"
    );
    // Baselines first, on a quiet city, so that no step's backlog slows them.
    let measured = if settings.no_baselines {
        None
    } else {
        Some(baselines(&target, &client, &tracker, settings.settle).await?)
    };

    let mut steps = Vec::new();
    let mut rate = settings.rate;
    let mut sustained = None;
    for n in 0..settings.max_steps {
        if shutdown.is_cancelled() {
            break;
        }
        let parties = Parties {
            brokers: &brokers,
            city: &mut city,
            fleet: &mut fleet,
        };
        let step = run_step(&target, &settings, &client, &tracker, parties, rate, n).await?;
        // Without a target nothing is held: a rate is only ever held against one.
        let held = settings.target_p99_ms.is_some_and(|t| step.holds(t));
        tracing::info!(
            rate,
            held,
            accepted = step.accepted,
            assigned = step.outcomes.assigned,
            cancelled = step.outcomes.cancelled,
            undecided = step.outcomes.undecided,
            p99_assigned_ms = step.latency.assigned.p99_ms,
            "step done"
        );
        steps.push(step);
        if settings.target_p99_ms.is_none() {
            break;
        }
        if !held {
            break;
        }
        sustained = Some(rate);
        rate *= 1.5;
    }

    // Pipeline efficiency is read at the highest rate that held (the last step without a target).
    let best = match sustained {
        Some(r) => steps.iter().rfind(|s| s.rate == r),
        None => steps.last(),
    };
    let baselines = measured.map(|b| b.with_pipeline(best));
    shutdown.cancel();
    let _ = feeds.await;
    fleet.stop().await;
    city.stop().await;

    let report = Report::new(&target, &settings, steps, sustained, baselines);
    if let Some(path) = &settings.report {
        report.write_json(path)?;
    }
    if let Some(path) = &settings.plot {
        report::plot(&report, path)?;
    }
    Ok(report)
}

/// Books a few rides and waits until their receipts are seen: every feed has joined its group
/// and every service has warmed up, so the first step does not measure start-up.
async fn warm_up(
    target: &Target,
    client: &reqwest::Client,
    tracker: &Tracker,
) -> Result<(), BenchError> {
    const RIDES: u64 = 5;
    let mut rng = SmallRng::seed_from_u64(0);
    let url = format!("{}/v1/rides", target.api_url);
    for n in 0..RIDES {
        let (token, body) = booking(target, &mut rng, n, u32::MAX);
        let answer = client
            .post(&url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json::<serde_json::Value>()
            .await?;
        if let Some(ride) = answer["ride_id"].as_str() {
            tracker.accepted(ride, Instant::now());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let (_, counts) = tracker.counts();
        if counts.get(&Stage::Notified).copied().unwrap_or(0) >= RIDES {
            tracing::info!("warmed up: the first rides were booked, driven, charged and told");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(BenchError::WarmUp(
        "rides were not completed within 2 minutes; are there drivers?",
    ))
}

/// Marks each benchmarked ride's stages as their events arrive.
async fn feed(
    kafka: KafkaConfig,
    codec: Arc<Codec>,
    tracker: Arc<Tracker>,
    shutdown: CancellationToken,
) {
    let group = format!("bimride-bench-{}", uuid::Uuid::new_v4());
    let fed = Projection::new(tracker)
        .on(|tracker, e: &RideEvent| {
            let stage = match e {
                RideEvent::OfferSent(_) => Stage::Offered,
                RideEvent::DriverAssigned(_) => Stage::Assigned,
                RideEvent::TripCompleted(_) => Stage::Completed,
                RideEvent::RideCancelled(c) => {
                    tracker.cancelled(&c.ride_id);
                    return;
                }
                _ => return,
            };
            tracker.reached(e.ride_id(), stage, Instant::now());
        })
        .on(|tracker, c: &FareCharged| {
            if c.kind == ChargeKind::Trip {
                tracker.reached(&c.ride_id, Stage::Charged, Instant::now());
            }
        })
        .on(|tracker, n: &Notification| {
            if n.template == "receipt"
                && let Some(ride) = &n.ride_id
            {
                tracker.reached(ride, Stage::Notified, Instant::now());
            }
        })
        .run(&kafka, codec, Options::new(group, "bench"), shutdown)
        .await;
    if let Err(e) = fed {
        tracing::error!(error = %e, "benchmark feed failed");
    }
}

/// Records produced by every service of this process so far, by topic.
pub(crate) fn produced_by_topic() -> BTreeMap<String, f64> {
    let mut by_topic = BTreeMap::new();
    for family in prometheus::gather()
        .iter()
        .filter(|f| f.name() == "bimride_records_produced_total")
    {
        for m in family.get_metric() {
            let topic = m
                .get_label()
                .iter()
                .find(|l| l.name() == "topic")
                .map_or("", |l| l.value());
            *by_topic.entry(topic.to_owned()).or_default() += m.get_counter().get_value();
        }
    }
    by_topic
}

/// Records produced so far by this process, the city and the fleet, by topic, and the fewest
/// drivers idle since the previous reading.
async fn produced_everywhere(
    city: &mut ChildProcess,
    fleet: &mut ChildProcess,
) -> Result<(BTreeMap<String, f64>, Option<u64>), ChildError> {
    let mut by_topic = produced_by_topic();
    let fleet = fleet.reading().await?;
    let city = city.reading().await?;
    for (topic, n) in city.produced.into_iter().chain(fleet.produced) {
        *by_topic.entry(topic).or_default() += n;
    }
    Ok((by_topic, fleet.fewest_idle))
}

/// Simulated seconds a ride holds its driver: the drive to the pickup, boarding and the trip.
const RIDE_HOLD_SIM_SECS: f64 = 1_800.0;
/// Real seconds a ride holds its driver besides: the offer, its answer and the assignment.
const RIDE_HOLD_REAL_SECS: f64 = 0.5;
/// Drivers per driver that rides hold at once: spread over the city, a pickup needs one near.
const FLEET_HEADROOM: f64 = 3.0;

/// Drivers a fleet needs so that bookings at `rate` a second never run out of them, at
/// `speedup` simulated seconds per real second; at most the simulator's largest fleet, which
/// the step then reports running out.
pub fn fleet_for(rate: f64, speedup: f64) -> usize {
    let drivers = rate * (RIDE_HOLD_SIM_SECS / speedup + RIDE_HOLD_REAL_SECS) * FLEET_HEADROOM;
    (drivers.ceil() as usize).min(bimride_simulator::MAX_DRIVERS)
}

/// Records produced between `before` and `after`, per accepted ride, by topic.
fn per_ride(
    before: &BTreeMap<String, f64>,
    after: BTreeMap<String, f64>,
    rides: u64,
) -> BTreeMap<String, f64> {
    if rides == 0 {
        return BTreeMap::new();
    }
    after
        .into_iter()
        .map(|(topic, n)| {
            let made = n - before.get(&topic).copied().unwrap_or(0.0);
            (topic, made / rides as f64)
        })
        .filter(|(_, n)| *n > 0.0)
        .collect()
}

/// A booking by a rider of its own, and that rider's bearer token.
fn booking(target: &Target, rng: &mut SmallRng, n: u64, step: u32) -> (String, serde_json::Value) {
    let pickup = random_point(&target.city, rng, 0.8);
    let dropoff = random_point(&target.city, rng, 0.8);
    let rider = format!("bench-{step}-{n}");
    let token = target
        .authority
        .rider_token(&rider, Duration::from_secs(3600))
        .map(|t| t.expose().to_owned())
        .unwrap_or_default();
    let body = serde_json::json!({
        "rider_id": rider,
        "pickup": {"lat": pickup.0, "lng": pickup.1},
        "dropoff": {"lat": dropoff.0, "lng": dropoff.1},
        "product": "economy",
    });
    (token, body)
}

async fn run_step(
    target: &Target,
    settings: &BenchSettings,
    client: &reqwest::Client,
    tracker: &Arc<Tracker>,
    parties: Parties<'_>,
    rate: f64,
    step: u32,
) -> Result<Step, BenchError> {
    let Parties {
        brokers,
        city,
        fleet,
    } = parties;
    tracker.clear();
    let total = (rate * settings.duration as f64).round() as u64;
    let url = format!("{}/v1/rides", target.api_url);
    let http = Arc::new(Mutex::new(histogram()));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // The fleet grows before the load, so that drivers never run out at this rate.
    let drivers = fleet_for(rate, target.speedup).max(target.drivers);
    if drivers > fleet.drivers() {
        fleet.grow(drivers).await?;
        tracing::info!(rate, drivers, "the fleet grew for this rate");
        tokio::time::sleep(FLEET_ONLINE).await;
    }
    let load_before = cpu::own_seconds();
    let city_before = city.seconds();
    let brokers_before = brokers.usage();
    let fleet_before = fleet.seconds();
    let cpu_since = Instant::now();
    let (by_topic_before, _) = produced_everywhere(city, fleet).await?;
    let produced_before: f64 = by_topic_before.values().sum();
    let mut rng = SmallRng::seed_from_u64(u64::from(step) + 1);
    let started = Instant::now();
    let mut last_report = started;
    let mut requests = Vec::with_capacity(total as usize);
    for n in 0..total {
        // Open loop: the n-th booking leaves at its scheduled time, answered or not.
        let due = started + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let (token, body) = booking(target, &mut rng, n, step);
        let (client, url, mark) = (client.clone(), url.clone(), Arc::clone(tracker));
        let (http, errors) = (Arc::clone(&http), Arc::clone(&errors));
        requests.push(tokio::spawn(async move {
            let sent = Instant::now();
            let answer = client
                .post(&url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await;
            let ride = match answer {
                Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => r
                    .json::<serde_json::Value>()
                    .await
                    .ok()
                    .and_then(|v| v["ride_id"].as_str().map(str::to_owned)),
                _ => None,
            };
            let answered = Instant::now();
            match ride {
                Some(ride) => {
                    mark.accepted(&ride, answered);
                    let us = answered.duration_since(sent).as_micros() as u64;
                    http.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .saturating_record(us.max(1));
                }
                None => {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }));
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            progress(tracker.as_ref(), rate, n + 1, total, started);
        }
    }
    for r in requests {
        let _ = r.await;
    }
    let load_secs = started.elapsed().as_secs_f64();
    let (produced_by_now, fewest_idle) = produced_everywhere(city, fleet).await?;
    let produced = produced_by_now.values().sum::<f64>() - produced_before;
    // Rides still driving finish within the settle time; stop early once all are told.
    let settle_until = Instant::now() + Duration::from_secs(settings.settle);
    while Instant::now() < settle_until {
        let (accepted, counts) = tracker.counts();
        if counts.get(&Stage::Notified).copied().unwrap_or(0) >= accepted {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        progress(tracker.as_ref(), rate, total, total, started);
    }
    let load_cpu = cpu::own_seconds() - load_before;
    let city_cpu = city
        .seconds()
        .zip(city_before)
        .map(|(a, b)| a - b)
        .ok_or(ChildError::Ended("city", None))?;
    let fleet_cpu = fleet.seconds().zip(fleet_before).map(|(a, b)| a - b);
    let broker_cpu = brokers
        .usage()
        .zip(brokers_before)
        .map(|(after, before)| after.since(&before));
    let (accepted, _) = tracker.counts();
    // Over the load and its settling: a ride's later records (completion, charge, receipt)
    // come after the load ends.
    let (produced_after, _) = produced_everywhere(city, fleet).await?;
    let records_per_ride = per_ride(&by_topic_before, produced_after, accepted);
    let outcomes = tracker.outcomes();
    let latencies = tracker.latencies();
    let http = Percentiles::of(&http.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(Step::new(
        rate,
        load_secs,
        total,
        accepted,
        errors.load(std::sync::atomic::Ordering::Relaxed),
        outcomes,
        http,
        &latencies,
        report::Cpu {
            window_secs: cpu_since.elapsed().as_secs_f64(),
            services: city_cpu,
            load: load_cpu,
            fleet: fleet_cpu,
            brokers: broker_cpu,
        },
        produced / load_secs,
        records_per_ride,
        report::FleetUse {
            drivers: fleet.drivers(),
            fewest_idle,
        },
    ))
}

/// Time for new drivers to come online and reach dispatch.
const FLEET_ONLINE: Duration = Duration::from_secs(2);

/// The processes besides this one whose CPU a step reads.
struct Parties<'a> {
    brokers: &'a cpu::Brokers,
    city: &'a mut ChildProcess,
    fleet: &'a mut ChildProcess,
}

#[allow(clippy::print_stderr)]
fn progress(tracker: &Tracker, rate: f64, sent: u64, total: u64, started: Instant) {
    let (accepted, counts) = tracker.counts();
    let at = |s: Stage| counts.get(&s).copied().unwrap_or(0);
    eprintln!(
        "[{:>5.1}s] rate {rate:.0}/s · sent {sent}/{total} · accepted {accepted} · assigned {} · completed {} · charged {} · notified {}",
        started.elapsed().as_secs_f64(),
        at(Stage::Assigned),
        at(Stage::Completed),
        at(Stage::Charged),
        at(Stage::Notified),
    );
}

const HTTP_CLIENTS: usize = 128;
/// Each baseline is measured this many times; the report gives the median and the range.
pub const TRIALS: usize = 3;
const PASS_THROUGH_RECORDS: u64 = 200_000;
const HTTP_WINDOW: Duration = Duration::from_secs(2);

/// The same-run baselines, each [`TRIALS`] times, before any load: raw Kafka pass-through, and
/// the bare handler and the booking POST in turns, so that a drift of the machine reaches both.
/// After each booking trial its bookings are let through the city (decided, and driven to their
/// receipts, or the settle time passed), so that the next trial, and the first step, start on a
/// quiet city: a bare trial measured while the city works through a flood would flatter the
/// ratio.
async fn baselines(
    target: &Target,
    client: &reqwest::Client,
    tracker: &Arc<Tracker>,
    settle: u64,
) -> Result<Baselines, BenchError> {
    let mut pass_through = Vec::with_capacity(TRIALS);
    for trial in 1..=TRIALS {
        tracing::info!(trial, "measuring the raw Kafka pass-through");
        pass_through.push(
            baseline::kafka_pass_through(
                &target.kafka,
                &target.passthrough_topic,
                PASS_THROUGH_RECORDS,
                200,
            )
            .await?,
        );
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(BenchError::Listen)?;
    let bare_url = format!(
        "http://{}/v1/rides",
        listener.local_addr().map_err(BenchError::Listen)?
    );
    let stop = CancellationToken::new();
    let server = {
        let stop = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, baseline::bare_router())
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        })
    };
    let booking_url = format!("{}/v1/rides", target.api_url);
    let (mut bare, mut bookings) = (Vec::new(), Vec::new());
    tracker.clear();
    for trial in 1..=TRIALS {
        tracing::info!(
            trial,
            "measuring the bare HTTP handler and the booking POST"
        );
        let shared = target.clone();
        let body = move |n: u64| {
            let mut rng = SmallRng::seed_from_u64(n);
            booking(&shared, &mut rng, n, 90 + trial as u32)
        };
        // Enough clients in flight that each endpoint is measured at its throughput, not at
        // one request's latency: a booking is answered once Kafka has it.
        bare.push(
            baseline::http_rate(
                client,
                &bare_url,
                body.clone(),
                |_| {},
                HTTP_CLIENTS,
                HTTP_WINDOW,
            )
            .await,
        );
        let mark = Arc::clone(tracker);
        let accepted = move |ride: &str| mark.accepted(ride, Instant::now());
        bookings.push(
            baseline::http_rate(
                client,
                &booking_url,
                body,
                accepted,
                HTTP_CLIENTS,
                HTTP_WINDOW,
            )
            .await,
        );
        quieten(tracker, settle).await;
    }
    stop.cancel();
    let _ = server.await;

    let bare = Trials::of(bare, |r| r.requests_per_s);
    let bookings = Trials::of(bookings, |r| r.requests_per_s);
    Ok(Baselines {
        trials: TRIALS,
        kafka_pass_through: Trials::of(pass_through, |p| p.records_per_s),
        pipeline_records_per_s: 0.0,
        pipeline_efficiency: 0.0,
        http_ratio: bookings.median / bare.median,
        bare_http: bare,
        booking_http: bookings,
    })
}

/// Waits until every ride the tracker holds is cancelled or told of its receipt, or `settle`
/// seconds have passed.
async fn quieten(tracker: &Tracker, settle: u64) {
    let until = Instant::now() + Duration::from_secs(settle);
    loop {
        let (accepted, counts) = tracker.counts();
        let done =
            counts.get(&Stage::Notified).copied().unwrap_or(0) + tracker.outcomes().cancelled;
        if done >= accepted {
            tracing::info!(
                rides = accepted,
                "the baselines' bookings went through the city"
            );
            return;
        }
        if Instant::now() >= until {
            tracing::warn!(
                rides = accepted,
                open = accepted - done,
                "the baselines' bookings are still in the city when the load starts"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_grows_with_the_rate_and_with_slower_trips() {
        // At 1000 simulated seconds a second a ride holds a driver 2.3 s: three times the
        // drivers those rides hold at once.
        assert_eq!(fleet_for(25.0, 1_000.0), 173);
        assert_eq!(fleet_for(100.0, 1_000.0), 690);
        assert!(fleet_for(25.0, 100.0) > 5 * fleet_for(25.0, 1_000.0));
        assert_eq!(fleet_for(0.5, 1_000.0), 4);
        assert_eq!(fleet_for(10_000.0, 30.0), bimride_simulator::MAX_DRIVERS);
    }
}
