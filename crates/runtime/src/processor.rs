//! The contract between a stage and the runtime: a [`Processor`] maps one input event to zero
//! or more output events (collected in [`Outputs`]) or to a [`ProcessError`] that says whether
//! a retry can help.

use std::{future::Future, pin::Pin, time::Duration};

use envelope::{
    Codec, DecodeError, EncodeError, Event, EventMetadata, Id, Payload, Source, Timestamp,
};
use topics::{ConsumerGroup, Topic, partition_for};

use crate::{
    dedupe::{Dedupe, key_id},
    metrics::Metrics,
};

/// Why a stage could not process an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProcessError {
    /// Stable code, written to the DLQ header `dlq.error.code`.
    pub code: &'static str,
    /// What went wrong, for people (never PII).
    pub message: String,
    /// Whether retrying the same event later can succeed.
    pub retryable: bool,
    /// A dependency the stage cannot work without is down (its store): the record waits,
    /// retried with capped backoff for as long as it takes, and never goes to the DLQ.
    pub waits: bool,
}

impl ProcessError {
    /// An error that retrying cannot fix: the event goes to the DLQ at once.
    pub fn permanent(code: &'static str, message: impl Into<String>) -> ProcessError {
        ProcessError {
            code,
            message: message.into(),
            retryable: false,
            waits: false,
        }
    }

    /// An error that may pass (a flaky call): retried with backoff `--retry-attempts` times,
    /// then the record goes to the DLQ.
    pub fn retryable(code: &'static str, message: impl Into<String>) -> ProcessError {
        ProcessError {
            code,
            message: message.into(),
            retryable: true,
            waits: false,
        }
    }

    /// The stage's own store is unreachable: no record can be processed until it is back,
    /// so the record waits (its partition with it) instead of going to the DLQ.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> ProcessError {
        ProcessError {
            code,
            message: message.into(),
            retryable: true,
            waits: true,
        }
    }
}

impl From<DecodeError> for ProcessError {
    fn from(e: DecodeError) -> Self {
        ProcessError {
            code: e.code(),
            message: e.to_string(),
            retryable: e.retryable(),
            waits: false,
        }
    }
}

impl From<EncodeError> for ProcessError {
    fn from(e: EncodeError) -> Self {
        ProcessError {
            code: e.code(),
            message: e.to_string(),
            retryable: e.retryable(),
            waits: false,
        }
    }
}

/// What a stage consumes: one event type (`Event<P>`), or an enum over several topics.
pub trait Input: Sized + Send + 'static {
    /// The topics this input is read from.
    fn topics() -> Vec<Topic>;

    /// Decode a record of `topic`.
    fn decode(
        codec: &Codec,
        topic: Topic,
        bytes: &[u8],
    ) -> impl Future<Output = Result<Self, DecodeError>> + Send;

    /// The envelope of the decoded event.
    fn metadata(&self) -> &EventMetadata;
}

impl<P: Payload> Input for Event<P> {
    fn topics() -> Vec<Topic> {
        vec![P::TOPIC]
    }

    async fn decode(codec: &Codec, _topic: Topic, bytes: &[u8]) -> Result<Self, DecodeError> {
        codec.decode::<P>(bytes).await
    }

    fn metadata(&self) -> &EventMetadata {
        &self.metadata
    }
}

/// Declare a stage's input over several topics: an enum with one `Event<P>` variant per
/// payload, implementing [`Input`] (its topics are the payloads' topics; a record is decoded
/// as the payload of the topic it was read from).
///
/// ```ignore
/// runtime::inputs! {
///     /// What gold consumes.
///     pub enum GoldInput {
///         /// A typed, scored row.
///         Row(ProcessedRow),
///         /// A configuration change.
///         Config(ConfigChange),
///     }
/// }
/// ```
#[macro_export]
macro_rules! inputs {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident($payload:ty)),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        $vis enum $name {
            $($(#[$vmeta])* $variant($crate::__private::envelope::Event<$payload>)),+
        }

        impl $crate::Input for $name {
            fn topics() -> Vec<$crate::__private::topics::Topic> {
                vec![$(<$payload as $crate::__private::envelope::Payload>::TOPIC),+]
            }

            async fn decode(
                codec: &$crate::__private::envelope::Codec,
                topic: $crate::__private::topics::Topic,
                bytes: &[u8],
            ) -> Result<Self, $crate::__private::envelope::DecodeError> {
                $(
                    if topic == <$payload as $crate::__private::envelope::Payload>::TOPIC {
                        return Ok($name::$variant(codec.decode(bytes).await?));
                    }
                )+
                Err($crate::__private::envelope::DecodeError::IncompatibleSchema {
                    id: 0,
                    writer: topic.name().to_owned(),
                    reader: stringify!($name).to_owned(),
                    reason: "not one of the stage's input topics".to_owned(),
                })
            }

            fn metadata(&self) -> &$crate::__private::envelope::EventMetadata {
                match self {
                    $($name::$variant(e) => &e.metadata),+
                }
            }
        }
    };
}

/// Where an input record was read. A stage whose state must reflect each input once (gold)
/// stores the offset with the state it changed, so a replayed record is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Input topic.
    pub topic: Topic,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// A timer tick (see [`Processor::tick`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    /// When the tick fired.
    pub at: Timestamp,
    /// The input partitions this instance owns now: a tick works on their keys only, so
    /// replicas of a stage never emit the same flush twice.
    pub assigned: Vec<(Topic, i32)>,
}

/// A stage: business logic only. The runtime does the rest.
///
/// Only [`Processor::process`] is required. The optional hooks: [`Processor::start`] once
/// before consuming (migrations, connections, loading configuration), and
/// [`Processor::tick`] every [`Processor::tick_interval`] (flushes, day rollovers).
/// Configuration updates reach a stage as events: a stage that follows `config.changes` makes
/// it one of its [`Input`] topics and applies each change in order with its data.
pub trait Processor: Send + Sync + 'static {
    /// What the stage consumes.
    type Input: Input;

    /// The consumer group (from topic-config.yaml).
    const GROUP: ConsumerGroup;

    /// Whether the runtime skips events whose `event_id` this stage already processed (Redis
    /// or in memory). A stage whose own store is keyed by `event_id` (the audit writer's
    /// table) turns it off: a redelivery is a no-op there anyway, and each record saves two
    /// round trips to the dedupe store.
    const DEDUPE: bool = true;

    /// Records the consumer prefetches at most unless `--fetch-buffer-records` says
    /// otherwise (librdkafka's `queued.min.messages`; its default). A slow stage with small
    /// records lowers it: librdkafka keeps ~175 bytes of bookkeeping per prefetched record,
    /// which for 150-byte records doubles what `--fetch-buffer-kib` allows, while a fast
    /// stage needs a deep prefetch to keep the broker busy.
    const PREFETCH_RECORDS: u64 = 100_000;

    /// Topics the stage produces (their schemas are registered at start).
    fn outputs() -> Vec<Topic>;

    /// The idempotency key of its own that the stage will ask [`Outputs::seen_key`] about
    /// for `input` (bronze: a pulled row's `request_id/row_index`), if any. Declared here,
    /// it is looked up with the event ids of the records queued ahead of it, one round trip
    /// for a batch, and `seen_key` answers without one; undeclared, `seen_key` asks the
    /// store on the record's turn. A key this process has in flight or marked is seen
    /// either way.
    fn idempotency_key(_input: &Self::Input) -> Option<String> {
        None
    }

    /// Process one event; emit outputs into `out`. Called in order per partition.
    fn process(
        &self,
        input: Self::Input,
        out: &mut Outputs<'_>,
    ) -> impl Future<Output = Result<(), ProcessError>> + Send;

    /// Runs once before the stage consumes; an error stops the binary with the message.
    fn start(&self) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { Ok(()) }
    }

    /// Register the stage's own metrics, served on `/metrics` beside the runtime's (their
    /// names belong in the stage's one metrics module).
    fn register_metrics(&self, _registry: &mut prometheus_client::registry::Registry) {}

    /// How often [`Processor::tick`] runs; `None` (the default): never.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// A timer tick: emit with [`Outputs::emit_new`]. Outputs are produced and acknowledged
    /// before the next tick; an error is logged and the next tick tries again.
    fn tick(
        &self,
        _tick: &Tick,
        _out: &mut Outputs<'_>,
    ) -> impl Future<Output = Result<(), ProcessError>> + Send {
        async { Ok(()) }
    }
}

/// The id of the `index`-th output of the input `cause`: a UUID v5 of both, so processing the
/// same input again (a redelivery after a crash) yields the same output ids, which consumers
/// downstream deduplicate.
pub fn derived_id(cause: Id, index: usize) -> Id {
    let mut name = [0u8; 24];
    name[..16].copy_from_slice(cause.0.as_bytes());
    name[16..].copy_from_slice(&(index as u64).to_be_bytes());
    Id(uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &name))
}

/// A W3C `traceparent` for an event that arrived without one: the trace id is the
/// correlation id (so one report pull is one trace), the span id comes from the event id
/// (the last 16 hex digits of its simple form, in reverse order).
pub fn traceparent(m: &EventMetadata) -> String {
    traceparent_of(m.correlation_id, m.event_id)
}

fn traceparent_of(correlation_id: Id, event_id: Id) -> String {
    let mut trace = uuid::Uuid::encode_buffer();
    let trace = correlation_id.0.simple().encode_lower(&mut trace);
    let mut id = uuid::Uuid::encode_buffer();
    let id = event_id.0.simple().encode_lower(&mut id).as_bytes();
    let mut span = [0u8; 16];
    for (to, from) in span.iter_mut().zip(id.iter().rev()) {
        *to = *from;
    }
    let mut out = String::with_capacity(55);
    out.push_str("00-");
    out.push_str(trace);
    out.push('-');
    // Hex digits: ASCII.
    out.push_str(std::str::from_utf8(&span).unwrap_or_default());
    out.push_str("-01");
    out
}

/// Header names of every record a stage produces: the CloudEvents (Kafka binding)
/// attributes, the correlation id and the W3C trace context.
pub mod headers {
    /// `ce_specversion` (always `1.0`).
    pub const SPECVERSION: &str = "ce_specversion";
    /// `ce_id`: the event id.
    pub const ID: &str = "ce_id";
    /// `ce_type`: the event type.
    pub const TYPE: &str = "ce_type";
    /// `ce_source`: the producing service.
    pub const SOURCE: &str = "ce_source";
    /// `ce_time`: the event time.
    pub const TIME: &str = "ce_time";
    /// The correlation id (one report pull or user action).
    pub const CORRELATION_ID: &str = "correlation_id";
    /// The W3C `traceparent`.
    pub const TRACEPARENT: &str = "traceparent";
    /// The payload's contract version (`metadata.event_version`, e.g. `1.1.0`): which
    /// version of the schema a record was written for, readable without decoding it.
    pub const EVENT_VERSION: &str = "event_version";
    /// All of them, in the order they are written.
    pub const ALL: [&str; 8] = [
        SPECVERSION,
        ID,
        TYPE,
        SOURCE,
        TIME,
        CORRELATION_ID,
        TRACEPARENT,
        EVENT_VERSION,
    ];
}

/// One record ready to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Topic name.
    pub topic: &'static str,
    /// Partition from the project partitioner.
    pub partition: i32,
    /// Record key: the org id (or pipeline id) as text.
    pub key: String,
    /// Confluent-framed Avro value.
    pub value: Vec<u8>,
    /// Headers: CloudEvents attributes and the correlation id.
    pub headers: RecordHeaders,
}

/// The headers of an output record: every one of [`headers::ALL`], in that order. The values
/// share one buffer (one allocation per record instead of one per header).
#[derive(Clone, PartialEq, Eq)]
pub struct RecordHeaders {
    values: String,
    /// Where each header's value ends in `values`.
    ends: [usize; headers::ALL.len()],
}

impl RecordHeaders {
    /// The headers of the record of `m`.
    pub fn of(m: &EventMetadata) -> RecordHeaders {
        let traceparent = m.traceparent.as_deref().unwrap_or_default();
        let mut values = String::with_capacity(
            3 + 2 * uuid::fmt::Hyphenated::LENGTH
                + m.event_type.len()
                + m.source.service.len()
                + Timestamp::RFC3339_MILLIS_LEN
                + traceparent.len()
                + m.event_version.len(),
        );
        let mut ends = [0; headers::ALL.len()];
        let mut id = uuid::Uuid::encode_buffer();
        let mut end = |values: &mut String, i: usize| ends[i] = values.len();
        // In the order of `headers::ALL`.
        values.push_str("1.0");
        end(&mut values, 0);
        values.push_str(m.event_id.0.hyphenated().encode_lower(&mut id));
        end(&mut values, 1);
        values.push_str(&m.event_type);
        end(&mut values, 2);
        values.push_str(&m.source.service);
        end(&mut values, 3);
        m.timestamp.write_rfc3339_millis(&mut values);
        end(&mut values, 4);
        values.push_str(m.correlation_id.0.hyphenated().encode_lower(&mut id));
        end(&mut values, 5);
        values.push_str(traceparent);
        end(&mut values, 6);
        values.push_str(&m.event_version);
        end(&mut values, 7);
        RecordHeaders { values, ends }
    }

    /// Each header's name and value, in the order they are written.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&'static str, &str)> + '_ {
        headers::ALL.iter().enumerate().map(|(i, name)| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            (*name, &self.values[start..self.ends[i]])
        })
    }

    /// The value of the header `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none (never: every record has all of them).
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

impl std::fmt::Debug for RecordHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Work a stage handed elsewhere for an input (the audit writer's batched insert, gold's
/// batched rows): the runtime awaits it after [`Processor::process`] returned and before the
/// input's outputs are produced and its offset stored. See [`Outputs::defer`] and
/// [`Outputs::defer_outputs`].
///
/// The future sits behind a mutex only so that [`Outputs`] stays `Sync` (a stage may hold
/// `&Outputs` across an await); it is never polled through a shared reference.
pub struct Deferred(std::sync::Mutex<Pin<Box<DeferredWork>>>);

type DeferredWork = dyn Future<Output = Result<Option<Late>, ProcessError>> + Send + 'static;

/// Outputs a stage decides only once its deferred work is done (gold's aggregates, read after
/// its batch is written): called on the input's [`Outputs`], after what `process` emitted.
pub type Late = Box<dyn FnOnce(&mut Outputs<'_>) -> Result<(), ProcessError> + Send>;

impl Deferred {
    /// Wait for the work; what it emits once done, if anything.
    pub async fn wait(self) -> Result<Option<Late>, ProcessError> {
        let work = self.0.into_inner().unwrap_or_else(|p| p.into_inner());
        work.await
    }
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deferred")
    }
}

/// The [`Outputs`] of an input whose work was deferred, set aside until that work is done
/// ([`Outputs::pend`], [`Pending::resume`]).
#[derive(Debug)]
pub struct Pending {
    cause: Cause,
    position: Option<Position>,
    records: Vec<OutRecord>,
    marks: Vec<Id>,
}

impl Pending {
    /// The outputs again, to emit what the deferred work decided.
    pub fn resume<'a>(self, codec: &'a Codec, source: &'a Source) -> Outputs<'a> {
        Outputs {
            codec,
            cause: self.cause,
            source,
            records: self.records,
            store: None,
            looked_up: None,
            marks: self.marks,
            position: self.position,
            deferred: Vec::new(),
        }
    }

    /// The idempotency keys reserved so far.
    pub fn marks(&self) -> &[Id] {
        &self.marks
    }
}

/// The outputs of processing one input event: each emitted event is caused by the input
/// (same org, correlation id and trace), encoded at once, and partitioned by its key.
///
/// A stage with an idempotency key of its own (bronze drops a report row pulled twice) asks
/// [`Outputs::seen_key`] and calls [`Outputs::mark_when_acked`]: the runtime stores the key
/// only once this event's outputs are acknowledged, so a crash in between never loses a row.
#[derive(Debug)]
pub struct Outputs<'a> {
    codec: &'a Codec,
    cause: Cause,
    source: &'a Source,
    records: Vec<OutRecord>,
    store: Option<(&'a Dedupe, &'a Metrics)>,
    /// The store's answer for the stage's idempotency key, looked up ahead of the record's
    /// turn (see [`Processor::idempotency_key`]).
    looked_up: Option<(Id, bool)>,
    marks: Vec<Id>,
    position: Option<Position>,
    deferred: Vec<Deferred>,
}

/// What the outputs of an input take from its envelope (copied, so that the input itself can
/// be handed to the stage).
#[derive(Debug)]
struct Cause {
    event_id: Id,
    correlation_id: Id,
    org_id: i64,
    traceparent: Option<String>,
}

impl<'a> Outputs<'a> {
    /// Outputs of an event with envelope `cause`, produced by `source`.
    pub fn new(codec: &'a Codec, cause: &EventMetadata, source: &'a Source) -> Outputs<'a> {
        Outputs {
            codec,
            cause: Cause {
                event_id: cause.event_id,
                correlation_id: cause.correlation_id,
                org_id: cause.org_id,
                traceparent: cause.traceparent.clone(),
            },
            source,
            records: Vec::new(),
            store: None,
            looked_up: None,
            marks: Vec::new(),
            position: None,
            deferred: Vec::new(),
        }
    }

    /// Outputs of the input read at `position`.
    pub fn at(mut self, position: Position) -> Outputs<'a> {
        self.position = Some(position);
        self
    }

    /// Where the input was read (`None` for a tick's outputs).
    pub fn position(&self) -> Option<Position> {
        self.position
    }

    /// Where the input was read, for a stage that stores it with its state (gold, the rule
    /// evaluator); an error (to the DLQ) where there is none.
    pub fn input_position(&self) -> Result<Position, ProcessError> {
        self.position.ok_or_else(|| {
            ProcessError::permanent(
                "NO_INPUT_POSITION",
                "this stage counts each input once by its offset, and the input has none",
            )
        })
    }

    /// With the stage's dedupe store (for [`Outputs::seen_key`]).
    pub fn with_store(mut self, dedupe: &'a Dedupe, metrics: &'a Metrics) -> Outputs<'a> {
        self.store = Some((dedupe, metrics));
        self
    }

    /// With the store's answer for the key `id`, looked up ahead of this input's turn.
    pub fn with_looked_up(mut self, looked_up: Option<(Id, bool)>) -> Outputs<'a> {
        self.looked_up = looked_up;
        self
    }

    /// Whether the stage's idempotency `key` was done before (or is in flight). False without
    /// a store, and when the store is down (at-least-once, with a warning and a metric).
    pub async fn seen_key(&self, key: &str) -> bool {
        let Some((dedupe, metrics)) = self.store else {
            return false;
        };
        let id = key_id(key);
        // In flight or marked here since the look-ahead (an earlier record of the batch) is
        // known locally; otherwise the look-ahead's answer, or a round trip now.
        let answer = match self.looked_up {
            _ if dedupe.seen_locally(id) => Ok(true),
            Some((looked, seen)) if looked == id => Ok(seen),
            _ => dedupe.seen(id).await,
        };
        match answer {
            Ok(seen) => seen,
            Err(e) => {
                metrics.dedupe_unavailable.inc();
                tracing::warn!(error = %e, key, "dedupe store unavailable; processing at-least-once");
                false
            }
        }
    }

    /// Remember `key` as done once this event's outputs are acknowledged; until then later
    /// events of this process see it as in flight.
    pub fn mark_when_acked(&mut self, key: &str) {
        let id = key_id(key);
        if let Some((dedupe, _)) = self.store {
            dedupe.reserve(id);
        }
        self.marks.push(id);
    }

    /// Complete this input only once `work` is done: the runtime awaits it after `process`
    /// returned, then produces the outputs and stores the offset. Meanwhile the partition's
    /// next records are processed (up to `--max-in-flight-per-partition` awaiting), so a stage
    /// can gather the work of many inputs into one write (the audit writer's batches) while
    /// offsets still pass a record only after its work is done. `work` must wait out
    /// transient failures itself (retrying, reconnecting); an error it returns dead-letters
    /// the input with that code and message. `work` is polled by the partition's worker,
    /// only while that worker is not processing a record: work that holds something other
    /// partitions wait for (a shared connection, a lock) belongs in a task of its own
    /// (`tokio::spawn`), with `work` awaiting it.
    pub fn defer(&mut self, work: impl Future<Output = Result<(), ProcessError>> + Send + 'static) {
        self.deferred
            .push(Deferred(std::sync::Mutex::new(Box::pin(async move {
                work.await.map(|()| None)
            }))));
    }

    /// As [`Outputs::defer`], for work that decides outputs of this input once it is done:
    /// `work` resolves to a [`Late`] that the runtime calls on these outputs (event ids
    /// still derived from the input, after those emitted in `process`) before producing
    /// them. Gold gathers many inputs' rows into one statement this way and emits each
    /// input's aggregates from what the statement wrote.
    pub fn defer_outputs(
        &mut self,
        work: impl Future<Output = Result<Late, ProcessError>> + Send + 'static,
    ) {
        self.deferred
            .push(Deferred(std::sync::Mutex::new(Box::pin(async move {
                work.await.map(Some)
            }))));
    }

    /// Take the work handed over with [`Outputs::defer`], in order.
    pub fn take_deferred(&mut self) -> Vec<Deferred> {
        std::mem::take(&mut self.deferred)
    }

    /// Count a row the stage quarantined (reported in metrics and run events).
    pub fn count_quarantined(&self) {
        if let Some((_, metrics)) = self.store {
            metrics.quarantined.inc();
        }
    }

    /// Emit `payload` as a new event caused by the input: what [`Event::caused_by`] makes of
    /// it, with the event id derived from the input's ([`derived_id`]) and, when the input
    /// had none, a [`traceparent`].
    pub fn emit<P: Payload>(&mut self, payload: P) -> Result<(), ProcessError> {
        let cause = &self.cause;
        let event_id = derived_id(cause.event_id, self.records.len());
        let traceparent = match &cause.traceparent {
            Some(t) => t.clone(),
            None => traceparent_of(cause.correlation_id, event_id),
        };
        let event = Event {
            metadata: EventMetadata {
                event_id,
                event_type: P::TOPIC.name().to_owned(),
                event_version: P::VERSION.to_owned(),
                timestamp: Timestamp::now(),
                source: self.source.clone(),
                correlation_id: cause.correlation_id,
                org_id: cause.org_id,
                causation_id: Some(cause.event_id),
                traceparent: Some(traceparent),
            },
            payload,
        };
        self.emit_event(&event)
    }

    /// Emit `payload` as a new event of `org_id`, caused by nothing the stage consumed (a
    /// tick's flush): fresh event and correlation ids.
    pub fn emit_new<P: Payload>(&mut self, org_id: i64, payload: P) -> Result<(), ProcessError> {
        let mut event = Event::new(org_id, self.source.clone(), payload);
        event.metadata.traceparent = Some(traceparent(&event.metadata));
        self.emit_event(&event)
    }

    /// Emit a fully built event (its envelope is kept as is).
    pub fn emit_event<P: Payload>(&mut self, event: &Event<P>) -> Result<(), ProcessError> {
        let value = self.codec.encode(event)?;
        let m = &event.metadata;
        let partition = partition_for(event.partition_key(), P::TOPIC.spec().partitions);
        self.records.push(OutRecord {
            topic: P::TOPIC.name(),
            partition,
            key: event.record_key(),
            value,
            headers: RecordHeaders::of(m),
        });
        Ok(())
    }

    /// The records emitted so far.
    pub fn records(&self) -> &[OutRecord] {
        &self.records
    }

    /// Take the records.
    pub fn into_records(self) -> Vec<OutRecord> {
        self.records
    }

    /// Take the records and the idempotency keys to mark once they are acknowledged.
    pub fn into_parts(self) -> (Vec<OutRecord>, Vec<Id>) {
        (self.records, self.marks)
    }

    /// Set these outputs aside while the input's deferred work runs (see [`Pending`]).
    pub fn pend(self) -> Pending {
        Pending {
            cause: self.cause,
            position: self.position,
            records: self.records,
            marks: self.marks,
        }
    }
}

#[cfg(test)]
mod tests {
    use envelope::payload::audit::AuditEvent;
    use proptest::prelude::*;

    use super::*;

    /// How `traceparent` was first written (character by character).
    fn traceparent_by_chars(m: &EventMetadata) -> String {
        let trace = m.correlation_id.0.simple().to_string();
        let span: String = m
            .event_id
            .0
            .simple()
            .to_string()
            .chars()
            .rev()
            .take(16)
            .collect();
        format!("00-{trace}-{span}-01")
    }

    /// The headers as they were first written, one string each.
    fn headers_one_by_one(m: &EventMetadata) -> Vec<(&'static str, String)> {
        vec![
            (headers::SPECVERSION, "1.0".to_owned()),
            (headers::ID, m.event_id.to_string()),
            (headers::TYPE, m.event_type.clone()),
            (headers::SOURCE, m.source.service.clone()),
            (headers::TIME, m.timestamp.to_string()),
            (headers::CORRELATION_ID, m.correlation_id.to_string()),
            (
                headers::TRACEPARENT,
                m.traceparent.clone().unwrap_or_default(),
            ),
            (headers::EVENT_VERSION, m.event_version.clone()),
        ]
    }

    proptest! {
        #[test]
        fn traceparent_and_headers_are_what_they_were(m in any::<EventMetadata>()) {
            prop_assert_eq!(traceparent(&m), traceparent_by_chars(&m));
            let h = RecordHeaders::of(&m);
            let now: Vec<(&str, String)> = h.iter().map(|(k, v)| (k, v.to_owned())).collect();
            prop_assert_eq!(now, headers_one_by_one(&m));
            let id = m.event_id.to_string();
            prop_assert_eq!(h.get(headers::ID), Some(id.as_str()));
            prop_assert_eq!(h.len(), headers::ALL.len());
        }

        #[test]
        fn emit_makes_the_event_caused_by_the_input(
            cause in any::<EventMetadata>(),
            payload in any::<AuditEvent>(),
        ) {
            let codec = Codec::offline();
            let source = Source { service: "s".into(), instance: "i".into() };
            let mut out = Outputs::new(&codec, &cause, &source);
            out.emit(payload.clone()).expect("emit");
            out.emit(payload.clone()).expect("emit");
            for (index, r) in out.records().iter().enumerate() {
                let got = codec.decode_known::<AuditEvent>(&r.value).expect("decode");
                // What `emit` did before: `Event::caused_by`, then the derived id and a
                // traceparent when the input had none.
                let mut want = Event::caused_by(&cause, source.clone(), payload.clone());
                want.metadata.event_id = derived_id(cause.event_id, index);
                if want.metadata.traceparent.is_none() {
                    want.metadata.traceparent = Some(traceparent(&want.metadata));
                }
                want.metadata.timestamp = got.metadata.timestamp;
                prop_assert_eq!(&got, &want);
                let listed: Vec<(&str, String)> =
                    r.headers.iter().map(|(k, v)| (k, v.to_owned())).collect();
                prop_assert_eq!(listed, headers_one_by_one(&want.metadata));
            }
        }
    }
}
