//! Billing metrics: charges and money by kind, and the fate of transactions.

use std::sync::LazyLock;

use bimride_events::{ChargeKind, FareCharged};
use bimride_telemetry::counter;
use prometheus::IntCounterVec;

pub static CHARGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_billing_charges_total",
        "Charges committed, by kind: trip or cancellation_fee.",
        &["kind"],
    )
});

pub static REVENUE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_billing_revenue_minor_total",
        "Money charged to riders, in minor units, by currency and part: fare, commission, payout.",
        &["currency", "part"],
    )
});

pub static DUPLICATES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_billing_duplicates_total",
        "Completions of rides already charged, ignored.",
        &["kind"],
    )
});

/// Counts charges once their transaction has committed.
pub fn committed(charges: &[FareCharged]) {
    for c in charges {
        let kind = match c.kind {
            ChargeKind::Trip => "trip",
            ChargeKind::CancellationFee => "cancellation_fee",
        };
        CHARGES.with_label_values(&[kind]).inc();
        let currency = c.fare.currency.as_str();
        for (part, amount) in [
            ("fare", c.fare.amount_minor),
            ("commission", c.commission.amount_minor),
            ("payout", c.payout.amount_minor),
        ] {
            REVENUE
                .with_label_values(&[currency, part])
                .inc_by(amount.max(0) as u64);
        }
    }
}
