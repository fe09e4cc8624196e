//! `rules.alerts.triggered`: alerts raised and resolved, major version 1 (`rules/alerts.avsc`,
//! [`Alert`]) and major version 2 (`rules/alerts-v2.avsc`, [`AlertV2`]) side by side.

use serde::{Deserialize, Serialize};
use topics::Topic;

use crate::{
    Codec, DecodeError,
    event::{Event, Payload},
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

/// The condition an alert's rule tests: `observed <comparator> value` (major 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct Threshold {
    /// Comparator.
    pub comparator: Comparator,
    /// The value compared with.
    pub value: Ratio,
}

/// One alert transition, major version 2 (`adpipe.rules.v2.AlertTriggered`, event_version
/// `2.0.0`): the breaking change moves `comparator` into `threshold`, now a [`Threshold`].
/// It reads major 1 records too, upcast by `From<Alert>`, so consumers handle one type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
#[serde(rename = "Alert")] // the record's name in `adpipe.rules.v2`
pub struct AlertV2 {
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
    /// The condition: comparator and value.
    pub threshold: Threshold,
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

impl Payload for AlertV2 {
    const TOPIC: Topic = Topic::RulesAlertsTriggered;
    const RECORD: &'static str = "AlertTriggered";
    const VERSION: &'static str = "2.0.0";
    /// Major 1 is read (upcast) until its producers have moved on, then retired.
    const DEPRECATED_VERSIONS: &'static [&'static str] = &["1.0.0"];
    const MAJOR: u32 = 2;

    fn read_major(
        codec: &Codec,
        major: u32,
        bytes: &[u8],
    ) -> Option<Result<Event<Self>, DecodeError>> {
        (major == Alert::MAJOR).then(|| codec.read_as::<Alert, AlertV2>(bytes))
    }
}

/// The upcast of a major 1 alert: the same alert, its comparator moved into the threshold.
impl From<Alert> for AlertV2 {
    fn from(a: Alert) -> AlertV2 {
        AlertV2 {
            alert_id: a.alert_id,
            rule_id: a.rule_id,
            rule_name: a.rule_name,
            state: a.state,
            severity: a.severity,
            metric: a.metric,
            threshold: Threshold {
                comparator: a.comparator,
                value: a.threshold,
            },
            observed: a.observed,
            baseline: a.baseline,
            window: a.window,
            entity: a.entity,
            campaign_id: a.campaign_id,
            period_label: a.period_label,
            dedupe_key: a.dedupe_key,
            cooldown_seconds: a.cooldown_seconds,
            fired_at: a.fired_at,
            channels: a.channels,
            message: a.message,
            gold_event_id: a.gold_event_id,
        }
    }
}
