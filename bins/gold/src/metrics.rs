//! Gold's own metric names and counters, served on `/metrics` beside the runtime's.

use prometheus_client::{metrics::counter::Counter, registry::Registry};

/// Batches of silver inputs written (`adpipe_gold_batches_total`).
pub const BATCHES: &str = "adpipe_gold_batches";
/// Silver inputs in the batches written (`adpipe_gold_batch_inputs_total`; divided by
/// [`BATCHES`], the mean batch size).
pub const BATCH_INPUTS: &str = "adpipe_gold_batch_inputs";
/// Runs of a batch PostgreSQL refused as a whole, written again input by input so that only
/// the input it refuses fails (`adpipe_gold_batches_split_total`).
pub const BATCHES_SPLIT: &str = "adpipe_gold_batches_split";
/// Attempts of a batch that found PostgreSQL unavailable and wait to try again
/// (`adpipe_gold_store_waits_total`).
pub const STORE_WAITS: &str = "adpipe_gold_store_waits";

/// Gold's counters (clones share them).
#[derive(Debug, Default, Clone)]
pub struct GoldMetrics {
    /// See [`BATCHES`].
    pub batches: Counter,
    /// See [`BATCH_INPUTS`].
    pub batch_inputs: Counter,
    /// See [`BATCHES_SPLIT`].
    pub batches_split: Counter,
    /// See [`STORE_WAITS`].
    pub store_waits: Counter,
}

impl GoldMetrics {
    /// Register the counters in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            BATCHES,
            "Batches of silver inputs written",
            self.batches.clone(),
        );
        registry.register(
            BATCH_INPUTS,
            "Silver inputs in the batches written",
            self.batch_inputs.clone(),
        );
        registry.register(
            BATCHES_SPLIT,
            "Runs of a batch PostgreSQL refused, written again input by input",
            self.batches_split.clone(),
        );
        registry.register(
            STORE_WAITS,
            "Batch attempts that found PostgreSQL unavailable and wait",
            self.store_waits.clone(),
        );
    }
}
