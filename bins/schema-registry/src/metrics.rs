//! Prometheus metrics of the registry; every metric name is defined here.

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry as MetricRegistry,
};

use crate::registry::Registry;

/// Distinct schemas by id (the spec's `schema_registry_schemas_total`).
pub const SCHEMAS_TOTAL: &str = "schema_registry_schemas_total";
/// Subjects with at least one live version.
pub const SUBJECTS: &str = "schema_registry_subjects";
/// HTTP requests answered, by status code (exposed as `schema_registry_requests_total`).
pub const REQUESTS: &str = "schema_registry_requests";

/// The registry's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: MetricRegistry,
    schemas: Gauge,
    subjects: Gauge,
    requests: Family<Vec<(String, String)>, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = MetricRegistry::default();
        let schemas = Gauge::default();
        let subjects = Gauge::default();
        let requests = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            SCHEMAS_TOTAL,
            "Distinct schemas registered",
            schemas.clone(),
        );
        registry.register(SUBJECTS, "Subjects with a live version", subjects.clone());
        registry.register(
            REQUESTS,
            "HTTP requests answered, by status",
            requests.clone(),
        );
        Metrics {
            registry,
            schemas,
            subjects,
            requests,
        }
    }
}

impl Metrics {
    /// Count one answered request.
    pub fn count_request(&self, status: u16) {
        self.requests
            .get_or_create(&vec![("status".to_owned(), status.to_string())])
            .inc();
    }

    /// The exposition text, with gauges read from `registry` now.
    pub async fn render(&self, registry: &Registry) -> String {
        self.schemas.set(registry.schema_count().await as i64);
        self.subjects.set(registry.subject_count().await as i64);
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
