//! Transactional mode: on Tansu, outputs, dead letters and the consumed offsets are committed
//! together in transactions; on librdkafka's mock cluster (which can be told to refuse
//! EndTxn), a failed commit stops the stage with the reason instead of going on.
//!
//! Not checked here: that `read_committed` readers never see an aborted transaction's
//! outputs. Neither broker this machine runs isolates aborted transactions (Tansu 0.6 and
//! the mock cluster both deliver them), so that guarantee rests on a real Kafka broker.

mod common;

use std::{sync::Arc, time::Duration};

use envelope::Codec;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use runtime::{
    Processor, RuntimeArgs,
    dedupe::Dedupe,
    metrics::{DEAD_LETTERED, PROCESSED},
    testing::{Echo, RunningStage, config_change},
};
use testkit::{Broker, MockBroker, bench::fill, committed_offsets, read_records, wait_until};
use topics::{PartitionKey, Topic, partition_for};

const PARTITIONS: i32 = 6;

fn transactional(b: &str) -> RuntimeArgs {
    let mut args = RuntimeArgs::for_tests(b);
    args.transactional = true;
    args.transaction_ms = 50;
    args
}

/// `n` config changes and `garbage` undecodable records on config.changes; returns how many
/// records each partition got (Tansu's high watermark under-reports batched produce).
async fn inputs(b: &str, codec: &Codec, n: usize, garbage: usize) -> Vec<i64> {
    let mut records: Vec<(i32, String, Vec<u8>)> = (0..n)
        .map(|i| {
            let e = config_change((i % 9 + 1) as i64, &format!("k/{i}"));
            let p = partition_for(PartitionKey::Org(e.metadata.org_id), 6);
            (p, e.record_key(), codec.encode(&e).expect("encode"))
        })
        .collect();
    records.extend((0..garbage).map(|i| (i as i32 % PARTITIONS, "1".into(), b"garbage".to_vec())));
    fill(b, "config.changes", &records).await;
    let mut per_partition = vec![0i64; PARTITIONS as usize];
    for (p, _, _) in &records {
        per_partition[*p as usize] += 1;
    }
    per_partition
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_dead_letters_and_offsets_commit_together() {
    let (_broker, b) = Broker::with_stage_topics(&[Topic::ConfigChanges, Topic::AuditEvents])
        .await
        .expect("broker");
    let codec = Arc::new(Codec::offline());
    let ends = inputs(&b, &codec, 300, 3).await;

    let stage = RunningStage::start(Echo, transactional(&b), codec.clone(), Dedupe::memory(1000));
    let m = stage.metrics.clone();
    wait_until(
        Duration::from_secs(60),
        "all processed or dead-lettered",
        || {
            let done = m.total(PROCESSED) == 300 && m.total(DEAD_LETTERED) == 3;
            async move { done }
        },
    )
    .await
    .expect("processed");
    stage.stop().await.expect("clean stop");

    assert_eq!(
        committed_offsets(&b, Echo::GROUP.name(), "config.changes", PARTITIONS).expect("committed"),
        ends,
        "the offsets were committed in the transactions"
    );
    assert_eq!(
        common::outputs_and_causes(&b, &codec, 300, Duration::from_secs(6)),
        (300, 300)
    );
    let dead = read_records(&b, "config.changes.dlq", 10, Duration::from_secs(4)).expect("dlq");
    assert_eq!(dead.len(), 3, "dead letters committed too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_stops_the_stage_with_the_reason() {
    let mock = MockBroker::start(1).expect("mock cluster");
    let b = mock.bootstrap();
    mock.create_stage_topics(&[Topic::ConfigChanges, Topic::AuditEvents])
        .expect("topics");
    let codec = Arc::new(Codec::offline());
    let _ = inputs(&b, &codec, 200, 0).await;

    // The broker refuses to end transactions: the first commit fails and the stage stops
    // with the reason (its restart resumes from the last committed transaction).
    mock.cluster().request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_TXN_STATE; 50],
    );
    let first = RunningStage::start(Echo, transactional(&b), codec.clone(), Dedupe::memory(1000));
    let first_metrics = first.metrics.clone();
    let ended = tokio::time::timeout(Duration::from_secs(60), first.task)
        .await
        .expect("the stage stopped by itself")
        .expect("not aborted");
    let err = ended.expect_err("a failed transaction is an error exit");
    assert!(format!("{err:#}").contains("transaction"), "{err:#}");
    assert!(
        first_metrics.total(PROCESSED) > 0,
        "it had processed records"
    );
}
