//! `audit.events`: who did what to which entity (`audit/events.avsc`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use topics::Topic;

use crate::{
    event::Payload,
    payload::common::{Actor, ActorType, EntityRef, avro_enum},
    values::Timestamp,
};

avro_enum!(
    /// Kind of audited action.
    AuditCategory {
        /// Data was changed, dropped or quarantined.
        Data = "data",
        /// Configuration changed.
        Config = "config",
        /// Access decisions.
        Access = "access",
        /// Platform operations.
        System = "system",
    }
);

avro_enum!(
    /// Result of the action.
    Outcome {
        /// Done.
        Success = "success",
        /// Attempted and failed.
        Failure = "failure",
        /// Refused.
        Denied = "denied",
    }
);

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct AuditEvent {
    /// Dotted verb, e.g. `row.quarantined`.
    pub action: String,
    /// Category.
    pub category: AuditCategory,
    /// Who.
    pub actor: Actor,
    /// On what.
    pub entity: EntityRef,
    /// Result.
    pub outcome: Outcome,
    /// When.
    pub occurred_at: Timestamp,
    /// Why.
    pub reason: Option<String>,
    /// Previous state (JSON, PII removed).
    pub before: Option<String>,
    /// New state (JSON, PII removed).
    pub after: Option<String>,
    /// Details.
    pub details: BTreeMap<String, String>,
}

impl AuditEvent {
    /// A decision a stage made about a data row (`row.quarantined`, `row.duplicate_dropped`):
    /// the stage (its consumer group) is the actor, the outcome a success.
    pub fn data_decision(
        stage: &str,
        action: &str,
        entity: EntityRef,
        occurred_at: Timestamp,
        reason: String,
        details: BTreeMap<String, String>,
    ) -> AuditEvent {
        AuditEvent {
            action: action.to_owned(),
            category: AuditCategory::Data,
            actor: Actor {
                actor_type: ActorType::Service,
                actor_id: stage.to_owned(),
                display_name: None,
            },
            entity,
            outcome: Outcome::Success,
            occurred_at,
            reason: Some(reason),
            before: None,
            after: None,
            details,
        }
    }
}

impl Payload for AuditEvent {
    const TOPIC: Topic = Topic::AuditEvents;
    const RECORD: &'static str = "AuditEventLogged";
}
