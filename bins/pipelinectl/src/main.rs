//! `pipelinectl`: adpipe's operator tool. Topics and schemas as code: create what
//! `topic-config.yaml` and `schemas/` describe, and show where a broker or registry drifted;
//! query and prune the audit trail.

mod audit_cmd;
mod config_check;
mod config_cmd;
mod dlq_cmd;
mod k8s_cmd;
mod output;
mod schemas_cmd;
mod status_cmd;
mod topics_cmd;
mod trace_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pipelinectl::Global;

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
    /// Each consumer group's lag per partition and throughput, and each DLQ topic's records.
    ///
    /// For every consumer group of topic-config.yaml and each topic it consumes: the committed
    /// offset, end offset and lag per partition, the group's total lag, and its throughput
    /// (records/s) from two samples of the committed offsets `--interval-secs` apart; then each
    /// `.dlq` topic's record count (end − start offsets).
    ///
    /// On Tansu the end offset (high watermark) can under-report records produced in batches:
    /// lag and DLQ counts then read low, never high. The records are all there; count them by
    /// consuming when it matters.
    Status(status_cmd::StatusArgs),
    /// Follow one correlation id or event id through every topic and its DLQ, in time order.
    ///
    /// Reads every topic of topic-config.yaml and its `.dlq` from the beginning (all
    /// partitions, to their end, at most `--max-records` per topic and `--scan-secs` in all)
    /// and prints the records whose `correlation_id` or `ce_id` header is the id (also under
    /// a prefix, e.g. `dlq.original.ce_id`), or whose value carries it: the connector's
    /// records and dead letters (the original bytes) have no such headers. With the schema
    /// registry reachable each record is decoded for its causation id and org, and a value
    /// match is kept only when the id is the record's event or correlation id; without the
    /// registry records are shown undecoded.
    Trace(trace_cmd::TraceArgs),
    /// Dead letters: inspect a topic's DLQ, replay chosen records to where they came from.
    Dlq(dlq_cmd::DlqArgs),
    /// Bookings, rules, notification channels and org settings: versioned changes on
    /// config.changes, validated before they are published, each with an audit record.
    Config(config_cmd::ConfigArgs),
    /// Kubernetes resources generated from topic-config.yaml (Strimzi topics and users).
    K8s(k8s_cmd::K8sArgs),
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
    /// Check every schema against the registry's latest version of its subject, or offline
    /// against the versions committed to git (`--against REV`, `--history`: the CI gate).
    /// Exit 1 when a schema would be refused, naming each breaking field and why.
    Check(schemas_cmd::CheckArgs),
    /// Every change between the schemas committed at a revision and the working tree's, in
    /// plain words: which readers it breaks and why. Exit 1 when a change breaks readers.
    Diff(schemas_cmd::DiffArgs),
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

impl From<runtime::settings::SettingsError> for Failure {
    fn from(e: runtime::settings::SettingsError) -> Self {
        Failure::Error(e.into())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Topics(TopicsCommand::Apply) => topics_cmd::apply(&cli.global).await,
        Command::Topics(TopicsCommand::Diff) => topics_cmd::diff(&cli.global).await,
        Command::Schemas(SchemasCommand::Register) => schemas_cmd::register(&cli.global).await,
        Command::Schemas(SchemasCommand::Check(args)) => {
            schemas_cmd::check(&cli.global, args).await
        }
        Command::Schemas(SchemasCommand::Diff(args)) => schemas_cmd::diff(&cli.global, args),
        Command::Audit(args) => audit_cmd::run(&cli.global, args).await,
        Command::Status(args) => status_cmd::run(&cli.global, args).await,
        Command::Trace(args) => trace_cmd::run(&cli.global, args).await,
        Command::Dlq(args) => dlq_cmd::run(&cli.global, args).await,
        Command::Config(args) => config_cmd::run(&cli.global, args).await,
        Command::K8s(args) => k8s_cmd::run(&cli.global, args).await,
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
