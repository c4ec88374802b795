//! The ETA tracker on both brokers: each ride's pickup ETA and quoted trip duration set
//! against what happened, whatever order the records come in, once per leg; and a tracker
//! that stops between a ride's assignment and its arrival rebuilds the half-made join from
//! the log when it starts again.

use std::collections::BTreeMap;
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

/// Ride `n`'s lifecycle: assigned at 0 with an ETA of 120 s, arrived after `10 + n` s of
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
        assert_eq!(pickup.actual_secs, (10 + n) * SCALE as i64, "{pickup:?}");
        let zone = bimride_domain::City::amsterdam()
            .locate(PICKUP.lat, PICKUP.lng)
            .expect("in the city");
        assert_eq!(pickup.region, zone.region.to_string());
        assert_eq!(pickup.pickup_cell, zone.cell.to_string());
        let trip = by_id[format!("{prefix}-{n}/trip").as_str()];
        assert_eq!(trip.leg, EtaLeg::Trip);
        assert_eq!(trip.predicted_secs, quoted);
        assert_eq!(trip.actual_secs, (30 + n) * SCALE as i64, "{trip:?}");
    }
}

on_both_brokers!(
    legs_are_observed_once_in_any_order_and_across_a_restart:
        embedded_eta_legs_are_observed_once_in_any_order_and_across_a_restart,
        kafka_eta_legs_are_observed_once_in_any_order_and_across_a_restart
);
