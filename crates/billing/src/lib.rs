//! Billing: every completed trip is charged its fare, with the surge quoted at request time,
//! and split into the platform's commission and the driver's payout; late rider
//! cancellations pay a fee. Each ride is charged exactly once.
//!
//! - [`ledger`]: the charges, as pure state.
//! - [`run`]: the ledger on Kafka. Consume, charge and commit the input offsets in one Kafka
//!   transaction; or, on brokers without transactions and only when asked, at least once
//!   with charges deduplicated by ride.

pub mod ledger;
mod metrics;
mod service;

pub use service::BillingError;

/// How billing makes its charges durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Delivery {
    /// Kafka transactions: charges and input offsets commit together, or not at all.
    ExactlyOnce,
    /// For brokers without transactions: charges are acknowledged before offsets are
    /// committed, and a ride already on the payments log is never charged again. After a
    /// crash a charge may be written twice with the same event id; readers keep the first.
    AtLeastOnce,
}

/// Billing settings, from flags with environment fallbacks.
#[derive(Debug, Clone, clap::Args)]
pub struct BillingSettings {
    /// Consumer group of the billing instances.
    #[arg(
        id = "billing-group",
        long = "billing-group",
        env = "BIMRIDE_BILLING_GROUP",
        default_value = "bimride-billing"
    )]
    pub group: String,
    /// Exactly once needs brokers with transactions; billing refuses to start without them.
    #[arg(
        long = "billing-delivery",
        env = "BIMRIDE_BILLING_DELIVERY",
        value_enum,
        default_value = "exactly-once"
    )]
    pub delivery: Delivery,
    /// Transactional id, stable across restarts of one instance and unique among instances:
    /// a restarted instance fences its previous self and aborts what it left open.
    #[arg(
        long = "billing-transactional-id",
        env = "BIMRIDE_BILLING_TRANSACTIONAL_ID",
        default_value = "bimride-billing-0"
    )]
    pub transactional_id: String,
    /// The platform's commission, in basis points of each charge (2500 = 25%).
    #[arg(long, env = "BIMRIDE_COMMISSION_BP", default_value_t = bimride_pricing::DEFAULT_COMMISSION_BP)]
    pub commission_bp: u32,
    /// How long a transaction collects records before it commits, in ms.
    #[arg(long, env = "BIMRIDE_BILLING_COMMIT_MS", default_value_t = 100)]
    pub commit_ms: u64,
    /// Most records in one transaction.
    #[arg(long, env = "BIMRIDE_BILLING_MAX_BATCH", default_value_t = 2_000)]
    pub max_batch: usize,
    /// How much history a new owner of a partition replays, in seconds; also how long a
    /// charged ride is remembered.
    #[arg(long, env = "BIMRIDE_BILLING_REPLAY_SECS", default_value_t = 3_600)]
    pub billing_replay_secs: u64,
}

impl Default for BillingSettings {
    fn default() -> Self {
        Self {
            group: "bimride-billing".into(),
            delivery: Delivery::ExactlyOnce,
            transactional_id: "bimride-billing-0".into(),
            commission_bp: bimride_pricing::DEFAULT_COMMISSION_BP,
            commit_ms: 100,
            max_batch: 2_000,
            billing_replay_secs: 3_600,
        }
    }
}
