//! The API's read model of rides, built from the ride topics.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use bimride_domain::FareParts;
use bimride_domain::ride::{Applied, RideState, RideStatus, Step};
use bimride_events::{
    ChargeKind, DispatchEvent, FareCharged, GeoPoint, Notification, Product, RecipientKind,
    RideEvent, RideRequested, SurgeUpdated, TopicValue,
};
use bimride_kafka::partitioned::{Options, PartitionedError};
use bimride_kafka::projection::Projection;
use bimride_kafka::service::{Context, Service};
use serde::Serialize;

/// One step of a ride, as the rider sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    pub event: &'static str,
    pub at_ms: i64,
}

/// What the ride cost, from the payments topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FareView {
    pub kind: ChargeKind,
    pub amount_minor: i64,
    pub currency: String,
    #[serde(flatten)]
    pub parts: FareParts,
    pub commission_minor: i64,
    pub payout_minor: i64,
}

/// A message sent about the ride, from the notifications topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SentMessage {
    pub recipient_kind: RecipientKind,
    pub template: String,
    pub text: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RideView {
    pub ride_id: String,
    pub rider_id: Option<String>,
    /// The dispatch region of the pickup.
    pub region: Option<String>,
    pub status: RideStatus,
    pub product: Option<Product>,
    pub pickup: Option<GeoPoint>,
    pub dropoff: Option<GeoPoint>,
    pub quote_minor: Option<i64>,
    pub currency: Option<String>,
    pub surge_milli: Option<i32>,
    pub driver_id: Option<String>,
    pub cancel_reason: Option<String>,
    pub history: Vec<HistoryEntry>,
    pub fare: Option<FareView>,
    pub notifications: Vec<SentMessage>,
    #[serde(skip)]
    state: RideState,
    #[serde(skip)]
    seen: HashSet<String>,
}

/// Every ride this process has seen on the ride topics.
#[derive(Debug, Default)]
pub struct RideBook {
    rides: RwLock<HashMap<String, RideView>>,
    /// Requests by (rider, Idempotency-Key), from the log: a retry reaching an instance that
    /// did not take the booking, or one restarted since, finds its ride here.
    keyed: RwLock<HashMap<(String, String), RideRequested>>,
}

/// The state-machine step of an event; an accepted offer moves nothing until the assignment.
fn step_of(event: &RideEvent) -> Option<Step> {
    Some(match event {
        RideEvent::OfferSent(_) => Step::OfferSent,
        RideEvent::OfferAnswered(a) if a.answer == bimride_events::OfferAnswer::Accepted => {
            return None;
        }
        RideEvent::OfferAnswered(_) => Step::OfferLapsed,
        RideEvent::DriverAssigned(_) => Step::Assigned,
        RideEvent::DriverArrived(_) => Step::DriverArrived,
        RideEvent::TripStarted(_) => Step::TripStarted,
        RideEvent::TripTelemetry(_) => Step::Telemetry,
        RideEvent::TripCompleted(_) => Step::Completed,
        RideEvent::RideCancelled(_) => Step::Cancelled,
    })
}

impl RideBook {
    pub fn get(&self, ride_id: &str) -> Option<RideView> {
        self.rides
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(ride_id)
            .cloned()
    }

    fn with_ride(&self, ride_id: &str, event_id: &str, f: impl FnOnce(&mut RideView)) {
        let mut rides = self.rides.write().unwrap_or_else(|p| p.into_inner());
        let before = rides.get(ride_id).map(|v| v.status);
        let view = rides.entry(ride_id.to_owned()).or_insert_with(|| RideView {
            ride_id: ride_id.to_owned(),
            ..RideView::default()
        });
        // Redelivered events change nothing.
        if view.seen.insert(event_id.to_owned()) {
            f(view);
        }
        crate::metrics::ride_moved(before, view.status);
    }

    /// The request a rider made with an idempotency key, as the log has it.
    pub fn request_for_key(&self, rider_id: &str, key: &str) -> Option<RideRequested> {
        self.keyed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(rider_id.to_owned(), key.to_owned()))
            .cloned()
    }

    pub fn apply_request(&self, e: &RideRequested) {
        if let Some(key) = &e.idempotency_key {
            self.keyed
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry((e.rider_id.clone(), key.clone()))
                .or_insert_with(|| e.clone());
        }
        self.with_ride(&e.ride_id, &e.event_id, |v| {
            v.rider_id = Some(e.rider_id.clone());
            v.region = Some(e.region.clone());
            v.product = Some(e.product);
            v.pickup = Some(e.pickup);
            v.dropoff = Some(e.dropoff);
            v.quote_minor = Some(e.quote.amount_minor);
            v.currency = Some(e.quote.currency.clone());
            v.surge_milli = Some(e.surge_milli);
            v.history.insert(
                0,
                HistoryEntry {
                    event: "requested",
                    at_ms: e.occurred_at.0,
                },
            );
        });
    }

    pub fn apply_event(&self, e: &RideEvent) {
        self.with_ride(e.ride_id(), e.event_id(), |v| {
            // The read model shows what happened; deciding what may happen is the job of the
            // services that act on events.
            match step_of(e).map(|step| v.state.apply(step)) {
                Some(Ok(Applied::Changed(status))) => v.status = status,
                Some(Ok(Applied::AlreadyApplied)) | None => {}
                Some(Err(err)) => {
                    tracing::warn!(ride_id = %v.ride_id, error = %err, "ride event out of order");
                }
            }
            match e {
                RideEvent::DriverAssigned(a) => v.driver_id = Some(a.driver_id.clone()),
                RideEvent::RideCancelled(c) => v.cancel_reason = Some(c.reason.clone()),
                _ => {}
            }
            if !matches!(e, RideEvent::TripTelemetry(_)) {
                v.history.push(HistoryEntry {
                    event: e.kind(),
                    at_ms: e.occurred_at().0,
                });
                v.history.sort_by_key(|h| h.at_ms);
            }
        });
    }

    pub fn apply_charge(&self, c: &FareCharged) {
        self.with_ride(&c.ride_id, &c.event_id, |v| {
            v.fare = Some(FareView {
                kind: c.kind,
                amount_minor: c.fare.amount_minor,
                currency: c.fare.currency.clone(),
                parts: FareParts {
                    base_minor: c.base_minor,
                    distance_minor: c.distance_minor,
                    time_minor: c.time_minor,
                    surge_milli: c.surge_milli,
                },
                commission_minor: c.commission.amount_minor,
                payout_minor: c.payout.amount_minor,
            });
        });
    }

    pub fn apply_notification(&self, n: &Notification) {
        let Some(ride_id) = &n.ride_id else {
            return;
        };
        self.with_ride(ride_id, &n.notification_id, |v| {
            v.notifications.push(SentMessage {
                recipient_kind: n.recipient_kind,
                template: n.template.clone(),
                text: n.text.clone(),
                at_ms: n.occurred_at.0,
            });
            v.notifications.sort_by_key(|m| m.at_ms);
        });
    }
}

/// The API's read models as a service: the ride book and the surge multipliers, fed from
/// their topics. Every API instance reads every ride, so its group is its own.
#[derive(Debug, Clone)]
pub struct Feeds {
    pub rides: Arc<RideBook>,
    pub surge: Arc<crate::SurgeBook>,
}

impl Service for Feeds {
    const NAME: &'static str = "api-feeds";
    type Error = PartitionedError;

    async fn run(self, cx: Context) -> Result<(), PartitionedError> {
        let group = format!("bimride-api-{}", uuid::Uuid::new_v4());
        Projection::new((self.rides, self.surge))
            // Dispatch's decisions on this topic reach the book through the ride events.
            .on(|(book, _), e: &DispatchEvent| {
                if let DispatchEvent::Requested(request) = e {
                    book.apply_request(request);
                }
            })
            .on(|(book, _), e: &RideEvent| book.apply_event(e))
            .on(|(book, _), c: &FareCharged| book.apply_charge(c))
            .on(|(book, _), n: &Notification| book.apply_notification(n))
            .on(|(_, surge), u: &SurgeUpdated| surge.apply(u))
            .run(&cx.kafka, cx.codec, Options::new(group, "api"), cx.shutdown)
            .await
    }
}
