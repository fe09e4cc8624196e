//! `pipelinectl topics apply|diff`: the topics of topic-config.yaml and their DLQ side topics
//! on a broker.

use std::collections::BTreeMap;

use anyhow::{Context, anyhow};
use rdkafka::{
    admin::{
        AdminClient, AdminOptions, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
    },
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
};
use topics::{CleanupPolicy, Retention};

use crate::{Failure, Global, output};

/// A topic as the configuration wants it.
struct Wanted {
    name: String,
    partitions: u32,
    retention: Retention,
    cleanup: CleanupPolicy,
}

fn wanted(global: &Global) -> anyhow::Result<Vec<Wanted>> {
    Ok(global
        .config()?
        .broker_topics()
        .into_iter()
        .map(|(name, partitions, retention, cleanup)| Wanted {
            name,
            partitions,
            retention,
            cleanup,
        })
        .collect())
}

/// Partition count of every topic on the broker, and the number of brokers.
async fn broker_state(global: &Global) -> anyhow::Result<(BTreeMap<String, u32>, usize)> {
    let consumer: BaseConsumer = global.kafka_config()?.create()?;
    let timeout = global.timeout();
    let bootstrap = global.bootstrap_servers.clone();
    tokio::task::spawn_blocking(move || {
        let md = consumer.fetch_metadata(None, timeout).map_err(|e| {
            anyhow!("cannot reach the Kafka broker at {bootstrap} within {timeout:?}: {e}")
        })?;
        let topics = md
            .topics()
            .iter()
            .map(|t| (t.name().to_owned(), t.partitions().len() as u32))
            .collect();
        Ok((topics, md.brokers().len().max(1)))
    })
    .await?
}

fn admin(global: &Global) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    global.kafka_config()?.create().context("admin client")
}

/// `topics apply`.
pub(crate) async fn apply(global: &Global) -> Result<(), Failure> {
    let config = global.config()?;
    let wanted = wanted(global)?;
    let (existing, brokers) = broker_state(global).await?;
    let admin = admin(global)?;
    let opts = AdminOptions::new().operation_timeout(Some(global.timeout()));
    let mut rows = Vec::new();
    let mut failed = false;
    for w in &wanted {
        let replication = config
            .topic(&w.name)
            .map_or(1, |t| i32::from(t.replication_factor))
            .min(brokers as i32);
        let action = match existing.get(&w.name) {
            None => {
                let retention = w.retention.kafka_value();
                let topic = NewTopic::new(
                    &w.name,
                    w.partitions as i32,
                    TopicReplication::Fixed(replication),
                )
                .set("retention.ms", &retention)
                .set("cleanup.policy", w.cleanup.kafka_value());
                match admin
                    .create_topics([&topic], &opts)
                    .await
                    .context("create topics")?
                    .remove(0)
                {
                    Ok(_) => format!("created (replication {replication})"),
                    Err((_, code)) => {
                        failed = true;
                        format!("FAILED: {code}")
                    }
                }
            }
            Some(&have) if have < w.partitions => {
                let grow = NewPartitions::new(&w.name, w.partitions as usize);
                failed = true;
                match admin.create_partitions([&grow], &opts).await {
                    Ok(mut results) => match results.remove(0) {
                        Ok(_) => {
                            failed = false;
                            format!("partitions {have} -> {}", w.partitions)
                        }
                        Err((_, code)) => format!(
                            "FAILED to add partitions ({have} of {}): {code}",
                            w.partitions
                        ),
                    },
                    Err(e) => format!(
                        "FAILED: has {have} of {} partitions and the broker cannot add partitions ({e})",
                        w.partitions
                    ),
                }
            }
            Some(&have) if have > w.partitions => {
                format!(
                    "unchanged: has {have} partitions, more than the {} configured (Kafka cannot shrink)",
                    w.partitions
                )
            }
            // Existing topics keep their settings; `topics diff` shows retention and cleanup drift.
            Some(_) => "unchanged".to_owned(),
        };
        rows.push(vec![
            w.name.clone(),
            w.partitions.to_string(),
            w.retention.to_string(),
            action,
        ]);
    }
    output::print(
        global.json,
        &["topic", "partitions", "retention", "action"],
        &rows,
    );
    if failed {
        return Err(Failure::Error(anyhow!(
            "some topics could not be created; see the table above"
        )));
    }
    Ok(())
}

/// `topics diff`.
pub(crate) async fn diff(global: &Global) -> Result<(), Failure> {
    let wanted = wanted(global)?;
    let (existing, _) = broker_state(global).await?;
    let admin = admin(global)?;
    let opts = AdminOptions::new().request_timeout(Some(global.timeout()));
    let mut rows = Vec::new();
    let mut drift = false;
    for w in &wanted {
        let Some(&have) = existing.get(&w.name) else {
            drift = true;
            rows.push(vec![
                w.name.clone(),
                "missing".into(),
                "-".into(),
                "-".into(),
            ]);
            continue;
        };
        let partitions = if have == w.partitions {
            "ok".to_owned()
        } else {
            drift = true;
            format!("{have}, want {}", w.partitions)
        };
        let (retention, cleanup) = match admin
            .describe_configs([&ResourceSpecifier::Topic(&w.name)], &opts)
            .await
            .ok()
            .and_then(|mut r| r.pop())
            .and_then(Result::ok)
        {
            Some(resource) => {
                let get = |key: &str| {
                    resource
                        .entries
                        .iter()
                        .find(|e| e.name == key)
                        .and_then(|e| e.value.clone())
                };
                let retention =
                    match get("retention.ms").and_then(|v| Retention::from_kafka_value(&v)) {
                        Some(r) if r == w.retention => "ok".to_owned(),
                        Some(r) => {
                            drift = true;
                            format!("{r}, want {}", w.retention)
                        }
                        None => "not reported".to_owned(),
                    };
                let cleanup = match get("cleanup.policy") {
                    Some(c) if c == w.cleanup.kafka_value() => "ok".to_owned(),
                    Some(c) => {
                        drift = true;
                        format!("{c}, want {}", w.cleanup.kafka_value())
                    }
                    None => "not reported".to_owned(),
                };
                (retention, cleanup)
            }
            None => ("not reported".to_owned(), "not reported".to_owned()),
        };
        rows.push(vec![w.name.clone(), partitions, retention, cleanup]);
    }
    output::print(
        global.json,
        &["topic", "partitions", "retention", "cleanup.policy"],
        &rows,
    );
    if drift {
        if !global.json {
            eprintln!(
                "pipelinectl: the broker differs from topic-config.yaml; `pipelinectl topics apply` creates what is missing"
            );
        }
        return Err(Failure::Findings);
    }
    Ok(())
}
