//! When each benchmarked ride reached each stage, from the booking's 202 to its receipt.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The stages a booked ride passes, after its booking is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Dispatch offered the ride to a driver: one decision, two hops from the booking.
    Offered,
    /// The driver accepted and dispatch confirmed: two more hops, through the driver's app.
    Assigned,
    Completed,
    Charged,
    Notified,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Offered,
        Stage::Assigned,
        Stage::Completed,
        Stage::Charged,
        Stage::Notified,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Offered => "offered",
            Stage::Assigned => "assigned",
            Stage::Completed => "completed",
            Stage::Charged => "charged",
            Stage::Notified => "notified",
        }
    }
}

/// Percentiles of one latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    /// Summarises a histogram recorded in microseconds.
    /// A ride that never reached the stage is recorded as [`NEVER_US`], and its quantiles are
    /// infinite: slower than any target.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| {
            if us >= NEVER_US {
                f64::INFINITY
            } else {
                us as f64 / 1000.0
            }
        };
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// What a ride that never reached a stage is recorded as: the histogram's bound, 10 minutes.
pub const NEVER_US: u64 = 600_000_000;

/// A histogram of microseconds from 1 µs to 10 minutes, 3 significant figures.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, NEVER_US, 3)
        .unwrap_or_else(|e| unreachable!("valid histogram bounds: {e}"))
}

#[derive(Debug, Default)]
struct Ride {
    accepted: Option<Instant>,
    reached: HashMap<Stage, Instant>,
    cancelled: bool,
}

/// How every accepted booking ended: each is exactly one of these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    pub assigned: u64,
    /// Cancelled before any assignment: `no_driver`, in a benchmark.
    pub cancelled: u64,
    /// Neither assigned nor cancelled when the step ended.
    pub undecided: u64,
}

/// Instants per ride and stage. Events may be seen before the booking's answer is, so both
/// sides are kept and paired when the step ends.
#[derive(Debug, Default)]
pub struct Tracker {
    rides: Mutex<HashMap<String, Ride>>,
}

impl Tracker {
    fn with(&self, ride_id: &str, f: impl FnOnce(&mut Ride)) {
        let mut rides = self.rides.lock().unwrap_or_else(|p| p.into_inner());
        f(rides.entry(ride_id.to_owned()).or_default());
    }

    pub fn accepted(&self, ride_id: &str, at: Instant) {
        self.with(ride_id, |r| r.accepted = Some(at));
    }

    /// Records the first time a ride is seen at `stage`; redeliveries keep the first.
    pub fn reached(&self, ride_id: &str, stage: Stage, at: Instant) {
        self.with(ride_id, |r| {
            r.reached.entry(stage).or_insert(at);
        });
    }

    /// Records that a ride was cancelled.
    pub fn cancelled(&self, ride_id: &str) {
        self.with(ride_id, |r| r.cancelled = true);
    }

    /// How the accepted bookings ended, so far.
    pub fn outcomes(&self) -> Outcomes {
        let rides = self.rides.lock().unwrap_or_else(|p| p.into_inner());
        let mut o = Outcomes::default();
        for ride in rides.values().filter(|r| r.accepted.is_some()) {
            if ride.reached.contains_key(&Stage::Assigned) {
                o.assigned += 1;
            } else if ride.cancelled {
                o.cancelled += 1;
            } else {
                o.undecided += 1;
            }
        }
        o
    }

    /// Rides accepted so far, and how many of them reached each stage.
    pub fn counts(&self) -> (u64, HashMap<Stage, u64>) {
        let rides = self.rides.lock().unwrap_or_else(|p| p.into_inner());
        let mut counts = HashMap::new();
        let mut accepted = 0;
        for ride in rides.values().filter(|r| r.accepted.is_some()) {
            accepted += 1;
            for stage in ride.reached.keys() {
                *counts.entry(*stage).or_insert(0) += 1;
            }
        }
        (accepted, counts)
    }

    /// Latency from acceptance to each stage, over every ride this process booked and had
    /// accepted: one that never reached a stage counts as [`NEVER_US`] there.
    pub fn latencies(&self) -> HashMap<Stage, Histogram<u64>> {
        let rides = self.rides.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: HashMap<Stage, Histogram<u64>> =
            Stage::ALL.iter().map(|s| (*s, histogram())).collect();
        for ride in rides.values() {
            let Some(accepted) = ride.accepted else {
                continue;
            };
            for (stage, h) in &mut out {
                let us = ride.reached.get(stage).map_or(NEVER_US, |at| {
                    (at.saturating_duration_since(accepted).as_micros() as u64)
                        .clamp(1, NEVER_US - 1)
                });
                h.saturating_record(us);
            }
        }
        out
    }

    pub fn clear(&self) {
        self.rides.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn stages_pair_with_acceptance_whichever_is_seen_first() {
        let t = Tracker::default();
        let t0 = Instant::now();
        // The assignment arrives before the booking's answer was processed.
        t.reached("a", Stage::Assigned, t0 + Duration::from_millis(12));
        t.accepted("a", t0 + Duration::from_millis(2));
        t.reached("a", Stage::Assigned, t0 + Duration::from_millis(90));
        t.accepted("b", t0);
        t.reached("b", Stage::Assigned, t0 + Duration::from_millis(30));
        // Another process's ride: never accepted here, never counted.
        t.reached("c", Stage::Assigned, t0);
        let (accepted, counts) = t.counts();
        assert_eq!(accepted, 2);
        assert_eq!(counts[&Stage::Assigned], 2);
        let p = Percentiles::of(&t.latencies()[&Stage::Assigned]);
        assert_eq!(p.count, 2);
        assert!((9.9..=10.1).contains(&p.p50_ms), "{p:?}");
        assert!((29.9..=30.1).contains(&p.max_ms), "{p:?}");
    }

    #[test]
    fn a_booking_never_assigned_counts_as_slower_than_any_target() {
        let t = Tracker::default();
        let t0 = Instant::now();
        for n in 0..100 {
            let ride = format!("r{n}");
            t.accepted(&ride, t0);
            if n < 98 {
                t.reached(&ride, Stage::Assigned, t0 + Duration::from_millis(5));
            }
        }
        t.cancelled("r98");
        let p = Percentiles::of(&t.latencies()[&Stage::Assigned]);
        assert_eq!(p.count, 100, "every accepted booking is counted");
        assert!((4.9..=5.1).contains(&p.p50_ms), "{p:?}");
        assert!(p.p99_ms.is_infinite() && p.max_ms.is_infinite(), "{p:?}");
        assert_eq!(
            t.outcomes(),
            Outcomes {
                assigned: 98,
                cancelled: 1,
                undecided: 1
            }
        );
        // With one in a hundred never assigned, the p99 is still a time.
        t.reached("r99", Stage::Assigned, t0 + Duration::from_millis(5));
        let p = Percentiles::of(&t.latencies()[&Stage::Assigned]);
        assert!((4.9..=5.1).contains(&p.p99_ms), "{p:?}");
    }
}
