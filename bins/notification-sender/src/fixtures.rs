//! Alerts for the notification sender's tests and benchmarks.

use envelope::{
    Event, Id, Ratio, Source, Timestamp,
    payload::{
        alerts::{Alert, AlertState},
        common::{Comparator, EntityRef, EntityType, Metric, Severity},
    },
};

fn source(service: &str) -> Source {
    Source {
        service: service.into(),
        instance: "notify-test".into(),
    }
}

/// The `n`-th firing alert of `org` (pacing below 80 % on campaign `c<n>`), for `channels`
/// (ids; empty: every enabled channel of the org).
pub fn alert(org: i64, n: i64, channels: &[&str]) -> Event<Alert> {
    Event::new(
        org,
        source("rule-evaluator"),
        Alert {
            alert_id: Id::new(),
            rule_id: format!("rule-{n}"),
            rule_name: "Pacing below 80 %".into(),
            state: AlertState::Firing,
            severity: Severity::Warning,
            metric: Metric::PacingRate,
            comparator: Comparator::Lt,
            threshold: Ratio::from_unscaled(800_000).expect("ratio"),
            observed: Some(Ratio::from_unscaled(700_000 + n).expect("ratio")),
            baseline: None,
            window: "flight".into(),
            entity: EntityRef {
                entity_type: EntityType::Campaign,
                entity_id: format!("c{n}"),
                name: None,
            },
            campaign_id: format!("c{n}"),
            period_label: "2026-11".into(),
            dedupe_key: format!("{org}/rule-{n}/c{n}"),
            cooldown_seconds: 3_600,
            fired_at: Timestamp::from_millis(1_795_000_000_000 + n * 1_000).expect("time"),
            channels: channels.iter().map(|c| (*c).to_owned()).collect(),
            message: format!("Pacing {n} is below 80 %"),
            gold_event_id: Id::new(),
        },
    )
}
