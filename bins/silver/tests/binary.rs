//! The `silver` binary end to end on a real broker and registry: bronze rows in, typed and
//! scored rows out (quarantined rows also audited), and on SIGTERM it finishes, commits and
//! exits 0.

mod common;

use std::{
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use common::row;
use envelope::{
    Codec, Event, RegistryClient, Source,
    payload::{
        audit::AuditEvent,
        etl::{Execution, RunStatus},
        silver::{ProcessedRow, QualityVerdict},
    },
};
use rdkafka::{
    Message,
    producer::{FutureProducer, FutureRecord},
};
use testkit::{Broker, client_config, committed_offsets, create_topics, end_offsets, read_records};
use topics::{PartitionKey, Topic, partition_for};

/// The stage process, killed if the test ends early.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The values of the first `n` records of `topic`, waiting at most `within`.
fn collect(b: &str, topic: &str, n: usize, within: Duration) -> Vec<Vec<u8>> {
    read_records(b, topic, n, within)
        .expect("reader")
        .iter()
        .map(|m| m.payload().unwrap_or_default().to_vec())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silver_scores_rows_and_stops_cleanly_on_sigterm() {
    let broker = Broker::start_memory().expect("broker");
    let b = broker.bootstrap();
    create_topics(
        &b,
        &[
            ("bronze.data.cleaned", 12),
            ("bronze.data.cleaned.dlq", 12),
            ("silver.data.processed", 12),
            ("audit.events", 6),
            ("etl.execution", 6),
        ],
    )
    .await
    .expect("topics");
    let dir = tempfile::tempdir().expect("dir");
    let registry_url = schema_registry::spawn_local(dir.path())
        .await
        .expect("registry");

    let codec = Arc::new(Codec::new(
        RegistryClient::new(&registry_url, None, Duration::from_secs(5)).expect("client"),
    ));
    codec
        .register(Topic::BronzeDataCleaned)
        .await
        .expect("register bronze");
    let producer: FutureProducer = client_config(&b)
        .set("acks", "all")
        .create()
        .expect("producer");
    let (good, bad) = (50usize, 10usize);
    for i in 0..good + bad {
        let date = if i < good { "2024-12-26" } else { "2024-02-30" };
        let e = Event::new(
            (i % 7 + 1) as i64,
            Source {
                service: "bronze-processor".into(),
                instance: "t".into(),
            },
            row(i, date),
        );
        let value = codec.encode(&e).expect("encode");
        let p = partition_for(PartitionKey::Org(e.metadata.org_id), 12);
        producer
            .send(
                FutureRecord::to("bronze.data.cleaned")
                    .partition(p)
                    .key(&e.record_key())
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produced");
    }

    let log_path = std::env::var("SILVER_TEST_LOGFILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().join("silver.log"));
    let log_file = std::fs::File::create(&log_path).expect("log");
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_silver"))
            .env("KAFKA_BOOTSTRAP_SERVERS", &b)
            .env("SCHEMA_REGISTRY_URL", &registry_url)
            .env("METRICS_LISTEN", "127.0.0.1:0")
            .env("SHUTDOWN_GRACE_SECS", "10")
            .env("RUN_REPORT_SECS", "1")
            .env("LOG_FORMAT", "json")
            .env(
                "RUST_LOG",
                std::env::var("SILVER_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            // Logs go to stdout; fatal errors to stderr.
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("silver starts"),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // Count outputs by consuming them: Tansu's high watermark under-reports batched produce.
    let rows_bytes = collect(
        &b,
        "silver.data.processed",
        good + bad,
        Duration::from_secs(60),
    );
    let audit_bytes = collect(&b, "audit.events", bad, Duration::from_secs(30));
    assert_eq!(
        (rows_bytes.len(), audit_bytes.len()),
        (good + bad, bad),
        "every row processed; silver's log:\n{}",
        log()
    );

    let term = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "silver did not exit within 20 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM");
    // The input was produced one record per batch, so its watermark is exact.
    let ends = end_offsets(&b, "bronze.data.cleaned", 12).expect("ends");
    // Partitions that never held a record have no committed offset (-1).
    let committed: Vec<i64> = committed_offsets(&b, "silver-processor", "bronze.data.cleaned", 12)
        .expect("committed")
        .into_iter()
        .map(|o| o.max(0))
        .collect();
    assert_eq!(committed, ends);

    let mut rows: Vec<Event<ProcessedRow>> = Vec::new();
    for v in rows_bytes {
        rows.push(codec.decode(&v).await.expect("silver rows decode"));
    }
    let passed: Vec<_> = rows
        .iter()
        .filter(|r| r.payload.quality.verdict == QualityVerdict::Pass)
        .collect();
    assert_eq!(passed.len(), good);
    assert_eq!(rows.len() - passed.len(), bad);
    let r = passed[0];
    assert_eq!(r.payload.spend.to_string(), "12.35");
    assert_eq!(r.payload.impressions, 1000);
    assert!(r.payload.campaign_id.starts_with('c') && !r.payload.campaign_id.contains(' '));
    assert_eq!(r.payload.currency.as_deref(), Some("USD"));
    let mut audits: Vec<Event<AuditEvent>> = Vec::new();
    for v in audit_bytes {
        audits.push(codec.decode(&v).await.expect("audit decodes"));
    }
    assert!(audits.iter().all(|a| a.payload.action == "row.quarantined"));
    assert!(audits.iter().all(|a| {
        a.payload
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("2024-02-30"))
    }));

    // Run events (all produced before silver exited): `started` first, `progress` while it
    // ran, `completed` last with every input counted.
    let mut runs: Vec<Event<Execution>> = Vec::new();
    for v in read_records(&b, "etl.execution", usize::MAX, Duration::from_secs(10)).expect("reader")
    {
        runs.push(
            codec
                .decode(v.payload().unwrap_or_default())
                .await
                .expect("run event decodes"),
        );
    }
    assert!(
        runs.len() >= 2,
        "started and completed at least: {runs:#?}; silver's log:\n{}",
        log()
    );
    assert_eq!(runs[0].payload.status, RunStatus::Started);
    assert!(
        runs.iter()
            .all(|r| r.payload.pipeline_id == "silver-processor")
    );
    assert!(
        runs.iter()
            .all(|r| r.payload.run_id == runs[0].payload.run_id)
    );
    let last = runs.last().expect("runs");
    assert_eq!(last.payload.status, RunStatus::Completed);
    assert_eq!(last.payload.counts.records_in, (good + bad) as i64);
    assert_eq!(last.payload.counts.quarantined, bad as i64);
    assert_eq!(last.payload.counts.records_out, (good + bad + bad) as i64);
}
