//! What a notification says: the generic webhook's JSON document, the Slack-compatible
//! `{"text": …}`, the e-mail's subject and body and the in-app title and message. Rendering
//! sees the alert and its org only — never the channel — so no target (URL, e-mail address)
//! or secret can end up in a message. The alert's own `message` is free of PII by contract
//! (see `rules/alerts.avsc`).

use envelope::payload::alerts::{AlertState, AlertV2};
use serde_json::{Value, json};
use uuid::Uuid;

/// A one-line title: `[critical] Pacing below 80 % firing — campaign c1`.
pub fn title(alert: &AlertV2) -> String {
    let state = match alert.state {
        AlertState::Firing => "firing",
        AlertState::Resolved => "resolved",
    };
    format!(
        "[{}] {} {} — campaign {}",
        alert.severity, alert.rule_name, state, alert.campaign_id
    )
}

/// The plain-text body: the alert's summary and the values that fired it.
pub fn text(org_id: i64, alert: &AlertV2) -> String {
    let mut out = format!("{}\n{}\n\n", title(alert), alert.message);
    let observed = alert
        .observed
        .map_or_else(|| "n/a".to_owned(), |v| v.to_string());
    out.push_str(&format!(
        "org: {org_id}\nrule: {} ({})\nentity: {} {}\nperiod: {}\nmetric: {} {} {} (observed {observed}",
        alert.rule_name,
        alert.rule_id,
        alert.entity.entity_type,
        alert.entity.entity_id,
        alert.period_label,
        alert.metric,
        alert.threshold.comparator,
        alert.threshold.value,
    ));
    if let Some(baseline) = alert.baseline {
        out.push_str(&format!(", baseline {baseline}"));
    }
    out.push_str(&format!(
        ")\nwindow: {}\nfired at: {}\nalert: {}\n",
        alert.window, alert.fired_at, alert.alert_id
    ));
    out
}

/// The generic webhook's JSON document: the alert with its org and idempotency key.
pub fn webhook_json(org_id: i64, alert: &AlertV2, key: Uuid) -> Value {
    json!({
        "idempotency_key": key.to_string(),
        "org_id": org_id,
        "alert_id": alert.alert_id.to_string(),
        "rule_id": alert.rule_id,
        "rule_name": alert.rule_name,
        "state": alert.state.as_str(),
        "severity": alert.severity.as_str(),
        "metric": alert.metric.as_str(),
        "comparator": alert.threshold.comparator.as_str(),
        "threshold": alert.threshold.value.to_string(),
        "observed": alert.observed.map(|v| v.to_string()),
        "baseline": alert.baseline.map(|v| v.to_string()),
        "window": alert.window,
        "entity": {
            "entity_type": alert.entity.entity_type.as_str(),
            "entity_id": alert.entity.entity_id,
            "name": alert.entity.name,
        },
        "campaign_id": alert.campaign_id,
        "period_label": alert.period_label,
        "dedupe_key": alert.dedupe_key,
        "cooldown_seconds": alert.cooldown_seconds,
        "fired_at": alert.fired_at.to_string(),
        "message": alert.message,
        "gold_event_id": alert.gold_event_id.to_string(),
    })
}

/// A Slack incoming-webhook document: `{"text": …}` (mrkdwn title line, then the summary).
pub fn slack_json(org_id: i64, alert: &AlertV2) -> Value {
    json!({ "text": format!("*{}*\n{}\norg {org_id} · period {} · alert {}",
        title(alert), alert.message, alert.period_label, alert.alert_id) })
}

/// The e-mail's subject.
pub fn email_subject(alert: &AlertV2) -> String {
    format!("[adpipe] {}", title(alert))
}

#[cfg(test)]
pub(crate) mod tests {
    use envelope::{
        Id, Ratio, Timestamp,
        payload::{
            alerts::Threshold,
            common::{Comparator, EntityRef, EntityType, Metric, Severity},
        },
    };

    use super::*;

    /// An alert for tests.
    pub(crate) fn alert() -> AlertV2 {
        AlertV2 {
            alert_id: Id::new(),
            rule_id: "pacing-low".into(),
            rule_name: "Pacing below 80 %".into(),
            state: AlertState::Firing,
            severity: Severity::Critical,
            metric: Metric::PacingRate,
            threshold: Threshold {
                comparator: Comparator::Lt,
                value: Ratio::from_unscaled(800_000).expect("ratio"),
            },
            observed: Some(Ratio::from_unscaled(712_500).expect("ratio")),
            baseline: None,
            window: "flight".into(),
            entity: EntityRef {
                entity_type: EntityType::Campaign,
                entity_id: "c1".into(),
                name: None,
            },
            campaign_id: "c1".into(),
            period_label: "2026-11".into(),
            dedupe_key: "7/pacing-low/c1".into(),
            cooldown_seconds: 3_600,
            fired_at: Timestamp::from_millis(1_795_000_000_000).expect("time"),
            channels: vec![
                "ops@example.test".into(),
                "https://hooks.example.test/x".into(),
            ],
            message: "Pacing 71.25 % is below 80 %".into(),
            gold_event_id: Id::new(),
        }
    }

    #[test]
    fn messages_carry_the_alert_and_no_target_or_secret() {
        let a = alert();
        let key = crate::key::idempotency_key(&a, "w1");
        let rendered = [
            title(&a),
            text(7, &a),
            webhook_json(7, &a, key).to_string(),
            slack_json(7, &a).to_string(),
            email_subject(&a),
        ];
        // Targets and secrets a channel might hold; rendering never sees them, and the
        // alert's channel list (ids, here filled with target-like text) is not rendered.
        for forbidden in ["example.test", "@", "hooks.", "Bearer", "s3cr3t"] {
            for r in &rendered {
                assert!(!r.contains(forbidden), "{forbidden:?} in {r}");
            }
        }
        for r in &rendered[..4] {
            assert!(r.contains("Pacing below 80 %"), "{r}");
        }
        assert!(text(7, &a).contains("71.2500"));
        let w = webhook_json(7, &a, key);
        assert_eq!(w["idempotency_key"], key.to_string());
        assert_eq!(w["org_id"], 7);
        assert_eq!(w["state"], "firing");
        assert_eq!(w["threshold"], "80.0000");
        assert!(
            slack_json(7, &a)["text"]
                .as_str()
                .is_some_and(|t| t.contains("firing"))
        );
    }
}
