//! A generated corpus of bad records among good ones, through a stage on a real broker:
//! every bad record ends in `{topic}.dlq` exactly once with its original key, partition and
//! bytes and the decoder's error code; every good record is processed exactly once.
//! (`stage.rs` `outputs_dlq_and_offsets` checks the headers on a small fixed set; this test
//! checks the contract holds for whatever the generator makes.)

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use envelope::{
    Codec, Event, Id,
    payload::{audit::AuditEvent, config::ConfigChange},
};
use proptest::{
    collection::vec,
    prelude::*,
    strategy::ValueTree,
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};
use rdkafka::{Message, producer::FutureProducer};
use runtime::{
    RuntimeArgs,
    dedupe::Dedupe,
    metrics::{DEAD_LETTERED, PROCESSED},
    testing::{Echo, RunningStage, config_change},
};
use testkit::{Broker, client_config, header, read_records, wait_until};
use topics::{PartitionKey, Topic, partition_for};

/// How many bad and good records the corpus holds.
const BAD: usize = 240;
const GOOD: usize = 300;

/// A bad value for `config.changes`, made from a valid record `valid` of that topic and one
/// of another topic (`other`): every kind the decoder must refuse.
fn bad_value(valid: Vec<u8>, other: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let (v1, v2, v3, v4) = (valid.clone(), valid.clone(), valid.clone(), valid);
    prop_oneof![
        // Anything at all (JSON, text, random bytes).
        vec(any::<u8>(), 0..300),
        "\\{\"[a-z]{1,8}\": [0-9]{1,5}\\}".prop_map(String::into_bytes),
        // Shorter than the header.
        vec(any::<u8>(), 0..5).prop_map(|mut b| {
            if let Some(first) = b.first_mut() {
                *first = 0;
            }
            b
        }),
        // A wrong magic byte before a valid record's rest.
        (1u8..=255).prop_map(move |m| {
            let mut b = v1.clone();
            b[0] = m;
            b
        }),
        // An id no registry gave out.
        (1_000u32..u32::MAX).prop_map(move |id| {
            let mut b = v2.clone();
            b[1..5].copy_from_slice(&id.to_be_bytes());
            b
        }),
        // A truncated valid record.
        any::<prop::sample::Index>().prop_map(move |i| v3[..5 + i.index(v3.len() - 5)].to_vec()),
        // A valid record with bytes appended.
        vec(any::<u8>(), 1..16).prop_map(move |tail| {
            let mut b = v4.clone();
            b.extend_from_slice(&tail);
            b
        }),
        // Valid Avro of another topic's schema.
        Just(other),
    ]
}

/// The generated corpus: distinct bad values, each with the code the decoder gives it.
fn corpus(codec: &Codec) -> Vec<(Vec<u8>, &'static str)> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[13; 32]),
    );
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    while out.len() < BAD {
        let change = any::<Event<ConfigChange>>()
            .new_tree(&mut runner)
            .expect("a config change")
            .current();
        let audit = any::<Event<AuditEvent>>()
            .new_tree(&mut runner)
            .expect("an audit event")
            .current();
        let valid = codec.encode(&change).expect("encode");
        let other = codec.encode(&audit).expect("encode");
        let value = bad_value(valid, other)
            .new_tree(&mut runner)
            .expect("a bad value")
            .current();
        // What the stage's decoder will say (a generated value may, rarely, be valid).
        if let Err(e) = codec.decode_known::<ConfigChange>(&value)
            && seen.insert(value.clone())
        {
            out.push((value, e.code()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_corpus_of_bad_records_all_reaches_the_dlq_and_the_good_ones_all_flow() {
    let (_broker, b) = Broker::with_stage_topics(&[Topic::ConfigChanges, Topic::AuditEvents])
        .await
        .expect("broker");
    let codec = Arc::new(Codec::offline());
    let partitions = Topic::ConfigChanges.spec().partitions;

    let bad = corpus(&codec);
    let good: Vec<Event<ConfigChange>> = (0..GOOD)
        .map(|i| config_change((i % 23) as i64 + 1, &format!("good/{i}")))
        .collect();
    // Interleave: a bad record after every good one or so, on every partition; each bad
    // record's key names it, so its dead letter can be matched.
    let mut records: Vec<(i32, String, Vec<u8>)> = Vec::new();
    let mut bad_iter = bad.iter().enumerate();
    for (i, e) in good.iter().enumerate() {
        records.push((
            partition_for(PartitionKey::Org(e.metadata.org_id), partitions),
            e.record_key(),
            codec.encode(e).expect("encode"),
        ));
        if i % 5 != 4
            && let Some((j, (value, _))) = bad_iter.next()
        {
            records.push((
                j as i32 % partitions as i32,
                format!("bad/{j}"),
                value.clone(),
            ));
        }
    }
    for (j, (value, _)) in bad_iter {
        records.push((
            j as i32 % partitions as i32,
            format!("bad/{j}"),
            value.clone(),
        ));
    }
    let producer: FutureProducer = client_config(&b)
        .set("acks", "all")
        .create()
        .expect("producer");
    testkit::produce_in_order(&producer, Topic::ConfigChanges.name(), &records).await;

    let stage = RunningStage::start(
        Echo,
        RuntimeArgs::for_tests(&b),
        codec.clone(),
        Dedupe::memory(10_000),
    );
    let metrics = stage.metrics.clone();
    let m = metrics.clone();
    wait_until(
        Duration::from_secs(120),
        "every record processed or dead-lettered",
        || {
            let done = m.total(PROCESSED) == GOOD as u64 && m.total(DEAD_LETTERED) == BAD as u64;
            async move { done }
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: processed {}, dead-lettered {}",
            m.total(PROCESSED),
            m.total(DEAD_LETTERED)
        )
    });
    stage.stop().await.expect("clean stop");

    // Every bad record in the DLQ once: same key, partition and bytes, the decoder's code.
    let dlq = read_records(
        &b,
        &Topic::ConfigChanges.dlq(),
        BAD,
        Duration::from_secs(30),
    )
    .expect("dead letters");
    // Reading exactly BAD: a record dead-lettered twice would crowd out another one.
    assert_eq!(dlq.len(), BAD, "one dead letter per bad record");
    let mut by_key: HashMap<String, &rdkafka::message::OwnedMessage> = HashMap::new();
    for d in &dlq {
        let key = String::from_utf8_lossy(d.key().unwrap_or_default()).into_owned();
        assert!(
            by_key.insert(key.clone(), d).is_none(),
            "{key} dead-lettered twice"
        );
    }
    let mut codes: HashMap<&str, usize> = HashMap::new();
    for (j, (value, code)) in bad.iter().enumerate() {
        let d = by_key
            .get(&format!("bad/{j}"))
            .unwrap_or_else(|| panic!("bad/{j} ({code}) is not in the DLQ"));
        assert_eq!(
            d.payload().unwrap_or_default(),
            value.as_slice(),
            "bad/{j}: original bytes"
        );
        assert_eq!(
            d.partition(),
            j as i32 % partitions as i32,
            "bad/{j}: partition"
        );
        assert_eq!(
            header(d, "dlq.error.code").as_deref(),
            Some(*code),
            "bad/{j}"
        );
        assert!(header(d, "dlq.error.message").is_some_and(|m| !m.is_empty()));
        assert_eq!(
            header(d, "dlq.original.topic").as_deref(),
            Some(Topic::ConfigChanges.name())
        );
        *codes.entry(code).or_default() += 1;
    }
    eprintln!("dead letters by code: {codes:?}");
    assert!(codes.len() >= 5, "the corpus covers many kinds: {codes:?}");

    // Every good record processed once: one audit event caused by each.
    let outputs = read_records(&b, Topic::AuditEvents.name(), GOOD, Duration::from_secs(30))
        .expect("outputs");
    let causes: Vec<Id> = outputs
        .iter()
        .map(|r| {
            let e: Event<AuditEvent> = codec
                .decode_known(r.payload().unwrap_or_default())
                .expect("outputs decode");
            e.metadata.causation_id.expect("caused by an input")
        })
        .collect();
    let distinct: HashSet<Id> = causes.iter().copied().collect();
    assert_eq!(causes.len(), GOOD, "one output per good record");
    assert_eq!(
        distinct,
        good.iter()
            .map(|e| e.metadata.event_id)
            .collect::<HashSet<_>>()
    );
}
