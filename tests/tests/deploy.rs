//! The Kubernetes manifests of `deploy/`: every overlay renders (`kubectl kustomize`, the
//! kubectl that `scripts/install-k8s-tools.sh` puts in `.local/bin`) and validates against
//! the Kubernetes JSON schemas (`kubernetes-validate --strict`, in `.local/k8s-tools`); every
//! stage has a Deployment running its binary in its consumer group, with probes on the
//! metrics port, static membership from the pod name, a PodDisruptionBudget and a KEDA
//! ScaledObject on its lag; every environment variable the manifests set is a flag's `env`
//! (introspected from the clap definitions, as `configuration.rs` does); replicas stay within
//! the input's partitions; the grace period outlasts the runtime's shutdown grace; the
//! Strimzi topics and users match `topic-config.yaml`.
//!
//! The custom resources (KEDA, Prometheus Operator, Strimzi) have no schema in
//! kubernetes-validate; the tests here check their fields instead.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command as Process,
};

use clap::{Args, Command};
use serde_yaml_ng::Value;
use topics::{ConsumerGroup, TopicConfig};

const OVERLAYS: [&str; 2] = ["dev", "prod"];

/// Kubernetes versions the rendered overlays are validated against: the oldest supported
/// here and the newest kubernetes-validate knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// Kinds the overlays may contain that kubernetes-validate checks against its schemas.
const BUILT_IN_KINDS: [(&str, &str); 6] = [
    ("apps/v1", "Deployment"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Namespace"),
];

/// Custom resources, checked field by field in this file.
const CUSTOM_KINDS: [(&str, &str); 4] = [
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"),
    ("kafka.strimzi.io/v1beta2", "KafkaUser"),
];

/// The stage binaries: consumer group (= Deployment), binary, and its settings as a command.
fn stages() -> Vec<(&'static str, &'static str, Command)> {
    fn cmd<A: Args>(name: &'static str) -> Command {
        let mut c = A::augment_args(runtime::RuntimeArgs::augment_args(Command::new(name)));
        c.build();
        c
    }
    vec![
        (
            "bronze-processor",
            "bronze",
            cmd::<bronze::stage::BronzeRules>("bronze"),
        ),
        (
            "silver-processor",
            "silver",
            cmd::<silver::stage::SilverRules>("silver"),
        ),
        (
            "gold-processor",
            "gold",
            cmd::<gold::stage::GoldSettings>("gold"),
        ),
        (
            "rule-evaluator",
            "rule-evaluator",
            cmd::<rule_evaluator::stage::RuleArgs>("rule-evaluator"),
        ),
        (
            "notification-sender",
            "notification-sender",
            cmd::<notification_sender::stage::NotifySettings>("notification-sender"),
        ),
        (
            "audit-writer",
            "audit-writer",
            cmd::<audit_writer::stage::AuditSettings>("audit-writer"),
        ),
    ]
}

/// Every environment variable a command's flags read.
fn env_names(cmd: &Command) -> BTreeSet<String> {
    cmd.get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// The default of the flag reading `env`.
fn env_default(cmd: &Command, env: &str) -> Option<String> {
    cmd.get_arguments()
        .find(|a| a.get_env().is_some_and(|e| e == env))
        .and_then(|a| a.get_default_values().first())
        .map(|v| v.to_string_lossy().into_owned())
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tool(path: &str) -> PathBuf {
    let p = root().join(path);
    assert!(
        p.exists(),
        "{} is missing: run `scripts/install-k8s-tools.sh` (`make test-prereqs` does)",
        p.display()
    );
    p
}

/// `kubectl kustomize <dir>` as text.
fn kustomize_text(dir: &Path) -> String {
    let out = Process::new(tool(".local/bin/kubectl"))
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 manifests")
}

/// The documents of a multi-document YAML text (separated by `---` lines).
fn documents(text: &str) -> Vec<Value> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line == "---" {
            docs.push(String::new());
        } else {
            let last = docs.last_mut().expect("one document at least");
            last.push_str(line);
            last.push('\n');
        }
    }
    docs.iter()
        .map(|d| serde_yaml_ng::from_str::<Value>(d).expect("a YAML document"))
        .filter(|v| !v.is_null())
        .collect()
}

/// An overlay rendered.
fn render(overlay: &str) -> Vec<Value> {
    documents(&kustomize_text(
        &root().join("deploy/overlays").join(overlay),
    ))
}

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    s(v, path)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{} has no string at {path:?}", name(v)))
}

fn int(v: &Value, path: &[&str]) -> u64 {
    s(v, path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{} has no integer at {path:?}", name(v)))
}

fn seq<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    s(v, path)
        .and_then(Value::as_sequence)
        .map_or(&[], Vec::as_slice)
}

fn kind(v: &Value) -> &str {
    v.get("kind").and_then(Value::as_str).unwrap_or("")
}

fn name(v: &Value) -> String {
    format!(
        "{}/{}",
        kind(v),
        s(v, &["metadata", "name"])
            .and_then(Value::as_str)
            .unwrap_or("?")
    )
}

fn of_kind<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

fn named<'a>(docs: &'a [Value], k: &str, n: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| kind(d) == k && s(d, &["metadata", "name"]).and_then(Value::as_str) == Some(n))
}

fn keys(map: Option<&Value>) -> Vec<String> {
    map.and_then(Value::as_mapping)
        .map(|m| {
            m.keys()
                .filter_map(Value::as_str)
                .map(ToOwned::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `selector` (matchLabels) selects a pod with `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector
        .get("matchLabels")
        .and_then(Value::as_mapping)
        .is_some_and(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The keys of a Secret the render does not contain (production creates it): the example
/// env file that names them, `deploy/overlays/<overlay>/secrets/<name>.env.example`.
fn example_secret_keys(overlay: &str, secret: &str) -> Vec<String> {
    let path = root()
        .join("deploy/overlays")
        .join(overlay)
        .join("secrets")
        .join(format!("{secret}.env.example"));
    let body = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "the {overlay} overlay refers to the Secret {secret}, which it neither renders nor \
             documents in {}",
            path.display()
        )
    });
    env_file_keys(&body)
}

fn env_file_keys(body: &str) -> Vec<String> {
    body.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split_once('=').map_or(l, |(k, _)| k).to_owned())
        .collect()
}

/// The stage container's environment: every variable it gets with its value when the
/// manifests give one (`None` for a Secret not rendered, or a fieldRef).
fn environment(
    overlay: &str,
    docs: &[Value],
    container: &Value,
) -> BTreeMap<String, Option<String>> {
    let mut env = BTreeMap::new();
    for from in seq(container, &["envFrom"]) {
        if let Some(cm) = s(from, &["configMapRef", "name"]).and_then(Value::as_str) {
            let map = named(docs, "ConfigMap", cm)
                .unwrap_or_else(|| panic!("envFrom names the ConfigMap {cm}, not rendered"));
            for (k, v) in map
                .get("data")
                .and_then(Value::as_mapping)
                .into_iter()
                .flatten()
            {
                env.insert(
                    k.as_str().expect("string keys").to_owned(),
                    v.as_str().map(ToOwned::to_owned),
                );
            }
        }
        if let Some(secret) = s(from, &["secretRef", "name"]).and_then(Value::as_str) {
            let names = match named(docs, "Secret", secret) {
                Some(sec) => {
                    let mut k = keys(sec.get("data"));
                    k.extend(keys(sec.get("stringData")));
                    k
                }
                None => example_secret_keys(overlay, secret),
            };
            for k in names {
                env.insert(k, None);
            }
        }
    }
    for e in seq(container, &["env"]) {
        env.insert(
            text(e, &["name"]).to_owned(),
            e.get("value")
                .and_then(Value::as_str)
                .map(ToOwned::to_owned),
        );
    }
    env
}

fn container(deployment: &Value) -> &Value {
    let containers = seq(deployment, &["spec", "template", "spec", "containers"]);
    assert_eq!(
        containers.len(),
        1,
        "{} should run one container",
        name(deployment)
    );
    &containers[0]
}

/// The partitions of the group's widest input: more replicas would have nothing to consume.
fn max_partitions(group: &str) -> u64 {
    let g = ConsumerGroup::from_name(group).unwrap_or_else(|| panic!("no group {group}"));
    g.inputs()
        .iter()
        .map(|t| u64::from(t.spec().partitions))
        .max()
        .expect("a group has inputs")
}

#[test]
fn the_stage_table_covers_every_consumer_group() {
    let groups: BTreeSet<&str> = ConsumerGroup::ALL.iter().map(|g| g.name()).collect();
    let table: BTreeSet<&str> = stages().iter().map(|(g, _, _)| *g).collect();
    assert_eq!(groups, table);
    for (_, binary, _) in stages() {
        let manifest = root().join("bins").join(binary).join("Cargo.toml");
        let body = std::fs::read_to_string(&manifest).expect("the stage's Cargo.toml");
        assert!(
            body.contains(&format!("name = \"{binary}\"")),
            "{} builds no binary {binary}",
            manifest.display()
        );
    }
}

#[test]
fn overlays_render_and_validate_against_the_kubernetes_schemas() {
    let validate = tool(".local/k8s-tools/bin/kubernetes-validate");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut targets: Vec<(String, PathBuf)> = OVERLAYS
        .iter()
        .map(|o| (o.to_string(), root().join("deploy/overlays").join(o)))
        .collect();
    targets.push(("strimzi".into(), root().join("deploy/base/strimzi")));
    for (label, path) in targets {
        let rendered = kustomize_text(&path);
        let docs = documents(&rendered);
        assert!(!docs.is_empty(), "{label} renders nothing");
        for d in &docs {
            let api = text(d, &["apiVersion"]);
            assert!(
                BUILT_IN_KINDS.contains(&(api, kind(d))) || CUSTOM_KINDS.contains(&(api, kind(d))),
                "{label}: {} ({api}) is a kind this test neither validates nor checks",
                name(d)
            );
        }
        let file = dir.path().join(format!("{label}.yaml"));
        std::fs::write(&file, &rendered).expect("write the render");
        for version in KUBERNETES_VERSIONS {
            let out = Process::new(&validate)
                .args(["--strict", "--quiet", "--no-warn", "-k", version])
                .arg(&file)
                .output()
                .expect("run kubernetes-validate");
            assert!(
                out.status.success(),
                "{label} is not valid for Kubernetes {version}:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn every_stage_has_a_deployment_with_its_binary_group_probes_and_static_membership() {
    for overlay in OVERLAYS {
        let docs = render(overlay);
        let deployments = of_kind(&docs, "Deployment");
        assert_eq!(
            deployments.len(),
            stages().len(),
            "{overlay}: one Deployment per stage, no other"
        );
        for (group, binary, cmd) in stages() {
            let d = named(&docs, "Deployment", group)
                .unwrap_or_else(|| panic!("{overlay}: no Deployment {group}"));
            let c = container(d);
            let command: Vec<&str> = seq(c, &["command"])
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(
                command,
                [format!("/usr/local/bin/{binary}")],
                "{overlay}/{group}"
            );
            assert_eq!(
                text(
                    d,
                    &[
                        "spec",
                        "template",
                        "metadata",
                        "labels",
                        "adpipe.io/consumer-group"
                    ]
                ),
                group
            );
            // Static membership: GROUP_INSTANCE_ID from the pod name.
            let gid = seq(c, &["env"])
                .iter()
                .find(|e| text(e, &["name"]) == "GROUP_INSTANCE_ID")
                .unwrap_or_else(|| panic!("{overlay}/{group}: no GROUP_INSTANCE_ID"));
            assert_eq!(
                text(gid, &["valueFrom", "fieldRef", "fieldPath"]),
                "metadata.name"
            );
            // Probes and scrapes on the port of METRICS_LISTEN.
            let env = environment(overlay, &docs, c);
            let listen = env
                .get("METRICS_LISTEN")
                .cloned()
                .flatten()
                .or_else(|| env_default(&cmd, "METRICS_LISTEN"))
                .expect("METRICS_LISTEN");
            assert!(
                !listen.starts_with("127.") && !listen.starts_with("localhost"),
                "{overlay}/{group}: METRICS_LISTEN={listen} is unreachable from the kubelet"
            );
            let port: u64 = listen
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok())
                .expect("METRICS_LISTEN is host:port");
            let ports = seq(c, &["ports"]);
            let metrics = ports
                .iter()
                .find(|p| text(p, &["name"]) == "metrics")
                .unwrap_or_else(|| panic!("{overlay}/{group}: no port named metrics"));
            assert_eq!(int(metrics, &["containerPort"]), port, "{overlay}/{group}");
            for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
                assert_eq!(
                    text(c, &[probe, "httpGet", "path"]),
                    path,
                    "{overlay}/{group}"
                );
                let p = s(c, &[probe, "httpGet", "port"]).expect("probe port");
                assert!(
                    p.as_str() == Some("metrics") || p.as_u64() == Some(port),
                    "{overlay}/{group}: {probe} is not on the metrics port"
                );
            }
            let annotations =
                s(d, &["spec", "template", "metadata", "annotations"]).expect("pod annotations");
            assert_eq!(text(annotations, &["prometheus.io/scrape"]), "true");
            assert_eq!(text(annotations, &["prometheus.io/port"]), port.to_string());
            assert_eq!(text(annotations, &["prometheus.io/path"]), "/metrics");
            // Resources.
            for path in [
                ["resources", "requests", "cpu"],
                ["resources", "requests", "memory"],
                ["resources", "limits", "memory"],
            ] {
                assert!(s(c, &path).is_some(), "{overlay}/{group}: no {path:?}");
            }
            // A PodDisruptionBudget selecting the pods.
            let labels = s(d, &["spec", "template", "metadata", "labels"]).expect("pod labels");
            assert!(
                of_kind(&docs, "PodDisruptionBudget")
                    .iter()
                    .any(|p| selects(s(p, &["spec", "selector"]).expect("selector"), labels)),
                "{overlay}/{group}: no PodDisruptionBudget"
            );
            // The NetworkPolicy applies to it.
            assert!(
                of_kind(&docs, "NetworkPolicy").iter().any(|p| {
                    selects(s(p, &["spec", "podSelector"]).expect("podSelector"), labels)
                        && seq(p, &["spec", "policyTypes"])
                            .iter()
                            .any(|t| t.as_str() == Some("Ingress"))
                }),
                "{overlay}/{group}: no NetworkPolicy"
            );
        }
        if overlay == "prod" {
            let monitors = of_kind(&docs, "PodMonitor");
            assert_eq!(monitors.len(), 1, "prod scrapes with a PodMonitor");
            let endpoints = seq(monitors[0], &["spec", "podMetricsEndpoints"]);
            assert_eq!(text(&endpoints[0], &["port"]), "metrics");
            for d in of_kind(&docs, "Deployment") {
                let labels = s(d, &["spec", "template", "metadata", "labels"]).expect("labels");
                assert!(selects(
                    s(monitors[0], &["spec", "selector"]).expect("selector"),
                    labels
                ));
            }
        }
    }
}

#[test]
fn every_environment_variable_in_the_manifests_is_a_flag_s_env() {
    for overlay in OVERLAYS {
        let docs = render(overlay);
        for (group, _, cmd) in stages() {
            let known = env_names(&cmd);
            let d = named(&docs, "Deployment", group).expect("the Deployment");
            let env = environment(overlay, &docs, container(d));
            let unknown: Vec<&String> = env.keys().filter(|k| !known.contains(*k)).collect();
            assert!(
                unknown.is_empty(),
                "{overlay}/{group} sets {unknown:?}, which no flag of `{}` reads \
                 (docs/configuration.md lists them)",
                cmd.get_name()
            );
        }
    }
    // The env files kustomize reads, and the production Secrets' examples: each key is a flag
    // of the stage (or of the runtime, for the shared ones).
    let runtime_envs = env_names(&runtime::RuntimeArgs::augment_args(Command::new("runtime")));
    let mut files = Vec::new();
    for dir in [
        "deploy/base/config",
        "deploy/overlays/dev/secrets",
        "deploy/overlays/prod/secrets",
    ] {
        for entry in std::fs::read_dir(root().join(dir)).expect("read an env dir") {
            files.push(entry.expect("dir entry").path());
        }
    }
    assert!(files.len() >= 15, "the env files: {files:?}");
    for path in files {
        let file = path.file_name().and_then(|n| n.to_str()).expect("a name");
        let known = stages()
            .into_iter()
            .find(|(g, _, _)| {
                file.starts_with(&format!("{g}.")) || file.starts_with(&format!("{g}-env."))
            })
            .map_or_else(|| runtime_envs.clone(), |(_, _, cmd)| env_names(&cmd));
        let body = std::fs::read_to_string(&path).expect("an env file");
        for key in env_file_keys(&body) {
            assert!(
                known.contains(&key),
                "{}: {key} is not the env of any flag it applies to",
                path.display()
            );
        }
    }
}

#[test]
fn replicas_and_autoscaling_stay_within_the_input_partitions() {
    for overlay in OVERLAYS {
        let docs = render(overlay);
        for (group, _, _) in stages() {
            let limit = max_partitions(group);
            let d = named(&docs, "Deployment", group).expect("the Deployment");
            let replicas = int(d, &["spec", "replicas"]);
            assert!(
                (1..=limit).contains(&replicas),
                "{overlay}/{group}: {replicas} replicas, input partitions {limit}"
            );
            let scaled: Vec<&Value> = of_kind(&docs, "ScaledObject")
                .into_iter()
                .filter(|so| text(so, &["spec", "scaleTargetRef", "name"]) == group)
                .collect();
            assert_eq!(scaled.len(), 1, "{overlay}/{group}: one ScaledObject");
            let so = scaled[0];
            let (min, max) = (
                int(so, &["spec", "minReplicaCount"]),
                int(so, &["spec", "maxReplicaCount"]),
            );
            assert!(
                1 <= min && min <= max && max <= limit,
                "{overlay}/{group}: min {min}, max {max}, input partitions {limit}"
            );
            assert!(
                s(so, &["spec", "scaleTargetRef", "kind"])
                    .is_none_or(|k| k.as_str() == Some("Deployment"))
            );
            let allowed: BTreeSet<&str> = [
                "scaleTargetRef",
                "minReplicaCount",
                "maxReplicaCount",
                "pollingInterval",
                "cooldownPeriod",
                "idleReplicaCount",
                "initialCooldownPeriod",
                "advanced",
                "fallback",
                "triggers",
            ]
            .into();
            for k in keys(so.get("spec")) {
                assert!(
                    allowed.contains(k.as_str()),
                    "{overlay}/{group}: ScaledObject spec.{k}"
                );
            }
            let inputs: BTreeSet<String> = ConsumerGroup::from_name(group)
                .expect("group")
                .inputs()
                .iter()
                .map(|t| t.name().to_owned())
                .collect();
            let triggers = seq(so, &["spec", "triggers"]);
            let mut topics = BTreeSet::new();
            for t in triggers {
                assert_eq!(text(t, &["type"]), "kafka");
                assert_eq!(text(t, &["metadata", "consumerGroup"]), group);
                assert_eq!(
                    text(t, &["metadata", "bootstrapServersFromEnv"]),
                    "KAFKA_BOOTSTRAP_SERVERS"
                );
                assert_eq!(text(t, &["metadata", "offsetResetPolicy"]), "earliest");
                text(t, &["metadata", "lagThreshold"])
                    .parse::<u64>()
                    .expect("lagThreshold is a number in a string");
                topics.insert(text(t, &["metadata", "topic"]).to_owned());
            }
            assert_eq!(
                topics, inputs,
                "{overlay}/{group}: a trigger per input topic"
            );
        }
    }
}

#[test]
fn the_grace_period_outlasts_the_runtime_s_shutdown_grace() {
    for overlay in OVERLAYS {
        let docs = render(overlay);
        for (group, _, cmd) in stages() {
            let d = named(&docs, "Deployment", group).expect("the Deployment");
            let env = environment(overlay, &docs, container(d));
            let grace: u64 = env
                .get("SHUTDOWN_GRACE_SECS")
                .cloned()
                .flatten()
                .or_else(|| env_default(&cmd, "SHUTDOWN_GRACE_SECS"))
                .expect("SHUTDOWN_GRACE_SECS")
                .parse()
                .expect("a number of seconds");
            let period = int(
                d,
                &["spec", "template", "spec", "terminationGracePeriodSeconds"],
            );
            assert!(
                period > grace + 5,
                "{overlay}/{group}: terminationGracePeriodSeconds {period} must outlast \
                 SHUTDOWN_GRACE_SECS {grace} (plus the final commit)"
            );
        }
    }
}

#[test]
fn notification_channel_secrets_are_mounted_where_the_sender_reads_them() {
    for overlay in OVERLAYS {
        let docs = render(overlay);
        let (_, _, cmd) = stages()
            .into_iter()
            .find(|(g, _, _)| *g == "notification-sender")
            .expect("notification-sender");
        let d = named(&docs, "Deployment", "notification-sender").expect("the Deployment");
        let c = container(d);
        let dir = environment(overlay, &docs, c)
            .get("NOTIFY_SECRETS_DIR")
            .cloned()
            .flatten()
            .or_else(|| env_default(&cmd, "NOTIFY_SECRETS_DIR"))
            .expect("NOTIFY_SECRETS_DIR");
        assert!(
            seq(c, &["volumeMounts"])
                .iter()
                .any(|m| text(m, &["mountPath"]) == dir),
            "{overlay}: nothing mounted at NOTIFY_SECRETS_DIR {dir}"
        );
    }
}

/// The committed Strimzi resources (generated by `pipelinectl k8s strimzi`, kept current by
/// its own test) say what topic-config.yaml says: every topic and DLQ with its partitions,
/// replication and retention; per consumer group a user that reads exactly its inputs,
/// writes exactly its outputs and its inputs' DLQs, and joins only its own group.
#[test]
fn strimzi_topics_and_users_follow_topic_config() {
    let config = TopicConfig::embedded();
    let dir = root().join("deploy/base/strimzi");
    let topics = documents(&std::fs::read_to_string(dir.join("topics.yaml")).expect("topics.yaml"));
    let users = documents(&std::fs::read_to_string(dir.join("users.yaml")).expect("users.yaml"));
    let mut want_topics = BTreeSet::new();
    for (topic, partitions, retention, cleanup) in config.broker_topics() {
        let source = config
            .topic(config.dlq_source(&topic).unwrap_or(&topic))
            .expect("a source topic");
        let kt = topics
            .iter()
            .find(|d| s(d, &["spec", "topicName"]).and_then(Value::as_str) == Some(topic.as_str()))
            .unwrap_or_else(|| panic!("no KafkaTopic for {topic}"));
        assert_eq!(int(kt, &["spec", "partitions"]), u64::from(partitions));
        assert_eq!(
            int(kt, &["spec", "replicas"]),
            u64::from(source.replication_factor)
        );
        assert_eq!(
            text(kt, &["spec", "config", "retention.ms"]),
            retention.kafka_value()
        );
        assert_eq!(
            text(kt, &["spec", "config", "cleanup.policy"]),
            cleanup.kafka_value()
        );
        assert!(s(kt, &["metadata", "labels", "strimzi.io/cluster"]).is_some());
        want_topics.insert(topic);
    }
    assert_eq!(
        topics.len(),
        want_topics.len(),
        "no KafkaTopic beyond the config's"
    );

    for group in ConsumerGroup::ALL {
        let g = group.name();
        let user = users
            .iter()
            .find(|u| s(u, &["metadata", "name"]).and_then(Value::as_str) == Some(g))
            .unwrap_or_else(|| panic!("no KafkaUser {g}"));
        assert_eq!(text(user, &["spec", "authorization", "type"]), "simple");
        let mut reads = BTreeSet::new();
        let mut writes = BTreeSet::new();
        let mut groups = BTreeSet::new();
        for acl in seq(user, &["spec", "authorization", "acls"]) {
            let ops: BTreeSet<&str> = seq(acl, &["operations"])
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let target = text(acl, &["resource", "name"]).to_owned();
            match text(acl, &["resource", "type"]) {
                "topic" => {
                    assert_eq!(text(acl, &["resource", "patternType"]), "literal");
                    if ops.contains("Read") {
                        reads.insert(target.clone());
                    }
                    if ops.contains("Write") {
                        writes.insert(target.clone());
                    }
                    assert!(
                        ops.iter()
                            .all(|o| ["Read", "Write", "Describe"].contains(o)),
                        "{g}: {ops:?} on {target}"
                    );
                }
                "group" => {
                    groups.insert(target);
                }
                "transactionalId" => {
                    assert_eq!(target, format!("{g}-"), "{g}: its own transactional ids");
                    assert_eq!(text(acl, &["resource", "patternType"]), "prefix");
                }
                other => panic!("{g}: an ACL on {other}"),
            }
        }
        let inputs: BTreeSet<String> = group.inputs().iter().map(|t| t.name().to_owned()).collect();
        let mut outputs: BTreeSet<String> = config
            .topics
            .iter()
            .filter(|t| t.producers.iter().any(|p| p == g))
            .map(|t| t.name.clone())
            .collect();
        outputs.extend(inputs.iter().map(|t| config.dlq_name(t)));
        assert_eq!(reads, inputs, "{g} reads");
        assert_eq!(writes, outputs, "{g} writes");
        assert_eq!(groups, BTreeSet::from([g.to_owned()]), "{g} joins");
        // The stage's Deployment runs in the group this user may join.
        assert!(stages().iter().any(|(d, _, _)| *d == g));
    }
}
