//! Helpers the notification-sender binary tests share: events to produce, the binary on a
//! test bed, and the webhook peer.
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    routing::post,
};

use testbed::TestBed;
use testkit::StageProcess;
use topics::Topic;

use envelope::{
    Event, Source,
    payload::{
        common::{Actor, ActorType},
        config::{ChannelDefinition, ChannelKind, ConfigChange, ConfigItem, ConfigOp},
    },
};

pub(crate) fn source(service: &str) -> Source {
    Source {
        service: service.into(),
        instance: "notify-test".into(),
    }
}

pub(crate) fn config(
    org: i64,
    version: i64,
    op: ConfigOp,
    change: ConfigItem,
) -> Event<ConfigChange> {
    let key = match &change {
        ConfigItem::ChannelDefinition(c) => format!("channel/{}", c.channel_id),
        _ => "rule/r1".to_owned(),
    };
    Event::new(
        org,
        source("pipelinectl"),
        ConfigChange {
            key,
            version,
            op,
            actor: Actor {
                actor_type: ActorType::User,
                actor_id: "am-1".into(),
                display_name: None,
            },
            reason: None,
            change,
        },
    )
}

pub(crate) fn channel(
    id: &str,
    kind: ChannelKind,
    target: &str,
    secret_ref: Option<&str>,
    rate: Option<i32>,
    enabled: bool,
) -> ConfigItem {
    ConfigItem::ChannelDefinition(ChannelDefinition {
        channel_id: id.into(),
        kind,
        target: target.into(),
        secret_ref: secret_ref.map(str::to_owned),
        rate_limit_per_minute: rate,
        enabled,
    })
}

#[allow(unused_imports)] // not every test binary sends alerts
pub(crate) use notification_sender::fixtures::alert;

/// A test bed named `name` with the sender's topics: alerts in, channels in, audit out.
pub(crate) async fn bed(name: &str) -> TestBed {
    TestBed::start(
        name,
        &[
            Topic::RulesAlertsTriggered,
            Topic::ConfigChanges,
            Topic::AuditEvents,
        ],
    )
    .await
    .expect("test bed")
}

/// The sender group's committed offsets of `rules.alerts.triggered`, summed over its
/// partitions: the alerts completed and committed (0 while the broker does not answer).
pub(crate) fn committed_alerts(bed: &TestBed) -> i64 {
    let partitions = Topic::RulesAlertsTriggered.spec().partitions as i32;
    testkit::committed_offsets(
        &bed.bootstrap,
        "notification-sender",
        Topic::RulesAlertsTriggered.name(),
        partitions,
    )
    .map(|c| c.iter().map(|o| (*o).max(0)).sum())
    .unwrap_or(0)
}

/// The in-app channel `ops-inbox` (audience `ops-team`), enabled and unlimited.
pub(crate) fn inbox() -> ConfigItem {
    channel(
        "ops-inbox",
        ChannelKind::InApp,
        "ops-team",
        None,
        None,
        true,
    )
}

/// How the binary runs on a test bed: its environment and its log file.
pub(crate) struct Env {
    pub(crate) vars: Vec<(&'static str, String)>,
    pub(crate) log: std::path::PathBuf,
}

impl Env {
    /// The sender on `bed`, mailing through `smtp`, reading secrets from `secrets`, with
    /// short retry delays.
    pub(crate) fn new(bed: &TestBed, smtp: String, secrets: &std::path::Path) -> Env {
        let mut vars = bed.stage_env();
        vars.extend([
            ("NOTIFY_DATABASE_URL", bed.schema.url()),
            ("NOTIFY_SMTP_URL", smtp),
            (
                "NOTIFY_SMTP_FROM",
                "adpipe <alerts@adpipe.invalid>".to_owned(),
            ),
            ("NOTIFY_SECRETS_DIR", secrets.display().to_string()),
            ("NOTIFY_CHANNEL_BACKOFF_MS", "50".to_owned()),
            ("NOTIFY_CHANNEL_BACKOFF_MAX_MS", "500".to_owned()),
            ("NOTIFY_REQUEST_TIMEOUT_MS", "5000".to_owned()),
            ("DLQ_BREAKER_WINDOW", "0".to_owned()),
        ]);
        Env {
            vars,
            log: bed.dir.path().join("notification-sender.log"),
        }
    }
}

/// Start the binary on `env`, with `extra` environment variables on top.
pub(crate) fn spawn_sender(env: &Env, extra: &[(&'static str, &str)]) -> StageProcess {
    let mut vars = env.vars.clone();
    vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    StageProcess::spawn(env!("CARGO_BIN_EXE_notification-sender"), &vars, &env.log)
        .expect("notification-sender starts")
}

/// Give `org` a webhook channel to `{http}/hook/org{org}` and an in-app inbox (audience
/// `ops-team`), as version 1 of each.
pub(crate) async fn webhook_and_inbox(bed: &TestBed, http: &str, org: i64) {
    for item in [
        channel(
            "ops-webhook",
            ChannelKind::Webhook,
            &format!("{http}/hook/org{org}"),
            None,
            None,
            true,
        ),
        inbox(),
    ] {
        bed.produce(&config(org, 1, ConfigOp::Upsert, item)).await;
    }
}

/// [`webhook_and_inbox`] for org 1, and wait until the sender on `bed` stored both; `log` is
/// printed on timeout.
pub(crate) async fn org1_webhook_and_inbox(bed: &TestBed, http: &str, log: impl Fn() -> String) {
    webhook_and_inbox(bed, http, 1).await;
    testkit::wait_until(
        Duration::from_secs(60),
        "org 1's channels stored",
        || async { bed.schema.count("notify_channels").await == Some(2) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", log()));
}

/// One call the HTTP server received.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) path: String,
    pub(crate) key: String,
    pub(crate) body: serde_json::Value,
}

/// What the HTTP server saw.
#[derive(Debug, Default, Clone)]
pub(crate) struct Hooks {
    /// Calls still to fail with 503.
    pub(crate) fail_next: usize,
    /// Every call, in arrival order.
    pub(crate) calls: Vec<Call>,
    /// Accepted calls by Idempotency-Key (first acceptance only).
    pub(crate) accepted: BTreeMap<String, Call>,
    /// Keys of calls repeating an accepted key (answered 200, not accepted again).
    pub(crate) repeated: Vec<String>,
    /// Calls refused for a missing or wrong Authorization header.
    pub(crate) unauthorized: usize,
    /// The bearer secret each path requires.
    pub(crate) bearer: HashMap<String, String>,
}

pub(crate) type SharedHooks = Arc<Mutex<Hooks>>;

async fn hook(
    State(hooks): State<SharedHooks>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    // A peer that takes a moment to answer, so the kill lands mid-delivery.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let call = Call {
        path: uri.path().to_owned(),
        key: header("idempotency-key").unwrap_or_default(),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    };
    let mut h = hooks.lock().expect("hooks");
    h.calls.push(call.clone());
    if h.fail_next > 0 {
        h.fail_next -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if call.key.is_empty() || header("content-type").as_deref() != Some("application/json") {
        return StatusCode::BAD_REQUEST;
    }
    let required = h.bearer.get(&call.path).map(|s| format!("Bearer {s}"));
    if required.is_some() && header("authorization") != required {
        h.unauthorized += 1;
        return StatusCode::UNAUTHORIZED;
    }
    if h.accepted.contains_key(&call.key) {
        h.repeated.push(call.key);
    } else {
        h.accepted.insert(call.key.clone(), call);
    }
    StatusCode::OK
}

/// Start the webhook peer on a free port: it fails its first `fail_first` calls with 503 and
/// requires `bearer` secrets per path. Returns its base URL and what it saw.
pub(crate) async fn start_hooks(
    fail_first: usize,
    bearer: &[(&str, &str)],
) -> (String, SharedHooks) {
    let hooks: SharedHooks = Arc::new(Mutex::new(Hooks {
        fail_next: fail_first,
        bearer: bearer
            .iter()
            .map(|(p, s)| ((*p).to_owned(), (*s).to_owned()))
            .collect(),
        ..Hooks::default()
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http = format!("http://{}", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route("/{*path}", post(hook))
        .with_state(hooks.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (http, hooks)
}
