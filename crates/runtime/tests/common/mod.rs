//! Shared by the runtime's broker tests.

use std::{collections::HashSet, time::Duration};

use envelope::{Codec, Event, payload::audit::AuditEvent};
use rdkafka::Message as _;
use testkit::read_records;

/// The audit events on `audit.events` (read for up to `within`, or until `at_least + 50`),
/// and how many distinct inputs caused them: equal counts mean no input's output twice.
pub(crate) fn outputs_and_causes(
    b: &str,
    codec: &Codec,
    at_least: usize,
    within: Duration,
) -> (usize, usize) {
    let out = read_records(b, "audit.events", at_least + 50, within).expect("outputs");
    let causes: HashSet<_> = out
        .iter()
        .map(|r| {
            let e: Event<AuditEvent> = codec
                .decode_known(r.payload().unwrap_or_default())
                .expect("output decodes");
            e.metadata.causation_id.expect("caused")
        })
        .collect();
    (out.len(), causes.len())
}
