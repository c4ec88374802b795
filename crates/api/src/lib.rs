//! The trip API: riders book, quote, track and cancel rides over HTTP.
//!
//! Bookings become `RideRequested` events. Rides are read from the ride store, which the
//! ride topics feed, so an instance holds no history and answers for any ride as soon as it
//! starts. Idempotency keys are claimed in the store before a request is produced.

pub mod access;
pub mod admin;
pub mod error;
pub mod rides;
pub mod surge;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use bimride_domain::City;
use bimride_kafka::{EventProducer, KafkaConfig};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use access::{Access, RateLimit};
pub use error::ApiError;
pub use surge::{SurgeBook, SurgeFeed};

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Everything the handlers share.
#[derive(Debug)]
pub struct ApiState {
    pub parts: ApiParts,
}

/// What the handlers share, as the caller gives it.
#[derive(Debug)]
pub struct ApiParts {
    pub producer: EventProducer,
    /// For the admin endpoints' reads of the dead-letter topics.
    pub kafka: KafkaConfig,
    pub city: City,
    /// Ride history, and the idempotency keys' claims.
    pub store: bimride_store::Store,
    pub surge: Arc<SurgeBook>,
    /// Corrections of distance-only trip durations, learned from ETA observations.
    pub learned: Arc<bimride_domain::eta::Learned>,
    pub access: Access,
}

impl ApiState {
    pub fn new(parts: ApiParts) -> Arc<Self> {
        Arc::new(Self { parts })
    }
}

/// The API's routes and the OpenAPI document generated from their handlers.
pub fn routes(state: Arc<ApiState>) -> (Router, utoipa::openapi::OpenApi) {
    let (router, mut openapi) = OpenApiRouter::new()
        .routes(routes!(rides::book, rides::list))
        .routes(routes!(rides::get_ride))
        .routes(routes!(rides::cancel))
        .routes(routes!(rides::quote))
        .routes(routes!(surge::current))
        .routes(routes!(admin::token))
        .routes(routes!(admin::summary))
        .routes(routes!(admin::list))
        .routes(routes!(admin::inspect))
        .routes(routes!(admin::replay))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
        .split_for_parts();
    describe(&mut openapi);
    (router, openapi)
}

/// The document's own metadata and its security schemes: riders send the token the admin
/// endpoint (or an identity provider) signed for them; operators send the admin credential.
fn describe(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
    use utoipa::openapi::{InfoBuilder, LicenseBuilder};
    openapi.info = InfoBuilder::new()
        .title("BimRide trip API")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "Riders book, quote, track and cancel rides; operators mint rider tokens and \
             inspect and replay dead letters. Every error is JSON: {\"error\": {\"code\", \"message\"}}.",
        ))
        .license(Some(
            LicenseBuilder::new()
                .name(env!("CARGO_PKG_LICENSE"))
                .identifier(Some(env!("CARGO_PKG_LICENSE")))
                .build(),
        ))
        .build();
    let components = openapi.components.get_or_insert_with(Default::default);
    let bearer = |description: &str| {
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some(description.to_owned());
        SecurityScheme::Http(scheme)
    };
    components.add_security_scheme(
        "rider",
        bearer("A rider token (a JWT signed with the API's secret)"),
    );
    components.add_security_scheme("admin", bearer("The operators' admin credential"));
}

/// The API's routes plus `/openapi.json`, ready to be served or called with `oneshot`.
/// Unknown paths and wrong methods answer with JSON errors too.
pub fn app(state: Arc<ApiState>) -> Router {
    let (router, openapi) = routes(state);
    let document = Arc::new(openapi);
    router
        .route(
            "/openapi.json",
            get(move || {
                let document = Arc::clone(&document);
                async move { axum::Json(document.as_ref().clone()) }
            }),
        )
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::wrong_method)
}
