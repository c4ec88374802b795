//! Reads every topic back into a [`Ledger`].

use std::time::Duration;

use bimride_codec::Codec;
use bimride_events::{
    DispatchEvent, EtaObserved, FareCharged, Notification, RideEvent, SupplyEvent, SurgeUpdated,
};
use bimride_kafka::KafkaConfig;
use bimride_kafka::history::{self, HistoryError};

use crate::Ledger;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("reading the topics: {0}")]
    Read(#[from] HistoryError),
}

/// Every record of every topic from `window` ago (their whole retention for a window
/// reaching back to the epoch), as `read_committed` consumers see them.
pub async fn read_ledger(
    kafka: &KafkaConfig,
    codec: &Codec,
    window: Duration,
) -> Result<Ledger, AuditError> {
    let group = "bimride-audit";
    let mut ledger = Ledger::default();
    // Effects first, causes last: on a live city each topic is read to its end as it is at
    // that moment, so a later read holds the cause of everything an earlier one found (the
    // request of every assigned ride, the completion of every charge). In the other order,
    // rides booked during the audit would show events without their request. Surge stands
    // apart; ETA observations follow ride events, and an assignment a driver's accept.
    for u in history::values::<SurgeUpdated>(kafka, codec, group, window).await? {
        ledger.surge(u);
    }
    for n in history::values::<Notification>(kafka, codec, group, window).await? {
        ledger.message(n);
    }
    for c in history::values::<FareCharged>(kafka, codec, group, window).await? {
        ledger.charge(c);
    }
    for o in history::values::<EtaObserved>(kafka, codec, group, window).await? {
        ledger.eta(o);
    }
    for e in history::values::<RideEvent>(kafka, codec, group, window).await? {
        ledger.ride_event(e);
    }
    for e in history::values::<SupplyEvent>(kafka, codec, group, window).await? {
        ledger.supply(e);
    }
    for e in history::values::<DispatchEvent>(kafka, codec, group, window).await? {
        ledger.request(e);
    }
    Ok(ledger)
}
