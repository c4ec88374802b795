//! The ETA tracker on both brokers: each ride's pickup ETA and quoted trip duration set
//! against what happened, whatever order the records come in, once per leg; and a tracker
//! that stops between a ride's assignment and its arrival rebuilds the half-made join from
//! the log when it starts again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bimride_eta::EtaSettings;
use bimride_events::{
    DriverArrived, DriverAssigned, EtaLeg, EtaObserved, GeoPoint, Millis, OfferSent, Product,
    RideEvent, Topic, TripCompleted, TripStarted, Vehicle,
};
use bimride_tests::*;
use tokio_util::sync::CancellationToken;

const SCALE: f64 = 10.0;
const PICKUP: GeoPoint = GeoPoint {
    lat: 52.37,
    lng: 4.89,
};
const DROPOFF: GeoPoint = GeoPoint {
    lat: 52.35,
    lng: 4.92,
};

/// Ride `n`'s lifecycle: assigned at 0 with an ETA of 120 s (90 s from distance alone, and
/// a quoted 700 s trip, for even `n`), arrived after `10 + n` s of
/// event time, and driven for `30 + n` s.
fn trip(prefix: &str, n: i64) -> Vec<RideEvent> {
    let t0 = Millis::now().0 - 600_000;
    let at = |secs: i64| Millis(t0 + secs * 1_000);
    let ride = format!("{prefix}-{n}");
    let id = |step: &str| format!("{ride}-{step}");
    vec![
        OfferSent {
            event_id: id("offer"),
            occurred_at: at(0),
            ride_id: ride.clone(),
            offer_id: id("o"),
            driver_id: id("driver"),
            attempt: 1,
            pickup_eta_secs: 120,
            expires_at: at(10),
            region: "861969537ffffff".into(),
            pickup: Some(PICKUP),
            dropoff: Some(DROPOFF),
        }
        .into(),
        DriverAssigned {
            event_id: id("assigned"),
            occurred_at: at(1),
            ride_id: ride.clone(),
            rider_id: id("rider"),
            driver_id: id("driver"),
            vehicle: Vehicle {
                plate: "p".into(),
                model: "m".into(),
                colour: "c".into(),
            },
            pickup_eta_secs: 120,
            region: "861969537ffffff".into(),
            product: Some(Product::Economy),
            surge_milli: 1_000,
            // Odd rides were assigned before assignments carried their distance-only ETA and
            // quoted duration.
            distance_eta_secs: (n % 2 == 0).then_some(90),
            quoted_duration_secs: (n % 2 == 0).then_some(700),
        }
        .into(),
        DriverArrived {
            event_id: id("arrived"),
            occurred_at: at(11 + n),
            ride_id: ride.clone(),
            driver_id: id("driver"),
            rider_id: id("rider"),
        }
        .into(),
        TripStarted {
            event_id: id("started"),
            occurred_at: at(20 + n),
            ride_id: ride.clone(),
            driver_id: id("driver"),
            rider_id: id("rider"),
        }
        .into(),
        TripCompleted {
            event_id: id("completed"),
            occurred_at: at(50 + 2 * n),
            ride_id: ride.clone(),
            rider_id: id("rider"),
            driver_id: id("driver"),
            distance_m: 3_000,
            duration_secs: 300,
            dropoff: DROPOFF,
        }
        .into(),
    ]
}

/// Reads the ETA topic until it holds `n` observations, or a minute has passed.
async fn observations(p: &Pipeline, n: usize) -> Vec<EtaObserved> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let config = p.config.clone();
        let records = tokio::task::spawn_blocking(move || {
            read_back(&config, config.topics().name(Topic::Eta), "read_committed")
        })
        .await
        .expect("reader joins");
        let seen: Vec<EtaObserved> = decode_all(&p.codec, &records).await;
        if seen.len() >= n || tokio::time::Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn legs_are_observed_once_in_any_order_and_across_a_restart(broker: Broker) {
    let p = Pipeline::start(&broker).await;
    let settings = EtaSettings {
        group: p.group("eta"),
        eta_time_scale: SCALE,
        ..EtaSettings::default()
    };
    let rides = 8;
    // Half the rides in order, half backwards: each ride's records share its partition.
    let mut events = Vec::new();
    for n in 0..rides {
        let mut trip = trip("eta", n);
        if n % 2 == 1 {
            trip.reverse();
        }
        events.extend(trip);
    }
    p.producer.send_all(&events).await.expect("published");
    let stop = CancellationToken::new();
    let tracker = p.spawn(settings.clone(), stop.clone());
    let first = observations(&p, 2 * rides as usize).await;
    assert_eq!(first.len(), 2 * rides as usize, "{first:?}");

    // Stopped between a ride's assignment and its arrival: the join is rebuilt from the log.
    let late = trip("late", 5);
    p.producer.send_all(&late[..2]).await.expect("published");
    // The tracker takes them, and commits them when it stops: the restart then reads past
    // them, so only the rebuild can bring them back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    join_all(vec![tracker]).await;
    assert!(
        p.committed_to_the_end(&settings.group, Topic::RideEvents)
            .await,
        "the tracker committed every ride event before it stopped"
    );
    p.producer.send_all(&late[2..]).await.expect("published");
    let stop = CancellationToken::new();
    let tracker = p.spawn(settings, stop.clone());
    let all = observations(&p, 2 * rides as usize + 2).await;
    stop.cancel();
    join_all(vec![tracker]).await;

    let mut by_id: BTreeMap<&str, &EtaObserved> = BTreeMap::new();
    for o in &all {
        assert!(
            by_id.insert(o.event_id.as_str(), o).is_none(),
            "{} observed twice",
            o.event_id
        );
    }
    assert_eq!(by_id.len(), 2 * rides as usize + 2, "{by_id:?}");
    let quoted = bimride_pricing::quote(
        Product::Economy,
        (PICKUP.lat, PICKUP.lng),
        (DROPOFF.lat, DROPOFF.lng),
        1_000,
    )
    .duration_s;
    for (prefix, n) in (0..rides).map(|n| ("eta", n)).chain([("late", 5)]) {
        let pickup = by_id[format!("{prefix}-{n}/pickup").as_str()];
        assert_eq!(pickup.leg, EtaLeg::Pickup);
        assert_eq!(pickup.predicted_secs, 120);
        let even = n % 2 == 0;
        assert_eq!(pickup.baseline_secs, Some(if even { 90 } else { 120 }));
        assert_eq!(pickup.actual_secs, (10 + n) * SCALE as i64, "{pickup:?}");
        let zone = bimride_domain::City::amsterdam()
            .locate(PICKUP.lat, PICKUP.lng)
            .expect("in the city");
        assert_eq!(pickup.region, zone.region.to_string());
        assert_eq!(pickup.pickup_cell, zone.cell.to_string());
        let trip = by_id[format!("{prefix}-{n}/trip").as_str()];
        assert_eq!(trip.leg, EtaLeg::Trip);
        assert_eq!(trip.predicted_secs, if even { 700 } else { quoted });
        assert_eq!(trip.baseline_secs, Some(quoted));
        assert_eq!(trip.actual_secs, (30 + n) * SCALE as i64, "{trip:?}");
    }
}

on_both_brokers!(
    legs_are_observed_once_in_any_order_and_across_a_restart:
        embedded_eta_legs_are_observed_once_in_any_order_and_across_a_restart,
        kafka_eta_legs_are_observed_once_in_any_order_and_across_a_restart
);

/// ETA observations this process's learned-correction feeds have taken, all legs.
fn learned_taken() -> u64 {
    counter_total("bimride_eta_corrections_learned_total", Some("taken")) as u64
}

/// Observations that say a leg beginning in `cell` took `times` its distance-only estimate,
/// at every hour of the day.
fn learned(leg: EtaLeg, zone: &bimride_domain::Zone, times: i64) -> Vec<EtaObserved> {
    (0..24)
        .map(|hour| EtaObserved {
            event_id: format!("taught-{leg:?}-{hour}"),
            occurred_at: Millis::now(),
            ride_id: format!("taught-{hour}"),
            leg,
            region: zone.region.to_string(),
            pickup_cell: zone.cell.to_string(),
            hour,
            predicted_secs: 100,
            actual_secs: 100 * times,
            baseline_secs: Some(100),
        })
        .collect()
}

/// The loop closed on Apache Kafka: observations on `bimride.eta` say pickups near the Dam take
/// three times, and trips twice, their distance-only estimates. The API's quote then doubles
/// its duration, and dispatch gives a driver's pickup ETA tripled, keeping the distance-only one
/// on the assignment for the tracker to learn from. Dispatch feeds its own corrections, as
/// `bimride dispatch` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_learned_corrections_reach_quotes_and_dispatch() {
    learned_corrections_reach_quotes_and_dispatch(false).await;
}

/// The same, with dispatch learning from the API's feed, as the services of `bimride up` share
/// one: every observation is learned once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_learned_corrections_reach_dispatch_through_a_shared_feed() {
    learned_corrections_reach_quotes_and_dispatch(true).await;
}

async fn learned_corrections_reach_quotes_and_dispatch(shared: bool) {
    use bimride_events::{
        DriverStatus, DriverStatusChanged, OfferAnswer, OfferAnswered, SupplyEvent,
    };

    let p = Pipeline::start(&Broker::kafka()).await;
    p.codec.register_all().await.expect("schemas");
    let learned_before = learned_taken();
    let city = bimride_domain::City::amsterdam();
    let (pickup, dropoff) = ((52.3731, 4.8922), (52.3584, 4.8811));
    let zone = city.locate(pickup.0, pickup.1).expect("in the city");
    let stop = CancellationToken::new();
    let mut api = p.serve_api(city.clone(), stop.clone()).await;
    let mut tasks = std::mem::take(&mut api.tasks);
    tasks.push(p.spawn(
        bimride_dispatch::DispatchSettings {
            group: p.group("dispatch"),
            offer_timeout_ms: 10_000,
            max_wait_ms: 30_000,
            tick_ms: 50,
            learned: shared.then(|| Arc::clone(&api.learned)),
            ..Default::default()
        },
        stop.clone(),
    ));
    let mut taught = learned(EtaLeg::Pickup, &zone, 3);
    taught.extend(learned(EtaLeg::Trip, &zone, 2));
    p.producer.send_all(&taught).await.expect("published");
    // Every feed, the API's and dispatch's unless it shares the API's, learns every observation.
    let feeds = if shared { 1 } else { 2 };
    let want = learned_before + feeds * taught.len() as u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while learned_taken() < want && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        learned_taken(),
        want,
        "the feeds learned each observation once"
    );

    // The API learns from the topic: its quote's duration doubles.
    let plain = bimride_pricing::quote(Product::Economy, pickup, dropoff, 1_000).duration_s;
    let http = reqwest::Client::new();
    let url = format!(
        "{}/v1/quote?pickup_lat={}&pickup_lng={}&dropoff_lat={}&dropoff_lng={}&product=economy",
        api.url, pickup.0, pickup.1, dropoff.0, dropoff.1
    );
    let body: serde_json::Value = http
        .get(&url)
        .send()
        .await
        .expect("quote answered")
        .json()
        .await
        .expect("json");
    assert_eq!(
        body["duration_s"].as_i64(),
        Some(2 * plain),
        "the quote learned nothing"
    );

    // One driver, 600 m north of the pickup, in the pickup's region.
    let at = (pickup.0 + 600.0 / 111_320.0, pickup.1);
    let driver_zone = city.locate(at.0, at.1).expect("in the city");
    assert_eq!(driver_zone.region, zone.region);
    let driver = "learning-driver";
    let status: SupplyEvent = DriverStatusChanged {
        event_id: "learning-status".into(),
        occurred_at: Millis::now(),
        driver_id: driver.into(),
        status: DriverStatus::Available,
        position: GeoPoint {
            lat: at.0,
            lng: at.1,
        },
        region: zone.region.to_string(),
        product: Product::Economy,
        vehicle: Vehicle {
            plate: "p".into(),
            model: "m".into(),
            colour: "c".into(),
        },
    }
    .into();
    p.producer.send_all(&[status]).await.expect("published");
    let mut events = crate::start::<RideEvent>(&p.config, p.codec.clone(), &p.group("learning"));
    let response = http
        .post(format!("{}/v1/rides", api.url))
        .bearer_auth(rider_token("rider-learning"))
        .json(&serde_json::json!({
            "rider_id": "rider-learning",
            "pickup": {"lat": pickup.0, "lng": pickup.1},
            "dropoff": {"lat": dropoff.0, "lng": dropoff.1},
            "product": "economy",
        }))
        .send()
        .await
        .expect("booking answered");
    assert_eq!(response.status(), 202);
    let booked: serde_json::Value = response.json().await.expect("json");
    assert_eq!(booked["quote"]["duration_s"].as_i64(), Some(2 * plain));
    let ride = booked["ride_id"].as_str().expect("a ride id").to_owned();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (mut offered, mut assigned) = (None, None);
    while assigned.is_none() && tokio::time::Instant::now() < deadline {
        for r in events.take(100, Duration::from_millis(500)).await {
            match r.value {
                RideEvent::OfferSent(o) if o.ride_id == ride => {
                    let answer: SupplyEvent = OfferAnswered {
                        event_id: format!("{}-answer", o.offer_id),
                        occurred_at: Millis::now(),
                        ride_id: o.ride_id.clone(),
                        offer_id: o.offer_id.clone(),
                        driver_id: o.driver_id.clone(),
                        answer: OfferAnswer::Accepted,
                        region: o.region.clone(),
                    }
                    .into();
                    p.producer.send_all(&[answer]).await.expect("published");
                    offered = Some(o);
                }
                RideEvent::DriverAssigned(a) if a.ride_id == ride => assigned = Some(a),
                _ => {}
            }
        }
    }
    events.stop().await;
    let offered = offered.expect("the driver was offered the ride");
    let assigned = assigned.expect("the driver was assigned");
    let distance_eta =
        bimride_domain::matching::eta_secs(bimride_domain::City::distance_m(at, pickup));
    assert_eq!(assigned.distance_eta_secs, Some(distance_eta));
    assert_eq!(assigned.pickup_eta_secs, 3 * distance_eta, "{assigned:?}");
    assert_eq!(offered.pickup_eta_secs, assigned.pickup_eta_secs);
    assert_eq!(assigned.quoted_duration_secs, Some(2 * plain));
    stop.cancel();
    join_all(tasks).await;
}
