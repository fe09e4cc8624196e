//! `config.changes` as a versioned log: read the topic from the beginning into the latest
//! change per (org, key) ([`read`] → [`Snapshot`]), and publish the next version of a key
//! with its `config.changed` audit record ([`Publisher`]). `pipelinectl config` and the
//! connector's simulator both write configuration through here.
//!
//! # Versions
//!
//! Consumers (gold, rule-evaluator, notification-sender) store per (org, key) only a version
//! greater than the one they hold, so a writer must publish `latest + 1`. There is no broker
//! side counter: the latest version is whatever the topic holds, read from every partition
//! from the beginning. Two writers racing on one key can both pick the same version; the
//! consumers then keep the first one they read (per partition order, the same for all of
//! them), and the second writer's change is ignored — rerun it to publish it as the next
//! version.
//!
//! # Reading on Tansu
//!
//! Tansu's high watermark can under-report records produced in batches, so a scan reads up
//! to the end offsets it saw at the start, then on until no record arrived for an idle gap.
//! A scan that does not reach the end offsets within its time bound is an error
//! ([`ConfigLogError::Incomplete`]): versions computed from it could go backwards.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use envelope::{
    Codec, DecodeError, EncodeError, Event, Payload, Source,
    payload::{
        audit::{AuditCategory, AuditEvent, Outcome},
        common::{Actor, EntityRef},
        config::{ConfigChange, ConfigItem, ConfigOp},
    },
};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    config::RDKafkaLogLevel,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    producer::{FutureProducer, FutureRecord},
};
use topics::{Topic, partition_for};

/// The action of the audit record of a published change.
pub const CONFIG_CHANGED: &str = "config.changed";

/// What can go wrong reading or writing `config.changes`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigLogError {
    /// No metadata from the broker.
    #[error("cannot reach the Kafka broker at {bootstrap}: {cause}")]
    Unreachable {
        /// Bootstrap servers.
        bootstrap: String,
        /// The client's error.
        cause: KafkaError,
    },
    /// The topic is not on the broker.
    #[error("topic {0} does not exist on the broker (`pipelinectl topics apply` creates it)")]
    Missing(String),
    /// The Kafka security settings do not fit together.
    #[error(transparent)]
    Settings(runtime::settings::SettingsError),
    /// A Kafka call failed.
    #[error("{what}: {cause}")]
    Kafka {
        /// What was attempted.
        what: String,
        /// The client's error.
        cause: KafkaError,
    },
    /// The scan did not reach the end of the topic within its bounds: versions taken from it
    /// could go backwards, so nothing is published.
    #[error(
        "{topic}: read {read} records without reaching the end offsets within {bound}; \
         raise the scan bounds (--scan-secs, --max-records)"
    )]
    Incomplete {
        /// The topic.
        topic: String,
        /// Records read.
        read: usize,
        /// The bound that stopped the scan.
        bound: String,
    },
    /// The registry did not answer while decoding.
    #[error("decoding {topic}: {cause}")]
    Registry {
        /// The topic.
        topic: String,
        /// The decoder's error.
        cause: DecodeError,
    },
    /// An event did not encode.
    #[error("encoding a {topic} event: {cause}")]
    Encode {
        /// The topic.
        topic: String,
        /// The encoder's error.
        cause: EncodeError,
    },
    /// The broker did not acknowledge a record.
    #[error("producing to {topic}: {cause}")]
    Produce {
        /// The topic.
        topic: String,
        /// The producer's error.
        cause: KafkaError,
    },
}

/// The key of a configuration item: `booking/<campaign>[/<line_item>]`, `rule/<id>`,
/// `channel/<id>` or `org`.
pub fn key_of(item: &ConfigItem) -> String {
    match item {
        ConfigItem::Booking(b) => match &b.line_item_id {
            Some(li) => format!("booking/{}/{li}", b.campaign_id),
            None => format!("booking/{}", b.campaign_id),
        },
        ConfigItem::RuleDefinition(r) => format!("rule/{}", r.rule_id),
        ConfigItem::ChannelDefinition(c) => format!("channel/{}", c.channel_id),
        ConfigItem::OrgSettings(_) => "org".to_owned(),
    }
}

/// One change as read from the topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The event (envelope and change).
    pub event: Event<ConfigChange>,
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

impl Entry {
    /// The org.
    pub fn org_id(&self) -> i64 {
        self.event.metadata.org_id
    }

    /// The change.
    pub fn change(&self) -> &ConfigChange {
        &self.event.payload
    }

    /// Whether the key is deleted as of this change.
    pub fn deleted(&self) -> bool {
        self.event.payload.op == ConfigOp::Delete
    }
}

/// The latest change per (org, key), as the consumers see it: per key the change with the
/// greatest version, the first one read when a version repeats.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    latest: BTreeMap<(i64, String), Entry>,
    /// Records read.
    pub records: usize,
    /// Records that did not decode as a config change (skipped).
    pub undecodable: usize,
}

impl Snapshot {
    /// Take `entry` into account: kept when its version is greater than the key's latest.
    pub fn apply(&mut self, entry: Entry) {
        let key = (entry.org_id(), entry.change().key.clone());
        match self.latest.get(&key) {
            Some(held) if held.change().version >= entry.change().version => {}
            _ => {
                self.latest.insert(key, entry);
            }
        }
    }

    /// The latest change of `key` in `org` (a delete included).
    pub fn latest(&self, org_id: i64, key: &str) -> Option<&Entry> {
        self.latest.get(&(org_id, key.to_owned()))
    }

    /// The latest version of `key` in `org`; 0 when it was never written.
    pub fn version(&self, org_id: i64, key: &str) -> i64 {
        self.latest(org_id, key).map_or(0, |e| e.change().version)
    }

    /// The current (not deleted) value of every key, by org and key.
    pub fn current(&self) -> impl Iterator<Item = &Entry> {
        self.latest.values().filter(|e| !e.deleted())
    }
}

/// How a scan of `config.changes` is bounded.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Kafka bootstrap servers.
    pub bootstrap: String,
    /// The whole scan, metadata included, must finish within this.
    pub timeout: Duration,
    /// Once the end offsets seen at the start are reached, stop after this long without a
    /// record.
    pub idle: Duration,
    /// At most this many records (more is [`ConfigLogError::Incomplete`]).
    pub max_records: usize,
    /// How the reader connects and logs in (TLS, SASL), as the other clients of the caller.
    pub security: runtime::KafkaSecurity,
}

impl ReadOptions {
    /// Defaults for `bootstrap`: 30 s, 500 ms idle gap, a million records, plaintext.
    pub fn new(bootstrap: &str) -> ReadOptions {
        ReadOptions {
            bootstrap: bootstrap.to_owned(),
            timeout: Duration::from_secs(30),
            idle: Duration::from_millis(500),
            max_records: 1_000_000,
            security: runtime::KafkaSecurity::default(),
        }
    }

    /// These options, connecting as `security` says.
    pub fn secured(self, security: &runtime::KafkaSecurity) -> ReadOptions {
        ReadOptions {
            security: security.clone(),
            ..self
        }
    }
}

/// Read `config.changes` from the beginning of every partition (no group join, nothing
/// committed) into the latest change per (org, key). Records that do not decode as config
/// changes are counted and skipped; an unreachable registry is an error.
pub async fn read(codec: &Codec, options: &ReadOptions) -> Result<Snapshot, ConfigLogError> {
    let opts = options.clone();
    let raw = tokio::task::spawn_blocking(move || read_raw(&opts))
        .await
        .map_err(|_| ConfigLogError::Kafka {
            what: format!("reading {}", Topic::ConfigChanges),
            cause: KafkaError::Canceled,
        })??;
    let mut snapshot = Snapshot {
        records: raw.len(),
        ..Snapshot::default()
    };
    for (partition, offset, bytes) in raw {
        match codec.decode::<ConfigChange>(&bytes).await {
            Ok(event) => snapshot.apply(Entry {
                event,
                partition,
                offset,
            }),
            Err(e) if e.retryable() => {
                return Err(ConfigLogError::Registry {
                    topic: Topic::ConfigChanges.name().to_owned(),
                    cause: e,
                });
            }
            Err(_) => snapshot.undecodable += 1,
        }
    }
    Ok(snapshot)
}

/// The records of `config.changes` as (partition, offset, value), read as [`read`] says.
fn read_raw(options: &ReadOptions) -> Result<Vec<(i32, i64, Vec<u8>)>, ConfigLogError> {
    let topic = Topic::ConfigChanges.name();
    let started = Instant::now();
    let left = || {
        options
            .timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(100))
    };
    let kafka = |what: String| move |cause| ConfigLogError::Kafka { what, cause };
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &options.bootstrap)
        .set("group.id", "config-log-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set_log_level(RDKafkaLogLevel::Emerg);
    options
        .security
        .apply(&mut config)
        .map_err(ConfigLogError::Settings)?;
    let consumer: BaseConsumer = config
        .create()
        .map_err(kafka("Kafka consumer".to_owned()))?;
    let md = consumer
        .fetch_metadata(Some(topic), left())
        .map_err(|cause| ConfigLogError::Unreachable {
            bootstrap: options.bootstrap.clone(),
            cause,
        })?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        return Err(ConfigLogError::Missing(topic.to_owned()));
    }
    let mut next: HashMap<i32, i64> = HashMap::new();
    let mut high: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let (low, hi) = consumer
            .fetch_watermarks(topic, p, left())
            .map_err(kafka(format!("watermarks of {topic}/{p}")))?;
        next.insert(p, low);
        high.insert(p, hi);
        tpl.add_partition_offset(topic, p, Offset::Offset(low))
            .map_err(kafka(format!("assigning {topic}/{p}")))?;
    }
    consumer
        .assign(&tpl)
        .map_err(kafka(format!("assigning {topic}")))?;
    let mut out = Vec::new();
    let mut last = Instant::now();
    loop {
        let reached = high
            .iter()
            .all(|(p, hi)| next.get(p).is_some_and(|n| n >= hi));
        if reached && last.elapsed() >= options.idle {
            return Ok(out);
        }
        if started.elapsed() >= options.timeout {
            if reached {
                // Records kept arriving past the end offsets until the bound: someone is
                // writing right now; what was read is complete up to the end offsets.
                return Ok(out);
            }
            return Err(ConfigLogError::Incomplete {
                topic: topic.to_owned(),
                read: out.len(),
                bound: format!("{:?}", options.timeout),
            });
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => {
                return Err(ConfigLogError::Kafka {
                    what: format!("reading {topic}"),
                    cause: e,
                });
            }
            Some(Ok(m)) => {
                last = Instant::now();
                next.insert(m.partition(), m.offset() + 1);
                out.push((
                    m.partition(),
                    m.offset(),
                    m.payload().unwrap_or_default().to_vec(),
                ));
                if out.len() > options.max_records {
                    return Err(ConfigLogError::Incomplete {
                        topic: topic.to_owned(),
                        read: out.len(),
                        bound: format!("{} records", options.max_records),
                    });
                }
            }
        }
    }
}

/// A change to publish: an item of an org, upserted or deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The org.
    pub org_id: i64,
    /// Upsert or delete.
    pub op: ConfigOp,
    /// The item (for a delete, the item as it was: consumers read its ids).
    pub item: ConfigItem,
    /// Why, if said.
    pub reason: Option<String>,
}

impl Change {
    /// The item's key.
    pub fn key(&self) -> String {
        key_of(&self.item)
    }
}

/// A change with the version it gets, or why it is not published.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// The change.
    pub change: Change,
    /// Its key.
    pub key: String,
    /// The version it is published as (when unchanged: the latest version).
    pub version: i64,
    /// Equal to the key's latest change: not published by an idempotent plan.
    pub unchanged: bool,
}

/// Versions for `changes` on top of `snapshot`: each key's latest version + 1, and + 2 for a
/// second change of the same key in `changes`, and so on. A change equal to the key's latest
/// (same operation and, for an upsert, the same item) is marked unchanged and keeps the
/// latest version; when `idempotent` is false it is published all the same.
pub fn plan(snapshot: &Snapshot, changes: Vec<Change>, idempotent: bool) -> Vec<Planned> {
    // Per (org, key): the version so far and the value it holds.
    type Held = (i64, Option<(ConfigOp, ConfigItem)>);
    let mut held: HashMap<(i64, String), Held> = HashMap::new();
    changes
        .into_iter()
        .map(|change| {
            let key = change.key();
            let slot = held.entry((change.org_id, key.clone())).or_insert_with(|| {
                match snapshot.latest(change.org_id, &key) {
                    Some(e) => (
                        e.change().version,
                        Some((e.change().op, e.change().change.clone())),
                    ),
                    None => (0, None),
                }
            });
            let same = match &slot.1 {
                Some((op, item)) => {
                    *op == change.op && (change.op == ConfigOp::Delete || *item == change.item)
                }
                None => false,
            };
            let unchanged = same && idempotent;
            if !unchanged {
                slot.0 += 1;
                slot.1 = Some((change.op, change.item.clone()));
            }
            Planned {
                version: slot.0,
                key,
                change,
                unchanged: same,
            }
        })
        .collect()
}

/// What a publish produced.
#[derive(Debug, Clone)]
pub struct Published {
    /// The change's event.
    pub event: Event<ConfigChange>,
    /// Its audit record's event.
    pub audit: Event<AuditEvent>,
}

/// Publishes changes to `config.changes` with their audit records on `audit.events`.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
    codec: Arc<Codec>,
    source: Source,
    actor: Actor,
    timeout: Duration,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("source", &self.source)
            .field("actor_id", &self.actor.actor_id)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher producing with `producer` (idempotent, `acks=all`: see
    /// [`runtime::producer`]) and `codec` (with the schemas of `config.changes` and
    /// `audit.events` registered), as `source`, on behalf of `actor`.
    pub fn new(producer: FutureProducer, codec: Arc<Codec>, source: Source, actor: Actor) -> Self {
        Publisher {
            producer,
            codec,
            source,
            actor,
            timeout: Duration::from_secs(30),
        }
    }

    /// Publish `planned` (its version as planned) and then its audit record, which shares
    /// the change's org and correlation id and is caused by it. Returns once both are
    /// acknowledged.
    pub async fn publish(&self, planned: &Planned) -> Result<Published, ConfigLogError> {
        let c = &planned.change;
        let event = Event::new(
            c.org_id,
            self.source.clone(),
            ConfigChange {
                key: planned.key.clone(),
                version: planned.version,
                op: c.op,
                actor: self.actor.clone(),
                reason: c.reason.clone(),
                change: c.item.clone(),
            },
        );
        self.produce(&event).await?;
        let audit = Event::caused_by(&event.metadata, self.source.clone(), config_changed(&event));
        self.produce(&audit).await?;
        Ok(Published { event, audit })
    }

    async fn produce<P: Payload>(&self, event: &Event<P>) -> Result<(), ConfigLogError> {
        let topic = P::TOPIC;
        let value = self
            .codec
            .encode(event)
            .map_err(|cause| ConfigLogError::Encode {
                topic: topic.name().to_owned(),
                cause,
            })?;
        let partition = partition_for(event.partition_key(), topic.spec().partitions);
        let key = event.record_key();
        self.producer
            .send(
                FutureRecord::to(topic.name())
                    .partition(partition)
                    .key(&key)
                    .payload(&value),
                self.timeout,
            )
            .await
            .map(|_| ())
            .map_err(|(cause, _)| ConfigLogError::Produce {
                topic: topic.name().to_owned(),
                cause,
            })
    }
}

/// The audit record of a published change: action `config.changed`, category `config`, the
/// change's actor, the key as the entity, its reason and time; `details` name the version,
/// the operation, the change's event id and the writing service. The item itself is not
/// copied: it may hold PII (a channel's target), and `config.changes` keeps it.
pub fn config_changed(change: &Event<ConfigChange>) -> AuditEvent {
    let c = &change.payload;
    AuditEvent {
        action: CONFIG_CHANGED.to_owned(),
        category: AuditCategory::Config,
        actor: c.actor.clone(),
        entity: EntityRef {
            entity_type: runtime::audit::config_entity_type(&c.change),
            entity_id: c.key.clone(),
            name: None,
        },
        outcome: Outcome::Success,
        occurred_at: change.metadata.timestamp,
        reason: c.reason.clone(),
        before: None,
        after: None,
        details: BTreeMap::from([
            ("version".to_owned(), c.version.to_string()),
            ("op".to_owned(), c.op.as_str().to_owned()),
            (
                "config_event_id".to_owned(),
                change.metadata.event_id.to_string(),
            ),
            ("service".to_owned(), change.metadata.source.service.clone()),
        ]),
    }
}

#[cfg(test)]
mod tests {
    use envelope::{
        Date, Money,
        payload::common::{ActorType, Booking},
        payload::config::OrgSettings,
    };

    use super::*;

    fn booking(campaign: &str, budget: &str) -> ConfigItem {
        ConfigItem::Booking(Booking {
            campaign_id: campaign.into(),
            line_item_id: None,
            booked_impressions: 1000,
            booked_budget: budget.parse::<Money>().expect("money"),
            booking_revenue: Money::ZERO,
            flight_start: Date::ymd(2025, 1, 1).expect("date"),
            flight_end: Date::ymd(2025, 1, 31).expect("date"),
            currency: None,
        })
    }

    fn entry(org: i64, item: ConfigItem, version: i64, offset: i64) -> Entry {
        let mut event = runtime::testing::config_change(org, &key_of(&item));
        event.payload.version = version;
        event.payload.change = item;
        event.payload.actor = Actor {
            actor_type: ActorType::User,
            actor_id: "u".into(),
            display_name: None,
        };
        Entry {
            event,
            partition: 0,
            offset,
        }
    }

    fn upsert(org: i64, item: ConfigItem) -> Change {
        Change {
            org_id: org,
            op: ConfigOp::Upsert,
            item,
            reason: None,
        }
    }

    #[test]
    fn keys_name_the_item() {
        assert_eq!(key_of(&booking("c1", "1")), "booking/c1");
        let ConfigItem::Booking(mut b) = booking("c1", "1") else {
            unreachable!()
        };
        b.line_item_id = Some("li".into());
        assert_eq!(key_of(&ConfigItem::Booking(b)), "booking/c1/li");
        let org = ConfigItem::OrgSettings(OrgSettings {
            name: None,
            timezone: "UTC".into(),
            currency: "USD".into(),
            freshness_days: 7,
        });
        assert_eq!(key_of(&org), "org");
    }

    #[test]
    fn the_snapshot_keeps_the_greatest_version_and_the_first_of_a_repeat() {
        let mut s = Snapshot::default();
        s.apply(entry(1, booking("c1", "1"), 1, 0));
        s.apply(entry(1, booking("c1", "2"), 2, 1));
        s.apply(entry(1, booking("c1", "3"), 2, 2)); // same version: ignored
        s.apply(entry(1, booking("c1", "4"), 1, 3)); // replayed older version: ignored
        s.apply(entry(2, booking("c1", "9"), 1, 4)); // another org
        assert_eq!(s.version(1, "booking/c1"), 2);
        assert_eq!(s.latest(1, "booking/c1").map(|e| e.offset), Some(1));
        assert_eq!(s.version(2, "booking/c1"), 1);
        assert_eq!(s.version(3, "booking/c1"), 0);
        assert_eq!(s.current().count(), 2);
    }

    #[test]
    fn a_plan_versions_past_the_latest_and_skips_what_is_equal() {
        let mut s = Snapshot::default();
        s.apply(entry(1, booking("c1", "1"), 4, 0));
        let changes = vec![
            upsert(1, booking("c1", "1")), // equal to the latest
            upsert(1, booking("c2", "1")), // new key
            upsert(1, booking("c2", "2")), // same key again in the batch
            upsert(1, booking("c2", "2")), // equal to the one before
        ];
        let p = plan(&s, changes.clone(), true);
        let v: Vec<(i64, bool)> = p.iter().map(|p| (p.version, p.unchanged)).collect();
        assert_eq!(v, [(4, true), (1, false), (2, false), (2, true)]);
        let p = plan(&s, changes, false);
        let v: Vec<i64> = p.iter().map(|p| p.version).collect();
        assert_eq!(v, [5, 1, 2, 3]);
    }
}
