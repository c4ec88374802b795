//! Dispatch: a consumer group over the co-partitioned ride requests and driver supply. Each
//! instance owns the regions of its partitions and matches their requests to drivers.
//!
//! - [`engine`]: the decisions, as pure state: offers, re-offers, assignments, `no_driver`.
//! - [`DispatchSettings`], a [`Service`](bimride_kafka::Service): the engine on Kafka, with
//!   state rebuilt from the log on every assignment.

use std::sync::Arc;

use bimride_domain::eta::Learned;
use bimride_kafka::partitioned::Guarantee;

pub mod engine;
mod metrics;
mod service;

/// Dispatch settings. Each but `learned` is a flag of `bimride` with an environment
/// fallback, described by `--help`; the defaults here are the flags' defaults.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    pub group: String,
    pub delivery: Guarantee,
    /// Empty: a new one at every start, `<group>-<uuid>`.
    pub transactional_id: String,
    pub commit_ms: u64,
    pub offer_timeout_ms: u64,
    pub max_wait_ms: u64,
    pub replay_window_secs: u64,
    /// How much driver supply a new owner replays: longer than drivers take to repeat
    /// their status (the simulated fleet: every 10 s).
    pub supply_replay_secs: u64,
    pub tick_ms: u64,
    /// The learned ETA corrections, where another service of the process (the API in `up`)
    /// already keeps them fed; without them, dispatch feeds its own from the ETA topic.
    pub learned: Option<Arc<Learned>>,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        Self {
            group: "bimride-dispatch".into(),
            delivery: Guarantee::ExactlyOnce,
            transactional_id: String::new(),
            commit_ms: 2,
            offer_timeout_ms: 8_000,
            max_wait_ms: 45_000,
            replay_window_secs: 600,
            supply_replay_secs: 120,
            tick_ms: 100,
            learned: None,
        }
    }
}
