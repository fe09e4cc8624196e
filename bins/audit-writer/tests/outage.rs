//! The `audit-writer` binary when its PostgreSQL goes away mid-stream (a `testkit::CutProxy`
//! between the writer and the real server is cut, then restored): the writer pauses — no row
//! stored, no record dead-lettered, the process keeps running — and once the database is back
//! it resumes with exactly the distinct events stored (count and the set of ids), duplicates
//! sent before and during the outage stored once, nothing in `audit.events.dlq`.

use std::{collections::BTreeSet, time::Duration};

use envelope::{
    Event, Source, Timestamp,
    payload::{
        audit::{AuditCategory, AuditEvent, Outcome},
        common::{Actor, ActorType, EntityRef, EntityType},
    },
};
use testbed::TestBed;
use testkit::{CutProxy, StageProcess, committed_offsets, read_records, wait_until};
use topics::Topic;

/// The warning the writer logs at each failed attempt while the store is down.
const WAITING: &str = "audit store unavailable; the batch waits";

fn audit(org: i64, i: usize) -> Event<AuditEvent> {
    Event::new(
        org,
        Source {
            service: "audit-outage-test".into(),
            instance: "t".into(),
        },
        AuditEvent {
            action: "booking.set".into(),
            category: AuditCategory::Config,
            actor: Actor {
                actor_type: ActorType::User,
                actor_id: format!("u{}", i % 11),
                display_name: None,
            },
            entity: EntityRef {
                entity_type: EntityType::Booking,
                entity_id: format!("booking/c{}", i % 7),
                name: None,
            },
            outcome: Outcome::Success,
            occurred_at: Timestamp::now(),
            reason: Some("outage test".into()),
            before: None,
            after: Some(format!(r#"{{"i":{i}}}"#)),
            details: Default::default(),
        },
    )
}

/// `n` distinct events from index `from`, over 12 orgs (every partition), each tenth one
/// followed by a copy with the same event id (a redelivery).
fn batch(from: usize, n: usize) -> (Vec<Event<AuditEvent>>, Vec<Event<AuditEvent>>) {
    let distinct: Vec<_> = (from..from + n)
        .map(|i| audit(1 + (i as i64 % 12), i))
        .collect();
    let mut sent = Vec::with_capacity(n + n / 10);
    for (i, e) in distinct.iter().enumerate() {
        sent.push(e.clone());
        if i % 10 == 0 {
            sent.push(e.clone());
        }
    }
    (distinct, sent)
}

async fn send(bed: &TestBed, events: &[Event<AuditEvent>]) {
    for chunk in events.chunks(1000) {
        futures::future::join_all(chunk.iter().map(|e| bed.produce(e))).await;
    }
}

fn committed(bed: &TestBed) -> i64 {
    committed_offsets(&bed.bootstrap, "audit-writer", "audit.events", 6)
        .map(|c| c.iter().map(|o| (*o).max(0)).sum::<i64>())
        .unwrap_or(-1)
}

async fn stored(bed: &TestBed) -> i64 {
    bed.schema.count("audit_events").await.unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_outage_pauses_the_writer_which_then_resumes_without_loss_or_duplicates() {
    let bed = TestBed::start("audit_outage", &[Topic::AuditEvents])
        .await
        .expect("test bed");
    let proxy = CutProxy::start("127.0.0.1:5432").await.expect("proxy");
    let log_path = bed.dir.path().join("audit-writer.log");
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let waits = || log().matches(WAITING).count();

    let (mut want, before) = batch(0, 4_000);
    send(&bed, &before).await;

    // Small batches, two records per partition waiting for one: the backlog takes seconds,
    // so the cut lands mid-stream.
    let mut env = bed.stage_env();
    env.extend([
        ("AUDIT_DATABASE_URL", bed.schema.url_via(proxy.port())),
        ("AUDIT_BATCH_SIZE", "25".to_owned()),
        ("AUDIT_BATCH_LINGER_MS", "5".to_owned()),
        ("MAX_IN_FLIGHT_PER_PARTITION", "2".to_owned()),
        ("DLQ_BREAKER_WINDOW", "0".to_owned()),
    ]);
    let mut writer = StageProcess::spawn(env!("CARGO_BIN_EXE_audit-writer"), &env, &log_path)
        .expect("audit-writer starts");
    wait_until(
        Duration::from_secs(90),
        "the writer stored 500 rows",
        || async { stored(&bed).await >= 500 },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; the writer's log:\n{}", log()));

    proxy.cut().await;
    let at_cut = stored(&bed).await;
    eprintln!("cut with {at_cut} of {} rows stored", want.len());
    assert!(
        at_cut < want.len() as i64,
        "cut mid-stream ({at_cut} of {} stored)",
        want.len()
    );
    // More events, and copies of events stored before the cut, arrive while it is down.
    let (during, mut sent_during) = batch(4_000, 1_000);
    sent_during.extend(before.iter().take(200).cloned());
    send(&bed, &sent_during).await;
    want.extend(during);
    let sent_total = (before.len() + sent_during.len()) as i64;

    // Down: the writer retries (its warnings), stores nothing, dead-letters nothing, and runs.
    wait_until(
        Duration::from_secs(60),
        "the writer to wait for the store",
        || {
            let n = waits();
            async move { n >= 3 }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; the writer's log:\n{}", log()));
    let down = stored(&bed).await;
    let committed_down = committed(&bed);
    wait_until(Duration::from_secs(60), "two more failed attempts", || {
        let n = waits();
        async move { n >= 5 }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; the writer's log:\n{}", log()));
    assert_eq!(stored(&bed).await, down, "nothing stored while down");
    assert!(
        committed(&bed) < sent_total && committed_down < sent_total,
        "the records wait: offsets not committed past the outage"
    );
    assert!(
        writer.exited().is_none(),
        "the writer keeps running:\n{}",
        log()
    );
    let dead = read_records(
        &bed.bootstrap,
        "audit.events.dlq",
        1,
        Duration::from_secs(2),
    )
    .expect("dlq");
    assert!(dead.is_empty(), "nothing dead-lettered while down");

    // Back: every record committed, exactly the distinct events stored.
    proxy.restore();
    wait_until(
        Duration::from_secs(120),
        "the writer to commit every record after the outage",
        || {
            let n = committed(&bed);
            async move { n == sent_total }
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}; committed {} of {sent_total}; the writer's log:\n{}",
            committed(&bed),
            log()
        )
    });
    let want_ids: BTreeSet<uuid::Uuid> = want.iter().map(|e| e.metadata.event_id.0).collect();
    assert_eq!(want_ids.len(), 5_000);
    assert_eq!(stored(&bed).await, 5_000, "no loss, no duplicate");
    let ids: BTreeSet<uuid::Uuid> = bed
        .schema
        .admin()
        .query(
            &format!("SELECT event_id FROM {}.audit_events", bed.schema.name()),
            &[],
        )
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, want_ids, "exactly the events sent");
    let dead = read_records(
        &bed.bootstrap,
        "audit.events.dlq",
        1,
        Duration::from_secs(2),
    )
    .expect("dlq");
    assert!(dead.is_empty(), "nothing dead-lettered:\n{}", log());
    assert!(writer.exited().is_none(), "the writer still runs");
    eprintln!(
        "outage: {at_cut} stored at the cut, {down} while down, {} failed attempts logged, \
         {sent_total} records ({} distinct) committed after the restore",
        waits(),
        want_ids.len()
    );
    writer.kill();
    bed.schema.drop().await;
}
