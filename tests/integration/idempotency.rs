//! A retried booking reaching another API instance, or one started since, finds the key's
//! claim in the ride store instead of booking a second one.

use std::time::Duration;

use bimride_domain::City;
use bimride_events::{DispatchEvent, Topic};
use bimride_tests::*;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

async fn post(api: &str, body: &Value, key: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{api}/v1/rides"))
        .bearer_auth(rider_token("rider-k"))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("answers");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_a_fresh_instance_gets_the_same_ride() {
    let broker = Broker::embedded();
    let p = Pipeline::start(&broker).await;
    let city = City::amsterdam();
    let (first_stop, second_stop) = (CancellationToken::new(), CancellationToken::new());
    let first = p.serve_api(city.clone(), first_stop.clone()).await;
    let body = json!({
        "rider_id": "rider-k",
        "pickup": {"lat": 52.3731, "lng": 4.8922},
        "dropoff": {"lat": 52.3584, "lng": 4.8811},
        "product": "comfort",
    });
    let (status, booked) = post(&first.url, &body, "retry-me").await;
    assert_eq!(status, 202, "{booked}");
    first_stop.cancel();
    join_all(first.tasks).await;

    // A new instance, with nothing in memory, answers from the store.
    let second = p.serve_api(city, second_stop.clone()).await;
    let ride = booked["ride_id"].as_str().expect("ride id");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while second.store.ride(ride).await.expect("store").is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new instance reads the log"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, again) = post(&second.url, &body, "retry-me").await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again, booked, "the same ride and the same quote");
    let mut other = body.clone();
    other["product"] = json!("xl");
    let (status, reused) = post(&second.url, &other, "retry-me").await;
    assert_eq!(
        (status, &reused["error"]["code"]),
        (422, &json!("idempotency_key_reused"))
    );

    let config = p.config.clone();
    let requests = tokio::task::spawn_blocking(move || {
        read_back(
            &config,
            config.topics().name(Topic::RideRequests),
            "read_committed",
        )
    })
    .await
    .expect("reader");
    let keyed = decode_all::<DispatchEvent>(&p.codec, &requests)
        .await
        .into_iter()
        .filter(|e| {
            matches!(e, DispatchEvent::Requested(r) if r.idempotency_key.as_deref() == Some("retry-me"))
        })
        .count();
    assert_eq!(keyed, 1, "one request in the log");
    second_stop.cancel();
    join_all(second.tasks).await;
}
