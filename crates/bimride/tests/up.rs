//! `bimride up` as a user runs it: the real binary, outside clients, and Ctrl-C.

mod common;

use std::time::Duration;

use common::{Up, metric};

use bimride_codec::{Codec, RegistryConfig};
use bimride_events::{Millis, SurgeUpdated, Topic, Topics};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_an_embedded_cluster_and_registry_to_outside_clients_and_stops_on_ctrl_c() {
    scenario(
        Up::start().await,
        &Topics::default(),
        Duration::from_secs(30),
    )
    .await;
}

/// The same on Apache Kafka, as a user with Java and no Docker runs it after
/// `scripts/kafka.sh start`: the run's shared cluster, under a namespace of this test's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_on_apache_kafka_serves_outside_clients_and_stops_on_ctrl_c() {
    let brokers = bimride_tests::kafka::shared_brokers();
    let namespace = format!("up{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let registry_log = format!("{namespace}._schemas");
    let group = |role: &str| format!("{namespace}-{role}");
    let (dispatch, billing, txn, notifications) = (
        group("dispatch"),
        group("billing"),
        group("billing-0"),
        group("notifications"),
    );
    let up = Up::start_with(&[
        "--brokers",
        &brokers,
        "--namespace",
        &namespace,
        "--registry-topic",
        &registry_log,
        "--dispatch-group",
        &dispatch,
        "--billing-group",
        &billing,
        "--billing-transactional-id",
        &txn,
        "--notifications-group",
        &notifications,
    ])
    .await;
    assert_eq!(up.field("kafka bootstrap servers:"), brokers);
    // A cluster's first group and first transaction create its internal topics (50 partitions
    // each, three replicas), which on two cores takes a while on a freshly started cluster.
    scenario(up, &Topics::new(&namespace), Duration::from_secs(60)).await;
}

/// `lifecycle_within`: how soon after start the simulated city has completed a ride.
async fn scenario(up: Up, topics: &Topics, lifecycle_within: Duration) {
    let started = up.started;
    let field = |name: &str| up.field(name);
    let http = up.http.clone();
    let system: Value = reqwest::get(format!("{http}/v1/system"))
        .await
        .expect("system answers")
        .json()
        .await
        .expect("json");
    let brokers = system["kafka_bootstrap_servers"]
        .as_str()
        .expect("brokers")
        .to_owned();
    let registry = system["schema_registry_url"]
        .as_str()
        .expect("registry")
        .to_owned();
    assert_eq!(brokers, field("kafka bootstrap servers:"));
    assert_eq!(brokers.split(',').count(), 3, "three brokers");
    assert_eq!(system["city"]["name"], "amsterdam");
    let ready = reqwest::get(format!("{http}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let subjects: Vec<String> = reqwest::get(format!("{registry}/subjects"))
        .await
        .expect("registry answers")
        .json()
        .await
        .expect("json");
    assert!(subjects.contains(&topics.value_subject(Topic::RideEvents)));

    // An outside client produces a Confluent-framed record and reads it back.
    let codec =
        Codec::new(&RegistryConfig::new(&registry).with_topics(topics.clone())).expect("codec");
    let surge = SurgeUpdated {
        event_id: "e-1".into(),
        occurred_at: Millis(1_764_000_000_000),
        cell: "881969536dfffff".into(),
        multiplier_milli: 1_300,
        demand: 13,
        supply: 10,
        window_end: Millis(1_764_000_000_000),
    };
    let bytes = codec.encode(&surge).await.expect("encodes");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to(topics.name(Topic::Surge))
                .key(&surge.cell)
                .payload(&bytes),
            Duration::from_secs(10),
        )
        .await
        .expect("delivered");
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "outside-client")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    // A plain reader needs no group membership: assign every partition from the start.
    let partitions = system_partitions(&consumer, topics.name(Topic::Surge)).await;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topics.name(Topic::Surge), p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("record within 30s")
        .expect("record")
        // Detached, so that no message still refers to the consumer when it is dropped.
        .detach();
    let decoded: SurgeUpdated = codec
        .decode(message.payload().expect("payload"))
        .await
        .expect("decodes");
    assert_eq!(decoded, surge);
    drop(consumer);
    drop(producer);

    // A ride booked over HTTP comes back from the log.
    let http_client = common::rider_client("rider-1");
    let booked = book(
        &http_client,
        &http,
        serde_json::json!({
            "rider_id": "rider-1",
            "pickup": {"lat": 52.3731, "lng": 4.8922},
            "dropoff": {"lat": 52.3584, "lng": 4.8811},
            "product": "comfort"
        }),
    )
    .await;
    let ride = booked["ride_id"].as_str().expect("ride id");
    // The simulated city's drivers are online within seconds: dispatch gives the ride one.
    let deadline = tokio::time::Instant::now() + lifecycle_within;
    loop {
        let response = http_client
            .get(format!("{http}/v1/rides/{ride}"))
            .send()
            .await
            .expect("ride answers");
        if response.status() == 200 {
            let view: Value = response.json().await.expect("json");
            if view["driver_id"].is_string() {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the booked ride got no driver within {lifecycle_within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Within 30 seconds of start the simulated city books, assigns, drives, completes,
    // charges and notifies rides on its own, and keeps doing so.
    let scrape = || async {
        http_client
            .get(format!("{http}/metrics"))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("text")
    };
    let lifecycle = [
        "bimride_dispatch_decisions_total{decision=\"assigned\"}",
        "bimride_billing_charges_total{kind=\"trip\"}",
        "bimride_notifications_sent_total{template=\"receipt\"}",
    ];
    let first: Vec<f64> = loop {
        let metrics = scrape().await;
        let values: Vec<f64> = lifecycle.iter().map(|m| metric(&metrics, m)).collect();
        if values.iter().all(|v| *v >= 1.0) {
            break values;
        }
        assert!(
            started.elapsed() < lifecycle_within,
            "{lifecycle_within:?} after start, the city has not completed the lifecycle: {lifecycle:?} = {values:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = scrape().await;
        let now: Vec<f64> = lifecycle.iter().map(|m| metric(&metrics, m)).collect();
        if now.iter().zip(&first).all(|(n, f)| n > f) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lifecycle stalled: {lifecycle:?} went from {first:?} to {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The booked ride, once driven, shows its fare and the messages sent about it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let view = get_json(&http_client, &format!("{http}/v1/rides/{ride}")).await;
        let templates: Vec<&str> = view["notifications"]
            .as_array()
            .map(|a| a.iter().filter_map(|n| n["template"].as_str()).collect())
            .unwrap_or_default();
        // The store reads the ride's topics in no set order: its completion may come a
        // moment after its charge and receipt.
        if view["fare"]["amount_minor"]
            .as_i64()
            .is_some_and(|f| f >= 1_000)
            && templates.contains(&"receipt")
            && templates.contains(&"booking_confirmed")
            && view["status"] == "completed"
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the booked ride was not charged and notified within a minute: {view}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Flooding one spot with bookings raises its cell's surge within about a minute, and
    // the quote there carries it.
    let spot = serde_json::json!({"lat": 52.3600, "lng": 4.8700});
    let mut cell = String::new();
    for _ in 0..80 {
        let booked = book(
            &http_client,
            &http,
            serde_json::json!({
                "rider_id": "rider-1",
                "pickup": spot,
                "dropoff": {"lat": 52.3700, "lng": 4.8900},
                "product": "economy"
            }),
        )
        .await;
        cell = booked["pickup_cell"].as_str().expect("cell").to_owned();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let surge = get_json(&http_client, &format!("{http}/v1/surge")).await;
        let level = surge["cells"]
            .as_array()
            .and_then(|cells| cells.iter().find(|c| c["cell"] == cell.as_str()))
            .and_then(|c| c["multiplier_milli"].as_i64());
        if level.is_some_and(|m| m > 1_000) {
            let quote = get_json(&http_client, &format!(
                    "{http}/v1/quote?pickup_lat=52.36&pickup_lng=4.87&dropoff_lat=52.37&dropoff_lng=4.89&product=economy"
                )).await;
            assert!(
                quote["surge_milli"].as_i64().is_some_and(|m| m > 1_000),
                "{quote}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "flooding {cell} raised no surge within 90s: {surge}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Operators read dead letters with the admin credential, and only with it.
    let dlq = |admin: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_bimride"))
            .args(["dlq", "--api", &http, "list"])
            .env("BIMRIDE_ADMIN_TOKEN", admin)
            .output()
            .expect("bimride dlq runs")
    };
    let listed = dlq(common::ADMIN);
    assert!(listed.status.success(), "{listed:?}");
    let summary: Value = serde_json::from_slice(&listed.stdout).expect("json summary");
    assert!(
        summary.as_array().is_some_and(|t| t.len() >= 6),
        "{summary}"
    );
    let replay = std::process::Command::new(env!("CARGO_BIN_EXE_bimride"))
        .args(["dlq", "--api", &http, "replay"])
        .arg(topics.dead_letter(Topic::RideEvents))
        .args(["--reason", "not_wire_format"])
        .env("BIMRIDE_ADMIN_TOKEN", common::ADMIN)
        .output()
        .expect("bimride dlq replay runs");
    assert!(replay.status.success(), "{replay:?}");
    let replayed: Value = serde_json::from_slice(&replay.stdout).expect("json");
    assert!(replayed["replayed"].is_u64(), "{replayed}");
    let wrong_admin = "not-the-admin-credential-at-all";
    let refused = dlq(wrong_admin);
    assert!(!refused.status.success(), "a wrong credential is refused");
    let rider_token = common::rider_token("rider-1");

    // An operator's audit of the running city finds nothing wrong in what has settled. The
    // namespace is the prefix of the topics' names.
    let namespace = topics
        .name(Topic::RideEvents)
        .trim_end_matches(".ride-events")
        .to_owned();
    let report_path =
        std::env::temp_dir().join(format!("bimride-audit-{}.json", uuid::Uuid::new_v4()));
    let audit = std::process::Command::new(env!("CARGO_BIN_EXE_bimride"))
        .args([
            "audit",
            "--brokers",
            &brokers,
            "--schema-registry",
            &registry,
        ])
        .args(["--namespace", &namespace, "--settle", "10m", "--report"])
        .arg(&report_path)
        .output()
        .expect("bimride audit runs");
    assert!(
        audit.status.success(),
        "the audit found discrepancies:\n{}\n{}",
        String::from_utf8_lossy(&audit.stdout),
        String::from_utf8_lossy(&audit.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).expect("the JSON report"))
            .expect("json");
    assert_eq!(report["clean"], true, "{report}");
    assert!(report["rides"].as_u64().is_some_and(|n| n > 0), "{report}");
    std::fs::remove_file(&report_path).expect("remove the report");

    // Ctrl-C: a clean stop with exit code 0.
    let log = up.log.clone();
    up.interrupt().await;

    // The debug-level log of the whole run carries no secret, token or credential.
    let log = std::fs::read_to_string(&log).expect("log");
    assert!(log.contains("ride requested"), "the log is the city's");
    assert!(
        !log.contains('\u{1b}'),
        "a log written to a file carries no terminal colour codes"
    );
    let alarming: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONFWARN") || l.contains(" ERROR "))
        .collect();
    assert!(
        alarming.is_empty(),
        "a normal run logs no configuration warning and no error:\n{}",
        alarming.join("\n")
    );
    for secret in [
        common::SECRET,
        common::ADMIN,
        wrong_admin,
        rider_token.as_str(),
    ] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_bimride"))
        .args(["api", "--help"])
        .env("BIMRIDE_AUTH_SECRET", common::SECRET)
        .env("BIMRIDE_ADMIN_TOKEN", common::ADMIN)
        .env("BIMRIDE_KAFKA_SASL_PASSWORD", "sasl-password-never-shown")
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("BIMRIDE_AUTH_SECRET"), "{help}");
    for secret in [common::SECRET, common::ADMIN, "sasl-password-never-shown"] {
        assert!(
            !help.contains(secret),
            "--help shows a secret from the environment"
        );
    }
}

async fn system_partitions(consumer: &StreamConsumer, topic: &str) -> i32 {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let count = metadata.topics()[0].partitions().len();
    i32::try_from(count).expect("partition count")
}

/// GETs `url` and parses its JSON body.
async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// Books a ride through the API and returns its JSON answer.
async fn book(client: &reqwest::Client, http: &str, body: Value) -> Value {
    client
        .post(format!("{http}/v1/rides"))
        .json(&body)
        .send()
        .await
        .expect("booking answers")
        .json()
        .await
        .expect("json")
}
