//! The ride store on PostgreSQL or SQLite, chosen by the URL's scheme. One set of migrations
//! runs on both at connect.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use bimride_events::{Notification, Topic};
use bimride_kafka::partitioned::{At, Positions};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row};

use crate::view::{Change, RideView};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database URL must start with postgres://, postgresql:// or sqlite:")]
    Scheme,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("a stored ride view is not valid JSON: {0}")]
    View(#[from] serde_json::Error),
    #[error("the database's writers were busy past {0:?}")]
    Busy(Duration),
}

impl StoreError {
    /// Whether the database itself is away or busy, rather than the request being wrong.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Busy(_)
                | StoreError::Database(
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::Tls(_)
                        | sqlx::Error::Protocol(_)
                        | sqlx::Error::WorkerCrashed
                )
        ) || matches!(self, StoreError::Database(sqlx::Error::Database(e)) if is_transient(e.code().as_deref()))
    }
}

/// SQLite's busy and locked codes, and PostgreSQL's connection, shutdown and
/// serialization classes.
fn is_transient(code: Option<&str>) -> bool {
    code.is_some_and(|c| {
        matches!(c, "5" | "6" | "517" | "40001" | "40P01")
            || c.starts_with("08")
            || c.starts_with("57P")
    })
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn of(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            Err(StoreError::Scheme)
        }
    }
}

/// A page of a rider's rides, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub rides: Vec<RideView>,
    /// Where the next page starts; `None` on the last.
    pub next: Option<Cursor>,
}

/// A position in a rider's rides: the last ride of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub requested_at: i64,
    pub ride_id: String,
}

/// Totals over every ride stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Rides whose request is stored.
    pub requested: u64,
    /// Rides with a driver now or at their end: assigned, arrived, in progress or completed.
    pub assigned: u64,
    pub completed: u64,
    pub cancelled: u64,
    /// Rides charged, and what they brought.
    pub charges: u64,
    pub revenue_minor: i64,
    pub commission_minor: i64,
}

/// A booking's claim on a rider's idempotency key.
#[derive(Debug, Clone, Copy)]
pub struct KeyClaim<'a> {
    pub rider_id: &'a str,
    pub key: &'a str,
    pub ride_id: &'a str,
    pub request: &'a str,
    pub answer: &'a str,
}

/// What claiming an idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this booking's.
    New,
    /// An earlier booking holds it: its request and answer, as JSON.
    Earlier { request: String, answer: String },
}

impl Cursor {
    /// The cursor as a client carries it: opaque, but plain text.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.requested_at, self.ride_id)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let (at, id) = text.split_once('.')?;
        Some(Self {
            requested_at: at.parse().ok()?,
            ride_id: Some(id).filter(|id| !id.is_empty())?.to_owned(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite's writers' queue; see [`WriteGate`].
    gate: Option<WriteGate>,
}

/// SQLite takes one writer at a time, and a writer that finds the lock taken polls for it
/// with sleeps of up to 100 ms, so a busy writer that commits and begins again at once
/// starves the others. Every store on one SQLite file in this process (the sink and the API
/// in `bimride up`) takes turns here instead, first come first served. Other processes
/// still meet at SQLite's lock.
type WriteGate = Arc<tokio::sync::Mutex<()>>;

/// A writing transaction, with the turn it holds.
type Write<'a> = (
    Option<tokio::sync::MutexGuard<'a, ()>>,
    sqlx::Transaction<'static, sqlx::Any>,
);

fn write_gate(url: &str) -> WriteGate {
    static GATES: LazyLock<Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>> =
        LazyLock::new(Mutex::default);
    let file = url.split('?').next().unwrap_or(url);
    let file = file
        .trim_start_matches("sqlite:")
        .trim_start_matches("//")
        .to_owned();
    let mut gates = GATES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    gates.retain(|_, gate| gate.strong_count() > 0);
    if let Some(gate) = gates.get(&file).and_then(Weak::upgrade) {
        return gate;
    }
    let gate = WriteGate::default();
    gates.insert(file, Arc::downgrade(&gate));
    gate
}

/// How long a request waits for a connection before the store counts as unavailable.
const ACQUIRE: Duration = Duration::from_secs(5);

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let store = Self::open(url).await?;
        migrate(&store.pool).await?;
        Ok(store)
    }

    /// Connects to a store whose schema is already there, changing nothing: for readers that
    /// may hold only a read-only login, such as an audit.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let backend = Backend::of(url)?;
        sqlx::any::install_default_drivers();
        let options = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            // SQLite takes one writer at a time; readers share the WAL.
            .max_connections(match backend {
                Backend::Postgres => 10,
                Backend::Sqlite => 4,
            })
            .acquire_timeout(ACQUIRE)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        // A commit lost to a power cut takes its partitions' positions with
                        // it, so the records are read again: no fsync per commit is needed.
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let gate = (backend == Backend::Sqlite).then(|| write_gate(url));
        Ok(Self {
            pool,
            backend,
            gate,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// This store's turn to write, held until dropped; always free on PostgreSQL. Waiting
    /// longer than for a connection counts as the database being busy.
    async fn turn(&self) -> Result<Option<tokio::sync::MutexGuard<'_, ()>>, StoreError> {
        let Some(gate) = &self.gate else {
            return Ok(None);
        };
        match tokio::time::timeout(ACQUIRE, gate.lock()).await {
            Ok(turn) => Ok(Some(turn)),
            Err(_) => Err(StoreError::Busy(ACQUIRE)),
        }
    }

    /// A transaction that writes. SQLite's takes the write lock at once: one that read first
    /// and wrote later would fail, not wait, whenever another writer committed in between.
    /// It holds this store's turn until it ends.
    async fn write(&self) -> Result<Write<'_>, StoreError> {
        let turn = self.turn().await?;
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok((turn, tx))
    }

    /// Applies one record and moves its partition's position past it, in one transaction.
    /// A record at or before the position, or whose id is already stored, changes nothing;
    /// returns whether it changed a ride.
    pub async fn apply(
        &self,
        at: At,
        cluster: &str,
        change: Option<&Change>,
    ) -> Result<bool, StoreError> {
        Ok(self.apply_all(cluster, &[(at, change.cloned())]).await? == 1)
    }

    /// Applies records in order, and moves their partitions' positions past them, in one
    /// transaction; returns how many changed a ride. Each ride touched is read and written
    /// once, so a batch costs a handful of statements whatever its size.
    pub async fn apply_all(
        &self,
        cluster: &str,
        records: &[(At, Option<Change>)],
    ) -> Result<usize, StoreError> {
        let (_turn, mut tx) = self.write().await?;
        let stored = stored_positions(&mut tx).await?;
        let mut next: BTreeMap<(&'static str, i32), i64> = BTreeMap::new();
        let mut fresh: Vec<(At, &Change, &str)> = Vec::new();
        let mut ids = HashSet::new();
        for (at, change) in records {
            let key = (at.topic.suffix(), at.partition);
            let from = next.get(&key).or(stored.get(&key)).copied().unwrap_or(0);
            if at.offset < from {
                continue;
            }
            next.insert(key, at.offset + 1);
            if let Some((change, ride_id)) = change.as_ref().and_then(|c| Some((c, c.ride_id()?)))
                && ids.insert(change.id())
            {
                fresh.push((*at, change, ride_id));
            }
        }
        let new = insert_events(&mut tx, &fresh).await?;
        let applied: Vec<(&Change, &str)> = fresh
            .into_iter()
            .filter(|(_, c, _)| new.contains(c.id()))
            .map(|(_, c, r)| (c, r))
            .collect();
        let mut views = load_views(&mut tx, applied.iter().map(|(_, r)| *r)).await?;
        for (change, ride_id) in &applied {
            let (view, at) = views
                .entry((*ride_id).to_owned())
                .or_insert_with(|| (RideView::new(ride_id), 0));
            view.apply(change);
            *at = change.occurred_at();
        }
        upsert_views(&mut tx, &views).await?;
        let sent: Vec<(&Notification, &str)> = applied
            .iter()
            .filter_map(|(c, r)| match c {
                Change::Sent(n) => Some((n, *r)),
                _ => None,
            })
            .collect();
        insert_notifications(&mut tx, &sent).await?;
        for ((topic, partition), offset) in next {
            sqlx::query(
                "INSERT INTO source_offsets (topic, kafka_partition, next_offset, cluster_id) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (topic, kafka_partition) DO UPDATE SET next_offset = excluded.next_offset, cluster_id = excluded.cluster_id \
                 WHERE source_offsets.next_offset < excluded.next_offset OR source_offsets.cluster_id <> excluded.cluster_id",
            )
            .bind(topic)
            .bind(i64::from(partition))
            .bind(offset)
            .bind(cluster)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(applied.len())
    }

    /// Records where reading each partition starts, overwriting what was kept: a start
    /// behind the kept position (a recreated topic) must not leave its records skipped.
    pub async fn start_at(&self, cluster: &str, starts: &Positions) -> Result<(), StoreError> {
        let (_turn, mut tx) = self.write().await?;
        for ((topic, partition), offset) in starts {
            sqlx::query(
                "INSERT INTO source_offsets (topic, kafka_partition, next_offset, cluster_id) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (topic, kafka_partition) DO UPDATE SET next_offset = excluded.next_offset, cluster_id = excluded.cluster_id",
            )
            .bind(topic.suffix())
            .bind(i64::from(*partition))
            .bind(*offset)
            .bind(cluster)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Where to read each partition on `cluster`. Positions kept for another cluster are
    /// dropped, with a warning: the rows stay, and the new cluster's log is read from its start.
    pub async fn positions(&self, cluster: &str) -> Result<Positions, StoreError> {
        let others: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT cluster_id FROM source_offsets WHERE cluster_id <> $1",
        )
        .bind(cluster)
        .fetch_all(&self.pool)
        .await?;
        if !others.is_empty() {
            tracing::warn!(cluster, previous = ?others, "the ride store finds itself on a new Kafka cluster: it keeps its rides and reads the new cluster's log from the start");
            let _turn = self.turn().await?;
            sqlx::query("DELETE FROM source_offsets WHERE cluster_id <> $1")
                .bind(cluster)
                .execute(&self.pool)
                .await?;
        }
        let rows = sqlx::query("SELECT topic, kafka_partition, next_offset FROM source_offsets")
            .fetch_all(&self.pool)
            .await?;
        let mut positions = Positions::new();
        for row in rows {
            let name: String = row.try_get(0)?;
            let partition: i64 = row.try_get(1)?;
            let next: i64 = row.try_get(2)?;
            if let (Some(topic), Ok(partition)) = (
                Topic::ALL.into_iter().find(|t| t.suffix() == name),
                i32::try_from(partition),
            ) {
                positions.insert((topic, partition), next);
            }
        }
        Ok(positions)
    }

    pub async fn ride(&self, ride_id: &str) -> Result<Option<RideView>, StoreError> {
        let json: Option<String> = sqlx::query_scalar("SELECT view FROM rides WHERE ride_id = $1")
            .bind(ride_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(json.map(|j| serde_json::from_str(&j)).transpose()?)
    }

    /// A rider's rides, newest first, `limit` at a time from `after`.
    pub async fn rides_of(
        &self,
        rider_id: &str,
        after: Option<&Cursor>,
        limit: u32,
    ) -> Result<Page, StoreError> {
        let (at, id) = match after {
            Some(c) => (c.requested_at, c.ride_id.as_str()),
            None => (i64::MAX, ""),
        };
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT view FROM rides WHERE rider_id = $1 AND requested_at IS NOT NULL \
             AND (requested_at < $2 OR (requested_at = $2 AND ($3 = '' OR ride_id < $3))) \
             ORDER BY requested_at DESC, ride_id DESC LIMIT $4",
        )
        .bind(rider_id)
        .bind(at)
        .bind(id)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        let mut rides = rows
            .iter()
            .map(|j| serde_json::from_str(j))
            .collect::<Result<Vec<RideView>, _>>()?;
        let more = rides.len() > limit as usize;
        rides.truncate(limit as usize);
        let next = rides.last().filter(|_| more).and_then(|r| {
            Some(Cursor {
                requested_at: r.requested_at()?,
                ride_id: r.ride_id.clone(),
            })
        });
        Ok(Page { rides, next })
    }

    /// Rides by status.
    pub async fn counts(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) FROM rides GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
            .collect()
    }

    /// Totals over every ride stored, in one scan.
    pub async fn totals(&self) -> Result<Totals, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(requested_at), \
             CAST(COALESCE(SUM(CASE WHEN status IN ('assigned', 'driver_arrived', 'in_progress', 'completed') THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END), 0) AS BIGINT), \
             COUNT(fare_minor), \
             CAST(COALESCE(SUM(fare_minor), 0) AS BIGINT), \
             CAST(COALESCE(SUM(commission_minor), 0) AS BIGINT) \
             FROM rides",
        )
        .fetch_one(&self.pool)
        .await?;
        let count = |i: usize| -> Result<u64, StoreError> {
            Ok(u64::try_from(row.try_get::<i64, _>(i)?).unwrap_or_default())
        };
        Ok(Totals {
            requested: count(0)?,
            assigned: count(1)?,
            completed: count(2)?,
            cancelled: count(3)?,
            charges: count(4)?,
            revenue_minor: row.try_get(5)?,
            commission_minor: row.try_get(6)?,
        })
    }

    /// Every applied record's id for a ride, for reconciliation.
    pub async fn event_ids(&self, ride_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT event_id FROM ride_events WHERE ride_id = $1 ORDER BY event_id",
        )
        .bind(ride_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Claims a rider's idempotency key for a booking, before its request is produced.
    /// `request` and `answer` are the booking and the reply to give a retry, as JSON.
    pub async fn claim_key(&self, key: &KeyClaim<'_>) -> Result<Claim, StoreError> {
        let turn = self.turn().await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (rider_id, idempotency_key, ride_id, request, answer, claimed_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (rider_id, idempotency_key) DO NOTHING",
        )
        .bind(key.rider_id)
        .bind(key.key)
        .bind(key.ride_id)
        .bind(key.request)
        .bind(key.answer)
        .bind(bimride_events::Millis::now().0)
        .execute(&self.pool)
        .await?
        .rows_affected();
        drop(turn);
        if inserted == 1 {
            return Ok(Claim::New);
        }
        let row = sqlx::query(
            "SELECT request, answer FROM idempotency_keys WHERE rider_id = $1 AND idempotency_key = $2",
        )
        .bind(key.rider_id)
        .bind(key.key)
        .fetch_one(&self.pool)
        .await?;
        Ok(Claim::Earlier {
            request: row.try_get(0)?,
            answer: row.try_get(1)?,
        })
    }

    /// Gives a claim up, when the booking it was for could not be made.
    pub async fn release_key(&self, key: &KeyClaim<'_>) -> Result<(), StoreError> {
        let _turn = self.turn().await?;
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE rider_id = $1 AND idempotency_key = $2 AND ride_id = $3",
        )
        .bind(key.rider_id)
        .bind(key.key)
        .bind(key.ride_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Rows per multi-row statement: SQLite finds each `$n` parameter by walking the list of all
/// of them, so binding a statement costs the square of its parameters.
const ROWS: usize = 32;

/// `items` in runs of a power of two rows, the longest first, at most [`ROWS`] each. A
/// statement's text depends on its row count, and each text is parsed once per connection and
/// then cached: six lengths keep every statement in the cache, where any length up to the
/// limit had the database parse most batches' statements anew.
fn runs<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if items.is_empty() {
            return None;
        }
        let len = ROWS.min(1 << items.len().ilog2());
        let (run, rest) = items.split_at(len);
        items = rest;
        Some(run)
    })
}

/// `($1, $2, …), (…)`: placeholders for `rows` rows of `columns` values.
fn values(rows: usize, columns: usize) -> String {
    let row = |r: usize| {
        let cells: Vec<String> = (1..=columns)
            .map(|c| format!("${}", r * columns + c))
            .collect();
        format!("({})", cells.join(", "))
    };
    (0..rows).map(row).collect::<Vec<_>>().join(", ")
}

type Tx = sqlx::Transaction<'static, sqlx::Any>;

async fn stored_positions(tx: &mut Tx) -> Result<HashMap<(&'static str, i32), i64>, StoreError> {
    let rows = sqlx::query("SELECT topic, kafka_partition, next_offset FROM source_offsets")
        .fetch_all(&mut **tx)
        .await?;
    let mut positions = HashMap::new();
    for row in rows {
        let name: String = row.try_get(0)?;
        let partition: i64 = row.try_get(1)?;
        if let (Some(topic), Ok(partition)) = (
            Topic::ALL.into_iter().find(|t| t.suffix() == name),
            i32::try_from(partition),
        ) {
            positions.insert((topic.suffix(), partition), row.try_get(2)?);
        }
    }
    Ok(positions)
}

/// Records each event once; returns the ids that were new.
async fn insert_events<'a>(
    tx: &mut Tx,
    events: &[(At, &'a Change, &'a str)],
) -> Result<HashSet<String>, StoreError> {
    let mut new = HashSet::new();
    for chunk in runs(events) {
        let sql = format!(
            "INSERT INTO ride_events (event_id, ride_id, kind, occurred_at, topic, kafka_partition, kafka_offset) \
             VALUES {} ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            values(chunk.len(), 7)
        );
        let mut query = sqlx::query_scalar::<_, String>(&sql);
        for (at, change, ride_id) in chunk {
            query = query
                .bind(change.id())
                .bind(*ride_id)
                .bind(change.kind())
                .bind(change.occurred_at())
                .bind(at.topic.suffix())
                .bind(i64::from(at.partition))
                .bind(at.offset);
        }
        new.extend(query.fetch_all(&mut **tx).await?);
    }
    Ok(new)
}

/// The stored views of these rides, each with the time of its last change (0 until changed).
async fn load_views<'a>(
    tx: &mut Tx,
    rides: impl Iterator<Item = &'a str>,
) -> Result<BTreeMap<String, (RideView, i64)>, StoreError> {
    let rides: Vec<&str> = rides.collect::<BTreeSet<_>>().into_iter().collect();
    let mut views = BTreeMap::new();
    for chunk in runs(&rides) {
        let sql = format!(
            "SELECT ride_id, view FROM rides WHERE ride_id IN ({})",
            (1..=chunk.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut **tx).await? {
            let json: String = row.try_get(1)?;
            views.insert(row.try_get(0)?, (serde_json::from_str(&json)?, 0));
        }
    }
    Ok(views)
}

async fn upsert_views(
    tx: &mut Tx,
    views: &BTreeMap<String, (RideView, i64)>,
) -> Result<(), StoreError> {
    let views: Vec<&(RideView, i64)> = views.values().filter(|(_, at)| *at != 0).collect();
    for chunk in runs(&views) {
        let sql = format!(
            "INSERT INTO rides (ride_id, rider_id, status, region, product, requested_at, updated_at, \
             fare_minor, commission_minor, payout_minor, currency, surge_milli, view) \
             VALUES {} \
             ON CONFLICT (ride_id) DO UPDATE SET rider_id = excluded.rider_id, status = excluded.status, \
             region = excluded.region, product = excluded.product, requested_at = excluded.requested_at, \
             updated_at = excluded.updated_at, fare_minor = excluded.fare_minor, \
             commission_minor = excluded.commission_minor, payout_minor = excluded.payout_minor, \
             currency = excluded.currency, surge_milli = excluded.surge_milli, view = excluded.view",
            values(chunk.len(), 13)
        );
        let mut query = sqlx::query(&sql);
        for (view, at) in chunk {
            let fare = view.fare.as_ref();
            query = query
                .bind(view.ride_id.clone())
                .bind(view.rider_id.clone())
                .bind(view.status.as_str())
                .bind(view.region.clone())
                .bind(view.product.map(label))
                .bind(view.requested_at())
                .bind(*at)
                .bind(fare.map(|f| f.amount_minor))
                .bind(fare.map(|f| f.commission_minor))
                .bind(fare.map(|f| f.payout_minor))
                .bind(view.currency.clone())
                .bind(view.surge_milli.map(i64::from))
                .bind(serde_json::to_string(view)?);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

async fn insert_notifications(
    tx: &mut Tx,
    sent: &[(&Notification, &str)],
) -> Result<(), StoreError> {
    for chunk in runs(sent) {
        let sql = format!(
            "INSERT INTO notifications (notification_id, ride_id, recipient_kind, recipient_id, template, text, sent_at) \
             VALUES {} ON CONFLICT (notification_id) DO NOTHING",
            values(chunk.len(), 7)
        );
        let mut query = sqlx::query(&sql);
        for (n, ride_id) in chunk {
            query = query
                .bind(n.notification_id.clone())
                .bind(*ride_id)
                .bind(label(n.recipient_kind))
                .bind(n.recipient_id.clone())
                .bind(n.template.clone())
                .bind(n.text.clone())
                .bind(n.occurred_at.0);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Brings the schema up to date. PostgreSQL serialises concurrent migrators with a lock;
/// SQLite does not, so a process that loses the race to create the schema (the API and the
/// store starting together) finds it made when it tries again.
async fn migrate(pool: &AnyPool) -> Result<(), StoreError> {
    let migrator = sqlx::migrate!("./migrations");
    let mut attempts = 0;
    loop {
        match migrator.run(pool).await {
            Ok(()) => return Ok(()),
            Err(sqlx::migrate::MigrateError::ExecuteMigration(..))
                if attempts < MIGRATE_ATTEMPTS =>
            {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(100 * attempts)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

const MIGRATE_ATTEMPTS: u64 = 5;

/// An enum's name as the API's JSON spells it.
fn label<T: serde::Serialize>(value: T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_go_in_order_in_runs_of_six_lengths_at_most() {
        for n in [0, 1, 2, 3, 7, 255, 256, 257, 1_000] {
            let items: Vec<usize> = (0..n).collect();
            let split: Vec<&[usize]> = runs(&items).collect();
            assert_eq!(split.concat(), items);
            assert!(
                split
                    .iter()
                    .all(|r| r.len().is_power_of_two() && r.len() <= ROWS)
            );
            assert!(split.windows(2).all(|w| w[0].len() >= w[1].len()));
        }
        let lengths: BTreeSet<usize> = (1..=1_000)
            .flat_map(|n| runs(&vec![(); n]).map(<[()]>::len).collect::<Vec<_>>())
            .collect();
        assert_eq!(lengths.len(), 6, "{lengths:?}");
    }
}
