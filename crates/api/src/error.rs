//! API errors and the one place they become HTTP responses. Clients get a code and a message
//! meant for them; internal causes go to the log only.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The body of every error response.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code, for example `ride_not_found`.
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{0}")]
    Unprocessable(String),
    #[error("ride {} not found", shown(.0))]
    RideNotFound(String),
    #[error("ride {id} is {status} and can no longer be cancelled")]
    NotCancellable { id: String, status: &'static str },
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyKeyReused,
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("this credential does not grant that")]
    Forbidden,
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("{0} not found")]
    NotFound(String),
    #[error("no such endpoint")]
    NoRoute,
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    #[error("the service is temporarily unavailable, try again")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("ride history is temporarily unavailable, try again")]
    StoreUnavailable(#[source] bimride_store::StoreError),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
            ApiError::RideNotFound(_) => (StatusCode::NOT_FOUND, "ride_not_found"),
            ApiError::NotCancellable { .. } => (StatusCode::CONFLICT, "ride_not_cancellable"),
            ApiError::IdempotencyKeyReused => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::NoRoute => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::StoreUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match &self {
            ApiError::Unavailable(cause) => {
                tracing::error!(error = %cause, "request failed on a dependency");
            }
            ApiError::StoreUnavailable(cause) => {
                tracing::error!(error = %cause, "request failed on the ride store");
            }
            _ => {}
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: self.to_string(),
            },
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge {
                limit: crate::MAX_BODY_BYTES,
            },
            StatusCode::UNPROCESSABLE_ENTITY => ApiError::Unprocessable(plain(&r.body_text())),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
            _ => ApiError::BadRequest(plain(&r.body_text())),
        }
    }
}

impl From<bimride_store::StoreError> for ApiError {
    fn from(e: bimride_store::StoreError) -> Self {
        ApiError::StoreUnavailable(e)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::BadRequest(plain(&r.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::BadRequest(plain(&r.body_text()))
    }
}

/// Longest client-supplied id an error message repeats; longer ones are not echoed.
const SHOWN_ID: usize = 64;

fn shown(id: &str) -> &str {
    if id.len() <= SHOWN_ID {
        id
    } else {
        "(id too long)"
    }
}

/// A deserializer's message in a client's terms: serde names the Rust types it expected
/// (`expected struct BookRequest`), which mean nothing outside this crate.
fn plain(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut words = message.split(' ').peekable();
    while let Some(word) = words.next() {
        let replacement = match word {
            "struct" | "enum" | "tuple"
                if words
                    .peek()
                    .is_some_and(|w| w.starts_with(char::is_uppercase)) =>
            {
                let name = words.next().unwrap_or_default();
                // Keep what followed the type name, such as a comma or a period.
                let rest = name.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_');
                let noun = if word == "enum" {
                    "one of the documented values"
                } else {
                    "a JSON object"
                };
                format!("{noun}{rest}")
            }
            other => other.to_owned(),
        };
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&replacement);
    }
    out
}

impl From<bimride_auth::AuthError> for ApiError {
    fn from(e: bimride_auth::AuthError) -> Self {
        use bimride_auth::AuthError;
        match e {
            AuthError::Missing | AuthError::Invalid => ApiError::Unauthorized,
            AuthError::Forbidden => ApiError::Forbidden,
            AuthError::Unsignable(why) => ApiError::Unprocessable(why.into()),
            AuthError::WeakSecret | AuthError::WeakAdminToken | AuthError::Signing => {
                ApiError::Unavailable(Box::new(e))
            }
        }
    }
}

/// Refusals of every operation that takes a credential: a rider's token or the admin's.
#[derive(Debug, utoipa::IntoResponses)]
pub enum CredentialRefusals {
    /// No valid bearer credential
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// A credential that does not grant this: another rider's, or not the admin's
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// Too many requests from this rider, or too many failed authentications from this address
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// Kafka or the ride store is unavailable
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// Refusals of a JSON request body.
#[derive(Debug, utoipa::IntoResponses)]
pub enum BodyRefusals {
    /// The body is not well-formed JSON
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// The body is larger than the limit
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// The body is not declared as JSON
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// The body is JSON but not a valid request
    #[response(status = 422)]
    Unprocessable(ErrorBody),
}

/// Unknown paths, as JSON like every other error.
pub async fn no_route() -> ApiError {
    ApiError::NoRoute
}

/// Known paths called with the wrong method.
pub async fn wrong_method() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_json_shapes_not_rust_types() {
        assert_eq!(
            plain("invalid type: sequence, expected struct BookRequest at line 1 column 0"),
            "invalid type: sequence, expected a JSON object at line 1 column 0"
        );
        assert_eq!(
            plain("unknown variant `bus`, expected enum ProductName."),
            "unknown variant `bus`, expected one of the documented values."
        );
        assert_eq!(plain("missing field `pickup`"), "missing field `pickup`");
    }

    #[test]
    fn a_long_id_is_not_echoed() {
        let long = "r".repeat(65_536);
        let message = ApiError::RideNotFound(long).to_string();
        assert_eq!(message, "ride (id too long) not found");
        assert_eq!(
            ApiError::RideNotFound("ride-1".into()).to_string(),
            "ride ride-1 not found"
        );
    }
}
