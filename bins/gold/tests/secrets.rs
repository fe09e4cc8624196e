//! Secrets never reach a stage's log: the `gold` binary runs with a PostgreSQL URL, a Redis
//! URL, schema registry credentials and a Kafka SASL password — working, wrong and
//! unreachable — at debug level, and none of the secrets appears in what it logs, on the
//! happy path or in its fatal errors, nor in its `--help` (which shows the environment).

use std::time::Duration;

use chrono::Utc;
use envelope::{Date, Money};
use testbed::TestBed;
use testkit::{
    RedisServer, StageProcess, counter_total, free_port,
    secrets::{
        PG_PASSWORD, REDIS_PASSWORD, REGISTRY_PASSWORD, SASL_PASSWORD, URL_REGISTRY_PASSWORD,
        WRONG_REDIS_PASSWORD, assert_no_secret,
    },
    wait_until,
};
use topics::Topic;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_log_on_success_or_failure() {
    let bed = TestBed::start(
        "gold_secrets",
        &[
            Topic::SilverDataProcessed,
            Topic::ConfigChanges,
            Topic::GoldDataReady,
            Topic::AuditEvents,
        ],
    )
    .await
    .expect("test bed");
    let redis = RedisServer::start_with_password(REDIS_PASSWORD)
        .await
        .expect("redis up");
    // PostgreSQL trusts local connections, so the password is sent and ignored; the
    // registry ignores basic auth. Both still reach the clients that could log them.
    let base_env = || {
        let mut env = bed.stage_env();
        env.push((
            "GOLD_DATABASE_URL",
            format!("{} password={PG_PASSWORD}", bed.schema.url()),
        ));
        env.push(("SCHEMA_REGISTRY_USERNAME", "adpipe".to_owned()));
        env.push(("SCHEMA_REGISTRY_PASSWORD", REGISTRY_PASSWORD.to_owned()));
        env.push(("GOLD_FLUSH_INTERVAL_SECS", "0".to_owned()));
        env.push(("RUST_LOG", "debug".to_owned()));
        env
    };
    let log_of = |name: &str| bed.dir.path().join(format!("{name}.log"));

    // 0. `gold --help` (run in a pod by hand, say) shows which variables are set, not their
    //    values: every variable that can carry a secret hides it.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_gold"))
        .arg("--help")
        .envs(base_env())
        .env("REDIS_URL", redis.url(REDIS_PASSWORD))
        .env(
            "SCHEMA_REGISTRY_URL",
            format!("http://adpipe:{URL_REGISTRY_PASSWORD}@127.0.0.1:1"),
        )
        .env("KAFKA_SASL_PASSWORD", SASL_PASSWORD)
        .env("KAFKA_SSL_KEY_PASSWORD", SASL_PASSWORD)
        .output()
        .expect("gold --help");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    assert!(help.contains("GOLD_DATABASE_URL"), "{help}");
    assert_no_secret(&help, "--help");

    // 1. Everything right: gold processes rows with Redis dedupe behind a password.
    let mut env = base_env();
    env.push(("REDIS_URL", redis.url(REDIS_PASSWORD)));
    let gold =
        StageProcess::spawn(env!("CARGO_BIN_EXE_gold"), &env, &log_of("ok")).expect("gold starts");
    let today = Date(Utc::now().date_naive());
    for i in 0..5 {
        let row = gold::fixtures::delivery_row(
            1,
            "c1",
            &format!("e{i}"),
            today,
            1_000,
            Money::from_unscaled(300).expect("money"),
        );
        bed.produce(&row).await;
    }
    let port = gold.metrics_port();
    wait_until(Duration::from_secs(90), "gold to process the rows", || {
        let done = counter_total(port, runtime::metrics::PROCESSED).is_some_and(|n| n >= 5.0);
        async move { done }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}:\n{}", gold.log()));
    let log = gold.log();
    drop(gold);
    assert!(log.contains("stage consuming"), "{log}");
    assert_no_secret(&log, "working settings");

    // 2. A wrong Redis password: a fatal error that names the cause, not the password.
    let mut env = base_env();
    env.push(("REDIS_URL", redis.url(WRONG_REDIS_PASSWORD)));
    let mut gold = StageProcess::spawn(env!("CARGO_BIN_EXE_gold"), &env, &log_of("redis"))
        .expect("gold starts");
    let status = gold.wait_exit(Duration::from_secs(60)).await;
    let log = gold.log();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    assert!(log.contains("fatal"), "{log}");
    assert_no_secret(&log, "wrong Redis password");

    // 3. Registry credentials in an unreachable registry URL: the fatal error names the
    //    registry without them.
    let mut env = base_env();
    let dead = free_port().expect("port");
    env.retain(|(k, _)| *k != "SCHEMA_REGISTRY_URL" && !k.starts_with("SCHEMA_REGISTRY_"));
    env.push((
        "SCHEMA_REGISTRY_URL",
        format!("http://adpipe:{URL_REGISTRY_PASSWORD}@127.0.0.1:{dead}"),
    ));
    let mut gold = StageProcess::spawn(env!("CARGO_BIN_EXE_gold"), &env, &log_of("registry"))
        .expect("gold starts");
    let status = gold.wait_exit(Duration::from_secs(90)).await;
    let log = gold.log();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    assert!(log.contains(&format!("127.0.0.1:{dead}")), "{log}");
    assert_no_secret(&log, "credentials in the registry URL");

    // 4. SASL against a broker that does not take it: the broker refuses the login, and
    //    no retry can fix that, so gold stops at once and says whose login failed; the
    //    password is in no line.
    let mut env = base_env();
    env.push(("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext".to_owned()));
    env.push(("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512".to_owned()));
    env.push(("KAFKA_SASL_USERNAME", "gold-processor".to_owned()));
    env.push(("KAFKA_SASL_PASSWORD", SASL_PASSWORD.to_owned()));
    let mut gold = StageProcess::spawn(env!("CARGO_BIN_EXE_gold"), &env, &log_of("sasl"))
        .expect("gold starts");
    let status = gold.wait_exit(Duration::from_secs(60)).await;
    let log = gold.log();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    assert!(
        log.contains("the Kafka broker refused the login of gold-processor (SCRAM-SHA-512 over sasl_plaintext)"),
        "{log}"
    );
    assert_no_secret(&log, "SASL");
    bed.schema.drop().await;
}
