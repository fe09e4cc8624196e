//! The runtime's settings: every flag `#[arg(long, env)]`, shared by all stage binaries
//! through `#[command(flatten)]`.

use std::time::Duration;

/// Settings every stage shares.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap_servers: String,
    /// Schema registry URL (defaults to topic-config.yaml's `schema_registry.url`).
    #[arg(long, env = "SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<String>,
    /// Static group membership id (e.g. the pod name); empty = dynamic membership.
    #[arg(long, env = "GROUP_INSTANCE_ID")]
    pub group_instance_id: Option<String>,
    /// Instance name in event envelopes (defaults to host name and pid).
    #[arg(long, env = "INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Redis URL for event_id dedupe (e.g. redis://127.0.0.1:6379); in-memory when unset.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// How long a processed event_id is remembered, in seconds.
    #[arg(long, env = "DEDUPE_TTL_SECS", default_value_t = 86_400)]
    pub dedupe_ttl_secs: u64,
    /// Records buffered per partition before consumption pauses (backpressure).
    #[arg(long, env = "MAX_IN_FLIGHT_PER_PARTITION", default_value_t = 500)]
    pub max_in_flight_per_partition: usize,
    /// Kilobytes of records the consumer prefetches ahead of processing, over all partitions
    /// (librdkafka's `queued.max.messages.kbytes`): with the per-partition queues, this caps
    /// the stage's memory however large the backlog.
    #[arg(long, env = "FETCH_BUFFER_KIB", default_value_t = 8192)]
    pub fetch_buffer_kib: u64,
    /// Attempts for a retryable error before the record goes to the DLQ.
    #[arg(long, env = "RETRY_ATTEMPTS", default_value_t = 5)]
    pub retry_attempts: u32,
    /// First retry delay in milliseconds (doubles per attempt, with jitter).
    #[arg(long, env = "RETRY_BACKOFF_MS", default_value_t = 200)]
    pub retry_backoff_ms: u64,
    /// Stop consuming when more than this share of the last window was dead-lettered.
    #[arg(long, env = "DLQ_BREAKER_THRESHOLD", default_value_t = 0.5)]
    pub dlq_breaker_threshold: f64,
    /// Records in the DLQ breaker's window (0 disables the breaker).
    #[arg(long, env = "DLQ_BREAKER_WINDOW", default_value_t = 1000)]
    pub dlq_breaker_window: usize,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_LISTEN", default_value = "127.0.0.1:0")]
    pub metrics_listen: String,
    /// Log format: `pretty` for people, `json` for production.
    #[arg(long, env = "LOG_FORMAT", default_value = "pretty")]
    pub log_format: String,
    /// Seconds between `progress` run events on etl.execution (0: no run events at all).
    #[arg(long, env = "RUN_REPORT_SECS", default_value_t = 60)]
    pub run_report_secs: u64,
    /// Transactional mode: outputs, dead letters and consumed offsets committed together in
    /// Kafka transactions (exactly once for `read_committed` readers). Off by default; needs
    /// a broker that isolates aborted transactions (Tansu 0.6 does not).
    #[arg(long, env = "TRANSACTIONAL", default_value_t = false)]
    pub transactional: bool,
    /// Milliseconds between transaction commits in transactional mode.
    #[arg(long, env = "TRANSACTION_MS", default_value_t = 100)]
    pub transaction_ms: u64,
    /// Seconds to finish in-flight work after SIGTERM before exiting.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 25)]
    pub shutdown_grace_secs: u64,
}

impl RuntimeArgs {
    /// Settings for tests: everything default except the broker.
    pub fn for_tests(bootstrap: &str) -> RuntimeArgs {
        RuntimeArgs {
            bootstrap_servers: bootstrap.to_owned(),
            schema_registry_url: None,
            group_instance_id: None,
            instance_id: Some("test".to_owned()),
            redis_url: None,
            dedupe_ttl_secs: 86_400,
            max_in_flight_per_partition: 500,
            fetch_buffer_kib: 8192,
            retry_attempts: 3,
            retry_backoff_ms: 10,
            dlq_breaker_threshold: 0.5,
            dlq_breaker_window: 0,
            metrics_listen: "127.0.0.1:0".to_owned(),
            log_format: "pretty".to_owned(),
            run_report_secs: 0,
            transactional: false,
            transaction_ms: 100,
            shutdown_grace_secs: 10,
        }
    }

    /// The shutdown grace period.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}
