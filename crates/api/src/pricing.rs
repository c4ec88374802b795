//! The price list per product, and quotes for a trip between two points.

use bimride_domain::fare::{NO_SURGE, estimated_duration_s};
use bimride_domain::{City, Fare, Rates};
use bimride_events::Product;

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
