//! The `notification-sender` binary when channels fail: a webhook answering 503 is tried
//! `--channel-attempts` times and the alert dead-lettered with `NOTIFY_CHANNEL_FAILED` and the
//! last error, after its healthy channels were delivered; a 404 fails at once; an SMTP server
//! refusing with 451 is retried until it accepts; replaying the DLQ record once the webhook
//! is healthy again sends only the missing channel. A channel limited to 60 a minute receives
//! a burst of alerts one a second. All peers are real, started by the test.

mod common;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, Uri},
    routing::post,
};
use common::{Env, alert, channel, config, spawn_sender};
use envelope::{Event, payload::alerts::Alert, payload::config::ChannelKind};
use rdkafka::{Message, producer::FutureRecord};
use testkit::{SmtpSink, committed_offsets, end_offsets, read_records, wait_until};
use topics::Topic;

const ORG: i64 = 7;

/// What the HTTP server saw: calls per path, with when each arrived.
#[derive(Debug, Default)]
struct Peer {
    /// Whether `/flaky` has recovered (answers 200 instead of 503).
    flaky_recovered: bool,
    calls: BTreeMap<String, Vec<Instant>>,
}

type Shared = Arc<Mutex<Peer>>;

async fn hook(State(peer): State<Shared>, uri: Uri) -> StatusCode {
    let mut p = peer.lock().expect("peer");
    p.calls
        .entry(uri.path().to_owned())
        .or_default()
        .push(Instant::now());
    match uri.path() {
        "/flaky" if !p.flaky_recovered => StatusCode::SERVICE_UNAVAILABLE,
        "/gone" => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

fn calls(peer: &Shared, path: &str) -> usize {
    peer.lock()
        .expect("peer")
        .calls
        .get(path)
        .map_or(0, Vec::len)
}

fn header(m: &rdkafka::message::OwnedMessage, name: &str) -> String {
    testkit::header(m, name).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_channels_retry_then_dead_letter_and_a_replay_sends_only_what_is_missing() {
    let bed = common::bed("notify_fail").await;
    let b = bed.bootstrap.clone();
    let codec = bed.codec.clone();
    let schema = &bed.schema;
    let dir = &bed.dir;

    let peer: Shared = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http = format!("http://{}", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route("/{*path}", post(hook))
        .with_state(peer.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    // Refuses the first two messages with 451: the third attempt gets through.
    let smtp = SmtpSink::start_refusing(2).await.expect("smtp sink");

    let env = Env::new(&bed, smtp.url(), dir.path());
    let log = || std::fs::read_to_string(&env.log).unwrap_or_default();

    use ChannelKind::{Email, Webhook};
    let op = envelope::payload::config::ConfigOp::Upsert;
    for c in [
        channel("ok", Webhook, &format!("{http}/ok"), None, None, true),
        channel("flaky", Webhook, &format!("{http}/flaky"), None, None, true),
        channel("gone", Webhook, &format!("{http}/gone"), None, None, true),
        channel(
            "limited",
            Webhook,
            &format!("{http}/limited"),
            None,
            Some(60),
            true,
        ),
        channel("mail", Email, "ops@example.test", None, None, true),
    ] {
        bed.produce(&config(ORG, 1, op, c)).await;
    }
    let _sender = spawn_sender(&env, &[("NOTIFY_CHANNEL_ATTEMPTS", "3")]);
    let admin = schema.admin();
    let s = schema.name().to_owned();
    wait_until(Duration::from_secs(90), "channels stored", || async {
        schema.count("notify_channels").await == Some(5)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", log()));

    let x = alert(ORG, 1, &["ok", "mail", "flaky"]);
    let y = alert(ORG, 2, &["gone"]);
    let limited: Vec<Event<Alert>> = (3..6).map(|n| alert(ORG, n, &["limited"])).collect();
    for a in [&x, &y].into_iter().chain(&limited) {
        bed.produce(a).await;
    }

    // Both failing alerts reach the DLQ, with the failed channel, its last error and the
    // attempts made; the healthy channels of `x` were delivered first.
    let dead = read_records(
        &b,
        &Topic::RulesAlertsTriggered.dlq(),
        2,
        Duration::from_secs(90),
    )
    .expect("dlq");
    assert_eq!(dead.len(), 2, "two dead letters; log:\n{}", log());
    let mut by_alert: BTreeMap<String, (String, String, Vec<u8>)> = BTreeMap::new();
    for m in &dead {
        let e: Event<Alert> = codec
            .decode(m.payload().unwrap_or_default())
            .await
            .expect("the original bytes");
        by_alert.insert(
            e.payload.alert_id.to_string(),
            (
                header(m, runtime::dlq::headers::ERROR_CODE),
                header(m, runtime::dlq::headers::ERROR_MESSAGE),
                m.payload().unwrap_or_default().to_vec(),
            ),
        );
    }
    let (code, message, x_bytes) = by_alert[&x.payload.alert_id.to_string()].clone();
    assert_eq!(code, "NOTIFY_CHANNEL_FAILED");
    assert_eq!(
        message,
        "flaky (webhook): NOTIFY_HTTP_STATUS: HTTP status 503 after 3 attempts"
    );
    let (code, message, _) = &by_alert[&y.payload.alert_id.to_string()];
    assert_eq!(code, "NOTIFY_CHANNEL_FAILED");
    assert_eq!(
        message,
        "gone (webhook): NOTIFY_HTTP_STATUS: HTTP status 404 after 1 attempt"
    );
    assert_eq!(calls(&peer, "/flaky"), 3, "3 attempts at a 503");
    assert_eq!(calls(&peer, "/gone"), 1, "a 404 is not retried");
    assert_eq!(calls(&peer, "/ok"), 1);
    assert_eq!(
        smtp.messages().len(),
        1,
        "delivered on the third SMTP attempt"
    );
    let failed = admin
        .query_one(
            &format!(
                "SELECT status, attempts, last_error FROM {s}.notify_deliveries \
                 WHERE channel_id = 'flaky'"
            ),
            &[],
        )
        .await
        .expect("flaky's delivery");
    assert_eq!(
        (
            failed.get::<_, String>(0),
            failed.get::<_, i32>(1),
            failed.get::<_, String>(2)
        ),
        (
            "failed".to_owned(),
            3,
            "NOTIFY_HTTP_STATUS: HTTP status 503".to_owned()
        )
    );

    // The webhook recovers; replaying x's dead letter sends only the missing channel.
    peer.lock().expect("peer").flaky_recovered = true;
    let partition = topics::partition_for(
        topics::PartitionKey::Org(ORG),
        Topic::RulesAlertsTriggered.spec().partitions,
    );
    bed.producer
        .send(
            FutureRecord::to(Topic::RulesAlertsTriggered.name())
                .partition(partition)
                .key(&ORG.to_string())
                .payload(&x_bytes),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("replayed");
    let partitions = i32::try_from(Topic::RulesAlertsTriggered.spec().partitions).expect("p");
    let ends = end_offsets(&b, Topic::RulesAlertsTriggered.name(), partitions).expect("ends");
    wait_until(
        Duration::from_secs(60),
        "the replay delivered and everything committed",
        || {
            let (b, ends) = (b.clone(), ends.clone());
            let flaky = calls(&peer, "/flaky");
            async move {
                flaky == 4
                    && committed_offsets(
                        &b,
                        "notification-sender",
                        Topic::RulesAlertsTriggered.name(),
                        partitions,
                    )
                    .is_ok_and(|c| c.iter().map(|o| (*o).max(0)).collect::<Vec<_>>() == ends)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", log()));
    assert_eq!(calls(&peer, "/ok"), 1, "not sent again by the replay");
    assert_eq!(smtp.messages().len(), 1, "not sent again by the replay");
    let sent = admin
        .query_one(
            &format!(
                "SELECT status, attempts FROM {s}.notify_deliveries WHERE channel_id = 'flaky'"
            ),
            &[],
        )
        .await
        .expect("flaky's delivery");
    assert_eq!(
        (sent.get::<_, String>(0), sent.get::<_, i32>(1)),
        ("sent".to_owned(), 4)
    );

    // 60 a minute: a burst of one, then one a second — every alert delivered, none dropped.
    let times = peer.lock().expect("peer").calls["/limited"].clone();
    assert_eq!(times.len(), limited.len());
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(900), "{gap:?} between calls");
    }
    assert!(!log().contains("example.test"), "no address in the logs");
    bed.schema.drop().await;
}
