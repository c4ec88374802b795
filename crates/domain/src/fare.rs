//! Fares: base plus distance plus time, times the surge quoted at request time, with a
//! minimum. All integer minor units; the surge multiplier is in thousandths.

/// The price list of one product, in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Rates {
    pub base_minor: i64,
    pub per_km_minor: i64,
    pub per_minute_minor: i64,
    pub minimum_minor: i64,
}

/// How a fare was made: the breakdown that quotes, charges and ride views all show. The
/// payments topic carries the same fields, flat, in its Avro record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FareParts {
    pub base_minor: i64,
    pub distance_minor: i64,
    pub time_minor: i64,
    pub surge_milli: i32,
}

/// A fare and how it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Fare {
    #[serde(flatten)]
    pub parts: FareParts,
    pub total_minor: i64,
    pub minimum_applied: bool,
}

impl Fare {
    /// A fixed amount, such as a cancellation fee: all base, no surge.
    pub fn flat(amount_minor: i64) -> Self {
        Self {
            parts: FareParts {
                base_minor: amount_minor,
                distance_minor: 0,
                time_minor: 0,
                surge_milli: NO_SURGE,
            },
            total_minor: amount_minor,
            minimum_applied: false,
        }
    }
}

/// Multiplier 1.0 in thousandths.
pub const NO_SURGE: i32 = 1_000;

impl Rates {
    /// The fare of a trip of `distance_m` metres and `duration_s` seconds at `surge_milli`.
    /// Parts round half up to the minor unit; surge multiplies their sum.
    pub fn fare(&self, distance_m: i64, duration_s: i64, surge_milli: i32) -> Fare {
        let distance_minor = div_round(self.per_km_minor * distance_m.max(0), 1_000);
        let time_minor = div_round(self.per_minute_minor * duration_s.max(0), 60);
        let before = self.base_minor + distance_minor + time_minor;
        let surge = i64::from(surge_milli.max(NO_SURGE));
        let surged = div_round(before * surge, 1_000);
        let total_minor = surged.max(self.minimum_minor);
        Fare {
            parts: FareParts {
                base_minor: self.base_minor,
                distance_minor,
                time_minor,
                surge_milli: surge_milli.max(NO_SURGE),
            },
            total_minor,
            minimum_applied: total_minor > surged,
        }
    }
}

fn div_round(n: i64, d: i64) -> i64 {
    (n + d / 2).div_euclid(d)
}

/// Average door-to-door speed used to estimate a trip's duration from its distance.
pub const CITY_SPEED_KMH: i64 = 24;

/// Estimated seconds to drive `distance_m` at city speed.
pub fn estimated_duration_s(distance_m: i64) -> i64 {
    div_round(distance_m.max(0) * 3_600, CITY_SPEED_KMH * 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ECONOMY: Rates = Rates {
        base_minor: 250,
        per_km_minor: 120,
        per_minute_minor: 30,
        minimum_minor: 700,
    };

    #[test]
    fn a_five_km_quarter_hour_trip() {
        let fare = ECONOMY.fare(5_000, 900, NO_SURGE);
        assert_eq!(
            (fare.parts.distance_minor, fare.parts.time_minor),
            (600, 450)
        );
        assert_eq!(fare.total_minor, 1_300);
        assert!(!fare.minimum_applied);
        assert_eq!(ECONOMY.fare(5_000, 900, 1_500).total_minor, 1_950);
    }

    #[test]
    fn short_trips_pay_the_minimum_and_surge_never_discounts() {
        let fare = ECONOMY.fare(500, 60, NO_SURGE);
        assert_eq!(fare.total_minor, 700);
        assert!(fare.minimum_applied);
        assert_eq!(ECONOMY.fare(5_000, 900, 500).total_minor, 1_300);
    }

    #[test]
    fn duration_estimate_uses_city_speed() {
        assert_eq!(estimated_duration_s(24_000), 3_600);
        assert_eq!(estimated_duration_s(-5), 0);
    }

    proptest! {
        #[test]
        fn fares_grow_with_distance_time_and_surge(
            d in 0i64..100_000, t in 0i64..10_000, s in 1_000i32..5_000,
            dd in 0i64..5_000, dt in 0i64..600, ds in 0i32..1_000,
        ) {
            let f = ECONOMY.fare(d, t, s).total_minor;
            prop_assert!(f >= ECONOMY.minimum_minor);
            prop_assert!(ECONOMY.fare(d + dd, t, s).total_minor >= f);
            prop_assert!(ECONOMY.fare(d, t + dt, s).total_minor >= f);
            prop_assert!(ECONOMY.fare(d, t, s + ds).total_minor >= f);
        }
    }
}
