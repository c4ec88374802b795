//! Surge: demand against supply per H3 cell over event-time windows, published as smoothed
//! multipliers to the compacted surge topic, keyed by cell.
//!
//! - [`engine`]: the windows and multipliers, as pure state driven by event time.
//! - [`run`]: the engine on Kafka. It needs no committed offsets: at start it replays the
//!   inputs of the last sliding window from the log (by time), without publishing, then
//!   restores the multipliers last published from the compacted topic, and goes live. So a
//!   restart neither spikes nor drops to 1.0. Multipliers depend on event time only, so two
//!   instances publish the same records: run a second one for availability, not for scale.

pub mod engine;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use bimride_domain::City;
use bimride_events::{
    CancelledBy, Codec, DispatchEvent, Millis, SupplyEvent, SurgeUpdated, Topic, TopicValue,
};
use bimride_kafka::history::{self, HistoryError};
use bimride_kafka::metrics::{LagContext, counter, gauge};
use bimride_kafka::producer::Delivery;
use bimride_kafka::{EventProducer, KafkaConfig, ProduceError};
use h3o::CellIndex;
use prometheus::{IntCounterVec, IntGauge};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::engine::{CellSurge, Engine, Input, NO_SURGE, SurgeConfig};

/// Surge settings, from flags with environment fallbacks.
#[derive(Debug, Clone, clap::Args)]
pub struct SurgeSettings {
    /// Tumbling window, in seconds: how often multipliers are computed.
    #[arg(long, env = "BIMRIDE_SURGE_TUMBLING_SECS", default_value_t = 30)]
    pub surge_tumbling_secs: u64,
    /// Sliding window, in seconds, a whole number of tumbling windows: how far back demand
    /// and supply count.
    #[arg(long, env = "BIMRIDE_SURGE_SLIDING_SECS", default_value_t = 120)]
    pub surge_sliding_secs: u64,
    /// How late an event may arrive and still count, in ms.
    #[arg(long, env = "BIMRIDE_SURGE_LATENESS_MS", default_value_t = 5_000)]
    pub surge_lateness_ms: u64,
    /// Highest multiplier, in thousandths (3000 is x3.0).
    #[arg(long, env = "BIMRIDE_SURGE_CAP_MILLI", default_value_t = 3_000)]
    pub surge_cap_milli: i32,
}

impl Default for SurgeSettings {
    fn default() -> Self {
        Self {
            surge_tumbling_secs: 30,
            surge_sliding_secs: 120,
            surge_lateness_ms: 5_000,
            surge_cap_milli: 3_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SurgeError {
    #[error("invalid surge settings: {0}")]
    Settings(&'static str),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error("restoring the published multipliers failed: {0}")]
    History(#[from] HistoryError),
    #[error("a blocking Kafka call failed to run: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl SurgeSettings {
    pub fn validate(&self) -> Result<(), SurgeError> {
        if !(1..=3_600).contains(&self.surge_tumbling_secs) {
            return Err(SurgeError::Settings(
                "the tumbling window must be 1 s to 1 h",
            ));
        }
        if self.surge_sliding_secs < self.surge_tumbling_secs
            || !self
                .surge_sliding_secs
                .is_multiple_of(self.surge_tumbling_secs)
            || self.surge_sliding_secs > 24 * 3_600
        {
            return Err(SurgeError::Settings(
                "the sliding window must be a whole number of tumbling windows, at most a day",
            ));
        }
        if self.surge_lateness_ms > self.surge_tumbling_secs * 1_000 {
            return Err(SurgeError::Settings(
                "the lateness must not exceed the tumbling window",
            ));
        }
        if !(NO_SURGE..=10_000).contains(&self.surge_cap_milli) {
            return Err(SurgeError::Settings(
                "the cap must be 1000 to 10000 thousandths",
            ));
        }
        Ok(())
    }

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

static LATE: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "bimride_surge_late_events",
        "Events that arrived after their window closed, counted and not applied.",
    )
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
fn inputs(city: &City, value: Decoded) -> Vec<Input> {
    let cell = |hex: &str| hex.parse::<CellIndex>().ok();
    match value {
        Decoded::Dispatch(DispatchEvent::Requested(r)) => cell(&r.pickup_cell)
            .map(|cell| Input::Requested {
                ride_id: r.ride_id,
                cell,
                at: r.occurred_at,
            })
            .into_iter()
            .collect(),
        Decoded::Dispatch(DispatchEvent::Cancelled(c))
            if c.by == CancelledBy::System && c.reason == "no_driver" =>
        {
            vec![Input::Unfulfilled {
                ride_id: c.ride_id,
                at: c.occurred_at,
            }]
        }
        Decoded::Dispatch(_) => Vec::new(),
        Decoded::Supply(SupplyEvent::Status(s)) => city
            .locate(s.position.lat, s.position.lng)
            .map(|zone| Input::Status {
                driver_id: s.driver_id,
                cell: zone.cell,
                available: s.status == bimride_events::DriverStatus::Available,
                at: s.occurred_at,
            })
            .into_iter()
            .collect(),
        Decoded::Supply(SupplyEvent::Location(l)) => cell(&l.cell)
            .map(|cell| Input::Seen {
                driver_id: l.driver_id,
                cell,
                at: l.occurred_at,
            })
            .into_iter()
            .collect(),
        Decoded::Supply(SupplyEvent::Answer(_)) => Vec::new(),
    }
}

enum Decoded {
    Dispatch(DispatchEvent),
    Supply(SupplyEvent),
}

/// Runs the surge detector until `shutdown`.
pub async fn run(
    kafka: &KafkaConfig,
    codec: Arc<Codec>,
    city: City,
    settings: SurgeSettings,
    shutdown: CancellationToken,
) -> Result<(), SurgeError> {
    settings.validate()?;
    let config = settings.config();
    let mut engine = Engine::new(config);
    let producer = EventProducer::new(kafka, Arc::clone(&codec))?;
    let seeds = published(kafka, &codec).await?;

    // Inputs from one sliding window (plus lateness) ago, read without a group: every
    // instance rebuilds the same state from the log.
    let consumer: StreamConsumer<LagContext> = kafka
        .consumer(&format!("bimride-surge-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set(
            "statistics.interval.ms",
            bimride_kafka::metrics::STATISTICS_INTERVAL_MS,
        )
        .create_with_context(LagContext("surge"))?;
    let since = Millis::now().0 - config.sliding_ms - config.lateness_ms - config.tumbling_ms;
    let consumer = Arc::new(consumer);
    let assign_from = Arc::clone(&consumer);
    let topics = kafka.topics();
    let requests = topics.name(Topic::RideRequests).to_owned();
    let inputs_of = [
        requests.clone(),
        topics.name(Topic::DriverSupply).to_owned(),
    ];
    tokio::task::spawn_blocking(move || -> Result<(), KafkaError> {
        let timeout = Duration::from_secs(10);
        let mut times = TopicPartitionList::new();
        for topic in &inputs_of {
            let metadata = assign_from.fetch_metadata(Some(topic), timeout)?;
            for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
                times.add_partition_offset(topic, p.id(), Offset::Offset(since))?;
            }
        }
        let starts = match assign_from.offsets_for_times(times.clone(), timeout) {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "offsets by time unavailable; reading from the start");
                let mut all = TopicPartitionList::new();
                for e in times.elements() {
                    all.add_partition_offset(e.topic(), e.partition(), Offset::Beginning)?;
                }
                all
            }
        };
        assign_from.assign(&starts)
    })
    .await??;

    let started = Instant::now();
    let live_from = Millis::now().0;
    let mut seeds = Some(seeds);
    let mut pending: Vec<Delivery> = Vec::new();
    tracing::info!(
        tumbling_ms = config.tumbling_ms,
        sliding_ms = config.sliding_ms,
        "surge started"
    );
    let reader = Arc::clone(&consumer);
    loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => break,
            // Without traffic, the replay is over once the reader has been idle a moment.
            () = tokio::time::sleep(Duration::from_secs(2)), if seeds.is_some() => None,
            m = reader.recv() => Some(m),
        };
        let live = match &message {
            Some(Ok(m)) => m.timestamp().to_millis().is_some_and(|t| t >= live_from),
            _ => started.elapsed() > Duration::from_secs(2),
        };
        if live && let Some(seeds) = seeds.take() {
            let restored = seeds.len();
            for (cell, surge) in seeds {
                engine.seed(cell, surge);
            }
            tracing::info!(restored, "surge caught up; publishing");
        }
        let Some(Ok(m)) = message else {
            if let Some(Err(e)) = message {
                tracing::warn!(error = %e, "consumer error");
            }
            continue;
        };
        let topic = m.topic().to_owned();
        bimride_kafka::metrics::CONSUMED
            .with_label_values(&[&topic])
            .inc();
        let bytes = m.payload().unwrap_or_default();
        // Bad records are dispatch's to dead-letter; surge only counts them.
        let decoded = if topic == requests {
            codec
                .decode::<DispatchEvent>(bytes)
                .await
                .map(Decoded::Dispatch)
        } else {
            codec
                .decode::<SupplyEvent>(bytes)
                .await
                .map(Decoded::Supply)
        };
        let Ok(decoded) = decoded else {
            SKIPPED.with_label_values(&[&topic]).inc();
            continue;
        };
        let occurred = match &decoded {
            Decoded::Dispatch(e) => e.occurred_at(),
            Decoded::Supply(e) => e.occurred_at(),
        };
        let mut published = false;
        for input in inputs(&city, decoded) {
            let updates = engine.apply(input);
            if !live {
                continue;
            }
            for u in updates {
                pending.push(producer.send(&u).await?);
                count(&u);
                published = true;
            }
        }
        if live {
            bimride_kafka::metrics::observe_stage("surge", &topic, occurred.0);
        }
        LATE.set(engine.late() as i64);
        // The levels change only when a window closes, not with every record.
        if published {
            set_levels(&engine);
        }
        if pending.len() > 256 {
            for d in pending.drain(..) {
                d.wait().await?;
            }
        }
    }
    for d in pending {
        d.wait().await?;
    }
    tracing::info!(late = engine.late(), "surge stopped");
    Ok(())
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
    let kafka = kafka.clone();
    let history = tokio::task::spawn_blocking(move || {
        history::read_topic(
            &kafka,
            "bimride-surge-restore",
            kafka.topics().name(Topic::Surge),
            Duration::from_secs(30 * 24 * 3_600),
        )
    })
    .await??;
    let mut seeds: HashMap<CellIndex, CellSurge> = HashMap::new();
    for h in history {
        let Ok(u) = codec.decode::<SurgeUpdated>(&h.payload).await else {
            continue;
        };
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
