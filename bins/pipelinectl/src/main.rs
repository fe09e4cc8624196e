//! `pipelinectl`: adpipe's operator tool. Topics and schemas as code: create what
//! `topic-config.yaml` and `schemas/` describe, and show where a broker or registry drifted;
//! query and prune the audit trail.

mod audit_cmd;
mod output;
mod schemas_cmd;
mod topics_cmd;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use topics::TopicConfig;

/// Operate an adpipe deployment: topics, schemas, the audit trail.
///
/// Exit codes: 0 success (and, for diff/check, no drift), 1 drift or incompatibility found,
/// 2 an error (broker or registry unreachable, invalid configuration).
#[derive(Debug, Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Settings every command shares.
#[derive(Debug, clap::Args)]
pub(crate) struct Global {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092",
        global = true
    )]
    pub(crate) bootstrap_servers: String,
    /// Schema registry URL (defaults to topic-config.yaml's `schema_registry.url`).
    #[arg(long, env = "SCHEMA_REGISTRY_URL", global = true)]
    pub(crate) schema_registry_url: Option<String>,
    /// Schema registry basic auth as `user:password`.
    #[arg(
        long,
        env = "SCHEMA_REGISTRY_BASIC_AUTH",
        hide_env_values = true,
        global = true
    )]
    pub(crate) schema_registry_basic_auth: Option<String>,
    /// A topic-config.yaml to use instead of the one built in.
    #[arg(long, env = "ADPIPE_TOPIC_CONFIG", global = true)]
    pub(crate) topic_config: Option<PathBuf>,
    /// How long to wait for the broker or registry before giving up, in seconds.
    #[arg(
        long,
        env = "PIPELINECTL_TIMEOUT_SECS",
        default_value_t = 10,
        global = true
    )]
    pub(crate) timeout_secs: u64,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

impl Global {
    /// The topic configuration in effect.
    pub(crate) fn config(&self) -> anyhow::Result<TopicConfig> {
        match &self.topic_config {
            Some(path) => TopicConfig::load(path).map_err(Into::into),
            None => Ok(TopicConfig::embedded().clone()),
        }
    }

    /// The timeout for one broker or registry operation.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }

    /// A registry client for the configured URL.
    pub(crate) fn registry(&self) -> anyhow::Result<envelope::RegistryClient> {
        let config = self.config()?;
        let url = self
            .schema_registry_url
            .clone()
            .unwrap_or_else(|| config.schema_registry.url.clone());
        let auth = match &self.schema_registry_basic_auth {
            Some(pair) => Some(
                pair.split_once(':')
                    .map(|(u, p)| (u.to_owned(), p.to_owned()))
                    .context("--schema-registry-basic-auth must be user:password")?,
            ),
            None => None,
        };
        envelope::RegistryClient::new(&url, auth, self.timeout()).map_err(Into::into)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Topics of topic-config.yaml and their .dlq side topics.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// Schemas of schemas/ in the schema registry.
    #[command(subcommand)]
    Schemas(SchemasCommand),
    /// The audit trail in the audit store (PostgreSQL).
    Audit(audit_cmd::AuditArgs),
}

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// Create every topic and DLQ topic that is missing (idempotent).
    Apply,
    /// Show how the broker differs from topic-config.yaml (exit 1 on drift).
    Diff,
}

#[derive(Debug, Subcommand)]
enum SchemasCommand {
    /// Register every topic's value schema under `<topic>-value` and set each subject's
    /// compatibility level from topic-config.yaml (idempotent).
    Register,
    /// Check every schema against the registry's latest version of its subject (exit 1 when
    /// a schema would be refused).
    Check,
}

/// Why a command ends unsuccessfully.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Drift or incompatibility found: exit 1.
    Findings,
    /// An error: exit 2.
    Error(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Error(e)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Topics(TopicsCommand::Apply) => topics_cmd::apply(&cli.global).await,
        Command::Topics(TopicsCommand::Diff) => topics_cmd::diff(&cli.global).await,
        Command::Schemas(SchemasCommand::Register) => schemas_cmd::register(&cli.global).await,
        Command::Schemas(SchemasCommand::Check) => schemas_cmd::check(&cli.global).await,
        Command::Audit(args) => audit_cmd::run(&cli.global, args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Findings) => ExitCode::from(1),
        Err(Failure::Error(err)) => {
            eprintln!("pipelinectl: fatal: {err:#}");
            ExitCode::from(2)
        }
    }
}
