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

use std::{collections::BTreeSet, sync::OnceLock, time::Duration};

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
use runtime::{Outputs, Position, ProcessError, Processor, Tick};
use rust_decimal::Decimal;
use topics::{ConsumerGroup, PartitionKey, Topic, partition_for};

use crate::{
    formulas::{self, Flight, periods_of},
    store::{Applied, BookingKey, BookingSource, DayTotals, GoldStore, RowState, Tx, Via},
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
    /// Seconds between flushes of active bookings (0: no flush).
    #[arg(long, env = "GOLD_FLUSH_INTERVAL_SECS", default_value_t = 300)]
    pub flush_interval_secs: u64,
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
    store: OnceLock<GoldStore>,
}

impl Gold {
    /// Gold on `settings`; the store is connected and migrated by [`Processor::start`].
    pub fn new(settings: GoldSettings) -> Gold {
        Gold {
            settings,
            store: OnceLock::new(),
        }
    }

    fn store(&self) -> Result<&GoldStore, ProcessError> {
        self.store
            .get()
            .ok_or_else(|| ProcessError::retryable("GOLD_NOT_STARTED", "the store is not ready"))
    }

    /// Emit the aggregates of `target` for the periods containing `day`.
    async fn emit_campaign(
        &self,
        tx: &Tx,
        out: &mut Outputs<'_>,
        target: Target<'_>,
        day: Day,
        trigger: Trigger,
    ) -> Result<(), ProcessError> {
        let read = |(from, to): (Date, Date)| {
            GoldStore::campaign_window(
                tx,
                target.org_id,
                target.campaign_id,
                &target.line_items,
                from,
                to,
            )
        };
        // The bookings decide the flight, and so the days to read: guess the periods of the
        // day without a booking, and read once more only when a flight reaches further back
        // (or is clamped into another month).
        let guess = window(day.pick(None), None);
        let (mut days, bookings) = read(guess).await?;
        let needed = bookings
            .iter()
            .filter_map(|(_, b)| b.as_ref())
            .map(|b| window(day.pick(Some(b)), Some(b.flight_start)))
            .fold(guess, |(lo, hi), (from, to)| (lo.min(from), hi.max(to)));
        if needed != guess {
            days = read(needed).await?.0;
        }
        let booking_of = |line_item: &str| {
            bookings
                .iter()
                .find(|(l, _)| l == line_item)
                .and_then(|(_, b)| b.clone())
        };
        let now = Timestamp::now();
        let mut scopes: Vec<Option<&str>> =
            target.line_items.iter().map(|l| Some(l.as_str())).collect();
        if target.whole_campaign {
            scopes.insert(0, None);
        }
        for scope in scopes {
            let booking = booking_of(scope.unwrap_or(""));
            let at = day.pick(booking.as_ref());
            let computed = aggregates(target.campaign_id, scope, &days, booking, at, now, trigger)?;
            for aggregate in computed {
                if trigger == Trigger::Flush {
                    out.emit_new(target.org_id, aggregate)?;
                } else {
                    // Caused by the input (same org): ids derived from it, so a replay
                    // re-emits the same event ids and downstream dedupe drops repeats.
                    out.emit(aggregate)?;
                }
            }
        }
        Ok(())
    }

    async fn on_row(
        &self,
        e: Event<ProcessedRow>,
        out: &mut Outputs<'_>,
    ) -> Result<(), ProcessError> {
        let at = out.input_position()?;
        let store = self.store()?;
        let org_id = e.metadata.org_id;
        let row = e.payload;
        let tx = store.lane(at.partition).await?;
        self.apply_row(&tx, at, org_id, row, out).await?;
        // The row completes once its lane's transaction is committed.
        let committed = tx.ticket();
        drop(tx);
        out.defer(async move {
            committed.committed().await;
            Ok(())
        });
        Ok(())
    }

    /// A silver row's change, in its lane's transaction, and its aggregates.
    async fn apply_row(
        &self,
        tx: &Tx,
        at: Position,
        org_id: i64,
        row: ProcessedRow,
        out: &mut Outputs<'_>,
    ) -> Result<(), ProcessError> {
        let store = self.store()?;
        if row.quality.verdict == QualityVerdict::Quarantine {
            store.skip(Via::Lane(tx), at).await?;
            return Ok(());
        }
        if let Some(booking) = row.booking.as_ref() {
            let source = BookingSource::Report;
            store
                .put_booking(Via::Lane(tx), at, org_id, booking, source, at.offset, false)
                .await?;
            let target =
                Target::booking(org_id, &booking.campaign_id, booking.line_item_id.clone());
            return self
                .emit_campaign(tx, out, target, Day::Today, Trigger::Update)
                .await;
        }
        let line_item_id =
            (row.entity.entity_type == EntityType::LineItem).then(|| row.entity.entity_id.clone());
        let state = RowState {
            org_id,
            dsp_type: row.dsp_type.to_string(),
            entity_id: row.entity.entity_id.clone(),
            day: row.date,
            campaign_id: row.campaign_id.clone(),
            line_item_id: line_item_id.clone(),
            impressions: row.impressions,
            clicks: row.clicks,
            conversions: row.conversions,
            spend: row.spend,
            quality_score: row.quality.score,
        };
        let (applied, moved_from) = store.put_row(tx, at, &state).await?;
        if applied == Applied::Replay {
            tracing::debug!(
                offset = at.offset,
                "replayed row: state unchanged, aggregates re-emitted"
            );
        }
        if let Some(previous) = moved_from {
            // A correction moved the row to another campaign: the old one lost it.
            let target = Target::row(org_id, &previous, None);
            self.emit_campaign(tx, out, target, Day::Row(row.date), Trigger::Update)
                .await?;
        }
        let target = Target::row(org_id, &row.campaign_id, line_item_id);
        self.emit_campaign(tx, out, target, Day::Row(row.date), Trigger::Update)
            .await
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
#[derive(Debug, Clone, Copy)]
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
        let store = GoldStore::new(&self.settings.database_url, group);
        store.migrate().await?;
        let _ = self.store.set(store);
        Ok(())
    }

    async fn process(&self, input: GoldInput, out: &mut Outputs<'_>) -> Result<(), ProcessError> {
        match input {
            GoldInput::Row(e) => self.on_row(e, out).await,
            GoldInput::Config(e) => self.on_config(e, out).await,
        }
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
