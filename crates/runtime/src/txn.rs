//! Transactional mode (`--transactional`, off by default): the outputs and dead letters of
//! many records and the consumed offsets they complete are committed together in one Kafka
//! transaction every `--transaction-ms`, so consumers reading `read_committed` see each
//! input's outputs exactly once even across crashes. Writes hold a read lock on the gate for
//! as long as they are in flight; the commit takes the write lock, so it waits for them and
//! includes exactly the offsets of records whose writes are in the transaction.
//!
//! Caveat: it relies on the broker isolating aborted transactions. Tansu 0.6 does not (see
//! the README), so on Tansu this mode gives nothing over the default at-least-once + dedupe.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use anyhow::Context as _;
use envelope::Id;
use rdkafka::{
    Offset, TopicPartitionList,
    consumer::Consumer,
    producer::{FutureProducer, Producer},
};
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

use crate::{dedupe::Dedupe, engine::Consumer_};

/// What the next commit includes.
#[derive(Debug, Default)]
struct Pending {
    /// Next offset to consume, per (topic, partition).
    offsets: HashMap<(String, i32), i64>,
    /// Event ids and stage keys to mark done once committed.
    marks: Vec<Id>,
}

/// The transaction of a stage instance.
#[derive(Debug)]
pub(crate) struct Txn {
    gate: Arc<RwLock<()>>,
    pending: Mutex<Pending>,
    timeout: Duration,
}

impl Txn {
    /// Initialise the producer's transactions (fencing an older instance with the same
    /// transactional id) and begin the first one.
    pub(crate) async fn start(producer: &FutureProducer, timeout: Duration) -> anyhow::Result<Txn> {
        let p = producer.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            p.init_transactions(timeout)
                .context("initialising transactions")?;
            p.begin_transaction().context("beginning a transaction")?;
            Ok(())
        })
        .await??;
        Ok(Txn {
            gate: Arc::new(RwLock::new(())),
            pending: Mutex::new(Pending::default()),
            timeout,
        })
    }

    /// Held while writes that belong to the current transaction are in flight.
    pub(crate) async fn writing(&self) -> OwnedRwLockReadGuard<()> {
        self.gate.clone().read_owned().await
    }

    /// A record's writes are acknowledged (call while still [`Txn::writing`]): its offset and
    /// marks go into the next commit.
    pub(crate) fn completed(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        marks: impl IntoIterator<Item = Id>,
    ) {
        let mut p = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let next = p.offsets.entry((topic.to_owned(), partition)).or_insert(0);
        *next = (*next).max(offset + 1);
        p.marks.extend(marks);
    }

    /// Commit the current transaction with the completed offsets, begin the next one, then
    /// mark the committed records' ids done. Returns how many partitions' offsets it moved.
    pub(crate) async fn commit(
        &self,
        producer: &FutureProducer,
        consumer: &Arc<Consumer_>,
        dedupe: &Dedupe,
        begin_next: bool,
    ) -> anyhow::Result<usize> {
        let all_writes_done = self.gate.clone().write_owned().await;
        let pending =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in &pending.offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))
                .context("offset list")?;
        }
        let moved = tpl.count();
        let (p, c, timeout) = (producer.clone(), consumer.clone(), self.timeout);
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            // Held until librdkafka's calls return, even when the caller stops waiting (the
            // shutdown aborts the periodic committer): the final commit must not start while
            // this one is in librdkafka ("Conflicting send_offsets_to_transaction API call is
            // already in progress").
            let _all_writes_done = all_writes_done;
            if tpl.count() > 0 {
                let group = c
                    .group_metadata()
                    .context("the consumer has no group metadata")?;
                p.send_offsets_to_transaction(&tpl, &group, timeout)
                    .context("sending offsets to the transaction")?;
            }
            p.commit_transaction(timeout)
                .context("committing the transaction")?;
            if begin_next {
                p.begin_transaction().context("beginning a transaction")?;
            }
            Ok(())
        })
        .await??;
        if let Err(e) = dedupe.mark_many(&pending.marks).await {
            tracing::warn!(error = %e, "could not mark committed events done");
        }
        Ok(moved)
    }

    /// Abort the open transaction (its writes are never visible to `read_committed`
    /// readers; its records are redelivered).
    pub(crate) async fn abort(&self, producer: &FutureProducer) {
        let (p, timeout) = (producer.clone(), self.timeout);
        let aborted = tokio::task::spawn_blocking(move || p.abort_transaction(timeout)).await;
        if !matches!(aborted, Ok(Ok(()))) {
            tracing::warn!("the open transaction could not be aborted; the broker times it out");
        }
    }
}
