//! The audit store in PostgreSQL: schema migrations the binary runs itself, idempotent batch
//! inserts keyed by `event_id`, the org-scoped queries of `pipelinectl audit`, and the 90-day
//! retention job.

use chrono::{DateTime, Utc};
use envelope::{Event, Timestamp, payload::audit::AuditEvent};
use serde_json::Value;
use tokio_postgres::{Client, NoTls, types::ToSql};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Retention of the audit trail, per the spec's topic table.
pub const RETENTION_DAYS: i64 = 90;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL could not be reached or the connection broke (retryable).
    #[error("audit store unavailable: {0}")]
    Unavailable(String),
    /// Migrations failed (a schema problem; not retryable as is).
    #[error("audit store migration failed: {0}")]
    Migration(String),
    /// A statement failed for another reason.
    #[error("audit store query failed: {0}")]
    Query(String),
}

impl StoreError {
    /// Stable code for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "AUDIT_STORE_UNAVAILABLE",
            StoreError::Migration(_) => "AUDIT_STORE_MIGRATION",
            StoreError::Query(_) => "AUDIT_STORE_QUERY",
        }
    }

    /// Whether retrying later can succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.is_closed() || e.as_db_error().is_none() {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Query(e.to_string())
        }
    }
}

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
            .run_async(&mut self.client)
            .await
            .map(|_| ())
            .map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// Insert a batch in one transaction; rows whose `event_id` exists are skipped. Returns the
    /// number of new rows. The caller commits the batch's offsets only after this returns.
    pub async fn insert_batch(&mut self, events: &[Event<AuditEvent>]) -> Result<u64, StoreError> {
        let tx = self.client.transaction().await?;
        let stmt = tx
            .prepare(
                "INSERT INTO audit_events (event_id, org_id, occurred_at, action, category, outcome, \
                 actor_type, actor_id, actor_display_name, entity_type, entity_id, entity_name, \
                 reason, before_state, after_state, details, correlation_id, causation_id, \
                 source_service, source_instance, event_version) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21) \
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .await?;
        let mut inserted = 0;
        for e in events {
            let (m, p) = (&e.metadata, &e.payload);
            let details = serde_json::to_value(&p.details).unwrap_or(Value::Null);
            let before = json_or_null(p.before.as_deref());
            let after = json_or_null(p.after.as_deref());
            let params: [&(dyn ToSql + Sync); 21] = [
                &m.event_id.0,
                &m.org_id,
                &p.occurred_at.0,
                &p.action,
                &p.category.as_str(),
                &p.outcome.as_str(),
                &p.actor.actor_type.as_str(),
                &p.actor.actor_id,
                &p.actor.display_name,
                &p.entity.entity_type.as_str(),
                &p.entity.entity_id,
                &p.entity.name,
                &p.reason,
                &before,
                &after,
                &details,
                &m.correlation_id.0,
                &m.causation_id.map(|c| c.0),
                &m.source.service,
                &m.source.instance,
                &m.event_version,
            ];
            inserted += tx.execute(&stmt, &params).await?;
        }
        tx.commit().await?;
        Ok(inserted)
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
