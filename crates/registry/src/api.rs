//! The Confluent Schema Registry REST API.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Router, body::Bytes};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Registry;
use crate::access::{self, Access};
use crate::compat::Level;
use crate::error::RegistryError;
use crate::store::{
    ConfigValue, Entry, LogKey, LogValue, ModeValue, Registration, RegistryMode, VersionRef,
};

pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

type Shared = State<Arc<Registry>>;
type ApiResult = Result<Response, RegistryError>;

pub fn router(registry: Arc<Registry>, access: Access) -> Router {
    Router::new()
        .route("/", get(|| async { ok(json!({})) }))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_by_id))
        .route("/schemas/types", get(|| async { ok(json!(["AVRO"])) }))
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_compatibility),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_compatibility_all),
        )
        .route("/config", get(get_global_config).put(put_global_config))
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route("/mode", get(get_mode).put(put_mode))
        .layer(middleware::from_fn_with_state(
            (Arc::clone(&registry), Arc::new(access)),
            access::guard,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&registry),
            count_requests,
        ))
        .with_state(registry)
}

async fn count_requests(State(registry): Shared, request: Request, next: Next) -> Response {
    registry.count_request();
    next.run(request).await
}

pub(crate) fn schema_registry_json(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    response
}

fn ok(body: Value) -> Response {
    schema_registry_json(StatusCode::OK, &body)
}

#[derive(Debug, Deserialize, Default)]
struct Flags {
    #[serde(default, deserialize_with = "flag")]
    deleted: bool,
    #[serde(default, deserialize_with = "flag")]
    permanent: bool,
    #[serde(default, deserialize_with = "flag")]
    verbose: bool,
    #[serde(default, rename = "defaultToGlobal", deserialize_with = "flag")]
    default_to_global: bool,
}

/// A query flag as Confluent's server reads one (Java's `Boolean.parseBoolean`): `true` in
/// any case is true, anything else false. Its Python client sends `verbose=False`.
fn flag<'de, D: serde::Deserializer<'de>>(value: D) -> Result<bool, D::Error> {
    Ok(String::deserialize(value)?.eq_ignore_ascii_case("true"))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaRequest {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

/// Parses a schema request body whatever its content type; clients differ in what they send.
fn schema_request(body: &Bytes) -> Result<SchemaRequest, RegistryError> {
    let request: SchemaRequest =
        serde_json::from_slice(body).map_err(|e| RegistryError::BadRequest(e.to_string()))?;
    match request.schema_type.as_deref() {
        None | Some("AVRO") => {}
        Some(other) => {
            return Err(RegistryError::InvalidSchema(format!(
                "schema type {other} is not supported; only AVRO is"
            )));
        }
    }
    if !request.references.is_empty() {
        return Err(RegistryError::InvalidSchema(
            "schema references are not supported".into(),
        ));
    }
    Ok(request)
}

async fn list_subjects(State(r): Shared, Query(f): Query<Flags>) -> ApiResult {
    Ok(ok(json!(r.read().subjects(f.deleted))))
}

async fn list_versions(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(f): Query<Flags>,
) -> ApiResult {
    Ok(ok(json!(r.read().versions(&subject, f.deleted)?)))
}

fn registered_json(reg: &crate::store::Registered) -> Value {
    json!({ "subject": reg.subject, "version": reg.version, "id": reg.id, "schema": reg.schema })
}

async fn get_version(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
) -> ApiResult {
    let v = VersionRef::parse(&version)?;
    Ok(ok(registered_json(&r.read().version(&subject, v)?)))
}

async fn get_version_schema(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
) -> ApiResult {
    let v = VersionRef::parse(&version)?;
    let reg = r.read().version(&subject, v)?;
    raw(&reg.schema)
}

fn raw(schema: &str) -> ApiResult {
    let value: Value =
        serde_json::from_str(schema).map_err(|e| RegistryError::Storage(Box::new(e)))?;
    Ok(ok(value))
}

fn parse_id(id: &str) -> Result<u32, RegistryError> {
    id.parse().map_err(|_| RegistryError::SchemaNotFound)
}

async fn schema_by_id(State(r): Shared, Path(id): Path<String>) -> ApiResult {
    let store = r.read();
    Ok(ok(json!({ "schema": store.schema_by_id(parse_id(&id)?)? })))
}

async fn raw_schema_by_id(State(r): Shared, Path(id): Path<String>) -> ApiResult {
    let schema = r.read().schema_by_id(parse_id(&id)?)?.to_owned();
    raw(&schema)
}

async fn versions_by_id(State(r): Shared, Path(id): Path<String>) -> ApiResult {
    let pairs = r.read().subject_versions_of(parse_id(&id)?)?;
    let body: Vec<Value> = pairs
        .into_iter()
        .map(|(subject, version)| json!({ "subject": subject, "version": version }))
        .collect();
    Ok(ok(json!(body)))
}

async fn register(State(r): Shared, Path(subject): Path<String>, body: Bytes) -> ApiResult {
    let request = schema_request(&body)?;
    let planned = subject.clone();
    let (id, version) = r
        .write(
            move |store| match store.plan_register(&planned, &request.schema)? {
                Registration::Existing(id, version) => Ok(((id, version), Vec::new())),
                Registration::New(entry) => {
                    let registered = match &entry.value {
                        Some(LogValue::Schema(v)) => (v.id, v.version),
                        _ => (0, 0),
                    };
                    Ok((registered, vec![entry]))
                }
            },
        )
        .await?;
    tracing::info!(subject = %subject, id, version, "schema registered");
    // Newer Confluent registries answer with the version too; older clients read the id.
    Ok(ok(json!({ "id": id, "version": version })))
}

async fn lookup(State(r): Shared, Path(subject): Path<String>, body: Bytes) -> ApiResult {
    let request = schema_request(&body)?;
    let found = r
        .check(move |store| store.lookup(&subject, &request.schema))
        .await?;
    Ok(ok(registered_json(&found)))
}

async fn delete_subject(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(f): Query<Flags>,
) -> ApiResult {
    let versions = r
        .write(move |store| store.plan_delete_subject(&subject, f.permanent))
        .await?;
    Ok(ok(json!(versions)))
}

async fn delete_version(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(f): Query<Flags>,
) -> ApiResult {
    let v = VersionRef::parse(&version)?;
    let deleted = r
        .write(move |store| {
            let (version, entry) = store.plan_delete_version(&subject, v, f.permanent)?;
            Ok((version, vec![entry]))
        })
        .await?;
    Ok(ok(json!(deleted)))
}

fn compatibility_body(problems: Vec<String>, verbose: bool) -> Response {
    let mut body = json!({ "is_compatible": problems.is_empty() });
    if verbose {
        body["messages"] = json!(problems);
    }
    ok(body)
}

async fn check_compatibility(
    State(r): Shared,
    Path((subject, version)): Path<(String, String)>,
    Query(f): Query<Flags>,
    body: Bytes,
) -> ApiResult {
    let request = schema_request(&body)?;
    let v = VersionRef::parse(&version)?;
    let problems = r
        .check(move |store| store.compatibility(&subject, &request.schema, Some(v)))
        .await?;
    Ok(compatibility_body(problems, f.verbose))
}

async fn check_compatibility_all(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(f): Query<Flags>,
    body: Bytes,
) -> ApiResult {
    let request = schema_request(&body)?;
    let problems = r
        .check(move |store| store.compatibility(&subject, &request.schema, None))
        .await?;
    Ok(compatibility_body(problems, f.verbose))
}

#[derive(Debug, Deserialize)]
struct ConfigRequest {
    compatibility: String,
}

fn config_request(body: &Bytes) -> Result<Level, RegistryError> {
    let request: ConfigRequest =
        serde_json::from_slice(body).map_err(|e| RegistryError::BadRequest(e.to_string()))?;
    Level::parse(&request.compatibility).ok_or(RegistryError::InvalidCompatibilityLevel)
}

async fn set_level(
    r: &Arc<Registry>,
    subject: Option<String>,
    level: Option<Level>,
) -> Result<(), RegistryError> {
    r.write(move |_| {
        let entry = Entry {
            key: LogKey::Config { subject },
            value: level.map(|compatibility_level| {
                LogValue::Config(ConfigValue {
                    compatibility_level,
                })
            }),
        };
        Ok(((), vec![entry]))
    })
    .await
}

async fn get_global_config(State(r): Shared) -> ApiResult {
    Ok(ok(json!({ "compatibilityLevel": r.read().level(None) })))
}

async fn put_global_config(State(r): Shared, body: Bytes) -> ApiResult {
    let level = config_request(&body)?;
    set_level(&r, None, Some(level)).await?;
    Ok(ok(json!({ "compatibility": level })))
}

async fn get_subject_config(
    State(r): Shared,
    Path(subject): Path<String>,
    Query(f): Query<Flags>,
) -> ApiResult {
    let store = r.read();
    let level = match store.subject_level(&subject) {
        Some(level) => level,
        None if f.default_to_global => store.level(None),
        None => return Err(RegistryError::SubjectLevelNotConfigured(subject)),
    };
    Ok(ok(json!({ "compatibilityLevel": level })))
}

async fn put_subject_config(
    State(r): Shared,
    Path(subject): Path<String>,
    body: Bytes,
) -> ApiResult {
    let level = config_request(&body)?;
    set_level(&r, Some(subject), Some(level)).await?;
    Ok(ok(json!({ "compatibility": level })))
}

async fn delete_subject_config(State(r): Shared, Path(subject): Path<String>) -> ApiResult {
    let previous = r
        .read()
        .subject_level(&subject)
        .ok_or_else(|| RegistryError::SubjectLevelNotConfigured(subject.clone()))?;
    set_level(&r, Some(subject), None).await?;
    Ok(ok(json!({ "compatibilityLevel": previous })))
}

#[derive(Debug, Deserialize)]
struct ModeRequest {
    mode: String,
}

async fn get_mode(State(r): Shared) -> ApiResult {
    Ok(ok(json!({ "mode": r.read().mode() })))
}

/// Sets the global mode. Allowed in read-only mode, or nothing could end it.
async fn put_mode(State(r): Shared, body: Bytes) -> ApiResult {
    let request: ModeRequest =
        serde_json::from_slice(&body).map_err(|e| RegistryError::BadRequest(e.to_string()))?;
    let mode = RegistryMode::parse(&request.mode).ok_or(RegistryError::InvalidMode)?;
    r.write(move |_| {
        let entry = Entry {
            key: LogKey::Mode { subject: None },
            value: Some(LogValue::Mode(ModeValue { mode })),
        };
        Ok(((), vec![entry]))
    })
    .await?;
    tracing::info!(?mode, "registry mode set");
    Ok(ok(json!({ "mode": mode })))
}
