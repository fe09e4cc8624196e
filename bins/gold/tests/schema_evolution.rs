//! Schema evolution end to end: a producer still on `silver.data.processed` 1.0.0 (the
//! schema before the optional `spend_usd`) and one on the tree's 1.1.0 write into the same
//! topic, each under its own registered schema id; the `gold` binary (built with 1.1.0)
//! aggregates both, and a consumer built with 1.0.0 reads both. No lock-step deploy: Avro
//! writer → reader resolution does the work.

use std::time::Duration;

use chrono::{Days, Utc};
use envelope::{
    Codec, Date, Event, Money, RegistryClient,
    evolution::{catalog_with, encode_with_writer},
    payload::{gold::AggregateReady, gold::Grain, silver::ProcessedRow},
};
use rdkafka::{
    Message,
    message::Headers,
    producer::{FutureProducer, FutureRecord},
};
use testbed::TestBed;
use testkit::{StageProcess, counter, read_records, wait_until};
use topics::{Topic, partition_for};

/// `schemas/silver/data-processed.avsc` as committed before `spend_usd` was added.
const V1_0_FILE: &str =
    include_str!("../../../crates/envelope/tests/fixtures/silver-data-processed-1.0.0.avsc");
const TOPIC: Topic = Topic::SilverDataProcessed;
const ORG: i64 = 42;
const ROWS_PER_VERSION: i64 = 6;

fn today() -> Date {
    Date(Utc::now().date_naive())
}

fn row(n: i64, version: &str) -> Event<ProcessedRow> {
    let mut r = gold::fixtures::delivery_row(
        ORG,
        "c1",
        &format!("e-{version}-{n}"),
        Date(today().0 - Days::new(1)),
        1_000 + n,
        Money::from_unscaled(10_000 + n).expect("money"),
    );
    r.metadata.event_version = version.to_owned();
    r.payload.spend_usd = (version != "1.0.0").then_some(r.payload.spend);
    r
}

async fn send(producer: &FutureProducer, event: &Event<ProcessedRow>, bytes: &[u8]) {
    let key = event.record_key();
    let partition = partition_for(event.partition_key(), TOPIC.spec().partitions);
    producer
        .send(
            FutureRecord::to(TOPIC.name())
                .partition(partition)
                .key(&key)
                .payload(bytes),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("the broker takes the record");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_and_new_producers_share_the_topic_and_both_are_processed_and_read() {
    let bed = TestBed::start(
        "gold_evolution",
        &[
            TOPIC,
            Topic::ConfigChanges,
            Topic::GoldDataReady,
            Topic::AuditEvents,
        ],
    )
    .await
    .expect("test bed");
    let registry =
        RegistryClient::new(&bed.registry, None, Duration::from_secs(10)).expect("registry");

    // The 1.0.0 producer registers its schema under the same subject: a second version
    // the registry accepts (the change is compatible), with an id of its own.
    let old = catalog_with(TOPIC, V1_0_FILE).expect("1.0.0 catalog");
    let old_json = old.for_topic(TOPIC.name()).expect("subject").json.clone();
    assert!(
        !old_json.contains("spend_usd"),
        "the fixture predates the field"
    );
    let old_codec = Codec::with_schemas(Some(registry.clone()), &old);
    let old_id = old_codec.register(TOPIC).await.expect("1.0.0 registers");
    let new_id = bed
        .codec
        .schema_id(TOPIC)
        .expect("1.1.0 registered by the bed");
    assert_ne!(old_id, new_id);
    let subject = old
        .for_topic(TOPIC.name())
        .expect("subject")
        .subject
        .clone();
    assert_eq!(
        registry.versions(&subject).await.expect("versions").len(),
        2,
        "one subject, two versions"
    );

    // Interleaved: 1.0.0, 1.1.0, 1.0.0, ...
    let mut sent = Vec::new();
    for n in 0..ROWS_PER_VERSION {
        let event = row(n, "1.0.0");
        let bytes =
            encode_with_writer(&bed.codec, &event, old_id, &old_json).expect("1.0.0 encodes");
        send(&bed.producer, &event, &bytes).await;
        sent.push(event);
        let event = row(n, "1.1.0");
        bed.produce(&event).await;
        sent.push(event);
    }
    let total = sent.len();

    // Gold (1.1.0) processes both versions.
    let mut env = bed.stage_env();
    env.push(("GOLD_DATABASE_URL", bed.schema.url()));
    env.push(("GOLD_FLUSH_INTERVAL_SECS", "0".to_owned()));
    let gold = StageProcess::spawn(
        env!("CARGO_BIN_EXE_gold"),
        &env,
        &bed.dir.path().join("gold.log"),
    )
    .expect("gold starts");
    let port = gold.metrics_port();
    let log = || std::fs::read_to_string(bed.dir.path().join("gold.log")).unwrap_or_default();
    wait_until(
        Duration::from_secs(90),
        "gold processes every row",
        || async move {
            counter(port, runtime::metrics::PROCESSED)
                .await
                .is_some_and(|n| n >= total as f64)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    let dead = counter(port, runtime::metrics::DEAD_LETTERED)
        .await
        .unwrap_or(0.0);
    assert_eq!(dead, 0.0, "nothing dead-lettered\n{}", log());

    // Gold counts what it read per writer version; 1.0.0 is flagged deprecated.
    let metrics = metrics_text(port);
    for (version, deprecated) in [("1.0.0", true), ("1.1.0", false)] {
        let sample = metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "{}_total{{",
                    runtime::metrics::SCHEMA_VERSION_IN_USE
                )) && l.contains(&format!("version=\"{version}\""))
            })
            .unwrap_or_else(|| panic!("no {version} sample in\n{metrics}"));
        assert!(
            sample.contains(&format!("deprecated=\"{deprecated}\"")),
            "{sample}"
        );
        assert!(sample.contains("stage=\"gold-processor\""), "{sample}");
        assert!(
            sample.ends_with(&format!(" {ROWS_PER_VERSION}")),
            "{sample}"
        );
    }

    // Its last daily aggregate of the campaign counts every row of both versions.
    let want_impressions: i64 = sent.iter().map(|e| e.payload.impressions).sum();
    let mut last_daily = None;
    wait_until(
        Duration::from_secs(30),
        "the daily aggregate of all rows",
        || {
            let found = last_daily_aggregate(&bed);
            let done = found.as_ref().is_some_and(|a| a.rows == total as i64);
            last_daily = found;
            async move { done }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: last seen {last_daily:?}\n{}", log()));
    let daily = last_daily.expect("an aggregate");
    assert_eq!(daily.impressions, want_impressions);

    // Every event gold wrote says its contract version in the `event_version` header.
    let outputs = read_records(
        &bed.bootstrap,
        Topic::GoldDataReady.name(),
        1,
        Duration::from_secs(30),
    )
    .expect("read gold.data.ready");
    let headers = outputs
        .first()
        .and_then(|m| m.headers())
        .expect("gold's output has headers");
    let version = headers
        .iter()
        .find(|h| h.key == runtime::processor::headers::EVENT_VERSION)
        .and_then(|h| h.value)
        .expect("an event_version header");
    assert_eq!(
        version,
        <AggregateReady as envelope::Payload>::VERSION.as_bytes()
    );

    // A consumer built with 1.0.0 reads both versions; one built with 1.1.0 too, seeing
    // spend_usd only where the 1.1.0 producer wrote it.
    let records = read_records(&bed.bootstrap, TOPIC.name(), total, Duration::from_secs(30))
        .expect("read back");
    assert_eq!(records.len(), total);
    let mut ids = std::collections::BTreeSet::new();
    for m in &records {
        let bytes = m.payload().unwrap_or_default();
        ids.insert(u32::from_be_bytes(bytes[1..5].try_into().expect("id")));
        let as_new: Event<ProcessedRow> = bed.codec.decode(bytes).await.expect("1.1.0 reads");
        let as_old: Event<ProcessedRow> = old_codec.decode(bytes).await.expect("1.0.0 reads");
        let original = sent
            .iter()
            .find(|e| e.payload.entity.entity_id == as_new.payload.entity.entity_id)
            .expect("a row that was sent");
        assert_eq!(&as_new, original, "1.1.0 reads what was written");
        assert_eq!(as_old.payload.spend_usd, None, "1.0.0 knows no spend_usd");
        assert_eq!(as_old.payload.impressions, original.payload.impressions);
        assert_eq!(
            as_old.metadata.event_version,
            original.metadata.event_version
        );
    }
    assert_eq!(
        ids,
        [old_id, new_id].into_iter().collect(),
        "both writer versions are on the topic"
    );
    drop(gold);
    bed.schema.drop().await;
}

/// The `/metrics` text of the stage on `port`.
fn metrics_text(port: u16) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("response");
    text
}

/// The latest daily aggregate of campaign c1 on gold.data.ready, if any.
fn last_daily_aggregate(bed: &TestBed) -> Option<AggregateReady> {
    let records = read_records(
        &bed.bootstrap,
        Topic::GoldDataReady.name(),
        usize::MAX,
        // A reader joins a group of its own first: a few seconds on Tansu.
        Duration::from_secs(6),
    )
    .expect("read gold.data.ready");
    records
        .iter()
        .filter_map(|m| {
            bed.codec
                .decode_known::<AggregateReady>(m.payload().unwrap_or_default())
                .ok()
        })
        .filter(|e| e.payload.grain == Grain::Daily && e.payload.campaign_id == "c1")
        .map(|e| e.payload)
        .max_by_key(|a| a.rows)
}
