//! Run events on `etl.execution`, keyed by the stage's pipeline id: every stage reports
//! `started` when it begins consuming, `progress` every `--run-report-secs` with its counts so
//! far, and `completed` (or `failed`, when the DLQ circuit breaker stopped it) when it stops.

use envelope::{
    EventMetadata, Id, Source, Timestamp,
    payload::etl::{Execution, RunCounts, RunStatus},
};

use crate::metrics::{self, Metrics};

/// The envelope that causes what a stage emits on its own (run events, a tick's flush):
/// fresh ids, org 0 (the platform, not a tenant).
pub fn system_cause(source: &Source, event_type: &str) -> EventMetadata {
    let id = Id::new();
    EventMetadata {
        event_id: id,
        event_type: event_type.to_owned(),
        event_version: "1.0.0".to_owned(),
        timestamp: Timestamp::now(),
        source: source.clone(),
        correlation_id: id,
        org_id: 0,
        causation_id: None,
        traceparent: None,
    }
}

/// One run of a stage process: from start to stop.
#[derive(Debug, Clone)]
pub struct Run {
    /// The run's id (new per process start).
    pub run_id: Id,
    /// Stage name = pipeline id = consumer group.
    pub stage: &'static str,
    /// Instance.
    pub instance: String,
    /// When the run started.
    pub started_at: Timestamp,
}

impl Run {
    /// A run of `stage` on `instance`, starting now.
    pub fn begin(stage: &'static str, instance: &str) -> Run {
        Run {
            run_id: Id::new(),
            stage,
            instance: instance.to_owned(),
            started_at: Timestamp::now(),
        }
    }

    /// The run event with `status` and the counts in `metrics` (this process's totals).
    pub fn event(&self, status: RunStatus, metrics: &Metrics, error: Option<String>) -> Execution {
        let total = |name| i64::try_from(metrics.total(name)).unwrap_or(i64::MAX);
        let ended = matches!(status, RunStatus::Completed | RunStatus::Failed);
        Execution {
            pipeline_id: self.stage.to_owned(),
            run_id: self.run_id,
            stage: self.stage.to_owned(),
            instance: self.instance.clone(),
            status,
            started_at: self.started_at,
            ended_at: ended.then(Timestamp::now),
            counts: RunCounts {
                records_in: total(metrics::MESSAGES_IN),
                records_out: i64::try_from(metrics.produced.get()).unwrap_or(i64::MAX),
                dead_lettered: total(metrics::DEAD_LETTERED),
                quarantined: total(metrics::QUARANTINED),
                deduplicated: total(metrics::DEDUPLICATED),
                retried: total(metrics::RETRIED),
                failed: total(metrics::FAILED),
            },
            error,
            details: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_event_carries_the_counts_so_far() {
        let m = Metrics::default();
        let l = vec![("stage", "s".to_owned()), ("topic", "t".to_owned())];
        m.messages_in.get_or_create(&l).inc_by(10);
        m.produced.inc_by(7);
        m.dead_lettered.get_or_create(&l).inc_by(2);
        m.deduplicated.get_or_create(&l).inc();
        m.quarantined.inc_by(3);
        let run = Run::begin("silver-processor", "pod-1");
        let e = run.event(RunStatus::Progress, &m, None);
        assert_eq!(e.pipeline_id, "silver-processor");
        assert_eq!(e.ended_at, None);
        assert_eq!(
            e.counts,
            RunCounts {
                records_in: 10,
                records_out: 7,
                dead_lettered: 2,
                quarantined: 3,
                deduplicated: 1,
                retried: 0,
                failed: 0,
            }
        );
        let done = run.event(RunStatus::Completed, &m, None);
        assert!(done.ended_at.is_some());
        assert_eq!(done.run_id, e.run_id, "one run id per process");
    }
}
