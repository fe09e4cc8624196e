//! The micro-batcher: records of every partition hand their audit event to one writer task,
//! which groups up to `batch_size` events, or what arrived within `linger` of the first, into
//! one INSERT (one transaction), commits it, and only then tells each record it is done.
//!
//! The writer waits out a store outage (reconnecting with capped backoff) with the batch in
//! hand: nothing is completed, so no offset moves, until the rows are committed. A batch
//! PostgreSQL refuses for its content is retried one event at a time, so one bad row is
//! refused on its own (and dead-lettered by the runtime) while the others are stored.

use std::time::Duration;

use envelope::{Event, payload::audit::AuditEvent};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use crate::store::{AuditStore, StoreError};

/// Why an event handed to the writer was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// PostgreSQL refused the row itself (not a connection problem): retrying cannot help.
    #[error("the audit store refused the event: {0}")]
    Refused(String),
    /// The writer task is gone (the stage is stopping).
    #[error("the audit writer task stopped")]
    Stopped,
}

impl WriteError {
    /// Stable code for the DLQ header and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            WriteError::Refused(_) => "AUDIT_STORE_REFUSED",
            WriteError::Stopped => "AUDIT_WRITER_STOPPED",
        }
    }

    /// Whether retrying later can succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, WriteError::Stopped)
    }
}

/// How the writer batches.
#[derive(Debug, Clone)]
pub struct BatchSettings {
    /// PostgreSQL connection string.
    pub database_url: String,
    /// Events per batch at most.
    pub batch_size: usize,
    /// How long a batch waits for more events after its first one.
    pub linger: Duration,
    /// Longest pause between reconnection attempts while the store is down.
    pub max_backoff: Duration,
}

/// What the writer reports of each batch (for tests and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Events in the batch.
    pub events: usize,
    /// Rows that were new.
    pub inserted: u64,
}

struct Job {
    event: Event<AuditEvent>,
    done: oneshot::Sender<Result<(), WriteError>>,
}

/// The handle records use to reach the writer task; cloning it is cheap.
#[derive(Debug, Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Job>,
}

/// A pending event: resolves once its batch is committed.
#[derive(Debug)]
pub struct Pending(oneshot::Receiver<Result<(), WriteError>>);

impl Pending {
    /// Wait until the event's batch is committed (or the event was refused).
    pub async fn committed(self) -> Result<(), WriteError> {
        self.0.await.unwrap_or(Err(WriteError::Stopped))
    }
}

impl Batcher {
    /// Start the writer task on the current runtime with an already connected `store`.
    /// `on_batch` is called after each committed batch.
    pub fn spawn(
        store: AuditStore,
        settings: BatchSettings,
        on_batch: impl Fn(BatchReport) + Send + 'static,
    ) -> Batcher {
        let size = settings.batch_size.max(1);
        let (tx, rx) = mpsc::channel(size * 2);
        tokio::spawn(writer(Some(store), settings, rx, on_batch));
        Batcher { tx }
    }

    /// Hand `event` to the writer (waiting while its queue is full: backpressure).
    pub async fn submit(&self, event: Event<AuditEvent>) -> Result<Pending, WriteError> {
        let (done, pending) = oneshot::channel();
        self.tx
            .send(Job { event, done })
            .await
            .map_err(|_| WriteError::Stopped)?;
        Ok(Pending(pending))
    }
}

async fn writer(
    mut store: Option<AuditStore>,
    settings: BatchSettings,
    mut rx: mpsc::Receiver<Job>,
    on_batch: impl Fn(BatchReport),
) {
    let size = settings.batch_size.max(1);
    let mut jobs: Vec<Job> = Vec::with_capacity(size);
    loop {
        let Some(first) = rx.recv().await else {
            return;
        };
        jobs.push(first);
        let deadline = Instant::now() + settings.linger;
        while jobs.len() < size {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(job)) => jobs.push(job),
                Ok(None) | Err(_) => break,
            }
        }
        let events: Vec<Event<AuditEvent>> = jobs.iter().map(|j| j.event.clone()).collect();
        let results = write(&mut store, &settings, &events).await;
        let inserted = results.iter().filter_map(|r| r.as_ref().ok()).sum();
        on_batch(BatchReport {
            events: events.len(),
            inserted,
        });
        for (job, result) in jobs.drain(..).zip(results) {
            // A record that stopped waiting (the stage is stopping) is redelivered anyway.
            let _ = job.done.send(result.map(|_| ()));
        }
    }
}

/// Store `events` as one batch; per event, the rows it added (0 for a duplicate) or why it
/// was refused. Waits out outages without limit.
async fn write(
    store: &mut Option<AuditStore>,
    settings: &BatchSettings,
    events: &[Event<AuditEvent>],
) -> Vec<Result<u64, WriteError>> {
    match with_store(store, settings, events).await {
        Ok(inserted) => {
            // The whole batch is committed; the count is the batch's (spread for the report).
            let mut results = vec![Ok(0); events.len()];
            if let Some(first) = results.first_mut() {
                *first = Ok(inserted);
            }
            results
        }
        Err(_) if events.len() > 1 => {
            tracing::warn!(
                events = events.len(),
                "the audit store refused a batch; storing its events one by one"
            );
            let mut results = Vec::with_capacity(events.len());
            for e in events {
                results.push(
                    with_store(store, settings, std::slice::from_ref(e))
                        .await
                        .map_err(|e| WriteError::Refused(e.to_string())),
                );
            }
            results
        }
        Err(e) => vec![Err(WriteError::Refused(e.to_string()))],
    }
}

/// Insert `events` in one statement, reconnecting and retrying while the store is
/// unavailable; only an error of the statement itself is returned.
async fn with_store(
    store: &mut Option<AuditStore>,
    settings: &BatchSettings,
    events: &[Event<AuditEvent>],
) -> Result<u64, StoreError> {
    let mut attempt = 0u32;
    loop {
        let result = match store.as_ref().filter(|s| !s.is_closed()) {
            Some(s) => s.insert_batch(events).await,
            None => match AuditStore::connect(&settings.database_url).await {
                Ok(s) => {
                    tracing::info!("connected to the audit store");
                    s.insert_batch(events).await.inspect(|_| *store = Some(s))
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Err(e) if e.retryable() => {
                attempt += 1;
                *store = None;
                let pause = backoff(attempt, settings.max_backoff);
                tracing::warn!(code = e.code(), error = %e, attempt, ?pause, "audit store unavailable; the batch waits");
                tokio::time::sleep(pause).await;
            }
            other => return other,
        }
    }
}

/// 100 ms doubling per attempt, capped at `max`.
fn backoff(attempt: u32, max: Duration) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(10))).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let max = Duration::from_secs(5);
        assert_eq!(backoff(1, max), Duration::from_millis(200));
        assert_eq!(backoff(2, max), Duration::from_millis(400));
        assert_eq!(backoff(30, max), max);
    }

    #[test]
    fn write_errors_have_codes_and_hints() {
        assert_eq!(
            WriteError::Refused("x".into()).code(),
            "AUDIT_STORE_REFUSED"
        );
        assert!(!WriteError::Refused("x".into()).retryable());
        assert!(WriteError::Stopped.retryable());
    }
}
