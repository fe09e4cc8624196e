//! The audit writer working through a backlog, on a real Tansu broker, the project's
//! registry and the local PostgreSQL: rows/s from the first record consumed to the last
//! batch committed, beside a baseline measured in the same run on the same database — a
//! plain batched insert of the same rows (500 per multi-row `INSERT … UNNEST … ON CONFLICT
//! DO NOTHING` statement, one connection, events already decoded in memory, no Kafka).
//!
//! `cargo bench -p audit-writer --bench writer` (`make bench`); `BENCH_ROWS` sets the backlog
//! (default 100,000 events). The writer runs with its defaults (batches of 500, 20 ms linger,
//! 500 records per partition in flight) and `REDIS_URL` set, as in production — which the
//! audit writer does not use: its table is keyed by event_id (`Processor::DEDUPE` is off).
//! With the runtime's Redis dedupe on, the same run measured 9,449 rows/s (13.2 % of the
//! baseline); off, 35,701 rows/s (52.6 %): two Redis round trips per record were the limit.

use std::time::{Duration, Instant};

use audit_writer::store::AuditStore;
use envelope::{
    Event, Source, Timestamp,
    payload::{
        audit::{AuditCategory, AuditEvent, Outcome},
        common::{Actor, ActorType, EntityRef, EntityType},
    },
};
use testbed::TestBed;
use testkit::{StageProcess, pg::TestSchema};
use topics::Topic;

/// One audit event of org `i % 50`, in the shape stages emit (a data decision with details).
fn event(i: usize) -> Event<AuditEvent> {
    let org = (i % 50 + 1) as i64;
    let details = [
        ("stage".to_owned(), "silver-processor".to_owned()),
        ("request_id".to_owned(), format!("req-{}", i / 100)),
    ]
    .into();
    Event::new(
        org,
        Source {
            service: "silver-processor".into(),
            instance: "bench".into(),
        },
        AuditEvent {
            action: "row.quarantined".into(),
            category: AuditCategory::Data,
            actor: Actor {
                actor_type: ActorType::Service,
                actor_id: "silver-processor".into(),
                display_name: None,
            },
            entity: EntityRef {
                entity_type: EntityType::LineItem,
                entity_id: format!("li-{}", i % 5_000),
                name: None,
            },
            outcome: Outcome::Success,
            occurred_at: Timestamp::now(),
            reason: Some("quality score 40 below 60".into()),
            before: None,
            after: Some(format!(r#"{{"score":40,"row":{i}}}"#)),
            details,
        },
    )
}

/// The baseline: the same rows inserted in batches of 500 on one connection.
async fn baseline(events: &[Event<AuditEvent>]) -> Duration {
    let schema = TestSchema::create("audit_bench_base")
        .await
        .expect("schema");
    let mut store = AuditStore::connect(&schema.url()).await.expect("connect");
    store.migrate().await.expect("migrate");
    let start = Instant::now();
    for chunk in events.chunks(500) {
        store.insert_batch(chunk).await.expect("insert");
    }
    let elapsed = start.elapsed();
    assert_eq!(store.count().await.expect("count"), events.len() as i64);
    schema.drop().await;
    elapsed
}

/// The audit-writer binary on the backlog already in audit.events (into the bed's schema).
async fn writer(bed: &TestBed, rows: usize) -> Duration {
    let mut env = bed.stage_env();
    env.extend([
        ("AUDIT_DATABASE_URL", bed.schema.url()),
        ("REDIS_URL", "redis://127.0.0.1:6379".to_owned()),
        ("DEDUPE_TTL_SECS", "600".to_owned()),
    ]);
    let writer = StageProcess::spawn(
        env!("CARGO_BIN_EXE_audit-writer"),
        &env,
        &bed.dir.path().join("audit-writer.log"),
    )
    .expect("audit-writer starts");
    let elapsed = testbed::drain(writer.metrics_port(), rows, "audit-writer", |_| {}).await;
    let store = AuditStore::connect(&bed.schema.url())
        .await
        .expect("connect");
    assert_eq!(store.count().await.expect("count"), rows as i64);
    elapsed
}

fn main() {
    let rows: usize = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let bed = TestBed::start("audit_bench", &[Topic::AuditEvents])
            .await
            .expect("test bed");
        let events: Vec<_> = (0..rows).map(event).collect();
        eprintln!("filling audit.events with {rows} events...");
        bed.fill(&events).await;

        eprintln!("baseline: batched inserts...");
        let base = baseline(&events).await;
        eprintln!("audit-writer on the backlog...");
        let writer = writer(&bed, rows).await;

        let rate = |d: Duration| rows as f64 / d.as_secs_f64();
        println!(
            "audit-writer on a backlog (6 partitions, Tansu in memory, local PostgreSQL, one run)"
        );
        println!(
            "{rows:>7} events: audit-writer {:>7.0} rows/s, plain batched insert {:>7.0} rows/s \
             (audit-writer at {:.1} %)",
            rate(writer),
            rate(base),
            100.0 * rate(writer) / rate(base)
        );
        bed.schema.drop().await;
    });
}
