//! The stage's own metric names and counters: notifications sent, failed and retried per
//! channel kind, served on `/metrics` beside the runtime's (`Processor::register_metrics`).

use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// Notifications a peer accepted (or stored in-app), by `kind`
/// (`adpipe_notifications_sent_total`).
pub const SENT: &str = "adpipe_notifications_sent";
/// Channels given up on after their last attempt (or at once on a permanent error), by
/// `kind` (`adpipe_notifications_failed_total`).
pub const FAILED: &str = "adpipe_notifications_failed";
/// Failed delivery attempts that were retried, by `kind`.
pub const RETRIED: &str = "adpipe_notifications_retried";

/// `[("kind", …)]`.
pub type Labels = Vec<(&'static str, String)>;

/// The stage's counters.
#[derive(Debug, Default, Clone)]
pub struct NotifyMetrics {
    /// See [`SENT`].
    pub sent: Family<Labels, Counter>,
    /// See [`FAILED`].
    pub failed: Family<Labels, Counter>,
    /// See [`RETRIED`].
    pub retried: Family<Labels, Counter>,
}

impl NotifyMetrics {
    /// Register the counters in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(SENT, "Notifications delivered", self.sent.clone());
        registry.register(FAILED, "Notification channels failed", self.failed.clone());
        registry.register(
            RETRIED,
            "Notification attempts retried",
            self.retried.clone(),
        );
    }

    /// Count a delivered notification of `kind`; returns the kind's total.
    pub fn count_sent(&self, kind: &str) -> u64 {
        self.sent.get_or_create(&labels(kind)).inc() + 1
    }

    /// Count a failed channel of `kind`; returns the kind's total.
    pub fn count_failed(&self, kind: &str) -> u64 {
        self.failed.get_or_create(&labels(kind)).inc() + 1
    }

    /// Count a retried attempt of `kind`.
    pub fn count_retried(&self, kind: &str) {
        self.retried.get_or_create(&labels(kind)).inc();
    }
}

fn labels(kind: &str) -> Labels {
    vec![("kind", kind.to_owned())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count_per_kind_and_register_under_their_names() {
        let m = NotifyMetrics::default();
        assert_eq!(m.count_sent("webhook"), 1);
        assert_eq!(m.count_sent("webhook"), 2);
        assert_eq!(m.count_sent("email"), 1);
        assert_eq!(m.count_failed("slack"), 1);
        m.count_retried("slack");
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(
            text.contains("adpipe_notifications_sent_total{kind=\"webhook\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("adpipe_notifications_failed_total{kind=\"slack\"} 1"),
            "{text}"
        );
    }
}
