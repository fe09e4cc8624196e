//! Gold when its PostgreSQL goes away (a proxy in front of the real server is cut): records
//! wait instead of going to the DLQ, and once the database is back every row is counted once.
//! On librdkafka's mock cluster, so the test needs no broker binary.

use std::{sync::Arc, time::Duration};

use chrono::{Days, Utc};
use envelope::{Codec, Date, Money};
use gold::stage::{Gold, GoldSettings};
use runtime::{
    RuntimeArgs,
    dedupe::Dedupe,
    metrics::{DEAD_LETTERED, PROCESSED},
    testing::RunningStage,
};
use testkit::{CutProxy, bench::fill, pg::TestSchema, wait_until};
use topics::{PartitionKey, Topic, partition_for};

/// Rows `from..to`: 8 orgs, 2 campaigns, distinct entities, one day.
fn rows(codec: &Codec, from: usize, to: usize) -> Vec<(i32, String, Vec<u8>)> {
    let day = Date(Utc::now().date_naive() - Days::new(1));
    (from..to)
        .map(|i| {
            let org = (i % 8 + 1) as i64;
            let spend = Money::from_unscaled(1_000).expect("money");
            let e = gold::fixtures::delivery_row(
                org,
                &format!("c{}", i % 2),
                &format!("e{i}"),
                day,
                100,
                spend,
            );
            let p = partition_for(
                PartitionKey::Org(org),
                Topic::SilverDataProcessed.spec().partitions,
            );
            (p, e.record_key(), codec.encode(&e).expect("encode"))
        })
        .collect()
}

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_outage_makes_gold_wait_and_lose_nothing() {
    let (_mock, b) = common::mock_cluster();
    let schema = TestSchema::create("gold_outage").await.expect("schema");
    let proxy = CutProxy::start("127.0.0.1:5432").await.expect("proxy");
    let codec = Arc::new(Codec::offline());
    fill(&b, "silver.data.processed", &rows(&codec, 0, 100)).await;

    let gold = Gold::new(GoldSettings::for_tests(schema.url_via(proxy.port())));
    let waits = gold.metrics().batch.waits;
    // Three attempts for retryable errors: had gold's batches handed the outage to the
    // runtime as plain retries, it would dead-letter them.
    let stage = RunningStage::start(
        gold,
        RuntimeArgs::for_tests(&b),
        codec.clone(),
        Dedupe::memory(1000),
    );
    let m = stage.metrics.clone();
    let processed = |n: u64| {
        let m = m.clone();
        move || {
            let done = m.total(PROCESSED) >= n;
            async move { done }
        }
    };
    wait_until(
        Duration::from_secs(60),
        "the first 100 rows",
        processed(100),
    )
    .await
    .expect("before the outage");

    proxy.cut().await;
    fill(&b, "silver.data.processed", &rows(&codec, 100, 200)).await;
    let waiting = {
        let waits = waits.clone();
        let before = waits.get();
        // Five failed attempts of a batch take about 1.5 s of backoff: well past the
        // runtime's 3 attempts per record.
        move || {
            let n = waits.get();
            async move { n >= before + 5 }
        }
    };
    wait_until(
        Duration::from_secs(60),
        "gold's batches waiting for PostgreSQL",
        waiting,
    )
    .await
    .expect("waiting");
    assert_eq!(
        m.total(DEAD_LETTERED),
        0,
        "nothing dead-lettered while down"
    );
    assert!(m.total(PROCESSED) < 200, "nothing processed while down");

    proxy.restore();
    wait_until(Duration::from_secs(90), "all 200 rows", processed(200))
        .await
        .expect("after the outage");
    stage.stop().await.expect("clean stop");
    assert_eq!(m.total(DEAD_LETTERED), 0);

    let total: i64 = schema
        .admin()
        .query_one(
            &format!(
                "SELECT sum(impressions)::bigint FROM {}.gold_days",
                schema.name()
            ),
            &[],
        )
        .await
        .expect("sum")
        .get(0);
    assert_eq!(total, 200 * 100, "every row counted once");
    schema.drop().await;
}
