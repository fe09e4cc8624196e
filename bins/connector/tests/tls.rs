//! The connector against a broker that speaks TLS only: with the broker's CA it publishes its
//! configuration and produces every simulated row over TLS; without the CA it stops before
//! its first row (after `CONNECTOR_BROKER_WAIT_SECS`) with exit 1, naming the failed
//! certificate check and the setting to check, instead of retrying each row until its
//! message timeout and reporting a timeout.

use std::{process::Output, time::Duration};

use testkit::{Broker, create_stage_topics_with, read_records_with};
use topics::Topic;

/// Run the connector binary on `bootstrap` and `registry` with `env`: 2 orgs × 2 campaigns
/// × 2 days of simulated rows, none bad.
async fn connector(bootstrap: &str, registry: &str, env: &[(&str, String)]) -> Output {
    let mut vars: Vec<(String, String)> = [
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap),
        ("SCHEMA_REGISTRY_URL", registry),
        ("SIM_ORGS", "2"),
        ("SIM_CAMPAIGNS", "2"),
        ("SIM_DAYS", "2"),
        ("SIM_BAD_SHARE", "0"),
        ("SIM_DSPS", "ttd"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_connector"));
        for (k, _) in std::env::vars() {
            if k.starts_with("KAFKA_") || k.starts_with("SIM_") || k.starts_with("CONNECTOR_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(vars).output().expect("the connector runs")
    })
    .await
    .expect("join")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connector_produces_over_tls_and_stops_before_its_first_row_on_an_untrusted_certificate()
 {
    let mut broker = Broker::start_memory().expect("broker");
    tokio::task::block_in_place(|| broker.serve_tls()).expect("the broker restarts behind TLS");
    let front = broker.tls().expect("a TLS front");
    let b = broker.bootstrap();
    create_stage_topics_with(
        &broker.client_config(),
        &[
            Topic::ConnectorDataRaw,
            Topic::ConfigChanges,
            Topic::AuditEvents,
        ],
    )
    .await
    .expect("topics over TLS");
    let dir = tempfile::tempdir().expect("dir");
    let registry = schema_registry::spawn_local(dir.path())
        .await
        .expect("registry");

    let out = connector(&b, &registry, &front.client_env()).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // 2 orgs × 2 campaigns × 2 days of one DSP, and its configuration before them.
    const ROWS: usize = 8;
    assert!(
        text(&out).contains(&format!("{ROWS} rows produced")),
        "{}",
        text(&out)
    );
    let read = |topic: &'static str, n: usize| {
        tokio::task::block_in_place(|| {
            read_records_with(broker.client_config(), topic, n, Duration::from_secs(20))
        })
        .expect("a reader over TLS")
    };
    assert_eq!(read(Topic::ConnectorDataRaw.name(), ROWS).len(), ROWS);
    assert!(
        !read(Topic::ConfigChanges.name(), 1).is_empty(),
        "the configuration was published over TLS"
    );

    let handshakes = front.handshakes();
    let started = std::time::Instant::now();
    let untrusted = [
        ("KAFKA_SECURITY_PROTOCOL", "ssl".to_owned()),
        ("CONNECTOR_BROKER_WAIT_SECS", "3".to_owned()),
    ];
    let out = connector(&b, &registry, &untrusted).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    // The reason and the setting to check, in the fatal error.
    let fatal = said
        .lines()
        .find(|l| l.starts_with("connector: fatal:"))
        .unwrap_or_else(|| panic!("no fatal error: {said}"));
    assert!(
        fatal.contains("certificate verify failed") && fatal.contains("KAFKA_SSL_CA_LOCATION"),
        "{fatal}"
    );
    assert!(
        took < Duration::from_secs(20),
        "stopped only after {took:?}"
    );
    assert_eq!(front.handshakes(), handshakes, "a handshake without the CA");
}
