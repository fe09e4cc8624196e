//! `pipelinectl` end to end: the real binary against a real Tansu broker and an in-process
//! schema registry, each on a free port.

mod common;

use common::{pipelinectl, text};

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use schemas::CompatibilityLevel;
use testkit::{Broker, client_config};

fn partitions(bootstrap: &str) -> std::collections::BTreeMap<String, usize> {
    let c: BaseConsumer = client_config(bootstrap).create().expect("client");
    let md = c
        .fetch_metadata(None, Duration::from_secs(5))
        .expect("metadata");
    md.topics()
        .iter()
        .map(|t| (t.name().to_owned(), t.partitions().len()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_apply_is_idempotent_and_diff_finds_drift() {
    let broker = Broker::start_memory().expect("broker");
    let b = broker.bootstrap();

    let out = pipelinectl(&["--bootstrap-servers", &b, "topics", "apply"]);
    assert!(out.status.success(), "{}", text(&out));
    let on_broker = partitions(&b);
    let config = topics::TopicConfig::embedded();
    for (name, want, ..) in config.broker_topics() {
        assert_eq!(on_broker.get(&name), Some(&(want as usize)), "{name}");
    }
    assert_eq!(on_broker.get("connector.data.raw"), Some(&12));
    assert_eq!(on_broker.get("audit.events.dlq"), Some(&6));
    assert!(
        !on_broker.contains_key("etl.execution.dlq"),
        "unconsumed topics get no DLQ"
    );

    let out = pipelinectl(&["--bootstrap-servers", &b, "topics", "diff"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = pipelinectl(&["--bootstrap-servers", &b, "--json", "topics", "apply"]);
    assert!(out.status.success(), "{}", text(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        rows.as_array()
            .expect("rows")
            .iter()
            .all(|r| r["action"] == "unchanged"),
        "{rows}"
    );

    // A configuration that wants more partitions and another retention than the broker has.
    let drifted = topics::EMBEDDED_YAML
        .replace("retention: 90d", "retention: 91d")
        .replace(
            "value_schema: audit/events.avsc",
            "value_schema: audit/events.avsc\n    # drift test",
        );
    let drifted = drifted.replacen(
        "  - name: audit.events\n    description: Audit trail of data and configuration changes.\n    partitions: 6",
        "  - name: audit.events\n    description: Audit trail of data and configuration changes.\n    partitions: 8",
        1,
    );
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("topics.yaml");
    std::fs::write(&file, drifted).expect("write");
    let f = file.to_string_lossy().to_string();
    let out = pipelinectl(&[
        "--bootstrap-servers",
        &b,
        "--topic-config",
        &f,
        "topics",
        "diff",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report = text(&out);
    assert!(report.contains("6, want 8"), "{report}");
    assert!(report.contains("90d, want 91d"), "{report}");

    // Tansu cannot add partitions: apply says so for that topic and fails, without a crash.
    let out = pipelinectl(&[
        "--bootstrap-servers",
        &b,
        "--topic-config",
        &f,
        "topics",
        "apply",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("audit.events"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_and_registry_are_clear_errors() {
    let port = testkit::free_port().expect("port");
    let addr = format!("127.0.0.1:{port}");
    let out = pipelinectl(&[
        "--bootstrap-servers",
        &addr,
        "--timeout-secs",
        "2",
        "topics",
        "diff",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains(&format!("cannot reach the Kafka broker at {addr}")),
        "{}",
        text(&out)
    );

    let url = format!("http://{addr}");
    let out = pipelinectl(&[
        "--schema-registry-url",
        &url,
        "--timeout-secs",
        "2",
        "schemas",
        "check",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("unavailable"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemas_register_and_check_against_the_registry() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let dir = tempfile::tempdir().expect("dir");
    let storage = schema_registry::Storage::File(dir.path().join("registry.json"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(schema_registry::serve(
        listener,
        storage,
        CompatibilityLevel::Backward,
        None,
        async move {
            let _ = stopped.await;
        },
    ));

    // A subject already holding a schema the tree's audit schema cannot read as BACKWARD.
    let registry =
        envelope::RegistryClient::new(&url, None, Duration::from_secs(5)).expect("client");
    registry
        .register(
            "audit.events-value",
            r#"{"type":"record","name":"AuditEventLogged","namespace":"adpipe.audit","fields":[{"name":"legacy","type":"string"}]}"#,
        )
        .await
        .expect("legacy schema");
    let run = |cmd: &'static str| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            pipelinectl(&["--schema-registry-url", &url, "schemas", cmd])
        })
    };
    let out = run("check").await.expect("join");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("audit.events-value"), "{}", text(&out));
    assert!(text(&out).contains("INCOMPATIBLE"), "{}", text(&out));

    // Start over on a clean subject set: everything registers and checks clean.
    delete_subject(&url, "audit.events-value").await;
    let out = run("register").await.expect("join");
    assert!(out.status.success(), "{}", text(&out));
    let subjects = registry.subjects().await.expect("subjects");
    for topic in topics::Topic::ALL {
        assert!(
            subjects.contains(&format!("{topic}-value")),
            "{topic}: {subjects:?}"
        );
    }
    assert_eq!(
        registry
            .version("silver.data.processed-value", None)
            .await
            .expect("version")
            .version,
        1
    );
    let out = run("check").await.expect("join");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Registering again is idempotent: still version 1 everywhere.
    let out = run("register").await.expect("join");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        registry
            .versions("gold.data.ready-value")
            .await
            .expect("versions"),
        [1]
    );

    let _ = stop.send(());
    server.await.expect("join").expect("served");
}

/// Remove the legacy subject (soft, then permanent) through the registry's HTTP API.
async fn delete_subject(url: &str, subject: &str) {
    let http = reqwest::Client::new();
    for query in ["", "?permanent=true"] {
        let res = http
            .delete(format!("{url}/subjects/{subject}{query}"))
            .send()
            .await
            .expect("delete");
        assert!(
            res.status().is_success(),
            "delete {subject}{query}: {}",
            res.status()
        );
    }
}
