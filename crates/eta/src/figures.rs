//! Accuracy per leg, zone and hour of the day: mean absolute error and bias, from observations.

use std::collections::BTreeMap;

use bimride_events::{EtaLeg, EtaObserved};

/// The running error of one leg in one zone and hour. The error of an observation is actual
/// minus predicted: a positive bias means predictions are too short.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figure {
    pub observations: u64,
    pub abs_error_secs: i64,
    pub error_secs: i64,
    /// The absolute error the same legs' estimates had from distance alone, before the learned
    /// correction: what the correction is worth.
    pub baseline_abs_error_secs: i64,
}

impl Figure {
    pub fn mae_secs(&self) -> f64 {
        self.abs_error_secs as f64 / self.observations.max(1) as f64
    }

    pub fn bias_secs(&self) -> f64 {
        self.error_secs as f64 / self.observations.max(1) as f64
    }

    pub fn baseline_mae_secs(&self) -> f64 {
        self.baseline_abs_error_secs as f64 / self.observations.max(1) as f64
    }
}

/// Where a figure belongs: the leg, the pickup's region, and the hour (UTC) the leg began.
pub type FigureKey = (EtaLeg, String, i32);

/// Every figure, bounded by legs × regions × 24 hours, and each leg's over all of them.
#[derive(Debug, Default)]
pub struct Figures {
    by: BTreeMap<FigureKey, Figure>,
    overall: BTreeMap<EtaLeg, Figure>,
}

impl Figure {
    fn add(&mut self, error: i64, baseline_error: i64) {
        self.observations += 1;
        self.abs_error_secs += error.abs();
        self.error_secs += error;
        self.baseline_abs_error_secs += baseline_error.abs();
    }
}

impl Figures {
    /// Adds an observation; returns its key and the figure it updated.
    pub fn add(&mut self, o: &EtaObserved) -> (FigureKey, Figure) {
        let key = (o.leg, o.region.clone(), o.hour);
        let error = o.actual_secs - o.predicted_secs;
        let baseline_error = o.actual_secs - o.baseline();
        self.overall
            .entry(o.leg)
            .or_default()
            .add(error, baseline_error);
        let figure = self.by.entry(key.clone()).or_default();
        figure.add(error, baseline_error);
        (key, *figure)
    }

    pub fn get(&self, key: &FigureKey) -> Option<&Figure> {
        self.by.get(key)
    }

    /// One leg's figure over all zones and hours.
    pub fn overall(&self, leg: EtaLeg) -> Figure {
        self.overall.get(&leg).copied().unwrap_or_default()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&FigureKey, &Figure)> {
        self.by.iter()
    }
}

#[cfg(test)]
mod tests {
    use bimride_events::Millis;

    use super::*;

    fn observed(leg: EtaLeg, region: &str, hour: i32, predicted: i64, actual: i64) -> EtaObserved {
        EtaObserved {
            event_id: format!("{region}-{hour}-{predicted}-{actual}"),
            occurred_at: Millis(0),
            ride_id: "r".into(),
            leg,
            region: region.into(),
            pickup_cell: String::new(),
            hour,
            predicted_secs: predicted,
            actual_secs: actual,
            baseline_secs: None,
        }
    }

    #[test]
    fn each_zone_and_hour_keeps_its_own_error_and_the_overall_sums_them() {
        let mut f = Figures::default();
        f.add(&observed(EtaLeg::Pickup, "a", 8, 100, 160));
        let (key, figure) = f.add(&observed(EtaLeg::Pickup, "a", 8, 100, 80));
        assert_eq!(key, (EtaLeg::Pickup, "a".to_owned(), 8));
        assert_eq!(figure.mae_secs(), 40.0);
        assert_eq!(figure.bias_secs(), 20.0);
        f.add(&observed(EtaLeg::Pickup, "b", 9, 100, 100));
        f.add(&observed(EtaLeg::Trip, "a", 8, 600, 300));
        let pickup = f.overall(EtaLeg::Pickup);
        assert_eq!(pickup.observations, 3);
        assert_eq!(pickup.abs_error_secs, 80);
        assert_eq!(pickup.error_secs, 40);
        assert_eq!(f.overall(EtaLeg::Trip).bias_secs(), -300.0);
        assert_eq!(f.iter().count(), 3);
        // Without a baseline, the estimate given was the distance-only one.
        assert_eq!(pickup.baseline_mae_secs(), pickup.mae_secs());
    }

    #[test]
    fn a_corrected_estimate_is_set_against_its_distance_only_baseline() {
        let mut f = Figures::default();
        let mut o = observed(EtaLeg::Pickup, "a", 8, 190, 200);
        o.baseline_secs = Some(100);
        let (_, figure) = f.add(&o);
        assert_eq!(
            (figure.mae_secs(), figure.baseline_mae_secs()),
            (10.0, 100.0)
        );
    }
}
