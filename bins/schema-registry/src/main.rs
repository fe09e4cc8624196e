//! `schema-registry`: serve adpipe's Confluent-compatible schema registry.

use anyhow::Context;
use clap::Parser;
use schema_registry::{Storage, args::Args};

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
