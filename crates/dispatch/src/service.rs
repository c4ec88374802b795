//! Dispatch on Kafka: the engine as a partition-owning processor over the co-partitioned
//! ride requests and driver supply.
//!
//! - Range assignment gives a member the same partition numbers of both topics, so an
//!   instance sees all the demand and all the supply of the regions it owns.
//! - On assignment, the new partitions' state is rebuilt from the log before live records
//!   are processed: requests and supply within the replay window up to the committed offset,
//!   plus the assignments and cancellations already written past it.
//! - Exactly once (the default): decisions commit in transactions with the input offsets, and
//!   the group coordinator refuses those of an instance the group has moved on from. At least
//!   once: offsets are stored after everything a record caused is acknowledged.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bimride_eta::learned::LearnedFeed;

use bimride_events::{DispatchEvent, Millis, RideEvent, SupplyEvent, Topic};
use bimride_kafka::partitioned::{
    self, At, Delivery, Either, Options, Outputs, PartitionedError, Processor, RebuildError,
    Rejected, Takeover,
};
use bimride_kafka::producer::InFlight;
use bimride_kafka::service::{Context, Service};
use bimride_kafka::{EventProducer, ProduceError};

use bimride_domain::Mode;
use rdkafka::TopicPartitionList;

use crate::engine::{Engine, Output, Timing};
use crate::{DispatchSettings, metrics};

type Input = Either<DispatchEvent, SupplyEvent>;

impl Outputs for Output {
    async fn send(&self, producer: &EventProducer) -> Result<InFlight, ProduceError> {
        match self {
            // The dispatch log first: a new owner must see the decision it replays.
            Output::Log(e) => producer.send(e).await,
            Output::Ride(e) => producer.send(e).await,
        }
    }
}

struct Dispatcher {
    engine: Engine,
    settings: DispatchSettings,
    owned: BTreeSet<i32>,
    /// The most overdue an offer has been, and when an overdue offer was last logged.
    worst_overdue_ms: i64,
    overdue_logged: Millis,
}

/// Most records one transaction carries.
const MAX_BATCH: usize = 1_000;

/// An offer this overdue is worth a warning, repeated this often while it lasts.
const OVERDUE_WARNING_MS: i64 = 10_000;
const OVERDUE_WARNING_EVERY_MS: i64 = 60_000;

impl Service for DispatchSettings {
    const NAME: &'static str = "dispatch";
    type Error = PartitionedError;

    fn check(&self) -> Result<(), &'static str> {
        if self.group.trim().is_empty() {
            return Err("the dispatch group must not be empty");
        }
        if !(50..=600_000).contains(&self.offer_timeout_ms) {
            return Err("the offer timeout must be 50 ms to 10 minutes");
        }
        if self.max_wait_ms <= self.offer_timeout_ms || self.max_wait_ms > 3_600_000 {
            return Err("the maximum wait must exceed the offer timeout and be at most an hour");
        }
        if self.replay_window_secs * 1000 < self.max_wait_ms {
            return Err("the replay window must cover the maximum wait");
        }
        if !(10..=self.replay_window_secs).contains(&self.supply_replay_secs) {
            return Err("the supply replay window must be 10 s to the replay window");
        }
        if !(10..=5_000).contains(&self.tick_ms) {
            return Err("the tick must be 10 ms to 5 s");
        }
        if !(1..=1_000).contains(&self.commit_ms) {
            return Err("the commit interval must be 1 ms to 1 s");
        }
        Ok(())
    }

    /// Runs one dispatch instance until the context's token is cancelled.
    async fn run(self, cx: Context) -> Result<(), PartitionedError> {
        let timing = Timing {
            offer_timeout_ms: self.offer_timeout_ms as i64,
            max_wait_ms: self.max_wait_ms as i64,
        };
        let mut options = Options::new(self.group.clone(), "dispatch");
        options.tick = Some(Duration::from_millis(self.tick_ms));
        options.co_partitioned = true;
        let transactional_id = if self.transactional_id.trim().is_empty() {
            format!("{}-{}", self.group, uuid::Uuid::now_v7())
        } else {
            self.transactional_id.clone()
        };
        options.delivery = Delivery::of(
            self.delivery,
            transactional_id,
            Duration::from_millis(self.commit_ms),
            MAX_BATCH,
        );
        // Pickup ETAs learn from the observations of the ETA tracker: from a feed another
        // service of this process keeps, or from one fed beside dispatch.
        let (learned, learner) = match self.learned.clone() {
            Some(learned) => (learned, None),
            None => {
                let feed = LearnedFeed::new(Arc::default());
                (Arc::clone(&feed.learned), Some(feed))
            }
        };
        let dispatcher = Dispatcher {
            engine: Engine::new(cx.city.clone(), timing).learning_from(learned),
            settings: self,
            owned: BTreeSet::new(),
            worst_overdue_ms: 0,
            overdue_logged: Millis(i64::MIN),
        };
        let learning = async {
            match learner {
                Some(feed) => feed.run(cx.clone()).await,
                None => Ok(()),
            }
        };
        let (done, ()) = tokio::try_join!(
            partitioned::run(
                &cx.kafka,
                Arc::clone(&cx.codec),
                dispatcher,
                options,
                cx.shutdown.clone()
            ),
            learning,
        )?;
        tracing::info!(tally = ?done.engine.tally(), worst_overdue_ms = done.worst_overdue_ms, "dispatch stopped");
        Ok(())
    }
}

/// The ride a dispatch decision settles: an assignment, or a cancellation by the system.
fn decision_of(input: &Input) -> Option<&str> {
    match input {
        Either::First(DispatchEvent::Assigned(a)) => Some(&a.ride_id),
        Either::First(DispatchEvent::Cancelled(c))
            if c.by == bimride_events::CancelledBy::System =>
        {
            Some(&c.ride_id)
        }
        _ => None,
    }
}

impl Dispatcher {
    fn apply(&mut self, partition: i32, input: Input, mode: Mode) -> Result<Vec<Output>, String> {
        let now = Millis::now();
        match input {
            Either::First(e) => self.engine.on_dispatch(partition, e, now, mode),
            Either::Second(e) => self.engine.on_supply(partition, e, now, mode),
        }
        .map_err(|e| e.to_string())
    }

    fn count(&self, outputs: &[Output]) {
        for output in outputs {
            metrics::count(output);
            if let Output::Ride(RideEvent::DriverAssigned(a)) = output
                && let Some(requested) = self.engine.requested_at(&a.ride_id)
            {
                metrics::observe_match(requested, a.occurred_at);
            }
        }
    }

    async fn rebuild(&mut self, takeover: Takeover<'_>) -> Result<usize, RebuildError> {
        // Requests from the whole replay window; supply from its own, shorter one: idle
        // drivers repeat their status, and a replayed assignment holds its driver whether or
        // not the driver's records are replayed.
        let supply = takeover.kafka.topics().name(Topic::DriverSupply).to_owned();
        let (mut requests, mut drivers) = (TopicPartitionList::new(), TopicPartitionList::new());
        for e in takeover.committed.elements() {
            let marks = if e.topic() == supply {
                &mut drivers
            } else {
                &mut requests
            };
            marks
                .add_partition_offset(e.topic(), e.partition(), e.offset())
                .map_err(|e| RebuildError(e.to_string()))?;
        }
        let mut history = takeover
            .read(
                requests,
                Duration::from_secs(self.settings.replay_window_secs),
            )
            .await?;
        history.extend(
            takeover
                .read(
                    drivers,
                    Duration::from_secs(self.settings.supply_replay_secs),
                )
                .await?,
        );
        let mut inputs = Vec::with_capacity(history.len());
        for h in &history {
            if let Some(input) = takeover.decode::<Input>(h).await {
                inputs.push((h, input));
            }
        }
        // Rides decided past the committed offset: their requests, also past it, are
        // replayed with the decision, or the live pass would see a request waiting far too
        // long and give up on a ride that already has a driver.
        let decided: BTreeSet<String> = inputs
            .iter()
            .filter(|(h, _)| !h.before_mark)
            .filter_map(|(_, input)| decision_of(input).map(str::to_owned))
            .collect();
        // Supply first, so that replayed assignments find their drivers.
        let mut replayed = 0;
        for only_supply in [true, false] {
            for (h, input) in inputs
                .iter()
                .filter(|(_, input)| matches!(input, Either::Second(_)) == only_supply)
            {
                // Past the committed offset only dispatch's own decisions, and the requests
                // they decide, are taken: the rest is processed live.
                let take = h.before_mark
                    || decision_of(input).is_some()
                    || matches!(input, Either::First(DispatchEvent::Requested(r)) if decided.contains(&r.ride_id));
                if take {
                    let _ = self.apply(h.partition, input.clone(), Mode::Replay);
                    replayed += 1;
                }
            }
        }
        Ok(replayed)
    }
}

impl Processor for Dispatcher {
    type Input = Input;
    type Output = Output;

    async fn assigned(&mut self, takeover: Takeover<'_>) -> Result<(), RebuildError> {
        let parts = takeover.partitions.clone();
        let replayed = self.rebuild(takeover).await?;
        self.owned.extend(&parts);
        metrics::OWNED_PARTITIONS.set(self.owned.len() as i64);
        tracing::info!(partitions = ?parts, replayed, waiting = self.engine.waiting(), drivers = self.engine.drivers(), "regions taken over");
        Ok(())
    }

    fn revoked(&mut self, partitions: &BTreeSet<i32>) {
        self.engine.revoke(partitions);
        self.owned.retain(|p| !partitions.contains(p));
        metrics::OWNED_PARTITIONS.set(self.owned.len() as i64);
    }

    async fn record(&mut self, at: At, input: Input) -> Result<Vec<Output>, Rejected> {
        let outputs = self
            .apply(at.partition, input, Mode::Live)
            .map_err(|message| Rejected {
                reason: "invalid_record",
                message,
            })?;
        self.count(&outputs);
        Ok(outputs)
    }

    fn tick(&mut self, now: Millis) -> Vec<Output> {
        let outputs = self.engine.tick(now);
        self.engine.forget_settled(Millis(
            now.0 - self.settings.replay_window_secs as i64 * 1000,
        ));
        self.count(&outputs);
        metrics::WAITING.set(self.engine.waiting() as i64);
        metrics::DRIVERS.set(self.engine.drivers() as i64);
        let overdue = self.engine.overdue_ms(now);
        metrics::OVERDUE.set(overdue as f64 / 1000.0);
        self.worst_overdue_ms = self.worst_overdue_ms.max(overdue);
        if overdue > OVERDUE_WARNING_MS
            && now.0.saturating_sub(self.overdue_logged.0) > OVERDUE_WARNING_EVERY_MS
        {
            self.overdue_logged = now;
            tracing::warn!(
                overdue_ms = overdue,
                waiting = self.engine.waiting(),
                "offers kept past their deadline: supply is read far behind the clock"
            );
        }
        outputs
    }
}
