//! `pipelinectl config` end to end on a real Tansu broker and the project's registry: invalid
//! changes are refused with the reason and nothing is produced; versions increase per (org,
//! key); `apply` of the same file twice publishes once; every change has its `config.changed`
//! audit record; and the rule evaluator (in this process, on PostgreSQL) fed a sequence of
//! rule changes with a replayed older version ends with the same stored rules as a second
//! evaluator that reads the topic from the beginning on a fresh store.

mod common;

use common::text;

use std::{process::Output, sync::Arc, time::Duration};

use envelope::{
    Codec, Event, Id, RegistryClient,
    payload::{audit::AuditEvent, config::ConfigChange},
};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer},
    producer::FutureProducer,
};
use rule_evaluator::stage::{RuleEvaluator, RuleSettings};
use runtime::{
    RuntimeArgs, dedupe::Dedupe, metrics::PROCESSED, testing::RunningStage, testing::produce_event,
};
use serde_json::Value;
use testkit::{
    Broker, client_config, create_stage_topics, pg::TestSchema, read_records, wait_until,
};
use topics::{ConsumerGroup, Topic};

struct Setup {
    broker: Broker,
    url: String,
    codec: Arc<Codec>,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start(topics: &[Topic]) -> Setup {
        let broker = Broker::start_memory().expect("broker");
        create_stage_topics(&broker.bootstrap(), topics)
            .await
            .expect("topics");
        let dir = tempfile::tempdir().expect("dir");
        let url = schema_registry::spawn_local(dir.path())
            .await
            .expect("registry");
        let registry = RegistryClient::new(&url, None, Duration::from_secs(5)).expect("client");
        let codec = Arc::new(Codec::new(registry));
        for topic in topics {
            codec.register(*topic).await.expect("registered");
        }
        Setup {
            broker,
            url,
            codec,
            _dir: dir,
        }
    }

    fn b(&self) -> String {
        self.broker.bootstrap()
    }

    /// Run pipelinectl against this broker and registry (as actor `alice` unless `env` says).
    async fn ctl(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut all = vec![
            "--bootstrap-servers".to_owned(),
            self.b(),
            "--schema-registry-url".to_owned(),
            self.url.clone(),
        ];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        tokio::task::spawn_blocking(move || {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pipelinectl"));
            cmd.args(&all);
            for var in [
                "KAFKA_BOOTSTRAP_SERVERS",
                "SCHEMA_REGISTRY_URL",
                "ADPIPE_ACTOR",
                "PIPELINECTL_CONFIG_SCAN_SECS",
                "PIPELINECTL_CONFIG_IDLE_MS",
            ] {
                cmd.env_remove(var);
            }
            cmd.env("ADPIPE_ACTOR", "alice");
            for (k, v) in env {
                cmd.env(k, v);
            }
            cmd.output().expect("pipelinectl runs")
        })
        .await
        .expect("join")
    }

    /// `ctl --json …`, which must succeed.
    async fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ctl(&all, &[]).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", text(&out)))
    }

    /// Every event of `P`'s topic, read for up to `within` (at most `max`).
    async fn events<P: envelope::Payload>(&self, max: usize, within: Duration) -> Vec<Event<P>> {
        let mut out = Vec::new();
        for m in read_records(&self.b(), P::TOPIC.name(), max, within).expect("read") {
            out.push(
                self.codec
                    .decode(m.payload().unwrap_or_default())
                    .await
                    .expect("decodes"),
            );
        }
        out
    }
}

/// `(key, version, status)` of each row a write printed.
fn written(v: &Value) -> Vec<(String, String, String)> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|r| {
            let f = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (f("key"), f("version"), f("status"))
        })
        .collect()
}

const BOOKING: &[&str] = &[
    "config",
    "booking",
    "set",
    "--org",
    "7",
    "--campaign",
    "c1",
    "--booked-impressions",
    "1000000",
    "--booked-budget",
    "5000",
    "--booking-revenue",
    "7500.50",
    "--flight-start",
    "2025-01-01",
    "--flight-end",
    "2025-01-31",
];

/// `base` with each flag's value replaced (or the flag added).
fn with(base: &[&'static str], replace: &[(&'static str, &'static str)]) -> Vec<&'static str> {
    let mut args = base.to_vec();
    for (flag, value) in replace {
        match args.iter().position(|a| a == flag) {
            Some(i) => args[i + 1] = value,
            None => args.extend([*flag, *value]),
        }
    }
    args
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_changes_are_refused_with_the_reason_and_nothing_is_produced() {
    let s = Setup::start(&[Topic::ConfigChanges, Topic::AuditEvents]).await;
    let rule = [
        "config",
        "rule",
        "set",
        "--org",
        "7",
        "--id",
        "r1",
        "--metric",
        "pacing_rate",
        "--comparator",
        "lt",
        "--threshold",
        "70",
    ];
    let channel = [
        "config",
        "channel",
        "set",
        "--org",
        "7",
        "--id",
        "ops",
        "--kind",
        "webhook",
        "--target",
        "https://hooks.example.com/x",
    ];
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("changes.yaml");
    std::fs::write(
        &file,
        "org: 7\nchanges:\n  - channel: {channel_id: inbox, kind: in_app, target: ops}\n  \
         - booking: {campaign_id: c9, booked_impressions: 10, booked_budget: -1, \
         booking_revenue: 1, flight_start: 2025-01-01, flight_end: 2025-01-02}\n",
    )
    .expect("file");
    let file = leak(&file.display().to_string());
    let cases: Vec<(Vec<&'static str>, &str)> = vec![
        (
            with(BOOKING, &[("--org", "0")]),
            "org id must be positive, got 0",
        ),
        (
            with(BOOKING, &[("--flight-end", "2024-12-31")]),
            "flight end 2024-12-31 is before flight start 2025-01-01",
        ),
        (
            with(BOOKING, &[("--booked-budget", "-5")]),
            "booked budget must not be negative",
        ),
        (
            with(BOOKING, &[("--booked-impressions", "-1")]),
            "booked impressions must not be negative",
        ),
        (
            with(&rule, &[("--metric", "bogus")]),
            "unknown Metric \"bogus\"",
        ),
        (
            with(&rule, &[("--comparator", "drop_pct")]),
            "comparator drop_pct needs a trailing window",
        ),
        (
            with(&rule, &[("--window", "hourly")]),
            "unknown window \"hourly\"",
        ),
        (
            with(&rule, &[("--cooldown-secs", "-1")]),
            "cooldown must not be negative",
        ),
        (
            with(&channel, &[("--kind", "email")]),
            "a email target must be an e-mail address",
        ),
        (
            with(&channel, &[("--target", "hooks.example.com")]),
            "a webhook target must be an http:// or https:// URL",
        ),
        (
            with(&channel, &[("--secret-ref", "Bearer s3cr3t")]),
            "never hold its value",
        ),
        (
            vec![
                "config",
                "org",
                "set",
                "--org",
                "7",
                "--timezone",
                "Mars/Olympus Mons",
            ],
            "is not an IANA zone name",
        ),
        (
            vec!["config", "apply", "-f", file],
            "item 2 (booking/c9 of org 7): booked budget must not be negative",
        ),
    ];
    for (args, reason) in &cases {
        let out = s.ctl(args, &[]).await;
        let all = text(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {all}");
        assert!(
            all.contains(reason),
            "{args:?}: expected {reason:?} in {all}"
        );
        assert!(
            !all.contains("hooks.example.com"),
            "a channel target is never echoed: {all}"
        );
    }
    // The valid first item of the file was not published either: nothing at all was.
    assert!(
        s.events::<ConfigChange>(1, Duration::from_secs(3))
            .await
            .is_empty()
    );
    assert!(
        s.events::<AuditEvent>(1, Duration::from_secs(1))
            .await
            .is_empty()
    );
    // The same commands, made valid, go through.
    let ok = s.json(&with(&channel, &[])).await;
    assert_eq!(
        written(&ok),
        [("channel/ops".into(), "1".into(), "published".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_increase_per_key_apply_publishes_once_and_each_change_is_audited() {
    let s = Setup::start(&[Topic::ConfigChanges, Topic::AuditEvents]).await;
    let v1 = s.json(BOOKING).await;
    assert_eq!(
        written(&v1),
        [("booking/c1".into(), "1".into(), "published".into())]
    );
    let v2 = s.json(&with(BOOKING, &[("--booked-budget", "6000")])).await;
    assert_eq!(
        written(&v2),
        [("booking/c1".into(), "2".into(), "published".into())]
    );
    // Versions are per org: the same key of another org starts at 1.
    let other = s.json(&with(BOOKING, &[("--org", "8")])).await;
    assert_eq!(written(&other)[0].1, "1");
    let got = s
        .json(&["config", "booking", "get", "--org", "7", "--campaign", "c1"])
        .await;
    assert_eq!(got[0]["version"], 2);
    assert_eq!(got[0]["booking"]["booked_budget"], "6000.00");
    assert_eq!(got[0]["booking"]["booking_revenue"], "7500.50");
    assert_eq!(got[0]["actor"], "alice");
    let missing = s
        .ctl(
            &[
                "config",
                "booking",
                "get",
                "--org",
                "7",
                "--campaign",
                "nope",
            ],
            &[],
        )
        .await;
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));

    // Built-in rules can be switched off by id.
    let off = s
        .json(&[
            "config",
            "rule",
            "disable",
            "--org",
            "7",
            "--id",
            "default.pacing-low",
        ])
        .await;
    assert_eq!(written(&off)[0].1, "1");

    // apply: the same file twice publishes once.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("changes.yaml");
    std::fs::write(
        &file,
        r#"org: 7
changes:
  - booking: {campaign_id: c2, line_item_id: li1, booked_impressions: 500, booked_budget: 10, booking_revenue: "12.5", flight_start: 2025-02-01, flight_end: 2025-02-28, currency: EUR}
  - rule: {rule_id: pacing-strict, name: Pacing below 90 %, metric: pacing_rate, comparator: lt, threshold: 90, severity: critical, channels: [inbox], cooldown_seconds: 600}
  - channel: {channel_id: inbox, kind: in_app, target: ops}
  - org: 9
    org_settings: {timezone: Europe/Berlin, currency: EUR, freshness_days: 3}
"#,
    )
    .expect("file");
    let path = file.display().to_string();
    let first = s.json(&["config", "apply", "-f", &path]).await;
    let statuses: Vec<String> = written(&first).into_iter().map(|r| r.2).collect();
    assert_eq!(statuses, ["published"; 4]);
    let again = s.json(&["config", "apply", "-f", &path]).await;
    let again = written(&again);
    assert!(again.iter().all(|r| r.2 == "unchanged"), "{again:?}");
    assert_eq!(
        again.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        [
            "booking/c2/li1",
            "rule/pacing-strict",
            "channel/inbox",
            "org"
        ]
    );

    // The actor comes from the environment when --actor is not given.
    let by_env = s
        .ctl(
            &[
                "--json",
                "config",
                "org",
                "set",
                "--org",
                "9",
                "--freshness-days",
                "5",
            ],
            &[("ADPIPE_ACTOR", "bob")],
        )
        .await;
    assert_eq!(by_env.status.code(), Some(0), "{}", text(&by_env));
    let org = s.json(&["config", "org", "get", "--org", "9"]).await;
    assert_eq!(org[0]["version"], 2);
    assert_eq!(org[0]["actor"], "bob");
    assert_eq!(org[0]["org_settings"]["timezone"], "Europe/Berlin", "kept");
    assert_eq!(org[0]["org_settings"]["freshness_days"], 5);

    // Exactly the published changes are on the topic: 3 bookings, 1 disable, 4 applied, 1 org.
    let changes = s.events::<ConfigChange>(100, Duration::from_secs(8)).await;
    assert_eq!(changes.len(), 9, "{changes:#?}");
    let rules = s.json(&["config", "rule", "list", "--org", "7"]).await;
    let keys: Vec<&str> = rules
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["key"].as_str())
        .collect();
    assert_eq!(keys, ["rule/default.pacing-low", "rule/pacing-strict"]);
    assert_eq!(rules[0]["rule"]["enabled"], false);

    // Each change has its audit record: same org and correlation id, caused by it, the actor.
    let audits = s.events::<AuditEvent>(100, Duration::from_secs(8)).await;
    assert_eq!(audits.len(), changes.len());
    for c in &changes {
        let a = audits
            .iter()
            .find(|a| a.metadata.causation_id == Some(c.metadata.event_id))
            .unwrap_or_else(|| panic!("no audit record of {}", c.payload.key));
        assert_eq!(a.payload.action, "config.changed");
        assert_eq!(a.metadata.correlation_id, c.metadata.correlation_id);
        assert_eq!(a.metadata.org_id, c.metadata.org_id);
        assert_eq!(a.payload.entity.entity_id, c.payload.key);
        assert_eq!(a.payload.actor, c.payload.actor);
        assert_eq!(a.payload.details["version"], c.payload.version.to_string());
        assert_eq!(a.payload.actor.actor_type.as_str(), "user");
    }
    assert!(audits.iter().any(|a| a.payload.actor.actor_id == "bob"));
}

/// `(org, rule id, version, deleted, definition)` of every stored rule of `schema`.
async fn stored_rules(schema: &TestSchema) -> Vec<(i64, String, i64, bool, String)> {
    schema
        .admin()
        .query(
            &format!(
                "SELECT org_id, rule_id, version, deleted, definition::text \
                 FROM {}.rules_definitions ORDER BY org_id, rule_id",
                schema.name()
            ),
            &[],
        )
        .await
        .expect("rules_definitions")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
}

fn evaluator(s: &Setup, schema: &TestSchema) -> RunningStage {
    RunningStage::start(
        RuleEvaluator::new(RuleSettings::for_tests(schema.url())),
        RuntimeArgs::for_tests(&s.b()),
        s.codec.clone(),
        Dedupe::memory(10_000),
    )
}

async fn processed(stage: &RunningStage, n: u64) {
    let metrics = stage.metrics.clone();
    wait_until(
        Duration::from_secs(90),
        &format!("{n} records processed"),
        || {
            let done = metrics.total(PROCESSED) >= n;
            async move { done }
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: processed {}, stage ended: {}",
            stage.metrics.total(PROCESSED),
            stage.task.is_finished()
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_evaluator_started_from_scratch_reaches_the_rules_of_one_that_ran_throughout() {
    let s = Setup::start(&[
        Topic::ConfigChanges,
        Topic::AuditEvents,
        Topic::GoldDataReady,
        Topic::RulesAlertsTriggered,
    ])
    .await;
    let first = TestSchema::create("ctl_rules_a").await.expect("schema");
    let a = evaluator(&s, &first);

    let rule = |org: &'static str, id: &'static str, threshold: &'static str| {
        vec![
            "config",
            "rule",
            "set",
            "--org",
            org,
            "--id",
            id,
            "--metric",
            "pacing_rate",
            "--comparator",
            "lt",
            "--threshold",
            threshold,
        ]
    };
    let steps: Vec<Vec<&str>> = vec![
        rule("7", "r1", "70"),
        rule("7", "r1", "60"),
        vec!["config", "rule", "disable", "--org", "7", "--id", "r1"],
        rule("7", "r2", "50"),
        vec!["config", "rule", "delete", "--org", "7", "--id", "r2"],
        vec![
            "config",
            "rule",
            "delete",
            "--org",
            "7",
            "--id",
            "default.margin-low",
        ],
        rule("8", "r1", "75"),
    ];
    for args in &steps {
        let out = s.ctl(args, &[]).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
    }
    // A replayed older version: r1's version 1 again (a new event id, so no dedupe hides it).
    let changes = s.events::<ConfigChange>(100, Duration::from_secs(8)).await;
    assert_eq!(changes.len(), steps.len());
    let mut replay = changes
        .iter()
        .find(|e| e.metadata.org_id == 7 && e.payload.key == "rule/r1" && e.payload.version == 1)
        .expect("r1 version 1")
        .clone();
    replay.metadata.event_id = Id::new();
    let producer: FutureProducer = client_config(&s.b())
        .set("acks", "all")
        .create()
        .expect("producer");
    produce_event(&producer, &s.codec, &replay)
        .await
        .expect("replayed");
    let total = steps.len() as u64 + 1;
    processed(&a, total).await;
    let ran_throughout = stored_rules(&first).await;

    let find = |rules: &[(i64, String, i64, bool, String)], org: i64, id: &str| {
        rules
            .iter()
            .find(|r| r.0 == org && r.1 == id)
            .cloned()
            .unwrap_or_else(|| panic!("org {org} rule {id} stored: {rules:?}"))
    };
    let r1 = find(&ran_throughout, 7, "r1");
    assert_eq!(
        (r1.2, r1.3),
        (3, false),
        "the replayed version 1 did not override 3"
    );
    let def: Value = serde_json::from_str(&r1.4).expect("json");
    assert_eq!(def["enabled"], false);
    assert_eq!(def["threshold"], "60.0000");
    let r2 = find(&ran_throughout, 7, "r2");
    assert_eq!((r2.2, r2.3), (2, true));
    let margin = find(&ran_throughout, 7, "default.margin-low");
    assert_eq!((margin.2, margin.3), (1, true));
    assert_eq!(find(&ran_throughout, 8, "r1").2, 1);
    assert_eq!(ran_throughout.len(), 4);
    a.stop().await.expect("stopped cleanly");

    // A second evaluator, fresh store, its group's offsets back at the beginning.
    let group = ConsumerGroup::RuleEvaluator.name();
    let resetter: BaseConsumer = client_config(&s.b())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for topic in [Topic::ConfigChanges, Topic::GoldDataReady] {
        for p in 0..topic.spec().partitions as i32 {
            tpl.add_partition_offset(topic.name(), p, Offset::Offset(0))
                .expect("partition");
        }
    }
    // Tansu refuses the commit (UnknownMemberId) until the stopped member's session ended.
    wait_until(Duration::from_secs(60), "the group's offsets reset", || {
        let done = resetter.commit(&tpl, CommitMode::Sync).is_ok();
        async move {
            if !done {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            done
        }
    })
    .await
    .expect("offsets reset");
    drop(resetter);
    let second = TestSchema::create("ctl_rules_b").await.expect("schema");
    let b = evaluator(&s, &second);
    processed(&b, total).await;
    let from_scratch = stored_rules(&second).await;
    b.stop().await.expect("stopped cleanly");
    // Stored definitions compare as JSON text normalised by jsonb; updated_at is left out.
    assert_eq!(from_scratch, ran_throughout);
    first.drop().await;
    second.drop().await;
}
