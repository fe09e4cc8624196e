//! adpipe's Avro schemas: the files under `schemas/` (embedded at build time), a catalog in
//! which every named type is defined exactly once, the standalone schema registered for each
//! topic's `<topic>-value` subject, PII classification, and compatibility checks.
//!
//! No I/O and no Kafka: callers pass file texts in when they are not the embedded ones.

mod catalog;
pub mod compat;
mod files;

pub use catalog::{Catalog, CatalogError, PiiField, SubjectSchema};
pub use compat::{CompatibilityLevel, GateFailure, Incompatibility};
pub use files::EMBEDDED_FILES;

use std::sync::LazyLock;

static EMBEDDED: LazyLock<Catalog> = LazyLock::new(|| {
    Catalog::from_files(EMBEDDED_FILES.iter().copied())
        .expect("the embedded schemas are checked by tests")
});

/// The catalog of the schemas built into this binary.
pub fn embedded() -> &'static Catalog {
    &EMBEDDED
}
