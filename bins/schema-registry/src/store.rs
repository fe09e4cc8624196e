//! The registry's state — schemas by global id, subjects with their versions, compatibility
//! levels — and its storage: a JSON file (written atomically) or a PostgreSQL table. The whole
//! state is small; every change is written through before it becomes visible.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use schemas::CompatibilityLevel;
use serde::{Deserialize, Serialize};

/// A stored schema.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredSchema {
    /// The schema text as first registered.
    pub schema: String,
    /// Avro Parsing Canonical Form: two schemas are the same schema when these are equal.
    pub canonical: String,
}

/// One version of a subject.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Version {
    /// 1-based version number, never reused within the subject.
    pub version: u32,
    /// Global schema id.
    pub id: u32,
    /// Soft-deleted.
    #[serde(default)]
    pub deleted: bool,
}

/// A subject.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Subject {
    /// Every version ever registered, soft-deleted ones included.
    pub versions: Vec<Version>,
    /// The subject's own compatibility level.
    pub compatibility: Option<String>,
}

impl Subject {
    /// Versions that are not soft-deleted, oldest first.
    pub fn live(&self) -> impl Iterator<Item = &Version> {
        self.versions.iter().filter(|v| !v.deleted)
    }

    /// Whether the subject has versions and all are soft-deleted.
    pub fn soft_deleted(&self) -> bool {
        !self.versions.is_empty() && self.live().next().is_none()
    }
}

/// The whole registry state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// The next global id to hand out; ids are never reused.
    pub next_id: u32,
    /// Schemas by global id.
    pub schemas: BTreeMap<u32, StoredSchema>,
    /// Subjects by name.
    pub subjects: BTreeMap<String, Subject>,
    /// The global compatibility level.
    pub compatibility: String,
}

impl State {
    /// An empty registry with the given global level.
    pub fn new(compatibility: CompatibilityLevel) -> State {
        State {
            next_id: 1,
            schemas: BTreeMap::new(),
            subjects: BTreeMap::new(),
            compatibility: compatibility.to_string(),
        }
    }
}

/// Storage that failed.
#[derive(Debug, thiserror::Error)]
#[error("registry storage: {0}")]
pub struct StorageError(pub String);

/// Where the state lives.
#[derive(Debug, Clone)]
pub enum Storage {
    /// A JSON file, replaced atomically on each change.
    File(PathBuf),
    /// A PostgreSQL table holding the state as one JSON document.
    Postgres {
        /// Connection string.
        url: String,
        /// Table name.
        table: String,
    },
}

impl Storage {
    /// Load the state, or `None` when nothing was stored yet.
    pub async fn load(&self) -> Result<Option<State>, StorageError> {
        match self {
            Storage::File(path) => load_file(path),
            Storage::Postgres { url, table } => {
                let client = pg_connect(url).await?;
                ensure_table(&client, table).await?;
                let row = client
                    .query_opt(
                        &format!("SELECT state::text FROM {table} WHERE id = 1"),
                        &[],
                    )
                    .await
                    .map_err(|e| StorageError(format!("reading {table}: {e}")))?;
                row.map(|r| {
                    let text: String = r.get(0);
                    serde_json::from_str(&text)
                        .map_err(|e| StorageError(format!("state in {table} is not valid: {e}")))
                })
                .transpose()
            }
        }
    }

    /// Store the state.
    pub async fn save(&self, state: &State) -> Result<(), StorageError> {
        let text = serde_json::to_string(state).map_err(|e| StorageError(e.to_string()))?;
        match self {
            Storage::File(path) => save_file(path, &text),
            Storage::Postgres { url, table } => {
                let client = pg_connect(url).await?;
                ensure_table(&client, table).await?;
                client
                    .execute(
                        &format!(
                            "INSERT INTO {table} (id, state) VALUES (1, $1::text::jsonb) \
                             ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state"
                        ),
                        &[&text],
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| StorageError(format!("writing {table}: {e}")))
            }
        }
    }
}

fn load_file(path: &Path) -> Result<Option<State>, StorageError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StorageError(format!("{} is not a registry state: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError(format!("reading {}: {e}", path.display()))),
    }
}

fn save_file(path: &Path, text: &str) -> Result<(), StorageError> {
    let err = |e: std::io::Error| StorageError(format!("writing {}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, StorageError> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| StorageError(format!("connecting to PostgreSQL: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "registry storage connection closed");
        }
    });
    Ok(client)
}

async fn ensure_table(client: &tokio_postgres::Client, table: &str) -> Result<(), StorageError> {
    if !table
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
    {
        return Err(StorageError(format!("invalid table name {table:?}")));
    }
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (id int PRIMARY KEY, state jsonb NOT NULL)"
        ))
        .await
        .map_err(|e| StorageError(format!("creating {table}: {e}")))
}
