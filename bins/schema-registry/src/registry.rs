//! Registry operations on the state: register, look up, check compatibility, configure and
//! delete, with Confluent's semantics and error codes. Mutations are applied to a copy, stored,
//! and only then made visible.

use std::sync::Arc;

use apache_avro::Schema;
use schemas::{CompatibilityLevel, compat};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::{
    error::ApiError,
    store::{State, Storage, StoredSchema, Subject, Version},
};

/// A version selector from a URL: a number, or `latest` (also `-1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef {
    /// A version number.
    Number(u32),
    /// The newest live version.
    Latest,
}

impl VersionRef {
    /// Parse a URL segment; Confluent answers 42202 for anything else.
    pub fn parse(s: &str) -> Result<VersionRef, ApiError> {
        match s {
            "latest" | "-1" => Ok(VersionRef::Latest),
            n => n
                .parse::<u32>()
                .ok()
                .filter(|v| *v >= 1)
                .map(VersionRef::Number)
                .ok_or_else(|| ApiError::invalid_version(s)),
        }
    }
}

/// The registry: state behind a lock, plus where it is stored.
#[derive(Debug, Clone)]
pub struct Registry {
    state: Arc<Mutex<State>>,
    storage: Storage,
}

/// Parse a schema text as Avro; `42201` when it is not valid.
fn parse_avro(text: &str) -> Result<Schema, ApiError> {
    Schema::parse_str(text).map_err(|e| ApiError::invalid_schema(format!("Invalid schema: {e}")))
}

fn level_of(state: &State, subject: Option<&Subject>) -> CompatibilityLevel {
    subject
        .and_then(|s| s.compatibility.as_deref())
        .unwrap_or(&state.compatibility)
        .parse()
        .unwrap_or(CompatibilityLevel::Backward)
}

/// A subject that has (or had) versions, for changes; 40401 otherwise.
fn known_subject_mut<'a>(state: &'a mut State, subject: &str) -> Result<&'a mut Subject, ApiError> {
    state
        .subjects
        .get_mut(subject)
        .filter(|s| !s.versions.is_empty())
        .ok_or_else(|| ApiError::subject_not_found(subject))
}

/// The `{subject, version, id, schema}` object Confluent returns for a version.
fn version_json(state: &State, subject: &str, v: &Version) -> Value {
    let schema = state
        .schemas
        .get(&v.id)
        .map(|st| st.schema.clone())
        .unwrap_or_default();
    json!({"subject": subject, "version": v.version, "id": v.id, "schema": schema})
}

/// The parsed schemas of `versions`, oldest first (stored schemas were valid when registered).
fn parsed<'a>(state: &State, versions: impl Iterator<Item = &'a Version>) -> Vec<Schema> {
    versions
        .filter_map(|v| state.schemas.get(&v.id))
        .filter_map(|st| Schema::parse_str(&st.schema).ok())
        .collect()
}

impl Registry {
    /// Open the registry on `storage`, starting empty with `default_level` when nothing is
    /// stored yet.
    pub async fn open(
        storage: Storage,
        default_level: CompatibilityLevel,
    ) -> Result<Registry, ApiError> {
        let state = storage
            .load()
            .await
            .map_err(ApiError::storage)?
            .unwrap_or_else(|| State::new(default_level));
        Ok(Registry {
            state: Arc::new(Mutex::new(state)),
            storage,
        })
    }

    /// Distinct schemas (by id).
    pub async fn schema_count(&self) -> usize {
        self.state.lock().await.schemas.len()
    }

    /// Subjects with at least one live version.
    pub async fn subject_count(&self) -> usize {
        self.state
            .lock()
            .await
            .subjects
            .values()
            .filter(|s| s.live().next().is_some())
            .count()
    }

    async fn mutate<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut guard = self.state.lock().await;
        let mut next = guard.clone();
        let out = f(&mut next)?;
        if next != *guard {
            self.storage.save(&next).await.map_err(ApiError::storage)?;
            *guard = next;
        }
        Ok(out)
    }

    /// `POST /subjects/{subject}/versions`: the global id of `schema` under `subject`.
    pub async fn register(&self, subject: &str, schema_text: &str) -> Result<u32, ApiError> {
        let schema = parse_avro(schema_text)?;
        let canonical = schema.canonical_form();
        self.mutate(|state| {
            let existing_subject = state.subjects.get(subject);
            if let Some(s) = existing_subject {
                for v in s.live() {
                    if state
                        .schemas
                        .get(&v.id)
                        .is_some_and(|st| st.canonical == canonical)
                    {
                        return Ok(v.id);
                    }
                }
            }
            let level = level_of(state, existing_subject);
            let previous = existing_subject
                .map(|s| parsed(state, s.live()))
                .unwrap_or_default();
            let problems = compat::check(level, &schema, &previous);
            if !problems.is_empty() {
                let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
                return Err(ApiError::incompatible(level, &messages));
            }
            let id = match state
                .schemas
                .iter()
                .find(|(_, st)| st.canonical == canonical)
            {
                Some((id, _)) => *id,
                None => {
                    let id = state.next_id;
                    state.next_id += 1;
                    state.schemas.insert(
                        id,
                        StoredSchema {
                            schema: schema_text.to_owned(),
                            canonical: canonical.clone(),
                        },
                    );
                    id
                }
            };
            let entry = state.subjects.entry(subject.to_owned()).or_default();
            let version = entry.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
            entry.versions.push(Version {
                version,
                id,
                deleted: false,
            });
            Ok(id)
        })
        .await
    }

    /// `GET /schemas/ids/{id}`.
    pub async fn schema_by_id(&self, id: u32) -> Result<String, ApiError> {
        let state = self.state.lock().await;
        state
            .schemas
            .get(&id)
            .map(|s| s.schema.clone())
            .ok_or_else(|| ApiError::schema_not_found(&id.to_string()))
    }

    /// `GET /schemas/ids/{id}/versions`: where the schema is registered.
    pub async fn subjects_of_id(&self, id: u32) -> Result<Value, ApiError> {
        let state = self.state.lock().await;
        if !state.schemas.contains_key(&id) {
            return Err(ApiError::schema_not_found(&id.to_string()));
        }
        let uses: Vec<Value> = state
            .subjects
            .iter()
            .flat_map(|(name, s)| {
                s.live()
                    .filter(|v| v.id == id)
                    .map(move |v| json!({"subject": name, "version": v.version}))
            })
            .collect();
        Ok(Value::Array(uses))
    }

    /// `GET /subjects`.
    pub async fn subjects(&self, include_deleted: bool) -> Vec<String> {
        let state = self.state.lock().await;
        state
            .subjects
            .iter()
            .filter(|(_, s)| include_deleted || s.live().next().is_some())
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn live_subject<'a>(state: &'a State, subject: &str) -> Result<&'a Subject, ApiError> {
        state
            .subjects
            .get(subject)
            .filter(|s| s.live().next().is_some())
            .ok_or_else(|| ApiError::subject_not_found(subject))
    }

    /// `GET /subjects/{subject}/versions`.
    pub async fn versions(&self, subject: &str) -> Result<Vec<u32>, ApiError> {
        let state = self.state.lock().await;
        Ok(Self::live_subject(&state, subject)?
            .live()
            .map(|v| v.version)
            .collect())
    }

    /// `GET /subjects/{subject}/versions/{version}`: `{subject, version, id, schema}`.
    pub async fn version(&self, subject: &str, version: VersionRef) -> Result<Value, ApiError> {
        let state = self.state.lock().await;
        let s = Self::live_subject(&state, subject)?;
        let v = match version {
            VersionRef::Latest => s.live().last(),
            VersionRef::Number(n) => s.live().find(|v| v.version == n),
        }
        .ok_or_else(|| ApiError::version_not_found(version))?;
        Ok(version_json(&state, subject, v))
    }

    /// `POST /subjects/{subject}`: the version object of `schema` under `subject`.
    pub async fn lookup(&self, subject: &str, schema_text: &str) -> Result<Value, ApiError> {
        let canonical = parse_avro(schema_text)?.canonical_form();
        let state = self.state.lock().await;
        let s = Self::live_subject(&state, subject)?;
        s.live()
            .find(|v| {
                state
                    .schemas
                    .get(&v.id)
                    .is_some_and(|st| st.canonical == canonical)
            })
            .map(|v| version_json(&state, subject, v))
            .ok_or_else(|| ApiError::schema_not_found("for this subject"))
    }

    /// `POST /compatibility/subjects/{subject}/versions[/{version}]`: the messages explaining
    /// an incompatibility (empty when compatible). Without a version, or with `latest`, the
    /// subject's level decides which versions are checked; with a number, only that one.
    pub async fn compatibility(
        &self,
        subject: &str,
        version: Option<VersionRef>,
        schema_text: &str,
    ) -> Result<Vec<String>, ApiError> {
        let schema = parse_avro(schema_text)?;
        let state = self.state.lock().await;
        let s = Self::live_subject(&state, subject)?;
        let level = level_of(&state, Some(s));
        let against: Vec<&Version> = match version {
            None | Some(VersionRef::Latest) => s.live().collect(),
            Some(VersionRef::Number(n)) => vec![
                s.live()
                    .find(|v| v.version == n)
                    .ok_or_else(|| ApiError::version_not_found(VersionRef::Number(n)))?,
            ],
        };
        let previous = parsed(&state, against.into_iter());
        let level = match (version, level) {
            // A single chosen version: the level's direction against that version only.
            (Some(VersionRef::Number(_)), CompatibilityLevel::BackwardTransitive) => {
                CompatibilityLevel::Backward
            }
            (Some(VersionRef::Number(_)), CompatibilityLevel::ForwardTransitive) => {
                CompatibilityLevel::Forward
            }
            (Some(VersionRef::Number(_)), CompatibilityLevel::FullTransitive) => {
                CompatibilityLevel::Full
            }
            (_, l) => l,
        };
        Ok(compat::check(level, &schema, &previous)
            .iter()
            .map(ToString::to_string)
            .collect())
    }

    /// `GET /config`.
    pub async fn global_level(&self) -> String {
        self.state.lock().await.compatibility.clone()
    }

    /// `PUT /config`.
    pub async fn set_global_level(&self, level: CompatibilityLevel) -> Result<(), ApiError> {
        self.mutate(|state| {
            state.compatibility = level.to_string();
            Ok(())
        })
        .await
    }

    /// `GET /config/{subject}`: the subject's level; with `default_to_global`, the global one
    /// when the subject has none.
    pub async fn subject_level(
        &self,
        subject: &str,
        default_to_global: bool,
    ) -> Result<String, ApiError> {
        let state = self.state.lock().await;
        match state
            .subjects
            .get(subject)
            .and_then(|s| s.compatibility.clone())
        {
            Some(level) => Ok(level),
            None if default_to_global => Ok(state.compatibility.clone()),
            None => Err(ApiError::subject_level_not_configured(subject)),
        }
    }

    /// `PUT /config/{subject}`.
    pub async fn set_subject_level(
        &self,
        subject: &str,
        level: CompatibilityLevel,
    ) -> Result<(), ApiError> {
        self.mutate(|state| {
            state
                .subjects
                .entry(subject.to_owned())
                .or_default()
                .compatibility = Some(level.to_string());
            Ok(())
        })
        .await
    }

    /// `DELETE /config/{subject}`: the level it had.
    pub async fn delete_subject_level(&self, subject: &str) -> Result<String, ApiError> {
        self.mutate(|state| {
            let s = state
                .subjects
                .get_mut(subject)
                .ok_or_else(|| ApiError::subject_not_found(subject))?;
            s.compatibility
                .take()
                .ok_or_else(|| ApiError::subject_level_not_configured(subject))
        })
        .await
    }

    /// `DELETE /subjects/{subject}[?permanent=true]`: the versions deleted.
    pub async fn delete_subject(
        &self,
        subject: &str,
        permanent: bool,
    ) -> Result<Vec<u32>, ApiError> {
        self.mutate(|state| {
            let s = known_subject_mut(state, subject)?;
            if permanent {
                if !s.soft_deleted() {
                    return Err(ApiError::subject_not_soft_deleted(subject));
                }
                let versions = s.versions.iter().map(|v| v.version).collect();
                state.subjects.remove(subject);
                return Ok(versions);
            }
            if s.soft_deleted() {
                return Err(ApiError::subject_soft_deleted(subject));
            }
            let mut deleted = Vec::new();
            for v in s.versions.iter_mut().filter(|v| !v.deleted) {
                v.deleted = true;
                deleted.push(v.version);
            }
            Ok(deleted)
        })
        .await
    }

    /// `DELETE /subjects/{subject}/versions/{version}[?permanent=true]`.
    pub async fn delete_version(
        &self,
        subject: &str,
        version: VersionRef,
        permanent: bool,
    ) -> Result<u32, ApiError> {
        self.mutate(|state| {
            let s = known_subject_mut(state, subject)?;
            let number = match version {
                VersionRef::Number(n) => n,
                VersionRef::Latest => s
                    .live()
                    .last()
                    .map(|v| v.version)
                    .ok_or_else(|| ApiError::version_not_found(version))?,
            };
            let idx = s
                .versions
                .iter()
                .position(|v| v.version == number)
                .ok_or_else(|| ApiError::version_not_found(version))?;
            if permanent {
                if !s.versions[idx].deleted {
                    return Err(ApiError::version_not_soft_deleted(subject, number));
                }
                s.versions.remove(idx);
            } else {
                if s.versions[idx].deleted {
                    return Err(ApiError::version_not_found(version));
                }
                s.versions[idx].deleted = true;
            }
            Ok(number)
        })
        .await
    }
}
