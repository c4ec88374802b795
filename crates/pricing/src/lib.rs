//! The tariff: the price list per product, quotes for a trip between two points, and the
//! rule for cancellation fees. The API quotes with it and billing charges with it, so a
//! quote and its charge can never use different prices.

use bimride_domain::fare::{NO_SURGE, estimated_duration_s};
use bimride_domain::{City, Fare, Rates};
use bimride_events::{CancelledBy, Millis, Product};

pub const CURRENCY: &str = "EUR";

pub fn rates(product: Product) -> Rates {
    match product {
        Product::Economy => Rates {
            base_minor: 250,
            per_km_minor: 120,
            per_minute_minor: 30,
            minimum_minor: 700,
        },
        Product::Comfort => Rates {
            base_minor: 350,
            per_km_minor: 160,
            per_minute_minor: 40,
            minimum_minor: 1_000,
        },
        Product::Xl => Rates {
            base_minor: 450,
            per_km_minor: 200,
            per_minute_minor: 45,
            minimum_minor: 1_300,
        },
    }
}

/// A quote: the estimated trip and its fare at `surge_milli`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Quote {
    pub distance_m: i64,
    pub duration_s: i64,
    pub fare: Fare,
}

impl Quote {
    /// The same trip expected to take `duration_s` (a corrected estimate), its fare estimated
    /// again at the same tariff and surge.
    pub fn taking(self, product: Product, duration_s: i64) -> Self {
        Self {
            duration_s,
            fare: rates(product).fare(self.distance_m, duration_s, self.fare.parts.surge_milli),
            ..self
        }
    }
}

/// The straight-line distance, stretched by 1.3 for streets, drives the estimate.
pub fn quote(product: Product, from: (f64, f64), to: (f64, f64), surge_milli: i32) -> Quote {
    let straight = City::distance_m(from, to);
    let distance_m = if straight.is_finite() {
        (straight * 1.3).round() as i64
    } else {
        0
    };
    let duration_s = estimated_duration_s(distance_m);
    Quote {
        distance_m,
        duration_s,
        fare: rates(product).fare(distance_m, duration_s, surge_milli.max(NO_SURGE)),
    }
}

/// The platform's default share of every charge, in basis points (2500 = 25%).
pub const DEFAULT_COMMISSION_BP: u32 = 2_500;

/// How long after the assignment a rider may cancel for free, in event time.
pub const FREE_CANCELLATION_MS: i64 = 2 * 60 * 1_000;

/// The fee a rider pays for a late cancellation, in minor units.
pub fn cancellation_fee_minor(product: Product) -> i64 {
    match product {
        Product::Economy => 500,
        Product::Comfort => 700,
        Product::Xl => 900,
    }
}

/// What is known about a ride when it is cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancellation {
    pub by: CancelledBy,
    /// When a driver was assigned, if one was.
    pub assigned_at: Option<Millis>,
    pub driver_arrived: bool,
    pub cancelled_at: Millis,
}

/// The cancellation rule: a rider pays the product's fee only for cancelling a ride whose
/// driver has already arrived, or was assigned more than [`FREE_CANCELLATION_MS`] earlier.
/// Cancellations by drivers or by the system (no driver found) are always free, and so is a
/// cancellation before any driver was assigned. The fee goes to the driver, less commission.
pub fn cancellation_fee(product: Product, c: Cancellation) -> Option<i64> {
    if c.by != CancelledBy::Rider {
        return None;
    }
    let assigned_at = c.assigned_at?;
    let late = c.cancelled_at.0 - assigned_at.0 > FREE_CANCELLATION_MS;
    (c.driver_arrived || late).then(|| cancellation_fee_minor(product))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rider_cancels(after_ms: i64, arrived: bool) -> Cancellation {
        Cancellation {
            by: CancelledBy::Rider,
            assigned_at: Some(Millis(1_000)),
            driver_arrived: arrived,
            cancelled_at: Millis(1_000 + after_ms),
        }
    }

    #[test]
    fn riders_cancel_for_free_in_the_grace_period() {
        assert_eq!(
            cancellation_fee(Product::Economy, rider_cancels(60_000, false)),
            None
        );
        assert_eq!(
            cancellation_fee(Product::Economy, rider_cancels(FREE_CANCELLATION_MS, false)),
            None
        );
    }

    #[test]
    fn late_cancellations_and_no_shows_pay_the_product_fee() {
        assert_eq!(
            cancellation_fee(
                Product::Comfort,
                rider_cancels(FREE_CANCELLATION_MS + 1, false)
            ),
            Some(700)
        );
        assert_eq!(
            cancellation_fee(Product::Xl, rider_cancels(10, true)),
            Some(900)
        );
    }

    #[test]
    fn drivers_the_system_and_unassigned_rides_never_charge() {
        let mut c = rider_cancels(600_000, true);
        for by in [CancelledBy::Driver, CancelledBy::System] {
            c.by = by;
            assert_eq!(cancellation_fee(Product::Economy, c), None);
        }
        let before_assignment = Cancellation {
            assigned_at: None,
            ..rider_cancels(600_000, false)
        };
        assert_eq!(cancellation_fee(Product::Economy, before_assignment), None);
    }

    #[test]
    fn quotes_price_the_stretched_straight_line() {
        let q = quote(Product::Economy, (52.37, 4.89), (52.37, 4.89), NO_SURGE);
        let slow = quote(Product::Economy, (52.35, 4.85), (52.39, 4.93), 1_500);
        let slower = slow.taking(Product::Economy, slow.duration_s * 2);
        assert_eq!(
            (slower.distance_m, slower.fare.parts.surge_milli),
            (slow.distance_m, 1_500)
        );
        assert!(slower.fare.total_minor > slow.fare.total_minor);
        assert_eq!((q.distance_m, q.fare.total_minor), (0, 700));
        let far = quote(Product::Economy, (52.35, 4.85), (52.39, 4.93), 1_500);
        assert!(far.distance_m > 0);
        assert_eq!(far.fare.parts.surge_milli, 1_500);
    }
}
