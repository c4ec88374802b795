//! A living city: a fleet of drivers whose apps publish supply and drive the rides dispatch
//! gives them, and riders who book through the real HTTP API at a steady rate.
//!
//! - [`fleet`]: the drivers, as pure state.
//! - [`SimSettings`], a [`Service`]: the fleet and the riders on Kafka and HTTP.

pub mod fleet;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bimride_domain::City;
use bimride_events::{Millis, RideEvent, TopicValue};
use bimride_kafka::partitioned::{
    self, Assignment, At, Nothing, Options, PartitionedError, Processor, Rejected,
};
use bimride_kafka::producer::InFlight;
use bimride_kafka::service::{Context, Service};
use bimride_kafka::{EventProducer, ProduceError};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio_util::sync::CancellationToken;

use crate::fleet::{Fleet, FleetSettings, Out};

/// Where `bimride up`'s HTTP front (the trip API) listens unless told otherwise.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";

/// The trip API's URL unless told otherwise: the HTTP front at [`DEFAULT_HTTP_ADDR`].
pub fn default_api_url() -> String {
    format!("http://{DEFAULT_HTTP_ADDR}")
}

/// Simulator settings. Each is a flag of `bimride` with an environment fallback, described
/// by `--help`; the defaults here are the flags' defaults.
#[derive(Debug, Clone)]
pub struct SimSettings {
    pub drivers: usize,
    pub booking_rate: f64,
    pub accept_ratio: f64,
    pub speedup: f64,
    pub api_url: String,
    pub seed: u64,
    pub id: String,
    pub authority: Option<bimride_auth::Authority>,
    /// The fleet's size while it runs, set by another part of the process (a benchmark grows
    /// its fleet between steps); the fleet grows to it at each tick and never shrinks.
    pub resize: Option<Arc<AtomicUsize>>,
}

/// The largest fleet a simulator runs.
pub const MAX_DRIVERS: usize = 100_000;

/// Drivers of the simulated fleet by what they are doing: `idle` (free to take an offer),
/// `busy` and `offline`.
pub static DRIVERS: LazyLock<prometheus::IntGaugeVec> = LazyLock::new(|| {
    bimride_telemetry::gauges(
        "bimride_sim_drivers",
        "Drivers of the simulated fleet, by state: idle (free to take an offer), busy, offline.",
        &["state"],
    )
});

impl Default for SimSettings {
    fn default() -> Self {
        Self {
            drivers: 80,
            booking_rate: 2.0,
            accept_ratio: 0.85,
            speedup: 30.0,
            api_url: default_api_url(),
            seed: 7,
            id: "sim".into(),
            authority: None,
            resize: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error(transparent)]
    Consumer(#[from] PartitionedError),
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Publishes the fleet's events, all in flight at once. A location or status update that fails
/// is dropped, as the app's next update supersedes it; a ride event is sent again until it
/// lands, as a driver's app retries until the server acknowledges. Its event id is the same,
/// so a copy that landed twice is recognised downstream.
async fn publish(producer: &EventProducer, out: Vec<Out>) {
    let mut pending: Vec<(InFlight, Option<RideEvent>)> = Vec::with_capacity(out.len());
    for o in out {
        let sent = match &o {
            Out::Supply(e) => producer.send(e).await.map(|d| (d, None)),
            Out::Ride(e) => producer.send(e).await.map(|d| (d, Some(e.clone()))),
        };
        match sent {
            Ok(d) => pending.push(d),
            Err(e) => tracing::warn!(error = %e, "simulator event not sent"),
        }
    }
    let producer = producer.clone();
    tokio::spawn(async move {
        for (delivery, ride) in pending {
            let Err(mut error) = delivery.wait().await else {
                continue;
            };
            let Some(event) = ride else {
                tracing::warn!(%error, "driver update not delivered");
                continue;
            };
            loop {
                tracing::warn!(%error, event_id = event.event_id(), "ride event not delivered; sending it again");
                tokio::time::sleep(RESEND_BACKOFF).await;
                match producer.send_and_wait(&event).await {
                    Ok(_) => break,
                    Err(e) => error = e,
                }
            }
        }
    });
}

const RESEND_BACKOFF: Duration = Duration::from_secs(1);

/// The drivers' apps: each ride event concerning a driver gets the app's answer, published as
/// an app would, outside the consumer's delivery.
struct Apps {
    fleet: Arc<Mutex<Fleet>>,
    producer: EventProducer,
}

impl Processor for Apps {
    type Input = RideEvent;
    type Output = Nothing;

    async fn record(&mut self, _: At, event: RideEvent) -> Result<Vec<Nothing>, Rejected> {
        let out = self
            .fleet
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .on_ride_event(&event);
        publish(&self.producer, out).await;
        Ok(Vec::new())
    }
}

impl Service for SimSettings {
    const NAME: &'static str = "simulator";
    type Error = SimError;

    fn check(&self) -> Result<(), &'static str> {
        if self.drivers > MAX_DRIVERS {
            return Err("at most 100000 drivers");
        }
        if !(self.booking_rate.is_finite() && (0.0..=100_000.0).contains(&self.booking_rate)) {
            return Err("the booking rate must be 0 to 100000 per second");
        }
        if !(0.0..=1.0).contains(&self.accept_ratio) {
            return Err("the accept ratio must be between 0 and 1");
        }
        if !(self.speedup.is_finite() && (0.1..=1000.0).contains(&self.speedup)) {
            return Err("the speedup must be 0.1 to 1000");
        }
        if self.booking_rate > 0.0 && self.authority.is_none() {
            return Err("booking riders need the API's token secret (--auth-secret)");
        }
        if reqwest::Url::parse(&self.api_url).is_err() {
            return Err("the API URL is not a URL");
        }
        if self.id.is_empty()
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err("the simulator id must be letters, digits and dashes");
        }
        Ok(())
    }

    /// Runs the fleet and the riders until the context's token is cancelled.
    async fn run(self, cx: Context) -> Result<(), SimError> {
        let Context {
            kafka,
            codec,
            city,
            shutdown,
        } = cx;
        let producer = EventProducer::new(&kafka, Arc::clone(&codec))?;
        let fleet = Arc::new(Mutex::new(Fleet::new(
            city.clone(),
            FleetSettings {
                drivers: self.drivers,
                accept_ratio: self.accept_ratio,
                speedup: self.speedup,
                seed: self.seed,
            },
            &self.id,
        )));
        tracing::info!(
            drivers = self.drivers,
            booking_rate = self.booking_rate,
            "simulator started"
        );

        // The drivers' apps hear about their rides from the ride events: every partition, from
        // just before the start, with no group whose rebalances could skip a record.
        let mut options = Options::new(
            format!("bimride-sim-{}-{}", self.id, uuid::Uuid::new_v4()),
            "simulator",
        );
        options.assignment = Assignment::Everything {
            since: Millis(Millis::now().0 - 5_000),
        };
        let apps = Apps {
            fleet: Arc::clone(&fleet),
            producer: producer.clone(),
        };
        let apps = partitioned::run(&kafka, codec, apps, options, shutdown.clone());

        let clock = {
            let (fleet, producer, shutdown) =
                (Arc::clone(&fleet), producer.clone(), shutdown.clone());
            let resize = self.resize.clone();
            async move {
                let step = Duration::from_millis(250);
                let mut ticker = tokio::time::interval(step);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        _ = ticker.tick() => {}
                    }
                    let out = {
                        let mut fleet = fleet.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(size) = &resize {
                            fleet.grow(size.load(Ordering::Relaxed));
                        }
                        let out = fleet.tick(step);
                        let (idle, busy) = (fleet.idle(), fleet.busy());
                        DRIVERS.with_label_values(&["idle"]).set(idle as i64);
                        DRIVERS.with_label_values(&["busy"]).set(busy as i64);
                        DRIVERS
                            .with_label_values(&["offline"])
                            .set((fleet.len() - idle - busy) as i64);
                        out
                    };
                    publish(&producer, out).await;
                }
            }
        };

        let riders = riders(city, self.clone(), shutdown.clone());
        let (apps, (), riders) = tokio::join!(apps, clock, riders);
        producer.flush(Duration::from_secs(5)).await?;
        apps?;
        riders?;
        tracing::info!("simulator stopped");
        Ok(())
    }
}

/// Books rides at `booking_rate` through the API, open loop: a slow answer never slows the
/// rate, up to a bound of bookings in flight.
async fn riders(
    city: City,
    settings: SimSettings,
    shutdown: CancellationToken,
) -> Result<(), SimError> {
    let Some(authority) = settings
        .authority
        .clone()
        .filter(|_| settings.booking_rate > 0.0)
    else {
        return Ok(());
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let url = format!("{}/v1/rides", settings.api_url.trim_end_matches('/'));
    let mut rng = SmallRng::seed_from_u64(settings.seed.wrapping_add(1));
    let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / settings.booking_rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
            tracing::warn!("too many bookings in flight; skipping one");
            continue;
        };
        n += 1;
        let pickup = fleet::random_point(&city, &mut rng, 0.7);
        let dropoff = fleet::random_point(&city, &mut rng, 0.9);
        let product = match rng.random_range(0..10) {
            0 => "xl",
            1 | 2 => "comfort",
            _ => "economy",
        };
        let rider = format!("{}-rider-{}", settings.id, rng.random_range(0..5_000));
        let token = match authority.rider_token(&rider, Duration::from_secs(3600)) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "could not sign a rider token");
                continue;
            }
        };
        let body = serde_json::json!({
            "rider_id": rider,
            "pickup": { "lat": pickup.0, "lng": pickup.1 },
            "dropoff": { "lat": dropoff.0, "lng": dropoff.1 },
            "product": product,
        });
        let key = format!("{}-{n}", settings.id);
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match client
                .post(&url)
                .bearer_auth(token.expose())
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::warn!(status = %r.status(), "booking refused"),
                Err(e) => tracing::debug!(error = %e, "booking failed"),
            }
        });
    }
    Ok(())
}
