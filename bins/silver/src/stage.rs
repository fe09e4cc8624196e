//! Silver's rules: cast bronze's text values, validate them, and score each row's quality.
//!
//! # Casting
//!
//! | field | rule |
//! | --- | --- |
//! | impressions, clicks, conversions | 64-bit integers. Empty or absent = `0` (DSPs leave zero cells empty). Thousands separators (`1,234`) and surrounding spaces are accepted, so is an integral decimal (`12.0`). Placeholders (`N/A`, `-`, `null`, `none`) count as *missing* and become `0`. Negative, fractional, non-numeric or absurd (over 10^12) values are *invalid* and become `0`. |
//! | spend, revenue, budgets | decimals rounded to 2 places **half away from zero** (`12.345` → `12.35`, `12.344` → `12.34`), never floats. A currency symbol or ISO code around the number (`$1,234.50`, `EUR 12`) and thousands separators are accepted. Empty spend = `0.00`; empty revenue = none. Negative, non-numeric or absurd (over 10^12) amounts are *invalid*. |
//! | dates | `2024-12-26`, `2024/12/26`, `2024-12-26T00:00:00` (time ignored) and US `12/26/2024`. Impossible dates (`2024-02-30`) are *invalid*. |
//! | ids | trimmed; empty after trimming = missing. |
//! | spend_usd | the source's own US-dollar cost when it reports one (TTD's `Partner Cost (USD)`, kept by bronze in `extra`), cast like spend. Optional: absent or unreadable leaves it empty and costs no quality points. |
//! | status | case-insensitive: active/enabled/live/running → `active`; paused/inactive/on hold → `paused`; completed/ended/finished/archived → `completed`; anything else is *invalid* and left empty. |
//!
//! # Quality score (0..=100)
//!
//! - **completeness (40)**: `40 × present / required`, rounded down. Delivery rows require
//!   date, campaign id, entity id, impressions, clicks and spend; booking rows require
//!   campaign id, booked impressions, booked budget, booking revenue, flight start and end.
//!   Absent, empty and placeholder values are missing.
//! - **validity (30)**: 30 minus 10 per invalid value, at least 0.
//! - **consistency (20)**: delivery: clicks above impressions −10, conversions above clicks
//!   −5, spend with no impressions −5; booking: flight ending before it starts −10, zero
//!   budget or revenue −5. At least 0.
//! - **timeliness (10)**: 10 when the row's date is between 0 and `freshness_days` days old,
//!   else 0 (stale, or dated in the future).
//!
//! Verdict: `pass` at 90 or more, `warn` from 70 to 89, `quarantine` below 70. A row that
//! cannot be keyed — no campaign id, or a row date that cannot be parsed — is quarantined
//! whatever its score, since silver's dedupe key `(org_id, dsp_type, entity_id, date)` would
//! be wrong.

use std::{
    collections::HashSet,
    str::FromStr,
    sync::{Mutex, PoisonError},
};

use chrono::NaiveDate;
use envelope::{
    Date, Event, Id, Money,
    payload::{
        audit::AuditEvent,
        bronze::CleanedRow,
        common::{Booking, DspType, EntityRef, EntityType, RowKind},
        silver::{CampaignStatus, ProcessedRow, QualityScore, QualityVerdict},
    },
};
use runtime::{Outputs, ProcessError, Processor};
use rust_decimal::Decimal;
use topics::{ConsumerGroup, Topic};

/// Largest count or amount silver accepts for one row and day.
const ABSURD: i64 = 1_000_000_000_000;

/// Values a source writes for "no value".
const PLACEHOLDERS: &[&str] = &["n/a", "na", "-", "--", "null", "none", "nil", "#n/a"];

/// Silver's settings.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct SilverRules {
    /// Rows older than this many days lose their timeliness points.
    #[arg(long, env = "SILVER_FRESHNESS_DAYS", default_value_t = 7)]
    pub freshness_days: i64,
    /// Dedupe keys remembered to flag corrections (oldest forgotten first).
    #[arg(long, env = "SILVER_REMEMBERED_KEYS", default_value_t = 1_000_000)]
    pub remembered_keys: usize,
}

impl Default for SilverRules {
    fn default() -> Self {
        SilverRules {
            freshness_days: 7,
            remembered_keys: 1_000_000,
        }
    }
}

/// The silver stage: bronze rows in, typed and scored rows out; quarantined rows are also
/// audited (`row.quarantined`) so the audit trail explains every row gold will not see.
#[derive(Debug)]
pub struct Silver {
    rules: SilverRules,
    seen: Mutex<SeenKeys>,
}

impl Silver {
    /// A stage with `rules`.
    pub fn new(rules: SilverRules) -> Silver {
        Silver {
            seen: Mutex::new(SeenKeys::new(rules.remembered_keys)),
            rules,
        }
    }
}

impl Processor for Silver {
    type Input = Event<CleanedRow>;
    const GROUP: ConsumerGroup = ConsumerGroup::SilverProcessor;

    fn outputs() -> Vec<Topic> {
        vec![Topic::SilverDataProcessed, Topic::AuditEvents]
    }

    async fn process(
        &self,
        input: Event<CleanedRow>,
        out: &mut Outputs<'_>,
    ) -> Result<(), ProcessError> {
        // Timeliness is judged at ingestion, so a replay scores a row the same way.
        let today = Date(input.payload.ingestion.ingested_at.0.date_naive());
        let mut row = process_row(&input.payload, input.metadata.event_id, today, &self.rules);
        row.is_correction = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(&row.dedupe_key(input.metadata.org_id));
        if row.quality.verdict == QualityVerdict::Quarantine {
            out.count_quarantined();
            out.emit(AuditEvent::data_decision(
                Self::GROUP.name(),
                "row.quarantined",
                row.entity.clone(),
                input.metadata.timestamp,
                format!(
                    "quality score {}: {}",
                    row.quality.score,
                    row.quality.reasons.join("; ")
                ),
                [
                    ("request_id".to_owned(), row.request_id.clone()),
                    ("dsp_type".to_owned(), row.dsp_type.to_string()),
                    ("date".to_owned(), row.date.to_string()),
                ]
                .into(),
            ))?;
        }
        out.emit(row)
    }
}

/// What is wrong with one value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issue {
    /// Absent, empty or a placeholder such as `N/A`.
    Missing(&'static str),
    /// Present but not acceptable; the text says why.
    Invalid(&'static str, String),
}

impl Issue {
    /// A reason line for the quality score.
    pub fn reason(&self) -> String {
        match self {
            Issue::Missing(field) => format!("{field}: missing"),
            Issue::Invalid(field, why) => format!("{field}: {why}"),
        }
    }
}

fn text(raw: Option<&str>) -> Option<&str> {
    raw.map(str::trim)
        .filter(|s| !s.is_empty() && !PLACEHOLDERS.contains(&s.to_ascii_lowercase().as_str()))
}

fn is_placeholder(raw: Option<&str>) -> bool {
    raw.map(str::trim)
        .is_some_and(|s| PLACEHOLDERS.contains(&s.to_ascii_lowercase().as_str()))
}

fn strip_number(s: &str) -> String {
    s.chars()
        .filter(|c| *c != ',' && !c.is_whitespace())
        .collect()
}

/// Cast a count. Returns the value (0 when missing or invalid) and the issue, if any.
/// An empty or absent cell is a legitimate zero, not an issue.
pub fn cast_count(field: &'static str, raw: Option<&str>) -> (i64, Option<Issue>) {
    if is_placeholder(raw) {
        return (0, Some(Issue::Missing(field)));
    }
    let Some(s) = text(raw) else {
        return (0, None);
    };
    let invalid = |why: String| (0, Some(Issue::Invalid(field, why)));
    let Ok(d) = Decimal::from_str(&strip_number(s)) else {
        return invalid(format!("{s:?} is not a number"));
    };
    if d.fract() != Decimal::ZERO {
        return invalid(format!("{s:?} is not a whole number"));
    }
    if d.is_sign_negative() && d != Decimal::ZERO {
        return invalid(format!("{s:?} is negative"));
    }
    match i64::try_from(d) {
        Ok(n) if n <= ABSURD => (n, None),
        _ => invalid(format!("{s:?} is implausibly large")),
    }
}

/// Cast an amount of money, rounding half away from zero to 2 places. `None` when absent.
pub fn cast_money(field: &'static str, raw: Option<&str>) -> (Option<Money>, Option<Issue>) {
    if is_placeholder(raw) {
        return (None, Some(Issue::Missing(field)));
    }
    let Some(s) = text(raw) else {
        return (None, None);
    };
    let invalid = |why: String| (None, Some(Issue::Invalid(field, why)));
    let number: String = strip_number(s)
        .trim_matches(|c: char| c.is_alphabetic() || "$€£¥".contains(c))
        .to_owned();
    let Ok(d) = Decimal::from_str(&number) else {
        return invalid(format!("{s:?} is not an amount"));
    };
    if d.is_sign_negative() && d != Decimal::ZERO {
        return invalid(format!("{s:?} is negative"));
    }
    if d > Decimal::from(ABSURD) {
        return invalid(format!("{s:?} is implausibly large"));
    }
    match Money::new(d) {
        Ok(m) => (Some(m), None),
        Err(e) => invalid(e.to_string()),
    }
}

/// Parse a row date in any of the DSP formats (see the module docs).
pub fn parse_date(s: &str) -> Result<Date, String> {
    let s = s.trim();
    let day = s.split(['T', ' ']).next().unwrap_or(s);
    for format in ["%Y-%m-%d", "%Y/%m/%d", "%m/%d/%Y"] {
        if let Ok(d) = NaiveDate::parse_from_str(day, format) {
            return Ok(Date(d));
        }
    }
    Err(format!("{s:?} is not a valid date"))
}

fn cast_date(field: &'static str, raw: Option<&str>) -> (Option<Date>, Option<Issue>) {
    match text(raw) {
        None => (None, Some(Issue::Missing(field))),
        Some(s) => match parse_date(s) {
            Ok(d) => (Some(d), None),
            Err(why) => (None, Some(Issue::Invalid(field, why))),
        },
    }
}

/// Normalise a status; unknown values are an issue and yield `None`.
pub fn normalise_status(raw: Option<&str>) -> (Option<CampaignStatus>, Option<Issue>) {
    let Some(s) = text(raw) else {
        return (None, None);
    };
    let status = match s.to_ascii_lowercase().as_str() {
        "active" | "enabled" | "live" | "running" | "delivering" => CampaignStatus::Active,
        "paused" | "inactive" | "on hold" | "on_hold" | "suspended" => CampaignStatus::Paused,
        "completed" | "complete" | "ended" | "finished" | "archived" => CampaignStatus::Completed,
        _ => {
            return (
                None,
                Some(Issue::Invalid("status", format!("unknown status {s:?}"))),
            );
        }
    };
    (Some(status), None)
}

/// A trimmed id, `None` when empty.
pub fn trim_id(raw: Option<&str>) -> Option<String> {
    text(raw).map(str::to_owned)
}

/// Silver's dedupe key: one row per org, DSP, entity and day; later rows replace earlier ones.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupeKey {
    /// Organisation.
    pub org_id: i64,
    /// Source.
    pub dsp_type: DspType,
    /// Entity at the row's grain.
    pub entity_id: String,
    /// Day.
    pub date: Date,
}

impl ProcessedRowExt for ProcessedRow {
    fn dedupe_key(&self, org_id: i64) -> DedupeKey {
        DedupeKey {
            org_id,
            dsp_type: self.dsp_type,
            entity_id: self.entity.entity_id.clone(),
            date: self.date,
        }
    }
}

/// Derived facts of a processed row.
pub trait ProcessedRowExt {
    /// Silver's dedupe key of the row for `org_id`.
    fn dedupe_key(&self, org_id: i64) -> DedupeKey;
}

/// Record of the dedupe keys silver has seen, so a later row for the same key is flagged as a
/// correction (last write wins). Bounded: the oldest keys are forgotten first. Keys are kept
/// as 64-bit hashes (16 bytes each with the queue, instead of the key twice): a collision,
/// about 3 in 100 million at a million keys, only flags a new row as a correction, which
/// replaces nothing downstream.
#[derive(Debug)]
pub struct SeenKeys {
    capacity: usize,
    order: std::collections::VecDeque<u64>,
    keys: HashSet<u64>,
}

impl SeenKeys {
    /// Remember at most `capacity` keys.
    pub fn new(capacity: usize) -> SeenKeys {
        SeenKeys {
            capacity: capacity.max(1),
            order: std::collections::VecDeque::new(),
            keys: HashSet::new(),
        }
    }

    /// Record `key`; true when it was seen before (the row is a correction).
    pub fn observe(&mut self, key: &DedupeKey) -> bool {
        use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
        // Fixed hasher keys: a key hashes the same for the life of the set.
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
        if self.keys.contains(&hash) {
            return true;
        }
        if self.order.len() == self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.keys.remove(&old);
        }
        self.order.push_back(hash);
        self.keys.insert(hash);
        false
    }
}

/// Score inputs gathered while casting.
#[derive(Debug, Default)]
struct Assessment {
    required: u32,
    missing: Vec<Issue>,
    invalid: Vec<Issue>,
    inconsistent: Vec<(i32, String)>,
    fresh: bool,
    unkeyable: Option<String>,
}

impl Assessment {
    fn note(&mut self, issue: Option<Issue>) {
        match issue {
            Some(i @ Issue::Missing(_)) if !self.missing.contains(&i) => self.missing.push(i),
            Some(Issue::Missing(_)) => {}
            Some(i @ Issue::Invalid(..)) => self.invalid.push(i),
            None => {}
        }
    }

    fn require(&mut self, field: &'static str, present: bool) {
        self.required += 1;
        if !present && !self.missing.contains(&Issue::Missing(field)) {
            self.missing.push(Issue::Missing(field));
        }
    }

    fn score(self) -> QualityScore {
        let present = self.required.saturating_sub(self.missing.len() as u32);
        let completeness = (40 * present).checked_div(self.required).unwrap_or(40) as i32;
        let validity = (30 - 10 * self.invalid.len() as i32).max(0);
        let consistency = (20 - self.inconsistent.iter().map(|(p, _)| p).sum::<i32>()).max(0);
        let timeliness = if self.fresh { 10 } else { 0 };
        let score = completeness + validity + consistency + timeliness;
        let mut reasons: Vec<String> = self
            .missing
            .iter()
            .chain(&self.invalid)
            .map(Issue::reason)
            .chain(self.inconsistent.into_iter().map(|(_, r)| r))
            .collect();
        if !self.fresh {
            reasons.push("row date outside the freshness bound".to_owned());
        }
        let verdict = if let Some(why) = self.unkeyable {
            reasons.push(format!("quarantined: {why}"));
            QualityVerdict::Quarantine
        } else if score >= 90 {
            QualityVerdict::Pass
        } else if score >= 70 {
            QualityVerdict::Warn
        } else {
            QualityVerdict::Quarantine
        };
        QualityScore {
            score,
            completeness,
            validity,
            consistency,
            timeliness,
            verdict,
            reasons,
        }
    }
}

/// Cast, validate and score one bronze row. `today` is the processing day. The result's
/// `is_correction` is left `false`; the stage sets it from [`SeenKeys`].
pub fn process_row(
    row: &CleanedRow,
    bronze_event_id: Id,
    today: Date,
    rules: &SilverRules,
) -> ProcessedRow {
    let mut a = Assessment::default();

    let campaign_id = trim_id(row.campaign_id.as_deref());
    a.require("campaign_id", campaign_id.is_some());
    if campaign_id.is_none() {
        a.unkeyable = Some("no campaign id".to_owned());
    }

    let (row_date, date_issue) = match row.row_kind {
        RowKind::Delivery => cast_date("date", row.date.as_deref()),
        // A booking sheet is dated by the report it came in.
        RowKind::Booking => (Some(row.report_date), None),
    };
    if row.row_kind == RowKind::Delivery {
        a.require("date", row_date.is_some() || date_issue.is_some());
    }
    if let Some(Issue::Invalid(_, why)) = &date_issue {
        a.unkeyable = Some(why.clone());
    }
    a.note(date_issue);
    let date = row_date.unwrap_or(row.report_date);
    let age = (today.0 - date.0).num_days();
    a.fresh = (0..=rules.freshness_days).contains(&age);

    let entity_id = trim_id(row.entity_id.as_deref());
    let (entity_type, entity_id) = match entity_id {
        Some(id) => (row.entity_type, id),
        // Without a finer grain the campaign is the entity.
        None => (
            EntityType::Campaign,
            campaign_id.clone().unwrap_or_default(),
        ),
    };

    let (status, status_issue) = normalise_status(row.status.as_deref());
    a.note(status_issue);

    let mut processed = ProcessedRow {
        request_id: row.request_id.clone(),
        dsp_type: row.dsp_type,
        row_kind: row.row_kind,
        date,
        entity: EntityRef {
            entity_type,
            entity_id,
            name: trim_id(row.entity_name.as_deref()),
        },
        campaign_id: campaign_id.unwrap_or_default(),
        campaign_name: trim_id(row.campaign_name.as_deref()),
        advertiser_id: trim_id(row.advertiser_id.as_deref()),
        impressions: 0,
        clicks: 0,
        conversions: 0,
        spend: Money::ZERO,
        revenue: None,
        currency: trim_id(row.currency.as_deref()).map(|c| c.to_ascii_uppercase()),
        spend_usd: None,
        status,
        booking: None,
        quality: QualityScore {
            score: 0,
            completeness: 0,
            validity: 0,
            consistency: 0,
            timeliness: 0,
            verdict: QualityVerdict::Quarantine,
            reasons: Vec::new(),
        },
        is_correction: false,
        bronze_event_id,
    };

    match row.row_kind {
        RowKind::Delivery => cast_delivery(row, &mut processed, &mut a),
        RowKind::Booking => cast_booking(row, &mut processed, &mut a),
    }
    processed.quality = a.score();
    processed
}

fn cast_delivery(row: &CleanedRow, out: &mut ProcessedRow, a: &mut Assessment) {
    a.require(
        "entity_id",
        row.entity_id
            .as_deref()
            .and_then(|s| text(Some(s)))
            .is_some(),
    );
    let (impressions, i) = cast_count("impressions", row.impressions.as_deref());
    a.require("impressions", text(row.impressions.as_deref()).is_some());
    a.note(i);
    let (clicks, i) = cast_count("clicks", row.clicks.as_deref());
    a.require("clicks", text(row.clicks.as_deref()).is_some());
    a.note(i);
    let (conversions, i) = cast_count("conversions", row.conversions.as_deref());
    a.note(i);
    let (spend, i) = cast_money("spend", row.spend.as_deref());
    a.require("spend", text(row.spend.as_deref()).is_some());
    a.note(i);
    let (revenue, i) = cast_money("revenue", row.revenue.as_deref());
    a.note(i);

    if clicks > impressions {
        a.inconsistent.push((
            10,
            format!("clicks {clicks} above impressions {impressions}"),
        ));
    }
    if conversions > clicks {
        a.inconsistent.push((
            5,
            format!("conversions {conversions} above clicks {clicks}"),
        ));
    }
    let spend = spend.unwrap_or(Money::ZERO);
    if spend > Money::ZERO && impressions == 0 {
        a.inconsistent
            .push((5, "spend without impressions".to_owned()));
    }
    out.impressions = impressions;
    out.clicks = clicks;
    out.conversions = conversions;
    out.spend = spend;
    out.revenue = revenue;
    out.spend_usd = spend_usd(row);
}

/// The bronze `extra` key of the source's US-dollar cost (TTD reports).
pub const SPEND_USD_EXTRA: &str = "Partner Cost (USD)";

/// `spend_usd`: optional, so a missing or unreadable value is `None` and scores nothing.
fn spend_usd(row: &CleanedRow) -> Option<Money> {
    cast_money(
        "spend_usd",
        row.extra.get(SPEND_USD_EXTRA).map(String::as_str),
    )
    .0
}

fn cast_booking(row: &CleanedRow, out: &mut ProcessedRow, a: &mut Assessment) {
    let (booked_impressions, i) =
        cast_count("booked_impressions", row.booked_impressions.as_deref());
    a.require(
        "booked_impressions",
        text(row.booked_impressions.as_deref()).is_some(),
    );
    a.note(i);
    let (budget, i) = cast_money("booked_budget", row.booked_budget.as_deref());
    a.require("booked_budget", budget.is_some() || i.is_some());
    a.note(i);
    let (revenue, i) = cast_money("booking_revenue", row.booking_revenue.as_deref());
    a.require("booking_revenue", revenue.is_some() || i.is_some());
    a.note(i);
    let (start, i) = cast_date("flight_start", row.flight_start.as_deref());
    a.required += 1;
    a.note(i);
    let (end, i) = cast_date("flight_end", row.flight_end.as_deref());
    a.required += 1;
    a.note(i);

    if let (Some(s), Some(e)) = (start, end)
        && e < s
    {
        a.inconsistent
            .push((10, format!("flight ends {e} before it starts {s}")));
    }
    if budget == Some(Money::ZERO) || revenue == Some(Money::ZERO) {
        a.inconsistent
            .push((5, "zero budget or revenue".to_owned()));
    }
    if let (Some(booked_budget), Some(booking_revenue), Some(flight_start), Some(flight_end)) =
        (budget, revenue, start, end)
    {
        out.booking = Some(Booking {
            campaign_id: out.campaign_id.clone(),
            line_item_id: None,
            booked_impressions,
            booked_budget,
            booking_revenue,
            flight_start,
            flight_end,
            currency: out.currency.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use envelope::{Timestamp, payload::bronze::IngestionMetadata};

    use super::*;

    fn money(s: &str) -> Money {
        s.parse().expect("money")
    }

    fn day(y: i32, m: u32, d: u32) -> Date {
        Date::ymd(y, m, d).expect("date")
    }

    fn delivery() -> CleanedRow {
        CleanedRow {
            request_id: "req-1".into(),
            dsp_type: DspType::Dv360,
            row_kind: RowKind::Delivery,
            report_date: day(2024, 12, 26),
            row_index: 0,
            date: Some("2024/12/26".into()),
            advertiser_id: Some("889900".into()),
            campaign_id: Some("  1022334 ".into()),
            campaign_name: Some("Winter Sale".into()),
            entity_type: EntityType::LineItem,
            entity_id: Some("48213377".into()),
            entity_name: Some("Prospecting".into()),
            impressions: Some("183,442".into()),
            clicks: Some("911".into()),
            conversions: Some("37".into()),
            spend: Some("1,234.567".into()),
            revenue: Some("1890".into()),
            currency: Some("eur".into()),
            status: Some("Active".into()),
            booked_impressions: None,
            booked_budget: None,
            booking_revenue: None,
            flight_start: None,
            flight_end: None,
            extra: BTreeMap::new(),
            ingestion: IngestionMetadata {
                ingested_at: Timestamp::from_millis(0).expect("ts"),
                raw_event_id: Id::new(),
                parser: "dv360/1".into(),
                missing_fields: vec![],
                complete: true,
                report_age_days: 0,
                fresh: true,
            },
        }
    }

    fn run(row: &CleanedRow) -> ProcessedRow {
        process_row(row, Id::new(), day(2024, 12, 27), &SilverRules::default())
    }

    #[test]
    fn counts() {
        assert_eq!(cast_count("impressions", Some("1,234")), (1234, None));
        assert_eq!(cast_count("impressions", Some(" 1 234 ")), (1234, None));
        assert_eq!(cast_count("impressions", Some("12.0")), (12, None));
        assert_eq!(cast_count("impressions", Some("")), (0, None));
        assert_eq!(cast_count("impressions", Some("   ")), (0, None));
        assert_eq!(cast_count("impressions", None), (0, None));
        assert_eq!(
            cast_count("impressions", Some("N/A")),
            (0, Some(Issue::Missing("impressions")))
        );
        assert_eq!(
            cast_count("clicks", Some("-")),
            (0, Some(Issue::Missing("clicks")))
        );
        for bad in ["-5", "12.5", "abc", "1e999", "2000000000000", "1,2,3x"] {
            let (v, issue) = cast_count("impressions", Some(bad));
            assert_eq!(v, 0, "{bad}");
            assert!(
                matches!(issue, Some(Issue::Invalid("impressions", _))),
                "{bad}: {issue:?}"
            );
        }
        assert_eq!(cast_count("impressions", Some("-0")), (0, None));
    }

    #[test]
    fn money_rounds_half_away_from_zero_to_two_places() {
        assert_eq!(
            cast_money("spend", Some("12.345")),
            (Some(money("12.35")), None)
        );
        assert_eq!(
            cast_money("spend", Some("12.344")),
            (Some(money("12.34")), None)
        );
        assert_eq!(
            cast_money("spend", Some("0.005")),
            (Some(money("0.01")), None)
        );
        assert_eq!(
            cast_money("spend", Some("$1,234.50")),
            (Some(money("1234.50")), None)
        );
        assert_eq!(
            cast_money("spend", Some("EUR 12")),
            (Some(money("12.00")), None)
        );
        assert_eq!(
            cast_money("spend", Some("12.34 USD")),
            (Some(money("12.34")), None)
        );
        assert_eq!(
            cast_money("spend", Some("3.14159265358979")),
            (Some(money("3.14")), None)
        );
        assert_eq!(cast_money("spend", Some("")), (None, None));
        assert_eq!(
            cast_money("spend", Some("N/A")),
            (None, Some(Issue::Missing("spend")))
        );
        for bad in ["-1.00", "twelve", "1.2.3", "5000000000000"] {
            let (v, issue) = cast_money("spend", Some(bad));
            assert_eq!(v, None, "{bad}");
            assert!(
                matches!(issue, Some(Issue::Invalid("spend", _))),
                "{bad}: {issue:?}"
            );
        }
    }

    #[test]
    fn dates_in_every_dsp_format() {
        let d = day(2024, 12, 26);
        for s in [
            "2024-12-26",
            "2024/12/26",
            "2024-12-26T00:00:00",
            "12/26/2024",
            " 2024-12-26 ",
        ] {
            assert_eq!(parse_date(s), Ok(d), "{s}");
        }
        assert_eq!(parse_date("2024-02-29"), Ok(day(2024, 2, 29)));
        for bad in [
            "2024-02-30",
            "2023-02-29",
            "26.12.2024",
            "",
            "yesterday",
            "13/26/2024",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_and_status() {
        assert_eq!(trim_id(Some("  abc ")), Some("abc".into()));
        assert_eq!(trim_id(Some("   ")), None);
        assert_eq!(trim_id(Some("N/A")), None);
        assert_eq!(
            normalise_status(Some("ACTIVE")),
            (Some(CampaignStatus::Active), None)
        );
        assert_eq!(
            normalise_status(Some(" paused ")),
            (Some(CampaignStatus::Paused), None)
        );
        assert_eq!(
            normalise_status(Some("Ended")),
            (Some(CampaignStatus::Completed), None)
        );
        assert_eq!(normalise_status(None), (None, None));
        let (s, issue) = normalise_status(Some("Draft"));
        assert_eq!(s, None);
        assert!(matches!(issue, Some(Issue::Invalid("status", m)) if m.contains("Draft")));
    }

    #[test]
    fn spend_usd_comes_from_the_sources_usd_cost_and_never_costs_points() {
        let mut row = delivery();
        row.extra
            .insert(SPEND_USD_EXTRA.to_owned(), "1,337.2351".to_owned());
        let out = run(&row);
        assert_eq!(out.spend_usd, Some(money("1337.24")));
        assert_eq!(out.quality.score, 100, "{:?}", out.quality);

        row.extra
            .insert(SPEND_USD_EXTRA.to_owned(), "n/a".to_owned());
        let out = run(&row);
        assert_eq!(out.spend_usd, None);
        assert_eq!(out.quality.score, 100, "{:?}", out.quality);

        row.extra
            .insert(SPEND_USD_EXTRA.to_owned(), "lots".to_owned());
        let out = run(&row);
        assert_eq!(out.spend_usd, None);
        assert_eq!(out.quality.score, 100, "{:?}", out.quality);
    }

    #[test]
    fn a_clean_row_passes_with_100() {
        let out = run(&delivery());
        assert_eq!(out.campaign_id, "1022334");
        assert_eq!(out.impressions, 183_442);
        assert_eq!(out.spend, money("1234.57"));
        assert_eq!(out.revenue, Some(money("1890.00")));
        assert_eq!(out.currency.as_deref(), Some("EUR"));
        assert_eq!(out.spend_usd, None, "DV360 reports no USD cost");
        assert_eq!(out.date, day(2024, 12, 26));
        assert_eq!(out.entity.entity_type, EntityType::LineItem);
        assert_eq!(out.status, Some(CampaignStatus::Active));
        let q = &out.quality;
        assert_eq!((q.score, q.verdict), (100, QualityVerdict::Pass), "{q:?}");
        assert!(q.reasons.is_empty());
    }

    #[test]
    fn score_components_add_up() {
        // One missing required field (clicks): completeness 40*5/6 = 33.
        let mut row = delivery();
        row.clicks = Some("N/A".into());
        row.conversions = Some("0".into());
        let q = run(&row).quality;
        assert_eq!(
            (q.completeness, q.validity, q.consistency, q.timeliness),
            (33, 30, 20, 10)
        );
        assert_eq!((q.score, q.verdict), (93, QualityVerdict::Pass));

        // Negative impressions: invalid (-10) and spend without impressions (-5).
        let mut row = delivery();
        row.impressions = Some("-100".into());
        let out = run(&row);
        assert_eq!(out.impressions, 0);
        let q = out.quality;
        assert_eq!((q.validity, q.consistency), (20, 5), "{q:?}");
        assert_eq!((q.score, q.verdict), (75, QualityVerdict::Warn));
        assert!(
            q.reasons.iter().any(|r| r.contains("negative")),
            "{:?}",
            q.reasons
        );

        // Unknown status costs validity only.
        let mut row = delivery();
        row.status = Some("Draft".into());
        assert_eq!(run(&row).quality.score, 90);
    }

    #[test]
    fn stale_and_future_rows_lose_timeliness() {
        let mut row = delivery();
        row.date = Some("2024-12-01".into());
        let q = run(&row).quality;
        assert_eq!((q.timeliness, q.score), (0, 90));
        let mut row = delivery();
        row.date = Some("2024-12-30".into());
        assert_eq!(run(&row).quality.timeliness, 0);
        // Exactly at the bound is still fresh.
        let mut row = delivery();
        row.date = Some("2024-12-20".into());
        assert_eq!(run(&row).quality.timeliness, 10);
    }

    #[test]
    fn unkeyable_rows_are_quarantined_whatever_the_score() {
        let mut row = delivery();
        row.date = Some("2024-02-30".into());
        let out = run(&row);
        assert_eq!(out.quality.verdict, QualityVerdict::Quarantine);
        assert!(out.quality.reasons.iter().any(|r| r.contains("2024-02-30")));
        assert_eq!(out.date, row.report_date);

        let mut row = delivery();
        row.campaign_id = Some("   ".into());
        let out = run(&row);
        assert_eq!(out.quality.verdict, QualityVerdict::Quarantine);
        assert!(
            out.quality
                .reasons
                .iter()
                .any(|r| r.contains("no campaign id"))
        );
    }

    #[test]
    fn many_problems_quarantine() {
        let mut row = delivery();
        row.impressions = Some("lots".into());
        row.clicks = Some("-3".into());
        row.spend = Some("free".into());
        let q = run(&row).quality;
        assert_eq!(q.validity, 0);
        assert!(q.score < 70, "{q:?}");
        assert_eq!(q.verdict, QualityVerdict::Quarantine);
    }

    #[test]
    fn entity_falls_back_to_the_campaign() {
        let mut row = delivery();
        row.entity_id = Some(" ".into());
        let out = run(&row);
        assert_eq!(out.entity.entity_type, EntityType::Campaign);
        assert_eq!(out.entity.entity_id, "1022334");
        assert!(
            out.quality
                .reasons
                .iter()
                .any(|r| r == "entity_id: missing")
        );
    }

    #[test]
    fn booking_rows_become_bookings() {
        let mut row = delivery();
        row.dsp_type = DspType::Crm;
        row.row_kind = RowKind::Booking;
        row.date = None;
        row.impressions = None;
        row.clicks = None;
        row.spend = None;
        row.booked_impressions = Some("1,000,000".into());
        row.booked_budget = Some("$12,000.00".into());
        row.booking_revenue = Some("$15,500.005".into());
        row.flight_start = Some("12/01/2024".into());
        row.flight_end = Some("12/31/2024".into());
        let out = run(&row);
        let booking = out.booking.expect("booking");
        assert_eq!(booking.booked_impressions, 1_000_000);
        assert_eq!(booking.booked_budget, money("12000.00"));
        assert_eq!(booking.booking_revenue, money("15500.01"));
        assert_eq!(booking.flight_start, day(2024, 12, 1));
        assert_eq!(booking.flight_end, day(2024, 12, 31));
        assert_eq!(
            out.quality.verdict,
            QualityVerdict::Pass,
            "{:?}",
            out.quality
        );

        row.flight_end = Some("11/30/2024".into());
        let q = run(&row).quality;
        assert_eq!(q.consistency, 10);
        assert!(q.reasons.iter().any(|r| r.contains("before it starts")));
    }

    #[test]
    fn seen_keys_flag_corrections_and_stay_bounded() {
        let key = |e: &str| DedupeKey {
            org_id: 1,
            dsp_type: DspType::Meta,
            entity_id: e.into(),
            date: day(2024, 1, 1),
        };
        let mut seen = SeenKeys::new(2);
        assert!(!seen.observe(&key("a")));
        assert!(seen.observe(&key("a")));
        assert!(!seen.observe(&key("b")));
        assert!(!seen.observe(&key("c")));
        // "a" was the oldest and was forgotten.
        assert!(!seen.observe(&key("a")));
        assert_eq!(seen.keys.len(), 2);
        let row = run(&delivery());
        assert_eq!(row.dedupe_key(7).entity_id, "48213377");
    }

    proptest::proptest! {
        #[test]
        fn any_text_casts_without_panicking(s in ".*") {
            let _ = cast_count("impressions", Some(&s));
            let _ = cast_money("spend", Some(&s));
            let _ = parse_date(&s);
            let _ = normalise_status(Some(&s));
        }

        #[test]
        fn whole_numbers_with_separators_cast_exactly(n in 0i64..=1_000_000_000_000) {
            let with_commas = n
                .to_string()
                .as_bytes()
                .rchunks(3)
                .rev()
                .map(|c| std::str::from_utf8(c).unwrap_or_default())
                .collect::<Vec<_>>()
                .join(",");
            proptest::prop_assert_eq!(cast_count("impressions", Some(&with_commas)), (n, None));
        }

        #[test]
        fn scores_stay_in_range(imp in ".{0,8}", clk in ".{0,8}", spend in ".{0,8}", date in ".{0,12}") {
            let mut row = delivery();
            row.impressions = Some(imp);
            row.clicks = Some(clk);
            row.spend = Some(spend);
            row.date = Some(date);
            let q = run(&row).quality;
            proptest::prop_assert!((0..=100).contains(&q.score));
            proptest::prop_assert_eq!(q.score, q.completeness + q.validity + q.consistency + q.timeliness);
            let expected = if q.score >= 90 { QualityVerdict::Pass } else if q.score >= 70 { QualityVerdict::Warn } else { QualityVerdict::Quarantine };
            if q.verdict != QualityVerdict::Quarantine {
                proptest::prop_assert_eq!(q.verdict, expected);
            }
        }
    }
}
