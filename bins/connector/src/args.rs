//! The connector's command line: every flag `#[arg(long, env)]`, in the library so the
//! configuration reference (`docs/configuration.md`) is generated from it.

use std::path::PathBuf;

use chrono::NaiveDate;
use envelope::payload::common::DspType;

/// Produces raw DSP report rows into connector.data.raw: simulated DV360, The Trade Desk,
/// Meta and CRM booking rows (with a share of bad rows of every kind), or the rows of report
/// files.
#[derive(Debug, clap::Parser)]
#[command(name = "connector", version)]
pub struct Args {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap_servers: String,
    /// Schema registry URL (defaults to topic-config.yaml's `schema_registry.url`).
    #[arg(long, env = "SCHEMA_REGISTRY_URL", hide_env_values = true)]
    pub schema_registry_url: Option<String>,
    /// How the Kafka producer connects and logs in (TLS, SASL), as every stage does.
    #[command(flatten)]
    pub kafka: runtime::KafkaSecurity,
    /// How the schema registry client logs in.
    #[command(flatten)]
    pub registry_auth: runtime::RegistryAuth,
    /// Log format: `pretty` for people, `json` for production.
    #[arg(long, env = "LOG_FORMAT", default_value = "pretty")]
    pub log_format: String,
    /// Simulator seed: the same flags produce the same rows.
    #[arg(long, env = "SIM_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Simulated organisations (org ids 1..=N).
    #[arg(long, env = "SIM_ORGS", default_value_t = 5)]
    pub orgs: u32,
    /// Campaigns per organisation (one row each per pull).
    #[arg(long, env = "SIM_CAMPAIGNS", default_value_t = 3)]
    pub campaigns: u32,
    /// Report days simulated, ending at --end-date.
    #[arg(long, env = "SIM_DAYS", default_value_t = 7)]
    pub days: u32,
    /// Last report day (YYYY-MM-DD); today (UTC) when unset.
    #[arg(long, env = "SIM_END_DATE")]
    pub end_date: Option<NaiveDate>,
    /// Share of data rows made bad (0.0–1.0), spread over every kind of bad row.
    #[arg(long, env = "SIM_BAD_SHARE", default_value_t = 0.05)]
    pub bad_share: f64,
    /// Sources simulated, comma separated.
    #[arg(
        long,
        env = "SIM_DSPS",
        value_delimiter = ',',
        value_parser = |s: &str| s.trim().parse::<DspType>(),
        default_value = "dv360,ttd,meta,crm"
    )]
    pub dsps: Vec<DspType>,
    /// Passes over the simulated window, each with the next seed (new pulls); 0 = forever.
    #[arg(long, env = "SIM_PASSES", default_value_t = 1)]
    pub passes: u64,
    /// Rows per second; 0 = as fast as the broker takes them.
    #[arg(long, env = "SIM_RATE", default_value_t = 0.0)]
    pub rate: f64,
    /// Ingest these report files (JSON or .csv) instead of simulating.
    #[arg(long = "file", env = "CONNECTOR_FILES", value_delimiter = ',')]
    pub files: Vec<PathBuf>,
    /// With --file: the organisation the reports are for.
    #[arg(long, env = "CONNECTOR_FILE_ORG", default_value_t = 1)]
    pub file_org: i64,
    /// With --file: the source of the reports (dv360, ttd, meta, crm).
    #[arg(long, env = "CONNECTOR_FILE_DSP", default_value = "dv360")]
    pub file_dsp: String,
    /// With --file: the report day (YYYY-MM-DD); today (UTC) when unset.
    #[arg(long, env = "CONNECTOR_FILE_DATE")]
    pub file_date: Option<NaiveDate>,
    /// Seconds between progress lines on stderr.
    #[arg(long, env = "CONNECTOR_PROGRESS_SECS", default_value_t = 2)]
    pub progress_secs: u64,
    /// Simulator: before each pass's rows, publish on config.changes a booking per simulated
    /// campaign (pacing and margin vary: some under-, some over-pace) and an in-app channel
    /// per org (channel/inbox), only what the topic does not hold yet. `false` to skip.
    #[arg(
        long,
        env = "SIM_PUBLISH_CONFIG",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub publish_config: bool,
    /// How long to wait at start for the brokers to answer (a refused login or TLS
    /// handshake fails at once; anything else after this, with librdkafka's last connection
    /// failure).
    #[arg(long, env = "CONNECTOR_BROKER_WAIT_SECS", default_value_t = 30)]
    pub broker_wait_secs: u64,
    /// Rows awaiting the broker's acknowledgement at most.
    #[arg(long, env = "CONNECTOR_MAX_IN_FLIGHT", default_value_t = 10_000)]
    pub max_in_flight: usize,
}
