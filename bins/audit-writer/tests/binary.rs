//! The `audit-writer` binary on a real broker (Tansu), the project's registry and
//! PostgreSQL: a backlog with duplicates survives a SIGKILL mid-stream and a restart with
//! exactly the distinct events stored; invalid events go to `audit.events.dlq` with their
//! reason while the writer keeps storing valid ones.

use std::{collections::BTreeSet, time::Duration};

use audit_writer::store::AuditStore;
use envelope::{
    Event, Source, Timestamp,
    payload::{
        audit::{AuditCategory, AuditEvent, Outcome},
        common::{Actor, ActorType, EntityRef, EntityType},
    },
};
use rdkafka::{Message, message::Headers, producer::FutureRecord};
use testbed::TestBed;
use testkit::{StageProcess, committed_offsets, read_records, wait_until};
use topics::{PartitionKey, Topic, partition_for};

fn audit(org: i64, actor: &str, i: usize) -> Event<AuditEvent> {
    Event::new(
        org,
        Source {
            service: "audit-test".into(),
            instance: "t".into(),
        },
        AuditEvent {
            action: "booking.set".into(),
            category: AuditCategory::Config,
            actor: Actor {
                actor_type: ActorType::User,
                actor_id: actor.into(),
                display_name: Some(format!("Person {i}")),
            },
            entity: EntityRef {
                entity_type: EntityType::Booking,
                entity_id: format!("booking/c{}", i % 7),
                name: None,
            },
            outcome: Outcome::Success,
            occurred_at: Timestamp::now(),
            reason: Some("test".into()),
            before: None,
            after: Some(format!(r#"{{"i":{i}}}"#)),
            details: Default::default(),
        },
    )
}

struct Env {
    bed: TestBed,
    log: std::path::PathBuf,
}

impl Env {
    async fn start(name: &str) -> Env {
        let bed = TestBed::start(name, &[Topic::AuditEvents])
            .await
            .expect("test bed");
        Env {
            log: bed.dir.path().join("audit-writer.log"),
            bed,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The writer with batches of `batch_size` at most and `in_flight` records awaiting their
    /// batch per partition (`--max-in-flight-per-partition`).
    fn spawn(&self, batch_size: usize, in_flight: usize) -> StageProcess {
        let mut env = self.bed.stage_env();
        env.extend([
            ("AUDIT_DATABASE_URL", self.bed.schema.url()),
            ("AUDIT_BATCH_SIZE", batch_size.to_string()),
            ("AUDIT_BATCH_LINGER_MS", "5".to_owned()),
            ("MAX_IN_FLIGHT_PER_PARTITION", in_flight.to_string()),
            ("DLQ_BREAKER_WINDOW", "0".to_owned()),
        ]);
        StageProcess::spawn(env!("CARGO_BIN_EXE_audit-writer"), &env, &self.log)
            .expect("audit-writer starts")
    }

    /// Produce the encoded events (concurrently; each org's events in order).
    async fn send(&self, events: &[Event<AuditEvent>]) {
        let sends = events.iter().map(|e| {
            let value = self.bed.codec.encode(e).expect("encode");
            self.send_bytes(e.metadata.org_id, e.record_key(), value)
        });
        futures_join(sends).await;
    }

    async fn send_bytes(&self, org: i64, key: String, value: Vec<u8>) {
        let p = partition_for(PartitionKey::Org(org), Topic::AuditEvents.spec().partitions);
        self.bed
            .producer
            .send(
                FutureRecord::to("audit.events")
                    .partition(p)
                    .key(&key)
                    .payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produced");
    }

    async fn store(&self) -> AuditStore {
        AuditStore::connect(&self.bed.schema.url())
            .await
            .expect("connect")
    }
}

/// Await every future, a thousand at a time (the producer batches what is sent together).
async fn futures_join<F: Future<Output = ()>>(fs: impl Iterator<Item = F>) {
    let mut chunk = Vec::new();
    for f in fs {
        chunk.push(f);
        if chunk.len() == 1000 {
            futures::future::join_all(chunk.drain(..)).await;
        }
    }
    futures::future::join_all(chunk).await;
}

async fn count(store: &AuditStore) -> i64 {
    store.count().await.unwrap_or(-1)
}

async fn stored_ids(env: &Env) -> BTreeSet<uuid::Uuid> {
    env.bed
        .schema
        .admin()
        .query(
            &format!(
                "SELECT event_id FROM {}.audit_events",
                env.bed.schema.name()
            ),
            &[],
        )
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Wait until the writer's group committed `records` records of audit.events in all (offsets
/// start at 0; Tansu's high watermark under-reports batched produce, so the test counts what
/// it sent instead).
async fn all_committed(env: &Env, records: usize, what: &str) {
    let committed = || {
        committed_offsets(&env.bed.bootstrap, "audit-writer", "audit.events", 6)
            .map(|c| c.iter().map(|o| (*o).max(0)).sum::<i64>())
            .unwrap_or(-1)
    };
    wait_until(Duration::from_secs(120), what, || {
        let n = committed();
        async move { n == records as i64 }
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}; committed {} of {records}; the writer's log:\n{}",
            committed(),
            env.log()
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_backlog_then_restart_stores_exactly_the_distinct_events() {
    let env = Env::start("audit_crash").await;

    // The backlog: 12 orgs (every partition), 6,000 distinct events, then 600 of them
    // produced again with the same event_id, interleaved with more new events.
    let mut events: Vec<Event<AuditEvent>> = (0..6_000)
        .map(|i| audit(1 + (i as i64 % 12), &format!("u{}", i % 13), i))
        .collect();
    let mut backlog = events.clone();
    for i in (0..6_000).step_by(10) {
        backlog.push(events[i].clone());
        let extra = audit(1 + (i as i64 % 12), "late", 10_000 + i);
        backlog.push(extra.clone());
        events.push(extra);
    }
    env.send(&backlog).await;
    let want: BTreeSet<uuid::Uuid> = events.iter().map(|e| e.metadata.event_id.0).collect();
    assert_eq!(want.len(), 6_600);

    // First run, small batches (at most two records per partition waiting for one) so the
    // backlog takes a few seconds: SIGKILL once a quarter is stored and offsets were committed.
    let store = env.store().await;
    let mut writer = env.spawn(25, 2);
    let committed = || {
        committed_offsets(&env.bed.bootstrap, "audit-writer", "audit.events", 6)
            .map(|c| c.iter().map(|o| (*o).max(0)).sum::<i64>())
            .unwrap_or(0)
    };
    wait_until(
        Duration::from_secs(90),
        "the writer stored a quarter of the backlog and committed offsets",
        || async { count(&store).await >= (want.len() / 4) as i64 && committed() > 0 },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; the writer's log:\n{}", env.log()));
    writer.kill();
    let at_kill = count(&store).await;
    let committed_at_kill = committed();
    eprintln!(
        "killed with {at_kill} of {} rows stored, {committed_at_kill} of {} records committed",
        want.len(),
        backlog.len()
    );
    assert!(
        at_kill < want.len() as i64,
        "killed mid-backlog ({at_kill} of {} stored)",
        want.len()
    );

    // Second run: it resumes from the committed offsets and redelivers what was stored but
    // not committed; nothing is stored twice.
    let _writer = env.spawn(500, 500);
    all_committed(
        &env,
        backlog.len(),
        "the restarted writer committed the backlog",
    )
    .await;
    assert_eq!(count(&store).await, want.len() as i64, "{}", env.log());
    assert_eq!(stored_ids(&env).await, want);
    let dead = read_records(
        &env.bed.bootstrap,
        "audit.events.dlq",
        1,
        Duration::from_secs(2),
    )
    .expect("dlq");
    assert!(
        dead.is_empty(),
        "nothing dead-lettered; log:\n{}",
        env.log()
    );
    // PII (the actor's display name) is stored but never logged.
    assert!(!env.log().contains("Person "), "no display name in the log");
    env.bed.schema.drop().await;
}

fn header(m: &rdkafka::message::OwnedMessage, key: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_go_to_the_dlq_with_a_reason_and_the_writer_goes_on() {
    let env = Env::start("audit_dlq").await;

    let unknown_org = audit(0, "u1", 1);
    let missing_actor = audit(3, " ", 2);
    let mut too_old = audit(4, "u1", 3);
    too_old.payload.occurred_at = Timestamp::from_millis(915_148_800_000).expect("1999");
    let mut future = audit(5, "u1", 4);
    future.payload.occurred_at =
        Timestamp::from_millis(Timestamp::now().millis() + 7 * 86_400_000).expect("next week");
    let valid: Vec<_> = (0..20)
        .map(|i| audit(1 + i % 6, "u2", i as usize))
        .collect();
    let mut first = vec![
        unknown_org.clone(),
        missing_actor.clone(),
        too_old.clone(),
        future.clone(),
    ];
    first.extend(valid.iter().cloned());
    env.send(&first).await;
    // Bytes that are not an audit event at all.
    env.send_bytes(2, "2".into(), b"not avro".to_vec()).await;

    let _writer = env.spawn(500, 500);
    let dead = read_records(
        &env.bed.bootstrap,
        "audit.events.dlq",
        5,
        Duration::from_secs(60),
    )
    .expect("dlq");
    assert_eq!(dead.len(), 5, "five dead letters; log:\n{}", env.log());
    let mut codes: Vec<String> = dead
        .iter()
        .map(|m| header(m, "dlq.error.code").unwrap_or_default())
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            "AUDIT_BAD_TIMESTAMP",
            "AUDIT_BAD_TIMESTAMP",
            "AUDIT_MISSING_ACTOR",
            "AUDIT_UNKNOWN_ORG",
            "DECODE_WRONG_MAGIC_BYTE",
        ]
    );
    for m in &dead {
        let reason = header(m, "dlq.error.message").unwrap_or_default();
        assert!(!reason.is_empty(), "a reason");
        assert_eq!(header(m, "dlq.stage").as_deref(), Some("audit-writer"));
        assert_eq!(
            header(m, "dlq.original.topic").as_deref(),
            Some("audit.events")
        );
    }
    let org0 = dead
        .iter()
        .find(|m| header(m, "dlq.error.code").as_deref() == Some("AUDIT_UNKNOWN_ORG"))
        .expect("org 0");
    assert!(
        header(org0, "dlq.error.message")
            .unwrap_or_default()
            .contains("unknown org 0")
    );
    // The dead letter carries the original bytes.
    assert_eq!(
        org0.payload(),
        Some(
            env.bed
                .codec
                .encode(&unknown_org)
                .expect("encode")
                .as_slice()
        )
    );

    // The writer keeps running: valid events sent after the dead letters land too.
    let later: Vec<_> = (0..10)
        .map(|i| audit(7 + i % 3, "u3", 100 + i as usize))
        .collect();
    env.send(&later).await;
    all_committed(
        &env,
        first.len() + 1 + later.len(),
        "the writer committed everything",
    )
    .await;
    let want: BTreeSet<uuid::Uuid> = valid
        .iter()
        .chain(&later)
        .map(|e| e.metadata.event_id.0)
        .collect();
    assert_eq!(stored_ids(&env).await, want, "log:\n{}", env.log());
    env.bed.schema.drop().await;
}
