//! `pipelinectl config`: bookings, rules, notification channels and org settings as versioned
//! changes on `config.changes` (keyed by org), each validated first and mirrored by a
//! `config.changed` record on `audit.events`; `get`/`list` show the latest value per key.
//! Reading and publishing go through the `config-log` crate; the checks are `config_check`.

use std::{path::PathBuf, sync::Arc, time::Duration};

use chrono::NaiveDate;
use config_log::{Change, ConfigLogError, Entry, Planned, Publisher, ReadOptions, Snapshot};
use envelope::{
    Codec, Date, Money, Ratio, Source,
    payload::{
        common::{Actor, ActorType, Booking, Comparator, Metric, Severity},
        config::{
            ChannelDefinition, ChannelKind, ConfigItem, ConfigOp, OrgSettings, RuleDefinition,
        },
    },
};
use serde::Deserialize;
use serde_json::{Value, json};
use topics::Topic;

use crate::{Failure, Global, config_check, output};

/// `pipelinectl config`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    command: ConfigCommand,
    #[command(flatten)]
    opts: ConfigOpts,
}

/// Flags every `config` command shares.
#[derive(Debug, clap::Args)]
struct ConfigOpts {
    /// Who makes the change (an id, never an e-mail address); default: the OS user.
    #[arg(long, env = "ADPIPE_ACTOR", global = true)]
    actor: Option<String>,
    /// Read config.changes for at most this many seconds (to learn each key's latest version).
    #[arg(
        long,
        env = "PIPELINECTL_CONFIG_SCAN_SECS",
        default_value_t = 30,
        global = true
    )]
    scan_secs: u64,
    /// Once the end offsets are reached, stop reading after this many milliseconds without a
    /// record (Tansu's high watermark can under-report batched produce).
    #[arg(
        long,
        env = "PIPELINECTL_CONFIG_IDLE_MS",
        default_value_t = 500,
        global = true
    )]
    idle_ms: u64,
}

#[derive(Debug, clap::Subcommand)]
enum ConfigCommand {
    /// Bookings (key booking/<campaign>[/<line_item>]): what was sold, the basis of pacing
    /// and margin in gold.
    #[command(subcommand)]
    Booking(BookingCommand),
    /// Alert rules (key rule/<id>) for the rule evaluator; an org's rule replaces the
    /// built-in rule of the same id (default.pacing-low, default.pacing-high,
    /// default.margin-low, default.spend-anomaly, default.quality-drop).
    #[command(subcommand)]
    Rule(RuleCommand),
    /// Notification channels (key channel/<id>) for the notification sender.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Org-wide settings (key org).
    #[command(subcommand)]
    Org(OrgCommand),
    /// Publish many changes from a YAML or JSON file; items equal to their key's latest value
    /// are not published again (idempotent).
    Apply(ApplyArgs),
}

#[derive(Debug, clap::Subcommand)]
enum BookingCommand {
    /// Create or replace a booking (publishes its next version).
    Set(BookingSet),
    /// Show one booking.
    Get(BookingKey),
    /// Show the current bookings (of one org with --org).
    List(ListArgs),
    /// Delete a booking.
    Delete(BookingKey),
}

#[derive(Debug, clap::Subcommand)]
enum RuleCommand {
    /// Create or replace a rule.
    Set(RuleSet),
    /// Show one rule.
    Get(RuleKey),
    /// Show the current rules (of one org with --org).
    List(ListArgs),
    /// Switch a rule off: its latest definition (or the built-in one) with enabled=false.
    Disable(RuleKey),
    /// Delete a rule (deleting a built-in rule's id switches it off for the org).
    Delete(RuleKey),
}

#[derive(Debug, clap::Subcommand)]
enum ChannelCommand {
    /// Create or replace a channel.
    Set(ChannelSet),
    /// Show one channel.
    Get(ChannelKey),
    /// Show the current channels (of one org with --org).
    List(ListArgs),
    /// Delete a channel.
    Delete(ChannelKey),
}

#[derive(Debug, clap::Subcommand)]
enum OrgCommand {
    /// Set org settings; flags not given keep their current value (or the default).
    Set(OrgSet),
    /// Show an org's settings.
    Get(OrgKey),
    /// Show every org's settings.
    List(ListArgs),
}

fn money(s: &str) -> Result<Money, String> {
    s.parse()
}

fn ratio(s: &str) -> Result<Ratio, String> {
    s.parse()
}

/// The org and why, for every change.
#[derive(Debug, clap::Args)]
struct Common {
    /// The organisation (positive).
    #[arg(long, allow_negative_numbers = true)]
    org: i64,
    /// Why (kept with the change and in the audit trail).
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Debug, clap::Args)]
struct BookingSet {
    #[command(flatten)]
    common: Common,
    /// Campaign id (as the DSP reports it).
    #[arg(long)]
    campaign: String,
    /// Line item id; without it the booking covers the whole campaign.
    #[arg(long)]
    line_item: Option<String>,
    /// Impressions sold.
    #[arg(long, allow_negative_numbers = true)]
    booked_impressions: i64,
    /// Media budget, e.g. 25000.00.
    #[arg(long, value_parser = money, allow_negative_numbers = true)]
    booked_budget: Money,
    /// What the client pays, e.g. 32500.00.
    #[arg(long, value_parser = money, allow_negative_numbers = true)]
    booking_revenue: Money,
    /// First delivery day, YYYY-MM-DD.
    #[arg(long)]
    flight_start: NaiveDate,
    /// Last delivery day (inclusive), YYYY-MM-DD.
    #[arg(long)]
    flight_end: NaiveDate,
    /// ISO 4217 currency; default: the org's.
    #[arg(long)]
    currency: Option<String>,
}

#[derive(Debug, clap::Args)]
struct BookingKey {
    /// The organisation.
    #[arg(long, allow_negative_numbers = true)]
    org: i64,
    /// Campaign id.
    #[arg(long)]
    campaign: String,
    /// Line item id.
    #[arg(long)]
    line_item: Option<String>,
    /// Why (delete only).
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Debug, clap::Args)]
struct RuleSet {
    #[command(flatten)]
    common: Common,
    /// Rule id; a built-in id (e.g. default.pacing-low) replaces that rule for the org.
    #[arg(long)]
    id: String,
    /// Display name (default: the id).
    #[arg(long)]
    name: Option<String>,
    /// Metric: pacing_rate, margin_pct, spend, projected_spend, impressions, clicks,
    /// conversions, cpm, ctr, cvr, quality_score.
    #[arg(long, value_parser = |s: &str| s.parse::<Metric>())]
    metric: Metric,
    /// Comparator: lt, lte, gt, gte, eq, ne, above_trailing_avg_pct, drop_pct.
    #[arg(long, value_parser = |s: &str| s.parse::<Comparator>())]
    comparator: Comparator,
    /// Threshold (percent for the trailing comparators).
    #[arg(long, value_parser = ratio, allow_negative_numbers = true)]
    threshold: Ratio,
    /// daily, weekly or monthly; <n>d (e.g. 7d) for the trailing comparators.
    #[arg(long, default_value = "daily")]
    window: String,
    /// info, warning or critical.
    #[arg(long, default_value = "warning", value_parser = |s: &str| s.parse::<Severity>())]
    severity: Severity,
    /// Channel ids its alerts go to (repeat or comma-separate); none = all the org's channels.
    #[arg(long = "channel", value_delimiter = ',')]
    channels: Vec<String>,
    /// Seconds between notifications of one alert.
    #[arg(long, default_value_t = 3600, allow_negative_numbers = true)]
    cooldown_secs: i64,
    /// Limit the rule to one campaign.
    #[arg(long)]
    campaign: Option<String>,
    /// Publish the rule switched off.
    #[arg(long)]
    disabled: bool,
}

#[derive(Debug, clap::Args)]
struct RuleKey {
    /// The organisation.
    #[arg(long, allow_negative_numbers = true)]
    org: i64,
    /// Rule id.
    #[arg(long)]
    id: String,
    /// Why (disable and delete only).
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Debug, clap::Args)]
struct ChannelSet {
    #[command(flatten)]
    common: Common,
    /// Channel id (rules name it).
    #[arg(long)]
    id: String,
    /// webhook, slack, email or in_app.
    #[arg(long, value_parser = |s: &str| s.parse::<ChannelKind>())]
    kind: ChannelKind,
    /// http(s) URL (webhook, slack), e-mail address (email) or audience (in_app).
    #[arg(long)]
    target: String,
    /// Name of the secret holding the credentials (a file in the sender's --secrets-dir);
    /// never the secret itself.
    #[arg(long)]
    secret_ref: Option<String>,
    /// At most this many notifications per minute.
    #[arg(long, allow_negative_numbers = true)]
    rate_limit: Option<i32>,
    /// Publish the channel switched off.
    #[arg(long)]
    disabled: bool,
}

#[derive(Debug, clap::Args)]
struct ChannelKey {
    /// The organisation.
    #[arg(long, allow_negative_numbers = true)]
    org: i64,
    /// Channel id.
    #[arg(long)]
    id: String,
    /// Why (delete only).
    #[arg(long)]
    reason: Option<String>,
}

#[derive(Debug, clap::Args)]
struct OrgSet {
    #[command(flatten)]
    common: Common,
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// IANA time zone the org's days are counted in (default UTC).
    #[arg(long)]
    timezone: Option<String>,
    /// ISO 4217 currency (default USD).
    #[arg(long)]
    currency: Option<String>,
    /// Rows older than this many days are stale (default 7).
    #[arg(long, allow_negative_numbers = true)]
    freshness_days: Option<i32>,
}

#[derive(Debug, clap::Args)]
struct OrgKey {
    /// The organisation.
    #[arg(long, allow_negative_numbers = true)]
    org: i64,
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    /// Only this organisation.
    #[arg(long, allow_negative_numbers = true)]
    org: Option<i64>,
}

#[derive(Debug, clap::Args)]
struct ApplyArgs {
    /// The file: YAML or JSON, `{org: <default org>, changes: [{org, booking|rule|channel|org_settings: {...}, reason}]}`.
    #[arg(long, short = 'f')]
    file: PathBuf,
    /// Validate and show what would be published; publish nothing.
    #[arg(long)]
    dry_run: bool,
}

/// What can go wrong in `config` besides Kafka and the registry.
#[derive(Debug, thiserror::Error)]
enum ConfigError {
    /// A change failed validation: nothing was published.
    #[error("refused, nothing published: {0}")]
    Invalid(String),
    /// The file could not be read or parsed.
    #[error("{path}: {message}")]
    File { path: String, message: String },
    /// Delete, disable or get of a key that holds nothing.
    #[error("org {org} has no {key}")]
    NotFound { org: i64, key: String },
    /// The actor is unusable.
    #[error("--actor must be a non-empty id without '@' (never an e-mail address)")]
    Actor,
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        Failure::Error(e.into())
    }
}

impl From<ConfigLogError> for Failure {
    fn from(e: ConfigLogError) -> Self {
        Failure::Error(e.into())
    }
}

/// `config …`.
pub(crate) async fn run(global: &Global, args: &ConfigArgs) -> Result<(), Failure> {
    let ctx = Ctx {
        global,
        opts: &args.opts,
    };
    match &args.command {
        ConfigCommand::Booking(BookingCommand::Set(a)) => {
            let item = ConfigItem::Booking(Booking {
                campaign_id: a.campaign.clone(),
                line_item_id: a.line_item.clone(),
                booked_impressions: a.booked_impressions,
                booked_budget: a.booked_budget,
                booking_revenue: a.booking_revenue,
                flight_start: Date(a.flight_start),
                flight_end: Date(a.flight_end),
                currency: a.currency.clone(),
            });
            ctx.write(vec![upsert(&a.common, item)], false, false).await
        }
        ConfigCommand::Booking(BookingCommand::Get(k)) => {
            ctx.get(k.org, &booking_key(&k.campaign, k.line_item.as_deref()))
                .await
        }
        ConfigCommand::Booking(BookingCommand::List(l)) => ctx.list("booking/", l.org).await,
        ConfigCommand::Booking(BookingCommand::Delete(k)) => {
            let key = booking_key(&k.campaign, k.line_item.as_deref());
            ctx.delete(k.org, &key, k.reason.clone(), None).await
        }
        ConfigCommand::Rule(RuleCommand::Set(a)) => {
            let item = ConfigItem::RuleDefinition(RuleDefinition {
                rule_id: a.id.clone(),
                name: a.name.clone().unwrap_or_else(|| a.id.clone()),
                metric: a.metric,
                comparator: a.comparator,
                threshold: a.threshold,
                window: a.window.clone(),
                severity: a.severity,
                channels: a.channels.clone(),
                cooldown_seconds: a.cooldown_secs,
                enabled: !a.disabled,
                campaign_id: a.campaign.clone(),
            });
            ctx.write(vec![upsert(&a.common, item)], false, false).await
        }
        ConfigCommand::Rule(RuleCommand::Get(k)) => ctx.get(k.org, &format!("rule/{}", k.id)).await,
        ConfigCommand::Rule(RuleCommand::List(l)) => ctx.list("rule/", l.org).await,
        ConfigCommand::Rule(RuleCommand::Disable(k)) => ctx.disable_rule(k).await,
        ConfigCommand::Rule(RuleCommand::Delete(k)) => {
            let key = format!("rule/{}", k.id);
            let builtin = builtin_rule(&k.id).map(ConfigItem::RuleDefinition);
            ctx.delete(k.org, &key, k.reason.clone(), builtin).await
        }
        ConfigCommand::Channel(ChannelCommand::Set(a)) => {
            let item = ConfigItem::ChannelDefinition(ChannelDefinition {
                channel_id: a.id.clone(),
                kind: a.kind,
                target: a.target.clone(),
                secret_ref: a.secret_ref.clone(),
                rate_limit_per_minute: a.rate_limit,
                enabled: !a.disabled,
            });
            ctx.write(vec![upsert(&a.common, item)], false, false).await
        }
        ConfigCommand::Channel(ChannelCommand::Get(k)) => {
            ctx.get(k.org, &format!("channel/{}", k.id)).await
        }
        ConfigCommand::Channel(ChannelCommand::List(l)) => ctx.list("channel/", l.org).await,
        ConfigCommand::Channel(ChannelCommand::Delete(k)) => {
            let key = format!("channel/{}", k.id);
            ctx.delete(k.org, &key, k.reason.clone(), None).await
        }
        ConfigCommand::Org(OrgCommand::Set(a)) => ctx.org_set(a).await,
        ConfigCommand::Org(OrgCommand::Get(k)) => ctx.get(k.org, "org").await,
        ConfigCommand::Org(OrgCommand::List(l)) => ctx.list("org", l.org).await,
        ConfigCommand::Apply(a) => {
            let changes = read_file(&a.file)?;
            ctx.write(changes, true, a.dry_run).await
        }
    }
}

fn upsert(common: &Common, item: ConfigItem) -> Change {
    Change {
        org_id: common.org,
        op: ConfigOp::Upsert,
        item,
        reason: common.reason.clone(),
    }
}

fn booking_key(campaign: &str, line_item: Option<&str>) -> String {
    match line_item {
        Some(li) => format!("booking/{campaign}/{li}"),
        None => format!("booking/{campaign}"),
    }
}

/// The built-in rule `id` of the evaluator as a definition, if there is one.
fn builtin_rule(id: &str) -> Option<RuleDefinition> {
    use rule_evaluator::rules::{Window, default_rules};
    let r = default_rules().into_iter().find(|r| r.rule_id == id)?;
    Some(RuleDefinition {
        rule_id: r.rule_id,
        name: r.name,
        metric: r.metric,
        comparator: r.comparator,
        threshold: Ratio::new(r.threshold).ok()?,
        window: match r.window {
            Window::Grain(g) => g.as_str().to_owned(),
            Window::TrailingDays(n) => format!("{n}d"),
        },
        severity: r.severity,
        channels: r.channels,
        cooldown_seconds: r.cooldown_seconds,
        enabled: r.enabled,
        campaign_id: r.campaign_id,
    })
}

/// A command's context.
struct Ctx<'a> {
    global: &'a Global,
    opts: &'a ConfigOpts,
}

impl Ctx<'_> {
    fn read_options(&self) -> ReadOptions {
        ReadOptions {
            timeout: Duration::from_secs(self.opts.scan_secs.max(1)),
            idle: Duration::from_millis(self.opts.idle_ms),
            ..ReadOptions::new(&self.global.bootstrap_servers).secured(&self.global.kafka)
        }
    }

    fn actor(&self) -> Result<Actor, ConfigError> {
        let id = self
            .opts
            .actor
            .clone()
            .or_else(|| std::env::var("USER").ok())
            .or_else(|| std::env::var("LOGNAME").ok())
            .unwrap_or_else(|| "unknown".to_owned());
        let id = id.trim().to_owned();
        if id.is_empty() || id.contains('@') {
            return Err(ConfigError::Actor);
        }
        Ok(Actor {
            actor_type: ActorType::User,
            actor_id: id,
            display_name: None,
        })
    }

    /// A codec for reading (writer schemas fetched by id).
    fn reader(&self) -> anyhow::Result<Codec> {
        Ok(Codec::new(self.global.registry()?))
    }

    async fn snapshot(&self, codec: &Codec) -> Result<Snapshot, Failure> {
        let snapshot = config_log::read(codec, &self.read_options()).await?;
        if snapshot.undecodable > 0 {
            eprintln!(
                "pipelinectl: warning: {} records of {} are not config changes; skipped",
                snapshot.undecodable,
                Topic::ConfigChanges
            );
        }
        Ok(snapshot)
    }

    /// Validate `changes` (all of them, before anything is published), then publish them at
    /// their next versions; `idempotent` skips changes equal to their key's latest value.
    async fn write(
        &self,
        changes: Vec<Change>,
        idempotent: bool,
        dry_run: bool,
    ) -> Result<(), Failure> {
        let actor = self.actor()?;
        let mut refused = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            if let Err(e) = config_check::check(c) {
                refused.push(if changes.len() > 1 {
                    format!("item {} ({} of org {}): {e}", i + 1, c.key(), c.org_id)
                } else {
                    e.to_string()
                });
            }
        }
        if !refused.is_empty() {
            return Err(ConfigError::Invalid(refused.join("; ")).into());
        }
        let registry = self.global.registry()?;
        let codec = Arc::new(Codec::new(registry));
        let snapshot = self.snapshot(&codec).await?;
        let planned = config_log::plan(&snapshot, changes, idempotent);
        let mut rows = Vec::new();
        let publisher = if dry_run {
            None
        } else {
            for topic in [Topic::ConfigChanges, Topic::AuditEvents] {
                codec
                    .register(topic)
                    .await
                    .map_err(|e| anyhow::anyhow!("registering the schema of {topic}: {e}"))?;
            }
            let producer =
                runtime::secure_producer(&self.global.bootstrap_servers, &self.global.kafka)?;
            Some(Publisher::new(producer, codec.clone(), source(), actor))
        };
        for p in &planned {
            let skip = p.unchanged && idempotent;
            let (status, event_id, correlation_id) = match (&publisher, skip) {
                (_, true) => ("unchanged", String::new(), String::new()),
                (None, false) => ("would publish", String::new(), String::new()),
                (Some(publisher), false) => {
                    let published = publisher.publish(p).await?;
                    let m = &published.event.metadata;
                    (
                        "published",
                        m.event_id.to_string(),
                        m.correlation_id.to_string(),
                    )
                }
            };
            rows.push(row(p, status, event_id, correlation_id));
        }
        output::print(
            self.global.json,
            &[
                "org",
                "key",
                "version",
                "op",
                "status",
                "event_id",
                "correlation_id",
            ],
            &rows,
        );
        Ok(())
    }

    async fn delete(
        &self,
        org: i64,
        key: &str,
        reason: Option<String>,
        fallback: Option<ConfigItem>,
    ) -> Result<(), Failure> {
        let codec = self.reader()?;
        let snapshot = self.snapshot(&codec).await?;
        let item = match snapshot.latest(org, key) {
            Some(e) if !e.deleted() => e.change().change.clone(),
            _ => fallback.ok_or_else(|| ConfigError::NotFound {
                org,
                key: key.to_owned(),
            })?,
        };
        let change = Change {
            org_id: org,
            op: ConfigOp::Delete,
            item,
            reason,
        };
        self.write(vec![change], false, false).await
    }

    async fn disable_rule(&self, k: &RuleKey) -> Result<(), Failure> {
        let key = format!("rule/{}", k.id);
        let codec = self.reader()?;
        let snapshot = self.snapshot(&codec).await?;
        let latest = snapshot.latest(k.org, &key).filter(|e| !e.deleted());
        let mut definition = match latest.map(|e| &e.change().change) {
            Some(ConfigItem::RuleDefinition(d)) => d.clone(),
            _ => builtin_rule(&k.id).ok_or_else(|| ConfigError::NotFound {
                org: k.org,
                key: key.clone(),
            })?,
        };
        definition.enabled = false;
        let change = Change {
            org_id: k.org,
            op: ConfigOp::Upsert,
            item: ConfigItem::RuleDefinition(definition),
            reason: k.reason.clone(),
        };
        self.write(vec![change], false, false).await
    }

    async fn org_set(&self, a: &OrgSet) -> Result<(), Failure> {
        let codec = self.reader()?;
        let snapshot = self.snapshot(&codec).await?;
        let mut settings = match snapshot
            .latest(a.common.org, "org")
            .filter(|e| !e.deleted())
            .map(|e| &e.change().change)
        {
            Some(ConfigItem::OrgSettings(s)) => s.clone(),
            _ => OrgSettings {
                name: None,
                timezone: "UTC".to_owned(),
                currency: "USD".to_owned(),
                freshness_days: 7,
            },
        };
        if let Some(n) = &a.name {
            settings.name = Some(n.clone());
        }
        if let Some(tz) = &a.timezone {
            settings.timezone = tz.clone();
        }
        if let Some(c) = &a.currency {
            settings.currency = c.clone();
        }
        if let Some(d) = a.freshness_days {
            settings.freshness_days = d;
        }
        let change = upsert(&a.common, ConfigItem::OrgSettings(settings));
        self.write(vec![change], false, false).await
    }

    async fn get(&self, org: i64, key: &str) -> Result<(), Failure> {
        let codec = self.reader()?;
        let snapshot = self.snapshot(&codec).await?;
        match snapshot.latest(org, key).filter(|e| !e.deleted()) {
            Some(e) => {
                show(self.global.json, &[e]);
                Ok(())
            }
            None => {
                eprintln!("pipelinectl: org {org} has no {key}");
                Err(Failure::Findings)
            }
        }
    }

    async fn list(&self, prefix: &str, org: Option<i64>) -> Result<(), Failure> {
        let codec = self.reader()?;
        let snapshot = self.snapshot(&codec).await?;
        let entries: Vec<&Entry> = snapshot
            .current()
            .filter(|e| e.change().key.starts_with(prefix))
            .filter(|e| org.is_none_or(|o| e.org_id() == o))
            .collect();
        show(self.global.json, &entries);
        Ok(())
    }
}

fn source() -> Source {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    Source {
        service: "pipelinectl".to_owned(),
        instance: format!("{}:{}", host.trim(), std::process::id()),
    }
}

fn row(p: &Planned, status: &str, event_id: String, correlation_id: String) -> Vec<String> {
    vec![
        p.change.org_id.to_string(),
        p.key.clone(),
        p.version.to_string(),
        p.change.op.as_str().to_owned(),
        status.to_owned(),
        event_id,
        correlation_id,
    ]
}

/// The current values: a table, or JSON with each item in full.
fn show(json: bool, entries: &[&Entry]) {
    if json {
        let items: Vec<Value> = entries
            .iter()
            .map(|e| {
                let c = e.change();
                let (kind, item) = match &c.change {
                    ConfigItem::Booking(b) => ("booking", serde_json::to_value(b)),
                    ConfigItem::RuleDefinition(r) => ("rule", serde_json::to_value(r)),
                    ConfigItem::ChannelDefinition(ch) => ("channel", serde_json::to_value(ch)),
                    ConfigItem::OrgSettings(o) => ("org_settings", serde_json::to_value(o)),
                };
                json!({
                    "org": e.org_id(),
                    "key": c.key,
                    "version": c.version,
                    "updated_at": e.event.metadata.timestamp.to_string(),
                    "actor": c.actor.actor_id,
                    "event_id": e.event.metadata.event_id.to_string(),
                    kind: item.unwrap_or(Value::Null),
                })
            })
            .collect();
        println!("{}", Value::Array(items));
        return;
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let c = e.change();
            vec![
                e.org_id().to_string(),
                c.key.clone(),
                c.version.to_string(),
                e.event.metadata.timestamp.to_string(),
                c.actor.actor_id.clone(),
                summary(&c.change),
            ]
        })
        .collect();
    output::print(
        false,
        &["org", "key", "version", "updated_at", "actor", "value"],
        &rows,
    );
}

fn summary(item: &ConfigItem) -> String {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    match item {
        ConfigItem::Booking(b) => format!(
            "{} impressions, budget {}, revenue {}, {}..{} {}",
            b.booked_impressions,
            b.booked_budget,
            b.booking_revenue,
            b.flight_start,
            b.flight_end,
            b.currency.as_deref().unwrap_or("(org currency)")
        ),
        ConfigItem::RuleDefinition(r) => format!(
            "{} {} {} {} {}, cooldown {} s, channels {}{}{}",
            r.metric,
            r.comparator,
            r.threshold,
            r.window,
            r.severity,
            r.cooldown_seconds,
            if r.channels.is_empty() {
                "all".to_owned()
            } else {
                r.channels.join(",")
            },
            r.campaign_id
                .as_ref()
                .map_or_else(String::new, |c| format!(", campaign {c}")),
            if r.enabled { "" } else { ", disabled" }
        ),
        ConfigItem::ChannelDefinition(c) => format!(
            "{} {}, secret {}, rate {}/min{}",
            c.kind,
            c.target,
            or_dash(c.secret_ref.clone()),
            or_dash(c.rate_limit_per_minute.map(|r| r.to_string())),
            if c.enabled { "" } else { ", disabled" }
        ),
        ConfigItem::OrgSettings(o) => format!(
            "{}timezone {}, currency {}, freshness {} days",
            o.name
                .as_ref()
                .map_or_else(String::new, |n| format!("{n}: ")),
            o.timezone,
            o.currency,
            o.freshness_days
        ),
    }
}

// ---- `config apply -f`: the file format ----

/// A number or a decimal string (YAML and JSON numbers, or quoted amounts).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Num {
    Int(i64),
    Float(f64),
    Text(String),
}

impl Num {
    fn text(&self) -> String {
        match self {
            Num::Int(i) => i.to_string(),
            Num::Float(f) => f.to_string(),
            Num::Text(s) => s.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    /// The org of items that name none.
    #[serde(default)]
    org: Option<i64>,
    changes: Vec<FileItem>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileItem {
    #[serde(default)]
    org: Option<i64>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    booking: Option<FileBooking>,
    #[serde(default)]
    rule: Option<FileRule>,
    #[serde(default)]
    channel: Option<ChannelDefinitionSpec>,
    #[serde(default)]
    org_settings: Option<FileOrg>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileBooking {
    campaign_id: String,
    #[serde(default)]
    line_item_id: Option<String>,
    booked_impressions: i64,
    booked_budget: Num,
    booking_revenue: Num,
    flight_start: NaiveDate,
    flight_end: NaiveDate,
    #[serde(default)]
    currency: Option<String>,
}

fn default_window() -> String {
    "daily".to_owned()
}
fn default_severity() -> Severity {
    Severity::Warning
}
fn default_cooldown() -> i64 {
    3600
}
fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    rule_id: String,
    #[serde(default)]
    name: Option<String>,
    metric: Metric,
    comparator: Comparator,
    threshold: Num,
    #[serde(default = "default_window")]
    window: String,
    #[serde(default = "default_severity")]
    severity: Severity,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default = "default_cooldown")]
    cooldown_seconds: i64,
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    campaign_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelDefinitionSpec {
    channel_id: String,
    kind: ChannelKind,
    target: String,
    #[serde(default)]
    secret_ref: Option<String>,
    #[serde(default)]
    rate_limit_per_minute: Option<i32>,
    #[serde(default = "yes")]
    enabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOrg {
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "default_timezone")]
    timezone: String,
    #[serde(default = "default_currency")]
    currency: String,
    #[serde(default = "default_freshness")]
    freshness_days: i32,
}

fn default_timezone() -> String {
    "UTC".to_owned()
}
fn default_currency() -> String {
    "USD".to_owned()
}
fn default_freshness() -> i32 {
    7
}

/// The changes of a YAML or JSON file (JSON is read as YAML, of which it is a subset).
fn read_file(path: &std::path::Path) -> Result<Vec<Change>, ConfigError> {
    let file_error = |message: String| ConfigError::File {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let doc: FileDoc = serde_yaml_ng::from_str(&text).map_err(|e| file_error(e.to_string()))?;
    parse_doc(doc).map_err(file_error)
}

fn parse_doc(doc: FileDoc) -> Result<Vec<Change>, String> {
    if doc.changes.is_empty() {
        return Err("no changes".to_owned());
    }
    doc.changes
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let n = i + 1;
            let org_id = item
                .org
                .or(doc.org)
                .ok_or_else(|| format!("item {n}: no org (set `org` on the item or the file)"))?;
            let mut items = Vec::new();
            if let Some(b) = item.booking {
                let amount = |what: &str, v: &Num| {
                    v.text()
                        .parse::<Money>()
                        .map_err(|e| format!("item {n}: {what}: {e}"))
                };
                items.push(ConfigItem::Booking(Booking {
                    booked_budget: amount("booked_budget", &b.booked_budget)?,
                    booking_revenue: amount("booking_revenue", &b.booking_revenue)?,
                    campaign_id: b.campaign_id,
                    line_item_id: b.line_item_id,
                    booked_impressions: b.booked_impressions,
                    flight_start: Date(b.flight_start),
                    flight_end: Date(b.flight_end),
                    currency: b.currency,
                }));
            }
            if let Some(r) = item.rule {
                let threshold = r
                    .threshold
                    .text()
                    .parse::<Ratio>()
                    .map_err(|e| format!("item {n}: threshold: {e}"))?;
                items.push(ConfigItem::RuleDefinition(RuleDefinition {
                    name: r.name.unwrap_or_else(|| r.rule_id.clone()),
                    rule_id: r.rule_id,
                    metric: r.metric,
                    comparator: r.comparator,
                    threshold,
                    window: r.window,
                    severity: r.severity,
                    channels: r.channels,
                    cooldown_seconds: r.cooldown_seconds,
                    enabled: r.enabled,
                    campaign_id: r.campaign_id,
                }));
            }
            if let Some(c) = item.channel {
                items.push(ConfigItem::ChannelDefinition(ChannelDefinition {
                    channel_id: c.channel_id,
                    kind: c.kind,
                    target: c.target,
                    secret_ref: c.secret_ref,
                    rate_limit_per_minute: c.rate_limit_per_minute,
                    enabled: c.enabled,
                }));
            }
            if let Some(o) = item.org_settings {
                items.push(ConfigItem::OrgSettings(OrgSettings {
                    name: o.name,
                    timezone: o.timezone,
                    currency: o.currency,
                    freshness_days: o.freshness_days,
                }));
            }
            match items.len() {
                1 => Ok(Change {
                    org_id,
                    op: ConfigOp::Upsert,
                    item: items.remove(0),
                    reason: item.reason,
                }),
                _ => Err(format!(
                    "item {n}: give exactly one of booking, rule, channel, org_settings"
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_names_one_item_per_change_with_numbers_or_decimal_strings() {
        let yaml = r#"
org: 7
changes:
  - booking: {campaign_id: c1, booked_impressions: 1000, booked_budget: 50.5, booking_revenue: "75.25", flight_start: 2025-01-01, flight_end: 2025-01-31}
  - org: 8
    reason: stricter
    rule: {rule_id: r1, metric: pacing_rate, comparator: lt, threshold: 70}
  - channel: {channel_id: inbox, kind: in_app, target: ops}
  - org_settings: {timezone: Europe/Berlin, currency: EUR}
"#;
        let doc: FileDoc = serde_yaml_ng::from_str(yaml).expect("parses");
        let changes = parse_doc(doc).expect("valid");
        assert_eq!(changes.len(), 4);
        assert_eq!(changes[0].key(), "booking/c1");
        let ConfigItem::Booking(b) = &changes[0].item else {
            panic!("a booking")
        };
        assert_eq!(b.booked_budget.to_string(), "50.50");
        assert_eq!(b.booking_revenue.to_string(), "75.25");
        assert_eq!(
            (changes[1].org_id, changes[1].key().as_str()),
            (8, "rule/r1")
        );
        assert_eq!(changes[1].reason.as_deref(), Some("stricter"));
        assert_eq!(changes[3].key(), "org");

        let json = r#"{"changes": [{"org": 1, "channel": {"channel_id": "x", "kind": "email", "target": "a@b.c"}}]}"#;
        let doc: FileDoc = serde_yaml_ng::from_str(json).expect("JSON parses");
        assert_eq!(parse_doc(doc).expect("valid")[0].key(), "channel/x");

        let two = "changes: [{org: 1, channel: {channel_id: x, kind: in_app, target: o}, org_settings: {}}]";
        let doc: FileDoc = serde_yaml_ng::from_str(two).expect("parses");
        assert!(parse_doc(doc).expect_err("refused").contains("exactly one"));
        let unknown =
            "changes: [{org: 1, channel: {channel_id: x, kind: in_app, target: o, secret: s}}]";
        assert!(serde_yaml_ng::from_str::<FileDoc>(unknown).is_err());
    }

    #[test]
    fn builtin_rules_convert_to_valid_definitions() {
        let d = builtin_rule("default.pacing-low").expect("built in");
        assert_eq!(d.window, "daily");
        assert!(rule_evaluator::rules::Rule::from_definition(&d).is_ok());
        let d = builtin_rule("default.spend-anomaly").expect("built in");
        assert!(rule_evaluator::rules::Rule::from_definition(&d).is_ok());
        assert!(builtin_rule("nope").is_none());
    }
}
