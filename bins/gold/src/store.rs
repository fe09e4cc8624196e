//! Gold's state in PostgreSQL: rows by silver's dedupe key, their per-day sums, bookings, and
//! the next input offset per partition. Every change is one statement that also claims the
//! input offset it reflects, so a replayed record (after a crash, before its offset was
//! committed) changes nothing and a record is never counted twice.
//!
//! Rows are written through group-commit lanes ([`pgstore::Lanes`], one per connection, picked
//! by silver partition): many rows' statements share one transaction and one WAL flush, and a
//! row's outputs wait for its [`pgstore::Ticket`]. Configuration changes (another topic, whose
//! partitions do not follow silver's) and the flush's listing use plain autocommit
//! connections, so no two lanes ever write the same offsets row.

use std::sync::Arc;

use chrono::NaiveDate;
use envelope::{Date, Money, payload::common::Booking};
pub use pgstore::StoreError;
use pgstore::{GroupCommit, LaneTx, Lanes, Live, Param, Pool, Prepared, claim_params};
use runtime::Position;
use rust_decimal::Decimal;
use tokio_postgres::{Client, Statement, types::ToSql};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Gold's migration history table (other adpipe stores share the database).
const HISTORY_TABLE: &str = "gold_schema_history";

/// Whether a change was applied or its input had been applied before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// First time: the state changed.
    New,
    /// A replayed input: the state already reflects it and was left alone.
    Replay,
}

/// One delivery row as gold keeps it (silver's dedupe key plus what gold sums).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowState {
    /// Org.
    pub org_id: i64,
    /// Source DSP (`dv360`, ...).
    pub dsp_type: String,
    /// Finest-grain entity id.
    pub entity_id: String,
    /// The row's day.
    pub day: Date,
    /// Campaign.
    pub campaign_id: String,
    /// The entity id of a line-item row; `None` for other entities.
    pub line_item_id: Option<String>,
    /// Impressions.
    pub impressions: i64,
    /// Clicks.
    pub clicks: i64,
    /// Conversions.
    pub conversions: i64,
    /// Spend.
    pub spend: Money,
    /// Silver's quality score.
    pub quality_score: i32,
}

/// Where a booking came from; a config booking wins over a report one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingSource {
    /// `config.changes`, versioned per change.
    Config,
    /// A CRM booking row, versioned by its input offset.
    Report,
}

impl BookingSource {
    fn as_str(self) -> &'static str {
        match self {
            BookingSource::Config => "config",
            BookingSource::Report => "report",
        }
    }
}

/// The totals of one day and line item (`""` = not a line-item row) of a campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayTotals {
    /// Day.
    pub day: Date,
    /// Line item, `""` for rows of other entities.
    pub line_item_id: String,
    /// Impressions.
    pub impressions: i64,
    /// Clicks.
    pub clicks: i64,
    /// Conversions.
    pub conversions: i64,
    /// Spend.
    pub spend: Decimal,
    /// Rows.
    pub rows: i64,
    /// Sum of the rows' quality scores.
    pub quality_sum: i64,
}

/// A booking key: org, campaign and line item (`None` = whole campaign).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BookingKey {
    /// Org.
    pub org_id: i64,
    /// Campaign.
    pub campaign_id: String,
    /// Line item.
    pub line_item_id: Option<String>,
}

/// The statement that claims an input offset: it inserts or advances the partition's next
/// offset only when the record is at or past it. Every write below is `WHERE EXISTS (SELECT 1
/// FROM claim)`, in the same statement, so it happens exactly when the claim does.
const CLAIM: &str = "WITH claim AS ( \
     INSERT INTO gold_offsets (topic, partition, next_offset) VALUES ($1::text, $2::int, $3::bigint + 1) \
     ON CONFLICT (topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset \
     WHERE gold_offsets.next_offset <= $3::bigint RETURNING 1)";

/// Statements prepared once per connection.
#[derive(Debug)]
pub struct Statements {
    claim_only: Statement,
    put_row: Statement,
    put_booking: Statement,
    days: Statement,
    bookings: Statement,
    active: Statement,
}

impl Prepared for Statements {
    async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        prepare(client).await
    }
}

/// A silver partition's hold on its lane: writes and reads in the lane's open transaction.
pub type Tx = LaneTx<Statements>;

/// How a write reaches PostgreSQL: in a lane (silver rows) or autocommit (configuration
/// changes).
pub type Via<'a> = pgstore::Via<'a, Statements>;

/// Gold's PostgreSQL store: group-commit lanes for silver rows, and a few autocommit
/// connections for the rest (statements from different partitions pipeline on one
/// connection).
#[derive(Debug)]
pub struct GoldStore {
    url: String,
    pool: Pool<Statements>,
    lanes: Lanes<Statements>,
}

impl GoldStore {
    /// A store on `url`: `group.lanes` group-commit lanes and as many autocommit connections
    /// (at least 1 each); nothing is connected yet.
    pub fn new(url: &str, group: GroupCommit) -> GoldStore {
        GoldStore {
            url: url.to_owned(),
            pool: Pool::new("gold", url, group.lanes),
            lanes: Lanes::new("gold", url, group),
        }
    }

    /// Apply the embedded migrations (idempotent) on a connection of their own.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        pgstore::migrate(&self.url, embedded::migrations::runner(), HISTORY_TABLE).await
    }

    async fn live(&self, partition: i32) -> Result<Arc<Live<Statements>>, StoreError> {
        self.pool.get(partition).await
    }

    /// Commit what the lane of a silver partition holds, and wait for it.
    pub async fn commit_now(&self, partition: i32) {
        self.lanes.commit_now(partition).await;
    }

    /// The lane of a silver partition, with its transaction open (it does not commit until
    /// the returned hold is dropped: drop it before awaiting anything else).
    pub async fn lane(&self, partition: i32) -> Result<Tx, StoreError> {
        self.lanes.lane(partition).await
    }

    /// Claim `at` without changing anything else (quarantined rows, settings gold ignores).
    pub async fn skip(&self, via: Via<'_>, at: Position) -> Result<Applied, StoreError> {
        let params = claim_params(at, 3);
        let row = self
            .pool
            .write(via, at.partition, |s| &s.claim_only, params)
            .await?;
        Ok(applied(row.get(0)))
    }

    /// Upsert a delivery row (a correction replaces the earlier row with its key) and claim
    /// `at`, in one statement. Also returns the campaign the row belonged to before, when a
    /// correction moved it to another campaign (whose aggregates changed too).
    pub async fn put_row(
        &self,
        tx: &Tx,
        at: Position,
        row: &RowState,
    ) -> Result<(Applied, Option<String>), StoreError> {
        let mut params = claim_params(at, 15);
        params.extend([
            Box::new(row.org_id) as Param,
            Box::new(row.dsp_type.clone()),
            Box::new(row.entity_id.clone()),
            Box::new(row.day.0),
            Box::new(row.campaign_id.clone()),
            Box::new(row.line_item_id.clone().unwrap_or_default()),
            Box::new(row.impressions),
            Box::new(row.clicks),
            Box::new(row.conversions),
            Box::new(row.spend.value()),
            Box::new(row.quality_score),
            Box::new(at.partition),
        ]);
        let r = self
            .pool
            .write(Via::Lane(tx), at.partition, |s| &s.put_row, params)
            .await?;
        let previous: Option<String> = r.get(1);
        Ok((
            applied(r.get(0)),
            previous.filter(|c| *c != row.campaign_id),
        ))
    }

    /// Upsert (or, `deleted`, tombstone) a booking from `source` at `version` and claim `at`;
    /// an older version than the stored one changes nothing.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_booking(
        &self,
        via: Via<'_>,
        at: Position,
        org_id: i64,
        booking: &Booking,
        source: BookingSource,
        version: i64,
        deleted: bool,
    ) -> Result<Applied, StoreError> {
        let mut params = claim_params(at, 15);
        params.extend([
            Box::new(org_id) as Param,
            Box::new(booking.campaign_id.clone()),
            Box::new(booking.line_item_id.clone().unwrap_or_default()),
            Box::new(source.as_str()),
            Box::new(version),
            Box::new(deleted),
            Box::new(booking.booked_impressions),
            Box::new(booking.booked_budget.value()),
            Box::new(booking.booking_revenue.value()),
            Box::new(booking.flight_start.0),
            Box::new(booking.flight_end.0),
            Box::new(booking.currency.clone()),
        ]);
        let r = self
            .pool
            .write(via, at.partition, |s| &s.put_booking, params)
            .await?;
        Ok(applied(r.get(0)))
    }

    /// Per day and line item, the totals of a campaign's rows from `from` to `to` inclusive,
    /// and the bookings of the campaign and of `line_items` (config before report; a deleted
    /// booking is `None`). Both queries go out together, in the lane's transaction (they see
    /// the writes not yet committed).
    pub async fn campaign_window(
        tx: &Tx,
        org_id: i64,
        campaign_id: &str,
        line_items: &[String],
        from: Date,
        to: Date,
    ) -> Result<(Vec<DayTotals>, Vec<(String, Option<Booking>)>), StoreError> {
        let day_params: [&(dyn ToSql + Sync); 4] = [&org_id, &campaign_id, &from.0, &to.0];
        let booking_params: [&(dyn ToSql + Sync); 3] = [&org_id, &campaign_id, &line_items];
        let days = tx.read(|s| &s.days, &day_params);
        let bookings = tx.read(|s| &s.bookings, &booking_params);
        let (days, bookings) = tokio::try_join!(days, bookings)?;
        let days = days
            .iter()
            .map(|r| DayTotals {
                day: Date(r.get::<_, NaiveDate>(0)),
                line_item_id: r.get(1),
                impressions: r.get(2),
                clicks: r.get(3),
                conversions: r.get(4),
                spend: r.get(5),
                rows: r.get(6),
                quality_sum: r.get(7),
            })
            .collect();
        let bookings = bookings
            .iter()
            .map(|r| -> Result<(String, Option<Booking>), StoreError> {
                let line_item: String = r.get(0);
                let deleted: bool = r.get(1);
                let money = |i: usize| {
                    Money::new(r.get::<_, Decimal>(i))
                        .map_err(|e| StoreError::Corrupt(format!("stored booking amount: {e}")))
                };
                let booking = Booking {
                    campaign_id: campaign_id.to_owned(),
                    line_item_id: (!line_item.is_empty()).then(|| line_item.clone()),
                    booked_impressions: r.get(2),
                    booked_budget: money(3)?,
                    booking_revenue: money(4)?,
                    flight_start: Date(r.get(5)),
                    flight_end: Date(r.get(6)),
                    currency: r.get(7),
                };
                Ok((line_item, (!deleted).then_some(booking)))
            })
            .collect::<Result<_, _>>()?;
        Ok((days, bookings))
    }

    /// The keys of bookings (not deleted) whose flight includes `day` or ended the day before.
    pub async fn active_bookings(&self, day: Date) -> Result<Vec<BookingKey>, StoreError> {
        let live = self.live(0).await?;
        let rows = live.client.query(&live.stmts.active, &[&day.0]).await?;
        Ok(rows
            .iter()
            .map(|r| {
                let line_item: String = r.get(2);
                BookingKey {
                    org_id: r.get(0),
                    campaign_id: r.get(1),
                    line_item_id: (!line_item.is_empty()).then_some(line_item),
                }
            })
            .collect())
    }
}

fn applied(claimed: i64) -> Applied {
    if claimed > 0 {
        Applied::New
    } else {
        Applied::Replay
    }
}

async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
    let claim_only = client
        .prepare(&format!("{CLAIM} SELECT count(*) FROM claim"))
        .await?;
    // The row's previous version (if any) is read before the upsert (every part of one
    // statement sees the same snapshot), and gold_days gets new minus old.
    let put_row = client
        .prepare(&format!(
            "{CLAIM}, old AS ( \
             SELECT campaign_id, line_item_id, impressions, clicks, conversions, spend, \
               quality_score FROM gold_rows \
             WHERE org_id = $4::bigint AND dsp_type = $5::text AND entity_id = $6::text \
               AND day = $7::date AND EXISTS (SELECT 1 FROM claim) FOR UPDATE), \
             put AS ( \
             INSERT INTO gold_rows (org_id, dsp_type, entity_id, day, campaign_id, line_item_id, \
               impressions, clicks, conversions, spend, quality_score, src_partition, src_offset) \
             SELECT $4::bigint, $5::text, $6::text, $7::date, $8::text, $9::text, $10::bigint, \
               $11::bigint, $12::bigint, $13::numeric, $14::int, $15::int, $3::bigint \
             WHERE EXISTS (SELECT 1 FROM claim) \
             ON CONFLICT (org_id, dsp_type, entity_id, day) DO UPDATE SET \
               campaign_id = EXCLUDED.campaign_id, line_item_id = EXCLUDED.line_item_id, \
               impressions = EXCLUDED.impressions, clicks = EXCLUDED.clicks, \
               conversions = EXCLUDED.conversions, spend = EXCLUDED.spend, \
               quality_score = EXCLUDED.quality_score, src_partition = EXCLUDED.src_partition, \
               src_offset = EXCLUDED.src_offset, updated_at = now() \
             RETURNING 1), \
             deltas AS ( \
             SELECT $8::text AS campaign_id, $9::text AS line_item_id, $10::bigint AS impressions, \
               $11::bigint AS clicks, $12::bigint AS conversions, $13::numeric AS spend, \
               1::bigint AS rows, $14::bigint AS quality FROM claim \
             UNION ALL \
             SELECT campaign_id, line_item_id, -impressions, -clicks, -conversions, -spend, \
               -1, -quality_score::bigint FROM old), \
             days AS ( \
             INSERT INTO gold_days (org_id, campaign_id, line_item_id, day, impressions, clicks, \
               conversions, spend, rows, quality_sum) \
             SELECT $4::bigint, campaign_id, line_item_id, $7::date, sum(impressions), \
               sum(clicks), sum(conversions), sum(spend), sum(rows), sum(quality) \
             FROM deltas GROUP BY campaign_id, line_item_id \
             ON CONFLICT (org_id, campaign_id, day, line_item_id) DO UPDATE SET \
               impressions = gold_days.impressions + EXCLUDED.impressions, \
               clicks = gold_days.clicks + EXCLUDED.clicks, \
               conversions = gold_days.conversions + EXCLUDED.conversions, \
               spend = gold_days.spend + EXCLUDED.spend, \
               rows = gold_days.rows + EXCLUDED.rows, \
               quality_sum = gold_days.quality_sum + EXCLUDED.quality_sum \
             RETURNING 1) \
             SELECT count(*), (SELECT campaign_id FROM old) FROM claim"
        ))
        .await?;
    let put_booking = client
        .prepare(&format!(
            "{CLAIM}, put AS ( \
             INSERT INTO gold_bookings (org_id, campaign_id, line_item_id, source, version, \
               deleted, booked_impressions, booked_budget, booking_revenue, flight_start, \
               flight_end, currency) \
             SELECT $4::bigint, $5::text, $6::text, $7::text, $8::bigint, $9::boolean, \
               $10::bigint, $11::numeric, $12::numeric, $13::date, $14::date, $15::text \
             WHERE EXISTS (SELECT 1 FROM claim) \
             ON CONFLICT (org_id, campaign_id, line_item_id, source) DO UPDATE SET \
               version = EXCLUDED.version, deleted = EXCLUDED.deleted, \
               booked_impressions = EXCLUDED.booked_impressions, \
               booked_budget = EXCLUDED.booked_budget, \
               booking_revenue = EXCLUDED.booking_revenue, \
               flight_start = EXCLUDED.flight_start, flight_end = EXCLUDED.flight_end, \
               currency = EXCLUDED.currency, updated_at = now() \
             WHERE gold_bookings.version < EXCLUDED.version \
             RETURNING 1) \
             SELECT count(*) FROM claim"
        ))
        .await?;
    let days = client
        .prepare(
            "SELECT day, line_item_id, impressions, clicks, conversions, spend, rows, \
               quality_sum \
             FROM gold_days WHERE org_id = $1 AND campaign_id = $2 AND day BETWEEN $3 AND $4 \
               AND rows > 0",
        )
        .await?;
    let bookings = client
        .prepare(
            "SELECT DISTINCT ON (line_item_id) line_item_id, deleted, booked_impressions, \
               booked_budget, booking_revenue, flight_start, flight_end, currency \
             FROM gold_bookings \
             WHERE org_id = $1 AND campaign_id = $2 AND (line_item_id = '' OR line_item_id = ANY($3)) \
             ORDER BY line_item_id, (source = 'config') DESC",
        )
        .await?;
    let active = client
        .prepare(
            "SELECT DISTINCT org_id, campaign_id, line_item_id FROM gold_bookings b \
             WHERE flight_start <= $1 AND flight_end >= $1 - 1 AND NOT deleted \
               AND NOT EXISTS (SELECT 1 FROM gold_bookings c WHERE c.org_id = b.org_id \
                 AND c.campaign_id = b.campaign_id AND c.line_item_id = b.line_item_id \
                 AND c.source = 'config' AND c.deleted) \
             ORDER BY 1, 2, 3",
        )
        .await?;
    Ok(Statements {
        claim_only,
        put_row,
        put_booking,
        days,
        bookings,
        active,
    })
}
