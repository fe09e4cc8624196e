//! The processing loop. Records are consumed by one consumer in the stage's group and handed
//! to one worker task per partition (order per partition, concurrency across partitions,
//! bounded queues for backpressure). For each record a worker decodes, skips an already
//! processed `event_id`, processes with retries, produces the outputs (or the dead letter) and
//! waits for the broker's acknowledgements, marks the `event_id` done, and only then stores
//! the record's offset; librdkafka auto-commits stored offsets, and the stage commits once
//! more on shutdown.

use std::{
    collections::VecDeque,
    future::Future,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use envelope::{Codec, Source, Timestamp};
use futures::FutureExt as _;
use prometheus_client::metrics::counter::Counter;
use rdkafka::{
    ClientConfig, Message, Offset,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use tokio::{
    sync::{
        mpsc::{
            self,
            error::{SendError, TrySendError},
        },
        oneshot,
    },
    task::JoinSet,
};
use topics::Topic;
use tracing::Instrument as _;

use crate::{
    consumed::Consumed,
    dedupe::Dedupe,
    dlq::{Failure, dlq_headers},
    metrics::{Labels, Metrics},
    processor::{Input, OutRecord, Outputs, Position, Processor, Tick},
    runs::{Run, system_cause},
    settings::{KafkaSecurity, RuntimeArgs},
    txn::Txn,
};
use envelope::payload::etl::RunStatus;

/// Consumer settings that work well on Tansu and on Kafka alike (see the README): a new group
/// member joins in seconds instead of ~23 s on Tansu.
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "1000"),
    ("topic.metadata.refresh.interval.ms", "5000"),
];

/// Liveness and readiness, shared with the HTTP endpoints.
#[derive(Debug, Default)]
pub struct Health {
    /// Partitions currently assigned.
    pub assigned: AtomicUsize,
    /// The DLQ circuit breaker stopped the stage.
    pub breaker_open: AtomicBool,
    /// The loop is running.
    pub running: AtomicBool,
    /// Woken once the broker turned the consumer away for good (see [`Refusal`]): the stage
    /// stops, because no retry can fix wrong credentials or an untrusted certificate.
    refused: tokio::sync::Notify,
    /// The first such refusal, set before `refused` is woken.
    refusal: OnceLock<Refusal>,
}

/// Why the broker will not let the stage in, whatever it retries.
#[derive(Debug)]
enum Refusal {
    /// The SASL login was refused (librdkafka's `__AUTHENTICATION`).
    Login,
    /// The TLS handshake failed (librdkafka's `__SSL`, with its reason: e.g. the broker's
    /// certificate could not be verified). A handshake cut by a disconnect is a transport
    /// error instead, and retried.
    Tls(String),
}

impl Health {
    /// Ready: running, assigned at least one partition, breaker closed.
    pub fn ready(&self) -> bool {
        self.running.load(Ordering::Relaxed)
            && self.assigned.load(Ordering::Relaxed) > 0
            && !self.breaker_open.load(Ordering::Relaxed)
    }
}

pub(crate) struct Ctx {
    health: Arc<Health>,
}

impl rdkafka::ClientContext for Ctx {
    fn error(&self, error: KafkaError, reason: &str) {
        let refusal = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Authentication) => Refusal::Login,
            Some(RDKafkaErrorCode::SSL) => Refusal::Tls(reason.to_owned()),
            _ => {
                tracing::error!(target: "librdkafka", "librdkafka: {error}: {reason}");
                return;
            }
        };
        tracing::error!(target: "librdkafka", error = %error, reason, "the broker turned the stage away");
        let _ = self.health.refusal.set(refusal); // the first one is the one reported
        self.health.refused.notify_one();
    }
}

impl ConsumerContext for Ctx {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        self.health.assigned.store(assigned, Ordering::Relaxed);
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = tpl.count(), assigned, "partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), assigned, "partitions revoked")
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

pub(crate) type Consumer_ = StreamConsumer<Ctx>;

/// The DLQ circuit breaker: the share of dead-lettered records among the last `window`.
struct Breaker {
    window: usize,
    threshold: f64,
    outcomes: VecDeque<bool>,
    dead: usize,
}

impl Breaker {
    /// Record an outcome; true when the breaker must open.
    fn record(&mut self, dead_lettered: bool) -> bool {
        if self.window == 0 {
            return false;
        }
        self.outcomes.push_back(dead_lettered);
        self.dead += usize::from(dead_lettered);
        if self.outcomes.len() > self.window && self.outcomes.pop_front() == Some(true) {
            self.dead -= 1;
        }
        self.outcomes.len() == self.window && self.dead as f64 / self.window as f64 > self.threshold
    }
}

struct Shared<P: Processor> {
    processor: P,
    codec: Arc<Codec>,
    consumer: Arc<Consumer_>,
    producer: FutureProducer,
    dedupe: Dedupe,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    source: Source,
    args: RuntimeArgs,
    breaker: Mutex<Breaker>,
    stopping: AtomicBool,
    /// `--transactional`: the open transaction.
    txn: Option<Txn>,
}

impl<P: Processor> Shared<P> {
    /// In transactional mode, the guard writes of the open transaction hold while in flight.
    async fn writing(&self) -> Option<tokio::sync::OwnedRwLockReadGuard<()>> {
        match &self.txn {
            Some(t) => Some(t.writing().await),
            None => None,
        }
    }
}

fn labels(stage: &str, topic: &str) -> Labels {
    vec![("stage", stage.to_owned()), ("topic", topic.to_owned())]
}

fn client_config(args: &RuntimeArgs) -> anyhow::Result<ClientConfig> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &args.bootstrap_servers);
    args.kafka.apply(&mut c)?;
    Ok(c)
}

/// adpipe's producer: idempotent, acks from all in-sync replicas, 5 ms linger for batching;
/// plaintext (see [`secure_producer`]).
pub fn producer(bootstrap_servers: &str) -> anyhow::Result<FutureProducer> {
    secure_producer(bootstrap_servers, &KafkaSecurity::default())
}

/// [`producer`] logged in as `security` says (TLS, SASL).
pub fn secure_producer(
    bootstrap_servers: &str,
    security: &KafkaSecurity,
) -> anyhow::Result<FutureProducer> {
    Ok(producer_config(bootstrap_servers, security)?.create()?)
}

/// The settings of [`producer`]; transactional mode adds its `transactional.id` (which
/// implies idempotence).
fn producer_config(
    bootstrap_servers: &str,
    security: &KafkaSecurity,
) -> anyhow::Result<ClientConfig> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap_servers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5");
    security.apply(&mut c)?;
    Ok(c)
}

/// Everything a running stage needs besides the processor.
#[derive(Debug)]
pub struct Parts {
    /// The codec (registered output schemas).
    pub codec: Arc<Codec>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Health.
    pub health: Arc<Health>,
    /// The dedupe store.
    pub dedupe: Dedupe,
    /// Envelope source of outputs.
    pub source: Source,
}

/// Run `processor` until `shutdown` completes, then finish in-flight work within the grace
/// period and commit.
pub async fn run_stage<P: Processor>(
    processor: P,
    parts: Parts,
    args: RuntimeArgs,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let Parts {
        codec,
        metrics,
        health,
        dedupe,
        source,
    } = parts;
    let group = P::GROUP.name();
    processor
        .start()
        .await
        .map_err(|e| e.context(format!("starting {group}")))?;
    let mut cc = client_config(&args)?;
    for (k, v) in CONSUMER_DEFAULTS {
        cc.set(*k, *v);
    }
    cc.set(
        "queued.max.messages.kbytes",
        args.fetch_buffer_kib.max(1).to_string(),
    );
    cc.set(
        "queued.min.messages",
        args.fetch_buffer_records
            .unwrap_or(P::PREFETCH_RECORDS)
            .max(1)
            .to_string(),
    );
    cc.set("group.id", group)
        // Transactional mode commits offsets inside its transactions.
        .set("enable.auto.commit", (!args.transactional).to_string())
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "cooperative-sticky");
    if let Some(id) = args.group_instance_id.as_deref().filter(|s| !s.is_empty()) {
        cc.set("group.instance.id", id);
    }
    let consumer: Arc<Consumer_> = Arc::new(cc.create_with_context(Ctx {
        health: health.clone(),
    })?);
    let inputs: Vec<Topic> = P::Input::topics();
    let names: Vec<&str> = inputs.iter().map(|t| t.name()).collect();
    consumer.subscribe(&names)?;
    let (producer, txn) = if args.transactional {
        let id = format!("{group}-{}", source.instance);
        let producer: FutureProducer = producer_config(&args.bootstrap_servers, &args.kafka)?
            .set("transactional.id", &id)
            .create()?;
        let txn = Txn::start(&producer, Duration::from_secs(30)).await?;
        tracing::info!(transactional_id = %id, "transactional mode");
        (producer, Some(txn))
    } else {
        (secure_producer(&args.bootstrap_servers, &args.kafka)?, None)
    };
    let shared = Arc::new(Shared {
        processor,
        codec,
        consumer: consumer.clone(),
        producer,
        dedupe,
        metrics: metrics.clone(),
        health: health.clone(),
        source,
        breaker: Mutex::new(Breaker {
            window: args.dlq_breaker_window,
            threshold: args.dlq_breaker_threshold,
            outcomes: VecDeque::new(),
            dead: 0,
        }),
        args: args.clone(),
        stopping: AtomicBool::new(false),
        txn,
    });
    health.running.store(true, Ordering::Relaxed);
    tracing::info!(group, topics = ?names, "stage consuming");
    let run = Run::begin(group, &shared.source.instance);
    // Weak references, like the lag task's: a crashed (aborted) stage leaves no task behind
    // that keeps its consumer in the group.
    let report_task = (args.run_report_secs > 0).then(|| {
        tokio::spawn(report_runs(
            Arc::downgrade(&shared),
            run.clone(),
            Duration::from_secs(args.run_report_secs),
        ))
    });
    let tick_task = shared
        .processor
        .tick_interval()
        .map(|every| tokio::spawn(ticker(Arc::downgrade(&shared), every)));

    // A weak reference: if this stage is dropped (aborted), the consumer closes and leaves the
    // group instead of lingering as a member that holds partitions.
    let lag_task = tokio::spawn(track_lag(Arc::downgrade(&consumer), metrics.clone(), group));
    // Per topic (a stage reads a few): its counters; per partition: the worker's queue. Looked
    // up by comparing names and indexing, without allocating or hashing.
    let mut workers: Vec<TopicWorkers> = Vec::new();
    let mut tasks = JoinSet::new();
    // A partition whose worker's queue is full does not hold up the others: its records wait
    // in `parked` (in order) until the queue has room again, and the loop goes on taking
    // records for the other partitions. Parked records of all partitions together are capped
    // at a quarter of `--fetch-buffer-kib`; above it the loop waits for room before it takes
    // more.
    let mut room: futures::stream::FuturesUnordered<Room> =
        futures::stream::FuturesUnordered::new();
    let mut parked_bytes = 0usize;
    let parked_cap = usize::try_from(args.fetch_buffer_kib.max(1))
        .unwrap_or(usize::MAX)
        .saturating_mul(1024 / PARKED_SHARE);
    // A worker that panicked (its partition would stall for good) or a failed transaction:
    // the stage stops and exits with an error; its unfinished records are redelivered to the
    // restarted process.
    let mut crashed: Option<String> = None;
    let mut committer = shared.txn.as_ref().map(|_| {
        tokio::spawn(commit_every(
            Arc::downgrade(&shared),
            Duration::from_millis(args.transaction_ms.max(1)),
        ))
    });
    tokio::pin!(shutdown);
    loop {
        if health.breaker_open.load(Ordering::Relaxed) {
            // Stopped by the breaker: stop fetching; offsets of unprocessed records stay uncommitted.
            if let Ok(assignment) = consumer.assignment() {
                let _ = consumer.pause(&assignment);
            }
            shutdown.as_mut().await;
            break;
        }
        let msg = tokio::select! {
            () = shutdown.as_mut() => break,
            // librdkafka reports a refused login or a failed TLS handshake to the consumer's
            // context (`Ctx::error`), also when `recv` hands the same error back: it stops the
            // stage here.
            () = health.refused.notified() => {
                let refusal = health.refusal.get().unwrap_or(&Refusal::Login);
                crashed = Some(refused(&args.kafka, refusal));
                break;
            }
            ended = async {
                match committer.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            } => {
                let why = match ended {
                    Ok(Err(e)) => format!("{e:#}"),
                    Ok(Ok(())) => "the committer ended".to_owned(),
                    Err(e) => e.to_string(),
                };
                tracing::error!(error = %why, "the transaction failed; stopping");
                crashed = Some(format!("the transaction failed: {why}"));
                committer = None;
                break;
            }
            Some((t, p, permit)) = futures::StreamExt::next(&mut room), if !room.is_empty() => {
                let queue = workers[t].partitions[p].as_mut().expect("a parked partition has a queue");
                match permit {
                    Ok(permit) => {
                        let released = queue.unpark(permit);
                        parked_bytes -= released;
                        if !queue.parked.is_empty() {
                            room.push(room_in(t, p, &queue.tx));
                        }
                        continue;
                    }
                    // The worker ended: stopped by the breaker (the loop's top then pauses),
                    // or the stage is failing.
                    Err(_) => {
                        parked_bytes -= queue.drop_parked();
                        if health.breaker_open.load(Ordering::Relaxed) {
                            continue;
                        }
                        break;
                    }
                }
            }
            Some(ended) = tasks.join_next(), if !tasks.is_empty() => {
                match ended {
                    Err(e) if e.is_panic() => {
                        let why = panic_message(e.into_panic());
                        tracing::error!(panic = %why, "a partition worker panicked; stopping");
                        crashed = Some(format!("a partition worker panicked: {why}"));
                        break;
                    }
                    _ => continue,
                }
            }
            msg = consumer.recv(), if parked_bytes < parked_cap => msg,
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "consumer error");
                continue;
            }
        };
        let t = match workers.iter().position(|w| *w.topic == *msg.topic()) {
            Some(i) => i,
            None => {
                let l = labels(group, msg.topic());
                workers.push(TopicWorkers {
                    topic: Arc::from(msg.topic()),
                    known: Topic::from_name(msg.topic()),
                    messages_in: metrics.messages_in.get_or_create(&l).clone(),
                    bytes_in: metrics.bytes_in.get_or_create(&l).clone(),
                    processed: metrics.processed.get_or_create(&l).clone(),
                    partitions: Vec::new(),
                });
                workers.len() - 1
            }
        };
        let w = &mut workers[t];
        w.messages_in.inc();
        w.bytes_in
            .inc_by(msg.payload().map_or(0, |p| p.len()) as u64);
        let Ok(p) = usize::try_from(msg.partition()) else {
            continue; // a consumed record always has its partition
        };
        // Copied out of librdkafka's buffer, which is released here.
        let msg = Consumed::copy(&msg, w.topic.clone(), w.known);
        if w.partitions.len() <= p {
            w.partitions.resize_with(p + 1, || None);
        }
        let processed = &w.processed;
        let queue = w.partitions[p].get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(args.max_in_flight_per_partition.max(1));
            tasks.spawn(worker(
                shared.clone(),
                rx,
                processed.clone(),
                (msg.topic_name().to_owned(), msg.partition()),
            ));
            PartitionQueue {
                tx,
                parked: VecDeque::new(),
            }
        });
        match queue.offer(msg) {
            Offer::Taken => {}
            Offer::Parked { bytes, first } => {
                parked_bytes += bytes;
                if first {
                    room.push(room_in(t, p, &queue.tx));
                }
            }
            // A worker stopped by the breaker drops its queue: the loop's top then pauses.
            Offer::Closed if health.breaker_open.load(Ordering::Relaxed) => {}
            Offer::Closed => break,
        }
    }

    tracing::info!("stopping: finishing in-flight records");
    health.running.store(false, Ordering::Relaxed);
    // Parked records are not processed: like unfinished ones, they are redelivered.
    drop(room);
    drop(workers);
    let grace = args.grace();
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        shared.stopping.store(true, Ordering::Relaxed);
        tracing::warn!(
            ?grace,
            "grace period over; unfinished records will be redelivered"
        );
        tasks.abort_all();
    }
    lag_task.abort();
    for task in [report_task, tick_task].into_iter().flatten() {
        task.abort();
    }
    if let Some(task) = committer.take() {
        task.abort();
        let _ = task.await;
    }
    if shared.txn.is_none()
        && let Err(e) = consumer.commit_consumer_state(CommitMode::Sync)
    {
        tracing::debug!(error = %e, "final commit (nothing to commit is fine)");
    }
    if args.run_report_secs > 0 {
        let (status, error) = if let Some(why) = &crashed {
            (RunStatus::Failed, Some(why.clone()))
        } else if health.breaker_open.load(Ordering::Relaxed) {
            let why = "stopped by the DLQ circuit breaker".to_owned();
            (RunStatus::Failed, Some(why))
        } else {
            (RunStatus::Completed, None)
        };
        let sent = emit_run(&shared, &run, status, error);
        if tokio::time::timeout(Duration::from_secs(5), sent)
            .await
            .is_err()
        {
            tracing::warn!("the final run event was not acknowledged within 5 s");
        }
    }
    if let Some(txn) = &shared.txn {
        if crashed.is_none() && drained.is_ok() {
            match txn
                .commit(&shared.producer, &shared.consumer, &shared.dedupe, false)
                .await
            {
                Ok(_) => tracing::info!("final transaction committed"),
                Err(e) => crashed = Some(format!("the final transaction failed: {e:#}")),
            }
        } else {
            txn.abort(&shared.producer).await;
        }
    }
    if let Some(why) = crashed {
        anyhow::bail!("{group} stopped: {why}");
    }
    tracing::info!("stage stopped");
    Ok(())
}

/// The context of [`check_broker`]'s client: a refusal as a stage's consumer notes it, and
/// librdkafka's last connection failure (its `FAIL` log line), which says why nothing
/// answered when no refusal came.
struct Watch {
    ctx: Ctx,
    last_failure: Mutex<Option<String>>,
}

impl rdkafka::ClientContext for Watch {
    fn error(&self, error: KafkaError, reason: &str) {
        self.ctx.error(error, reason);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        if fac == "FAIL"
            && let Ok(mut last) = self.last_failure.lock()
        {
            *last = Some(log_message.to_owned());
        }
        // Reported once, in the error below, instead of at every reconnection.
        tracing::debug!(target: "librdkafka", ?level, fac, "{log_message}");
    }
}

impl rdkafka::producer::ProducerContext for Watch {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

/// Connect to the brokers at `bootstrap` as `security` says and wait up to `timeout` for
/// their metadata. An error names why not: the broker refused the login or the TLS handshake
/// failed (the message a stage stops with), or nothing answered in time, with librdkafka's
/// last connection failure (e.g. `SSL handshake failed: … certificate verify failed`). A
/// producer alone retries each record until its message timeout and reports a timeout: the
/// connector calls this before producing, so wrong settings fail at start and say why.
pub async fn check_broker(
    bootstrap: &str,
    security: &KafkaSecurity,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    security.apply(&mut config)?;
    let health = Arc::new(Health::default());
    let client: rdkafka::producer::BaseProducer<Watch> = config.create_with_context(Watch {
        ctx: Ctx {
            health: health.clone(),
        },
        last_failure: Mutex::new(None),
    })?;
    let (bootstrap, security) = (bootstrap.to_owned(), security.clone());
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + timeout;
        loop {
            // Polling serves the callbacks, which note a refusal.
            client.poll(Duration::ZERO);
            if let Some(refusal) = health.refusal.get() {
                anyhow::bail!("{}", refused(&security, refusal));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let metadata = rdkafka::producer::Producer::client(&client)
                .fetch_metadata(None, left.min(Duration::from_millis(500)));
            match metadata {
                Ok(_) => return Ok(()),
                Err(e) if left.is_zero() => {
                    let watch = rdkafka::producer::Producer::context(&client);
                    let last = watch.last_failure.lock().ok().and_then(|l| l.clone());
                    let why = last.map_or_else(String::new, |l| {
                        format!("; the last connection failed: {l}")
                    });
                    anyhow::bail!(
                        "cannot reach the Kafka broker at {bootstrap} within {timeout:?} ({e}){why}; \
                         check KAFKA_BOOTSTRAP_SERVERS and, over TLS, KAFKA_SECURITY_PROTOCOL and \
                         KAFKA_SSL_CA_LOCATION"
                    )
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    })
    .await?
}

/// Why a stage stops when the broker turned it away: for a refused login who tried to log
/// in, how, and what to check (never the password); for a failed TLS handshake librdkafka's
/// reason and the settings that decide it.
fn refused(kafka: &KafkaSecurity, refusal: &Refusal) -> String {
    match refusal {
        Refusal::Tls(reason) => format!(
            "the TLS handshake with the Kafka broker failed over {} ({reason}); check \
             KAFKA_SSL_CA_LOCATION (the CA that signed the brokers' certificates) and, for \
             mutual TLS, KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION",
            kafka.kafka_security_protocol.as_str(),
        ),
        Refusal::Login => {
            let user = kafka.kafka_sasl_username.as_deref().unwrap_or("(no user)");
            format!(
                "the Kafka broker refused the login of {user} ({} over {}); check \
                 KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD (the KafkaUser and its secret)",
                kafka.kafka_sasl_mechanism.as_str(),
                kafka.kafka_security_protocol.as_str(),
            )
        }
    }
}

/// The message of a panic payload (`panic!` with a literal or a formatted string).
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// The workers of one input topic and its counters (looked up once, not per record).
struct TopicWorkers {
    topic: Arc<str>,
    /// The topic, when topic-config.yaml has it (else its records are dead-lettered).
    known: Option<Topic>,
    messages_in: Counter,
    bytes_in: Counter,
    processed: Counter,
    /// The queue of each partition's worker, by partition.
    partitions: Vec<Option<PartitionQueue>>,
}

/// Parked records are capped at `--fetch-buffer-kib` / this. Measured (runtime bench and
/// stages bench, 16 MiB fetch buffer): a cap of the whole buffer ran the loop 7 % faster than
/// a quarter and 20 % faster than a sixteenth, but left gold and the rule evaluator, whose
/// queues stay full, at 158-180 MiB peak RSS against 125-130 MiB with a quarter.
const PARKED_SHARE: usize = 4;

/// A partition worker's queue, and the records it could not take yet.
struct PartitionQueue {
    tx: mpsc::Sender<Consumed>,
    /// Records that found the queue full, in order, each with the bytes it was counted as
    /// holding ([`Consumed::held`]): later records of the partition wait behind them.
    parked: VecDeque<(Consumed, usize)>,
}

/// What became of a record offered to its partition's queue.
enum Offer {
    Taken,
    /// Parked (`bytes` held now); `first` when nothing of the partition was parked before, so
    /// the caller starts waiting for room.
    Parked {
        bytes: usize,
        first: bool,
    },
    /// The worker ended.
    Closed,
}

/// Parked slots a partition keeps allocated once its parked records are gone.
const PARKED_KEPT: usize = 64;

impl PartitionQueue {
    /// Hand `msg` to the worker, or park it behind the records already waiting.
    fn offer(&mut self, msg: Consumed) -> Offer {
        if !self.parked.is_empty() {
            let bytes = msg.held();
            self.parked.push_back((msg, bytes));
            return Offer::Parked {
                bytes,
                first: false,
            };
        }
        match self.tx.try_send(msg) {
            Ok(()) => Offer::Taken,
            Err(TrySendError::Full(msg)) => {
                let bytes = msg.held();
                self.parked.push_back((msg, bytes));
                Offer::Parked { bytes, first: true }
            }
            Err(TrySendError::Closed(_)) => Offer::Closed,
        }
    }

    /// The queue has room (`permit`): hand it the first parked record and as many after it as
    /// fit; the bytes released.
    fn unpark(&mut self, permit: mpsc::OwnedPermit<Consumed>) -> usize {
        let Some((first, mut released)) = self.parked.pop_front() else {
            return 0;
        };
        permit.send(first);
        while let Some((msg, bytes)) = self.parked.pop_front() {
            match self.tx.try_send(msg) {
                Ok(()) => released += bytes,
                Err(TrySendError::Full(msg) | TrySendError::Closed(msg)) => {
                    self.parked.push_front((msg, bytes));
                    break;
                }
            }
        }
        // A burst parked here is over: give its room back (a queue never shrinks on its own,
        // and every partition that parked a burst would otherwise keep its largest one).
        if self.parked.is_empty() && self.parked.capacity() > PARKED_KEPT {
            self.parked = VecDeque::new();
        }
        released
    }

    /// The worker ended: its parked records are redelivered later; the bytes released.
    fn drop_parked(&mut self) -> usize {
        self.parked.drain(..).map(|(_, bytes)| bytes).sum()
    }
}

/// A partition queue's room for one more record: (topic index, partition, the permit, or
/// an error once the worker ended).
type Room = std::pin::Pin<
    Box<
        dyn Future<
                Output = (
                    usize,
                    usize,
                    Result<mpsc::OwnedPermit<Consumed>, SendError<()>>,
                ),
            > + Send,
    >,
>;

/// Wait for room in partition `p` of topic `t`'s queue.
fn room_in(t: usize, p: usize, tx: &mpsc::Sender<Consumed>) -> Room {
    let tx = tx.clone();
    Box::pin(async move { (t, p, tx.reserve_owned().await) })
}

/// A record whose outputs (or dead letter) are in flight; resolves once acknowledged.
type InFlight = std::pin::Pin<Box<dyn Future<Output = Option<Completion>> + Send>>;

/// A record's turn to produce: after the partition's previous record started producing.
/// Outputs of records whose work was deferred ([`Outputs::defer`]) are ready in whatever
/// order that work finishes (many at once, on a group commit): the turns keep them in the
/// order of their inputs, so a later input's output never lands before an earlier one's.
/// A record that produces nothing (a duplicate, a dead letter) passes its turn on only once
/// the records before it have started producing: dropping a turn keeps the chain.
struct Turn {
    /// Resolves (or errs: that record produces nothing) once the previous record's
    /// outputs are handed to the producer.
    after: Option<oneshot::Receiver<()>>,
    /// Dropped once this record's outputs are handed to the producer (or it has none).
    started: Option<oneshot::Sender<()>>,
}

impl Turn {
    /// The first turn of a partition, and the receiver the next turn waits on.
    fn next(after: Option<oneshot::Receiver<()>>) -> (Turn, oneshot::Receiver<()>) {
        let (started, next) = oneshot::channel();
        (
            Turn {
                after,
                started: Some(started),
            },
            next,
        )
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(started) = self.started.take() else {
            return;
        };
        match self.after.take() {
            // The previous record may still be waiting for its deferred work: pass the turn
            // on once it has started producing.
            Some(after) => match tokio::runtime::Handle::try_current() {
                Ok(handle) => drop(handle.spawn(async move {
                    let _ = after.await;
                    drop(started);
                })),
                Err(_) => drop(started),
            },
            None => drop(started),
        }
    }
}

/// Produce a record's outputs on its turn (see [`Turn`]).
async fn produce_in_turn<P: Processor>(
    shared: &Shared<P>,
    records: Vec<OutRecord>,
    mut turn: Turn,
) -> bool {
    if let Some(after) = turn.after.take() {
        let _ = after.await;
    }
    // The first poll hands every record to the producer (its queue keeps their order);
    // the rest is waiting for acknowledgements.
    let mut produce = std::pin::pin!(produce_all(shared, records, true));
    let first = futures::poll!(produce.as_mut());
    drop(turn);
    match first {
        std::task::Poll::Ready(ok) => ok,
        std::task::Poll::Pending => produce.await,
    }
}

/// What to do once a record's writes are acknowledged (its worker knows the partition).
struct Completion {
    offset: i64,
    /// The event id to mark done (a processed event; not a duplicate or dead letter).
    mark: Option<envelope::Id>,
    /// The stage's own idempotency keys to mark done with it.
    keys: Vec<envelope::Id>,
    start: Instant,
}

/// One partition's worker: three loops run concurrently, joined by bounded queues, so that
/// neither dedupe round trip holds up processing.
///
/// 1. [`read_ahead`] takes the records already queued, decodes them and looks their event
///    ids up in one round trip; while it waits, the next batch gathers.
/// 2. [`process_in_order`] processes records in order; their writes are pipelined (up to
///    `max_in_flight_per_partition` records awaiting acknowledgement), and completions are
///    taken strictly in order.
/// 3. [`complete_in_order`] marks the events of acknowledged records in one round trip per
///    batch and then stores the last offset, so an offset is stored only after every write
///    of that record and of all earlier records of the partition was acknowledged.
async fn worker<P: Processor>(
    shared: Arc<Shared<P>>,
    rx: mpsc::Receiver<Consumed>,
    processed: Counter,
    (topic, partition): (String, i32),
) {
    // One batch waits for processing while the next is looked up.
    let (ahead_tx, ahead_rx) = mpsc::channel(1);
    let (done_tx, done_rx) = mpsc::channel(COMPLETIONS_QUEUED);
    tokio::join!(
        read_ahead(&shared, rx, ahead_tx),
        process_in_order(&shared, ahead_rx, done_tx, &topic, partition),
        complete_in_order(&shared, done_rx, &processed, &topic, partition),
    );
}

/// Batches of completions queued for [`complete_in_order`] before processing waits.
const COMPLETIONS_QUEUED: usize = 16;

/// A record and what [`look_ahead`] learnt about it.
type Looked<I> = (Consumed, Ahead<I>);

/// Decode the queued records and look their event ids up, a batch at a time, in order; hand
/// on each batch whole (one move of the batch, not of each decoded record through a queue).
async fn read_ahead<P: Processor>(
    shared: &Shared<P>,
    mut rx: mpsc::Receiver<Consumed>,
    tx: mpsc::Sender<Vec<Looked<P::Input>>>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        if tx.send(look_ahead(shared, batch).await).await.is_err() {
            return; // processing ended (stopping, or the breaker opened)
        }
    }
}

/// The next looked-ahead record: the rest of the batch being taken, then the next batch.
/// Cancel-safe: it gives up only while waiting for a batch.
async fn next_ahead<T>(
    rx: &mut mpsc::Receiver<Vec<T>>,
    batch: &mut std::vec::IntoIter<T>,
) -> Option<T> {
    loop {
        if let Some(item) = batch.next() {
            return Some(item);
        }
        *batch = rx.recv().await?.into_iter();
    }
}

/// Process records in order and start their writes; hand completions on in order.
async fn process_in_order<P: Processor>(
    shared: &Arc<Shared<P>>,
    mut rx: mpsc::Receiver<Vec<Looked<P::Input>>>,
    done: mpsc::Sender<Vec<Completion>>,
    topic: &str,
    partition: i32,
) {
    use futures::StreamExt as _;
    let max = shared.args.max_in_flight_per_partition.max(1);
    let mut inflight: futures::stream::FuturesOrdered<InFlight> =
        futures::stream::FuturesOrdered::new();
    let mut open = true;
    let mut previous: Option<oneshot::Receiver<()>> = None;
    let mut batch = Vec::new().into_iter();
    let taking = |open: bool| open && !shared.health.breaker_open.load(Ordering::Relaxed);
    // With the breaker open, no new record is taken; writes already started are still
    // awaited, so their offsets are stored and their dead letters counted.
    while taking(open) || !inflight.is_empty() {
        tokio::select! {
            biased;
            first = inflight.next(), if !inflight.is_empty() => {
                // Every completion that is ready joins one batch (sized for all that can be,
                // rather than grown and copied completion by completion).
                let mut batch = Vec::with_capacity((inflight.len() + 1).min(BATCH));
                let mut ended = false;
                match first {
                    Some(Some(c)) => batch.push(c),
                    _ => ended = true,
                }
                while !ended && batch.len() < BATCH {
                    match inflight.next().now_or_never() {
                        Some(Some(Some(c))) => batch.push(c),
                        Some(Some(None)) => ended = true,
                        _ => break,
                    }
                }
                if !batch.is_empty() && done.send(batch).await.is_err() {
                    return;
                }
                // Stopping before the writes were acknowledged: leave the rest for redelivery.
                if ended {
                    return;
                }
            }
            item = next_ahead(&mut rx, &mut batch), if taking(open) && inflight.len() < max => match item {
                Some((msg, ahead)) => {
                    if shared.stopping.load(Ordering::Relaxed) {
                        return;
                    }
                    if shared.health.breaker_open.load(Ordering::Relaxed) {
                        continue; // not taken: redelivered after the stage restarts
                    }
                    let (turn, next) = Turn::next(previous.take());
                    previous = Some(next);
                    match prepare(shared, msg, ahead, turn).await {
                        Some((f, dead)) => {
                            let f = in_transaction(shared, f, topic, partition);
                            // Counted as decided, not as acknowledged: with writes in flight,
                            // a breaker fed by acks would open only after a whole
                            // `max_in_flight_per_partition` of dead letters was started.
                            note_outcome(shared, dead);
                            inflight.push_back(f);
                        }
                        None => return,
                    }
                }
                None => open = false,
            },
        }
    }
}

/// Mark and store the completions in order, merging the batches that queued meanwhile.
async fn complete_in_order<P: Processor>(
    shared: &Shared<P>,
    mut rx: mpsc::Receiver<Vec<Completion>>,
    processed: &Counter,
    topic: &str,
    partition: i32,
) {
    while let Some(mut batch) = rx.recv().await {
        while batch.len() < 4 * BATCH {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        complete(shared, batch, processed, topic, partition).await;
    }
}

/// Records taken (and completions marked) together at most, per partition.
const BATCH: usize = 256;

/// The writes of consecutive records are acknowledged: mark their events in one round trip,
/// store the last offset, time them.
async fn complete<P: Processor>(
    shared: &Shared<P>,
    batch: Vec<Completion>,
    processed: &Counter,
    topic: &str,
    partition: i32,
) {
    let Some(last) = batch.last() else {
        return;
    };
    // In transactional mode the offset and marks went to the transaction instead (see
    // `in_transaction`); they take effect when it commits.
    if shared.txn.is_none() {
        let ids: Vec<envelope::Id> = batch
            .iter()
            .filter_map(|c| c.mark.map(|id| (id, &c.keys)))
            .flat_map(|(id, keys)| keys.iter().copied().chain(P::DEDUPE.then_some(id)))
            .collect();
        if let Err(e) = shared.dedupe.mark_many(&ids).await {
            shared.metrics.dedupe_unavailable.inc();
            tracing::warn!(error = %e, records = batch.len(), "could not mark events done; a redelivery would be processed again");
        }
        if let Err(e) = shared.consumer.store_offset(topic, partition, last.offset) {
            // The partition was revoked meanwhile: the new owner reprocesses; dedupe skips it.
            tracing::debug!(error = %e, topic, partition, "offset not stored");
        }
    }
    for c in &batch {
        if c.mark.is_some() {
            processed.inc();
        }
        shared
            .metrics
            .processing_seconds
            .observe(c.start.elapsed().as_secs_f64());
    }
}

/// What [`look_ahead`] learnt about a record before its turn: the decoded input (none when
/// decoding failed: [`prepare`] decodes again and dead-letters or waits), whether the
/// dedupe store knew its event id, and its answer for the stage's own key
/// ([`Processor::idempotency_key`]).
struct Ahead<I> {
    input: Option<I>,
    stored: Option<Result<bool, crate::dedupe::DedupeUnavailable>>,
    key: Option<(envelope::Id, bool)>,
}

/// Decode a batch of one partition's records and look their event ids (and the stage's own
/// keys) up in the dedupe store in one round trip (instead of one or two per record).
async fn look_ahead<P: Processor>(
    shared: &Shared<P>,
    batch: Vec<Consumed>,
) -> Vec<Looked<P::Input>> {
    let mut out = Vec::with_capacity(batch.len());
    for msg in batch {
        let input = match msg.topic() {
            Some(topic) => {
                P::Input::decode(&shared.codec, topic, msg.payload().unwrap_or_default())
                    .await
                    .ok()
            }
            None => None,
        };
        out.push((
            msg,
            Ahead {
                input,
                stored: None,
                key: None,
            },
        ));
    }
    // (record, id, whether the id is the stage's own key rather than the event id)
    let mut ids: Vec<(usize, envelope::Id, bool)> = Vec::new();
    for (i, (_, a)) in out.iter().enumerate() {
        let Some(input) = &a.input else { continue };
        if P::DEDUPE {
            ids.push((i, input.metadata().event_id, false));
        }
        if let Some(key) = P::idempotency_key(input) {
            ids.push((i, crate::dedupe::key_id(&key), true));
        }
    }
    if ids.is_empty() {
        return out;
    }
    let just: Vec<envelope::Id> = ids.iter().map(|(_, id, _)| *id).collect();
    // On an error each record asks again on its turn (and counts the outage then).
    if let Ok(seen) = shared.dedupe.stored_many(&just).await {
        for ((i, id, own), s) in ids.into_iter().zip(seen) {
            if own {
                out[i].1.key = Some((id, s));
            } else {
                out[i].1.stored = Some(Ok(s));
            }
        }
    }
    out
}

/// In transactional mode, a record's writes run inside the open transaction (holding its
/// gate) and, once acknowledged, its offset and marks join the next commit.
fn in_transaction<P: Processor>(
    shared: &Arc<Shared<P>>,
    f: InFlight,
    topic: &str,
    partition: i32,
) -> InFlight {
    if shared.txn.is_none() {
        return f;
    }
    let (shared, topic) = (shared.clone(), topic.to_owned());
    Box::pin(async move {
        let _writing = shared.writing().await;
        let done = f.await;
        if let (Some(txn), Some(c)) = (&shared.txn, &done) {
            let marks = c.mark.into_iter().chain(c.keys.iter().copied());
            txn.completed(&topic, partition, c.offset, marks);
        }
        done
    })
}

/// Commit the open transaction every `every`; an error ends the task (and the stage).
async fn commit_every<P: Processor>(
    shared: std::sync::Weak<Shared<P>>,
    every: Duration,
) -> anyhow::Result<()> {
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = shared.upgrade() else {
            return Ok(());
        };
        if let Some(txn) = &shared.txn {
            txn.commit(&shared.producer, &shared.consumer, &shared.dedupe, true)
                .await?;
        }
    }
}

/// Feed the DLQ circuit breaker one record's outcome; open it above the threshold.
fn note_outcome<P: Processor>(shared: &Shared<P>, dead: bool) {
    let open = shared
        .breaker
        .lock()
        .map(|mut b| b.record(dead))
        .unwrap_or(false);
    if open && !shared.health.breaker_open.swap(true, Ordering::Relaxed) {
        shared.metrics.breaker_open.set(1);
        tracing::error!(
            threshold = shared.args.dlq_breaker_threshold,
            window = shared.args.dlq_breaker_window,
            "DLQ circuit breaker open: too many records dead-lettered; the stage stopped consuming"
        );
    }
}

fn backoff(args: &RuntimeArgs, attempt: u32) -> Duration {
    let base = args.retry_backoff_ms.saturating_mul(1 << attempt.min(10));
    let capped = base.min(30_000);
    let jitter = rand::random_range(0..=capped / 2 + 1);
    Duration::from_millis(capped / 2 + jitter)
}

/// Decode, dedupe and process one record (retrying retryable errors in place) and start its
/// writes: the outputs, or the dead letter. `None` when the stage is stopping.
async fn prepare<P: Processor>(
    shared: &Arc<Shared<P>>,
    msg: Consumed,
    mut ahead: Ahead<P::Input>,
    turn: Turn,
) -> Option<(InFlight, bool)> {
    let start = Instant::now();
    let group = P::GROUP.name();
    // Labels are built only on the paths that count something (not per processed record).
    let l = |msg: &Consumed| labels(group, msg.topic_name());
    let completion = move |mark: Option<envelope::Id>, msg: &Consumed| Completion {
        offset: msg.offset(),
        mark,
        keys: Vec::new(),
        start,
    };
    let dead_letter_later = move |msg: Consumed, f: Failure| -> InFlight {
        let shared = shared.clone();
        Box::pin(async move {
            let c = completion(None, &msg);
            dead_letter(&shared, &msg, f).await.then_some(c)
        })
    };
    let Some(topic) = msg.topic() else {
        let f = failure(
            "RUNTIME_UNKNOWN_TOPIC",
            format!("{} is not in topic-config.yaml", msg.topic_name()),
            1,
            Timestamp::now(),
        );
        return Some((dead_letter_later(msg, f), true));
    };
    let first = Timestamp::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let bytes = msg.payload().unwrap_or_default();
        let decoded = match ahead.input.take() {
            Some(i) => Ok(i),
            None => P::Input::decode(&shared.codec, topic, bytes).await,
        };
        let input = match decoded {
            Ok(i) => i,
            Err(e) if e.retryable() => {
                // The registry is down and the schema is not cached: wait, never drop.
                tracing::warn!(error = %e, attempt, "waiting for the schema registry");
                if !pause(shared, attempt).await {
                    return None;
                }
                continue;
            }
            Err(e) => {
                shared
                    .metrics
                    .failed
                    .get_or_create(&with_code(&l(&msg), e.code()))
                    .inc();
                let f = failure(e.code(), e.to_string(), attempt, first);
                return Some((dead_letter_later(msg, f), true));
            }
        };
        let meta = input.metadata();
        let event_id = meta.event_id;
        // The event's span is attached to the futures that run for it, never entered across
        // an await: a guard held over an await leaks into other tasks on the thread.
        let span = tracing::info_span!("event", event_id = %meta.event_id, correlation_id = %meta.correlation_id, org_id = meta.org_id);
        // In flight or done in this process (an earlier record of the batch, say) is known
        // here; otherwise the store's answer from the look-ahead, or a lookup now.
        let seen = if !P::DEDUPE {
            Ok(false)
        } else if shared.dedupe.seen_locally(event_id) {
            Ok(true)
        } else if let Some(stored) = ahead.stored.take() {
            stored
        } else {
            shared.dedupe.seen(event_id).instrument(span.clone()).await
        };
        match seen {
            Ok(true) => {
                shared.metrics.deduplicated.get_or_create(&l(&msg)).inc();
                let c = completion(None, &msg);
                return Some((Box::pin(async move { Some(c) }), false));
            }
            Ok(false) => {}
            Err(e) => {
                shared.metrics.dedupe_unavailable.inc();
                span.in_scope(|| {
                    tracing::warn!(error = %e, "dedupe store unavailable; processing at-least-once")
                });
            }
        }
        // In flight from here: a duplicate right behind it is skipped, not processed twice.
        if P::DEDUPE {
            shared.dedupe.reserve(event_id);
        }
        // The outputs copy what they need of the envelope: the input goes to the stage.
        let mut out = Outputs::new(&shared.codec, meta, &shared.source)
            .with_store(&shared.dedupe, &shared.metrics)
            .with_looked_up(ahead.key.take())
            .at(Position {
                topic,
                partition: msg.partition(),
                offset: msg.offset(),
            });
        match shared
            .processor
            .process(input, &mut out)
            .instrument(span.clone())
            .await
        {
            Ok(()) => {
                let deferred = out.take_deferred();
                let mut c = completion(Some(event_id), &msg);
                let shared = shared.clone();
                if deferred.is_empty() {
                    let (records, keys) = out.into_parts();
                    c.keys = keys;
                    let f: InFlight = Box::pin(async move {
                        produce_in_turn(&shared, records, turn).await.then_some(c)
                    });
                    return Some((f, false));
                }
                // Work handed over with `Outputs::defer`: the record completes (outputs,
                // offset) once it is done, with what the work emits then; its error
                // dead-letters the record.
                let pending = out.pend();
                let f: InFlight = Box::pin(async move {
                    let mut late = Vec::new();
                    let mut result = Ok(());
                    for work in deferred {
                        match work.wait().instrument(span.clone()).await {
                            Ok(l) => late.extend(l),
                            Err(e) => {
                                result = Err(e);
                                break;
                            }
                        }
                    }
                    let mut out = pending.resume(&shared.codec, &shared.source);
                    let result =
                        result.and_then(|()| late.into_iter().try_for_each(|l| l(&mut out)));
                    let (records, keys) = out.into_parts();
                    if let Err(e) = result {
                        for id in keys.into_iter().chain(P::DEDUPE.then_some(event_id)) {
                            shared.dedupe.release(id);
                        }
                        shared
                            .metrics
                            .failed
                            .get_or_create(&with_code(&labels(group, msg.topic_name()), e.code))
                            .inc();
                        let f = failure(e.code, e.message, attempt, first);
                        let dead = completion(None, &msg);
                        return dead_letter(&shared, &msg, f).await.then_some(dead);
                    }
                    c.keys = keys;
                    produce_in_turn(&shared, records, turn).await.then_some(c)
                });
                return Some((f, false));
            }
            Err(e) => {
                // Keys reserved by a failed attempt are not in flight any more.
                for id in out
                    .into_parts()
                    .1
                    .into_iter()
                    .chain(P::DEDUPE.then_some(event_id))
                {
                    shared.dedupe.release(id);
                }
                shared
                    .metrics
                    .failed
                    .get_or_create(&with_code(&l(&msg), e.code))
                    .inc();
                // A store that is down is waited for without limit; other retryable errors
                // get `--retry-attempts`.
                if e.waits || (e.retryable && attempt < shared.args.retry_attempts) {
                    shared.metrics.retried.get_or_create(&l(&msg)).inc();
                    let what = if e.waits {
                        "waiting for the stage's store"
                    } else {
                        "retrying"
                    };
                    span.in_scope(
                        || tracing::warn!(code = e.code, error = %e.message, attempt, "{what}"),
                    );
                    if !pause(shared, attempt).await {
                        return None;
                    }
                    continue;
                }
                let f = failure(e.code, e.message, attempt, first);
                return Some((dead_letter_later(msg, f), true));
            }
        }
    }
}

fn with_code(l: &Labels, code: &str) -> Labels {
    let mut l = l.clone();
    l.push(("code", code.to_owned()));
    l
}

fn failure(code: &str, message: impl Into<String>, attempts: u32, first: Timestamp) -> Failure {
    Failure {
        code: code.to_owned(),
        message: message.into(),
        attempts,
        first: first.to_string(),
        last: Timestamp::now().to_string(),
    }
}

/// Sleep the retry backoff; false when the stage is stopping.
async fn pause<P: Processor>(shared: &Shared<P>, attempt: u32) -> bool {
    tokio::time::sleep(backoff(&shared.args, attempt)).await;
    !shared.stopping.load(Ordering::Relaxed)
}

/// librdkafka's copy of `headers`, sized once instead of grown header by header.
fn owned_headers<'k, 'v>(
    headers: impl ExactSizeIterator<Item = (&'k str, &'v str)>,
) -> OwnedHeaders {
    let owned = OwnedHeaders::new_with_capacity(headers.len());
    headers.fold(owned, |h, (k, v)| {
        h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        })
    })
}

/// Send one output record; resolves once the broker acknowledged (or refused) it.
async fn send<P: Processor>(
    shared: &Shared<P>,
    r: &OutRecord,
) -> rdkafka::producer::future_producer::OwnedDeliveryResult {
    let headers = owned_headers(r.headers.iter());
    shared
        .producer
        .send(
            FutureRecord::to(r.topic)
                .partition(r.partition)
                .key(&r.key)
                .payload(&r.value)
                .headers(headers),
            Duration::from_secs(30),
        )
        .await
}

/// Produce records and wait for every acknowledgement, retrying failed sends until they are
/// acknowledged; false only when the stage is stopping. `counted`: the records are the
/// stage's outputs (counted in `adpipe_records_produced`), not its own run events.
async fn produce_all<P: Processor>(
    shared: &Shared<P>,
    records: Vec<OutRecord>,
    counted: bool,
) -> bool {
    let mut pending: Vec<OutRecord> = records;
    let mut attempt = 0;
    let refused = |r: &OutRecord, e: &KafkaError| {
        tracing::warn!(error = %e, topic = r.topic, "produce failed; retrying");
    };
    while !pending.is_empty() {
        attempt += 1;
        let results_len = pending.len();
        let failed: Vec<OutRecord> = if pending.len() == 1 {
            // One output (most stages): no futures to join, nothing to collect.
            match send(shared, &pending[0]).await {
                Ok(_) => Vec::new(),
                Err((e, _)) => {
                    refused(&pending[0], &e);
                    pending
                }
            }
        } else {
            let results = futures::future::join_all(pending.iter().map(|r| send(shared, r))).await;
            pending
                .into_iter()
                .zip(results)
                .filter_map(|(r, res)| match res {
                    Ok(_) => None,
                    Err((e, _)) => {
                        refused(&r, &e);
                        Some(r)
                    }
                })
                .collect()
        };
        if counted {
            shared
                .metrics
                .produced
                .inc_by((results_len - failed.len()) as u64);
        }
        shared.metrics.produce_retried.inc_by(failed.len() as u64);
        pending = failed;
        if !pending.is_empty() && !pause(shared, attempt).await {
            return false;
        }
    }
    true
}

/// Send the original record to `{topic}.dlq`; true once acknowledged.
async fn dead_letter<P: Processor>(shared: &Shared<P>, msg: &Consumed, failure: Failure) -> bool {
    let group = P::GROUP.name();
    let dlq = topics::TopicConfig::embedded().dlq_name(msg.topic_name());
    let timestamp = msg.timestamp().to_millis();
    let mut headers = dlq_headers(
        &failure,
        group,
        msg.topic_name(),
        msg.partition(),
        msg.offset(),
        timestamp,
    );
    // The input's CloudEvents headers and the loop guard's replay count travel into its
    // dead letter (`dlq::carried`), as UTF-8 (lossily).
    headers.extend(
        msg.carried()
            .map(|(name, value)| (name, String::from_utf8_lossy(value).into_owned())),
    );
    tracing::warn!(code = %failure.code, error = %failure.message, topic = msg.topic_name(), partition = msg.partition(), offset = msg.offset(), "dead-lettering record");
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut record = FutureRecord::<[u8], [u8]>::to(&dlq)
            .partition(msg.partition())
            .headers(owned_headers(headers.iter().map(|(k, v)| (*k, v.as_str()))));
        if let Some(k) = msg.key() {
            record = record.key(k);
        }
        if let Some(v) = msg.payload() {
            record = record.payload(v);
        }
        if let Some(ts) = timestamp {
            record = record.timestamp(ts);
        }
        match shared.producer.send(record, Duration::from_secs(30)).await {
            Ok(_) => {
                let l = with_code(&labels(group, msg.topic_name()), &failure.code);
                shared.metrics.dead_lettered.get_or_create(&l).inc();
                return true;
            }
            Err((e, _)) => {
                tracing::warn!(error = %e, dlq, "DLQ produce failed; retrying");
                if !pause(shared, attempt).await {
                    return false;
                }
            }
        }
    }
}

/// Emit one run event; true once acknowledged.
async fn emit_run<P: Processor>(
    shared: &Shared<P>,
    run: &Run,
    status: RunStatus,
    error: Option<String>,
) -> bool {
    let cause = system_cause(&shared.source, "adpipe.run");
    let mut out = Outputs::new(&shared.codec, &cause, &shared.source);
    let event = run.event(status, &shared.metrics, error);
    if let Err(e) = out.emit_new(0, event) {
        tracing::warn!(error = %e, "run event not encoded");
        return false;
    }
    let _writing = shared.writing().await;
    produce_all(shared, out.into_records(), false).await
}

/// `started` at once, then `progress` every `every`.
async fn report_runs<P: Processor>(shared: std::sync::Weak<Shared<P>>, run: Run, every: Duration) {
    let mut status = RunStatus::Started;
    loop {
        {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            emit_run(&shared, &run, status, None).await;
        }
        status = RunStatus::Progress;
        tokio::time::sleep(every).await;
    }
}

/// Every `every`: the processor's tick on the partitions this instance owns, its outputs
/// produced and acknowledged before the next tick.
async fn ticker<P: Processor>(shared: std::sync::Weak<Shared<P>>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await; // the first tick completes at once; the stage just started
    loop {
        interval.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let assigned: Vec<(Topic, i32)> = shared
            .consumer
            .assignment()
            .map(|tpl| {
                tpl.elements()
                    .iter()
                    .filter_map(|e| Some((Topic::from_name(e.topic())?, e.partition())))
                    .collect()
            })
            .unwrap_or_default();
        if assigned.is_empty() || shared.health.breaker_open.load(Ordering::Relaxed) {
            continue;
        }
        let tick = Tick {
            at: Timestamp::now(),
            assigned,
        };
        let cause = system_cause(&shared.source, "adpipe.tick");
        let mut out = Outputs::new(&shared.codec, &cause, &shared.source);
        match shared.processor.tick(&tick, &mut out).await {
            Ok(()) => {
                let records = out.into_records();
                let n = records.len();
                let _writing = shared.writing().await;
                if produce_all(&shared, records, true).await && n > 0 {
                    tracing::info!(records = n, "tick flushed");
                }
            }
            Err(e) => {
                tracing::warn!(code = e.code, error = %e.message, "tick failed; the next one tries again")
            }
        }
    }
}

/// Every 5 s: high watermark minus position per assigned partition.
async fn track_lag(
    consumer: std::sync::Weak<Consumer_>,
    metrics: Arc<Metrics>,
    group: &'static str,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let Some(c) = consumer.upgrade() else { return };
        let lags = tokio::task::spawn_blocking(move || {
            let Ok(positions) = c.position() else {
                return Vec::new();
            };
            positions
                .elements()
                .iter()
                .filter_map(|e| {
                    let (_, high) = c
                        .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(2))
                        .ok()?;
                    let pos = match e.offset() {
                        Offset::Offset(o) => o,
                        _ => return None,
                    };
                    Some((e.topic().to_owned(), e.partition(), (high - pos).max(0)))
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (topic, partition, lag) in lags {
            let l = vec![
                ("group", group.to_owned()),
                ("topic", topic.clone()),
                ("partition", partition.to_string()),
            ];
            metrics.lag.get_or_create(&l).set(lag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_above_the_threshold_over_a_full_window() {
        let mut b = Breaker {
            window: 4,
            threshold: 0.5,
            outcomes: VecDeque::new(),
            dead: 0,
        };
        assert!(!b.record(true));
        assert!(!b.record(true));
        assert!(!b.record(true), "window not full yet");
        assert!(b.record(false), "3 of 4 dead > 50 %");
        let mut b = Breaker {
            window: 4,
            threshold: 0.5,
            outcomes: VecDeque::new(),
            dead: 0,
        };
        for dead in [true, false, true, false, false, true] {
            assert!(!b.record(dead), "never above 50 %");
        }
        let mut off = Breaker {
            window: 0,
            threshold: 0.0,
            outcomes: VecDeque::new(),
            dead: 0,
        };
        assert!(!off.record(true));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let args = RuntimeArgs::for_tests("x");
        let d1 = backoff(&args, 1);
        let d5 = backoff(&args, 5);
        assert!(d1 <= Duration::from_millis(25), "{d1:?}");
        assert!(d5 >= Duration::from_millis(160), "{d5:?}");
        assert!(backoff(&args, 40) <= Duration::from_millis(30_001));
    }
}
