//! `pipelinectl schemas check --against|--history` and `schemas diff`: the offline schema gate
//! on a scratch git repository holding a copy of this tree's schemas, edited the ways that
//! must pass (an optional field) and the ways that must not (a field removed without a
//! default, a type changed), with the message naming the field and why.

mod common;

use common::{pipelinectl, text};

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

const SILVER: &str = "schemas/silver/data-processed.avsc";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=test", "-c", "user.email=test@example.com"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

/// A git repository whose one commit holds this tree's schemas and topic configuration.
fn scratch_repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_dir(&repo_root().join("schemas"), &dir.path().join("schemas"));
    std::fs::copy(
        repo_root().join("topic-config.yaml"),
        dir.path().join("topic-config.yaml"),
    )
    .expect("copy topic-config.yaml");
    git(dir.path(), &["init", "-q"]);
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-q", "-m", "schemas"]);
    dir
}

/// Apply `edit` to the payload fields of silver's schema in the working tree.
fn edit_silver(dir: &Path, edit: impl Fn(&mut Vec<serde_json::Value>)) {
    let path = dir.join(SILVER);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    let fields = json["fields"][1]["type"]["fields"]
        .as_array_mut()
        .expect("payload fields");
    edit(fields);
    std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json")).expect("write");
}

fn run(dir: &Path, args: &[&str]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    let repo = dir.to_str().expect("utf-8 path");
    all.extend(["--repo", repo]);
    pipelinectl(&all)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn an_unchanged_tree_passes_and_diff_finds_nothing() {
    let dir = scratch_repo();
    let out = run(dir.path(), &["schemas", "check", "--against", "HEAD"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains("silver.data.processed-value"),
        "{}",
        text(&out)
    );
    let out = run(dir.path(), &["schemas", "check", "--history"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = run(dir.path(), &["schemas", "diff"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(stdout(&out).contains("no schema changes"), "{}", text(&out));
}

#[test]
fn an_optional_field_passes_and_diff_says_why() {
    let dir = scratch_repo();
    edit_silver(dir.path(), |fields| {
        fields.push(
            serde_json::json!({"name": "viewability", "type": ["null", "double"], "default": null}),
        );
    });
    let out = run(dir.path(), &["schemas", "check", "--against", "HEAD"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = run(dir.path(), &["schemas", "diff", "silver.data.processed"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let printed = stdout(&out);
    assert!(
        printed.contains("field `payload.viewability` added with the default null"),
        "{printed}"
    );
    assert!(
        printed.contains("consumers on the old schema skip the field"),
        "{printed}"
    );
}

#[test]
fn removing_a_field_without_default_is_refused_naming_the_field_and_why() {
    let dir = scratch_repo();
    edit_silver(dir.path(), |fields| fields.retain(|f| f["name"] != "spend"));
    let out = run(dir.path(), &["schemas", "check", "--against", "HEAD"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let printed = stdout(&out);
    let line = printed
        .lines()
        .find(|l| l.contains("INCOMPATIBLE"))
        .unwrap_or_else(|| panic!("no refusal in {printed}"));
    assert!(line.starts_with("silver.data.processed-value"), "{line}");
    assert!(
        line.contains(
            "field `payload.spend` removed without a default: consumers on the old schema \
             cannot read new data"
        ),
        "{line}"
    );
    assert_eq!(
        printed.matches("INCOMPATIBLE").count(),
        1,
        "only silver's subject breaks: {printed}"
    );

    let out = run(dir.path(), &["--json", "schemas", "diff"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let row = &rows.as_array().expect("rows")[0];
    assert_eq!(row["subject"], "silver.data.processed-value", "{rows}");
    assert_eq!(row["breaks"], "old readers (FORWARD)", "{rows}");
}

#[test]
fn changing_a_type_is_refused_naming_the_field_and_both_types() {
    let dir = scratch_repo();
    edit_silver(dir.path(), |fields| {
        let f = fields
            .iter_mut()
            .find(|f| f["name"] == "campaign_id")
            .expect("campaign_id");
        f["type"] = serde_json::json!("long");
    });
    for args in [
        &["schemas", "check", "--against", "HEAD"][..],
        &["schemas", "check", "--history"][..],
        &["schemas", "diff"][..],
    ] {
        let out = run(dir.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let printed = stdout(&out);
        assert!(
            printed.contains("field `payload.campaign_id` changed type from string to long"),
            "{args:?}: {printed}"
        );
        assert!(
            printed.contains("neither version reads the other's data"),
            "{args:?}: {printed}"
        );
    }
}

#[test]
fn not_a_git_repository_or_an_unknown_revision_is_an_error() {
    let dir = scratch_repo();
    let out = run(
        dir.path(),
        &["schemas", "check", "--against", "no-such-rev"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("no-such-rev"), "{}", text(&out));
}
