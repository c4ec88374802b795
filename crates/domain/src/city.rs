//! The service area and its zones. Regions (a coarse H3 resolution) are the unit of dispatch
//! ownership and the partition key; cells (a fine resolution) are used for matching and surge.

use h3o::{CellIndex, LatLng, Resolution};

/// A city: a disc around a centre, and the H3 resolutions of its zones.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct City {
    pub name: String,
    pub centre_lat: f64,
    pub centre_lng: f64,
    pub radius_km: f64,
    pub region_resolution: u8,
    pub cell_resolution: u8,
    /// How many rings of cells around a pickup dispatch searches. Driver supply fans out to
    /// every region this disc touches, so dispatch and drivers must agree on it.
    pub match_rings: u32,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CityError {
    #[error("coordinates ({lat}, {lng}) are not a valid position")]
    InvalidCoordinates { lat: f64, lng: f64 },
    #[error("({lat}, {lng}) is outside the service area of {city}")]
    OutsideServiceArea { city: String, lat: f64, lng: f64 },
    #[error("invalid city: {0}")]
    InvalidCity(String),
}

/// Where a point falls: its dispatch region and its matching cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Zone {
    pub region: CellIndex,
    pub cell: CellIndex,
}

impl Default for City {
    fn default() -> Self {
        Self::amsterdam()
    }
}

impl City {
    /// Amsterdam: a dense, compact default that fills a map nicely.
    pub fn amsterdam() -> Self {
        Self {
            name: "amsterdam".into(),
            centre_lat: 52.3676,
            centre_lng: 4.9041,
            radius_km: 8.0,
            region_resolution: 6,
            cell_resolution: 8,
            match_rings: 3,
        }
    }

    /// Checks the city's own settings; run at start-up.
    pub fn validate(&self) -> Result<(), CityError> {
        LatLng::new(self.centre_lat, self.centre_lng)
            .map_err(|_| CityError::InvalidCity("centre is not a valid position".into()))?;
        if !(self.radius_km.is_finite() && self.radius_km > 0.0 && self.radius_km <= 200.0) {
            return Err(CityError::InvalidCity(
                "radius must be in (0, 200] km".into(),
            ));
        }
        if self.region_resolution >= self.cell_resolution || self.cell_resolution > 15 {
            return Err(CityError::InvalidCity(
                "region resolution must be coarser than cell resolution, both at most 15".into(),
            ));
        }
        if !(1..=8).contains(&self.match_rings) {
            return Err(CityError::InvalidCity(
                "match rings must be between 1 and 8".into(),
            ));
        }
        Ok(())
    }

    /// The H3 resolution of dispatch regions.
    pub fn region_res(&self) -> Resolution {
        Self::resolution(self.region_resolution)
    }

    fn resolution(r: u8) -> Resolution {
        Resolution::try_from(r).unwrap_or(Resolution::Eight)
    }

    fn centre(&self) -> LatLng {
        LatLng::new(self.centre_lat, self.centre_lng).unwrap_or_else(|_| {
            LatLng::new(0.0, 0.0).unwrap_or_else(|_| unreachable!("0,0 is a valid position"))
        })
    }

    /// Validates a position and places it in its region and cell.
    pub fn locate(&self, lat: f64, lng: f64) -> Result<Zone, CityError> {
        let point =
            LatLng::new(lat, lng).map_err(|_| CityError::InvalidCoordinates { lat, lng })?;
        if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lng) {
            return Err(CityError::InvalidCoordinates { lat, lng });
        }
        if point.distance_km(self.centre()) > self.radius_km {
            return Err(CityError::OutsideServiceArea {
                city: self.name.clone(),
                lat,
                lng,
            });
        }
        let cell = point.to_cell(Self::resolution(self.cell_resolution));
        let region = cell
            .parent(Self::resolution(self.region_resolution))
            .unwrap_or(cell);
        Ok(Zone { region, cell })
    }

    /// Great-circle distance in metres.
    pub fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
        match (LatLng::new(a.0, a.1), LatLng::new(b.0, b.1)) {
            (Ok(a), Ok(b)) => a.distance_m(b),
            _ => f64::INFINITY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_default_city_is_valid_and_locates_its_centre() {
        let city = City::amsterdam();
        city.validate().expect("valid");
        let zone = city.locate(52.3676, 4.9041).expect("centre is inside");
        assert_eq!(zone.cell.parent(Resolution::Six), Some(zone.region));
    }

    #[test]
    fn bad_positions_are_named() {
        let city = City::amsterdam();
        assert!(matches!(
            city.locate(f64::NAN, 4.9),
            Err(CityError::InvalidCoordinates { .. })
        ));
        assert!(matches!(
            city.locate(91.0, 4.9),
            Err(CityError::InvalidCoordinates { .. })
        ));
        assert!(matches!(
            city.locate(48.85, 2.35),
            Err(CityError::OutsideServiceArea { .. })
        ));
    }

    #[test]
    fn a_bad_city_is_refused() {
        let mut city = City::amsterdam();
        city.region_resolution = 9;
        assert!(city.validate().is_err());
    }

    proptest! {
        #[test]
        fn every_point_in_the_area_has_a_cell_inside_its_region(
            dlat in -0.07f64..0.07, dlng in -0.11f64..0.11
        ) {
            let city = City::amsterdam();
            let (lat, lng) = (city.centre_lat + dlat, city.centre_lng + dlng);
            match city.locate(lat, lng) {
                Ok(zone) => {
                    prop_assert_eq!(zone.cell.parent(Resolution::Six), Some(zone.region));
                    prop_assert_eq!(u8::from(zone.cell.resolution()), 8);
                }
                Err(CityError::OutsideServiceArea { .. }) => {
                    prop_assert!(City::distance_m((lat, lng), (city.centre_lat, city.centre_lng)) > 7_900.0);
                }
                Err(e) => prop_assert!(false, "{e}"),
            }
        }
    }
}
