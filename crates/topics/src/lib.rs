//! adpipe's topics: the typed model of `topic-config.yaml`, the generated [`Topic`] and
//! [`ConsumerGroup`] names, and the `org_id` partitioner every producer uses.
//!
//! This crate does no I/O beyond reading a config file the caller names; the default
//! configuration is embedded at build time so binaries need no file at run time.

mod config;
mod duration;
mod partition;

pub use config::{
    CleanupPolicy, ConfigError, DlqSettings, EMBEDDED_YAML, KeyField, RegistrySettings,
    TopicConfig, TopicSpec,
};
pub use duration::{DurationError, Retention, parse_duration};
pub use partition::{PartitionKey, java_long_hash, java_string_hash, partition_for};

include!(concat!(env!("OUT_DIR"), "/generated.rs"));

impl Topic {
    /// The topic's settings from the embedded `topic-config.yaml`.
    pub fn spec(self) -> &'static TopicSpec {
        TopicConfig::embedded()
            .topic(self.name())
            .expect("generated topic names come from the embedded config")
    }

    /// The dead-letter side topic of this topic, `{topic}.dlq`.
    pub fn dlq(self) -> String {
        TopicConfig::embedded().dlq_name(self.name())
    }

    /// Look a topic up by its broker name.
    pub fn from_name(name: &str) -> Option<Topic> {
        Topic::ALL.iter().copied().find(|t| t.name() == name)
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl ConsumerGroup {
    /// The topics this group consumes, per `topic-config.yaml`.
    pub fn inputs(self) -> Vec<Topic> {
        Topic::ALL
            .iter()
            .copied()
            .filter(|t| t.spec().consumer_groups.iter().any(|g| g == self.name()))
            .collect()
    }

    /// Look a group up by its id.
    pub fn from_name(name: &str) -> Option<ConsumerGroup> {
        ConsumerGroup::ALL
            .iter()
            .copied()
            .find(|g| g.name() == name)
    }
}

impl std::fmt::Display for ConsumerGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_match_the_spec_table() {
        let names: Vec<&str> = Topic::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(
            names,
            [
                "connector.data.raw",
                "bronze.data.cleaned",
                "silver.data.processed",
                "gold.data.ready",
                "rules.alerts.triggered",
                "config.changes",
                "etl.execution",
                "audit.events",
            ]
        );
        assert_eq!(
            Topic::SilverDataProcessed.dlq(),
            "silver.data.processed.dlq"
        );
        assert_eq!(
            Topic::from_name("gold.data.ready"),
            Some(Topic::GoldDataReady)
        );
        assert_eq!(Topic::from_name("gold.data.ready.dlq"), None);
    }

    #[test]
    fn consumer_groups_of_the_spec() {
        let groups: Vec<&str> = ConsumerGroup::ALL.iter().map(|g| g.name()).collect();
        assert_eq!(
            groups,
            [
                "audit-writer",
                "bronze-processor",
                "gold-processor",
                "notification-sender",
                "rule-evaluator",
                "silver-processor",
            ]
        );
        assert_eq!(
            ConsumerGroup::GoldProcessor.inputs(),
            [Topic::SilverDataProcessed, Topic::ConfigChanges]
        );
        assert_eq!(
            ConsumerGroup::BronzeProcessor.inputs(),
            [Topic::ConnectorDataRaw]
        );
    }

    #[test]
    fn spec_values_from_the_table() {
        let raw = Topic::ConnectorDataRaw.spec();
        assert_eq!(raw.partitions, 12);
        assert_eq!(raw.replication_factor, 3);
        assert_eq!(raw.retention, Retention::Millis(7 * 24 * 3600 * 1000));
        assert_eq!(raw.key, KeyField::OrgId);
        assert_eq!(Topic::EtlExecution.spec().key, KeyField::PipelineId);
        assert_eq!(
            Topic::AuditEvents.spec().retention.as_millis(),
            90 * 86_400_000
        );
        assert_eq!(Topic::RulesAlertsTriggered.spec().partitions, 6);
        let cfg = TopicConfig::embedded();
        assert_eq!(cfg.dlq.retention.as_millis(), 14 * 86_400_000);
        assert_eq!(cfg.schema_registry.compatibility, "BACKWARD");
        assert!(cfg.schema_registry.auto_register);
    }
}
