//! The `notification-sender` binary when its PostgreSQL goes away mid-stream (a
//! `testkit::CutProxy` between the sender and the real server is cut, then restored): the
//! sender pauses — alerts wait for the store instead of going to the DLQ, nothing is delivered
//! or stored, the process keeps running — and once the database is back every alert is
//! delivered exactly once to each of its org's channels: one in-app row and one sent delivery
//! per (alert, channel), one accepted webhook call per idempotency key.
//!
//! What "once" means for the webhook: a cut between the peer's acceptance and the sender's
//! sent-record makes the alert wait and resend on the retry with the **same**
//! `Idempotency-Key` (the window `delivery.rs` documents for a SIGKILL). The test's HTTP peer
//! honours the key as receivers do: such a repeat is answered 200 and counted as a repeat, not
//! as a second acceptance. Repeats are bounded by the alerts in flight at the cut (one per
//! partition) and printed.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use common::{Env, alert, spawn_sender, start_hooks};
use envelope::{
    Event,
    payload::alerts::{Alert, AlertV2},
};
use notification_sender::key::idempotency_key;
use rdkafka::Message as _;
use testbed::TestBed;
use testkit::{CutProxy, counter, read_records, wait_until};
use topics::{PartitionKey, Topic, partition_for};
use uuid::Uuid;

/// The warning the runtime logs at each failed attempt while the stage's store is down.
const WAITING: &str = "waiting for the stage's store";
/// Attempts for an ordinary retryable error before the DLQ (`RETRY_ATTEMPTS`); a store
/// outage must be waited out well past them.
const RETRY_ATTEMPTS: u32 = 2;
/// Alerts per org before the cut, and during it.
const BEFORE: usize = 40;
const DURING: usize = 10;

/// One org per partition of `rules.alerts.triggered`, so the stream runs on every partition.
fn orgs() -> Vec<i64> {
    let partitions = Topic::RulesAlertsTriggered.spec().partitions;
    let mut by_partition = BTreeMap::new();
    for org in 1..1_000 {
        by_partition
            .entry(partition_for(PartitionKey::Org(org), partitions))
            .or_insert(org);
        if by_partition.len() == partitions as usize {
            break;
        }
    }
    by_partition.into_values().collect()
}

/// `per_org` alerts of each org, numbered from `from`; they name no channel, so each goes to
/// every channel of its org.
fn alerts(orgs: &[i64], from: i64, per_org: usize) -> Vec<Event<Alert>> {
    (0..per_org)
        .flat_map(|_| orgs.iter().copied())
        .enumerate()
        .map(|(n, org)| alert(org, from + n as i64, &[]))
        .collect()
}

/// The highest attempt logged with [`WAITING`] so far, and how many such lines.
fn waits(log: &str) -> (u64, usize) {
    let mut max = 0;
    let mut lines = 0;
    for line in log.lines().filter(|l| l.contains(WAITING)) {
        lines += 1;
        let attempt = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| v["fields"]["attempt"].as_u64())
            .unwrap_or(0);
        max = max.max(attempt);
    }
    (max, lines)
}

/// Per alert id, how many rows `sql` (alert id, count) returns.
async fn per_alert(bed: &TestBed, sql: &str) -> BTreeMap<Uuid, i64> {
    bed.schema
        .admin()
        .query(&sql.replace("{s}", bed.schema.name()), &[])
        .await
        .expect("query")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_outage_pauses_the_sender_which_then_delivers_every_alert_once() {
    let started = Instant::now();
    let bed = common::bed("notify_outage").await;
    let proxy = CutProxy::start("127.0.0.1:5432").await.expect("proxy");
    let (http, hooks) = start_hooks(0, &[]).await;
    let secrets = bed.dir.path().join("secrets");
    std::fs::create_dir(&secrets).expect("secrets dir");
    let env = Env::new(&bed, "smtp://127.0.0.1:1".into(), &secrets);
    let log = || std::fs::read_to_string(&env.log).unwrap_or_default();
    let accepted = || hooks.lock().expect("hooks").accepted.len();
    let in_app = || async { bed.schema.count("notify_in_app").await.unwrap_or(-1) };

    // The sender reaches PostgreSQL only through the proxy. Few attempts and short backoffs
    // for ordinary retryable errors: an outage treated as one would dead-letter at once.
    let url = bed.schema.url_via(proxy.port());
    let attempts = RETRY_ATTEMPTS.to_string();
    let mut sender = spawn_sender(
        &env,
        &[
            ("NOTIFY_DATABASE_URL", &url),
            ("RETRY_ATTEMPTS", &attempts),
            ("RETRY_BACKOFF_MS", "20"),
        ],
    );

    // Each org: a webhook (its own path) and an in-app inbox.
    let orgs = orgs();
    for &org in &orgs {
        common::webhook_and_inbox(&bed, &http, org).await;
    }
    let channels = 2 * orgs.len() as i64;
    wait_until(
        Duration::from_secs(60),
        "every org's channels stored",
        || async { bed.schema.count("notify_channels").await == Some(channels) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", log()));

    // The backlog: 40 alerts per org. The webhook peer takes 100 ms per call and each
    // partition delivers in order, so it lasts seconds and the cut lands mid-stream.
    let mut want = alerts(&orgs, 0, BEFORE);
    bed.fill::<Alert, _>(&want).await;
    wait_until(Duration::from_secs(60), "60 webhook deliveries", || {
        let n = accepted();
        async move { n >= 60 }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", log()));

    proxy.cut().await;
    let cut_at = Instant::now();
    let at_cut = (accepted(), in_app().await);
    assert!(
        at_cut.0 < want.len(),
        "cut mid-stream ({} of {} delivered)",
        at_cut.0,
        want.len()
    );
    // More alerts arrive while the store is down.
    let during = alerts(&orgs, want.len() as i64, DURING);
    bed.fill::<Alert, _>(&during).await;
    want.extend(during);

    // Down: alerts wait past their attempts (the first sample comes over half a second after
    // the cut, once the webhook calls under way at the cut have been answered); then nothing
    // is delivered between two samples.
    let waited_past = |past: u64| {
        let log = &log;
        move || {
            let (max, _) = waits(&log());
            async move { max > past }
        }
    };
    wait_until(
        Duration::from_secs(30),
        "alerts waiting for the store",
        waited_past(u64::from(RETRY_ATTEMPTS) + 3),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", log()));
    let down = (accepted(), in_app().await);
    wait_until(
        Duration::from_secs(30),
        "more attempts while down",
        waited_past(u64::from(RETRY_ATTEMPTS) + 5),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", log()));
    assert_eq!(
        (accepted(), in_app().await),
        down,
        "nothing delivered while the store is down (webhook, in-app)"
    );
    let committed = || common::committed_alerts(&bed) as usize;
    assert!(
        committed() < want.len(),
        "the alerts wait: offsets not committed past the outage"
    );
    let port = sender.metrics_port();
    let metric =
        move |name: &'static str| async move { counter(port, name).await.unwrap_or(f64::NAN) };
    assert_eq!(
        metric(runtime::metrics::DEAD_LETTERED).await,
        0.0,
        "nothing dead-lettered while down"
    );
    assert!(
        sender.exited().is_none(),
        "the sender keeps running:\n{}",
        log()
    );
    let (max_attempt, wait_lines) = waits(&log());

    // Back: every alert delivered, each offset committed.
    proxy.restore();
    let outage = cut_at.elapsed();
    let total = want.len();
    if let Err(e) = wait_until(
        Duration::from_secs(60),
        "every alert delivered after the outage",
        || async { accepted() == total && in_app().await == total as i64 && committed() == total },
    )
    .await
    {
        panic!(
            "{e}: {} webhook, {} in-app, {} committed; log:\n{}",
            accepted(),
            in_app().await,
            committed(),
            log()
        )
    }

    // Exactly once per alert and channel.
    let alert_ids: BTreeSet<Uuid> = want.iter().map(|e| e.payload.alert_id.0).collect();
    assert_eq!(alert_ids.len(), total);
    let inbox = per_alert(
        &bed,
        "SELECT alert_id, count(*) FROM {s}.notify_in_app GROUP BY alert_id",
    )
    .await;
    assert_eq!(
        inbox.keys().copied().collect::<BTreeSet<_>>(),
        alert_ids,
        "an in-app notification for every alert"
    );
    assert!(
        inbox.values().all(|n| *n == 1),
        "one in-app notification per alert"
    );
    let sent = per_alert(
        &bed,
        "SELECT alert_id, count(*) FROM {s}.notify_deliveries WHERE status = 'sent' \
         GROUP BY alert_id",
    )
    .await;
    assert_eq!(
        sent.keys().copied().collect::<BTreeSet<_>>(),
        alert_ids,
        "deliveries recorded for every alert"
    );
    assert!(
        sent.values().all(|n| *n == 2),
        "one sent delivery per alert and channel"
    );
    let webhook_keys: BTreeMap<String, String> = want
        .iter()
        .map(|e| {
            let key = idempotency_key(&AlertV2::from(e.payload.clone()), "ops-webhook");
            (key.to_string(), format!("/hook/org{}", e.metadata.org_id))
        })
        .collect();
    let (calls, repeats) = {
        let h = hooks.lock().expect("hooks");
        let got: BTreeMap<String, String> = h
            .accepted
            .iter()
            .map(|(k, c)| (k.clone(), c.path.clone()))
            .collect();
        assert_eq!(
            got, webhook_keys,
            "one accepted webhook call per alert, on its org's path"
        );
        for (key, call) in &h.accepted {
            assert_eq!(call.body["idempotency_key"], key.as_str());
        }
        assert!(
            h.repeated.len() <= orgs.len(),
            "repeats only for alerts in flight at the cut: {:?}",
            h.repeated
        );
        (h.calls.len(), h.repeated.len())
    };

    assert_eq!(metric(runtime::metrics::DEAD_LETTERED).await, 0.0);
    assert_eq!(
        metric(notification_sender::metrics::FAILED).await,
        0.0,
        "no channel given up on"
    );
    let dead = read_records(
        &bed.bootstrap,
        &Topic::RulesAlertsTriggered.dlq(),
        1,
        Duration::from_secs(2),
    )
    .expect("dlq");
    assert!(
        dead.is_empty(),
        "nothing dead-lettered: {:?}",
        dead.first().map(|m| m.offset())
    );
    assert!(sender.exited().is_none(), "the sender still runs");
    eprintln!(
        "outage: cut with {} webhook and {} in-app of {} alerts delivered; while down {} \
         webhook and {} in-app over {wait_lines} waits (highest attempt {max_attempt}, {:.1} s); \
         then all {total} delivered once per channel: {calls} webhook calls, {repeats} repeats \
         of an accepted key; {:.1} s in all",
        at_cut.0,
        at_cut.1,
        orgs.len() * BEFORE,
        down.0,
        down.1,
        outage.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    sender.kill();
    bed.schema.drop().await;
}
