//! The notification-sender stage: each alert of `rules.alerts.triggered` is delivered to its
//! org's channels, configured on `config.changes`.
//!
//! # Both major versions of the alert
//!
//! `rules.alerts.triggered` carries major 1 (`Alert`) and major 2 (`AlertV2`) records side
//! by side while producers move over. The sender consumes `AlertV2`: the codec upcasts a
//! major 1 record (`From<Alert>`) so both are delivered alike, and its
//! `adpipe_schema_version_in_use_total` shows 1.0.0 as deprecated until no producer writes it.
//!
//! # Which channels
//!
//! The alert's `channels` (ids), or — when that list is empty — every enabled channel of the
//! alert's org. Channel ids are looked up in the alert's org only: another org's channels
//! are never used, whatever the ids. A disabled channel is skipped. An id the org does not
//! have (never configured, or deleted) does not stop the others: they are delivered, then
//! the alert fails with `NOTIFY_UNKNOWN_CHANNEL` naming the id, and goes to the DLQ.
//!
//! # Once per alert and channel
//!
//! Every (alert, channel) pair has an idempotency key ([`crate::key`]). A channel whose key
//! is recorded as sent is skipped, so a redelivered alert — a replay after a crash, a
//! duplicate record, a DLQ record replayed after a fix — sends only what was not sent. The
//! key is recorded as sent right after the peer accepted the notification. A crash in the
//! short window between the peer's acceptance and that write sends the notification again on
//! the replay, with the **same** `Idempotency-Key` header (webhooks, Slack) or `Message-ID`
//! (e-mail), so a receiver that honours them drops the repeat; in-app notifications are
//! stored in the same statement as their sent-record and are never repeated.
//!
//! # Retries, DLQ and rate limits
//!
//! Each channel is tried up to `--channel-attempts` times within one processing of the alert,
//! with exponential backoff and jitter between attempts; every failed attempt is recorded
//! (attempts, last error) with the delivery. HTTP 5xx, 408, 429, timeouts and connection
//! errors retry; other 4xx fail the channel at once. A channel that failed fails the alert
//! with `NOTIFY_CHANNEL_FAILED` (after the other channels were delivered), which the runtime
//! dead-letters with the error in the DLQ headers. Each channel's `rate_limit_per_minute`
//! is a token bucket ([`crate::ratelimit`]): an alert over the limit waits for a token.
//!
//! Channels of one alert are delivered concurrently; alerts of one partition in order. A
//! store outage makes the alert wait (`ProcessError::unavailable`) instead of failing it.
//!
//! Alerts and channel configuration are separate topics: an alert naming a channel whose
//! configuration has not been applied yet fails as unknown and can be replayed from the DLQ.
//!
//! Logs name the org, alert, channel id and kind, never a channel's target (URLs and
//! e-mail addresses are PII of class `contact`) or a secret.

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Duration,
};

use envelope::{
    Event,
    payload::{
        alerts::AlertV2,
        config::{ChannelKind, ConfigChange, ConfigItem, ConfigOp},
    },
};
use pgstore::GroupCommit;
use runtime::{Outputs, ProcessError, Processor};
use topics::{ConsumerGroup, Topic};
use uuid::Uuid;

use crate::{
    key::idempotency_key,
    metrics::NotifyMetrics,
    ratelimit::RateLimiter,
    render,
    retry::{Backoff, DeliveryError},
    send::Transports,
    store::{Channel, DeliveryRef, InApp, NotifyStore, StoreError},
};

/// The notification-sender's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct NotifySettings {
    /// PostgreSQL connection string of the sender's state (migrated at start).
    #[arg(
        long,
        env = "NOTIFY_DATABASE_URL",
        hide_env_values = true,
        default_value = "host=127.0.0.1 user=postgres dbname=postgres"
    )]
    pub database_url: String,
    /// Connections to PostgreSQL; input partitions are spread over them. Each is a
    /// group-commit lane for in-app notifications, with one autocommit connection beside it.
    #[arg(long, env = "NOTIFY_DATABASE_CONNECTIONS", default_value_t = 2)]
    pub database_connections: usize,
    /// How long a lane's transaction gathers in-app notifications after its first one
    /// before it commits (their alerts complete on the commit: latency traded for fewer WAL
    /// flushes).
    #[arg(long, env = "NOTIFY_COMMIT_LINGER_MS", default_value_t = 5)]
    pub commit_linger_ms: u64,
    /// A lane's transaction commits at once when it holds this many in-app notifications.
    #[arg(long, env = "NOTIFY_COMMIT_MAX_WRITES", default_value_t = 1000)]
    pub commit_max_writes: usize,
    /// SMTP server for e-mail channels: `smtp://host:port` (plain text),
    /// `smtp://host:port?tls=required` (STARTTLS) or `smtps://host:port`; credentials as
    /// `smtp://user:password@host` (set it from a secret, not on a command line).
    #[arg(
        long,
        env = "NOTIFY_SMTP_URL",
        hide_env_values = true,
        default_value = "smtp://127.0.0.1:25"
    )]
    pub smtp_url: String,
    /// Sender address of e-mail notifications.
    #[arg(
        long,
        env = "NOTIFY_SMTP_FROM",
        default_value = "adpipe alerts <alerts@adpipe.invalid>"
    )]
    pub smtp_from: String,
    /// Directory of mounted secrets: a channel's `secret_ref` names a file in it.
    #[arg(
        long,
        env = "NOTIFY_SECRETS_DIR",
        default_value = "/var/run/secrets/adpipe"
    )]
    pub secrets_dir: PathBuf,
    /// Attempts per channel and alert before the alert goes to the DLQ.
    #[arg(long, env = "NOTIFY_CHANNEL_ATTEMPTS", default_value_t = 5)]
    pub channel_attempts: u32,
    /// First backoff between attempts of a channel, in milliseconds (doubles per attempt,
    /// with jitter).
    #[arg(long, env = "NOTIFY_CHANNEL_BACKOFF_MS", default_value_t = 200)]
    pub channel_backoff_ms: u64,
    /// Longest backoff between attempts of a channel, in milliseconds.
    #[arg(long, env = "NOTIFY_CHANNEL_BACKOFF_MAX_MS", default_value_t = 10_000)]
    pub channel_backoff_max_ms: u64,
    /// Timeout of one HTTP request or SMTP exchange, in milliseconds.
    #[arg(long, env = "NOTIFY_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
}

runtime::inputs! {
    /// What the sender consumes: alerts and configuration changes.
    pub enum NotifyInput {
        /// An alert transition, of either major version of the topic's schema: major 1
        /// records are upcast to major 2 by the codec, so the sender handles one type.
        Alert(AlertV2),
        /// A configuration change (channels matter to the sender).
        Config(ConfigChange),
    }
}

/// The channels an alert goes to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection<'a> {
    /// Enabled channels to deliver to.
    pub deliver: Vec<&'a Channel>,
    /// Named by the alert but disabled: skipped.
    pub disabled: Vec<String>,
    /// Named by the alert but not configured for its org.
    pub unknown: Vec<String>,
}

/// The channels of `org_channels` (one org's) that `alert` goes to: the ones it names, or
/// every enabled one when it names none. Each id counts once.
pub fn select<'a>(alert: &AlertV2, org_channels: &'a [Channel]) -> Selection<'a> {
    let mut s = Selection::default();
    if alert.channels.is_empty() {
        s.deliver = org_channels.iter().filter(|c| c.enabled).collect();
        return s;
    }
    let mut seen = HashSet::new();
    for id in alert.channels.iter().filter(|id| seen.insert(id.as_str())) {
        match org_channels.iter().find(|c| &c.channel_id == id) {
            Some(c) if c.enabled => s.deliver.push(c),
            Some(_) => s.disabled.push(id.clone()),
            None => s.unknown.push(id.clone()),
        }
    }
    s
}

/// Why a channel was not delivered.
enum ChannelFailure {
    /// The store failed: the whole alert waits or fails with it.
    Store(StoreError),
    /// The channel's attempts are exhausted (or its error is permanent).
    GaveUp {
        channel_id: String,
        kind: ChannelKind,
        error: DeliveryError,
        attempts: u32,
    },
}

impl From<StoreError> for ChannelFailure {
    fn from(e: StoreError) -> Self {
        ChannelFailure::Store(e)
    }
}

/// The notification-sender stage.
#[derive(Debug)]
pub struct NotificationSender {
    settings: NotifySettings,
    store: OnceLock<Arc<NotifyStore>>,
    transports: Transports,
    limiter: RateLimiter,
    backoff: Backoff,
    metrics: NotifyMetrics,
}

impl NotificationSender {
    /// The sender on `settings`; the store is connected and migrated by
    /// [`Processor::start`].
    pub fn new(settings: NotifySettings) -> anyhow::Result<NotificationSender> {
        let transports = Transports::new(
            Duration::from_millis(settings.request_timeout_ms.max(1)),
            &settings.smtp_url,
            &settings.smtp_from,
            settings.secrets_dir.clone(),
        )?;
        let backoff = Backoff {
            base: Duration::from_millis(settings.channel_backoff_ms),
            cap: Duration::from_millis(
                settings
                    .channel_backoff_max_ms
                    .max(settings.channel_backoff_ms),
            ),
        };
        Ok(NotificationSender {
            settings,
            store: OnceLock::new(),
            transports,
            limiter: RateLimiter::default(),
            backoff,
            metrics: NotifyMetrics::default(),
        })
    }

    /// The stage's counters (sent, failed, retried per kind).
    pub fn metrics(&self) -> &NotifyMetrics {
        &self.metrics
    }

    fn store(&self) -> Result<&Arc<NotifyStore>, ProcessError> {
        self.store
            .get()
            .ok_or_else(|| ProcessError::retryable("NOTIFY_NOT_STARTED", "the store is not ready"))
    }

    async fn on_config(
        &self,
        e: Event<ConfigChange>,
        partition: i32,
        out: &mut Outputs<'_>,
    ) -> Result<(), ProcessError> {
        let ConfigItem::ChannelDefinition(channel) = &e.payload.change else {
            return Ok(());
        };
        let deleted = e.payload.op == ConfigOp::Delete;
        let applied = self
            .store()?
            .put_channel(
                partition,
                e.metadata.org_id,
                channel,
                e.payload.version,
                deleted,
            )
            .await?;
        tracing::info!(
            org_id = e.metadata.org_id,
            channel_id = %channel.channel_id,
            kind = %channel.kind,
            version = e.payload.version,
            deleted,
            applied,
            "channel configuration"
        );
        out.emit(runtime::audit::config_applied(Self::GROUP.name(), &e))
    }

    /// Deliver `e` to its channels: remote channels now, in the partition's order; its
    /// in-app notifications come back as work for after the alert's turn, which the caller
    /// defers (the alert completes once their rows are committed). An alert that fails runs
    /// that work first, so whatever it did deliver is durable before it is dead-lettered; one
    /// that finds the store down returns at once and waits (processed again, in-app rows
    /// included).
    async fn on_alert(
        &self,
        e: Event<AlertV2>,
        partition: i32,
    ) -> Result<Option<InAppWork>, ProcessError> {
        let store = self.store()?;
        let org_id = e.metadata.org_id;
        let alert = &e.payload;
        // Both reads pipelined on the partition's connection.
        let (channels, sent) = tokio::try_join!(
            store.channels(partition, org_id),
            store.sent(partition, org_id, alert.alert_id.0)
        )?;
        let selection = select(alert, &channels);
        for id in &selection.disabled {
            tracing::info!(org_id, alert_id = %alert.alert_id, channel_id = %id, "channel disabled: skipped");
        }
        let mut notes = Vec::new();
        let mut remote = Vec::new();
        for c in selection.deliver {
            let key = idempotency_key(alert, &c.channel_id);
            if sent.contains(&key) {
                tracing::info!(org_id, alert_id = %alert.alert_id, channel_id = %c.channel_id,
                    kind = %c.kind, %key, "already delivered: skipped");
            } else if c.kind == ChannelKind::InApp {
                // Rate limits hold in the partition's order.
                self.limiter
                    .acquire(org_id, &c.channel_id, c.rate_limit_per_minute)
                    .await;
                notes.push(InApp {
                    key,
                    org_id,
                    alert_id: alert.alert_id.0,
                    channel_id: c.channel_id.clone(),
                    audience: c.target.clone(),
                    state: alert.state.as_str(),
                    severity: alert.severity.as_str(),
                    title: render::title(alert),
                    message: render::text(org_id, alert),
                });
            } else {
                remote.push(self.deliver(partition, org_id, alert, c, key));
            }
        }
        let results = futures::future::join_all(remote).await;
        let work = (!notes.is_empty()).then(|| InAppWork {
            store: store.clone(),
            metrics: self.metrics.clone(),
            partition,
            notes,
        });
        let mut failed = Vec::new();
        let mut store_error = None;
        for result in results {
            match result {
                Ok(()) => {}
                Err(ChannelFailure::Store(e)) => store_error = Some(e),
                Err(ChannelFailure::GaveUp {
                    channel_id,
                    kind,
                    error,
                    attempts,
                }) => failed.push(format!(
                    "{channel_id} ({kind}): {}: {error} after {attempts} attempt{}",
                    error.code(),
                    if attempts == 1 { "" } else { "s" }
                )),
            }
        }
        let unknown = (!selection.unknown.is_empty()).then(|| {
            format!(
                "org {org_id} has no channel {}",
                selection
                    .unknown
                    .iter()
                    .map(|id| format!("{id:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
        // The store is down: the alert waits and is processed again, in-app rows included
        // (their statement is idempotent).
        if let Some(e) = store_error {
            return Err(e.into());
        }
        if failed.is_empty() && unknown.is_none() {
            return Ok(work);
        }
        if let Some(work) = work {
            work.run().await?;
        }
        if !failed.is_empty() {
            let mut message = failed.join("; ");
            if let Some(u) = unknown {
                message.push_str(&format!("; {u}"));
            }
            return Err(ProcessError::permanent("NOTIFY_CHANNEL_FAILED", message));
        }
        Err(ProcessError::permanent(
            "NOTIFY_UNKNOWN_CHANNEL",
            format!(
                "{}; the alert's other channels were delivered",
                unknown.unwrap_or_default()
            ),
        ))
    }

    /// Deliver `alert` to the remote `channel` under `key`: wait for a rate-limit token,
    /// then try up to `--channel-attempts` times, recording each outcome.
    async fn deliver(
        &self,
        partition: i32,
        org_id: i64,
        alert: &AlertV2,
        channel: &Channel,
        key: Uuid,
    ) -> Result<(), ChannelFailure> {
        let store = self
            .store
            .get()
            .ok_or_else(|| ChannelFailure::Store(StoreError::Unavailable("not started".into())))?;
        let d = DeliveryRef {
            key,
            org_id,
            alert_id: alert.alert_id.0,
            channel_id: &channel.channel_id,
            kind: channel.kind,
        };
        let kind = channel.kind.as_str();
        self.limiter
            .acquire(org_id, &channel.channel_id, channel.rate_limit_per_minute)
            .await;
        let attempts = self.settings.channel_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt(org_id, alert, channel, key).await {
                Ok(()) => {
                    // The peer accepted it: record it at once (a crash before this line
                    // resends with the same key; see the module doc).
                    store.record_sent(partition, d).await?;
                    let total = self.metrics.count_sent(kind);
                    tracing::info!(org_id, alert_id = %alert.alert_id,
                        channel_id = %channel.channel_id, kind, %key, attempt,
                        sent_total = total, "notification delivered");
                    return Ok(());
                }
                Err(error) => {
                    let recorded = format!("{}: {error}", error.code());
                    let total_attempts = store.record_failed(partition, d, &recorded).await?;
                    if !error.retryable() || attempt >= attempts {
                        let total = self.metrics.count_failed(kind);
                        tracing::warn!(org_id, alert_id = %alert.alert_id,
                            channel_id = %channel.channel_id, kind, %key, attempt,
                            total_attempts, error = %recorded, retryable = error.retryable(),
                            failed_total = total, "notification failed: giving up on the channel");
                        return Err(ChannelFailure::GaveUp {
                            channel_id: channel.channel_id.clone(),
                            kind: channel.kind,
                            error,
                            attempts: attempt,
                        });
                    }
                    self.metrics.count_retried(kind);
                    let delay = self.backoff.delay(attempt);
                    tracing::info!(org_id, alert_id = %alert.alert_id,
                        channel_id = %channel.channel_id, kind, %key, attempt,
                        error = %recorded, delay_ms = delay.as_millis() as u64,
                        "notification attempt failed: retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One attempt at a remote channel.
    async fn attempt(
        &self,
        org_id: i64,
        alert: &AlertV2,
        channel: &Channel,
        key: Uuid,
    ) -> Result<(), DeliveryError> {
        let secret = match &channel.secret_ref {
            Some(name) => Some(self.transports.secret(name).await?),
            None => None,
        };
        match channel.kind {
            ChannelKind::Webhook => {
                let body = render::webhook_json(org_id, alert, key);
                self.transports
                    .post_json(&channel.target, key, secret.as_deref(), &body)
                    .await
            }
            ChannelKind::Slack => {
                let body = render::slack_json(org_id, alert);
                self.transports
                    .post_json(&channel.target, key, secret.as_deref(), &body)
                    .await
            }
            ChannelKind::Email => {
                self.transports
                    .email(
                        &channel.target,
                        key,
                        render::email_subject(alert),
                        render::text(org_id, alert),
                    )
                    .await
            }
            // Stored, not sent: handled by the caller.
            ChannelKind::InApp => Ok(()),
        }
    }
}

impl Processor for NotificationSender {
    type Input = NotifyInput;
    const GROUP: ConsumerGroup = ConsumerGroup::NotificationSender;

    fn outputs() -> Vec<Topic> {
        vec![Topic::AuditEvents]
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }

    async fn start(&self) -> anyhow::Result<()> {
        let store = NotifyStore::new(
            &self.settings.database_url,
            GroupCommit {
                lanes: self.settings.database_connections,
                linger: Duration::from_millis(self.settings.commit_linger_ms),
                max_writes: self.settings.commit_max_writes.max(1),
            },
        );
        store.migrate().await?;
        let _ = self.store.set(Arc::new(store));
        Ok(())
    }

    async fn process(&self, input: NotifyInput, out: &mut Outputs<'_>) -> Result<(), ProcessError> {
        let partition = out.position().map_or(0, |p| p.partition);
        match input {
            NotifyInput::Alert(e) => {
                // The alert completes (its offset stored) once its in-app rows are
                // committed; meanwhile the partition's next alerts are processed.
                if let Some(work) = self.on_alert(e, partition).await? {
                    // A task of its own: deferred work is polled only while the partition's
                    // worker waits, and this work takes the lane other partitions share.
                    let task = tokio::spawn(work.run());
                    out.defer(async move {
                        task.await
                            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
                    });
                }
                Ok(())
            }
            NotifyInput::Config(e) => self.on_config(e, partition, out).await,
        }
    }
}

/// An alert's in-app notifications, written after its turn: each in its lane's open
/// transaction (waiting out a store outage), then done once committed.
struct InAppWork {
    store: Arc<NotifyStore>,
    metrics: NotifyMetrics,
    partition: i32,
    notes: Vec<InApp>,
}

impl InAppWork {
    async fn run(self) -> Result<(), ProcessError> {
        let mut tickets = Vec::with_capacity(self.notes.len());
        for note in &self.notes {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.store.deliver_in_app(self.partition, note).await {
                    Ok(ticket) => break tickets.push(ticket),
                    Err(e) if e.retryable() => {
                        tracing::warn!(org_id = note.org_id, alert_id = %note.alert_id,
                            channel_id = %note.channel_id, attempt, error = %e,
                            "store unavailable; the in-app notification waits");
                        tokio::time::sleep(pgstore::batch::backoff(attempt)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        for ticket in tickets {
            ticket.committed().await;
        }
        let kind = ChannelKind::InApp.as_str();
        for note in &self.notes {
            let total = self.metrics.count_sent(kind);
            tracing::info!(org_id = note.org_id, alert_id = %note.alert_id,
                channel_id = %note.channel_id, kind, key = %note.key, sent_total = total,
                "notification stored in-app");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::tests::alert;

    fn channel(id: &str, enabled: bool) -> Channel {
        Channel {
            channel_id: id.into(),
            kind: ChannelKind::Webhook,
            target: format!("http://127.0.0.1:1/{id}"),
            secret_ref: None,
            rate_limit_per_minute: None,
            enabled,
        }
    }

    fn ids(s: &Selection<'_>) -> Vec<String> {
        s.deliver.iter().map(|c| c.channel_id.clone()).collect()
    }

    #[test]
    fn no_channels_named_means_every_enabled_channel_of_the_org() {
        let org = [channel("a", true), channel("b", false), channel("c", true)];
        let mut a = alert();
        a.channels.clear();
        let s = select(&a, &org);
        assert_eq!(ids(&s), ["a", "c"]);
        assert!(s.unknown.is_empty() && s.disabled.is_empty());
    }

    #[test]
    fn named_channels_are_looked_up_in_the_org_once_each() {
        let org = [channel("a", true), channel("b", false), channel("c", true)];
        let mut a = alert();
        a.channels = vec!["c".into(), "b".into(), "zz".into(), "c".into()];
        let s = select(&a, &org);
        assert_eq!(ids(&s), ["c"]);
        assert_eq!(s.disabled, ["b"]);
        assert_eq!(s.unknown, ["zz"]);
        // An org without channels knows none of them.
        let s = select(&a, &[]);
        assert!(s.deliver.is_empty());
        assert_eq!(s.unknown, ["c", "b", "zz"]);
    }

    #[test]
    fn a_channel_debug_never_shows_its_target() {
        let mut c = channel("a", true);
        c.target = "ops@example.test".into();
        c.secret_ref = Some("hook-token".into());
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("example.test") && !shown.contains("hook-token"),
            "{shown}"
        );
    }
}
