//! Record counters shared by every producer and consumer. Labels are topics and reasons only.

use std::sync::LazyLock;

use prometheus::{IntCounterVec, IntGauge, register_int_counter_vec, register_int_gauge};

/// Registers a counter family with the default registry; every service's metrics use it.
pub fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    // Registration fails only on a duplicate name, which is a programming error caught by
    // any test that touches the metric.
    register_int_counter_vec!(name, help, labels)
        .unwrap_or_else(|e| panic!("metric {name} registers once: {e}"))
}

/// Registers a gauge with the default registry.
pub fn gauge(name: &str, help: &str) -> IntGauge {
    register_int_gauge!(name, help).unwrap_or_else(|e| panic!("metric {name} registers once: {e}"))
}

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

pub static RETRIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_record_retries_total",
        "Retriable failures while processing a record, per topic.",
        &["topic"],
    )
});
