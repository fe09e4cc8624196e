//! The audit writer's Processor on in-memory events (`runtime::testing::check`) against a
//! PostgreSQL schema of its own: a record completes only once its row is committed, invalid
//! events are permanent errors with their code, and concurrent records share batches.

use std::sync::{Arc, atomic::Ordering};

use audit_writer::{
    stage::{AuditSettings, AuditWriter},
    store::AuditStore,
};
use envelope::{
    Event, Source, Timestamp,
    payload::{
        audit::{AuditCategory, AuditEvent, Outcome},
        common::{Actor, ActorType, EntityRef, EntityType},
    },
};
use runtime::{Processor, testing::check};
use testkit::pg::TestSchema;

fn event(org: i64, actor: &str) -> Event<AuditEvent> {
    Event::new(
        org,
        Source {
            service: "test".into(),
            instance: "t".into(),
        },
        AuditEvent {
            action: "rule.disabled".into(),
            category: AuditCategory::Config,
            actor: Actor {
                actor_type: ActorType::User,
                actor_id: actor.into(),
                display_name: None,
            },
            entity: EntityRef {
                entity_type: EntityType::Rule,
                entity_id: "rule/r1".into(),
                name: None,
            },
            outcome: Outcome::Success,
            occurred_at: Timestamp::now(),
            reason: None,
            before: None,
            after: None,
            details: Default::default(),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_complete_after_their_batch_commits_and_invalid_events_are_refused() {
    let schema = TestSchema::create("audit_stage").await.expect("schema");
    let mut settings = AuditSettings::for_tests(&schema.url());
    settings.batch_linger_ms = 50;
    let stage = Arc::new(AuditWriter::new(settings));
    stage.start().await.expect("start");
    let store = AuditStore::connect(&schema.url()).await.expect("connect");

    // One record: when `check` returns (its deferred work awaited), the row is there.
    let one = event(1, "u1");
    check(&*stage, &one).await.expect("stored");
    assert_eq!(store.count().await.expect("count"), 1);
    // The same event again (a redelivery) completes and adds nothing.
    check(&*stage, &one).await.expect("again");
    assert_eq!(store.count().await.expect("count"), 1);

    // 40 concurrent records (as from several partitions) share a few batches.
    let batches_before = stage.counters().batches.load(Ordering::Relaxed);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let stage = stage.clone();
            tokio::spawn(async move { check(&*stage, &event(1 + i % 6, "u2")).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("joined").expect("stored");
    }
    assert_eq!(store.count().await.expect("count"), 41);
    let batches = stage.counters().batches.load(Ordering::Relaxed) - batches_before;
    assert!(batches < 40, "{batches} batches for 40 events");

    // Invalid events: permanent errors with the validation code; nothing stored.
    let err = check(&*stage, &event(-3, "u1")).await.expect_err("org");
    assert_eq!((err.code, err.retryable), ("AUDIT_UNKNOWN_ORG", false));
    let err = check(&*stage, &event(1, "")).await.expect_err("actor");
    assert_eq!(err.code, "AUDIT_MISSING_ACTOR");
    let mut old = event(1, "u1");
    old.payload.occurred_at = Timestamp::from_millis(0).expect("1970");
    let err = check(&*stage, &old).await.expect_err("timestamp");
    assert_eq!(err.code, "AUDIT_BAD_TIMESTAMP");
    assert_eq!(store.count().await.expect("count"), 41);
    schema.drop().await;
}
