//! The schema CI gate: the schemas in this tree must stay FULL_TRANSITIVE compatible with
//! every version of `schemas/` committed to git (BACKWARD, plus the spec's rule that fields
//! can only be deleted if they had defaults). A breaking change needs a new major version
//! under a new subject instead.

use std::{path::Path, process::Command};

use schemas::{Catalog, CompatibilityLevel, compat::gate};
use topics::TopicConfig;

fn repo_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn git(args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("git runs (the schema gate reads earlier schema versions from git)");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The catalog as committed at `rev`.
fn catalog_at(rev: &str) -> Catalog {
    let config = TopicConfig::parse(&git(&["show", &format!("{rev}:topic-config.yaml")]))
        .unwrap_or_else(|e| panic!("topic-config.yaml at {rev}: {e}"));
    let paths = git(&["ls-tree", "-r", "--name-only", rev, "--", "schemas/"]);
    let files: Vec<(String, String)> = paths
        .lines()
        .filter(|p| p.ends_with(".avsc"))
        .map(|p| {
            let rel = p.trim_start_matches("schemas/").to_owned();
            (rel, git(&["show", &format!("{rev}:{p}")]))
        })
        .collect();
    Catalog::from_files_with(&config, files.iter().map(|(p, t)| (p.as_str(), t.as_str())))
        .unwrap_or_else(|e| panic!("schemas at {rev}: {e}"))
}

#[test]
fn current_schemas_are_compatible_with_every_committed_version() {
    let revs = git(&["log", "--format=%h", "--reverse", "--", "schemas/"]);
    let history: Vec<(String, Catalog)> = revs
        .lines()
        .map(|r| (r.to_owned(), catalog_at(r)))
        .collect();
    let refs: Vec<(String, &Catalog)> = history.iter().map(|(r, c)| (r.clone(), c)).collect();
    let current = schemas::embedded();
    let failures = gate(CompatibilityLevel::FullTransitive, &refs, current);
    // Each failure with the plain-words reasons of `schemas::explain` (what `pipelinectl
    // schemas diff` prints).
    let explained: Vec<String> = failures
        .iter()
        .map(|f| {
            let old = history
                .iter()
                .find(|(rev, _)| *rev == f.against)
                .and_then(|(_, c)| c.for_subject(&f.subject));
            let new = current.for_subject(&f.subject);
            let reasons: Vec<String> = match (old, new) {
                (Some(old), Some(new)) => schemas::explain::diff(&old.schema, &new.schema)
                    .into_iter()
                    .filter(|c| !c.breaks.compatible())
                    .map(|c| format!("      {c}"))
                    .collect(),
                _ => Vec::new(),
            };
            format!("  - {f}\n{}", reasons.join("\n"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "schema changes break readers:\n{}\nAdd fields as optional with a default; ship breaking \
         changes as a new major version under a subject of its own (see CONTRIBUTING.md).",
        explained.join("\n")
    );
}

/// The current files with one edit applied to the payload of `silver/data-processed.avsc`.
fn edited(edit: impl Fn(&mut Vec<serde_json::Value>)) -> Catalog {
    let files: Vec<(String, String)> = schemas::EMBEDDED_FILES
        .iter()
        .map(|(path, text)| {
            if *path != "silver/data-processed.avsc" {
                return ((*path).to_owned(), (*text).to_owned());
            }
            let mut json: serde_json::Value = serde_json::from_str(text).expect("json");
            let fields = json["fields"][1]["type"]["fields"]
                .as_array_mut()
                .expect("payload fields");
            edit(fields);
            ((*path).to_owned(), json.to_string())
        })
        .collect();
    Catalog::from_files(files.iter().map(|(p, t)| (p.as_str(), t.as_str()))).expect("catalog")
}

fn gate_against_current(candidate: &Catalog) -> Vec<String> {
    gate(
        CompatibilityLevel::FullTransitive,
        &[("HEAD".to_owned(), schemas::embedded())],
        candidate,
    )
    .iter()
    .map(ToString::to_string)
    .collect()
}

#[test]
fn removing_a_field_without_default_is_caught() {
    let broken = edited(|fields| fields.retain(|f| f["name"] != "spend"));
    let failures = gate_against_current(&broken);
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert!(
        failures[0].contains("silver.data.processed-value"),
        "{}",
        failures[0]
    );
    assert!(failures[0].contains("spend"), "{}", failures[0]);
    assert!(failures[0].contains("readers still on"), "{}", failures[0]);
}

#[test]
fn changing_a_field_type_is_caught() {
    let broken = edited(|fields| {
        let f = fields
            .iter_mut()
            .find(|f| f["name"] == "campaign_id")
            .expect("field");
        f["type"] = serde_json::json!("long");
    });
    let failures = gate_against_current(&broken);
    assert!(!failures.is_empty());
    assert!(
        failures.iter().all(|f| f.contains("payload.campaign_id")),
        "{failures:#?}"
    );
}

#[test]
fn adding_a_required_field_is_caught_and_an_optional_one_passes() {
    let broken = edited(|fields| {
        fields.push(serde_json::json!({"name": "viewability", "type": "double"}));
    });
    let failures = gate_against_current(&broken);
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert!(failures[0].contains("viewability"), "{}", failures[0]);

    let fine = edited(|fields| {
        fields.push(
            serde_json::json!({"name": "viewability", "type": ["null", "double"], "default": null}),
        );
    });
    assert!(gate_against_current(&fine).is_empty());
}

/// The current files and topic configuration with `rules.alerts.triggered`'s major 2 put
/// under the topic's own subject instead of beside it.
fn v2_under_the_v1_subject() -> Catalog {
    let yaml = topics::EMBEDDED_YAML
        .replace(
            "    value_schema_majors:\n      2: rules/alerts-v2.avsc\n",
            "",
        )
        .replace(
            "value_schema: rules/alerts.avsc",
            "value_schema: rules/alerts-v2.avsc",
        );
    assert!(
        !yaml.contains("value_schema_majors:"),
        "edit the test with the file"
    );
    let config = TopicConfig::parse(&yaml).expect("edited topic-config.yaml");
    Catalog::from_files_with(&config, schemas::EMBEDDED_FILES.iter().copied()).expect("catalog")
}

#[test]
fn each_major_is_checked_against_its_own_subject_and_v2_under_v1s_is_refused() {
    // Beside v1, under its record-name subject: compatible (a new subject, its own history).
    let current = schemas::embedded();
    let v1 = current
        .for_topic("rules.alerts.triggered")
        .expect("v1")
        .clone();
    assert!(gate_against_current(current).is_empty());

    // Under `<topic>-value`, v2 would replace v1 in the subject's history: refused, with
    // the fields that break.
    let moved = v2_under_the_v1_subject();
    let failures = gate(
        CompatibilityLevel::FullTransitive,
        &[("HEAD".to_owned(), current)],
        &moved,
    );
    assert!(!failures.is_empty(), "v2 accepted under {}", v1.subject);
    assert!(
        failures
            .iter()
            .all(|f| f.subject == "rules.alerts.triggered-value"),
        "{failures:#?}"
    );
    let new = moved.for_topic("rules.alerts.triggered").expect("moved");
    let reasons: Vec<String> = schemas::explain::diff(&v1.schema, &new.schema)
        .into_iter()
        .filter(|c| !c.breaks.compatible())
        .map(|c| c.to_string())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("adpipe.rules.v2.AlertTriggered") && r.contains("neither")),
        "{reasons:#?}"
    );
}
