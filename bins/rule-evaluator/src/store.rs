//! The rule evaluator's state in PostgreSQL: each entity's alert states and metric history,
//! each org's own rules, the alerts decided per input record, and the next input offset per
//! partition. Every change is one statement that also claims the input offsets it reflects,
//! so a replayed record changes nothing and gets the alerts it was first given. The event ids
//! of the aggregates evaluated are kept with them, so an aggregate emitted again under its
//! event id at another offset is not evaluated twice, with or without the dedupe store.
//!
//! Aggregates are evaluated in batches through group-commit lanes ([`pgstore::Lanes`],
//! picked by `gold.data.ready` partition; see [`crate::batch`]): a batch reads its offsets,
//! states and rules (and the outbox, for replays) and writes in one statement
//! ([`RuleStore::put_batch`]); batches share transactions, and an aggregate's alerts wait
//! for its [`pgstore::Ticket`]. Rule changes (`config.changes`, whose partitions do not
//! follow gold's) are written autocommit, and read by the lanes once committed.

use std::collections::{HashMap, HashSet};

use envelope::payload::{alerts::Alert, config::RuleDefinition};
use pgstore::{GroupCommit, LaneTx, Lanes, Param, Pool, Prepared, StoreError, claim_params};
use runtime::Position;
use tokio_postgres::{Client, Statement, types::Json};

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

/// A batch's writes ([`RuleStore::put_batch`]).
#[derive(Debug, Default)]
pub struct BatchWrite {
    /// The input topic.
    pub topic: String,
    /// Per partition: the first offset of the batch's new inputs, and the offset past the
    /// last.
    pub claims: Vec<(i32, i64, i64)>,
    /// The new state of each entity the batch changed, as JSON text (serialised once, straight
    /// to text: a `serde_json::Value` tree per state was a third of the evaluator's CPU).
    pub states: Vec<(EntityKey, String)>,
    /// What was decided per input (partition, offset), for inputs that decided alerts or
    /// failed ([`Decided`]).
    pub outbox: Vec<(i32, i64, String)>,
    /// The event ids of the aggregates evaluated.
    pub applied: Vec<uuid::Uuid>,
}

/// What the outbox keeps for an input: the alerts it decided (a JSON array, as ever), or why
/// it failed, so that a replay of it fails the same way — the dead letter of its first run
/// may never have been written.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Decided {
    /// The alerts decided (none is not stored).
    Alerts(Vec<Alert>),
    /// The input failed with this code and message.
    Failed {
        /// The error's code.
        code: String,
        /// The error's message.
        message: String,
    },
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
/// Statements prepared once per connection.
#[derive(Debug)]
pub struct Statements {
    claim_only: Statement,
    offsets: Statement,
    states: Statement,
    rules: Statement,
    replays: Statement,
    applied: Statement,
    put_batch: Statement,
    put_rule: Statement,
    prune: Statement,
}

impl Prepared for Statements {
    async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Statements {
            claim_only: client
                .prepare(&format!("{CLAIM} SELECT count(*) FROM claim"))
                .await?,
            offsets: client
                .prepare(
                    "SELECT partition, next_offset FROM rules_offsets \
                     WHERE topic = $1 AND partition = ANY($2::int[])",
                )
                .await?,
            // Exactly the (org, campaign, line item) keys of a batch's aggregates.
            states: client
                .prepare(
                    "SELECT org_id, campaign_id, line_item_id, state FROM rules_entities \
                     WHERE org_id = ANY($1::bigint[]) AND (org_id, campaign_id, line_item_id) IN \
                       (SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[]))",
                )
                .await?,
            rules: client
                .prepare(
                    "SELECT org_id, rule_id, deleted, definition FROM rules_definitions \
                     WHERE org_id = ANY($1::bigint[]) ORDER BY org_id, rule_id",
                )
                .await?,
            replays: client
                .prepare(
                    "SELECT partition, input_offset, alerts FROM rules_outbox \
                     WHERE topic = $1 AND (partition, input_offset) IN \
                       (SELECT * FROM unnest($2::int[], $3::bigint[]))",
                )
                .await?,
            applied: client
                .prepare("SELECT event_id FROM rules_applied WHERE event_id = ANY($1::uuid[])")
                .await?,
            // Every partition's claim must hold (no other consumer moved its offset since the
            // batch read it), or nothing is written and `false` comes back.
            put_batch: client
                .prepare(
                    "WITH claims AS ( \
                     SELECT * FROM unnest($2::int[], $3::bigint[], $4::bigint[]) \
                       AS c(partition, first_offset, next_offset)), \
                     held AS ( \
                     SELECT partition, next_offset FROM rules_offsets \
                     WHERE topic = $1::text AND partition = ANY($2::int[]) FOR UPDATE), \
                     ok AS ( \
                     SELECT coalesce(bool_and(coalesce(h.next_offset, 0) <= c.first_offset), true) AS ok \
                     FROM claims c LEFT JOIN held h ON h.partition = c.partition), \
                     claim AS ( \
                     INSERT INTO rules_offsets (topic, partition, next_offset) \
                     SELECT $1::text, partition, next_offset FROM claims WHERE (SELECT ok FROM ok) \
                     ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset \
                     RETURNING 1), \
                     put AS ( \
                     INSERT INTO rules_entities (org_id, campaign_id, line_item_id, state) \
                     SELECT o, c, l, s::jsonb FROM unnest($5::bigint[], $6::text[], $7::text[], $8::text[]) \
                       AS u(o, c, l, s) \
                     WHERE (SELECT ok FROM ok) \
                     ON CONFLICT (org_id, campaign_id, line_item_id) DO UPDATE SET \
                       state = EXCLUDED.state, updated_at = now() RETURNING 1), \
                     outbox AS ( \
                     INSERT INTO rules_outbox (topic, partition, input_offset, alerts) \
                     SELECT $1::text, p, i, a::jsonb FROM unnest($9::int[], $10::bigint[], $11::text[]) \
                       AS u(p, i, a) \
                     WHERE (SELECT ok FROM ok) \
                     ON CONFLICT DO NOTHING RETURNING 1), \
                     applied AS ( \
                     INSERT INTO rules_applied (event_id) SELECT * FROM unnest($12::uuid[]) \
                     WHERE (SELECT ok FROM ok) \
                     ON CONFLICT DO NOTHING RETURNING 1) \
                     SELECT ok FROM ok",
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
                .prepare(
                    "WITH applied AS ( \
                     DELETE FROM rules_applied WHERE created_at < now() - make_interval(hours => $1) \
                     RETURNING 1) \
                     DELETE FROM rules_outbox WHERE created_at < now() - make_interval(hours => $1)",
                )
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

    /// The next offset to apply of each of `partitions` of `topic` (absent: none applied).
    pub async fn next_offsets(
        tx: &Tx,
        topic: &str,
        partitions: &[i32],
    ) -> Result<HashMap<i32, i64>, StoreError> {
        let rows = tx.read(|s| &s.offsets, &[&topic, &partitions]).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The stored states of `entities` (an entity without one has none here); a state that
    /// cannot be read back is an error of that entity alone.
    pub async fn states(
        tx: &Tx,
        entities: &[&EntityKey],
    ) -> Result<HashMap<EntityKey, Result<EntityState, StoreError>>, StoreError> {
        if entities.is_empty() {
            return Ok(HashMap::new());
        }
        let orgs: Vec<i64> = entities.iter().map(|e| e.org_id).collect();
        let campaigns: Vec<&str> = entities.iter().map(|e| e.campaign_id.as_str()).collect();
        let line_items: Vec<&str> = entities
            .iter()
            .map(|e| e.line_item_id.as_deref().unwrap_or_default())
            .collect();
        let rows = tx
            .read(|s| &s.states, &[&orgs, &campaigns, &line_items])
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let line_item: String = r.get(2);
                let key = EntityKey {
                    org_id: r.get(0),
                    campaign_id: r.get(1),
                    line_item_id: (!line_item.is_empty()).then_some(line_item),
                };
                let state = r
                    .try_get::<_, Json<EntityState>>(3)
                    .map(|Json(s)| s)
                    .map_err(|e| StoreError::Corrupt(format!("entity state: {e}")));
                (key, state)
            })
            .collect())
    }

    /// Each of `orgs`' own rules, by rule id (an org without any has none here); a rule list
    /// that cannot be read back is an error of that org alone.
    pub async fn rules(
        tx: &Tx,
        orgs: &[i64],
    ) -> Result<HashMap<i64, Result<Vec<StoredRule>, StoreError>>, StoreError> {
        if orgs.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = tx.read(|s| &s.rules, &[&orgs]).await?;
        let mut out: HashMap<i64, Result<Vec<StoredRule>, StoreError>> = HashMap::new();
        for r in &rows {
            let (org_id, rule_id, deleted): (i64, String, bool) = (r.get(0), r.get(1), r.get(2));
            let rule = if deleted {
                Ok(None)
            } else {
                r.try_get::<_, Json<RuleDefinition>>(3)
                    .map(|Json(d)| Some(d))
                    .map_err(|e| StoreError::Corrupt(format!("rule {rule_id}: {e}")))
            };
            let entry = out.entry(org_id).or_insert_with(|| Ok(Vec::new()));
            match (entry, rule) {
                (Ok(list), Ok(definition)) => list.push(StoredRule {
                    rule_id,
                    definition,
                }),
                (entry @ Ok(_), Err(e)) => *entry = Err(e),
                (Err(_), _) => {}
            }
        }
        Ok(out)
    }

    /// Which of `event_ids` were evaluated before (kept as long as the outbox).
    pub async fn applied(
        tx: &Tx,
        event_ids: &[uuid::Uuid],
    ) -> Result<HashSet<uuid::Uuid>, StoreError> {
        if event_ids.is_empty() {
            return Ok(HashSet::new());
        }
        let rows = tx.read(|s| &s.applied, &[&event_ids]).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// What was first decided for each of the inputs at `at` (absent: no alerts).
    pub async fn replays(
        tx: &Tx,
        at: &[Position],
    ) -> Result<HashMap<(i32, i64), Decided>, StoreError> {
        let Some(first) = at.first() else {
            return Ok(HashMap::new());
        };
        let partitions: Vec<i32> = at.iter().map(|p| p.partition).collect();
        let offsets: Vec<i64> = at.iter().map(|p| p.offset).collect();
        let rows = tx
            .read(
                |s| &s.replays,
                &[&first.topic.name(), &partitions, &offsets],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let Json(decided) = r
                    .try_get::<_, Json<Decided>>(2)
                    .map_err(|e| StoreError::Corrupt(format!("stored alerts: {e}")))?;
                Ok(((r.get(0), r.get(1)), decided))
            })
            .collect()
    }

    /// Write a batch in one statement, in the lane's transaction: each claim (a partition,
    /// the first offset of the batch's new inputs in it, and the offset past its last),
    /// the entities' new states and the alerts decided per input offset. Nothing is
    /// written, and `false` returned, when another consumer applied any claimed offset since
    /// [`RuleStore::next_offsets`] read it.
    pub async fn put_batch(tx: &Tx, batch: BatchWrite) -> Result<bool, StoreError> {
        let BatchWrite {
            topic,
            claims,
            states,
            outbox,
            applied,
        } = batch;
        let (mut orgs, mut campaigns, mut line_items, mut jsons) = (
            Vec::with_capacity(states.len()),
            Vec::with_capacity(states.len()),
            Vec::with_capacity(states.len()),
            Vec::with_capacity(states.len()),
        );
        for (k, json) in states {
            orgs.push(k.org_id);
            campaigns.push(k.campaign_id);
            line_items.push(k.line_item_id.unwrap_or_default());
            jsons.push(json);
        }
        let (mut partitions, mut offsets, mut decided) = (
            Vec::with_capacity(outbox.len()),
            Vec::with_capacity(outbox.len()),
            Vec::with_capacity(outbox.len()),
        );
        for (p, o, json) in outbox {
            partitions.push(p);
            offsets.push(o);
            decided.push(json);
        }
        let params: Vec<Param> = vec![
            Box::new(topic),
            Box::new(claims.iter().map(|c| c.0).collect::<Vec<_>>()),
            Box::new(claims.iter().map(|c| c.1).collect::<Vec<_>>()),
            Box::new(claims.iter().map(|c| c.2).collect::<Vec<_>>()),
            Box::new(orgs),
            Box::new(campaigns),
            Box::new(line_items),
            Box::new(jsons),
            Box::new(partitions),
            Box::new(offsets),
            Box::new(decided),
            Box::new(applied),
        ];
        let row = tx.write(|s| &s.put_batch, params).await?;
        Ok(row.get(0))
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

    /// Forget the alerts decided and the event ids evaluated longer than `hours` ago (their
    /// inputs are committed by then, and gold's re-emissions long read).
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
