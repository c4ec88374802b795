//! The trip API over real HTTP, on the embedded Kafka cluster with a real registry.

use std::sync::Arc;
use std::time::Duration;

use bimride_api::{ApiParts, ApiState, SurgeFeed, app};
use bimride_codec::{Codec, RegistryConfig};
use bimride_domain::City;
use bimride_domain::eta::{Learned, Leg};
use bimride_kafka::service::{self, Context};
use bimride_kafka::{EmbeddedCluster, EventProducer, KafkaConfig, Provisioner, topics};
use bimride_registry::Registry;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Api {
    url: String,
    http: reqwest::Client,
    stop: CancellationToken,
    projection: tokio::task::JoinHandle<Result<(), service::Failed>>,
    /// The ride store the API reads, fed from the ride topics.
    sink: tokio::task::JoinHandle<Result<(), service::Failed>>,
    store: bimride_store::Store,
    /// Dispatch decides what happens to a cancellation before a driver is assigned.
    dispatch: tokio::task::JoinHandle<Result<(), service::Failed>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    cluster: EmbeddedCluster,
    /// The corrections quotes apply, taught directly here.
    learned: Arc<Learned>,
}

const SECRET: &str = "api-test-secret-api-test-secret-0123";
const ADMIN: &str = "api-test-admin-credential";

fn authority() -> bimride_auth::Authority {
    bimride_auth::Authority::new(
        &bimride_auth::Secret::new(SECRET),
        Some(bimride_auth::Secret::new(ADMIN)),
    )
    .expect("authority")
}

fn token(rider: &str) -> String {
    authority()
        .rider_token(rider, Duration::from_secs(600))
        .expect("token")
        .expose()
        .to_owned()
}

async fn api() -> Api {
    api_limited(bimride_api::RateLimit::default()).await
}

async fn api_limited(limit: bimride_api::RateLimit) -> Api {
    let cluster = EmbeddedCluster::start(3).expect("cluster");
    let mut config = KafkaConfig::for_brokers(cluster.bootstrap_servers());
    config.partitions = 6;
    config.linger_ms = 1;
    Provisioner::Embedded(&cluster)
        .ensure(&topics::catalogue(
            &config.topics(),
            topics::REGISTRY_LOG,
            6,
            3,
        ))
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
    let surge_book = Arc::new(bimride_api::SurgeBook::default());
    let cx = Context {
        kafka: config.clone(),
        codec: Arc::clone(&codec),
        city: City::amsterdam(),
        shutdown: stop.clone(),
    };
    let feed = SurgeFeed(Arc::clone(&surge_book));
    let projection = tokio::spawn(service::run(Box::new(feed), cx.clone()));
    let file = std::env::temp_dir().join(format!("bimride-api-{}.db", uuid::Uuid::new_v4()));
    let database = bimride_store::Database {
        database_url: Some(format!("sqlite:{}?mode=rwc", file.display())),
        ..Default::default()
    };
    let store = bimride_store::Store::connect(&database.url())
        .await
        .expect("store");
    let sink = tokio::spawn(service::run(
        Box::new(bimride_store::StoreSettings {
            database,
            ..Default::default()
        }),
        cx.clone(),
    ));
    let dispatch = tokio::spawn(service::run(
        Box::new(bimride_dispatch::DispatchSettings::default()),
        cx,
    ));
    let producer = EventProducer::new(&config, codec).expect("producer");
    let learned = Arc::new(Learned::default());
    let state = ApiState::new(ApiParts {
        producer,
        kafka: config.clone(),
        city: City::amsterdam(),
        store: store.clone(),
        surge: surge_book,
        learned: Arc::clone(&learned),
        access: bimride_api::Access::new(authority(), limit),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    // The server every BimRide process uses: limits, and each client's address.
    let server = bimride_telemetry::spawn_server(
        listener,
        app(state),
        bimride_telemetry::HttpLimits::default(),
        stop.clone(),
    );
    Api {
        url,
        http: reqwest::Client::new(),
        stop,
        projection,
        sink,
        store,
        dispatch,
        server,
        cluster,
        learned,
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
        self.sink
            .await
            .expect("store joins")
            .expect("store stops cleanly");
        self.dispatch
            .await
            .expect("dispatch joins")
            .expect("dispatch stops cleanly");
        drop(self.cluster);
    }

    /// POSTs as rider-7.
    async fn post(&self, path: &str, body: &Value, key: Option<&str>) -> (u16, Value) {
        self.post_as(Some(&token("rider-7")), path, body, key).await
    }

    async fn post_as(
        &self,
        bearer: Option<&str>,
        path: &str,
        body: &Value,
        key: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.url)).json(body);
        if let Some(t) = bearer {
            request = request.bearer_auth(t);
        }
        if let Some(k) = key {
            request = request.header("Idempotency-Key", k);
        }
        let response = request.send().await.expect("answers");
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// GETs as rider-7.
    async fn get(&self, path: &str) -> (u16, Value) {
        self.get_as(Some(&token("rider-7")), path).await
    }

    async fn get_as(&self, bearer: Option<&str>, path: &str) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path}", self.url));
        if let Some(t) = bearer {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.expect("answers");
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
                .bearer_auth(token("rider-7"))
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
        ("unknown path", 404, api.get("/v1/nowhere").await),
        ("wrong method", 405, api.get("/v1/rides/ride-nope/cancel").await),
        ("no content type", 415, {
            let r = api.http.post(format!("{}/v1/rides", api.url)).bearer_auth(token("rider-7")).body(booking().to_string()).send().await.expect("answers");
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }),
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

    // Trips from this neighbourhood took twice the distance-only estimate, at every hour: the
    // quote's duration doubles, and its fare is estimated on it; the distance stays.
    let pickup = h3o::LatLng::new(52.3731, 4.8922)
        .expect("a position")
        .to_cell(h3o::Resolution::Nine);
    for hour in 0..24 {
        for _ in 0..5 {
            assert!(api.learned.observe(Leg::Trip, pickup, hour, 100.0, 200.0));
        }
    }
    let (status, slower) = api.get(q).await;
    assert_eq!(status, 200, "{slower}");
    assert_eq!(slower["distance_m"], body["distance_m"]);
    let duration = body["duration_s"].as_i64().expect("duration");
    assert_eq!(slower["duration_s"].as_i64(), Some(duration * 2));
    assert!(
        slower["breakdown"]["time_minor"].as_i64() > b["time_minor"].as_i64(),
        "{slower}"
    );
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
    let info = &doc["info"];
    assert_eq!(info["title"], "BimRide trip API");
    assert!(
        info.get("contact").is_none(),
        "the library's own metadata: {info}"
    );
    assert_eq!(info["license"]["identifier"], "Apache-2.0");
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["rider"]["scheme"], "bearer", "{schemes}");
    assert_eq!(schemes["admin"]["scheme"], "bearer", "{schemes}");
    let book = &doc["paths"]["/v1/rides"]["post"];
    assert_eq!(book["security"], json!([{"rider": []}]));
    for status in [
        "202", "400", "401", "403", "413", "415", "422", "429", "503",
    ] {
        assert!(
            book["responses"][status].is_object(),
            "booking lacks {status}"
        );
    }
    let letters = &doc["paths"]["/v1/admin/dead-letters/{topic}"]["get"];
    assert_eq!(letters["security"], json!([{"admin": []}]));
    assert_eq!(
        letters["responses"]["200"]["content"]["application/json"]["schema"]["type"], "array",
        "the dead letters of a topic are a list"
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
        ("/v1/rides", "get"),
        ("/v1/rides/{id}", "get"),
        ("/v1/rides/{id}/cancel", "post"),
        ("/v1/surge", "get"),
        ("/v1/admin/dead-letters", "get"),
        ("/v1/admin/dead-letters/{topic}", "get"),
        ("/v1/admin/dead-letters/{topic}/replay", "post"),
        ("/v1/admin/dead-letters/{topic}/{partition}/{offset}", "get"),
        ("/v1/admin/tokens", "post"),
    ]
    .iter()
    .map(|(p, m)| (p.to_string(), m.to_string()))
    .collect();
    let mut expected = expected;
    expected.sort();
    assert_eq!(documented, expected);
    // Every documented operation is served: a route that did not exist would answer 404 or
    // 405 without the API's JSON error body.
    for (path, method) in &documented {
        let url = format!(
            "{}{}",
            api.url,
            path.replace("{id}", "ride-unknown")
                .replace("{topic}", "bimride.ride-events.dlq")
                .replace("{partition}", "0")
                .replace("{offset}", "999999")
        );
        let request = match method.as_str() {
            "get" => api.http.get(url),
            _ => api.http.post(url).json(&json!({})),
        };
        let bearer = if path.starts_with("/v1/admin") {
            ADMIN.to_owned()
        } else {
            token("rider-7")
        };
        let request = request.bearer_auth(bearer);
        let response = request.send().await.expect("answers");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(status, 405, "{method} {path}");
        assert!(
            status != 404
                || ["ride_not_found", "not_found"]
                    .contains(&body["error"]["code"].as_str().unwrap_or_default())
                    && !body["error"]["message"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("endpoint"),
            "{method} {path}: {status} {body}"
        );
    }
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn riders_list_their_own_rides_newest_first_and_a_store_away_is_a_503() {
    let api = api().await;
    let mut booked = Vec::new();
    for _ in 0..3 {
        let (status, body) = api.post("/v1/rides", &booking(), None).await;
        assert_eq!(status, 202, "{body}");
        let ride = body["ride_id"].as_str().expect("ride id").to_owned();
        api.ride_until(&ride, |v| v["status"] != Value::Null).await;
        booked.push(ride);
        // Distinct request times, so that the order is the booking order.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ids = |page: &Value| -> Vec<String> {
        page["rides"]
            .as_array()
            .expect("rides")
            .iter()
            .map(|r| r["ride_id"].as_str().expect("id").to_owned())
            .collect()
    };
    let (status, first) = api.get("/v1/rides?limit=2").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(ids(&first), [booked[2].clone(), booked[1].clone()]);
    let next = first["next"].as_str().expect("a next page").to_owned();
    let (status, second) = api.get(&format!("/v1/rides?limit=2&after={next}")).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(ids(&second), [booked[0].clone()]);
    assert_eq!(second["next"], Value::Null, "the last page");
    let (status, others) = api.get_as(Some(&token("rider-8")), "/v1/rides").await;
    assert_eq!(status, 200);
    assert!(ids(&others).is_empty(), "another rider sees none of them");
    for bad in [
        ("/v1/rides?limit=0", 400, "bad_request"),
        ("/v1/rides?limit=101", 400, "bad_request"),
        ("/v1/rides?after=nonsense", 422, "invalid_request"),
    ] {
        let (path, want, code) = bad;
        let (status, body) = api.get(path).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (want, &json!(code)),
            "{path}"
        );
    }
    let (status, _) = api.get_as(None, "/v1/rides").await;
    assert_eq!(status, 401);

    // The database goes away: a clear 503, and the cause only in the log.
    api.store.close().await;
    for path in [format!("/v1/rides/{}", booked[0]), "/v1/rides".to_owned()] {
        let (status, body) = api.get(&path).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (503, &json!("store_unavailable")),
            "{path}: {body}"
        );
        let message = body["error"]["message"].as_str().expect("message");
        assert!(
            !message.contains("pool") && !message.contains("sqlx"),
            "{message}"
        );
    }
    let (status, body) = api.post("/v1/rides", &booking(), Some("k-away")).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (503, &json!("store_unavailable"))
    );
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn riders_see_and_cancel_only_their_own_rides() {
    let api = api().await;
    let (status, body) = api.post_as(None, "/v1/rides", &booking(), None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthorized"))
    );
    let (status, _) = api
        .post_as(Some("not-a-token"), "/v1/rides", &booking(), None)
        .await;
    assert_eq!(status, 401);
    let forged = bimride_auth::Authority::new(&bimride_auth::Secret::new("x".repeat(40)), None)
        .expect("other authority")
        .rider_token("rider-7", Duration::from_secs(60))
        .expect("token");
    let (status, _) = api
        .post_as(Some(forged.expose()), "/v1/rides", &booking(), None)
        .await;
    assert_eq!(status, 401, "a token signed elsewhere is refused");
    let (status, body) = api
        .post_as(Some(&token("rider-8")), "/v1/rides", &booking(), None)
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("forbidden")),
        "rider-8 cannot book as rider-7"
    );

    let (status, booked) = api.post("/v1/rides", &booking(), None).await;
    assert_eq!(status, 202, "{booked}");
    let ride = booked["ride_id"].as_str().expect("ride id").to_owned();
    api.ride_until(&ride, |v| v["status"] == "requested").await;
    let (status, body) = api
        .get_as(Some(&token("rider-8")), &format!("/v1/rides/{ride}"))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("ride_not_found")),
        "another rider's ride is as unknown as a missing one"
    );
    let (status, _) = api
        .post_as(
            Some(&token("rider-8")),
            &format!("/v1/rides/{ride}/cancel"),
            &json!({}),
            None,
        )
        .await;
    assert_eq!(status, 404, "nor can it be cancelled by them");
    let (status, _) = api.get_as(None, &format!("/v1/rides/{ride}")).await;
    assert_eq!(status, 401);
    let (status, _) = api.get(&format!("/v1/rides/{ride}")).await;
    assert_eq!(status, 200, "the owner sees it");
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_need_the_admin_credential() {
    let api = api().await;
    for bearer in [None, Some(token("rider-7")), Some("x".repeat(ADMIN.len()))] {
        let (status, body) = api
            .get_as(bearer.as_deref(), "/v1/admin/dead-letters")
            .await;
        assert!(
            status == 401 || status == 403,
            "{bearer:?}: {status} {body}"
        );
        let (status, _) = api
            .post_as(
                bearer.as_deref(),
                "/v1/admin/dead-letters/bimride.ride-events.dlq/replay",
                &json!({}),
                None,
            )
            .await;
        assert!(status == 401 || status == 403, "replay: {status}");
    }
    let (status, summary) = api.get_as(Some(ADMIN), "/v1/admin/dead-letters").await;
    assert_eq!(status, 200, "{summary}");
    assert!(
        summary
            .as_array()
            .expect("topics")
            .iter()
            .any(|t| t["topic"] == "bimride.ride-events.dlq")
    );
    let (status, body) = api
        .get_as(Some(ADMIN), "/v1/admin/dead-letters/bimride.ride-events")
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("not_found")),
        "only dead-letter topics are read"
    );
    let (status, issued) = api
        .post_as(
            Some(ADMIN),
            "/v1/admin/tokens",
            &json!({"rider_id": "rider-9"}),
            None,
        )
        .await;
    assert_eq!(status, 200, "{issued}");
    let mut own = booking();
    own["rider_id"] = json!("rider-9");
    let (status, _) = api
        .post_as(issued["token"].as_str(), "/v1/rides", &own, None)
        .await;
    assert_eq!(status, 202, "an issued token books for its rider");
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rider_over_the_rate_limit_is_told_to_wait() {
    let one = std::num::NonZeroU32::MIN;
    let api = api_limited(bimride_api::RateLimit {
        per_second: one,
        burst: std::num::NonZeroU32::new(5).expect("five"),
        ..bimride_api::RateLimit::default()
    })
    .await;
    let hot = token("rider-hot");
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..12 {
        let r = api
            .http
            .get(format!("{}/v1/rides/ride-nope", api.url))
            .bearer_auth(&hot)
            .send()
            .await
            .expect("answers");
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            retry_after = r.headers().get("retry-after").cloned();
            let body: Value = r.json().await.expect("json error");
            assert_eq!(body["error"]["code"], "rate_limited");
        }
    }
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(
        (6..=7).contains(&limited),
        "a burst of 5 then 1/s: {statuses:?}"
    );
    assert!(retry_after.is_some(), "429 says when to retry");
    let (status, _) = api
        .get_as(Some(&token("rider-calm")), "/v1/rides/ride-nope")
        .await;
    assert_eq!(status, 404, "other riders are not limited");
    api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_keeps_failing_authentication_is_slowed_and_others_are_not() {
    let api = api_limited(bimride_api::RateLimit {
        failure_burst: std::num::NonZeroU32::new(3).expect("three"),
        ..bimride_api::RateLimit::default()
    })
    .await;
    let guess = "y".repeat(ADMIN.len());
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let (status, _) = api.get_as(Some(&guess), "/v1/admin/dead-letters").await;
        statuses.push(status);
    }
    assert_eq!(statuses, [403, 403, 403, 429], "three guesses, then a wait");
    // While it waits, not even the right credential is checked from that address.
    let response = api
        .http
        .get(format!("{}/v1/admin/dead-letters", api.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    let (status, _) = api.get_as(None, "/v1/rides").await;
    assert_eq!(
        status, 429,
        "an unauthenticated caller from there waits too"
    );

    // Another address is served as usual.
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let status = elsewhere
        .get(format!("{}/v1/admin/dead-letters", api.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("answers")
        .status();
    assert_eq!(status, 200);
    api.shutdown().await;
}

/// One generated request against the booking endpoint.
#[derive(Debug, Clone)]
struct Fuzzed {
    bearer: Option<String>,
    key: Option<Vec<u8>>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

mod generate {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            ".{0,40}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(".{0,12}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A valid booking with one field replaced, removed or added.
    fn mutated_booking() -> impl Strategy<Value = Vec<u8>> {
        let fields = prop_oneof![
            Just(vec!["rider_id"]),
            Just(vec!["product"]),
            Just(vec!["pickup"]),
            Just(vec!["pickup", "lat"]),
            Just(vec!["pickup", "lng"]),
            Just(vec!["dropoff", "lat"]),
            Just(vec!["extra"]),
        ];
        let rider = "fuzz-[0-9]{1,6}";
        (fields, proptest::option::of(json_value()), rider).prop_map(|(path, value, rider)| {
            let mut b = booking();
            b["rider_id"] = json!(rider);
            let (last, parents) = path.split_last().expect("a field");
            let mut at = &mut b;
            for p in parents {
                at = &mut at[*p];
            }
            match (value, at.as_object_mut()) {
                (Some(v), Some(o)) => {
                    o.insert((*last).to_owned(), v);
                }
                (None, Some(o)) => {
                    o.remove(*last);
                }
                _ => {}
            }
            b.to_string().into_bytes()
        })
    }

    /// Numbers JSON cannot carry, and ones out of range, spliced in as text.
    fn odd_numbers() -> impl Strategy<Value = Vec<u8>> {
        let number = prop_oneof![
            Just("NaN"),
            Just("Infinity"),
            Just("-Infinity"),
            Just("1e999"),
            Just("-1e999"),
            Just("1e-999"),
            Just("-0"),
            Just("90.0000001"),
            Just("-180.5"),
            Just("9007199254740993"),
            Just("\"52.37\""),
            Just("0x10"),
        ];
        (number, 0..4usize, 0..1_000_000u32).prop_map(|(n, at, rider)| {
            let coords = ["52.3731", "4.8922", "52.3584", "4.8811"];
            let mut c = coords.map(str::to_owned);
            c[at] = n.to_owned();
            format!(
                r#"{{"rider_id":"odd-{rider}","pickup":{{"lat":{},"lng":{}}},"dropoff":{{"lat":{},"lng":{}}},"product":"economy"}}"#,
                c[0], c[1], c[2], c[3]
            )
            .into_bytes()
        })
    }

    /// A booking that should be accepted: somewhere in the centre, by a rider of its own.
    fn valid_booking() -> impl Strategy<Value = Vec<u8>> {
        let near = || (-0.02..0.02f64, -0.03..0.03f64);
        let product = prop_oneof![Just("economy"), Just("comfort"), Just("xl")];
        ("ok-[0-9]{1,6}", near(), near(), product).prop_map(|(rider, p, d, product)| {
            json!({
                "rider_id": rider,
                "pickup": {"lat": 52.3731 + p.0, "lng": 4.8922 + p.1},
                "dropoff": {"lat": 52.3731 + d.0, "lng": 4.8922 + d.1},
                "product": product,
            })
            .to_string()
            .into_bytes()
        })
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => valid_booking(),
            4 => mutated_booking(),
            2 => odd_numbers(),
            2 => json_value().prop_map(|v| v.to_string().into_bytes()),
            2 => prop::collection::vec(any::<u8>(), 0..512),
            1 => "\\PC{0,200}".prop_map(String::into_bytes),
            1 => (16_000..40_000usize).prop_map(|n| {
                let mut b = booking();
                b["rider_id"] = json!("é".repeat(n / 2));
                b.to_string().into_bytes()
            }),
        ]
    }

    #[derive(Debug, Clone)]
    enum Bearer {
        Own,
        Token(String),
        None,
    }

    pub fn request() -> impl Strategy<Value = Fuzzed> {
        // Mostly the token of the rider the body names, so that valid bookings get through.
        let bearer = prop_oneof![
            8 => Just(Bearer::Own),
            1 => "[a-z0-9-]{1,12}".prop_map(|r| Bearer::Token(token(&r))),
            1 => Just(Bearer::None),
            1 => ".{0,64}".prop_map(Bearer::Token),
        ];
        let key = proptest::option::of(prop_oneof![
            "[ -~]{0,300}".prop_map(String::into_bytes),
            prop::collection::vec(0x80u8..=0xff, 1..40),
        ]);
        let content_type = prop_oneof![
            8 => Just(Some("application/json")),
            1 => Just(None),
            1 => Just(Some("text/plain")),
            1 => Just(Some("application/json; charset=utf-16")),
        ];
        (bearer, key, content_type, body()).prop_map(|(bearer, key, content_type, body)| {
            let bearer = match bearer {
                Bearer::Own => serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|b| b["rider_id"].as_str().map(str::to_owned))
                    // No token names an invalid rider: such a body comes with another's.
                    .filter(|r| bimride_auth::valid_rider_id(r))
                    .map(|r| token(&r))
                    .or_else(|| Some(token("someone"))),
                Bearer::Token(t) => Some(t),
                Bearer::None => None,
            };
            Fuzzed {
                bearer,
                key,
                content_type,
                body,
            }
        })
    }
}

async fn send(api: &Api, case: &Fuzzed) -> (u16, Value) {
    let mut request = api
        .http
        .post(format!("{}/v1/rides", api.url))
        .body(case.body.clone());
    if let Some(t) = &case.bearer
        && let Ok(v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
    {
        request = request.header("authorization", v);
    }
    if let Some(k) = &case.key
        && let Ok(v) = reqwest::header::HeaderValue::from_bytes(k)
    {
        request = request.header("idempotency-key", v);
    }
    if let Some(ct) = case.content_type {
        request = request.header("content-type", ct);
    }
    let response = request.send().await.expect("the API answers");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Generated requests: bad JSON, wrong types, huge bodies, Unicode, NaN, infinite and
/// out-of-range coordinates, odd content types, missing, strange and reused idempotency keys,
/// and bad tokens. Every answer is a 202 booking or a 4xx JSON error; never a 5xx.
#[test]
fn fuzzed_bookings_get_a_booking_or_a_4xx_json_error() {
    use proptest::prelude::{prop_assert, prop_assert_eq};
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Forged tokens are part of the input: the limit on failed authentication would soon
    // answer everything from this address with 429.
    let api = runtime.block_on(api_limited(bimride_api::RateLimit {
        failure_burst: std::num::NonZeroU32::MAX,
        ..bimride_api::RateLimit::default()
    }));
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    let seen = std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
    let outcome = runner.run(
        &(generate::request(), generate::request()),
        |(first, second)| {
            let (status, body) = runtime.block_on(send(&api, &first));
            *seen.lock().expect("tally").entry(status).or_default() += 1;
            if status == 202 {
                prop_assert!(body["ride_id"].is_string(), "{body}");
            } else {
                prop_assert!((400..500).contains(&status), "{status}: {body}");
                prop_assert!(
                    body["error"]["code"].is_string() && body["error"]["message"].is_string(),
                    "{status} without a JSON error: {body}"
                );
            }
            // The same key again, from the same rider: the same ride for the same body, and
            // a refusal for another body.
            if status == 202 && first.key.is_some() {
                let again = Fuzzed {
                    body: second.body.clone(),
                    ..first.clone()
                };
                let (status2, body2) = runtime.block_on(send(&api, &again));
                if second.body == first.body {
                    prop_assert_eq!(status2, 202);
                    prop_assert_eq!(&body2["ride_id"], &body["ride_id"]);
                } else {
                    prop_assert!(
                        (400..500).contains(&status2) && body2["error"]["code"].is_string(),
                        "reused key: {status2} {body2}"
                    );
                    if status2 == 422 && body2["error"]["code"] != "idempotency_key_reused" {
                        // The second body was itself invalid: refused before the key was looked up.
                        prop_assert!(body2["error"]["code"] == "invalid_request");
                    }
                }
            }
            Ok::<(), TestCaseError>(())
        },
    );
    runtime.block_on(api.shutdown());
    outcome.unwrap_or_else(|e| panic!("{e}"));
    let seen = seen.into_inner().expect("tally");
    let accepted = seen.get(&202).copied().unwrap_or(0);
    assert!(
        accepted > 20,
        "the generator reaches valid bookings too: {seen:?}"
    );
    assert!(
        seen.keys().filter(|s| **s >= 400).count() >= 5,
        "and many kinds of refusal: {seen:?}"
    );
}
