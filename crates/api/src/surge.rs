//! The API's view of surge: the latest multiplier per cell, read from the compacted surge
//! topic. Quotes and bookings price with the multiplier of the pickup cell.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use bimride_domain::fare::NO_SURGE;
use bimride_events::{Millis, SurgeUpdated};
use serde::Serialize;

use crate::ApiState;
use bimride_kafka::partitioned::{Assignment, Fetch, Options, PartitionedError};
use bimride_kafka::projection::Projection;
use bimride_kafka::service::{Context, Service};

#[derive(Debug, Default)]
pub struct SurgeBook {
    cells: RwLock<HashMap<String, SurgeUpdated>>,
}

impl SurgeBook {
    /// Keeps the newest multiplier per cell, by window end: a replayed older record never
    /// overwrites a newer one.
    pub fn apply(&self, update: &SurgeUpdated) {
        let mut cells = self.cells.write().unwrap_or_else(|p| p.into_inner());
        let newer = cells
            .get(&update.cell)
            .is_none_or(|known| known.window_end <= update.window_end);
        if newer {
            cells.insert(update.cell.clone(), update.clone());
        }
    }

    /// The multiplier of `cell` in thousandths; 1.0 where none was published.
    pub fn multiplier(&self, cell: &str) -> i32 {
        self.cells
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(cell)
            .map_or(NO_SURGE, |s| s.multiplier_milli.max(NO_SURGE))
    }

    fn snapshot(&self) -> Vec<SurgeUpdated> {
        let mut cells: Vec<SurgeUpdated> = self
            .cells
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| s.multiplier_milli > NO_SURGE)
            .cloned()
            .collect();
        cells.sort_by(|a, b| {
            b.multiplier_milli
                .cmp(&a.multiplier_milli)
                .then(a.cell.cmp(&b.cell))
        });
        cells
    }
}

/// The surge multipliers as a service: the book, fed from the compacted surge topic. Every
/// API instance reads every partition from its start, with no group: compaction keeps the
/// latest multiplier of each cell, so that start is the window the book needs.
#[derive(Debug, Clone)]
pub struct SurgeFeed(pub Arc<SurgeBook>);

impl Service for SurgeFeed {
    const NAME: &'static str = "api-surge";
    type Error = PartitionedError;

    async fn run(self, cx: Context) -> Result<(), PartitionedError> {
        let mut options = Options::new("bimride-api-surge", "api");
        options.fetch = Fetch::Batched;
        options.assignment = Assignment::Everything { since: Millis(0) };
        Projection::new(self.0)
            .on(|book, u: &SurgeUpdated| book.apply(u))
            .run(&cx.kafka, cx.codec, options, cx.shutdown)
            .await
    }
}

/// One cell's surge.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CellSurge {
    /// H3 cell index, hex.
    pub cell: String,
    /// Centre of the cell, for drawing it.
    pub lat: f64,
    pub lng: f64,
    /// Multiplier in thousandths: 1250 is x1.25.
    pub multiplier_milli: i32,
    pub demand: i32,
    pub supply: i32,
    /// End of the event-time window it was computed over, ms since the epoch.
    pub window_end_ms: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SurgeBody {
    /// Cells whose multiplier is above 1.0, highest first; every other cell is at 1.0.
    pub cells: Vec<CellSurge>,
}

#[utoipa::path(
    get, path = "/v1/surge", tag = "surge",
    responses((status = 200, description = "The current multiplier per surging cell", body = SurgeBody))
)]
pub async fn current(State(state): State<Arc<ApiState>>) -> impl IntoResponse {
    let cells = state
        .parts
        .surge
        .snapshot()
        .into_iter()
        .map(|s| {
            let centre = s
                .cell
                .parse::<h3o::CellIndex>()
                .map(h3o::LatLng::from)
                .map(|ll| (ll.lat(), ll.lng()))
                .unwrap_or_default();
            CellSurge {
                lat: centre.0,
                lng: centre.1,
                cell: s.cell,
                multiplier_milli: s.multiplier_milli,
                demand: s.demand,
                supply: s.supply,
                window_end_ms: s.window_end.0,
            }
        })
        .collect();
    Json(SurgeBody { cells })
}
