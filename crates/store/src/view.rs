//! A ride as its rider sees it, folded from the ride topics: pure, so that the database and an
//! in-memory book fold it the same way.

use bimride_domain::FareParts;
use bimride_domain::ride::{Applied, RideState, RideStatus, Step};
use bimride_events::{
    ChargeKind, DispatchEvent, FareCharged, GeoPoint, Notification, OfferAnswer, Product,
    RecipientKind, RideEvent, RideRequested, TopicValue,
};
use serde::{Deserialize, Serialize};

/// One step of a ride, as the rider sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub event: String,
    pub at_ms: i64,
}

/// What the ride cost, from the payments topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentMessage {
    pub recipient_kind: RecipientKind,
    pub template: String,
    pub text: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
}

/// A record that changes a ride's view.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Requested(RideRequested),
    Event(RideEvent),
    Charged(FareCharged),
    Sent(Notification),
}

impl Change {
    /// The change a dispatch record makes: only a request does; decisions arrive as ride events.
    pub fn of_dispatch(e: DispatchEvent) -> Option<Self> {
        match e {
            DispatchEvent::Requested(r) => Some(Self::Requested(r)),
            _ => None,
        }
    }

    /// The change a ride event makes. Telemetry moves the car, not the ride: it changes no
    /// view, and the trip's distance arrives with its completion.
    pub fn of_ride(e: RideEvent) -> Option<Self> {
        match e {
            RideEvent::TripTelemetry(_) => None,
            e => Some(Self::Event(e)),
        }
    }

    /// The ride it changes; a message about no ride changes none.
    pub fn ride_id(&self) -> Option<&str> {
        match self {
            Self::Requested(r) => Some(&r.ride_id),
            Self::Event(e) => Some(e.ride_id()),
            Self::Charged(c) => Some(&c.ride_id),
            Self::Sent(n) => n.ride_id.as_deref(),
        }
    }

    /// The id a redelivery repeats: a message's own id, or the event's.
    pub fn id(&self) -> &str {
        match self {
            Self::Requested(r) => &r.event_id,
            Self::Event(e) => e.event_id(),
            Self::Charged(c) => &c.event_id,
            Self::Sent(n) => &n.notification_id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Requested(_) => "RideRequested",
            Self::Event(e) => e.kind(),
            Self::Charged(_) => "FareCharged",
            Self::Sent(_) => "Notification",
        }
    }

    pub fn occurred_at(&self) -> i64 {
        match self {
            Self::Requested(r) => r.occurred_at.0,
            Self::Event(e) => e.occurred_at().0,
            Self::Charged(c) => c.occurred_at.0,
            Self::Sent(n) => n.occurred_at.0,
        }
    }
}

/// The state-machine step of an event; an accepted offer moves nothing until the assignment.
fn step_of(event: &RideEvent) -> Option<Step> {
    Some(match event {
        RideEvent::OfferSent(_) => Step::OfferSent,
        RideEvent::OfferAnswered(a) if a.answer == OfferAnswer::Accepted => return None,
        RideEvent::OfferAnswered(_) => Step::OfferLapsed,
        RideEvent::DriverAssigned(_) => Step::Assigned,
        RideEvent::DriverArrived(_) => Step::DriverArrived,
        RideEvent::TripStarted(_) => Step::TripStarted,
        RideEvent::TripTelemetry(_) => Step::Telemetry,
        RideEvent::TripCompleted(_) => Step::Completed,
        RideEvent::RideCancelled(_) => Step::Cancelled,
    })
}

impl RideView {
    pub fn new(ride_id: &str) -> Self {
        Self {
            ride_id: ride_id.to_owned(),
            ..Self::default()
        }
    }

    /// Applies a change once; the caller drops redeliveries by [`Change::id`]. Records may
    /// arrive in any order across topics, so lists are kept sorted by time.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::Requested(e) => {
                self.rider_id = Some(e.rider_id.clone());
                self.region = Some(e.region.clone());
                self.product = Some(e.product);
                self.pickup = Some(e.pickup);
                self.dropoff = Some(e.dropoff);
                self.quote_minor = Some(e.quote.amount_minor);
                self.currency = Some(e.quote.currency.clone());
                self.surge_milli = Some(e.surge_milli);
                self.history.push(HistoryEntry {
                    event: "requested".into(),
                    at_ms: e.occurred_at.0,
                });
                self.history.sort_by_key(|h| h.at_ms);
            }
            Change::Event(e) => self.apply_event(e),
            Change::Charged(c) => {
                self.fare = Some(FareView {
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
            }
            Change::Sent(n) => {
                self.notifications.push(SentMessage {
                    recipient_kind: n.recipient_kind,
                    template: n.template.clone(),
                    text: n.text.clone(),
                    at_ms: n.occurred_at.0,
                });
                self.notifications.sort_by_key(|m| m.at_ms);
            }
        }
    }

    fn apply_event(&mut self, e: &RideEvent) {
        // The view shows what happened; deciding what may happen is the job of the services
        // that act on events.
        let mut state = RideState {
            status: self.status,
        };
        match step_of(e).map(|step| state.apply(step)) {
            Some(Ok(Applied::Changed(status))) => self.status = status,
            Some(Ok(Applied::AlreadyApplied)) | None => {}
            Some(Err(err)) => {
                tracing::warn!(ride_id = %self.ride_id, error = %err, "ride event out of order");
            }
        }
        match e {
            RideEvent::DriverAssigned(a) => self.driver_id = Some(a.driver_id.clone()),
            RideEvent::RideCancelled(c) => self.cancel_reason = Some(c.reason.clone()),
            _ => {}
        }
        if !matches!(e, RideEvent::TripTelemetry(_)) {
            self.history.push(HistoryEntry {
                event: e.kind().into(),
                at_ms: e.occurred_at().0,
            });
            self.history.sort_by_key(|h| h.at_ms);
        }
    }

    /// When the ride was requested, where the request has been seen.
    pub fn requested_at(&self) -> Option<i64> {
        self.history
            .iter()
            .find(|h| h.event == "requested")
            .map(|h| h.at_ms)
    }
}
