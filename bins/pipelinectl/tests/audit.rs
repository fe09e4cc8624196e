//! `pipelinectl audit query|prune`: the real binary against an audit store in a PostgreSQL
//! schema of its own (local server, trust auth), filled through the audit writer's store.

use std::process::Output;

use audit_writer::store::AuditStore;
use envelope::{
    Event, Id, Source, Timestamp,
    payload::{
        audit::{AuditCategory, AuditEvent, Outcome},
        common::{Actor, ActorType, EntityRef, EntityType},
    },
};
use testkit::pg::TestSchema;

fn pipelinectl(database_url: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_pipelinectl"))
        .arg("audit")
        .args(args)
        .env("AUDIT_DATABASE_URL", database_url)
        .output()
        .expect("pipelinectl runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn event(org: i64, actor: &str, entity: &str, at_ms: i64) -> Event<AuditEvent> {
    Event::new(
        org,
        Source {
            service: "test".into(),
            instance: "t".into(),
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
            before: None,
            after: None,
            details: Default::default(),
        },
    )
}

/// JSON rows of a query, failing the test on a non-zero exit.
fn json_rows(url: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["query", "--output", "json"];
    all.extend_from_slice(args);
    let out = pipelinectl(url, &all);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).expect("a JSON array")
}

fn ids(rows: &[serde_json::Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["event_id"].as_str().expect("event_id").to_owned())
        .collect()
}

#[tokio::test]
async fn audit_query_filters_by_org_actor_entity_correlation_and_time_and_prune_deletes_old_rows() {
    let schema = TestSchema::create("ctl_audit").await.expect("schema");
    let url = schema.url();
    let mut store = AuditStore::connect(&url).await.expect("connect");
    store.migrate().await.expect("migrate");
    let now = Timestamp::now().millis();
    let hour = 3_600_000;
    let mut events = vec![
        event(1, "alice", "booking/c1", now - 3 * hour),
        event(1, "bob", "booking/c1", now - 2 * hour),
        event(1, "alice", "booking/c2", now - hour),
        event(2, "alice", "booking/c1", now - hour),
        event(1, "carol", "booking/c3", now - 200 * 24 * hour),
    ];
    let shared = Id::new();
    events[1].metadata.correlation_id = shared;
    events[2].metadata.correlation_id = shared;
    store.insert_batch(&events).await.expect("insert");
    let id = |i: usize| events[i].metadata.event_id.to_string();

    // By org: newest first, org 2 never visible; the display name (PII) is not printed.
    let org1 = json_rows(&url, &["--org", "1"]);
    assert_eq!(ids(&org1), [id(2), id(1), id(0), id(4)]);
    assert!(
        !serde_json::to_string(&org1)
            .expect("json")
            .contains("Private Person")
    );
    assert_eq!(org1[0]["actor_id"], "alice");
    assert_eq!(org1[0]["entity_id"], "booking/c2");
    // By actor, by entity, by correlation id, by time range, limited.
    assert_eq!(
        ids(&json_rows(&url, &["--org", "1", "--actor", "alice"])),
        [id(2), id(0)]
    );
    assert_eq!(
        ids(&json_rows(
            &url,
            &[
                "--org",
                "1",
                "--entity-type",
                "booking",
                "--entity-id",
                "booking/c1"
            ]
        )),
        [id(1), id(0)]
    );
    let shared = shared.to_string();
    assert_eq!(
        ids(&json_rows(
            &url,
            &["--org", "1", "--correlation-id", &shared]
        )),
        [id(2), id(1)]
    );
    let since = chrono::DateTime::from_timestamp_millis(now - 2 * hour - 1000)
        .expect("since")
        .to_rfc3339();
    let until = chrono::DateTime::from_timestamp_millis(now - hour)
        .expect("until")
        .to_rfc3339();
    assert_eq!(
        ids(&json_rows(
            &url,
            &["--org", "1", "--since", &since, "--until", &until]
        )),
        [id(1)]
    );
    assert_eq!(
        ids(&json_rows(&url, &["--org", "1", "--limit", "1"])),
        [id(2)]
    );

    // The table: a header and one line per event.
    let out = pipelinectl(&url, &["query", "--org", "1", "--actor", "bob"]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("occurred_at"), "{table}");
    assert!(
        lines[1].contains("user:bob") && lines[1].contains("booking:booking/c1"),
        "{table}"
    );

    // Bad input is an error (exit 2), never a silent empty result.
    let out = pipelinectl(&url, &["query", "--org", "1", "--since", "yesterday"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = pipelinectl(
        &url,
        &[
            "query",
            "--org",
            "1",
            "--entity-type",
            "spaceship",
            "--entity-id",
            "x",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = pipelinectl(
        "host=127.0.0.1 port=1 user=postgres",
        &["query", "--org", "1"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // Prune: the 200-day-old event goes, the rest stays.
    let out = pipelinectl(&url, &["prune", "--retention-days", "90"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains('1'),
        "{}",
        text(&out)
    );
    assert_eq!(store.count().await.expect("count"), 4);
    assert_eq!(
        ids(&json_rows(&url, &["--org", "1"])),
        [id(2), id(1), id(0)]
    );
    schema.drop().await;
}
