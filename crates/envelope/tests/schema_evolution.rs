//! Schema evolution of `silver.data.processed` from contract 1.0.0 to 1.1.0 (the optional
//! `spend_usd`): data written by either version is read by the other through Avro
//! writer → reader resolution, with no lock-step deploy. 1.0.0 is the schema as committed
//! before the change (`fixtures/silver-data-processed-1.0.0.avsc`).

use proptest::{prelude::*, strategy::ValueTree};
use topics::Topic;

use envelope::{Codec, Event, Money, evolution::encode_with_writer, payload::silver::ProcessedRow};
use schemas::{Catalog, CompatibilityLevel, compat};

const V1_0_FILE: &str = include_str!("fixtures/silver-data-processed-1.0.0.avsc");
const V1_0_ID: u32 = 101;
const V1_1_ID: u32 = 202;
const TOPIC: Topic = Topic::SilverDataProcessed;

/// The catalog of `schemas/` with silver's file as it was in 1.0.0.
fn catalog_1_0() -> Catalog {
    envelope::evolution::catalog_with(TOPIC, V1_0_FILE).expect("the 1.0.0 catalog builds")
}

fn json(catalog: &Catalog) -> String {
    catalog
        .for_topic(TOPIC.name())
        .expect("subject")
        .json
        .clone()
}

/// A consumer and producer built from 1.0.0 and one built from the tree, each knowing the
/// other's schema id as the registry would tell them.
fn codecs() -> (Codec, Codec) {
    let old = catalog_1_0();
    let old_codec = Codec::with_schemas(None, &old);
    old_codec.set_schema_id(TOPIC, V1_0_ID);
    let new_codec = Codec::offline();
    new_codec.set_schema_id(TOPIC, V1_1_ID);
    old_codec
        .add_writer_schema(V1_1_ID, &json(schemas::embedded()))
        .expect("1.1.0 schema");
    new_codec
        .add_writer_schema(V1_0_ID, &json(&old))
        .expect("1.0.0 schema");
    (old_codec, new_codec)
}

fn money(s: &str) -> Money {
    s.parse().expect("money")
}

#[test]
fn the_fixture_is_the_version_before_the_field_and_both_are_fully_compatible() {
    let old = catalog_1_0();
    let old = &old.for_topic(TOPIC.name()).expect("subject").schema;
    let new = &schemas::embedded()
        .for_topic(TOPIC.name())
        .expect("subject")
        .schema;
    assert!(!json(&catalog_1_0()).contains("spend_usd"));
    assert!(json(schemas::embedded()).contains("spend_usd"));
    let problems = compat::check(
        CompatibilityLevel::FullTransitive,
        new,
        std::slice::from_ref(old),
    );
    assert!(problems.is_empty(), "{problems:?}");
}

fn check_both_ways(event: &Event<ProcessedRow>) -> Result<(), TestCaseError> {
    let (old_codec, new_codec) = codecs();

    // An old consumer reads what a new producer writes: the new field is skipped.
    let new_bytes = new_codec.encode(event).expect("encode 1.1.0");
    prop_assert_eq!(&new_bytes[1..5], &V1_1_ID.to_be_bytes());
    let seen_by_old: Event<ProcessedRow> = old_codec
        .decode_known(&new_bytes)
        .expect("1.0.0 reads 1.1.0");
    let mut expected = event.clone();
    expected.payload.spend_usd = None;
    prop_assert_eq!(&seen_by_old, &expected);

    // A new consumer reads what an old producer writes: the new field takes its default.
    let mut old_event = event.clone();
    old_event.metadata.event_version = "1.0.0".to_owned();
    let old_bytes = encode_with_writer(&new_codec, &old_event, V1_0_ID, &json(&catalog_1_0()))
        .expect("1.0.0 writes it");
    prop_assert_eq!(&old_bytes[1..5], &V1_0_ID.to_be_bytes());
    prop_assert_ne!(
        &old_bytes[5..],
        &new_bytes[5..],
        "the two versions write different bytes"
    );
    let seen_by_new: Event<ProcessedRow> = new_codec
        .decode_known(&old_bytes)
        .expect("1.1.0 reads 1.0.0");
    let mut expected = old_event;
    expected.payload.spend_usd = None;
    prop_assert_eq!(&seen_by_new, &expected);

    // And each reads its own version directly.
    let own: Event<ProcessedRow> = new_codec
        .decode_known(&new_bytes)
        .expect("1.1.0 reads 1.1.0");
    prop_assert_eq!(&own, event);
    Ok(())
}

#[test]
fn a_row_with_spend_usd_crosses_versions_both_ways() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let row = any::<ProcessedRow>()
        .new_tree(&mut runner)
        .expect("a generated row")
        .current();
    let mut event = Event::new(
        7,
        envelope::Source {
            service: "silver-processor".into(),
            instance: "test".into(),
        },
        row,
    );
    event.payload.spend_usd = Some(money("1337.24"));
    assert_eq!(event.metadata.event_version, "1.1.0");
    check_both_ways(&event).expect("both ways");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn every_row_crosses_versions_both_ways(event in any::<Event<ProcessedRow>>()) {
        check_both_ways(&event)?;
    }
}

#[test]
fn the_codec_counts_records_per_writer_version_and_flags_deprecated_ones() {
    let (_, new_codec) = codecs();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let event = any::<Event<ProcessedRow>>()
        .new_tree(&mut runner)
        .expect("a generated event")
        .current();
    let mut current = event.clone();
    current.metadata.event_version = "1.1.0".to_owned();
    let mut old = event;
    old.metadata.event_version = "1.0.0".to_owned();
    let old_bytes = encode_with_writer(&new_codec, &old, V1_0_ID, &json(&catalog_1_0()))
        .expect("1.0.0 writes it");
    let new_bytes = new_codec.encode(&current).expect("1.1.0 writes it");
    assert!(new_codec.schema_usage().is_empty(), "nothing decoded yet");
    for bytes in [&old_bytes, &new_bytes, &new_bytes, &old_bytes, &new_bytes] {
        let _: Event<ProcessedRow> = new_codec.decode_known(bytes).expect("decodes");
    }
    let usage: Vec<(u32, String, bool, u64)> = new_codec
        .schema_usage()
        .into_iter()
        .map(|u| {
            assert_eq!(u.topic, TOPIC);
            (u.schema_id, u.version, u.deprecated, u.records)
        })
        .collect();
    assert_eq!(
        usage,
        vec![
            (V1_0_ID, "1.0.0".to_owned(), true, 2),
            (V1_1_ID, "1.1.0".to_owned(), false, 3),
        ]
    );
}
