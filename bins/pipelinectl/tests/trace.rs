//! `pipelinectl trace` end to end: the real binary against a real Tansu broker and an
//! in-process schema registry, over records shaped as the stages write them.

mod common;

use common::{pipelinectl, text};

use std::time::Duration;

use envelope::{
    Codec, Event, RegistryClient, Source,
    payload::raw::{FetchMetadata, RawReport},
    values::{Date, Timestamp},
};
use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use schemas::CompatibilityLevel;
use serde_json::Value;
use testkit::{Broker, client_config};
use topics::Topic;

fn raw_row(row_index: i32) -> RawReport {
    RawReport {
        request_id: "pull-1".to_owned(),
        dsp_type: "dv360".to_owned(),
        report_date: Date::ymd(2025, 1, 6).expect("date"),
        row_index,
        content_type: "application/json".to_owned(),
        raw_payload: "{}".to_owned(),
        fetch: FetchMetadata {
            fetched_at: Timestamp::now(),
            connector: "connector/test".to_owned(),
            source_uri: None,
            account_id: None,
            page: None,
            attempt: 1,
        },
    }
}

fn source(service: &str) -> Source {
    Source {
        service: service.to_owned(),
        instance: "test".to_owned(),
    }
}

/// The CloudEvents headers `runtime::Outputs::emit_event` writes.
fn stage_headers(event: &Event<RawReport>, ce_type: &str) -> OwnedHeaders {
    let m = &event.metadata;
    [
        ("ce_id", m.event_id.to_string()),
        ("ce_type", ce_type.to_owned()),
        ("ce_source", m.source.service.clone()),
        ("correlation_id", m.correlation_id.to_string()),
    ]
    .iter()
    .fold(OwnedHeaders::new(), |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: Some(v.as_str()),
        })
    })
}

async fn send(
    producer: &FutureProducer,
    topic: &str,
    value: &[u8],
    headers: Option<OwnedHeaders>,
    timestamp: i64,
) {
    let mut record = FutureRecord::<str, [u8]>::to(topic)
        .partition(0)
        .key("7")
        .payload(value)
        .timestamp(timestamp);
    if let Some(h) = headers {
        record = record.headers(h);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .expect("produced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_follows_a_correlation_id_across_topics_in_time_order() {
    let broker = Broker::start_memory().expect("broker");
    let b = broker.bootstrap();
    let out = pipelinectl(&["--bootstrap-servers", &b, "topics", "apply"]);
    assert!(out.status.success(), "{}", text(&out));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let dir = tempfile::tempdir().expect("dir");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(schema_registry::serve(
        listener,
        schema_registry::Storage::File(dir.path().join("registry.json")),
        CompatibilityLevel::Backward,
        None,
        async move {
            let _ = stopped.await;
        },
    ));
    let codec =
        Codec::new(RegistryClient::new(&url, None, Duration::from_secs(5)).expect("client"));
    codec
        .register(Topic::ConnectorDataRaw)
        .await
        .expect("register");

    // One pull: a raw row (no headers, as the connector writes it), a second raw row of the
    // same pull that bronze dead-lettered, and the events derived from the first. The values
    // downstream are raw-row events too: trace reads envelopes, whatever the payload.
    let pulled = Event::new(7, source("connector"), raw_row(0));
    let dead = Event::caused_by(&pulled.metadata, source("connector"), raw_row(1));
    let bronze = Event::caused_by(&pulled.metadata, source("bronze-processor"), raw_row(0));
    let silver = Event::caused_by(&bronze.metadata, source("silver-processor"), raw_row(0));
    // Another pull's records, which trace must ignore.
    let other = Event::new(8, source("connector"), raw_row(0));
    let other_bronze = Event::caused_by(&other.metadata, source("bronze-processor"), raw_row(0));

    let producer: FutureProducer = client_config(&b).create().expect("producer");
    let t0 = chrono::Utc::now().timestamp_millis() - 60_000;
    let raw = Topic::ConnectorDataRaw.name();
    let bronze_topic = Topic::BronzeDataCleaned.name();
    let silver_topic = Topic::SilverDataProcessed.name();
    let enc = |e: &Event<RawReport>| codec.encode(e).expect("encode");
    send(&producer, raw, &enc(&other), None, t0).await;
    send(&producer, raw, &enc(&pulled), None, t0 + 1).await;
    send(&producer, raw, &enc(&dead), None, t0 + 2).await;
    send(
        &producer,
        bronze_topic,
        &enc(&other_bronze),
        Some(stage_headers(&other_bronze, bronze_topic)),
        t0 + 1_000,
    )
    .await;
    send(
        &producer,
        bronze_topic,
        &enc(&bronze),
        Some(stage_headers(&bronze, bronze_topic)),
        t0 + 1_000,
    )
    .await;
    // Dead-lettered later than bronze's output, though its topic is read before bronze's.
    let dlq_headers = OwnedHeaders::new()
        .insert(Header {
            key: "dlq.error.code",
            value: Some("BRONZE_UNPARSEABLE"),
        })
        .insert(Header {
            key: "dlq.original.topic",
            value: Some(raw),
        });
    send(
        &producer,
        &Topic::ConnectorDataRaw.dlq(),
        &enc(&dead),
        Some(dlq_headers),
        t0 + 1_500,
    )
    .await;
    send(
        &producer,
        silver_topic,
        b"not avro, found by its headers",
        Some(stage_headers(&silver, silver_topic)),
        t0 + 2_000,
    )
    .await;

    let id = pulled.metadata.correlation_id.to_string();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            pipelinectl(&args)
        })
    };
    let args = |registry: &str| {
        vec![
            "--bootstrap-servers".to_owned(),
            b.clone(),
            "--schema-registry-url".to_owned(),
            registry.to_owned(),
            "--timeout-secs".to_owned(),
            "2".to_owned(),
            "--json".to_owned(),
            "trace".to_owned(),
            id.clone(),
            "--scan-secs".to_owned(),
            "30".to_owned(),
        ]
    };
    let out = run(args(&url)).await.expect("join");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let records = report["records"].as_array().expect("records");
    let seen: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            (
                r["topic"].as_str().unwrap_or_default().to_owned(),
                r["event_id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let want =
        |topic: &str, e: &Event<RawReport>| (topic.to_owned(), e.metadata.event_id.to_string());
    assert_eq!(
        seen,
        vec![
            want(raw, &pulled),
            want(raw, &dead),
            want(bronze_topic, &bronze),
            want(&Topic::ConnectorDataRaw.dlq(), &dead),
            want(silver_topic, &silver),
        ],
        "{report:#}"
    );
    // Decoded: causation and org from the envelope; the DLQ's error code.
    assert_eq!(
        records[2]["causation_id"],
        pulled.metadata.event_id.to_string()
    );
    assert_eq!(records[2]["org_id"], 7);
    assert_eq!(records[2]["source"], "bronze-processor");
    assert_eq!(records[3]["dlq_error"], "BRONZE_UNPARSEABLE");
    assert_eq!(records[4]["decoded"], false, "not Avro: {}", records[4]);
    assert!(
        report["topics"]
            .as_array()
            .expect("topics")
            .iter()
            .all(|t| t["complete"] == true)
    );

    // Without a registry: the same records, undecoded, and a note instead of a failure.
    let port = testkit::free_port().expect("port");
    let out = run(args(&format!("http://127.0.0.1:{port}")))
        .await
        .expect("join");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let records = report["records"].as_array().expect("records");
    assert_eq!(records.len(), 5, "{report:#}");
    assert!(records.iter().all(|r| r["decoded"] == false), "{report:#}");
    assert_eq!(records[2]["event_id"], bronze.metadata.event_id.to_string());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not decoding records"),
        "{}",
        text(&out)
    );

    // The table for people names every hop.
    let mut table_args = args(&url);
    table_args.retain(|a| a != "--json");
    let out = run(table_args).await.expect("join");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(table.lines().count(), 6, "{table}");
    assert!(table.contains("dlq: BRONZE_UNPARSEABLE"), "{table}");

    // A topic with more records than --max-records is read in part, and says so.
    let mut capped = args(&url);
    capped.extend(["--max-records".to_owned(), "1".to_owned()]);
    let out = run(capped).await.expect("join");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let raw_scan = report["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .find(|t| t["topic"] == raw)
        .expect("raw topic scanned");
    assert_eq!(
        (&raw_scan["complete"], &raw_scan["records_read"]),
        (&Value::Bool(false), &Value::from(1)),
        "{raw_scan}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--max-records 1"),
        "{}",
        text(&out)
    );

    let _ = stop.send(());
    let _ = server.await;
}
