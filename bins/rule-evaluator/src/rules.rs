//! The rule engine: rules as data, evaluated against gold aggregates, with one open alert per
//! org/rule/entity, a cooldown against repeats, and a resolve when the condition clears.
//!
//! # Rules
//!
//! A rule compares one [`Metric`] of an aggregate with a threshold:
//!
//! | comparator | holds when |
//! | --- | --- |
//! | `lt`, `lte`, `gt`, `gte`, `eq`, `ne` | `value <op> threshold` |
//! | `above_trailing_avg_pct` | `value > avg × (1 + threshold / 100)`, `avg` = mean of the previous days' values in the window |
//! | `drop_pct` | `value < avg × (1 - threshold / 100)` |
//!
//! The window picks which aggregates a rule reads: `daily`, `weekly` or `monthly` for that
//! grain; `<n>d` (e.g. `7d`) for the trailing comparators, which read daily aggregates and
//! average the same entity's values of the `n` days before the aggregate's day (at least one
//! such day is needed; corrections replace a day's value). A metric that is undefined (a
//! guarded division) is not evaluated: it neither fires nor resolves.
//!
//! # Alert lifecycle per (org, rule, entity)
//!
//! - The condition starts holding: **fire** a new alert, unless the previous notification of
//!   this key is younger than the cooldown (then the alert is open but silent).
//! - It keeps holding: **fire again** (same alert id) once the cooldown has passed since the
//!   last notification, otherwise nothing.
//! - It stops holding: **resolve**, if the open alert was notified; nothing otherwise.
//!
//! Time is the aggregate's `as_of`, so replaying the same input gives the same decisions.
//! State is kept per org: one org's rules never see another org's aggregates.

use std::collections::{BTreeMap, HashMap};

use envelope::{
    Date, Id, Ratio,
    payload::{
        alerts::{Alert, AlertState},
        common::{Comparator, EntityRef, EntityType, Metric, Severity},
        config::RuleDefinition,
        gold::{AggregateReady, Grain},
    },
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// How many days of history are kept per entity and metric for trailing rules.
const HISTORY_DAYS: i64 = 62;

/// Which aggregates a rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Aggregates of one grain.
    Grain(Grain),
    /// Daily aggregates, compared with the average of the previous `n` days.
    TrailingDays(u32),
}

impl std::str::FromStr for Window {
    type Err = RuleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "daily" => Ok(Window::Grain(Grain::Daily)),
            "weekly" => Ok(Window::Grain(Grain::Weekly)),
            "monthly" => Ok(Window::Grain(Grain::Monthly)),
            other => other
                .strip_suffix('d')
                .and_then(|n| n.parse::<u32>().ok())
                .filter(|n| (1..=HISTORY_DAYS as u32).contains(n))
                .map(Window::TrailingDays)
                .ok_or_else(|| RuleError::Window(other.to_owned())),
        }
    }
}

/// A rule definition that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The window is not `daily`, `weekly`, `monthly` or `<1..=62>d`.
    #[error("unknown window {0:?}: expected daily, weekly, monthly or <days>d with 1 to 62 days")]
    Window(String),
    /// A trailing comparator with a grain window, or a plain one with a trailing window.
    #[error("{0}")]
    WindowMismatch(String),
    /// A negative cooldown.
    #[error("cooldown must not be negative, got {0} s")]
    Cooldown(i64),
}

/// A usable rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Rule id.
    pub rule_id: String,
    /// Name.
    pub name: String,
    /// Metric tested.
    pub metric: Metric,
    /// Comparator.
    pub comparator: Comparator,
    /// Threshold.
    pub threshold: Decimal,
    /// Which aggregates it reads.
    pub window: Window,
    /// Severity of its alerts.
    pub severity: Severity,
    /// Channels its alerts go to.
    pub channels: Vec<String>,
    /// Seconds between notifications of one alert.
    pub cooldown_seconds: i64,
    /// Whether it is evaluated.
    pub enabled: bool,
    /// Limit to one campaign.
    pub campaign_id: Option<String>,
}

fn is_trailing(c: Comparator) -> bool {
    matches!(c, Comparator::AboveTrailingAvgPct | Comparator::DropPct)
}

impl Rule {
    /// Validate a rule from `config.changes`.
    pub fn from_definition(def: &RuleDefinition) -> Result<Rule, RuleError> {
        let window: Window = def.window.parse()?;
        match (is_trailing(def.comparator), window) {
            (true, Window::Grain(_)) => {
                return Err(RuleError::WindowMismatch(format!(
                    "comparator {} needs a trailing window such as 7d, not {}",
                    def.comparator, def.window
                )));
            }
            (false, Window::TrailingDays(_)) => {
                return Err(RuleError::WindowMismatch(format!(
                    "comparator {} needs a daily, weekly or monthly window, not {}",
                    def.comparator, def.window
                )));
            }
            _ => {}
        }
        if def.cooldown_seconds < 0 {
            return Err(RuleError::Cooldown(def.cooldown_seconds));
        }
        Ok(Rule {
            rule_id: def.rule_id.clone(),
            name: def.name.clone(),
            metric: def.metric,
            comparator: def.comparator,
            threshold: def.threshold.value(),
            window,
            severity: def.severity,
            channels: def.channels.clone(),
            cooldown_seconds: def.cooldown_seconds,
            enabled: def.enabled,
            campaign_id: def.campaign_id.clone(),
        })
    }
}

/// The built-in rules every org starts with (an org's own rule with the same id replaces one).
pub fn default_rules() -> Vec<Rule> {
    let rule = |id: &str, name: &str, metric, comparator, threshold: i64, window, severity| Rule {
        rule_id: id.to_owned(),
        name: name.to_owned(),
        metric,
        comparator,
        threshold: Decimal::from(threshold),
        window,
        severity,
        channels: Vec::new(),
        cooldown_seconds: 6 * 3600,
        enabled: true,
        campaign_id: None,
    };
    vec![
        rule(
            "default.pacing-low",
            "Pacing below 80 %",
            Metric::PacingRate,
            Comparator::Lt,
            80,
            Window::Grain(Grain::Daily),
            Severity::Warning,
        ),
        rule(
            "default.pacing-high",
            "Pacing above 120 %",
            Metric::PacingRate,
            Comparator::Gt,
            120,
            Window::Grain(Grain::Daily),
            Severity::Warning,
        ),
        rule(
            "default.margin-low",
            "Margin below 15 %",
            Metric::MarginPct,
            Comparator::Lt,
            15,
            Window::Grain(Grain::Daily),
            Severity::Critical,
        ),
        rule(
            "default.spend-anomaly",
            "Daily spend 50 % above its 7-day average",
            Metric::Spend,
            Comparator::AboveTrailingAvgPct,
            50,
            Window::TrailingDays(7),
            Severity::Warning,
        ),
        rule(
            "default.quality-drop",
            "Data quality 15 % below its 7-day average",
            Metric::QualityScore,
            Comparator::DropPct,
            15,
            Window::TrailingDays(7),
            Severity::Info,
        ),
    ]
}

/// The value of `metric` in an aggregate, when defined.
pub fn metric_value(agg: &AggregateReady, metric: Metric) -> Option<Decimal> {
    let m = &agg.metrics;
    match metric {
        Metric::PacingRate => m.pacing_rate.map(|v| v.value()),
        Metric::MarginPct => m.margin_pct.map(|v| v.value()),
        Metric::Spend => Some(agg.spend.value()),
        Metric::ProjectedSpend => m.projected_spend.map(|v| v.value()),
        Metric::Impressions => Some(Decimal::from(agg.impressions)),
        Metric::Clicks => Some(Decimal::from(agg.clicks)),
        Metric::Conversions => Some(Decimal::from(agg.conversions)),
        Metric::Cpm => m.cpm.map(|v| v.value()),
        Metric::Ctr => m.ctr.map(|v| v.value()),
        Metric::Cvr => m.cvr.map(|v| v.value()),
        Metric::QualityScore => agg.quality_score_avg.map(|v| v.value()),
    }
}

/// Whether `value` satisfies a plain comparator.
pub fn compare(comparator: Comparator, value: Decimal, threshold: Decimal) -> bool {
    match comparator {
        Comparator::Lt => value < threshold,
        Comparator::Lte => value <= threshold,
        Comparator::Gt => value > threshold,
        Comparator::Gte => value >= threshold,
        Comparator::Eq => value == threshold,
        Comparator::Ne => value != threshold,
        Comparator::AboveTrailingAvgPct | Comparator::DropPct => false,
    }
}

/// Whether `value` deviates from `baseline` as a trailing comparator asks.
pub fn deviates(comparator: Comparator, value: Decimal, baseline: Decimal, pct: Decimal) -> bool {
    let factor = pct / Decimal::ONE_HUNDRED;
    match comparator {
        Comparator::AboveTrailingAvgPct => value > baseline * (Decimal::ONE + factor),
        Comparator::DropPct => value < baseline * (Decimal::ONE - factor),
        _ => false,
    }
}

/// The entity an aggregate is about: its line item, else its campaign.
fn entity_of(agg: &AggregateReady) -> EntityRef {
    match &agg.line_item_id {
        Some(li) => EntityRef {
            entity_type: EntityType::LineItem,
            entity_id: li.clone(),
            name: None,
        },
        None => EntityRef {
            entity_type: EntityType::Campaign,
            entity_id: agg.campaign_id.clone(),
            name: None,
        },
    }
}

/// What the engine remembers of one entity (a campaign or line item of an org): the alert
/// state per rule and the daily metric history the trailing rules average. It is the unit the
/// rule evaluator stores, so it (de)serialises.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EntityState {
    /// Per rule id.
    #[serde(default)]
    alerts: BTreeMap<String, KeyState>,
    /// Per metric name, the value of each day (the last `HISTORY_DAYS` days seen).
    #[serde(default, with = "crate::days")]
    history: crate::days::History,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OpenAlert {
    alert_id: uuid::Uuid,
    firing: bool,
    notified: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct KeyState {
    open: Option<OpenAlert>,
    /// Epoch milliseconds of the last notification.
    last_notified: Option<i64>,
}

/// A rule's verdict on one aggregate.
#[derive(Debug, Clone, Copy)]
struct Evaluation {
    holds: bool,
    observed: Decimal,
    baseline: Option<Decimal>,
}

/// One alert to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The org.
    pub org_id: i64,
    /// The alert, ready for `rules.alerts.triggered`.
    pub alert: Alert,
}

/// The entity an aggregate's state is kept under: org, campaign and line item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityKey {
    /// Org.
    pub org_id: i64,
    /// Campaign.
    pub campaign_id: String,
    /// Line item, for line-item aggregates.
    pub line_item_id: Option<String>,
}

impl EntityKey {
    /// The entity of `agg`, an aggregate of `org_id`.
    pub fn of(org_id: i64, agg: &AggregateReady) -> EntityKey {
        EntityKey {
            org_id,
            campaign_id: agg.campaign_id.clone(),
            line_item_id: agg.line_item_id.clone(),
        }
    }
}

/// An in-memory engine over many entities (tests and tools; the stage keeps each
/// [`EntityState`] in PostgreSQL and calls [`EntityState::evaluate`]).
#[derive(Debug, Default)]
pub struct RuleEngine {
    entities: HashMap<EntityKey, EntityState>,
}

impl RuleEngine {
    /// An engine with no history.
    pub fn new() -> RuleEngine {
        RuleEngine::default()
    }

    /// Evaluate `rules` of `org_id` against one aggregate of that org.
    pub fn evaluate(
        &mut self,
        org_id: i64,
        rules: &[Rule],
        agg: &AggregateReady,
        gold_event_id: Id,
    ) -> Vec<Decision> {
        self.entities
            .entry(EntityKey::of(org_id, agg))
            .or_default()
            .evaluate(org_id, rules, agg, gold_event_id)
    }
}

impl EntityState {
    /// Evaluate `rules` of `org_id` against `agg`, an aggregate of this entity, updating the
    /// alert states and (for daily aggregates) the history.
    pub fn evaluate(
        &mut self,
        org_id: i64,
        rules: &[Rule],
        agg: &AggregateReady,
        gold_event_id: Id,
    ) -> Vec<Decision> {
        let mut out = Vec::new();
        for rule in rules.iter().filter(|r| r.enabled) {
            if rule
                .campaign_id
                .as_ref()
                .is_some_and(|c| *c != agg.campaign_id)
            {
                continue;
            }
            let (holds, observed, baseline) = match rule.window {
                Window::Grain(g) if g == agg.grain => match metric_value(agg, rule.metric) {
                    Some(v) => (compare(rule.comparator, v, rule.threshold), v, None),
                    None => continue,
                },
                Window::TrailingDays(n) if agg.grain == Grain::Daily => {
                    let Some(v) = metric_value(agg, rule.metric) else {
                        continue;
                    };
                    let Some(avg) = self.trailing_average(rule.metric, agg.period_start, n) else {
                        continue;
                    };
                    (
                        deviates(rule.comparator, v, avg, rule.threshold),
                        v,
                        Some(avg),
                    )
                }
                _ => continue,
            };
            let outcome = Evaluation {
                holds,
                observed,
                baseline,
            };
            if let Some(alert) = self.transition(org_id, rule, agg, outcome, gold_event_id) {
                out.push(Decision { org_id, alert });
            }
        }
        if agg.grain == Grain::Daily {
            self.record_history(agg);
        }
        out
    }

    fn trailing_average(&self, metric: Metric, day: Date, days: u32) -> Option<Decimal> {
        let history = self.history.get(&metric.to_string())?;
        let from = day.0 - chrono_days(i64::from(days));
        let values: Vec<Decimal> = history.range(from..day.0).map(|(_, v)| *v).collect();
        if values.is_empty() {
            return None;
        }
        Some(values.iter().sum::<Decimal>() / Decimal::from(values.len()))
    }

    fn record_history(&mut self, agg: &AggregateReady) {
        let oldest = agg.period_start.0 - chrono_days(HISTORY_DAYS);
        for metric in Metric::ALL {
            if let Some(v) = metric_value(agg, *metric) {
                let days = self.history.entry(metric.to_string()).or_default();
                days.insert(agg.period_start.0, v);
                while days.first_key_value().is_some_and(|(d, _)| *d < oldest) {
                    days.pop_first();
                }
            }
        }
    }

    fn transition(
        &mut self,
        org_id: i64,
        rule: &Rule,
        agg: &AggregateReady,
        Evaluation {
            holds,
            observed,
            baseline,
        }: Evaluation,
        gold_event_id: Id,
    ) -> Option<Alert> {
        let entity = entity_of(agg);
        let dedupe_key = format!(
            "{org_id}/{}/{}/{}",
            rule.rule_id, agg.campaign_id, entity.entity_id
        );
        let now = agg.as_of;
        let state = self.alerts.entry(rule.rule_id.clone()).or_default();
        let cooled = state
            .last_notified
            .is_none_or(|t| now.millis() - t >= rule.cooldown_seconds.saturating_mul(1000));
        let firing = state.open.as_ref().is_some_and(|o| o.firing);
        let (alert_state, alert_id) = match (holds, firing) {
            (true, false) => {
                // Derived from what fired it, so evaluating the same input again decides the
                // same alert.
                let name = format!("{dedupe_key}/{gold_event_id}");
                let alert_id = Id(uuid::Uuid::new_v5(
                    &uuid::Uuid::NAMESPACE_OID,
                    name.as_bytes(),
                ));
                state.open = Some(OpenAlert {
                    alert_id: alert_id.0,
                    firing: true,
                    notified: cooled,
                });
                if !cooled {
                    return None;
                }
                (AlertState::Firing, alert_id)
            }
            (true, true) if cooled => {
                let open = state.open.as_mut()?;
                open.notified = true;
                (AlertState::Firing, Id(open.alert_id))
            }
            (false, true) => {
                let open = state.open.take()?;
                if !open.notified {
                    return None;
                }
                (AlertState::Resolved, Id(open.alert_id))
            }
            _ => return None,
        };
        if alert_state == AlertState::Firing {
            state.last_notified = Some(now.millis());
        }
        let verb = if alert_state == AlertState::Firing {
            "fired"
        } else {
            "resolved"
        };
        Some(Alert {
            alert_id,
            rule_id: rule.rule_id.clone(),
            rule_name: rule.name.clone(),
            state: alert_state,
            severity: rule.severity,
            metric: rule.metric,
            comparator: rule.comparator,
            threshold: Ratio::new(rule.threshold).unwrap_or(Ratio::ZERO),
            observed: Ratio::new(observed).ok(),
            baseline: baseline.and_then(|b| Ratio::new(b).ok()),
            window: match rule.window {
                Window::Grain(g) => g.to_string(),
                Window::TrailingDays(n) => format!("{n}d"),
            },
            entity,
            campaign_id: agg.campaign_id.clone(),
            period_label: agg.period_label.clone(),
            dedupe_key,
            cooldown_seconds: rule.cooldown_seconds,
            fired_at: now,
            channels: rule.channels.clone(),
            message: format!(
                "{}: {} {} {} (threshold {}) for campaign {} in {}",
                rule.name,
                rule.metric,
                verb,
                observed.round_dp(2),
                rule.threshold,
                agg.campaign_id,
                agg.period_label
            ),
            gold_event_id,
        })
    }
}

fn chrono_days(n: i64) -> chrono::TimeDelta {
    chrono::TimeDelta::days(n)
}

#[cfg(test)]
mod tests {
    use envelope::{
        Money, Timestamp,
        payload::{
            common::Comparator as C,
            gold::{DerivedMetrics, Trigger},
        },
    };

    use super::*;

    fn day(d: u32) -> Date {
        Date::ymd(2024, 12, d).expect("date")
    }

    /// A daily aggregate of campaign c1 on `d` December, computed at noon + `minutes`.
    fn agg(d: u32, minutes: i64, pacing: Option<&str>, spend: &str) -> AggregateReady {
        let base = Timestamp::from_millis(1_733_011_200_000).expect("ts"); // 2024-12-01T00:00Z
        AggregateReady {
            grain: Grain::Daily,
            period_start: day(d),
            period_end: day(d),
            period_label: format!("2024-12-{d:02}"),
            campaign_id: "c1".into(),
            line_item_id: None,
            impressions: 1000,
            clicks: 10,
            conversions: 1,
            spend: spend.parse().expect("money"),
            rows: 1,
            quality_score_avg: Some("95".parse().expect("q")),
            booking: None,
            metrics: DerivedMetrics {
                pacing_rate: pacing.map(|p| p.parse::<Money>().expect("pacing")),
                ..DerivedMetrics::default()
            },
            as_of: Timestamp::from_millis(
                base.millis() + i64::from(d - 1) * 86_400_000 + 43_200_000 + minutes * 60_000,
            )
            .expect("ts"),
            trigger: Trigger::Update,
        }
    }

    fn rule(comparator: Comparator, threshold: i64, window: Window, cooldown: i64) -> Rule {
        Rule {
            rule_id: "r1".into(),
            name: "test rule".into(),
            metric: if matches!(window, Window::TrailingDays(_)) {
                Metric::Spend
            } else {
                Metric::PacingRate
            },
            comparator,
            threshold: Decimal::from(threshold),
            window,
            severity: Severity::Warning,
            channels: vec!["ops-slack".into()],
            cooldown_seconds: cooldown,
            enabled: true,
            campaign_id: None,
        }
    }

    fn states(decisions: &[Decision]) -> Vec<AlertState> {
        decisions.iter().map(|d| d.alert.state).collect()
    }

    #[test]
    fn each_plain_comparator() {
        let t = Decimal::from(80);
        let (below, at, above) = (Decimal::from(79), Decimal::from(80), Decimal::from(81));
        let cases = [
            (C::Lt, [true, false, false]),
            (C::Lte, [true, true, false]),
            (C::Gt, [false, false, true]),
            (C::Gte, [false, true, true]),
            (C::Eq, [false, true, false]),
            (C::Ne, [true, false, true]),
        ];
        for (c, expected) in cases {
            assert_eq!(
                [
                    compare(c, below, t),
                    compare(c, at, t),
                    compare(c, above, t)
                ],
                expected,
                "{c}"
            );
        }
    }

    #[test]
    fn trailing_comparators() {
        let avg = Decimal::from(100);
        let pct = Decimal::from(50);
        assert!(
            !deviates(C::AboveTrailingAvgPct, Decimal::from(150), avg, pct),
            "exactly +50 % does not fire"
        );
        assert!(deviates(
            C::AboveTrailingAvgPct,
            Decimal::from(151),
            avg,
            pct
        ));
        assert!(
            !deviates(C::DropPct, Decimal::from(50), avg, pct),
            "exactly -50 % does not fire"
        );
        assert!(deviates(C::DropPct, Decimal::from(49), avg, pct));
        assert!(!deviates(C::Lt, Decimal::ZERO, avg, pct));
    }

    #[test]
    fn fires_once_repeats_after_cooldown_and_resolves() {
        let rules = [rule(C::Lt, 80, Window::Grain(Grain::Daily), 3600)];
        let mut e = RuleEngine::new();
        let gold = Id::new();
        let fired = e.evaluate(7, &rules, &agg(1, 0, Some("70"), "10"), gold);
        assert_eq!(states(&fired), [AlertState::Firing]);
        let a = &fired[0].alert;
        assert_eq!(a.dedupe_key, "7/r1/c1/c1");
        assert_eq!(a.observed, Some("70".parse().expect("r")));
        assert_eq!(a.gold_event_id, gold);
        assert_eq!(a.channels, ["ops-slack"]);
        let id = a.alert_id;

        // Still below 80 inside the cooldown (59 minutes later): silent.
        assert!(
            e.evaluate(7, &rules, &agg(1, 59, Some("71"), "10"), gold)
                .is_empty()
        );
        // Exactly at the cooldown boundary (60 minutes): repeats, same alert id.
        let again = e.evaluate(7, &rules, &agg(1, 60, Some("72"), "10"), gold);
        assert_eq!(states(&again), [AlertState::Firing]);
        assert_eq!(again[0].alert.alert_id, id);
        // Clears: resolves the same alert.
        let resolved = e.evaluate(7, &rules, &agg(1, 61, Some("85"), "10"), gold);
        assert_eq!(states(&resolved), [AlertState::Resolved]);
        assert_eq!(resolved[0].alert.alert_id, id);
        // Stays clear: nothing.
        assert!(
            e.evaluate(7, &rules, &agg(1, 62, Some("90"), "10"), gold)
                .is_empty()
        );
    }

    #[test]
    fn refiring_inside_the_cooldown_is_silent_and_so_is_its_resolve() {
        let rules = [rule(C::Lt, 80, Window::Grain(Grain::Daily), 3600)];
        let mut e = RuleEngine::new();
        let g = Id::new();
        assert_eq!(
            states(&e.evaluate(1, &rules, &agg(1, 0, Some("70"), "1"), g)),
            [AlertState::Firing]
        );
        assert_eq!(
            states(&e.evaluate(1, &rules, &agg(1, 10, Some("90"), "1"), g)),
            [AlertState::Resolved]
        );
        // Flaps back 20 minutes after the first notification: open but not notified.
        assert!(
            e.evaluate(1, &rules, &agg(1, 20, Some("70"), "1"), g)
                .is_empty()
        );
        // ...and its resolve is silent too.
        assert!(
            e.evaluate(1, &rules, &agg(1, 30, Some("90"), "1"), g)
                .is_empty()
        );
        // After the cooldown a new breach notifies with a new alert id.
        let later = e.evaluate(1, &rules, &agg(1, 70, Some("70"), "1"), g);
        assert_eq!(states(&later), [AlertState::Firing]);
    }

    #[test]
    fn undefined_metrics_neither_fire_nor_resolve() {
        let rules = [rule(C::Lt, 80, Window::Grain(Grain::Daily), 0)];
        let mut e = RuleEngine::new();
        let g = Id::new();
        assert!(e.evaluate(1, &rules, &agg(1, 0, None, "1"), g).is_empty());
        assert_eq!(
            states(&e.evaluate(1, &rules, &agg(1, 1, Some("10"), "1"), g)),
            [AlertState::Firing]
        );
        assert!(
            e.evaluate(1, &rules, &agg(1, 2, None, "1"), g).is_empty(),
            "no resolve on undefined"
        );
    }

    #[test]
    fn windows_select_their_grain() {
        let weekly = [rule(C::Lt, 80, Window::Grain(Grain::Weekly), 0)];
        let mut e = RuleEngine::new();
        let g = Id::new();
        assert!(
            e.evaluate(1, &weekly, &agg(1, 0, Some("10"), "1"), g)
                .is_empty(),
            "daily aggregate"
        );
        let mut w = agg(1, 0, Some("10"), "1");
        w.grain = Grain::Weekly;
        assert_eq!(states(&e.evaluate(1, &weekly, &w, g)), [AlertState::Firing]);
    }

    #[test]
    fn spend_anomaly_against_the_trailing_average() {
        let rules = [rule(C::AboveTrailingAvgPct, 50, Window::TrailingDays(3), 0)];
        let mut e = RuleEngine::new();
        let g = Id::new();
        // No history yet: nothing to compare with.
        assert!(e.evaluate(1, &rules, &agg(1, 0, None, "100"), g).is_empty());
        assert!(e.evaluate(1, &rules, &agg(2, 0, None, "100"), g).is_empty());
        // A correction of day 2 replaces its value (140 is within 50 % of day 1's 100).
        assert!(e.evaluate(1, &rules, &agg(2, 5, None, "140"), g).is_empty());
        // Day 3: avg(100, 140) = 120; 180 is exactly +50 % and does not fire, 181 does.
        assert!(e.evaluate(1, &rules, &agg(3, 0, None, "180"), g).is_empty());
        let fired = e.evaluate(1, &rules, &agg(3, 1, None, "181"), g);
        assert_eq!(states(&fired), [AlertState::Firing]);
        assert_eq!(fired[0].alert.baseline, Some("120".parse().expect("r")));
        // Day 7 looks at days 4 to 6, which have no data: not evaluated, so no resolve either.
        assert!(
            e.evaluate(1, &rules, &agg(7, 0, None, "1"), g).is_empty(),
            "no days in window"
        );
    }

    #[test]
    fn orgs_do_not_share_state_and_campaign_scoped_rules_apply_to_their_campaign() {
        let rules = [rule(C::Lt, 80, Window::Grain(Grain::Daily), 3600)];
        let mut e = RuleEngine::new();
        let g = Id::new();
        assert_eq!(
            e.evaluate(1, &rules, &agg(1, 0, Some("70"), "1"), g).len(),
            1
        );
        // The same campaign id in another org is another alert.
        let other = e.evaluate(2, &rules, &agg(1, 0, Some("70"), "1"), g);
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].alert.dedupe_key, "2/r1/c1/c1");

        let mut scoped = rules[0].clone();
        scoped.campaign_id = Some("c2".into());
        assert!(
            e.evaluate(3, &[scoped], &agg(1, 0, Some("70"), "1"), g)
                .is_empty()
        );
    }

    #[test]
    fn disabled_rules_are_skipped_and_defaults_parse() {
        let mut r = rule(C::Lt, 80, Window::Grain(Grain::Daily), 0);
        r.enabled = false;
        assert!(
            RuleEngine::new()
                .evaluate(1, &[r], &agg(1, 0, Some("1"), "1"), Id::new())
                .is_empty()
        );
        let ids: Vec<String> = default_rules().into_iter().map(|r| r.rule_id).collect();
        assert_eq!(ids.len(), 5);
        assert!(ids.contains(&"default.margin-low".to_owned()));
    }

    #[test]
    fn definitions_are_validated() {
        let def = |comparator, window: &str, cooldown| RuleDefinition {
            rule_id: "r".into(),
            name: "n".into(),
            metric: Metric::Spend,
            comparator,
            threshold: "50".parse().expect("r"),
            window: window.into(),
            severity: Severity::Info,
            channels: vec![],
            cooldown_seconds: cooldown,
            enabled: true,
            campaign_id: None,
        };
        assert!(Rule::from_definition(&def(C::Gt, "daily", 60)).is_ok());
        assert_eq!(
            Rule::from_definition(&def(C::DropPct, "14d", 60)).map(|r| r.window),
            Ok(Window::TrailingDays(14))
        );
        assert!(matches!(
            Rule::from_definition(&def(C::Gt, "hourly", 60)),
            Err(RuleError::Window(_))
        ));
        assert!(matches!(
            Rule::from_definition(&def(C::Gt, "0d", 60)),
            Err(RuleError::Window(_))
        ));
        assert!(matches!(
            Rule::from_definition(&def(C::Gt, "7d", 60)),
            Err(RuleError::WindowMismatch(_))
        ));
        assert!(matches!(
            Rule::from_definition(&def(C::DropPct, "daily", 60)),
            Err(RuleError::WindowMismatch(_))
        ));
        assert!(matches!(
            Rule::from_definition(&def(C::Gt, "daily", -1)),
            Err(RuleError::Cooldown(-1))
        ));
    }

    #[test]
    fn a_stored_and_reloaded_state_decides_like_the_one_kept_in_memory() {
        let rules = [
            rule(C::Lt, 80, Window::Grain(Grain::Daily), 3600),
            rule(C::AboveTrailingAvgPct, 50, Window::TrailingDays(3), 0),
        ];
        let g = Id::new();
        let steps = [
            agg(1, 0, Some("70"), "100"),
            agg(2, 0, Some("90"), "100"),
            agg(3, 0, Some("70"), "400"),
            agg(3, 90, Some("95"), "100"),
        ];
        let mut kept = EntityState::default();
        let mut reloaded = EntityState::default();
        for a in &steps {
            let expected = kept.evaluate(1, &rules, a, g);
            let json = serde_json::to_string(&reloaded).expect("serialises");
            reloaded = serde_json::from_str(&json).expect("deserialises");
            assert_eq!(reloaded.evaluate(1, &rules, a, g), expected);
        }
        assert_eq!(kept, reloaded);
        assert!(
            kept.history["spend"].contains_key(&day(3).0),
            "history is kept by metric name and day"
        );
    }
}
