//! Gold's row batches: the silver rows queued for a lane while its previous batch ran are
//! written together ([`GoldStore::put_rows`]: one statement for a run of rows), their
//! aggregates read and computed once per campaign and day ([`crate::stage::batch_outputs`]),
//! and each row gets its outputs back once the lane's transaction is committed.
//!
//! A batch PostgreSQL refuses is written again input by input, so only the input it refuses
//! fails (and is dead-lettered with PostgreSQL's message); its offset is claimed with the
//! failure kept (`gold_failed`), so a replay of it fails again. The loop around it is
//! [`pgstore::batch`]'s: an outage is waited out (the batch is tried again, with capped
//! backoff, until it lands; its rows wait meanwhile).

use envelope::{
    Date,
    payload::{gold::AggregateReady, silver::ProcessedRow},
};
use pgstore::{BatchCounters, Settle, StoreError, Ticket};
use runtime::{Position, ProcessError};

use crate::{
    stage::{self, Change},
    store::{BookingSource, GoldStore, Via},
};

/// A row's aggregates, or why it failed.
pub type Reply = pgstore::batch::Reply<Vec<AggregateReady>>;

/// Gold's batches: one batching task per group-commit lane.
pub type Batches = pgstore::Batches<Settler>;

/// A silver input waiting for its lane's next batch.
#[derive(Debug)]
pub struct Queued {
    at: Position,
    org_id: i64,
    change: Change,
}

impl Queued {
    /// The input at `at` (of `org_id`): a silver row.
    pub fn new(at: Position, org_id: i64, row: ProcessedRow) -> Queued {
        Queued {
            at,
            org_id,
            change: Change::of(org_id, row),
        }
    }
}

/// Settles gold's batches on its store.
#[derive(Debug)]
pub struct Settler {
    store: std::sync::Arc<GoldStore>,
    counters: BatchCounters,
}

impl Settler {
    /// Batches written to `store`, counted in `counters`.
    pub fn new(store: std::sync::Arc<GoldStore>, counters: BatchCounters) -> Settler {
        Settler { store, counters }
    }
}

impl Settle for Settler {
    type Item = Queued;
    type Output = Vec<AggregateReady>;
    /// Corrections that moved a row out of a campaign, kept across attempts: a second
    /// attempt finds those rows written already (replays) and would not see the move again.
    type Carry = Vec<(i64, String, Date)>;
    const STORE: &'static str = "gold";

    async fn settle(
        &self,
        lane: i32,
        batch: &[Queued],
        moved: &mut Self::Carry,
    ) -> Result<(Ticket, Vec<Reply>), StoreError> {
        try_settle(&self.store, lane, batch, moved, &self.counters).await
    }
}

/// One attempt: `Err` when PostgreSQL is unavailable (the whole batch waits) or a read of the
/// batch's campaigns fails (the whole batch fails); a refused write fails only its input.
async fn try_settle(
    store: &GoldStore,
    lane: i32,
    batch: &[Queued],
    moved: &mut Vec<(i64, String, Date)>,
    counters: &BatchCounters,
) -> Result<(Ticket, Vec<Reply>), StoreError> {
    let mut failed: Vec<Option<ProcessError>> = batch.iter().map(|_| None).collect();
    let mut tx = store.lane(lane).await?;
    // Inputs refused before (this batch is a replay of them): they fail again.
    let positions: Vec<Position> = batch.iter().map(|q| q.at).collect();
    let before = GoldStore::failed(&tx, &positions).await?;
    let mut start = 0;
    while start < batch.len() {
        // A run of rows and claims in one statement; a booking row on its own, in order.
        let end = if matches!(batch[start].change, Change::Booking(_)) {
            start + 1
        } else {
            batch[start..]
                .iter()
                .position(|q| matches!(q.change, Change::Booking(_)))
                .map_or(batch.len(), |n| start + n)
        };
        let run = &batch[start..end];
        let result = write(store, &tx, run).await;
        match result {
            Ok(m) => moved.extend(m),
            Err(StoreError::Query(_)) if run.len() > 1 => {
                // Refused as a whole (the lane rebuilt its transaction without it): write it
                // input by input, so only the culprit fails.
                counters.split.inc();
                for (i, q) in run.iter().enumerate() {
                    drop(tx);
                    tx = store.lane(lane).await?;
                    let result = write(store, &tx, std::slice::from_ref(q)).await;
                    match result {
                        Ok(m) => moved.extend(m),
                        Err(e @ StoreError::Query(_)) => {
                            tx = refused(store, lane, tx, q, &e).await?;
                            failed[start + i] = Some(e.into());
                        }
                        Err(e) => return Err(e),
                    }
                }
                drop(tx);
                tx = store.lane(lane).await?;
            }
            Err(e @ StoreError::Query(_)) => {
                tx = refused(store, lane, tx, &run[0], &e).await?;
                failed[start] = Some(e.into());
            }
            Err(e) => return Err(e),
        }
        start = end;
    }
    for (q, f) in batch.iter().zip(failed.iter_mut()) {
        if let Some((code, message)) = before.get(&(q.at.partition, q.at.offset)) {
            *f = Some(ProcessError::permanent(
                StoreError::known_code(code).unwrap_or("GOLD_FAILED"),
                message.clone(),
            ));
        }
    }
    let written: Vec<_> = batch
        .iter()
        .zip(&failed)
        .map(|(q, f)| (q.at, q.org_id, f.is_none().then_some(&q.change)))
        .collect();
    let mut replies = stage::batch_outputs(&tx, &written, moved).await?;
    for (reply, f) in replies.iter_mut().zip(failed) {
        if let Some(e) = f {
            *reply = Err(e);
        }
    }
    let ticket = tx.ticket();
    Ok((ticket, replies))
}

/// An input PostgreSQL refused (the lane's transaction was lost with it): claim it alone
/// with its failure in a fresh transaction, so that a replay fails it again. Returns the
/// lane's new hold.
async fn refused(
    store: &GoldStore,
    lane: i32,
    tx: crate::store::Tx,
    q: &Queued,
    e: &StoreError,
) -> Result<crate::store::Tx, StoreError> {
    drop(tx);
    let tx = store.lane(lane).await?;
    GoldStore::put_failed(&tx, q.at, e).await?;
    Ok(tx)
}

/// Write a run of inputs: rows and claims in one statement, or one booking row.
async fn write(
    store: &GoldStore,
    tx: &crate::store::Tx,
    run: &[Queued],
) -> Result<Vec<(i64, String, Date)>, StoreError> {
    if let [
        Queued {
            at,
            org_id,
            change: Change::Booking(booking),
            ..
        },
    ] = run
    {
        let source = BookingSource::Report;
        store
            .put_booking(
                Via::Lane(tx),
                *at,
                *org_id,
                booking,
                source,
                at.offset,
                false,
            )
            .await?;
        return Ok(Vec::new());
    }
    let claims: Vec<Position> = run.iter().map(|q| q.at).collect();
    let rows: Vec<_> = run
        .iter()
        .filter_map(|q| match &q.change {
            Change::Row(r) => Some((q.at, r)),
            _ => None,
        })
        .collect();
    GoldStore::put_rows(tx, &claims, &rows).await
}
