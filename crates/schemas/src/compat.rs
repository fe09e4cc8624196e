//! Schema compatibility: Confluent's levels checked by Avro schema resolution.
//!
//! `BACKWARD` means the new schema can read data written with the previous one (new
//! consumers, old data); `FORWARD` the reverse (old consumers, new data); `FULL` both. The
//! `_TRANSITIVE` forms check every earlier version instead of the latest only. adpipe's CI
//! gate uses `FULL_TRANSITIVE` against every committed version, because the spec asks for
//! BACKWARD *and* that "fields can only be deleted if they had defaults" (a FORWARD rule).

use std::{fmt, str::FromStr};

use apache_avro::{
    Schema,
    schema_compatibility::{Compatibility, SchemaCompatibility},
};

/// A Confluent compatibility level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompatibilityLevel {
    /// No checks.
    None,
    /// New schema reads the latest version's data.
    Backward,
    /// New schema reads every earlier version's data.
    BackwardTransitive,
    /// The latest version reads the new schema's data.
    Forward,
    /// Every earlier version reads the new schema's data.
    ForwardTransitive,
    /// Backward and forward against the latest version.
    Full,
    /// Backward and forward against every earlier version.
    FullTransitive,
}

impl CompatibilityLevel {
    /// All levels, in Confluent's order.
    pub const ALL: [CompatibilityLevel; 7] = [
        CompatibilityLevel::Backward,
        CompatibilityLevel::BackwardTransitive,
        CompatibilityLevel::Forward,
        CompatibilityLevel::ForwardTransitive,
        CompatibilityLevel::Full,
        CompatibilityLevel::FullTransitive,
        CompatibilityLevel::None,
    ];

    /// Confluent's spelling, e.g. `BACKWARD_TRANSITIVE`.
    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityLevel::None => "NONE",
            CompatibilityLevel::Backward => "BACKWARD",
            CompatibilityLevel::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatibilityLevel::Forward => "FORWARD",
            CompatibilityLevel::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatibilityLevel::Full => "FULL",
            CompatibilityLevel::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::FullTransitive
        )
    }

    fn backward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Backward
                | CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Forward
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A compatibility level name that Confluent does not define.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error(
    "unknown compatibility level {0:?}; expected one of BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE, NONE"
)]
pub struct UnknownLevel(pub String);

impl FromStr for CompatibilityLevel {
    type Err = UnknownLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CompatibilityLevel::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownLevel(s.to_owned()))
    }
}

/// Which readers a change would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The new schema cannot read data written with an earlier version.
    NewReadsOld,
    /// An earlier version cannot read data written with the new schema.
    OldReadsNew,
}

/// One reason a schema is incompatible with an earlier version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    /// Index of the earlier version in the list given to [`check`] (0 = oldest).
    pub version_index: usize,
    /// Which readers break.
    pub direction: Direction,
    /// What breaks, naming the field path (e.g. `payload.spend`).
    pub message: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.direction {
            Direction::NewReadsOld => write!(
                f,
                "the new schema cannot read data written by version #{}: {}",
                self.version_index + 1,
                self.message
            ),
            Direction::OldReadsNew => write!(
                f,
                "readers still on version #{} cannot read data written by the new schema: {}",
                self.version_index + 1,
                self.message
            ),
        }
    }
}

/// Whether `reader` can read everything `writer` writes; `Err` explains why not, with the
/// path of fields leading to the problem.
pub fn can_read(writer: &Schema, reader: &Schema) -> Result<(), String> {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => Ok(()),
        Ok(Compatibility::Partial) => Err(
            "only partly compatible: an enum or union of the reader lacks symbols or branches the writer can write"
                .to_owned(),
        ),
        Err(e) => {
            // Walk the error chain: each FieldTypeMismatch names one field of the path.
            let mut path = Vec::new();
            let mut err: &dyn std::error::Error = &e;
            let mut last = e.to_string();
            loop {
                let text = err.to_string();
                if let Some(field) = text
                    .strip_prefix("Incompatible schemata! Field '")
                    .and_then(|t| t.split_once("' in reader schema does not match"))
                    .map(|(f, _)| f.to_owned())
                {
                    path.push(field);
                } else {
                    last = text;
                }
                match err.source() {
                    Some(s) => err = s,
                    None => break,
                }
            }
            let last = last.trim_start_matches("Incompatible schemata! ").to_owned();
            if path.is_empty() {
                Err(last)
            } else {
                Err(format!("field {}: {last}", path.join(".")))
            }
        }
    }
}

/// Check `candidate` against earlier versions (`previous`, oldest first) at `level`.
/// Returns every incompatibility found; empty means compatible.
pub fn check(
    level: CompatibilityLevel,
    candidate: &Schema,
    previous: &[Schema],
) -> Vec<Incompatibility> {
    let against: Vec<(usize, &Schema)> = if level.transitive() {
        previous.iter().enumerate().collect()
    } else {
        previous
            .iter()
            .enumerate()
            .next_back()
            .into_iter()
            .collect()
    };
    let mut out = Vec::new();
    for (version_index, old) in against {
        if level.backward()
            && let Err(message) = can_read(old, candidate)
        {
            out.push(Incompatibility {
                version_index,
                direction: Direction::NewReadsOld,
                message,
            });
        }
        if level.forward()
            && let Err(message) = can_read(candidate, old)
        {
            out.push(Incompatibility {
                version_index,
                direction: Direction::OldReadsNew,
                message,
            });
        }
    }
    out
}

/// One subject of `current` that breaks against an earlier catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateFailure {
    /// The registry subject.
    pub subject: String,
    /// Label of the earlier catalog (e.g. a git commit).
    pub against: String,
    /// What breaks.
    pub problem: Incompatibility,
}

impl fmt::Display for GateFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (against {}): {}",
            self.subject, self.against, self.problem
        )
    }
}

/// The schema CI gate: every subject of `current` checked at `level` against the same
/// subject in each earlier catalog (`(label, catalog)`, oldest first), matched by subject
/// name, so each major version of a topic is checked against its own history only. Subjects
/// new in `current` pass; a subject that disappeared is not checked here (topics are removed
/// in `topic-config.yaml`, deliberately).
pub fn gate(
    level: CompatibilityLevel,
    history: &[(String, &crate::Catalog)],
    current: &crate::Catalog,
) -> Vec<GateFailure> {
    let mut out = Vec::new();
    for subject in current.subjects() {
        let previous: Vec<(&String, &Schema)> = history
            .iter()
            .filter_map(|(label, cat)| {
                cat.for_subject(&subject.subject)
                    .map(|s| (label, &s.schema))
            })
            .collect();
        let schemas: Vec<Schema> = previous.iter().map(|(_, s)| (*s).clone()).collect();
        for problem in check(level, &subject.schema, &schemas) {
            out.push(GateFailure {
                subject: subject.subject.clone(),
                against: previous[problem.version_index].0.clone(),
                problem,
            });
        }
    }
    out
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

    const V1: &str =
        r#"{"name":"spend","type":"long"},{"name":"note","type":["null","string"],"default":null}"#;

    #[test]
    fn levels_parse_case_insensitively() {
        for level in CompatibilityLevel::ALL {
            assert_eq!(
                level.as_str().to_lowercase().parse::<CompatibilityLevel>(),
                Ok(level)
            );
        }
        assert!("SIDEWAYS".parse::<CompatibilityLevel>().is_err());
    }

    #[test]
    fn adding_an_optional_field_is_fully_compatible() {
        let v2 = schema(&format!(
            r#"{V1},{{"name":"currency","type":["null","string"],"default":null}}"#
        ));
        assert!(check(CompatibilityLevel::FullTransitive, &v2, &[schema(V1)]).is_empty());
    }

    #[test]
    fn adding_a_field_without_default_breaks_backward() {
        let v2 = schema(&format!(r#"{V1},{{"name":"currency","type":"string"}}"#));
        let errs = check(CompatibilityLevel::Backward, &v2, &[schema(V1)]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].direction, Direction::NewReadsOld);
        assert!(errs[0].message.contains("currency"), "{}", errs[0]);
        // FORWARD alone accepts it: old readers ignore the new field.
        assert!(check(CompatibilityLevel::Forward, &v2, &[schema(V1)]).is_empty());
    }

    #[test]
    fn removing_a_field_without_default_breaks_forward_and_names_it() {
        let v2 = schema(r#"{"name":"note","type":["null","string"],"default":null}"#);
        assert!(check(CompatibilityLevel::Backward, &v2, &[schema(V1)]).is_empty());
        let errs = check(CompatibilityLevel::Full, &v2, &[schema(V1)]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].direction, Direction::OldReadsNew);
        assert!(errs[0].message.contains("spend"), "{}", errs[0]);
    }

    #[test]
    fn changing_a_type_names_the_field_path() {
        let v2 = schema(
            r#"{"name":"spend","type":"string"},{"name":"note","type":["null","string"],"default":null}"#,
        );
        let errs = check(CompatibilityLevel::Backward, &v2, &[schema(V1)]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].message.starts_with("field payload.spend"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn transitive_checks_every_version_and_plain_only_the_latest() {
        let v1 = schema(r#"{"name":"spend","type":"long"}"#);
        // v2 drops spend (allowed backward), v3 re-adds it as string without default.
        let v2 = schema(r#"{"name":"note","type":["null","string"],"default":null}"#);
        let v3 = schema(
            r#"{"name":"note","type":["null","string"],"default":null},{"name":"spend","type":"string","default":""}"#,
        );
        assert!(check(CompatibilityLevel::Backward, &v3, &[v1.clone(), v2.clone()]).is_empty());
        let errs = check(CompatibilityLevel::BackwardTransitive, &v3, &[v1, v2]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].version_index, 0);
    }

    #[test]
    fn none_accepts_anything() {
        let v2 = schema(r#"{"name":"spend","type":"string"}"#);
        assert!(check(CompatibilityLevel::None, &v2, &[schema(V1)]).is_empty());
    }
}
