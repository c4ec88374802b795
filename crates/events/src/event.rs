//! One Rust type per `.avsc` contract. Field docs live in the `.avsc` files.

use apache_avro::AvroSchema;
use apache_avro::schema::{Name, NamespaceRef, RecordField, Schema};
use apache_avro::serde::AvroSchemaComponent;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Milliseconds since the Unix epoch, UTC; Avro `timestamp-millis`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Millis(pub i64);

impl Millis {
    /// The current wall-clock time. Only producers call this; consumers use event time.
    pub fn now() -> Self {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }
}

impl AvroSchemaComponent for Millis {
    fn get_schema_in_ctxt(_: &mut HashSet<Name>, _: NamespaceRef<'_>) -> Schema {
        Schema::TimestampMillis
    }

    fn get_record_fields_in_ctxt(
        _: &mut HashSet<Name>,
        _: NamespaceRef<'_>,
    ) -> Option<Vec<RecordField>> {
        None
    }
}

/// A WGS84 position.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
pub struct GeoPoint {
    pub lat: f64,
    pub lng: f64,
}

/// Money in integer minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
pub struct Money {
    pub amount_minor: i64,
    pub currency: String,
}

/// The ride product a rider books.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Product {
    Economy,
    Comfort,
    Xl,
}

/// The car a driver drives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
pub struct Vehicle {
    pub plate: String,
    pub model: String,
    pub colour: String,
}

/// How an offer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OfferAnswer {
    Accepted,
    Declined,
    Expired,
}

/// Who cancelled a ride.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CancelledBy {
    Rider,
    Driver,
    System,
}

/// What a driver is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DriverStatus {
    Offline,
    Available,
    EnRoute,
    OnTrip,
}

/// What a charge is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChargeKind {
    Trip,
    CancellationFee,
}

/// Who receives a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RecipientKind {
    Rider,
    Driver,
}

/// A rider asked for a ride.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
pub struct RideRequested {
    pub event_id: String,
    pub occurred_at: Millis,
    pub ride_id: String,
    pub rider_id: String,
    pub product: Product,
    pub pickup: GeoPoint,
    pub dropoff: GeoPoint,
    pub region: String,
    pub pickup_cell: String,
    pub quote: Money,
    pub surge_milli: i32,
    pub idempotency_key: Option<String>,
    pub quoted_duration_secs: Option<i64>,
}

/// Dispatch offered a ride to one driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
pub struct OfferSent {
    pub event_id: String,
    pub occurred_at: Millis,
    pub ride_id: String,
    pub offer_id: String,
    pub driver_id: String,
    pub attempt: i32,
    pub pickup_eta_secs: i32,
    pub expires_at: Millis,
    #[avro(default = r#""""#)]
    #[serde(default)]
    pub region: String,
    pub pickup: Option<GeoPoint>,
    pub dropoff: Option<GeoPoint>,
}

/// A driver answered an offer, or it expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
pub struct OfferAnswered {
    pub event_id: String,
    pub occurred_at: Millis,
    pub ride_id: String,
    pub offer_id: String,
    pub driver_id: String,
    pub answer: OfferAnswer,
    #[avro(default = r#""""#)]
    #[serde(default)]
    pub region: String,
}

/// Dispatch confirmed a driver for a ride.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
pub struct DriverAssigned {
    pub event_id: String,
    pub occurred_at: Millis,
    pub ride_id: String,
    pub rider_id: String,
    pub driver_id: String,
    pub vehicle: Vehicle,
    pub pickup_eta_secs: i32,
    pub region: String,
    pub product: Option<Product>,
    #[avro(default = "1000")]
    #[serde(default = "no_surge")]
    pub surge_milli: i32,
    pub distance_eta_secs: Option<i32>,
    pub quoted_duration_secs: Option<i64>,
}

fn no_surge() -> i32 {
    1_000
}

/// The driver reached the pickup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
pub struct DriverArrived {
    pub event_id: String,
    pub occurred_at: Millis,
    pub ride_id: String,
    pub driver_id: String,
    #[avro(default = r#""""#)]
    #[serde(default)]
    pub rider_id: String,
}

/// The trip began.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
pub struct TripStarted {
    pub event_id: String,
    pub occurred_at: Millis,
    pub ride_id: String,
    pub driver_id: String,
    #[avro(default = r#""""#)]
    #[serde(default)]
    pub rider_id: String,
}

/// Position of a trip in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
pub struct TripTelemetry {
    pub event_id: String,
    pub occurred_at: Millis,
    pub ride_id: String,
    pub driver_id: String,
    pub position: GeoPoint,
    pub distance_m: i64,
}

/// The rider was dropped off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
pub struct TripCompleted {
    pub event_id: String,
    pub occurred_at: Millis,
    pub ride_id: String,
    pub rider_id: String,
    pub driver_id: String,
    pub distance_m: i64,
    pub duration_secs: i64,
    pub dropoff: GeoPoint,
}

/// A ride was cancelled before completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
pub struct RideCancelled {
    pub event_id: String,
    pub occurred_at: Millis,
    pub ride_id: String,
    pub rider_id: String,
    pub driver_id: Option<String>,
    pub by: CancelledBy,
    pub reason: String,
    #[avro(default = r#""""#)]
    #[serde(default)]
    pub region: String,
}

/// A driver's availability changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
pub struct DriverStatusChanged {
    pub event_id: String,
    pub occurred_at: Millis,
    pub driver_id: String,
    pub status: DriverStatus,
    pub position: GeoPoint,
    pub region: String,
    pub product: Product,
    pub vehicle: Vehicle,
}

/// A driver's periodic position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
pub struct DriverLocationUpdated {
    pub event_id: String,
    pub occurred_at: Millis,
    pub driver_id: String,
    pub position: GeoPoint,
    pub region: String,
    pub cell: String,
}

/// A cell's surge multiplier changed meaningfully.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
pub struct SurgeUpdated {
    pub event_id: String,
    pub occurred_at: Millis,
    pub cell: String,
    pub multiplier_milli: i32,
    pub demand: i32,
    pub supply: i32,
    pub window_end: Millis,
}

/// Which estimate an ETA observation checks: the pickup ETA given at assignment, against
/// assignment to arrival; or the trip duration quoted, against start to completion.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, AvroSchema,
)]
#[avro(namespace = "io.bimride.events")]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EtaLeg {
    Pickup,
    Trip,
}

/// A prediction set against what happened, for one leg of one ride.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
pub struct EtaObserved {
    pub event_id: String,
    pub occurred_at: Millis,
    pub ride_id: String,
    pub leg: EtaLeg,
    pub region: String,
    pub pickup_cell: String,
    pub hour: i32,
    pub predicted_secs: i64,
    pub actual_secs: i64,
    pub baseline_secs: Option<i64>,
}

impl EtaObserved {
    /// The distance-only estimate: the baseline where one was carried, else the prediction,
    /// which before baselines existed was made from distance alone.
    pub fn baseline(&self) -> i64 {
        self.baseline_secs.unwrap_or(self.predicted_secs)
    }
}

/// A ride was charged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
pub struct FareCharged {
    pub event_id: String,
    pub occurred_at: Millis,
    pub ride_id: String,
    pub rider_id: String,
    pub driver_id: Option<String>,
    pub kind: ChargeKind,
    pub fare: Money,
    pub base_minor: i64,
    pub distance_minor: i64,
    pub time_minor: i64,
    pub surge_milli: i32,
    pub commission: Money,
    pub payout: Money,
}

/// A message to a rider or a driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "io.bimride.events")]
pub struct Notification {
    pub event_id: String,
    pub occurred_at: Millis,
    pub notification_id: String,
    pub recipient_kind: RecipientKind,
    pub recipient_id: String,
    pub ride_id: Option<String>,
    pub template: String,
    pub text: String,
}
