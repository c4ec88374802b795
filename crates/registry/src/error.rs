//! Registry errors and their Confluent error codes; the one place they become HTTP.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("Subject '{0}' not found.")]
    SubjectNotFound(String),
    #[error("Version not found.")]
    VersionNotFound,
    #[error("Schema not found")]
    SchemaNotFound,
    #[error("Subject '{0}' was soft deleted. Set permanent=true to delete permanently")]
    SubjectSoftDeleted(String),
    #[error("Subject '{0}' was not deleted first before being permanently deleted")]
    SubjectNotSoftDeleted(String),
    #[error("Version was not deleted first before being permanently deleted")]
    VersionNotSoftDeleted,
    #[error("Subject '{0}' does not have subject-level compatibility configured")]
    SubjectLevelNotConfigured(String),
    #[error("Schema being registered is incompatible with an earlier schema: {}", .0.join("; "))]
    Incompatible(Vec<String>),
    #[error("Invalid schema: {0}")]
    InvalidSchema(String),
    #[error(
        "The specified version '{0}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
    )]
    InvalidVersion(String),
    #[error(
        "Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive"
    )]
    InvalidCompatibilityLevel,
    #[error("Invalid mode. Valid values are READWRITE and READONLY")]
    InvalidMode,
    #[error("The registry is in read-only mode")]
    ReadOnly,
    #[error("Unauthorized")]
    Unauthorized,
    #[error("Unrecognized field or malformed request body: {0}")]
    BadRequest(String),
    #[error("Error in the backend data store")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl RegistryError {
    /// HTTP status and Confluent `error_code`.
    pub fn codes(&self) -> (StatusCode, u32) {
        use RegistryError::*;
        match self {
            SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            VersionNotFound => (StatusCode::NOT_FOUND, 40402),
            SchemaNotFound => (StatusCode::NOT_FOUND, 40403),
            SubjectSoftDeleted(_) => (StatusCode::NOT_FOUND, 40404),
            SubjectNotSoftDeleted(_) => (StatusCode::NOT_FOUND, 40405),
            VersionNotSoftDeleted => (StatusCode::NOT_FOUND, 40407),
            SubjectLevelNotConfigured(_) => (StatusCode::NOT_FOUND, 40408),
            Incompatible(_) => (StatusCode::CONFLICT, 409),
            InvalidSchema(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            InvalidVersion(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42202),
            InvalidCompatibilityLevel => (StatusCode::UNPROCESSABLE_ENTITY, 42203),
            InvalidMode => (StatusCode::UNPROCESSABLE_ENTITY, 42204),
            ReadOnly => (StatusCode::UNPROCESSABLE_ENTITY, 42205),
            Unauthorized => (StatusCode::UNAUTHORIZED, 40101),
            BadRequest(_) => (StatusCode::BAD_REQUEST, 400),
            Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, 50001),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code) = self.codes();
        if let RegistryError::Storage(source) = &self {
            // The client sees the generic message; the cause goes to the log only.
            tracing::error!(error = %source, "registry storage failed");
        }
        let body = serde_json::json!({ "error_code": code, "message": self.to_string() });
        crate::api::schema_registry_json(status, &body)
    }
}

/// The listener's own refusals (a body too large or too slow) in Confluent's error shape.
pub(crate) fn limit_rejection(
    status: StatusCode,
    _code: &'static str,
    message: String,
) -> Response {
    let body = serde_json::json!({ "error_code": status.as_u16(), "message": message });
    crate::api::schema_registry_json(status, &body)
}
