//! A consumed record as a partition worker holds it: copied out of librdkafka's buffer in one
//! allocation (value, key and the headers a dead letter carries), where rdkafka's
//! `OwnedMessage` takes four Rust allocations (topic, value, key, the header list) plus a
//! librdkafka copy of every header, freed by librdkafka.

use std::sync::Arc;

use rdkafka::message::{BorrowedMessage, Headers as _, Message as _, Timestamp};
use topics::Topic;

use crate::dlq::{CARRIED, carried};

/// Where one part lies in [`Consumed::bytes`]; `ABSENT` when the record has no such part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Part {
    start: u32,
    end: u32,
}

impl Part {
    const ABSENT: Part = Part {
        start: u32::MAX,
        end: u32::MAX,
    };

    /// Append `part` to `bytes` and say where it went.
    fn push(bytes: &mut Vec<u8>, part: Option<&[u8]>) -> Part {
        let Some(part) = part else {
            return Part::ABSENT;
        };
        // A Kafka record is far below 4 GiB (the broker's `message.max.bytes` is an i32).
        let start = u32::try_from(bytes.len()).unwrap_or(u32::MAX - 1);
        bytes.extend_from_slice(part);
        let end = u32::try_from(bytes.len()).unwrap_or(u32::MAX - 1);
        Part { start, end }
    }

    fn of(self, bytes: &[u8]) -> Option<&[u8]> {
        (self != Part::ABSENT).then(|| &bytes[self.start as usize..self.end as usize])
    }
}

/// A record taken from the consumer, owned, with what the stage reads of it.
#[derive(Debug)]
pub(crate) struct Consumed {
    name: Arc<str>,
    topic: Option<Topic>,
    partition: i32,
    offset: i64,
    timestamp: Timestamp,
    /// Value, key and the carried headers' values, one after the other.
    bytes: Vec<u8>,
    payload: Part,
    key: Part,
    /// The first value of each carried header ([`crate::dlq::carried_name`]), by its index.
    carried: [Part; CARRIED],
}

impl Consumed {
    /// Copy `m` (of the topic `name`, `topic` when it is one of topic-config.yaml's).
    pub(crate) fn copy(m: &BorrowedMessage<'_>, name: Arc<str>, topic: Option<Topic>) -> Self {
        let (payload, key) = (m.payload(), m.key());
        // One pass over the headers (each read is a call into librdkafka and a UTF-8 check
        // of its name).
        let values = carried(
            m.headers()
                .iter()
                .flat_map(|h| h.iter())
                .map(|h| (h.key, h.value)),
        );
        let mut bytes = Vec::with_capacity(
            [payload, key]
                .into_iter()
                .chain(values)
                .map(|part| part.map_or(0, <[u8]>::len))
                .sum(),
        );
        let payload = Part::push(&mut bytes, payload);
        let key = Part::push(&mut bytes, key);
        let carried = values.map(|value| Part::push(&mut bytes, value));
        Consumed {
            name,
            topic,
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp(),
            bytes,
            payload,
            key,
            carried,
        }
    }

    /// The topic's name.
    pub(crate) fn topic_name(&self) -> &str {
        &self.name
    }

    /// The topic, when topic-config.yaml has it.
    pub(crate) fn topic(&self) -> Option<Topic> {
        self.topic
    }

    pub(crate) fn partition(&self) -> i32 {
        self.partition
    }

    pub(crate) fn offset(&self) -> i64 {
        self.offset
    }

    pub(crate) fn timestamp(&self) -> Timestamp {
        self.timestamp
    }

    /// The value.
    pub(crate) fn payload(&self) -> Option<&[u8]> {
        self.payload.of(&self.bytes)
    }

    pub(crate) fn key(&self) -> Option<&[u8]> {
        self.key.of(&self.bytes)
    }

    /// The carried headers the record had ([`crate::dlq::carried`]), `(name, value)` in
    /// the order of [`crate::dlq::CARRIED_NAMES`].
    pub(crate) fn carried(&self) -> impl Iterator<Item = (&'static str, &[u8])> {
        crate::dlq::CARRIED_NAMES
            .iter()
            .zip(&self.carried)
            .filter_map(|(name, part)| Some((*name, part.of(&self.bytes)?)))
    }

    /// The memory the record holds while it waits: its bytes and what holding them costs.
    pub(crate) fn held(&self) -> usize {
        /// The record itself, its queue slot.
        const OVERHEAD: usize = size_of::<Consumed>() + 64;
        OVERHEAD + self.bytes.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_found_again_and_absent_ones_are_none() {
        let mut bytes = Vec::new();
        let value = Part::push(&mut bytes, Some(b"value"));
        let none = Part::push(&mut bytes, None);
        let empty = Part::push(&mut bytes, Some(b""));
        let key = Part::push(&mut bytes, Some(b"key"));
        assert_eq!(value.of(&bytes), Some(&b"value"[..]));
        assert_eq!(none.of(&bytes), None);
        assert_eq!(
            empty.of(&bytes),
            Some(&b""[..]),
            "an empty value is not a missing one"
        );
        assert_eq!(key.of(&bytes), Some(&b"key"[..]));
        assert_eq!(bytes, b"valuekey");
    }
}
