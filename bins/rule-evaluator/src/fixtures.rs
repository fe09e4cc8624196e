//! Gold aggregates for the rule evaluator's tests: a dataset that crosses each built-in
//! threshold exactly once for org 1, and the alerts it must raise.

use envelope::{
    Date, Event, Money, Source, Timestamp,
    payload::{
        common::{Actor, ActorType, Comparator, Metric, Severity},
        config::{ConfigChange, ConfigItem, ConfigOp, RuleDefinition},
        gold::{AggregateReady, DerivedMetrics, Grain, Trigger},
    },
};

/// The day the dataset's last aggregates are about (2026-11-`DAY`).
pub const DAY: u32 = 20;

/// 2026-11-`d`.
pub fn day(d: u32) -> Date {
    Date::ymd(2026, 11, d).expect("a November day")
}

fn money(s: &str) -> Money {
    s.parse().expect("a fixture amount")
}

fn source(service: &str) -> Source {
    Source {
        service: service.into(),
        instance: "fixtures".into(),
    }
}

/// A daily aggregate of `campaign` (org `org`) on `d` November, as of noon that day plus
/// `minutes`: 1,000 impressions, spend 100, quality 95, no booking.
pub fn daily(org: i64, campaign: &str, d: u32, minutes: i64) -> Event<AggregateReady> {
    let noon = Timestamp::from_millis(
        day(d)
            .0
            .and_hms_opt(12, 0, 0)
            .expect("noon")
            .and_utc()
            .timestamp_millis()
            + minutes * 60_000,
    )
    .expect("a fixture time");
    let agg = AggregateReady {
        grain: Grain::Daily,
        period_start: day(d),
        period_end: day(d),
        period_label: day(d).to_string(),
        campaign_id: campaign.to_owned(),
        line_item_id: None,
        impressions: 1_000,
        clicks: 10,
        conversions: 1,
        spend: money("100"),
        rows: 4,
        quality_score_avg: Some(money("95")),
        booking: None,
        metrics: DerivedMetrics::default(),
        as_of: noon,
        trigger: Trigger::Update,
    };
    let mut e = Event::new(org, source("gold-processor"), agg);
    e.metadata.timestamp = noon;
    e
}

/// A healthy booked aggregate: [`daily`] with pacing 100 % and margin 30 %.
pub fn booked(org: i64, campaign: &str, d: u32, minutes: i64) -> Event<AggregateReady> {
    let mut e = daily(org, campaign, d, minutes);
    e.payload.metrics.pacing_rate = Some(money("100"));
    e.payload.metrics.margin_pct = Some(money("30"));
    e
}

/// [`booked`] with pacing `pct` %.
pub fn pacing(org: i64, campaign: &str, d: u32, minutes: i64, pct: &str) -> Event<AggregateReady> {
    let mut e = booked(org, campaign, d, minutes);
    e.payload.metrics.pacing_rate = Some(money(pct));
    e
}

/// Org 1's aggregates crossing each built-in threshold once (after seven days of steady
/// history for the trailing rules), org 2's look-alikes crossing none (the same campaign ids;
/// its spend spike has no history of its own), then `fillers` healthy aggregates of org 3.
pub fn threshold_dataset(fillers: usize) -> Vec<Event<AggregateReady>> {
    let mut out = Vec::new();
    for d in DAY - 7..DAY {
        out.push(daily(1, "c-spend", d, 0));
        out.push(daily(1, "c-quality", d, 0));
    }
    let mut margin = booked(1, "c-margin", DAY, 0);
    margin.payload.metrics.margin_pct = Some(money("10"));
    let mut spike = daily(1, "c-spend", DAY, 0);
    spike.payload.spend = money("200");
    let mut drop = daily(1, "c-quality", DAY, 0);
    drop.payload.quality_score_avg = Some(money("70"));
    out.extend([
        pacing(1, "c-pace-low", DAY, 0, "70"),
        pacing(1, "c-pace-high", DAY, 0, "130"),
        margin,
        spike,
        drop,
        booked(1, "c-ok", DAY, 0),
    ]);
    for c in ["c-pace-low", "c-pace-high", "c-margin", "c-ok"] {
        out.push(booked(2, c, DAY, 0));
    }
    let mut lone_spike = daily(2, "c-spend", DAY, 0);
    lone_spike.payload.spend = money("900");
    out.push(lone_spike);
    for i in 0..fillers {
        out.push(booked(3, &format!("filler-{i}"), DAY, 0));
    }
    out
}

/// (org, rule id, campaign) of the alerts [`threshold_dataset`] must raise, all firing.
pub const THRESHOLD_ALERTS: [(i64, &str, &str); 5] = [
    (1, "default.pacing-low", "c-pace-low"),
    (1, "default.pacing-high", "c-pace-high"),
    (1, "default.margin-low", "c-margin"),
    (1, "default.spend-anomaly", "c-spend"),
    (1, "default.quality-drop", "c-quality"),
];

/// A daily rule of severity critical, cooldown one hour, to channel `ops-webhook`.
pub fn rule(id: &str, metric: Metric, comparator: Comparator, threshold: &str) -> RuleDefinition {
    RuleDefinition {
        rule_id: id.into(),
        name: format!("{id} rule"),
        metric,
        comparator,
        threshold: threshold.parse().expect("a fixture threshold"),
        window: "daily".into(),
        severity: Severity::Critical,
        channels: vec!["ops-webhook".into()],
        cooldown_seconds: 3600,
        enabled: true,
        campaign_id: None,
    }
}

/// A `rule/<id>` change of `org` at `version`, by a user.
pub fn rule_change(
    org: i64,
    version: i64,
    op: ConfigOp,
    definition: RuleDefinition,
) -> Event<ConfigChange> {
    Event::new(
        org,
        source("pipelinectl"),
        ConfigChange {
            key: format!("rule/{}", definition.rule_id),
            version,
            op,
            actor: Actor {
                actor_type: ActorType::User,
                actor_id: "am-1".into(),
                display_name: None,
            },
            reason: Some("fixture".into()),
            change: ConfigItem::RuleDefinition(definition),
        },
    )
}
