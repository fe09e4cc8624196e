//! The metrics the spec names, read from what a running stage renders on `/metrics`: bytes
//! in (exactly the bytes consumed), the processing-latency histogram (one observation per
//! record) and `kafka_consumer_lag` per assigned partition, drained to zero.

use std::{sync::Arc, time::Duration};

use envelope::Codec;
use runtime::{
    RuntimeArgs,
    dedupe::Dedupe,
    metrics::{BYTES_IN, CONSUMER_LAG, PROCESSED, PROCESSING_SECONDS},
    testing::{Echo, RunningStage, config_change},
};
use testkit::{Broker, bench::fill, wait_until};
use topics::{PartitionKey, Topic, partition_for};

/// The values of the samples named exactly `name` in `text`.
fn values(text: &str, name: &str) -> Vec<f64> {
    testkit::samples(text, name)
        .into_iter()
        .map(|(_, v)| v)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_in_latency_and_lag_are_exported() {
    let (_broker, b) = Broker::with_stage_topics(&[Topic::ConfigChanges, Topic::AuditEvents])
        .await
        .expect("broker");
    let codec = Arc::new(Codec::offline());
    let records: Vec<(i32, String, Vec<u8>)> = (0..120)
        .map(|i| {
            let e = config_change(i % 9 + 1, &format!("m/{i}"));
            (
                partition_for(PartitionKey::Org(e.metadata.org_id), 6),
                e.record_key(),
                codec.encode(&e).expect("encode"),
            )
        })
        .collect();
    let bytes: usize = records.iter().map(|(_, _, v)| v.len()).sum();
    let partitions: std::collections::HashSet<i32> = records.iter().map(|r| r.0).collect();
    fill(&b, "config.changes", &records).await;

    let stage = RunningStage::start(
        Echo,
        RuntimeArgs::for_tests(&b),
        codec,
        Dedupe::memory(1000),
    );
    let metrics = stage.metrics.clone();
    wait_until(Duration::from_secs(60), "every record processed", || {
        let done = metrics.total(PROCESSED) == records.len() as u64;
        async move { done }
    })
    .await
    .expect("processed");

    let text = metrics.render();
    let bytes_in: f64 = values(&text, &format!("{BYTES_IN}_total")).iter().sum();
    assert_eq!(bytes_in, bytes as f64, "bytes in = the bytes consumed");
    let observed: f64 = values(&text, &format!("{PROCESSING_SECONDS}_count"))
        .iter()
        .sum();
    assert_eq!(observed, records.len() as f64, "one latency per record");
    assert!(
        values(&text, &format!("{PROCESSING_SECONDS}_sum"))
            .iter()
            .sum::<f64>()
            > 0.0
    );

    // The lag gauge (refreshed every 5 s) covers every partition with records, and drains.
    wait_until(Duration::from_secs(30), "lag reported and drained", || {
        let lag = values(&metrics.render(), CONSUMER_LAG);
        let ok = lag.len() >= partitions.len() && lag.iter().all(|l| *l <= 0.0);
        async move { ok }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}:\n{}", metrics.render()));
    stage.stop().await.expect("clean stop");
}
