//! The rule evaluator's state in PostgreSQL: each entity's alert states and metric history,
//! each org's own rules, the alerts decided per input record, and the next input offset per
//! partition. Every change is one statement that also claims the input offset it reflects,
//! so a replayed record changes nothing and gets the alerts it was first given.
//!
//! Aggregates are evaluated through group-commit lanes ([`pgstore::Lanes`], picked by
//! `gold.data.ready` partition): their state writes share transactions, and an aggregate's
//! alerts wait for its [`pgstore::Ticket`]. Rule changes (`config.changes`, whose partitions
//! do not follow gold's) are written autocommit, and read by the lanes once committed.

use envelope::payload::{alerts::Alert, config::RuleDefinition};
use pgstore::{GroupCommit, LaneTx, Lanes, Param, Pool, Prepared, StoreError, claim_params};
use runtime::Position;
use serde_json::Value;
use tokio_postgres::{Client, Statement};

use crate::rules::{EntityKey, EntityState};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The rule evaluator's migration history table (other adpipe stores share the database).
const HISTORY_TABLE: &str = "rules_schema_history";

/// Claims an input offset: inserts or advances the partition's next offset only when the
/// record is at or past it. Every write below is `WHERE EXISTS (SELECT 1 FROM claim)` in the
/// same statement, so it happens exactly when the claim does.
const CLAIM: &str = "WITH claim AS ( \
     INSERT INTO rules_offsets (topic, partition, next_offset) VALUES ($1::text, $2::int, $3::bigint + 1) \
     ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset \
     WHERE rules_offsets.next_offset <= $3::bigint RETURNING 1)";

/// Whether a change was applied, or its input had been applied before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// First time: the state changed.
    New,
    /// A replayed input: the state already reflects it and was left alone.
    Replay,
}

/// An org's stored rule: its definition, or a tombstone.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRule {
    /// Rule id.
    pub rule_id: String,
    /// `None` when the org deleted the rule.
    pub definition: Option<RuleDefinition>,
}

/// Statements prepared once per connection.
#[derive(Debug)]
pub struct Statements {
    claim_only: Statement,
    load: Statement,
    put_state: Statement,
    outbox: Statement,
    put_rule: Statement,
    prune: Statement,
}

impl Prepared for Statements {
    async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Statements {
            claim_only: client
                .prepare(&format!("{CLAIM} SELECT count(*) FROM claim"))
                .await?,
            // One round trip: the entity's state and the org's rules.
            load: client
                .prepare(
                    "SELECT (SELECT state FROM rules_entities WHERE org_id = $1 \
                       AND campaign_id = $2 AND line_item_id = $3), \
                     (SELECT coalesce(jsonb_agg(jsonb_build_array(rule_id, deleted, definition) \
                       ORDER BY rule_id), '[]'::jsonb) FROM rules_definitions WHERE org_id = $1)",
                )
                .await?,
            put_state: client
                .prepare(&format!(
                    "{CLAIM}, put AS ( \
                     INSERT INTO rules_entities (org_id, campaign_id, line_item_id, state) \
                     SELECT $4::bigint, $5::text, $6::text, $7::jsonb WHERE EXISTS (SELECT 1 FROM claim) \
                     ON CONFLICT (org_id, campaign_id, line_item_id) DO UPDATE SET \
                       state = EXCLUDED.state, updated_at = now() RETURNING 1), \
                     outbox AS ( \
                     INSERT INTO rules_outbox (topic, partition, input_offset, alerts) \
                     SELECT $1::text, $2::int, $3::bigint, $8::jsonb \
                     WHERE $8::jsonb IS NOT NULL AND EXISTS (SELECT 1 FROM claim) \
                     ON CONFLICT DO NOTHING RETURNING 1) \
                     SELECT count(*) FROM claim"
                ))
                .await?,
            outbox: client
                .prepare(
                    "SELECT alerts FROM rules_outbox \
                     WHERE topic = $1 AND partition = $2 AND input_offset = $3",
                )
                .await?,
            put_rule: client
                .prepare(&format!(
                    "{CLAIM}, put AS ( \
                     INSERT INTO rules_definitions (org_id, rule_id, version, deleted, definition) \
                     SELECT $4::bigint, $5::text, $6::bigint, $7::boolean, $8::jsonb \
                     WHERE EXISTS (SELECT 1 FROM claim) \
                     ON CONFLICT (org_id, rule_id) DO UPDATE SET version = EXCLUDED.version, \
                       deleted = EXCLUDED.deleted, definition = EXCLUDED.definition, \
                       updated_at = now() \
                     WHERE rules_definitions.version < EXCLUDED.version RETURNING 1) \
                     SELECT count(*) FROM claim"
                ))
                .await?,
            prune: client
                .prepare("DELETE FROM rules_outbox WHERE created_at < now() - make_interval(hours => $1)")
                .await?,
        })
    }
}

/// An aggregate partition's hold on its lane: reads and writes in the lane's transaction.
pub type Tx = LaneTx<Statements>;

/// How a write reaches PostgreSQL: in a lane (aggregates) or autocommit (rule changes).
pub type Via<'a> = pgstore::Via<'a, Statements>;

/// The rule evaluator's PostgreSQL store.
#[derive(Debug)]
pub struct RuleStore {
    url: String,
    pool: Pool<Statements>,
    lanes: Lanes<Statements>,
}

impl RuleStore {
    /// A store on `url`: `group.lanes` group-commit lanes and as many autocommit
    /// connections; nothing is connected yet.
    pub fn new(url: &str, group: GroupCommit) -> RuleStore {
        RuleStore {
            url: url.to_owned(),
            pool: Pool::new("rules", url, group.lanes),
            lanes: Lanes::new("rules", url, group),
        }
    }

    /// The lane of an aggregate partition, with its transaction open (it does not commit
    /// until the returned hold is dropped).
    pub async fn lane(&self, partition: i32) -> Result<Tx, StoreError> {
        self.lanes.lane(partition).await
    }

    /// Apply the embedded migrations (idempotent).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        pgstore::migrate(&self.url, embedded::migrations::runner(), HISTORY_TABLE).await
    }

    /// Claim `at` without changing anything else (config changes the evaluator ignores).
    pub async fn skip(&self, via: Via<'_>, at: Position) -> Result<Applied, StoreError> {
        let params = claim_params(at, 3);
        let row = self
            .pool
            .write(via, at.partition, |s| &s.claim_only, params)
            .await?;
        Ok(applied(row.get(0)))
    }

    /// The stored state of `entity` (a fresh one when it has none) and the org's own rules.
    pub async fn load(
        tx: &Tx,
        entity: &EntityKey,
    ) -> Result<(EntityState, Vec<StoredRule>), StoreError> {
        let line_item = entity.line_item_id.clone().unwrap_or_default();
        let rows = tx
            .read(
                |s| &s.load,
                &[&entity.org_id, &entity.campaign_id, &line_item],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::Corrupt("the state query returned no row".into()))?;
        let state = match row.get::<_, Option<Value>>(0) {
            Some(v) => serde_json::from_value(v)
                .map_err(|e| StoreError::Corrupt(format!("entity state: {e}")))?,
            None => EntityState::default(),
        };
        let rules: Vec<(String, bool, Value)> = serde_json::from_value(row.get(1))
            .map_err(|e| StoreError::Corrupt(format!("rule list: {e}")))?;
        let rules = rules
            .into_iter()
            .map(|(rule_id, deleted, definition)| {
                let definition = if deleted {
                    None
                } else {
                    Some(
                        serde_json::from_value(definition)
                            .map_err(|e| StoreError::Corrupt(format!("rule {rule_id}: {e}")))?,
                    )
                };
                Ok(StoredRule {
                    rule_id,
                    definition,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((state, rules))
    }

    /// Store `entity`'s new state and the alerts decided for the input at `at`, claiming
    /// `at`, in one statement. On [`Applied::Replay`] nothing was written.
    pub async fn put_state(
        &self,
        tx: &Tx,
        at: Position,
        entity: &EntityKey,
        state: &EntityState,
        alerts: &[Alert],
    ) -> Result<Applied, StoreError> {
        let line_item = entity.line_item_id.clone().unwrap_or_default();
        let state = serde_json::to_value(state)
            .map_err(|e| StoreError::Query(format!("entity state: {e}")))?;
        let alerts = if alerts.is_empty() {
            None
        } else {
            Some(
                serde_json::to_value(alerts)
                    .map_err(|e| StoreError::Query(format!("alerts: {e}")))?,
            )
        };
        let mut params = claim_params(at, 8);
        params.extend([
            Box::new(entity.org_id) as Param,
            Box::new(entity.campaign_id.clone()),
            Box::new(line_item),
            Box::new(state),
            Box::new(alerts),
        ]);
        let row = self
            .pool
            .write(Via::Lane(tx), at.partition, |s| &s.put_state, params)
            .await?;
        Ok(applied(row.get(0)))
    }

    /// The alerts first decided for the input at `at` (none when it decided none).
    pub async fn decided(tx: &Tx, at: Position) -> Result<Vec<Alert>, StoreError> {
        let rows = tx
            .read(
                |s| &s.outbox,
                &[&at.topic.name(), &at.partition, &at.offset],
            )
            .await?;
        match rows.first() {
            Some(r) => serde_json::from_value(r.get(0))
                .map_err(|e| StoreError::Corrupt(format!("stored alerts: {e}"))),
            None => Ok(Vec::new()),
        }
    }

    /// Store (or, `deleted`, tombstone) an org's rule at `version` and claim `at`; an older
    /// or equal version than the stored one changes nothing.
    pub async fn put_rule(
        &self,
        at: Position,
        org_id: i64,
        version: i64,
        deleted: bool,
        definition: &RuleDefinition,
    ) -> Result<Applied, StoreError> {
        let json = serde_json::to_value(definition)
            .map_err(|e| StoreError::Query(format!("rule definition: {e}")))?;
        let mut params = claim_params(at, 8);
        params.extend([
            Box::new(org_id) as Param,
            Box::new(definition.rule_id.clone()),
            Box::new(version),
            Box::new(deleted),
            Box::new(json),
        ]);
        let row = self
            .pool
            .write(Via::Autocommit, at.partition, |s| &s.put_rule, params)
            .await?;
        Ok(applied(row.get(0)))
    }

    /// Forget the alerts decided longer than `hours` ago (their inputs are committed by then).
    pub async fn prune_outbox(&self, hours: i32) -> Result<u64, StoreError> {
        let live = self.pool.get(0).await?;
        Ok(live.client.execute(&live.stmts.prune, &[&hours]).await?)
    }
}

fn applied(claimed: i64) -> Applied {
    if claimed > 0 {
        Applied::New
    } else {
        Applied::Replay
    }
}
