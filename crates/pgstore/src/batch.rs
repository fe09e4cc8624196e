//! Per-lane batches: a stage queues each input for the lane its partition maps to, and one
//! task per lane settles everything queued while its previous batch ran, together (reads
//! and writes of the whole batch in a few statements), then hands each input its result
//! once the lane's transaction holding the batch is committed.
//!
//! What settling means is the stage's ([`Settle`]). The loop here owns the rest: gathering
//! (at most `max_inputs` per batch), waiting out an outage with capped backoff (the batch's
//! inputs wait meanwhile, nothing is dead-lettered), failing the whole batch at once on an
//! error retrying cannot fix, and the counters ([`BatchCounters`]).

use std::{future::Future, sync::Arc, time::Duration};

use prometheus_client::{metrics::counter::Counter, registry::Registry};
use runtime::ProcessError;
use tokio::sync::{mpsc, oneshot};

use crate::{StoreError, Ticket};

/// An input's result: its outputs, or why it failed.
pub type Reply<T> = Result<T, ProcessError>;

/// A settled batch: a ticket for the transaction holding its writes, one reply per input.
pub type Settled<T> = (Ticket, Vec<Reply<T>>);

/// A stage's way of settling a batch.
pub trait Settle: Send + Sync + 'static {
    /// A queued input.
    type Item: Send + Sync + 'static;
    /// What an input gets back once its batch is committed.
    type Output: Send + 'static;
    /// Kept across the attempts at one batch (what a first attempt learned that a second,
    /// finding the first one's writes, could not see again).
    type Carry: Default + Send;
    /// The store's name, for logs.
    const STORE: &'static str;

    /// One attempt at `batch` in `lane`: a ticket for the transaction holding its writes
    /// and one reply per input, in order. `Err` fails the attempt as a whole: retried when
    /// [`StoreError::retryable`], otherwise every input fails with it.
    fn settle<'a>(
        &'a self,
        lane: i32,
        batch: &'a [Self::Item],
        carry: &'a mut Self::Carry,
    ) -> impl Future<Output = Result<Settled<Self::Output>, StoreError>> + Send + 'a;
}

/// A batching stage's counters; the stage registers them under its own names.
#[derive(Debug, Default, Clone)]
pub struct BatchCounters {
    /// Batches settled.
    pub batches: Counter,
    /// Inputs in the batches settled (divided by `batches`, the mean batch size).
    pub inputs: Counter,
    /// Runs of a batch PostgreSQL refused as a whole and the stage wrote again input by
    /// input (counted by the stage's [`Settle`]).
    pub split: Counter,
    /// Attempts that found PostgreSQL unavailable and wait to try again.
    pub waits: Counter,
}

impl BatchCounters {
    /// Register the counters in `registry` under the stage's `names` (batches, inputs,
    /// split, waits), their help speaking of `inputs` (e.g. "silver inputs").
    pub fn register(&self, registry: &mut Registry, names: [&str; 4], inputs: &str) {
        let [batches, in_batches, split, waits] = names;
        registry.register(
            batches,
            format!("Batches of {inputs} settled"),
            self.batches.clone(),
        );
        registry.register(
            in_batches,
            format!("{inputs} in the batches settled"),
            self.inputs.clone(),
        );
        registry.register(
            split,
            format!("Batches of {inputs} PostgreSQL refused, settled again input by input"),
            self.split.clone(),
        );
        registry.register(
            waits,
            "Batch attempts that found PostgreSQL unavailable and wait",
            self.waits.clone(),
        );
    }
}

type Queued<S> = (
    <S as Settle>::Item,
    oneshot::Sender<Reply<<S as Settle>::Output>>,
);

/// One batching task per lane.
pub struct Batches<S: Settle> {
    lanes: Vec<mpsc::UnboundedSender<Queued<S>>>,
}

impl<S: Settle> std::fmt::Debug for Batches<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches")
            .field("store", &S::STORE)
            .field("lanes", &self.lanes.len())
            .finish()
    }
}

impl<S: Settle> Batches<S> {
    /// A batching task for each of `lanes` lanes, batches of at most `max_inputs`. Must be
    /// called inside the tokio runtime.
    pub fn start(
        settler: Arc<S>,
        lanes: usize,
        max_inputs: usize,
        counters: BatchCounters,
    ) -> Batches<S> {
        let lanes = (0..lanes.max(1))
            .map(|lane| {
                let (tx, rx) = mpsc::unbounded_channel();
                let lane = i32::try_from(lane).unwrap_or(i32::MAX);
                let (settler, counters) = (settler.clone(), counters.clone());
                tokio::spawn(run(settler, lane, rx, max_inputs.max(1), counters));
                tx
            })
            .collect();
        Batches { lanes }
    }

    /// Queue `item` of input partition `partition` for its lane's next batch (a partition's
    /// inputs stay in order); resolves to its reply once the batch is committed. Never
    /// resolves while the stage stops: the input is then neither completed nor
    /// dead-lettered, and is consumed again.
    pub fn submit(
        &self,
        partition: i32,
        item: S::Item,
    ) -> impl Future<Output = Reply<S::Output>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let lane = usize::try_from(partition).unwrap_or(0) % self.lanes.len();
        let sent = self.lanes[lane].send((item, reply)).is_ok();
        async move {
            match answer.await {
                Ok(reply) if sent => reply,
                _ => std::future::pending().await,
            }
        }
    }
}

/// A lane's loop: take everything queued (up to `max_inputs`), settle it, and hand the
/// replies over once committed, while the next batch gathers.
async fn run<S: Settle>(
    settler: Arc<S>,
    lane: i32,
    mut queue: mpsc::UnboundedReceiver<Queued<S>>,
    max_inputs: usize,
    counters: BatchCounters,
) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < max_inputs {
            match queue.try_recv() {
                Ok(q) => batch.push(q),
                Err(_) => break,
            }
        }
        let (items, senders): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let (ticket, replies) = settle(&*settler, lane, &items, &counters).await;
        counters.batches.inc();
        counters.inputs.inc_by(items.len() as u64);
        tokio::spawn(async move {
            if let Some(ticket) = ticket {
                ticket.committed().await;
            }
            for (sender, reply) in senders.into_iter().zip(replies) {
                let _ = sender.send(reply);
            }
        });
    }
}

/// Settle a batch, trying again until PostgreSQL answers. An error retrying cannot fix
/// fails every input of the batch at once, with no ticket to wait for.
async fn settle<S: Settle>(
    settler: &S,
    lane: i32,
    batch: &[S::Item],
    counters: &BatchCounters,
) -> (Option<Ticket>, Vec<Reply<S::Output>>) {
    let mut carry = S::Carry::default();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match settler.settle(lane, batch, &mut carry).await {
            Ok((ticket, replies)) => return (Some(ticket), replies),
            Err(e) if !e.retryable() => {
                tracing::error!(store = S::STORE, error = %e, lane, inputs = batch.len(), "cannot settle the batch");
                let replies = batch
                    .iter()
                    .map(|_| Err(ProcessError::permanent(e.code(), e.to_string())))
                    .collect();
                return (None, replies);
            }
            Err(e) => {
                counters.waits.inc();
                tracing::warn!(store = S::STORE, error = %e, lane, inputs = batch.len(), attempt, "store unavailable; the batch waits");
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
}

/// Capped exponential backoff: 100 ms doubling up to 5 s (the wait before attempt
/// `attempt + 1` at a write that found PostgreSQL unavailable).
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(7).saturating_sub(1)))
        .min(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_from_100_ms_up_to_5_s() {
        let waits: Vec<_> = (1..=8).map(backoff).collect();
        assert_eq!(waits[0], Duration::from_millis(100));
        assert_eq!(waits[1], Duration::from_millis(200));
        assert_eq!(waits[4], Duration::from_millis(1600));
        assert_eq!(waits[5], Duration::from_millis(3200));
        assert_eq!(waits[6..], [Duration::from_secs(5); 2]);
    }
}
