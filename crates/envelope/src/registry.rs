//! A thin schema registry client over `schema_registry_converter` (schema by id, register)
//! plus the few Confluent REST calls it does not cover (compatibility, config, subjects).
//! Every failure is a typed [`RegistryError`] that says whether a retry can help.

use std::{sync::Arc, time::Duration};

use schema_registry_converter::{
    async_impl::schema_registry::{SrSettings, get_schema_by_id, post_schema},
    error::SRCError,
    schema_registry_common::{RawError, SchemaType, SuppliedSchema},
};
use serde::Deserialize;

use crate::error::RegistryError;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Client of a Confluent-compatible schema registry.
#[derive(Clone)]
pub struct RegistryClient {
    base: String,
    settings: Arc<SrSettings>,
    http: reqwest::Client,
    basic_auth: Option<(String, String)>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials are never printed.
        f.debug_struct("RegistryClient")
            .field("url", &self.base)
            .field("basic_auth", &self.basic_auth.as_ref().map(|(u, _)| u))
            .finish()
    }
}

/// One registered version of a subject.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubjectVersion {
    /// Subject name.
    pub subject: String,
    /// Version number (1-based).
    pub version: u32,
    /// Global schema id.
    pub id: u32,
    /// Schema JSON.
    pub schema: String,
}

fn classify(err: SRCError) -> RegistryError {
    let raw = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<RawError>());
    match raw {
        Some(raw) => from_code(raw.error_code, raw.message.clone()),
        None if err.retriable => RegistryError::Unavailable {
            message: err.to_string(),
        },
        None => RegistryError::Rejected {
            code: 0,
            message: err.to_string(),
        },
    }
}

fn from_code(code: u32, message: String) -> RegistryError {
    match code {
        40400..=40499 => RegistryError::NotFound { code, message },
        409 | 40900..=42299 => RegistryError::Rejected { code, message },
        _ => RegistryError::Unavailable {
            message: format!("error {code}: {message}"),
        },
    }
}

#[derive(Deserialize)]
struct ConfluentError {
    error_code: u32,
    message: String,
}

impl RegistryClient {
    /// A client for `url` (e.g. `http://127.0.0.1:8081`), with optional basic auth.
    pub fn new(
        url: &str,
        basic_auth: Option<(String, String)>,
        timeout: Duration,
    ) -> Result<RegistryClient, RegistryError> {
        let base = url.trim_end_matches('/').to_owned();
        let mut builder = SrSettings::new_builder(base.clone());
        builder.set_timeout(timeout);
        if let Some((user, password)) = &basic_auth {
            builder.set_basic_authorization(user, Some(password));
        }
        let settings = builder.build().map_err(classify)?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| RegistryError::Unavailable {
                message: format!("cannot build HTTP client: {e}"),
            })?;
        Ok(RegistryClient {
            base,
            settings: Arc::new(settings),
            http,
            basic_auth,
        })
    }

    /// The registry URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The schema JSON registered under `id`.
    pub async fn schema_by_id(&self, id: u32) -> Result<String, RegistryError> {
        get_schema_by_id(id, &self.settings)
            .await
            .map(|s| s.schema)
            .map_err(classify)
    }

    /// Register `schema` under `subject` (idempotent) and return its global id.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, schema.to_owned());
        post_schema(&self.settings, subject.to_owned(), supplied)
            .await
            .map(|s| s.id)
            .map_err(classify)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::ACCEPT, CONTENT_TYPE);
        match &self.basic_auth {
            Some((user, password)) => req.basic_auth(user, Some(password)),
            None => req,
        }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, RegistryError> {
        let res = req.send().await.map_err(|e| RegistryError::Unavailable {
            message: format!("{} unreachable: {e}", self.base),
        })?;
        let status = res.status();
        let body = res.bytes().await.map_err(|e| RegistryError::Unavailable {
            message: format!("reading response from {}: {e}", self.base),
        })?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| RegistryError::Unavailable {
                message: format!("unexpected response from {}: {e}", self.base),
            });
        }
        match serde_json::from_slice::<ConfluentError>(&body) {
            Ok(err) => Err(from_code(err.error_code, err.message)),
            Err(_) if status.is_server_error() => Err(RegistryError::Unavailable {
                message: format!("HTTP {status} from {}", self.base),
            }),
            Err(_) => Err(RegistryError::Rejected {
                code: u32::from(status.as_u16()),
                message: String::from_utf8_lossy(&body).into_owned(),
            }),
        }
    }

    /// All subjects.
    pub async fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        self.call(self.request(reqwest::Method::GET, "/subjects"))
            .await
    }

    /// Version numbers of `subject`.
    pub async fn versions(&self, subject: &str) -> Result<Vec<u32>, RegistryError> {
        self.call(self.request(
            reqwest::Method::GET,
            &format!("/subjects/{subject}/versions"),
        ))
        .await
    }

    /// One version of `subject` (`None` = latest).
    pub async fn version(
        &self,
        subject: &str,
        version: Option<u32>,
    ) -> Result<SubjectVersion, RegistryError> {
        let v = version.map_or_else(|| "latest".to_owned(), |v| v.to_string());
        self.call(self.request(
            reqwest::Method::GET,
            &format!("/subjects/{subject}/versions/{v}"),
        ))
        .await
    }

    /// Whether `schema` is compatible with the latest version of `subject` under the
    /// subject's level; the messages explain a refusal. A subject with no versions accepts
    /// anything.
    pub async fn check_compatibility(
        &self,
        subject: &str,
        schema: &str,
    ) -> Result<(bool, Vec<String>), RegistryError> {
        #[derive(Deserialize)]
        struct Answer {
            is_compatible: bool,
            #[serde(default)]
            messages: Vec<String>,
        }
        let req = self
            .request(
                reqwest::Method::POST,
                &format!("/compatibility/subjects/{subject}/versions/latest?verbose=true"),
            )
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(serde_json::json!({ "schema": schema }).to_string());
        match self.call::<Answer>(req).await {
            Ok(a) => Ok((a.is_compatible, a.messages)),
            Err(RegistryError::NotFound { code: 40401, .. }) => Ok((true, Vec::new())),
            Err(e) => Err(e),
        }
    }

    /// Set the compatibility level of `subject`, or the global level for `None`.
    pub async fn set_compatibility(
        &self,
        subject: Option<&str>,
        level: &str,
    ) -> Result<(), RegistryError> {
        #[derive(Deserialize)]
        struct Answer {}
        let path = subject.map_or_else(|| "/config".to_owned(), |s| format!("/config/{s}"));
        let req = self
            .request(reqwest::Method::PUT, &path)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(serde_json::json!({ "compatibility": level }).to_string());
        self.call::<Answer>(req).await.map(|_| ())
    }
}
