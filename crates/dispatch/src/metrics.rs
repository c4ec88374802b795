//! Dispatch metrics. Labels are outcomes only, never ride or driver ids.

use std::sync::LazyLock;

use bimride_events::{Millis, RideEvent};
use bimride_telemetry::{counter, gauge, histogram, latency_buckets};
use prometheus::{Gauge, Histogram, IntCounterVec, IntGauge};

use crate::engine::Output;

pub static DECISIONS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_dispatch_decisions_total",
        "Dispatch decisions published, by kind: offer, declined, expired, assigned, cancelled.",
        &["decision"],
    )
});

pub static WAITING: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "bimride_dispatch_waiting_rides",
        "Rides waiting for a driver in this instance's regions.",
    )
});

pub static DRIVERS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "bimride_dispatch_known_drivers",
        "Drivers known in this instance's regions.",
    )
});

pub static ROUND_TRIP: LazyLock<Gauge> = LazyLock::new(|| {
    prometheus::register_gauge!(
        "bimride_dispatch_answer_round_trip_seconds",
        "How long drivers' answers take from offer to dispatch (a moving average); offers wait this long past their timeout."
    )
    .unwrap_or_else(|e| unreachable!("registered once: {e}"))
});

pub static OWNED_PARTITIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "bimride_dispatch_owned_partitions",
        "Partitions of the dispatch inputs this instance owns.",
    )
});

pub static MATCH_TIME: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "bimride_dispatch_match_seconds",
        "From a ride's request to its driver's assignment, in event time.",
        &[],
        latency_buckets(),
    )
    .with_label_values(&[] as &[&str])
});

/// Records how long a ride waited for its driver.
pub fn observe_match(requested: Millis, assigned: Millis) {
    MATCH_TIME.observe((assigned.0 - requested.0).max(0) as f64 / 1000.0);
}

pub fn count(output: &Output) {
    let decision = match output {
        Output::Log(_) => return,
        Output::Ride(RideEvent::OfferSent(_)) => "offer",
        Output::Ride(RideEvent::OfferAnswered(a)) => match a.answer {
            bimride_events::OfferAnswer::Declined => "declined",
            _ => "expired",
        },
        Output::Ride(RideEvent::DriverAssigned(_)) => "assigned",
        Output::Ride(RideEvent::RideCancelled(_)) => "cancelled",
        Output::Ride(_) => "other",
    };
    DECISIONS.with_label_values(&[decision]).inc();
}
