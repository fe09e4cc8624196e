//! `pipelinectl schemas register|check|diff`: the schemas of schemas/ in the schema
//! registry, and the schema CI gate: the working tree's schemas checked offline against the
//! versions committed to git, with every breaking change explained in plain words.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context;
use schemas::{
    Catalog, CompatibilityLevel, GateFailure, SubjectSchema,
    compat::{self, Direction, gate},
    explain,
};
use topics::TopicConfig;

use crate::{Failure, Global, output};

/// `schemas register`.
pub(crate) async fn register(global: &Global) -> Result<(), Failure> {
    let config = global.config()?;
    let registry = global.registry()?;
    let level = config.schema_registry.compatibility.clone();
    let mut rows = Vec::new();
    for subject in schemas::embedded().subjects() {
        registry
            .set_compatibility(Some(&subject.subject), &level)
            .await
            .with_context(|| {
                format!(
                    "setting the compatibility of {} at {}",
                    subject.subject,
                    registry.url()
                )
            })?;
        let id = registry
            .register(&subject.subject, &subject.json)
            .await
            .with_context(|| format!("registering {} at {}", subject.subject, registry.url()))?;
        let version = registry
            .version(&subject.subject, None)
            .await
            .with_context(|| format!("reading {} back", subject.subject))?;
        rows.push(vec![
            subject.subject.clone(),
            id.to_string(),
            version.version.to_string(),
            level.clone(),
            subject.file.clone(),
        ]);
    }
    output::print(
        global.json,
        &["subject", "id", "version", "compatibility", "file"],
        &rows,
    );
    Ok(())
}

/// `schemas check` against the registry's latest version of each subject.
async fn check_registry(global: &Global) -> Result<(), Failure> {
    let registry = global.registry()?;
    let mut rows = Vec::new();
    let mut refused = false;
    for subject in schemas::embedded().subjects() {
        let (compatible, messages) = registry
            .check_compatibility(&subject.subject, &subject.json)
            .await
            .with_context(|| format!("checking {} at {}", subject.subject, registry.url()))?;
        refused |= !compatible;
        let verdict = if compatible {
            "compatible".to_owned()
        } else {
            format!("INCOMPATIBLE: {}", messages.join("; "))
        };
        rows.push(vec![subject.subject.clone(), subject.file.clone(), verdict]);
    }
    output::print(global.json, &["subject", "file", "result"], &rows);
    if refused {
        return Err(Failure::Findings);
    }
    Ok(())
}

/// `schemas check` flags. Without `--against` or `--history` the registry is asked.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// Check offline, without a registry: the working tree's schemas against those committed
    /// at this git revision (e.g. `HEAD`, `origin/main`).
    #[arg(long, env = "SCHEMAS_AGAINST", conflicts_with = "history")]
    against: Option<String>,
    /// Check offline against every commit that touched schemas/ (the CI gate of `make test`).
    #[arg(long, env = "SCHEMAS_HISTORY")]
    history: bool,
    /// Compatibility level of the offline check. FULL_TRANSITIVE: BACKWARD as the spec asks,
    /// plus "fields can only be deleted if they had defaults" (old readers read new data).
    #[arg(long, env = "SCHEMAS_LEVEL", default_value = "FULL_TRANSITIVE")]
    level: CompatibilityLevel,
    /// The git checkout whose working tree (schemas/, topic-config.yaml) and history are read.
    #[arg(long, env = "SCHEMAS_REPO", default_value = ".")]
    repo: PathBuf,
}

/// `schemas diff` flags.
#[derive(Debug, clap::Args)]
pub(crate) struct DiffArgs {
    /// The git revision whose committed schemas the working tree is compared with.
    #[arg(long, env = "SCHEMAS_AGAINST", default_value = "HEAD")]
    against: String,
    /// The git checkout whose working tree (schemas/, topic-config.yaml) and history are read.
    #[arg(long, env = "SCHEMAS_REPO", default_value = ".")]
    repo: PathBuf,
    /// Only this subject (e.g. `silver.data.processed-value`) or topic.
    subject: Option<String>,
}

/// `schemas check`: offline against git (`--against`, `--history`), else against the registry.
pub(crate) async fn check(global: &Global, args: &CheckArgs) -> Result<(), Failure> {
    let repo = GitRepo::new(&args.repo);
    let revisions = match (&args.against, args.history) {
        (Some(rev), _) => vec![repo.resolve(rev)?],
        (None, true) => repo.schema_history()?,
        (None, false) => return check_registry(global).await,
    };
    let current = repo.working_tree()?;
    let history = revisions
        .iter()
        .map(|rev| Ok((rev.clone(), repo.catalog_at(rev)?)))
        .collect::<anyhow::Result<Vec<(String, Catalog)>>>()?;
    let refs: Vec<(String, &Catalog)> = history.iter().map(|(r, c)| (r.clone(), c)).collect();
    let failures = gate(args.level, &refs, &current);

    let mut rows = Vec::new();
    for subject in current.subjects() {
        let mine: Vec<&GateFailure> = failures
            .iter()
            .filter(|f| f.subject == subject.subject)
            .collect();
        if mine.is_empty() {
            // Each subject against its own history: a new major's subject has none yet.
            let versions = history
                .iter()
                .filter(|(_, c)| c.for_subject(&subject.subject).is_some())
                .count();
            rows.push(vec![
                subject.subject.clone(),
                if versions == 0 {
                    "new subject".to_owned()
                } else {
                    format!("{versions} version(s)")
                },
                "compatible".to_owned(),
            ]);
            continue;
        }
        let mut reported = BTreeSet::new();
        for failure in mine {
            let old = history
                .iter()
                .find(|(rev, _)| *rev == failure.against)
                .and_then(|(_, c)| c.for_subject(&subject.subject));
            for reason in reasons(old, subject, failure) {
                if reported.insert(reason.clone()) {
                    rows.push(vec![
                        subject.subject.clone(),
                        failure.against.clone(),
                        format!("INCOMPATIBLE: {reason}"),
                    ]);
                }
            }
        }
    }
    output::print(global.json, &["subject", "against", "result"], &rows);
    if failures.is_empty() {
        return Ok(());
    }
    if !global.json {
        eprintln!(
            "pipelinectl: {} schema change(s) break readers at {}. Add fields as optional with a \
             default; ship a breaking change as a new major version under a subject of its own \
             (CONTRIBUTING.md, \"Changing an event schema\").",
            failures.len(),
            args.level
        );
    }
    Err(Failure::Findings)
}

/// The plain-words reasons of one gate failure: the changes that break the failing direction,
/// or Avro's own message when no field-level change explains it.
fn reasons(old: Option<&SubjectSchema>, new: &SubjectSchema, failure: &GateFailure) -> Vec<String> {
    let breaking: Vec<String> = old
        .map(|old| explain::diff(&old.schema, &new.schema))
        .unwrap_or_default()
        .into_iter()
        .filter(|c| match failure.problem.direction {
            Direction::NewReadsOld => c.breaks.new_readers,
            Direction::OldReadsNew => c.breaks.old_readers,
        })
        .map(|c| c.to_string())
        .collect();
    if breaking.is_empty() {
        vec![failure.problem.to_string()]
    } else {
        breaking
    }
}

/// `schemas diff`: every change between a revision's schemas and the working tree's, with
/// which readers it breaks and why. Exit 1 when a change breaks readers.
pub(crate) fn diff(global: &Global, args: &DiffArgs) -> Result<(), Failure> {
    let repo = GitRepo::new(&args.repo);
    let rev = repo.resolve(&args.against)?;
    let (old, current) = (repo.catalog_at(&rev)?, repo.working_tree()?);
    let wanted = |s: &SubjectSchema| {
        args.subject
            .as_deref()
            .is_none_or(|w| w == s.subject || w == s.topic)
    };
    let mut rows = Vec::new();
    let mut breaking = false;
    let mut matched = false;
    for subject in current.subjects().filter(|s| wanted(s)) {
        matched = true;
        let Some(before) = old.for_subject(&subject.subject) else {
            rows.push(vec![
                subject.subject.clone(),
                "new subject".to_owned(),
                "none".to_owned(),
                format!("not in {}", args.against),
            ]);
            continue;
        };
        let mut explained = explain::Breaks::default();
        for change in explain::diff(&before.schema, &subject.schema) {
            breaking |= !change.breaks.compatible();
            explained.new_readers |= change.breaks.new_readers;
            explained.old_readers |= change.breaks.old_readers;
            rows.push(vec![
                subject.subject.clone(),
                change.what,
                breaks_label(change.breaks).to_owned(),
                change.why,
            ]);
        }
        // Avro resolution has the last word: a refusal no field-level change explains is
        // shown as Avro states it, so diff never calls a breaking change harmless.
        let verdict = compat::check(
            CompatibilityLevel::Full,
            &subject.schema,
            std::slice::from_ref(&before.schema),
        );
        for problem in verdict {
            let new_readers = problem.direction == Direction::NewReadsOld;
            if (new_readers && explained.new_readers) || (!new_readers && explained.old_readers) {
                continue;
            }
            breaking = true;
            let breaks = explain::Breaks {
                new_readers,
                old_readers: !new_readers,
            };
            rows.push(vec![
                subject.subject.clone(),
                "Avro schema resolution refuses the change".to_owned(),
                breaks_label(breaks).to_owned(),
                problem.message,
            ]);
        }
    }
    for gone in old.subjects().filter(|s| wanted(s)) {
        if current.for_subject(&gone.subject).is_none() {
            matched = true;
            rows.push(vec![
                gone.subject.clone(),
                "subject removed".to_owned(),
                "none".to_owned(),
                "its topic left topic-config.yaml".to_owned(),
            ]);
        }
    }
    if let (Some(subject), false) = (&args.subject, matched) {
        return Err(
            anyhow::anyhow!("no subject or topic {subject:?} in {}", args.repo.display()).into(),
        );
    }
    output::print(global.json, &["subject", "change", "breaks", "why"], &rows);
    if rows.is_empty() && !global.json {
        println!("no schema changes against {}", args.against);
    }
    if breaking {
        return Err(Failure::Findings);
    }
    Ok(())
}

fn breaks_label(breaks: explain::Breaks) -> &'static str {
    match (breaks.new_readers, breaks.old_readers) {
        (false, false) => "none",
        (true, false) => "new readers (BACKWARD)",
        (false, true) => "old readers (FORWARD)",
        (true, true) => "both",
    }
}

/// A git checkout: its working tree's schemas and those committed at a revision.
struct GitRepo<'a> {
    root: &'a Path,
}

impl<'a> GitRepo<'a> {
    fn new(root: &'a Path) -> GitRepo<'a> {
        GitRepo { root }
    }

    fn git(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(self.root)
            .args(args)
            .output()
            .context("running git (schemas are compared with their committed versions)")?;
        if !out.status.success() {
            anyhow::bail!(
                "git {} in {}: {}",
                args.join(" "),
                self.root.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8(out.stdout).context("git printed something that is not UTF-8")
    }

    /// `rev` as a short commit id (fails clearly on an unknown revision).
    fn resolve(&self, rev: &str) -> anyhow::Result<String> {
        Ok(self
            .git(&[
                "rev-parse",
                "--short",
                "--verify",
                &format!("{rev}^{{commit}}"),
            ])?
            .trim()
            .to_owned())
    }

    /// Every commit that touched schemas/, oldest first.
    fn schema_history(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .git(&["log", "--format=%h", "--reverse", "--", "schemas/"])?
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// The catalog as committed at `rev` (with that commit's topic-config.yaml).
    fn catalog_at(&self, rev: &str) -> anyhow::Result<Catalog> {
        let config = TopicConfig::parse(&self.git(&["show", &format!("{rev}:topic-config.yaml")])?)
            .with_context(|| format!("topic-config.yaml at {rev}"))?;
        let mut files = Vec::new();
        for path in self
            .git(&["ls-tree", "-r", "--name-only", rev, "--", "schemas/"])?
            .lines()
            .filter(|p| p.ends_with(".avsc"))
        {
            let text = self.git(&["show", &format!("{rev}:{path}")])?;
            files.push((path.trim_start_matches("schemas/").to_owned(), text));
        }
        Catalog::from_files_with(&config, files.iter().map(|(p, t)| (p.as_str(), t.as_str())))
            .with_context(|| format!("the schemas at {rev}"))
    }

    /// The catalog of the working tree (what would be committed).
    fn working_tree(&self) -> anyhow::Result<Catalog> {
        let config_path = self.root.join("topic-config.yaml");
        let config = std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let config = TopicConfig::parse(&config)
            .with_context(|| format!("parsing {}", config_path.display()))?;
        let dir = self.root.join("schemas");
        let mut files = Vec::new();
        let mut pending = vec![dir.clone()];
        while let Some(d) = pending.pop() {
            for entry in
                std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))?
            {
                let path = entry?.path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|e| e == "avsc") {
                    let rel = path
                        .strip_prefix(&dir)
                        .context("a file under schemas/")?
                        .to_string_lossy()
                        .replace('\\', "/");
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    files.push((rel, text));
                }
            }
        }
        files.sort();
        Catalog::from_files_with(&config, files.iter().map(|(p, t)| (p.as_str(), t.as_str())))
            .context("the working tree's schemas")
    }
}
