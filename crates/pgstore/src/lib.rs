//! PostgreSQL plumbing shared by the adpipe stages that keep state: a few connections, each
//! (re)connected on first use with the store's statements prepared on it ([`Pool`]); the
//! store's embedded migrations run under a history table of its own ([`migrate`]); and a
//! [`StoreError`] that tells an outage (the record waits) from a statement that cannot succeed.
//!
//! A stage that writes per input can commit many inputs' writes in one transaction through
//! [`Lanes`] (group commit, see [`group`]), and settle inputs in per-lane batches through
//! [`Batches`] (see [`batch`]).
//!
//! The stores themselves (which tables, which statements) live with their stage.

pub mod batch;
pub mod group;

use std::{future::Future, sync::Arc};

use runtime::ProcessError;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

pub use batch::{BatchCounters, Batches, Settle};
pub use group::{GroupCommit, LaneTx, Lanes, Param, Ticket, Via, claim_params};

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL could not be reached or the connection broke: retrying later can succeed.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// Migrations failed (a schema problem; not retryable as is).
    #[error("state store migration failed: {0}")]
    Migration(String),
    /// A statement failed for another reason (a constraint, an amount out of range).
    #[error("state store query failed: {0}")]
    Query(String),
    /// Stored data could not be read back (e.g. a JSON document of an older shape).
    #[error("state store holds unreadable data: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Stable code for logs, metrics and DLQ headers.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "STORE_UNAVAILABLE",
            StoreError::Migration(_) => "STORE_MIGRATION",
            StoreError::Query(_) => "STORE_QUERY",
            StoreError::Corrupt(_) => "STORE_CORRUPT",
        }
    }

    /// The code a stored error code stands for, when it is one of these (a failure kept
    /// for replays is read back as text). The codes are [`StoreError::code`]'s.
    pub fn known_code(code: &str) -> Option<&'static str> {
        [
            StoreError::Unavailable(String::new()),
            StoreError::Migration(String::new()),
            StoreError::Query(String::new()),
            StoreError::Corrupt(String::new()),
        ]
        .iter()
        .map(StoreError::code)
        .find(|c| *c == code)
    }

    /// Whether retrying later can succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            // The server's own words (`db error` alone says nothing), classed by SQLSTATE:
            // 08 connection exception, 53 insufficient resources (too many connections),
            // 57 operator intervention (the server shutting down or restarting) and 40
            // transaction rollback (deadlock, serialization) can pass; the rest cannot.
            Some(db) if !e.is_closed() => {
                let code = db.code().code();
                let message = format!("{} ({code})", db.message());
                if ["08", "40", "53", "57"]
                    .iter()
                    .any(|class| code.starts_with(class))
                {
                    StoreError::Unavailable(message)
                } else {
                    StoreError::Query(message)
                }
            }
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

impl From<StoreError> for ProcessError {
    /// An outage makes the record wait (never the DLQ); anything else is permanent.
    fn from(e: StoreError) -> Self {
        if e.retryable() {
            ProcessError::unavailable(e.code(), e.to_string())
        } else {
            ProcessError::permanent(e.code(), e.to_string())
        }
    }
}

/// Apply a store's embedded migrations (idempotent) on a connection of their own, recording
/// them in `history_table` (adpipe's stores may share one database).
pub async fn migrate(
    url: &str,
    mut runner: refinery::Runner,
    history_table: &str,
) -> Result<(), StoreError> {
    let (mut client, connection) = tokio_postgres::connect(url, NoTls).await?;
    let task = tokio::spawn(connection);
    let result = runner
        .set_migration_table_name(history_table)
        .run_async(&mut client)
        .await
        .map(|_| ())
        .map_err(|e| StoreError::Migration(e.to_string()));
    drop(client);
    let _ = task.await;
    result
}

/// A store's prepared statements, prepared once per connection.
pub trait Prepared: Sized + Send + Sync + 'static {
    /// Prepare them on `client`.
    fn prepare(client: &Client)
    -> impl Future<Output = Result<Self, tokio_postgres::Error>> + Send;
}

/// A live connection and its statements.
#[derive(Debug)]
pub struct Live<S> {
    /// The connection.
    pub client: Client,
    /// Its prepared statements.
    pub stmts: S,
}

/// A few connections; a caller picks one by a shard number (an input partition), so one
/// partition's statements stay in order on one connection while partitions pipeline.
pub struct Pool<S> {
    url: String,
    name: &'static str,
    conns: Vec<Mutex<Option<Arc<Live<S>>>>>,
}

impl<S> std::fmt::Debug for Pool<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the URL: it may hold a password.
        f.debug_struct("Pool")
            .field("store", &self.name)
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl<S: Prepared> Pool<S> {
    /// A pool of `connections` (at least 1) to `url` for the store `name`; nothing is
    /// connected until first use.
    pub fn new(name: &'static str, url: &str, connections: usize) -> Pool<S> {
        Pool {
            url: url.to_owned(),
            name,
            conns: (0..connections.max(1)).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// The connection of `shard`, reconnected (and its statements prepared) if it broke.
    pub async fn get(&self, shard: i32) -> Result<Arc<Live<S>>, StoreError> {
        let index = usize::try_from(shard).unwrap_or(0) % self.conns.len();
        let mut slot = self.conns[index].lock().await;
        if let Some(live) = slot.as_ref().filter(|l| !l.client.is_closed()) {
            return Ok(live.clone());
        }
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        let name = self.name;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, store = name, "store connection closed");
            }
        });
        let stmts = S::prepare(&client).await?;
        let live = Arc::new(Live { client, stmts });
        *slot = Some(live.clone());
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    #[test]
    fn known_codes_are_the_codes_of_the_errors_and_nothing_else() {
        for e in [
            StoreError::Unavailable("x".into()),
            StoreError::Migration("x".into()),
            StoreError::Query("x".into()),
            StoreError::Corrupt("x".into()),
        ] {
            assert_eq!(StoreError::known_code(e.code()), Some(e.code()));
        }
        assert_eq!(StoreError::known_code("RULES_FAILED"), None);
        assert_eq!(StoreError::known_code("store_query"), None);
    }
}
