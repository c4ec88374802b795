//! Matching a ride to a driver: the nearest available driver of the right product within a
//! few H3 rings of the pickup, never one who already has a ride.
//!
//! Border strategy: a driver's supply is published to every dispatch region that the k-ring
//! around the driver's cell touches ([`regions_touched`]). The instance owning a pickup's region
//! therefore sees every driver within k rings, even across a region border, and no hand-off
//! between instances is needed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use h3o::{CellIndex, LatLng, Resolution};

use crate::fare::CITY_SPEED_KMH;

/// What dispatch knows of one driver.
#[derive(Debug, Clone, PartialEq)]
pub struct Driver {
    pub position: (f64, f64),
    pub cell: CellIndex,
    pub product: u8,
    pub available: bool,
}

/// A match: the driver and the estimated pickup time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub driver_id: String,
    pub pickup_eta_secs: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    #[error("driver {driver} already has ride {ride}")]
    DriverTaken { driver: String, ride: String },
    #[error("ride {ride} already has driver {driver}")]
    RideTaken { ride: String, driver: String },
    #[error("driver {0} is unknown or unavailable")]
    Unavailable(String),
}

/// The drivers of the regions one dispatch instance owns, and who is reserved for which ride.
#[derive(Debug, Default)]
pub struct Supply {
    drivers: HashMap<String, Driver>,
    by_cell: HashMap<CellIndex, BTreeSet<String>>,
    ride_of_driver: HashMap<String, String>,
    driver_of_ride: HashMap<String, String>,
}

/// Seconds to drive `metres` at city speed.
pub fn eta_secs(metres: f64) -> i32 {
    let secs = metres.max(0.0) * 3.6 / CITY_SPEED_KMH as f64;
    secs.round().min(f64::from(i32::MAX)) as i32
}

fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    match (LatLng::new(a.0, a.1), LatLng::new(b.0, b.1)) {
        (Ok(a), Ok(b)) => a.distance_m(b),
        _ => f64::INFINITY,
    }
}

impl Supply {
    /// Records a driver's latest status and position.
    pub fn upsert(&mut self, driver_id: &str, driver: Driver) {
        if let Some(old) = self.drivers.get(driver_id)
            && let Some(set) = self.by_cell.get_mut(&old.cell)
        {
            set.remove(driver_id);
        }
        self.by_cell
            .entry(driver.cell)
            .or_default()
            .insert(driver_id.to_owned());
        self.drivers.insert(driver_id.to_owned(), driver);
    }

    pub fn remove(&mut self, driver_id: &str) {
        if let Some(old) = self.drivers.remove(driver_id)
            && let Some(set) = self.by_cell.get_mut(&old.cell)
        {
            set.remove(driver_id);
        }
    }

    pub fn driver(&self, driver_id: &str) -> Option<&Driver> {
        self.drivers.get(driver_id)
    }

    pub fn ride_of(&self, driver_id: &str) -> Option<&str> {
        self.ride_of_driver.get(driver_id).map(String::as_str)
    }

    /// The nearest free, available driver of `product` within `rings` of the pickup cell,
    /// skipping `exclude` (drivers who declined or let the offer lapse). Ties go to the lower
    /// driver id, so the same state always gives the same match.
    pub fn best(
        &self,
        pickup: (f64, f64),
        pickup_cell: CellIndex,
        product: u8,
        rings: u32,
        exclude: &BTreeSet<String>,
    ) -> Option<Match> {
        let mut best: Option<(f64, &String)> = None;
        for cell in pickup_cell.grid_disk::<Vec<_>>(rings) {
            for id in self.by_cell.get(&cell).into_iter().flatten() {
                let Some(d) = self.drivers.get(id) else {
                    continue;
                };
                if !d.available
                    || d.product != product
                    || exclude.contains(id)
                    || self.ride_of_driver.contains_key(id)
                {
                    continue;
                }
                let metres = distance_m(pickup, d.position);
                let better = match best {
                    None => true,
                    Some((m, other)) => metres < m || (metres == m && id < other),
                };
                if better {
                    best = Some((metres, id));
                }
            }
        }
        best.map(|(metres, id)| Match {
            driver_id: id.clone(),
            pickup_eta_secs: eta_secs(metres),
        })
    }

    /// Reserves `driver_id` for `ride_id`. One driver, one ride; one ride, one driver.
    pub fn reserve(&mut self, ride_id: &str, driver_id: &str) -> Result<(), MatchError> {
        if let Some(ride) = self.ride_of_driver.get(driver_id) {
            if ride == ride_id {
                return Ok(());
            }
            return Err(MatchError::DriverTaken {
                driver: driver_id.to_owned(),
                ride: ride.clone(),
            });
        }
        if let Some(driver) = self.driver_of_ride.get(ride_id) {
            return Err(MatchError::RideTaken {
                ride: ride_id.to_owned(),
                driver: driver.clone(),
            });
        }
        if !self.drivers.get(driver_id).is_some_and(|d| d.available) {
            return Err(MatchError::Unavailable(driver_id.to_owned()));
        }
        self.ride_of_driver
            .insert(driver_id.to_owned(), ride_id.to_owned());
        self.driver_of_ride
            .insert(ride_id.to_owned(), driver_id.to_owned());
        Ok(())
    }

    /// Frees the driver of `ride_id`, after a decline, a lapse, a cancellation or the drop-off.
    pub fn release(&mut self, ride_id: &str) -> Option<String> {
        let driver = self.driver_of_ride.remove(ride_id)?;
        self.ride_of_driver.remove(&driver);
        Some(driver)
    }
}

/// Every dispatch region (at `region_res`) that the `rings`-ring around `cell` touches.
pub fn regions_touched(cell: CellIndex, rings: u32, region_res: Resolution) -> Vec<CellIndex> {
    let regions: BTreeMap<u64, CellIndex> = cell
        .grid_disk::<Vec<_>>(rings)
        .into_iter()
        .filter_map(|c| c.parent(region_res))
        .map(|r| (u64::from(r), r))
        .collect();
    regions.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::City;
    use proptest::prelude::*;

    fn driver(city: &City, lat: f64, lng: f64, product: u8) -> Driver {
        let zone = city.locate(lat, lng).expect("inside");
        Driver {
            position: (lat, lng),
            cell: zone.cell,
            product,
            available: true,
        }
    }

    #[test]
    fn the_nearest_free_driver_of_the_product_wins() {
        let city = City::amsterdam();
        let mut s = Supply::default();
        s.upsert("near", driver(&city, 52.3680, 4.9045, 0));
        s.upsert("far", driver(&city, 52.3720, 4.9100, 0));
        s.upsert("xl", driver(&city, 52.3677, 4.9042, 2));
        let pickup = (52.3676, 4.9041);
        let cell = city.locate(pickup.0, pickup.1).expect("inside").cell;
        let none = BTreeSet::new();
        assert_eq!(
            s.best(pickup, cell, 0, 2, &none).map(|m| m.driver_id),
            Some("near".into())
        );
        s.reserve("ride-1", "near").expect("reserve");
        assert_eq!(
            s.best(pickup, cell, 0, 2, &none).map(|m| m.driver_id),
            Some("far".into())
        );
        assert_eq!(
            s.reserve("ride-2", "near"),
            Err(MatchError::DriverTaken {
                driver: "near".into(),
                ride: "ride-1".into()
            })
        );
        assert!(matches!(
            s.reserve("ride-1", "far"),
            Err(MatchError::RideTaken { .. })
        ));
        assert_eq!(s.release("ride-1"), Some("near".into()));
        let declined: BTreeSet<String> = ["near".to_owned()].into();
        assert_eq!(
            s.best(pickup, cell, 0, 2, &declined).map(|m| m.driver_id),
            Some("far".into())
        );
    }

    #[test]
    fn a_driver_near_a_border_is_published_to_both_regions() {
        let city = City::amsterdam();
        let res = Resolution::try_from(city.region_resolution).expect("res");
        // Walk east from the centre until the region changes: the last cell before it is on a border.
        let start = city
            .locate(city.centre_lat, city.centre_lng)
            .expect("inside");
        let mut lng = city.centre_lng;
        let mut previous = start.cell;
        loop {
            lng += 0.0005;
            let here = city.locate(city.centre_lat, lng).expect("inside");
            if here.region != start.region {
                let touched = regions_touched(previous, 1, res);
                assert!(touched.contains(&start.region) && touched.contains(&here.region));
                break;
            }
            previous = here.cell;
        }
    }

    proptest! {
        #[test]
        fn matching_rules_hold(
            drivers in proptest::collection::vec((-0.02f64..0.02, -0.03f64..0.03, 0u8..3, any::<bool>()), 0..30),
            pickup in (-0.02f64..0.02, -0.03f64..0.03),
            product in 0u8..3,
            excluded in proptest::collection::btree_set(0usize..30, 0..5),
        ) {
            let city = City::amsterdam();
            let mut s = Supply::default();
            for (i, (dlat, dlng, p, available)) in drivers.iter().enumerate() {
                let mut d = driver(&city, city.centre_lat + dlat, city.centre_lng + dlng, *p);
                d.available = *available;
                s.upsert(&format!("d{i:02}"), d);
            }
            let exclude: BTreeSet<String> = excluded.iter().map(|i| format!("d{i:02}")).collect();
            let at = (city.centre_lat + pickup.0, city.centre_lng + pickup.1);
            let cell = city.locate(at.0, at.1).expect("inside").cell;
            let rings = 6;
            let found = s.best(at, cell, product, rings, &exclude);
            let in_range: BTreeSet<CellIndex> = cell.grid_disk::<Vec<_>>(rings).into_iter().collect();
            let eligible: Vec<(f64, String)> = drivers.iter().enumerate()
                .map(|(i, _)| format!("d{i:02}"))
                .filter(|id| {
                    let d = s.driver(id).expect("known");
                    d.available && d.product == product && !exclude.contains(id) && in_range.contains(&d.cell)
                })
                .map(|id| (distance_m(at, s.driver(&id).expect("known").position), id))
                .collect();
            match found {
                None => prop_assert!(eligible.is_empty()),
                Some(m) => {
                    let best = eligible.iter().map(|(d, _)| *d).fold(f64::INFINITY, f64::min);
                    let chosen = eligible.iter().find(|(_, id)| *id == m.driver_id);
                    prop_assert!(chosen.is_some(), "chose an ineligible driver");
                    prop_assert!(chosen.map(|(d, _)| *d) == Some(best), "not the nearest");
                }
            }
        }

        #[test]
        fn a_driver_never_holds_two_rides(ops in proptest::collection::vec((0u8..4, 0u8..6, any::<bool>()), 0..60)) {
            let city = City::amsterdam();
            let mut s = Supply::default();
            for d in 0..4u8 {
                s.upsert(&format!("d{d}"), driver(&city, city.centre_lat, city.centre_lng, 0));
            }
            for (d, r, reserve) in ops {
                let (driver_id, ride_id) = (format!("d{d}"), format!("r{r}"));
                if reserve { let _ = s.reserve(&ride_id, &driver_id); } else { s.release(&ride_id); }
                let rides_per_driver: HashMap<&str, usize> = s.ride_of_driver.keys().map(|d| (d.as_str(), 1)).collect();
                prop_assert_eq!(s.ride_of_driver.len(), s.driver_of_ride.len());
                prop_assert!(rides_per_driver.values().all(|n| *n == 1));
                for (driver, ride) in &s.ride_of_driver {
                    prop_assert_eq!(s.driver_of_ride.get(ride), Some(driver));
                }
            }
        }

        #[test]
        fn the_regions_touched_include_every_ring_cells_region(dlat in -0.05f64..0.05, dlng in -0.08f64..0.08, k in 0u32..4) {
            let city = City::amsterdam();
            let zone = city.locate(city.centre_lat + dlat, city.centre_lng + dlng).expect("inside");
            let res = Resolution::try_from(city.region_resolution).expect("res");
            let touched = regions_touched(zone.cell, k, res);
            prop_assert!(touched.contains(&zone.region));
            for c in zone.cell.grid_disk::<Vec<_>>(k) {
                prop_assert!(touched.contains(&c.parent(res).expect("parent")));
            }
        }
    }
}
