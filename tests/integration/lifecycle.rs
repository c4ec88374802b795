//! The whole lifecycle on real brokers: rides booked over HTTP are dispatched, driven by the
//! simulated fleet, completed, charged once and notified. `bimride audit`'s reconciliation
//! then reads every topic back and checks bookings, assignments, completions, charges and
//! messages.

use std::collections::BTreeSet;
use std::time::Duration;

use bimride_billing::{BillingSettings, Guarantee};
use bimride_dispatch::DispatchSettings;
use bimride_domain::City;
use bimride_events::{FareCharged, Topic};
use bimride_notifications::NotificationSettings;
use bimride_simulator::SimSettings;
use bimride_tests::*;
use tokio_util::sync::CancellationToken;

use crate::group;

async fn read<T: bimride_events::TopicValue>(p: &Pipeline, topic: Topic) -> Vec<T> {
    let config = p.config.clone();
    let records = tokio::task::spawn_blocking(move || {
        read_back(&config, config.topics().name(topic), "read_committed")
    })
    .await
    .expect("reader joins");
    decode_all(&p.codec, &records).await
}

/// Waits until every booked ride has a committed charge.
async fn wait_for_charges(p: &Pipeline, booked: &BTreeSet<String>, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let charged: BTreeSet<String> = read::<FareCharged>(p, Topic::Payments)
            .await
            .into_iter()
            .map(|c| c.ride_id)
            .collect();
        let missing = booked.difference(&charged).count();
        if missing == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing} of {} rides never charged",
            booked.len()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn lifecycle(broker: Broker, rides: usize, delivery: Guarantee) {
    let p = Pipeline::start(&broker).await;
    let stop = CancellationToken::new();
    let city = City::amsterdam();
    let api = p.serve_api(city.clone(), stop.clone()).await;
    let mut tasks = api.tasks;
    tasks.push(p.spawn(
        DispatchSettings {
            group: group("dispatch"),
            offer_timeout_ms: 3_000,
            max_wait_ms: 240_000,
            replay_window_secs: 600,
            supply_replay_secs: 120,
            tick_ms: 100,
            ..DispatchSettings::default()
        },
        stop.clone(),
    ));
    tasks.push(p.spawn(
        SimSettings {
            drivers: 300,
            booking_rate: 0.0,
            accept_ratio: 1.0,
            speedup: 200.0,
            id: "e2e".into(),
            ..SimSettings::default()
        },
        stop.clone(),
    ));
    tasks.push(p.spawn(
        BillingSettings {
            group: group("billing"),
            delivery,
            transactional_id: group("billing-txn"),
            ..BillingSettings::default()
        },
        stop.clone(),
    ));
    tasks.push(p.spawn(
        NotificationSettings {
            group: group("notifications"),
            ..NotificationSettings::default()
        },
        stop.clone(),
    ));
    // Let the fleet come online before the rush.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // An open-loop stream of riders, 50 a second, rather than one burst.
    let mut booked = BTreeSet::new();
    for first in (0..rides).step_by(25) {
        booked.extend(book(&api.url, first, 25.min(rides - first)).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Receipts follow the charges: the audit below waits for the last of them.
    wait_for_charges(&p, &booked, Duration::from_secs(240)).await;

    // The ride store follows the topics: a ride's view shows its fare and receipt.
    let some = booked.iter().next().expect("a ride");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let view = api.store.ride(some).await.expect("store");
        let done = view.as_ref().is_some_and(|v| {
            v.fare.is_some() && v.notifications.iter().any(|n| n.template == "receipt")
        });
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ride's view shows its fare and its receipt: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The audit operators run, over this run's topics: nothing to report, and every booked
    // ride was completed, charged at its quote and notified.
    let report = p.audit(booked.len()).await;
    for check in [
        "requested once",
        "decided once",
        "completed rides charged at their quote",
        "every message sent once",
    ] {
        let checked = report.check(check).map_or(0, |c| c.checked);
        assert_eq!(checked, booked.len(), "{check}: {}", report.table());
    }
    stop.cancel();
    join_all(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_rides_are_driven_charged_once_and_notified_on_the_embedded_cluster() {
    lifecycle(Broker::embedded(), 1_000, Guarantee::ExactlyOnce).await;
}

/// The same on Apache Kafka: RF 3, min ISR 2, a real transaction and group coordinator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_rides_are_driven_charged_once_and_notified_on_apache_kafka() {
    lifecycle(Broker::kafka(), 1_000, Guarantee::ExactlyOnce).await;
}
