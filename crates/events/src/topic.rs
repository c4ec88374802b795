//! The topics, what each carries, and how each value is keyed.

use std::sync::Arc;

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
    Eta,
}

impl Topic {
    pub const ALL: [Topic; 7] = [
        Topic::RideRequests,
        Topic::DriverSupply,
        Topic::RideEvents,
        Topic::Surge,
        Topic::Payments,
        Topic::Notifications,
        Topic::Eta,
    ];

    /// The topic's name within its namespace; the full name is `<namespace>.<suffix>`.
    pub const fn suffix(self) -> &'static str {
        match self {
            Topic::RideRequests => "ride-requests",
            Topic::DriverSupply => "driver-supply",
            Topic::RideEvents => "ride-events",
            Topic::Surge => "surge",
            Topic::Payments => "payments",
            Topic::Notifications => "notifications",
            Topic::Eta => "eta",
        }
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
            Topic::Eta => &[&ETA_OBSERVED],
        }
    }

    pub fn value_schema_json(self) -> String {
        contract::value_schema_json(self.members())
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.suffix())
    }
}

/// The namespace of topics unless configured otherwise.
pub const DEFAULT_NAMESPACE: &str = "bimride";

/// The topic names of one deployment: `<namespace>.<suffix>`, and `<namespace>.<suffix>.dlq`
/// for dead letters. Several deployments (or test runs) share a cluster under different
/// namespaces. Cheap to clone: every name is computed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    namespace: Arc<str>,
    /// (name, dead-letter name), indexed by `Topic as usize`.
    names: Arc<[(String, String); 7]>,
}

impl Topics {
    pub fn new(namespace: &str) -> Self {
        let names = Topic::ALL.map(|t| {
            let name = format!("{namespace}.{}", t.suffix());
            let dead = format!("{name}.dlq");
            (name, dead)
        });
        Self {
            namespace: namespace.into(),
            names: Arc::new(names),
        }
    }

    pub fn name(&self, topic: Topic) -> &str {
        &self.names[topic as usize].0
    }

    /// The dead-letter topic for records of `topic` that could not be processed.
    pub fn dead_letter(&self, topic: Topic) -> &str {
        &self.names[topic as usize].1
    }

    /// Every dead-letter topic.
    pub fn dead_letters(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|(_, dead)| dead.as_str())
    }

    /// Which topic `name` is in this namespace, if any.
    pub fn topic_of(&self, name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| self.name(*t) == name)
    }

    /// The registry subject of a topic's value schema (TopicNameStrategy).
    pub fn value_subject(&self, topic: Topic) -> String {
        format!("{}-value", self.name(topic))
    }

    /// A name in the namespace for a topic outside the catalogue, such as a benchmark's.
    pub fn other(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.namespace)
    }
}

impl Default for Topics {
    fn default() -> Self {
        Self::new(DEFAULT_NAMESPACE)
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
single!(EtaObserved, Topic::Eta, ride_id);

macro_rules! union_value {
    (
        $(#[$meta:meta])*
        $name:ident on $topic:expr, key = $key:ident {
            $($variant:ident($ty:ty) as $record:literal),* $(,)?
        }
    ) => {
        $(#[$meta])*
        // Each variant is named by its union branch's full name, which serde_avro_fast reads
        // a branch as and finds a branch to write by in one lookup.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub enum $name { $(#[serde(rename = $record)] $variant($ty)),* }

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
        Requested(RideRequested) as "io.bimride.events.RideRequested",
        Cancelled(RideCancelled) as "io.bimride.events.RideCancelled",
        Assigned(DriverAssigned) as "io.bimride.events.DriverAssigned",
    }
}

union_value! {
    /// Driver supply, keyed by dispatch region: status, location, and answers to offers.
    SupplyEvent on Topic::DriverSupply, key = region {
        Status(DriverStatusChanged) as "io.bimride.events.DriverStatusChanged",
        Location(DriverLocationUpdated) as "io.bimride.events.DriverLocationUpdated",
        Answer(OfferAnswered) as "io.bimride.events.OfferAnswered",
    }
}

union_value! {
    /// The lifecycle of a ride after its request, keyed by ride so it stays in order.
    RideEvent on Topic::RideEvents, key = ride_id {
        OfferSent(OfferSent) as "io.bimride.events.OfferSent",
        OfferAnswered(OfferAnswered) as "io.bimride.events.OfferAnswered",
        DriverAssigned(DriverAssigned) as "io.bimride.events.DriverAssigned",
        DriverArrived(DriverArrived) as "io.bimride.events.DriverArrived",
        TripStarted(TripStarted) as "io.bimride.events.TripStarted",
        TripTelemetry(TripTelemetry) as "io.bimride.events.TripTelemetry",
        TripCompleted(TripCompleted) as "io.bimride.events.TripCompleted",
        RideCancelled(RideCancelled) as "io.bimride.events.RideCancelled",
    }
}

impl RideEvent {
    pub fn ride_id(&self) -> &str {
        self.key()
    }
}
