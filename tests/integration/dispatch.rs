//! Rides booked over HTTP reach dispatch, which gives each exactly one driver or cancels it
//! with `no_driver`, also when a dispatch instance leaves mid-run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bimride_dispatch::DispatchSettings;
use bimride_domain::City;
use bimride_events::{CancelledBy, RideEvent};
use bimride_simulator::SimSettings;
use bimride_tests::*;
use tokio_util::sync::CancellationToken;

/// Dispatch of `pipeline`'s group: instances started with it share the regions.
fn settings(pipeline: &Pipeline) -> DispatchSettings {
    DispatchSettings {
        group: pipeline.group("dispatch"),
        offer_timeout_ms: 1_500,
        // Long enough for a loaded machine (two of these cities run at once in CI) to offer
        // every ride a few times before giving up on it.
        max_wait_ms: 15_000,
        tick_ms: 50,
        ..DispatchSettings::default()
    }
}

/// A fleet that answers offers but, at real speed, finishes no trip during a test, so every
/// driver takes at most one ride.
fn fleet(id: &str, drivers: usize) -> SimSettings {
    SimSettings {
        drivers,
        booking_rate: 0.0,
        accept_ratio: 0.9,
        speedup: 1.0,
        id: id.into(),
        ..SimSettings::default()
    }
}

/// What dispatch decided, read back from the ride events.
#[derive(Debug, Default)]
struct Outcomes {
    drivers_of_ride: BTreeMap<String, Vec<String>>,
    rides_of_driver: BTreeMap<String, BTreeSet<String>>,
    no_driver: BTreeMap<String, usize>,
    offers: usize,
    trail: BTreeMap<String, Vec<String>>,
}

impl Outcomes {
    fn add(&mut self, e: &RideEvent) {
        let line = match e {
            RideEvent::OfferSent(o) => format!(
                "{} offer {} to {}",
                o.occurred_at.0, o.offer_id, o.driver_id
            ),
            RideEvent::OfferAnswered(a) => {
                format!("{} answer {:?} {}", a.occurred_at.0, a.answer, a.driver_id)
            }
            RideEvent::DriverAssigned(a) => format!("{} assigned {}", a.occurred_at.0, a.driver_id),
            RideEvent::RideCancelled(c) => format!("{} cancelled {}", c.occurred_at.0, c.reason),
            other => format!(
                "{} {}",
                bimride_events::TopicValue::occurred_at(other).0,
                other.kind()
            ),
        };
        self.trail
            .entry(e.ride_id().to_owned())
            .or_default()
            .push(line);
        match e {
            RideEvent::OfferSent(_) => self.offers += 1,
            RideEvent::DriverAssigned(a) => {
                self.drivers_of_ride
                    .entry(a.ride_id.clone())
                    .or_default()
                    .push(a.driver_id.clone());
                self.rides_of_driver
                    .entry(a.driver_id.clone())
                    .or_default()
                    .insert(a.ride_id.clone());
            }
            RideEvent::RideCancelled(c) if c.by == CancelledBy::System => {
                assert_eq!(c.reason, "no_driver");
                *self.no_driver.entry(c.ride_id.clone()).or_default() += 1;
            }
            _ => {}
        }
    }

    fn settled(&self, ride: &str) -> bool {
        self.drivers_of_ride.contains_key(ride) || self.no_driver.contains_key(ride)
    }

    /// Every ride has exactly one driver or exactly one `no_driver`, and no driver has two.
    fn check(&self, rides: &BTreeSet<String>) {
        let unsettled: Vec<&String> = rides.iter().filter(|r| !self.settled(r)).collect();
        assert!(
            unsettled.is_empty(),
            "{} rides lost, e.g. {:?}",
            unsettled.len(),
            unsettled.first()
        );
        for (ride, drivers) in &self.drivers_of_ride {
            assert_eq!(drivers.len(), 1, "ride {ride} was assigned {drivers:?}");
            assert!(
                !self.no_driver.contains_key(ride),
                "ride {ride} was both assigned and cancelled: {:#?}",
                self.trail.get(ride)
            );
        }
        for (ride, n) in &self.no_driver {
            assert_eq!(*n, 1, "ride {ride} was cancelled {n} times");
        }
        for (driver, rides) in &self.rides_of_driver {
            assert_eq!(rides.len(), 1, "driver {driver} got rides {rides:?}");
        }
    }
}

/// Reads ride events until every ride in `rides` is settled, then a little longer to catch
/// any duplicate decision.
async fn outcomes(pipeline: &Pipeline, rides: &BTreeSet<String>, timeout: Duration) -> Outcomes {
    let mut events = crate::start::<RideEvent>(
        &pipeline.config,
        pipeline.codec.clone(),
        &crate::group("outcomes"),
    );
    let mut seen = Outcomes::default();
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline && !rides.iter().all(|r| seen.settled(r)) {
        for r in events.take(10_000, Duration::from_millis(500)).await {
            seen.add(&r.value);
        }
    }
    for r in events.take(usize::MAX, Duration::from_secs(2)).await {
        seen.add(&r.value);
    }
    for r in events.stop().await {
        seen.add(&r.value);
    }
    seen
}

async fn stop(token: &CancellationToken, tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>) {
    token.cancel();
    join_all(tasks).await;
}

/// The API on a real socket, one dispatch instance and a fleet of `drivers`, on `broker`.
struct TestCity {
    pipeline: Pipeline,
    api: ApiServer,
    services: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestCity {
    async fn start(broker: &Broker, fleet_id: &str, drivers: usize, warm_up: Duration) -> Self {
        let pipeline = Pipeline::start(broker).await;
        pipeline.codec.register_all().await.expect("schemas");
        let city = City::amsterdam();
        let services = CancellationToken::new();
        let mut api = pipeline.serve_api(city.clone(), services.clone()).await;
        let mut tasks = std::mem::take(&mut api.tasks);
        tasks.push(pipeline.spawn(settings(&pipeline), services.clone()));
        tasks.push(pipeline.spawn(fleet(fleet_id, drivers), services.clone()));
        // Let the drivers come online and their apps join before the rush.
        tokio::time::sleep(warm_up).await;
        Self {
            pipeline,
            api,
            services,
            tasks,
        }
    }

    /// Stops every service while the broker is still there.
    async fn stop(self) {
        stop(&self.services, self.tasks).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_rides_each_get_one_driver_or_no_driver() {
    let broker = Broker::embedded();
    // Far fewer drivers than rides: supply runs out on purpose.
    let city = TestCity::start(&broker, "thousand", 60, Duration::from_secs(4)).await;

    let rides = book(&city.api.url, 0, 1_000).await;
    let seen = outcomes(&city.pipeline, &rides, Duration::from_secs(120)).await;
    seen.check(&rides);
    let assigned = seen.drivers_of_ride.len();
    assert!(
        assigned >= 20,
        "only {assigned} rides got a driver from 60 drivers"
    );
    assert!(
        seen.no_driver.len() >= 900,
        "supply ran out, yet only {} no_driver",
        seen.no_driver.len()
    );
    assert!(seen.offers >= assigned, "every assignment follows an offer");

    // The API's view is built from the same events, by a consumer of its own: it may trail
    // the outcomes read above for a moment, never disagree with them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for ride in rides.iter().take(50) {
        let view = loop {
            let view = city.api.store.ride(ride).await.expect("store");
            let decided = view
                .as_ref()
                .is_some_and(|v| v.driver_id.is_some() || v.cancel_reason.is_some());
            if decided || tokio::time::Instant::now() >= deadline {
                break view.expect("the store has the ride");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        match seen.drivers_of_ride.get(ride) {
            Some(drivers) => assert_eq!(view.driver_id.as_ref(), drivers.first(), "{ride}"),
            None => assert_eq!(view.cancel_reason.as_deref(), Some("no_driver"), "{ride}"),
        }
    }
    city.stop().await;
}

async fn two_dispatchers_share_the_regions_and_one_leaves_mid_run(broker: Broker) {
    let leaving = CancellationToken::new();
    let city = TestCity::start(&broker, "pair", 500, Duration::ZERO).await;
    let first = city
        .pipeline
        .spawn(settings(&city.pipeline), leaving.clone());
    tokio::time::sleep(Duration::from_secs(4)).await;

    let mut rides = book(&city.api.url, 0, 150).await;
    // One instance leaves while its rides are in flight; the other takes its regions over.
    stop(&leaving, vec![first]).await;
    rides.extend(book(&city.api.url, 150, 150).await);
    let seen = outcomes(&city.pipeline, &rides, Duration::from_secs(120)).await;
    seen.check(&rides);
    assert!(
        seen.drivers_of_ride.len() >= 200,
        "with 500 drivers most of 300 rides get one, got {}",
        seen.drivers_of_ride.len()
    );
    city.stop().await;
}

on_both_brokers!(
    two_dispatchers_share_the_regions_and_one_leaves_mid_run:
    embedded_two_dispatchers_share_the_regions_and_one_leaves_mid_run,
    kafka_two_dispatchers_share_the_regions_and_one_leaves_mid_run
);
