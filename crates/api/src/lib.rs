//! The trip API: riders book, quote, track and cancel rides over HTTP.
//!
//! Bookings become `RideRequested` events; a ride's view is built by consuming the ride
//! topics ([`book::RideBook`]), not from what this process remembers sending.

pub mod book;
pub mod error;
pub mod pricing;
pub mod rides;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use bimride_domain::City;
use bimride_kafka::EventProducer;

pub use book::RideBook;
pub use error::ApiError;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Everything the handlers share.
#[derive(Debug)]
pub struct ApiState {
    pub producer: EventProducer,
    pub city: City,
    pub rides: Arc<RideBook>,
    pub(crate) idempotency: rides::IdempotencyStore,
}

impl ApiState {
    pub fn new(producer: EventProducer, city: City, rides: Arc<RideBook>) -> Arc<Self> {
        Arc::new(Self {
            producer,
            city,
            rides,
            idempotency: rides::IdempotencyStore::default(),
        })
    }
}

/// The API's routes, ready to be served or called with `oneshot` in tests.
pub fn app(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/rides", post(rides::book))
        .route("/v1/rides/{id}", get(rides::get_ride))
        .route("/v1/rides/{id}/cancel", post(rides::cancel))
        .route("/v1/quote", get(rides::quote))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
