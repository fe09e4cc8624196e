//! The rule evaluator's own metric names and counters, served on `/metrics` beside the
//! runtime's.

use pgstore::BatchCounters;
use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// Alerts emitted, by `state` (firing, resolved) and `severity` (`adpipe_alerts_total`).
pub const ALERTS: &str = "adpipe_alerts";

/// Batches of aggregates evaluated (`adpipe_rules_batches_total`).
pub const BATCHES: &str = "adpipe_rules_batches";
/// Aggregates in the batches evaluated (`adpipe_rules_batch_inputs_total`; divided by
/// [`BATCHES`], the mean batch size).
pub const BATCH_INPUTS: &str = "adpipe_rules_batch_inputs";
/// Batches PostgreSQL refused as a whole, evaluated again aggregate by aggregate so that
/// only the aggregate it refuses fails (`adpipe_rules_batches_split_total`).
pub const BATCHES_SPLIT: &str = "adpipe_rules_batches_split";
/// Attempts of a batch that found PostgreSQL unavailable and wait to try again
/// (`adpipe_rules_store_waits_total`).
pub const STORE_WAITS: &str = "adpipe_rules_store_waits";

/// New aggregates whose event id the evaluator had evaluated before, at another offset
/// (gold emitting one again after a crash), skipped without a dedupe store's help
/// (`adpipe_rules_duplicates_total`).
pub const DUPLICATES: &str = "adpipe_rules_duplicates";

/// `[("state", …), ("severity", …)]`.
pub type Labels = Vec<(&'static str, String)>;

/// The evaluator's counters.
#[derive(Debug, Default, Clone)]
pub struct RuleMetrics {
    /// See [`ALERTS`].
    pub alerts: Family<Labels, Counter>,
    /// The batches' counters: [`BATCHES`], [`BATCH_INPUTS`], [`BATCHES_SPLIT`] and
    /// [`STORE_WAITS`].
    pub batch: BatchCounters,
    /// See [`DUPLICATES`].
    pub duplicates: Counter,
}

impl RuleMetrics {
    /// Register the counters in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            ALERTS,
            "Alerts emitted, by state and severity",
            self.alerts.clone(),
        );
        registry.register(
            DUPLICATES,
            "New aggregates whose event id was evaluated before, skipped",
            self.duplicates.clone(),
        );
        self.batch.register(
            registry,
            [BATCHES, BATCH_INPUTS, BATCHES_SPLIT, STORE_WAITS],
            "aggregates",
        );
    }

    /// Count an alert.
    pub fn count(&self, state: &str, severity: &str) {
        self.alerts
            .get_or_create(&vec![
                ("state", state.to_owned()),
                ("severity", severity.to_owned()),
            ])
            .inc();
    }
}
