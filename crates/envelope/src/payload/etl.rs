//! `etl.execution`: stage run events (`etl/execution.avsc`), keyed by pipeline id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use topics::{PartitionKey, Topic};

use crate::{
    event::{EventMetadata, Payload},
    payload::common::avro_enum,
    values::{Id, Timestamp},
};

avro_enum!(
    /// Run lifecycle.
    RunStatus {
        /// Run began.
        Started = "started",
        /// Periodic progress.
        Progress = "progress",
        /// Run ended normally.
        Completed = "completed",
        /// Run ended with an error.
        Failed = "failed",
    }
);

/// Record counts of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct RunCounts {
    /// Records consumed.
    pub records_in: i64,
    /// Records produced.
    pub records_out: i64,
    /// Sent to a DLQ.
    pub dead_lettered: i64,
    /// Quarantined.
    pub quarantined: i64,
    /// Skipped as duplicates.
    pub deduplicated: i64,
    /// Retried.
    pub retried: i64,
    /// Failed.
    pub failed: i64,
}

/// One run event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct Execution {
    /// Partition key: the stage name.
    pub pipeline_id: String,
    /// Run id.
    pub run_id: Id,
    /// Stage.
    pub stage: String,
    /// Instance.
    pub instance: String,
    /// Lifecycle status.
    pub status: RunStatus,
    /// Start time.
    pub started_at: Timestamp,
    /// End time.
    pub ended_at: Option<Timestamp>,
    /// Counts.
    pub counts: RunCounts,
    /// Error, when failed.
    pub error: Option<String>,
    /// Free-form details.
    pub details: BTreeMap<String, String>,
}

impl Payload for Execution {
    const TOPIC: Topic = Topic::EtlExecution;
    const RECORD: &'static str = "ExecutionEvent";

    fn partition_key<'a>(&'a self, _metadata: &EventMetadata) -> PartitionKey<'a> {
        PartitionKey::Pipeline(&self.pipeline_id)
    }
}
