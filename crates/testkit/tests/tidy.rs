//! Checks of the repository itself: workspace-wide versions and lints in every crate, a `//!`
//! line atop every module, and a CI script that runs what the README tells users to run.

use std::{fs, path::Path};

use testkit::repo_root;

fn walk(dir: &Path, ext: &str, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() && !["target", ".git", ".local", "node_modules"].contains(&name) {
            walk(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

fn manifests() -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for dir in ["crates", "bins"] {
        walk(&repo_root().join(dir), "toml", &mut out);
    }
    out.retain(|p| p.file_name().is_some_and(|n| n == "Cargo.toml"));
    assert!(out.len() >= 8, "found only {out:?}");
    out
}

#[test]
fn every_crate_uses_workspace_versions_and_lints() {
    for manifest in manifests() {
        let text = fs::read_to_string(&manifest).expect("manifest");
        let shown = manifest
            .strip_prefix(repo_root())
            .unwrap_or(&manifest)
            .display()
            .to_string();
        assert!(
            text.contains("[lints]\nworkspace = true"),
            "{shown}: add `[lints] workspace = true`"
        );
        let mut section = String::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.to_owned();
                continue;
            }
            let is_deps = section.ends_with("dependencies]");
            if is_deps && !line.is_empty() && !line.starts_with('#') {
                assert!(
                    line.contains(".workspace = true") || line.contains("workspace = true"),
                    "{shown}: `{line}` must take its version from [workspace.dependencies]"
                );
            }
        }
    }
}

#[test]
fn every_module_starts_with_a_doc_line() {
    let mut files = Vec::new();
    for dir in ["crates", "bins"] {
        walk(&repo_root().join(dir), "rs", &mut files);
    }
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = fs::read_to_string(f).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .map(|f| {
            f.strip_prefix(repo_root())
                .unwrap_or(f)
                .display()
                .to_string()
        })
        .collect();
    assert!(
        missing.is_empty(),
        "add a `//!` line saying what the module is for: {missing:#?}"
    );
}

#[test]
fn ci_runs_the_readme_test_command() {
    let ci = fs::read_to_string(repo_root().join(".ci/run")).expect(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == "make test"),
        ".ci/run must call `make test`"
    );
    let readme = fs::read_to_string(repo_root().join("README.md")).expect("README");
    let makefile = fs::read_to_string(repo_root().join("Makefile")).expect("Makefile");
    let quick = readme
        .split("## Quick start")
        .nth(1)
        .expect("a Quick start section");
    let block = quick.split("```").nth(1).expect("a command block");
    let commands: Vec<&str> = block
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        commands.len(),
        2,
        "the quick start is exactly two commands: {commands:?}"
    );
    for c in commands {
        let target = c.split_whitespace().nth(1).expect("make <target>");
        assert!(
            makefile.contains(&format!("\n{target}:")),
            "Makefile has no target {target}"
        );
    }
}
