//! The feedback loop: every ETA observation published teaches the corrections that dispatch's
//! pickup ETAs and the API's quoted trip durations are scaled by. Each process that gives ETAs
//! runs its own feed over the whole ETA topic, with no group, so every instance learns alike.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bimride_domain::eta::{Learned, Leg};
use bimride_events::{EtaLeg, EtaObserved, Millis};
use bimride_kafka::partitioned::{Assignment, Fetch, Options, PartitionedError};
use bimride_kafka::projection::Projection;
use bimride_kafka::service::{Context, Service};
use bimride_telemetry::counter;
use h3o::CellIndex;
use prometheus::IntCounterVec;

use crate::tracker::leg_name;

/// How far back a starting feed learns from: a week holds every hour of every day.
pub const LEARN_FROM_SECS: u64 = 7 * 86_400;

static LEARNED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_eta_corrections_learned_total",
        "ETA observations a process learned corrections from, by leg, and whether each was taken or refused as broken.",
        &["leg", "outcome"],
    )
});

/// Teaches `learned` one observation: its distance-only estimate against what it took, in its
/// pickup cell and hour. Returns whether it was taken.
pub fn learn(learned: &Learned, o: &EtaObserved) -> bool {
    let leg = match o.leg {
        EtaLeg::Pickup => Leg::Pickup,
        EtaLeg::Trip => Leg::Trip,
    };
    let baseline = o.baseline();
    let taken = match (o.pickup_cell.parse::<CellIndex>(), u8::try_from(o.hour)) {
        (Ok(cell), Ok(hour)) if hour < 24 => {
            learned.observe(leg, cell, hour, baseline as f64, o.actual_secs as f64)
        }
        _ => false,
    };
    let outcome = if taken { "taken" } else { "refused" };
    LEARNED.with_label_values(&[leg_name(o.leg), outcome]).inc();
    taken
}

/// A service that keeps `learned` fed from the ETA topic, starting `since` back.
#[derive(Debug, Clone)]
pub struct LearnedFeed {
    pub learned: Arc<Learned>,
    pub since: Duration,
}

impl LearnedFeed {
    pub fn new(learned: Arc<Learned>) -> Self {
        Self {
            learned,
            since: Duration::from_secs(LEARN_FROM_SECS),
        }
    }
}

impl Service for LearnedFeed {
    const NAME: &'static str = "eta-learner";
    type Error = PartitionedError;

    async fn run(self, cx: Context) -> Result<(), PartitionedError> {
        let since = Millis(Millis::now().0 - self.since.as_millis() as i64);
        let mut options = Options::new("bimride-eta-learner", "eta-learner");
        options.fetch = Fetch::Batched;
        options.assignment = Assignment::Everything { since };
        Projection::new(self.learned)
            .on(|learned, o: &EtaObserved| {
                learn(learned, o);
            })
            .run(&cx.kafka, cx.codec, options, cx.shutdown)
            .await
    }
}

#[cfg(test)]
mod tests {
    use h3o::{LatLng, Resolution};

    use super::*;

    fn observed(leg: EtaLeg, cell: String, hour: i32, baseline: Option<i64>) -> EtaObserved {
        EtaObserved {
            event_id: "r/pickup".into(),
            occurred_at: Millis(0),
            ride_id: "r".into(),
            leg,
            region: String::new(),
            pickup_cell: cell,
            hour,
            predicted_secs: 150,
            actual_secs: 300,
            baseline_secs: baseline,
        }
    }

    #[test]
    fn corrections_are_learned_from_the_distance_only_baseline_per_leg() {
        let cell = LatLng::new(52.3731, 4.8922)
            .expect("a position")
            .to_cell(Resolution::Nine);
        let learned = Learned::default();
        assert!(learn(
            &learned,
            &observed(EtaLeg::Pickup, cell.to_string(), 8, Some(100))
        ));
        assert_eq!(learned.corrected_secs(Leg::Pickup, 100, cell, 8), 300);
        assert_eq!(learned.corrected_secs(Leg::Trip, 100, cell, 8), 100);
        // Before baselines were carried, the prediction was the baseline.
        assert!(learn(
            &learned,
            &observed(EtaLeg::Trip, cell.to_string(), 8, None)
        ));
        assert_eq!(learned.corrected_secs(Leg::Trip, 150, cell, 8), 300);
        // A cell or hour that is not one teaches nothing.
        assert!(!learn(
            &learned,
            &observed(EtaLeg::Trip, "nowhere".into(), 8, None)
        ));
        assert!(!learn(
            &learned,
            &observed(EtaLeg::Trip, cell.to_string(), 24, None)
        ));
    }
}
