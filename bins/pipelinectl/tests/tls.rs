//! pipelinectl against a broker that speaks TLS only (Strimzi's 9093 listener shape), with
//! the stages' security settings: given `KAFKA_SECURITY_PROTOCOL=ssl` and the CA, every kind
//! of Kafka client it builds works — the admin client (`topics apply`, `topics diff` with
//! the settings as flags after the command), the
//! producer and the `config.changes` reader (`config apply`, whose second run must read the
//! first run's changes to find them unchanged); without the CA, or in plaintext, it fails
//! with exit 2 and never reaches the topics.

mod common;

use common::text;

use std::{process::Output, time::Duration};

use serde_json::Value;
use testkit::Broker;

/// Run pipelinectl on `bootstrap` and `registry` with `env` on top of a clean environment.
async fn ctl(bootstrap: &str, registry: &str, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut all: Vec<String> = [
        "--bootstrap-servers",
        bootstrap,
        "--schema-registry-url",
        registry,
        "--timeout-secs",
        "5",
    ]
    .iter()
    .chain(args)
    .map(|s| (*s).to_owned())
    .collect();
    all.insert(0, "--json".to_owned());
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pipelinectl"));
        cmd.args(&all);
        for (k, _) in std::env::vars() {
            if k.starts_with("KAFKA_") || k.starts_with("SCHEMA_REGISTRY") {
                cmd.env_remove(k);
            }
        }
        cmd.env("ADPIPE_ACTOR", "alice");
        cmd.envs(env);
        cmd.output().expect("pipelinectl runs")
    })
    .await
    .expect("join")
}

/// The `status` of each row `config apply --json` printed.
fn statuses(out: &Output) -> Vec<String> {
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)));
    v.as_array()
        .expect("an array")
        .iter()
        .map(|r| r["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelinectl_speaks_tls_with_the_stages_settings_and_fails_without_the_ca() {
    let mut broker = Broker::start_memory().expect("broker");
    tokio::task::block_in_place(|| broker.serve_tls()).expect("the broker restarts behind TLS");
    let front = broker.tls().expect("a TLS front");
    let b = broker.bootstrap();
    let dir = tempfile::tempdir().expect("dir");
    let registry = schema_registry::spawn_local(dir.path())
        .await
        .expect("registry");
    let tls = front.client_env();

    // Admin client: create every topic, then find no drift.
    let applied = ctl(&b, &registry, &["topics", "apply"], &tls).await;
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied));
    // The same settings as flags, after the command.
    let ca = front.ca_location().display().to_string();
    let diff = ctl(
        &b,
        &registry,
        &[
            "topics",
            "diff",
            "--kafka-security-protocol",
            "ssl",
            "--kafka-ssl-ca-location",
            &ca,
        ],
        &[],
    )
    .await;
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff));

    // Producer and reader: the second apply reads the first one's changes back over TLS.
    let file = dir.path().join("changes.yaml");
    std::fs::write(
        &file,
        "org: 7\nchanges:\n  - channel: {channel_id: inbox, kind: in_app, target: ops}\n",
    )
    .expect("file");
    let apply = ["config", "apply", "-f", file.to_str().expect("a path")];
    let first = ctl(&b, &registry, &apply, &tls).await;
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert_eq!(statuses(&first), ["published"]);
    let again = ctl(&b, &registry, &apply, &tls).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_eq!(statuses(&again), ["unchanged"], "the reader saw the change");
    let handshakes = front.handshakes();

    // Without the CA the handshake fails; in plaintext the front refuses the bytes.
    let untrusted = [("KAFKA_SECURITY_PROTOCOL", "ssl".to_owned())];
    for (what, env) in [
        ("without the CA", &untrusted[..]),
        ("in plaintext", &[][..]),
    ] {
        let started = std::time::Instant::now();
        let out = ctl(&b, &registry, &["topics", "diff"], env).await;
        assert_eq!(out.status.code(), Some(2), "{what}: {}", text(&out));
        assert!(
            text(&out).contains("cannot reach the Kafka broker"),
            "{what}: {}",
            text(&out)
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what}: gave up only after {:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        front.handshakes(),
        handshakes,
        "a client without the CA completed a handshake"
    );
    assert!(front.refused() > 0, "the front refused the failed clients");
}
