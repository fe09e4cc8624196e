//! Group commit: many inputs' writes in one PostgreSQL transaction, so a stage that writes
//! its state per input pays one WAL flush per batch instead of one per input.
//!
//! A [`Lanes`] holds a few connections ("lanes"); the first input after a commit begins the
//! lane's next transaction. An input takes its lane ([`Lanes::lane`]), writes through it ([`LaneTx::write`], recorded in
//! the lane's journal) and reads through it (reads see the open transaction's writes), then
//! hands the runtime a [`Ticket`] that resolves once the transaction holding its writes is
//! committed: the runtime produces the input's outputs and stores its offset only then.
//! Each lane's committer commits `linger` after the transaction began (or at `max_writes`);
//! an idle lane holds no transaction, so nothing stays locked.
//!
//! When a statement or a commit fails (PostgreSQL down, the connection broken, a statement
//! refused), the lane's open transaction is lost. The lane then reconnects (waiting out an
//! outage with capped backoff), replays its journal — the successful writes of the lost
//! transaction, in order — into a fresh transaction and commits it, before any other
//! statement runs on it. Inputs whose tickets were waiting resolve then, with outputs that
//! were computed from exactly that state; an input whose own statement failed got the error
//! and is retried or dead-lettered by the runtime. Writes must therefore be deterministic
//! given the state (gold's and the evaluator's are: each claims its input offset, so a
//! commit that did land before the connection broke makes the replay change nothing).
//!
//! Lanes must not share rows: a lane is picked by input partition, and the stage's rows are
//! keyed by org, which the partitioner maps to one partition. Writes for inputs of another
//! topic (configuration changes) go through the stage's plain [`crate::Pool`] in autocommit.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::sync::{Notify, OwnedRwLockReadGuard, RwLock, watch};
use tokio_postgres::{Client, NoTls, Row, Statement, types::ToSql};

use runtime::Position;

use crate::{Live, Prepared, StoreError};

/// An owned statement parameter (a write is kept to be replayed).
pub type Param = Box<dyn ToSql + Send + Sync>;

/// How the lanes commit.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommit {
    /// Connections (at least 1); input partitions are spread over them.
    pub lanes: usize,
    /// How long a transaction stays open after its first write, gathering more.
    pub linger: Duration,
    /// Commit at once when a transaction holds this many writes.
    pub max_writes: usize,
}

/// A write kept for replay: which prepared statement, with which parameters.
struct Entry<S> {
    statement: fn(&S) -> &Statement,
    params: Vec<Param>,
}

/// The writes of the open transaction.
struct Journal<S> {
    /// The open transaction's number (tickets name it).
    epoch: u64,
    entries: Vec<Entry<S>>,
    /// The open transaction is lost (a statement failed, the connection broke): it must be
    /// rebuilt from the journal before anything else runs on the lane.
    broken: bool,
    /// A transaction is open. An idle lane holds none (no locks, nothing in the way of
    /// migrations or `DROP`): the first input after a commit begins the next.
    open: bool,
}

struct Lane<S> {
    name: &'static str,
    index: usize,
    url: String,
    settings: GroupCommit,
    /// Readers: inputs running statements. Writer: the committer (commit, recovery).
    conn: Arc<RwLock<Option<Arc<Live<S>>>>>,
    journal: Mutex<Journal<S>>,
    /// The highest committed epoch.
    committed: watch::Sender<u64>,
    /// A first write entered an empty journal, the lane broke, or a commit is wanted now.
    wake: Notify,
    /// Commit without waiting out the linger ([`Lanes::commit_now`]).
    urgent: std::sync::atomic::AtomicBool,
    /// The committer task is spawned on first use.
    committer: std::sync::Once,
}

/// Connections that commit many inputs' writes together (see the module docs).
pub struct Lanes<S> {
    lanes: Vec<Arc<Lane<S>>>,
}

impl<S> std::fmt::Debug for Lanes<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("Lanes")
            .field("lanes", &self.lanes.len())
            .finish_non_exhaustive()
    }
}

impl<S: Prepared> Lanes<S> {
    /// `settings.lanes` lanes to `url` for the store `name`. Connections open, and each
    /// lane's committer task starts, on first use.
    pub fn new(name: &'static str, url: &str, settings: GroupCommit) -> Lanes<S> {
        let lanes = (0..settings.lanes.max(1))
            .map(|index| {
                Arc::new(Lane {
                    name,
                    index,
                    url: url.to_owned(),
                    settings,
                    conn: Arc::new(RwLock::new(None)),
                    journal: Mutex::new(Journal {
                        epoch: 1,
                        entries: Vec::new(),
                        broken: false,
                        open: false,
                    }),
                    committed: watch::channel(0).0,
                    wake: Notify::new(),
                    urgent: std::sync::atomic::AtomicBool::new(false),
                    committer: std::sync::Once::new(),
                })
            })
            .collect();
        Lanes { lanes }
    }

    /// The lane of `shard` (an input partition), with its transaction open; until the
    /// returned [`LaneTx`] is dropped the lane does not commit. Fails with
    /// [`StoreError::Unavailable`] while the lane cannot be (re)built.
    pub async fn lane(&self, shard: i32) -> Result<LaneTx<S>, StoreError> {
        let lane = self.pick(shard);
        loop {
            {
                let guard = lane.conn.clone().read_owned().await;
                let epoch = {
                    let j = lane.lock_journal();
                    (j.open && !j.broken).then_some(j.epoch)
                };
                if let (Some(epoch), Some(live)) = (epoch, guard.clone()) {
                    return Ok(LaneTx {
                        lane: lane.clone(),
                        live,
                        epoch,
                        _guard: guard,
                    });
                }
            }
            // No transaction open, not connected yet, or broken: (re)build it now (the
            // committer may end it again before the read lock is back: then once more).
            let mut conn = lane.conn.write().await;
            lane.open(&mut conn).await?;
        }
    }

    /// The lane of `shard`, its committer running.
    fn pick(&self, shard: i32) -> Arc<Lane<S>> {
        let index = usize::try_from(shard).unwrap_or(0) % self.lanes.len();
        let lane = self.lanes[index].clone();
        lane.committer
            .call_once(|| drop(tokio::spawn(committer(Arc::downgrade(&lane)))));
        lane
    }

    /// Commit what the lane of `shard` holds now, without waiting out the linger, and wait
    /// for it (through outages). For an input of another topic that must not be ordered
    /// before the writes it follows: after this, a read sees them committed.
    pub async fn commit_now(&self, shard: i32) {
        let lane = self.pick(shard);
        let epoch = {
            let j = lane.lock_journal();
            if j.entries.is_empty() && !j.broken {
                return;
            }
            j.epoch
        };
        lane.urgent
            .store(true, std::sync::atomic::Ordering::Release);
        lane.wake.notify_one();
        Ticket {
            committed: lane.committed.subscribe(),
            epoch,
        }
        .committed()
        .await;
    }
}

impl<S: Prepared> Lane<S> {
    fn lock_journal(&self) -> std::sync::MutexGuard<'_, Journal<S>> {
        self.journal.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn mark_broken(&self) {
        self.lock_journal().broken = true;
        self.wake.notify_one();
    }

    /// With the lane held exclusively: make sure a transaction is open, holding every write
    /// of the journal. A lost one is rolled back (or its connection replaced) and rebuilt.
    async fn open(&self, conn: &mut Option<Arc<Live<S>>>) -> Result<(), StoreError> {
        let (broken, open) = {
            let j = self.lock_journal();
            (j.broken, j.open)
        };
        let usable = conn.as_ref().is_some_and(|l| !l.client.is_closed());
        if usable && open && !broken {
            return Ok(());
        }
        let live = match conn.take().filter(|l| !l.client.is_closed()) {
            Some(live) if !broken => live,
            // A statement failed on a live connection: roll its transaction back.
            Some(live) => {
                if let Err(e) = live.client.batch_execute("ROLLBACK").await {
                    tracing::debug!(error = %e, "rollback of a lost transaction");
                }
                live
            }
            None => Arc::new(self.connect().await?),
        };
        live.client.batch_execute("BEGIN").await?;
        // Nobody writes meanwhile (writers need the lane, held here); the entries are put
        // back whatever happens, for the next attempt or the commit.
        let entries = std::mem::take(&mut self.lock_journal().entries);
        let replayed = replay(&live, &entries).await;
        {
            let mut j = self.lock_journal();
            let later = std::mem::replace(&mut j.entries, entries);
            j.entries.extend(later);
        }
        let replayed = replayed?;
        if replayed > 0 {
            tracing::info!(
                store = self.name,
                lane = self.index,
                writes = replayed,
                "replayed the writes of a lost transaction"
            );
        }
        {
            let mut j = self.lock_journal();
            j.broken = false;
            j.open = true;
        }
        *conn = Some(live);
        // The committer ends every open transaction, reads-only ones included.
        self.wake.notify_one();
        Ok(())
    }

    async fn connect(&self) -> Result<Live<S>, StoreError> {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        let (name, index) = (self.name, self.index);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, store = name, lane = index, "store connection closed");
            }
        });
        let stmts = S::prepare(&client).await?;
        Ok(Live { client, stmts })
    }

    /// Commit the open transaction (rebuilding it first if it was lost).
    async fn commit(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.write().await;
        let (broken, open) = {
            let j = self.lock_journal();
            (j.broken, j.open)
        };
        if !broken && !open {
            return Ok(());
        }
        self.open(&mut conn).await?;
        let Some(live) = conn.clone() else {
            return Ok(());
        };
        if let Err(e) = live.client.batch_execute("COMMIT").await {
            // Lost or not, the journal replays it: the claims make a landed commit's
            // replay change nothing.
            self.mark_broken();
            return Err(e.into());
        }
        let epoch = {
            let mut j = self.lock_journal();
            j.entries.clear();
            j.open = false;
            let done = j.epoch;
            j.epoch += 1;
            done
        };
        self.committed.send_replace(epoch);
        Ok(())
    }
}

/// Commits a lane's transactions: after its first write, `linger` (or `max_writes`), then
/// commit; a lost transaction is rebuilt with capped backoff until PostgreSQL is back.
async fn committer<S: Prepared>(lane: std::sync::Weak<Lane<S>>) {
    let mut failures = 0u32;
    loop {
        let Some(l) = lane.upgrade() else { return };
        let pending = {
            let j = l.lock_journal();
            !j.entries.is_empty() || j.broken || j.open
        };
        if !pending {
            // Re-check now and then: the lanes may be dropped while nothing is written.
            let _ = tokio::time::timeout(Duration::from_secs(1), l.wake.notified()).await;
            continue;
        }
        if failures == 0 {
            let deadline = tokio::time::Instant::now() + l.settings.linger;
            while tokio::time::Instant::now() < deadline
                && l.lock_journal().entries.len() < l.settings.max_writes
                && !l.urgent.load(std::sync::atomic::Ordering::Acquire)
            {
                let _ = tokio::time::timeout_at(deadline, l.wake.notified()).await;
            }
        }
        l.urgent.store(false, std::sync::atomic::Ordering::Release);
        match l.commit().await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                let pause = Duration::from_millis(100u64 << failures.min(5));
                tracing::warn!(
                    store = l.name,
                    lane = l.index,
                    code = e.code(),
                    error = %e,
                    ?pause,
                    "group commit failed; the writes wait and are replayed"
                );
                drop(l);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Run `entries` again, in order, on `live` (in its open transaction).
async fn replay<S>(live: &Live<S>, entries: &[Entry<S>]) -> Result<usize, StoreError> {
    for e in entries {
        let params: Vec<&(dyn ToSql + Sync)> = e.params.iter().map(as_param).collect();
        live.client
            .query((e.statement)(&live.stmts), &params)
            .await?;
    }
    Ok(entries.len())
}

fn as_param(p: &Param) -> &(dyn ToSql + Sync) {
    p.as_ref()
}

/// The parameters every claiming statement starts with (`$1` topic, `$2` partition, `$3`
/// offset of the input); the caller appends its own.
pub fn claim_params(at: Position, capacity: usize) -> Vec<Param> {
    let mut params: Vec<Param> = Vec::with_capacity(capacity.max(3));
    params.push(Box::new(at.topic.name()));
    params.push(Box::new(at.partition));
    params.push(Box::new(at.offset));
    params
}

/// How a write reaches PostgreSQL.
#[derive(Debug)]
pub enum Via<'a, S> {
    /// In a lane's open transaction, committed with other inputs' writes.
    Lane(&'a LaneTx<S>),
    /// In a transaction of its own, on a [`crate::Pool`] connection.
    Autocommit,
}

impl<S> Clone for Via<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Via<'_, S> {}

impl<S: Prepared> crate::Pool<S> {
    /// Run a write (one row back) via a lane, or on this pool's connection of `shard`.
    pub async fn write(
        &self,
        via: Via<'_, S>,
        shard: i32,
        statement: fn(&S) -> &Statement,
        params: Vec<Param>,
    ) -> Result<Row, StoreError> {
        match via {
            Via::Lane(tx) => tx.write(statement, params).await,
            Via::Autocommit => {
                let live = self.get(shard).await?;
                let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(as_param).collect();
                Ok(live.client.query_one(statement(&live.stmts), &refs).await?)
            }
        }
    }
}

/// An input's hold on its lane: statements run in the lane's open transaction.
pub struct LaneTx<S> {
    lane: Arc<Lane<S>>,
    live: Arc<Live<S>>,
    epoch: u64,
    _guard: OwnedRwLockReadGuard<Option<Arc<Live<S>>>>,
}

impl<S> std::fmt::Debug for LaneTx<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LaneTx")
            .field("lane", &self.lane.index)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl<S: Prepared> LaneTx<S> {
    /// The lane's prepared statements (for [`LaneTx::read`]).
    pub fn stmts(&self) -> &S {
        &self.live.stmts
    }

    /// The lane's connection, for reads that see the open transaction.
    pub fn client(&self) -> &Client {
        &self.live.client
    }

    /// Run a write (one row back) in the open transaction and keep it for replay. On an
    /// error the lane's transaction is lost and rebuilt without this write; a refused
    /// statement is [`StoreError::Query`], anything else [`StoreError::Unavailable`].
    pub async fn write(
        &self,
        statement: fn(&S) -> &Statement,
        params: Vec<Param>,
    ) -> Result<Row, StoreError> {
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(as_param).collect();
        let result = self
            .live
            .client
            .query_one(statement(&self.live.stmts), &refs)
            .await;
        drop(refs);
        match result {
            Ok(row) => {
                let mut j = self.lane.lock_journal();
                if j.broken {
                    // Another input's statement lost the transaction before this one ran.
                    return Err(StoreError::Unavailable(
                        "the lane's transaction was lost; retry".into(),
                    ));
                }
                let first = j.entries.is_empty();
                j.entries.push(Entry { statement, params });
                let full = j.entries.len() >= self.lane.settings.max_writes;
                drop(j);
                if first || full {
                    self.lane.wake.notify_one();
                }
                Ok(row)
            }
            Err(e) => Err(self.failed(e)),
        }
    }

    /// Run a read in the open transaction (it sees the transaction's writes).
    pub async fn read(
        &self,
        statement: fn(&S) -> &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        self.live
            .client
            .query(statement(&self.live.stmts), params)
            .await
            .map_err(|e| self.failed(e))
    }

    /// A statement failed: the transaction is lost (PostgreSQL aborts it on any error).
    fn failed(&self, e: tokio_postgres::Error) -> StoreError {
        self.lane.mark_broken();
        let aborted = e.as_db_error().is_some_and(|d| {
            d.code() == &tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION
        });
        match StoreError::from(e) {
            StoreError::Query(m) if aborted => StoreError::Unavailable(m),
            other => other,
        }
    }

    /// A ticket for this input: resolves once the transaction holding its writes, and the
    /// writes of others it may have read, is committed (at once when there are none).
    pub fn ticket(&self) -> Ticket {
        let pending = !self.lane.lock_journal().entries.is_empty();
        Ticket {
            committed: self.lane.committed.subscribe(),
            epoch: if pending { self.epoch } else { 0 },
        }
    }
}

/// Resolves once a lane's transaction is committed (see [`LaneTx::ticket`]).
#[derive(Debug)]
pub struct Ticket {
    committed: watch::Receiver<u64>,
    epoch: u64,
}

impl Ticket {
    /// Wait for the commit, through outages. Never resolves once the lanes are dropped
    /// (the stage is stopping): the input is then neither completed nor dead-lettered, and is
    /// consumed again.
    pub async fn committed(mut self) {
        let epoch = self.epoch;
        if self.committed.wait_for(|c| *c >= epoch).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
