//! Dispatch: a consumer group over the co-partitioned ride requests and driver supply. Each
//! instance owns the regions of its partitions and matches their requests to drivers.
//!
//! - [`engine`]: the decisions, as pure state: offers, re-offers, assignments, `no_driver`.
//! - [`run`]: the engine on Kafka, with state rebuilt from the log on every assignment.

pub mod engine;
mod metrics;
mod service;

/// Dispatch settings, from flags with environment fallbacks.
#[derive(Debug, Clone, clap::Args)]
pub struct DispatchSettings {
    /// Consumer group of the dispatch instances.
    #[arg(
        long = "dispatch-group",
        env = "BIMRIDE_DISPATCH_GROUP",
        default_value = "bimride-dispatch"
    )]
    pub group: String,
    /// How long a driver has to answer an offer, in ms.
    #[arg(long, env = "BIMRIDE_OFFER_TIMEOUT_MS", default_value_t = 8_000)]
    pub offer_timeout_ms: u64,
    /// How long a ride waits for a driver before it is cancelled with `no_driver`, in ms.
    #[arg(long, env = "BIMRIDE_MAX_WAIT_MS", default_value_t = 45_000)]
    pub max_wait_ms: u64,
    /// How much history a new owner of a region replays, in seconds.
    #[arg(long, env = "BIMRIDE_DISPATCH_REPLAY_SECS", default_value_t = 600)]
    pub replay_window_secs: u64,
    /// How often offers are expired and waiting rides retried, in ms.
    #[arg(long, env = "BIMRIDE_DISPATCH_TICK_MS", default_value_t = 100)]
    pub tick_ms: u64,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            group: "bimride-dispatch".into(),
            offer_timeout_ms: 8_000,
            max_wait_ms: 45_000,
            replay_window_secs: 600,
            tick_ms: 100,
        }
    }
}
