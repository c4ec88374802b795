//! Schema evolution through real brokers: a v2 of the ride-events schema (a new optional field
//! with a default) is produced while consumers run v1, v1 records are read by a v2 reader, and
//! the registry refuses an incompatible v3.

use std::time::Duration;

use apache_avro::types::Value;
use bimride_events::*;
use bimride_tests::*;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn field<'a>(record: &'a Value, name: &str) -> Option<&'a Value> {
    let Value::Union(_, inner) = record else {
        return None;
    };
    let Value::Record(fields) = inner.as_ref() else {
        return None;
    };
    fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

async fn evolution(broker: Broker) {
    let p = Pipeline::start(&broker).await;
    let subject = p.config.topics().value_subject(Topic::RideEvents);
    let v1_id = p.codec.register(Topic::RideEvents).await.expect("v1");
    let v2_id = register_schema(&p.registry.url(), &subject, &ride_events_v2_json())
        .await
        .expect("v2 adds an optional field with a default: compatible");
    assert_ne!(v1_id, v2_id);

    // A producer built on v2 writes trips with tips, a v1 producer writes the rest.
    let trip = ride_events(41);
    let completed = trip
        .iter()
        .find(|e| matches!(e, RideEvent::TripCompleted(_)))
        .expect("a completion")
        .clone();
    let raw: FutureProducer = p.config.producer().create().expect("raw producer");
    let v2_bytes = encode_v2(
        &p.codec.encode(&completed).await.expect("v1 bytes"),
        v2_id,
        300,
    );
    raw.send(
        FutureRecord::to(&p.topic(Topic::RideEvents))
            .key(completed.ride_id())
            .payload(&v2_bytes),
        Duration::from_secs(10),
    )
    .await
    .expect("v2 record delivered");
    let v1_events = ride_events(42);
    p.producer.send_all(&v1_events).await.expect("v1 records");

    // The consumer loop every service runs, on v1, reads both.
    let got = crate::consume::<RideEvent>(
        &p.config,
        p.codec.clone(),
        &crate::group("v1-reader"),
        1 + v1_events.len(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        got.len(),
        1 + v1_events.len(),
        "v1 consumers read v1 and v2"
    );
    let read_completion = got
        .iter()
        .find(|r| r.value.ride_id() == completed.ride_id())
        .expect("the v2 record");
    assert_eq!(
        read_completion.value, completed,
        "a v1 reader sees the v2 TripCompleted as the same trip, without the tip"
    );
    assert_eq!(
        bimride_kafka::metrics::DEAD_LETTERED
            .with_label_values(&[&p.topic(Topic::RideEvents), "schema_mismatch"])
            .get(),
        0,
        "nothing was dead-lettered as a mismatch"
    );

    // A v2 reader reads both too: v1 records take the default, v2 records keep their tip.
    let v2 = apache_avro::Schema::parse_str(&ride_events_v2_json()).expect("v2");
    let records = {
        let config = p.config.clone();
        tokio::task::spawn_blocking(move || {
            read_back(
                &config,
                config.topics().name(Topic::RideEvents),
                "read_committed",
            )
        })
        .await
        .expect("reader joins")
    };
    let (mut tipped, mut defaulted) = (0, 0);
    for (_, payload) in &records {
        let value = p.codec.decode_value(payload, &v2).await.expect("v2 reads");
        match field(&value, "tip_minor") {
            Some(Value::Union(_, tip)) if **tip == Value::Long(300) => tipped += 1,
            Some(Value::Union(_, none)) if **none == Value::Null => defaulted += 1,
            _ => {}
        }
        assert!(
            field(&value, "ride_id").is_some(),
            "every branch is read by name: {value:?}"
        );
    }
    assert_eq!(tipped, 1, "the v2 trip keeps its tip");
    assert_eq!(defaulted, 1, "the v1 trip's completion takes the default");

    // v3 adds a required field without a default: old records could not be read by it.
    let mut v3: serde_json::Value = serde_json::from_str(&ride_events_v2_json()).expect("v2 json");
    for branch in v3.as_array_mut().expect("union") {
        if branch["name"]
            .as_str()
            .is_some_and(|n| n.ends_with("TripCompleted"))
        {
            branch["fields"]
                .as_array_mut()
                .expect("fields")
                .push(serde_json::json!({"name": "promo_code", "type": "string"}));
        }
    }
    let refused = register_schema(&p.registry.url(), &subject, &v3.to_string()).await;
    let (status, body) = refused.expect_err("an incompatible v3 is refused");
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error_code"], 409, "{body}");
    let latest: serde_json::Value = reqwest::get(format!(
        "{}/subjects/{subject}/versions/latest",
        p.registry.url()
    ))
    .await
    .expect("registry answers")
    .json()
    .await
    .expect("json");
    assert_eq!(latest["id"], v2_id, "v2 stays the latest");
}

on_both_brokers!(evolution: embedded_v2_and_v1_read_each_other_and_v3_is_refused, kafka_v2_and_v1_read_each_other_and_v3_is_refused);
