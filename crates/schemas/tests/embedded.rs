//! The real `schemas/` directory: every file parses, is embedded, and yields one standalone
//! schema per topic under its `<topic>-value` subject, plus one per later major version under
//! its record-name subject.

use std::{fs, path::Path};

use apache_avro::Schema;
use topics::Topic;

fn schema_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn avsc_files(dir: &Path, base: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).expect("schemas dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            avsc_files(&path, base, out);
        } else if path.extension().is_some_and(|e| e == "avsc") {
            let rel = path.strip_prefix(base).expect("relative");
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

#[test]
fn every_file_in_schemas_is_embedded() {
    let mut on_disk = Vec::new();
    avsc_files(&schema_dir(), &schema_dir(), &mut on_disk);
    on_disk.sort();
    let mut embedded: Vec<String> = schemas::EMBEDDED_FILES
        .iter()
        .map(|(p, _)| (*p).to_owned())
        .collect();
    embedded.sort();
    assert_eq!(
        on_disk, embedded,
        "add new .avsc files to crates/schemas/src/files.rs"
    );
}

#[test]
fn the_spec_tree_is_present() {
    for path in [
        "common/metadata.avsc",
        "common/entity.avsc",
        "connector/data-raw.avsc",
        "bronze/data-cleaned.avsc",
        "silver/data-processed.avsc",
        "gold/data-ready.avsc",
        "rules/alerts.avsc",
        "config/changes.avsc",
        "etl/execution.avsc",
        "audit/events.avsc",
    ] {
        assert!(schema_dir().join(path).is_file(), "{path} missing");
    }
}

#[test]
fn every_topic_has_a_standalone_subject_schema() {
    let catalog = schemas::embedded();
    for topic in Topic::ALL {
        let s = catalog.for_topic(topic.name()).expect("subject schema");
        assert_eq!(s.subject, format!("{}-value", topic.name()));
        let parsed = Schema::parse_str(&s.json).expect("standalone schema parses alone");
        assert_eq!(parsed.canonical_form(), s.schema.canonical_form());
        // Every event carries the shared envelope, inlined from common/metadata.avsc.
        assert!(s.json.contains(r#""name":"EventMetadata""#), "{}", s.topic);
        assert!(
            s.json.contains(r#""namespace":"adpipe.common""#),
            "{}",
            s.topic
        );
    }
}

#[test]
fn a_later_major_has_its_record_name_subject_on_the_same_topic() {
    let catalog = schemas::embedded();
    let topic = Topic::RulesAlertsTriggered.name();
    let v1 = catalog.for_topic(topic).expect("major 1");
    let v2 = catalog.for_major(topic, 2).expect("major 2");
    assert_eq!((v1.major, v2.major), (1, 2));
    assert_eq!(v1.record, "adpipe.rules.AlertTriggered");
    assert_eq!(v2.record, "adpipe.rules.v2.AlertTriggered");
    assert_eq!(v2.topic, topic);
    assert_eq!(
        v2.subject,
        "rules.alerts.triggered-adpipe.rules.v2.AlertTriggered"
    );
    assert_eq!(
        catalog.for_subject(&v2.subject).map(|s| s.major),
        Some(2),
        "found by subject"
    );
    let parsed = Schema::parse_str(&v2.json).expect("standalone schema parses alone");
    assert_eq!(parsed.canonical_form(), v2.schema.canonical_form());
    // v2 is a breaking change: neither major reads the other by Avro resolution.
    assert!(schemas::compat::can_read(&v1.schema, &v2.schema).is_err());
    assert!(schemas::compat::can_read(&v2.schema, &v1.schema).is_err());
}

#[test]
fn shared_records_are_defined_once_in_common() {
    let catalog = schemas::embedded();
    let defs: Vec<(&str, &str)> = catalog.definitions().collect();
    for shared in [
        "adpipe.common.EventMetadata",
        "adpipe.common.Source",
        "adpipe.common.EntityRef",
        "adpipe.common.Actor",
        "adpipe.common.Booking",
        "adpipe.common.DspType",
    ] {
        let found: Vec<_> = defs.iter().filter(|(n, _)| *n == shared).collect();
        assert_eq!(found.len(), 1, "{shared}");
        assert!(
            found[0].1.starts_with("common/"),
            "{shared} defined in {}",
            found[0].1
        );
    }
}

#[test]
fn optional_fields_have_defaults() {
    // Every union field with a null branch must default to null so it can be added or
    // removed without breaking readers.
    for (path, text) in schemas::EMBEDDED_FILES {
        let json: serde_json::Value = serde_json::from_str(text).expect("json");
        let mut stack = vec![json];
        while let Some(v) = stack.pop() {
            match v {
                serde_json::Value::Array(items) => stack.extend(items),
                serde_json::Value::Object(obj) => {
                    if let (Some(name), Some(serde_json::Value::Array(branches))) =
                        (obj.get("name"), obj.get("type"))
                        && obj.contains_key("type")
                        && !obj.contains_key("symbols")
                        && branches.first() == Some(&serde_json::Value::String("null".into()))
                    {
                        assert_eq!(
                            obj.get("default"),
                            Some(&serde_json::Value::Null),
                            "{path}: optional field {name} needs \"default\": null"
                        );
                    }
                    stack.extend(obj.into_iter().map(|(_, v)| v));
                }
                _ => {}
            }
        }
    }
}

#[test]
fn pii_fields_are_classified() {
    let pii = schemas::embedded().pii_fields();
    let names: Vec<String> = pii
        .iter()
        .map(|p| format!("{}.{}", p.record, p.field))
        .collect();
    assert!(
        names.contains(&"adpipe.common.Actor.display_name".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"adpipe.config.ChannelDefinition.target".to_owned()),
        "{names:?}"
    );
}
