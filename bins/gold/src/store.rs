//! Gold's state in PostgreSQL: rows by silver's dedupe key, their per-day sums, bookings, and
//! the next input offset per partition. Every change is one statement that also claims the
//! input offsets it reflects, so a replayed record (after a crash, before its offset was
//! committed) changes nothing and a record is never counted twice.
//!
//! Rows are written through group-commit lanes ([`pgstore::Lanes`], one per connection, picked
//! by silver partition), a run of them per statement ([`GoldStore::put_rows`], see
//! [`crate::batch`]): many statements share one transaction and one WAL flush, and a row's
//! outputs wait for its [`pgstore::Ticket`]. Configuration changes (another topic, whose
//! partitions do not follow silver's) and the flush's listing use plain autocommit
//! connections, so no two lanes ever write the same offsets row.

use std::collections::HashMap;

use chrono::NaiveDate;
use envelope::{Date, Money, payload::common::Booking};
pub use pgstore::StoreError;
use pgstore::{GroupCommit, LaneTx, Lanes, Param, Pool, Prepared, claim_params};
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
    put_rows: Statement,
    put_failed: Statement,
    failed: Statement,
    days: Statement,
    bookings: Statement,
    put_booking: Statement,
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

    /// Commit what the lane of a silver partition holds, and wait for it.
    pub async fn commit_now(&self, partition: i32) {
        self.lanes.commit_now(partition).await;
    }

    /// The lane of a silver partition, with its transaction open (it does not commit until
    /// the returned hold is dropped: drop it before awaiting anything else).
    pub async fn lane(&self, partition: i32) -> Result<Tx, StoreError> {
        self.lanes.lane(partition).await
    }

    /// Claim the input at `at`, which PostgreSQL refused with `e`, keeping why in the lane's
    /// transaction: later inputs claim past it, and a replay of it must fail again
    /// ([`GoldStore::failed`]) rather than pass as applied.
    pub async fn put_failed(tx: &Tx, at: Position, e: &StoreError) -> Result<(), StoreError> {
        let mut params = claim_params(at, 5);
        params.extend([
            Box::new(e.code().to_owned()) as Param,
            Box::new(e.to_string()),
        ]);
        tx.write(|s| &s.put_failed, params).await?;
        Ok(())
    }

    /// The code and message of each of the inputs at `at` that failed before (absent: none).
    pub async fn failed(
        tx: &Tx,
        at: &[Position],
    ) -> Result<HashMap<(i32, i64), (String, String)>, StoreError> {
        let Some(first) = at.first() else {
            return Ok(HashMap::new());
        };
        let partitions: Vec<i32> = at.iter().map(|p| p.partition).collect();
        let offsets: Vec<i64> = at.iter().map(|p| p.offset).collect();
        let rows = tx
            .read(|s| &s.failed, &[&first.topic.name(), &partitions, &offsets])
            .await?;
        Ok(rows
            .iter()
            .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
            .collect())
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

    /// Write a run of a silver partition's inputs (rows, and `claims` that change nothing) in
    /// one statement, in the lane's transaction ([`GoldStore::skip`] claims one input alone).
    /// A row below its partition's next offset is a replay and changes nothing; of several
    /// versions of one key, the last counts. Returns the org, campaign and day each correction
    /// that moved a row to another campaign took it from (that campaign's aggregates changed
    /// too).
    pub async fn put_rows(
        tx: &Tx,
        claims: &[Position],
        rows: &[(Position, &RowState)],
    ) -> Result<Vec<(i64, String, Date)>, StoreError> {
        let Some(first) = claims.first() else {
            return Ok(Vec::new());
        };
        let mut params: Vec<Param> = vec![
            Box::new(first.topic.name()),
            Box::new(claims.iter().map(|c| c.partition).collect::<Vec<_>>()),
            Box::new(claims.iter().map(|c| c.offset).collect::<Vec<_>>()),
        ];
        params.extend([
            Box::new(rows.iter().map(|(at, _)| at.partition).collect::<Vec<_>>()) as Param,
            Box::new(rows.iter().map(|(at, _)| at.offset).collect::<Vec<_>>()),
            Box::new(rows.iter().map(|(_, r)| r.org_id).collect::<Vec<_>>()),
            Box::new(
                rows.iter()
                    .map(|(_, r)| r.dsp_type.clone())
                    .collect::<Vec<_>>(),
            ),
            Box::new(
                rows.iter()
                    .map(|(_, r)| r.entity_id.clone())
                    .collect::<Vec<_>>(),
            ),
            Box::new(rows.iter().map(|(_, r)| r.day.0).collect::<Vec<_>>()),
            Box::new(
                rows.iter()
                    .map(|(_, r)| r.campaign_id.clone())
                    .collect::<Vec<_>>(),
            ),
            Box::new(
                rows.iter()
                    .map(|(_, r)| r.line_item_id.clone().unwrap_or_default())
                    .collect::<Vec<_>>(),
            ),
            Box::new(rows.iter().map(|(_, r)| r.impressions).collect::<Vec<_>>()),
            Box::new(rows.iter().map(|(_, r)| r.clicks).collect::<Vec<_>>()),
            Box::new(rows.iter().map(|(_, r)| r.conversions).collect::<Vec<_>>()),
            Box::new(
                rows.iter()
                    .map(|(_, r)| r.spend.value())
                    .collect::<Vec<_>>(),
            ),
            Box::new(
                rows.iter()
                    .map(|(_, r)| r.quality_score)
                    .collect::<Vec<_>>(),
            ),
        ]);
        let r = tx.write(|s| &s.put_rows, params).await?;
        let orgs: Vec<i64> = r.get(0);
        let campaigns: Vec<String> = r.get(1);
        let days: Vec<NaiveDate> = r.get(2);
        Ok(orgs
            .into_iter()
            .zip(campaigns)
            .zip(days)
            .map(|((o, c), d)| (o, c, Date(d)))
            .collect())
    }

    /// The bookings of `campaigns` (`(org, campaign)`, each once; config before report; a
    /// deleted booking is `None`), in the lane's transaction, in one read whatever the orgs:
    /// org, campaign, line item (`""` = the whole campaign) and booking.
    pub async fn bookings(
        tx: &Tx,
        campaigns: &[(i64, &str)],
    ) -> Result<Vec<(i64, String, String, Option<Booking>)>, StoreError> {
        let org_ids: Vec<i64> = campaigns.iter().map(|(o, _)| *o).collect();
        let orgs = distinct(&org_ids);
        let ids: Vec<&str> = campaigns.iter().map(|(_, c)| *c).collect();
        let params: [&(dyn ToSql + Sync); 3] = [&orgs, &org_ids, &ids];
        let rows = tx.read(|s| &s.bookings, &params).await?;
        rows.iter()
            .map(|r| {
                let campaign: String = r.get(1);
                let (line_item, booking) = booking_of(r, &campaign, 2)?;
                Ok((r.get(0), campaign, line_item, booking))
            })
            .collect()
    }

    /// Per campaign, day and line item, the totals of campaigns over their windows (`(org,
    /// campaign, from, to)`, each campaign once), in the lane's transaction, in one read
    /// whatever the orgs: org, campaign and the day's totals.
    pub async fn days(
        tx: &Tx,
        windows: &[(i64, &str, Date, Date)],
    ) -> Result<Vec<(i64, String, DayTotals)>, StoreError> {
        let org_ids: Vec<i64> = windows.iter().map(|(o, _, _, _)| *o).collect();
        let orgs = distinct(&org_ids);
        let campaigns: Vec<&str> = windows.iter().map(|(_, c, _, _)| *c).collect();
        let from: Vec<NaiveDate> = windows.iter().map(|(_, _, f, _)| f.0).collect();
        let to: Vec<NaiveDate> = windows.iter().map(|(_, _, _, t)| t.0).collect();
        let params: [&(dyn ToSql + Sync); 5] = [&orgs, &org_ids, &campaigns, &from, &to];
        let rows = tx.read(|s| &s.days, &params).await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), day_totals(r, 2)))
            .collect())
    }

    /// The keys of bookings (not deleted) whose flight includes `day` or ended the day before.
    pub async fn active_bookings(&self, day: Date) -> Result<Vec<BookingKey>, StoreError> {
        let live = self.pool.get(0).await?;
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

/// A day's totals from the columns of a row starting at `at`: day, line item, impressions,
/// clicks, conversions, spend, rows, quality sum.
fn day_totals(r: &tokio_postgres::Row, at: usize) -> DayTotals {
    DayTotals {
        day: Date(r.get::<_, NaiveDate>(at)),
        line_item_id: r.get(at + 1),
        impressions: r.get(at + 2),
        clicks: r.get(at + 3),
        conversions: r.get(at + 4),
        spend: r.get(at + 5),
        rows: r.get(at + 6),
        quality_sum: r.get(at + 7),
    }
}

/// A campaign's booking from the columns of a row starting at `at`: line item, deleted,
/// booked impressions, budget, revenue, flight start and end, currency. `None` when deleted.
fn booking_of(
    r: &tokio_postgres::Row,
    campaign_id: &str,
    at: usize,
) -> Result<(String, Option<Booking>), StoreError> {
    let line_item: String = r.get(at);
    let deleted: bool = r.get(at + 1);
    let money = |i: usize| {
        Money::new(r.get::<_, Decimal>(at + i))
            .map_err(|e| StoreError::Corrupt(format!("stored booking amount: {e}")))
    };
    let booking = Booking {
        campaign_id: campaign_id.to_owned(),
        line_item_id: (!line_item.is_empty()).then(|| line_item.clone()),
        booked_impressions: r.get(at + 2),
        booked_budget: money(3)?,
        booking_revenue: money(4)?,
        flight_start: Date(r.get(at + 5)),
        flight_end: Date(r.get(at + 6)),
        currency: r.get(at + 7),
    };
    Ok((line_item, (!deleted).then_some(booking)))
}

/// The distinct orgs among `org_ids`: a read's `org_id = ANY($1)` scope.
fn distinct(org_ids: &[i64]) -> Vec<i64> {
    let mut orgs = org_ids.to_vec();
    orgs.sort_unstable();
    orgs.dedup();
    orgs
}

fn applied(claimed: i64) -> Applied {
    if claimed > 0 {
        Applied::New
    } else {
        Applied::Replay
    }
}

async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
    // Plan every execution for the tables as they are now. gold's tables start empty and grow
    // by the batch, and PostgreSQL keeps a prepared statement's generic plan once five
    // executions found it no worse, until the next ANALYZE: a plan made for a nearly empty
    // gold_days (one sequential scan per campaign window) stayed in use at 100,000 rows and
    // took seconds a batch. A batch's statements take ~1–4 ms to plan (EXPLAIN's planning
    // time), paid once per batch.
    client
        .batch_execute("SET plan_cache_mode = force_custom_plan")
        .await?;
    let claim_only = client
        .prepare(&format!("{CLAIM} SELECT count(*) FROM claim"))
        .await?;
    // A run of inputs in one statement: rows at or past their partition's next offset are
    // new (the last version per key wins), the rest replays; gold_days gets each key's new
    // minus its stored version, and each partition's next offset moves past the run.
    let put_rows = client
        .prepare(
            "WITH offs AS ( \
             SELECT partition, next_offset FROM gold_offsets \
             WHERE topic = $1::text AND partition = ANY($2::int[]) FOR UPDATE), \
             input AS ( \
             SELECT * FROM unnest($4::int[], $5::bigint[], $6::bigint[], $7::text[], $8::text[], \
               $9::date[], $10::text[], $11::text[], $12::bigint[], $13::bigint[], \
               $14::bigint[], $15::numeric[], $16::int[]) \
             AS t(src_partition, src_offset, org_id, dsp_type, entity_id, day, campaign_id, \
               line_item_id, impressions, clicks, conversions, spend, quality_score)), \
             fresh AS ( \
             SELECT DISTINCT ON (i.org_id, i.dsp_type, i.entity_id, i.day) i.* \
             FROM input i LEFT JOIN offs o ON o.partition = i.src_partition \
             WHERE i.src_offset >= coalesce(o.next_offset, 0) \
             ORDER BY i.org_id, i.dsp_type, i.entity_id, i.day, i.src_offset DESC), \
             old AS ( \
             SELECT r.org_id, r.dsp_type, r.entity_id, r.day, r.campaign_id, r.line_item_id, \
               r.impressions, r.clicks, r.conversions, r.spend, r.quality_score, \
               f.campaign_id AS new_campaign_id \
             FROM gold_rows r JOIN fresh f ON r.org_id = f.org_id AND r.dsp_type = f.dsp_type \
               AND r.entity_id = f.entity_id AND r.day = f.day \
             FOR UPDATE OF r), \
             put AS ( \
             INSERT INTO gold_rows (org_id, dsp_type, entity_id, day, campaign_id, line_item_id, \
               impressions, clicks, conversions, spend, quality_score, src_partition, src_offset) \
             SELECT org_id, dsp_type, entity_id, day, campaign_id, line_item_id, impressions, \
               clicks, conversions, spend, quality_score, src_partition, src_offset FROM fresh \
             ON CONFLICT (org_id, dsp_type, entity_id, day) DO UPDATE SET \
               campaign_id = EXCLUDED.campaign_id, line_item_id = EXCLUDED.line_item_id, \
               impressions = EXCLUDED.impressions, clicks = EXCLUDED.clicks, \
               conversions = EXCLUDED.conversions, spend = EXCLUDED.spend, \
               quality_score = EXCLUDED.quality_score, src_partition = EXCLUDED.src_partition, \
               src_offset = EXCLUDED.src_offset, updated_at = now() \
             RETURNING 1), \
             deltas AS ( \
             SELECT org_id, campaign_id, line_item_id, day, impressions, clicks, conversions, \
               spend, 1::bigint AS rows, quality_score::bigint AS quality FROM fresh \
             UNION ALL \
             SELECT org_id, campaign_id, line_item_id, day, -impressions, -clicks, -conversions, \
               -spend, -1, -quality_score::bigint FROM old), \
             days AS ( \
             INSERT INTO gold_days (org_id, campaign_id, line_item_id, day, impressions, clicks, \
               conversions, spend, rows, quality_sum) \
             SELECT org_id, campaign_id, line_item_id, day, sum(impressions), sum(clicks), \
               sum(conversions), sum(spend), sum(rows), sum(quality) \
             FROM deltas GROUP BY org_id, campaign_id, line_item_id, day \
             ON CONFLICT (org_id, campaign_id, day, line_item_id) DO UPDATE SET \
               impressions = gold_days.impressions + EXCLUDED.impressions, \
               clicks = gold_days.clicks + EXCLUDED.clicks, \
               conversions = gold_days.conversions + EXCLUDED.conversions, \
               spend = gold_days.spend + EXCLUDED.spend, \
               rows = gold_days.rows + EXCLUDED.rows, \
               quality_sum = gold_days.quality_sum + EXCLUDED.quality_sum \
             RETURNING 1), \
             claims AS ( \
             INSERT INTO gold_offsets (topic, partition, next_offset) \
             SELECT $1::text, c.p, max(c.o) + 1 FROM unnest($2::int[], $3::bigint[]) AS c(p, o) \
             GROUP BY c.p \
             ON CONFLICT (topic, partition) DO UPDATE SET \
               next_offset = greatest(gold_offsets.next_offset, EXCLUDED.next_offset) \
             RETURNING 1), \
             moved AS ( \
             SELECT org_id, campaign_id, day FROM old WHERE campaign_id <> new_campaign_id) \
             SELECT coalesce(array_agg(org_id), '{}'), coalesce(array_agg(campaign_id), '{}'), \
               coalesce(array_agg(day), '{}') FROM moved",
        )
        .await?;
    // The two reads of a batch: one lookup per campaign window. A join of the windows with
    // gold_days is planned from the table's statistics, and without them (a table never
    // analyzed) PostgreSQL read every row of the batch's orgs and filtered them, at a cost
    // that grows with the table; the lateral subqueries (`OFFSET 0` and `DISTINCT ON` keep
    // them from being flattened into a join) can only run once per window, as an index range
    // once the table is more than a few pages.
    let days = client
        .prepare(
            "SELECT w.org_id, w.campaign_id, d.day, d.line_item_id, d.impressions, d.clicks, \
               d.conversions, d.spend, d.rows, d.quality_sum \
             FROM unnest($2::bigint[], $3::text[], $4::date[], $5::date[]) \
               AS w(org_id, campaign_id, lo, hi) \
             CROSS JOIN LATERAL (SELECT * FROM gold_days d \
               WHERE d.org_id = w.org_id AND d.org_id = ANY($1::bigint[]) \
                 AND d.campaign_id = w.campaign_id AND d.day BETWEEN w.lo AND w.hi \
                 AND d.rows > 0 OFFSET 0) d",
        )
        .await?;
    let bookings = client
        .prepare(
            "SELECT w.org_id, w.campaign_id, b.line_item_id, b.deleted, b.booked_impressions, \
               b.booked_budget, b.booking_revenue, b.flight_start, b.flight_end, b.currency \
             FROM unnest($2::bigint[], $3::text[]) AS w(org_id, campaign_id) \
             CROSS JOIN LATERAL (SELECT DISTINCT ON (line_item_id) * FROM gold_bookings b \
               WHERE b.org_id = w.org_id AND b.org_id = ANY($1::bigint[]) \
                 AND b.campaign_id = w.campaign_id \
               ORDER BY line_item_id, (source = 'config') DESC) b",
        )
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
    let put_failed = client
        .prepare(&format!(
            "{CLAIM}, f AS ( \
             INSERT INTO gold_failed (topic, partition, input_offset, code, message) \
             SELECT $1::text, $2::int, $3::bigint, $4::text, $5::text \
             WHERE EXISTS (SELECT 1 FROM claim) ON CONFLICT DO NOTHING RETURNING 1) \
             SELECT count(*) FROM claim"
        ))
        .await?;
    let failed = client
        .prepare(
            "SELECT partition, input_offset, code, message FROM gold_failed \
             WHERE topic = $1 AND (partition, input_offset) IN \
               (SELECT * FROM unnest($2::int[], $3::bigint[]))",
        )
        .await?;
    Ok(Statements {
        claim_only,
        put_rows,
        put_failed,
        failed,
        days,
        bookings,
        put_booking,
        active,
    })
}
