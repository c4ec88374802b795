//! A schema registry that speaks the Confluent Schema Registry REST API.
//!
//! State is a [`store::Store`] rebuilt from a compacted `_schemas` topic at start-up; every
//! change is made durable in that topic before it is applied, so a restarted registry serves
//! the same ids. One instance writes at a time.

pub mod api;
pub mod compat;
pub mod error;
pub mod journal;
pub mod store;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use bimride_telemetry::HttpLimits;
pub use compat::Level;
pub use error::RegistryError;
pub use journal::{Journal, JournalError, KafkaJournal, SCHEMAS_TOPIC};
use store::{Entry, Store};
use tokio_util::sync::CancellationToken;

/// The registry: its state, its journal, and how many HTTP requests it has served.
#[derive(Debug)]
pub struct Registry {
    store: RwLock<Store>,
    journal: Journal,
    writes: tokio::sync::Mutex<()>,
    requests: AtomicU64,
}

impl Registry {
    /// A registry that keeps nothing across restarts.
    pub fn in_memory() -> Arc<Self> {
        Self::from_journal(Journal::Memory, Vec::new())
    }

    /// A registry restored from `replayed` entries, appending new ones to `journal`.
    pub fn from_journal(journal: Journal, replayed: Vec<Entry>) -> Arc<Self> {
        let mut store = Store::default();
        replayed.iter().for_each(|e| store.apply(e));
        Arc::new(Self {
            store: RwLock::new(store),
            journal,
            writes: tokio::sync::Mutex::new(()),
            requests: AtomicU64::new(0),
        })
    }

    /// HTTP requests served so far; the codec tests use it to prove schemas are cached.
    pub fn requests_served(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Store> {
        // A panic while holding the lock cannot leave the store half-applied: apply is
        // infallible, so a poisoned lock still guards consistent state.
        self.store.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Plans a change under the write lock, makes it durable, then applies it.
    pub(crate) async fn write<T>(
        &self,
        plan: impl FnOnce(&Store) -> Result<(T, Vec<Entry>), RegistryError>,
    ) -> Result<T, RegistryError> {
        let _guard = self.writes.lock().await;
        let (out, entries) = plan(&self.read())?;
        if !entries.is_empty() {
            self.journal.append(&entries).await?;
            let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
            entries.iter().for_each(|e| store.apply(e));
        }
        Ok(out)
    }
}

/// A running registry server.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    pub registry: Arc<Registry>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Largest request body: a schema must fit, escaped, in one record of the registry's topic,
/// which brokers cap at 1 MiB by default.
pub const MAX_BODY_BYTES: usize = 512 * 1024;

/// Serves `registry` on `addr` until `shutdown` is cancelled, with the default limits.
pub async fn serve(
    registry: Arc<Registry>,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> std::io::Result<Server> {
    serve_within(registry, addr, HttpLimits::default(), shutdown).await
}

/// Serves `registry` on `addr` within `limits` until `shutdown` is cancelled.
pub async fn serve_within(
    registry: Arc<Registry>,
    addr: SocketAddr,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<Server> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let limits = HttpLimits {
        max_body_bytes: MAX_BODY_BYTES,
        ..limits
    };
    let app = api::router(Arc::clone(&registry));
    let task = bimride_telemetry::spawn_server(listener, app, limits, shutdown);
    tracing::info!(%addr, "schema registry listening");
    Ok(Server {
        addr,
        registry,
        task,
    })
}
