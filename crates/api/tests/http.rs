//! The trip API over real HTTP, on the embedded Kafka cluster with a real registry.

use std::sync::Arc;
use std::time::Duration;

use bimride_api::{ApiState, RideBook, app, book};
use bimride_domain::City;
use bimride_events::{Codec, RegistryConfig};
use bimride_kafka::{EmbeddedCluster, EventProducer, KafkaConfig, Provisioner, topics};
use bimride_registry::Registry;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Api {
    url: String,
    http: reqwest::Client,
    stop: CancellationToken,
    projection: tokio::task::JoinHandle<Result<(), bimride_kafka::ConsumerError>>,
    /// Dispatch decides what happens to a cancellation before a driver is assigned.
    dispatch: tokio::task::JoinHandle<Result<(), bimride_dispatch::DispatchError>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    cluster: EmbeddedCluster,
}

async fn api() -> Api {
    let cluster = EmbeddedCluster::start(3).expect("cluster");
    let mut config = KafkaConfig::for_brokers(cluster.bootstrap_servers());
    config.partitions = 6;
    config.linger_ms = 1;
    Provisioner::Embedded(&cluster)
        .ensure(&topics::catalogue(6, 3))
        .await
        .expect("topics");
    let stop = CancellationToken::new();
    let registry = bimride_registry::serve(
        Registry::in_memory(),
        "127.0.0.1:0".parse().expect("addr"),
        stop.clone(),
    )
    .await
    .expect("registry");
    let codec = Arc::new(Codec::new(&RegistryConfig::new(registry.url())).expect("codec"));
    codec.register_all().await.expect("schemas");
    let rides = Arc::new(RideBook::default());
    let surge_book = Arc::new(bimride_api::SurgeBook::default());
    let surge = Arc::clone(&surge_book);
    let projection = (
        config.clone(),
        Arc::clone(&codec),
        Arc::clone(&rides),
        stop.clone(),
    );
    let projection = tokio::spawn(async move {
        let (config, codec, rides, stop) = projection;
        book::run_projection(&config, codec, rides, surge, "api-test", stop).await
    });
    let dispatch = {
        let (config, codec, stop) = (config.clone(), Arc::clone(&codec), stop.clone());
        tokio::spawn(async move {
            let settings = bimride_dispatch::DispatchSettings::default();
            bimride_dispatch::run(&config, codec, City::amsterdam(), settings, stop).await
        })
    };
    let producer = EventProducer::new(&config, codec).expect("producer");
    let state = ApiState::new(producer, City::amsterdam(), rides, surge_book);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let serve_stop = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app(state))
            .with_graceful_shutdown(serve_stop.cancelled_owned())
            .await
    });
    Api {
        url,
        http: reqwest::Client::new(),
        stop,
        projection,
        dispatch,
        server,
        cluster,
    }
}

fn booking() -> Value {
    json!({
        "rider_id": "rider-7",
        "pickup": {"lat": 52.3731, "lng": 4.8922},
        "dropoff": {"lat": 52.3584, "lng": 4.8811},
        "product": "economy"
    })
}

impl Api {
    /// Stops the server and the projection, so that their consumers leave the group and
    /// commit while the cluster is still there, then stops the cluster.
    async fn shutdown(self) {
        self.stop.cancel();
        self.server
            .await
            .expect("server joins")
            .expect("server stops cleanly");
        self.projection
            .await
            .expect("projection joins")
            .expect("projection stops cleanly");
        self.dispatch
            .await
            .expect("dispatch joins")
            .expect("dispatch stops cleanly");
        drop(self.cluster);
    }

    async fn post(&self, path: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.url)).json(body);
        if let Some(k) = key {
            request = request.header("Idempotency-Key", k);
        }
        let response = request.send().await.expect("answers");
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("answers");
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// Polls a ride until `check` holds on its view, built from the consumed topics.
    async fn ride_until(&self, id: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.get(&format!("/v1/rides/{id}")).await;
            if status == 200 && check(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "ride {id} never reached the expected state: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booking_is_idempotent_and_the_view_comes_from_the_log() {
    let api = api().await;
    let (status, first) = api.post("/v1/rides", &booking(), Some("k-1")).await;
    assert_eq!(status, 202, "{first}");
    let ride = first["ride_id"].as_str().expect("ride id").to_owned();
    assert_eq!(first["status"], "requested");
    assert!(first["quote"]["amount_minor"].as_i64().expect("quote") >= 700);
    assert_eq!(first["quote"]["currency"], "EUR");

    let (status, again) = api.post("/v1/rides", &booking(), Some("k-1")).await;
    assert_eq!(
        (status, &again["ride_id"]),
        (202, &first["ride_id"]),
        "a retry returns the same ride"
    );
    let mut other = booking();
    other["product"] = json!("xl");
    let (status, reused) = api.post("/v1/rides", &other, Some("k-1")).await;
    assert_eq!(
        (status, &reused["error"]["code"]),
        (422, &json!("idempotency_key_reused"))
    );

    let view = api.ride_until(&ride, |v| v["status"] == "requested").await;
    assert_eq!(view["rider_id"], "rider-7");
    let requested = view["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter(|h| h["event"] == "requested")
        .count();
    assert_eq!(requested, 1, "the retry booked nothing new");

    let (status, _) = api
        .post(&format!("/v1/rides/{ride}/cancel"), &json!({}), None)
        .await;
    assert_eq!(status, 202);
    let view = api.ride_until(&ride, |v| v["status"] == "cancelled").await;
    assert_eq!(view["cancel_reason"], "rider_request");
    let (status, body) = api
        .post(&format!("/v1/rides/{ride}/cancel"), &json!({}), None)
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("ride_not_cancellable"))
    );

    // Without a key, two POSTs are two rides.
    let (_, a) = api.post("/v1/rides", &booking(), None).await;
    let (_, b) = api.post("/v1/rides", &booking(), None).await;
    assert_ne!(a["ride_id"], b["ride_id"]);
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_4xx_json_error() {
    let api = api().await;
    let raw = |body: &'static str| {
        let http = api.http.clone();
        let url = format!("{}/v1/rides", api.url);
        async move {
            let r = http
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("answers");
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = booking();
        f(&mut b);
        b
    };
    let cases: Vec<(&str, u16, (u16, Value))> = vec![
        ("malformed json", 400, raw("{\"rider_id\":").await),
        ("not an object", 422, raw("[1,2,3]").await),
        ("missing field", 422, api.post("/v1/rides", &json!({"rider_id": "r"}), None).await),
        ("wrong type", 422, api.post("/v1/rides", &with(&|b| b["pickup"]["lat"] = json!("north")), None).await),
        ("unknown product", 422, api.post("/v1/rides", &with(&|b| b["product"] = json!("limousine")), None).await),
        ("unknown field", 422, api.post("/v1/rides", &with(&|b| b["tip"] = json!(5)), None).await),
        ("latitude out of range", 422, api.post("/v1/rides", &with(&|b| b["pickup"]["lat"] = json!(123.0)), None).await),
        ("outside the service area", 422, api.post("/v1/rides", &with(&|b| b["dropoff"] = json!({"lat": 48.85, "lng": 2.35})), None).await),
        ("bad rider id", 422, api.post("/v1/rides", &with(&|b| b["rider_id"] = json!("")), None).await),
        ("huge number", 400, raw("{\"rider_id\":\"r\",\"pickup\":{\"lat\":1e999,\"lng\":4.9},\"dropoff\":{\"lat\":52.3,\"lng\":4.9},\"product\":\"xl\"}").await),
        ("body too large", 413, api.post("/v1/rides", &with(&|b| b["rider_id"] = json!("x".repeat(20_000))), None).await),
        ("unknown ride", 404, api.get("/v1/rides/ride-nope").await),
        ("cancel unknown ride", 404, api.post("/v1/rides/ride-nope/cancel", &json!({}), None).await),
        ("quote without fields", 400, api.get("/v1/quote?pickup_lat=52.37").await),
    ];
    for (name, want, (status, body)) in cases {
        assert_eq!(status, want, "{name}: {body}");
        assert!(
            body["error"]["code"].is_string() && body["error"]["message"].is_string(),
            "{name}: {body}"
        );
    }
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_price_a_trip_without_booking() {
    let api = api().await;
    let q = "/v1/quote?pickup_lat=52.3731&pickup_lng=4.8922&dropoff_lat=52.3584&dropoff_lng=4.8811&product=comfort";
    let (status, body) = api.get(q).await;
    assert_eq!(status, 200, "{body}");
    let b = &body["breakdown"];
    assert_eq!(body["surge_milli"], 1000);
    assert!(body["distance_m"].as_i64().expect("distance") > 1_500);
    let parts = b["base_minor"].as_i64().unwrap_or(0)
        + b["distance_minor"].as_i64().unwrap_or(0)
        + b["time_minor"].as_i64().unwrap_or(0);
    assert_eq!(body["amount_minor"].as_i64(), Some(parts.max(1_000)));
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_routes() {
    let api = api().await;
    let (status, doc) = api.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    let mut documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .filter(|m| ["get", "post", "put", "delete", "patch"].contains(&m.as_str()))
                .map(move |m| (path.clone(), m.clone()))
        })
        .collect();
    documented.sort();
    let expected: Vec<(String, String)> = [
        ("/v1/quote", "get"),
        ("/v1/rides", "post"),
        ("/v1/rides/{id}", "get"),
        ("/v1/rides/{id}/cancel", "post"),
        ("/v1/surge", "get"),
    ]
    .iter()
    .map(|(p, m)| (p.to_string(), m.to_string()))
    .collect();
    assert_eq!(documented, expected);
    // Every documented operation is served: a route that did not exist would answer 404 or
    // 405 without the API's JSON error body.
    for (path, method) in &documented {
        let url = format!("{}{}", api.url, path.replace("{id}", "ride-unknown"));
        let request = match method.as_str() {
            "get" => api.http.get(url),
            _ => api.http.post(url).json(&json!({})),
        };
        let response = request.send().await.expect("answers");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(status, 405, "{method} {path}");
        assert!(
            status != 404 || body["error"]["code"] == "ride_not_found",
            "{method} {path}: {status} {body}"
        );
    }
    api.shutdown().await;
}
