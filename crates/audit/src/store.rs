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

#[cfg(test)]
mod tests {
    use bimride_events::{DriverArrived, Millis, RideEvent, Topic, TripStarted};
    use bimride_kafka::partitioned::At;
    use bimride_store::Change;

    use super::*;
    use crate::ledger::tests::{SETTLE, completed_ride, requested};

    /// A completed ride's arrival and start, which the store needs to follow it to the end.
    fn drove(ledger: &mut Ledger, ride: &str, driver: &str) -> Vec<RideEvent> {
        let at = |minutes: i64| {
            Millis(ledger.rides()[ride].requests[0].occurred_at.0 + minutes * 60_000)
        };
        let (ride_id, driver_id, rider_id) = (ride.to_owned(), driver.to_owned(), String::new());
        let events = vec![
            RideEvent::DriverArrived(DriverArrived {
                event_id: format!("{ride}-arrived"),
                occurred_at: at(5),
                ride_id: ride_id.clone(),
                driver_id: driver_id.clone(),
                rider_id: rider_id.clone(),
            }),
            RideEvent::TripStarted(TripStarted {
                event_id: format!("{ride}-started"),
                occurred_at: at(6),
                ride_id,
                driver_id,
                rider_id,
            }),
        ];
        for e in &events {
            ledger.ride_event(e.clone());
        }
        events
    }

    /// A ride's records in the order they happened, as the store's sink applies them.
    fn changes(ledger: &Ledger, ride: &str, drove: Vec<RideEvent>, completed: bool) -> Vec<Change> {
        let r = &ledger.rides()[ride];
        let mut events: Vec<RideEvent> = r
            .assignments
            .iter()
            .cloned()
            .map(RideEvent::DriverAssigned)
            .collect();
        events.extend(drove);
        if completed {
            events.extend(r.completions.iter().cloned().map(RideEvent::TripCompleted));
        }
        let requests = r.requests.iter().cloned().map(Change::Requested);
        let charges = r.charges.iter().cloned().map(Change::Charged);
        let sent = r.messages.iter().cloned().map(Change::Sent);
        requests
            .chain(events.into_iter().map(Change::Event))
            .chain(charges)
            .chain(sent)
            .collect()
    }

    #[tokio::test]
    async fn rides_the_store_lacks_or_tells_otherwise_are_named() {
        let file = std::env::temp_dir().join(format!("bimride-audit-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&file);
        let store = Store::connect(&format!("sqlite:{}?mode=rwc", file.display()))
            .await
            .expect("a store");
        let mut ledger = Ledger::default();
        let mut records = Vec::new();
        for (ride, driver, completed) in [
            ("ride-kept", "driver-1", true),
            ("ride-unfinished", "driver-2", false),
        ] {
            completed_ride(&mut ledger, ride, driver);
            let drove = drove(&mut ledger, ride, driver);
            records.extend(changes(&ledger, ride, drove, completed));
        }
        completed_ride(&mut ledger, "ride-missing", "driver-3");
        // Booked at the log's end: too young to be held to the store.
        ledger.request(requested("ride-young", 40));
        let records: Vec<(At, Option<Change>)> = records
            .into_iter()
            .enumerate()
            .map(|(offset, change)| {
                let at = At {
                    topic: Topic::RideEvents,
                    partition: 0,
                    offset: offset as i64,
                };
                (at, Some(change))
            })
            .collect();
        store.apply_all("audit", &records).await.expect("applied");

        let check = check_store(&ledger, &store, SETTLE).await.expect("read");
        store.close().await;
        let _ = std::fs::remove_file(&file);
        assert_eq!(check.checked, 3, "{check:?}");
        assert_eq!(
            check.failed,
            [
                "ride-missing: not in the store".to_owned(),
                "ride-unfinished: the store says in_progress, the topics completed".to_owned(),
            ]
        );
    }
}
