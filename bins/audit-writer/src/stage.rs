//! The audit writer's stage: `audit.events` into the audit store, in batches, each record
//! completed (its offset stored) only after the transaction holding its row committed.
//!
//! # Per record
//!
//! 1. [`validate`]: an event with an unknown org, no actor, no action or a timestamp outside
//!    2000-01-01 .. now + 1 day is refused with its `AUDIT_*` code and reason: the runtime
//!    dead-letters it to `audit.events.dlq` with the original bytes, and the writer goes on.
//! 2. The event is handed to the [`Batcher`] and the record's completion is deferred
//!    ([`Outputs::defer`]) until its batch committed: the partition's next records are
//!    processed meanwhile, so one batch gathers up to `--batch-size` events across partitions
//!    and in-flight records, while no offset passes a row that is not committed.
//! 3. Redelivery (a crash before the offsets were committed, a duplicate produce) inserts
//!    nothing twice: the row key is `event_id` (`ON CONFLICT DO NOTHING`).
//!
//! PostgreSQL down: the batch waits, reconnecting with capped backoff; the records wait with
//! it and never reach the DLQ for that.
//!
//! # Retention
//!
//! Every `--retention-interval-secs` (hourly by default) a [`Processor::tick`] deletes rows
//! that occurred more than `--retention-days` (90, the topic's retention) ago, in bounded
//! statements. `pipelinectl audit prune` runs the same job by hand.
//!
//! # PII
//!
//! `actor.display_name` is classified PII (`schemas/common/entity.avsc`): it is stored for the
//! audit team and never logged. Log lines carry event ids, org ids, codes and counts only.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use envelope::{Event, Timestamp, payload::audit::AuditEvent};
use runtime::{Outputs, ProcessError, Processor, Tick};
use topics::{ConsumerGroup, Topic};

use crate::{
    batcher::{BatchReport, BatchSettings, Batcher, WriteError},
    store::{AuditStore, RETENTION_DAYS, StoreError, validate},
};

/// The audit writer's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditSettings {
    /// PostgreSQL connection string of the audit store (migrated at start).
    #[arg(
        long,
        env = "AUDIT_DATABASE_URL",
        hide_env_values = true,
        default_value = "host=127.0.0.1 user=postgres dbname=postgres"
    )]
    pub database_url: String,
    /// Events per INSERT transaction at most.
    #[arg(long, env = "AUDIT_BATCH_SIZE", default_value_t = 500)]
    pub batch_size: usize,
    /// Milliseconds a batch waits for more events after its first one.
    #[arg(long, env = "AUDIT_BATCH_LINGER_MS", default_value_t = 20)]
    pub batch_linger_ms: u64,
    /// Days the audit trail is kept; older rows are deleted by the retention job.
    #[arg(long, env = "AUDIT_RETENTION_DAYS", default_value_t = RETENTION_DAYS)]
    pub retention_days: i64,
    /// Seconds between runs of the retention job (0: never; run `pipelinectl audit prune`).
    #[arg(long, env = "AUDIT_RETENTION_INTERVAL_SECS", default_value_t = 3600)]
    pub retention_interval_secs: u64,
    /// Rows deleted per statement by the retention job (keeps each lock short).
    #[arg(long, env = "AUDIT_RETENTION_BATCH", default_value_t = 10_000)]
    pub retention_batch: i64,
}

impl AuditSettings {
    /// Settings for tests: the defaults on `database_url`.
    pub fn for_tests(database_url: &str) -> AuditSettings {
        AuditSettings {
            database_url: database_url.to_owned(),
            batch_size: 500,
            batch_linger_ms: 20,
            retention_days: RETENTION_DAYS,
            retention_interval_secs: 0,
            retention_batch: 10_000,
        }
    }
}

/// Counters of the writer, for logs and tests.
#[derive(Debug, Default)]
pub struct Counters {
    /// Batches committed.
    pub batches: AtomicU64,
    /// Events in committed batches.
    pub events: AtomicU64,
    /// New rows (events minus duplicates).
    pub inserted: AtomicU64,
    /// Rows deleted by the retention job.
    pub pruned: AtomicU64,
}

/// The audit writer stage.
#[derive(Debug)]
pub struct AuditWriter {
    settings: AuditSettings,
    batcher: OnceLock<Batcher>,
    counters: std::sync::Arc<Counters>,
}

impl AuditWriter {
    /// The writer on `settings`; the store is connected and migrated by [`Processor::start`].
    pub fn new(settings: AuditSettings) -> AuditWriter {
        AuditWriter {
            settings,
            batcher: OnceLock::new(),
            counters: Default::default(),
        }
    }

    /// The writer's counters.
    pub fn counters(&self) -> std::sync::Arc<Counters> {
        self.counters.clone()
    }

    fn batcher(&self) -> Result<&Batcher, ProcessError> {
        self.batcher.get().ok_or_else(|| {
            ProcessError::unavailable("AUDIT_NOT_STARTED", "the audit store is not ready")
        })
    }
}

/// A store error as the runtime sees it: a lost connection waits, anything else is the
/// event's own problem.
pub fn process_error(e: &StoreError) -> ProcessError {
    if e.retryable() {
        ProcessError::unavailable(e.code(), e.to_string())
    } else {
        ProcessError::permanent(e.code(), e.to_string())
    }
}

/// Delete rows that occurred more than `retention_days` ago; returns the rows deleted.
pub async fn prune(store: &AuditStore, retention_days: i64, batch: i64) -> Result<u64, StoreError> {
    let cutoff = Utc::now() - chrono::Duration::days(retention_days.max(0));
    store.delete_older_than(cutoff, batch).await
}

impl Processor for AuditWriter {
    type Input = Event<AuditEvent>;
    const GROUP: ConsumerGroup = ConsumerGroup::AuditWriter;
    // A redelivered event is a no-op in the table (ON CONFLICT (event_id) DO NOTHING).
    const DEDUPE: bool = false;

    fn outputs() -> Vec<Topic> {
        Vec::new()
    }

    async fn start(&self) -> anyhow::Result<()> {
        let mut store = AuditStore::connect(&self.settings.database_url).await?;
        store.migrate().await?;
        let counters = self.counters.clone();
        let batcher = Batcher::spawn(
            store,
            BatchSettings {
                database_url: self.settings.database_url.clone(),
                batch_size: self.settings.batch_size,
                linger: Duration::from_millis(self.settings.batch_linger_ms),
                max_backoff: Duration::from_secs(5),
            },
            move |r: BatchReport| {
                counters.batches.fetch_add(1, Ordering::Relaxed);
                counters
                    .events
                    .fetch_add(r.events as u64, Ordering::Relaxed);
                counters.inserted.fetch_add(r.inserted, Ordering::Relaxed);
                tracing::debug!(events = r.events, inserted = r.inserted, "batch committed");
            },
        );
        let _ = self.batcher.set(batcher);
        tracing::info!(
            batch_size = self.settings.batch_size,
            linger_ms = self.settings.batch_linger_ms,
            retention_days = self.settings.retention_days,
            "audit store migrated"
        );
        Ok(())
    }

    async fn process(
        &self,
        event: Event<AuditEvent>,
        out: &mut Outputs<'_>,
    ) -> Result<(), ProcessError> {
        validate(&event, Timestamp::now())
            .map_err(|why| ProcessError::permanent(why.code(), why.to_string()))?;
        let pending = self
            .batcher()?
            .submit(event)
            .await
            .map_err(|e| ProcessError::unavailable(e.code(), e.to_string()))?;
        out.defer(async move {
            match pending.committed().await {
                Ok(()) => Ok(()),
                Err(e @ WriteError::Refused(_)) => {
                    Err(ProcessError::permanent(e.code(), e.to_string()))
                }
                // The writer task is gone with the record unwritten: stop the stage (a worker
                // panic exits 1) so the restarted process gets the record again, rather than
                // dead-lettering a valid event.
                Err(e @ WriteError::Stopped) => panic!("{}: {e}", e.code()),
            }
        });
        Ok(())
    }

    fn tick_interval(&self) -> Option<Duration> {
        (self.settings.retention_interval_secs > 0)
            .then(|| Duration::from_secs(self.settings.retention_interval_secs))
    }

    async fn tick(&self, _tick: &Tick, _out: &mut Outputs<'_>) -> Result<(), ProcessError> {
        let store = AuditStore::connect(&self.settings.database_url)
            .await
            .map_err(|e| process_error(&e))?;
        let deleted = prune(
            &store,
            self.settings.retention_days,
            self.settings.retention_batch,
        )
        .await
        .map_err(|e| process_error(&e))?;
        self.counters.pruned.fetch_add(deleted, Ordering::Relaxed);
        tracing::info!(
            deleted,
            retention_days = self.settings.retention_days,
            "audit retention job"
        );
        Ok(())
    }
}
