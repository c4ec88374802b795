//! The registry keeps its ids across a restart, through the compacted `_schemas` topic.

use bimride_events::Topic;
use bimride_tests::*;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

async fn get(url: &str) -> Value {
    reqwest::get(url)
        .await
        .expect("registry answers")
        .json()
        .await
        .expect("json")
}

async fn registry_survives_a_restart(broker: Broker) {
    let config = broker.config();
    broker.provision(&config).await;
    let http = reqwest::Client::new();

    let first_stop = CancellationToken::new();
    let first = kafka_registry(&config, &broker.registry_log(), first_stop.clone()).await;
    let ids = codec(&first, &config)
        .register_all()
        .await
        .expect("register");
    let put = http
        .put(format!(
            "{}/config/{}",
            first.url(),
            config.topics().value_subject(Topic::Surge)
        ))
        .json(&json!({"compatibility": "FULL"}))
        .send()
        .await
        .expect("config put");
    assert!(put.status().is_success());
    // Soft-delete one subject so that deletions replay too.
    let scratch = r#"{"type":"record","name":"Scratch","fields":[{"name":"a","type":"int"}]}"#;
    let reg = http
        .post(format!("{}/subjects/scratch-value/versions", first.url()))
        .json(&json!({ "schema": scratch }))
        .send()
        .await
        .expect("register scratch");
    assert!(reg.status().is_success());
    let del = http
        .delete(format!("{}/subjects/scratch-value", first.url()))
        .send()
        .await
        .expect("delete");
    assert!(del.status().is_success());
    let subjects_before = get(&format!("{}/subjects", first.url())).await;
    first_stop.cancel();
    first
        .task
        .await
        .expect("join")
        .expect("first registry stops");

    let second_stop = CancellationToken::new();
    let second = kafka_registry(&config, &broker.registry_log(), second_stop.clone()).await;
    assert_eq!(
        get(&format!("{}/subjects", second.url())).await,
        subjects_before
    );
    for (topic, id) in &ids {
        let by_id = get(&format!("{}/schemas/ids/{id}", second.url())).await;
        assert_eq!(
            by_id["schema"]
                .as_str()
                .map(|s| serde_json::from_str::<Value>(s).expect("json")),
            Some(serde_json::from_str::<Value>(&topic.value_schema_json()).expect("json")),
            "{topic}"
        );
    }
    // Re-registering after the restart finds the same ids.
    assert_eq!(
        codec(&second, &config)
            .register_all()
            .await
            .expect("register again"),
        ids
    );
    let level = get(&format!(
        "{}/config/{}",
        second.url(),
        config.topics().value_subject(Topic::Surge)
    ))
    .await;
    assert_eq!(level["compatibilityLevel"], "FULL");
    let scratch_versions =
        reqwest::get(format!("{}/subjects/scratch-value/versions", second.url()))
            .await
            .expect("answers");
    assert_eq!(
        scratch_versions.status(),
        404,
        "soft delete survives the restart"
    );
    second_stop.cancel();
}

on_both_brokers!(registry_survives_a_restart: embedded_registry_survives_a_restart, kafka_registry_survives_a_restart);
