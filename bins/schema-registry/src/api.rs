//! The HTTP API: Confluent Schema Registry routes, JSON bodies in and out, basic auth,
//! `/metrics` and `/healthz`. Every failure is a Confluent error body, never a bare rejection.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Query, Request, State, rejection::BytesRejection},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use base64::Engine as _;
use schemas::CompatibilityLevel;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    error::{ApiError, CONTENT_TYPE},
    metrics::Metrics,
    registry::{Registry, VersionRef},
};

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct App {
    /// The registry.
    pub registry: Registry,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// `user:password` required on every endpoint but `/healthz`, when set.
    pub basic_auth: Option<Arc<(String, String)>>,
}

type ApiResult = Result<Response, ApiError>;

fn ok(value: Value) -> Response {
    let mut res = (StatusCode::OK, value.to_string()).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    res
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: Option<String>,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Option<Vec<Value>>,
}

/// Parse a registration/lookup body into the schema text (AVRO only, no references).
fn schema_text(body: Result<Bytes, BytesRejection>) -> Result<String, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(format!("request body larger than {MAX_BODY_BYTES} bytes"))
        } else {
            ApiError::bad_request(format!("unreadable request body: {e}"))
        }
    })?;
    let body: SchemaBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!("request body is not the expected JSON: {e}"))
    })?;
    match body.schema_type.as_deref() {
        None | Some("AVRO") => {}
        Some(other) => {
            return Err(ApiError::invalid_schema(format!(
                "schemaType {other} is not supported; this registry serves AVRO"
            )));
        }
    }
    if body.references.is_some_and(|r| !r.is_empty()) {
        return Err(ApiError::invalid_schema(
            "schema references are not supported; register standalone schemas",
        ));
    }
    body.schema
        .ok_or_else(|| ApiError::invalid_schema("Empty schema: the body has no \"schema\" field"))
}

fn level_body(body: Result<Bytes, BytesRejection>) -> Result<CompatibilityLevel, ApiError> {
    #[derive(Deserialize)]
    struct LevelBody {
        compatibility: Option<String>,
        #[serde(rename = "compatibilityLevel")]
        compatibility_level: Option<String>,
    }
    let bytes = body.map_err(|e| ApiError::bad_request(format!("unreadable request body: {e}")))?;
    let b: LevelBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!("request body is not the expected JSON: {e}"))
    })?;
    let level = b
        .compatibility
        .or(b.compatibility_level)
        .ok_or_else(|| ApiError::invalid_level("(missing)"))?;
    level.parse().map_err(|_| ApiError::invalid_level(&level))
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn parse_id(id: &str) -> Result<u32, ApiError> {
    id.parse().map_err(|_| ApiError::schema_not_found(id))
}

async fn root() -> Response {
    ok(json!({}))
}

async fn schema_types() -> Response {
    ok(json!(["AVRO"]))
}

async fn schema_by_id(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    let schema = app.registry.schema_by_id(parse_id(&id)?).await?;
    Ok(ok(json!({ "schema": schema })))
}

async fn versions_of_id(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    Ok(ok(app.registry.subjects_of_id(parse_id(&id)?).await?))
}

async fn subjects(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    ok(json!(app.registry.subjects(flag(&q, "deleted")).await))
}

async fn list_versions(State(app): State<App>, Path(subject): Path<String>) -> ApiResult {
    Ok(ok(json!(app.registry.versions(&subject).await?)))
}

async fn register(
    State(app): State<App>,
    Path(subject): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let text = schema_text(body)?;
    let id = app.registry.register(&subject, &text).await?;
    Ok(ok(json!({ "id": id })))
}

async fn get_version(
    State(app): State<App>,
    Path((subject, version)): Path<(String, String)>,
) -> ApiResult {
    Ok(ok(app
        .registry
        .version(&subject, VersionRef::parse(&version)?)
        .await?))
}

async fn get_version_schema(
    State(app): State<App>,
    Path((subject, version)): Path<(String, String)>,
) -> ApiResult {
    let v = app
        .registry
        .version(&subject, VersionRef::parse(&version)?)
        .await?;
    let schema = v
        .get("schema")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut res = (StatusCode::OK, schema).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(res)
}

async fn delete_version(
    State(app): State<App>,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let v = app
        .registry
        .delete_version(
            &subject,
            VersionRef::parse(&version)?,
            flag(&q, "permanent"),
        )
        .await?;
    Ok(ok(json!(v)))
}

async fn lookup(
    State(app): State<App>,
    Path(subject): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let text = schema_text(body)?;
    Ok(ok(app.registry.lookup(&subject, &text).await?))
}

async fn delete_subject(
    State(app): State<App>,
    Path(subject): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    Ok(ok(json!(
        app.registry
            .delete_subject(&subject, flag(&q, "permanent"))
            .await?
    )))
}

async fn compatibility_answer(
    app: &App,
    subject: &str,
    version: Option<VersionRef>,
    verbose: bool,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let text = schema_text(body)?;
    let messages = app.registry.compatibility(subject, version, &text).await?;
    let mut answer = json!({ "is_compatible": messages.is_empty() });
    if verbose {
        answer["messages"] = json!(messages);
    }
    Ok(ok(answer))
}

async fn compatibility_latest(
    State(app): State<App>,
    Path(subject): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    compatibility_answer(&app, &subject, None, flag(&q, "verbose"), body).await
}

async fn compatibility_version(
    State(app): State<App>,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let version = VersionRef::parse(&version)?;
    compatibility_answer(&app, &subject, Some(version), flag(&q, "verbose"), body).await
}

async fn get_config(State(app): State<App>) -> Response {
    ok(json!({ "compatibilityLevel": app.registry.global_level().await }))
}

async fn put_config(State(app): State<App>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    let level = level_body(body)?;
    app.registry.set_global_level(level).await?;
    Ok(ok(json!({ "compatibility": level.to_string() })))
}

async fn get_subject_config(
    State(app): State<App>,
    Path(subject): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let level = app
        .registry
        .subject_level(&subject, flag(&q, "defaultToGlobal"))
        .await?;
    Ok(ok(json!({ "compatibilityLevel": level })))
}

async fn put_subject_config(
    State(app): State<App>,
    Path(subject): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let level = level_body(body)?;
    app.registry.set_subject_level(&subject, level).await?;
    Ok(ok(json!({ "compatibility": level.to_string() })))
}

async fn delete_subject_config(State(app): State<App>, Path(subject): Path<String>) -> ApiResult {
    let previous = app.registry.delete_subject_level(&subject).await?;
    Ok(ok(json!({ "compatibilityLevel": previous })))
}

async fn mode() -> Response {
    ok(json!({ "mode": "READWRITE" }))
}

async fn metrics(State(app): State<App>) -> Response {
    let text = app.metrics.render(&app.registry).await;
    let mut res = (StatusCode::OK, text).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    res
}

async fn healthz() -> &'static str {
    "ok"
}

async fn fallback(request: Request) -> ApiError {
    ApiError::no_such_endpoint(request.uri().path())
}

/// Count requests by status and check basic auth.
async fn guard(State(app): State<App>, request: Request, next: Next) -> Response {
    if let Some(creds) = &app.basic_auth
        && request.uri().path() != "/healthz"
    {
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", creds.0, creds.1))
        );
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            app.metrics.count_request(401);
            let mut res = ApiError::unauthorized().into_response();
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"schema-registry\""),
            );
            return res;
        }
    }
    let res = next.run(request).await;
    app.metrics.count_request(res.status().as_u16());
    res
}

/// The router with every route.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/schemas/types", get(schema_types))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/subjects", get(subjects))
        .route(
            "/subjects/{subject}",
            axum::routing::post(lookup).delete(delete_subject),
        )
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_version_schema),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            axum::routing::post(compatibility_latest),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            axum::routing::post(compatibility_version),
        )
        .route("/config", get(get_config).put(put_config))
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route("/mode", get(mode))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}
