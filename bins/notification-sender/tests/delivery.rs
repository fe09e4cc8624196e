//! The `notification-sender` binary on real peers started by this test — an HTTP server for
//! webhooks and Slack that fails its first two calls with 503, an SMTP sink
//! (`testkit::SmtpSink`), the local PostgreSQL, a Tansu broker and the project's registry —
//! killed with SIGKILL mid-delivery and restarted. Every (alert, channel) pair is delivered,
//! to the right org's channel, once per idempotency key.
//!
//! What "once" means here: the sender records a delivery as sent right after the peer
//! accepted it, so a kill in between resends it on the replay with the **same**
//! `Idempotency-Key` (HTTP) or `Message-ID` (e-mail). The HTTP server behaves like a receiver
//! honouring `Idempotency-Key`: a repeat of an accepted key is answered 200 and counted as a
//! repeat, not as a second acceptance; the SMTP sink records every message and the test
//! counts repeated Message-IDs the same way. Both counts are printed, and bounded by the
//! deliveries that can be in flight at the kill.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::Duration,
};

use common::{Env, alert, channel, config, spawn_sender, start_hooks};
use envelope::{
    Event, Id, Ratio,
    payload::{
        alerts::{Alert, AlertState, AlertV2},
        common::{Comparator, Metric, Severity},
        config::{ChannelKind, ConfigItem, ConfigOp, RuleDefinition},
    },
};
use notification_sender::key::{idempotency_key, message_id};
use rdkafka::Message;
use testkit::{SmtpSink, committed_offsets, end_offsets, read_records, wait_until};
use topics::Topic;
use uuid::Uuid;

const ORG_A: i64 = 101;
const ORG_B: i64 = 202;
const HOOK_SECRET: &str = "hook-secret-1";

/// Where a delivery must end up.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// An HTTP path of the test server.
    Http(String),
    /// An e-mail recipient.
    Email(String),
    /// An in-app audience.
    InApp(String),
}

/// The in-app notifications stored: (idempotency key, org, audience).
async fn in_app_rows(
    admin: &tokio_postgres::Client,
    schema: &str,
) -> BTreeSet<(String, i64, String)> {
    admin
        .query(
            &format!("SELECT idempotency_key::text, org_id, audience FROM {schema}.notify_in_app"),
            &[],
        )
        .await
        .map(|rows| {
            rows.iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_each_channel_once_across_a_sigkill_and_a_flaky_webhook() {
    let bed = common::bed("notify_e2e").await;
    let b = bed.bootstrap.clone();
    let codec = bed.codec.clone();
    let schema = &bed.schema;
    let dir = &bed.dir;
    let secrets = dir.path().join("secrets");
    std::fs::create_dir(&secrets).expect("secrets dir");
    std::fs::write(secrets.join("hook-token"), format!("{HOOK_SECRET}\n")).expect("secret");

    // The peers.
    let (http, hooks) = start_hooks(2, &[("/hook/a", HOOK_SECRET)]).await;
    let smtp = SmtpSink::start().await.expect("smtp sink");

    let env = Env::new(&bed, smtp.url(), &secrets);
    let log = || std::fs::read_to_string(&env.log).unwrap_or_default();

    // Channels of two orgs. Both have an "ops-hook": ids are per org. Org A's e-mail
    // channel changes target at version 2, then a stale version 1 arrives (ignored); org B's
    // "gone" is deleted; a rule change is ignored by the sender. Each org's in-app channel
    // comes last, so once both are stored every change before them was applied.
    use ChannelKind::{Email, InApp, Slack, Webhook};
    let mail_a = |target: &str| channel("ops-mail", Email, target, None, None, true);
    let configs = [
        config(ORG_A, 1, ConfigOp::Upsert, mail_a("old-a@example.test")),
        config(ORG_A, 2, ConfigOp::Upsert, mail_a("ops-a@example.test")),
        config(ORG_A, 1, ConfigOp::Upsert, mail_a("stale-a@example.test")),
        config(
            ORG_A,
            1,
            ConfigOp::Upsert,
            channel(
                "ops-hook",
                Webhook,
                &format!("{http}/hook/a"),
                Some("hook-token"),
                None,
                true,
            ),
        ),
        config(
            ORG_A,
            1,
            ConfigOp::Upsert,
            channel(
                "ops-slack",
                Slack,
                &format!("{http}/slack/a"),
                None,
                None,
                true,
            ),
        ),
        config(
            ORG_A,
            1,
            ConfigOp::Upsert,
            channel(
                "paused",
                Webhook,
                &format!("{http}/hook/paused"),
                None,
                None,
                false,
            ),
        ),
        config(
            ORG_A,
            1,
            ConfigOp::Upsert,
            ConfigItem::RuleDefinition(RuleDefinition {
                rule_id: "r1".into(),
                name: "Pacing".into(),
                metric: Metric::PacingRate,
                comparator: Comparator::Lt,
                threshold: Ratio::from_unscaled(800_000).expect("ratio"),
                window: "flight".into(),
                severity: Severity::Warning,
                channels: vec!["ops-hook".into()],
                cooldown_seconds: 3_600,
                enabled: true,
                campaign_id: None,
            }),
        ),
        config(
            ORG_A,
            1,
            ConfigOp::Upsert,
            channel("ops-inapp", InApp, "team-a", None, None, true),
        ),
        config(
            ORG_B,
            1,
            ConfigOp::Upsert,
            channel(
                "gone",
                Webhook,
                &format!("{http}/hook/gone"),
                None,
                None,
                true,
            ),
        ),
        config(
            ORG_B,
            2,
            ConfigOp::Delete,
            channel(
                "gone",
                Webhook,
                &format!("{http}/hook/gone"),
                None,
                None,
                true,
            ),
        ),
        config(
            ORG_B,
            1,
            ConfigOp::Upsert,
            channel(
                "ops-hook",
                Webhook,
                &format!("{http}/hook/b"),
                None,
                None,
                true,
            ),
        ),
        // Two a second after a burst of two: org B's Slack deliveries wait for tokens.
        config(
            ORG_B,
            1,
            ConfigOp::Upsert,
            channel(
                "ops-slack",
                Slack,
                &format!("{http}/slack/b"),
                None,
                Some(120),
                true,
            ),
        ),
        config(
            ORG_B,
            1,
            ConfigOp::Upsert,
            channel("ops-mail", Email, "ops-b@example.test", None, None, true),
        ),
        config(
            ORG_B,
            1,
            ConfigOp::Upsert,
            channel("ops-inapp", InApp, "team-b", None, None, true),
        ),
    ];
    for c in &configs {
        bed.produce(c).await;
    }

    let mut sender = spawn_sender(&env, &[]);
    let admin = schema.admin();
    let s = schema.name().to_owned();
    wait_until(
        Duration::from_secs(90),
        "both orgs' channels stored",
        || async {
            schema
                .count("notify_channels WHERE channel_id = 'ops-inapp'")
                .await
                == Some(2)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", log()));
    let stored: BTreeMap<(i64, String), (i64, bool, String)> = admin
        .query(
            &format!(
                "SELECT org_id, channel_id, version, deleted, target FROM {s}.notify_channels"
            ),
            &[],
        )
        .await
        .expect("channels")
        .iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3), r.get(4))))
        .collect();
    assert_eq!(stored.len(), 10, "{stored:?}");
    assert_eq!(
        stored[&(ORG_A, "ops-mail".to_owned())],
        (2, false, "ops-a@example.test".to_owned()),
        "version 2 kept, the stale version 1 ignored"
    );
    assert!(
        stored[&(ORG_B, "gone".to_owned())].1,
        "deleted: a tombstone"
    );

    // The alerts.
    let a1 = alert(ORG_A, 1, &[]);
    let a2 = alert(ORG_A, 2, &["ops-hook", "ops-mail"]);
    let a3 = alert(ORG_A, 3, &["paused", "ops-slack"]);
    let a4 = alert(ORG_A, 4, &["ops-hook", "nope"]);
    let mut a5 = alert(ORG_A, 5, &[]);
    a5.payload.alert_id = a1.payload.alert_id;
    a5.payload.fired_at = a1.payload.fired_at;
    a5.payload.state = AlertState::Resolved;
    // a2 firing again after its cooldown: a new notification.
    let mut a6 = alert(ORG_A, 6, &["ops-hook", "ops-mail"]);
    a6.payload.alert_id = a2.payload.alert_id;
    let b1 = alert(ORG_B, 11, &[]);
    let b2 = alert(ORG_B, 12, &["ops-hook"]);
    let b3 = alert(ORG_B, 13, &["ops-slack", "ops-inapp"]);
    let b4 = alert(ORG_B, 14, &[]);
    let b5 = alert(ORG_B, 15, &["gone"]);
    // a2 again under a new event id (the rule-evaluator emitting it twice): same keys.
    let mut a2_again = a2.clone();
    a2_again.metadata.event_id = Id::new();
    let alerts = [
        &a1, &b1, &a2, &b2, &a3, &b3, &a4, &b4, &a1, &a5, &b5, &a6, &a2_again,
    ];
    for a in alerts {
        bed.produce(a).await;
    }

    // The deliveries each alert must make, by idempotency key.
    let all_a = ["ops-hook", "ops-slack", "ops-mail", "ops-inapp"];
    let target = |org: i64, channel: &str| -> Target {
        let o = if org == ORG_A { "a" } else { "b" };
        match channel {
            "ops-hook" => Target::Http(format!("/hook/{o}")),
            "ops-slack" => Target::Http(format!("/slack/{o}")),
            "ops-mail" => Target::Email(format!("ops-{o}@example.test")),
            "ops-inapp" => Target::InApp(format!("team-{o}")),
            other => panic!("no channel {other}"),
        }
    };
    let mut expected: HashMap<Uuid, (i64, Id, Target)> = HashMap::new();
    for (a, channels) in [
        (&a1, &all_a[..]),
        (&a2, &["ops-hook", "ops-mail"][..]),
        (&a3, &["ops-slack"][..]),
        (&a4, &["ops-hook"][..]),
        (&a5, &all_a[..]),
        (&a6, &["ops-hook", "ops-mail"][..]),
        (&b1, &all_a[..]),
        (&b2, &["ops-hook"][..]),
        (&b3, &["ops-slack", "ops-inapp"][..]),
        (&b4, &all_a[..]),
    ] {
        let org = a.metadata.org_id;
        for c in channels {
            let key = idempotency_key(&AlertV2::from(a.payload.clone()), c);
            let previous = expected.insert(key, (org, a.payload.alert_id, target(org, c)));
            assert!(previous.is_none(), "distinct keys");
        }
    }
    let expected_http: BTreeMap<String, String> = expected
        .iter()
        .filter_map(|(k, (_, _, t))| match t {
            Target::Http(path) => Some((k.to_string(), path.clone())),
            _ => None,
        })
        .collect();
    let expected_mail: BTreeMap<String, String> = expected
        .iter()
        .filter_map(|(k, (_, _, t))| match t {
            Target::Email(to) => Some((message_id(*k), to.clone())),
            _ => None,
        })
        .collect();
    let expected_in_app: BTreeSet<(String, i64, String)> = expected
        .iter()
        .filter_map(|(k, (org, _, t))| match t {
            Target::InApp(audience) => Some((k.to_string(), *org, audience.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        (
            expected_http.len(),
            expected_mail.len(),
            expected_in_app.len()
        ),
        (14, 6, 5)
    );

    // SIGKILL once the webhook server has seen its two failures and a few acceptances.
    wait_until(
        Duration::from_secs(90),
        "the HTTP server saw 6 calls",
        || async { hooks.lock().expect("hooks").calls.len() >= 6 },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", log()));
    sender.kill();
    let accepted_at_kill = hooks.lock().expect("hooks").accepted.len();
    let mails_at_kill = smtp.messages().len();
    // What the first run recorded as sent: none of it may ever be sent again. (A sent-record
    // committing after this snapshot only makes the check laxer, never wrong.)
    let sent_at_kill: BTreeSet<String> = admin
        .query(
            &format!(
                "SELECT idempotency_key::text FROM {s}.notify_deliveries WHERE status = 'sent'"
            ),
            &[],
        )
        .await
        .expect("deliveries")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        accepted_at_kill < expected_http.len(),
        "killed mid-delivery ({accepted_at_kill} of {} accepted)",
        expected_http.len()
    );

    // The restart replays what the first run did not commit.
    let _sender = spawn_sender(&env, &[]);
    let alert_partitions = i32::try_from(Topic::RulesAlertsTriggered.spec().partitions).expect("p");
    let ends = end_offsets(&b, Topic::RulesAlertsTriggered.name(), alert_partitions).expect("ends");
    wait_until(
        Duration::from_secs(120),
        "every delivery made and every alert committed",
        || {
            let b = b.clone();
            let ends = ends.clone();
            let hooks = hooks.clone();
            let s = s.clone();
            let expected_http = &expected_http;
            let expected_mail = &expected_mail;
            let expected_in_app = &expected_in_app;
            let smtp = &smtp;
            async move {
                let http_done = {
                    let h = hooks.lock().expect("hooks");
                    expected_http.keys().all(|k| h.accepted.contains_key(k))
                };
                let mails: BTreeSet<String> = smtp
                    .messages()
                    .into_iter()
                    .filter_map(|m| m.message_id)
                    .collect();
                let committed = committed_offsets(
                    &b,
                    "notification-sender",
                    Topic::RulesAlertsTriggered.name(),
                    alert_partitions,
                )
                .map(|c| c.iter().map(|o| (*o).max(0)).collect::<Vec<_>>() == ends)
                .unwrap_or(false);
                http_done
                    && expected_mail.keys().all(|m| mails.contains(m))
                    && in_app_rows(admin, &s).await.len() >= expected_in_app.len()
                    && committed
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", log()));

    // 1. HTTP: exactly the expected keys accepted, each on its own org's channel, with the
    // alert of that org in the body; no call to a disabled, deleted or foreign channel.
    let h = hooks.lock().expect("hooks").clone();
    let accepted: BTreeMap<String, String> = h
        .accepted
        .iter()
        .map(|(k, c)| (k.clone(), c.path.clone()))
        .collect();
    assert_eq!(accepted, expected_http, "accepted HTTP deliveries");
    for (key, call) in &h.accepted {
        let uuid: Uuid = key.parse().expect("a UUID key");
        let (org, alert_id, _) = &expected[&uuid];
        if call.path.starts_with("/hook/") {
            assert_eq!(call.body["org_id"], *org, "{call:?}");
            assert_eq!(call.body["alert_id"], alert_id.to_string(), "{call:?}");
            assert_eq!(call.body["idempotency_key"], key.as_str());
        } else {
            assert!(
                call.body["text"]
                    .as_str()
                    .is_some_and(|t| t.contains(&format!("org {org}")))
            );
        }
    }
    assert!(
        h.calls.iter().all(|c| expected_http.contains_key(&c.key)),
        "no call outside the expected deliveries"
    );
    assert_eq!(h.unauthorized, 0, "org A's webhook got its bearer secret");
    let http_calls = h.calls.len();
    let http_repeats = h.repeated.len();

    // 2. E-mail: each expected Message-ID to its org's address; repeats only from the kill.
    let messages = smtp.messages();
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    let mut repeated = h.repeated.clone();
    for m in &messages {
        let id = m.message_id.clone().expect("a Message-ID");
        assert_eq!(m.to.len(), 1);
        if first.insert(id.clone(), m.to[0].clone()).is_some() {
            repeated.push(
                id.trim_end_matches("@notification-sender.adpipe")
                    .to_owned(),
            );
        }
        assert!(m.data.contains("Pacing below 80 %"), "{}", m.data);
    }
    assert_eq!(first, expected_mail, "e-mails by Message-ID");

    // 3. In-app: exactly the expected rows.
    assert_eq!(
        in_app_rows(admin, &s).await,
        expected_in_app,
        "in-app notifications"
    );

    // 4. Every delivery is recorded as sent; the webhook's two 503s were recorded and retried.
    let rows = admin
        .query(
            &format!(
                "SELECT idempotency_key::text, status, attempts, coalesce(last_error, '') \
                 FROM {s}.notify_deliveries"
            ),
            &[],
        )
        .await
        .expect("deliveries");
    let sent: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.get::<_, String>(1) == "sent")
        .map(|r| r.get(0))
        .collect();
    let want: BTreeSet<String> = expected.keys().map(Uuid::to_string).collect();
    assert_eq!(sent, want, "every delivery recorded as sent, nothing else");
    assert_eq!(
        rows.len(),
        want.len(),
        "no delivery rows beyond the expected"
    );
    assert!(
        rows.iter()
            .any(|r| r.get::<_, i32>(2) >= 2 && r.get::<_, String>(3).contains("HTTP status 503")),
        "a retried 503 is on record"
    );

    // 5. The alerts naming channels their org does not have are in the DLQ with the code.
    // Everything is committed, so every dead letter was written; a replay after the kill
    // may have dead-lettered an alert twice.
    let dead = read_records(
        &b,
        &Topic::RulesAlertsTriggered.dlq(),
        usize::MAX,
        Duration::from_secs(5),
    )
    .expect("dlq");
    assert!((2..=4).contains(&dead.len()), "{} dead letters", dead.len());
    let mut dead_alerts = BTreeSet::new();
    for m in &dead {
        let header = |name: &str| testkit::header(m, name);
        assert_eq!(
            header(runtime::dlq::headers::ERROR_CODE).as_deref(),
            Some("NOTIFY_UNKNOWN_CHANNEL")
        );
        let message = header(runtime::dlq::headers::ERROR_MESSAGE).unwrap_or_default();
        assert!(
            message.contains("\"nope\"") || message.contains("\"gone\""),
            "{message}"
        );
        let e: Event<Alert> = codec
            .decode(m.payload().unwrap_or_default())
            .await
            .expect("the original bytes");
        dead_alerts.insert(e.payload.alert_id);
    }
    assert_eq!(
        dead_alerts,
        BTreeSet::from([a4.payload.alert_id, b5.payload.alert_id])
    );

    // 6. No target and no secret in the logs.
    let logged = log();
    for secret in [
        "example.test",
        HOOK_SECRET,
        "/hook/a",
        "/slack/b",
        "team-a",
        http.trim_start_matches("http://"),
    ] {
        assert!(!logged.contains(secret), "{secret:?} logged");
    }

    eprintln!(
        "HTTP: {http_calls} calls, {} keys accepted ({accepted_at_kill} before the kill), \
         {http_repeats} repeats of an accepted key; SMTP: {} messages, {} Message-IDs \
         ({mails_at_kill} before the kill), {} repeats; in-app: {} rows; {} deliveries \
         recorded as sent before the kill",
        accepted.len(),
        messages.len(),
        first.len(),
        repeated.len() - http_repeats,
        expected_in_app.len(),
        sent_at_kill.len()
    );
    // A repeat needs a kill between a peer's acceptance and the sent-record: never a
    // delivery the first run had recorded as sent, each at most once, and at most the
    // deliveries in flight at the kill (one alert per partition, four channels each).
    let once: BTreeSet<&String> = repeated.iter().collect();
    assert_eq!(
        once.len(),
        repeated.len(),
        "no key repeated twice: {repeated:?}"
    );
    for key in &repeated {
        assert!(
            !sent_at_kill.contains(key),
            "{key} was recorded as sent before the kill and was sent again"
        );
    }
    assert!(repeated.len() <= 8, "{repeated:?}");
    bed.schema.drop().await;
}
