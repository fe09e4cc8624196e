//! Gold's own metric names and counters, served on `/metrics` beside the runtime's.

use pgstore::BatchCounters;
use prometheus_client::registry::Registry;

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
    /// The batches' counters: [`BATCHES`], [`BATCH_INPUTS`], [`BATCHES_SPLIT`] and
    /// [`STORE_WAITS`].
    pub batch: BatchCounters,
}

impl GoldMetrics {
    /// Register the counters in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        self.batch.register(
            registry,
            [BATCHES, BATCH_INPUTS, BATCHES_SPLIT, STORE_WAITS],
            "silver inputs",
        );
    }
}
