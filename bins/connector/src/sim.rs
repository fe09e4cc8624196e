//! Deterministic (seeded) simulator of raw DSP and booking report rows as connectors receive
//! them, bad rows of every kind included.
//!
//! Order: day, then org (`1..=orgs`), then `config.dsps` in order, then row. Each (day, org,
//! dsp) is one pull with one data row per campaign (`row_index` from 0); CRM pulls happen on
//! the first day only. Every payload is a JSON object (`application/json`); CSV-origin rows
//! are keyed by the CSV header. What the parser must know:
//!
//! - `dv360`: all values strings; counts may carry thousands separators (`"12,345"`, also in
//!   money: `"1,234.56"`) and a zero count may be `""`; `Date` is `YYYY/MM/DD`. Every DV360
//!   pull ends with one footer row (`footer: true`, `bad: None`, `row_index` after the data
//!   rows, all the data keys), either `{"Date": "Report Time: YYYY/MM/DD HH:MM:SS UTC", every
//!   other value ""}` or `{"Date": "Total", "Impressions", "Clicks", "Total Conversions",
//!   "Media Cost (Advertiser Currency)", "Revenue (Adv Currency)": sums, the rest ""}`.
//! - `ttd`: counts and money are JSON numbers; `Date` is `YYYY-MM-DDT00:00:00`.
//! - `meta`: every value a string; conversions = the `offsite_conversion.fb_pixel_purchase`
//!   action; zero-valued actions, and `actions` itself when empty, are omitted.
//! - `crm`: money like `"$12,345.50"` (`€`/`£` for EUR/GBP orgs), dates `MM/DD/YYYY`, no row
//!   date. `Campaign ID` is the campaign-level id (DV360 insertion order, TTD campaign, Meta
//!   campaign) on the campaign's home DSP: the config's delivery DSPs, round-robin.

use std::{
    collections::{BTreeMap, VecDeque},
    fmt::Write,
};

use chrono::{NaiveDate, TimeDelta, Utc};
use envelope::{
    Date, Money,
    payload::{
        common::{Booking, DspType},
        config::{ChannelDefinition, ChannelKind, ConfigItem},
    },
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::{Value, json};

const CONTENT_TYPE: &str = "application/json";
const META_PAGE_SIZE: i32 = 25;
const STALE_DAYS: i64 = 400;
const UNKNOWN_DSPS: &[&str] = &["yahoo", "xandr", "amazon"];
const CURRENCIES: &[&str] = &["USD", "EUR", "GBP"];
const BRANDS: &[&str] = &[
    "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Wayne", "Tyrell",
];
const TRADES: &[&str] = &["Foods", "Travel", "Retail", "Software", "Pharma", "Finance"];
const THEMES: &[&str] = &["Launch", "Promo", "Holiday", "Retarget", "Brand", "Spring"];
const CHANNELS: &[&str] = &["Display", "Video", "Native", "Audio", "CTV", "Mobile"];
const NOTES: &[&str] = &[
    "IO signed",
    "Rate card: \"premium\", net 30",
    "Pace evenly",
    "",
];

const DV360_KEYS: &[&str] = &[
    "Date",
    "Advertiser ID",
    "Insertion Order ID",
    "Line Item ID",
    "Line Item",
    "Impressions",
    "Clicks",
    "Total Conversions",
    "Media Cost (Advertiser Currency)",
    "Revenue (Adv Currency)",
    "Advertiser Currency",
];
const TTD_KEYS: &[&str] = &[
    "Date",
    "Advertiser ID",
    "Campaign ID",
    "Campaign",
    "Ad Group ID",
    "Ad Group",
    "Impressions",
    "Clicks",
    "Advertiser Cost (Adv Currency)",
    "Partner Cost (USD)",
    "Total Click + View Conversions",
    "Advertiser Currency Code",
];
/// Meta keys besides the optional `actions`.
const META_KEYS: &[&str] = &[
    "date_start",
    "date_stop",
    "account_id",
    "campaign_id",
    "campaign_name",
    "adset_id",
    "adset_name",
    "impressions",
    "clicks",
    "spend",
    "account_currency",
];
const CRM_KEYS: &[&str] = &[
    "Client",
    "Campaign",
    "Campaign ID",
    "Booked Impressions",
    "Booked Budget",
    "Revenue",
    "Flight Start",
    "Flight End",
    "Notes",
];

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seed: the same config yields byte-identical rows.
    pub seed: u64,
    /// Organisations, ids `1..=orgs`.
    pub orgs: u32,
    /// Campaigns per organisation: one row each per pull.
    pub campaigns_per_org: u32,
    /// Report days, ending at `end_date`.
    pub days: u32,
    /// Last report day.
    pub end_date: NaiveDate,
    /// Probability that a data row is made bad (clamped to `0..=1`, NaN = 0).
    pub bad_share: f64,
    /// Sources pulled, in this order, for each org and day.
    pub dsps: Vec<DspType>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            orgs: 5,
            campaigns_per_org: 3,
            days: 7,
            end_date: Utc::now().date_naive(),
            bad_share: 0.05,
            dsps: DspType::ALL.to_vec(),
        }
    }
}

impl SimConfig {
    fn first_day(&self) -> NaiveDate {
        add_days(self.end_date, -i64::from(self.days.saturating_sub(1)))
    }

    fn stale_day(&self) -> NaiveDate {
        add_days(self.end_date, -STALE_DAYS)
    }

    /// The pull after `after` (the first for `None`), or `None` when done.
    fn next_pull(&self, after: Option<PullKey>) -> Option<PullKey> {
        if self.orgs == 0 || self.campaigns_per_org == 0 || self.dsps.is_empty() {
            return None;
        }
        let first = PullKey {
            day: 0,
            org: 1,
            dsp: 0,
        };
        let mut key = after.map_or(first, |k| k.bump(self));
        while key.day < u64::from(self.days) {
            if self.dsps[key.dsp] != DspType::Crm || key.day == 0 {
                return Some(key);
            }
            key = key.bump(self);
        }
        None
    }

    /// Which data rows of a pull go bad, and how: drawn apart from the payloads, so counting
    /// needs no payloads.
    fn fates(&self, key: PullKey) -> Vec<Option<BadKind>> {
        let p = self.bad_share.clamp(0.0, 1.0);
        let p = if p.is_nan() { 0.0 } else { p };
        let mut rng = key.rng(self.seed, 1);
        (0..self.campaigns_per_org)
            .map(|_| rng.random_bool(p).then(|| pick(&mut rng, BadKind::ALL)))
            .collect()
    }
}

/// Ways a data row is spoiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BadKind {
    /// `raw_payload` cut off mid-object: not JSON.
    BrokenJson,
    /// Campaign id and entity id keys removed (CRM: `Campaign ID`).
    MissingField,
    /// Impressions negative (`"-1,200"`, `-1200`).
    NegativeNumber,
    /// Impressions `999999999999999`.
    AbsurdNumber,
    /// An impossible date in the source's format (CRM: `Flight Start`).
    BadDate,
    /// An exact copy of the row before it, which itself has `bad: None`.
    Duplicate,
    /// Row date and `report_date` 400 days before `end_date` (CRM: flight moved with it).
    StaleDate,
    /// `dsp_type` not a known source; payload otherwise valid.
    UnknownDsp,
}

impl BadKind {
    /// Every kind.
    pub const ALL: &[BadKind] = &[
        BadKind::BrokenJson,
        BadKind::MissingField,
        BadKind::NegativeNumber,
        BadKind::AbsurdNumber,
        BadKind::BadDate,
        BadKind::Duplicate,
        BadKind::StaleDate,
        BadKind::UnknownDsp,
    ];

    /// Snake-case name.
    pub fn name(self) -> &'static str {
        match self {
            BadKind::BrokenJson => "broken_json",
            BadKind::MissingField => "missing_field",
            BadKind::NegativeNumber => "negative_number",
            BadKind::AbsurdNumber => "absurd_number",
            BadKind::BadDate => "bad_date",
            BadKind::Duplicate => "duplicate",
            BadKind::StaleDate => "stale_date",
            BadKind::UnknownDsp => "unknown_dsp",
        }
    }
}

/// One raw row as a connector receives it (the fields of `connector.data.raw`).
#[derive(Debug, Clone, PartialEq)]
pub struct SimRow {
    /// Organisation.
    pub org_id: i64,
    /// Identifies the pull: `{dsp}-{org}-{date}-{pull number}-{8 hex}`.
    pub request_id: String,
    /// Source as declared: `dv360`, `ttd`, `meta`, `crm`, or junk for [`BadKind::UnknownDsp`].
    pub dsp_type: String,
    /// The report day asked for.
    pub report_date: NaiveDate,
    /// Position within the pull, from 0 (a duplicate repeats its original's).
    pub row_index: i32,
    /// Always `application/json`.
    pub content_type: String,
    /// The row, a JSON object (except for [`BadKind::BrokenJson`]).
    pub raw_payload: String,
    /// DSP account pulled (`None` for CRM).
    pub account_id: Option<String>,
    /// Result page from 1, 25 rows a page (Meta only).
    pub page: Option<i32>,
    /// Endpoint or file.
    pub source_uri: Option<String>,
    /// How the row was spoiled, if it was.
    pub bad: Option<BadKind>,
    /// A DV360 report footer, not data.
    pub footer: bool,
}

/// What a config yields.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SimCounts {
    /// All rows, footers and duplicate copies included.
    pub rows: u64,
    /// DV360 footer rows.
    pub footers: u64,
    /// Bad rows by kind (for duplicates, the copies).
    pub bad: BTreeMap<BadKind, u64>,
}

/// Counts of what `config` yields; see [`Simulator::counts`].
pub fn expected(config: &SimConfig) -> SimCounts {
    Simulator::counts(config)
}

/// Yields the rows of a [`SimConfig`] lazily, holding one pull at a time.
#[derive(Debug, Clone)]
pub struct Simulator {
    config: SimConfig,
    next: Option<PullKey>,
    pulls: u64,
    buffer: VecDeque<SimRow>,
    /// The org of the last pull, reused while pulls stay with it.
    org: Option<Org>,
}

impl Simulator {
    /// A simulator at the first row.
    pub fn new(config: SimConfig) -> Simulator {
        let next = config.next_pull(None);
        let buffer = VecDeque::new();
        Simulator {
            config,
            next,
            pulls: 0,
            buffer,
            org: None,
        }
    }

    /// Exact number of rows the iterator yields from its start.
    pub fn total_rows(&self) -> u64 {
        Self::counts(&self.config).rows
    }

    /// Row, footer and bad-row counts of `config`, computed without building payloads.
    pub fn counts(config: &SimConfig) -> SimCounts {
        let mut counts = SimCounts::default();
        let mut key = config.next_pull(None);
        while let Some(k) = key {
            for fate in config.fates(k) {
                counts.rows += 1;
                if let Some(kind) = fate {
                    *counts.bad.entry(kind).or_default() += 1;
                    counts.rows += u64::from(kind == BadKind::Duplicate);
                }
            }
            if config.dsps[k.dsp] == DspType::Dv360 {
                counts.rows += 1;
                counts.footers += 1;
            }
            key = config.next_pull(Some(k));
        }
        counts
    }

    /// The rows of one pull, the `number`th.
    fn pull(cfg: &SimConfig, org: &Org, key: PullKey, number: u64) -> Vec<SimRow> {
        let dsp = cfg.dsps[key.dsp];
        let date = add_days(cfg.first_day(), key.day as i64);
        let mut rng = key.rng(cfg.seed, 2);
        let suffix: u32 = rng.random();
        let request_id = format!("{dsp}-{}-{date}-{}-{suffix:08x}", key.org, number);
        let account_id = org.account(dsp);
        let source_uri = match dsp {
            DspType::Dv360 => format!("gs://dv360-reports/{}/{request_id}.csv", org.accounts[0]),
            DspType::Ttd => format!("https://api.thetradedesk.com/v3/myreports/{request_id}.csv"),
            DspType::Meta => format!(
                "https://graph.facebook.com/v21.0/{}/insights?level=adset&since={date}&until={date}",
                org.accounts[2]
            ),
            DspType::Crm => format!("sftp://crm.example.invalid/bookings/org-{}.csv", key.org),
        };
        let row = |row_index: i32, report_date, raw_payload, bad, footer| SimRow {
            org_id: org.id,
            request_id: request_id.clone(),
            dsp_type: dsp.as_str().to_owned(),
            report_date,
            row_index,
            content_type: CONTENT_TYPE.to_owned(),
            raw_payload,
            account_id: account_id.clone(),
            page: (dsp == DspType::Meta).then_some(row_index / META_PAGE_SIZE + 1),
            source_uri: Some(source_uri.clone()),
            bad,
            footer,
        };
        let grouped = rng.random_bool(0.7);
        let mut totals = Delivery::default();
        let mut rows = Vec::new();
        for ((i, c), fate) in org.campaigns.iter().enumerate().zip(cfg.fates(key)) {
            let stale = fate == Some(BadKind::StaleDate);
            let row_date = if stale { cfg.stale_day() } else { date };
            let mut fields = if dsp == DspType::Crm {
                crm_fields(&mut rng, cfg, org, i, row_date)
            } else {
                let d = Delivery::draw(&mut rng, c);
                totals.add(&d);
                delivery_fields(&mut rng, dsp, grouped, org, c, row_date, &d)
            };
            match fate {
                Some(BadKind::MissingField) => fields.retain(|(k, _)| !id_keys(dsp).contains(k)),
                Some(BadKind::NegativeNumber) => map_impressions(&mut fields, |v| match v {
                    Value::Number(n) => json!(-n.as_i64().unwrap_or(1200)),
                    v => json!(format!("-{}", v.as_str().unwrap_or("1,200"))),
                }),
                Some(BadKind::AbsurdNumber) => map_impressions(&mut fields, |v| match v {
                    Value::Number(_) => json!(999_999_999_999_999_i64),
                    _ => json!("999999999999999"),
                }),
                Some(BadKind::BadDate) => set_bad_date(&mut fields, dsp, date),
                _ => {}
            }
            let mut payload = to_json(&fields);
            if fate == Some(BadKind::BrokenJson) {
                payload = truncate(&mut rng, payload);
            }
            let index = i32::try_from(i).unwrap_or(i32::MAX);
            let mut data = row(index, row_date, payload, fate, false);
            if fate == Some(BadKind::UnknownDsp) {
                data.dsp_type = pick(&mut rng, UNKNOWN_DSPS).to_owned();
            }
            if fate == Some(BadKind::Duplicate) {
                rows.push(SimRow {
                    bad: None,
                    ..data.clone()
                });
            }
            rows.push(data);
        }
        if dsp == DspType::Dv360 {
            let payload = to_json(&dv360_footer(&mut rng, grouped, date, &totals));
            let index = i32::try_from(org.campaigns.len()).unwrap_or(i32::MAX);
            rows.push(row(index, date, payload, None, true));
        }
        rows
    }
}

impl Iterator for Simulator {
    type Item = SimRow;

    fn next(&mut self) -> Option<SimRow> {
        loop {
            if let Some(row) = self.buffer.pop_front() {
                return Some(row);
            }
            let key = self.next?;
            self.next = self.config.next_pull(Some(key));
            let org = match self.org.take() {
                Some(org) if org.id == key.org as i64 => org,
                _ => Org::new(self.config.seed, key.org, self.config.campaigns_per_org),
            };
            self.buffer
                .extend(Self::pull(&self.config, &org, key, self.pulls));
            self.pulls += 1;
            self.org = Some(org);
        }
    }
}

/// One pull: day offset from the first day, org id, index into `dsps`.
#[derive(Debug, Clone, Copy)]
struct PullKey {
    day: u64,
    org: u64,
    dsp: usize,
}

impl PullKey {
    fn bump(mut self, cfg: &SimConfig) -> PullKey {
        self.dsp += 1;
        if self.dsp == cfg.dsps.len() {
            self.dsp = 0;
            self.org += 1;
            if self.org > u64::from(cfg.orgs) {
                self.org = 1;
                self.day += 1;
            }
        }
        self
    }

    /// An rng for this pull; `stream` separates independent uses.
    fn rng(self, seed: u64, stream: u64) -> StdRng {
        seeded(seed, &[stream, self.day, self.org, self.dsp as u64])
    }
}

/// A campaign level id and the finest-grain entity under it, on one DSP.
#[derive(Debug, Clone)]
struct Ids {
    campaign: String,
    entity: String,
    entity_name: String,
}

impl Ids {
    fn draw(rng: &mut StdRng, campaign_name: &str, id: fn(&mut StdRng) -> String) -> Ids {
        let (campaign, entity) = (id(rng), id(rng));
        let entity_name = format!("{campaign_name} | {}", pick(rng, CHANNELS));
        Ids {
            campaign,
            entity,
            entity_name,
        }
    }
}

/// A campaign: ids on DV360, TTD and Meta (in that order) and its delivery profile.
#[derive(Debug, Clone)]
struct Campaign {
    name: String,
    ids: [Ids; 3],
    impressions: f64,
    ctr: f64,
    cvr: f64,
    cpm: f64,
    markup: f64,
}

impl Campaign {
    fn ids(&self, dsp: DspType) -> &Ids {
        &self.ids[slot(dsp)]
    }
}

/// An organisation, derived from the seed and its id alone.
#[derive(Debug, Clone)]
struct Org {
    id: i64,
    name: String,
    currency: &'static str,
    /// DV360 advertiser, TTD advertiser, Meta ad account.
    accounts: [String; 3],
    campaigns: Vec<Campaign>,
}

impl Org {
    fn new(seed: u64, id: u64, campaigns: u32) -> Org {
        let mut rng = seeded(seed, &[0, id]);
        let n = id as usize - 1;
        let brand = BRANDS[n % BRANDS.len()];
        let mut name = format!("{brand} {}", TRADES[n % TRADES.len()]);
        if n >= BRANDS.len() {
            name = format!("{name} {id}");
        }
        let campaigns = (1..=campaigns)
            .map(|k| {
                let name = format!("{brand} {} #{k}", pick(&mut rng, THEMES));
                let ids = [
                    Ids::draw(&mut rng, &name, |r| digits(r, 9)),
                    Ids::draw(&mut rng, &name, |r| alnum(r, 7)),
                    Ids::draw(&mut rng, &name, |r| format!("2385{}", digits(r, 14))),
                ];
                let (lo, hi) = (1_000_f64.ln(), 500_000_f64.ln());
                Campaign {
                    name,
                    ids,
                    impressions: rng.random_range(lo..hi).exp(),
                    ctr: rng.random_range(0.0005..0.02),
                    cvr: rng.random_range(0.01..0.08),
                    cpm: rng.random_range(1.0..15.0),
                    markup: rng.random_range(1.1..1.6),
                }
            })
            .collect();
        let currency = pick(&mut rng, CURRENCIES);
        let accounts = [
            digits(&mut rng, 7),
            alnum(&mut rng, 7),
            format!("act_{}", digits(&mut rng, 15)),
        ];
        Org {
            id: id as i64,
            name,
            currency,
            accounts,
            campaigns,
        }
    }

    fn account(&self, dsp: DspType) -> Option<String> {
        (dsp != DspType::Crm).then(|| self.accounts[slot(dsp)].clone())
    }
}

/// One day of delivery for one row.
#[derive(Debug, Default)]
struct Delivery {
    impressions: i64,
    clicks: i64,
    conversions: i64,
    spend: f64,
    revenue: f64,
}

impl Delivery {
    fn draw(rng: &mut StdRng, c: &Campaign) -> Delivery {
        let impressions = (c.impressions * rng.random_range(0.75..1.25)).round();
        let impressions = impressions.clamp(1_000.0, 500_000.0);
        let clicks = (impressions * c.ctr * rng.random_range(0.8..1.2)).round();
        let conversions = (clicks * c.cvr * rng.random_range(0.5..1.5)).round();
        let cpm = (c.cpm * rng.random_range(0.95..1.05)).clamp(1.0, 15.0);
        let spend = impressions / 1000.0 * cpm;
        Delivery {
            impressions: impressions as i64,
            clicks: clicks as i64,
            conversions: conversions as i64,
            spend,
            revenue: spend * c.markup,
        }
    }

    fn add(&mut self, d: &Delivery) {
        self.impressions += d.impressions;
        self.clicks += d.clicks;
        self.conversions += d.conversions;
        self.spend += d.spend;
        self.revenue += d.revenue;
    }
}

/// A payload's keys and values, in header order.
type Fields = Vec<(&'static str, Value)>;

fn record(keys: &[&'static str], values: Vec<Value>) -> Fields {
    debug_assert_eq!(keys.len(), values.len());
    keys.iter().copied().zip(values).collect()
}

fn delivery_fields(
    rng: &mut StdRng,
    dsp: DspType,
    grouped: bool,
    org: &Org,
    c: &Campaign,
    date: NaiveDate,
    d: &Delivery,
) -> Fields {
    let (ids, account, currency) = (c.ids(dsp), &org.accounts[slot(dsp)], org.currency);
    match dsp {
        DspType::Ttd => {
            let usd = d.spend * usd_rate(currency);
            let values = vec![
                json!(date.format("%Y-%m-%dT00:00:00").to_string()),
                json!(account),
                json!(ids.campaign),
                json!(c.name),
                json!(ids.entity),
                json!(ids.entity_name),
                json!(d.impressions),
                json!(d.clicks),
                json!((d.spend * 1e7).round() / 1e7),
                json!((usd * 1e4).round() / 1e4),
                json!(d.conversions),
                json!(currency),
            ];
            record(TTD_KEYS, values)
        }
        DspType::Meta => {
            let day = date.format("%Y-%m-%d").to_string();
            let values = vec![
                json!(day),
                json!(day),
                json!(account),
                json!(ids.campaign),
                json!(c.name),
                json!(ids.entity),
                json!(ids.entity_name),
                json!(d.impressions.to_string()),
                json!(d.clicks.to_string()),
                json!(format!("{:.2}", d.spend)),
                json!(currency),
            ];
            let mut fields = record(META_KEYS, values);
            let purchase = "offsite_conversion.fb_pixel_purchase";
            let actions: Vec<Value> = [("link_click", d.clicks), (purchase, d.conversions)]
                .into_iter()
                .filter(|&(_, v)| v > 0)
                .map(|(t, v)| json!({"action_type": t, "value": v.to_string()}))
                .collect();
            if !actions.is_empty() {
                fields.push(("actions", Value::Array(actions)));
            }
            fields
        }
        _ => {
            let mut count = |v: i64| match v {
                0 if rng.random_bool(0.5) => json!(""),
                v if grouped => json!(thousands(v)),
                v => json!(v.to_string()),
            };
            let values = vec![
                json!(date.format("%Y/%m/%d").to_string()),
                json!(account),
                json!(ids.campaign),
                json!(ids.entity),
                json!(ids.entity_name),
                count(d.impressions),
                count(d.clicks),
                count(d.conversions),
                json!(money(d.spend, grouped)),
                json!(money(d.revenue, grouped)),
                json!(currency),
            ];
            record(DV360_KEYS, values)
        }
    }
}

fn dv360_footer(rng: &mut StdRng, grouped: bool, date: NaiveDate, totals: &Delivery) -> Fields {
    let mut fields = record(DV360_KEYS, vec![json!(""); DV360_KEYS.len()]);
    if rng.random_bool(0.5) {
        let day = add_days(date, 1).format("%Y/%m/%d");
        let (m, s) = (rng.random_range(0..60), rng.random_range(0..60));
        set(
            &mut fields,
            "Date",
            json!(format!("Report Time: {day} 03:{m:02}:{s:02} UTC")),
        );
    } else {
        let count = |v: i64| if grouped { thousands(v) } else { v.to_string() };
        let sums = [
            ("Date", "Total".to_owned()),
            ("Impressions", count(totals.impressions)),
            ("Clicks", count(totals.clicks)),
            ("Total Conversions", count(totals.conversions)),
            (
                "Media Cost (Advertiser Currency)",
                money(totals.spend, grouped),
            ),
            ("Revenue (Adv Currency)", money(totals.revenue, grouped)),
        ];
        for (key, value) in sums {
            set(&mut fields, key, json!(value));
        }
    }
    fields
}

fn crm_fields(rng: &mut StdRng, cfg: &SimConfig, org: &Org, i: usize, date: NaiveDate) -> Fields {
    let c = &org.campaigns[i];
    let delivery: Vec<DspType> = cfg
        .dsps
        .iter()
        .copied()
        .filter(|&d| d != DspType::Crm)
        .collect();
    let home = delivery
        .get(i % delivery.len().max(1))
        .copied()
        .unwrap_or(DspType::Dv360);
    let start = add_days(date, -rng.random_range(1..=10));
    let end = add_days(date, i64::from(cfg.days) - 1 + rng.random_range(5..=30));
    let flight_days = (end - start).num_days() as f64 + 1.0;
    let booked = (c.impressions * flight_days * rng.random_range(0.9..1.3) / 1000.0).round();
    let budget = booked * c.cpm;
    let symbol = match org.currency {
        "EUR" => "€",
        "GBP" => "£",
        _ => "$",
    };
    record(
        CRM_KEYS,
        vec![
            json!(org.name),
            json!(c.name),
            json!(c.ids(home).campaign),
            json!(thousands(booked as i64 * 1000)),
            json!(format!("{symbol}{}", money(budget, true))),
            json!(format!("{symbol}{}", money(budget * c.markup, true))),
            json!(start.format("%m/%d/%Y").to_string()),
            json!(end.format("%m/%d/%Y").to_string()),
            json!(pick(rng, NOTES)),
        ],
    )
}

/// How a simulated booking relates to the simulated delivery, so the demo's pacing and margin
/// vary: about 100 % pacing; booked 1.6× what is delivered (pacing ~62 %: under); 0.65×
/// (pacing ~150 %: over); or a flight ending on the last simulated day with revenue only 5 %
/// above the media budget (margin falls below 15 % in the flight's last days).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pacing {
    /// Booked what is delivered.
    OnTrack,
    /// Booked more than is delivered.
    Under,
    /// Booked less than is delivered.
    Over,
    /// Delivered as booked, at a thin margin.
    LowMargin,
}

/// A booking the simulator publishes on `config.changes`.
#[derive(Debug, Clone, PartialEq)]
pub struct SimBooking {
    /// Organisation.
    pub org_id: i64,
    /// How it relates to the delivery.
    pub pacing: Pacing,
    /// The booking.
    pub booking: Booking,
}

/// The bookings of `config`: one per simulated campaign and delivery DSP (each DSP reports
/// the campaign under its own id, and gold joins bookings by that id), for the whole
/// campaign. Flights start on the first simulated day and run twice the simulated days
/// (ending on the last simulated day for [`Pacing::LowMargin`]); amounts follow the
/// campaign's delivery profile and [`Pacing`], which cycles over campaigns and DSPs.
pub fn bookings(config: &SimConfig) -> Vec<SimBooking> {
    let delivery: Vec<DspType> = config
        .dsps
        .iter()
        .copied()
        .filter(|&d| d != DspType::Crm)
        .collect();
    let start = config.first_day();
    let days = i64::from(config.days.max(1));
    let mut out = Vec::new();
    for org_id in 1..=u64::from(config.orgs) {
        let org = Org::new(config.seed, org_id, config.campaigns_per_org);
        for (i, c) in org.campaigns.iter().enumerate() {
            for &dsp in &delivery {
                let profile = [
                    Pacing::OnTrack,
                    Pacing::Under,
                    Pacing::Over,
                    Pacing::LowMargin,
                ][(org_id as usize + i + slot(dsp)) % 4];
                let (factor, end, markup) = match profile {
                    Pacing::OnTrack => (1.0, add_days(config.end_date, days), c.markup),
                    Pacing::Under => (1.6, add_days(config.end_date, days), c.markup),
                    Pacing::Over => (0.65, add_days(config.end_date, days), c.markup),
                    Pacing::LowMargin => (1.0, config.end_date, 1.05),
                };
                let flight_days = (end - start).num_days() as f64 + 1.0;
                let daily = c.impressions.clamp(1_000.0, 500_000.0);
                let booked = (daily * flight_days * factor).round();
                let budget = booked / 1000.0 * c.cpm.clamp(1.0, 15.0);
                let amount = |x: f64| format!("{x:.2}").parse::<Money>().unwrap_or(Money::ZERO);
                out.push(SimBooking {
                    org_id: org.id,
                    pacing: profile,
                    booking: Booking {
                        campaign_id: c.ids(dsp).campaign.clone(),
                        line_item_id: None,
                        booked_impressions: booked as i64,
                        booked_budget: amount(budget),
                        booking_revenue: amount(budget * markup),
                        flight_start: Date(start),
                        flight_end: Date(end),
                        currency: Some(org.currency.to_owned()),
                    },
                });
            }
        }
    }
    out
}

/// The in-app channel every simulated org gets (`channel/inbox`, audience `ops`), so alerts
/// of the built-in rules (which name no channel) become in-app notifications.
pub fn inbox() -> ChannelDefinition {
    ChannelDefinition {
        channel_id: "inbox".to_owned(),
        kind: ChannelKind::InApp,
        target: "ops".to_owned(),
        secret_ref: None,
        rate_limit_per_minute: None,
        enabled: true,
    }
}

/// Everything the simulator publishes on `config.changes` for `config`: per org, its
/// bookings ([`bookings`]) and its in-app channel ([`inbox`]), as (org, item).
pub fn config_items(config: &SimConfig) -> Vec<(i64, ConfigItem)> {
    let mut items: Vec<(i64, ConfigItem)> = bookings(config)
        .into_iter()
        .map(|b| (b.org_id, ConfigItem::Booking(b.booking)))
        .collect();
    for org_id in 1..=i64::from(config.orgs) {
        items.push((org_id, ConfigItem::ChannelDefinition(inbox())));
    }
    items
}

/// Index of a delivery DSP in [`Org::accounts`] and [`Campaign::ids`] (CRM maps to DV360).
fn slot(dsp: DspType) -> usize {
    match dsp {
        DspType::Ttd => 1,
        DspType::Meta => 2,
        DspType::Dv360 | DspType::Crm => 0,
    }
}

/// Keys removed by [`BadKind::MissingField`].
fn id_keys(dsp: DspType) -> &'static [&'static str] {
    match dsp {
        DspType::Dv360 => &["Insertion Order ID", "Line Item ID"],
        DspType::Ttd => &["Campaign ID", "Ad Group ID"],
        DspType::Meta => &["campaign_id", "adset_id"],
        DspType::Crm => &["Campaign ID"],
    }
}

fn map_impressions(fields: &mut Fields, f: impl FnOnce(Value) -> Value) {
    let keys = ["Impressions", "impressions", "Booked Impressions"];
    if let Some((_, v)) = fields.iter_mut().find(|(k, _)| keys.contains(k)) {
        *v = f(v.take());
    }
}

fn set_bad_date(fields: &mut Fields, dsp: DspType, date: NaiveDate) {
    let y = date.format("%Y");
    match dsp {
        DspType::Dv360 => set(fields, "Date", json!(format!("{y}/02/30"))),
        DspType::Ttd => set(fields, "Date", json!(format!("{y}-02-30T00:00:00"))),
        DspType::Meta => {
            set(fields, "date_start", json!(format!("{y}-13-01")));
            set(fields, "date_stop", json!(format!("{y}-13-01")));
        }
        DspType::Crm => set(fields, "Flight Start", json!(format!("02/30/{y}"))),
    }
}

fn set(fields: &mut Fields, key: &str, value: Value) {
    if let Some((_, v)) = fields.iter_mut().find(|(k, _)| *k == key) {
        *v = value;
    }
}

/// Serialises in header order, whatever serde_json's map features.
fn to_json(fields: &[(&'static str, Value)]) -> String {
    let mut out = String::with_capacity(512);
    for (i, (key, value)) in fields.iter().enumerate() {
        let sep = if i == 0 { '{' } else { ',' };
        write!(out, "{sep}{}:{value}", Value::from(*key)).expect("writing to a String");
    }
    out.push('}');
    out
}

/// A proper prefix of a JSON object, which never parses.
fn truncate(rng: &mut StdRng, mut s: String) -> String {
    let mut cut = rng.random_range(s.len() / 3..s.len() - 1);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s
}

fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::from(if n < 0 { "-" } else { "" });
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn money(x: f64, grouped: bool) -> String {
    let cents = (x * 100.0).round() as i64;
    let int = if grouped {
        thousands(cents / 100)
    } else {
        (cents / 100).to_string()
    };
    format!("{int}.{:02}", (cents % 100).abs())
}

fn usd_rate(currency: &str) -> f64 {
    match currency {
        "EUR" => 1.08,
        "GBP" => 1.27,
        _ => 1.0,
    }
}

fn add_days(date: NaiveDate, days: i64) -> NaiveDate {
    date.checked_add_signed(TimeDelta::days(days))
        .unwrap_or(date)
}

fn pick<T: Copy>(rng: &mut StdRng, xs: &[T]) -> T {
    xs[rng.random_range(0..xs.len())]
}

fn digits(rng: &mut StdRng, n: usize) -> String {
    let first = char::from(b'1' + rng.random_range(0..9_u8));
    let rest = (1..n).map(|_| char::from(b'0' + rng.random_range(0..10_u8)));
    std::iter::once(first).chain(rest).collect()
}

fn alnum(rng: &mut StdRng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(pick(rng, b"abcdefghijklmnopqrstuvwxyz0123456789")))
        .collect()
}

/// An rng seeded from `seed` and `parts` through splitmix64.
fn seeded(seed: u64, parts: &[u64]) -> StdRng {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    StdRng::seed_from_u64(parts.iter().fold(mix(seed), |h, &p| mix(h ^ mix(p))))
}
#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn config(seed: u64, bad_share: f64) -> SimConfig {
        let end_date = NaiveDate::from_ymd_opt(2024, 12, 26).expect("valid date");
        SimConfig {
            seed,
            bad_share,
            end_date,
            ..SimConfig::default()
        }
    }

    fn rows(cfg: &SimConfig) -> Vec<SimRow> {
        Simulator::new(cfg.clone()).collect()
    }

    fn object(row: &SimRow) -> serde_json::Map<String, Value> {
        match serde_json::from_str(&row.raw_payload) {
            Ok(Value::Object(map)) => map,
            other => panic!("not a JSON object: {other:?} in {row:?}"),
        }
    }

    #[test]
    fn bookings_cover_every_delivered_campaign_with_varied_pacing_and_margin() {
        let cfg = config(7, 0.0);
        let bookings = bookings(&cfg);
        let delivered: BTreeSet<(i64, String)> = rows(&cfg)
            .iter()
            .filter(|r| r.dsp_type != "crm" && !r.footer)
            .filter_map(|r| {
                let o = object(r);
                ["Insertion Order ID", "Campaign ID", "campaign_id"]
                    .iter()
                    .find_map(|k| o.get(*k).and_then(Value::as_str))
                    .map(|c| (r.org_id, c.to_owned()))
            })
            .collect();
        let booked: BTreeSet<(i64, String)> = bookings
            .iter()
            .map(|b| (b.org_id, b.booking.campaign_id.clone()))
            .collect();
        assert_eq!(booked, delivered, "one booking per delivered campaign id");
        let kinds: BTreeSet<Pacing> = bookings.iter().map(|b| b.pacing).collect();
        assert_eq!(kinds.len(), 4, "every pacing profile appears");
        for b in &bookings {
            let k = &b.booking;
            assert!(k.flight_start <= k.flight_end);
            assert!(k.booked_impressions > 0);
            assert!(k.booking_revenue > k.booked_budget);
            assert_eq!(k.flight_start.0, cfg.first_day());
        }
        let items = config_items(&cfg);
        assert_eq!(items.len(), bookings.len() + cfg.orgs as usize);
        assert_eq!(bookings, super::bookings(&cfg), "deterministic");
    }

    #[test]
    fn deterministic_per_seed() {
        assert_eq!(rows(&config(7, 0.2)), rows(&config(7, 0.2)));
        assert_ne!(rows(&config(7, 0.2)), rows(&config(8, 0.2)));
    }

    #[test]
    fn counts_match_iteration() {
        let empty = SimConfig {
            days: 0,
            ..config(4, 0.5)
        };
        for cfg in [config(1, 0.0), config(2, 0.3), config(3, 1.0), empty] {
            let all = rows(&cfg);
            let mut bad = BTreeMap::new();
            for kind in all.iter().filter_map(|r| r.bad) {
                *bad.entry(kind).or_default() += 1;
            }
            let footers = all.iter().filter(|r| r.footer).count() as u64;
            let rows = all.len() as u64;
            assert_eq!(Simulator::new(cfg.clone()).total_rows(), rows);
            assert_eq!(expected(&cfg), SimCounts { rows, footers, bad });
        }
    }

    #[test]
    fn clean_rows_carry_the_contract_keys() {
        let all = rows(&config(5, 0.0));
        assert!(
            all.iter()
                .all(|r| r.bad.is_none() && r.content_type == CONTENT_TYPE)
        );
        for row in all.iter().filter(|r| !r.footer) {
            let mut keys: BTreeSet<String> = object(row).keys().cloned().collect();
            let expected = match row.dsp_type.as_str() {
                "dv360" => DV360_KEYS,
                "ttd" => TTD_KEYS,
                "meta" => {
                    keys.remove("actions");
                    META_KEYS
                }
                _ => CRM_KEYS,
            };
            assert_eq!(
                keys,
                expected.iter().map(|k| k.to_string()).collect(),
                "{row:?}"
            );
        }
        let footers: Vec<_> = all.iter().filter(|r| r.footer).collect();
        assert_eq!(footers.len(), 7 * 5);
        for footer in footers {
            assert_eq!(footer.dsp_type, "dv360");
            let date = object(footer)["Date"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(
                date == "Total" || date.starts_with("Report Time: "),
                "{date}"
            );
        }
    }

    #[test]
    fn every_bad_kind_appears_as_advertised() {
        let cfg = config(9, 1.0);
        let all = rows(&cfg);
        let kinds: Vec<BadKind> = all
            .iter()
            .filter_map(|r| r.bad)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(kinds, BadKind::ALL);
        for (i, row) in all.iter().enumerate() {
            let text = &row.raw_payload;
            match row.bad {
                Some(BadKind::BrokenJson) => assert!(serde_json::from_str::<Value>(text).is_err()),
                Some(BadKind::Duplicate) => {
                    assert_eq!(
                        all[i - 1],
                        SimRow {
                            bad: None,
                            ..row.clone()
                        }
                    );
                }
                Some(BadKind::StaleDate) => assert_eq!(row.report_date, cfg.stale_day()),
                Some(BadKind::UnknownDsp) => assert!(row.dsp_type.parse::<DspType>().is_err()),
                Some(BadKind::MissingField) => {
                    let map = object(row);
                    assert!(
                        id_keys(DspType::Dv360)
                            .iter()
                            .chain(id_keys(DspType::Meta))
                            .chain(id_keys(DspType::Ttd))
                            .all(|k| !map.contains_key(*k))
                    );
                }
                Some(BadKind::NegativeNumber) => {
                    assert!(text.contains(":-") || text.contains(":\"-"))
                }
                Some(BadKind::AbsurdNumber) => assert!(text.contains("999999999999999")),
                Some(BadKind::BadDate) => assert!(
                    ["02/30", "02-30", "-13-01"]
                        .iter()
                        .any(|d| text.contains(d))
                ),
                None => assert!(row.footer || all[i + 1].bad == Some(BadKind::Duplicate)),
            }
            if row.bad != Some(BadKind::BrokenJson) {
                object(row);
            }
        }
    }

    #[test]
    fn pulls_are_contiguous_and_ordered() {
        let all = rows(&config(11, 0.3));
        let org1: Vec<&SimRow> = all.iter().filter(|r| r.org_id == 1).collect();
        let mut seen = BTreeSet::new();
        for pair in org1.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a.request_id == b.request_id {
                let dup = b.bad == Some(BadKind::Duplicate) && b.row_index == a.row_index;
                assert!(dup || b.row_index == a.row_index + 1);
            } else {
                assert!(seen.insert(&a.request_id), "pull {} split", a.request_id);
                assert_eq!(b.row_index, 0);
            }
        }
        let days: Vec<NaiveDate> = all
            .iter()
            .filter(|r| r.bad.is_none())
            .map(|r| r.report_date)
            .collect();
        assert!(days.is_sorted());
    }

    #[test]
    fn meta_pages_and_crm_on_the_first_day_only() {
        let cfg = SimConfig {
            campaigns_per_org: 30,
            ..config(3, 0.0)
        };
        let all = rows(&cfg);
        for row in &all {
            match row.dsp_type.as_str() {
                "meta" => assert_eq!(row.page, Some(row.row_index / 25 + 1)),
                "crm" => assert_eq!(row.report_date, cfg.first_day()),
                _ => assert_eq!(row.page, None),
            }
        }
        assert!(all.iter().any(|r| r.page == Some(2)));
        assert_eq!(all.iter().filter(|r| r.dsp_type == "crm").count(), 5 * 30);
    }

    #[test]
    fn number_formats() {
        assert_eq!(
            (thousands(1_234_567), thousands(-1200), thousands(999)),
            ("1,234,567".into(), "-1,200".into(), "999".into())
        );
        assert_eq!(
            (money(12_345.5, true), money(12_345.5, false)),
            ("12,345.50".into(), "12345.50".into())
        );
    }
}
