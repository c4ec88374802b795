//! How fast cars move through the city: slower towards its centre, and slower again in rush
//! hours. Distance-only estimates, which assume one city speed everywhere and always, are then
//! measurably wrong, and the [`crate::eta`] correction has something to learn.

use crate::City;

/// Speed on the city's edge, and at its centre, outside rush hours.
pub const FREE_KMH: f64 = 36.0;
pub const CENTRE_KMH: f64 = 12.0;
/// Speeds in rush hours are this share of the usual.
pub const RUSH_SHARE: f64 = 0.55;
/// Rush hours, UTC: `[from, to)`.
pub const RUSH_HOURS: [(u8, u8); 2] = [(7, 10), (16, 19)];

/// Straight stretches are driven in steps of at most this many metres, each at its own speed.
const STEP_M: f64 = 100.0;

#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    centre: (f64, f64),
    radius_m: f64,
}

impl Traffic {
    pub fn of(city: &City) -> Self {
        Self {
            centre: (city.centre_lat, city.centre_lng),
            radius_m: city.radius_km * 1_000.0,
        }
    }

    /// The hour of the day, UTC, of a time in milliseconds since the epoch: the hour traffic
    /// and learned corrections are kept by.
    pub fn hour_utc(epoch_ms: i64) -> u8 {
        (epoch_ms.rem_euclid(86_400_000) / 3_600_000) as u8
    }

    pub fn is_rush_hour(hour: u8) -> bool {
        RUSH_HOURS
            .iter()
            .any(|(from, to)| (*from..*to).contains(&hour))
    }

    /// Speed at `at` in the given hour of the day: rising from the centre's to the edge's
    /// over the city's radius.
    pub fn speed_kmh(&self, at: (f64, f64), hour: u8) -> f64 {
        let out = (City::distance_m(at, self.centre) / self.radius_m).clamp(0.0, 1.0);
        let speed = CENTRE_KMH + (FREE_KMH - CENTRE_KMH) * out;
        if Self::is_rush_hour(hour) {
            speed * RUSH_SHARE
        } else {
            speed
        }
    }

    /// Seconds to drive straight from `from` to `to`, starting in the given hour.
    pub fn travel_secs(&self, from: (f64, f64), to: (f64, f64), hour: u8) -> f64 {
        let metres = City::distance_m(from, to);
        if !metres.is_finite() || metres <= 0.0 {
            return 0.0;
        }
        let steps = (metres / STEP_M).ceil().max(1.0);
        let step = metres / steps;
        (0..steps as usize)
            .map(|i| {
                let f = (i as f64 + 0.5) / steps;
                let mid = (from.0 + (to.0 - from.0) * f, from.1 + (to.1 - from.1) * f);
                step / (self.speed_kmh(mid, hour) / 3.6)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_centre_is_slow_the_edge_fast_and_rush_hours_slower_still() {
        let city = City::amsterdam();
        let t = Traffic::of(&city);
        let centre = (city.centre_lat, city.centre_lng);
        let edge = (city.centre_lat + 0.072, city.centre_lng);
        assert_eq!(t.speed_kmh(centre, 12), CENTRE_KMH);
        assert!((t.speed_kmh(edge, 12) - FREE_KMH).abs() < 0.5);
        assert_eq!(t.speed_kmh(centre, 8), CENTRE_KMH * RUSH_SHARE);
        assert!(Traffic::is_rush_hour(17) && !Traffic::is_rush_hour(19));
    }

    #[test]
    fn a_kilometre_downtown_at_rush_hour_takes_longer_than_one_outside_at_night() {
        let city = City::amsterdam();
        let t = Traffic::of(&city);
        let centre = (city.centre_lat, city.centre_lng);
        let downtown = t.travel_secs(centre, (centre.0 + 0.009, centre.1), 8);
        let out = (city.centre_lat + 0.06, city.centre_lng);
        let outskirts = t.travel_secs(out, (out.0 + 0.009, out.1), 2);
        // 1 km at about 12 × 0.55 km/h, against about 1 km at about 33 km/h.
        assert!(downtown > 450.0 && downtown < 600.0, "{downtown}");
        assert!(outskirts > 100.0 && outskirts < 125.0, "{outskirts}");
    }
}
