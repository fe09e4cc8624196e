//! `rules.alerts.triggered`: alerts raised and resolved (`rules/alerts.avsc`).

use serde::{Deserialize, Serialize};
use topics::Topic;

use crate::{
    event::Payload,
    payload::common::{Comparator, EntityRef, Metric, Severity, avro_enum},
    values::{Id, Ratio, Timestamp},
};

avro_enum!(
    /// Whether the condition started or stopped holding.
    AlertState {
        /// The condition holds.
        Firing = "firing",
        /// The condition cleared.
        Resolved = "resolved",
    }
);

/// One alert transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct Alert {
    /// Alert id.
    pub alert_id: Id,
    /// Rule id.
    pub rule_id: String,
    /// Rule name.
    pub rule_name: String,
    /// Firing or resolved.
    pub state: AlertState,
    /// Severity.
    pub severity: Severity,
    /// Metric tested.
    pub metric: Metric,
    /// Comparator.
    pub comparator: Comparator,
    /// Threshold.
    pub threshold: Ratio,
    /// Value that fired or cleared it.
    pub observed: Option<Ratio>,
    /// Trailing average, for anomaly rules.
    pub baseline: Option<Ratio>,
    /// Window read.
    pub window: String,
    /// Entity the alert is about.
    pub entity: EntityRef,
    /// Campaign.
    pub campaign_id: String,
    /// Aggregate period.
    pub period_label: String,
    /// org/rule/entity.
    pub dedupe_key: String,
    /// No repeat within this time.
    pub cooldown_seconds: i64,
    /// When it fired.
    pub fired_at: Timestamp,
    /// Channel ids.
    pub channels: Vec<String>,
    /// Human summary, free of PII.
    pub message: String,
    /// The gold event evaluated.
    pub gold_event_id: Id,
}

impl Payload for Alert {
    const TOPIC: Topic = Topic::RulesAlertsTriggered;
    const RECORD: &'static str = "AlertTriggered";
}
