//! The store as a service: a sink from the ride topics into the database.
//!
//! Each record is applied in a transaction that also moves its partition's position, and the
//! consumer starts from those positions, not from offsets committed to Kafka. A crash at any
//! moment therefore neither loses nor repeats a row. One instance writes a database.

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use bimride_events::{DispatchEvent, FareCharged, Notification, RideEvent};
use bimride_kafka::KafkaConfig;
use bimride_kafka::partitioned::{
    self, Assignment, At, Either, Fetch, Nothing, Options, PartitionedError, Positions, Processor,
    RebuildError, Rejected, Takeover,
};
use bimride_kafka::service::{Context, Service};
use bimride_telemetry::{counter, gauges};
use prometheus::{IntCounterVec, IntGaugeVec};
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::db::{Backend, Store, StoreError};
use crate::view::Change;

/// Where the embedded store keeps its SQLite database unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "bimride-data";

/// Which database holds ride history.
#[derive(Clone)]
pub struct Database {
    /// `postgres://…` or `sqlite:…`; without it, SQLite under `data_dir`. It may hold a
    /// password, so it never reaches a log.
    pub database_url: Option<String>,
    pub data_dir: PathBuf,
}

impl Default for Database {
    fn default() -> Self {
        Self {
            database_url: None,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redacted(&self.url()))
    }
}

/// The SQLite database's file name in the data directory.
const SQLITE_FILE: &str = "rides.db";

impl Database {
    /// The database in use: the URL given, or the SQLite file under the data directory.
    pub fn url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite:{}?mode=rwc",
                self.data_dir.join(SQLITE_FILE).display()
            ),
        }
    }

    /// Whether there is a store to read: a URL given, or the SQLite file already made.
    pub fn exists(&self) -> bool {
        self.database_url.is_some() || self.data_dir.join(SQLITE_FILE).is_file()
    }

    pub fn check(&self) -> Result<(), &'static str> {
        Backend::of(&self.url())
            .map(drop)
            .map_err(|_| "the database URL must start with postgres://, postgresql:// or sqlite:")
    }

    /// Connects, once the data directory exists where the store is SQLite in it, retrying
    /// while the database is away. `None` if shut down first.
    pub async fn connect(&self, shutdown: &CancellationToken) -> Result<Option<Store>, SinkError> {
        if self.database_url.is_none() {
            std::fs::create_dir_all(&self.data_dir).map_err(|source| SinkError::DataDir {
                dir: self.data_dir.clone(),
                source,
            })?;
        }
        Ok(connect(&self.url(), shutdown).await?)
    }
}

/// The store's settings; the binary's flags fill them.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub database: Database,
    pub group: String,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            database: Database::default(),
            group: "bimride-store".into(),
        }
    }
}

/// The URL with any password replaced, for logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:***@{host}{path}")
        }
        _ => url.to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Consumer(#[from] PartitionedError),
    #[error("cannot create the data directory {dir}: {source}")]
    DataDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("the Kafka cluster did not tell its id")]
    NoClusterId,
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("a blocking call failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

static RECORDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_store_records_total",
        "Records the ride store read, by outcome: applied to a ride, unchanged (a redelivery, or no ride's), or failed (skipped, and logged)",
        &["outcome"],
    )
});
static RIDES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauges(
        "bimride_rides",
        "Rides in the ride store, by status",
        &["status"],
    )
});
/// How often the rides-by-status gauge is read from the database.
const COUNT_EVERY: Duration = Duration::from_secs(5);

static UNAVAILABLE: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "bimride_store_unavailable_total",
        "Writes retried because the database was away or busy",
        &["backend"],
    )
});

/// Pauses between attempts while the database is away.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MOST: Duration = Duration::from_secs(5);

impl Service for StoreSettings {
    const NAME: &'static str = "store";
    type Error = SinkError;

    fn check(&self) -> Result<(), &'static str> {
        self.database.check()?;
        if self.group.is_empty() {
            return Err("the store's group must not be empty");
        }
        Ok(())
    }

    async fn run(self, cx: Context) -> Result<(), SinkError> {
        let url = self.database.url();
        let Some(store) = self.database.connect(&cx.shutdown).await? else {
            return Ok(());
        };
        let cluster = cluster_id(&cx.kafka).await?;
        let positions = store.positions(&cluster).await?;
        tracing::info!(database = %redacted(&url), %cluster, partitions = positions.len(), "ride store started");
        for outcome in ["applied", "unchanged", "failed"] {
            RECORDS.with_label_values(&[outcome]);
        }
        let backend = match store.backend() {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        };
        UNAVAILABLE.with_label_values(&[backend]);
        let mut options = Options::new(self.group, "store");
        options.fetch = Fetch::Batched;
        options.assignment = Assignment::Positions(positions);
        let (records, queue) = mpsc::channel(QUEUE);
        let writer = Writer {
            store: store.clone(),
            cluster,
            backend,
            shutdown: cx.shutdown.clone(),
        };
        let writing = tokio::spawn(writer.run(queue));
        let counting = tokio::spawn(count_rides(store.clone(), cx.shutdown.clone()));
        let result = partitioned::run(&cx.kafka, cx.codec, Sink { records }, options, cx.shutdown)
            .await
            .map(drop);
        // The queue closes with the sink: the writer writes what is left, then ends.
        writing.await?;
        counting.abort();
        store.close().await;
        result?;
        Ok(())
    }
}

/// Keeps `bimride_rides{status}` at the database's counts; every status from the start.
async fn count_rides(store: Store, shutdown: CancellationToken) {
    for status in bimride_domain::ride::RideStatus::ALL {
        RIDES.with_label_values(&[status.as_str()]);
    }
    let mut every = tokio::time::interval(COUNT_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match store.counts().await {
            Ok(counts) => {
                for (status, n) in counts {
                    RIDES.with_label_values(&[&status]).set(n);
                }
            }
            Err(e) => tracing::warn!(error = %e, "counting rides failed"),
        }
    }
}

/// Connects, retrying while the database is away. `None` if shut down first.
async fn connect(url: &str, shutdown: &CancellationToken) -> Result<Option<Store>, StoreError> {
    let mut pause = RETRY_FIRST;
    loop {
        match Store::connect(url).await {
            Ok(store) => return Ok(Some(store)),
            Err(e) if e.is_unavailable() => {
                tracing::warn!(database = %redacted(url), error = %e, "database unavailable; retrying");
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RETRY_MOST);
    }
}

async fn cluster_id(kafka: &KafkaConfig) -> Result<String, SinkError> {
    let client: BaseConsumer = kafka.client().create()?;
    tokio::task::spawn_blocking(move || client.client().fetch_cluster_id(Duration::from_secs(30)))
        .await?
        .ok_or(SinkError::NoClusterId)
}

type Input = Either<Either<DispatchEvent, RideEvent>, Either<FareCharged, Notification>>;

/// What the writer applies, in the order the consumer met it.
// Records are nearly all of the traffic: boxing them would allocate once per record.
#[allow(clippy::large_enum_variant)]
enum Queued {
    /// Where reading of newly owned partitions starts.
    Start(Positions),
    Record(At, Option<Change>),
}

/// Hands each record to the writer, in order. The database's positions, not Kafka's, say
/// what is stored, so a record queued when the process dies is read again at the next start.
struct Sink {
    records: mpsc::Sender<Queued>,
}

/// Records queued for the writer; past this, reading waits.
const QUEUE: usize = 4_096;
/// Records written in one transaction at most.
const BATCH: usize = 512;
/// How long a batch waits for more records once its first has come: at a trickle, one
/// transaction per record would cost a commit each.
const LINGER: Duration = Duration::from_millis(100);

impl Processor for Sink {
    type Input = Input;
    type Output = Nothing;

    async fn record(&mut self, at: At, input: Input) -> Result<Vec<Nothing>, Rejected> {
        let change = match input {
            Either::First(Either::First(e)) => Change::of_dispatch(e),
            Either::First(Either::Second(e)) => Change::of_ride(e),
            Either::Second(Either::First(c)) => Some(Change::Charged(c)),
            Either::Second(Either::Second(n)) => Some(Change::Sent(n)),
        };
        // Closed only when the writer has stopped at shutdown.
        let _ = self.records.send(Queued::Record(at, change)).await;
        Ok(Vec::new())
    }

    /// The starts go to the writer ahead of the partitions' records: where the log no longer
    /// holds a kept position, reading starts at the log's beginning, and so must the position.
    async fn assigned(&mut self, takeover: Takeover<'_>) -> Result<(), RebuildError> {
        let names = takeover.kafka.topics();
        let mut starts = Positions::new();
        for e in takeover.committed.elements() {
            if let (Some(topic), rdkafka::Offset::Offset(offset)) =
                (names.topic_of(e.topic()), e.offset())
            {
                starts.insert((topic, e.partition()), offset);
            }
        }
        let _ = self.records.send(Queued::Start(starts)).await;
        Ok(())
    }

    /// Records that cannot be decoded are their producers' to dead-letter.
    fn rejected(&mut self, _topic: &str, _rejected: &Rejected) -> bool {
        false
    }
}

/// Writes queued records in batches, each batch and its positions in one transaction.
struct Writer {
    store: Store,
    cluster: String,
    backend: &'static str,
    shutdown: CancellationToken,
}

impl Writer {
    async fn run(self, mut queue: mpsc::Receiver<Queued>) {
        let mut queued = Vec::with_capacity(BATCH);
        let mut batch = Vec::with_capacity(BATCH);
        while queue.recv_many(&mut queued, BATCH).await > 0 {
            let full = tokio::time::Instant::now() + LINGER;
            while queued.len() < BATCH {
                let room = BATCH - queued.len();
                match tokio::time::timeout_at(full, queue.recv_many(&mut queued, room)).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            for q in queued.drain(..) {
                match q {
                    Queued::Record(at, change) => batch.push((at, change)),
                    Queued::Start(starts) => {
                        if !(self.write(&batch).await && self.start(&starts).await) {
                            return;
                        }
                        batch.clear();
                    }
                }
            }
            if !self.write(&batch).await {
                // Stopped while the database was away: nothing more is written, and the
                // next start reads from the positions it holds.
                return;
            }
            batch.clear();
        }
    }

    /// Records where reading starts, retrying while the database is away; false if shut
    /// down first.
    async fn start(&self, starts: &Positions) -> bool {
        let mut pause = RETRY_FIRST;
        loop {
            match self.store.start_at(&self.cluster, starts).await {
                Ok(()) => return true,
                Err(e) => {
                    if e.is_unavailable() {
                        UNAVAILABLE.with_label_values(&[self.backend]).inc();
                    }
                    tracing::warn!(error = %e, "recording where reading starts failed; retrying");
                }
            }
            if self.shutdown.is_cancelled() {
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_MOST);
        }
    }

    /// Writes a batch, retrying while the database is away; false if shut down first.
    async fn write(&self, batch: &[(At, Option<Change>)]) -> bool {
        if batch.is_empty() {
            return true;
        }
        let mut pause = RETRY_FIRST;
        loop {
            match self.store.apply_all(&self.cluster, batch).await {
                Ok(changed) => {
                    RECORDS
                        .with_label_values(&["applied"])
                        .inc_by(changed as u64);
                    RECORDS
                        .with_label_values(&["unchanged"])
                        .inc_by((batch.len() - changed) as u64);
                    return true;
                }
                Err(e) if e.is_unavailable() => {
                    UNAVAILABLE.with_label_values(&[self.backend]).inc();
                    tracing::warn!(records = batch.len(), error = %e, "database unavailable; retrying");
                }
                Err(e) => {
                    // A batch the database refuses for what it holds: each record alone, so
                    // that only the one at fault is skipped.
                    tracing::warn!(error = %e, "a batch failed; writing its records one by one");
                    return self.write_each(batch).await;
                }
            }
            if self.shutdown.is_cancelled() {
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_MOST);
        }
    }

    async fn write_each(&self, batch: &[(At, Option<Change>)]) -> bool {
        for (i, (at, _)) in batch.iter().enumerate() {
            let record = &batch[i..=i];
            match self.store.apply_all(&self.cluster, record).await {
                Ok(changed) => {
                    let outcome = if changed == 1 { "applied" } else { "unchanged" };
                    RECORDS.with_label_values(&[outcome]).inc();
                }
                Err(e) if e.is_unavailable() => {
                    if !Box::pin(self.write(record)).await {
                        return false;
                    }
                }
                Err(e) => {
                    // Stored past, so that it does not stop the partition for good.
                    RECORDS.with_label_values(&["failed"]).inc();
                    tracing::error!(topic = %at.topic, partition = at.partition, offset = at.offset, error = %e, "the store could not write this record; skipping it");
                    let skipped = [(*at, None)];
                    if !Box::pin(self.write(&skipped)).await {
                        return false;
                    }
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn a_password_never_reaches_a_log() {
        assert_eq!(
            redacted("postgres://bimride:s3cret@db:5432/bimride"),
            "postgres://bimride:***@db:5432/bimride"
        );
        assert_eq!(
            redacted("postgres://db:5432/bimride"),
            "postgres://db:5432/bimride"
        );
        assert_eq!(redacted("sqlite:data/rides.db"), "sqlite:data/rides.db");
    }
}
