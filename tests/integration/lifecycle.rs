//! The whole lifecycle on real brokers: rides booked over HTTP are dispatched, driven by the
//! simulated fleet, completed, charged once and notified. A ledger check then reads every
//! topic back and reconciles bookings, assignments, completions, charges and messages.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bimride_billing::{BillingSettings, Delivery};
use bimride_dispatch::DispatchSettings;
use bimride_domain::City;
use bimride_events::{DispatchEvent, FareCharged, Notification, RecipientKind, RideEvent, Topic};
use bimride_notifications::NotificationSettings;
use bimride_simulator::SimSettings;
use bimride_tests::*;
use tokio_util::sync::CancellationToken;

use crate::group;

/// Every topic of the pipeline, read back and indexed by ride.
#[derive(Debug, Default)]
struct Ledger {
    requested: BTreeMap<String, usize>,
    quoted_surge: BTreeMap<String, i32>,
    assigned: BTreeMap<String, Vec<bimride_events::DriverAssigned>>,
    completed: BTreeMap<String, Vec<bimride_events::TripCompleted>>,
    cancelled: BTreeMap<String, String>,
    charges: BTreeMap<String, Vec<FareCharged>>,
    messages: BTreeMap<String, Vec<Notification>>,
}

async fn read<T: bimride_events::TopicValue>(p: &Pipeline, topic: Topic) -> Vec<T> {
    let config = p.config.clone();
    let records = tokio::task::spawn_blocking(move || {
        read_back(&config, config.topics().name(topic), "read_committed")
    })
    .await
    .expect("reader joins");
    decode_all(&p.codec, &records).await
}

impl Ledger {
    async fn read(p: &Pipeline) -> Self {
        let mut l = Ledger::default();
        for e in read::<DispatchEvent>(p, Topic::RideRequests).await {
            if let DispatchEvent::Requested(r) = e {
                l.quoted_surge.insert(r.ride_id.clone(), r.surge_milli);
                *l.requested.entry(r.ride_id).or_default() += 1;
            }
        }
        for e in read::<RideEvent>(p, Topic::RideEvents).await {
            match e {
                RideEvent::DriverAssigned(a) => {
                    l.assigned.entry(a.ride_id.clone()).or_default().push(a)
                }
                RideEvent::TripCompleted(c) => {
                    l.completed.entry(c.ride_id.clone()).or_default().push(c)
                }
                RideEvent::RideCancelled(c) => {
                    l.cancelled.insert(c.ride_id, c.reason);
                }
                _ => {}
            }
        }
        for c in read::<FareCharged>(p, Topic::Payments).await {
            l.charges.entry(c.ride_id.clone()).or_default().push(c);
        }
        for n in read::<Notification>(p, Topic::Notifications).await {
            if let Some(ride) = n.ride_id.clone() {
                l.messages.entry(ride).or_default().push(n);
            }
        }
        l
    }

    /// Every booked ride: requested once, assigned once, completed once, charged once at the
    /// tariff, and every message sent once.
    fn reconcile(&self, booked: &BTreeSet<String>) {
        let once = |m: &BTreeMap<String, usize>, what: &str| {
            let bad: Vec<_> = booked
                .iter()
                .filter(|r| m.get(*r).copied() != Some(1))
                .take(5)
                .collect();
            assert!(bad.is_empty(), "rides not {what} exactly once: {bad:?}");
        };
        let count = |m: &dyn Fn(&str) -> usize| -> BTreeMap<String, usize> {
            booked.iter().map(|r| (r.clone(), m(r))).collect()
        };
        once(&self.requested, "requested");
        once(
            &count(&|r| self.assigned.get(r).map_or(0, Vec::len)),
            "assigned",
        );
        once(
            &count(&|r| self.completed.get(r).map_or(0, Vec::len)),
            "completed",
        );
        once(
            &count(&|r| self.charges.get(r).map_or(0, Vec::len)),
            "charged",
        );
        let cancelled: Vec<_> = booked
            .iter()
            .filter_map(|r| self.cancelled.get(r).map(|why| (r, why)))
            .take(5)
            .collect();
        assert!(
            cancelled.is_empty(),
            "booked rides cancelled: {cancelled:?}"
        );

        let mut revenue = 0;
        for ride in booked {
            let (a, c, charge) = (
                &self.assigned[ride][0],
                &self.completed[ride][0],
                &self.charges[ride][0],
            );
            let product = a.product.expect("dispatch names the product");
            let fare =
                bimride_pricing::rates(product).fare(c.distance_m, c.duration_secs, a.surge_milli);
            assert_eq!(
                charge.fare.amount_minor, fare.total_minor,
                "{ride} charged at the tariff"
            );
            assert_eq!(
                charge.commission.amount_minor + charge.payout.amount_minor,
                charge.fare.amount_minor
            );
            assert_eq!(charge.driver_id.as_deref(), Some(c.driver_id.as_str()));
            revenue += charge.fare.amount_minor;

            let messages = self
                .messages
                .get(ride)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let sent = |kind: RecipientKind, template: &str| {
                messages
                    .iter()
                    .filter(|n| n.recipient_kind == kind && n.template == template)
                    .count()
            };
            for template in [
                "booking_confirmed",
                "driver_arrived",
                "trip_started",
                "receipt",
            ] {
                assert_eq!(
                    sent(RecipientKind::Rider, template),
                    1,
                    "{ride}: rider's {template}"
                );
            }
            for template in ["ride_assigned", "payout"] {
                assert_eq!(
                    sent(RecipientKind::Driver, template),
                    1,
                    "{ride}: driver's {template}"
                );
            }
            assert!(
                sent(RecipientKind::Driver, "new_offer") >= 1,
                "{ride}: an offer message"
            );
            let ids: BTreeSet<_> = messages.iter().map(|n| &n.notification_id).collect();
            assert_eq!(ids.len(), messages.len(), "{ride}: a message sent twice");
        }
        assert!(revenue > 0);
    }
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

async fn lifecycle(broker: Broker, rides: usize, delivery: Delivery) {
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
            tick_ms: 100,
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
    wait_for_charges(&p, &booked, Duration::from_secs(240)).await;
    // Receipts follow the charges; give the last of them a moment.
    tokio::time::sleep(Duration::from_secs(3)).await;

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

    Ledger::read(&p).await.reconcile(&booked);
    stop.cancel();
    join_all(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_rides_are_driven_charged_once_and_notified_on_the_embedded_cluster() {
    lifecycle(Broker::embedded(), 1_000, Delivery::ExactlyOnce).await;
}

/// The same on Apache Kafka: RF 3, min ISR 2, a real transaction and group coordinator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_rides_are_driven_charged_once_and_notified_on_apache_kafka() {
    lifecycle(Broker::kafka(), 1_000, Delivery::ExactlyOnce).await;
}
