//! The ride store checked against the topics that feed it.

use std::collections::BTreeSet;

use bimride_domain::ride::RideStatus;
use bimride_store::{Store, StoreError};

use crate::Ledger;
use crate::ledger::Ride;
use crate::report::Check;

/// The check's name in reports.
pub const STORE_AGREES: &str = "ride store agrees with the topics";

/// Every requested ride whose newest record is at least `settle_ms` older than the log's
/// newest is in the store once, with the status, records, fare and messages the topics tell.
/// Younger rides may still be on their way into it.
pub async fn check_store(
    ledger: &Ledger,
    store: &Store,
    settle_ms: i64,
) -> Result<Check, StoreError> {
    let through = ledger.through();
    let mut check = Check::new(STORE_AGREES);
    for (id, ride) in ledger.rides() {
        let settled = ride.last_at.is_some_and(|at| through.0 - at.0 >= settle_ms);
        if ride.requests.is_empty() || !settled {
            continue;
        }
        check.checked += 1;
        if let Some(difference) = difference(id, ride, store).await? {
            check.failed.push(format!("{id}: {difference}"));
        }
    }
    Ok(check)
}

/// How the store's row of a ride differs from the topics, if it does.
async fn difference(id: &str, ride: &Ride, store: &Store) -> Result<Option<String>, StoreError> {
    let Some(view) = store.ride(id).await? else {
        return Ok(Some("not in the store".into()));
    };
    let ended = if !ride.completions.is_empty() {
        Some(RideStatus::Completed)
    } else if !ride.cancellations.is_empty() {
        Some(RideStatus::Cancelled)
    } else {
        None
    };
    let status_agrees = match ended {
        Some(status) => view.status == status,
        None => !matches!(view.status, RideStatus::Completed | RideStatus::Cancelled),
    };
    if !status_agrees {
        let told = ended.map_or("not ended".to_owned(), |s| s.as_str().to_owned());
        return Ok(Some(format!(
            "the store says {}, the topics {told}",
            view.status.as_str()
        )));
    }
    let stored: BTreeSet<String> = store.event_ids(id).await?.into_iter().collect();
    if stored != ride.ids {
        return Ok(Some(format!(
            "{} records missing from the store, {} it has that the topics do not",
            ride.ids.difference(&stored).count(),
            stored.difference(&ride.ids).count()
        )));
    }
    let fare = ride.charges.last().map(|c| c.fare.amount_minor);
    if view.fare.as_ref().map(|f| f.amount_minor) != fare {
        return Ok(Some(format!(
            "fare {:?} in the store, {fare:?} charged",
            view.fare.map(|f| f.amount_minor)
        )));
    }
    let messages: BTreeSet<&str> = ride
        .messages
        .iter()
        .map(|n| n.notification_id.as_str())
        .collect();
    if view.notifications.len() != messages.len() {
        return Ok(Some(format!(
            "{} messages in the store, {} sent",
            view.notifications.len(),
            messages.len()
        )));
    }
    Ok(None)
}
