//! `config.changes`: versioned changes to bookings, rules, channels and org settings
//! (`config/changes.avsc`).

use serde::{Deserialize, Serialize};
use topics::Topic;

use crate::{
    event::Payload,
    payload::common::{Actor, Booking, Comparator, Metric, Severity, avro_enum},
    values::Ratio,
};

avro_enum!(
    /// Upsert or delete.
    ConfigOp {
        /// Create or replace.
        Upsert = "upsert",
        /// Remove.
        Delete = "delete",
    }
);

avro_enum!(
    /// Notification channel kinds.
    ChannelKind {
        /// Generic JSON webhook.
        Webhook = "webhook",
        /// Slack-compatible webhook.
        Slack = "slack",
        /// E-mail over SMTP.
        Email = "email",
        /// Stored in-app notification.
        InApp = "in_app",
    }
);

/// An alert rule, defined as data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct RuleDefinition {
    /// Rule id.
    pub rule_id: String,
    /// Name.
    pub name: String,
    /// Metric tested.
    pub metric: Metric,
    /// Comparator.
    pub comparator: Comparator,
    /// Threshold.
    pub threshold: Ratio,
    /// Window.
    pub window: String,
    /// Severity.
    pub severity: Severity,
    /// Channel ids.
    pub channels: Vec<String>,
    /// Cooldown.
    pub cooldown_seconds: i64,
    /// Active.
    pub enabled: bool,
    /// Limit to one campaign.
    pub campaign_id: Option<String>,
}

/// A notification channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct ChannelDefinition {
    /// Channel id.
    pub channel_id: String,
    /// Kind.
    pub kind: ChannelKind,
    /// URL, e-mail address or audience: PII for e-mail, never logged.
    pub target: String,
    /// Secret name (never the secret).
    pub secret_ref: Option<String>,
    /// Rate limit.
    pub rate_limit_per_minute: Option<i32>,
    /// Active.
    pub enabled: bool,
}

/// Org-wide settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct OrgSettings {
    /// Display name.
    pub name: Option<String>,
    /// IANA time zone.
    pub timezone: String,
    /// ISO 4217.
    pub currency: String,
    /// Freshness bound, days.
    pub freshness_days: i32,
}

/// The changed configuration item (an Avro union; variant names match the record names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub enum ConfigItem {
    /// A booking.
    Booking(Booking),
    /// A rule.
    RuleDefinition(RuleDefinition),
    /// A channel.
    ChannelDefinition(ChannelDefinition),
    /// Org settings.
    OrgSettings(OrgSettings),
}

/// One versioned change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct ConfigChange {
    /// What is changed, e.g. `rule/<id>`.
    pub key: String,
    /// Increases per (org_id, key).
    pub version: i64,
    /// Upsert or delete.
    pub op: ConfigOp,
    /// Who changed it.
    pub actor: Actor,
    /// Why.
    pub reason: Option<String>,
    /// The item.
    pub change: ConfigItem,
}

impl Payload for ConfigChange {
    const TOPIC: Topic = Topic::ConfigChanges;
    const RECORD: &'static str = "ConfigChanged";
}
