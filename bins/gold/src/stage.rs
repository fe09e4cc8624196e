//! Gold's stage: silver rows and bookings into daily, weekly and monthly aggregates per
//! campaign (and per line item for line-item rows), joined with the booking and carrying the
//! derived metrics of [`crate::formulas`].
//!
//! # What is emitted, and as of which day
//!
//! - A delivery row (verdict pass or warn) is stored under silver's dedupe key, replacing a
//!   row with the same key (a correction), and the three periods containing the row's date
//!   are emitted with `trigger = update`. Flight-to-date figures (pacing, margin, projection)
//!   are computed **as of the row's date**: delivery of the flight up to and including that
//!   day.
//! - A booking (from `config.changes`, or a CRM booking row) is stored and the periods of its
//!   scope are emitted as of today clamped into the flight. A config booking wins over a
//!   CRM one for the same campaign and line item; a deleted config booking hides both.
//! - Every `--flush-interval-secs`, each active booking (flight includes today or ended
//!   yesterday) whose org belongs to a partition this instance owns is emitted as of today
//!   with `trigger = flush`: day rollovers move pacing on even when no row arrives.
//! - Quarantined rows and config changes other than bookings change nothing; their offsets
//!   are still claimed.
//!
//! "Today" is the UTC date.
//!
//! # Counting each input once
//!
//! Every change is one PostgreSQL statement that also advances the input partition's next
//! offset (see [`crate::store`]). A replayed record (gold crashed after the change, before
//! its offset was committed) changes nothing, but its aggregates are emitted again from the
//! stored state, so a crash between the change and the acknowledgement of its outputs loses
//! nothing either.
//!
//! Rows' changes are group-committed: a row's aggregates are computed in its lane's open
//! transaction, and the row completes (aggregates produced, offset stored) only once that
//! transaction is committed (`--commit-linger-ms`, `--commit-max-writes`).

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, OnceLock},
    time::Duration,
};

use envelope::{
    Date, Event, Money, Timestamp,
    payload::{
        common::{Booking, EntityType},
        config::{ConfigChange, ConfigItem, ConfigOp},
        gold::{AggregateReady, DerivedMetrics, Trigger},
        silver::{ProcessedRow, QualityVerdict},
    },
};
use pgstore::GroupCommit;
use runtime::{Late, Outputs, Position, ProcessError, Processor, Tick};
use rust_decimal::Decimal;
use topics::{ConsumerGroup, PartitionKey, Topic, partition_for};

use crate::{
    batch::{Batches, Queued, Reply, Settler},
    formulas::{self, Flight, periods_of},
    metrics::GoldMetrics,
    store::{BookingKey, BookingSource, DayTotals, GoldStore, RowState, Tx, Via},
};

/// Gold's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct GoldSettings {
    /// PostgreSQL connection string of gold's state (migrated at start).
    #[arg(
        long,
        env = "GOLD_DATABASE_URL",
        hide_env_values = true,
        default_value = "host=127.0.0.1 user=postgres dbname=postgres"
    )]
    pub database_url: String,
    /// Connections to PostgreSQL; input partitions are spread over them. Each is a
    /// group-commit lane for silver rows, with one autocommit connection beside it.
    #[arg(long, env = "GOLD_DATABASE_CONNECTIONS", default_value_t = 4)]
    pub database_connections: usize,
    /// How long a lane's transaction gathers rows after its first write before it commits
    /// (rows' outputs wait for the commit: this is latency traded for fewer WAL flushes).
    #[arg(long, env = "GOLD_COMMIT_LINGER_MS", default_value_t = 5)]
    pub commit_linger_ms: u64,
    /// A lane's transaction commits at once when it holds this many writes.
    #[arg(long, env = "GOLD_COMMIT_MAX_WRITES", default_value_t = 1000)]
    pub commit_max_writes: usize,
    /// Most silver inputs a lane writes in one statement (those queued while its previous
    /// batch ran); each campaign and day of a batch is read and emitted once.
    #[arg(long, env = "GOLD_MAX_BATCH_ROWS", default_value_t = 500)]
    pub max_batch_rows: usize,
    /// Seconds between flushes of active bookings (0: no flush).
    #[arg(long, env = "GOLD_FLUSH_INTERVAL_SECS", default_value_t = 300)]
    pub flush_interval_secs: u64,
}

impl GoldSettings {
    /// The defaults on `database_url`, without the periodic flush (tests).
    pub fn for_tests(database_url: String) -> GoldSettings {
        GoldSettings {
            database_url,
            database_connections: 2,
            commit_linger_ms: 5,
            commit_max_writes: 1000,
            max_batch_rows: 500,
            flush_interval_secs: 0,
        }
    }
}

runtime::inputs! {
    /// What gold consumes: silver rows and configuration changes.
    pub enum GoldInput {
        /// A typed, scored row.
        Row(ProcessedRow),
        /// A configuration change (bookings matter to gold).
        Config(ConfigChange),
    }
}

/// The gold stage.
#[derive(Debug)]
pub struct Gold {
    settings: GoldSettings,
    store: OnceLock<Arc<GoldStore>>,
    batches: OnceLock<Batches>,
    metrics: GoldMetrics,
}

impl Gold {
    /// Gold on `settings`; the store is connected and migrated by [`Processor::start`].
    pub fn new(settings: GoldSettings) -> Gold {
        Gold {
            settings,
            store: OnceLock::new(),
            batches: OnceLock::new(),
            metrics: GoldMetrics::default(),
        }
    }

    /// Gold's own counters (shared with the running stage).
    pub fn metrics(&self) -> GoldMetrics {
        self.metrics.clone()
    }

    fn store(&self) -> Result<&GoldStore, ProcessError> {
        self.store.get().map(Arc::as_ref).ok_or_else(not_started)
    }

    /// Emit the aggregates of `target` for the periods containing `day`, read in `tx`.
    async fn emit_campaign(
        &self,
        tx: &Tx,
        out: &mut Outputs<'_>,
        target: Target<'_>,
        day: Day,
        trigger: Trigger,
    ) -> Result<(), ProcessError> {
        // The same reads as a batch's, for one campaign: the bookings decide the flight, and
        // so the days to read.
        let (org_id, campaign) = (target.org_id, target.campaign_id);
        let bookings: Bookings = GoldStore::bookings(tx, &[(org_id, campaign)])
            .await?
            .into_iter()
            .map(|(_, _, line_item, booking)| (line_item, booking))
            .collect();
        let (from, to) = target.window(day, &bookings);
        let days: Vec<DayTotals> = GoldStore::days(tx, &[(org_id, campaign, from, to)])
            .await?
            .into_iter()
            .map(|(_, _, totals)| totals)
            .collect();
        for aggregate in target.aggregates(day, &days, &bookings, trigger)? {
            if trigger == Trigger::Flush {
                out.emit_new(target.org_id, aggregate)?;
            } else {
                // Caused by the input (same org): ids derived from it, so a replay
                // re-emits the same event ids and downstream dedupe drops repeats.
                out.emit(aggregate)?;
            }
        }
        Ok(())
    }

    /// A silver row joins its lane's next batch; it completes, with its aggregates, once
    /// that batch is committed (see [`crate::batch`]).
    fn on_row(&self, e: Event<ProcessedRow>, out: &mut Outputs<'_>) -> Result<(), ProcessError> {
        let at = out.input_position()?;
        let batches = self.batches.get().ok_or_else(not_started)?;
        let reply = batches.submit(at.partition, Queued::new(at, e.metadata.org_id, e.payload));
        out.defer_outputs(async move {
            let aggregates = reply.await?;
            let late: Late = Box::new(move |out: &mut Outputs<'_>| {
                // Caused by the input: ids derived from it, so a replay re-emits the same
                // event ids.
                aggregates.into_iter().try_for_each(|a| out.emit(a))
            });
            Ok(late)
        });
        Ok(())
    }

    async fn on_config(
        &self,
        e: Event<ConfigChange>,
        out: &mut Outputs<'_>,
    ) -> Result<(), ProcessError> {
        let at = out.input_position()?;
        let store = self.store()?;
        let ConfigItem::Booking(booking) = &e.payload.change else {
            store.skip(Via::Autocommit, at).await?;
            return Ok(());
        };
        let deleted = e.payload.op == ConfigOp::Delete;
        let org_id = e.metadata.org_id;
        store
            .put_booking(
                Via::Autocommit,
                at,
                org_id,
                booking,
                BookingSource::Config,
                e.payload.version,
                deleted,
            )
            .await?;
        let target = Target::booking(org_id, &booking.campaign_id, booking.line_item_id.clone());
        // The org's rows read before this booking are committed and completed first, so
        // their aggregates (without it) go out before these (with it): the last update of a
        // period is never the older state. Rows read later see the booking.
        store.commit_now(target.partition()).await;
        let tx = store.lane(target.partition()).await?;
        self.emit_campaign(&tx, out, target, Day::Today, Trigger::Update)
            .await?;
        drop(tx);
        // The audit trail of the applied booking, after the aggregates (their ids unchanged).
        out.emit(runtime::audit::config_applied(Self::GROUP.name(), &e))
    }
}

fn not_started() -> ProcessError {
    ProcessError::retryable("GOLD_NOT_STARTED", "the store is not ready")
}

/// Whose aggregates to emit: a campaign of an org, and some of its line items.
struct Target<'a> {
    org_id: i64,
    campaign_id: &'a str,
    line_items: Vec<String>,
    /// Also the campaign as a whole.
    whole_campaign: bool,
}

impl<'a> Target<'a> {
    /// A row's scope: the whole campaign, and the row's line item if it is one.
    fn row(org_id: i64, campaign_id: &'a str, line_item: Option<String>) -> Self {
        Target {
            org_id,
            campaign_id,
            line_items: line_item.into_iter().collect(),
            whole_campaign: true,
        }
    }

    /// A booking's scope: its line item, or the whole campaign.
    fn booking(org_id: i64, campaign_id: &'a str, line_item: Option<String>) -> Self {
        Target {
            org_id,
            campaign_id,
            whole_campaign: line_item.is_none(),
            line_items: line_item.into_iter().collect(),
        }
    }

    /// The org's partition of silver.data.processed (picks the store connection).
    fn partition(&self) -> i32 {
        row_partition(self.org_id)
    }

    /// The scopes to emit: the whole campaign (`None`) and each line item.
    fn scopes(&self) -> impl Iterator<Item = Option<&str>> {
        let whole = self.whole_campaign.then_some(None);
        whole
            .into_iter()
            .chain(self.line_items.iter().map(|l| Some(l.as_str())))
    }

    /// The days to read for aggregates as of `day`: the periods of the day, widened to the
    /// flights of the target's bookings (among `bookings` of its campaign).
    fn window(&self, day: Day, bookings: &[(String, Option<Booking>)]) -> (Date, Date) {
        bookings
            .iter()
            .filter(|(l, _)| l.is_empty() || self.line_items.contains(l))
            .filter_map(|(_, b)| b.as_ref())
            .map(|b| window(day.pick(Some(b)), Some(b.flight_start)))
            .fold(window(day.pick(None), None), |(lo, hi), (from, to)| {
                (lo.min(from), hi.max(to))
            })
    }

    /// The aggregates of each scope for the periods containing `day`, from the campaign's
    /// `days` (at least [`Target::window`]) and `bookings`.
    fn aggregates(
        &self,
        day: Day,
        days: &[DayTotals],
        bookings: &[(String, Option<Booking>)],
        trigger: Trigger,
    ) -> Result<Vec<AggregateReady>, ProcessError> {
        let booking_of = |line_item: &str| {
            bookings
                .iter()
                .find(|(l, _)| l == line_item)
                .and_then(|(_, b)| b.clone())
        };
        let now = Timestamp::now();
        let mut all = Vec::new();
        for scope in self.scopes() {
            let booking = booking_of(scope.unwrap_or(""));
            let at = day.pick(booking.as_ref());
            all.extend(aggregates(
                self.campaign_id,
                scope,
                days,
                booking,
                at,
                now,
                trigger,
            )?);
        }
        Ok(all)
    }
}

/// A campaign's bookings by line item (`""` = the whole campaign; `None` = deleted).
type Bookings = Vec<(String, Option<Booking>)>;

/// What a silver input changes in gold's state.
#[derive(Debug)]
pub enum Change {
    /// A quarantined row: its offset is claimed, nothing else.
    Skip,
    /// A CRM booking row.
    Booking(Booking),
    /// A delivery row.
    Row(RowState),
}

impl Change {
    /// What `row` (of `org_id`) changes.
    pub fn of(org_id: i64, row: ProcessedRow) -> Change {
        if row.quality.verdict == QualityVerdict::Quarantine {
            return Change::Skip;
        }
        if let Some(booking) = row.booking {
            return Change::Booking(booking);
        }
        let line_item_id =
            (row.entity.entity_type == EntityType::LineItem).then(|| row.entity.entity_id.clone());
        Change::Row(RowState {
            org_id,
            dsp_type: row.dsp_type.to_string(),
            entity_id: row.entity.entity_id,
            day: row.date,
            campaign_id: row.campaign_id,
            line_item_id,
            impressions: row.impressions,
            clicks: row.clicks,
            conversions: row.conversions,
            spend: row.spend,
            quality_score: row.quality.score,
        })
    }
}

/// The aggregates one batch of silver inputs emits, read in the lane's transaction after
/// the batch was written: `written` holds each input's position, org and change (`None`
/// when its write failed), `moved` the org, campaign and day each correction took a row
/// from. Each campaign and day touched (a row's date; today for a booking row) is emitted
/// once, as of the state after the whole batch, by the last input that touched it: that
/// input's offset is stored only after the emission, so a crash before it replays the input
/// and emits again. Every other input completes with no output.
pub async fn batch_outputs(
    tx: &Tx,
    written: &[(Position, i64, Option<&Change>)],
    moved: &[(i64, String, Date)],
) -> Result<Vec<Reply>, pgstore::StoreError> {
    // Each campaign and day touched, and the last input that touched it.
    let mut groups: Vec<(Target<'_>, Day, usize)> = Vec::new();
    let mut index: HashMap<(i64, &str, Day), usize> = HashMap::new();
    for (i, (_, org_id, change)) in written.iter().enumerate() {
        let (campaign, day, line, whole) = match change {
            Some(Change::Row(r)) => (
                r.campaign_id.as_str(),
                Day::Row(r.day),
                r.line_item_id.as_deref(),
                true,
            ),
            Some(Change::Booking(b)) => (
                b.campaign_id.as_str(),
                Day::Today,
                b.line_item_id.as_deref(),
                b.line_item_id.is_none(),
            ),
            Some(Change::Skip) | None => continue,
        };
        let g = *index.entry((*org_id, campaign, day)).or_insert_with(|| {
            let target = Target {
                org_id: *org_id,
                campaign_id: campaign,
                line_items: Vec::new(),
                whole_campaign: false,
            };
            groups.push((target, day, i));
            groups.len() - 1
        });
        let (target, _, by) = &mut groups[g];
        target.whole_campaign |= whole;
        if let Some(l) = line
            && !target.line_items.iter().any(|x| x == l)
        {
            target.line_items.push(l.to_owned());
        }
        *by = i;
    }
    for (org_id, campaign, date) in moved {
        // Emitted by the last row of the org and day in the batch (one of them moved it).
        let Some(by) = written.iter().rposition(|(_, o, c)| {
            *o == *org_id && matches!(c, Some(Change::Row(r)) if r.day == *date)
        }) else {
            continue;
        };
        let day = Day::Row(*date);
        match index.get(&(*org_id, campaign.as_str(), day)) {
            Some(&g) => {
                groups[g].0.whole_campaign = true;
                groups[g].2 = groups[g].2.max(by);
            }
            None => {
                index.insert((*org_id, campaign.as_str(), day), groups.len());
                groups.push((Target::row(*org_id, campaign, None), day, by));
            }
        }
    }
    // The bookings of the batch's campaigns, then the days their windows need: one read
    // each, whatever the orgs.
    let mut campaigns: Vec<(i64, &str)> = groups
        .iter()
        .map(|(target, _, _)| (target.org_id, target.campaign_id))
        .collect();
    campaigns.sort_unstable();
    campaigns.dedup();
    let mut bookings: HashMap<(i64, String), Bookings> = HashMap::new();
    for (org_id, campaign, line, booking) in GoldStore::bookings(tx, &campaigns).await? {
        bookings
            .entry((org_id, campaign))
            .or_default()
            .push((line, booking));
    }
    let none = Vec::new();
    let bookings_of = |org_id: i64, campaign: &str| {
        bookings
            .get(&(org_id, campaign.to_owned()))
            .unwrap_or(&none)
    };
    let mut windows: HashMap<(i64, &str), (Date, Date)> = HashMap::new();
    for (target, day, _) in &groups {
        let (from, to) = target.window(*day, bookings_of(target.org_id, target.campaign_id));
        windows
            .entry((target.org_id, target.campaign_id))
            .and_modify(|(lo, hi)| {
                *lo = (*lo).min(from);
                *hi = (*hi).max(to);
            })
            .or_insert((from, to));
    }
    let windows: Vec<(i64, &str, Date, Date)> = windows
        .into_iter()
        .map(|((org_id, campaign), (from, to))| (org_id, campaign, from, to))
        .collect();
    let mut days: HashMap<(i64, String), Vec<DayTotals>> = HashMap::new();
    for (org_id, campaign, totals) in GoldStore::days(tx, &windows).await? {
        days.entry((org_id, campaign)).or_default().push(totals);
    }
    let mut replies: Vec<Reply> = written.iter().map(|_| Ok(Vec::new())).collect();
    for (target, day, by) in &groups {
        let key = (target.org_id, target.campaign_id.to_owned());
        let campaign_days = days.get(&key).map_or(&[][..], Vec::as_slice);
        let computed = target.aggregates(
            *day,
            campaign_days,
            bookings_of(target.org_id, target.campaign_id),
            Trigger::Update,
        );
        match (&mut replies[*by], computed) {
            (Ok(all), Ok(more)) => all.extend(more),
            (reply @ Ok(_), Err(e)) => *reply = Err(e),
            (Err(_), _) => {}
        }
    }
    Ok(replies)
}

/// The partition of silver.data.processed that holds `org_id`'s rows.
fn row_partition(org_id: i64) -> i32 {
    partition_for(
        PartitionKey::Org(org_id),
        Topic::SilverDataProcessed.spec().partitions,
    )
}

/// The days to read for aggregates as of `at`: its week and month, and the flight up to `at`.
fn window(at: Date, flight_start: Option<Date>) -> (Date, Date) {
    let [_, week, month] = periods_of(at);
    let from = week.start.min(month.start);
    let from = flight_start.map_or(from, |s| from.min(s));
    (from, week.end.max(month.end))
}

/// The day aggregates are computed as of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Day {
    /// A row's date.
    Row(Date),
    /// Today (UTC), clamped into the booking's flight when there is one.
    Today,
}

impl Day {
    fn pick(self, booking: Option<&Booking>) -> Date {
        match self {
            Day::Row(d) => d,
            Day::Today => {
                let today = Date(Timestamp::now().0.date_naive());
                match booking {
                    Some(b) if b.flight_start <= b.flight_end => {
                        today.clamp(b.flight_start, b.flight_end)
                    }
                    _ => today,
                }
            }
        }
    }
}

impl Processor for Gold {
    type Input = GoldInput;
    const GROUP: ConsumerGroup = ConsumerGroup::GoldProcessor;

    fn outputs() -> Vec<Topic> {
        vec![Topic::GoldDataReady, Topic::AuditEvents]
    }

    async fn start(&self) -> anyhow::Result<()> {
        let group = GroupCommit {
            lanes: self.settings.database_connections,
            linger: Duration::from_millis(self.settings.commit_linger_ms),
            max_writes: self.settings.commit_max_writes,
        };
        let store = Arc::new(GoldStore::new(&self.settings.database_url, group));
        store.migrate().await?;
        let counters = self.metrics.batch.clone();
        let batches = Batches::start(
            Arc::new(Settler::new(store.clone(), counters.clone())),
            group.lanes,
            self.settings.max_batch_rows,
            counters,
        );
        let _ = self.batches.set(batches);
        let _ = self.store.set(store);
        Ok(())
    }

    async fn process(&self, input: GoldInput, out: &mut Outputs<'_>) -> Result<(), ProcessError> {
        match input {
            GoldInput::Row(e) => self.on_row(e, out),
            GoldInput::Config(e) => self.on_config(e, out).await,
        }
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }

    fn tick_interval(&self) -> Option<Duration> {
        (self.settings.flush_interval_secs > 0)
            .then(|| Duration::from_secs(self.settings.flush_interval_secs))
    }

    async fn tick(&self, tick: &Tick, out: &mut Outputs<'_>) -> Result<(), ProcessError> {
        let store = self.store()?;
        let rows = Topic::SilverDataProcessed;
        let owned: BTreeSet<i32> = tick
            .assigned
            .iter()
            .filter(|(t, _)| *t == rows)
            .map(|(_, p)| *p)
            .collect();
        let today = Date(tick.at.0.date_naive());
        let mut keys = store.active_bookings(today).await?;
        keys.retain(|k| owned.contains(&row_partition(k.org_id)));
        for BookingKey {
            org_id,
            campaign_id,
            line_item_id,
        } in keys
        {
            let target = Target::booking(org_id, &campaign_id, line_item_id);
            // Flushes read in the org's lane too (rows not yet committed included).
            let tx = store.lane(target.partition()).await?;
            self.emit_campaign(&tx, out, target, Day::Today, Trigger::Flush)
                .await?;
        }
        Ok(())
    }
}

/// The daily, weekly and monthly aggregates of one scope (a campaign, or one of its line
/// items) for the periods containing `day`, from per-day totals, with the booking's derived
/// metrics as of `day`.
pub fn aggregates(
    campaign_id: &str,
    line_item_id: Option<&str>,
    days: &[DayTotals],
    booking: Option<Booking>,
    day: Date,
    as_of: Timestamp,
    trigger: Trigger,
) -> Result<Vec<AggregateReady>, ProcessError> {
    let in_scope = |d: &&DayTotals| line_item_id.is_none_or(|l| d.line_item_id == l);
    let flight = booking.as_ref().map(|b| Flight {
        start: b.flight_start,
        end: b.flight_end,
    });
    let to_date = match flight {
        Some(f) => {
            let last = day.min(f.end);
            Some(sum(days
                .iter()
                .filter(in_scope)
                .filter(|d| d.day >= f.start && d.day <= last))?)
        }
        None => None,
    };
    periods_of(day)
        .into_iter()
        .map(|period| {
            let t = sum(days
                .iter()
                .filter(in_scope)
                .filter(|d| d.day >= period.start && d.day <= period.end))?;
            let mut metrics = DerivedMetrics {
                cpm: formulas::cpm(t.spend, t.impressions),
                ctr: formulas::ctr(t.clicks, t.impressions),
                cvr: formulas::cvr(t.conversions, t.clicks),
                ..DerivedMetrics::default()
            };
            if let (Some(b), Some(f), Some(ftd)) = (&booking, flight, &to_date) {
                metrics.pacing_rate =
                    formulas::pacing_rate(ftd.impressions, b.booked_impressions, f, day);
                metrics.margin_pct = formulas::margin_pct(b.booking_revenue, ftd.spend);
                metrics.projected_spend = formulas::projected_spend(ftd.spend, f, day);
                metrics.elapsed_days = f.elapsed_days(day).and_then(|d| i32::try_from(d).ok());
                metrics.total_days = f.total_days().and_then(|d| i32::try_from(d).ok());
                metrics.delivered_impressions_to_date = Some(ftd.impressions);
                metrics.spend_to_date = Some(ftd.spend);
            }
            let quality_score_avg = (t.rows > 0)
                .then(|| Money::new(Decimal::from(t.quality_sum) / Decimal::from(t.rows)).ok())
                .flatten();
            Ok(AggregateReady {
                grain: period.grain,
                period_start: period.start,
                period_end: period.end,
                period_label: period.label,
                campaign_id: campaign_id.to_owned(),
                line_item_id: line_item_id.map(str::to_owned),
                impressions: t.impressions,
                clicks: t.clicks,
                conversions: t.conversions,
                spend: t.spend,
                rows: t.rows,
                quality_score_avg,
                booking: booking.clone(),
                metrics,
                as_of,
                trigger,
            })
        })
        .collect()
}

/// Totals over some days.
#[derive(Debug, Default)]
struct Totals {
    impressions: i64,
    clicks: i64,
    conversions: i64,
    spend: Money,
    rows: i64,
    quality_sum: i64,
}

fn sum<'a>(days: impl Iterator<Item = &'a DayTotals>) -> Result<Totals, ProcessError> {
    let mut t = Totals::default();
    let mut spend = Decimal::ZERO;
    for d in days {
        t.impressions = t.impressions.saturating_add(d.impressions);
        t.clicks = t.clicks.saturating_add(d.clicks);
        t.conversions = t.conversions.saturating_add(d.conversions);
        spend = spend.saturating_add(d.spend);
        t.rows += d.rows;
        t.quality_sum += d.quality_sum;
    }
    t.spend = Money::new(spend).map_err(|e| {
        ProcessError::permanent("GOLD_AMOUNT_OVERFLOW", format!("summed spend: {e}"))
    })?;
    Ok(t)
}
