//! `schema-registry`: serve adpipe's Confluent-compatible schema registry.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use schema_registry::Storage;
use schemas::CompatibilityLevel;

/// A Confluent-compatible schema registry for Avro (the REST API subset real clients use).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "SCHEMA_REGISTRY_LISTEN", default_value = "127.0.0.1:8081")]
    listen: String,
    /// Store schemas in PostgreSQL (e.g. `host=127.0.0.1 user=postgres dbname=adpipe`);
    /// otherwise in `--data-file`.
    #[arg(long, env = "SCHEMA_REGISTRY_DATABASE_URL")]
    database_url: Option<String>,
    /// Table that holds the state when `--database-url` is set.
    #[arg(
        long,
        env = "SCHEMA_REGISTRY_TABLE",
        default_value = "schema_registry_state"
    )]
    table: String,
    /// JSON file that holds the state when no database is configured.
    #[arg(
        long,
        env = "SCHEMA_REGISTRY_DATA_FILE",
        default_value = ".local/schema-registry/registry.json"
    )]
    data_file: PathBuf,
    /// Compatibility level of subjects without their own (defaults to topic-config.yaml's).
    #[arg(long, env = "SCHEMA_REGISTRY_DEFAULT_COMPATIBILITY")]
    default_compatibility: Option<CompatibilityLevel>,
    /// Require HTTP basic auth as `user:password` on every endpoint but /healthz.
    #[arg(long, env = "SCHEMA_REGISTRY_BASIC_AUTH", hide_env_values = true)]
    basic_auth: Option<String>,
    /// Log format: `pretty` for people, `json` for log pipelines.
    #[arg(long, env = "SCHEMA_REGISTRY_LOG_FORMAT", default_value = "pretty")]
    log_format: String,
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn run(args: Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let level = match args.default_compatibility {
        Some(l) => l,
        None => topics::TopicConfig::embedded()
            .schema_registry
            .compatibility
            .parse()
            .context("compatibility in topic-config.yaml")?,
    };
    let storage = match args.database_url {
        Some(url) => Storage::Postgres {
            url,
            table: args.table,
        },
        None => Storage::File(args.data_file),
    };
    let basic_auth = match args.basic_auth {
        Some(pair) => Some(
            pair.split_once(':')
                .map(|(u, p)| (u.to_owned(), p.to_owned()))
                .context("--basic-auth must be user:password")?,
        ),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (is another registry running there?)",
                args.listen
            )
        })?;
    tracing::info!(listen = %args.listen, storage = ?storage_label(&storage), "schema registry ready");
    println!("schema-registry: listening on http://{}", args.listen);
    schema_registry::serve(listener, storage, level, basic_auth, shutdown_signal()).await
}

fn storage_label(storage: &Storage) -> String {
    match storage {
        Storage::File(p) => format!("file {}", p.display()),
        Storage::Postgres { table, .. } => format!("postgres table {table}"),
    }
}

#[tokio::main]
async fn main() {
    if let Err(err) = run(Args::parse()).await {
        eprintln!("schema-registry: fatal: {err:#}");
        std::process::exit(1);
    }
}
