//! Audit events stages emit for the configuration they apply: one function, so every stage
//! that follows `config.changes` writes the same `config.applied` record.
//!
//! Emit it with [`crate::Outputs::emit`] while processing the change: the audit event is then
//! caused by the change (same org and correlation id, `causation_id` = the change's
//! `event_id`) and its own `event_id` is derived from the change's, so a redelivered change
//! yields the same audit event, which the audit writer stores once. The stage must list
//! `Topic::AuditEvents` in its [`crate::Processor::outputs`].

use std::collections::BTreeMap;

use envelope::{
    Event,
    payload::{
        audit::{AuditCategory, AuditEvent, Outcome},
        common::{EntityRef, EntityType},
        config::{ConfigChange, ConfigItem},
    },
};

/// The action of [`config_applied`].
pub const CONFIG_APPLIED: &str = "config.applied";

/// The kind of entity a configuration item is.
pub fn config_entity_type(item: &ConfigItem) -> EntityType {
    match item {
        ConfigItem::Booking(_) => EntityType::Booking,
        ConfigItem::RuleDefinition(_) => EntityType::Rule,
        ConfigItem::ChannelDefinition(_) => EntityType::Channel,
        ConfigItem::OrgSettings(_) => EntityType::Organization,
    }
}

/// The audit event of `stage` (its consumer group name) applying the configuration change
/// `change`: action `config.applied`, category `config`, the change's actor (who asked for
/// it), the config key as the entity, the change's reason, and its time as `occurred_at`.
/// `details` name the stage, the key's version, the operation and the change's event id.
/// The changed item itself is not copied (`before`/`after` stay empty): it may hold PII (a
/// channel's target), and `config.changes` keeps it.
pub fn config_applied(stage: &str, change: &Event<ConfigChange>) -> AuditEvent {
    let c = &change.payload;
    let details = BTreeMap::from([
        ("stage".to_owned(), stage.to_owned()),
        ("version".to_owned(), c.version.to_string()),
        ("op".to_owned(), c.op.as_str().to_owned()),
        (
            "config_event_id".to_owned(),
            change.metadata.event_id.to_string(),
        ),
    ]);
    AuditEvent {
        action: CONFIG_APPLIED.to_owned(),
        category: AuditCategory::Config,
        actor: c.actor.clone(),
        entity: EntityRef {
            entity_type: config_entity_type(&c.change),
            entity_id: c.key.clone(),
            name: None,
        },
        outcome: Outcome::Success,
        occurred_at: change.metadata.timestamp,
        reason: c.reason.clone(),
        before: None,
        after: None,
        details,
    }
}

#[cfg(test)]
mod tests {
    use envelope::{Codec, Source, payload::config::ConfigOp};

    use super::*;
    use crate::{Outputs, testing::config_change};

    #[test]
    fn config_applied_keeps_the_changes_actor_key_org_and_correlation() {
        let mut change = config_change(42, "org");
        change.payload.op = ConfigOp::Delete;
        change.payload.reason = Some("cleanup".into());
        let audit = config_applied("gold-processor", &change);
        assert_eq!(audit.action, "config.applied");
        assert_eq!(audit.category, AuditCategory::Config);
        assert_eq!(audit.actor, change.payload.actor);
        assert_eq!(audit.entity.entity_type, EntityType::Organization);
        assert_eq!(audit.entity.entity_id, "org");
        assert_eq!(audit.occurred_at, change.metadata.timestamp);
        assert_eq!(audit.reason.as_deref(), Some("cleanup"));
        assert_eq!(audit.details["op"], "delete");
        assert_eq!(audit.details["stage"], "gold-processor");
        assert_eq!(
            audit.details["config_event_id"],
            change.metadata.event_id.to_string()
        );

        // Emitted while processing the change: same org and correlation, caused by it, and
        // the same event id when the change is processed again.
        let codec = Codec::offline();
        let source = Source {
            service: "gold-processor".into(),
            instance: "t".into(),
        };
        let ids: Vec<_> = (0..2)
            .map(|_| {
                let mut out = Outputs::new(&codec, &change.metadata, &source);
                out.emit(config_applied("gold-processor", &change))
                    .expect("encodes");
                let r = out.into_records().remove(0);
                let e: Event<AuditEvent> = codec.decode_known(&r.value).expect("decodes");
                assert_eq!(e.metadata.org_id, 42);
                assert_eq!(e.metadata.correlation_id, change.metadata.correlation_id);
                assert_eq!(e.metadata.causation_id, Some(change.metadata.event_id));
                e.metadata.event_id
            })
            .collect();
        assert_eq!(ids[0], ids[1]);
    }
}
