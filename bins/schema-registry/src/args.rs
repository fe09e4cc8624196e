//! The registry binary's command line: every flag `#[arg(long, env)]`, in the library so the
//! configuration reference (`docs/configuration.md`) is generated from it.

use std::path::PathBuf;

use schemas::CompatibilityLevel;

/// A Confluent-compatible schema registry for Avro (the REST API subset real clients use).
#[derive(Debug, clap::Parser)]
#[command(name = "schema-registry", version)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "SCHEMA_REGISTRY_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: String,
    /// Store schemas in PostgreSQL (e.g. `host=127.0.0.1 user=postgres dbname=adpipe`);
    /// otherwise in `--data-file`.
    #[arg(long, env = "SCHEMA_REGISTRY_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Table that holds the state when `--database-url` is set.
    #[arg(
        long,
        env = "SCHEMA_REGISTRY_TABLE",
        default_value = "schema_registry_state"
    )]
    pub table: String,
    /// JSON file that holds the state when no database is configured.
    #[arg(
        long,
        env = "SCHEMA_REGISTRY_DATA_FILE",
        default_value = ".local/schema-registry/registry.json"
    )]
    pub data_file: PathBuf,
    /// Compatibility level of subjects without their own (defaults to topic-config.yaml's).
    #[arg(long, env = "SCHEMA_REGISTRY_DEFAULT_COMPATIBILITY")]
    pub default_compatibility: Option<CompatibilityLevel>,
    /// Require HTTP basic auth as `user:password` on every endpoint but /healthz.
    #[arg(long, env = "SCHEMA_REGISTRY_BASIC_AUTH", hide_env_values = true)]
    pub basic_auth: Option<String>,
    /// Log format: `pretty` for people, `json` for log pipelines.
    #[arg(long, env = "SCHEMA_REGISTRY_LOG_FORMAT", default_value = "pretty")]
    pub log_format: String,
}
