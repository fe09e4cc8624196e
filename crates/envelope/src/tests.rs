//! Codec tests: every payload round-trips through Confluent wire format (directly and through
//! schema resolution), and every malformed input yields its typed error, never a panic.

use proptest::prelude::*;
use topics::Topic;

use crate::{
    Codec, DecodeError, Event, Payload,
    payload::{
        alerts::{Alert, AlertV2},
        audit::AuditEvent,
        bronze::CleanedRow,
        config::ConfigChange,
        etl::Execution,
        gold::AggregateReady,
        raw::RawReport,
        silver::ProcessedRow,
    },
    wire,
};

/// The topic's schema with one extra optional field in the payload: a different writer
/// schema, so decoding must go through Avro schema resolution.
fn evolved_schema(topic: Topic) -> String {
    let subject = schemas::embedded()
        .for_topic(topic.name())
        .expect("subject");
    let mut json: serde_json::Value = serde_json::from_str(&subject.json).expect("json");
    let payload = json["fields"]
        .as_array_mut()
        .and_then(|f| f.iter_mut().find(|f| f["name"] == "payload"))
        .expect("payload field");
    payload["type"]["fields"]
        .as_array_mut()
        .expect("payload record")
        .push(
            serde_json::json!({"name": "added_later", "type": ["null", "string"], "default": null}),
        );
    json.to_string()
}

const EVOLVED_ID: u32 = 9_000;

fn round_trip<P: Payload>(codec: &Codec, event: &Event<P>) {
    let bytes = codec.encode(event).expect("encode");
    assert_eq!(bytes[0], 0, "magic byte");
    let back: Event<P> = codec.decode_known(&bytes).expect("decode");
    assert_eq!(&back, event);

    // Same body under a writer id whose schema differs: the resolution path.
    let resolved_codec = Codec::offline();
    resolved_codec
        .add_writer_schema(
            EVOLVED_ID + P::TOPIC.spec().partitions,
            &evolved_schema(P::TOPIC),
        )
        .expect("evolved schema");
    // The evolved schema only appends an optional field; data written by the current schema
    // is re-read with the evolved schema as writer after appending the field's null branch.
    let mut evolved = bytes.clone();
    evolved[1..5].copy_from_slice(&(EVOLVED_ID + P::TOPIC.spec().partitions).to_be_bytes());
    evolved.push(0); // union index 0 = null for `added_later`
    let back: Event<P> = resolved_codec
        .decode_known(&evolved)
        .expect("decode via resolution");
    assert_eq!(&back, event);
}

macro_rules! round_trip_tests {
    ($($name:ident: $ty:ty),* $(,)?) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            $(
                #[test]
                fn $name(event in any::<Event<$ty>>()) {
                    round_trip(&Codec::offline(), &event);
                }
            )*
        }
    };
}

round_trip_tests!(
    raw_report_round_trips: RawReport,
    cleaned_row_round_trips: CleanedRow,
    processed_row_round_trips: ProcessedRow,
    aggregate_round_trips: AggregateReady,
    alert_round_trips: Alert,
    config_change_round_trips: ConfigChange,
    execution_round_trips: Execution,
    audit_event_round_trips: AuditEvent,
);

/// The fast encoder writes exactly apache-avro's bytes, and handles every event of every
/// topic by itself (no fallback to apache-avro on the hot path); the fast decoder reads every
/// such record by itself, as apache-avro reads it.
fn fast_encoding_matches<P: Payload>(event: &Event<P>) {
    let codec = Codec::offline();
    let fast = codec.encode(event).expect("encode");
    let apache = codec
        .encode_with_apache(event)
        .expect("apache-avro encodes");
    assert_eq!(fast, apache);
    assert!(
        codec.encodes_fast(event),
        "the fast encoder gave up on {event:?}"
    );
    let (fast, apache) = codec.decode_both::<P>(&apache);
    assert_eq!(fast.as_ref(), Some(event), "the fast decoder gave up");
    assert_eq!(apache.as_ref(), Ok(event));
}

/// Whatever the fast decoder accepts, apache-avro decodes to the same value (what it refuses
/// goes to apache-avro anyway).
fn fast_decoding_agrees<P: Payload>(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (fast, apache) = Codec::offline().decode_both::<P>(bytes);
    if let Some(fast) = fast {
        prop_assert_eq!(Ok(fast), apache);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn fast_decoder_agrees_on_corrupted_records(
        event in any::<Event<ConfigChange>>(),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<proptest::sample::Index>(),
    ) {
        let codec = Codec::offline();
        let mut bytes = codec.encode(&event).expect("encode");
        for (at, byte) in flips {
            let i = wire::HEADER_LEN + at.index(bytes.len() - wire::HEADER_LEN);
            bytes[i] = byte;
        }
        fast_decoding_agrees::<ConfigChange>(&bytes)?;
        let keep = wire::HEADER_LEN + cut.index(bytes.len() - wire::HEADER_LEN + 1);
        fast_decoding_agrees::<ConfigChange>(&bytes[..keep])?;
    }

    #[test]
    fn fast_decoder_agrees_on_corrupted_rows(
        event in any::<Event<ProcessedRow>>(),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let codec = Codec::offline();
        let mut bytes = codec.encode(&event).expect("encode");
        for (at, byte) in flips {
            let i = wire::HEADER_LEN + at.index(bytes.len() - wire::HEADER_LEN);
            bytes[i] = byte;
        }
        fast_decoding_agrees::<ProcessedRow>(&bytes)?;
    }

    #[test]
    fn fast_decoder_agrees_on_garbage(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let codec = Codec::offline();
        let id = codec.schema_id(Topic::AuditEvents).expect("id");
        let mut bytes = vec![0];
        bytes.extend_from_slice(&id.to_be_bytes());
        bytes.extend_from_slice(&body);
        fast_decoding_agrees::<AuditEvent>(&bytes)?;
    }
}

macro_rules! fast_encoding_tests {
    ($($name:ident: $ty:ty),* $(,)?) => {
        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]
            $(
                #[test]
                fn $name(event in any::<Event<$ty>>()) {
                    fast_encoding_matches(&event);
                }
            )*
        }
    };
}

fast_encoding_tests!(
    raw_report_encodes_fast: RawReport,
    cleaned_row_encodes_fast: CleanedRow,
    processed_row_encodes_fast: ProcessedRow,
    aggregate_encodes_fast: AggregateReady,
    alert_encodes_fast: Alert,
    alert_v2_encodes_fast: AlertV2,
    config_change_encodes_fast: ConfigChange,
    execution_encodes_fast: Execution,
    audit_event_encodes_fast: AuditEvent,
);

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let codec = Codec::offline();
        let _ = codec.decode_known::<ProcessedRow>(&bytes);
        let _ = codec.decode_known::<ConfigChange>(&bytes);
    }

    #[test]
    fn framed_garbage_is_a_typed_error(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let codec = Codec::offline();
        let id = codec.schema_id(Topic::AuditEvents).expect("id");
        let mut bytes = vec![0];
        bytes.extend_from_slice(&id.to_be_bytes());
        bytes.extend_from_slice(&body);
        // Random bodies almost never form a valid event; when they fail, the error is typed.
        if let Err(e) = codec.decode_known::<AuditEvent>(&bytes) {
            prop_assert!(matches!(
                e,
                DecodeError::MalformedBody { .. }
                    | DecodeError::InvalidValue { .. }
                    | DecodeError::TrailingBytes { .. }
            ), "{e:?}");
        }
    }

    #[test]
    fn every_truncation_of_a_valid_record_fails_cleanly(event in any::<Event<ProcessedRow>>()) {
        let codec = Codec::offline();
        let bytes = codec.encode(&event).expect("encode");
        for cut in 0..bytes.len() {
            prop_assert!(codec.decode_known::<ProcessedRow>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}

fn sample_alert() -> Event<Alert> {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    any::<Event<Alert>>()
        .new_tree(&mut runner)
        .expect("tree")
        .current()
}

#[test]
fn short_buffer() {
    let codec = Codec::offline();
    let err = codec.decode_known::<Alert>(&[0, 0, 1]).expect_err("short");
    assert_eq!(err, DecodeError::ShortBuffer { len: 3 });
    assert_eq!(err.code(), "DECODE_SHORT_BUFFER");
    assert!(!err.retryable());
}

#[test]
fn wrong_magic_byte() {
    let codec = Codec::offline();
    let err = codec
        .decode_known::<Alert>(b"{\"not\":\"avro\"}")
        .expect_err("magic");
    assert_eq!(err, DecodeError::WrongMagicByte { found: b'{' });
    assert!(err.to_string().contains("0x7b"), "{err}");
}

#[test]
fn unknown_schema_id() {
    let codec = Codec::offline();
    let err = codec
        .decode_known::<Alert>(&[0, 0, 0, 0x30, 0x39, 1, 2])
        .expect_err("unknown");
    assert_eq!(err, DecodeError::UnknownSchemaId { id: 12_345 });
}

#[tokio::test]
async fn unknown_schema_id_without_registry_is_not_retryable() {
    let codec = Codec::offline();
    let err = codec
        .decode::<Alert>(&[0, 0, 0, 0x30, 0x39, 1, 2])
        .await
        .expect_err("unknown");
    assert_eq!(err, DecodeError::UnknownSchemaId { id: 12_345 });
    assert!(!err.retryable());
}

#[test]
fn truncated_body() {
    let codec = Codec::offline();
    let bytes = codec.encode(&sample_alert()).expect("encode");
    let err = codec
        .decode_known::<Alert>(&bytes[..bytes.len() - 3])
        .expect_err("truncated");
    assert!(
        matches!(
            err,
            DecodeError::MalformedBody { .. } | DecodeError::InvalidValue { .. }
        ),
        "{err:?}"
    );
    assert!(!err.to_string().is_empty());
}

#[test]
fn trailing_bytes() {
    let codec = Codec::offline();
    let mut bytes = codec.encode(&sample_alert()).expect("encode");
    bytes.extend_from_slice(&[1, 2, 3]);
    let err = codec.decode_known::<Alert>(&bytes).expect_err("trailing");
    assert!(
        matches!(err, DecodeError::TrailingBytes { count: 3, .. }),
        "{err:?}"
    );
}

#[test]
fn valid_avro_of_another_schema() {
    let codec = Codec::offline();
    let bytes = codec.encode(&sample_alert()).expect("encode");
    let err = codec
        .decode_known::<ProcessedRow>(&bytes)
        .expect_err("wrong schema");
    match &err {
        DecodeError::IncompatibleSchema { writer, reader, .. } => {
            assert_eq!(writer, "adpipe.rules.AlertTriggered");
            assert_eq!(reader, "adpipe.silver.DataProcessed");
        }
        other => panic!("expected IncompatibleSchema, got {other:?}"),
    }
    assert_eq!(err.code(), "DECODE_INCOMPATIBLE_SCHEMA");
}

#[test]
fn missing_required_field() {
    // A writer schema without the payload's required `message` field (no default in ours).
    let subject = schemas::embedded()
        .for_topic("rules.alerts.triggered")
        .expect("subject");
    let mut json: serde_json::Value = serde_json::from_str(&subject.json).expect("json");
    let fields = json["fields"][1]["type"]["fields"]
        .as_array_mut()
        .expect("payload fields");
    fields.retain(|f| f["name"] != "message");
    let codec = Codec::offline();
    codec
        .add_writer_schema(777, &json.to_string())
        .expect("schema");
    let err = codec
        .decode_known::<Alert>(&[0, 0, 0, 3, 9, 0])
        .expect_err("missing");
    assert_eq!(
        err,
        DecodeError::MissingField {
            id: 777,
            field: "payload.message".into()
        },
        "{err}"
    );
    assert_eq!(err.code(), "DECODE_MISSING_FIELD");
}

#[test]
fn record_names_match_the_schemas() {
    fn check<P: Payload>() {
        let subject = schemas::embedded()
            .for_topic(P::TOPIC.name())
            .expect("subject");
        assert_eq!(
            subject.record.rsplit('.').next(),
            Some(P::RECORD),
            "{}",
            P::TOPIC
        );
    }
    check::<RawReport>();
    check::<CleanedRow>();
    check::<ProcessedRow>();
    check::<AggregateReady>();
    check::<Alert>();
    check::<ConfigChange>();
    check::<Execution>();
    check::<AuditEvent>();
}

#[test]
fn absurd_lengths_do_not_allocate() {
    // A string length of about 2^62 right after the header must fail, not try to allocate.
    let codec = Codec::offline();
    let id = codec.schema_id(Topic::ConnectorDataRaw).expect("id");
    let mut bytes = vec![0];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    let err = codec
        .decode_known::<RawReport>(&bytes)
        .expect_err("absurd length");
    assert!(
        matches!(
            err,
            DecodeError::MalformedBody { .. } | DecodeError::InvalidValue { .. }
        ),
        "{err:?}"
    );
}

#[test]
fn encoding_needs_a_registered_schema() {
    let codec = Codec::new(
        crate::RegistryClient::new(
            "http://127.0.0.1:9",
            None,
            std::time::Duration::from_secs(1),
        )
        .expect("client"),
    );
    let err = codec.encode(&sample_alert()).expect_err("not registered");
    assert_eq!(err.code(), "ENCODE_NOT_REGISTERED");
}

#[tokio::test]
async fn unreachable_registry_is_retryable() {
    // Port 9 (discard) on loopback is closed here: the connection is refused at once.
    let codec = Codec::new(
        crate::RegistryClient::new(
            "http://127.0.0.1:9",
            None,
            std::time::Duration::from_secs(2),
        )
        .expect("client"),
    );
    let err = codec
        .decode::<Alert>(&[0, 0, 0, 0, 42, 0])
        .await
        .expect_err("unreachable");
    assert!(
        matches!(err, DecodeError::RegistryUnavailable { id: 42, .. }),
        "{err:?}"
    );
    assert!(err.retryable());
}

#[test]
fn decode_json_shows_readable_fields() {
    let codec = Codec::offline();
    let event = sample_alert();
    let bytes = codec.encode(&event).expect("encode");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    let (id, json) = rt.block_on(codec.decode_json(&bytes)).expect("json");
    assert_eq!(Some(id), codec.schema_id(Topic::RulesAlertsTriggered));
    assert_eq!(
        json["metadata"]["org_id"],
        serde_json::json!(event.metadata.org_id)
    );
    assert_eq!(
        json["payload"]["rule_id"],
        serde_json::json!(event.payload.rule_id)
    );
}

#[test]
fn etl_events_are_keyed_by_pipeline_and_others_by_org() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut exec = any::<Event<Execution>>()
        .new_tree(&mut runner)
        .expect("tree")
        .current();
    exec.payload.pipeline_id = "silver-processor".into();
    exec.metadata.org_id = 42;
    assert_eq!(exec.record_key(), "silver-processor");
    let mut alert = sample_alert();
    alert.metadata.org_id = 42;
    assert_eq!(alert.record_key(), "42");
}
