//! Surge: demand against supply per H3 cell over event-time windows, published as smoothed
//! multipliers to the compacted surge topic, keyed by cell.
//!
//! - [`engine`]: the windows and multipliers, as pure state driven by event time.
//! - The [`Service`]: the engine on Kafka, a processor that owns every partition. It needs no
//!   committed offsets: at start it replays the inputs of the last sliding window from the log
//!   (by time), without publishing, then restores the multipliers last published from the
//!   compacted topic, and goes live. So a
//!   restart neither spikes nor drops to 1.0. Multipliers depend on event time only, so two
//!   instances publish the same records: run a second one for availability, not for scale.

pub mod engine;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use bimride_codec::Codec;
use bimride_domain::City;
use bimride_events::{CancelledBy, DispatchEvent, Millis, SupplyEvent, SurgeUpdated};
use bimride_kafka::history::{self, HistoryError};
use bimride_kafka::partitioned::{
    self, Assignment, At, Either, Fetch, Inputs, Options, PartitionedError, Processor, Rejected,
};
use bimride_kafka::replay::Point;
use bimride_kafka::service::{Context, Service};
use bimride_kafka::{EventProducer, KafkaConfig, ProduceError};
use bimride_telemetry::{counter, gauge};
use h3o::CellIndex;
use prometheus::{IntCounter, IntCounterVec, IntGauge};

use crate::engine::{CellSurge, Engine, Input, NO_SURGE, SurgeConfig};

/// Surge settings. Each is a flag of `bimride` with an environment fallback, described by
/// `--help`; the defaults here are the flags' defaults, taken from [`SurgeConfig::default`]
/// so that each is written once.
#[derive(Debug, Clone)]
pub struct SurgeSettings {
    pub surge_tumbling_secs: u64,
    pub surge_sliding_secs: u64,
    pub surge_lateness_ms: u64,
    pub surge_cap_milli: i32,
    /// Recompute and publish again every window that closes after this point, then run as
    /// usual: surge's replay, as it keeps no consumer group to move.
    pub surge_recompute_from: Option<Point>,
}

impl Default for SurgeSettings {
    fn default() -> Self {
        let config = SurgeConfig::default();
        Self {
            surge_tumbling_secs: (config.tumbling_ms / 1_000) as u64,
            surge_sliding_secs: (config.sliding_ms / 1_000) as u64,
            surge_lateness_ms: config.lateness_ms as u64,
            surge_cap_milli: config.cap_milli,
            surge_recompute_from: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SurgeError {
    #[error(transparent)]
    Consumer(#[from] PartitionedError),
    #[error("restoring the published multipliers failed: {0}")]
    History(#[from] HistoryError),
    #[error("reading the log stopped: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("publishing recomputed multipliers failed: {0}")]
    Publish(#[from] ProduceError),
}

impl SurgeSettings {
    pub fn config(&self) -> SurgeConfig {
        SurgeConfig {
            tumbling_ms: self.surge_tumbling_secs as i64 * 1_000,
            sliding_ms: self.surge_sliding_secs as i64 * 1_000,
            lateness_ms: self.surge_lateness_ms as i64,
            cap_milli: self.surge_cap_milli,
            ..SurgeConfig::default()
        }
    }
}

static UPDATES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_surge_updates_total",
        "Multipliers published, by direction: up or down.",
        &["direction"],
    )
});

static SKIPPED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_surge_skipped_total",
        "Input records surge could not decode, by topic; dispatch dead-letters them.",
        &["topic"],
    )
});

static LATE: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "bimride_surge_late_events_total",
        "Events that arrived after their window closed, counted and not applied.",
        &[],
    )
    .with_label_values(&[] as &[&str])
});

static MAX_LEVEL: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "bimride_surge_max_multiplier_milli",
        "The highest multiplier in force, in thousandths.",
    )
});

static SURGING: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "bimride_surge_cells_surging",
        "Cells whose multiplier is above 1.0.",
    )
});

/// Turns a record into the engine's inputs; records it cannot place give none.
fn inputs(city: &City, value: Either<DispatchEvent, SupplyEvent>) -> Vec<Input> {
    let cell = |hex: &str| hex.parse::<CellIndex>().ok();
    match value {
        Either::First(DispatchEvent::Requested(r)) => cell(&r.pickup_cell)
            .map(|cell| Input::Requested {
                ride_id: r.ride_id,
                cell,
                at: r.occurred_at,
            })
            .into_iter()
            .collect(),
        Either::First(DispatchEvent::Cancelled(c))
            if c.by == CancelledBy::System && c.reason == "no_driver" =>
        {
            vec![Input::Unfulfilled {
                ride_id: c.ride_id,
                at: c.occurred_at,
            }]
        }
        Either::First(_) => Vec::new(),
        Either::Second(SupplyEvent::Status(s)) => city
            .locate(s.position.lat, s.position.lng)
            .map(|zone| Input::Status {
                driver_id: s.driver_id,
                cell: zone.cell,
                available: s.status == bimride_events::DriverStatus::Available,
                at: s.occurred_at,
            })
            .into_iter()
            .collect(),
        Either::Second(SupplyEvent::Location(l)) => cell(&l.cell)
            .map(|cell| Input::Seen {
                driver_id: l.driver_id,
                cell,
                at: l.occurred_at,
            })
            .into_iter()
            .collect(),
        Either::Second(SupplyEvent::Answer(_)) => Vec::new(),
    }
}

/// How long the replay may stay idle before it is taken to be over: without traffic no live
/// record would ever end it.
const IDLE_REPLAY: Duration = Duration::from_secs(2);

struct Detector {
    engine: Engine,
    city: City,
    /// The multipliers last published, restored once the replay is over.
    seeds: Option<HashMap<CellIndex, CellSurge>>,
    /// Events from before this are replayed into the windows, not published from.
    live_from: Millis,
    started: Instant,
}

impl Detector {
    fn go_live(&mut self) {
        if let Some(seeds) = self.seeds.take() {
            let restored = seeds.len();
            for (cell, surge) in seeds {
                self.engine.seed(cell, surge);
            }
            tracing::info!(restored, "surge caught up; publishing");
        }
    }
}

impl Processor for Detector {
    type Input = Either<DispatchEvent, SupplyEvent>;
    type Output = SurgeUpdated;

    async fn record(
        &mut self,
        _: At,
        input: Either<DispatchEvent, SupplyEvent>,
    ) -> Result<Vec<SurgeUpdated>, Rejected> {
        let live = input.occurred_at().is_some_and(|t| t >= self.live_from);
        if live {
            self.go_live();
        }
        let mut published = Vec::new();
        let late = self.engine.late();
        for input in inputs(&self.city, input) {
            let updates = self.engine.apply(input);
            if live {
                published.extend(updates);
            }
        }
        LATE.inc_by(self.engine.late() - late);
        // The levels change only when a window closes, not with every record.
        if !published.is_empty() {
            published.iter().for_each(count);
            set_levels(&self.engine);
        }
        Ok(published)
    }

    fn tick(&mut self, _: Millis) -> Vec<SurgeUpdated> {
        if self.seeds.is_some() && self.started.elapsed() > IDLE_REPLAY {
            self.go_live();
        }
        Vec::new()
    }

    /// Bad records are dispatch's to dead-letter; surge only counts them.
    fn rejected(&mut self, topic: &str, _: &Rejected) -> bool {
        SKIPPED.with_label_values(&[topic]).inc();
        false
    }
}

impl Service for SurgeSettings {
    const NAME: &'static str = "surge";
    type Error = SurgeError;

    fn check(&self) -> Result<(), &'static str> {
        if !(1..=3_600).contains(&self.surge_tumbling_secs) {
            return Err("the tumbling window must be 1 s to 1 h");
        }
        if self.surge_sliding_secs < self.surge_tumbling_secs
            || !self
                .surge_sliding_secs
                .is_multiple_of(self.surge_tumbling_secs)
            || self.surge_sliding_secs > 24 * 3_600
        {
            return Err(
                "the sliding window must be a whole number of tumbling windows, at most a day",
            );
        }
        if self.surge_lateness_ms > self.surge_tumbling_secs * 1_000 {
            return Err("the lateness must not exceed the tumbling window");
        }
        if !(NO_SURGE..=10_000).contains(&self.surge_cap_milli) {
            return Err("the cap must be 1000 to 10000 thousandths");
        }
        Ok(())
    }

    /// Runs the surge detector until the context's token is cancelled.
    async fn run(self, cx: Context) -> Result<(), SurgeError> {
        // Every series exists from the start, so that dashboards and alerts read zeros.
        for direction in ["up", "down"] {
            UPDATES.with_label_values(&[direction]);
        }
        LazyLock::force(&LATE);
        MAX_LEVEL.set(i64::from(NO_SURGE));
        SURGING.set(0);
        let config = self.config();
        if let Some(from) = self.surge_recompute_from {
            let republished = recompute(&cx, config, from).await?;
            tracing::info!(%from, republished, "surge windows recomputed and published again");
        }
        let seeds = published(&cx.kafka, &cx.codec).await?;
        // Inputs from one sliding window (plus lateness) ago, read without a group: every
        // instance rebuilds the same state from the log.
        let now = Millis::now();
        let since = Millis(now.0 - config.sliding_ms - config.lateness_ms - config.tumbling_ms);
        let mut options = Options::new(format!("bimride-surge-{}", uuid::Uuid::new_v4()), "surge");
        options.fetch = Fetch::Batched;
        options.assignment = Assignment::Everything { since };
        options.tick = Some(Duration::from_millis(500));
        let detector = Detector {
            engine: Engine::new(config),
            city: cx.city,
            seeds: Some(seeds),
            live_from: now,
            started: Instant::now(),
        };
        tracing::info!(
            tumbling_ms = config.tumbling_ms,
            sliding_ms = config.sliding_ms,
            "surge started"
        );
        let done = partitioned::run(&cx.kafka, cx.codec, detector, options, cx.shutdown).await?;
        tracing::info!(late = done.engine.late(), "surge stopped");
        Ok(())
    }
}

/// Recomputes every window that closes after `from` from the inputs the log retains, and
/// publishes its multipliers again. The inputs are applied in event-time order: read back
/// partition by partition, a backlog would otherwise make late what arrived in time live.
/// The engine reads no clock, so from a point where no cell surged (the log's start, or a
/// quiet hour) the multipliers are those published the first time; from mid-surge, the
/// first windows start at 1.0 and ease to them by the smoothing.
async fn recompute(cx: &Context, config: SurgeConfig, from: Point) -> Result<usize, SurgeError> {
    type In = Either<DispatchEvent, SupplyEvent>;
    let now = Millis::now().0;
    let (start, after) = match from {
        Point::Earliest => (0, i64::MIN),
        Point::At(t) => (
            t.0 - config.sliding_ms - config.lateness_ms - config.tumbling_ms,
            t.0,
        ),
    };
    let window = Duration::from_millis(u64::try_from(now - start).unwrap_or_default());
    let mut records: Vec<In> = Vec::new();
    for topic in In::topics() {
        let (kafka, name) = (cx.kafka.clone(), cx.kafka.topics().name(topic).to_owned());
        let read = tokio::task::spawn_blocking(move || {
            history::read_topic(&kafka, "bimride-surge-recompute", &name, window)
        })
        .await??;
        for h in read {
            // What does not decode was dead-lettered by dispatch the first time.
            if let Ok(input) = In::decode(&cx.codec, topic, &h.payload).await {
                records.push(input);
            }
        }
    }
    records.sort_by_key(Inputs::occurred_at);
    let mut engine = Engine::new(config);
    let mut updates = Vec::new();
    for record in records {
        for input in inputs(&cx.city, record) {
            updates.extend(
                engine
                    .apply(input)
                    .into_iter()
                    .filter(|u| u.window_end.0 > after),
            );
        }
    }
    EventProducer::new(&cx.kafka, Arc::clone(&cx.codec))?
        .send_all(&updates)
        .await?;
    Ok(updates.len())
}

fn count(u: &SurgeUpdated) {
    let direction = if u.multiplier_milli > NO_SURGE {
        "up"
    } else {
        "down"
    };
    UPDATES.with_label_values(&[direction]).inc();
}

fn set_levels(engine: &Engine) {
    let levels = engine.published().values().map(|s| s.multiplier_milli);
    MAX_LEVEL.set(i64::from(levels.clone().max().unwrap_or(NO_SURGE)));
    SURGING.set(levels.filter(|m| *m > NO_SURGE).count() as i64);
}

/// The multipliers last published, from the compacted surge topic.
async fn published(
    kafka: &KafkaConfig,
    codec: &Codec,
) -> Result<HashMap<CellIndex, CellSurge>, SurgeError> {
    let month = Duration::from_secs(30 * 24 * 3_600);
    let updates: Vec<SurgeUpdated> =
        history::values(kafka, codec, "bimride-surge-restore", month).await?;
    let mut seeds: HashMap<CellIndex, CellSurge> = HashMap::new();
    for u in updates {
        let Ok(cell) = u.cell.parse::<CellIndex>() else {
            continue;
        };
        let surge = CellSurge {
            multiplier_milli: u.multiplier_milli,
            demand: u.demand,
            supply: u.supply,
            window_end: u.window_end,
        };
        if seeds
            .get(&cell)
            .is_none_or(|s| s.window_end <= surge.window_end)
        {
            seeds.insert(cell, surge);
        }
    }
    Ok(seeds)
}
