//! `pipelinectl audit query|prune`: the audit trail in the audit store that `audit-writer`
//! fills — org-scoped queries by actor, entity, correlation id and time range, and the
//! retention job run by hand.

use anyhow::Context;
use audit_writer::{
    stage::prune,
    store::{AuditQuery, AuditRow, AuditStore, RETENTION_DAYS},
};
use chrono::{DateTime, Utc};
use envelope::payload::common::EntityType;

use crate::{Failure, Global, output};

/// `pipelinectl audit`: where the audit store is, and what to do with it.
#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    /// PostgreSQL connection string of the audit store (the audit writer's).
    #[arg(
        long,
        env = "AUDIT_DATABASE_URL",
        hide_env_values = true,
        default_value = "host=127.0.0.1 user=postgres dbname=postgres"
    )]
    database_url: String,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AuditCommand {
    /// Audit events of one org, newest first; every other filter narrows the result.
    Query(QueryArgs),
    /// Delete audit events older than the retention (what the writer's hourly job does).
    Prune(PruneArgs),
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    /// An aligned table, for people.
    Table,
    /// A JSON array of rows, for scripts.
    Json,
}

#[derive(Debug, clap::Args)]
struct QueryArgs {
    /// The organisation (required: queries never cross orgs).
    #[arg(long, env = "AUDIT_ORG")]
    org: i64,
    /// Only events by this actor id (a user id or service name).
    #[arg(long, env = "AUDIT_ACTOR")]
    actor: Option<String>,
    /// Only events on entities of this type (with --entity-id), e.g. booking, rule, channel.
    #[arg(long, env = "AUDIT_ENTITY_TYPE", requires = "entity_id")]
    entity_type: Option<String>,
    /// Only events on this entity id (with --entity-type), e.g. booking/c1.
    #[arg(long, env = "AUDIT_ENTITY_ID", requires = "entity_type")]
    entity_id: Option<String>,
    /// Only events of this correlation id (one report pull or one user action).
    #[arg(long, env = "AUDIT_CORRELATION_ID")]
    correlation_id: Option<uuid::Uuid>,
    /// Events that occurred at or after this time (RFC 3339, e.g. 2025-01-31T00:00:00Z).
    #[arg(long, env = "AUDIT_SINCE", value_parser = rfc3339)]
    since: Option<DateTime<Utc>>,
    /// Events that occurred before this time (RFC 3339).
    #[arg(long, env = "AUDIT_UNTIL", value_parser = rfc3339)]
    until: Option<DateTime<Utc>>,
    /// At most this many events.
    #[arg(long, env = "AUDIT_LIMIT", default_value_t = 100)]
    limit: i64,
    /// Output format (`--json` also selects json).
    #[arg(long, env = "AUDIT_OUTPUT", value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(Debug, clap::Args)]
struct PruneArgs {
    /// Keep events of the last this many days.
    #[arg(long, env = "AUDIT_RETENTION_DAYS", default_value_t = RETENTION_DAYS)]
    retention_days: i64,
    /// Rows deleted per statement.
    #[arg(long, env = "AUDIT_RETENTION_BATCH", default_value_t = 10_000)]
    batch: i64,
}

fn rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 time ({e}), e.g. 2025-01-31T00:00:00Z"))
}

/// `audit …`.
pub(crate) async fn run(global: &Global, args: &AuditArgs) -> Result<(), Failure> {
    let store = tokio::time::timeout(global.timeout(), AuditStore::connect(&args.database_url))
        .await
        .context("connecting to the audit store timed out")?
        .context("connecting to the audit store")?;
    match &args.command {
        AuditCommand::Query(q) => query(global, &store, q).await,
        AuditCommand::Prune(p) => {
            let deleted = prune(&store, p.retention_days, p.batch)
                .await
                .context("pruning the audit store")?;
            output::print(
                global.json,
                &["deleted", "retention_days"],
                &[vec![deleted.to_string(), p.retention_days.to_string()]],
            );
            Ok(())
        }
    }
}

async fn query(global: &Global, store: &AuditStore, q: &QueryArgs) -> Result<(), Failure> {
    let entity = match (&q.entity_type, &q.entity_id) {
        (Some(t), Some(id)) => {
            let t: EntityType = t.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            Some((t.as_str().to_owned(), id.clone()))
        }
        _ => None,
    };
    let rows = store
        .query(&AuditQuery {
            org_id: q.org,
            actor_id: q.actor.clone(),
            entity,
            correlation_id: q.correlation_id,
            from: q.since,
            until: q.until,
            limit: q.limit,
        })
        .await
        .context("querying the audit store")?;
    if global.json || q.output == Format::Json {
        println!("{}", serde_json::to_string(&rows).context("rows as JSON")?);
    } else {
        output::print(false, HEADERS, &rows.iter().map(cells).collect::<Vec<_>>());
    }
    Ok(())
}

const HEADERS: &[&str] = &[
    "occurred_at",
    "action",
    "outcome",
    "actor",
    "entity",
    "correlation_id",
    "event_id",
    "reason",
];

/// A row as table cells (the actor's display name, PII, is not among them).
fn cells(r: &AuditRow) -> Vec<String> {
    vec![
        r.occurred_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        r.action.clone(),
        r.outcome.clone(),
        format!("{}:{}", r.actor_type, r.actor_id),
        format!("{}:{}", r.entity_type, r.entity_id),
        r.correlation_id.to_string(),
        r.event_id.to_string(),
        r.reason.clone().unwrap_or_default(),
    ]
}
