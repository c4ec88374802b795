//! Consumer loops of one group share partitions; members join and leave mid-stream and no
//! record is lost.

use std::collections::HashSet;
use std::time::Duration;

use bimride_events::*;
use bimride_tests::*;

async fn members_join_and_leave_without_losing_records(broker: Broker) {
    let Pipeline {
        config,
        codec,
        producer,
        ..
    } = &Pipeline::start(&broker).await;
    let sent: Vec<RideEvent> = (0..75).flat_map(ride_events).collect();
    let expected: HashSet<String> = sent.iter().map(|e| e.event_id().to_owned()).collect();
    let group = crate::group("rebalance");

    let (first_half, second_half) = sent.split_at(sent.len() / 2);
    let mut delivered = producer
        .send_all(first_half)
        .await
        .expect("first half delivered");
    let mut a = crate::start::<RideEvent>(config, codec.clone(), &group);
    let mut seen: Vec<String> = a
        .take(first_half.len() / 2, Duration::from_secs(60))
        .await
        .into_iter()
        .map(|r| r.value.event_id().to_owned())
        .collect();
    assert!(!seen.is_empty(), "the first member consumes");

    // A second member joins: the group rebalances while records are in flight. Both keep
    // consuming until the second has been given partitions.
    // The second half trickles in, so that some of it is left when the rebalance completes:
    // a real broker lets the first member read everything sent while the group re-forms.
    let mut b = crate::start::<RideEvent>(config, codec.clone(), &group);
    let mut chunks = second_half.chunks(10);
    let mut joined = Vec::new();
    for chunk in chunks.by_ref() {
        delivered.extend(producer.send_all(chunk).await.expect("chunk delivered"));
        joined = b.take(1, Duration::from_millis(250)).await;
        if !joined.is_empty() {
            break;
        }
    }
    for chunk in chunks {
        delivered.extend(producer.send_all(chunk).await.expect("chunk delivered"));
    }
    if joined.is_empty() {
        joined = b.take(1, Duration::from_secs(60)).await;
    }
    assert!(!joined.is_empty(), "the second member is given partitions");
    seen.extend(joined.into_iter().map(|r| r.value.event_id().to_owned()));
    seen.extend(
        a.take(50, Duration::from_millis(500))
            .await
            .into_iter()
            .map(|r| r.value.event_id().to_owned()),
    );

    // The first member leaves; its partitions move to the second, from committed offsets.
    seen.extend(
        a.stop()
            .await
            .into_iter()
            .map(|r| r.value.event_id().to_owned()),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let got: HashSet<&String> = seen.iter().collect();
        if expected.iter().all(|id| got.contains(id)) || tokio::time::Instant::now() > deadline {
            break;
        }
        seen.extend(
            b.take(1, Duration::from_secs(1))
                .await
                .into_iter()
                .map(|r| r.value.event_id().to_owned()),
        );
    }
    seen.extend(
        b.stop()
            .await
            .into_iter()
            .map(|r| r.value.event_id().to_owned()),
    );
    let got: HashSet<String> = seen.iter().cloned().collect();
    let missing: Vec<&String> = expected.difference(&got).collect();
    let lost_at: Vec<(i32, i64)> = sent
        .iter()
        .zip(&delivered)
        .filter(|(e, _)| !got.contains(e.event_id()))
        .map(|(_, d)| (d.partition, d.offset))
        .collect();
    assert!(
        missing.is_empty(),
        "{} records lost across the rebalance, at (partition, offset) {lost_at:?}",
        missing.len()
    );
    assert!(got.is_subset(&expected), "only records that were sent");
}

on_both_brokers!(
    members_join_and_leave_without_losing_records:
    embedded_members_join_and_leave_without_losing_records,
    kafka_members_join_and_leave_without_losing_records
);
