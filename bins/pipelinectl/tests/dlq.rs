//! `pipelinectl dlq inspect|replay` end to end: a real stage (in this process) on a real Tansu
//! broker with the project's registry dead-letters records; the binary inspects them, and
//! replays them after the fix (they flow through, once each) or while they keep failing (the
//! loop guard stops them after `--max-replays`).

mod common;

use common::{pipelinectl, text};

use std::{
    collections::HashMap,
    process::Output,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use envelope::{
    Codec, Event, Id, RegistryClient, payload::audit::AuditEvent, payload::config::ConfigChange,
};
use rdkafka::{
    Message,
    producer::{FutureProducer, FutureRecord},
};
use runtime::{
    Outputs, ProcessError, Processor, RuntimeArgs,
    dedupe::Dedupe,
    metrics::{DEAD_LETTERED, PROCESSED},
    testing::{RunningStage, config_change, mirrored, produce_event},
};
use serde_json::Value;
use testkit::{Broker, client_config, create_stage_topics, header, read_records, wait_until};
use topics::{ConsumerGroup, PartitionKey, Topic, partition_for};

/// The org whose records fail while the stage is "broken".
const BROKEN_ORG: i64 = 7;

/// Mirrors config changes as audit events. While `broken` is set, records of [`BROKEN_ORG`]
/// fail permanently (`TEST_BROKEN`); keys starting with `poison/` always fail (`TEST_POISON`).
struct Fixable {
    broken: Arc<AtomicBool>,
}

impl Processor for Fixable {
    type Input = Event<ConfigChange>;
    const GROUP: ConsumerGroup = ConsumerGroup::GoldProcessor;

    fn outputs() -> Vec<Topic> {
        vec![Topic::AuditEvents]
    }

    async fn process(
        &self,
        input: Event<ConfigChange>,
        out: &mut Outputs<'_>,
    ) -> Result<(), ProcessError> {
        if input.payload.key.starts_with("poison/") {
            return Err(ProcessError::permanent("TEST_POISON", "always refused"));
        }
        if input.metadata.org_id == BROKEN_ORG && self.broken.load(Ordering::SeqCst) {
            return Err(ProcessError::permanent("TEST_BROKEN", "org 7 is broken"));
        }
        out.emit(mirrored(&input))
    }
}

struct Setup {
    broker: Broker,
    url: String,
    codec: Arc<Codec>,
    producer: FutureProducer,
    broken: Arc<AtomicBool>,
    stage: RunningStage,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Setup {
        let broker = Broker::start_memory().expect("broker");
        let b = broker.bootstrap();
        create_stage_topics(&b, &[Topic::ConfigChanges, Topic::AuditEvents])
            .await
            .expect("topics");
        let dir = tempfile::tempdir().expect("dir");
        let url = schema_registry::spawn_local(dir.path())
            .await
            .expect("registry");
        let registry = RegistryClient::new(&url, None, Duration::from_secs(5)).expect("client");
        let codec = Arc::new(Codec::new(registry));
        // What `runtime::run` does at start: the input's and the outputs' schemas registered.
        for topic in [Topic::ConfigChanges, Topic::AuditEvents] {
            codec.register(topic).await.expect("registered");
        }
        let producer: FutureProducer = client_config(&b)
            .set("acks", "all")
            .create()
            .expect("producer");
        let broken = Arc::new(AtomicBool::new(true));
        let stage = RunningStage::start(
            Fixable {
                broken: broken.clone(),
            },
            RuntimeArgs::for_tests(&b),
            codec.clone(),
            Dedupe::memory(10_000),
        );
        Setup {
            broker,
            url,
            codec,
            producer,
            broken,
            stage,
            _dir: dir,
        }
    }

    fn b(&self) -> String {
        self.broker.bootstrap()
    }

    async fn produce(&self, events: &[Event<ConfigChange>]) {
        for e in events {
            produce_event(&self.producer, &self.codec, e)
                .await
                .expect("produced");
        }
    }

    async fn wait_for(&self, processed: u64, dead_lettered: u64) {
        let metrics = self.stage.metrics.clone();
        wait_until(
            Duration::from_secs(90),
            &format!("{processed} processed and {dead_lettered} dead-lettered"),
            || {
                let ok = metrics.total(PROCESSED) == processed
                    && metrics.total(DEAD_LETTERED) == dead_lettered;
                async move { ok }
            },
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}: processed {}, dead-lettered {}, stage ended: {}",
                self.stage.metrics.total(PROCESSED),
                self.stage.metrics.total(DEAD_LETTERED),
                self.stage.task.is_finished()
            )
        });
    }

    /// Run pipelinectl against this broker and registry.
    async fn ctl(&self, args: &[&str]) -> Output {
        let mut all = vec![
            "--bootstrap-servers".to_owned(),
            self.b(),
            "--schema-registry-url".to_owned(),
            self.url.clone(),
        ];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        tokio::task::spawn_blocking(move || pipelinectl(&all))
            .await
            .expect("join")
    }

    async fn ctl_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ctl(&all).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", text(&out)))
    }
}

fn rows(v: &Value) -> &Vec<Value> {
    v.as_array().expect("an array of rows")
}

fn count(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

fn events(org: i64, keys: &[&str]) -> Vec<Event<ConfigChange>> {
    keys.iter().map(|k| config_change(org, k)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_decoded_and_undecodable_dead_letters_with_filters() {
    let s = Setup::start().await;
    let good = events(3, &["ok/0", "ok/1", "ok/2", "ok/3"]);
    let bad = events(BROKEN_ORG, &["b/0", "b/1", "b/2"]);
    s.produce(&good).await;
    s.produce(&bad).await;
    s.producer
        .send(
            FutureRecord::to("config.changes")
                .partition(0)
                .key("9")
                .payload(b"garbage bytes".as_slice()),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("garbage produced");
    s.wait_for(4, 4).await;

    // Every dead letter, decoded where it decodes.
    let all = s.ctl_json(&["dlq", "inspect", "config.changes"]).await;
    assert_eq!(rows(&all).len(), 4, "{all}");
    let broken: Vec<&Value> = rows(&all)
        .iter()
        .filter(|r| r["code"] == "TEST_BROKEN")
        .collect();
    assert_eq!(broken.len(), 3, "{all}");
    for r in &broken {
        assert_eq!(r["org"], "7");
        assert_eq!(r["event_type"], "config.changes");
        assert_eq!(r["stage"], "gold-processor");
        assert_eq!(r["original_topic"], "config.changes");
        assert_eq!(
            r["original_partition"],
            partition_for(PartitionKey::Org(BROKEN_ORG), 6)
        );
        assert_eq!(r["message"], "org 7 is broken");
        assert_eq!(r["replay_count"], 0);
        assert!(r["decode_error"].is_null(), "{r}");
        let id = r["event_id"].as_str().expect("event id");
        assert!(
            bad.iter().any(|e| e.metadata.event_id.to_string() == id),
            "{id} is one of the broken events"
        );
    }
    let garbage = rows(&all)
        .iter()
        .find(|r| r["code"] == "DECODE_WRONG_MAGIC_BYTE")
        .unwrap_or_else(|| panic!("the undecodable record: {all}"));
    assert_eq!(garbage["org"], "9");
    assert_eq!(garbage["value_utf8"], "garbage bytes");
    assert_eq!(garbage["value_hex"], "67617262616765206279746573");
    assert!(
        garbage["decode_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("DECODE_WRONG_MAGIC_BYTE")),
        "{garbage}"
    );
    assert!(garbage["event_type"].is_null());

    // The table, by the DLQ's own name.
    let out = s.ctl(&["dlq", "inspect", "config.changes.dlq"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.lines().count(), 5, "{table}");
    assert!(
        table.contains("TEST_BROKEN") && table.contains("undecodable (DECODE_WRONG_MAGIC_BYTE")
    );

    // Filters.
    let n = |v: Value| rows(&v).len();
    let inspect = |extra: &'static [&'static str]| {
        let mut args = vec!["dlq", "inspect", "config.changes"];
        args.extend_from_slice(extra);
        args
    };
    assert_eq!(
        n(s.ctl_json(&inspect(&["--code", "DECODE_WRONG_MAGIC_BYTE"]))
            .await),
        1
    );
    assert_eq!(
        n(
            s.ctl_json(&inspect(&["--code", "TEST_BROKEN,DECODE_WRONG_MAGIC_BYTE"]))
                .await
        ),
        4
    );
    assert_eq!(n(s.ctl_json(&inspect(&["--org", "7"])).await), 3);
    assert_eq!(
        n(s.ctl_json(&inspect(&["--org", "7", "--limit", "2"])).await),
        2
    );
    assert_eq!(
        n(s.ctl_json(&inspect(&["--since", "2999-01-01T00:00:00Z"]))
            .await),
        0
    );
    assert_eq!(
        n(s.ctl_json(&inspect(&["--until", "2000-01-01T00:00:00Z"]))
            .await),
        0
    );
    assert_eq!(
        n(s.ctl_json(&inspect(&["--since", "2000-01-01T00:00:00Z"]))
            .await),
        4
    );

    // Clear errors: not a DLQ topic, an unreachable registry, an unreachable broker.
    let out = s.ctl(&["dlq", "inspect", "etl.execution"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("not a topic with a dead-letter queue"),
        "{}",
        text(&out)
    );
    let nowhere = format!("127.0.0.1:{}", testkit::free_port().expect("port"));
    let out = pipelinectl(&[
        "--bootstrap-servers",
        &s.b(),
        "--schema-registry-url",
        &format!("http://{nowhere}"),
        "--timeout-secs",
        "2",
        "dlq",
        "inspect",
        "config.changes",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("cannot reach the schema registry"),
        "{}",
        text(&out)
    );
    for cmd in ["inspect", "replay"] {
        let out = pipelinectl(&[
            "--bootstrap-servers",
            &nowhere,
            "--timeout-secs",
            "2",
            "dlq",
            cmd,
            "config.changes",
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(
            text(&out).contains(&format!("cannot reach the Kafka broker at {nowhere}")),
            "{}",
            text(&out)
        );
    }
    s.stage.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_after_a_fix_flows_through_once_and_the_loop_guard_stops_repeats() {
    let s = Setup::start().await;
    let good = events(3, &["ok/0", "ok/1", "ok/2", "ok/3", "ok/4", "ok/5"]);
    // On org 7's partition: a poison record first, so the fixable ones sit behind a record
    // the first (filtered) replay leaves alone.
    let seven = events(BROKEN_ORG, &["poison/0", "b/0", "b/1", "poison/1", "b/2"]);
    s.produce(&good).await;
    s.produce(&seven).await;
    s.wait_for(6, 5).await;
    let b = s.b();
    let inputs = |at_least: usize| {
        read_records(&b, "config.changes", at_least + 1, Duration::from_secs(10))
            .expect("inputs")
            .len()
    };

    // A dry run lists what would be replayed and produces and commits nothing.
    let dry = s
        .ctl_json(&["dlq", "replay", "config.changes", "--dry-run"])
        .await;
    assert_eq!(count(&dry, "would_replay"), 5, "{dry}");
    assert_eq!(count(&dry, "replayed"), 0, "{dry}");
    let out = s
        .ctl(&["dlq", "replay", "config.changes", "--dry-run"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("would replay 5"), "{}", text(&out));
    assert_eq!(inputs(11), 11, "a dry run produces nothing");

    // Fixed: the records that failed for that reason flow through after a replay.
    s.broken.store(false, Ordering::SeqCst);
    let first = s
        .ctl_json(&[
            "dlq",
            "replay",
            "config.changes.dlq",
            "--code",
            "TEST_BROKEN",
        ])
        .await;
    assert_eq!(count(&first, "replayed"), 3, "{first}");
    assert_eq!(count(&first, "filtered_out"), 2, "{first}");
    assert_eq!(count(&first, "skipped_loop_guard"), 0, "{first}");
    s.wait_for(9, 5).await;
    let outputs =
        read_records(&b, "audit.events", 9 + 5, Duration::from_secs(10)).expect("outputs");
    let mut by_cause: HashMap<Id, usize> = HashMap::new();
    for r in &outputs {
        let e: Event<AuditEvent> = s
            .codec
            .decode(r.payload().unwrap_or_default())
            .await
            .expect("output decodes");
        *by_cause
            .entry(e.metadata.causation_id.expect("caused"))
            .or_default() += 1;
    }
    assert_eq!(outputs.len(), 9);
    for e in good
        .iter()
        .chain(seven.iter().filter(|e| e.payload.key.starts_with("b/")))
    {
        assert_eq!(
            by_cause.get(&e.metadata.event_id),
            Some(&1),
            "{}",
            e.payload.key
        );
    }
    let replayed = read_records(&b, "config.changes", 14, Duration::from_secs(30)).expect("inputs");
    let counts: Vec<String> = replayed
        .iter()
        .filter_map(|m| header(m, "adpipe.replay.count"))
        .collect();
    assert_eq!(
        counts,
        ["1", "1", "1"],
        "replayed records carry the loop guard's count"
    );

    // The next run replays nothing again: the cursor is past every record the first run
    // read, the filtered-out ones too. Those come back with --from-beginning and a filter;
    // the poison records fail again.
    let second = s.ctl_json(&["dlq", "replay", "config.changes"]).await;
    assert_eq!(count(&second, "replayed"), 0, "{second}");
    let poison = s
        .ctl_json(&[
            "dlq",
            "replay",
            "config.changes",
            "--from-beginning",
            "--code",
            "TEST_POISON",
        ])
        .await;
    assert_eq!(count(&poison, "replayed"), 2, "{poison}");
    assert_eq!(count(&poison, "filtered_out"), 3, "{poison}");
    s.wait_for(9, 7).await;

    // Records that keep failing come back with a growing count until the loop guard.
    for (round, dead) in [(2u64, 9u64), (3, 11)] {
        let again = s.ctl_json(&["dlq", "replay", "config.changes"]).await;
        assert_eq!(count(&again, "replayed"), 2, "round {round}: {again}");
        assert!(
            rows(&again["records"])
                .iter()
                .all(|r| r["replay_count"] == round - 1 && r["code"] == "TEST_POISON"),
            "{again}"
        );
        s.wait_for(9, dead).await;
    }
    let guarded = s.ctl_json(&["dlq", "replay", "config.changes"]).await;
    assert_eq!(count(&guarded, "replayed"), 0, "{guarded}");
    assert_eq!(count(&guarded, "skipped_loop_guard"), 2, "{guarded}");
    let out = s.ctl(&["dlq", "replay", "config.changes"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out)
            .contains("replayed 0, skipped by the loop guard (--max-replays 3) 0, filtered out 0"),
        "{}",
        text(&out)
    );
    // Each poison record was dead-lettered with counts 0, 1, 2 and 3, and no more.
    let poison = s
        .ctl_json(&["dlq", "inspect", "config.changes", "--code", "TEST_POISON"])
        .await;
    let mut seen: Vec<(String, u64)> = rows(&poison)
        .iter()
        .map(|r| {
            (
                r["event_id"].as_str().unwrap_or_default().to_owned(),
                r["replay_count"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    seen.sort();
    let mut want: Vec<(String, u64)> = seven
        .iter()
        .filter(|e| e.payload.key.starts_with("poison/"))
        .flat_map(|e| (0..=3).map(move |n| (e.metadata.event_id.to_string(), n)))
        .collect();
    want.sort();
    assert_eq!(seen, want);
    assert_eq!(
        inputs(20),
        20,
        "11 inputs, 3 fixed replays, 3 rounds of 2 poison replays"
    );
    assert_eq!(s.stage.metrics.total(DEAD_LETTERED), 11);
    s.stage.stop().await.expect("clean stop");
}
