//! adpipe's schema registry: the Confluent Schema Registry REST API subset that real clients
//! use (register, fetch by id, subjects and versions, lookup, compatibility, config, soft and
//! permanent delete), with compatibility checked by Avro schema resolution and state kept in a
//! JSON file or in PostgreSQL.
//!
//! [`serve`] runs it on a listener; [`spawn_local`] starts it in-process on a free local port
//! (what tests and benchmarks use).

pub mod api;
pub mod args;
pub mod error;
pub mod metrics;
pub mod registry;
pub mod store;

use std::{future::Future, sync::Arc};

pub use api::App;
pub use registry::Registry;
use schemas::CompatibilityLevel;
pub use store::Storage;

/// Open the registry on `storage` and serve it on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    storage: Storage,
    default_level: CompatibilityLevel,
    basic_auth: Option<(String, String)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let registry = Registry::open(storage, default_level)
        .await
        .map_err(|e| anyhow::anyhow!("opening the registry storage: {}", e.message))?;
    let app = App {
        registry,
        metrics: Arc::new(metrics::Metrics::default()),
        basic_auth: basic_auth.map(Arc::new),
    };
    axum::serve(listener, api::router(app))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

/// Start a registry in this process on a free port of 127.0.0.1, storing its state in
/// `dir/registry.json`, with compatibility `BACKWARD` and no authentication; it runs until
/// the process's async runtime stops. Returns its URL.
pub async fn spawn_local(dir: &std::path::Path) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(serve(
        listener,
        Storage::File(dir.join("registry.json")),
        CompatibilityLevel::Backward,
        None,
        std::future::pending(),
    ));
    Ok(url)
}
