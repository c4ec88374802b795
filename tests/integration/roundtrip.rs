//! Every event type is produced with Avro and consumed back intact.

use std::time::Duration;

use bimride_events::*;
use bimride_tests::*;

async fn every_event_roundtrips(broker: Broker) {
    let Pipeline {
        config,
        codec,
        producer,
        ..
    } = &Pipeline::start(&broker).await;
    codec.register_all().await.expect("schemas register");

    let requests: Vec<DispatchEvent> = (0..3).map(|n| ride_requested(n).into()).collect();
    let rides: Vec<RideEvent> = (0..3).flat_map(ride_events).collect();
    let supply: Vec<SupplyEvent> = (0..3).flat_map(supply_events).collect();
    let surges: Vec<SurgeUpdated> = (0..3).map(surge_updated).collect();
    let fares: Vec<FareCharged> = (0..3).map(fare_charged).collect();
    let notes: Vec<Notification> = (0..3).map(notification).collect();
    producer
        .send_all(&requests)
        .await
        .expect("requests delivered");
    producer
        .send_all(&rides)
        .await
        .expect("ride events delivered");
    producer.send_all(&supply).await.expect("supply delivered");
    producer.send_all(&surges).await.expect("surge delivered");
    producer.send_all(&fares).await.expect("fares delivered");
    producer
        .send_all(&notes)
        .await
        .expect("notifications delivered");

    let wait = Duration::from_secs(60);
    macro_rules! check {
        ($ty:ty, $sent:expr, $name:literal) => {{
            let got = crate::consume::<$ty>(
                &config,
                codec.clone(),
                &crate::group($name),
                $sent.len(),
                wait,
            )
            .await;
            let mut got: Vec<$ty> = got.into_iter().map(|r| r.value).collect();
            let mut sent = $sent.clone();
            got.sort_by(|a, b| a.event_id().cmp(b.event_id()));
            sent.sort_by(|a, b| a.event_id().cmp(b.event_id()));
            assert_eq!(got, sent, "{} came back different", $name);
        }};
    }
    check!(DispatchEvent, requests, "requests");
    check!(RideEvent, rides, "rides");
    check!(SupplyEvent, supply, "supply");
    check!(SurgeUpdated, surges, "surge");
    check!(FareCharged, fares, "fares");
    check!(Notification, notes, "notes");
}

on_both_brokers!(every_event_roundtrips: embedded_every_event_roundtrips, kafka_every_event_roundtrips);

/// Records of one key keep their order, whatever partition the key lands on.
async fn one_key_keeps_its_order(broker: Broker) {
    let Pipeline {
        config,
        codec,
        producer,
        ..
    } = &Pipeline::start(&broker).await;
    let rides: Vec<RideEvent> = (0..40).flat_map(ride_events).collect();
    producer.send_all(&rides).await.expect("delivered");
    let got = crate::consume::<RideEvent>(
        config,
        codec.clone(),
        &crate::group("order"),
        rides.len(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(got.len(), rides.len());
    for ride in 0..40 {
        let ride_id = format!("ride-{ride}");
        let seen: Vec<&str> = got
            .iter()
            .filter(|r| r.value.ride_id() == ride_id)
            .map(|r| r.value.kind())
            .collect();
        let sent: Vec<&str> = rides
            .iter()
            .filter(|r| r.ride_id() == ride_id)
            .map(|r| r.kind())
            .collect();
        assert_eq!(seen, sent, "{ride_id} out of order");
        let partitions: std::collections::BTreeSet<i32> = got
            .iter()
            .filter(|r| r.value.ride_id() == ride_id)
            .map(|r| r.partition)
            .collect();
        assert_eq!(partitions.len(), 1, "{ride_id} spread over partitions");
    }
}

on_both_brokers!(one_key_keeps_its_order: embedded_one_key_keeps_its_order, kafka_one_key_keeps_its_order);
