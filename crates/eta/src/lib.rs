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
//!   publishing, and reads back the observations its partitions of the ETA topic hold from that
//!   window: a leg observed again (redelivery, or a replay) counts in the figures and is not
//!   published twice, so the learners downstream learn each leg once.

pub mod figures;
pub mod learned;
pub mod tracker;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::LazyLock;
use std::time::Duration;

use bimride_events::{EtaLeg, EtaObserved, Millis, RideEvent, Topic};
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

static ALREADY_PUBLISHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_eta_already_published_total",
        "Legs observed again (a redelivery, or a replay) whose observation the ETA topic already held: counted in the figures, not published twice.",
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
    /// Read back on takeover, by partition: the observations already on the ETA topic.
    published: HashMap<i32, Published>,
    eta_topic: String,
}

/// What the ETA topic held of one partition at takeover. Only the ride events held then can
/// complete those legs again, so the ids are forgotten once the tracker has read past them.
#[derive(Debug, Default)]
struct Published {
    ids: HashSet<String>,
    /// The last ride event of the partition at takeover, where the window held any.
    through: Option<i64>,
}

impl Eta {
    /// The observations of `partition` not published yet; those already published count in
    /// the figures now.
    fn unpublished(&mut self, partition: i32, observed: Vec<EtaObserved>) -> Vec<EtaObserved> {
        let published = self.published.get_mut(&partition);
        let (again, new): (Vec<_>, Vec<_>) = match published {
            Some(p) => observed
                .into_iter()
                .partition(|o| p.ids.remove(&o.event_id)),
            None => (Vec::new(), observed),
        };
        for o in &again {
            ALREADY_PUBLISHED
                .with_label_values(&[leg_name(o.leg)])
                .inc();
        }
        self.export(&again);
        new
    }

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
    /// what they observed was published then. The observations on the ETA topic's same
    /// partitions are read too, so that a leg observed again is not published again.
    async fn assigned(&mut self, takeover: Takeover<'_>) -> Result<(), RebuildError> {
        // Ride events and observations are co-partitioned by ride.
        let marks = takeover.with_output(&self.eta_topic)?;
        let history = takeover.read(marks, self.window).await?;
        let (mut replayed, mut published) = (0, 0);
        for h in &history {
            let of = self.published.entry(h.partition).or_default();
            if h.topic == self.eta_topic {
                if let Some(o) = takeover.decode::<EtaObserved>(h).await {
                    of.ids.insert(o.event_id);
                    published += 1;
                }
            } else {
                of.through = of.through.max(Some(h.offset));
                if h.before_mark
                    && let Some(event) = takeover.decode::<RideEvent>(h).await
                {
                    let _ = self.tracker.apply(h.partition, &event);
                    replayed += 1;
                }
            }
        }
        self.published.retain(|_, p| !p.ids.is_empty());
        tracing::info!(partitions = ?takeover.partitions, replayed, published, open = self.tracker.open(), "eta partitions taken over");
        Ok(())
    }

    fn revoked(&mut self, partitions: &BTreeSet<i32>) {
        self.tracker.revoke(partitions);
        self.published.retain(|p, _| !partitions.contains(p));
    }

    async fn record(&mut self, at: At, event: RideEvent) -> Result<Vec<EtaObserved>, Rejected> {
        let observed = self.tracker.apply(at.partition, &event);
        let new = self.unpublished(at.partition, observed);
        if self
            .published
            .get(&at.partition)
            .is_some_and(|p| p.through.is_some_and(|through| at.offset >= through))
        {
            self.published.remove(&at.partition);
        }
        Ok(new)
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
        // The ETA topic keeps a week: observations older than that cannot be read back.
        if self.eta_replay_secs > 7 * 86_400 {
            return Err("the eta replay window must be at most 7 days");
        }
        Ok(())
    }

    /// Runs the tracker until the context's token is cancelled.
    async fn run(self, cx: Context) -> Result<(), PartitionedError> {
        // The figures start afresh with the tracker: no zone and hour of an earlier run's
        // stays behind in the gauges.
        for gauges in [
            &*MAE,
            &*BIAS,
            &*OVERALL_MAE,
            &*OVERALL_BIAS,
            &*OVERALL_BASELINE_MAE,
        ] {
            gauges.reset();
        }
        for leg in LEGS {
            let leg = leg_name(leg);
            OBSERVED.with_label_values(&[leg]);
            OVERALL_MAE.with_label_values(&[leg]);
            OVERALL_BIAS.with_label_values(&[leg]);
            OVERALL_BASELINE_MAE.with_label_values(&[leg]);
            ALREADY_PUBLISHED.with_label_values(&[leg]);
        }
        let mut options = Options::new(self.group.clone(), "eta");
        options.fetch = Fetch::Batched;
        options.tick = Some(EXPIRE_EVERY);
        let eta = Eta {
            tracker: Tracker::new(cx.city, self.config()),
            figures: Figures::default(),
            window: Duration::from_secs(self.eta_replay_secs),
            published: HashMap::new(),
            eta_topic: cx.kafka.topics().name(Topic::Eta).to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::tests::{ride, tracker};

    /// A tracker that found `ids` of partition 0 already published, its ride events then
    /// ending at offset `through`, and one id of partition 1.
    fn eta(ids: &[&str], through: Option<i64>) -> Eta {
        let published = |ids: &[&str], through| Published {
            ids: ids.iter().map(|id| (*id).to_owned()).collect(),
            through,
        };
        Eta {
            tracker: tracker(1.0),
            figures: Figures::default(),
            window: Duration::from_secs(3_600),
            published: HashMap::from([
                (0, published(ids, through)),
                (1, published(&["r9/pickup"], None)),
            ]),
            eta_topic: "eta".into(),
        }
    }

    /// Ride `id`'s records at offsets from `first` of partition 0; the ids published.
    async fn drive(eta: &mut Eta, id: &str, first: i64) -> Vec<String> {
        let mut out = Vec::new();
        for (n, event) in ride(id).into_iter().enumerate() {
            let at = At {
                topic: Topic::RideEvents,
                partition: 0,
                offset: first + n as i64,
            };
            let observed = eta.record(at, event).await.expect("taken");
            out.extend(observed.into_iter().map(|o| o.event_id));
        }
        out
    }

    #[tokio::test]
    async fn a_leg_already_published_counts_in_the_figures_and_is_not_published_again() {
        // The pickup went out before a crash; the trip did not.
        let mut eta = eta(&["r1/pickup"], Some(4));
        assert_eq!(drive(&mut eta, "r1", 0).await, ["r1/trip"]);
        assert_eq!(eta.figures.overall(EtaLeg::Pickup).observations, 1);
        // Read past the ride events held at takeover: partition 0's ids are forgotten, the
        // other partition's kept until it is revoked.
        assert_eq!(Vec::from_iter(eta.published.keys()), [&1]);
        eta.revoked(&BTreeSet::from([1]));
        assert!(eta.published.is_empty());
    }

    #[tokio::test]
    async fn a_lagging_partition_keeps_its_ids_until_it_reads_past_its_takeover() {
        // The window read back held ride events up to offset 20; the group resumes far
        // behind, so the ids must outlive any clock.
        let mut eta = eta(&["r1/pickup", "r1/trip", "r2/pickup"], Some(20));
        assert!(drive(&mut eta, "r1", 0).await.is_empty());
        assert!(eta.tick(Millis(i64::MAX / 2)).is_empty());
        assert_eq!(drive(&mut eta, "r2", 5).await, ["r2/trip"]);
        assert!(eta.published.contains_key(&0), "forgotten before offset 20");
        assert_eq!(drive(&mut eta, "r3", 16).await, ["r3/pickup", "r3/trip"]);
        assert!(!eta.published.contains_key(&0));
    }
}
