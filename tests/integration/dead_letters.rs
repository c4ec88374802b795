//! Undecodable records land in the dead-letter topic with their reasons; the rest flow on.

use std::collections::BTreeMap;
use std::time::Duration;

use bimride_events::*;
use bimride_kafka::dead_letter::DeadLetter;
use bimride_tests::*;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

async fn garbage_is_dead_lettered(broker: Broker) {
    let Pipeline {
        config,
        codec,
        producer,
        ..
    } = &Pipeline::start(&broker).await;
    let raw: FutureProducer = config.producer().create().expect("raw producer");
    let topics = config.topics();
    let topic = topics.name(Topic::RideEvents);

    let good_before = ride_events(1);
    producer.send_all(&good_before).await.expect("good records");
    for (key, payload) in [
        ("ride-x", b"\xde\xad\xbe\xef garbage".to_vec()),
        ("ride-y", vec![0, 0, 0, 0x30, 0x39, 2, 4, 6]),
    ] {
        raw.send(
            FutureRecord::to(topic).key(key).payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .expect("poison delivered");
    }
    let good_after = ride_events(2);
    producer.send_all(&good_after).await.expect("good records");

    let expected = good_before.len() + good_after.len();
    let mut running = crate::start::<RideEvent>(config, codec.clone(), &crate::group("dlq"));
    let got = running.take(expected, Duration::from_secs(60)).await;
    assert_eq!(
        got.len(),
        expected,
        "the pipeline keeps flowing past poison"
    );

    // Read the dead-letter topic back with a plain client.
    let reader: StreamConsumer = config
        .consumer(&crate::group("dlq-reader"))
        .create()
        .expect("reader");
    reader
        .subscribe(&[topics.dead_letter(Topic::RideEvents)])
        .expect("subscribe");
    let mut letters = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while letters.len() < 2 {
        let m = tokio::time::timeout_at(deadline, reader.recv())
            .await
            .expect("two dead letters within 30s")
            .expect("message");
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        let letter =
            DeadLetter::from_headers(m.headers().expect("headers")).expect("dead-letter headers");
        letters.insert(key, (letter, m.payload().map(<[u8]>::to_vec)));
    }
    let (garbage, payload) = &letters["ride-x"];
    assert_eq!(garbage.reason, "not_wire_format");
    assert_eq!(garbage.source_topic, topic);
    assert_eq!(
        payload.as_deref(),
        Some(&b"\xde\xad\xbe\xef garbage"[..]),
        "original bytes kept"
    );
    let (unknown, _) = &letters["ride-y"];
    assert_eq!(unknown.reason, "unknown_schema_id");
    assert!(unknown.source_offset >= 0 && unknown.dead_lettered_at_ms > 0);
    assert_ne!(
        (garbage.source_partition, garbage.source_offset),
        (unknown.source_partition, unknown.source_offset)
    );
    let counted = bimride_kafka::metrics::DEAD_LETTERED
        .with_label_values(&[topic, "unknown_schema_id"])
        .get();
    assert!(counted >= 1, "dead letters are counted");
    assert!(
        running.take(1, Duration::from_millis(500)).await.is_empty(),
        "poison never reaches the handler"
    );
    assert!(running.stop().await.is_empty());
}

on_both_brokers!(garbage_is_dead_lettered: embedded_garbage_is_dead_lettered, kafka_garbage_is_dead_lettered);
