//! A schema registry that speaks the Confluent Schema Registry REST API.
//!
//! State is a [`store::Store`] rebuilt from a compacted `_schemas` topic at start-up; every
//! change is made durable in that topic before it is applied, so a restarted registry serves
//! the same ids. One instance writes at a time.

pub mod access;
pub mod api;
pub mod compat;
pub mod error;
pub mod journal;
pub mod store;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

pub use access::{Access, Basic, Scope, Users};
use bimride_telemetry::HttpLimits;
pub use compat::Level;
pub use error::RegistryError;
pub use journal::{Journal, JournalError, KafkaJournal};
pub use store::RegistryMode;
use store::{Entry, Store};
use tokio_util::sync::CancellationToken;

/// The registry: its state, its journal, and how many HTTP requests it has served.
#[derive(Debug)]
pub struct Registry {
    store: RwLock<Store>,
    journal: Journal,
    writes: tokio::sync::Mutex<()>,
    /// Parsing and compatibility checks grow with schema size (quadratically, for wide
    /// records), so they run off the async runtime, one at a time: a hostile schema can
    /// occupy one core, never the threads that serve the API beside it.
    checks: Arc<tokio::sync::Semaphore>,
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
            checks: Arc::new(tokio::sync::Semaphore::new(1)),
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

    /// Runs a read that may be expensive (it parses or compares schemas) off the runtime.
    pub(crate) async fn check<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Store) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, RegistryError> {
        let _slot = Arc::clone(&self.checks)
            .acquire_owned()
            .await
            .map_err(|e| RegistryError::Storage(Box::new(e)))?;
        let registry = Arc::clone(self);
        tokio::task::spawn_blocking(move || work(&registry.read()))
            .await
            .map_err(|e| RegistryError::Storage(Box::new(e)))?
    }

    /// Plans a change under the write lock (off the runtime), makes it durable, then
    /// applies it.
    pub(crate) async fn write<T: Send + 'static>(
        self: &Arc<Self>,
        plan: impl FnOnce(&Store) -> Result<(T, Vec<Entry>), RegistryError> + Send + 'static,
    ) -> Result<T, RegistryError> {
        let _guard = self.writes.lock().await;
        let (out, entries) = self.check(plan).await?;
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

/// How a registry is served: its HTTP limits and who may do what.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub limits: HttpLimits,
    pub access: Access,
}

/// Serves `registry` on `addr` until `shutdown` is cancelled, open and with default limits.
pub async fn serve(
    registry: Arc<Registry>,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> std::io::Result<Server> {
    serve_with(registry, addr, Options::default(), shutdown).await
}

/// Serves `registry` on `addr` as `options` say until `shutdown` is cancelled.
pub async fn serve_with(
    registry: Arc<Registry>,
    addr: SocketAddr,
    options: Options,
    shutdown: CancellationToken,
) -> std::io::Result<Server> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let limits = HttpLimits {
        max_body_bytes: MAX_BODY_BYTES,
        ..options.limits
    };
    let authentication = options.access.basic.as_ref().map(|b| b.scope);
    let read_only = options.access.read_only;
    let app = api::router(Arc::clone(&registry), options.access);
    let task = bimride_telemetry::spawn_server_shaped(
        listener,
        app,
        limits,
        error::limit_rejection,
        shutdown,
    );
    tracing::info!(%addr, ?authentication, read_only, "schema registry listening");
    Ok(Server {
        addr,
        registry,
        task,
    })
}
