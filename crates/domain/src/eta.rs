//! ETAs that learn. A distance-only estimate assumes one speed everywhere and always; the
//! correction learned here scales it by what rides in the same place and hour of the day
//! actually took. It is learned online, one observation at a time, as the ratio of actual to
//! estimated time, averaged in log space (so that being twice too slow and twice too fast
//! weigh the same) per H3 cell and hour.

use std::collections::HashMap;
use std::sync::RwLock;

use h3o::{CellIndex, LatLng, Resolution};

/// The cells corrections are learned for: about 5 km², a neighbourhood.
pub const LEARNING_RESOLUTION: Resolution = Resolution::Seven;

/// Past this many observations a slot weighs each new one as 1/`MEMORY` of its mean, so that
/// it follows a city whose traffic changes instead of freezing on its past.
const MEMORY: u32 = 200;

/// Ratios outside this range are taken as broken observations (a driver who parked before
/// arriving, a clock gone wrong), not as traffic.
const RATIO_RANGE: (f64, f64) = (0.1, 10.0);

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Slot {
    mean_log_ratio: f64,
    observations: u32,
}

/// Corrections per cell and hour of the day.
#[derive(Debug, Clone, Default)]
pub struct EtaModel {
    slots: HashMap<(CellIndex, u8), Slot>,
}

/// The learning cell of a position, if it is one.
pub fn learning_cell(at: (f64, f64)) -> Option<CellIndex> {
    LatLng::new(at.0, at.1)
        .ok()
        .map(|p| p.to_cell(LEARNING_RESOLUTION))
}

/// The learning cell a finer cell lies in (a coarser one is taken as it is).
fn learning_parent(cell: CellIndex) -> CellIndex {
    cell.parent(LEARNING_RESOLUTION).unwrap_or(cell)
}

impl EtaModel {
    /// Learns from one leg that began at `at` in `hour`: estimated at `estimated_secs` from
    /// distance alone, it took `actual_secs`. Returns whether it was taken.
    pub fn observe(
        &mut self,
        at: (f64, f64),
        hour: u8,
        estimated_secs: f64,
        actual_secs: f64,
    ) -> bool {
        learning_cell(at)
            .is_some_and(|cell| self.observe_in(cell, hour, estimated_secs, actual_secs))
    }

    /// [`Self::observe`] for a leg that began in `cell`, at any resolution.
    pub fn observe_in(
        &mut self,
        cell: CellIndex,
        hour: u8,
        estimated_secs: f64,
        actual_secs: f64,
    ) -> bool {
        if !(estimated_secs >= 1.0 && actual_secs.is_finite()) {
            return false;
        }
        let ratio = actual_secs / estimated_secs;
        if !(RATIO_RANGE.0..=RATIO_RANGE.1).contains(&ratio) {
            return false;
        }
        let slot = self
            .slots
            .entry((learning_parent(cell), hour % 24))
            .or_default();
        slot.observations = slot.observations.saturating_add(1);
        let weight = 1.0 / f64::from(slot.observations.min(MEMORY));
        slot.mean_log_ratio += (ratio.ln() - slot.mean_log_ratio) * weight;
        true
    }

    /// The factor a distance-only estimate starting at `at` in `hour` is scaled by: what was
    /// learned for that cell and hour, or 1 where nothing was.
    pub fn factor(&self, at: (f64, f64), hour: u8) -> f64 {
        learning_cell(at).map_or(1.0, |cell| self.factor_in(cell, hour))
    }

    /// [`Self::factor`] for a leg beginning in `cell`, at any resolution.
    pub fn factor_in(&self, cell: CellIndex, hour: u8) -> f64 {
        self.slots
            .get(&(learning_parent(cell), hour % 24))
            .map_or(1.0, |slot| slot.mean_log_ratio.exp())
    }

    /// A distance-only estimate, corrected.
    pub fn corrected_secs(&self, estimated_secs: f64, at: (f64, f64), hour: u8) -> f64 {
        estimated_secs * self.factor(at, hour)
    }

    /// Cells and hours with anything learned.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }
}

/// The two ETAs a rider is given: the driver's time to the pickup, and the trip's duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    Pickup,
    Trip,
}

/// What has been learned of both legs, shared between the feed that learns from observations
/// and the services that give ETAs.
#[derive(Debug, Default)]
pub struct Learned {
    pickup: RwLock<EtaModel>,
    trip: RwLock<EtaModel>,
}

impl Learned {
    fn model(&self, leg: Leg) -> &RwLock<EtaModel> {
        match leg {
            Leg::Pickup => &self.pickup,
            Leg::Trip => &self.trip,
        }
    }

    /// Learns from one leg that began in `cell`; see [`EtaModel::observe`].
    pub fn observe(
        &self,
        leg: Leg,
        cell: CellIndex,
        hour: u8,
        estimated_secs: f64,
        actual_secs: f64,
    ) -> bool {
        self.model(leg)
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .observe_in(cell, hour, estimated_secs, actual_secs)
    }

    /// A distance-only estimate of `leg` beginning in `cell` in `hour`, corrected, in whole
    /// seconds.
    pub fn corrected_secs(&self, leg: Leg, estimated_secs: i64, cell: CellIndex, hour: u8) -> i64 {
        let factor = self
            .model(leg)
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .factor_in(cell, hour);
        (estimated_secs as f64 * factor).round() as i64
    }

    /// Cells and hours with anything learned, for `leg`.
    pub fn slots(&self, leg: Leg) -> usize {
        self.model(leg)
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .slots()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAM: (f64, f64) = (52.3731, 4.8922);

    #[test]
    fn nothing_learned_corrects_nothing_and_a_steady_ratio_is_learned() {
        let mut m = EtaModel::default();
        assert_eq!(m.factor(DAM, 8), 1.0);
        for _ in 0..50 {
            assert!(m.observe(DAM, 8, 100.0, 250.0));
        }
        assert!((m.factor(DAM, 8) - 2.5).abs() < 1e-9);
        assert!((m.corrected_secs(60.0, DAM, 8) - 150.0).abs() < 1e-6);
        // Another hour, and another neighbourhood, learned nothing.
        assert_eq!(m.factor(DAM, 14), 1.0);
        assert_eq!(m.factor((52.30, 4.80), 8), 1.0);
        assert_eq!(m.slots(), 1);
    }

    #[test]
    fn twice_too_slow_and_twice_too_fast_cancel_and_broken_observations_are_refused() {
        let mut m = EtaModel::default();
        m.observe(DAM, 3, 100.0, 200.0);
        m.observe(DAM, 3, 100.0, 50.0);
        assert!((m.factor(DAM, 3) - 1.0).abs() < 1e-9);
        assert!(!m.observe(DAM, 3, 100.0, 5_000.0));
        assert!(!m.observe(DAM, 3, 0.0, 50.0));
        assert!(!m.observe((f64::NAN, 0.0), 3, 100.0, 50.0));
    }

    #[test]
    fn a_fine_cell_learns_for_its_neighbourhood_and_legs_learn_apart() {
        let fine = LatLng::new(DAM.0, DAM.1)
            .expect("a position")
            .to_cell(Resolution::Nine);
        let learned = Learned::default();
        for _ in 0..10 {
            assert!(learned.observe(Leg::Pickup, fine, 8, 100.0, 300.0));
        }
        // Another fine cell of the same neighbourhood gets the correction; the trip does not.
        let near = LatLng::new(DAM.0 + 0.001, DAM.1)
            .expect("a position")
            .to_cell(Resolution::Nine);
        assert_eq!(
            near.parent(LEARNING_RESOLUTION),
            fine.parent(LEARNING_RESOLUTION)
        );
        assert_eq!(learned.corrected_secs(Leg::Pickup, 60, near, 8), 180);
        assert_eq!(learned.corrected_secs(Leg::Trip, 60, near, 8), 60);
        assert_eq!(
            (learned.slots(Leg::Pickup), learned.slots(Leg::Trip)),
            (1, 0)
        );
    }
}
