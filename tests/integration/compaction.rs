//! Real compaction on Apache Kafka: the log cleaner leaves `_schemas` and the surge topic with
//! the latest value of each key, and readers rebuilt from them see the latest state.

use std::collections::BTreeMap;
use std::time::Duration;

use bimride_events::{SurgeUpdated, Topic};
use bimride_kafka::{Cleanup, TopicSpec};
use bimride_tests::*;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use tokio_util::sync::CancellationToken;

/// Segments that roll every 100 ms and a cleaner that takes any dirt, so that a test sees
/// compaction within the cleaner's 15 s back-off instead of after a segment fills.
async fn compact_eagerly(config: &bimride_kafka::KafkaConfig, topics: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = config.client().create().expect("admin");
    let alters: Vec<AlterConfig<'_>> = topics
        .iter()
        .map(|t| {
            AlterConfig::new(ResourceSpecifier::Topic(t))
                .set("cleanup.policy", "compact")
                .set("segment.ms", "100")
                .set("min.cleanable.dirty.ratio", "0.01")
                .set("min.compaction.lag.ms", "0")
                .set("delete.retention.ms", "100")
        })
        .collect();
    for result in admin
        .alter_configs(&alters, &AdminOptions::new())
        .await
        .expect("alter configs")
    {
        result.expect("topic config altered");
    }
}

/// Every (key, payload) of `topic`, oldest first, as any reader sees it.
async fn records(config: &bimride_kafka::KafkaConfig, topic: String) -> Vec<(String, Vec<u8>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        let reader: BaseConsumer = config
            .consumer(&format!("compaction-check-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader");
        let metadata = reader
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("metadata");
        let mut assign = TopicPartitionList::new();
        for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
            assign
                .add_partition_offset(&topic, p.id(), Offset::Beginning)
                .expect("partition");
        }
        reader.assign(&assign).expect("assign");
        let mut out = Vec::new();
        let mut idle_since = std::time::Instant::now();
        while idle_since.elapsed() < Duration::from_secs(2) {
            if let Some(Ok(m)) = reader.poll(Duration::from_millis(100)) {
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                out.push((key, m.payload().unwrap_or_default().to_vec()));
                idle_since = std::time::Instant::now();
            }
        }
        out
    })
    .await
    .expect("joins")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_compaction_keeps_the_latest_surge_per_cell_and_the_latest_registry_state() {
    let broker = Broker::kafka();
    let p = Pipeline::start(&broker).await;
    let surge_topic = p.topic(Topic::Surge);
    let log = broker.registry_log();
    compact_eagerly(&p.config, &[&surge_topic, &log]).await;

    // Twelve levels for each of three cells, and the registry's compatibility for one
    // subject changed twelve times, in segments that roll as they go.
    let cells = ["881969536dfffff", "881969536bfffff", "8819695369fffff"];
    let subject = p.config.topics().value_subject(Topic::Surge);
    let http = reqwest::Client::new();
    let mut last = BTreeMap::new();
    for round in 0..12 {
        for (i, cell) in cells.iter().enumerate() {
            let mut u = surge_updated(round * 10 + i as u32);
            u.cell = (*cell).to_owned();
            u.multiplier_milli = 1_000 + round as i32 * 50 + i as i32;
            p.producer.send_and_wait(&u).await.expect("surge sent");
            last.insert((*cell).to_owned(), u.multiplier_milli);
        }
        let level = if round % 2 == 0 { "FULL" } else { "BACKWARD" };
        let put = http
            .put(format!("{}/config/{subject}", p.registry.url()))
            .json(&serde_json::json!({ "compatibility": level }))
            .send()
            .await
            .expect("registry answers");
        assert!(put.status().is_success(), "{put:?}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // The cleaner runs every 15 s, and never touches the active segment: records of another
    // key keep rolling segments, so that the values above end up in cleanable ones. Within a
    // minute or two each cell has one record, its last level.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let raw: rdkafka::producer::FutureProducer = p.config.producer().create().expect("producer");
    let mut roll = surge_updated(999);
    roll.cell = "8819695367fffff".into();
    let roll = p.codec.encode(&roll).await.expect("encoded");
    loop {
        // A record in every partition: each has an active segment of its own.
        for partition in 0..p.config.partitions {
            raw.send(
                rdkafka::producer::FutureRecord::to(&surge_topic)
                    .partition(partition)
                    .key("roll")
                    .payload(&roll),
                Duration::from_secs(10),
            )
            .await
            .expect("roll sent");
        }
        let scratch = http
            .put(format!("{}/config/scratch-value", p.registry.url()))
            .json(&serde_json::json!({ "compatibility": "NONE" }))
            .send()
            .await
            .expect("registry answers");
        assert!(scratch.status().is_success());
        let mut per_cell: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for (_, payload) in records(&p.config, surge_topic.clone()).await {
            let u: SurgeUpdated = p.codec.decode(&payload).await.expect("decodes");
            per_cell.entry(u.cell).or_default().push(u.multiplier_milli);
        }
        let compacted = cells
            .iter()
            .all(|c| per_cell.get(*c).map(Vec::len) == Some(1));
        let schemas = records(&p.config, log.clone()).await;
        let config_records = schemas
            .iter()
            .filter(|(k, _)| k.contains("CONFIG") && k.contains(&subject))
            .count();
        if compacted && config_records == 1 {
            for cell in cells {
                assert_eq!(
                    per_cell[cell],
                    vec![last[cell]],
                    "{cell} keeps its latest level"
                );
            }
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not compacted within 120 s: surge {per_cell:?}, {config_records} config records for {subject}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // A registry rebuilt from the compacted log serves the latest state, and the same ids.
    let stop = CancellationToken::new();
    let rebuilt = kafka_registry(&p.config, &log, stop.clone()).await;
    let level: serde_json::Value = reqwest::get(format!("{}/config/{subject}", rebuilt.url()))
        .await
        .expect("answers")
        .json()
        .await
        .expect("json");
    assert_eq!(
        level["compatibilityLevel"], "BACKWARD",
        "the last of twelve changes"
    );
    let ids = codec(&rebuilt, &p.config)
        .register_all()
        .await
        .expect("registers");
    assert_eq!(ids, p.codec.register_all().await.expect("ids"));
    stop.cancel();

    // The catalogue asks for compaction of both, which is what the above relies on.
    for topic in [&surge_topic, &log] {
        let spec: TopicSpec = broker
            .catalogue(&p.config)
            .into_iter()
            .find(|s| s.name == *topic)
            .expect("in the catalogue");
        assert_eq!(spec.cleanup, Cleanup::Compact, "{topic}");
    }
}
