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
}

impl Figure {
    pub fn mae_secs(&self) -> f64 {
        self.abs_error_secs as f64 / self.observations.max(1) as f64
    }

    pub fn bias_secs(&self) -> f64 {
        self.error_secs as f64 / self.observations.max(1) as f64
    }
}

/// Where a figure belongs: the leg, the pickup's region, and the hour (UTC) the leg began.
pub type FigureKey = (EtaLeg, String, i32);

/// Every figure, bounded by legs × regions × 24 hours.
#[derive(Debug, Default)]
pub struct Figures {
    by: BTreeMap<FigureKey, Figure>,
}

impl Figures {
    /// Adds an observation; returns its key and the figure it updated.
    pub fn add(&mut self, o: &EtaObserved) -> (FigureKey, Figure) {
        let key = (o.leg, o.region.clone(), o.hour);
        let figure = self.by.entry(key.clone()).or_default();
        let error = o.actual_secs - o.predicted_secs;
        figure.observations += 1;
        figure.abs_error_secs += error.abs();
        figure.error_secs += error;
        (key, *figure)
    }

    pub fn get(&self, key: &FigureKey) -> Option<&Figure> {
        self.by.get(key)
    }

    /// Every figure of one leg, over all zones and hours.
    pub fn overall(&self, leg: EtaLeg) -> Figure {
        self.by.iter().filter(|((l, _, _), _)| *l == leg).fold(
            Figure::default(),
            |mut all, (_, f)| {
                all.observations += f.observations;
                all.abs_error_secs += f.abs_error_secs;
                all.error_secs += f.error_secs;
                all
            },
        )
    }

    pub fn iter(&self) -> impl Iterator<Item = (&FigureKey, &Figure)> {
        self.by.iter()
    }
}
