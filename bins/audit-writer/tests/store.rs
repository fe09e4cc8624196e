//! The audit store against the local PostgreSQL (127.0.0.1:5432, trust auth): migrations,
//! idempotent batches, org-scoped queries and retention. Each test works in a schema of its
//! own, dropped at the end, so parallel and repeated runs never collide.

use audit_writer::store::{AuditQuery, AuditStore, InvalidAudit, validate};
use chrono::{TimeZone, Utc};
use envelope::{
    Event, Id, Source, Timestamp,
    payload::{
        audit::{AuditCategory, AuditEvent, Outcome},
        common::{Actor, ActorType, EntityRef, EntityType},
    },
};
use testkit::pg::TestSchema;

/// A store in a fresh schema; drop the returned schema at the end of the test.
async fn store() -> (AuditStore, TestSchema) {
    let schema = TestSchema::create("audit_test").await.expect("schema");
    let mut store = AuditStore::connect(&schema.url()).await.expect("connect");
    store.migrate().await.expect("migrate");
    (store, schema)
}

fn event(org: i64, actor: &str, entity: &str, at_ms: i64) -> Event<AuditEvent> {
    Event::new(
        org,
        Source {
            service: "test".into(),
            instance: "t-1".into(),
        },
        AuditEvent {
            action: "booking.set".into(),
            category: AuditCategory::Config,
            actor: Actor {
                actor_type: ActorType::User,
                actor_id: actor.into(),
                display_name: Some("Private Person".into()),
            },
            entity: EntityRef {
                entity_type: EntityType::Booking,
                entity_id: entity.into(),
                name: None,
            },
            outcome: Outcome::Success,
            occurred_at: Timestamp::from_millis(at_ms).expect("ts"),
            reason: Some("flight extended".into()),
            before: Some(r#"{"budget":"100.00"}"#.into()),
            after: Some("not json".into()),
            details: [("source".to_owned(), "cli".to_owned())].into(),
        },
    )
}

const T0: i64 = 1_733_011_200_000; // 2024-12-01T00:00:00Z

#[tokio::test]
async fn batches_are_idempotent_by_event_id() {
    let (mut store, schema) = store().await;
    let batch: Vec<_> = (0..5).map(|i| event(1, "u1", "b1", T0 + i)).collect();
    assert_eq!(store.insert_batch(&batch).await.expect("insert"), 5);
    // Redelivery of the whole batch and of a mix of old and new rows.
    assert_eq!(store.insert_batch(&batch).await.expect("again"), 0);
    let mut mixed = batch[3..].to_vec();
    mixed.push(event(1, "u1", "b1", T0 + 10));
    assert_eq!(store.insert_batch(&mixed).await.expect("mixed"), 1);
    assert_eq!(store.count().await.expect("count"), 6);
    // The same event twice within one batch is one row.
    let twice = vec![event(1, "u1", "b1", T0 + 20); 2];
    assert_eq!(store.insert_batch(&twice).await.expect("twice"), 1);
    assert_eq!(store.count().await.expect("count"), 7);
    // Migrations run twice are harmless.
    store.migrate().await.expect("migrate again");
    schema.drop().await;
}

#[tokio::test]
async fn queries_are_org_scoped_and_filter() {
    let (store, schema) = store().await;
    let mut events = vec![
        event(1, "alice", "b1", T0),
        event(1, "bob", "b1", T0 + 1000),
        event(1, "alice", "b2", T0 + 2000),
        event(2, "alice", "b1", T0 + 3000),
    ];
    let shared_correlation = Id::new();
    events[1].metadata.correlation_id = shared_correlation;
    events[2].metadata.correlation_id = shared_correlation;
    store.insert_batch(&events).await.expect("insert");
    let q = |f: &dyn Fn(&mut AuditQuery)| {
        let mut q = AuditQuery {
            org_id: 1,
            limit: 100,
            ..AuditQuery::default()
        };
        f(&mut q);
        q
    };

    let all = store.query(&q(&|_| {})).await.expect("org");
    assert_eq!(all.len(), 3, "org 2's row is not visible to org 1");
    assert!(
        all.windows(2).all(|w| w[0].occurred_at >= w[1].occurred_at),
        "newest first"
    );

    let alice = store
        .query(&q(&|q| q.actor_id = Some("alice".into())))
        .await
        .expect("actor");
    assert_eq!(alice.len(), 2);
    let b1 = store
        .query(&q(&|q| q.entity = Some(("booking".into(), "b1".into()))))
        .await
        .expect("entity");
    assert_eq!(b1.len(), 2);
    let corr = store
        .query(&q(&|q| q.correlation_id = Some(shared_correlation.0)))
        .await
        .expect("correlation");
    assert_eq!(corr.len(), 2);
    let window = store
        .query(&q(&|q| {
            q.from = Utc.timestamp_millis_opt(T0 + 500).single();
            q.until = Utc.timestamp_millis_opt(T0 + 2000).single();
        }))
        .await
        .expect("range");
    assert_eq!(window.len(), 1);
    assert_eq!(window[0].actor_id, "bob");
    let limited = store.query(&q(&|q| q.limit = 1)).await.expect("limit");
    assert_eq!(limited.len(), 1);
    schema.drop().await;
}

#[tokio::test]
async fn retention_deletes_only_old_rows_in_batches() {
    let (store, schema) = store().await;
    let events: Vec<_> = (0..7)
        .map(|i| event(1, "u", "e", T0 + i * 86_400_000))
        .collect();
    store.insert_batch(&events).await.expect("insert");
    let cutoff = Utc
        .timestamp_millis_opt(T0 + 3 * 86_400_000)
        .single()
        .expect("cutoff");
    assert_eq!(
        store.delete_older_than(cutoff, 2).await.expect("retention"),
        3
    );
    assert_eq!(store.count().await.expect("count"), 4);
    schema.drop().await;
}

#[test]
fn invalid_events_are_refused_with_a_reason() {
    let now = Timestamp::from_millis(T0).expect("now");
    assert_eq!(validate(&event(1, "u", "e", T0), now), Ok(()));
    let err = validate(&event(0, "u", "e", T0), now).expect_err("org");
    assert_eq!(
        (err.code(), err.to_string().contains("unknown org 0")),
        ("AUDIT_UNKNOWN_ORG", true)
    );
    assert_eq!(
        validate(&event(1, "  ", "e", T0), now),
        Err(InvalidAudit::MissingActor)
    );
    let future = validate(&event(1, "u", "e", T0 + 2 * 86_400_000), now).expect_err("future");
    assert_eq!(future.code(), "AUDIT_BAD_TIMESTAMP");
    assert!(matches!(
        validate(&event(1, "u", "e", 0), now),
        Err(InvalidAudit::BadTimestamp(_))
    ));
}
