//! The schema registry going away while a stage runs (cut with a TCP proxy between the stage
//! and a real registry): records whose schema the stage has cached keep flowing; a record
//! written with a schema id the stage has not seen waits — with a warning, holding back its
//! partition only — and is processed once the registry is back. Nothing is dead-lettered,
//! nothing lost, the partition's order kept.

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use envelope::{
    Codec, Event, Id, RegistryClient,
    payload::{audit::AuditEvent, config::ConfigChange},
};
use rdkafka::{Message, producer::FutureProducer};
use runtime::{
    RuntimeArgs,
    dedupe::Dedupe,
    metrics::{DEAD_LETTERED, PROCESSED},
    testing::{Echo, RunningStage, config_change},
};
use testkit::{Broker, CutProxy, client_config, read_records, wait_until};
use topics::{PartitionKey, Topic, partition_for};

/// Log lines of the whole test process (one test in this file: the subscriber is global).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(
            &self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_owned()
    }
}

/// `config.changes`' schema with one more optional payload field: a new version the stage
/// has not cached.
fn evolved_schema() -> String {
    let subject = schemas::embedded()
        .for_topic(Topic::ConfigChanges.name())
        .expect("subject");
    let mut json: serde_json::Value = serde_json::from_str(&subject.json).expect("json");
    let payload = json["fields"]
        .as_array_mut()
        .and_then(|f| f.iter_mut().find(|f| f["name"] == "payload"))
        .expect("payload field");
    payload["type"]["fields"]
        .as_array_mut()
        .expect("payload record")
        .push(
            serde_json::json!({"name": "added_later", "type": ["null", "string"], "default": null}),
        );
    json.to_string()
}

async fn send(producer: &FutureProducer, partition: i32, key: &str, value: &[u8]) {
    let record = (partition, key.to_owned(), value.to_vec());
    testkit::produce_in_order(producer, Topic::ConfigChanges.name(), &[record]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_holds_only_uncached_schemas_and_loses_nothing() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .init();

    let (_broker, b) = Broker::with_stage_topics(&[Topic::ConfigChanges, Topic::AuditEvents])
        .await
        .expect("broker");
    let dir = tempfile::tempdir().expect("dir");
    let registry = schema_registry::spawn_local(dir.path())
        .await
        .expect("registry");
    let proxy = CutProxy::start(registry.trim_start_matches("http://"))
        .await
        .expect("proxy");
    let via_proxy = format!("http://127.0.0.1:{}", proxy.port());

    // The producer's codec talks to the registry directly: v1 of config.changes, and a v2
    // (one optional field more) the stage will first meet while the registry is cut off.
    let producer_codec = runtime::codec(Some(&registry), &[Topic::ConfigChanges])
        .await
        .expect("producer codec");
    let client = RegistryClient::new(&registry, None, Duration::from_secs(5)).expect("client");
    let v2 = client
        .register("config.changes-value", &evolved_schema())
        .await
        .expect("v2 is backward compatible");
    let v1 = producer_codec
        .schema_id(Topic::ConfigChanges)
        .expect("v1 id");
    assert_ne!(v1, v2);
    // The stage's codec asks the registry through the proxy.
    let stage_codec: Arc<Codec> = runtime::codec(Some(&via_proxy), &[Topic::AuditEvents])
        .await
        .expect("stage codec");

    let partitions = Topic::ConfigChanges.spec().partitions;
    let held_org = 1i64;
    let held = partition_for(PartitionKey::Org(held_org), partitions);
    let other_orgs: Vec<i64> = (2..200)
        .filter(|o| partition_for(PartitionKey::Org(*o), partitions) != held)
        .take(10)
        .collect();
    let producer: FutureProducer = client_config(&b)
        .set("acks", "all")
        .create()
        .expect("producer");
    let v1_event = |org: i64, key: String| {
        let e = config_change(org, &key);
        let bytes = producer_codec.encode(&e).expect("encode");
        (e, bytes)
    };

    // 1. Registry up: 20 v1 records on every partition; the stage caches v1.
    let mut sent: Vec<Event<ConfigChange>> = Vec::new();
    for i in 0..20 {
        let org = if i % 4 == 0 {
            held_org
        } else {
            other_orgs[i % other_orgs.len()]
        };
        let (e, bytes) = v1_event(org, format!("before/{i}"));
        send(
            &producer,
            partition_for(PartitionKey::Org(org), partitions),
            &e.record_key(),
            &bytes,
        )
        .await;
        sent.push(e);
    }
    let stage = RunningStage::start(
        Echo,
        RuntimeArgs::for_tests(&b),
        stage_codec,
        Dedupe::memory(10_000),
    );
    let m = stage.metrics.clone();
    let processed = |n: u64| {
        let m = m.clone();
        move || {
            let done = m.total(PROCESSED) == n;
            async move { done }
        }
    };
    wait_until(
        Duration::from_secs(90),
        "the first 20 records",
        processed(20),
    )
    .await
    .expect("processed with the registry up");

    // 2. Registry cut off: a v2 record on the held partition, 5 v1 records behind it, and
    //    30 v1 records on the other partitions.
    proxy.cut().await;
    let (new_schema, mut bytes) = v1_event(held_org, "new-schema".to_owned());
    bytes[1..5].copy_from_slice(&v2.to_be_bytes());
    bytes.push(0); // `added_later` = null, the last field of the payload, the last field
    send(&producer, held, &new_schema.record_key(), &bytes).await;
    sent.push(new_schema.clone());
    let mut behind = Vec::new();
    for i in 0..5 {
        let (e, bytes) = v1_event(held_org, format!("behind/{i}"));
        send(&producer, held, &e.record_key(), &bytes).await;
        behind.push(e.metadata.event_id);
        sent.push(e);
    }
    for i in 0..30 {
        let org = other_orgs[i % other_orgs.len()];
        let (e, bytes) = v1_event(org, format!("during/{i}"));
        send(
            &producer,
            partition_for(PartitionKey::Org(org), partitions),
            &e.record_key(),
            &bytes,
        )
        .await;
        sent.push(e);
    }
    wait_until(
        Duration::from_secs(60),
        "cached-schema records to flow while the registry is down",
        processed(50),
    )
    .await
    .expect("the other partitions keep flowing");
    let l = log.clone();
    wait_until(
        Duration::from_secs(30),
        "a warning about the registry",
        || {
            let warned = l.text().contains("waiting for the schema registry");
            async move { warned }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", log.text()));
    assert_eq!(
        m.total(PROCESSED),
        50,
        "the uncached record and those behind it wait"
    );
    assert_eq!(
        m.total(DEAD_LETTERED),
        0,
        "nothing is dead-lettered for an outage"
    );
    assert!(!stage.task.is_finished(), "the stage keeps running");

    // 3. Registry back: the held record and those behind it are processed, in order.
    proxy.restore();
    wait_until(
        Duration::from_secs(60),
        "the held records after the outage",
        processed(56),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: processed {}", m.total(PROCESSED)));
    let metrics = stage.metrics.clone();
    stage.stop().await.expect("clean stop");
    assert_eq!(metrics.total(DEAD_LETTERED), 0);

    let outputs = read_records(
        &b,
        Topic::AuditEvents.name(),
        sent.len(),
        Duration::from_secs(30),
    )
    .expect("outputs");
    let mut causes: Vec<(i32, Id)> = Vec::new();
    for r in &outputs {
        let e: Event<AuditEvent> = producer_codec
            .decode(r.payload().unwrap_or_default())
            .await
            .expect("outputs decode");
        causes.push((r.partition(), e.metadata.causation_id.expect("caused")));
    }
    let mut want: Vec<Id> = sent.iter().map(|e| e.metadata.event_id).collect();
    let mut got: Vec<Id> = causes.iter().map(|(_, c)| *c).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "every record processed exactly once");
    // On the held org's output partition, the new-schema record came before those behind it.
    let out_partition = partition_for(
        PartitionKey::Org(held_org),
        Topic::AuditEvents.spec().partitions,
    );
    let order: Vec<Id> = causes
        .iter()
        .filter(|(p, c)| {
            *p == out_partition && (*c == new_schema.metadata.event_id || behind.contains(c))
        })
        .map(|(_, c)| *c)
        .collect();
    let mut expected = vec![new_schema.metadata.event_id];
    expected.extend(&behind);
    assert_eq!(order, expected, "the held partition kept its order");
}
