//! Gold's row batches: the silver rows queued for a lane while its previous batch ran are
//! written together ([`GoldStore::put_rows`]: one statement for a run of rows), their
//! aggregates read and computed once per campaign and day ([`crate::stage::batch_outputs`]),
//! and each row gets its outputs back once the lane's transaction is committed.
//!
//! A batch PostgreSQL refuses is written again input by input, so only the input it refuses
//! fails (and is dead-lettered with PostgreSQL's message). An outage is waited out: the
//! batch is tried again, with capped backoff, until it lands; its rows wait meanwhile.

use std::{sync::Arc, time::Duration};

use envelope::{
    Date,
    payload::{gold::AggregateReady, silver::ProcessedRow},
};
use pgstore::{StoreError, Ticket};
use runtime::{Position, ProcessError};
use tokio::sync::{mpsc, oneshot};

use crate::{
    metrics::GoldMetrics,
    stage::{self, Change},
    store::{BookingSource, GoldStore, Via},
};

/// A row's aggregates, or why it failed.
pub type Reply = Result<Vec<AggregateReady>, ProcessError>;

/// A silver input waiting for its lane's next batch.
#[derive(Debug)]
struct Queued {
    at: Position,
    org_id: i64,
    change: Change,
    reply: oneshot::Sender<Reply>,
}

/// One batching task per group-commit lane; a silver partition's inputs go to the lane its
/// partition maps to, in order.
#[derive(Debug)]
pub struct Batches {
    lanes: Vec<mpsc::UnboundedSender<Queued>>,
}

impl Batches {
    /// A batching task for each of `lanes` lanes of `store`, batches of at most `max_rows`.
    /// Must be called inside the tokio runtime.
    pub fn start(
        store: Arc<GoldStore>,
        lanes: usize,
        max_rows: usize,
        metrics: GoldMetrics,
    ) -> Batches {
        let lanes = (0..lanes.max(1))
            .map(|lane| {
                let (tx, rx) = mpsc::unbounded_channel();
                let lane = i32::try_from(lane).unwrap_or(i32::MAX);
                let (store, metrics) = (store.clone(), metrics.clone());
                tokio::spawn(run(store, lane, rx, max_rows.max(1), metrics));
                tx
            })
            .collect();
        Batches { lanes }
    }

    /// Queue the input at `at` (of `org_id`) for its lane's next batch; resolves to its
    /// aggregates once the batch is committed. Never resolves while the stage stops.
    pub fn submit(
        &self,
        at: Position,
        org_id: i64,
        row: ProcessedRow,
    ) -> impl Future<Output = Reply> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let lane = usize::try_from(at.partition).unwrap_or(0) % self.lanes.len();
        let queued = Queued {
            at,
            org_id,
            change: Change::of(org_id, row),
            reply,
        };
        // A closed queue or a dropped reply means the stage is stopping: the input is
        // neither completed nor dead-lettered, and is consumed again.
        let sent = self.lanes[lane].send(queued).is_ok();
        async move {
            match answer.await {
                Ok(reply) if sent => reply,
                _ => std::future::pending().await,
            }
        }
    }
}

/// A lane's batching loop: take everything queued (up to `max_rows`), write it, compute its
/// outputs, and hand them over once committed, while the next batch gathers.
async fn run(
    store: Arc<GoldStore>,
    lane: i32,
    mut queue: mpsc::UnboundedReceiver<Queued>,
    max_rows: usize,
    metrics: GoldMetrics,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < max_rows {
            match queue.try_recv() {
                Ok(q) => batch.push(q),
                Err(_) => break,
            }
        }
        let (ticket, replies) = settle(&store, lane, &batch, &metrics).await;
        metrics.batches.inc();
        metrics.batch_inputs.inc_by(batch.len() as u64);
        tokio::spawn(async move {
            if let Some(ticket) = ticket {
                ticket.committed().await;
            }
            for (q, reply) in batch.into_iter().zip(replies) {
                let _ = q.reply.send(reply);
            }
        });
    }
}

/// Write a batch and compute its outputs, trying again until PostgreSQL answers; the replies
/// wait for the ticket's commit. An error retrying cannot fix (a stored value gold cannot
/// read back) fails every input of the batch at once, with no ticket to wait for.
async fn settle(
    store: &GoldStore,
    lane: i32,
    batch: &[Queued],
    metrics: &GoldMetrics,
) -> (Option<Ticket>, Vec<Reply>) {
    // Corrections that moved a row out of a campaign, kept across attempts: a second attempt
    // finds those rows written already (replays) and would not see the move again.
    let mut moved = Vec::new();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match try_settle(store, lane, batch, &mut moved, metrics).await {
            Ok((ticket, replies)) => return (Some(ticket), replies),
            Err(e) if !e.retryable() => {
                tracing::error!(error = %e, lane, rows = batch.len(), "gold cannot settle the batch");
                let replies = batch
                    .iter()
                    .map(|_| Err(ProcessError::permanent(e.code(), e.to_string())))
                    .collect();
                return (None, replies);
            }
            Err(e) => {
                metrics.store_waits.inc();
                tracing::warn!(error = %e, lane, rows = batch.len(), attempt, "gold store unavailable; the batch waits");
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
}

/// Capped exponential backoff: 100 ms doubling up to 5 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6).saturating_sub(1)))
        .min(Duration::from_secs(5))
}

/// One attempt: `Err` when PostgreSQL is unavailable (the whole batch waits) or a read of the
/// batch's campaigns fails (the whole batch fails); a refused write fails only its input.
async fn try_settle(
    store: &GoldStore,
    lane: i32,
    batch: &[Queued],
    moved: &mut Vec<(i64, String, Date)>,
    metrics: &GoldMetrics,
) -> Result<(Ticket, Vec<Reply>), StoreError> {
    let mut failed: Vec<Option<ProcessError>> = batch.iter().map(|_| None).collect();
    let mut tx = store.lane(lane).await?;
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
        match write(store, &tx, run).await {
            Ok(m) => moved.extend(m),
            Err(StoreError::Query(_)) if run.len() > 1 => {
                // Refused as a whole (the lane rebuilt its transaction without it): write it
                // input by input, so only the culprit fails.
                metrics.batches_split.inc();
                for (i, q) in run.iter().enumerate() {
                    drop(tx);
                    tx = store.lane(lane).await?;
                    match write(store, &tx, std::slice::from_ref(q)).await {
                        Ok(m) => moved.extend(m),
                        Err(e @ StoreError::Query(_)) => failed[start + i] = Some(e.into()),
                        Err(e) => return Err(e),
                    }
                }
                drop(tx);
                tx = store.lane(lane).await?;
            }
            Err(e @ StoreError::Query(_)) => {
                failed[start] = Some(e.into());
                drop(tx);
                tx = store.lane(lane).await?;
            }
            Err(e) => return Err(e),
        }
        start = end;
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
