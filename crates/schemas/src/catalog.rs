//! The schema catalog: every named type of `schemas/` defined once, and each topic's value
//! schema made standalone by inlining the shared definitions it refers to.

use std::collections::{BTreeMap, BTreeSet};

use apache_avro::Schema;
use serde_json::{Map, Value};
use topics::TopicConfig;

/// Why the schema files do not form a valid catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A file is not JSON.
    #[error("{file}: not valid JSON: {source}")]
    Json {
        /// File path under `schemas/`.
        file: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A named type is defined in two places.
    #[error(
        "{name} is defined twice ({first} and {second}); define it once and refer to it by name"
    )]
    Duplicate {
        /// Full name of the type.
        name: String,
        /// Where it was first defined.
        first: String,
        /// Where it was defined again.
        second: String,
    },
    /// A type refers to a name nothing defines.
    #[error("{file}: unknown type {name}")]
    UnknownType {
        /// File of the reference.
        file: String,
        /// The name referred to.
        name: String,
    },
    /// A topic names a schema file that does not exist or is not one record.
    #[error("topic {topic}: value schema {file} {problem}")]
    TopicSchema {
        /// The topic.
        topic: String,
        /// Its value schema file.
        file: String,
        /// What is wrong.
        problem: String,
    },
    /// The standalone schema is not valid Avro.
    #[error("{file}: invalid Avro schema: {source}")]
    Avro {
        /// File path under `schemas/`.
        file: String,
        /// The Avro error.
        source: Box<apache_avro::Error>,
    },
}

const PRIMITIVES: &[&str] = &[
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

#[derive(Debug, Clone)]
struct Definition {
    json: Map<String, Value>,
    namespace: Option<String>,
    file: String,
}

/// A field the schemas classify as personal data (attribute `"pii"` on the field).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PiiField {
    /// Full name of the record that holds the field.
    pub record: String,
    /// Field name.
    pub field: String,
    /// Classification, e.g. `personal` or `contact`.
    pub class: String,
}

/// The schema registered for one topic's values (one major version of them).
#[derive(Debug, Clone)]
pub struct SubjectSchema {
    /// Topic name.
    pub topic: String,
    /// Major version: 1 for the topic's `value_schema`, 2 and on for `value_schema_majors`.
    pub major: u32,
    /// Registry subject (`<topic>-value` for major 1, `<topic>-<record>` for later majors).
    pub subject: String,
    /// Source file under `schemas/`.
    pub file: String,
    /// Full name of the top-level record.
    pub record: String,
    /// Standalone schema JSON (shared types inlined), as registered.
    pub json: String,
    /// The parsed schema.
    pub schema: Schema,
}

/// All schema files, checked and resolved.
#[derive(Debug, Clone)]
pub struct Catalog {
    files: BTreeMap<String, Value>,
    definitions: BTreeMap<String, Definition>,
    /// By (topic, major).
    subjects: BTreeMap<(String, u32), SubjectSchema>,
}

fn fullname(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        _ if name.contains('.') => name.to_owned(),
        Some(ns) if !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_owned(),
    }
}

fn split_fullname(full: &str) -> (Option<&str>, &str) {
    match full.rsplit_once('.') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, full),
    }
}

fn is_named_definition(obj: &Map<String, Value>) -> bool {
    matches!(
        obj.get("type").and_then(Value::as_str),
        Some("record" | "enum" | "fixed" | "error")
    ) && obj.contains_key("name")
}

fn definition_namespace(obj: &Map<String, Value>, enclosing: Option<&str>) -> Option<String> {
    let name = obj.get("name").and_then(Value::as_str).unwrap_or_default();
    if let Some((ns, _)) = name.rsplit_once('.') {
        return Some(ns.to_owned());
    }
    match obj.get("namespace").and_then(Value::as_str) {
        Some(ns) => Some(ns.to_owned()),
        None => enclosing.map(str::to_owned),
    }
}

impl Catalog {
    /// Build the catalog from `(path, text)` pairs using the embedded topic configuration.
    pub fn from_files<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Catalog, CatalogError> {
        Catalog::from_files_with(TopicConfig::embedded(), files)
    }

    /// Build the catalog from `(path, text)` pairs for the topics of `config`.
    pub fn from_files_with<'a>(
        config: &TopicConfig,
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Catalog, CatalogError> {
        let mut catalog = Catalog {
            files: BTreeMap::new(),
            definitions: BTreeMap::new(),
            subjects: BTreeMap::new(),
        };
        for (path, text) in files {
            let json: Value = serde_json::from_str(text).map_err(|source| CatalogError::Json {
                file: path.to_owned(),
                source,
            })?;
            catalog.collect(&json, None, path)?;
            catalog.files.insert(path.to_owned(), json);
        }
        for topic in &config.topics {
            let majors = std::iter::once((1, &topic.value_schema)).chain(
                topic
                    .value_schema_majors
                    .iter()
                    .map(|(major, file)| (*major, file)),
            );
            for (major, file) in majors {
                let subject = catalog.subject_for(&topic.name, major, file)?;
                catalog
                    .subjects
                    .insert((topic.name.clone(), major), subject);
            }
            let mut records = BTreeSet::new();
            for s in catalog.subjects.values().filter(|s| s.topic == topic.name) {
                if !records.insert(s.record.as_str()) {
                    return Err(CatalogError::TopicSchema {
                        topic: topic.name.clone(),
                        file: s.file.clone(),
                        problem: format!(
                            "names the record {} of another major version; a new major needs \
                             a record name of its own (adpipe.<domain>.v<major>.<Record>)",
                            s.record
                        ),
                    });
                }
            }
        }
        Ok(catalog)
    }

    fn collect(&mut self, json: &Value, ns: Option<&str>, file: &str) -> Result<(), CatalogError> {
        match json {
            Value::Array(items) => {
                for item in items {
                    self.collect(item, ns, file)?;
                }
            }
            Value::Object(obj) => {
                let mut inner_ns = ns.map(str::to_owned);
                if is_named_definition(obj) {
                    let namespace = definition_namespace(obj, ns);
                    let name = obj.get("name").and_then(Value::as_str).unwrap_or_default();
                    let full = fullname(name, namespace.as_deref());
                    if let Some(first) = self.definitions.get(&full) {
                        return Err(CatalogError::Duplicate {
                            name: full,
                            first: first.file.clone(),
                            second: file.to_owned(),
                        });
                    }
                    self.definitions.insert(
                        full,
                        Definition {
                            json: obj.clone(),
                            namespace: namespace.clone(),
                            file: file.to_owned(),
                        },
                    );
                    inner_ns = namespace;
                }
                for key in ["type", "items", "values"] {
                    if let Some(v) = obj.get(key).filter(|v| !v.is_string()) {
                        self.collect(v, inner_ns.as_deref(), file)?;
                    }
                }
                if let Some(Value::Array(fields)) = obj.get("fields") {
                    for field in fields {
                        if let Some(t) = field.get("type") {
                            self.collect(t, inner_ns.as_deref(), file)?;
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn subject_for(
        &self,
        topic: &str,
        major: u32,
        file: &str,
    ) -> Result<SubjectSchema, CatalogError> {
        let problem = |p: &str| CatalogError::TopicSchema {
            topic: topic.to_owned(),
            file: file.to_owned(),
            problem: p.to_owned(),
        };
        let json = self
            .files
            .get(file)
            .ok_or_else(|| problem("does not exist"))?;
        let obj = json
            .as_object()
            .filter(|o| o.get("type").and_then(Value::as_str) == Some("record"))
            .ok_or_else(|| problem("is not a single record schema"))?;
        let namespace = definition_namespace(obj, None);
        let name = obj.get("name").and_then(Value::as_str).unwrap_or_default();
        let record = fullname(name, namespace.as_deref());
        let mut defined = BTreeSet::new();
        let standalone = self.inline(json, None, &mut defined, file)?;
        let text = serde_json::to_string(&standalone).map_err(|source| CatalogError::Json {
            file: file.to_owned(),
            source,
        })?;
        let schema = Schema::parse_str(&text).map_err(|source| CatalogError::Avro {
            file: file.to_owned(),
            source: Box::new(source),
        })?;
        Ok(SubjectSchema {
            topic: topic.to_owned(),
            major,
            subject: crate::major_subject_name(topic, major, &record),
            file: file.to_owned(),
            record,
            json: text,
            schema,
        })
    }

    /// Copy `json` with every reference to a type not yet defined replaced by its definition.
    fn inline(
        &self,
        json: &Value,
        ns: Option<&str>,
        defined: &mut BTreeSet<String>,
        file: &str,
    ) -> Result<Value, CatalogError> {
        match json {
            Value::String(name) if PRIMITIVES.contains(&name.as_str()) => Ok(json.clone()),
            Value::String(name) => {
                let full = if self.definitions.contains_key(name) {
                    name.clone()
                } else {
                    fullname(name, ns)
                };
                if defined.contains(&full) {
                    return Ok(Value::String(full));
                }
                let def = self
                    .definitions
                    .get(&full)
                    .ok_or_else(|| CatalogError::UnknownType {
                        file: file.to_owned(),
                        name: full.clone(),
                    })?;
                self.inline(
                    &Value::Object(def.json.clone()),
                    def.namespace.as_deref(),
                    defined,
                    &def.file,
                )
            }
            Value::Array(items) => items
                .iter()
                .map(|i| self.inline(i, ns, defined, file))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Value::Object(obj) => {
                let mut out = obj.clone();
                let mut inner_ns = ns.map(str::to_owned);
                if is_named_definition(obj) {
                    let namespace = definition_namespace(obj, ns);
                    let name = obj.get("name").and_then(Value::as_str).unwrap_or_default();
                    let full = fullname(name, namespace.as_deref());
                    if !defined.insert(full.clone()) {
                        return Ok(Value::String(full));
                    }
                    // Spell the namespace out: the definition may land in another namespace.
                    let (def_ns, short) = split_fullname(&full);
                    out.insert("name".into(), Value::String(short.to_owned()));
                    match def_ns {
                        Some(n) => out.insert("namespace".into(), Value::String(n.to_owned())),
                        None => out.remove("namespace"),
                    };
                    inner_ns = namespace;
                }
                for key in ["type", "items", "values"] {
                    if let Some(v) = obj.get(key) {
                        let is_keyword = key == "type"
                            && v.as_str().is_some_and(|s| {
                                matches!(s, "record" | "enum" | "fixed" | "error" | "array" | "map")
                            });
                        if !is_keyword {
                            out.insert(
                                key.into(),
                                self.inline(v, inner_ns.as_deref(), defined, file)?,
                            );
                        }
                    }
                }
                if let Some(Value::Array(fields)) = obj.get("fields") {
                    let mut new_fields = Vec::with_capacity(fields.len());
                    for field in fields {
                        let mut f = field.as_object().cloned().unwrap_or_default();
                        if let Some(t) = field.get("type") {
                            f.insert(
                                "type".into(),
                                self.inline(t, inner_ns.as_deref(), defined, file)?,
                            );
                        }
                        new_fields.push(Value::Object(f));
                    }
                    out.insert("fields".into(), Value::Array(new_fields));
                }
                Ok(Value::Object(out))
            }
            other => Ok(other.clone()),
        }
    }

    /// The schema of one topic's values (major version 1, subject `<topic>-value`).
    pub fn for_topic(&self, topic: &str) -> Option<&SubjectSchema> {
        self.for_major(topic, 1)
    }

    /// The schema of major version `major` of one topic's values.
    pub fn for_major(&self, topic: &str, major: u32) -> Option<&SubjectSchema> {
        self.subjects.get(&(topic.to_owned(), major))
    }

    /// The schema registered under `subject`.
    pub fn for_subject(&self, subject: &str) -> Option<&SubjectSchema> {
        self.subjects.values().find(|s| s.subject == subject)
    }

    /// Every subject: each topic's value schema per major version, by topic name and major.
    pub fn subjects(&self) -> impl Iterator<Item = &SubjectSchema> {
        self.subjects.values()
    }

    /// Every named type's full name and the file that defines it.
    pub fn definitions(&self) -> impl Iterator<Item = (&str, &str)> {
        self.definitions
            .iter()
            .map(|(name, d)| (name.as_str(), d.file.as_str()))
    }

    /// The paths of the files the catalog was built from.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// Fields classified as PII (`"pii": "<class>"` on the field), across all definitions.
    pub fn pii_fields(&self) -> Vec<PiiField> {
        let mut out = Vec::new();
        for (record, def) in &self.definitions {
            if let Some(Value::Array(fields)) = def.json.get("fields") {
                for field in fields {
                    if let (Some(name), Some(class)) = (
                        field.get("name").and_then(Value::as_str),
                        field.get("pii").and_then(Value::as_str),
                    ) {
                        out.push(PiiField {
                            record: record.clone(),
                            field: name.to_owned(),
                            class: class.to_owned(),
                        });
                    }
                }
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> TopicConfig {
        TopicConfig::parse(
            "schema_registry: {url: x, compatibility: BACKWARD, auto_register: true}\n\
             dlq: {suffix: .dlq, retention: 14d}\n\
             topics:\n  - {name: t.a.b, partitions: 1, replication_factor: 1, retention: 1d, \
             cleanup_policy: delete, key: org_id, value_schema: t.avsc}\n",
        )
        .expect("config")
    }

    const COMMON: &str = r#"[{"type":"record","name":"Shared","namespace":"x.common",
        "fields":[{"name":"n","type":{"type":"enum","name":"Kind","symbols":["a","b"]}}]}]"#;

    #[test]
    fn shared_types_are_inlined_once_with_their_namespace() {
        let top = r#"{"type":"record","name":"Top","namespace":"x.t","fields":[
            {"name":"one","type":"x.common.Shared"},
            {"name":"two","type":"x.common.Shared"},
            {"name":"kind","type":"x.common.Kind"}]}"#;
        let cat = Catalog::from_files_with(&cfg(), [("common.avsc", COMMON), ("t.avsc", top)])
            .expect("catalog");
        let s = cat.for_topic("t.a.b").expect("subject");
        assert_eq!(s.subject, "t.a.b-value");
        assert_eq!(s.record, "x.t.Top");
        assert_eq!(
            s.json.matches(r#""name":"Shared""#).count(),
            1,
            "{}",
            s.json
        );
        assert!(s.json.contains(r#""namespace":"x.common""#));
        // A standalone schema parses on its own, without the catalog.
        Schema::parse_str(&s.json).expect("standalone");
    }

    #[test]
    fn duplicate_and_unknown_names_are_errors() {
        let dup = r#"{"type":"record","name":"Shared","namespace":"x.common","fields":[]}"#;
        let err = Catalog::from_files_with(&cfg(), [("common.avsc", COMMON), ("t.avsc", dup)])
            .expect_err("duplicate");
        assert!(matches!(err, CatalogError::Duplicate { .. }), "{err}");

        let unknown = r#"{"type":"record","name":"Top","namespace":"x.t","fields":[
            {"name":"one","type":"x.common.Nope"}]}"#;
        let err = Catalog::from_files_with(&cfg(), [("common.avsc", COMMON), ("t.avsc", unknown)])
            .expect_err("unknown");
        assert!(err.to_string().contains("x.common.Nope"), "{err}");

        let missing =
            Catalog::from_files_with(&cfg(), [("common.avsc", COMMON)]).expect_err("missing");
        assert!(
            matches!(missing, CatalogError::TopicSchema { .. }),
            "{missing}"
        );
    }
}
