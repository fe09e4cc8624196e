//! The `silver` binary against Tansu's durable (sqlite) build, the broker a restart does not
//! empty: the broker SIGKILLed and restarted mid-stream, a broker that requires a SCRAM
//! login, and one that takes SCRAM logins over TLS only (through `testkit::TlsFront`). Needs `scripts/install-tansu.sh --durable` (several minutes), so it runs in
//! `make test-durable`, not in `make test`.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use envelope::{Event, Id, payload::silver::ProcessedRow};
use rdkafka::{Message as _, producer::FutureProducer};
use runtime::metrics::{DEAD_LETTERED, DEDUPLICATED, MESSAGES_IN, PROCESSED};
use testbed::TestBed;
use testkit::{
    Broker, Paced, PacedStream, Sent, StageProcess, Storage, client_config, committed_offsets,
    counter, read_records, read_records_with, wait_until,
};
use topics::{PartitionKey, Topic, partition_for};

const TOPICS: &[Topic] = &[
    Topic::BronzeDataCleaned,
    Topic::SilverDataProcessed,
    Topic::AuditEvents,
    Topic::EtlExecution,
];
/// One input every this often (200 a second).
const PACE: Duration = Duration::from_millis(5);
/// Inputs processed before the broker is killed (mid-stream: the producer is still going).
const DOWN_AFTER: f64 = 300.0;
/// How long the broker stays down: longer than the consumer's session timeout (6 s).
const OUTAGE: Duration = Duration::from_secs(8);
/// Inputs produced after the broker is back, before the producer stops.
const AFTER: usize = 300;
/// The SCRAM user of the login test and its password (never to appear in a log).
const USER: &str = "silver-processor";
const PASSWORD: &str = "scram-pw-5d1c07";
const WRONG_PASSWORD: &str = "not-the-pw-88e2";

fn durable_broker() -> Broker {
    Broker::start(Storage::Durable("sqlite://tansu.db".into())).expect(
        "the durable broker (scripts/install-tansu.sh --durable; make test-durable runs it)",
    )
}

/// The silver binary on `bed` with `extra` settings, logging to `log` in the bed's directory.
fn spawn_silver(bed: &TestBed, extra: &[(&'static str, String)], log: &str) -> StageProcess {
    let mut env = bed.stage_env();
    env.extend_from_slice(extra);
    StageProcess::spawn(
        env!("CARGO_BIN_EXE_silver"),
        &env,
        &bed.dir.path().join(log),
    )
    .expect("silver starts")
}

/// A counter of the stage whose metrics are on `port` (0 while it does not answer).
async fn metric(port: u16, name: &'static str) -> f64 {
    counter(port, name).await.unwrap_or(0.0)
}

/// Every record of `topic` on `bed` so far (read from the start for `within`).
fn everything(bed: &TestBed, topic: &str, within: Duration) -> Vec<rdkafka::message::OwnedMessage> {
    read_records(&bed.bootstrap, topic, usize::MAX, within).expect("the broker answers")
}

/// The input event ids each of `records` (silver rows) was made from.
async fn causes(bed: &TestBed, records: &[rdkafka::message::OwnedMessage]) -> Vec<(Id, Id)> {
    let mut out = Vec::new();
    for m in records {
        let e: Event<ProcessedRow> = bed
            .codec
            .decode(m.payload().unwrap_or_default())
            .await
            .expect("silver rows decode");
        let cause = e
            .metadata
            .causation_id
            .expect("a silver row names its input");
        out.push((cause, e.metadata.event_id));
    }
    out
}

/// A bed on the durable broker holding 500 bronze rows and the SCRAM user, and the rows'
/// event ids. Both go in before the broker requires a login (the bed's producer has none):
/// Tansu takes a user only from a broker that does not require logins yet, and keeps it
/// across a restart in its durable storage.
async fn backlog_and_user(name: &str) -> (TestBed, BTreeSet<Id>) {
    let bed = TestBed::start_on(durable_broker(), name, TOPICS)
        .await
        .expect("test bed");
    let events: Vec<_> = (0..500).map(common::cleaned).collect();
    bed.fill(&events).await;
    bed.broker
        .create_user(USER, PASSWORD)
        .expect("user created");
    (bed, events.iter().map(|e| e.metadata.event_id).collect())
}

/// A plain client without a login (`who`) reads no record of the waiting backlog from the
/// broker as it now is.
fn reads_nothing(bed: &TestBed, who: &str) {
    let read = read_records(
        &bed.bootstrap,
        Topic::BronzeDataCleaned.name(),
        1,
        Duration::from_secs(5),
    );
    assert!(
        read.as_ref().map_or(true, Vec::is_empty),
        "{who} read {} records",
        read.map_or(0, |r| r.len())
    );
}

/// Silver's settings to log in as the SCRAM-SHA-512 user with `password` over `protocol`
/// (`sasl_plaintext` or `sasl_ssl`).
fn scram(protocol: &str, password: &str) -> Vec<(&'static str, String)> {
    vec![
        ("KAFKA_SECURITY_PROTOCOL", protocol.to_owned()),
        ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512".to_owned()),
        ("KAFKA_SASL_USERNAME", USER.to_owned()),
        ("KAFKA_SASL_PASSWORD", password.to_owned()),
    ]
}

/// The log of `silver`, which must stop by itself within 60 s with exit 1 (a fault no retry
/// can fix).
async fn stops_at_once(mut silver: StageProcess) -> String {
    let Some(status) = silver.wait_exit(Duration::from_secs(60)).await else {
        panic!("silver still runs after 60 s:\n{}", silver.log());
    };
    let log = silver.log();
    assert_eq!(status.code(), Some(1), "{log}");
    log
}

/// `silver` processes the backlog of `inputs` waiting on `bed`, and each input's silver row
/// is there for a client of the broker as it now is (logged in, over TLS).
async fn processes_the_backlog(bed: &TestBed, silver: &StageProcess, inputs: &BTreeSet<Id>) {
    let (port, n) = (silver.metrics_port(), inputs.len());
    wait_until(
        Duration::from_secs(90),
        "silver processing the backlog",
        || async move { metric(port, PROCESSED).await >= n as f64 },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}:\n{}", silver.log()));
    let rows = read_records_with(
        bed.broker.client_config(),
        Topic::SilverDataProcessed.name(),
        n,
        Duration::from_secs(30),
    )
    .expect("a reader of the broker");
    let seen: BTreeSet<Id> = causes(bed, &rows)
        .await
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(&seen, inputs, "one silver row per input");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the durable Tansu build; run with `make test-durable`"]
async fn silver_rides_out_a_broker_kill_and_restart_mid_stream() {
    let mut bed = TestBed::start_on(durable_broker(), "silver_restart", TOPICS)
        .await
        .expect("test bed");
    let mut silver = spawn_silver(&bed, &[], "silver.log");
    let port = silver.metrics_port();

    // Idempotent and patient: a send queued while the broker is down is retried by
    // librdkafka until it is back.
    let producer: FutureProducer = client_config(&bed.bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "120000")
        .create()
        .expect("producer");
    let codec = bed.codec.clone();
    let partitions = Topic::BronzeDataCleaned.spec().partitions;
    let stream = PacedStream::start(producer, PACE, move |i| {
        let e = common::cleaned(i);
        let record = Paced {
            topic: Topic::BronzeDataCleaned.name().to_owned(),
            partition: partition_for(PartitionKey::Org(e.metadata.org_id), partitions),
            key: e.record_key(),
            value: codec.encode(&e).expect("encode"),
        };
        (e.metadata.event_id, record)
    });

    wait_until(
        Duration::from_secs(60),
        "silver processing the stream",
        || async move { metric(port, PROCESSED).await >= DOWN_AFTER },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}:\n{}", silver.log()));
    assert!(!stream.is_finished(), "the broker goes down mid-stream");

    // The fault: SIGKILL, down for OUTAGE, started again on the same port and storage.
    let down_at = Instant::now();
    tokio::task::block_in_place(|| bed.broker.restart_after(OUTAGE)).expect("the broker restarts");
    let up_at = Instant::now();
    assert!(
        silver.exited().is_none(),
        "silver keeps running while the broker is down:\n{}",
        silver.log()
    );

    let sent = stream
        .finish_after(AFTER, Duration::from_secs(60), Duration::from_secs(150))
        .await;
    let during: Vec<&Sent<Id>> = sent
        .iter()
        .filter(|s| s.queued >= down_at && s.queued < up_at)
        .collect();
    assert!(
        during.len() >= 100 && during.iter().all(|s| s.acked >= up_at),
        "{} inputs sent while the broker was down, each acknowledged only after the restart",
        during.len()
    );
    let inputs: BTreeSet<Id> = sent.iter().map(|s| s.id).collect();
    let n = inputs.len();
    assert_eq!(n, sent.len());

    // Every input turns into its silver row; copies can only repeat a row (same event id).
    wait_until(
        Duration::from_secs(120),
        "every input processed",
        || async move { metric(port, PROCESSED).await >= n as f64 },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}:\n{}", silver.log()));
    // Each read joins a group of its own first, seconds on a busy machine: 10 s a read.
    let deadline = Instant::now() + Duration::from_secs(120);
    let rows = loop {
        let records = everything(
            &bed,
            Topic::SilverDataProcessed.name(),
            Duration::from_secs(10),
        );
        let rows = causes(&bed, &records).await;
        let seen: BTreeSet<Id> = rows.iter().map(|(cause, _)| *cause).collect();
        if seen == inputs {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} inputs have their silver row after 120 s:\n{}",
            seen.intersection(&inputs).count(),
            silver.log()
        );
    };
    let by_input: BTreeMap<Id, BTreeSet<Id>> =
        rows.iter().fold(BTreeMap::new(), |mut m, (c, e)| {
            m.entry(*c).or_default().insert(*e);
            m
        });
    assert!(
        by_input.values().all(|ids| ids.len() == 1),
        "a redelivered input makes the same silver row again (same event id), never another"
    );

    // The dedupe counters explain every redelivery: each record consumed was processed or
    // skipped as already done; none dead-lettered.
    let (seen, processed, skipped, dead) = (
        metric(port, MESSAGES_IN).await,
        metric(port, PROCESSED).await,
        metric(port, DEDUPLICATED).await,
        metric(port, DEAD_LETTERED).await,
    );
    assert_eq!(dead, 0.0, "nothing dead-lettered");
    assert_eq!(
        seen,
        processed + skipped,
        "consumed = processed + skipped as duplicates"
    );
    assert!(
        everything(
            &bed,
            &Topic::BronzeDataCleaned.dlq(),
            Duration::from_secs(2)
        )
        .is_empty()
    );
    assert!(
        silver.exited().is_none(),
        "silver never exited:\n{}",
        silver.log()
    );

    // Offsets: once silver stops cleanly, its group's commit covers every input record.
    let status = silver
        .terminate(Duration::from_secs(30))
        .await
        .expect("silver stops on SIGTERM");
    assert_eq!(status.code(), Some(0), "a clean exit:\n{}", silver.log());
    let mut next = vec![0i64; partitions as usize];
    for m in everything(
        &bed,
        Topic::BronzeDataCleaned.name(),
        Duration::from_secs(10),
    ) {
        let p = m.partition() as usize;
        next[p] = next[p].max(m.offset() + 1);
    }
    let committed: Vec<i64> = committed_offsets(
        &bed.bootstrap,
        "silver-processor",
        Topic::BronzeDataCleaned.name(),
        partitions as i32,
    )
    .expect("committed offsets")
    .into_iter()
    .map(|o| o.max(0))
    .collect();
    assert_eq!(
        committed, next,
        "every input's offset committed after the restart"
    );
    eprintln!(
        "broker down {:.1} s; {n} inputs ({} sent while down), {} silver records for them; \
         consumed {seen}, processed {processed}, skipped as duplicates {skipped}",
        (up_at - down_at).as_secs_f64(),
        during.len(),
        rows.len()
    );
    bed.schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the durable Tansu build; run with `make test-durable`"]
async fn silver_logs_in_with_scram_and_a_wrong_password_stops_it_with_a_clear_error() {
    let (mut bed, inputs) = backlog_and_user("silver_sasl").await;
    tokio::task::block_in_place(|| bed.broker.require_login(USER, PASSWORD))
        .expect("the broker restarts requiring a login");

    // Without a login the broker serves nothing (the login test is not vacuous).
    reads_nothing(&bed, "a client without a login");
    let login = |password: &str| scram("sasl_plaintext", password);

    // A wrong password: no retry can help, so silver stops at once and says why.
    let started = Instant::now();
    let log = stops_at_once(spawn_silver(&bed, &login(WRONG_PASSWORD), "wrong.log")).await;
    assert!(
        log.contains(&format!(
            "fatal: silver-processor stopped: the Kafka broker refused the login of {USER} \
             (SCRAM-SHA-512 over sasl_plaintext)"
        )),
        "{log}"
    );
    for secret in [WRONG_PASSWORD, PASSWORD] {
        assert!(!log.contains(secret), "a password in silver's log:\n{log}");
    }
    eprintln!(
        "a wrong password stopped silver in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The right password: the backlog is processed and its rows written.
    let silver = spawn_silver(&bed, &login(PASSWORD), "silver.log");
    processes_the_backlog(&bed, &silver, &inputs).await;
    let log = silver.log();
    assert!(
        !log.contains(PASSWORD),
        "the password in silver's log:\n{log}"
    );
    bed.schema.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the durable Tansu build; run with `make test-durable`"]
async fn silver_logs_in_with_scram_over_tls_and_stops_on_a_certificate_it_cannot_verify() {
    // Then the broker restarts as a Strimzi listener on 9093 is: SCRAM logins over TLS only,
    // with a certificate made for this run.
    let (mut bed, inputs) = backlog_and_user("silver_tls").await;
    tokio::task::block_in_place(|| {
        bed.broker.require_login(USER, PASSWORD)?;
        bed.broker.serve_tls()
    })
    .expect("the broker restarts requiring a login over TLS");
    bed.bootstrap = bed.broker.bootstrap();
    let front = || bed.broker.tls().expect("a TLS front");
    // A plaintext client gets nothing (the test is not vacuous).
    reads_nothing(&bed, "a plaintext client");
    assert!(
        front().refused() > 0,
        "the plaintext client was turned away"
    );
    let tls = |ca: Option<String>| {
        let mut env = scram("sasl_ssl", PASSWORD);
        env.extend(ca.map(|ca| ("KAFKA_SSL_CA_LOCATION", ca)));
        env
    };
    // The right login, but the broker's certificate not trusted (the system's CAs do not
    // know it): no retry can help, so silver stops at once and says what to check.
    let refused_before = front().refused();
    let log = stops_at_once(spawn_silver(&bed, &tls(None), "untrusted.log")).await;
    assert!(
        log.contains(
            "fatal: silver-processor stopped: the TLS handshake with the Kafka broker failed \
             over sasl_ssl"
        ) && log.contains("certificate verify failed")
            && log.contains("check KAFKA_SSL_CA_LOCATION"),
        "{log}"
    );
    assert!(front().refused() > refused_before, "its handshakes failed");
    // Trusting it: the backlog is processed and its rows written, all over TLS.
    let handshakes_before = front().handshakes();
    let ca = front().ca_location().display().to_string();
    let mut silver = spawn_silver(&bed, &tls(Some(ca)), "silver.log");
    processes_the_backlog(&bed, &silver, &inputs).await;
    assert!(
        !silver.log().contains(PASSWORD),
        "the password in silver's log"
    );
    assert!(
        front().handshakes() > handshakes_before,
        "silver's connections went through TLS"
    );
    let status = silver
        .terminate(Duration::from_secs(30))
        .await
        .expect("silver stops on SIGTERM");
    assert_eq!(status.code(), Some(0), "a clean exit:\n{}", silver.log());
    bed.schema.drop().await;
}
