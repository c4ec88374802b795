//! The topics, what each carries, and how each value is keyed.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::contract::{self, Contract};
use crate::event::*;

/// Every topic BimRide exchanges events on. Partitions and retention live in the Kafka crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    RideRequests,
    DriverSupply,
    RideEvents,
    Surge,
    Payments,
    Notifications,
}

impl Topic {
    pub const ALL: [Topic; 6] = [
        Topic::RideRequests,
        Topic::DriverSupply,
        Topic::RideEvents,
        Topic::Surge,
        Topic::Payments,
        Topic::Notifications,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Topic::RideRequests => "bimride.ride-requests",
            Topic::DriverSupply => "bimride.driver-supply",
            Topic::RideEvents => "bimride.ride-events",
            Topic::Surge => "bimride.surge",
            Topic::Payments => "bimride.payments",
            Topic::Notifications => "bimride.notifications",
        }
    }

    /// The dead-letter topic for records of this topic that could not be processed.
    pub const fn dead_letter(self) -> &'static str {
        match self {
            Topic::RideRequests => "bimride.ride-requests.dlq",
            Topic::DriverSupply => "bimride.driver-supply.dlq",
            Topic::RideEvents => "bimride.ride-events.dlq",
            Topic::Surge => "bimride.surge.dlq",
            Topic::Payments => "bimride.payments.dlq",
            Topic::Notifications => "bimride.notifications.dlq",
        }
    }

    pub fn from_name(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The contracts this topic carries, in union order. Append only: the order is wire format.
    pub fn members(self) -> &'static [&'static Contract] {
        use contract::*;
        match self {
            Topic::RideRequests => &[&RIDE_REQUESTED, &RIDE_CANCELLED, &DRIVER_ASSIGNED],
            Topic::DriverSupply => &[&DRIVER_STATUS, &DRIVER_LOCATION, &OFFER_ANSWERED],
            Topic::RideEvents => &[
                &OFFER_SENT,
                &OFFER_ANSWERED,
                &DRIVER_ASSIGNED,
                &DRIVER_ARRIVED,
                &TRIP_STARTED,
                &TRIP_TELEMETRY,
                &TRIP_COMPLETED,
                &RIDE_CANCELLED,
            ],
            Topic::Surge => &[&SURGE_UPDATED],
            Topic::Payments => &[&FARE_CHARGED],
            Topic::Notifications => &[&NOTIFICATION],
        }
    }

    /// The registry subject of the value schema (TopicNameStrategy).
    pub fn value_subject(self) -> String {
        format!("{}-value", self.name())
    }

    pub fn value_schema_json(self) -> String {
        contract::value_schema_json(self.members())
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A value that travels on one topic.
pub trait TopicValue: Serialize + DeserializeOwned + Send + Sync + 'static {
    const TOPIC: Topic;
    /// The record key: it decides the partition, and so the order consumers see.
    fn key(&self) -> &str;
    fn event_id(&self) -> &str;
    fn occurred_at(&self) -> Millis;
}

macro_rules! single {
    ($ty:ty, $topic:expr, $key:ident) => {
        impl TopicValue for $ty {
            const TOPIC: Topic = $topic;
            fn key(&self) -> &str {
                &self.$key
            }
            fn event_id(&self) -> &str {
                &self.event_id
            }
            fn occurred_at(&self) -> Millis {
                self.occurred_at
            }
        }
    };
}

single!(SurgeUpdated, Topic::Surge, cell);
single!(FareCharged, Topic::Payments, ride_id);
single!(Notification, Topic::Notifications, recipient_id);

macro_rules! union_value {
    (
        $(#[$meta:meta])*
        $name:ident on $topic:expr, key = $key:ident { $($variant:ident($ty:ty)),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub enum $name { $($variant($ty)),* }

        impl $name {
            /// Name of the event type, for logs and metric labels.
            pub fn kind(&self) -> &'static str {
                match self { $(Self::$variant(_) => stringify!($variant)),* }
            }
        }

        impl TopicValue for $name {
            const TOPIC: Topic = $topic;
            fn key(&self) -> &str {
                match self { $(Self::$variant(e) => &e.$key),* }
            }
            fn event_id(&self) -> &str {
                match self { $(Self::$variant(e) => &e.event_id),* }
            }
            fn occurred_at(&self) -> Millis {
                match self { $(Self::$variant(e) => e.occurred_at),* }
            }
        }

        $(impl From<$ty> for $name {
            fn from(e: $ty) -> Self { Self::$variant(e) }
        })*
    };
}

union_value! {
    /// The dispatch log, keyed by region: riders' requests and cancellations, and dispatch's
    /// own assignments and cancellations, which a new owner of the region replays.
    DispatchEvent on Topic::RideRequests, key = region {
        Requested(RideRequested),
        Cancelled(RideCancelled),
        Assigned(DriverAssigned),
    }
}

union_value! {
    /// Driver supply, keyed by dispatch region: status, location, and answers to offers.
    SupplyEvent on Topic::DriverSupply, key = region {
        Status(DriverStatusChanged),
        Location(DriverLocationUpdated),
        Answer(OfferAnswered),
    }
}

union_value! {
    /// The lifecycle of a ride after its request, keyed by ride so it stays in order.
    RideEvent on Topic::RideEvents, key = ride_id {
        OfferSent(OfferSent),
        OfferAnswered(OfferAnswered),
        DriverAssigned(DriverAssigned),
        DriverArrived(DriverArrived),
        TripStarted(TripStarted),
        TripTelemetry(TripTelemetry),
        TripCompleted(TripCompleted),
        RideCancelled(RideCancelled),
    }
}

impl RideEvent {
    pub fn ride_id(&self) -> &str {
        self.key()
    }
}
