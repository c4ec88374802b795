//! `bimride up` keeps ride history in its data directory: rides booked before a restart are
//! still served after it, though the embedded cluster starts empty.

mod common;

use std::time::Duration;

use common::Up;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rides_booked_on_up_survive_its_restart() {
    let dir = std::env::temp_dir().join(format!("bimride-history-{}", uuid::Uuid::new_v4()));
    let dir = dir.to_str().expect("utf-8 path").to_owned();
    let args = ["--data-dir", dir.as_str(), "--drivers", "20"];
    let rider = common::rider_client("rider-h");

    let up = Up::start_with(&args).await;
    let booked: Value = rider
        .post(format!("{}/v1/rides", up.http))
        .json(&serde_json::json!({
            "rider_id": "rider-h",
            "pickup": {"lat": 52.3731, "lng": 4.8922},
            "dropoff": {"lat": 52.3584, "lng": 4.8811},
            "product": "economy"
        }))
        .send()
        .await
        .expect("books")
        .json()
        .await
        .expect("json");
    let ride = booked["ride_id"].as_str().expect("ride id").to_owned();
    let before = ride_view(&rider, &up.http, &ride, Duration::from_secs(30)).await;
    up.interrupt().await;

    // A new process, a new embedded cluster, the same data directory.
    let up = Up::start_with(&args).await;
    let after = ride_view(&rider, &up.http, &ride, Duration::from_secs(5)).await;
    assert_eq!(after["rider_id"], before["rider_id"]);
    assert_eq!(after["quote_minor"], before["quote_minor"]);
    let listed: Value = rider
        .get(format!("{}/v1/rides", up.http))
        .send()
        .await
        .expect("lists")
        .json()
        .await
        .expect("json");
    assert!(
        listed["rides"]
            .as_array()
            .expect("rides")
            .iter()
            .any(|r| r["ride_id"] == ride.as_str()),
        "{listed}"
    );
    let log = up.log.clone();
    up.interrupt().await;
    let log = std::fs::read_to_string(log).expect("log");
    assert!(
        log.contains("finds itself on a new Kafka cluster"),
        "the restarted store says it is on a new cluster"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Polls the ride until it is served, for at most `within`.
async fn ride_view(client: &reqwest::Client, http: &str, ride: &str, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let response = client
            .get(format!("{http}/v1/rides/{ride}"))
            .send()
            .await
            .expect("answers");
        if response.status() == 200 {
            return response.json().await.expect("json");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ride {ride} not served within {within:?}: {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
