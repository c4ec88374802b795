//! The live dashboard: a map of the city with its surge, drivers and rides, live counters and
//! an event feed. Kafka consumers fold events into a [`view::LiveView`]; a publisher turns it
//! into JSON snapshots, which every open page receives over server-sent events.
//!
//! Every asset is compiled into the binary: the page needs no CDN and no map tiles.

pub mod view;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use bimride_domain::City;
use bimride_events::{
    DispatchEvent, EtaObserved, FareCharged, Millis, RideEvent, SupplyEvent, SurgeUpdated,
};
use bimride_kafka::partitioned::{Assignment, Fetch, Options, PartitionedError};
use bimride_kafka::projection::Projection;
use bimride_kafka::service::{Context, Service};
use futures::Stream;
use h3o::{LatLng, Resolution};
use serde::Serialize;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;

use bimride_store::Store;

use crate::view::{Counters, LiveView};

/// How often a changed view is pushed to the pages.
pub const PUSH_EVERY: Duration = Duration::from_millis(500);

/// The base map: the city's outline and its dispatch regions.
#[derive(Debug, Clone, Serialize)]
pub struct CityMap {
    pub name: String,
    pub centre: (f64, f64),
    pub radius_km: f64,
    pub regions: Vec<Region>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Region {
    pub cell: String,
    pub boundary: Vec<(f64, f64)>,
}

impl CityMap {
    /// Every dispatch region that touches the service area.
    pub fn of(city: &City) -> Self {
        let res = Resolution::try_from(city.region_resolution).unwrap_or(Resolution::Six);
        let centre = LatLng::new(city.centre_lat, city.centre_lng)
            .unwrap_or_else(|_| unreachable!("a validated city has a valid centre"));
        // A disk of cells wide enough to cover the radius, trimmed to cells that reach it.
        let edge = res.edge_length_km();
        let rings = (city.radius_km / (edge * 1.5)).ceil() as u32 + 1;
        let regions = centre
            .to_cell(res)
            .grid_disk::<Vec<_>>(rings)
            .into_iter()
            .filter(|c| LatLng::from(*c).distance_km(centre) <= city.radius_km + 2.0 * edge)
            .map(|c| Region {
                cell: c.to_string(),
                boundary: c.boundary().iter().map(|p| (p.lat(), p.lng())).collect(),
            })
            .collect();
        Self {
            name: city.name.clone(),
            centre: (city.centre_lat, city.centre_lng),
            radius_km: city.radius_km,
            regions,
        }
    }
}

/// The dashboard's state, shared by its consumers and its pages.
#[derive(Debug)]
pub struct Dashboard {
    live: Mutex<LiveView>,
    map: String,
    snapshots: watch::Sender<Arc<String>>,
}

impl Dashboard {
    pub fn new(city: &City) -> Arc<Self> {
        let map = serde_json::to_string(&CityMap::of(city))
            .unwrap_or_else(|e| unreachable!("the map serialises: {e}"));
        let first = Arc::new(Self::encode(&LiveView::default()));
        Arc::new(Self {
            live: Mutex::new(LiveView::default()),
            map,
            snapshots: watch::channel(first).0,
        })
    }

    fn encode(view: &LiveView) -> String {
        serde_json::to_string(&view.snapshot())
            .unwrap_or_else(|e| unreachable!("a snapshot serialises: {e}"))
    }

    fn with_view(&self, f: impl FnOnce(&mut LiveView)) {
        f(&mut self.live.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The view as the pages last received it.
    pub fn latest(&self) -> Arc<String> {
        Arc::clone(&self.snapshots.borrow())
    }

    /// Encodes the view when it changed and hands it to every page, until `shutdown`.
    pub async fn publish(self: Arc<Self>, shutdown: CancellationToken) {
        let mut sent = 0;
        let mut tick = tokio::time::interval(PUSH_EVERY);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let encoded = {
                let view = self.live.lock().unwrap_or_else(|p| p.into_inner());
                if view.version() == sent {
                    continue;
                }
                sent = view.version();
                Self::encode(&view)
            };
            self.snapshots.send_replace(Arc::new(encoded));
        }
    }
}

/// How far back a dashboard reads the topics when it starts: the rides under way, the recent
/// waits and the feed. Totals over the whole history come from the ride store.
pub const WINDOW: Duration = Duration::from_secs(30 * 60);
/// How often the totals are read from the ride store.
pub const TOTALS_EVERY: Duration = Duration::from_secs(2);

impl Dashboard {
    /// Keeps the counters at the ride store's totals, and the map to the window, until
    /// `shutdown`. A store away leaves the last totals shown, with a warning.
    pub async fn follow_store(self: Arc<Self>, store: Store, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(TOTALS_EVERY);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let since = Millis::now().0 - WINDOW.as_millis() as i64;
            self.with_view(|v| v.forget_before(since));
            match store.totals().await {
                Ok(t) => self.with_view(|v| {
                    v.set_counters(Counters {
                        requested: t.requested,
                        assigned: t.assigned,
                        completed: t.completed,
                        cancelled: t.cancelled,
                        charges: t.charges,
                        revenue_minor: t.revenue_minor,
                        commission_minor: t.commission_minor,
                    })
                }),
                Err(e) => tracing::warn!(error = %e, "reading the ride store's totals failed"),
            }
        }
    }
}

/// The dashboard as a service: its feeds, its totals from the ride store, and its publisher of
/// snapshots.
#[derive(Debug, Clone)]
pub struct Feeds {
    pub dashboard: Arc<Dashboard>,
    pub store: Store,
}

impl Service for Feeds {
    const NAME: &'static str = "dashboard";
    type Error = PartitionedError;

    /// Feeds the dashboard from every topic it shows, from [`WINDOW`] ago, until the context's
    /// token is cancelled. Every partition is read, with no group: each dashboard shows it all.
    async fn run(self, cx: Context) -> Result<(), PartitionedError> {
        let dashboard = self.dashboard;
        tokio::spawn(Arc::clone(&dashboard).publish(cx.shutdown.clone()));
        tokio::spawn(Arc::clone(&dashboard).follow_store(self.store, cx.shutdown.clone()));
        let mut options = Options::new("bimride-dashboard", "dashboard");
        options.fetch = Fetch::Batched;
        options.assignment = Assignment::Everything {
            since: Millis(Millis::now().0 - WINDOW.as_millis() as i64),
        };
        Projection::new(dashboard)
            .on(|d, e: &DispatchEvent| d.with_view(|v| v.apply_dispatch(e)))
            .on(|d, e: &RideEvent| d.with_view(|v| v.apply_ride(e)))
            .on(|d, e: &SupplyEvent| d.with_view(|v| v.apply_supply(e)))
            .on(|d, u: &SurgeUpdated| d.with_view(|v| v.apply_surge(u)))
            .on(|d, c: &FareCharged| d.with_view(|v| v.apply_charge(c)))
            .on(|d, o: &EtaObserved| d.with_view(|v| v.apply_eta(o)))
            .run(&cx.kafka, cx.codec, options, cx.shutdown)
            .await
    }
}

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/dashboard.js");
const STYLE: &str = include_str!("../assets/dashboard.css");

/// The page at `/`, its assets, its map, its snapshots and its live stream.
pub fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route(
            "/dashboard/dashboard.js",
            get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], SCRIPT) }),
        )
        .route(
            "/dashboard/dashboard.css",
            get(|| async { ([(header::CONTENT_TYPE, "text/css")], STYLE) }),
        )
        .route("/dashboard/map", get(map))
        .route("/dashboard/snapshot", get(snapshot))
        .route("/dashboard/stream", get(stream))
        .with_state(dashboard)
}

async fn map(State(d): State<Arc<Dashboard>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], d.map.clone())
}

async fn snapshot(State(d): State<Arc<Dashboard>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        d.latest().as_str().to_owned(),
    )
}

/// Every new snapshot as one `snapshot` event; the current one first.
async fn stream(
    State(d): State<Arc<Dashboard>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let updates = WatchStream::new(d.snapshots.subscribe())
        .map(|s| Ok(Event::default().event("snapshot").data(s.as_str())));
    Sse::new(updates).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_covers_the_city_with_its_regions() {
        let map = CityMap::of(&City::amsterdam());
        assert!(map.regions.len() >= 7, "{} regions", map.regions.len());
        let centre = City::amsterdam()
            .locate(52.3676, 4.9041)
            .expect("centre")
            .region
            .to_string();
        assert!(map.regions.iter().any(|r| r.cell == centre));
        assert!(map.regions.iter().all(|r| r.boundary.len() >= 5));
    }
}
