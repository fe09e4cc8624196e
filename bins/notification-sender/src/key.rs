//! The per-alert-per-channel idempotency key: a UUID v5 of the alert's id, state and firing
//! time and the channel id. A redelivered alert (a replay after a crash, a duplicate record,
//! the rule-evaluator emitting the same transition again) maps to the same key, so it is not
//! sent twice; the same alert firing again after its cooldown has a new `fired_at` and so a
//! new key, and is a new notification. Peers receive the key (HTTP `Idempotency-Key`,
//! e-mail `Message-ID`) so they can drop a repeat the sender could not avoid.

use envelope::payload::alerts::{AlertState, AlertV2};
use uuid::Uuid;

/// The namespace of notification keys (a UUID v5 of the stage's name in the OID namespace),
/// so they never collide with other adpipe v5 ids.
fn namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, b"adpipe.notification-sender")
}

/// The idempotency key of delivering `alert` to `channel_id`.
///
/// The name hashed is the alert id (16 bytes), the state (1 byte), `fired_at` in
/// milliseconds since the epoch (8 bytes, big-endian) and then the channel id: the fixed-width
/// prefix keeps every combination distinct.
pub fn idempotency_key(alert: &AlertV2, channel_id: &str) -> Uuid {
    let mut name = Vec::with_capacity(25 + channel_id.len());
    name.extend_from_slice(alert.alert_id.0.as_bytes());
    name.push(match alert.state {
        AlertState::Firing => 0,
        AlertState::Resolved => 1,
    });
    name.extend_from_slice(&alert.fired_at.millis().to_be_bytes());
    name.extend_from_slice(channel_id.as_bytes());
    Uuid::new_v5(&namespace(), &name)
}

/// The e-mail `Message-ID` of the delivery with `key` (without the angle brackets).
pub fn message_id(key: Uuid) -> String {
    format!("{key}@notification-sender.adpipe")
}

#[cfg(test)]
mod tests {
    use envelope::{Id, Timestamp};

    use super::*;
    use crate::render::tests::alert;

    #[test]
    fn same_alert_and_channel_give_the_same_key() {
        let a = alert();
        let again = a.clone();
        assert_eq!(idempotency_key(&a, "w1"), idempotency_key(&again, "w1"));
        // Fields outside the key (the message, the gold event) do not change it.
        let mut reworded = a.clone();
        reworded.message = "other words".into();
        reworded.gold_event_id = Id::new();
        assert_eq!(idempotency_key(&a, "w1"), idempotency_key(&reworded, "w1"));
    }

    #[test]
    fn channel_state_firing_time_and_alert_each_change_the_key() {
        let a = alert();
        let base = idempotency_key(&a, "w1");
        assert_ne!(base, idempotency_key(&a, "w2"));
        let mut resolved = a.clone();
        resolved.state = AlertState::Resolved;
        assert_ne!(base, idempotency_key(&resolved, "w1"));
        let mut later = a.clone();
        later.fired_at = Timestamp::from_millis(a.fired_at.millis() + 1).expect("time");
        assert_ne!(base, idempotency_key(&later, "w1"));
        let mut other = a.clone();
        other.alert_id = Id::new();
        assert_ne!(base, idempotency_key(&other, "w1"));
    }

    #[test]
    fn keys_are_v5_and_message_ids_carry_them() {
        let key = idempotency_key(&alert(), "e1");
        assert_eq!(key.get_version_num(), 5);
        assert_eq!(message_id(key), format!("{key}@notification-sender.adpipe"));
    }
}
