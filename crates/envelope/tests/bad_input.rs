//! Bad input for the decoder, generated: for every topic's payload type, arbitrary bytes, a
//! wrong magic byte, unknown schema ids, every truncation and random corruption of valid
//! records, valid Avro of every other topic's schema and forged huge length prefixes. Each
//! case must end in a typed [`DecodeError`] whose code is one of the stable codes (never a
//! panic, never a huge allocation), and only a registry outage may be retryable.

use proptest::{collection::vec, prelude::*};
use topics::Topic;

use envelope::{
    Codec, DecodeError, Event, Payload,
    payload::{
        alerts::Alert, audit::AuditEvent, bronze::CleanedRow, config::ConfigChange, etl::Execution,
        gold::AggregateReady, raw::RawReport, silver::ProcessedRow,
    },
};

/// Every code a [`DecodeError`] can carry: DLQ headers and dashboards rely on these strings.
const STABLE_CODES: &[&str] = &[
    "DECODE_SHORT_BUFFER",
    "DECODE_WRONG_MAGIC_BYTE",
    "DECODE_UNKNOWN_SCHEMA_ID",
    "DECODE_REGISTRY_UNAVAILABLE",
    "DECODE_INCOMPATIBLE_SCHEMA",
    "DECODE_MALFORMED_BODY",
    "DECODE_TRAILING_BYTES",
    "DECODE_MISSING_FIELD",
    "DECODE_INVALID_VALUE",
];

/// A decode outcome is acceptable when it is a value or a typed, explained, permanent error.
fn typed<P: Payload>(result: &Result<Event<P>, DecodeError>) -> Result<(), TestCaseError> {
    if let Err(e) = result {
        prop_assert!(
            STABLE_CODES.contains(&e.code()),
            "unstable code {}",
            e.code()
        );
        prop_assert!(!e.to_string().is_empty(), "an error explains itself");
        prop_assert!(!e.retryable(), "offline decoding is never retryable: {e:?}");
    }
    Ok(())
}

/// The offline codec's id of `topic`'s schema.
fn id_of(codec: &Codec, topic: Topic) -> u32 {
    codec
        .schema_id(topic)
        .expect("the offline codec knows every topic")
}

/// A zig-zag varint of `n` (Avro's `long`), as a string, bytes or collection length.
fn avro_long(n: i64) -> Vec<u8> {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Decode `bytes` as every topic's payload type; each outcome must be [`typed`].
fn decode_as_every_type(codec: &Codec, bytes: &[u8]) -> Result<(), TestCaseError> {
    typed(&codec.decode_known::<RawReport>(bytes))?;
    typed(&codec.decode_known::<CleanedRow>(bytes))?;
    typed(&codec.decode_known::<ProcessedRow>(bytes))?;
    typed(&codec.decode_known::<AggregateReady>(bytes))?;
    typed(&codec.decode_known::<Alert>(bytes))?;
    typed(&codec.decode_known::<ConfigChange>(bytes))?;
    typed(&codec.decode_known::<Execution>(bytes))?;
    typed(&codec.decode_known::<AuditEvent>(bytes))?;
    Ok(())
}

/// A valid record of one of the eight payload types, encoded by the offline codec.
fn any_valid_record() -> impl Strategy<Value = (Topic, Vec<u8>)> {
    fn enc<P: Payload + std::fmt::Debug>(e: Event<P>) -> (Topic, Vec<u8>) {
        let bytes = Codec::offline()
            .encode(&e)
            .expect("arbitrary events encode");
        (P::TOPIC, bytes)
    }
    prop_oneof![
        any::<Event<RawReport>>().prop_map(enc),
        any::<Event<CleanedRow>>().prop_map(enc),
        any::<Event<ProcessedRow>>().prop_map(enc),
        any::<Event<AggregateReady>>().prop_map(enc),
        any::<Event<Alert>>().prop_map(enc),
        any::<Event<ConfigChange>>().prop_map(enc),
        any::<Event<Execution>>().prop_map(enc),
        any::<Event<AuditEvent>>().prop_map(enc),
    ]
}

/// Decode `bytes` (written for `topic`) as `topic`'s own type.
fn decode_as(codec: &Codec, topic: Topic, bytes: &[u8]) -> Result<(), DecodeError> {
    fn d<P: Payload>(codec: &Codec, bytes: &[u8]) -> Result<(), DecodeError> {
        codec.decode_known::<P>(bytes).map(drop)
    }
    match topic {
        Topic::ConnectorDataRaw => d::<RawReport>(codec, bytes),
        Topic::BronzeDataCleaned => d::<CleanedRow>(codec, bytes),
        Topic::SilverDataProcessed => d::<ProcessedRow>(codec, bytes),
        Topic::GoldDataReady => d::<AggregateReady>(codec, bytes),
        Topic::RulesAlertsTriggered => d::<Alert>(codec, bytes),
        Topic::ConfigChanges => d::<ConfigChange>(codec, bytes),
        Topic::EtlExecution => d::<Execution>(codec, bytes),
        Topic::AuditEvents => d::<AuditEvent>(codec, bytes),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_are_typed_errors_for_every_type(bytes in vec(any::<u8>(), 0..1024)) {
        decode_as_every_type(&Codec::offline(), &bytes)?;
    }

    #[test]
    fn arbitrary_bodies_under_every_known_id_are_typed_errors(
        topic in proptest::sample::select(Topic::ALL),
        body in vec(any::<u8>(), 0..512),
    ) {
        let codec = Codec::offline();
        let mut bytes = vec![0];
        bytes.extend_from_slice(&id_of(&codec, topic).to_be_bytes());
        bytes.extend_from_slice(&body);
        decode_as_every_type(&codec, &bytes)?;
    }

    #[test]
    fn a_wrong_magic_byte_is_named(magic in 1u8..=255, rest in vec(any::<u8>(), 4..256)) {
        let mut bytes = vec![magic];
        bytes.extend_from_slice(&rest);
        let err = Codec::offline().decode_known::<ProcessedRow>(&bytes).expect_err("not framed");
        prop_assert_eq!(err.code(), "DECODE_WRONG_MAGIC_BYTE");
        prop_assert_eq!(err, DecodeError::WrongMagicByte { found: magic });
    }

    #[test]
    fn an_unknown_schema_id_is_named_and_permanent_offline(
        id in any::<u32>().prop_filter("not an offline id", |id| *id == 0 || *id as usize > Topic::ALL.len()),
        body in vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&id.to_be_bytes());
        bytes.extend_from_slice(&body);
        let err = Codec::offline().decode_known::<AuditEvent>(&bytes).expect_err("unknown id");
        prop_assert_eq!(err.code(), "DECODE_UNKNOWN_SCHEMA_ID");
        prop_assert!(!err.retryable());
        prop_assert_eq!(err, DecodeError::UnknownSchemaId { id });
    }

    #[test]
    fn every_truncation_of_every_topics_record_fails_cleanly((topic, bytes) in any_valid_record()) {
        let codec = Codec::offline();
        prop_assert!(decode_as(&codec, topic, &bytes).is_ok(), "the whole record decodes");
        for cut in 0..bytes.len() {
            let err = decode_as(&codec, topic, &bytes[..cut]).expect_err("a truncated record");
            prop_assert!(STABLE_CODES.contains(&err.code()), "{err:?}");
            if cut < 5 {
                prop_assert_eq!(err, DecodeError::ShortBuffer { len: cut });
            }
        }
    }

    #[test]
    fn valid_avro_of_another_topics_schema_is_refused_by_name(
        (topic, bytes) in any_valid_record(),
        reader in proptest::sample::select(Topic::ALL),
    ) {
        prop_assume!(reader != topic);
        let err = decode_as(&Codec::offline(), reader, &bytes).expect_err("another topic's record");
        prop_assert!(
            matches!(err.code(), "DECODE_INCOMPATIBLE_SCHEMA" | "DECODE_MISSING_FIELD"),
            "{} read as {}: {err:?}", topic, reader
        );
    }

    #[test]
    fn random_corruption_of_valid_records_is_never_a_panic(
        (topic, bytes) in any_valid_record(),
        flips in vec((any::<prop::sample::Index>(), 1u8..=255), 1..8),
    ) {
        let codec = Codec::offline();
        let mut bytes = bytes;
        // Keep the header: corruption of the body is what the Avro reader must survive.
        let body = bytes.len() - 5;
        prop_assume!(body > 0);
        for (at, mask) in flips {
            bytes[5 + at.index(body)] ^= mask;
        }
        if let Err(e) = decode_as(&codec, topic, &bytes) {
            prop_assert!(STABLE_CODES.contains(&e.code()), "{e:?}");
            prop_assert!(!e.retryable());
        }
    }

    #[test]
    fn forged_huge_lengths_anywhere_fail_without_allocating(
        (topic, bytes) in any_valid_record(),
        at in any::<prop::sample::Index>(),
        length in prop_oneof![
            Just(i64::MAX),
            Just(i64::MIN),
            Just(-1i64),
            (envelope::codec::MAX_ALLOCATION_BYTES as i64 + 1)..i64::MAX,
        ],
    ) {
        // Splice a varint of a huge (or negative) length into the body at any position: a
        // string, bytes, array or map length read there must fail, not allocate.
        let codec = Codec::offline();
        let at = 5 + at.index(bytes.len() - 5 + 1);
        let mut forged = bytes[..at].to_vec();
        forged.extend_from_slice(&avro_long(length));
        forged.extend_from_slice(&bytes[at..]);
        if let Err(e) = decode_as(&codec, topic, &forged) {
            prop_assert!(STABLE_CODES.contains(&e.code()), "{e:?}");
        }
    }
}

#[test]
fn a_huge_length_after_the_header_of_every_topic_is_a_typed_error() {
    let codec = Codec::offline();
    for topic in Topic::ALL {
        for length in [i64::MAX, i64::MAX / 2, 1 << 40, -7] {
            let mut bytes = vec![0];
            bytes.extend_from_slice(&id_of(&codec, *topic).to_be_bytes());
            bytes.extend_from_slice(&avro_long(length));
            bytes.extend_from_slice(&[0x41; 16]);
            let err = decode_as(&codec, *topic, &bytes).expect_err("a forged length");
            assert!(
                matches!(
                    err.code(),
                    "DECODE_MALFORMED_BODY" | "DECODE_INVALID_VALUE" | "DECODE_TRAILING_BYTES"
                ),
                "{topic} with length {length}: {err:?}"
            );
        }
    }
}

#[test]
fn a_huge_record_is_a_typed_error() {
    // 8 MiB of 0xff after a valid header: one long varint run, then nothing sensible.
    let codec = Codec::offline();
    let mut bytes = vec![0];
    bytes.extend_from_slice(&id_of(&codec, Topic::ConnectorDataRaw).to_be_bytes());
    bytes.resize(8 * 1024 * 1024, 0xff);
    let err = codec
        .decode_known::<RawReport>(&bytes)
        .expect_err("not a record");
    assert!(STABLE_CODES.contains(&err.code()), "{err:?}");
}

#[test]
fn the_stable_codes_are_the_documented_ones() {
    // One error of each kind: its code must be in STABLE_CODES (a renamed code fails here
    // before it breaks a dashboard or a `pipelinectl dlq replay --code` filter).
    let errors = [
        DecodeError::ShortBuffer { len: 0 },
        DecodeError::WrongMagicByte { found: 1 },
        DecodeError::UnknownSchemaId { id: 1 },
        DecodeError::RegistryUnavailable {
            id: 1,
            message: "down".into(),
        },
        DecodeError::IncompatibleSchema {
            id: 1,
            writer: "a".into(),
            reader: "b".into(),
            reason: "c".into(),
        },
        DecodeError::MalformedBody {
            id: 1,
            reason: "r".into(),
        },
        DecodeError::TrailingBytes { id: 1, count: 1 },
        DecodeError::MissingField {
            id: 1,
            field: "f".into(),
        },
        DecodeError::InvalidValue {
            id: 1,
            reason: "r".into(),
        },
    ];
    let codes: Vec<&str> = errors.iter().map(DecodeError::code).collect();
    assert_eq!(codes, STABLE_CODES);
    for e in &errors {
        assert_eq!(
            e.retryable(),
            e.code() == "DECODE_REGISTRY_UNAVAILABLE",
            "{e:?}"
        );
    }
}

#[test]
fn a_record_without_org_id_is_a_missing_field() {
    // A writer schema whose envelope lacks `org_id` (a producer on a forked schema): the
    // record cannot be partitioned or scoped to a tenant, and says which field is missing.
    let subject = schemas::embedded()
        .for_topic(Topic::ConfigChanges.name())
        .expect("subject");
    let mut json: serde_json::Value = serde_json::from_str(&subject.json).expect("json");
    let metadata = json["fields"]
        .as_array_mut()
        .and_then(|f| f.iter_mut().find(|f| f["name"] == "metadata"))
        .expect("metadata field");
    metadata["type"]["fields"]
        .as_array_mut()
        .expect("metadata record")
        .retain(|f| f["name"] != "org_id");
    let codec = Codec::offline();
    codec
        .add_writer_schema(4242, &json.to_string())
        .expect("a valid schema");
    let err = codec
        .decode_known::<ConfigChange>(&[0, 0, 0, 0x10, 0x92, 0])
        .expect_err("no org_id");
    assert_eq!(err.code(), "DECODE_MISSING_FIELD", "{err:?}");
    assert!(err.to_string().contains("org_id"), "{err}");
}
