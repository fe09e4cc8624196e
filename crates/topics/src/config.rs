//! The model of `topic-config.yaml`: topics, their DLQ side topics and the registry settings.

use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
    sync::LazyLock,
};

use serde::Deserialize;

use crate::duration::Retention;

/// The text of `topic-config.yaml` as built into this binary.
pub const EMBEDDED_YAML: &str = include_str!("../../../topic-config.yaml");

/// A `topic-config.yaml` that cannot be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path that was read.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML does not match the model.
    #[error("invalid topic configuration: {0}")]
    Parse(#[from] serde_yaml_ng::Error),
    /// The YAML parses but breaks a rule (duplicate topic, zero partitions, ...).
    #[error("invalid topic configuration: {0}")]
    Invalid(String),
}

/// The whole `topic-config.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// Schema registry settings.
    pub schema_registry: RegistrySettings,
    /// Dead-letter side topic settings.
    pub dlq: DlqSettings,
    /// Every topic, in the order of the file.
    pub topics: Vec<TopicSpec>,
}

/// The `schema_registry:` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySettings {
    /// Default registry URL (overridden by `--schema-registry-url`).
    pub url: String,
    /// Compatibility level every subject is set to (`BACKWARD` per the spec).
    pub compatibility: String,
    /// Whether producers register their schema on first use.
    pub auto_register: bool,
    /// Subject naming: `topic_name` = `<topic>-value`.
    #[serde(default = "default_strategy")]
    pub subject_strategy: String,
}

fn default_strategy() -> String {
    "topic_name".to_owned()
}

/// The `dlq:` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqSettings {
    /// Appended to a topic's name to get its DLQ (`.dlq`).
    pub suffix: String,
    /// Retention of every DLQ topic (14 days per the spec).
    pub retention: Retention,
}

/// What a topic's records are keyed (and partitioned) by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyField {
    /// The envelope's `org_id`.
    OrgId,
    /// The ETL run's `pipeline_id`.
    PipelineId,
}

impl KeyField {
    /// The field name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyField::OrgId => "org_id",
            KeyField::PipelineId => "pipeline_id",
        }
    }
}

/// Kafka's `cleanup.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupPolicy {
    /// Delete old segments by retention.
    Delete,
    /// Keep the latest record per key.
    Compact,
    /// Both.
    #[serde(rename = "compact,delete")]
    CompactDelete,
}

impl CleanupPolicy {
    /// The value of Kafka's `cleanup.policy` topic setting.
    pub fn kafka_value(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }
}

/// One topic of the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// Broker name, `{domain}.{entity}.{action}`.
    pub name: String,
    /// What flows on it.
    #[serde(default)]
    pub description: String,
    /// Partition count.
    pub partitions: u32,
    /// Replication factor in production (capped at the broker count by `pipelinectl`).
    pub replication_factor: u16,
    /// `retention.ms`.
    pub retention: Retention,
    /// `cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// The field records are keyed and partitioned by.
    pub key: KeyField,
    /// Value schema file, relative to `schemas/`: major version 1, subject `<topic>-value`.
    pub value_schema: String,
    /// Later major versions produced beside the first on the same topic (a breaking change),
    /// by major number (2, 3, …): schema files relative to `schemas/`, each registered under
    /// its own record-name subject `<topic>-<record full name>` (ARCHITECTURE.md, "Schema
    /// evolution").
    #[serde(default)]
    pub value_schema_majors: BTreeMap<u32, String>,
    /// Roles that write the topic.
    #[serde(default)]
    pub producers: Vec<String>,
    /// Consumer groups that read the topic; a topic with any has a DLQ.
    #[serde(default)]
    pub consumer_groups: Vec<String>,
}

impl TopicSpec {
    /// Whether the topic is consumed, and so has a `.dlq` side topic.
    pub fn has_dlq(&self) -> bool {
        !self.consumer_groups.is_empty()
    }

    /// The schema registry subject of the topic's values (`<topic>-value`).
    pub fn value_subject(&self) -> String {
        format!("{}-value", self.name)
    }
}

static EMBEDDED: LazyLock<TopicConfig> = LazyLock::new(|| {
    TopicConfig::parse(EMBEDDED_YAML).expect("the embedded topic-config.yaml is checked by tests")
});

impl TopicConfig {
    /// The configuration built into this binary.
    pub fn embedded() -> &'static TopicConfig {
        &EMBEDDED
    }

    /// Parse and validate a configuration text.
    pub fn parse(yaml: &str) -> Result<TopicConfig, ConfigError> {
        let cfg: TopicConfig = serde_yaml_ng::from_str(yaml)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read, parse and validate a configuration file.
    pub fn load(path: &Path) -> Result<TopicConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        TopicConfig::parse(&text)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.dlq.suffix.is_empty() {
            return invalid("dlq.suffix must not be empty".into());
        }
        let mut seen = HashSet::new();
        for t in &self.topics {
            if !seen.insert(t.name.as_str()) {
                return invalid(format!("topic {} is listed twice", t.name));
            }
            if t.name.ends_with(&self.dlq.suffix) {
                return invalid(format!(
                    "topic {} ends with the DLQ suffix {}; DLQ topics are derived",
                    t.name, self.dlq.suffix
                ));
            }
            if t.partitions == 0 || t.replication_factor == 0 {
                return invalid(format!(
                    "topic {} needs at least one partition and one replica",
                    t.name
                ));
            }
            if !t
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return invalid(format!(
                    "topic name {:?} has characters Kafka refuses",
                    t.name
                ));
            }
            if t.value_schema.is_empty() {
                return invalid(format!("topic {} has no value_schema", t.name));
            }
            if let Some((major, _)) = t
                .value_schema_majors
                .iter()
                .find(|(major, file)| **major < 2 || file.is_empty())
            {
                return invalid(format!(
                    "topic {}: value_schema_majors {major} must be 2 or more and name a file \
                     (major 1 is value_schema)",
                    t.name
                ));
            }
        }
        Ok(())
    }

    /// A topic by name (DLQ topics are not listed; see [`TopicConfig::dlq_name`]).
    pub fn topic(&self, name: &str) -> Option<&TopicSpec> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// The DLQ side topic of `topic`.
    pub fn dlq_name(&self, topic: &str) -> String {
        format!("{topic}{}", self.dlq.suffix)
    }

    /// The source topic of a DLQ topic name, if it is one.
    pub fn dlq_source<'a>(&self, dlq_topic: &'a str) -> Option<&'a str> {
        dlq_topic.strip_suffix(self.dlq.suffix.as_str())
    }

    /// Every topic the platform needs on a broker: the configured topics and their DLQs,
    /// as `(name, partitions, retention, cleanup policy)`.
    pub fn broker_topics(&self) -> Vec<(String, u32, Retention, CleanupPolicy)> {
        let mut out = Vec::new();
        for t in &self.topics {
            out.push((t.name.clone(), t.partitions, t.retention, t.cleanup_policy));
            if t.has_dlq() {
                out.push((
                    self.dlq_name(&t.name),
                    t.partitions,
                    self.dlq.retention,
                    CleanupPolicy::Delete,
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_consumed_topic_has_a_dlq_with_14_days() {
        let cfg = TopicConfig::embedded();
        let all = cfg.broker_topics();
        for t in cfg.topics.iter().filter(|t| t.has_dlq()) {
            let dlq = all.iter().find(|(n, ..)| *n == format!("{}.dlq", t.name));
            let (_, partitions, retention, _) = dlq.expect("dlq listed");
            assert_eq!(*partitions, t.partitions);
            assert_eq!(retention.as_millis(), 14 * 86_400_000);
        }
        // etl.execution has no consumer group in the spec, so no DLQ.
        assert!(!all.iter().any(|(n, ..)| n == "etl.execution.dlq"));
        assert_eq!(
            cfg.dlq_source("gold.data.ready.dlq"),
            Some("gold.data.ready")
        );
    }

    #[test]
    fn rejects_duplicates_zero_partitions_and_unknown_fields() {
        let base = "schema_registry: {url: x, compatibility: BACKWARD, auto_register: true}\n\
                    dlq: {suffix: .dlq, retention: 14d}\n";
        let topic = |name: &str, parts: u32| {
            format!(
                "  - {{name: {name}, partitions: {parts}, replication_factor: 1, retention: 1d, \
                 cleanup_policy: delete, key: org_id, value_schema: a.avsc}}\n"
            )
        };
        let dup = format!("{base}topics:\n{}{}", topic("a.b.c", 1), topic("a.b.c", 1));
        assert!(
            matches!(TopicConfig::parse(&dup), Err(ConfigError::Invalid(m)) if m.contains("twice"))
        );
        let zero = format!("{base}topics:\n{}", topic("a.b.c", 0));
        assert!(matches!(
            TopicConfig::parse(&zero),
            Err(ConfigError::Invalid(_))
        ));
        let dlq = format!("{base}topics:\n{}", topic("a.b.dlq", 1));
        assert!(matches!(
            TopicConfig::parse(&dlq),
            Err(ConfigError::Invalid(_))
        ));
        let major1 = format!(
            "{base}topics:\n  - {{name: a.b.c, partitions: 1, replication_factor: 1, retention: 1d, \
             cleanup_policy: delete, key: org_id, value_schema: a.avsc, \
             value_schema_majors: {{1: b.avsc}}}}\n"
        );
        assert!(
            matches!(TopicConfig::parse(&major1), Err(ConfigError::Invalid(m)) if m.contains("major 1"))
        );
        let unknown = format!("{base}topics: []\nextra: 1\n");
        assert!(matches!(
            TopicConfig::parse(&unknown),
            Err(ConfigError::Parse(_))
        ));
        let ok = format!("{base}topics:\n{}", topic("a.b.c", 3));
        assert_eq!(
            TopicConfig::parse(&ok).expect("valid").topics[0].partitions,
            3
        );
    }
}
