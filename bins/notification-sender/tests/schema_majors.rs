//! A breaking change shipped as a new major version beside the old one: an old producer
//! writes `rules.alerts.triggered` major 1 (`Alert`, subject `<topic>-value`) while the rule
//! evaluator, switched to major 2 (`ALERTS_EVENT_VERSION=2`: `AlertV2`, event_version 2.0.0,
//! subject `<topic>-adpipe.rules.v2.AlertTriggered`), writes major 2 into the same topic.
//! The `notification-sender` binary delivers both alike (webhook and in-app rows, the
//! threshold and comparator of each as written), and its `/metrics` shows both versions in
//! use with 1.0.0 flagged deprecated.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{Env, alert, spawn_sender, start_hooks};
use envelope::{
    Event, Payload, RegistryClient,
    payload::alerts::{Alert, AlertV2},
};
use rdkafka::message::{Headers as _, Message as _};
use rule_evaluator::{
    fixtures::{THRESHOLD_ALERTS, threshold_dataset},
    stage::{RuleArgs, RuleEvaluator, RuleSettings},
};
use runtime::{
    RuntimeArgs, dedupe::Dedupe, metrics::SCHEMA_VERSION_IN_USE, processor::headers::EVENT_VERSION,
    testing::RunningStage,
};
use testbed::TestBed;
use testkit::{counter_with_labels, read_records, wait_until};
use topics::Topic;

const OLD_ALERTS: i64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_old_and_a_new_major_on_one_topic_are_both_delivered() {
    let bed = TestBed::start(
        "alert_majors",
        &[
            Topic::GoldDataReady,
            Topic::ConfigChanges,
            Topic::RulesAlertsTriggered,
            Topic::AuditEvents,
        ],
    )
    .await
    .expect("test bed");
    let schema = &bed.schema;
    let (http, hooks) = start_hooks(0, &[]).await;
    let secrets = bed.dir.path().join("secrets");
    std::fs::create_dir(&secrets).expect("secrets dir");
    let env = Env::new(&bed, "smtp://127.0.0.1:1".into(), &secrets);
    let log = || std::fs::read_to_string(&env.log).unwrap_or_default();

    // Each major has its own subject in the project's registry; v2 under v1's subject is
    // refused there too.
    let topic = Topic::RulesAlertsTriggered.name();
    let v2_subject = format!("{topic}-adpipe.rules.v2.AlertTriggered");
    let registry =
        RegistryClient::new(&bed.registry, None, Duration::from_secs(10)).expect("registry");
    let v1_id = registry
        .version(&format!("{topic}-value"), None)
        .await
        .expect("v1 subject")
        .id;
    let v2 = registry
        .version(&v2_subject, None)
        .await
        .expect("v2 subject");
    let v2_id = v2.id;
    assert_ne!(v1_id, v2_id);
    let (compatible, _) = registry
        .check_compatibility(&format!("{topic}-value"), &v2.schema)
        .await
        .expect("compatibility check");
    assert!(
        !compatible,
        "the registry took major 2 as a version of major 1"
    );

    let sender = spawn_sender(&env, &[]);
    common::org1_webhook_and_inbox(&bed, &http, log).await;

    // The old producer: major 1 alerts, to every channel of org 1.
    let old: Vec<Event<Alert>> = (0..OLD_ALERTS).map(|n| alert(1, n, &[])).collect();
    for e in &old {
        bed.produce(e).await;
    }
    // The new producer: the rule evaluator writing major 2.
    let evaluator = RunningStage::start(
        RuleEvaluator::from_args(RuleArgs {
            settings: RuleSettings::for_tests(schema.url()),
            alerts_version: 2,
        }),
        RuntimeArgs::for_tests(&bed.bootstrap),
        bed.codec.clone(),
        Dedupe::memory(100_000),
    );
    for e in threshold_dataset(20) {
        bed.produce(&e).await;
    }

    let total = OLD_ALERTS as usize + THRESHOLD_ALERTS.len();
    wait_until(
        Duration::from_secs(90),
        "every alert of both majors on the webhook and in the inbox",
        || {
            let hooks = hooks.clone();
            async move {
                hooks.lock().expect("hooks").accepted.len() == total
                    && schema.count("notify_in_app").await == Some(total as i64)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", log()));
    evaluator.stop().await.expect("evaluator stops");

    // Both majors are on the topic, each under its own schema id, the evaluator's records
    // with event_version 2.0.0 in the header.
    let records =
        read_records(&bed.bootstrap, topic, total, Duration::from_secs(30)).expect("records");
    assert_eq!(records.len(), total);
    let mut by_id: BTreeMap<u32, usize> = BTreeMap::new();
    for r in &records {
        let value = r.payload().expect("value");
        let id = u32::from_be_bytes(value[1..5].try_into().expect("4 bytes"));
        *by_id.entry(id).or_default() += 1;
        if id == v2_id {
            let version = r
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == EVENT_VERSION))
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned());
            assert_eq!(version.as_deref(), Some(AlertV2::VERSION));
        }
    }
    assert_eq!(
        by_id,
        BTreeMap::from([
            (v1_id, OLD_ALERTS as usize),
            (v2_id, THRESHOLD_ALERTS.len())
        ])
    );

    // Each alert reached the webhook with the threshold and comparator it was written with,
    // whichever major wrote it.
    let new = bed.events::<AlertV2>(Duration::from_secs(10)).await;
    let mut expected: BTreeMap<String, (String, String)> = BTreeMap::new();
    for e in &old {
        let p = &e.payload;
        expected.insert(
            p.alert_id.to_string(),
            (p.comparator.as_str().to_owned(), p.threshold.to_string()),
        );
    }
    for e in new.iter().filter(|e| e.metadata.event_version == "2.0.0") {
        let t = &e.payload.threshold;
        expected.insert(
            e.payload.alert_id.to_string(),
            (t.comparator.as_str().to_owned(), t.value.to_string()),
        );
    }
    assert_eq!(expected.len(), total, "every alert id once");
    let delivered: BTreeMap<String, (String, String)> = hooks
        .lock()
        .expect("hooks")
        .accepted
        .values()
        .map(|c| {
            let s = |k: &str| c.body[k].as_str().unwrap_or_default().to_owned();
            (s("alert_id"), (s("comparator"), s("threshold")))
        })
        .collect();
    assert_eq!(delivered, expected);
    let in_app: i64 = schema
        .admin()
        .query_one(
            &format!(
                "SELECT count(DISTINCT alert_id) FROM {}.notify_in_app",
                schema.name()
            ),
            &[],
        )
        .await
        .expect("in-app rows")
        .get(0);
    assert_eq!(
        in_app, total as i64,
        "one in-app row per alert of either major"
    );

    // The sender counts what it read per version: 1.0.0 deprecated, 2.0.0 not.
    let port = sender.metrics_port();
    let count = |labels: &[(&str, &str)]| {
        counter_with_labels(port, SCHEMA_VERSION_IN_USE, labels).expect("/metrics answers")
    };
    let v1_id = v1_id.to_string();
    let v2_id = v2_id.to_string();
    assert_eq!(
        count(&[
            ("topic", topic),
            ("version", Alert::VERSION),
            ("schema_id", &v1_id),
            ("deprecated", "true"),
        ]),
        OLD_ALERTS as f64,
        "{}",
        log()
    );
    assert_eq!(
        count(&[
            ("topic", topic),
            ("version", AlertV2::VERSION),
            ("schema_id", &v2_id),
            ("deprecated", "false"),
        ]),
        THRESHOLD_ALERTS.len() as f64
    );
}
