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
    /// How many times the record was replayed from a DLQ (`pipelinectl dlq replay` sets it on
    /// the records it replays; the runtime carries it from an input into its dead letter, so
    /// a record that keeps failing is replayed a bounded number of times). Not a `dlq.*`
    /// header: it travels with the record.
    pub const REPLAY_COUNT: &str = "adpipe.replay.count";
}

/// The name of a header an input record carries into its dead letter, unchanged: its event
/// headers ([`crate::processor::headers::ALL`]: so `pipelinectl trace` finds it and a replay
/// sends them on), and the loop guard's replay count; `None` for any other header.
pub fn carried_name(name: &str) -> Option<&'static str> {
    carried_index(name).map(|i| CARRIED_NAMES[i])
}

/// How many header names [`carried_name`] knows.
pub(crate) const CARRIED: usize = crate::processor::headers::ALL.len() + 1;

/// The carried header names: the event headers, then the replay count.
pub(crate) const CARRIED_NAMES: [&str; CARRIED] = {
    let mut names = [headers::REPLAY_COUNT; CARRIED];
    let mut i = 0;
    while i < crate::processor::headers::ALL.len() {
        names[i] = crate::processor::headers::ALL[i];
        i += 1;
    }
    names
};

/// The position of `name` in [`CARRIED_NAMES`], if it is carried.
pub(crate) fn carried_index(name: &str) -> Option<usize> {
    CARRIED_NAMES.iter().position(|h| *h == name)
}

/// The carried headers ([`carried_name`]) among an input record's `(name, value)` headers:
/// the first value of each, by its place in [`CARRIED_NAMES`] (a header without a value
/// carries nothing).
pub(crate) fn carried<'a>(
    input: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
) -> [Option<&'a [u8]>; CARRIED] {
    let mut out = [None; CARRIED];
    for (name, value) in input {
        if let (Some(i), Some(value)) = (carried_index(name), value) {
            out[i].get_or_insert(value);
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_events_headers_and_replay_count_are_carried_not_its_dlq_headers() {
        let input: Vec<(&str, Option<&[u8]>)> = vec![
            ("traceparent", Some(b"00-abc".as_slice())),
            (headers::REPLAY_COUNT, Some(b"2".as_slice())),
            (headers::REPLAY_COUNT, Some(b"9".as_slice())),
            (headers::ERROR_CODE, Some(b"X".as_slice())),
            ("correlation_id", Some(b"c-1".as_slice())),
            ("x-other", Some(b"y".as_slice())),
        ];
        fn named(values: [Option<&[u8]>; CARRIED]) -> Vec<(&'static str, &[u8])> {
            CARRIED_NAMES
                .into_iter()
                .zip(values)
                .filter_map(|(name, value)| Some((name, value?)))
                .collect()
        }
        assert_eq!(
            named(carried(input)),
            vec![
                ("correlation_id", b"c-1".as_slice()),
                ("traceparent", b"00-abc".as_slice()),
                (headers::REPLAY_COUNT, b"2".as_slice()),
            ]
        );
        assert!(named(carried(Vec::<(&str, Option<&[u8]>)>::new())).is_empty());
    }
}
