//! The audit store in PostgreSQL: schema migrations the binary runs itself, idempotent batch
//! inserts keyed by `event_id`, the org-scoped queries of `pipelinectl audit`, and the 90-day
//! retention job.

use chrono::{DateTime, Utc};
use envelope::{Event, Timestamp, payload::audit::AuditEvent};
pub use pgstore::StoreError;
use serde_json::Value;
use tokio_postgres::{Client, NoTls, types::ToSql};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The migration history table: its own name, so the audit store can share a database (and
/// schema) with the other adpipe stores.
pub const HISTORY_TABLE: &str = "audit_schema_history";

/// Retention of the audit trail, per the spec's topic table.
pub const RETENTION_DAYS: i64 = 90;

/// Why an audit event is refused (it goes to the DLQ with this reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAudit {
    /// org_id is not a positive id.
    #[error("unknown org {0}: org ids are positive")]
    UnknownOrg(i64),
    /// No actor id.
    #[error("missing actor: actor_id is empty")]
    MissingActor,
    /// occurred_at before 2000 or more than a day ahead of the clock.
    #[error("bad timestamp {0}: outside 2000-01-01 .. now + 1 day")]
    BadTimestamp(String),
    /// No action.
    #[error("missing action")]
    MissingAction,
}

impl InvalidAudit {
    /// Stable code for DLQ headers.
    pub fn code(&self) -> &'static str {
        match self {
            InvalidAudit::UnknownOrg(_) => "AUDIT_UNKNOWN_ORG",
            InvalidAudit::MissingActor => "AUDIT_MISSING_ACTOR",
            InvalidAudit::BadTimestamp(_) => "AUDIT_BAD_TIMESTAMP",
            InvalidAudit::MissingAction => "AUDIT_MISSING_ACTION",
        }
    }
}

/// Check an audit event before it is stored; `now` is the writer's clock.
pub fn validate(event: &Event<AuditEvent>, now: Timestamp) -> Result<(), InvalidAudit> {
    if event.metadata.org_id <= 0 {
        return Err(InvalidAudit::UnknownOrg(event.metadata.org_id));
    }
    if event.payload.actor.actor_id.trim().is_empty() {
        return Err(InvalidAudit::MissingActor);
    }
    if event.payload.action.trim().is_empty() {
        return Err(InvalidAudit::MissingAction);
    }
    let at = event.payload.occurred_at.millis();
    const Y2K_MS: i64 = 946_684_800_000;
    if at < Y2K_MS || at > now.millis() + 86_400_000 {
        return Err(InvalidAudit::BadTimestamp(
            event.payload.occurred_at.to_string(),
        ));
    }
    Ok(())
}

/// A stored audit row, as queries return it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditRow {
    /// The event id.
    pub event_id: uuid::Uuid,
    /// Organisation.
    pub org_id: i64,
    /// When the action happened.
    pub occurred_at: DateTime<Utc>,
    /// Dotted verb.
    pub action: String,
    /// Category.
    pub category: String,
    /// Outcome.
    pub outcome: String,
    /// Actor kind.
    pub actor_type: String,
    /// Actor id.
    pub actor_id: String,
    /// Entity kind.
    pub entity_type: String,
    /// Entity id.
    pub entity_id: String,
    /// Why.
    pub reason: Option<String>,
    /// Correlation id.
    pub correlation_id: uuid::Uuid,
}

/// An org-scoped query of the audit trail; every filter is optional except the org.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// The org (queries never cross orgs).
    pub org_id: i64,
    /// Only this actor.
    pub actor_id: Option<String>,
    /// Only this entity (type, id).
    pub entity: Option<(String, String)>,
    /// Only this correlation id.
    pub correlation_id: Option<uuid::Uuid>,
    /// From this time (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// Until this time (exclusive).
    pub until: Option<DateTime<Utc>>,
    /// At most this many rows, newest first.
    pub limit: i64,
}

/// The batch insert: one array parameter per column, unnested into rows.
const INSERT_BATCH: &str = "INSERT INTO audit_events (event_id, org_id, occurred_at, action, \
     category, outcome, actor_type, actor_id, actor_display_name, entity_type, entity_id, \
     entity_name, reason, before_state, after_state, details, correlation_id, causation_id, \
     source_service, source_instance, event_version) \
     SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::timestamptz[], $4::text[], $5::text[], \
     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], \
     $13::text[], $14::jsonb[], $15::jsonb[], $16::jsonb[], $17::uuid[], $18::uuid[], \
     $19::text[], $20::text[], $21::text[]) \
     ON CONFLICT (event_id) DO NOTHING";

/// A batch by column, as [`INSERT_BATCH`] takes it.
#[derive(Default)]
struct Columns {
    event_id: Vec<uuid::Uuid>,
    org_id: Vec<i64>,
    occurred_at: Vec<DateTime<Utc>>,
    action: Vec<String>,
    category: Vec<&'static str>,
    outcome: Vec<&'static str>,
    actor_type: Vec<&'static str>,
    actor_id: Vec<String>,
    actor_display_name: Vec<Option<String>>,
    entity_type: Vec<&'static str>,
    entity_id: Vec<String>,
    entity_name: Vec<Option<String>>,
    reason: Vec<Option<String>>,
    before: Vec<Option<Value>>,
    after: Vec<Option<Value>>,
    details: Vec<Value>,
    correlation_id: Vec<uuid::Uuid>,
    causation_id: Vec<Option<uuid::Uuid>>,
    source_service: Vec<String>,
    source_instance: Vec<String>,
    event_version: Vec<String>,
}

impl Columns {
    fn with_capacity(n: usize) -> Columns {
        Columns {
            event_id: Vec::with_capacity(n),
            ..Columns::default()
        }
    }

    fn push(&mut self, e: &Event<AuditEvent>) {
        let (m, p) = (&e.metadata, &e.payload);
        self.event_id.push(m.event_id.0);
        self.org_id.push(m.org_id);
        self.occurred_at.push(p.occurred_at.0);
        self.action.push(p.action.clone());
        self.category.push(p.category.as_str());
        self.outcome.push(p.outcome.as_str());
        self.actor_type.push(p.actor.actor_type.as_str());
        self.actor_id.push(p.actor.actor_id.clone());
        self.actor_display_name.push(p.actor.display_name.clone());
        self.entity_type.push(p.entity.entity_type.as_str());
        self.entity_id.push(p.entity.entity_id.clone());
        self.entity_name.push(p.entity.name.clone());
        self.reason.push(p.reason.clone());
        self.before.push(json_or_null(p.before.as_deref()));
        self.after.push(json_or_null(p.after.as_deref()));
        self.details
            .push(serde_json::to_value(&p.details).unwrap_or(Value::Null));
        self.correlation_id.push(m.correlation_id.0);
        self.causation_id.push(m.causation_id.map(|c| c.0));
        self.source_service.push(m.source.service.clone());
        self.source_instance.push(m.source.instance.clone());
        self.event_version.push(m.event_version.clone());
    }
}

/// The audit store.
#[derive(Debug)]
pub struct AuditStore {
    client: Client,
}

fn json_or_null(text: Option<&str>) -> Option<Value> {
    // before/after are JSON documents; keep non-JSON text as a JSON string.
    text.map(|t| serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_owned())))
}

impl AuditStore {
    /// Connect to `url` (a libpq connection string or URL). The connection task is spawned on
    /// the current Tokio runtime.
    pub async fn connect(url: &str) -> Result<AuditStore, StoreError> {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "audit store connection closed");
            }
        });
        Ok(AuditStore { client })
    }

    /// Apply the embedded migrations (idempotent).
    pub async fn migrate(&mut self) -> Result<(), StoreError> {
        embedded::migrations::runner()
            .set_migration_table_name(HISTORY_TABLE)
            .run_async(&mut self.client)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// Insert a batch as one statement (one transaction: all rows or none), a multi-row
    /// `INSERT … SELECT FROM UNNEST(…)` whatever the batch size; rows whose `event_id` is
    /// stored already, or repeated within the batch, are skipped (`ON CONFLICT (event_id) DO
    /// NOTHING`). Returns the number of new rows. The caller completes the batch's records
    /// (and so lets their offsets be committed) only after this returns.
    pub async fn insert_batch(&self, events: &[Event<AuditEvent>]) -> Result<u64, StoreError> {
        let mut seen = std::collections::HashSet::with_capacity(events.len());
        let events: Vec<&Event<AuditEvent>> = events
            .iter()
            .filter(|e| seen.insert(e.metadata.event_id))
            .collect();
        if events.is_empty() {
            return Ok(0);
        }
        let n = events.len();
        let mut c = Columns::with_capacity(n);
        for e in events {
            c.push(e);
        }
        let params: [&(dyn ToSql + Sync); 21] = [
            &c.event_id,
            &c.org_id,
            &c.occurred_at,
            &c.action,
            &c.category,
            &c.outcome,
            &c.actor_type,
            &c.actor_id,
            &c.actor_display_name,
            &c.entity_type,
            &c.entity_id,
            &c.entity_name,
            &c.reason,
            &c.before,
            &c.after,
            &c.details,
            &c.correlation_id,
            &c.causation_id,
            &c.source_service,
            &c.source_instance,
            &c.event_version,
        ];
        Ok(self.client.execute(INSERT_BATCH, &params).await?)
    }

    /// Whether the connection is gone (the caller connects again).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Rows matching `q`, newest first.
    pub async fn query(&self, q: &AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        let entity_type = q.entity.as_ref().map(|(t, _)| t.as_str());
        let entity_id = q.entity.as_ref().map(|(_, i)| i.as_str());
        let rows = self
            .client
            .query(
                "SELECT event_id, org_id, occurred_at, action, category, outcome, actor_type, \
                 actor_id, entity_type, entity_id, reason, correlation_id FROM audit_events \
                 WHERE org_id = $1 \
                 AND ($2::text IS NULL OR actor_id = $2) \
                 AND ($3::text IS NULL OR entity_type = $3) \
                 AND ($4::text IS NULL OR entity_id = $4) \
                 AND ($5::uuid IS NULL OR correlation_id = $5) \
                 AND ($6::timestamptz IS NULL OR occurred_at >= $6) \
                 AND ($7::timestamptz IS NULL OR occurred_at < $7) \
                 ORDER BY occurred_at DESC, event_id LIMIT $8",
                &[
                    &q.org_id,
                    &q.actor_id,
                    &entity_type,
                    &entity_id,
                    &q.correlation_id,
                    &q.from,
                    &q.until,
                    &q.limit.max(0),
                ],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| AuditRow {
                event_id: r.get(0),
                org_id: r.get(1),
                occurred_at: r.get(2),
                action: r.get(3),
                category: r.get(4),
                outcome: r.get(5),
                actor_type: r.get(6),
                actor_id: r.get(7),
                entity_type: r.get(8),
                entity_id: r.get(9),
                reason: r.get(10),
                correlation_id: r.get(11),
            })
            .collect())
    }

    /// The retention job: delete rows that occurred before `cutoff`, at most `batch` rows per
    /// statement so the table is never locked for long. Returns the rows deleted.
    pub async fn delete_older_than(
        &self,
        cutoff: DateTime<Utc>,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let n = self
                .client
                .execute(
                    "DELETE FROM audit_events WHERE event_id IN \
                     (SELECT event_id FROM audit_events WHERE occurred_at < $1 LIMIT $2)",
                    &[&cutoff, &batch.max(1)],
                )
                .await?;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }

    /// Rows in the store (all orgs), for tests and status output.
    pub async fn count(&self) -> Result<i64, StoreError> {
        Ok(self
            .client
            .query_one("SELECT count(*) FROM audit_events", &[])
            .await?
            .get(0))
    }
}
