//! Secrets never reach what an adpipe binary prints — every binary but gold, which
//! `bins/gold/tests/secrets.rs` covers the same way: bronze, silver, the rule evaluator, the
//! notification sender, the audit writer, the connector, the schema registry and
//! `pipelinectl`, at `RUST_LOG=debug`, with a PostgreSQL password in their database URLs,
//! Redis behind `--requirepass`, schema registry credentials (in the URL, as a user and
//! password, as basic auth), a SASL password, a TLS key password and an SMTP login.
//!
//! - `--help` (every `pipelinectl` command's too) shows which variables are set, never their
//!   values: each secret-bearing variable is listed without one.
//! - Wrong or unreachable settings carrying a secret stop the binary with an error naming
//!   the cause (the registry's or broker's address, the refused login, the unreachable
//!   store), and no secret.
//! - With working settings the stages process records (the connector's simulated rows
//!   through bronze and silver, gold aggregates into alerts, alerts into an in-app inbox and
//!   a failing e-mail channel, audit events into the store), and no secret is in their logs,
//!   nor the e-mail channel's address (PII), though PostgreSQL statements carry it.
//!
//! The binaries are the debug builds in the target directory, built first as
//! `scripts/platform.sh` builds them (nothing to do when they are fresh).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use envelope::payload::config::{ChannelDefinition, ChannelKind, ConfigItem};
use rule_evaluator::fixtures::{DAY, daily, pacing};
use runtime::metrics::{DEAD_LETTERED, PROCESSED};
use testbed::{TestBed, config_event};
use testkit::{
    RedisServer, StageProcess, counter_total, free_port, repo_root,
    secrets::{
        BASIC_AUTH_PASSWORD, PG_PASSWORD, REDIS_PASSWORD, REGISTRY_PASSWORD, SASL_PASSWORD,
        SECRETS, SMTP_PASSWORD, SSL_KEY_PASSWORD, URL_REGISTRY_PASSWORD, WRONG_REDIS_PASSWORD,
        assert_no_secret,
    },
    wait_until,
};
use topics::Topic;

/// An e-mail channel's target: PII, never logged (not a secret: it is stored and sent).
const MAIL_TARGET: &str = "ops@adpipe.invalid";

/// The stage binaries on the runtime, each with its state store's variable.
const STAGES: [(&str, Option<&str>); 5] = [
    ("bronze", None),
    ("silver", None),
    ("rule-evaluator", Some("RULES_DATABASE_URL")),
    ("notification-sender", Some("NOTIFY_DATABASE_URL")),
    ("audit-writer", Some("AUDIT_DATABASE_URL")),
];

/// The debug build of `name`, fresh: the first call runs `cargo build` for every binary.
fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        // The builds `scripts/platform.sh` runs (gold included), so they share its artifacts.
        let stages: Vec<&str> = std::iter::once("connector")
            .chain(testbed::STAGE_BINARIES)
            .collect();
        for set in [&["schema-registry", "pipelinectl"][..], &stages] {
            let status = Command::new(&cargo)
                .current_dir(repo_root())
                .args(["build", "--quiet"])
                .args(set.iter().flat_map(|b| ["--bin", b]))
                .status()
                .expect("cargo runs");
            assert!(status.success(), "cargo build of {set:?} failed");
        }
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), |d| repo_root().join(d));
    target.join("debug").join(name)
}

/// Whether a variable's name says it can carry a secret (a URL with credentials, a password,
/// basic auth, a token).
fn secret_bearing(var: &str) -> bool {
    var.ends_with("_URL")
        || var.contains("PASSWORD")
        || var.ends_with("_AUTH")
        || var.contains("TOKEN")
}

/// Every secret-bearing variable of every binary, set to a value with a secret in it.
fn every_secret_set() -> Vec<(&'static str, String)> {
    let database = format!("postgres://postgres:{PG_PASSWORD}@127.0.0.1:1/postgres");
    let mut env = vec![
        (
            "SCHEMA_REGISTRY_URL",
            format!("http://adpipe:{URL_REGISTRY_PASSWORD}@127.0.0.1:1"),
        ),
        ("SCHEMA_REGISTRY_USERNAME", "adpipe".to_owned()),
        ("SCHEMA_REGISTRY_PASSWORD", REGISTRY_PASSWORD.to_owned()),
        (
            "SCHEMA_REGISTRY_BASIC_AUTH",
            format!("adpipe:{BASIC_AUTH_PASSWORD}"),
        ),
        (
            "REDIS_URL",
            format!("redis://:{REDIS_PASSWORD}@127.0.0.1:1"),
        ),
        ("KAFKA_SASL_USERNAME", "adpipe".to_owned()),
        ("KAFKA_SASL_PASSWORD", SASL_PASSWORD.to_owned()),
        ("KAFKA_SSL_KEY_PASSWORD", SSL_KEY_PASSWORD.to_owned()),
        (
            "NOTIFY_SMTP_URL",
            format!("smtp://alerts:{SMTP_PASSWORD}@127.0.0.1:1"),
        ),
    ];
    for var in [
        "GOLD_DATABASE_URL",
        "RULES_DATABASE_URL",
        "NOTIFY_DATABASE_URL",
        "AUDIT_DATABASE_URL",
        "SCHEMA_REGISTRY_DATABASE_URL",
    ] {
        env.push((var, database.clone()));
    }
    env
}

/// `<bin> <command…> --help` with every secret set: it succeeds, lists each of `hidden` as
/// `[env: VAR]` (set, value hidden), shows the value of no secret-bearing variable, and no
/// secret. Returns the help.
fn check_help(bin: &Path, command: &[String], hidden: &[&str]) -> String {
    let what = format!(
        "{} {}--help",
        bin.file_name().unwrap_or_default().to_string_lossy(),
        command.iter().map(|c| format!("{c} ")).collect::<String>()
    );
    let out = Command::new(bin)
        .args(command)
        .arg("--help")
        .env_clear()
        .envs(every_secret_set())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let help =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what}: {}\n{help}", out.status);
    let flat = one_line(&help);
    for var in hidden {
        assert!(
            flat.contains(&format!("[env: {var}]")),
            "{what} does not list {var} with its value hidden:\n{help}"
        );
    }
    for shown in flat.split("[env: ").skip(1) {
        let var = shown.split([']', '=']).next().unwrap_or_default();
        assert!(
            !(secret_bearing(var) && shown.starts_with(&format!("{var}="))),
            "{what} shows the value of {var}:\n{help}"
        );
    }
    assert_no_secret(&help, &what);
    help
}

/// `text` with each run of whitespace made one space: short help wraps `[env: VAR]`.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The subcommands a help text lists under `Commands:` (but `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn help_lists_every_secret_variable_without_its_value() {
    let runtime = [
        "SCHEMA_REGISTRY_URL",
        "SCHEMA_REGISTRY_PASSWORD",
        "REDIS_URL",
        "KAFKA_SASL_PASSWORD",
        "KAFKA_SSL_KEY_PASSWORD",
    ];
    for (stage, database) in STAGES {
        let mut hidden = runtime.to_vec();
        hidden.extend(database);
        if stage == "notification-sender" {
            hidden.push("NOTIFY_SMTP_URL");
        }
        check_help(&bin(stage), &[], &hidden);
    }
    check_help(
        &bin("connector"),
        &[],
        &[
            "SCHEMA_REGISTRY_URL",
            "SCHEMA_REGISTRY_PASSWORD",
            "KAFKA_SASL_PASSWORD",
            "KAFKA_SSL_KEY_PASSWORD",
        ],
    );
    check_help(
        &bin("schema-registry"),
        &[],
        &["SCHEMA_REGISTRY_DATABASE_URL", "SCHEMA_REGISTRY_BASIC_AUTH"],
    );
    // Every pipelinectl command, found through the help itself; the global settings show
    // in each, the audit store's in `audit`'s.
    let global = [
        "SCHEMA_REGISTRY_URL",
        "SCHEMA_REGISTRY_BASIC_AUTH",
        "KAFKA_SASL_PASSWORD",
        "KAFKA_SSL_KEY_PASSWORD",
    ];
    let ctl = bin("pipelinectl");
    let (mut pending, mut checked, mut audit_store) = (vec![Vec::new()], 0, false);
    while let Some(command) = pending.pop() {
        let help = check_help(&ctl, &command, &global);
        checked += 1;
        if command == ["audit"] {
            audit_store = one_line(&help).contains("[env: AUDIT_DATABASE_URL]");
        }
        for sub in subcommands(&help) {
            let mut next = command.clone();
            next.push(sub);
            pending.push(next);
        }
    }
    assert!(checked > 20, "only {checked} pipelinectl commands found");
    assert!(
        audit_store,
        "`pipelinectl audit --help` does not list AUDIT_DATABASE_URL hidden"
    );
    println!("--help of 5 stages, connector, schema-registry and {checked} pipelinectl commands");
}

/// A binary run that must fail: what it is, how it exits, what its output must say.
struct Fatal {
    what: String,
    bin: &'static str,
    args: Vec<&'static str>,
    env: Vec<(&'static str, String)>,
    code: i32,
    says: Vec<String>,
}

/// Run `case` to its end (60 s at most) with nothing but its environment (and `PATH`);
/// `Err` says how it went wrong.
async fn run_fatal(case: Fatal) -> Result<String, String> {
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(bin(case.bin));
    cmd.args(&case.args)
        .current_dir(repo_root())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(case.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let what = &case.what;
    let out = match tokio::time::timeout(Duration::from_secs(60), cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("{what}: {e}")),
        Err(_) => return Err(format!("{what}: still running after 60 s")),
    };
    let output =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if let Some(secret) = SECRETS.iter().find(|s| output.contains(**s)) {
        return Err(format!(
            "{what}: the output shows the secret {secret}:\n{output}"
        ));
    }
    if out.status.code() != Some(case.code) {
        return Err(format!(
            "{what}: {} instead of exit code {}:\n{output}",
            out.status, case.code
        ));
    }
    if let Some(missing) = case.says.iter().find(|s| !output.contains(s.as_str())) {
        return Err(format!("{what}: the output lacks {missing:?}:\n{output}"));
    }
    let last = output.lines().last().unwrap_or_default();
    Ok(format!(
        "{what}: exit {} in {:.1} s: {last}",
        case.code,
        started.elapsed().as_secs_f64()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_errors_name_the_cause_and_no_secret() {
    bin("bronze");
    let bed = TestBed::start("secrets_fatal", &[Topic::AuditEvents])
        .await
        .expect("test bed");
    let redis = RedisServer::start_with_password(REDIS_PASSWORD)
        .await
        .expect("redis up");
    // Nothing listens there: unreachable registries, brokers and databases.
    let dead = free_port().expect("port");
    let dead_registry = format!("http://adpipe:{URL_REGISTRY_PASSWORD}@127.0.0.1:{dead}");
    let dead_database = format!("postgres://postgres:{PG_PASSWORD}@127.0.0.1:{dead}/postgres");
    let sasl = |user: &str| {
        vec![
            ("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext".to_owned()),
            ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512".to_owned()),
            ("KAFKA_SASL_USERNAME", user.to_owned()),
            ("KAFKA_SASL_PASSWORD", SASL_PASSWORD.to_owned()),
        ]
    };
    let refused = |user: &str| {
        format!("the Kafka broker refused the login of {user} (SCRAM-SHA-512 over sasl_plaintext)")
    };
    let with = |base: &[(&'static str, String)], set: Vec<(&'static str, String)>| {
        let mut env: Vec<_> = base
            .iter()
            .filter(|(k, _)| !set.iter().any(|(s, _)| s == k))
            .cloned()
            .collect();
        env.extend(set);
        env
    };
    let without_registry_login = |env: Vec<(&'static str, String)>| -> Vec<(&'static str, String)> {
        env.into_iter()
            .filter(|(k, _)| !k.starts_with("SCHEMA_REGISTRY_"))
            .collect()
    };

    let mut cases = Vec::new();
    for (stage, database) in STAGES {
        // Everything right but the one setting each case breaks; pretty logs, as an operator
        // at a terminal reads them.
        let mut base = bed.stage_env();
        base.extend([
            ("METRICS_LISTEN", "127.0.0.1:0".to_owned()),
            ("RUST_LOG", "debug".to_owned()),
            ("LOG_FORMAT", "pretty".to_owned()),
            ("SCHEMA_REGISTRY_USERNAME", "adpipe".to_owned()),
            ("SCHEMA_REGISTRY_PASSWORD", REGISTRY_PASSWORD.to_owned()),
            ("REDIS_URL", redis.url(REDIS_PASSWORD)),
            (
                "NOTIFY_SMTP_URL",
                format!("smtp://alerts:{SMTP_PASSWORD}@127.0.0.1:{dead}"),
            ),
        ]);
        if let Some(var) = database {
            base.push((var, format!("{} password={PG_PASSWORD}", bed.schema.url())));
        }
        // The audit writer registers no output schema at start (it produces dead letters
        // only): it meets the registry with its first record, not before.
        if stage != "audit-writer" {
            cases.push(Fatal {
                what: format!("{stage}: credentials in an unreachable registry URL"),
                bin: stage,
                args: vec![],
                env: with(
                    &without_registry_login(base.clone()),
                    vec![("SCHEMA_REGISTRY_URL", dead_registry.clone())],
                ),
                code: 1,
                says: vec![
                    format!("{stage}: fatal: registering the schema of"),
                    format!("at http://127.0.0.1:{dead}:"),
                ],
            });
        }
        let user = format!("{stage}-user");
        cases.push(Fatal {
            what: format!("{stage}: a SASL login the broker refuses"),
            bin: stage,
            args: vec![],
            env: with(&base, sasl(&user)),
            code: 1,
            says: vec![format!("{stage}: fatal:"), refused(&user)],
        });
        cases.push(Fatal {
            what: format!("{stage}: a wrong Redis password"),
            bin: stage,
            args: vec![],
            env: with(&base, vec![("REDIS_URL", redis.url(WRONG_REDIS_PASSWORD))]),
            code: 1,
            says: vec![format!(
                "{stage}: fatal: Redis refused the dedupe store's connection"
            )],
        });
        if let Some(var) = database {
            cases.push(Fatal {
                what: format!("{stage}: its database unreachable"),
                bin: stage,
                args: vec![],
                env: with(&base, vec![(var, dead_database.clone())]),
                code: 1,
                says: vec![format!(
                    "{stage}: fatal: starting {stage}: state store unavailable: error connecting to server"
                )],
            });
        }
        if stage == "notification-sender" {
            cases.push(Fatal {
                what: format!("{stage}: an SMTP URL it cannot use"),
                bin: stage,
                args: vec![],
                env: with(
                    &base,
                    vec![(
                        "NOTIFY_SMTP_URL",
                        format!("smtp://alerts:{SMTP_PASSWORD}@127.0.0.1:{dead}?tls=sometimes"),
                    )],
                ),
                code: 1,
                says: vec![format!(
                    "{stage}: fatal: --smtp-url is not a valid SMTP URL"
                )],
            });
        }
    }

    let connector = vec![
        ("KAFKA_BOOTSTRAP_SERVERS", bed.bootstrap.clone()),
        ("SCHEMA_REGISTRY_URL", bed.registry.clone()),
        ("SCHEMA_REGISTRY_USERNAME", "adpipe".to_owned()),
        ("SCHEMA_REGISTRY_PASSWORD", REGISTRY_PASSWORD.to_owned()),
        ("CONNECTOR_BROKER_WAIT_SECS", "3".to_owned()),
        ("SIM_ORGS", "1".to_owned()),
        ("SIM_DAYS", "1".to_owned()),
        ("RUST_LOG", "debug".to_owned()),
    ];
    cases.push(Fatal {
        what: "connector: credentials in an unreachable registry URL".to_owned(),
        bin: "connector",
        args: vec![],
        env: with(
            &without_registry_login(connector.clone()),
            vec![("SCHEMA_REGISTRY_URL", dead_registry.clone())],
        ),
        code: 1,
        says: vec![format!(
            "connector: fatal: registering the schema of connector.data.raw at http://127.0.0.1:{dead}:"
        )],
    });
    cases.push(Fatal {
        what: "connector: a SASL login the broker refuses".to_owned(),
        bin: "connector",
        args: vec![],
        env: with(&connector, sasl("connector-user")),
        code: 1,
        says: vec![format!("connector: fatal: {}", refused("connector-user"))],
    });
    let mut dead_broker = sasl("connector-user");
    dead_broker.push(("KAFKA_BOOTSTRAP_SERVERS", format!("127.0.0.1:{dead}")));
    cases.push(Fatal {
        what: "connector: a SASL login to an unreachable broker".to_owned(),
        bin: "connector",
        args: vec![],
        env: with(&connector, dead_broker),
        code: 1,
        says: vec![format!(
            "connector: fatal: cannot reach the Kafka broker at 127.0.0.1:{dead}"
        )],
    });

    let mut ctl = sasl("pipelinectl-user");
    ctl.extend([
        ("KAFKA_BOOTSTRAP_SERVERS", format!("127.0.0.1:{dead}")),
        ("SCHEMA_REGISTRY_URL", dead_registry.clone()),
        (
            "SCHEMA_REGISTRY_BASIC_AUTH",
            format!("adpipe:{BASIC_AUTH_PASSWORD}"),
        ),
        ("AUDIT_DATABASE_URL", dead_database.clone()),
        ("PIPELINECTL_TIMEOUT_SECS", "2".to_owned()),
        ("RUST_LOG", "debug".to_owned()),
    ]);
    cases.push(Fatal {
        what: "pipelinectl status: a SASL login to an unreachable broker".to_owned(),
        bin: "pipelinectl",
        args: vec!["status"],
        env: ctl.clone(),
        code: 2,
        says: vec![format!(
            "pipelinectl: fatal: cannot reach the broker at 127.0.0.1:{dead}"
        )],
    });
    cases.push(Fatal {
        what: "pipelinectl schemas register: basic auth and an unreachable registry".to_owned(),
        bin: "pipelinectl",
        args: vec!["schemas", "register"],
        env: ctl.clone(),
        code: 2,
        says: vec![format!(
            "at http://127.0.0.1:{dead}: schema registry unavailable"
        )],
    });
    cases.push(Fatal {
        what: "pipelinectl schemas check: credentials in an unreachable registry URL".to_owned(),
        bin: "pipelinectl",
        args: vec!["schemas", "check"],
        env: ctl
            .iter()
            .filter(|(k, _)| *k != "SCHEMA_REGISTRY_BASIC_AUTH")
            .cloned()
            .collect(),
        code: 2,
        says: vec![format!(
            "at http://127.0.0.1:{dead}: schema registry unavailable"
        )],
    });
    cases.push(Fatal {
        what: "pipelinectl audit query: the audit store unreachable".to_owned(),
        bin: "pipelinectl",
        args: vec!["audit", "query", "--org", "1"],
        env: ctl.clone(),
        code: 2,
        says: vec![
            "pipelinectl: fatal: connecting to the audit store: state store unavailable".to_owned(),
        ],
    });

    cases.push(Fatal {
        what: "schema-registry: its database unreachable".to_owned(),
        bin: "schema-registry",
        args: vec![],
        env: vec![
            (
                "SCHEMA_REGISTRY_LISTEN",
                format!("127.0.0.1:{}", free_port().expect("port")),
            ),
            ("SCHEMA_REGISTRY_DATABASE_URL", dead_database.clone()),
            (
                "SCHEMA_REGISTRY_BASIC_AUTH",
                format!("adpipe:{BASIC_AUTH_PASSWORD}"),
            ),
            ("RUST_LOG", "debug".to_owned()),
        ],
        code: 1,
        says: vec!["schema-registry: fatal: opening the registry storage".to_owned()],
    });

    // A few at a time: each stops within a second or two.
    let started = Instant::now();
    let total = cases.len();
    let slots = Arc::new(tokio::sync::Semaphore::new(6));
    let mut runs = tokio::task::JoinSet::new();
    for case in cases {
        let slots = slots.clone();
        runs.spawn(async move {
            let _slot = slots.acquire_owned().await;
            run_fatal(case).await
        });
    }
    let (mut passed, mut failed) = (Vec::new(), Vec::new());
    while let Some(result) = runs.join_next().await {
        match result.expect("the run's task") {
            Ok(line) => passed.push(line),
            Err(why) => failed.push(why),
        }
    }
    passed.sort();
    for line in &passed {
        println!("{line}");
    }
    println!(
        "{total} failing runs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    bed.schema.drop().await;
    assert!(
        failed.is_empty(),
        "{} of {total} runs went wrong:\n\n{}",
        failed.len(),
        failed.join("\n\n")
    );
}

/// An enabled notification channel without a secret.
fn channel(id: &str, kind: ChannelKind, target: &str) -> ConfigItem {
    ConfigItem::ChannelDefinition(ChannelDefinition {
        channel_id: id.into(),
        kind,
        target: target.into(),
        secret_ref: None,
        rate_limit_per_minute: None,
        enabled: true,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn working_stages_log_no_secret() {
    bin("bronze");
    let bed = TestBed::start(
        "secrets_ok",
        &[
            Topic::ConnectorDataRaw,
            Topic::BronzeDataCleaned,
            Topic::SilverDataProcessed,
            Topic::GoldDataReady,
            Topic::ConfigChanges,
            Topic::RulesAlertsTriggered,
            Topic::AuditEvents,
        ],
    )
    .await
    .expect("test bed");
    let redis = RedisServer::start_with_password(REDIS_PASSWORD)
        .await
        .expect("redis up");
    let smtp = free_port().expect("port");
    // The registry takes any login and PostgreSQL trusts local connections: the
    // credentials are sent and ignored, and still reach every client that could log them.
    let registry = bed
        .registry
        .replacen("://", &format!("://adpipe:{URL_REGISTRY_PASSWORD}@"), 1);
    let mut base = bed.stage_env();
    base.retain(|(k, _)| *k != "SCHEMA_REGISTRY_URL");
    base.extend([
        ("SCHEMA_REGISTRY_URL", registry),
        ("SCHEMA_REGISTRY_USERNAME", "adpipe".to_owned()),
        ("SCHEMA_REGISTRY_PASSWORD", REGISTRY_PASSWORD.to_owned()),
        ("RUST_LOG", "debug".to_owned()),
    ]);
    let mut stages = Vec::new();
    for (stage, database) in STAGES {
        let mut env = base.clone();
        env.push(("REDIS_URL", redis.url(REDIS_PASSWORD)));
        if let Some(var) = database {
            env.push((var, format!("{} password={PG_PASSWORD}", bed.schema.url())));
        }
        if stage == "notification-sender" {
            // Nothing listens for SMTP: the e-mail channel fails, retried once.
            env.extend([
                (
                    "NOTIFY_SMTP_URL",
                    format!("smtp://alerts:{SMTP_PASSWORD}@127.0.0.1:{smtp}"),
                ),
                ("NOTIFY_CHANNEL_ATTEMPTS", "2".to_owned()),
                ("NOTIFY_CHANNEL_BACKOFF_MS", "10".to_owned()),
                ("NOTIFY_CHANNEL_BACKOFF_MAX_MS", "20".to_owned()),
                ("DLQ_BREAKER_WINDOW", "0".to_owned()),
            ]);
        }
        let log = bed.dir.path().join(format!("{stage}.log"));
        let process = StageProcess::spawn(&bin(stage).to_string_lossy(), &env, &log)
            .unwrap_or_else(|e| panic!("{stage}: {e}"));
        stages.push((stage, process));
    }
    let logs = |stages: &[(&str, StageProcess)]| {
        stages
            .iter()
            .map(|(s, p)| format!("--- {s} ---\n{}", p.log()))
            .collect::<String>()
    };
    let started = Instant::now();

    // Org 1 has an in-app inbox and an e-mail channel; the sender stores both (and the
    // audit writer their audit events).
    for item in [
        channel("ops-inbox", ChannelKind::InApp, "ops-team"),
        channel("ops-mail", ChannelKind::Email, MAIL_TARGET),
    ] {
        bed.produce(&config_event(1, item)).await;
    }
    wait_until(
        Duration::from_secs(60),
        "org 1's channels stored",
        || async { bed.schema.count("notify_channels").await == Some(2) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}:\n{}", logs(&stages)));
    // A gold aggregate pacing at 50 %: the rule evaluator fires an alert for every channel
    // of the org; the inbox gets it, the e-mail fails and the alert is dead-lettered.
    bed.produce(&daily(1, "c-steady", DAY, 0)).await;
    bed.produce(&pacing(1, "c-slow", DAY, 0, "50")).await;

    // The connector's simulated rows (a share of them bad) through bronze and silver.
    let mut connector_env = base.clone();
    connector_env.extend([
        ("SIM_ORGS", "1".to_owned()),
        ("SIM_CAMPAIGNS", "2".to_owned()),
        ("SIM_DAYS", "2".to_owned()),
        ("SIM_BAD_SHARE", "0.3".to_owned()),
        ("SIM_PUBLISH_CONFIG", "false".to_owned()),
    ]);
    let mut connector = StageProcess::spawn(
        &bin("connector").to_string_lossy(),
        &connector_env,
        &bed.dir.path().join("connector.log"),
    )
    .expect("connector starts");
    let status = connector.wait_exit(Duration::from_secs(60)).await;
    let connector_log = connector.log();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "connector:\n{connector_log}"
    );

    let count = |stage: &str, metric: &str| {
        let port = stages
            .iter()
            .find(|(s, _)| *s == stage)
            .map(|(_, p)| p.metrics_port())
            .unwrap_or_default();
        counter_total(port, metric).unwrap_or(0.0)
    };
    wait_until(
        Duration::from_secs(90),
        "every stage to process records",
        || {
            let done = ["bronze", "silver", "rule-evaluator", "audit-writer"]
                .iter()
                .all(|s| count(s, PROCESSED) > 0.0)
                && count("notification-sender", DEAD_LETTERED) >= 1.0;
            async move { done }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}:\n{}", logs(&stages)));
    wait_until(
        Duration::from_secs(30),
        "the in-app notification",
        || async { bed.schema.count("notify_in_app").await >= Some(1) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}:\n{}", logs(&stages)));
    let counts: Vec<String> = STAGES
        .iter()
        .map(|(s, _)| {
            format!(
                "{s} {} processed, {} dead-lettered",
                count(s, PROCESSED) as u64,
                count(s, DEAD_LETTERED) as u64
            )
        })
        .collect();

    // Stopped as Kubernetes stops them, so the shutdown is logged too.
    for (stage, process) in &mut stages {
        let status = process
            .terminate(Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{stage}: {e}:\n{}", process.log()));
        assert!(status.success(), "{stage}: {status}:\n{}", process.log());
    }
    assert_no_secret(&connector_log, "connector");
    for (stage, process) in &stages {
        let log = process.log();
        assert!(log.contains("stage consuming"), "{stage}:\n{log}");
        assert_no_secret(&log, stage);
        // PII too: tokio-postgres logs statements' parameters at debug, unless capped.
        assert!(
            !log.contains(MAIL_TARGET),
            "{stage} logs a channel's e-mail address:\n{log}"
        );
    }
    let sender = stages
        .iter()
        .find(|(s, _)| *s == "notification-sender")
        .map(|(_, p)| p.log())
        .unwrap_or_default();
    assert!(sender.contains("NOTIFY_CHANNEL_FAILED"), "{sender}");
    println!(
        "working run in {:.1} s: {}; connector {} log lines",
        started.elapsed().as_secs_f64(),
        counts.join("; "),
        connector_log.lines().count()
    );
    bed.schema.drop().await;
}
