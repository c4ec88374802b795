//! Operator endpoints, behind the admin credential: rider tokens, and the dead letters of
//! every topic, listed, inspected and replayed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::response::IntoResponse;
use bimride_kafka::dead_letter::{self, DlqError, Replayed, Stored};
use serde::{Deserialize, Serialize};

use crate::ApiState;
use crate::access::Admin;
use crate::error::{ApiError, BodyRefusals, CredentialRefusals};

type Shared = State<Arc<ApiState>>;

/// A whole number, written as JSON Schema's `integer` allows: `139` or `139.0`. Serde's own
/// integers refuse the second, which the document promises to take.
fn whole<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    // Beyond 2^53 a float no longer holds every whole number exactly.
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0 => Ok(Some(f as i64)),
        _ => Err(D::Error::custom(format!(
            "{n} is not a whole number in range"
        ))),
    }
}

fn whole_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error;
    whole(d)?
        .map(|n| u64::try_from(n).map_err(|_| D::Error::custom(format!("{n} is negative"))))
        .transpose()
}

/// The longest rider token the API signs.
const MAX_TOKEN_TTL_SECS: u64 = bimride_auth::MAX_TOKEN_TTL.as_secs();

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64)]
    pub rider_id: String,
    /// Seconds; one day when absent, at most 30 days.
    #[schema(minimum = 1, maximum = 2592000)]
    #[serde(default, deserialize_with = "whole_u64")]
    pub ttl_secs: Option<u64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenBody {
    pub token: String,
    pub expires_in_secs: u64,
}

#[utoipa::path(
    post, path = "/v1/admin/tokens", tag = "admin",
    request_body = TokenRequest,
    responses(
        (status = 200, description = "A rider token", body = TokenBody),
        BodyRefusals,
        CredentialRefusals,
    ),
    security(("admin" = []))
)]
pub async fn token(
    State(state): Shared,
    _: Admin,
    body: Result<Json<TokenRequest>, JsonRejection>,
) -> Result<Json<TokenBody>, ApiError> {
    let Json(request) = body?;
    crate::rides::check_rider_id(&request.rider_id)?;
    let ttl = request.ttl_secs.unwrap_or(24 * 3600);
    if !(1..=MAX_TOKEN_TTL_SECS).contains(&ttl) {
        return Err(ApiError::Unprocessable(format!(
            "ttl_secs must be 1 to {MAX_TOKEN_TTL_SECS}"
        )));
    }
    let token = state
        .parts
        .access
        .authority
        .rider_token(&request.rider_id, Duration::from_secs(ttl))?;
    Ok(Json(TokenBody {
        token: token.expose().to_owned(),
        expires_in_secs: ttl,
    }))
}

/// One dead-letter topic at a glance.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TopicSummary {
    pub topic: String,
    pub records: usize,
    #[schema(value_type = Object)]
    pub by_reason: BTreeMap<String, usize>,
}

async fn read(state: &ApiState, topic: String) -> Result<Vec<Stored>, ApiError> {
    let kafka = state.parts.kafka.clone();
    tokio::task::spawn_blocking(move || dead_letter::read(&kafka, &topic))
        .await
        .map_err(|e| ApiError::Unavailable(Box::new(e)))?
        .map_err(dlq_error)
}

fn dlq_error(e: DlqError) -> ApiError {
    match e {
        DlqError::NotDeadLetterTopic(topic) => {
            ApiError::NotFound(format!("dead-letter topic {topic}"))
        }
        other => ApiError::Unavailable(Box::new(other)),
    }
}

#[utoipa::path(
    get, path = "/v1/admin/dead-letters", tag = "admin",
    responses(
        (status = 200, description = "Dead letters per topic and reason", body = [TopicSummary]),
        (status = 400, description = "A malformed path", body = crate::error::ErrorBody),
        CredentialRefusals,
    ),
    security(("admin" = []))
)]
pub async fn summary(State(state): Shared, _: Admin) -> Result<impl IntoResponse, ApiError> {
    let mut out = Vec::new();
    for topic in state.parts.kafka.topics().dead_letters() {
        let letters = read(&state, topic.to_owned()).await?;
        let mut by_reason = BTreeMap::new();
        for l in &letters {
            let reason = l
                .letter
                .as_ref()
                .map_or("unlabelled", |l| l.reason.as_str());
            *by_reason.entry(reason.to_owned()).or_default() += 1;
        }
        out.push(TopicSummary {
            topic: topic.to_owned(),
            records: letters.len(),
            by_reason,
        });
    }
    Ok(Json(out))
}

#[utoipa::path(
    get, path = "/v1/admin/dead-letters/{topic}", tag = "admin",
    params(("topic" = String, Path, description = "A dead-letter topic, such as bimride.ride-events.dlq")),
    responses(
        (status = 200, description = "Every dead letter of the topic, with its headers", body = [Object]),
        (status = 404, description = "Not a dead-letter topic", body = crate::error::ErrorBody),
        (status = 400, description = "A malformed path", body = crate::error::ErrorBody),
        CredentialRefusals,
    ),
    security(("admin" = []))
)]
pub async fn list(
    State(state): Shared,
    _: Admin,
    topic: Result<Path<String>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path(topic) = topic?;
    Ok(Json(read(&state, topic).await?))
}

/// One dead letter, with its original bytes.
#[derive(Debug, Serialize)]
pub struct Inspected {
    #[serde(flatten)]
    pub stored: Stored,
    pub payload_hex: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/admin/dead-letters/{topic}/{partition}/{offset}", tag = "admin",
    params(
        ("topic" = String, Path, description = "A dead-letter topic"),
        ("partition" = i32, Path, description = "Partition of the dead letter"),
        ("offset" = i64, Path, description = "Offset of the dead letter"),
    ),
    responses(
        (status = 200, description = "The dead letter with its original bytes in hex", body = Object),
        (status = 404, description = "No such dead letter", body = crate::error::ErrorBody),
        (status = 400, description = "A malformed path", body = crate::error::ErrorBody),
        CredentialRefusals,
    ),
    security(("admin" = []))
)]
pub async fn inspect(
    State(state): Shared,
    _: Admin,
    at: Result<Path<(String, i32, i64)>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Path((topic, partition, offset)) = at?;
    let stored = read(&state, topic.clone())
        .await?
        .into_iter()
        .find(|s| s.partition == partition && s.offset == offset)
        .ok_or_else(|| ApiError::NotFound(format!("dead letter {topic}/{partition}/{offset}")))?;
    let payload_hex = stored
        .payload
        .as_ref()
        .map(|p| p.iter().map(|b| format!("{b:02x}")).collect());
    Ok(Json(Inspected {
        stored,
        payload_hex,
    }))
}

/// Which letters of a topic to replay; all of them when empty.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    pub reason: Option<String>,
    pub source_topic: Option<String>,
    /// Only letters at or after this dead-letter offset (in every partition).
    #[serde(default, deserialize_with = "whole")]
    pub from_offset: Option<i64>,
}

#[utoipa::path(
    post, path = "/v1/admin/dead-letters/{topic}/replay", tag = "admin",
    params(("topic" = String, Path, description = "A dead-letter topic")),
    request_body = ReplayRequest,
    responses(
        (status = 200, description = "Replayed", body = Object),
        (status = 404, description = "Not a dead-letter topic", body = crate::error::ErrorBody),
        BodyRefusals,
        CredentialRefusals,
    ),
    security(("admin" = []))
)]
pub async fn replay(
    State(state): Shared,
    _: Admin,
    topic: Result<Path<String>, PathRejection>,
    body: Result<Json<ReplayRequest>, JsonRejection>,
) -> Result<Json<Replayed>, ApiError> {
    let Path(topic) = topic?;
    let Json(filter) = body?;
    let letters = read(&state, topic.clone()).await?;
    let done = dead_letter::replay(state.parts.producer.inner(), &letters, |s, l| {
        filter.reason.as_ref().is_none_or(|r| *r == l.reason)
            && filter
                .source_topic
                .as_ref()
                .is_none_or(|t| *t == l.source_topic)
            && filter.from_offset.is_none_or(|o| s.offset >= o)
    })
    .await
    .map_err(dlq_error)?;
    tracing::info!(
        topic,
        replayed = done.replayed,
        "dead letters replayed on request"
    );
    Ok(Json(done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_may_be_written_with_a_point_zero() {
        let parse = |body: &str| serde_json::from_str::<TokenRequest>(body).map(|r| r.ttl_secs);
        assert_eq!(
            parse(r#"{"rider_id":"r","ttl_secs":139}"#).expect("int"),
            Some(139)
        );
        assert_eq!(
            parse(r#"{"rider_id":"r","ttl_secs":139.0}"#).expect("float"),
            Some(139)
        );
        assert_eq!(parse(r#"{"rider_id":"r"}"#).expect("absent"), None);
        assert!(parse(r#"{"rider_id":"r","ttl_secs":1.5}"#).is_err());
        assert!(parse(r#"{"rider_id":"r","ttl_secs":-3}"#).is_err());
        let replay = serde_json::from_str::<ReplayRequest>(r#"{"from_offset":-2.0}"#);
        assert_eq!(replay.expect("replay").from_offset, Some(-2));
    }
}
