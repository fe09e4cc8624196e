//! adpipe's Avro schemas: the files under `schemas/` (embedded at build time), a catalog in
//! which every named type is defined exactly once, the standalone schema registered for each
//! topic's subjects (`<topic>-value`, and `<topic>-<record>` for a later major version), PII
//! classification, and compatibility checks.
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
/// major version under a subject of its own ([`major_subject_name`]; ARCHITECTURE.md,
/// "Schema evolution").
pub fn subject_name(topic: &str) -> String {
    format!("{topic}-value")
}

/// The registry subject of major version `major` of `topic`'s values, whose top-level record
/// is `record` (full name): `<topic>-value` for major 1, Confluent's
/// `TopicRecordNameStrategy` `<topic>-<record>` for later majors, so each major keeps a
/// compatibility history of its own on the same topic.
pub fn major_subject_name(topic: &str, major: u32, record: &str) -> String {
    if major <= 1 {
        subject_name(topic)
    } else {
        format!("{topic}-{record}")
    }
}

/// The catalog of the schemas built into this binary.
pub fn embedded() -> &'static Catalog {
    &EMBEDDED
}
