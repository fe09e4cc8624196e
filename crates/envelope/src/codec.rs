//! The codec: typed events to and from Avro in Confluent wire format.
//!
//! Schemas are parsed once and kept for the life of the process (they are few and small), so
//! the hot path neither parses nor looks up anything but a hash map: encoding serialises
//! straight from the Rust value into the output buffer, and decoding a record written with
//! the reader's own schema deserialises straight from the bytes — both through the codec's
//! own compiled form of the schema (the private `fast` module), and through apache-avro for
//! whatever that does not handle. Records written with another version of the schema go
//! through Avro schema resolution (writer → reader).
//!
//! A topic may carry several major versions of its schema side by side (a breaking change,
//! `value_schema_majors` in `topic-config.yaml`), each a record of its own name under a
//! subject of its own. The codec knows each writer schema's major by its record name; a
//! record of another major than the reader's is handed to the reader's
//! [`Payload::read_major`], which upcasts the majors it replaces.

use std::{
    collections::HashMap,
    hash::{BuildHasher, Hasher},
    sync::{
        Arc, Once, OnceLock, RwLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use apache_avro::{Schema, reader::datum::GenericDatumReader, writer::datum::GenericDatumWriter};
use topics::Topic;

use crate::{
    error::{DecodeError, EncodeError, RegistryError},
    event::{Event, Payload},
    fast,
    registry::RegistryClient,
    wire,
};

/// Largest allocation the Avro decoder may make for one string, bytes or collection: far
/// above any Kafka record, far below what a forged length could make it try.
pub const MAX_ALLOCATION_BYTES: usize = 64 * 1024 * 1024;

struct Reader {
    schema: &'static Schema,
    /// The schema with decimal logical types relaxed to plain bytes (see [`relax_decimals`]).
    relaxed: &'static Schema,
    record: String,
    /// Shared with the writers of the same schema, so a record of the reader's own schema is
    /// recognised by pointer (see [`Codec::decode_with`]).
    canonical: Arc<str>,
    /// The standalone schema JSON, as registered.
    json: String,
    direct: GenericDatumReader<'static>,
    writer: GenericDatumWriter<'static>,
    /// The schema compiled for the fast encoder (see [`crate::fast`]).
    plan: Option<fast::Plan>,
    /// The length of the last record encoded with this schema (a size hint for the next).
    encoded_len: AtomicUsize,
}

struct Writer {
    schema: &'static Schema,
    json: String,
    record: String,
    canonical: Arc<str>,
    /// The topic and major version whose record this schema writes, when this codec's
    /// catalog has one of that name.
    major: Option<(Topic, u32)>,
    /// Records decoded with this writer schema (see [`Codec::schema_usage`]).
    decoded: AtomicU64,
    /// The topic, `event_version` and deprecation of the first record decoded with it.
    seen: OnceLock<(Topic, String, bool)>,
}

impl Writer {
    fn new(
        schema: &'static Schema,
        json: String,
        record: String,
        canonical: Arc<str>,
        major: Option<(Topic, u32)>,
    ) -> Writer {
        Writer {
            schema,
            json,
            record,
            canonical,
            major,
            decoded: AtomicU64::new(0),
            seen: OnceLock::new(),
        }
    }
}

/// How many records this codec decoded with one writer schema: who still writes which
/// version of a topic's events (`adpipe_schema_version_in_use`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaUsage {
    /// The topic the records were read from.
    pub topic: Topic,
    /// The writer's schema id in the registry.
    pub schema_id: u32,
    /// The `event_version` of the first record read with that schema (a producer writes one
    /// contract version per schema).
    pub version: String,
    /// Whether the reader's payload lists that version as deprecated
    /// ([`Payload::DEPRECATED_VERSIONS`]).
    pub deprecated: bool,
    /// Records decoded so far.
    pub records: u64,
}

type Resolution = Result<Arc<GenericDatumReader<'static>>, DecodeError>;

/// A topic's schema of one major version: what the readers and registered ids are keyed by.
type Major = (Topic, u32);

/// How the codec's maps hash their keys (topics, majors, schema ids): they are looked up a
/// few times per record, and SipHash cost more than the lookups themselves. The keys are few
/// and never chosen by an attacker: a multiply-rotate hash (FxHash's) is enough.
#[derive(Debug, Clone, Copy, Default)]
struct SmallKeys;

impl BuildHasher for SmallKeys {
    type Hasher = SmallKeyHasher;

    fn build_hasher(&self) -> SmallKeyHasher {
        SmallKeyHasher(0)
    }
}

/// See [`SmallKeys`].
struct SmallKeyHasher(u64);

impl SmallKeyHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0xf135_7aea_2e62_a9c5);
    }
}

impl Hasher for SmallKeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn write_isize(&mut self, n: isize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        // The product's high bits are its best: hashbrown indexes with the low ones.
        self.0.rotate_left(26)
    }
}

/// Encodes and decodes the events of every topic. Cheap to share behind an `Arc`.
pub struct Codec {
    registry: Option<RegistryClient>,
    readers: HashMap<Major, Reader, SmallKeys>,
    own_ids: RwLock<HashMap<Major, u32, SmallKeys>>,
    writers: RwLock<HashMap<u32, Arc<Writer>, SmallKeys>>,
    resolutions: RwLock<HashMap<(u32, Major), Resolution, SmallKeys>>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("registry", &self.registry)
            .field("own_ids", &self.own_ids)
            .finish_non_exhaustive()
    }
}

fn leak(schema: Schema) -> &'static Schema {
    Box::leak(Box::new(schema))
}

fn record_name(schema: &Schema) -> String {
    schema
        .name()
        .map(|n| n.fullname(None))
        .unwrap_or_else(|| "(unnamed)".to_owned())
}

impl Codec {
    /// A codec that asks `registry` for unknown schema ids and registers its own schemas.
    pub fn new(registry: RegistryClient) -> Codec {
        Codec::build(Some(registry))
    }

    /// A codec without a registry: each topic's schema gets a fixed id (`1 + index` in
    /// `topic-config.yaml` order; later majors the ids after those, in topic and major
    /// order) and only those ids decode. For tests and benchmarks.
    pub fn offline() -> Codec {
        let codec = Codec::build(None);
        for (i, topic) in Topic::ALL.iter().enumerate() {
            codec.set_schema_id(*topic, i as u32 + 1);
        }
        let mut later: Vec<Major> = codec
            .readers
            .keys()
            .filter(|(_, major)| *major > 1)
            .copied()
            .collect();
        later.sort_by_key(|(topic, major)| (Topic::ALL.iter().position(|t| t == topic), *major));
        for (i, (topic, major)) in later.into_iter().enumerate() {
            codec.set_major_schema_id(topic, major, (Topic::ALL.len() + i) as u32 + 1);
        }
        codec
    }

    /// A codec whose own schemas are those of `catalog` instead of the embedded ones: what a
    /// binary built from another version of `schemas/` reads and writes (the schema evolution
    /// tests run an old consumer this way). `registry` as for [`Codec::new`].
    pub fn with_schemas(registry: Option<RegistryClient>, catalog: &schemas::Catalog) -> Codec {
        Codec::build_from(registry, catalog)
    }

    fn build(registry: Option<RegistryClient>) -> Codec {
        Codec::build_from(registry, schemas::embedded())
    }

    fn build_from(registry: Option<RegistryClient>, catalog: &schemas::Catalog) -> Codec {
        static LIMITS: Once = Once::new();
        LIMITS.call_once(|| {
            apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
            apache_avro::util::set_serde_human_readable(false);
        });
        let mut readers = HashMap::default();
        for topic in Topic::ALL {
            assert!(
                catalog.for_topic(topic.name()).is_some(),
                "every topic has a schema (checked by the schemas crate's tests)"
            );
        }
        for subject in catalog.subjects() {
            let Some(topic) = Topic::from_name(&subject.topic) else {
                continue;
            };
            let schema = leak(subject.schema.clone());
            let direct = GenericDatumReader::builder(schema)
                .human_readable(false)
                .build()
                .expect("embedded schemas resolve");
            let writer = GenericDatumWriter::builder(schema)
                .human_readable(false)
                .build()
                .expect("embedded schemas resolve");
            let relaxed = leak(
                Schema::parse(&relax_decimals(
                    serde_json::from_str(&subject.json).expect("catalog JSON is valid"),
                ))
                .expect("relaxed embedded schemas parse"),
            );
            readers.insert(
                (topic, subject.major),
                Reader {
                    schema,
                    relaxed,
                    record: record_name(schema),
                    canonical: schema.canonical_form().into(),
                    json: subject.json.clone(),
                    direct,
                    writer,
                    plan: fast::Plan::compile(schema),
                    encoded_len: AtomicUsize::new(0),
                },
            );
        }
        Codec {
            registry,
            readers,
            own_ids: RwLock::new(HashMap::default()),
            writers: RwLock::new(HashMap::default()),
            resolutions: RwLock::new(HashMap::default()),
        }
    }

    /// The reader of major `major` of `topic`; `None` when this codec's schemas lack that
    /// major (a payload's `MAJOR` not listed in `value_schema_majors`, or a codec built
    /// [`Codec::with_schemas`] of an earlier catalog).
    fn reader(&self, topic: Topic, major: u32) -> Option<&Reader> {
        self.readers.get(&(topic, major))
    }

    /// The reader of `P`'s topic and major, or why a record of schema `id` cannot be read
    /// as `P`.
    fn reader_for<P: Payload>(&self, id: u32, writer: &Writer) -> Result<&Reader, DecodeError> {
        self.reader(P::TOPIC, P::MAJOR)
            .ok_or_else(|| DecodeError::IncompatibleSchema {
                id,
                writer: writer.record.clone(),
                reader: format!("major {} of {}", P::MAJOR, P::TOPIC),
                reason: "this codec's schemas have no such major version".to_owned(),
            })
    }

    /// The topic and major version whose record is `record` (full name) in this codec's
    /// catalog.
    fn major_of(&self, record: &str) -> Option<Major> {
        self.readers
            .iter()
            .find(|(_, r)| r.record == record)
            .map(|(key, _)| *key)
    }

    /// The major versions of `topic` this codec knows, in order (1 first).
    pub fn majors(&self, topic: Topic) -> Vec<u32> {
        let mut majors: Vec<u32> = self
            .readers
            .keys()
            .filter(|(t, _)| *t == topic)
            .map(|(_, m)| *m)
            .collect();
        majors.sort_unstable();
        majors
    }

    /// Use `id` as the registered id of `topic`'s schema (also makes `id` decodable).
    pub fn set_schema_id(&self, topic: Topic, id: u32) {
        self.set_major_schema_id(topic, 1, id);
    }

    /// Use `id` as the registered id of major `major` of `topic`'s schema (also makes `id`
    /// decodable). A major this codec's schemas lack is ignored (encoding it then fails
    /// with [`EncodeError::NotRegistered`]).
    pub fn set_major_schema_id(&self, topic: Topic, major: u32, id: u32) {
        let Some(reader) = self.reader(topic, major) else {
            return;
        };
        let writer = Arc::new(Writer::new(
            reader.schema,
            reader.json.clone(),
            reader.record.clone(),
            reader.canonical.clone(),
            Some((topic, major)),
        ));
        write_lock(&self.writers).insert(id, writer);
        write_lock(&self.own_ids).insert((topic, major), id);
    }

    /// Make `id` decodable as `schema_json` without asking the registry (tests, replays of
    /// data written by other schema versions).
    pub fn add_writer_schema(&self, id: u32, schema_json: &str) -> Result<(), String> {
        let schema = Schema::parse_str(schema_json).map_err(|e| format!("invalid schema: {e}"))?;
        let canonical: Arc<str> = schema.canonical_form().into();
        // The reader's own copy when it is the reader's schema: compared by pointer then.
        let canonical = self
            .readers
            .values()
            .find(|r| r.canonical == canonical)
            .map_or(canonical, |r| r.canonical.clone());
        let record = record_name(&schema);
        let major = self.major_of(&record);
        let writer = Arc::new(Writer::new(
            leak(schema),
            schema_json.to_owned(),
            record,
            canonical,
            major,
        ));
        write_lock(&self.writers).insert(id, writer);
        Ok(())
    }

    /// Register `topic`'s schema under `<topic>-value`, and each later major version of it
    /// under its record-name subject `<topic>-<record>`, and remember their ids for
    /// encoding. Returns the id of major 1.
    pub async fn register(&self, topic: Topic) -> Result<u32, RegistryError> {
        let id = self.register_major(topic, 1).await?;
        for major in self.majors(topic).into_iter().filter(|m| *m > 1) {
            self.register_major(topic, major).await?;
        }
        Ok(id)
    }

    /// Register major `major` of `topic`'s schema under its subject
    /// ([`schemas::major_subject_name`]) and remember its id for encoding.
    pub async fn register_major(&self, topic: Topic, major: u32) -> Result<u32, RegistryError> {
        if let Some(id) = self.major_schema_id(topic, major) {
            return Ok(id);
        }
        let registry = self
            .registry
            .as_ref()
            .ok_or_else(|| RegistryError::Unavailable {
                message: format!("no registry configured to register {topic}"),
            })?;
        let reader = self
            .reader(topic, major)
            .ok_or_else(|| RegistryError::NotFound {
                code: 40401,
                message: format!("no schema for major {major} of {topic} in this codec"),
            })?;
        let subject = schemas::major_subject_name(topic.name(), major, &reader.record);
        let id = registry.register(&subject, &reader.json).await?;
        self.set_major_schema_id(topic, major, id);
        Ok(id)
    }

    /// The registered id of `topic`'s schema (major 1), if known.
    pub fn schema_id(&self, topic: Topic) -> Option<u32> {
        self.major_schema_id(topic, 1)
    }

    /// The registered id of major `major` of `topic`'s schema, if known.
    pub fn major_schema_id(&self, topic: Topic, major: u32) -> Option<u32> {
        read_lock(&self.own_ids).get(&(topic, major)).copied()
    }

    /// Encode `event` into `buf` (cleared first) in Confluent wire format.
    pub fn encode_into<P: Payload>(
        &self,
        event: &Event<P>,
        buf: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        let (id, reader) = self.writes::<P>()?;
        Codec::write(id, reader, event, buf)
    }

    /// The registered id and the schema `P` is written with.
    fn writes<P: Payload>(&self) -> Result<(u32, &Reader), EncodeError> {
        let not_registered = || EncodeError::NotRegistered {
            topic: P::TOPIC.name().to_owned(),
        };
        let id = self
            .major_schema_id(P::TOPIC, P::MAJOR)
            .ok_or_else(not_registered)?;
        let reader = self.reader(P::TOPIC, P::MAJOR).ok_or_else(not_registered)?;
        Ok((id, reader))
    }

    fn write<P: Payload>(
        id: u32,
        reader: &Reader,
        event: &Event<P>,
        buf: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        wire::write_header(buf, id);
        // The fast encoder writes apache-avro's bytes for what it handles; anything else (or
        // an error, reported as apache-avro reports it) goes through apache-avro.
        if let Some(plan) = &reader.plan {
            if fast::encode(plan, event, buf).is_ok() {
                reader.encoded_len.store(buf.len(), Ordering::Relaxed);
                return Ok(());
            }
            buf.truncate(wire::HEADER_LEN);
        }
        reader
            .writer
            .write_ser(buf, event)
            .map_err(|e| EncodeError::from_avro(P::TOPIC.name(), &e))?;
        reader.encoded_len.store(buf.len(), Ordering::Relaxed);
        Ok(())
    }

    /// Encode `event` with apache-avro only, bypassing the fast encoder (to compare them).
    #[cfg(test)]
    pub(crate) fn encode_with_apache<P: Payload>(
        &self,
        event: &Event<P>,
    ) -> Result<Vec<u8>, EncodeError> {
        let (id, reader) = self.writes::<P>()?;
        let mut buf = Vec::new();
        wire::write_header(&mut buf, id);
        reader
            .writer
            .write_ser(&mut buf, event)
            .map_err(|e| EncodeError::from_avro(P::TOPIC.name(), &e))?;
        Ok(buf)
    }

    /// Whether the fast encoder alone encodes `event` (no fallback to apache-avro).
    #[cfg(test)]
    pub(crate) fn encodes_fast<P: Payload>(&self, event: &Event<P>) -> bool {
        let Some(plan) = self
            .reader(P::TOPIC, P::MAJOR)
            .and_then(|r| r.plan.as_ref())
        else {
            return false;
        };
        fast::encode(plan, event, &mut Vec::new()).is_ok()
    }

    /// A framed record of `P`'s own schema decoded by the fast decoder alone (`None` when it
    /// gives up or leaves bytes over) and by apache-avro alone.
    #[cfg(test)]
    pub(crate) fn decode_both<P: Payload>(
        &self,
        bytes: &[u8],
    ) -> (Option<Event<P>>, Result<Event<P>, String>) {
        let (_, body) = wire::split(bytes).expect("framed");
        let reader = self.reader(P::TOPIC, P::MAJOR).expect("reader");
        let mut input = body;
        let fast = reader
            .plan
            .as_ref()
            .and_then(|plan| fast::decode::<Event<P>>(plan, &mut input).ok())
            .filter(|_| input.is_empty());
        let mut rest = body;
        let apache = reader
            .direct
            .read_deser::<Event<P>>(&mut rest)
            .map_err(|e| e.to_string())
            .and_then(|e| {
                if rest.is_empty() {
                    Ok(e)
                } else {
                    Err(format!("{} trailing bytes", rest.len()))
                }
            });
        (fast, apache)
    }

    /// Encode `event` in Confluent wire format.
    pub fn encode<P: Payload>(&self, event: &Event<P>) -> Result<Vec<u8>, EncodeError> {
        let (id, reader) = self.writes::<P>()?;
        // Room for a record like the last one of the topic, so the buffer is not grown (and
        // copied) while the record is written.
        let last = reader.encoded_len.load(Ordering::Relaxed);
        let mut buf = Vec::with_capacity((last + 64).clamp(256, 64 * 1024));
        Codec::write(id, reader, event, &mut buf)?;
        Ok(buf)
    }

    /// Decode a framed record of `P`'s topic, asking the registry for an unknown schema id.
    pub async fn decode<P: Payload>(&self, bytes: &[u8]) -> Result<Event<P>, DecodeError> {
        let (id, _) = wire::split(bytes)?;
        self.writer(id).await?;
        self.decode_known(bytes)
    }

    /// Decode a framed record whose schema id is already known to this codec (no I/O). A
    /// record of another major version of the topic goes to [`Payload::read_major`].
    pub fn decode_known<P: Payload>(&self, bytes: &[u8]) -> Result<Event<P>, DecodeError> {
        let (id, _) = wire::split(bytes)?;
        let writer = self.known_writer(id)?;
        let event = match writer.major {
            Some((topic, major)) if topic == P::TOPIC && major != P::MAJOR => {
                P::read_major(self, major, bytes).unwrap_or_else(|| {
                    Err(DecodeError::IncompatibleSchema {
                        id,
                        writer: writer.record.clone(),
                        reader: self.reader_for::<P>(id, &writer)?.record.clone(),
                        reason: format!(
                            "major version {major} of {topic}: this reader (major {}) does not \
                             read it; deploy the consumers of a new major first",
                            P::MAJOR
                        ),
                    })
                })?
            }
            _ => self.decode_with(id, &writer, bytes)?,
        };
        writer.decoded.fetch_add(1, Ordering::Relaxed);
        if writer.seen.get().is_none() {
            let version = event.metadata.event_version.clone();
            let deprecated = P::DEPRECATED_VERSIONS.contains(&version.as_str());
            let _ = writer.seen.set((P::TOPIC, version, deprecated));
        }
        Ok(event)
    }

    /// Decode a framed record (id known) as `W`, an earlier major of `P`'s topic, and
    /// convert it into `P`: the upcast a later major's [`Payload::read_major`] does. The
    /// envelope is kept as written (its `event_version` names the writer's contract).
    pub fn read_as<W: Payload, P: Payload + From<W>>(
        &self,
        bytes: &[u8],
    ) -> Result<Event<P>, DecodeError> {
        let (id, _) = wire::split(bytes)?;
        let writer = self.known_writer(id)?;
        let event = self.decode_with::<W>(id, &writer, bytes)?;
        Ok(Event {
            metadata: event.metadata,
            payload: P::from(event.payload),
        })
    }

    fn known_writer(&self, id: u32) -> Result<Arc<Writer>, DecodeError> {
        read_lock(&self.writers)
            .get(&id)
            .cloned()
            .ok_or(DecodeError::UnknownSchemaId { id })
    }

    /// The record decoded as `P` with `P`'s own reader (directly or by resolution), uncounted.
    fn decode_with<P: Payload>(
        &self,
        id: u32,
        writer: &Writer,
        bytes: &[u8],
    ) -> Result<Event<P>, DecodeError> {
        let (_, body) = wire::split(bytes)?;
        let reader = self.reader_for::<P>(id, writer)?;
        let mut rest = body;
        let event = if Arc::ptr_eq(&writer.canonical, &reader.canonical)
            || writer.canonical == reader.canonical
        {
            // The fast decoder reads what apache-avro reads; on any error (or bytes left over)
            // apache-avro decodes the record again and reports it.
            if let Some(plan) = &reader.plan {
                let mut input = body;
                if let Ok(event) = fast::decode::<Event<P>>(plan, &mut input)
                    && input.is_empty()
                {
                    return Ok(event);
                }
            }
            reader
                .direct
                .read_deser::<Event<P>>(&mut rest)
                .map_err(|e| DecodeError::from_avro(id, &e))?
        } else {
            let resolver = self.resolution(id, writer, (P::TOPIC, P::MAJOR))?;
            let value = resolver
                .read_value(&mut rest)
                .map_err(|e| DecodeError::from_avro(id, &e))?;
            apache_avro::from_value::<Event<P>>(&value)
                .map_err(|e| DecodeError::from_avro(id, &e))?
        };
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes {
                id,
                count: rest.len(),
            });
        }
        Ok(event)
    }

    /// Records decoded per writer schema so far (schemas nothing was decoded with are left
    /// out), by topic and schema id.
    pub fn schema_usage(&self) -> Vec<SchemaUsage> {
        let mut out: Vec<SchemaUsage> = read_lock(&self.writers)
            .iter()
            .filter_map(|(id, w)| {
                let (topic, version, deprecated) = w.seen.get()?;
                Some(SchemaUsage {
                    topic: *topic,
                    schema_id: *id,
                    version: version.clone(),
                    deprecated: *deprecated,
                    records: w.decoded.load(Ordering::Relaxed),
                })
            })
            .collect();
        out.sort_by(|a, b| (a.topic.name(), a.schema_id).cmp(&(b.topic.name(), b.schema_id)));
        out
    }

    /// Decode any framed record to JSON with its writer schema (for inspection tools).
    pub async fn decode_json(&self, bytes: &[u8]) -> Result<(u32, serde_json::Value), DecodeError> {
        let (id, body) = wire::split(bytes)?;
        let writer = self.writer(id).await?;
        let reader = GenericDatumReader::builder(writer.schema)
            .build()
            .map_err(|e| DecodeError::from_avro(id, &e))?;
        let mut rest = body;
        let value = reader
            .read_value(&mut rest)
            .map_err(|e| DecodeError::from_avro(id, &e))?;
        let json =
            serde_json::Value::try_from(value).map_err(|e| DecodeError::from_avro(id, &e))?;
        Ok((id, json))
    }

    /// The writer schema of `id`, from the cache or else from the registry.
    async fn writer(&self, id: u32) -> Result<Arc<Writer>, DecodeError> {
        if let Some(w) = read_lock(&self.writers).get(&id) {
            return Ok(w.clone());
        }
        self.fetch_writer(id).await?;
        read_lock(&self.writers)
            .get(&id)
            .cloned()
            .ok_or(DecodeError::UnknownSchemaId { id })
    }

    async fn fetch_writer(&self, id: u32) -> Result<(), DecodeError> {
        let registry = self
            .registry
            .as_ref()
            .ok_or(DecodeError::UnknownSchemaId { id })?;
        let json = registry.schema_by_id(id).await.map_err(|e| match e {
            RegistryError::NotFound { .. } | RegistryError::Rejected { .. } => {
                DecodeError::UnknownSchemaId { id }
            }
            RegistryError::Unavailable { message } => {
                DecodeError::RegistryUnavailable { id, message }
            }
        })?;
        self.add_writer_schema(id, &json)
            .map_err(|reason| DecodeError::MalformedBody { id, reason })
    }

    fn resolution(&self, id: u32, writer: &Writer, (topic, major): Major) -> Resolution {
        if let Some(r) = read_lock(&self.resolutions).get(&(id, (topic, major))) {
            return r.clone();
        }
        let Some(reader) = self.reader(topic, major) else {
            return Err(DecodeError::IncompatibleSchema {
                id,
                writer: writer.record.clone(),
                reader: format!("major {major} of {topic}"),
                reason: "this codec's schemas have no such major version".to_owned(),
            });
        };
        let resolved = schemas::compat::can_read(writer.schema, reader.schema)
            .map_err(|reason| match missing_field(&reason) {
                Some(field) => DecodeError::MissingField { id, field },
                None => DecodeError::IncompatibleSchema {
                    id,
                    writer: writer.record.clone(),
                    reader: reader.record.clone(),
                    reason,
                },
            })
            .and_then(|()| {
                let relaxed_writer = serde_json::from_str(&writer.json)
                    .map_err(|e| e.to_string())
                    .and_then(|json| {
                        Schema::parse(&relax_decimals(json)).map_err(|e| e.to_string())
                    })
                    .map_err(|reason| DecodeError::IncompatibleSchema {
                        id,
                        writer: writer.record.clone(),
                        reader: reader.record.clone(),
                        reason,
                    })?;
                GenericDatumReader::builder(leak(relaxed_writer))
                    .reader_schema(reader.relaxed)
                    .human_readable(false)
                    .build()
                    .map(Arc::new)
                    .map_err(|e| DecodeError::IncompatibleSchema {
                        id,
                        writer: writer.record.clone(),
                        reader: reader.record.clone(),
                        reason: e.to_string(),
                    })
            });
        write_lock(&self.resolutions).insert((id, (topic, major)), resolved.clone());
        resolved
    }
}

/// Replace `{"type": "bytes", "logicalType": "decimal"}` with plain `"bytes"`.
///
/// Used only for the writer → reader resolution path: apache-avro's resolution rejects a
/// bytes-backed decimal whose encoding is shorter than the bytes its precision could need
/// (`Precision 18 too small to hold decimal values with 3 bytes`), although minimal
/// encodings are what Avro writers produce. Compatibility is still checked on the real
/// schemas first; after resolution [`crate::values::Dec`] reads the bytes and checks the range.
fn relax_decimals(json: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match json {
        Value::Object(obj)
            if obj.get("logicalType").and_then(Value::as_str) == Some("decimal")
                && obj.get("type").and_then(Value::as_str) == Some("bytes") =>
        {
            Value::String("bytes".into())
        }
        Value::Object(obj) => Value::Object(
            obj.into_iter()
                .map(|(k, v)| (k, relax_decimals(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(relax_decimals).collect()),
        other => other,
    }
}

/// The field a resolution failure is about when the writer lacks a required reader field,
/// e.g. `field payload: Field 'spend' in reader schema must have a default value`.
fn missing_field(reason: &str) -> Option<String> {
    let field = reason
        .split("Field '")
        .nth(1)?
        .strip_suffix("' in reader schema must have a default value")?;
    let path = reason
        .strip_prefix("field ")
        .and_then(|r| r.split(':').next())
        .map(|p| format!("{p}."))
        .unwrap_or_default();
    Some(format!("{path}{field}"))
}

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps half-written (single inserts).
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
