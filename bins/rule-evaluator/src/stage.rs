//! The rule evaluator's stage: every `gold.data.ready` aggregate is evaluated against its
//! org's rules (the built-in defaults, overlaid by the org's own rules from `config.changes`)
//! and the alerts that fire or resolve go to `rules.alerts.triggered`.
//!
//! # Rules as data, reloaded without a restart
//!
//! A `config.changes` rule (key `rule/<id>`) is validated ([`Rule::from_definition`]; an
//! unusable rule goes to the DLQ with the reason) and stored per org and rule id, newer
//! versions only. A delete switches the rule off for the org — a built-in one as well. The
//! org's rules are read with the entity states for every batch, so a change applies to the
//! next batch whichever replica evaluates it.
//!
//! # Counting each input once
//!
//! Aggregates are evaluated in per-lane batches ([`crate::batch`]): the entity states
//! (alert states, trailing history) of a batch are read, evaluated in order and written back
//! in one statement that also claims the batch's input offsets and keeps the alerts decided
//! per input. A replayed aggregate (a crash after the write, before the offset was
//! committed) changes nothing and emits the alerts it was first given, with the same event
//! ids, so a restart neither loses an alert nor raises one twice.
//!
//! # Which major version of the alert it writes
//!
//! `--alerts-version` (`ALERTS_EVENT_VERSION`) picks the schema of `rules.alerts.triggered`
//! it produces: 1 (`Alert`, subject `<topic>-value`, the default until every consumer reads
//! major 2) or 2 (`AlertV2`, `event_version` 2.0.0, subject
//! `<topic>-adpipe.rules.v2.AlertTriggered`). Both are decided and stored alike; only the
//! emitted record differs, with the same event id either way.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use envelope::{
    Event, Payload,
    payload::{
        alerts::{Alert, AlertState, AlertV2},
        config::{ConfigChange, ConfigItem, ConfigOp},
        gold::AggregateReady,
    },
};
use pgstore::GroupCommit;
use runtime::{Late, Outputs, ProcessError, Processor, Tick};
use topics::{ConsumerGroup, Topic};

use crate::{
    batch::{Batches, Queued, Settler},
    metrics::RuleMetrics,
    rules::{Rule, default_rules},
    store::{Applied, RuleStore, StoredRule, Via},
};

/// The rule evaluator's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct RuleSettings {
    /// PostgreSQL connection string of the evaluator's state (migrated at start).
    #[arg(
        long,
        env = "RULES_DATABASE_URL",
        hide_env_values = true,
        default_value = "host=127.0.0.1 user=postgres dbname=postgres"
    )]
    pub database_url: String,
    /// Connections to PostgreSQL; input partitions are spread over them. Each is a
    /// group-commit lane for aggregates, with one autocommit connection beside it.
    #[arg(long, env = "RULES_DATABASE_CONNECTIONS", default_value_t = 4)]
    pub database_connections: usize,
    /// How long a lane's transaction gathers aggregates after its first write before it
    /// commits (alerts wait for the commit: latency traded for fewer WAL flushes).
    #[arg(long, env = "RULES_COMMIT_LINGER_MS", default_value_t = 5)]
    pub commit_linger_ms: u64,
    /// A lane's transaction commits at once when it holds this many writes (a batch is
    /// one).
    #[arg(long, env = "RULES_COMMIT_MAX_WRITES", default_value_t = 1000)]
    pub commit_max_writes: usize,
    /// At most this many aggregates are evaluated and written together per lane (the ones
    /// queued while the lane's previous batch ran).
    #[arg(long, env = "RULES_MAX_BATCH_AGGREGATES", default_value_t = 500)]
    pub max_batch_aggregates: usize,
    /// Hours the alerts decided for an input are kept for replays (its offset is committed
    /// long before), and the event ids of the aggregates evaluated against gold emitting one
    /// again.
    #[arg(long, env = "RULES_OUTBOX_RETENTION_HOURS", default_value_t = 24)]
    pub outbox_retention_hours: i32,
}

impl RuleSettings {
    /// The defaults on `database_url` (tests).
    pub fn for_tests(database_url: String) -> RuleSettings {
        RuleSettings {
            database_url,
            database_connections: 2,
            commit_linger_ms: 5,
            commit_max_writes: 1000,
            max_batch_aggregates: 500,
            outbox_retention_hours: 24,
        }
    }
}

/// The binary's flags: the evaluator's settings and the alert version it produces.
#[derive(Debug, Clone, clap::Args)]
pub struct RuleArgs {
    /// The evaluator's settings.
    #[command(flatten)]
    pub settings: RuleSettings,
    /// Major version of the `rules.alerts.triggered` schema to produce: 1 (`<topic>-value`,
    /// deprecated) or 2 (`<topic>-adpipe.rules.v2.AlertTriggered`, event_version 2.0.0).
    /// Switch to 2 once every notification-sender reads major 2.
    #[arg(
        long,
        env = "ALERTS_EVENT_VERSION",
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=2)
    )]
    pub alerts_version: u32,
}

runtime::inputs! {
    /// What the evaluator consumes: gold aggregates and configuration changes.
    pub enum RuleInput {
        /// A gold aggregate.
        Aggregate(AggregateReady),
        /// A configuration change (rules matter to the evaluator).
        Config(ConfigChange),
    }
}

/// The rule evaluator.
#[derive(Debug)]
pub struct RuleEvaluator {
    settings: RuleSettings,
    store: Arc<RuleStore>,
    /// Started by [`Processor::start`] (it needs the runtime).
    batches: OnceLock<Batches>,
    metrics: RuleMetrics,
    /// The major version of the alerts it emits (1 or 2).
    alerts_major: u32,
}

impl RuleEvaluator {
    /// The evaluator on `settings`; the store is migrated by [`Processor::start`].
    pub fn new(settings: RuleSettings) -> RuleEvaluator {
        let group = GroupCommit {
            lanes: settings.database_connections,
            linger: Duration::from_millis(settings.commit_linger_ms),
            max_writes: settings.commit_max_writes,
        };
        let store = Arc::new(RuleStore::new(&settings.database_url, group));
        RuleEvaluator {
            settings,
            store,
            batches: OnceLock::new(),
            metrics: RuleMetrics::default(),
            alerts_major: Alert::MAJOR,
        }
    }

    /// The evaluator the binary's flags describe.
    pub fn from_args(args: RuleArgs) -> RuleEvaluator {
        RuleEvaluator::new(args.settings).with_alerts_major(args.alerts_version)
    }

    /// The evaluator's own counters (shared with the running stage).
    pub fn metrics(&self) -> RuleMetrics {
        self.metrics.clone()
    }

    /// Emit alerts of major version `major` (2: [`AlertV2`]; anything else: [`Alert`]).
    pub fn with_alerts_major(mut self, major: u32) -> RuleEvaluator {
        self.alerts_major = major;
        self
    }

    /// An aggregate joins its lane's next batch; it completes, with its alerts, once that
    /// batch is committed (see [`crate::batch`]).
    fn on_aggregate(
        &self,
        e: Event<AggregateReady>,
        out: &mut Outputs<'_>,
    ) -> Result<(), ProcessError> {
        let at = out.input_position()?;
        let org_id = e.metadata.org_id;
        let batches = self.batches.get().ok_or_else(|| {
            ProcessError::retryable("RULES_NOT_STARTED", "the evaluator is not started")
        })?;
        let reply = batches.submit(at.partition, Queued::new(at, e));
        let (metrics, major) = (self.metrics.clone(), self.alerts_major);
        out.defer_outputs(async move {
            let alerts = reply.await?;
            let late: Late = Box::new(move |out: &mut Outputs<'_>| {
                for alert in alerts {
                    tracing::info!(
                        org_id,
                        rule_id = %alert.rule_id,
                        dedupe_key = %alert.dedupe_key,
                        state = %alert.state,
                        severity = %alert.severity,
                        "alert {}",
                        if alert.state == AlertState::Firing { "fired" } else { "resolved" }
                    );
                    metrics.count(alert.state.as_str(), alert.severity.as_str());
                    // Caused by the input: ids derived from it, so a replay re-emits the
                    // same event ids.
                    if major == AlertV2::MAJOR {
                        out.emit(AlertV2::from(alert))?;
                    } else {
                        out.emit(alert)?;
                    }
                }
                Ok(())
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
        let ConfigItem::RuleDefinition(definition) = &e.payload.change else {
            self.store.skip(Via::Autocommit, at).await?;
            return Ok(());
        };
        let deleted = e.payload.op == ConfigOp::Delete;
        if !deleted {
            Rule::from_definition(definition).map_err(|err| {
                ProcessError::permanent(
                    "RULE_INVALID",
                    format!(
                        "rule {} of org {}: {err}",
                        definition.rule_id, e.metadata.org_id
                    ),
                )
            })?;
        }
        let applied = self
            .store
            .put_rule(
                at,
                e.metadata.org_id,
                e.payload.version,
                deleted,
                definition,
            )
            .await?;
        tracing::info!(
            org_id = e.metadata.org_id,
            rule_id = %definition.rule_id,
            version = e.payload.version,
            deleted,
            replay = applied == Applied::Replay,
            "rule change stored"
        );
        out.emit(runtime::audit::config_applied(Self::GROUP.name(), &e))
    }
}

/// An org's rules: the built-in ones, replaced by the org's rule with the same id and
/// switched off by its tombstones, then the org's other rules. A stored definition that no
/// longer validates is left out with a warning.
pub fn org_rules(org_id: i64, stored: Vec<StoredRule>) -> Vec<Rule> {
    let mut rules = default_rules();
    for StoredRule {
        rule_id,
        definition,
    } in stored
    {
        rules.retain(|r| r.rule_id != rule_id);
        let Some(def) = definition else { continue };
        match Rule::from_definition(&def) {
            Ok(rule) => rules.push(rule),
            Err(err) => tracing::warn!(org_id, %rule_id, error = %err, "stored rule skipped"),
        }
    }
    rules
}

impl Processor for RuleEvaluator {
    type Input = RuleInput;
    const GROUP: ConsumerGroup = ConsumerGroup::RuleEvaluator;
    /// Aggregates are small (~150 bytes) and arrive faster than the evaluator's PostgreSQL
    /// batches take them: 30,000 prefetched keep it as busy as 100,000 did, with a 1,000,000
    /// backlog's peak RSS 149 MiB instead of 187 MiB (BENCHMARKS.md).
    const PREFETCH_RECORDS: u64 = 30_000;

    fn outputs() -> Vec<Topic> {
        vec![Topic::RulesAlertsTriggered, Topic::AuditEvents]
    }

    async fn start(&self) -> anyhow::Result<()> {
        self.store.migrate().await?;
        let counters = self.metrics.batch.clone();
        let batches = Batches::start(
            Arc::new(Settler::new(
                self.store.clone(),
                counters.clone(),
                self.metrics.duplicates.clone(),
            )),
            self.settings.database_connections,
            self.settings.max_batch_aggregates,
            counters,
        );
        let _ = self.batches.set(batches);
        Ok(())
    }

    async fn process(&self, input: RuleInput, out: &mut Outputs<'_>) -> Result<(), ProcessError> {
        match input {
            RuleInput::Aggregate(e) => self.on_aggregate(e, out),
            RuleInput::Config(e) => self.on_config(e, out).await,
        }
    }

    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.metrics.register(registry);
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(Duration::from_secs(3600))
    }

    async fn tick(&self, _tick: &Tick, _out: &mut Outputs<'_>) -> Result<(), ProcessError> {
        let pruned = self
            .store
            .prune_outbox(self.settings.outbox_retention_hours)
            .await?;
        tracing::debug!(pruned, "outbox pruned");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use envelope::payload::{
        common::{Comparator, Metric, Severity},
        config::RuleDefinition,
    };

    use super::*;

    #[test]
    fn the_alerts_version_is_1_by_default_and_only_1_or_2() {
        use clap::{Args as _, Command};
        let parse = |args: &[&str]| {
            let cmd = RuleArgs::augment_args(Command::new("rule-evaluator"));
            cmd.try_get_matches_from(std::iter::once("rule-evaluator").chain(args.iter().copied()))
                .and_then(|m| <RuleArgs as clap::FromArgMatches>::from_arg_matches(&m))
        };
        assert_eq!(parse(&[]).expect("defaults").alerts_version, 1);
        let v2 = parse(&["--alerts-version", "2"]).expect("2");
        assert_eq!(v2.alerts_version, AlertV2::MAJOR);
        assert!(parse(&["--alerts-version", "3"]).is_err());
        assert!(parse(&["--alerts-version", "0"]).is_err());
    }

    fn definition(id: &str, window: &str) -> RuleDefinition {
        RuleDefinition {
            rule_id: id.into(),
            name: id.into(),
            metric: Metric::PacingRate,
            comparator: Comparator::Lt,
            threshold: "50".parse().expect("threshold"),
            window: window.into(),
            severity: Severity::Critical,
            channels: vec![],
            cooldown_seconds: 60,
            enabled: true,
            campaign_id: None,
        }
    }

    #[test]
    fn an_orgs_rules_replace_switch_off_and_extend_the_defaults() {
        let ids = |rules: &[Rule]| rules.iter().map(|r| r.rule_id.clone()).collect::<Vec<_>>();
        let defaults = org_rules(1, Vec::new());
        assert_eq!(defaults.len(), 5);
        let rules = org_rules(
            1,
            vec![
                StoredRule {
                    rule_id: "default.pacing-low".into(),
                    definition: Some(definition("default.pacing-low", "daily")),
                },
                StoredRule {
                    rule_id: "default.margin-low".into(),
                    definition: None,
                },
                StoredRule {
                    rule_id: "org.custom".into(),
                    definition: Some(definition("org.custom", "weekly")),
                },
                StoredRule {
                    rule_id: "org.no-longer-valid".into(),
                    definition: Some(definition("org.no-longer-valid", "hourly")),
                },
            ],
        );
        assert_eq!(
            ids(&rules),
            [
                "default.pacing-high",
                "default.spend-anomaly",
                "default.quality-drop",
                "default.pacing-low",
                "org.custom"
            ]
        );
        let low = rules
            .iter()
            .find(|r| r.rule_id == "default.pacing-low")
            .expect("replaced");
        assert_eq!(low.threshold, rust_decimal::Decimal::from(50));
        assert_eq!(low.severity, Severity::Critical);
    }
}
