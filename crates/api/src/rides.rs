//! Booking, quoting, tracking and cancelling rides.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bimride_domain::Zone;
use bimride_domain::eta::Leg;
use bimride_domain::ride::RideStatus;
use bimride_domain::traffic::Traffic;
use bimride_events::{
    CancelledBy, DispatchEvent, GeoPoint, Millis, Money, Product, RideCancelled, RideEvent,
    RideRequested,
};
use bimride_store::{Claim, Cursor, KeyClaim, RideView};
use serde::{Deserialize, Serialize};

use crate::ApiState;
use crate::access::Rider;
use crate::error::{ApiError, BodyRefusals, CredentialRefusals};
use bimride_pricing::{self as pricing, CURRENCY, Quote};

type Shared = State<Arc<ApiState>>;

/// A WGS84 position.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Point {
    #[schema(minimum = -90.0, maximum = 90.0)]
    pub lat: f64,
    #[schema(minimum = -180.0, maximum = 180.0)]
    pub lng: f64,
}

/// The ride product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProductName {
    Economy,
    Comfort,
    Xl,
}

impl From<ProductName> for Product {
    fn from(p: ProductName) -> Self {
        match p {
            ProductName::Economy => Product::Economy,
            ProductName::Comfort => Product::Comfort,
            ProductName::Xl => Product::Xl,
        }
    }
}

/// A booking.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookRequest {
    /// The rider the bearer token names.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64)]
    pub rider_id: String,
    pub pickup: Point,
    pub dropoff: Point,
    pub product: ProductName,
}

/// A fare estimate, in minor units.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QuoteBody {
    pub amount_minor: i64,
    pub currency: &'static str,
    pub surge_milli: i32,
    pub distance_m: i64,
    pub duration_s: i64,
    #[schema(value_type = Object)]
    pub breakdown: bimride_domain::Fare,
}

impl From<Quote> for QuoteBody {
    fn from(q: Quote) -> Self {
        Self {
            amount_minor: q.fare.total_minor,
            currency: CURRENCY,
            surge_milli: q.fare.parts.surge_milli,
            distance_m: q.distance_m,
            duration_s: q.duration_s,
            breakdown: q.fare,
        }
    }
}

/// An accepted booking.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Booked {
    pub ride_id: String,
    pub status: &'static str,
    pub quote: QuoteBody,
    pub region: String,
    pub pickup_cell: String,
}

pub(crate) fn check_rider_id(id: &str) -> Result<(), ApiError> {
    if bimride_auth::valid_rider_id(id) {
        Ok(())
    } else {
        Err(ApiError::Unprocessable(
            "rider_id must be 1 to 64 letters, digits, '-' or '_'".into(),
        ))
    }
}

/// The ride, if it is the rider's own; another rider's ride is as unknown as a missing one.
async fn own_ride(state: &ApiState, rider: &Rider, id: &str) -> Result<RideView, ApiError> {
    state
        .parts
        .store
        .ride(id)
        .await?
        .filter(|view| view.rider_id.as_deref() == Some(rider.0.as_str()))
        .ok_or_else(|| ApiError::RideNotFound(id.to_owned()))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()))
        .ok_or_else(|| {
            ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters".into())
        })?;
    Ok(Some(key.to_owned()))
}

/// A quote from `pickup` (in `zone`) to `dropoff`: the pickup cell's surge, and the trip's
/// duration corrected by what was learned of that cell at this hour.
fn priced(state: &ApiState, product: Product, pickup: Point, zone: &Zone, dropoff: Point) -> Quote {
    let quote = pricing::quote(
        product,
        (pickup.lat, pickup.lng),
        (dropoff.lat, dropoff.lng),
        state.parts.surge.multiplier(&zone.cell.to_string()),
    );
    let duration_s = state.parts.learned.corrected_secs(
        Leg::Trip,
        quote.duration_s,
        zone.cell,
        Traffic::hour_utc(Millis::now().0),
    );
    quote.taking(product, duration_s)
}

fn locate(state: &ApiState, p: Point, what: &str) -> Result<Zone, ApiError> {
    state
        .parts
        .city
        .locate(p.lat, p.lng)
        .map_err(|e| ApiError::Unprocessable(format!("{what}: {e}")))
}

#[utoipa::path(
    post, path = "/v1/rides", tag = "rides",
    request_body = BookRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key returns the same ride")),
    responses(
        (status = 202, description = "Ride requested", body = Booked),
        BodyRefusals,
        CredentialRefusals,
    ),
    security(("rider" = []))
)]
pub async fn book(
    State(state): Shared,
    rider: Rider,
    headers: HeaderMap,
    body: Result<Json<BookRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body?;
    check_rider_id(&request.rider_id)?;
    if request.rider_id != rider.0 {
        return Err(ApiError::Forbidden);
    }
    let pickup = locate(&state, request.pickup, "pickup")?;
    locate(&state, request.dropoff, "dropoff")?;
    let key = idempotency_key(&headers)?;
    let product = Product::from(request.product);
    let quote = priced(&state, product, request.pickup, &pickup, request.dropoff);
    let booked = Booked {
        ride_id: format!("ride-{}", uuid::Uuid::now_v7()),
        status: "requested",
        quote: quote.into(),
        region: pickup.region.to_string(),
        pickup_cell: pickup.cell.to_string(),
    };
    // Claim the key before producing, so that a retry reaching any instance, at any moment,
    // finds the same ride.
    // Only a keyed booking keeps its request and answer, for a retry to compare and replay.
    let kept = match key {
        Some(_) => Some((json(&request)?, json(&booked)?)),
        None => None,
    };
    let claim = key
        .as_deref()
        .zip(kept.as_ref())
        .map(|(key, (request_json, answer_json))| KeyClaim {
            rider_id: &request.rider_id,
            key,
            ride_id: &booked.ride_id,
            request: request_json,
            answer: answer_json,
        });
    if let Some(claim) = &claim
        && let Claim::Earlier {
            request: earlier,
            answer,
        } = state.parts.store.claim_key(claim).await?
    {
        if serde_json::from_str::<BookRequest>(&earlier).ok().as_ref() != Some(&request) {
            return Err(ApiError::IdempotencyKeyReused);
        }
        let answer: serde_json::Value =
            serde_json::from_str(&answer).map_err(|e| ApiError::Unavailable(Box::new(e)))?;
        return Ok((StatusCode::ACCEPTED, Json(answer)).into_response());
    }
    let event = DispatchEvent::from(RideRequested {
        event_id: uuid::Uuid::new_v4().to_string(),
        occurred_at: Millis::now(),
        ride_id: booked.ride_id.clone(),
        rider_id: request.rider_id.clone(),
        product,
        pickup: GeoPoint {
            lat: request.pickup.lat,
            lng: request.pickup.lng,
        },
        dropoff: GeoPoint {
            lat: request.dropoff.lat,
            lng: request.dropoff.lng,
        },
        region: booked.region.clone(),
        pickup_cell: booked.pickup_cell.clone(),
        quote: Money {
            amount_minor: booked.quote.amount_minor,
            currency: CURRENCY.into(),
        },
        surge_milli: booked.quote.surge_milli,
        idempotency_key: key.clone(),
        quoted_duration_secs: Some(booked.quote.duration_s),
    });
    if let Err(e) = state.parts.producer.send_and_wait(&event).await {
        if let Some(claim) = &claim
            && let Err(release) = state.parts.store.release_key(claim).await
        {
            tracing::warn!(error = %release, "an idempotency key stays claimed for a booking never made");
        }
        return Err(ApiError::Unavailable(Box::new(e)));
    }
    tracing::info!(ride_id = %booked.ride_id, region = %booked.region, "ride requested");
    Ok((StatusCode::ACCEPTED, Json(booked)).into_response())
}

fn json(value: &impl Serialize) -> Result<String, ApiError> {
    serde_json::to_string(value).map_err(|e| ApiError::Unavailable(Box::new(e)))
}

#[utoipa::path(
    get, path = "/v1/rides/{id}", tag = "rides",
    params(("id" = String, Path, description = "Ride id")),
    responses(
        (status = 200, description = "The ride's state and history, from the ride store", body = Object),
        (status = 404, description = "Unknown ride, or another rider's", body = crate::error::ErrorBody),
        CredentialRefusals,
    ),
    security(("rider" = []))
)]
pub async fn get_ride(
    State(state): Shared,
    rider: Rider,
    id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    own_ride(&state, &rider, &id).await.map(Json)
}

/// Rides per page unless asked otherwise, and at most.
const PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Rides per page, 1 to 100; 20 unless given.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Where the page starts: the `next` of the page before.
    pub after: Option<String>,
}

/// A page of the rider's rides, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RidePage {
    #[schema(value_type = Vec<Object>)]
    pub rides: Vec<RideView>,
    /// Where the next page starts; absent on the last.
    pub next: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/rides", tag = "rides",
    params(ListQuery),
    responses(
        (status = 200, description = "The rider's own rides, newest first", body = RidePage),
        (status = 400, description = "Malformed query", body = crate::error::ErrorBody),
        (status = 422, description = "A cursor that is no page's `next`", body = crate::error::ErrorBody),
        CredentialRefusals,
    ),
    security(("rider" = []))
)]
pub async fn list(
    State(state): Shared,
    rider: Rider,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<RidePage>, ApiError> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_PAGE}"
        )));
    }
    let after = match q.after.as_deref() {
        Some(text) => Some(Cursor::decode(text).ok_or_else(|| {
            ApiError::Unprocessable("after must be the next of an earlier page".into())
        })?),
        None => None,
    };
    let page = state
        .parts
        .store
        .rides_of(&rider.0, after.as_ref(), limit)
        .await?;
    Ok(Json(RidePage {
        rides: page.rides,
        next: page.next.as_ref().map(Cursor::encode),
    }))
}

#[utoipa::path(
    post, path = "/v1/rides/{id}/cancel", tag = "rides",
    params(("id" = String, Path, description = "Ride id")),
    responses(
        (status = 202, description = "Cancellation requested", body = Object),
        (status = 404, description = "Unknown ride, or another rider's", body = crate::error::ErrorBody),
        (status = 409, description = "The trip has started or the ride is finished", body = crate::error::ErrorBody),
        CredentialRefusals,
    ),
    security(("rider" = []))
)]
pub async fn cancel(
    State(state): Shared,
    rider: Rider,
    id: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(id) = id?;
    let view = own_ride(&state, &rider, &id).await?;
    let mut cancel = RideCancelled {
        event_id: uuid::Uuid::new_v4().to_string(),
        occurred_at: Millis::now(),
        ride_id: id.clone(),
        rider_id: rider.0,
        driver_id: view.driver_id.clone(),
        by: CancelledBy::Rider,
        reason: "rider_request".into(),
        region: String::new(),
    };
    let producer = &state.parts.producer;
    let sent = match view.status {
        // Dispatch owns a ride until it has a driver: the request goes to the region's owner,
        // which decides, so a cancellation never races an assignment.
        RideStatus::Requested | RideStatus::Offered => {
            cancel.region = view.region.clone().unwrap_or_default();
            producer.send_and_wait(&DispatchEvent::from(cancel)).await
        }
        RideStatus::Assigned | RideStatus::DriverArrived => {
            producer.send_and_wait(&RideEvent::from(cancel)).await
        }
        status @ (RideStatus::InProgress | RideStatus::Completed | RideStatus::Cancelled) => {
            return Err(ApiError::NotCancellable {
                id,
                status: status.as_str(),
            });
        }
    };
    sent.map_err(|e| ApiError::Unavailable(Box::new(e)))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "ride_id": id, "status": "cancelling" })),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct QuoteQuery {
    #[param(minimum = -90.0, maximum = 90.0)]
    pub pickup_lat: f64,
    #[param(minimum = -180.0, maximum = 180.0)]
    pub pickup_lng: f64,
    #[param(minimum = -90.0, maximum = 90.0)]
    pub dropoff_lat: f64,
    #[param(minimum = -180.0, maximum = 180.0)]
    pub dropoff_lng: f64,
    pub product: ProductName,
}

#[utoipa::path(
    get, path = "/v1/quote", tag = "rides",
    params(QuoteQuery),
    responses(
        (status = 200, description = "A fare estimate", body = QuoteBody),
        (status = 400, description = "Malformed request", body = crate::error::ErrorBody),
        (status = 422, description = "A position outside the city", body = crate::error::ErrorBody),
    )
)]
pub async fn quote(
    State(state): Shared,
    query: Result<Query<QuoteQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = query?;
    let pickup = Point {
        lat: q.pickup_lat,
        lng: q.pickup_lng,
    };
    let dropoff = Point {
        lat: q.dropoff_lat,
        lng: q.dropoff_lng,
    };
    let zone = locate(&state, pickup, "pickup")?;
    locate(&state, dropoff, "dropoff")?;
    let quote = priced(&state, q.product.into(), pickup, &zone, dropoff);
    Ok(Json(QuoteBody::from(quote)))
}
