//! Two major versions of one topic side by side: `rules.alerts.triggered` major 1 (`Alert`,
//! subject `<topic>-value`) and major 2 (`AlertV2`, subject `<topic>-adpipe.rules.v2.
//! AlertTriggered`). A major 2 reader decodes both, upcasting major 1 by the writer schema's
//! record name; a major 1 reader refuses major 2 with a typed error; the usage counts name
//! each writer's version and flag major 1 deprecated.

use envelope::{
    Codec, DecodeError, Event, Payload,
    payload::alerts::{Alert, AlertV2, Threshold},
};
use proptest::prelude::*;
use topics::Topic;

const TOPIC: Topic = Topic::RulesAlertsTriggered;

fn codec() -> Codec {
    Codec::offline()
}

proptest! {
    #[test]
    fn a_v2_reader_reads_both_majors(v1 in any::<Event<Alert>>(), v2 in any::<Event<AlertV2>>()) {
        let codec = codec();
        let old = codec.encode(&v1).expect("encode v1");
        let new = codec.encode(&v2).expect("encode v2");
        prop_assert_ne!(&old[1..5], &new[1..5], "one schema id per major");

        let upcast: Event<AlertV2> = codec.decode_known(&old).expect("v1 read as v2");
        prop_assert_eq!(&upcast.metadata, &v1.metadata, "the envelope is kept as written");
        prop_assert_eq!(&upcast.payload, &AlertV2::from(v1.payload.clone()));
        prop_assert_eq!(&upcast.payload.threshold, &Threshold {
            comparator: v1.payload.comparator,
            value: v1.payload.threshold,
        });
        let same: Event<AlertV2> = codec.decode_known(&new).expect("v2 read as v2");
        prop_assert_eq!(&same, &v2);

        // A v1 reader still reads v1, and refuses v2 with a typed, permanent error.
        let back: Event<Alert> = codec.decode_known(&old).expect("v1 read as v1");
        prop_assert_eq!(&back, &v1);
        let err = codec.decode_known::<Alert>(&new).expect_err("v1 reader, v2 record");
        prop_assert_eq!(err.code(), "DECODE_INCOMPATIBLE_SCHEMA");
        prop_assert!(!err.retryable());
        prop_assert!(err.to_string().contains("major version 2"), "{}", err);
    }
}

fn sample<P: Payload + Arbitrary>() -> Event<P> {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    any::<Event<P>>()
        .new_tree(&mut runner)
        .expect("tree")
        .current()
}

#[test]
fn versions_in_use_flag_v1_deprecated_for_a_v2_reader() {
    let codec = codec();
    let mut v1 = sample::<Alert>();
    v1.metadata.event_version = Alert::VERSION.to_owned();
    let mut v2 = sample::<AlertV2>();
    v2.metadata.event_version = AlertV2::VERSION.to_owned();
    let old = codec.encode(&v1).expect("v1");
    let new = codec.encode(&v2).expect("v2");
    for bytes in [&old, &old, &new] {
        codec.decode_known::<AlertV2>(bytes).expect("decodes");
    }
    let usage: Vec<(u32, String, bool, u64)> = codec
        .schema_usage()
        .into_iter()
        .filter(|u| u.topic == TOPIC)
        .map(|u| (u.schema_id, u.version, u.deprecated, u.records))
        .collect();
    let v1_id = codec.schema_id(TOPIC).expect("v1 id");
    let v2_id = codec.major_schema_id(TOPIC, 2).expect("v2 id");
    let mut expected = vec![
        (v1_id, "1.0.0".to_owned(), true, 2),
        (v2_id, "2.0.0".to_owned(), false, 1),
    ];
    expected.sort();
    assert_eq!(usage, expected);
    assert_eq!(AlertV2::VERSION, "2.0.0");
    assert_eq!((Alert::MAJOR, AlertV2::MAJOR), (1, 2));
}

#[test]
fn an_earlier_v1_schema_from_the_registry_is_recognised_as_major_1_by_its_record_name() {
    // A v1 writer schema this codec did not register (another minor of v1: one optional
    // field more), as fetched from the registry: still upcast, through resolution.
    let codec = codec();
    let v1_schema = schemas::embedded()
        .for_topic(TOPIC.name())
        .expect("v1")
        .json
        .clone();
    let mut json: serde_json::Value = serde_json::from_str(&v1_schema).expect("json");
    json["fields"][1]["type"]["fields"]
        .as_array_mut()
        .expect("payload fields")
        .push(serde_json::json!({"name": "note", "type": ["null", "string"], "default": null}));
    codec
        .add_writer_schema(4242, &json.to_string())
        .expect("writer schema");
    let v1 = sample::<Alert>();
    let mut bytes = codec.encode(&v1).expect("encode");
    bytes[1..5].copy_from_slice(&4242u32.to_be_bytes());
    bytes.push(0); // `note`: the null branch
    let read: Event<AlertV2> = codec.decode_known(&bytes).expect("upcast via resolution");
    assert_eq!(read.payload, AlertV2::from(v1.payload));

    // A writer of an unknown record name is not taken for a major of the topic.
    json["name"] = serde_json::json!("Elsewhere");
    codec
        .add_writer_schema(4243, &json.to_string())
        .expect("writer schema");
    bytes[1..5].copy_from_slice(&4243u32.to_be_bytes());
    let err = codec
        .decode_known::<AlertV2>(&bytes)
        .expect_err("another record");
    assert!(
        matches!(err, DecodeError::IncompatibleSchema { .. }),
        "{err:?}"
    );
}

#[test]
fn a_codec_built_before_major_2_refuses_it_with_typed_errors() {
    // What a binary built from the schemas before v2 existed has: major 1 only.
    let yaml = topics::EMBEDDED_YAML.replace(
        "    value_schema_majors:\n      2: rules/alerts-v2.avsc\n",
        "",
    );
    assert!(
        !yaml.contains("value_schema_majors:"),
        "edit the test with topic-config.yaml"
    );
    let config = topics::TopicConfig::parse(&yaml).expect("config");
    let catalog =
        schemas::Catalog::from_files_with(&config, schemas::EMBEDDED_FILES.iter().copied())
            .expect("catalog");
    let old = Codec::with_schemas(None, &catalog);
    old.set_schema_id(TOPIC, 1);
    old.set_major_schema_id(TOPIC, 2, 2); // unknown to it: ignored
    assert_eq!(old.major_schema_id(TOPIC, 2), None);
    let v2 = sample::<AlertV2>();
    let err = old.encode(&v2).expect_err("no major 2 to write");
    assert_eq!(err.code(), "ENCODE_NOT_REGISTERED");

    let bytes = codec().encode(&v2).expect("v2");
    let v2_json = &schemas::embedded()
        .for_major(TOPIC.name(), 2)
        .expect("major 2")
        .json;
    let (id, _) = envelope::wire::split(&bytes).expect("framed");
    old.add_writer_schema(id, v2_json).expect("writer schema");
    for err in [
        old.decode_known::<Alert>(&bytes).expect_err("v1 reader"),
        old.decode_known::<AlertV2>(&bytes)
            .expect_err("no major 2 reader"),
    ] {
        // Permanent, typed (the DLQ), never a panic; the v1 reader's resolution names the
        // field v2 lacks.
        assert!(
            ["DECODE_INCOMPATIBLE_SCHEMA", "DECODE_MISSING_FIELD"].contains(&err.code()),
            "{err}"
        );
        assert!(!err.retryable());
    }
}
