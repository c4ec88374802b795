//! Poison in every input topic of a running city: garbage bytes, an unknown schema id and a
//! valid record describing something impossible. Each is dead-lettered with its reasons and
//! counted, rides keep flowing, and a record written ahead of its schema is replayed once the
//! schema is registered, through the admin endpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bimride_billing::{BillingSettings, Guarantee};
use bimride_dispatch::DispatchSettings;
use bimride_domain::City;
use bimride_events::*;
use bimride_notifications::NotificationSettings;
use bimride_simulator::SimSettings;
use bimride_tests::*;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::group;

/// The dead-letter reason of the impossible record of each input topic.
const IMPOSSIBLE: [(Topic, &str); 4] = [
    (Topic::RideRequests, "invalid_record"),
    (Topic::DriverSupply, "invalid_record"),
    (Topic::RideEvents, "impossible_transition"),
    (Topic::Payments, "impossible_charge"),
];

async fn send_raw(raw: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    raw.send(
        FutureRecord::to(topic).key(key).payload(payload),
        Duration::from_secs(10),
    )
    .await
    .expect("poison delivered");
}

/// Valid records that no state machine accepts.
async fn send_impossible(p: &Pipeline) {
    let mut request = ride_requested(9_001);
    request.pickup_cell = "not-an-h3-cell".into();
    p.producer
        .send_and_wait(&DispatchEvent::from(request))
        .await
        .expect("request");
    let mut stray = supply_events(9_002).remove(0);
    if let SupplyEvent::Status(s) = &mut stray {
        // Available in the Gulf of Guinea: far outside the city.
        s.position = GeoPoint { lat: 0.0, lng: 0.0 };
    }
    p.producer.send_and_wait(&stray).await.expect("supply");
    // Completed without arriving or starting.
    for e in ride_events(9_003).into_iter().filter(|e| {
        matches!(
            e,
            RideEvent::DriverAssigned(_) | RideEvent::TripCompleted(_)
        )
    }) {
        p.producer.send_and_wait(&e).await.expect("ride event");
    }
    let mut charge = fare_charged(9_004);
    charge.payout.amount_minor += 1;
    p.producer.send_and_wait(&charge).await.expect("charge");
}

async fn admin_get(api: &ApiServer, path: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", api.url))
        .bearer_auth(TEST_ADMIN_TOKEN)
        .send()
        .await
        .expect("admin answers");
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.expect("json")
}

/// Waits until every ride in `rides` is charged.
async fn charged(p: &Pipeline, rides: &BTreeSet<String>, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let charges = charges_by_ride(&p.config, &p.codec).await;
        let missing: Vec<_> = rides.iter().filter(|r| !charges.contains_key(*r)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} rides never charged, e.g. {:?}",
            missing.len(),
            missing.first()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_in_every_input_topic_is_dead_lettered_counted_and_replayable() {
    let broker = Broker::embedded();
    let p = Pipeline::start(&broker).await;
    let stop = CancellationToken::new();
    let city = City::amsterdam();
    let api = p.serve_api(city.clone(), stop.clone()).await;
    let tasks = vec![
        p.spawn(
            DispatchSettings {
                group: group("dispatch"),
                max_wait_ms: 120_000,
                ..DispatchSettings::default()
            },
            stop.clone(),
        ),
        p.spawn(bimride_surge::SurgeSettings::default(), stop.clone()),
        p.spawn(
            BillingSettings {
                group: group("billing"),
                delivery: Guarantee::ExactlyOnce,
                transactional_id: group("billing-txn"),
                ..BillingSettings::default()
            },
            stop.clone(),
        ),
        p.spawn(
            NotificationSettings {
                group: group("notifications"),
                ..NotificationSettings::default()
            },
            stop.clone(),
        ),
        p.spawn(
            SimSettings {
                drivers: 150,
                booking_rate: 0.0,
                accept_ratio: 1.0,
                speedup: 200.0,
                id: "poison".into(),
                ..SimSettings::default()
            },
            stop.clone(),
        ),
    ];
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut rides = book(&api.url, 0, 20).await;
    charged(&p, &rides, Duration::from_secs(90)).await;

    // Garbage and an unknown schema id into every input topic, then the impossible records.
    let raw: FutureProducer = p.config.producer().create().expect("raw producer");
    let unknown_id = [0, 0x00, 0x1e, 0x84, 0x80, 2, 4, 6, 8];
    for (topic, _) in IMPOSSIBLE {
        send_raw(
            &raw,
            &p.topic(topic),
            "poison",
            b"\xde\xad\xbe\xef not avro",
        )
        .await;
        send_raw(&raw, &p.topic(topic), "poison", &unknown_id).await;
    }
    send_impossible(&p).await;

    // A v2 TripCompleted sent before v2 is registered: its schema id is not known yet.
    let ahead: Vec<RideEvent> = ride_events(9_005).into_iter().map(fresh).collect();
    for e in ahead.iter().filter(|e| {
        matches!(
            e,
            RideEvent::DriverAssigned(_) | RideEvent::DriverArrived(_) | RideEvent::TripStarted(_)
        )
    }) {
        p.producer.send_and_wait(e).await.expect("ride event");
    }
    let completed = ahead
        .iter()
        .find(|e| matches!(e, RideEvent::TripCompleted(_)))
        .expect("a completion");
    let ahead_ride = completed.ride_id().to_owned();
    let next_id = next_schema_id(&p).await;
    let v2_bytes = encode_v2(
        &p.codec.encode(completed).await.expect("v1 bytes"),
        next_id,
        250,
    );
    send_raw(&raw, &p.topic(Topic::RideEvents), &ahead_ride, &v2_bytes).await;

    // The pipeline keeps flowing past all of it.
    rides.extend(book(&api.url, 20, 20).await);
    charged(&p, &rides, Duration::from_secs(90)).await;

    // Every poison record is in its dead-letter topic, with its reasons, and counted.
    let mut letters: BTreeMap<Topic, Vec<Value>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let topics = p.config.topics();
    for (topic, impossible) in IMPOSSIBLE {
        let expected = ["not_wire_format", "unknown_schema_id", impossible];
        loop {
            let listed = admin_get(
                &api,
                &format!("/v1/admin/dead-letters/{}", topics.dead_letter(topic)),
            )
            .await;
            let list = listed.as_array().expect("letters").clone();
            let reasons: BTreeSet<&str> = list
                .iter()
                .filter_map(|l| l["letter"]["reason"].as_str())
                .collect();
            if expected.iter().all(|r| reasons.contains(r)) {
                for l in &list {
                    assert_eq!(l["letter"]["source_topic"], topics.name(topic), "{l}");
                    assert!(l["letter"]["source_offset"].as_i64() >= Some(0), "{l}");
                    assert!(l["letter"]["group"].as_str().is_some_and(|g| !g.is_empty()));
                    assert!(l["letter"]["error"].as_str().is_some_and(|e| !e.is_empty()));
                }
                letters.insert(topic, list);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{topic}: dead letters {reasons:?}, expected {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for reason in expected {
            let counted = bimride_kafka::metrics::DEAD_LETTERED
                .with_label_values(&[topics.name(topic), reason])
                .get();
            assert!(counted >= 1, "{topic} {reason} is counted");
        }
    }
    // The garbage is kept byte for byte, for whoever fixes it.
    let garbage = letters[&Topic::RideEvents]
        .iter()
        .find(|l| l["letter"]["reason"] == "not_wire_format")
        .expect("garbage letter");
    let inspected = admin_get(
        &api,
        &format!(
            "/v1/admin/dead-letters/{}/{}/{}",
            topics.dead_letter(Topic::RideEvents),
            garbage["partition"],
            garbage["offset"]
        ),
    )
    .await;
    assert_eq!(inspected["payload_hex"], hex(b"\xde\xad\xbe\xef not avro"));
    assert!(
        !charges_by_ride(&p.config, &p.codec)
            .await
            .contains_key(&ahead_ride),
        "a trip whose record cannot be read yet is not charged"
    );

    // The fix: v2 is registered, and it takes the id the record was written with.
    let registered = register_schema(
        &p.registry.url(),
        &topics.value_subject(Topic::RideEvents),
        &ride_events_v2_json(),
    )
    .await
    .expect("v2 is compatible");
    assert_eq!(registered, next_id, "the record's id is v2's id");
    let replayed: Value = reqwest::Client::new()
        .post(format!(
            "{}/v1/admin/dead-letters/{}/replay",
            api.url,
            topics.dead_letter(Topic::RideEvents)
        ))
        .bearer_auth(TEST_ADMIN_TOKEN)
        .json(&json!({"reason": "unknown_schema_id"}))
        .send()
        .await
        .expect("replay answers")
        .json()
        .await
        .expect("json");
    // Two source records had unknown ids: the bare poison and the v2 completion; each is
    // written back once however many groups dead-lettered it.
    assert_eq!(replayed["replayed"], 2, "{replayed}");
    charged(
        &p,
        &BTreeSet::from([ahead_ride.clone()]),
        Duration::from_secs(60),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let charges = charges_by_ride(&p.config, &p.codec).await;
    assert_eq!(charges[&ahead_ride], 1, "the replayed trip is charged once");
    for ride in &rides {
        assert_eq!(charges[ride], 1, "{ride} charged once");
    }

    stop.cancel();
    join_all(api.tasks).await;
    join_all(tasks).await;
}

/// The id the registry will give the next new schema: one above the highest so far.
async fn next_schema_id(p: &Pipeline) -> u32 {
    let mut highest = 0;
    for topic in Topic::ALL {
        highest = highest.max(p.codec.register(topic).await.expect("registered"));
    }
    highest + 1
}

/// The event, happening now: billing forgets rides whose last event is long past.
fn fresh(mut e: RideEvent) -> RideEvent {
    let now = Millis::now();
    match &mut e {
        RideEvent::DriverAssigned(x) => x.occurred_at = now,
        RideEvent::DriverArrived(x) => x.occurred_at = now,
        RideEvent::TripStarted(x) => x.occurred_at = now,
        RideEvent::TripCompleted(x) => x.occurred_at = now,
        _ => {}
    }
    e
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
