//! The registry as Confluent clients see it: driven through schema_registry_converter, a real
//! client, and raw HTTP for the error codes and content type.

use std::io::Write;
use std::sync::{Arc, Mutex};

use bimride_registry::{Access, Basic, Options, Registry, Scope, Server, Users};
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

const USERS: &str = "# who may change schemas\nfred: s3cret,admin\nbarney: rubble,viewer\n";

async fn guarded(access: Access) -> (Server, CancellationToken) {
    let stop = CancellationToken::new();
    let options = Options {
        access,
        ..Options::default()
    };
    let server = bimride_registry::serve_with(
        Registry::in_memory(),
        "127.0.0.1:0".parse().expect("addr"),
        options,
        stop.clone(),
    )
    .await
    .expect("serves");
    (server, stop)
}

fn basic(scope: Scope, roles: &[&str]) -> Access {
    Access {
        basic: Some(Basic {
            users: Users::parse(USERS).expect("users parse"),
            realm: "SchemaRegistry".into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            scope,
        }),
        read_only: false,
    }
}

/// Status, `WWW-Authenticate` and JSON body of one request, as `user` if given.
async fn send(
    method: reqwest::Method,
    url: String,
    body: Option<&str>,
    user: Option<(&str, &str)>,
) -> (u16, String, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(b) = body {
        request = request
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .body(b.to_owned());
    }
    if let Some((name, password)) = user {
        request = request.basic_auth(name, Some(password));
    }
    let response = request.send().await.expect("registry answers");
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        challenge,
        response.json().await.unwrap_or(Value::Null),
    )
}

fn schema_body(schema: &str) -> String {
    json!({ "schema": schema }).to_string()
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

#[tokio::test]
async fn writes_need_a_credential_reads_stay_open_and_every_write_is_logged() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let (server, _stop) = guarded(basic(Scope::Writes, &["admin"])).await;
    let versions = format!("{}/subjects/trips-value/versions", server.url());
    let v1 = schema_body(V1);

    let (status, challenge, body) =
        send(reqwest::Method::POST, versions.clone(), Some(&v1), None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error_code"], 40101, "{body}");
    assert_eq!(challenge, r#"Basic realm="SchemaRegistry""#);
    let wrong = Some(("fred", "guess"));
    let (status, _, _) = send(reqwest::Method::POST, versions.clone(), Some(&v1), wrong).await;
    assert_eq!(status, 401, "a wrong password is refused");
    let viewer = Some(("barney", "rubble"));
    let (status, _, _) = send(reqwest::Method::POST, versions.clone(), Some(&v1), viewer).await;
    assert_eq!(status, 401, "a user without an admitted role is refused");

    // A real Confluent-style client with the credential registers.
    let sr = SrSettings::new_builder(server.url())
        .set_basic_authorization("fred", Some("s3cret"))
        .build()
        .expect("settings");
    let registered = post_schema(&sr, "trips-value".into(), avro(V1))
        .await
        .expect("registers with a credential");

    // Reads, lookups and compatibility checks need none.
    let (status, _, body) = send(reqwest::Method::GET, versions.clone(), None, None).await;
    assert_eq!((status, body), (200, json!([1])));
    let lookup = format!("{}/subjects/trips-value", server.url());
    let (status, _, body) = send(reqwest::Method::POST, lookup, Some(&v1), None).await;
    assert_eq!((status, body["id"].clone()), (200, json!(registered.id)));
    let check = format!(
        "{}/compatibility/subjects/trips-value/versions/latest",
        server.url()
    );
    let (status, _, _) = send(reqwest::Method::POST, check, Some(&schema_body(V2)), None).await;
    assert_eq!(status, 200);
    let (status, _, _) = send(
        reqwest::Method::DELETE,
        format!("{}/subjects/trips-value", server.url()),
        None,
        None,
    )
    .await;
    assert_eq!(status, 401, "a delete is a write");

    let log = log.text();
    assert!(
        log.lines().any(|l| l.contains("registry write")
            && l.contains("user=fred")
            && l.contains("method=POST")
            && l.contains("path=/subjects/trips-value/versions")
            && l.contains("status=200")
            && l.contains("peer=127.0.0.1:")),
        "the write is logged with who, what and how it ended:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("registry write refused")
            && l.contains("method=DELETE")
            && l.contains("status=401")),
        "a refused write is logged too:\n{log}"
    );
    assert!(!log.contains("s3cret") && !log.contains("rubble"), "{log}");
}

#[tokio::test]
async fn with_authentication_for_all_even_reads_need_a_credential() {
    let (server, _stop) = guarded(basic(Scope::All, &["*"])).await;
    let subjects = format!("{}/subjects", server.url());
    let (status, _, _) = send(reqwest::Method::GET, subjects.clone(), None, None).await;
    assert_eq!(status, 401);
    let anyone_listed = Some(("barney", "rubble"));
    let (status, _, body) = send(reqwest::Method::GET, subjects, None, anyone_listed).await;
    assert_eq!((status, body), (200, json!([])));
}

#[tokio::test]
async fn a_read_only_instance_refuses_every_write_even_a_change_of_mode() {
    let access = Access {
        basic: None,
        read_only: true,
    };
    let (server, _stop) = guarded(access).await;
    let url = server.url();
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            "/subjects/t-value/versions",
            schema_body(V1),
        ),
        (
            reqwest::Method::PUT,
            "/config",
            json!({"compatibility": "NONE"}).to_string(),
        ),
        (
            reqwest::Method::PUT,
            "/mode",
            json!({"mode": "READWRITE"}).to_string(),
        ),
    ] {
        let (status, _, answer) = send(method, format!("{url}{path}"), Some(&body), None).await;
        assert_eq!(
            (status, answer["error_code"].clone()),
            (422, json!(42205)),
            "{path}: {answer}"
        );
    }
    let (status, _, body) = send(reqwest::Method::GET, format!("{url}/config"), None, None).await;
    assert_eq!(
        (status, body["compatibilityLevel"].clone()),
        (200, json!("BACKWARD"))
    );
}

#[tokio::test]
async fn the_stored_mode_stops_writes_until_it_is_set_back() {
    let (server, _stop) = guarded(Access::default()).await;
    let url = server.url();
    let mode = |m: &str| json!({ "mode": m }).to_string();
    let (status, _, body) = send(reqwest::Method::GET, format!("{url}/mode"), None, None).await;
    assert_eq!((status, body), (200, json!({"mode": "READWRITE"})));
    let (status, _, body) = send(
        reqwest::Method::PUT,
        format!("{url}/mode"),
        Some(&mode("readonly")),
        None,
    )
    .await;
    assert_eq!((status, body), (200, json!({"mode": "READONLY"})));
    let versions = format!("{url}/subjects/t-value/versions");
    let (status, _, body) = send(
        reqwest::Method::POST,
        versions.clone(),
        Some(&schema_body(V1)),
        None,
    )
    .await;
    assert_eq!((status, body["error_code"].clone()), (422, json!(42205)));
    let config = json!({"compatibility": "NONE"}).to_string();
    let (status, _, _) = send(
        reqwest::Method::PUT,
        format!("{url}/config"),
        Some(&config),
        None,
    )
    .await;
    assert_eq!(status, 422);
    let (status, _, body) = send(
        reqwest::Method::PUT,
        format!("{url}/mode"),
        Some(&mode("IMPORT")),
        None,
    )
    .await;
    assert_eq!((status, body["error_code"].clone()), (422, json!(42204)));
    let (status, _, _) = send(
        reqwest::Method::PUT,
        format!("{url}/mode"),
        Some(&mode("READWRITE")),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = send(
        reqwest::Method::POST,
        versions,
        Some(&schema_body(V1)),
        None,
    )
    .await;
    assert_eq!(status, 200, "writes resume");
}

#[tokio::test]
async fn an_oversized_schema_gets_a_confluent_error_and_an_incompatible_one_no_debug_dump() {
    let (server, _sr, _stop) = server().await;
    let url = server.url();
    let huge = schema_body(&format!(
        r#"{{"type":"string","doc":"{}"}}"#,
        "x".repeat(600 * 1024)
    ));
    let (status, content_type, body) = call(
        reqwest::Method::POST,
        format!("{url}/subjects/big-value/versions"),
        Some(serde_json::from_str(&huge).expect("json")),
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(content_type, "application/vnd.schemaregistry.v1+json");
    assert_eq!(body["error_code"], 413, "{body}");

    let nested = r#"{"type":"record","name":"Trip","namespace":"t","fields":[{"name":"id","type":{"type":"record","name":"Id","fields":[{"name":"v","type":"string"}]}}]}"#;
    let versions = format!("{url}/subjects/nested-value/versions");
    let (status, _, _) = send(
        reqwest::Method::POST,
        versions.clone(),
        Some(&schema_body(nested)),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, body) = send(
        reqwest::Method::POST,
        versions,
        Some(&schema_body(V1)),
        None,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("field 'id' changed type: a Record cannot be read as a String"),
        "{message}"
    );
    assert!(!message.contains("RecordSchema"), "{message}");
}

/// A record as wide as a body allows: comparing two of them takes the library seconds.
fn wide(fields: usize, extra: &str) -> String {
    let list: Vec<String> = (0..fields)
        .map(|i| format!(r#"{{"name":"f{i}","type":"int"}}"#))
        .collect();
    format!(
        r#"{{"type":"record","name":"Wide","fields":[{}{extra}]}}"#,
        list.join(",")
    )
}

#[tokio::test]
async fn an_expensive_compatibility_check_never_holds_up_other_requests() {
    // One runtime thread: a check run on it would hold every other request until it ended.
    let (server, _sr, _stop) = server().await;
    let url = server.url();
    let versions = format!("{url}/subjects/wide-value/versions");
    let (status, _, _) = send(
        reqwest::Method::POST,
        versions,
        Some(&schema_body(&wide(12_000, ""))),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let candidate = schema_body(&wide(12_000, r#",{"name":"g","type":"int","default":0}"#));
    let check_url = format!("{url}/compatibility/subjects/wide-value/versions/latest");
    let check = tokio::spawn(async move {
        send(reqwest::Method::POST, check_url, Some(&candidate), None).await
    });
    // Let the check arrive and start before asking for something cheap.
    while server.registry.requests_served() < 2 {
        tokio::task::yield_now().await;
    }
    let (status, _, _) = send(reqwest::Method::GET, format!("{url}/subjects"), None, None).await;
    assert_eq!(status, 200);
    assert!(
        !check.is_finished(),
        "the cheap request was answered only after the check"
    );
    let (status, _, body) = check.await.expect("check task");
    assert_eq!((status, body["is_compatible"].clone()), (200, json!(true)));
}

#[tokio::test]
async fn confluents_python_client_gets_the_answers_confluents_registry_gives() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/deps.sh installs Confluent's Python client",
        python.display()
    );
    let (open, _sr, _stop) = server().await;
    let (guarded, _stop_guarded) = guarded(basic(Scope::All, &["admin"])).await;
    let args = [
        root.join("registry_conformance.py").display().to_string(),
        open.url(),
        guarded.url(),
        "fred:s3cret".to_owned(),
    ];
    // Off the runtime: the registries answer the script on this test's one thread.
    let output =
        tokio::task::spawn_blocking(move || std::process::Command::new(python).args(args).output())
            .await
            .expect("join")
            .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Confluent's client disagreed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all calls answered"), "{stdout}");
}
