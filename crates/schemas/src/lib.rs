//! adpipe's Avro schemas: the files under `schemas/` (embedded at build time), a catalog in
//! which every named type is defined exactly once, the standalone schema registered for each
//! topic's `<topic>-value` subject, PII classification, and compatibility checks.
//!
//! No I/O and no Kafka: callers pass file texts in when they are not the embedded ones.

mod catalog;
pub mod compat;
pub mod explain;
mod files;

pub use catalog::{Catalog, CatalogError, PiiField, SubjectSchema};
pub use compat::{CompatibilityLevel, GateFailure, Incompatibility};
pub use files::EMBEDDED_FILES;

use std::sync::LazyLock;

static EMBEDDED: LazyLock<Catalog> = LazyLock::new(|| {
    Catalog::from_files(EMBEDDED_FILES.iter().copied())
        .expect("the embedded schemas are checked by tests")
});

/// The registry subject of `topic`'s values: Confluent's `TopicNameStrategy`,
/// `<topic>-value`. Versions of a subject must stay compatible; a breaking change is a new
/// major version under a subject of its own (ARCHITECTURE.md, "Schema evolution").
pub fn subject_name(topic: &str) -> String {
    format!("{topic}-value")
}

/// The catalog of the schemas built into this binary.
pub fn embedded() -> &'static Catalog {
    &EMBEDDED
}
