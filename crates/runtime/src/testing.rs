//! Test kit for stages: run a [`Processor`] on in-memory events, without Kafka, through the
//! real codec (encode, decode, process, encode outputs).

use envelope::{
    Codec, Event, Payload, Source,
    payload::{
        audit::{AuditCategory, AuditEvent, Outcome},
        common::{Actor, ActorType, EntityRef, EntityType},
        config::{ConfigChange, ConfigItem, ConfigOp, OrgSettings},
    },
};

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use topics::partition_for;

use crate::{
    RuntimeArgs,
    dedupe::Dedupe,
    engine::{Health, Parts, run_stage},
    metrics::Metrics,
    processor::{Input, OutRecord, Outputs, Position, ProcessError, Processor},
};

/// The result of processing one event in memory.
#[derive(Debug)]
pub struct Checked {
    /// Encoded output records, as the runtime would produce them.
    pub records: Vec<OutRecord>,
}

impl Checked {
    /// Decode the outputs of `P`'s topic.
    pub fn events<P: Payload>(&self, codec: &Codec) -> Vec<Event<P>> {
        self.records
            .iter()
            .filter(|r| r.topic == P::TOPIC.name())
            .map(|r| {
                codec
                    .decode_known::<P>(&r.value)
                    .expect("outputs decode with their own schema")
            })
            .collect()
    }
}

/// Encode `event`, decode it as the stage's input (one event type, or an enum over several
/// topics), process it, and return the outputs.
pub async fn check<S, P>(stage: &S, event: &Event<P>) -> Result<Checked, ProcessError>
where
    S: Processor,
    P: Payload,
{
    check_with_store(stage, event, &Dedupe::memory(1024)).await
}

/// [`check`] with a dedupe store kept across calls: the stage's idempotency keys are marked
/// after a successful call, as the runtime marks them once outputs are acknowledged.
pub async fn check_with_store<S, P>(
    stage: &S,
    event: &Event<P>,
    dedupe: &Dedupe,
) -> Result<Checked, ProcessError>
where
    S: Processor,
    P: Payload,
{
    let offset = NEXT_OFFSET.fetch_add(1, Ordering::Relaxed);
    check_at(stage, event, dedupe, offset).await
}

/// Offsets [`check_with_store`] gives its inputs: increasing, as on one partition.
static NEXT_OFFSET: AtomicI64 = AtomicI64::new(0);

/// [`check_with_store`] of an input read at `offset` (of its org's partition): a test
/// replays a record by checking the same event at the same offset again.
pub async fn check_at<S, P>(
    stage: &S,
    event: &Event<P>,
    dedupe: &Dedupe,
    offset: i64,
) -> Result<Checked, ProcessError>
where
    S: Processor,
    P: Payload,
{
    let codec = Codec::offline();
    let bytes = codec.encode(event).expect("test events encode");
    let input = S::Input::decode(&codec, P::TOPIC, &bytes).await?;
    let position = Position {
        topic: P::TOPIC,
        partition: partition_for(event.partition_key(), P::TOPIC.spec().partitions),
        offset,
    };
    let source = Source {
        service: S::GROUP.name().to_owned(),
        instance: "test".to_owned(),
    };
    let meta = input.metadata().clone();
    let metrics = Metrics::default();
    let mut out = Outputs::new(&codec, &meta, &source)
        .with_store(dedupe, &metrics)
        .at(position);
    let mut result = stage.process(input, &mut out).await;
    if result.is_ok() {
        // Work handed over with `Outputs::defer` completes the input, as in the runtime,
        // with what it emits once done.
        for work in out.take_deferred() {
            match work.wait().await {
                Ok(Some(late)) => result = late(&mut out),
                Ok(None) => {}
                Err(e) => result = Err(e),
            }
            if result.is_err() {
                break;
            }
        }
    }
    let (records, keys) = out.into_parts();
    for id in keys {
        match result {
            Ok(()) => dedupe.mark(id).await.expect("the test store answers"),
            Err(_) => dedupe.release(id),
        }
    }
    result.map(|()| Checked { records })
}

/// A config change of `org` under `key` (an org-settings upsert by a user): the input of the
/// runtime's own tests and benchmarks.
pub fn config_change(org: i64, key: &str) -> Event<ConfigChange> {
    Event::new(
        org,
        Source {
            service: "test".into(),
            instance: "t".into(),
        },
        ConfigChange {
            key: key.into(),
            version: 1,
            op: ConfigOp::Upsert,
            actor: Actor {
                actor_type: ActorType::User,
                actor_id: "u1".into(),
                display_name: None,
            },
            reason: None,
            change: ConfigItem::OrgSettings(OrgSettings {
                name: None,
                timezone: "UTC".into(),
                currency: "EUR".into(),
                freshness_days: 7,
            }),
        },
    )
}

/// The simplest stage: one [`mirrored`] audit event per config change. The runtime's own
/// tests and benchmarks run it to exercise the loop rather than a stage's logic.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Processor for Echo {
    type Input = Event<ConfigChange>;
    const GROUP: topics::ConsumerGroup = topics::ConsumerGroup::NotificationSender;

    fn outputs() -> Vec<topics::Topic> {
        vec![topics::Topic::AuditEvents]
    }

    async fn process(
        &self,
        input: Event<ConfigChange>,
        out: &mut Outputs<'_>,
    ) -> Result<(), ProcessError> {
        out.emit(mirrored(&input))
    }
}

/// The audit event a test stage emits for a config change: `config.mirrored` on the change's
/// key, by the change's actor.
pub fn mirrored(input: &Event<ConfigChange>) -> AuditEvent {
    AuditEvent {
        action: "config.mirrored".into(),
        category: AuditCategory::Config,
        actor: input.payload.actor.clone(),
        entity: EntityRef {
            entity_type: EntityType::Other,
            entity_id: input.payload.key.clone(),
            name: None,
        },
        outcome: Outcome::Success,
        occurred_at: input.metadata.timestamp,
        reason: None,
        before: None,
        after: None,
        details: Default::default(),
    }
}

/// A stage running in this process on a real broker (see [`RunningStage::start`]): the
/// harness of adpipe's broker tests and benchmarks.
#[derive(Debug)]
pub struct RunningStage {
    stop: tokio::sync::oneshot::Sender<()>,
    /// The stage's task (aborting it is a crash: no draining, no final commit).
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The stage's metrics.
    pub metrics: Arc<Metrics>,
    /// The stage's health.
    pub health: Arc<Health>,
}

impl RunningStage {
    /// Start `processor` with `args` (e.g. [`RuntimeArgs::for_tests`]), `codec` and `dedupe`.
    pub fn start<P: Processor>(
        processor: P,
        args: RuntimeArgs,
        codec: Arc<Codec>,
        dedupe: Dedupe,
    ) -> RunningStage {
        let metrics = Arc::new(Metrics::for_stage(&processor, &codec, &dedupe));
        let health = Arc::new(Health::default());
        let parts = Parts {
            codec,
            metrics: metrics.clone(),
            health: health.clone(),
            dedupe,
            source: Source {
                service: P::GROUP.name().to_owned(),
                instance: "test".to_owned(),
            },
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_stage(processor, parts, args, async move {
            let _ = stopped.await;
        }));
        RunningStage {
            stop,
            task,
            metrics,
            health,
        }
    }

    /// Stop as on SIGTERM (finish in-flight records, commit) and return how the stage ended.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

/// Produce `event` to its topic as a stage would: encoded with `codec`, keyed by its record
/// key, on the project partitioner's partition; returns once the broker acknowledged it.
pub async fn produce_event<P: Payload>(
    producer: &rdkafka::producer::FutureProducer,
    codec: &Codec,
    event: &Event<P>,
) -> anyhow::Result<()> {
    let value = codec.encode(event)?;
    let partition = partition_for(event.partition_key(), P::TOPIC.spec().partitions);
    let key = event.record_key();
    producer
        .send(
            rdkafka::producer::FutureRecord::to(P::TOPIC.name())
                .partition(partition)
                .key(&key)
                .payload(&value),
            std::time::Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("producing to {}: {e}", P::TOPIC))?;
    Ok(())
}
