//! Dead-letter records: the original key and value bytes untouched, sent to `{topic}.dlq` on
//! the same partition, with headers that say what failed, where and when.

/// Header names of a dead-lettered record (all values are UTF-8 text).
pub mod headers {
    /// Stable error code, e.g. `DECODE_WRONG_MAGIC_BYTE`.
    pub const ERROR_CODE: &str = "dlq.error.code";
    /// Human error message.
    pub const ERROR_MESSAGE: &str = "dlq.error.message";
    /// The stage (consumer group) that gave up.
    pub const STAGE: &str = "dlq.stage";
    /// Topic the record was read from.
    pub const ORIGINAL_TOPIC: &str = "dlq.original.topic";
    /// Its partition.
    pub const ORIGINAL_PARTITION: &str = "dlq.original.partition";
    /// Its offset.
    pub const ORIGINAL_OFFSET: &str = "dlq.original.offset";
    /// Its timestamp, milliseconds since the epoch.
    pub const ORIGINAL_TIMESTAMP: &str = "dlq.original.timestamp";
    /// Attempts made.
    pub const ATTEMPTS: &str = "dlq.attempts";
    /// First failure, RFC 3339.
    pub const FIRST_FAILURE: &str = "dlq.first.failure";
    /// Last failure, RFC 3339.
    pub const LAST_FAILURE: &str = "dlq.last.failure";
}

/// Why and where a record failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Error code.
    pub code: String,
    /// Error message.
    pub message: String,
    /// Attempts made.
    pub attempts: u32,
    /// First failure time (RFC 3339).
    pub first: String,
    /// Last failure time (RFC 3339).
    pub last: String,
}

/// The headers of a dead-lettered record.
pub fn dlq_headers(
    failure: &Failure,
    stage: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
) -> Vec<(&'static str, String)> {
    vec![
        (headers::ERROR_CODE, failure.code.clone()),
        (headers::ERROR_MESSAGE, failure.message.clone()),
        (headers::STAGE, stage.to_owned()),
        (headers::ORIGINAL_TOPIC, topic.to_owned()),
        (headers::ORIGINAL_PARTITION, partition.to_string()),
        (headers::ORIGINAL_OFFSET, offset.to_string()),
        (
            headers::ORIGINAL_TIMESTAMP,
            timestamp_ms.map(|t| t.to_string()).unwrap_or_default(),
        ),
        (headers::ATTEMPTS, failure.attempts.to_string()),
        (headers::FIRST_FAILURE, failure.first.clone()),
        (headers::LAST_FAILURE, failure.last.clone()),
    ]
}
