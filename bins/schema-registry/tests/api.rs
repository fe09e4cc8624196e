//! The registry's Confluent API end to end over HTTP: each test starts its own registry on a
//! free port (in-process) with its own storage, and stops it.

use std::{path::PathBuf, time::Duration};

use schema_registry::Storage;
use schemas::CompatibilityLevel;
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};

struct Running {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn start(storage: Storage) -> Running {
        Running::start_with(storage, None).await
    }

    async fn start_with(storage: Storage, auth: Option<(String, String)>) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(schema_registry::serve(
            listener,
            storage,
            CompatibilityLevel::Backward,
            auth,
            async move {
                let _ = stopped.await;
            },
        ));
        Running {
            url,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        (&mut self.task)
            .await
            .expect("join")
            .expect("served cleanly");
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// `(status, json)` of a request with an optional JSON body.
async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut req = client()
        .request(method, url)
        .header("Content-Type", "application/vnd.schemaregistry.v1+json");
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let res = req.send().await.expect("response");
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = res.text().await.expect("body");
    if status != 200 || text.starts_with('{') || text.starts_with('[') {
        assert_eq!(
            ct, "application/vnd.schemaregistry.v1+json",
            "content type of {text}"
        );
    }
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get(url: String) -> (u16, Value) {
    call(reqwest::Method::GET, url, None).await
}

async fn post(url: String, body: Value) -> (u16, Value) {
    call(reqwest::Method::POST, url, Some(body)).await
}

async fn put(url: String, body: Value) -> (u16, Value) {
    call(reqwest::Method::PUT, url, Some(body)).await
}

fn record(fields: &str) -> String {
    format!(r#"{{"type":"record","name":"Row","namespace":"t","fields":[{fields}]}}"#)
}

const V1: &str = r#"{"name":"spend","type":"long"}"#;

fn temp_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("state").join("registry.json");
    (dir, path)
}

#[tokio::test]
async fn register_fetch_evolve_and_configure() {
    let (_dir, path) = temp_file();
    let r = Running::start(Storage::File(path)).await;
    let u = &r.url;

    let (s, body) = post(
        format!("{u}/subjects/t.a-value/versions"),
        json!({"schema": record(V1)}),
    )
    .await;
    assert_eq!((s, body.clone()), (200, json!({"id": 1})));
    let (s, body) = get(format!("{u}/schemas/ids/1")).await;
    assert_eq!(s, 200);
    assert_eq!(body["schema"], json!(record(V1)));
    assert_eq!(get(format!("{u}/subjects")).await.1, json!(["t.a-value"]));
    assert_eq!(
        get(format!("{u}/subjects/t.a-value/versions")).await.1,
        json!([1])
    );
    let (_, latest) = get(format!("{u}/subjects/t.a-value/versions/latest")).await;
    assert_eq!(
        (latest["version"].clone(), latest["id"].clone()),
        (json!(1), json!(1))
    );

    // Identical schema (whitespace differs): same id, no new version.
    let same = format!(" {} ", record(V1).replace(',', ", "));
    assert_eq!(
        post(
            format!("{u}/subjects/t.a-value/versions"),
            json!({"schema": same})
        )
        .await
        .1,
        json!({"id": 1})
    );
    assert_eq!(
        get(format!("{u}/subjects/t.a-value/versions")).await.1,
        json!([1])
    );
    // The same schema under another subject reuses the global id.
    assert_eq!(
        post(
            format!("{u}/subjects/t.b-value/versions"),
            json!({"schema": record(V1)})
        )
        .await
        .1,
        json!({"id": 1})
    );

    // Lookup.
    let (s, found) = post(
        format!("{u}/subjects/t.a-value"),
        json!({"schema": record(V1)}),
    )
    .await;
    assert_eq!((s, found["version"].clone()), (200, json!(1)));
    let (s, missing) = post(
        format!("{u}/subjects/t.a-value"),
        json!({"schema": record(r#"{"name":"x","type":"int"}"#)}),
    )
    .await;
    assert_eq!((s, missing["error_code"].clone()), (404, json!(40403)));

    // BACKWARD refuses a new field without default, naming it.
    let breaking = record(&format!(r#"{V1},{{"name":"currency","type":"string"}}"#));
    let (s, err) = post(
        format!("{u}/subjects/t.a-value/versions"),
        json!({"schema": breaking}),
    )
    .await;
    assert_eq!((s, err["error_code"].clone()), (409, json!(409)));
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("currency"),
        "{err}"
    );
    assert_eq!(
        err["error"]["code"],
        json!("409"),
        "platform error contract too"
    );
    let (_, c) = post(
        format!("{u}/compatibility/subjects/t.a-value/versions/latest?verbose=true"),
        json!({"schema": breaking}),
    )
    .await;
    assert_eq!(c["is_compatible"], json!(false));
    assert!(
        c["messages"][0]
            .as_str()
            .unwrap_or_default()
            .contains("currency"),
        "{c}"
    );

    // A compatible change is accepted as version 2 with a new id.
    let compatible = record(&format!(
        r#"{V1},{{"name":"currency","type":["null","string"],"default":null}}"#
    ));
    let (_, c) = post(
        format!("{u}/compatibility/subjects/t.a-value/versions/latest"),
        json!({"schema": compatible}),
    )
    .await;
    assert_eq!(c, json!({"is_compatible": true}));
    assert_eq!(
        post(
            format!("{u}/subjects/t.a-value/versions"),
            json!({"schema": compatible})
        )
        .await
        .1,
        json!({"id": 2})
    );
    assert_eq!(
        get(format!("{u}/subjects/t.a-value/versions")).await.1,
        json!([1, 2])
    );

    // Config: global and per subject; FULL refuses removing a field without default.
    assert_eq!(
        get(format!("{u}/config")).await.1,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    let (s, e) = get(format!("{u}/config/t.a-value")).await;
    assert_eq!((s, e["error_code"].clone()), (404, json!(40408)));
    assert_eq!(
        get(format!("{u}/config/t.a-value?defaultToGlobal=true"))
            .await
            .1,
        json!({"compatibilityLevel": "BACKWARD"})
    );
    assert_eq!(
        put(
            format!("{u}/config/t.a-value"),
            json!({"compatibility": "FULL"})
        )
        .await
        .1,
        json!({"compatibility": "FULL"})
    );
    assert_eq!(
        get(format!("{u}/config/t.a-value")).await.1,
        json!({"compatibilityLevel": "FULL"})
    );
    let dropped = record(r#"{"name":"currency","type":["null","string"],"default":null}"#);
    let (s, err) = post(
        format!("{u}/subjects/t.a-value/versions"),
        json!({"schema": dropped}),
    )
    .await;
    assert_eq!(s, 409);
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("spend"),
        "{err}"
    );
    assert_eq!(
        put(format!("{u}/config"), json!({"compatibility": "NONE"}))
            .await
            .0,
        200
    );
    assert_eq!(
        get(format!("{u}/config")).await.1,
        json!({"compatibilityLevel": "NONE"})
    );

    // Soft delete hides, permanent delete needs a soft delete first.
    let (s, e) = call(
        reqwest::Method::DELETE,
        format!("{u}/subjects/t.b-value?permanent=true"),
        None,
    )
    .await;
    assert_eq!((s, e["error_code"].clone()), (404, json!(40405)));
    assert_eq!(
        call(
            reqwest::Method::DELETE,
            format!("{u}/subjects/t.b-value"),
            None
        )
        .await
        .1,
        json!([1])
    );
    assert_eq!(get(format!("{u}/subjects")).await.1, json!(["t.a-value"]));
    assert_eq!(
        get(format!("{u}/subjects?deleted=true")).await.1,
        json!(["t.a-value", "t.b-value"])
    );
    assert_eq!(
        call(
            reqwest::Method::DELETE,
            format!("{u}/subjects/t.b-value?permanent=true"),
            None
        )
        .await
        .1,
        json!([1])
    );
    assert_eq!(
        get(format!("{u}/subjects?deleted=true")).await.1,
        json!(["t.a-value"])
    );
    // Schema 1 is still registered by id.
    assert_eq!(get(format!("{u}/schemas/ids/1")).await.0, 200);
    r.stop().await;
}

#[tokio::test]
async fn bad_requests_get_confluent_errors() {
    let (_dir, path) = temp_file();
    let r = Running::start(Storage::File(path)).await;
    let u = &r.url;
    post(
        format!("{u}/subjects/s-value/versions"),
        json!({"schema": record(V1)}),
    )
    .await;

    let raw = |body: &'static str| {
        let url = format!("{u}/subjects/s-value/versions");
        async move {
            let res = client()
                .post(url)
                .body(body)
                .send()
                .await
                .expect("response");
            let status = res.status().as_u16();
            let v: Value =
                serde_json::from_str(&res.text().await.expect("text")).expect("JSON error body");
            (status, v["error_code"].clone())
        }
    };
    assert_eq!(raw("{not json").await, (400, json!(400)));
    assert_eq!(raw("{}").await, (422, json!(42201)));
    assert_eq!(
        raw(r#"{"schema": "{\"type\":\"recrod\"}"}"#).await,
        (422, json!(42201))
    );
    assert_eq!(
        raw(r#"{"schema": "not even json"}"#).await,
        (422, json!(42201))
    );
    assert_eq!(
        raw(r#"{"schema": "{}", "schemaType": "PROTOBUF"}"#).await,
        (422, json!(42201))
    );
    assert_eq!(
        raw(r#"{"schema": "\"string\"", "references": [{"name":"x","subject":"y","version":1}]}"#)
            .await,
        (422, json!(42201))
    );

    let code = |(s, v): (u16, Value)| (s, v["error_code"].clone());
    assert_eq!(
        code(get(format!("{u}/subjects/nope/versions")).await),
        (404, json!(40401))
    );
    assert_eq!(
        code(get(format!("{u}/subjects/s-value/versions/7")).await),
        (404, json!(40402))
    );
    assert_eq!(
        code(get(format!("{u}/subjects/s-value/versions/abc")).await),
        (422, json!(42202))
    );
    assert_eq!(
        code(get(format!("{u}/subjects/s-value/versions/0")).await),
        (422, json!(42202))
    );
    assert_eq!(
        code(get(format!("{u}/schemas/ids/999")).await),
        (404, json!(40403))
    );
    assert_eq!(
        code(get(format!("{u}/schemas/ids/x1")).await),
        (404, json!(40403))
    );
    assert_eq!(
        code(put(format!("{u}/config"), json!({"compatibility": "SIDEWAYS"})).await),
        (422, json!(42203))
    );
    assert_eq!(
        code(get(format!("{u}/no/such/endpoint")).await),
        (404, json!(404))
    );

    // A body over the limit is refused with a JSON error, and the server keeps serving.
    let huge = format!(r#"{{"schema": "{}"}}"#, "x".repeat(17 * 1024 * 1024));
    let res = client()
        .post(format!("{u}/subjects/s-value/versions"))
        .body(huge)
        .send()
        .await
        .expect("response");
    assert_eq!(res.status().as_u16(), 413);
    let v: Value = serde_json::from_str(&res.text().await.expect("text")).expect("JSON");
    assert_eq!(v["error_code"], json!(413));
    assert_eq!(get(format!("{u}/subjects")).await.0, 200, "still serving");
    r.stop().await;
}

async fn fill(u: &str) {
    for (subject, fields) in [
        ("a-value", V1.to_owned()),
        ("b-value", r#"{"name":"n","type":"int"}"#.to_owned()),
        (
            "a-value",
            format!(r#"{V1},{{"name":"c","type":["null","string"],"default":null}}"#),
        ),
    ] {
        assert_eq!(
            post(
                format!("{u}/subjects/{subject}/versions"),
                json!({"schema": record(&fields)})
            )
            .await
            .0,
            200
        );
    }
    assert_eq!(
        put(
            format!("{u}/config/b-value"),
            json!({"compatibility": "FULL"})
        )
        .await
        .0,
        200
    );
}

async fn snapshot(u: &str) -> Vec<Value> {
    vec![
        get(format!("{u}/subjects")).await.1,
        get(format!("{u}/subjects/a-value/versions")).await.1,
        get(format!("{u}/subjects/a-value/versions/2")).await.1,
        get(format!("{u}/schemas/ids/2")).await.1,
        get(format!("{u}/schemas/ids/3")).await.1,
        get(format!("{u}/config/b-value")).await.1,
    ]
}

async fn survives_restart(storage: Storage) {
    let first = Running::start(storage.clone()).await;
    fill(&first.url).await;
    let before = snapshot(&first.url).await;
    first.stop().await;

    let second = Running::start(storage).await;
    assert_eq!(snapshot(&second.url).await, before);
    // Ids continue after the highest one, never reused.
    let next = post(
        format!("{}/subjects/c-value/versions", second.url),
        json!({"schema": record(r#"{"name":"z","type":"float"}"#)}),
    )
    .await;
    assert_eq!(next.1, json!({"id": 4}));
    second.stop().await;
}

#[tokio::test]
async fn file_storage_survives_restart() {
    let (_dir, path) = temp_file();
    survives_restart(Storage::File(path)).await;
}

#[tokio::test]
async fn postgres_storage_survives_restart() {
    let table = format!("sr_test_{}", uuid::Uuid::new_v4().simple());
    let url = "host=127.0.0.1 user=postgres dbname=test".to_owned();
    survives_restart(Storage::Postgres {
        url: url.clone(),
        table: table.clone(),
    })
    .await;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432 is running");
    tokio::spawn(conn);
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .expect("drop");
}

#[tokio::test]
async fn every_adpipe_subject_registers_and_is_counted() {
    let (_dir, path) = temp_file();
    let r = Running::start(Storage::File(path)).await;
    let registry =
        envelope::RegistryClient::new(&r.url, None, Duration::from_secs(10)).expect("client");
    let mut ids = Vec::new();
    let all: Vec<_> = schemas::embedded().subjects().collect();
    // One subject per topic, plus one per later major version (rules.alerts.triggered v2).
    assert!(all.len() > topics::Topic::ALL.len());
    for subject in &all {
        let id = registry
            .register(&subject.subject, &subject.json)
            .await
            .expect("registered");
        assert_eq!(
            registry.schema_by_id(id).await.expect("fetch"),
            subject.json
        );
        ids.push(id);
    }
    let subjects = registry.subjects().await.expect("subjects");
    for topic in topics::Topic::ALL {
        assert!(subjects.contains(&format!("{topic}-value")), "{topic}");
    }
    for subject in &all {
        assert!(subjects.contains(&subject.subject), "{}", subject.subject);
    }
    let metrics = client()
        .get(format!("{}/metrics", r.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let line = metrics
        .lines()
        .find(|l| l.starts_with("schema_registry_schemas_total "))
        .unwrap_or_else(|| panic!("no schema_registry_schemas_total in:\n{metrics}"));
    assert_eq!(line, format!("schema_registry_schemas_total {}", ids.len()));
    r.stop().await;
}

#[tokio::test]
async fn schema_registry_converter_client_works_unchanged() {
    use schema_registry_converter::{
        async_impl::schema_registry::{
            SrSettings, get_schema_by_id, get_schema_by_subject, post_schema,
        },
        schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema},
    };
    let (_dir, path) = temp_file();
    let r = Running::start(Storage::File(path)).await;
    let settings = SrSettings::new(r.url.clone());
    let supplied = SuppliedSchema::new(Some("t.Row".into()), SchemaType::Avro, record(V1));
    let registered = post_schema(&settings, "conv-value".into(), supplied.clone())
        .await
        .expect("post");
    let by_id = get_schema_by_id(registered.id, &settings)
        .await
        .expect("by id");
    assert_eq!(by_id.schema, record(V1));
    let latest = get_schema_by_subject(
        &settings,
        &SubjectNameStrategy::TopicNameStrategy("conv".into(), false),
    )
    .await
    .expect("latest");
    assert_eq!(latest.id, registered.id);
    r.stop().await;
}

#[tokio::test]
async fn basic_auth_guards_everything_but_health() {
    let (_dir, path) = temp_file();
    let r = Running::start_with(
        Storage::File(path),
        Some(("adpipe".into(), "s3cret".into())),
    )
    .await;
    assert_eq!(get(format!("{}/subjects", r.url)).await.0, 401);
    assert_eq!(
        client()
            .get(format!("{}/healthz", r.url))
            .send()
            .await
            .expect("health")
            .status()
            .as_u16(),
        200
    );
    let res = client()
        .get(format!("{}/subjects", r.url))
        .basic_auth("adpipe", Some("s3cret"))
        .send()
        .await
        .expect("authed");
    assert_eq!(res.status().as_u16(), 200);
    let with_auth = envelope::RegistryClient::new(
        &r.url,
        Some(("adpipe".into(), "s3cret".into())),
        Duration::from_secs(5),
    )
    .expect("client");
    assert!(with_auth.subjects().await.expect("subjects").is_empty());
    let without =
        envelope::RegistryClient::new(&r.url, None, Duration::from_secs(5)).expect("client");
    assert!(without.subjects().await.is_err());
    r.stop().await;
}

#[tokio::test]
async fn python_confluent_client_works_unchanged() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".local/venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run bins/schema-registry/tests/setup-python-client.sh (make test does)",
        python.display()
    );
    let (_dir, path) = temp_file();
    let r = Running::start(Storage::File(path)).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python_client.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .arg(&r.url)
        .output()
        .await
        .expect("python runs");
    assert!(
        out.status.success(),
        "python client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("python client: all checks passed"));
    r.stop().await;
}
