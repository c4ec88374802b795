//! Billing: every completed trip is charged its fare, with the surge quoted at request time,
//! and split into the platform's commission and the driver's payout; late rider
//! cancellations pay a fee. Each ride is charged exactly once.
//!
//! - [`ledger`]: the charges, as pure state.
//! - [`BillingSettings`], a [`Service`](bimride_kafka::Service): the ledger on Kafka.
//!   Consume, charge and commit the input offsets in one Kafka transaction; or, on brokers
//!   without transactions and only when asked, at least once with charges deduplicated by
//!   ride.

pub mod ledger;
mod metrics;
mod service;

pub use service::BillingError;

/// How billing makes its charges durable. At least once, a ride already on the payments log
/// is never charged again; after a crash a charge may be written twice with the same event id,
/// and readers keep the first.
pub use bimride_kafka::partitioned::Guarantee;

/// Billing settings. Each is a flag of `bimride` with an environment fallback, described
/// by `--help`; the defaults here are the flags' defaults.
#[derive(Debug, Clone)]
pub struct BillingSettings {
    pub group: String,
    pub delivery: Guarantee,
    pub transactional_id: String,
    pub commission_bp: u32,
    pub commit_ms: u64,
    pub max_batch: usize,
    pub billing_replay_secs: u64,
}

impl Default for BillingSettings {
    fn default() -> Self {
        Self {
            group: "bimride-billing".into(),
            delivery: Guarantee::ExactlyOnce,
            transactional_id: "bimride-billing-0".into(),
            commission_bp: bimride_pricing::DEFAULT_COMMISSION_BP,
            commit_ms: 100,
            max_batch: 2_000,
            billing_replay_secs: 3_600,
        }
    }
}
