//! The `.avsc` files, embedded at build time, and the per-topic value schemas built from them.

use apache_avro::AvroSchema;
use apache_avro::Schema;
use serde_json::Value;
use std::collections::HashSet;

use crate::event;

/// One event contract: its file in `schemas/`, the file's text, and the schema the Rust type
/// derives. The contract tests hold the two schemas equal.
#[derive(Debug)]
pub struct Contract {
    pub file: &'static str,
    pub source: &'static str,
    pub derived: fn() -> Schema,
}

macro_rules! contracts {
    ($($ident:ident => $file:literal, $ty:ty;)*) => {
        $(
            pub const $ident: Contract = Contract {
                file: $file,
                source: include_str!(concat!("../../../schemas/", $file)),
                derived: <$ty as AvroSchema>::get_schema,
            };
        )*
        /// Every contract, one per `.avsc` file.
        pub static ALL: &[&Contract] = &[$(&$ident),*];
    };
}

contracts! {
    RIDE_REQUESTED => "ride_requested.avsc", event::RideRequested;
    OFFER_SENT => "offer_sent.avsc", event::OfferSent;
    OFFER_ANSWERED => "offer_answered.avsc", event::OfferAnswered;
    DRIVER_ASSIGNED => "driver_assigned.avsc", event::DriverAssigned;
    DRIVER_ARRIVED => "driver_arrived.avsc", event::DriverArrived;
    TRIP_STARTED => "trip_started.avsc", event::TripStarted;
    TRIP_TELEMETRY => "trip_telemetry.avsc", event::TripTelemetry;
    TRIP_COMPLETED => "trip_completed.avsc", event::TripCompleted;
    RIDE_CANCELLED => "ride_cancelled.avsc", event::RideCancelled;
    DRIVER_STATUS => "driver_status.avsc", event::DriverStatusChanged;
    DRIVER_LOCATION => "driver_location.avsc", event::DriverLocationUpdated;
    SURGE_UPDATED => "surge_updated.avsc", event::SurgeUpdated;
    FARE_CHARGED => "fare_charged.avsc", event::FareCharged;
    NOTIFICATION => "notification.avsc", event::Notification;
    ETA_OBSERVED => "eta_observed.avsc", event::EtaObserved;
}

impl Contract {
    /// The file's JSON. The files are checked in and tested, so a parse failure is a build bug.
    pub fn json(&self) -> Value {
        serde_json::from_str(self.source)
            .unwrap_or_else(|e| panic!("schemas/{} is not JSON: {e}", self.file))
    }
}

/// The value schema of a topic carrying `members`: the record itself for one member, otherwise
/// a top-level union in member order. Named types defined by an earlier member are referred to
/// by full name afterwards, as Avro requires inside one schema.
pub fn value_schema_json(members: &[&Contract]) -> String {
    match members {
        [one] => one.json().to_string(),
        many => {
            let mut seen = HashSet::new();
            let branches: Vec<Value> = many
                .iter()
                .map(|c| dedupe_named(c.json(), "", &mut seen))
                .collect();
            Value::Array(branches).to_string()
        }
    }
}

fn dedupe_named(value: Value, namespace: &str, seen: &mut HashSet<String>) -> Value {
    match value {
        Value::Object(mut map) => {
            let kind = map.get("type").and_then(Value::as_str).unwrap_or_default();
            if !matches!(kind, "record" | "enum" | "fixed") {
                if let Some(inner) = map.remove("type") {
                    map.insert("type".into(), dedupe_named(inner, namespace, seen));
                }
                return Value::Object(map);
            }
            let name = map.get("name").and_then(Value::as_str).unwrap_or_default();
            let ns = map
                .get("namespace")
                .and_then(Value::as_str)
                .unwrap_or(namespace)
                .to_owned();
            let full = if name.contains('.') || ns.is_empty() {
                name.to_owned()
            } else {
                format!("{ns}.{name}")
            };
            if !seen.insert(full.clone()) {
                return Value::String(full);
            }
            if let Some(Value::Array(fields)) = map.remove("fields") {
                let fields = fields
                    .into_iter()
                    .map(|f| dedupe_named(f, &ns, seen))
                    .collect();
                map.insert("fields".into(), Value::Array(fields));
            }
            Value::Object(map)
        }
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| dedupe_named(v, namespace, seen))
                .collect(),
        ),
        Value::String(s) if !s.contains('.') && !is_primitive(&s) && !namespace.is_empty() => {
            // A short reference inside a member resolves against that member's namespace.
            Value::String(format!("{namespace}.{s}"))
        }
        other => other,
    }
}

fn is_primitive(s: &str) -> bool {
    matches!(
        s,
        "null" | "boolean" | "int" | "long" | "float" | "double" | "bytes" | "string"
    )
}

/// Parses a schema text; the error names the file.
pub fn parse(source: &str) -> Result<Schema, apache_avro::Error> {
    Schema::parse_str(source)
}
