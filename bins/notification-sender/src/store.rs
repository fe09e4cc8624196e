//! The notification-sender's state in PostgreSQL: channels per org (versioned, deletes are
//! tombstones), one delivery row per idempotency key (sent or failed, attempts, last error)
//! and the in-app notifications. Migrated at start with its own history table, so it can
//! share a database with the other adpipe stores.
//!
//! In-app notifications are group-committed ([`pgstore::Lanes`], picked by alert
//! partition): an alert's rows join its lane's open transaction and the alert completes on
//! the returned [`Ticket`], so many alerts share one WAL flush. Their statements are
//! idempotent (one row per key, `sent` never downgraded), which is what the lane's replay of
//! a lost transaction needs. Everything else — channels, reads, the outcomes of remote
//! deliveries, recorded the moment the peer answered — is autocommit.

use std::{collections::HashSet, sync::Arc};

use envelope::payload::config::{ChannelDefinition, ChannelKind};
pub use pgstore::StoreError;
use pgstore::{GroupCommit, Lanes, Live, Param, Pool, Prepared, Ticket};
use tokio_postgres::{Client, Statement, types::ToSql};
use uuid::Uuid;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The migration history table (other adpipe stores share the database).
const HISTORY_TABLE: &str = "notify_schema_history";

/// A channel as stored (not deleted).
#[derive(Clone, PartialEq, Eq)]
pub struct Channel {
    /// Channel id, unique within its org.
    pub channel_id: String,
    /// Kind.
    pub kind: ChannelKind,
    /// URL, e-mail address or audience: PII, never logged.
    pub target: String,
    /// Secret name.
    pub secret_ref: Option<String>,
    /// Deliveries per minute; `None`: unlimited.
    pub rate_limit_per_minute: Option<i32>,
    /// Active.
    pub enabled: bool,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the target (a URL or an e-mail address).
        f.debug_struct("Channel")
            .field("channel_id", &self.channel_id)
            .field("kind", &self.kind)
            .field("secret_ref", &self.secret_ref.is_some())
            .field("rate_limit_per_minute", &self.rate_limit_per_minute)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// Who a delivery row belongs to.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryRef<'a> {
    /// The idempotency key.
    pub key: Uuid,
    /// Org.
    pub org_id: i64,
    /// Alert.
    pub alert_id: Uuid,
    /// Channel id.
    pub channel_id: &'a str,
    /// Channel kind.
    pub kind: ChannelKind,
}

/// An in-app notification with its delivery: written after the alert's turn (so owned).
#[derive(Debug, Clone)]
pub struct InApp {
    /// The idempotency key.
    pub key: Uuid,
    /// Org.
    pub org_id: i64,
    /// Alert.
    pub alert_id: Uuid,
    /// Channel id.
    pub channel_id: String,
    /// Who sees it (the channel's target).
    pub audience: String,
    /// `firing` or `resolved`.
    pub state: &'static str,
    /// Severity.
    pub severity: &'static str,
    /// Title.
    pub title: String,
    /// Text.
    pub message: String,
}

/// Statements prepared once per connection.
#[derive(Debug)]
pub struct Statements {
    put_channel: Statement,
    channels: Statement,
    sent: Statement,
    record_sent: Statement,
    record_failed: Statement,
    in_app: Statement,
}

impl Prepared for Statements {
    async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        prepare(client).await
    }
}

/// The PostgreSQL store: a few autocommit connections, each used by the input partitions
/// that map to it (statements from different partitions pipeline on one connection), and
/// as many group-commit lanes for the in-app notifications.
#[derive(Debug)]
pub struct NotifyStore {
    url: String,
    pool: Pool<Statements>,
    lanes: Lanes<Statements>,
}

impl NotifyStore {
    /// A store on `url`: `group.lanes` autocommit connections and as many group-commit lanes;
    /// nothing is connected yet.
    pub fn new(url: &str, group: GroupCommit) -> NotifyStore {
        NotifyStore {
            url: url.to_owned(),
            pool: Pool::new("notify", url, group.lanes),
            lanes: Lanes::new("notify", url, group),
        }
    }

    /// Apply the embedded migrations (idempotent) on a connection of their own.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        pgstore::migrate(&self.url, embedded::migrations::runner(), HISTORY_TABLE).await
    }

    async fn live(&self, partition: i32) -> Result<Arc<Live<Statements>>, StoreError> {
        self.pool.get(partition).await
    }

    /// Upsert (or, `deleted`, tombstone) a channel of `org_id` at `version`; a version at or
    /// below the stored one changes nothing. Returns whether it applied.
    pub async fn put_channel(
        &self,
        partition: i32,
        org_id: i64,
        channel: &ChannelDefinition,
        version: i64,
        deleted: bool,
    ) -> Result<bool, StoreError> {
        let live = self.live(partition).await?;
        let params: [&(dyn ToSql + Sync); 9] = [
            &org_id,
            &channel.channel_id,
            &version,
            &deleted,
            &channel.kind.as_str(),
            &channel.target,
            &channel.secret_ref,
            &channel.rate_limit_per_minute,
            &channel.enabled,
        ];
        let n = live
            .client
            .execute(&live.stmts.put_channel, &params)
            .await?;
        Ok(n > 0)
    }

    /// The channels of `org_id` (not deleted; enabled or not), by channel id.
    pub async fn channels(&self, partition: i32, org_id: i64) -> Result<Vec<Channel>, StoreError> {
        let live = self.live(partition).await?;
        let rows = live.client.query(&live.stmts.channels, &[&org_id]).await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.get(1);
                Ok(Channel {
                    channel_id: r.get(0),
                    kind: kind.parse().map_err(|e: String| {
                        StoreError::Corrupt(format!("stored channel kind: {e}"))
                    })?,
                    target: r.get(2),
                    secret_ref: r.get(3),
                    rate_limit_per_minute: r.get(4),
                    enabled: r.get(5),
                })
            })
            .collect()
    }

    /// The keys of alert `alert_id` (of org `org_id`) delivered so far (status `sent`):
    /// every channel's and state's.
    pub async fn sent(
        &self,
        partition: i32,
        org_id: i64,
        alert_id: Uuid,
    ) -> Result<HashSet<Uuid>, StoreError> {
        let live = self.live(partition).await?;
        let rows = live
            .client
            .query(&live.stmts.sent, &[&org_id, &alert_id])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Record that the peer accepted delivery `d` (one more attempt, status `sent`).
    pub async fn record_sent(&self, partition: i32, d: DeliveryRef<'_>) -> Result<(), StoreError> {
        let live = self.live(partition).await?;
        let params: [&(dyn ToSql + Sync); 5] = [
            &d.key,
            &d.org_id,
            &d.alert_id,
            &d.channel_id,
            &d.kind.as_str(),
        ];
        live.client
            .execute(&live.stmts.record_sent, &params)
            .await?;
        Ok(())
    }

    /// Record a failed attempt of delivery `d` with `error` (never downgrades `sent`);
    /// returns the attempts recorded so far.
    pub async fn record_failed(
        &self,
        partition: i32,
        d: DeliveryRef<'_>,
        error: &str,
    ) -> Result<i32, StoreError> {
        let live = self.live(partition).await?;
        let params: [&(dyn ToSql + Sync); 6] = [
            &d.key,
            &d.org_id,
            &d.alert_id,
            &d.channel_id,
            &d.kind.as_str(),
            &error,
        ];
        let rows = live
            .client
            .query(&live.stmts.record_failed, &params)
            .await?;
        Ok(rows.first().map_or(0, |r| r.get(0)))
    }

    /// Store an in-app notification (once per key) and record its delivery as sent, in one
    /// statement in the lane of `partition`; durable once the returned ticket resolves.
    pub async fn deliver_in_app(&self, partition: i32, n: &InApp) -> Result<Ticket, StoreError> {
        let params: Vec<Param> = vec![
            Box::new(n.key),
            Box::new(n.org_id),
            Box::new(n.alert_id),
            Box::new(n.channel_id.clone()),
            Box::new(ChannelKind::InApp.as_str()),
            Box::new(n.audience.clone()),
            Box::new(n.state),
            Box::new(n.severity),
            Box::new(n.title.clone()),
            Box::new(n.message.clone()),
        ];
        let lane = self.lanes.lane(partition).await?;
        lane.write(|s| &s.in_app, params).await?;
        Ok(lane.ticket())
    }
}

/// Upsert of a delivery as sent: `$1..$5` = key, org, alert, channel, kind.
const RECORD_SENT: &str = "INSERT INTO notify_deliveries (idempotency_key, org_id, alert_id, \
       channel_id, kind, status, attempts, sent_at) \
     VALUES ($1::uuid, $2::bigint, $3::uuid, $4::text, $5::text, 'sent', 1, now()) \
     ON CONFLICT (idempotency_key) DO UPDATE SET status = 'sent', \
       attempts = notify_deliveries.attempts + 1, sent_at = now(), updated_at = now() \
     WHERE notify_deliveries.status <> 'sent'";

async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
    let put_channel = client
        .prepare(
            "INSERT INTO notify_channels (org_id, channel_id, version, deleted, kind, target, \
               secret_ref, rate_limit_per_minute, enabled) \
             VALUES ($1::bigint, $2::text, $3::bigint, $4::boolean, $5::text, $6::text, \
               $7::text, $8::int, $9::boolean) \
             ON CONFLICT (org_id, channel_id) DO UPDATE SET version = EXCLUDED.version, \
               deleted = EXCLUDED.deleted, kind = EXCLUDED.kind, target = EXCLUDED.target, \
               secret_ref = EXCLUDED.secret_ref, \
               rate_limit_per_minute = EXCLUDED.rate_limit_per_minute, \
               enabled = EXCLUDED.enabled, updated_at = now() \
             WHERE notify_channels.version < EXCLUDED.version",
        )
        .await?;
    let channels = client
        .prepare(
            "SELECT channel_id, kind, target, secret_ref, rate_limit_per_minute, enabled \
             FROM notify_channels WHERE org_id = $1 AND NOT deleted ORDER BY channel_id",
        )
        .await?;
    let sent = client
        .prepare(
            "SELECT idempotency_key FROM notify_deliveries \
             WHERE org_id = $1 AND alert_id = $2 AND status = 'sent'",
        )
        .await?;
    let record_sent = client.prepare(RECORD_SENT).await?;
    let record_failed = client
        .prepare(
            "INSERT INTO notify_deliveries (idempotency_key, org_id, alert_id, channel_id, \
               kind, status, attempts, last_error) \
             VALUES ($1::uuid, $2::bigint, $3::uuid, $4::text, $5::text, 'failed', 1, $6::text) \
             ON CONFLICT (idempotency_key) DO UPDATE SET \
               attempts = notify_deliveries.attempts + 1, last_error = EXCLUDED.last_error, \
               updated_at = now() \
             WHERE notify_deliveries.status <> 'sent' \
             RETURNING attempts",
        )
        .await?;
    let in_app = client
        .prepare(&format!(
            "WITH note AS ( \
             INSERT INTO notify_in_app (idempotency_key, org_id, audience, channel_id, \
               alert_id, state, severity, title, message) \
             VALUES ($1::uuid, $2::bigint, $6::text, $4::text, $3::uuid, $7::text, $8::text, \
               $9::text, $10::text) \
             ON CONFLICT (idempotency_key) DO NOTHING RETURNING 1), \
             sent AS ({RECORD_SENT} RETURNING 1) \
             SELECT (SELECT count(*) FROM note), (SELECT count(*) FROM sent)"
        ))
        .await?;
    Ok(Statements {
        put_channel,
        channels,
        sent,
        record_sent,
        record_failed,
        in_app,
    })
}
