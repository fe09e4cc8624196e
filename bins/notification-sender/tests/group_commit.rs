//! The `notification-sender` binary group-commits in-app notifications: alerts of one
//! partition share one PostgreSQL transaction (`--commit-linger-ms`), and an alert
//! completes — offset stored, counted as processed — only once the transaction holding its
//! row is committed. A SIGKILL while a transaction is open loses its rows but not their
//! alerts: their offsets were never stored, and the restarted sender delivers each once.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use common::{Env, alert, config, spawn_sender};
use envelope::payload::{alerts::Alert, config::ConfigOp};
use testkit::{counter, wait_until};
use uuid::Uuid;

/// The org of every alert here (one partition, so one lane).
const ORG: i64 = 7;
/// Alerts per round.
const ALERTS: usize = 20;
/// The linger of the test's sender: long enough that a round's alerts all join the
/// transaction its first one began, on any machine.
const LINGER_MS: &str = "3000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_app_rows_are_committed_together_and_their_alerts_complete_only_after() {
    let bed = common::bed("notify_group").await;
    let secrets = bed.dir.path().join("secrets");
    std::fs::create_dir(&secrets).expect("secrets dir");
    let env = Env::new(&bed, "smtp://127.0.0.1:1".into(), &secrets);
    let log = || std::fs::read_to_string(&env.log).unwrap_or_default();
    let in_app = || async { bed.schema.count("notify_in_app").await.unwrap_or(-1) };
    // The sender's connections carry the schema's name, to find its open transaction.
    let app = bed.schema.name().to_owned();
    let url = format!("{} application_name={app}", bed.schema.url());
    let mut sender = spawn_sender(
        &env,
        &[
            ("NOTIFY_DATABASE_URL", &url),
            ("NOTIFY_COMMIT_LINGER_MS", LINGER_MS),
        ],
    );

    bed.produce(&config(ORG, 1, ConfigOp::Upsert, common::inbox()))
        .await;
    let port = sender.metrics_port();
    let processed = || async {
        counter(port, runtime::metrics::PROCESSED)
            .await
            .unwrap_or(0.0)
    };
    // The channel's change is the first record completed.
    wait_until(Duration::from_secs(60), "the inbox stored", || async {
        bed.schema.count("notify_channels").await == Some(1) && processed().await == 1.0
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", log()));

    // Round 1: the alerts' rows appear all at once, and never after their alerts completed.
    let first: Vec<_> = (0..ALERTS as i64).map(|n| alert(ORG, n, &[])).collect();
    bed.fill::<Alert, _>(&first).await;
    let mut seen = BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        // Completed first, then committed: a row committed after its alert completed would
        // show as more completed than committed.
        let alerts = processed().await - 1.0;
        let rows = in_app().await;
        assert!(
            alerts <= rows as f64,
            "{alerts} alerts completed with only {rows} in-app rows committed; log:\n{}",
            log()
        );
        seen.insert(rows);
        if rows == ALERTS as i64 && alerts == ALERTS as f64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{rows} rows, {alerts} alerts completed after 60 s; log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        seen,
        BTreeSet::from([0, ALERTS as i64]),
        "the round's rows committed in one transaction"
    );

    // Round 2: SIGKILL while the lane's transaction holds the rows, uncommitted.
    let second: Vec<_> = (0..ALERTS as i64)
        .map(|n| alert(ORG, 100 + n, &[]))
        .collect();
    bed.fill::<Alert, _>(&second).await;
    let open = || async {
        bed.schema
            .admin()
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE application_name = $1 AND state = 'idle in transaction'",
                &[&app],
            )
            .await
            .map_or(0, |r| r.get::<_, i64>(0))
    };
    wait_until(
        Duration::from_secs(30),
        "a lane's transaction open with round 2's rows",
        || async { open().await > 0 },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", log()));
    sender.kill();
    assert_eq!(
        in_app().await,
        ALERTS as i64,
        "the killed transaction's rows are gone"
    );
    let committed = || common::committed_alerts(&bed);
    assert!(
        committed() <= ALERTS as i64,
        "no offset of round 2 committed before its rows were"
    );

    // Restarted: round 2 delivered, each alert of both rounds once.
    let _sender = spawn_sender(&env, &[("NOTIFY_DATABASE_URL", &url)]);
    wait_until(
        Duration::from_secs(60),
        "round 2 delivered after the restart",
        || async { in_app().await == 2 * ALERTS as i64 && committed() == 2 * ALERTS as i64 },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", log()));
    let rows = bed
        .schema
        .admin()
        .query(
            &format!(
                "SELECT alert_id, count(*) FROM {}.notify_in_app GROUP BY alert_id",
                bed.schema.name()
            ),
            &[],
        )
        .await
        .expect("in-app rows");
    let per_alert: BTreeMap<Uuid, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let want: BTreeSet<Uuid> = first
        .iter()
        .chain(&second)
        .map(|e| e.payload.alert_id.0)
        .collect();
    assert_eq!(per_alert.keys().copied().collect::<BTreeSet<_>>(), want);
    assert!(per_alert.values().all(|n| *n == 1), "one row per alert");
    let sent = bed
        .schema
        .count("notify_deliveries WHERE status = 'sent'")
        .await;
    assert_eq!(sent, Some(2 * ALERTS as i64), "one sent delivery per alert");
}
