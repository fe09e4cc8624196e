//! Gold's batches (`bins/gold/src/batch.rs`) on a backlog: many rows per statement, versions
//! of one key and corrections that move a row between campaigns inside one batch, then a row
//! PostgreSQL refuses among new ones. Only that row is dead-lettered; every other row counts
//! once, with its last version; each campaign's last daily aggregate carries the final
//! totals. On librdkafka's mock cluster and the real PostgreSQL.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{Days, Utc};
use envelope::{
    Codec, Date, Event, Money,
    payload::gold::{AggregateReady, Grain},
};
use gold::stage::{Gold, GoldSettings};
use rdkafka::Message;
use runtime::{
    RuntimeArgs,
    dedupe::Dedupe,
    metrics::{DEAD_LETTERED, PROCESSED},
    testing::RunningStage,
};
use testkit::{bench::fill, header, pg::TestSchema, read_records, wait_until};
use topics::{PartitionKey, Topic, partition_for};

mod common;

const ORG: i64 = 11;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_written_in_batches_and_a_refused_row_fails_alone() {
    let (_mock, b) = common::mock_cluster();
    let schema = TestSchema::create("gold_batches").await.expect("schema");
    let codec = Arc::new(Codec::offline());
    let day = Date(Utc::now().date_naive() - Days::new(1));
    let partition = partition_for(
        PartitionKey::Org(ORG),
        Topic::SilverDataProcessed.spec().partitions,
    );

    // First 300 entities over two campaigns, then a second version of the first 100, all in
    // c1 (the even ones move out of c0), and a third version of the first 20.
    let mut inputs = Vec::new();
    let mut last: HashMap<String, (String, i64)> = HashMap::new();
    let mut row = |inputs: &mut Vec<_>, entity: String, campaign: String, impressions: i64| {
        let spend = Money::from_unscaled(impressions * 10).expect("money");
        let e = gold::fixtures::delivery_row(ORG, &campaign, &entity, day, impressions, spend);
        inputs.push((partition, e.record_key(), codec.encode(&e).expect("encode")));
        last.insert(entity, (campaign, impressions));
    };
    for i in 0..300 {
        row(&mut inputs, format!("e{i}"), format!("c{}", i % 2), 100);
    }
    for i in 0..100 {
        row(&mut inputs, format!("e{i}"), "c1".into(), 300);
    }
    for i in 0..20 {
        row(&mut inputs, format!("e{i}"), "c1".into(), 500);
    }
    // Then, once those are done, new rows with one PostgreSQL refuses (a NUL byte) among them.
    let mut more = Vec::new();
    for i in 300..340 {
        row(&mut more, format!("e{i}"), format!("c{}", i % 2), 100);
        if i == 320 {
            row(&mut more, "bad\0entity".into(), "c0".into(), 1_000_000);
        }
    }
    last.remove("bad\0entity");
    let total = (inputs.len() + more.len()) as u64;
    fill(&b, "silver.data.processed", &inputs).await;

    let gold = Gold::new(GoldSettings {
        database_connections: 1,
        ..GoldSettings::for_tests(schema.url())
    });
    let gold_metrics = gold.metrics();
    let stage = RunningStage::start(
        gold,
        RuntimeArgs::for_tests(&b),
        codec.clone(),
        Dedupe::memory(10_000),
    );
    let m = stage.metrics.clone();
    let done = |n: u64| {
        let m = m.clone();
        move || {
            let done = m.total(PROCESSED) + m.total(DEAD_LETTERED) >= n;
            async move { done }
        }
    };
    wait_until(
        Duration::from_secs(90),
        "the first rows",
        done(inputs.len() as u64),
    )
    .await
    .expect("gold takes the backlog");
    // Batches holding several versions of a key and moves between campaigns are written
    // whole.
    assert_eq!(gold_metrics.batch.split.get(), 0, "runs split");
    assert_eq!(m.total(DEAD_LETTERED), 0);
    fill(&b, "silver.data.processed", &more).await;
    wait_until(Duration::from_secs(90), "every row", done(total))
        .await
        .expect("gold takes the rest");
    let dead = read_records(&b, "silver.data.processed.dlq", 1, Duration::from_secs(10))
        .expect("dead letters");
    stage.stop().await.expect("clean stop");

    // Only the refused row is dead-lettered, with PostgreSQL's reason.
    assert_eq!(dead.len(), 1, "one dead letter");
    assert_eq!(m.total(DEAD_LETTERED), 1);
    assert_eq!(
        header(&dead[0], "dlq.error.code").as_deref(),
        Some("STORE_QUERY")
    );
    let reason = header(&dead[0], "dlq.error.message").unwrap_or_default();
    assert!(reason.contains("0x00"), "PostgreSQL's reason: {reason}");

    // Batched: far fewer statements than rows; only the refused row's run was split.
    let (batches, batched) = (
        gold_metrics.batch.batches.get(),
        gold_metrics.batch.inputs.get(),
    );
    assert_eq!(batched, total, "every input went through a batch");
    assert_eq!(gold_metrics.batch.split.get(), 1, "runs split");
    assert!(
        batches * 5 <= total,
        "{batches} batches for {total} inputs: not batched"
    );

    // Every other row counted once, in its last version and campaign.
    let mut expected: HashMap<String, (i64, i64)> = HashMap::new();
    for (campaign, impressions) in last.values() {
        let e = expected.entry(campaign.clone()).or_default();
        e.0 += impressions;
        e.1 += 1;
    }
    let stored: HashMap<String, (i64, i64)> = schema
        .admin()
        .query(
            &format!(
                "SELECT campaign_id, sum(impressions)::bigint, sum(rows)::bigint FROM {}.gold_days \
                 WHERE org_id = $1 GROUP BY campaign_id",
                schema.name()
            ),
            &[&ORG],
        )
        .await
        .expect("sums")
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    assert_eq!(stored, expected, "per campaign: impressions and rows");

    // Each campaign's last daily aggregate holds the final totals; fewer aggregates than
    // three per row (one per campaign and day per batch).
    let outputs =
        read_records(&b, "gold.data.ready", 10_000, Duration::from_secs(5)).expect("aggregates");
    assert!(!outputs.is_empty());
    assert!(
        (outputs.len() as u64) < 3 * total,
        "{} aggregates for {total} rows: not coalesced",
        outputs.len()
    );
    let mut daily: HashMap<String, (i64, i64)> = HashMap::new();
    let mut ordered: Vec<_> = outputs.iter().collect();
    ordered.sort_by_key(|r| r.offset());
    for r in ordered {
        let e: Event<AggregateReady> = codec
            .decode_known(r.payload().expect("value"))
            .expect("aggregate decodes");
        assert_eq!(e.metadata.org_id, ORG);
        if e.payload.grain == Grain::Daily && e.payload.line_item_id.is_none() {
            daily.insert(
                e.payload.campaign_id.clone(),
                (e.payload.impressions, e.payload.rows),
            );
        }
    }
    assert_eq!(daily, expected, "the last daily aggregate of each campaign");
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_value_gold_cannot_read_back_fails_the_batch_instead_of_stalling_it() {
    let (_mock, b) = common::mock_cluster();
    let schema = TestSchema::create("gold_unreadable").await.expect("schema");
    let codec = Arc::new(Codec::offline());
    let day = Date(Utc::now().date_naive() - Days::new(1));
    let partition = partition_for(
        PartitionKey::Org(ORG),
        Topic::SilverDataProcessed.spec().partitions,
    );
    let rows = |campaign: &str, n: usize| -> Vec<(i32, String, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let spend = Money::from_unscaled(100).expect("money");
                let e = gold::fixtures::delivery_row(
                    ORG,
                    campaign,
                    &format!("{campaign}-e{i}"),
                    day,
                    100,
                    spend,
                );
                (partition, e.record_key(), codec.encode(&e).expect("encode"))
            })
            .collect()
    };
    let gold = Gold::new(GoldSettings::for_tests(schema.url()));
    let stage = RunningStage::start(
        gold,
        RuntimeArgs::for_tests(&b),
        codec.clone(),
        Dedupe::memory(1_000),
    );
    let m = stage.metrics.clone();
    let counts = |processed: u64, dead: u64| {
        let m = m.clone();
        move || {
            let done = m.total(PROCESSED) == processed && m.total(DEAD_LETTERED) == dead;
            async move { done }
        }
    };
    // A first row migrates the schema; then campaign "cx" gets a booking whose budget fits
    // PostgreSQL's numeric(20,2) but not an adpipe amount.
    fill(&b, "silver.data.processed", &rows("c-ok", 1)).await;
    wait_until(Duration::from_secs(60), "the first row", counts(1, 0))
        .await
        .expect("gold runs");
    schema
        .admin()
        .execute(
            &format!(
                "INSERT INTO {}.gold_bookings (org_id, campaign_id, line_item_id, source, \
                 version, booked_impressions, booked_budget, booking_revenue, flight_start, \
                 flight_end) VALUES ($1, 'cx', '', 'config', 1, 1000, \
                 999999999999999999.99, 1, $2, $2)",
                schema.name()
            ),
            &[&ORG, &day.0],
        )
        .await
        .expect("booking");
    fill(&b, "silver.data.processed", &rows("cx", 5)).await;
    wait_until(
        Duration::from_secs(60),
        "the unreadable campaign's rows dead-lettered",
        counts(1, 5),
    )
    .await
    .expect("the rows fail instead of waiting");
    // The stage goes on with other campaigns.
    fill(&b, "silver.data.processed", &rows("cy", 3)).await;
    wait_until(Duration::from_secs(60), "later rows", counts(4, 5))
        .await
        .expect("later rows processed");
    let dead = read_records(&b, "silver.data.processed.dlq", 5, Duration::from_secs(10))
        .expect("dead letters");
    stage.stop().await.expect("clean stop");
    assert_eq!(dead.len(), 5);
    for d in &dead {
        assert_eq!(
            header(d, "dlq.error.code").as_deref(),
            Some("STORE_CORRUPT")
        );
    }
    schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_refused_for_what_is_stored_fails_again_when_replayed() {
    let (_mock, b) = common::mock_cluster();
    let schema = TestSchema::create("gold_refused_replay")
        .await
        .expect("schema");
    let codec = Arc::new(Codec::offline());
    let day = Date(Utc::now().date_naive() - Days::new(1));
    let partition = partition_for(
        PartitionKey::Org(ORG),
        Topic::SilverDataProcessed.spec().partitions,
    );
    let row = |campaign: &str, entity: &str, impressions: i64| {
        let spend = Money::from_unscaled(100).expect("money");
        let e = gold::fixtures::delivery_row(ORG, campaign, entity, day, impressions, spend);
        (partition, e.record_key(), codec.encode(&e).expect("encode"))
    };
    // The second row of "big" overflows the day's impressions (bigint) as stored after the
    // first: PostgreSQL refuses it for the state, not for its own bytes, so a replay of it
    // (no longer new, no sum to add) would pass unless its failure was kept.
    let first = [
        row("big", "big-1", i64::MAX - 10),
        row("ok", "ok-1", 100),
        row("big", "big-2", 100),
        row("ok", "ok-2", 100),
    ];
    fill(&b, "silver.data.processed", &first).await;
    let run = || {
        let gold = Gold::new(GoldSettings::for_tests(schema.url()));
        RunningStage::start(
            gold,
            RuntimeArgs::for_tests(&b),
            codec.clone(),
            Dedupe::memory(1_000),
        )
    };
    let settled = |stage: &RunningStage| {
        let m = stage.metrics.clone();
        move || {
            let done = m.total(PROCESSED) + m.total(DEAD_LETTERED) >= 4;
            async move { done }
        }
    };
    let stage = run();
    wait_until(Duration::from_secs(60), "the rows", settled(&stage))
        .await
        .expect("gold takes them");
    let m = stage.metrics.clone();
    stage.stop().await.expect("clean stop");
    assert_eq!((m.total(PROCESSED), m.total(DEAD_LETTERED)), (3, 1));
    let dead = read_records(&b, "silver.data.processed.dlq", 1, Duration::from_secs(10))
        .expect("dead letters");
    assert_eq!(
        header(&dead[0], "dlq.error.code").as_deref(),
        Some("STORE_QUERY")
    );
    let reason = header(&dead[0], "dlq.error.message").unwrap_or_default();
    assert!(
        reason.contains("out of range"),
        "PostgreSQL's reason: {reason}"
    );

    // A crash that lost every commit: the four again, every one a replay.
    let partitions = i32::try_from(Topic::SilverDataProcessed.spec().partitions).expect("fits");
    testkit::rewind_group(
        &b,
        topics::ConsumerGroup::GoldProcessor.name(),
        Topic::SilverDataProcessed.name(),
        partitions,
    )
    .expect("rewind");
    let again = run();
    wait_until(Duration::from_secs(60), "the replays", settled(&again))
        .await
        .expect("gold takes them again");
    let m = again.metrics.clone();
    again.stop().await.expect("clean stop");
    assert_eq!(
        (m.total(PROCESSED), m.total(DEAD_LETTERED)),
        (3, 1),
        "the refused row fails again"
    );
    let dead = read_records(&b, "silver.data.processed.dlq", 3, Duration::from_secs(5))
        .expect("dead letters");
    assert_eq!(dead.len(), 2);
    assert_eq!(
        header(&dead[1], "dlq.error.code").as_deref(),
        Some("STORE_QUERY")
    );
    schema.drop().await;
}
