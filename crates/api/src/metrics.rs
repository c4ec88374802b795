//! API metrics beyond the HTTP requests `bimride-telemetry` counts: rides by status.

use std::sync::LazyLock;

use bimride_domain::ride::RideStatus;
use bimride_telemetry::gauges;
use prometheus::IntGaugeVec;

static RIDES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauges(
        "bimride_rides",
        "Rides this API instance knows, by status.",
        &["status"],
    )
});

/// Moves one ride between status gauges; `before` is `None` for a ride seen first.
pub(crate) fn ride_moved(before: Option<RideStatus>, after: RideStatus) {
    if before == Some(after) {
        return;
    }
    if let Some(b) = before {
        RIDES.with_label_values(&[b.as_str()]).dec();
    }
    RIDES.with_label_values(&[after.as_str()]).inc();
}
