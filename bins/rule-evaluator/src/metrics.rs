//! The rule evaluator's own metric names and counters, served on `/metrics` beside the
//! runtime's.

use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// Alerts emitted, by `state` (firing, resolved) and `severity` (`adpipe_alerts_total`).
pub const ALERTS: &str = "adpipe_alerts";

/// `[("state", …), ("severity", …)]`.
pub type Labels = Vec<(&'static str, String)>;

/// The evaluator's counters.
#[derive(Debug, Default, Clone)]
pub struct RuleMetrics {
    /// See [`ALERTS`].
    pub alerts: Family<Labels, Counter>,
}

impl RuleMetrics {
    /// Register the counters in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            ALERTS,
            "Alerts emitted, by state and severity",
            self.alerts.clone(),
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
