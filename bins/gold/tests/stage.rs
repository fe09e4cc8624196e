//! Gold's stage against the local PostgreSQL, each test in a schema of its own: aggregates of
//! rows, corrections that replace, replays that do not double count, the bookings join (config
//! over CRM, deletions) and line items.

use envelope::{
    Codec, Date, Event, Money, Source,
    payload::{
        audit::AuditEvent,
        common::{Actor, ActorType, Booking, DspType, EntityType, RowKind},
        config::{ConfigChange, ConfigItem, ConfigOp},
        gold::{AggregateReady, Grain, Trigger},
        silver::{ProcessedRow, QualityVerdict},
    },
};
use gold::stage::{Gold, GoldSettings};
use runtime::{
    Processor,
    dedupe::Dedupe,
    testing::{Checked, check_at},
};
use testkit::pg::TestSchema;

fn day(y: i32, m: u32, d: u32) -> Date {
    Date::ymd(y, m, d).expect("date")
}

fn money(s: &str) -> Money {
    s.parse().expect("money")
}

/// A delivery row of `org`, campaign `c1`.
fn row(org: i64, entity: &str, date: Date, impressions: i64, spend: &str) -> Event<ProcessedRow> {
    gold::fixtures::delivery_row(org, "c1", entity, date, impressions, money(spend))
}

fn december_booking(line_item: Option<&str>, booked: i64, revenue: &str) -> Booking {
    Booking {
        campaign_id: "c1".into(),
        line_item_id: line_item.map(str::to_owned),
        booked_impressions: booked,
        booked_budget: money("5000.00"),
        booking_revenue: money(revenue),
        flight_start: day(2024, 12, 1),
        flight_end: day(2024, 12, 31),
        currency: Some("USD".into()),
    }
}

fn config(org: i64, version: i64, op: ConfigOp, booking: Booking) -> Event<ConfigChange> {
    Event::new(
        org,
        Source {
            service: "pipelinectl".into(),
            instance: "t".into(),
        },
        ConfigChange {
            key: format!("booking/{}", booking.campaign_id),
            version,
            op,
            actor: Actor {
                actor_type: ActorType::User,
                actor_id: "am-1".into(),
                display_name: None,
            },
            reason: None,
            change: ConfigItem::Booking(booking),
        },
    )
}

/// Gold on a fresh schema, started (migrated).
async fn gold() -> (Gold, TestSchema) {
    let schema = TestSchema::create("gold_test").await.expect("schema");
    let stage = Gold::new(GoldSettings::for_tests(schema.url()));
    stage.start().await.expect("gold starts and migrates");
    (stage, schema)
}

/// Process `event` at `offset` of its partition.
async fn at<P: envelope::Payload>(stage: &Gold, event: &Event<P>, offset: i64) -> Checked {
    check_at(stage, event, &Dedupe::memory(16), offset)
        .await
        .expect("processed")
}

fn outputs(c: &Checked) -> Vec<AggregateReady> {
    c.events::<AggregateReady>(&Codec::offline())
        .into_iter()
        .map(|e| e.payload)
        .collect()
}

fn find(aggs: &[AggregateReady], grain: Grain, line_item: Option<&str>) -> AggregateReady {
    aggs.iter()
        .find(|a| a.grain == grain && a.line_item_id.as_deref() == line_item)
        .cloned()
        .unwrap_or_else(|| panic!("no {grain:?} aggregate for {line_item:?} in {aggs:#?}"))
}

#[tokio::test]
async fn rows_sum_into_daily_weekly_and_monthly_aggregates() {
    let (stage, schema) = gold().await;
    // 2024-12-30 is a Monday of ISO week 2025-W01 and still in December.
    at(&stage, &row(1, "a", day(2024, 12, 30), 1000, "10.00"), 0).await;
    at(&stage, &row(1, "b", day(2024, 12, 30), 3000, "2.50"), 1).await;
    at(&stage, &row(1, "a", day(2024, 12, 29), 500, "1.25"), 2).await;
    let last = outputs(&at(&stage, &row(1, "a", day(2024, 12, 31), 200, "0.40"), 3).await);
    assert_eq!(last.len(), 3, "daily, weekly and monthly of the campaign");
    let daily = find(&last, Grain::Daily, None);
    assert_eq!(
        (daily.period_label.as_str(), daily.impressions, daily.rows),
        ("2024-12-31", 200, 1)
    );
    let weekly = find(&last, Grain::Weekly, None);
    assert_eq!(weekly.period_label, "2025-W01");
    assert_eq!((weekly.impressions, weekly.spend), (4200, money("12.90")));
    assert_eq!(weekly.clicks, 10 + 30 + 2);
    let monthly = find(&last, Grain::Monthly, None);
    assert_eq!(monthly.period_label, "2024-12");
    assert_eq!((monthly.impressions, monthly.spend), (4700, money("14.15")));
    // CPM = 14.15 / 4700 × 1000 = 3.010638... → 3.0106
    assert_eq!(monthly.metrics.cpm, Some("3.0106".parse().expect("ratio")));
    assert_eq!(monthly.booking, None);
    assert_eq!(monthly.metrics.pacing_rate, None, "no booking, no pacing");
    assert_eq!(monthly.trigger, Trigger::Update);
    schema.drop().await;
}

#[tokio::test]
async fn a_correction_replaces_and_a_replay_does_not_double_count() {
    let (stage, schema) = gold().await;
    let first = row(2, "a", day(2024, 12, 10), 1000, "10.00");
    at(&stage, &first, 0).await;
    at(&stage, &row(2, "b", day(2024, 12, 10), 500, "5.00"), 1).await;
    // The same input again at its own offset (a replay after a crash): re-emitted, not added.
    let replayed = outputs(&at(&stage, &first, 0).await);
    assert_eq!(find(&replayed, Grain::Daily, None).impressions, 1500);
    // A corrected row for the same key at a later offset replaces the first.
    let corrected = outputs(&at(&stage, &row(2, "a", day(2024, 12, 10), 800, "8.00"), 2).await);
    let daily = find(&corrected, Grain::Daily, None);
    assert_eq!(
        (daily.impressions, daily.spend, daily.rows),
        (1300, money("13.00"), 2)
    );
    // Replaying everything changes nothing.
    for (offset, e) in [(0, &first)] {
        at(&stage, e, offset).await;
    }
    let again = outputs(&at(&stage, &row(2, "b", day(2024, 12, 10), 500, "5.00"), 1).await);
    assert_eq!(find(&again, Grain::Daily, None).impressions, 1300);
    assert_days_match_rows(&schema).await;
    schema.drop().await;
}

/// gold_days must equal the sums of gold_rows, whatever was corrected or replayed.
async fn assert_days_match_rows(schema: &TestSchema) {
    let q = |table: &str| {
        format!(
            "SELECT org_id, campaign_id, line_item_id, day, impressions, clicks, conversions, \
             spend::text, rows FROM {table} WHERE rows > 0 ORDER BY 1, 2, 3, 4",
        )
    };
    let n = schema.name();
    let days = schema
        .admin()
        .query(&q(&format!("{n}.gold_days")), &[])
        .await
        .expect("days");
    let sums = format!(
        "(SELECT org_id, campaign_id, line_item_id, day, sum(impressions)::bigint AS impressions, \
         sum(clicks)::bigint AS clicks, sum(conversions)::bigint AS conversions, \
         sum(spend) AS spend, count(*) AS rows FROM {n}.gold_rows \
         GROUP BY 1, 2, 3, 4) s"
    );
    let rows = schema.admin().query(&q(&sums), &[]).await.expect("rows");
    let show = |rs: &[tokio_postgres::Row]| -> Vec<String> {
        rs.iter()
            .map(|r| {
                format!(
                    "{} {} {} {} {} {} {} {} {}",
                    r.get::<_, i64>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                    r.get::<_, chrono::NaiveDate>(3),
                    r.get::<_, i64>(4),
                    r.get::<_, i64>(5),
                    r.get::<_, i64>(6),
                    r.get::<_, String>(7),
                    r.get::<_, i64>(8)
                )
            })
            .collect()
    };
    assert_eq!(show(&days), show(&rows), "gold_days vs gold_rows");
}

#[tokio::test]
async fn a_correction_into_another_campaign_moves_its_numbers() {
    let (stage, schema) = gold().await;
    at(&stage, &row(6, "a", day(2024, 12, 10), 1000, "10.00"), 0).await;
    at(&stage, &row(6, "b", day(2024, 12, 10), 500, "5.00"), 1).await;
    let mut moved = row(6, "a", day(2024, 12, 10), 700, "7.00");
    moved.payload.campaign_id = "c2".into();
    let out = outputs(&at(&stage, &moved, 2).await);
    let of = |c: &str| -> Vec<AggregateReady> {
        out.iter().filter(|a| a.campaign_id == c).cloned().collect()
    };
    assert_eq!(find(&of("c2"), Grain::Daily, None).impressions, 700);
    let daily = find(&of("c1"), Grain::Daily, None);
    assert_eq!(
        (daily.impressions, daily.rows),
        (500, 1),
        "c1 lost entity a, and says so at once"
    );
    assert_days_match_rows(&schema).await;
    schema.drop().await;
}

#[tokio::test]
async fn quarantined_rows_are_not_aggregated() {
    let (stage, schema) = gold().await;
    at(&stage, &row(3, "a", day(2024, 12, 10), 1000, "10.00"), 0).await;
    let mut bad = row(3, "b", day(2024, 12, 10), 9_999_999, "99999.00");
    bad.payload.quality.verdict = QualityVerdict::Quarantine;
    assert!(outputs(&at(&stage, &bad, 1).await).is_empty());
    let next = outputs(&at(&stage, &row(3, "c", day(2024, 12, 10), 1, "0.01"), 2).await);
    assert_eq!(find(&next, Grain::Daily, None).impressions, 1001);
    schema.drop().await;
}

#[tokio::test]
async fn bookings_join_with_pacing_and_margin_config_over_crm() {
    let (stage, schema) = gold().await;
    // A CRM booking row: 1,000,000 impressions, revenue 10,000.
    let mut crm = row(4, "c1", day(2024, 12, 1), 0, "0.00");
    crm.payload.row_kind = RowKind::Booking;
    crm.payload.dsp_type = DspType::Crm;
    crm.payload.booking = Some(december_booking(None, 1_000_000, "10000.00"));
    at(&stage, &crm, 0).await;
    // 10 December days of 40,000 impressions and 100.00 spend.
    let mut last = Vec::new();
    for d in 1..=10u32 {
        let e = row(4, "a", day(2024, 12, d), 40_000, "100.00");
        last = outputs(&at(&stage, &e, i64::from(d)).await);
    }
    let monthly = find(&last, Grain::Monthly, None);
    assert_eq!(
        monthly.booking.as_ref().map(|b| b.booked_impressions),
        Some(1_000_000)
    );
    // As of Dec 10: 400,000 of 1,000,000 over 10 of 31 days: 0.4 × 3.1 × 100 = 124.00.
    assert_eq!(monthly.metrics.pacing_rate, Some(money("124.00")));
    // (10,000 - 1,000) / 10,000 × 100 = 90.00
    assert_eq!(monthly.metrics.margin_pct, Some(money("90.00")));
    // 1,000 / 10 × 31 = 3,100.00
    assert_eq!(monthly.metrics.projected_spend, Some(money("3100.00")));
    assert_eq!(
        (monthly.metrics.elapsed_days, monthly.metrics.total_days),
        (Some(10), Some(31))
    );
    // The daily aggregate carries the same flight-to-date metrics, its own totals.
    let daily = find(&last, Grain::Daily, None);
    assert_eq!(daily.impressions, 40_000);
    assert_eq!(daily.metrics.delivered_impressions_to_date, Some(400_000));

    // A config booking for the campaign wins over the CRM row: 2,000,000 booked → 62.00.
    let cfg = config(
        4,
        1,
        ConfigOp::Upsert,
        december_booking(None, 2_000_000, "20000.00"),
    );
    at(&stage, &cfg, 0).await;
    let e = row(4, "a", day(2024, 12, 10), 40_000, "100.00");
    let after = outputs(&at(&stage, &e, 11).await);
    assert_eq!(
        find(&after, Grain::Monthly, None).metrics.pacing_rate,
        Some(money("62.00"))
    );
    // An older version of the config booking changes nothing.
    let stale = config(4, 0, ConfigOp::Upsert, december_booking(None, 1, "1.00"));
    at(&stage, &stale, 1).await;
    let e = row(4, "a", day(2024, 12, 10), 40_000, "100.00");
    let still = outputs(&at(&stage, &e, 12).await);
    assert_eq!(
        find(&still, Grain::Monthly, None)
            .booking
            .map(|b| b.booked_impressions),
        Some(2_000_000)
    );
    // Deleting the config booking hides the campaign's booking altogether.
    let deleted = config(
        4,
        2,
        ConfigOp::Delete,
        december_booking(None, 2_000_000, "20000.00"),
    );
    at(&stage, &deleted, 2).await;
    let e = row(4, "a", day(2024, 12, 10), 40_000, "100.00");
    let gone = outputs(&at(&stage, &e, 13).await);
    let monthly = find(&gone, Grain::Monthly, None);
    assert_eq!((monthly.booking, monthly.metrics.pacing_rate), (None, None));
    schema.drop().await;
}

#[tokio::test]
async fn line_item_rows_also_aggregate_per_line_item() {
    let (stage, schema) = gold().await;
    let line = |entity: &str, impressions: i64| {
        let mut e = row(5, entity, day(2024, 12, 5), impressions, "1.00");
        e.payload.dsp_type = DspType::Dv360;
        e.payload.entity.entity_type = EntityType::LineItem;
        e
    };
    let cfg = config(
        5,
        1,
        ConfigOp::Upsert,
        december_booking(Some("li-1"), 310_000, "100.00"),
    );
    let checked = at(&stage, &cfg, 0).await;
    let booked = outputs(&checked);
    // The applied booking is audited: `config.applied` on its key, caused by the change.
    let audits = checked.events::<AuditEvent>(&Codec::offline());
    assert_eq!(audits.len(), 1);
    assert_eq!(
        (
            audits[0].payload.action.as_str(),
            audits[0].payload.entity.entity_id.as_str()
        ),
        ("config.applied", cfg.payload.key.as_str())
    );
    assert_eq!(
        audits[0].metadata.correlation_id,
        cfg.metadata.correlation_id
    );
    assert!(
        booked
            .iter()
            .all(|a| a.line_item_id.as_deref() == Some("li-1")),
        "a line-item booking re-emits its line item only"
    );
    at(&stage, &line("li-1", 10_000), 0).await;
    let aggs = outputs(&at(&stage, &line("li-2", 20_000), 1).await);
    assert_eq!(aggs.len(), 6, "campaign and line item, three grains each");
    assert_eq!(find(&aggs, Grain::Daily, None).impressions, 30_000);
    assert_eq!(find(&aggs, Grain::Daily, Some("li-2")).impressions, 20_000);
    let li1 = outputs(&at(&stage, &line("li-1", 10_000), 2).await);
    let monthly = find(&li1, Grain::Monthly, Some("li-1"));
    // The line-item booking: 10,000 of 310,000 after 5 of 31 days: 10/310 × 31/5 × 100 = 20.00
    assert_eq!(monthly.metrics.pacing_rate, Some(money("20.00")));
    assert_eq!(
        find(&li1, Grain::Monthly, None).booking,
        None,
        "no campaign booking"
    );
    schema.drop().await;
}
