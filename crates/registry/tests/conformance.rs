//! The registry as Confluent clients see it: driven through schema_registry_converter, a real
//! client, and raw HTTP for the error codes and content type.

use bimride_registry::{Registry, Server};
use schema_registry_converter::async_impl::schema_registry::{
    SrSettings, get_all_subjects, get_all_versions, get_schema_by_id, get_schema_by_subject,
    get_schema_by_subject_and_version, is_compatible_schema, post_schema,
};
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const V1: &str =
    r#"{"type":"record","name":"Trip","namespace":"t","fields":[{"name":"id","type":"string"}]}"#;
const V2: &str = r#"{"type":"record","name":"Trip","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"km","type":"double","default":0.0}]}"#;
const BREAKING: &str = r#"{"type":"record","name":"Trip","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"rider","type":"string"}]}"#;

async fn server() -> (Server, SrSettings, CancellationToken) {
    let stop = CancellationToken::new();
    let server = bimride_registry::serve(
        Registry::in_memory(),
        "127.0.0.1:0".parse().expect("addr"),
        stop.clone(),
    )
    .await
    .expect("serves");
    let settings = SrSettings::new(server.url());
    (server, settings, stop)
}

fn avro(schema: &str) -> SuppliedSchema {
    SuppliedSchema::new(None, SchemaType::Avro, schema.to_owned())
}

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, String, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(b) = body {
        request = request
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .body(b.to_string());
    }
    let response = request.send().await.expect("registry answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, content_type, body)
}

#[tokio::test]
async fn a_real_client_registers_looks_up_and_evolves() {
    let (server, sr, _stop) = server().await;
    let first = post_schema(&sr, "trips-value".into(), avro(V1))
        .await
        .expect("register v1");
    let again = post_schema(&sr, "trips-value".into(), avro(V1))
        .await
        .expect("register v1 again");
    assert_eq!(first.id, again.id, "re-registering returns the same id");

    let by_id = get_schema_by_id(first.id, &sr).await.expect("by id");
    assert_eq!(
        serde_json::from_str::<Value>(&by_id.schema).ok(),
        serde_json::from_str::<Value>(V1).ok()
    );

    assert!(
        is_compatible_schema(&sr, "trips-value".into(), avro(V2))
            .await
            .expect("check")
    );
    assert!(
        !is_compatible_schema(&sr, "trips-value".into(), avro(BREAKING))
            .await
            .expect("check")
    );
    let second = post_schema(&sr, "trips-value".into(), avro(V2))
        .await
        .expect("register v2");
    assert_ne!(second.id, first.id);

    let latest = get_schema_by_subject(
        &sr,
        &SubjectNameStrategy::TopicNameStrategy("trips".into(), false),
    )
    .await
    .expect("latest");
    assert_eq!((latest.id, latest.version), (second.id, Some(2)));
    let v1 = get_schema_by_subject_and_version(&sr, "trips-value", Some(1))
        .await
        .expect("v1");
    assert_eq!(v1.id, first.id);
    assert_eq!(
        get_all_versions(&sr, "trips-value".into())
            .await
            .expect("versions"),
        vec![1, 2]
    );
    assert_eq!(
        get_all_subjects(&sr).await.expect("subjects"),
        vec!["trips-value".to_owned()]
    );

    let refused = post_schema(&sr, "trips-value".into(), avro(BREAKING)).await;
    assert!(refused.is_err(), "an incompatible schema is refused");
    assert!(server.registry.requests_served() > 0);
}

#[tokio::test]
async fn errors_use_confluent_codes_and_content_type() {
    let (server, sr, _stop) = server().await;
    let base = server.url();
    post_schema(&sr, "s-value".into(), avro(V1))
        .await
        .expect("register");
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;

    let (status, ct, body) =
        call(get.clone(), format!("{base}/subjects/nope/versions"), None).await;
    assert_eq!((status, body["error_code"].as_u64()), (404, Some(40401)));
    assert_eq!(ct, "application/vnd.schemaregistry.v1+json");
    let (status, _, body) = call(
        get.clone(),
        format!("{base}/subjects/s-value/versions/9"),
        None,
    )
    .await;
    assert_eq!((status, body["error_code"].as_u64()), (404, Some(40402)));
    let (status, _, body) = call(get.clone(), format!("{base}/schemas/ids/999"), None).await;
    assert_eq!((status, body["error_code"].as_u64()), (404, Some(40403)));
    let (status, _, body) = call(
        get.clone(),
        format!("{base}/subjects/s-value/versions/zero"),
        None,
    )
    .await;
    assert_eq!((status, body["error_code"].as_u64()), (422, Some(42202)));
    let (status, _, body) = call(
        post.clone(),
        format!("{base}/subjects/s-value/versions"),
        Some(json!({"schema": "{not json"})),
    )
    .await;
    assert_eq!((status, body["error_code"].as_u64()), (422, Some(42201)));
    let (status, _, body) = call(
        post.clone(),
        format!("{base}/subjects/s-value/versions"),
        Some(json!({"schema": BREAKING})),
    )
    .await;
    assert_eq!((status, body["error_code"].as_u64()), (409, Some(409)));
    let (status, _, body) = call(
        reqwest::Method::PUT,
        format!("{base}/config"),
        Some(json!({"compatibility": "SIDEWAYS"})),
    )
    .await;
    assert_eq!((status, body["error_code"].as_u64()), (422, Some(42203)));
    let (status, _, body) = call(get.clone(), format!("{base}/config/s-value"), None).await;
    assert_eq!((status, body["error_code"].as_u64()), (404, Some(40408)));
    let (status, _, body) = call(
        post.clone(),
        format!("{base}/subjects/s-value"),
        Some(json!({"schema": V2})),
    )
    .await;
    assert_eq!((status, body["error_code"].as_u64()), (404, Some(40403)));
}

#[tokio::test]
async fn lookup_raw_schema_versions_by_id_and_compatibility_by_version() {
    let (server, sr, _stop) = server().await;
    let base = server.url();
    let id = post_schema(&sr, "a-value".into(), avro(V1))
        .await
        .expect("register")
        .id;
    post_schema(&sr, "b-value".into(), avro(V1))
        .await
        .expect("register under b");
    let (status, _, body) = call(
        reqwest::Method::POST,
        format!("{base}/subjects/a-value"),
        Some(json!({"schema": V1})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["id"].as_u64(), body["version"].as_u64()),
        (Some(u64::from(id)), Some(1))
    );
    let (_, _, raw) = call(
        reqwest::Method::GET,
        format!("{base}/subjects/a-value/versions/latest/schema"),
        None,
    )
    .await;
    assert_eq!(raw, serde_json::from_str::<Value>(V1).expect("json"));
    let (_, _, raw) = call(
        reqwest::Method::GET,
        format!("{base}/schemas/ids/{id}/schema"),
        None,
    )
    .await;
    assert_eq!(raw, serde_json::from_str::<Value>(V1).expect("json"));
    let (_, _, pairs) = call(
        reqwest::Method::GET,
        format!("{base}/schemas/ids/{id}/versions"),
        None,
    )
    .await;
    assert_eq!(
        pairs,
        json!([{"subject":"a-value","version":1},{"subject":"b-value","version":1}])
    );
    let (status, _, body) = call(
        reqwest::Method::POST,
        format!("{base}/compatibility/subjects/a-value/versions/1?verbose=true"),
        Some(json!({"schema": BREAKING})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["is_compatible"], false);
    assert!(!body["messages"].as_array().expect("messages").is_empty());
    // Flags are read as Confluent's server reads them: `True` is true, anything but `true` in
    // some case is false, and never a 400. Confluent's Python client sends `verbose=False`.
    for (flag, verbose) in [("True", true), ("False", false), ("no", false)] {
        let (status, _, body) = call(
            reqwest::Method::POST,
            format!("{base}/compatibility/subjects/a-value/versions/1?verbose={flag}"),
            Some(json!({"schema": BREAKING})),
        )
        .await;
        assert_eq!(status, 200, "verbose={flag}: {body}");
        assert_eq!(
            body.get("messages").is_some(),
            verbose,
            "verbose={flag}: {body}"
        );
    }
}

#[tokio::test]
async fn compatibility_levels_and_deletes() {
    let (server, sr, _stop) = server().await;
    let base = server.url();
    let put = reqwest::Method::PUT;
    let (_, _, body) = call(reqwest::Method::GET, format!("{base}/config"), None).await;
    assert_eq!(body["compatibilityLevel"], "BACKWARD");
    post_schema(&sr, "c-value".into(), avro(V1))
        .await
        .expect("register");
    // Under NONE the breaking schema goes in.
    let (status, _, body) = call(
        put.clone(),
        format!("{base}/config/c-value"),
        Some(json!({"compatibility": "NONE"})),
    )
    .await;
    assert_eq!(
        (status, body["compatibility"].as_str()),
        (200, Some("NONE"))
    );
    post_schema(&sr, "c-value".into(), avro(BREAKING))
        .await
        .expect("NONE accepts anything");
    // FORWARD_TRANSITIVE: v1 readers cannot read data from a schema that drops `id`.
    let (status, _, _) = call(
        put.clone(),
        format!("{base}/config/c-value"),
        Some(json!({"compatibility": "FULL_TRANSITIVE"})),
    )
    .await;
    assert_eq!(status, 200);
    let dropped = r#"{"type":"record","name":"Trip","namespace":"t","fields":[{"name":"rider","type":"string"}]}"#;
    assert!(
        post_schema(&sr, "c-value".into(), avro(dropped))
            .await
            .is_err()
    );
    let (_, _, body) = call(
        reqwest::Method::GET,
        format!("{base}/config/x-value?defaultToGlobal=true"),
        None,
    )
    .await;
    assert_eq!(body["compatibilityLevel"], "BACKWARD");

    // Delete one version, then the subject softly, then for good.
    let (status, _, body) = call(
        reqwest::Method::DELETE,
        format!("{base}/subjects/c-value/versions/2"),
        None,
    )
    .await;
    assert_eq!((status, body.as_u64()), (200, Some(2)));
    let (_, _, versions) = call(
        reqwest::Method::GET,
        format!("{base}/subjects/c-value/versions"),
        None,
    )
    .await;
    assert_eq!(versions, json!([1]));
    let (status, _, body) = call(
        reqwest::Method::DELETE,
        format!("{base}/subjects/c-value?permanent=true"),
        None,
    )
    .await;
    assert_eq!((status, body["error_code"].as_u64()), (404, Some(40405)));
    let (status, _, body) = call(
        reqwest::Method::DELETE,
        format!("{base}/subjects/c-value"),
        None,
    )
    .await;
    assert_eq!((status, body), (200, json!([1])));
    let (_, _, subjects) = call(
        reqwest::Method::GET,
        format!("{base}/subjects?deleted=true"),
        None,
    )
    .await;
    assert_eq!(subjects, json!(["c-value"]));
    let (status, _, _) = call(
        reqwest::Method::DELETE,
        format!("{base}/subjects/c-value?permanent=true"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, _, subjects) = call(
        reqwest::Method::GET,
        format!("{base}/subjects?deleted=true"),
        None,
    )
    .await;
    assert_eq!(subjects, json!([]));
}
