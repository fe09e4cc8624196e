//! The evaluator's aggregate batches: the aggregates queued for a lane while its previous
//! batch ran are evaluated together. One read for the partitions' next offsets, then one
//! each for the states of the batch's entities, its orgs' rules, what its replays were
//! first given and which of its event ids were evaluated before; the aggregates are
//! evaluated in order in memory (an entity's later aggregates see its earlier ones'
//! effect); then one statement claims the offsets and writes every changed state, the
//! alerts decided per input and the event ids evaluated ([`RuleStore::put_batch`]). Each
//! aggregate gets its alerts once the lane's transaction holding them is committed.
//!
//! An aggregate below its partition's next offset is a replay (a crash after the commit,
//! before the offset reached Kafka): it changes nothing and gets the alerts it was first
//! given, from the outbox. A new aggregate whose event id was evaluated before (gold, killed
//! after producing it and before committing its input, emits it again at a later offset,
//! recomputed from a state that may have changed since) is a duplicate: its offset is
//! claimed, nothing else changes and it emits nothing (the first one's alerts are out, or
//! come from its own replay); the runtime's dedupe store catches most of them first, this
//! catches them when that store is down or in memory. An entity state or an org's rules
//! that cannot be read back fail that entity's or org's aggregates alone. A batch
//! PostgreSQL refuses is settled again aggregate by aggregate, so only the aggregate it
//! refuses is dead-lettered. A failed aggregate's offset is claimed with its failure in the
//! outbox, so a replay of it is dead-lettered again (its first dead letter may never have
//! been written). The loop around it is [`pgstore::batch`]'s: an outage is waited out, the
//! aggregates wait with it.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use envelope::{
    Event,
    payload::{alerts::Alert, gold::AggregateReady},
};
use pgstore::{BatchCounters, Settle, StoreError, Ticket, batch::Reply};
use prometheus_client::metrics::counter::Counter;
use runtime::{Position, ProcessError};

use crate::{
    rules::{EntityKey, EntityState, Rule},
    stage::org_rules,
    store::{BatchWrite, Decided, RuleStore, Tx},
};

/// The evaluator's batches: one batching task per group-commit lane.
pub type Batches = pgstore::Batches<Settler>;

/// A gold aggregate waiting for its lane's next batch.
#[derive(Debug)]
pub struct Queued {
    at: Position,
    event: Event<AggregateReady>,
}

impl Queued {
    /// The aggregate `event`, the input at `at`.
    pub fn new(at: Position, event: Event<AggregateReady>) -> Queued {
        Queued { at, event }
    }

    fn entity(&self) -> EntityKey {
        EntityKey::of(self.event.metadata.org_id, &self.event.payload)
    }
}

/// Settles the evaluator's batches on its store.
#[derive(Debug)]
pub struct Settler {
    store: Arc<RuleStore>,
    counters: BatchCounters,
    duplicates: Counter,
}

impl Settler {
    /// Batches settled on `store`, counted in `counters`; aggregates skipped because their
    /// event id was evaluated before counted in `duplicates`.
    pub fn new(store: Arc<RuleStore>, counters: BatchCounters, duplicates: Counter) -> Settler {
        Settler {
            store,
            counters,
            duplicates,
        }
    }
}

impl Settle for Settler {
    type Item = Queued;
    type Output = Vec<Alert>;
    type Carry = ();
    const STORE: &'static str = "rules";

    async fn settle(
        &self,
        lane: i32,
        batch: &[Queued],
        _: &mut (),
    ) -> Result<(Ticket, Vec<Reply<Vec<Alert>>>), StoreError> {
        let mut tx = self.store.lane(lane).await?;
        let replies = match evaluate(&tx, batch, &self.duplicates).await {
            Ok(replies) => replies,
            Err(StoreError::Query(_)) if batch.len() > 1 => {
                // Refused as a whole (the lane rebuilt its transaction without it): settle
                // it aggregate by aggregate, so only the culprit fails.
                self.counters.split.inc();
                let mut replies = Vec::with_capacity(batch.len());
                for q in batch {
                    drop(tx);
                    tx = self.store.lane(lane).await?;
                    match evaluate(&tx, std::slice::from_ref(q), &self.duplicates).await {
                        Ok(one) => replies.extend(one),
                        Err(e @ StoreError::Query(_)) => {
                            tx = refused(&self.store, lane, tx, q, &e).await?;
                            replies.push(Err(e.into()));
                        }
                        Err(e) => return Err(e),
                    }
                }
                replies
            }
            Err(e @ StoreError::Query(_)) => {
                tx = refused(&self.store, lane, tx, &batch[0], &e).await?;
                vec![Err(e.into())]
            }
            Err(e) => return Err(e),
        };
        Ok((tx.ticket(), replies))
    }
}

/// An input PostgreSQL refused (its lane's transaction was lost with it): claim its offset
/// alone with its failure in the outbox, in a fresh transaction, so that a replay fails it
/// again. Returns the lane's new hold.
async fn refused(
    store: &RuleStore,
    lane: i32,
    tx: Tx,
    q: &Queued,
    e: &StoreError,
) -> Result<Tx, StoreError> {
    drop(tx);
    let tx = store.lane(lane).await?;
    let write = BatchWrite {
        topic: q.at.topic.name().to_owned(),
        claims: vec![(q.at.partition, q.at.offset, q.at.offset + 1)],
        states: Vec::new(),
        applied: Vec::new(),
        outbox: vec![(
            q.at.partition,
            q.at.offset,
            failed(e.code(), &e.to_string())?,
        )],
    };
    RuleStore::put_batch(&tx, write).await?;
    Ok(tx)
}

/// The outbox entry of an input that failed.
fn failed(code: &str, message: &str) -> Result<String, StoreError> {
    serde_json::to_string(&Decided::Failed {
        code: code.to_owned(),
        message: message.to_owned(),
    })
    .map_err(|e| StoreError::Query(format!("a failure: {e}")))
}

/// The error a replay of an input that failed fails with: the same code when it is one of
/// the store's.
fn failed_again(code: &str, message: String) -> ProcessError {
    ProcessError::permanent(
        StoreError::known_code(code).unwrap_or("RULES_FAILED"),
        message,
    )
}

/// Where one input of a batch stands while the batch is evaluated.
enum Verdict {
    /// A replay: its alerts come from the outbox.
    Replay,
    /// A new input whose event id was evaluated before: nothing to emit.
    Duplicate,
    /// Evaluated: the alerts it decided.
    Alerts(Vec<Alert>),
    /// Its entity's state or its org's rules could not be read.
    Failed(ProcessError),
}

/// Read, evaluate and write `batch` in `tx`: one reply per input, in order. `Err` when a
/// statement fails (the lane's transaction is then lost) or another consumer claimed one of
/// the batch's offsets meanwhile (retried: the inputs are then replays).
async fn evaluate(
    tx: &Tx,
    batch: &[Queued],
    duplicates: &Counter,
) -> Result<Vec<Reply<Vec<Alert>>>, StoreError> {
    let Some(first) = batch.first() else {
        return Ok(Vec::new());
    };
    let topic = first.at.topic.name();
    let partitions: Vec<i32> = batch
        .iter()
        .map(|q| q.at.partition)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let next = RuleStore::next_offsets(tx, topic, &partitions).await?;
    let is_new = |q: &Queued| q.at.offset >= next.get(&q.at.partition).copied().unwrap_or(0);

    let mut entities: BTreeSet<EntityKey> = BTreeSet::new();
    let mut replayed: Vec<Position> = Vec::new();
    let mut event_ids: Vec<uuid::Uuid> = Vec::new();
    for q in batch {
        if is_new(q) {
            entities.insert(q.entity());
            event_ids.push(q.event.metadata.event_id.0);
        } else {
            replayed.push(q.at);
        }
    }
    let keys: Vec<&EntityKey> = entities.iter().collect();
    let orgs: Vec<i64> = entities
        .iter()
        .map(|e| e.org_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // One after the other: a statement PostgreSQL refuses must be the error the batch sees,
    // not a sibling's "transaction aborted" (an outage, retried).
    let mut states = RuleStore::states(tx, &keys).await?;
    let mut rules = RuleStore::rules(tx, &orgs).await?;
    let mut decided = RuleStore::replays(tx, &replayed).await?;
    // Evaluated before, or earlier in this batch (a failed one is not: as in the runtime's
    // dedupe, a copy of it is tried again).
    let mut seen: HashSet<uuid::Uuid> = RuleStore::applied(tx, &event_ids).await?;
    // Each org's rules, parsed once per batch.
    let mut parsed: HashMap<i64, Result<Vec<Rule>, ProcessError>> = HashMap::new();
    let mut changed: BTreeSet<EntityKey> = BTreeSet::new();
    // Per partition, from the first new input to past the last.
    let mut claims: HashMap<i32, (i64, i64)> = HashMap::new();
    let mut verdicts = Vec::with_capacity(batch.len());
    let mut write = BatchWrite {
        topic: topic.to_owned(),
        ..BatchWrite::default()
    };
    for q in batch {
        if !is_new(q) {
            verdicts.push(Verdict::Replay);
            continue;
        }
        let claim = claims
            .entry(q.at.partition)
            .or_insert((q.at.offset, q.at.offset + 1));
        claim.0 = claim.0.min(q.at.offset);
        claim.1 = claim.1.max(q.at.offset + 1);
        let event_id = q.event.metadata.event_id.0;
        if seen.contains(&event_id) {
            verdicts.push(Verdict::Duplicate);
            continue;
        }
        let org_id = q.event.metadata.org_id;
        let org = parsed.entry(org_id).or_insert_with(|| {
            match rules.remove(&org_id).unwrap_or_else(|| Ok(Vec::new())) {
                Ok(stored) => Ok(org_rules(org_id, stored)),
                Err(e) => Err(e.into()),
            }
        });
        let entity = q.entity();
        let state = states
            .entry(entity.clone())
            .or_insert_with(|| Ok(EntityState::default()));
        let ready = match (org, state) {
            (Ok(org), Ok(state)) => Ok((org, state)),
            (Err(e), _) => Err(e.clone()),
            (_, Err(e)) => Err(ProcessError::permanent(e.code(), e.to_string())),
        };
        let (org, state) = match ready {
            Ok(ready) => ready,
            Err(e) => {
                write
                    .outbox
                    .push((q.at.partition, q.at.offset, failed(e.code, &e.message)?));
                verdicts.push(Verdict::Failed(e));
                continue;
            }
        };
        let alerts: Vec<Alert> = state
            .evaluate(org_id, org, &q.event.payload, q.event.metadata.event_id)
            .into_iter()
            .map(|d| d.alert)
            .collect();
        changed.insert(entity);
        seen.insert(event_id);
        write.applied.push(event_id);
        if !alerts.is_empty() {
            // `Decided::Alerts` is the array itself.
            let json = serde_json::to_string(&alerts)
                .map_err(|e| StoreError::Query(format!("alerts: {e}")))?;
            write.outbox.push((q.at.partition, q.at.offset, json));
        }
        verdicts.push(Verdict::Alerts(alerts));
    }
    write.claims = claims.into_iter().map(|(p, (a, b))| (p, a, b)).collect();
    write.claims.sort_unstable();
    for entity in changed {
        if let Some(Ok(state)) = states.remove(&entity) {
            let json = serde_json::to_string(&state)
                .map_err(|e| StoreError::Query(format!("entity state: {e}")))?;
            write.states.push((entity, json));
        }
    }
    if !write.claims.is_empty() && !RuleStore::put_batch(tx, write).await? {
        return Err(StoreError::Unavailable(
            "another consumer applied offsets of this batch meanwhile; evaluating it again".into(),
        ));
    }

    Ok(batch
        .iter()
        .zip(verdicts)
        .map(|(q, verdict)| match verdict {
            Verdict::Alerts(alerts) => Ok(alerts),
            Verdict::Failed(e) => Err(e),
            Verdict::Duplicate => {
                duplicates.inc();
                tracing::debug!(
                    offset = q.at.offset,
                    event_id = %q.event.metadata.event_id,
                    "aggregate evaluated before under this event id: skipped"
                );
                Ok(Vec::new())
            }
            Verdict::Replay => {
                tracing::debug!(
                    offset = q.at.offset,
                    "replayed aggregate: state unchanged, its alerts re-emitted"
                );
                match decided.remove(&(q.at.partition, q.at.offset)) {
                    Some(Decided::Alerts(alerts)) => Ok(alerts),
                    Some(Decided::Failed { code, message }) => Err(failed_again(&code, message)),
                    None => Ok(Vec::new()),
                }
            }
        })
        .collect())
}
