//! ETA tracking, as operational monitoring: each ride's predictions set against what happened.
//!
//! - [`tracker`]: the join of predictions and outcomes by ride, in event time, with state that
//!   expires (pure).
//! - [`figures`]: mean absolute error and bias per leg, zone and hour (pure).
//! - [`learned`]: the feed that teaches the corrections dispatch and quotes apply.
//! - [`EtaSettings`], a [`Service`]: the tracker on Kafka. A consumer group reads the ride
//!   events (keyed by ride, so a ride's records share a partition), publishes each observation
//!   to the ETA topic, and exports the figures. On assignment it rebuilds the partial joins of
//!   its new partitions from the log's last replay window, up to the committed offset, without
//!   publishing. An observation's id is its ride and leg, so one made twice (redelivery, or a
//!   replay) is recognised downstream.

pub mod figures;
pub mod learned;
pub mod tracker;

use std::collections::BTreeSet;
use std::sync::LazyLock;
use std::time::Duration;

use bimride_events::{EtaLeg, EtaObserved, Millis, RideEvent};
use bimride_kafka::partitioned::{
    self, At, Fetch, Options, PartitionedError, Processor, RebuildError, Rejected, Takeover,
};
use bimride_kafka::service::{Context, Service};
use bimride_telemetry::{counter, measures};
use prometheus::{GaugeVec, IntCounterVec};

use crate::figures::Figures;
use crate::tracker::{Tracker, TrackerConfig, leg_name};

/// ETA tracker settings. Each is a flag of `bimride` with an environment fallback, described
/// by `--help`; the defaults here are the flags' defaults.
#[derive(Debug, Clone)]
pub struct EtaSettings {
    pub group: String,
    /// How long a ride's partial join is kept after its latest record, in event time.
    pub eta_lateness_secs: u64,
    /// Seconds of the city's clock per second of event time (the simulation's speed-up).
    pub eta_time_scale: f64,
    /// How far back a new owner of a partition reads to rebuild its partial joins.
    pub eta_replay_secs: u64,
}

impl Default for EtaSettings {
    fn default() -> Self {
        let tracker = TrackerConfig::default();
        Self {
            group: "bimride-eta".into(),
            eta_lateness_secs: (tracker.lateness_ms / 1_000) as u64,
            eta_time_scale: tracker.time_scale,
            eta_replay_secs: (tracker.lateness_ms / 1_000) as u64,
        }
    }
}

impl EtaSettings {
    pub fn config(&self) -> TrackerConfig {
        TrackerConfig {
            lateness_ms: self.eta_lateness_secs as i64 * 1_000,
            time_scale: self.eta_time_scale,
        }
    }
}

static OBSERVED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_eta_observations_total",
        "Predictions set against what happened, by leg (pickup or trip).",
        &["leg"],
    )
});

static MAE: LazyLock<GaugeVec> = LazyLock::new(|| {
    measures(
        "bimride_eta_mae_seconds",
        "Mean absolute error of the ETAs given, by leg, pickup region and hour of the day (UTC).",
        &["leg", "region", "hour"],
    )
});

static BIAS: LazyLock<GaugeVec> = LazyLock::new(|| {
    measures(
        "bimride_eta_bias_seconds",
        "Mean of actual minus predicted (positive: ETAs too short), by leg, pickup region and hour of the day (UTC).",
        &["leg", "region", "hour"],
    )
});

static OVERALL_MAE: LazyLock<GaugeVec> = LazyLock::new(|| {
    measures(
        "bimride_eta_overall_mae_seconds",
        "Mean absolute error of the ETAs given, by leg, over every zone and hour.",
        &["leg"],
    )
});

static OVERALL_BIAS: LazyLock<GaugeVec> = LazyLock::new(|| {
    measures(
        "bimride_eta_overall_bias_seconds",
        "Mean of actual minus predicted, by leg, over every zone and hour.",
        &["leg"],
    )
});

static OVERALL_BASELINE_MAE: LazyLock<GaugeVec> = LazyLock::new(|| {
    measures(
        "bimride_eta_overall_baseline_mae_seconds",
        "Mean absolute error the same ETAs had from distance alone, before the learned correction, by leg, over every zone and hour.",
        &["leg"],
    )
});

const LEGS: [EtaLeg; 2] = [EtaLeg::Pickup, EtaLeg::Trip];

/// How often expired joins are dropped.
const EXPIRE_EVERY: Duration = Duration::from_secs(5);

struct Eta {
    tracker: Tracker,
    figures: Figures,
    window: Duration,
}

impl Eta {
    fn export(&mut self, observed: &[EtaObserved]) {
        for o in observed {
            let ((_, region, hour), figure) = self.figures.add(o);
            let leg = leg_name(o.leg);
            let hour = hour.to_string();
            let labels = [leg, region.as_str(), hour.as_str()];
            OBSERVED.with_label_values(&[leg]).inc();
            MAE.with_label_values(&labels).set(figure.mae_secs());
            BIAS.with_label_values(&labels).set(figure.bias_secs());
            let overall = self.figures.overall(o.leg);
            OVERALL_MAE
                .with_label_values(&[leg])
                .set(overall.mae_secs());
            OVERALL_BIAS
                .with_label_values(&[leg])
                .set(overall.bias_secs());
            OVERALL_BASELINE_MAE
                .with_label_values(&[leg])
                .set(overall.baseline_mae_secs());
        }
    }
}

impl Processor for Eta {
    type Input = RideEvent;
    type Output = EtaObserved;

    /// The partial joins of the new partitions, from the records the group already took:
    /// what they observed was published then.
    async fn assigned(&mut self, takeover: Takeover<'_>) -> Result<(), RebuildError> {
        let history = takeover
            .read(takeover.committed.clone(), self.window)
            .await?;
        let mut replayed = 0;
        for h in history.iter().filter(|h| h.before_mark) {
            if let Some(event) = takeover.decode::<RideEvent>(h).await {
                let _ = self.tracker.apply(h.partition, &event);
                replayed += 1;
            }
        }
        tracing::info!(partitions = ?takeover.partitions, replayed, open = self.tracker.open(), "eta partitions taken over");
        Ok(())
    }

    fn revoked(&mut self, partitions: &BTreeSet<i32>) {
        self.tracker.revoke(partitions);
    }

    async fn record(&mut self, at: At, event: RideEvent) -> Result<Vec<EtaObserved>, Rejected> {
        Ok(self.tracker.apply(at.partition, &event))
    }

    fn tick(&mut self, now: Millis) -> Vec<EtaObserved> {
        self.tracker.expire(now);
        Vec::new()
    }

    /// Figures count what was published.
    fn settled(&mut self, outputs: &[EtaObserved]) {
        self.export(outputs);
    }

    /// Ride events that cannot be read are their producers' to dead-letter, not the tracker's.
    fn rejected(&mut self, _topic: &str, _rejected: &Rejected) -> bool {
        false
    }
}

impl Service for EtaSettings {
    const NAME: &'static str = "eta";
    type Error = PartitionedError;

    fn check(&self) -> Result<(), &'static str> {
        if self.group.trim().is_empty() {
            return Err("the eta group must not be empty");
        }
        if !(60..=7 * 86_400).contains(&self.eta_lateness_secs) {
            return Err("the eta lateness must be 1 minute to 7 days");
        }
        if !(self.eta_time_scale.is_finite() && (0.001..=1_000.0).contains(&self.eta_time_scale)) {
            return Err("the eta time scale must be 0.001 to 1000");
        }
        if self.eta_replay_secs < self.eta_lateness_secs {
            return Err("the eta replay window must cover the lateness");
        }
        Ok(())
    }

    /// Runs the tracker until the context's token is cancelled.
    async fn run(self, cx: Context) -> Result<(), PartitionedError> {
        for leg in LEGS {
            let leg = leg_name(leg);
            OBSERVED.with_label_values(&[leg]);
            OVERALL_MAE.with_label_values(&[leg]);
            OVERALL_BIAS.with_label_values(&[leg]);
            OVERALL_BASELINE_MAE.with_label_values(&[leg]);
        }
        let mut options = Options::new(self.group.clone(), "eta");
        options.fetch = Fetch::Batched;
        options.tick = Some(EXPIRE_EVERY);
        let eta = Eta {
            tracker: Tracker::new(cx.city, self.config()),
            figures: Figures::default(),
            window: Duration::from_secs(self.eta_replay_secs),
        };
        tracing::info!(
            time_scale = self.eta_time_scale,
            lateness_secs = self.eta_lateness_secs,
            "eta tracker started"
        );
        let done = partitioned::run(&cx.kafka, cx.codec, eta, options, cx.shutdown).await?;
        tracing::info!(open = done.tracker.open(), "eta tracker stopped");
        Ok(())
    }
}
