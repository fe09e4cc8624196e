//! Schema changes in plain words: what differs between two versions of a subject's schema,
//! field by field, and which readers each difference breaks and why.
//!
//! [`crate::compat::check`] (Avro schema resolution) is the verdict; this module is the
//! explanation people read in `pipelinectl schemas diff` and in the CI gate's message.

use std::{collections::BTreeSet, fmt};

use apache_avro::Schema;

/// Which readers a change breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Breaks {
    /// The new schema cannot read data written with the old one (BACKWARD broken).
    pub new_readers: bool,
    /// Consumers still on the old schema cannot read data written with the new one
    /// (FORWARD broken).
    pub old_readers: bool,
}

impl Breaks {
    /// Neither direction breaks.
    pub fn compatible(self) -> bool {
        !self.new_readers && !self.old_readers
    }
}

/// One difference between two versions of a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Field path, e.g. `payload.spend` (`[]` for array items, `{}` for map values).
    pub path: String,
    /// What changed, e.g. ``field `payload.spend` removed without a default``.
    pub what: String,
    /// Which readers break.
    pub breaks: Breaks,
    /// Why, in plain words: who can or cannot read whose data.
    pub why: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.why)
    }
}

/// Every difference between `old` and `new` (two versions of one subject), in field order.
pub fn diff(old: &Schema, new: &Schema) -> Vec<Change> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    compare("", old, new, &mut seen, &mut out);
    out
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

/// A short name for a type: `long`, `decimal(18,2)`, `[null, string]`, `adpipe.silver.X`.
pub fn describe(schema: &Schema) -> String {
    match schema {
        Schema::Null => "null".into(),
        Schema::Boolean => "boolean".into(),
        Schema::Int => "int".into(),
        Schema::Long => "long".into(),
        Schema::Float => "float".into(),
        Schema::Double => "double".into(),
        Schema::Bytes => "bytes".into(),
        Schema::String => "string".into(),
        Schema::Array(a) => format!("array<{}>", describe(&a.items)),
        Schema::Map(m) => format!("map<{}>", describe(&m.types)),
        Schema::Union(u) => format!(
            "[{}]",
            u.variants()
                .iter()
                .map(describe)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Schema::Record(r) => r.name.fullname(None),
        Schema::Enum(e) => e.name.fullname(None),
        Schema::Fixed(f) => f.name.fullname(None),
        Schema::Decimal(d) => format!("decimal({},{})", d.precision, d.scale),
        Schema::BigDecimal => "big-decimal".into(),
        Schema::Uuid(_) => "uuid".into(),
        Schema::Date => "date".into(),
        Schema::TimeMillis => "time-millis".into(),
        Schema::TimeMicros => "time-micros".into(),
        Schema::TimestampMillis => "timestamp-millis".into(),
        Schema::TimestampMicros => "timestamp-micros".into(),
        Schema::TimestampNanos => "timestamp-nanos".into(),
        Schema::LocalTimestampMillis => "local-timestamp-millis".into(),
        Schema::LocalTimestampMicros => "local-timestamp-micros".into(),
        Schema::LocalTimestampNanos => "local-timestamp-nanos".into(),
        Schema::Duration(_) => "duration".into(),
        Schema::Ref { name } => name.fullname(None),
    }
}

/// Whether a reader of type `reader` reads a value written as `writer` (Avro's promotions:
/// int → long → float → double, string ↔ bytes), for types that are not records, enums or
/// unions.
fn promotes(writer: &str, reader: &str) -> bool {
    writer == reader
        || matches!(
            (writer, reader),
            ("int", "long" | "float" | "double")
                | ("long", "float" | "double")
                | ("float", "double")
                | ("string", "bytes")
                | ("bytes", "string")
        )
}

/// The record, enum or fixed name of a named type (resolving nothing: refs keep their name).
fn named(schema: &Schema) -> Option<String> {
    match schema {
        Schema::Record(_) | Schema::Enum(_) | Schema::Fixed(_) | Schema::Ref { .. } => {
            Some(describe(schema))
        }
        _ => None,
    }
}

fn compare(
    path: &str,
    old: &Schema,
    new: &Schema,
    seen: &mut BTreeSet<String>,
    out: &mut Vec<Change>,
) {
    let subject = if path.is_empty() {
        "the top-level record".to_owned()
    } else {
        format!("field `{path}`")
    };
    match (old, new) {
        (Schema::Record(o), Schema::Record(n)) if o.name == n.name => {
            // A named type is compared once: later uses are references to the same definition.
            if !seen.insert(o.name.fullname(None)) {
                return;
            }
            compare_records(path, o, n, seen, out);
        }
        (Schema::Enum(o), Schema::Enum(n)) if o.name == n.name => {
            let removed: Vec<&String> = o
                .symbols
                .iter()
                .filter(|s| !n.symbols.contains(s))
                .collect();
            let added: Vec<&String> = n
                .symbols
                .iter()
                .filter(|s| !o.symbols.contains(s))
                .collect();
            if !removed.is_empty() {
                let fallback = n.default.is_some();
                out.push(Change {
                    path: path.to_owned(),
                    what: format!("{subject} lost enum symbols {}", list(&removed)),
                    breaks: Breaks {
                        new_readers: !fallback,
                        old_readers: false,
                    },
                    why: if fallback {
                        "old data with those symbols reads as the new enum's default".into()
                    } else {
                        "the new schema cannot read old data that holds them (no enum default)"
                            .into()
                    },
                });
            }
            if !added.is_empty() {
                let fallback = o.default.is_some();
                out.push(Change {
                    path: path.to_owned(),
                    what: format!("{subject} gained enum symbols {}", list(&added)),
                    breaks: Breaks {
                        new_readers: false,
                        old_readers: !fallback,
                    },
                    why: if fallback {
                        "consumers on the old schema read them as the old enum's default".into()
                    } else {
                        "consumers on the old schema cannot read new data that holds them (no enum default)".into()
                    },
                });
            }
        }
        (Schema::Union(o), Schema::Union(n)) => {
            let (ov, nv) = (o.variants(), n.variants());
            let names = |vs: &[Schema]| vs.iter().map(describe).collect::<Vec<_>>();
            let (on, nn) = (names(ov), names(nv));
            let removed: Vec<&String> = on.iter().filter(|b| !nn.contains(b)).collect();
            let added: Vec<&String> = nn.iter().filter(|b| !on.contains(b)).collect();
            // A branch one side lost still reads if a branch of the other promotes to it.
            let read_by =
                |branch: &String, readers: &[String]| readers.iter().any(|r| promotes(branch, r));
            if !removed.is_empty() {
                let breaks = removed.iter().any(|b| !read_by(b, &nn));
                out.push(Change {
                    path: path.to_owned(),
                    what: format!("{subject} lost union branches {}", list(&removed)),
                    breaks: Breaks {
                        new_readers: breaks,
                        old_readers: false,
                    },
                    why: if breaks {
                        "the new schema cannot read old data written as those branches".into()
                    } else {
                        "the new schema reads old data of those branches through a wider branch"
                            .into()
                    },
                });
            }
            if !added.is_empty() {
                let breaks = added.iter().any(|b| !read_by(b, &on));
                out.push(Change {
                    path: path.to_owned(),
                    what: format!("{subject} gained union branches {}", list(&added)),
                    breaks: Breaks {
                        new_readers: false,
                        old_readers: breaks,
                    },
                    why: if breaks {
                        "consumers on the old schema cannot read new data written as those branches"
                            .into()
                    } else {
                        "consumers on the old schema read them through a wider branch".into()
                    },
                });
            }
            for (o, on) in ov.iter().zip(&on) {
                if let Some(i) = nn.iter().position(|n| n == on) {
                    compare(path, o, &nv[i], seen, out);
                }
            }
        }
        (Schema::Array(o), Schema::Array(n)) => {
            compare(&format!("{path}[]"), &o.items, &n.items, seen, out);
        }
        (Schema::Map(o), Schema::Map(n)) => {
            compare(&format!("{path}{{}}"), &o.types, &n.types, seen, out);
        }
        _ => {
            let (od, nd) = (describe(old), describe(new));
            if od == nd {
                return;
            }
            if let (Some(o), Some(n)) = (named(old), named(new)) {
                out.push(Change {
                    path: path.to_owned(),
                    what: format!("{subject} renamed its type from {o} to {n}"),
                    breaks: Breaks {
                        new_readers: true,
                        old_readers: true,
                    },
                    why: "readers match named types by name, so neither version reads the other's data".into(),
                });
                return;
            }
            let breaks = type_change(old, new);
            let why = match (breaks.new_readers, breaks.old_readers) {
                (false, false) => "each version reads the other's data".to_owned(),
                (false, true) => format!(
                    "the new schema reads old data ({od} widens to {nd}), but consumers on the old schema cannot read new data"
                ),
                (true, false) => format!(
                    "consumers on the old schema read new data, but the new schema cannot read old data written as {od}"
                ),
                (true, true) => format!(
                    "a {od} cannot be read as {nd} nor the reverse: neither version reads the other's data"
                ),
            };
            out.push(Change {
                path: path.to_owned(),
                what: format!("{subject} changed type from {od} to {nd}"),
                breaks,
                why,
            });
        }
    }
}

/// A type change that is not within a record, enum, union, array or map of both versions.
fn type_change(old: &Schema, new: &Schema) -> Breaks {
    let readable = |writer: &Schema, reader: &Schema| match (writer, reader) {
        // A union reader reads a writer type it has a branch for; a union writer is read
        // by a plain reader only when every branch is.
        (w, Schema::Union(r)) if !matches!(w, Schema::Union(_)) => r
            .variants()
            .iter()
            .any(|b| promotes(&describe(w), &describe(b))),
        (Schema::Union(w), r) => w
            .variants()
            .iter()
            .all(|b| promotes(&describe(b), &describe(r))),
        (w, r) => promotes(&describe(w), &describe(r)),
    };
    Breaks {
        new_readers: !readable(old, new),
        old_readers: !readable(new, old),
    }
}

fn compare_records(
    path: &str,
    old: &apache_avro::schema::RecordSchema,
    new: &apache_avro::schema::RecordSchema,
    seen: &mut BTreeSet<String>,
    out: &mut Vec<Change>,
) {
    for o in &old.fields {
        let p = join(path, &o.name);
        match new.fields.iter().find(|n| n.name == o.name) {
            Some(n) => compare(&p, &o.schema, &n.schema, seen, out),
            None => out.push(match &o.default {
                Some(d) => Change {
                    path: p.clone(),
                    what: format!("field `{p}` removed (it had the default {d})"),
                    breaks: Breaks::default(),
                    why: "consumers on the old schema fill in that default when they read new data"
                        .into(),
                },
                None => Change {
                    path: p.clone(),
                    what: format!("field `{p}` removed without a default"),
                    breaks: Breaks {
                        new_readers: false,
                        old_readers: true,
                    },
                    why: "consumers on the old schema cannot read new data, which lacks it".into(),
                },
            }),
        }
    }
    for n in &new.fields {
        if old.fields.iter().any(|o| o.name == n.name) {
            continue;
        }
        let p = join(path, &n.name);
        out.push(match &n.default {
            Some(d) => Change {
                path: p.clone(),
                what: format!("field `{p}` added with the default {d}"),
                breaks: Breaks::default(),
                why: "the new schema reads old data as that default, and consumers on the old schema skip the field".into(),
            },
            None => Change {
                path: p.clone(),
                what: format!("field `{p}` added without a default"),
                breaks: Breaks {
                    new_readers: true,
                    old_readers: false,
                },
                why: "the new schema cannot read data written before it, which lacks the field; make it optional (`[\"null\", T]` with `\"default\": null`) or give it a default".into(),
            },
        });
    }
}

fn list(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type":"record","name":"R","fields":[{{"name":"payload","type":{{"type":"record","name":"P","fields":[{fields}]}}}}]}}"#
        ))
        .expect("test schema")
    }

    const V1: &str = r#"{"name":"spend","type":"long"},{"name":"note","type":["null","string"],"default":null},{"name":"kind","type":{"type":"enum","name":"K","symbols":["a","b"]}}"#;

    fn one(old: &str, new: &str) -> Change {
        let changes = diff(&schema(old), &schema(new));
        assert_eq!(changes.len(), 1, "{changes:#?}");
        changes.into_iter().next().expect("one change")
    }

    #[test]
    fn the_same_schema_has_no_changes() {
        assert!(diff(&schema(V1), &schema(V1)).is_empty());
    }

    #[test]
    fn removing_a_field_without_default_names_it_and_the_readers_it_breaks() {
        let c = one(V1, &V1.replace(r#"{"name":"spend","type":"long"},"#, ""));
        assert_eq!(c.path, "payload.spend");
        assert_eq!(
            c.to_string(),
            "field `payload.spend` removed without a default: consumers on the old schema cannot read new data, which lacks it"
        );
        assert_eq!(
            c.breaks,
            Breaks {
                new_readers: false,
                old_readers: true
            }
        );
    }

    #[test]
    fn removing_a_field_with_default_is_compatible() {
        let c = one(
            V1,
            &V1.replace(
                r#",{"name":"note","type":["null","string"],"default":null}"#,
                "",
            ),
        );
        assert!(c.breaks.compatible(), "{c}");
        assert!(c.what.contains("payload.note"), "{c}");
    }

    #[test]
    fn changing_a_type_says_from_what_to_what() {
        let c = one(
            V1,
            &V1.replace(r#""spend","type":"long""#, r#""spend","type":"string""#),
        );
        assert_eq!(
            c.what,
            "field `payload.spend` changed type from long to string"
        );
        assert!(c.breaks.new_readers && c.breaks.old_readers, "{c}");
        assert!(c.why.contains("neither version"), "{c}");
    }

    #[test]
    fn widening_breaks_only_old_readers() {
        let old = V1.replace(r#""spend","type":"long""#, r#""spend","type":"int""#);
        let c = one(&old, V1);
        assert_eq!(
            c.breaks,
            Breaks {
                new_readers: false,
                old_readers: true
            }
        );
        assert!(c.why.contains("int widens to long"), "{c}");
    }

    #[test]
    fn adding_fields_with_and_without_default() {
        let c = one(
            V1,
            &format!(r#"{V1},{{"name":"usd","type":["null","double"],"default":null}}"#),
        );
        assert!(c.breaks.compatible(), "{c}");
        assert_eq!(c.what, "field `payload.usd` added with the default null");

        let c = one(V1, &format!(r#"{V1},{{"name":"usd","type":"double"}}"#));
        assert_eq!(
            c.breaks,
            Breaks {
                new_readers: true,
                old_readers: false
            }
        );
        assert!(c.what.contains("without a default"), "{c}");
    }

    #[test]
    fn enum_symbols_and_union_branches() {
        let c = one(V1, &V1.replace(r#"["a","b"]"#, r#"["a","b","c"]"#));
        assert_eq!(c.what, "field `payload.kind` gained enum symbols c");
        assert!(c.breaks.old_readers && !c.breaks.new_readers, "{c}");

        let c = one(V1, &V1.replace(r#"["a","b"]"#, r#"["a"]"#));
        assert!(c.breaks.new_readers && !c.breaks.old_readers, "{c}");

        let c = one(
            V1,
            &V1.replace(r#"["null","string"]"#, r#"["null","string","long"]"#),
        );
        assert_eq!(c.what, "field `payload.note` gained union branches long");
        assert!(c.breaks.old_readers, "{c}");
    }

    #[test]
    fn making_a_field_optional_breaks_only_old_readers() {
        let c = one(
            V1,
            &V1.replace(
                r#""spend","type":"long""#,
                r#""spend","type":["null","long"]"#,
            ),
        );
        assert_eq!(
            c.what,
            "field `payload.spend` changed type from long to [null, long]"
        );
        assert_eq!(
            c.breaks,
            Breaks {
                new_readers: false,
                old_readers: true
            }
        );
    }

    /// The explanation agrees with Avro resolution on every case above.
    #[test]
    fn explanations_agree_with_the_resolution_verdict() {
        use crate::compat::{CompatibilityLevel, Direction, check};
        let cases = [
            V1.replace(r#"{"name":"spend","type":"long"},"#, ""),
            V1.replace(r#""spend","type":"long""#, r#""spend","type":"string""#),
            V1.replace(r#""spend","type":"long""#, r#""spend","type":"double""#),
            format!(r#"{V1},{{"name":"usd","type":"double"}}"#),
            V1.replace(r#"["a","b"]"#, r#"["a","b","c"]"#),
            V1.replace(r#"["a","b"]"#, r#"["a"]"#),
            V1.replace(
                r#""spend","type":"long""#,
                r#""spend","type":["null","long"]"#,
            ),
        ];
        for new in cases {
            let (o, n) = (schema(V1), schema(&new));
            let mut breaks = Breaks::default();
            for c in diff(&o, &n) {
                breaks.new_readers |= c.breaks.new_readers;
                breaks.old_readers |= c.breaks.old_readers;
            }
            let verdict = check(CompatibilityLevel::Full, &n, &[o]);
            let avro = Breaks {
                new_readers: verdict
                    .iter()
                    .any(|p| p.direction == Direction::NewReadsOld),
                old_readers: verdict
                    .iter()
                    .any(|p| p.direction == Direction::OldReadsNew),
            };
            assert_eq!(breaks, avro, "{new}: {verdict:?}");
        }
    }

    mod generated {
        use super::*;
        use crate::compat::{CompatibilityLevel, Direction, check};
        use proptest::prelude::*;
        use serde_json::{Value, json};

        /// Field types to draw from: promotable primitives, unions, an enum and an array.
        const TYPES: usize = 12;

        fn field_type(kind: usize, field: &str, symbols: usize) -> (Value, Value) {
            let enum_symbols: Vec<String> = (0..symbols.max(1)).map(|i| format!("s{i}")).collect();
            match kind % TYPES {
                0 => (json!("int"), json!(0)),
                1 => (json!("long"), json!(0)),
                2 => (json!("float"), json!(0.0)),
                3 => (json!("double"), json!(0.0)),
                4 => (json!("string"), json!("")),
                5 => (json!("bytes"), json!("")),
                6 => (json!("boolean"), json!(false)),
                7 => (json!(["null", "string"]), Value::Null),
                8 => (json!(["null", "long"]), Value::Null),
                9 => (json!(["null", "double", "string"]), Value::Null),
                10 => (
                    json!({"type": "enum", "name": format!("E_{field}"), "symbols": enum_symbols}),
                    json!("s0"),
                ),
                _ => (json!({"type": "array", "items": "long"}), json!([])),
            }
        }

        /// (type kind, has default, enum symbols) per field `f0..`.
        type Fields = Vec<Option<(usize, bool, usize)>>;

        fn render(fields: &Fields) -> Schema {
            let fields: Vec<Value> = fields
                .iter()
                .enumerate()
                .filter_map(|(i, f)| {
                    let (kind, with_default, symbols) = (*f)?;
                    let name = format!("f{i}");
                    let (t, default) = field_type(kind, &name, symbols);
                    let mut field = json!({"name": name, "type": t});
                    if with_default {
                        field["default"] = default;
                    }
                    Some(field)
                })
                .collect();
            Schema::parse(&json!({"type": "record", "name": "R", "fields": fields}))
                .expect("generated schema")
        }

        fn field() -> impl Strategy<Value = Option<(usize, bool, usize)>> {
            prop::option::weighted(0.85, (0..TYPES, any::<bool>(), 1usize..4))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            /// Whatever two versions look like, the explanation blames the same readers as
            /// Avro schema resolution does.
            #[test]
            fn explanations_agree_with_avro_resolution(
                old in prop::collection::vec(field(), 1..6),
                new in prop::collection::vec(field(), 1..7),
            ) {
                let (o, n) = (render(&old), render(&new));
                let mut explained = Breaks::default();
                for c in diff(&o, &n) {
                    explained.new_readers |= c.breaks.new_readers;
                    explained.old_readers |= c.breaks.old_readers;
                }
                let verdict = check(CompatibilityLevel::Full, &n, std::slice::from_ref(&o));
                let avro = Breaks {
                    new_readers: verdict.iter().any(|p| p.direction == Direction::NewReadsOld),
                    old_readers: verdict.iter().any(|p| p.direction == Direction::OldReadsNew),
                };
                prop_assert_eq!(
                    explained, avro,
                    "old {:?} new {:?}: {:#?} vs {:?}", old, new, diff(&o, &n), verdict
                );
            }
        }
    }
}
