//! Record counters shared by every producer and consumer. Labels are topics and reasons only.
//! The registration helpers are `bimride-telemetry`'s.

use std::sync::LazyLock;

use bimride_events::Millis;
use bimride_telemetry::{counter, gauges, histogram, latency_buckets};
use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};
use rdkafka::statistics::Statistics;

pub static CONSUMED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_records_consumed_total",
        "Records consumed, per topic.",
        &["topic"],
    )
});

pub static PRODUCED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_records_produced_total",
        "Records acknowledged by the brokers, per topic.",
        &["topic"],
    )
});

pub static DEAD_LETTERED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_records_dead_lettered_total",
        "Records sent to a dead-letter topic, per source topic and reason.",
        &["topic", "reason"],
    )
});

pub static DEAD_LETTERS_REPLAYED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_dead_letters_replayed_total",
        "Dead letters written back to their source topic by a replay, per source topic.",
        &["topic"],
    )
});

pub static RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_record_retries_total",
        "Retriable failures while processing a record, per topic.",
        &["topic"],
    )
});

pub static TRANSACTIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_transactions_total",
        "Kafka transactions, by service and outcome: committed or aborted.",
        &["stage", "outcome"],
    )
});

pub static TRANSACTION_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "bimride_transaction_seconds",
        "A committed Kafka transaction, from its begin to its commit's return, per service.",
        &["stage"],
        latency_buckets(),
    )
});

pub static STAGE_LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram(
        "bimride_stage_latency_seconds",
        "From an event's time to its processing by a stage, per stage and topic.",
        &["stage", "topic"],
        latency_buckets(),
    )
});

pub static CONSUMER_LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauges(
        "bimride_consumer_lag",
        "Records behind the partition's end, per stage, topic and assigned partition.",
        &["stage", "topic", "partition"],
    )
});

/// Records that `stage` processed an event that happened at `occurred`.
pub fn observe_stage(stage: &str, topic: &str, occurred: Millis) {
    // Clocks of other hosts may run ahead; a negative delay counts as none.
    let seconds = (Millis::now().0 - occurred.0).max(0) as f64 / 1000.0;
    STAGE_LATENCY
        .with_label_values(&[stage, topic])
        .observe(seconds);
}

/// Publishes the consumer lag of every assigned partition from librdkafka's statistics.
pub fn record_lag(stage: &str, statistics: &Statistics) {
    for (topic, t) in &statistics.topics {
        for (partition, p) in &t.partitions {
            // -1 is librdkafka's internal partition; a lag of -1 means not assigned or unknown.
            if *partition < 0 {
                continue;
            }
            let labels = [stage, topic.as_str(), &partition.to_string()];
            if p.consumer_lag >= 0 {
                CONSUMER_LAG.with_label_values(&labels).set(p.consumer_lag);
            } else {
                let _ = CONSUMER_LAG.remove_label_values(&labels);
            }
        }
    }
}

/// How often consumers report statistics, and so their lag.
pub const STATISTICS_INTERVAL_MS: &str = "5000";
