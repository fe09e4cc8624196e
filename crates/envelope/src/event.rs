//! The envelope every adpipe event carries (`common/metadata.avsc`) and the [`Event`] type
//! that pairs it with a typed payload.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use topics::{PartitionKey, Topic};

use crate::values::{Id, Timestamp};

/// The service and instance that produced an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct Source {
    /// Service (binary) name, e.g. `bronze-processor`.
    pub service: String,
    /// Instance id, e.g. the pod name or `host:pid`.
    pub instance: String,
}

/// The standard envelope fields (`adpipe.common.EventMetadata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(any(test, feature = "testing"), derive(proptest_derive::Arbitrary))]
pub struct EventMetadata {
    /// Unique id of this event; consumers deduplicate by it.
    pub event_id: Id,
    /// The topic name.
    pub event_type: String,
    /// Semantic version of the payload contract.
    pub event_version: String,
    /// When the event was created.
    pub timestamp: Timestamp,
    /// Producer.
    pub source: Source,
    /// Shared by every event derived from one report pull or user action.
    pub correlation_id: Id,
    /// The client organisation.
    pub org_id: i64,
    /// The event this one was derived from.
    pub causation_id: Option<Id>,
    /// W3C trace context of the producing span.
    pub traceparent: Option<String>,
}

/// A payload type: the body of the events of one topic.
pub trait Payload:
    Serialize + DeserializeOwned + Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static
{
    /// The topic whose values have this payload.
    const TOPIC: Topic;
    /// Short name of the topic's top-level Avro record (the envelope + payload record).
    const RECORD: &'static str;
    /// The contract version written to `event_version`.
    const VERSION: &'static str = "1.0.0";
    /// Earlier `event_version`s still readable but due for retirement: consumers count the
    /// records they read per version, flagged `deprecated`, in
    /// `adpipe_schema_version_in_use`, so operators see when the last producer moved on.
    const DEPRECATED_VERSIONS: &'static [&'static str] = &[];
    /// The major version of the topic's schema this payload is: 1 for the topic's
    /// `value_schema` (subject `<topic>-value`), 2 and on for its `value_schema_majors`
    /// (subject `<topic>-<record>`), which a breaking change adds beside the earlier ones.
    const MAJOR: u32 = 1;

    /// Read a record of this topic that another major version (`major`) wrote, as this
    /// payload: a later major upcasts the earlier ones it replaces, usually with
    /// [`Codec::read_as`](crate::Codec::read_as) and a `From` conversion, so a stage handles
    /// one type. `None` (the default): records of other majors do not decode as this payload.
    fn read_major(
        codec: &crate::Codec,
        major: u32,
        bytes: &[u8],
    ) -> Option<Result<Event<Self>, crate::DecodeError>> {
        let _ = (codec, major, bytes);
        None
    }

    /// The key the event is partitioned by. Org-keyed topics use the envelope's org_id;
    /// `etl.execution` overrides this with its pipeline id.
    fn partition_key<'a>(&'a self, metadata: &EventMetadata) -> PartitionKey<'a> {
        PartitionKey::Org(metadata.org_id)
    }
}

/// An event: envelope plus payload, exactly the Avro record of its topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(bound = "P: Payload")]
pub struct Event<P: Payload> {
    /// Envelope fields.
    pub metadata: EventMetadata,
    /// The topic's payload.
    pub payload: P,
}

impl<'de, P: Payload> Deserialize<'de> for Event<P> {
    /// By hand because the Avro deserialiser checks the record name, which differs per topic
    /// (`P::RECORD`), while the Rust type is the one generic `Event`.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, IgnoredAny, MapAccess, Visitor};
        struct V<P>(std::marker::PhantomData<P>);
        impl<'de, P: Payload> Visitor<'de> for V<P> {
            type Value = Event<P>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "an {} event", P::TOPIC.name())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event<P>, A::Error> {
                #[derive(Deserialize)]
                #[serde(field_identifier, rename_all = "lowercase")]
                enum Field {
                    Metadata,
                    Payload,
                    #[serde(other)]
                    Other,
                }
                let (mut metadata, mut payload) = (None, None);
                while let Some(key) = map.next_key::<Field>()? {
                    match key {
                        Field::Metadata => metadata = Some(map.next_value()?),
                        Field::Payload => payload = Some(map.next_value()?),
                        Field::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Event {
                    metadata: metadata.ok_or_else(|| A::Error::missing_field("metadata"))?,
                    payload: payload.ok_or_else(|| A::Error::missing_field("payload"))?,
                })
            }
        }
        d.deserialize_struct(
            P::RECORD,
            &["metadata", "payload"],
            V::<P>(std::marker::PhantomData),
        )
    }
}

impl<P: Payload> Event<P> {
    /// A new event that starts a correlation chain (no causation).
    pub fn new(org_id: i64, source: Source, payload: P) -> Event<P> {
        let event_id = Id::new();
        Event {
            metadata: EventMetadata {
                event_id,
                event_type: P::TOPIC.name().to_owned(),
                event_version: P::VERSION.to_owned(),
                timestamp: Timestamp::now(),
                source,
                correlation_id: event_id,
                org_id,
                causation_id: None,
                traceparent: None,
            },
            payload,
        }
    }

    /// A new event derived from `cause`: same org, correlation id and trace, caused by it.
    pub fn caused_by(cause: &EventMetadata, source: Source, payload: P) -> Event<P> {
        Event {
            metadata: EventMetadata {
                event_id: Id::new(),
                event_type: P::TOPIC.name().to_owned(),
                event_version: P::VERSION.to_owned(),
                timestamp: Timestamp::now(),
                source,
                correlation_id: cause.correlation_id,
                org_id: cause.org_id,
                causation_id: Some(cause.event_id),
                traceparent: cause.traceparent.clone(),
            },
            payload,
        }
    }

    /// The key this event is partitioned by.
    pub fn partition_key(&self) -> PartitionKey<'_> {
        self.payload.partition_key(&self.metadata)
    }

    /// The record key written to Kafka: the org id (or pipeline id) as text.
    pub fn record_key(&self) -> String {
        match self.partition_key() {
            PartitionKey::Org(id) => id.to_string(),
            PartitionKey::Pipeline(id) => id.to_owned(),
        }
    }
}

#[cfg(any(test, feature = "testing"))]
impl<P: Payload + proptest::arbitrary::Arbitrary> proptest::arbitrary::Arbitrary for Event<P> {
    type Parameters = ();
    type Strategy = proptest::strategy::BoxedStrategy<Event<P>>;
    fn arbitrary_with(_: ()) -> Self::Strategy {
        use proptest::prelude::*;
        (any::<EventMetadata>(), any::<P>())
            .prop_map(|(metadata, payload)| Event { metadata, payload })
            .boxed()
    }
}
