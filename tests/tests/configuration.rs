//! The configuration reference, `docs/configuration.md`: every binary's flags rendered as
//! Markdown tables from their clap definitions. The test fails when the file differs from
//! what the code defines; `UPDATE_DOCS=1` rewrites it.

use std::path::PathBuf;

use clap::{Arg, ArgAction, Args, Command, CommandFactory};

const REGENERATE: &str = "UPDATE_DOCS=1 cargo test -p pipeline-tests --test configuration";

/// One table cell: on one line, pipes escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// Whether `arg` is a flag a user sets (not `--help`, `--version` or hidden).
fn listed(arg: &Arg) -> bool {
    !arg.is_hide_set()
        && !matches!(
            arg.get_action(),
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
        )
}

fn flag(arg: &Arg) -> String {
    match arg.get_long() {
        Some(long) => format!("`--{long}`"),
        None => {
            let name = arg
                .get_value_names()
                .and_then(|v| v.first())
                .map_or_else(|| arg.get_id().as_str().to_uppercase(), ToString::to_string);
            format!("`<{name}>`")
        }
    }
}

/// `cmd`'s flags as a Markdown table: flag, environment variable, default, description.
fn table(mut cmd: Command) -> String {
    cmd.build();
    let mut out = String::from(
        "| flag | environment variable | default | description |\n| --- | --- | --- | --- |\n",
    );
    let args: Vec<&Arg> = cmd.get_arguments().filter(|a| listed(a)).collect();
    if args.is_empty() {
        return "No flags of its own.\n".to_owned();
    }
    for arg in args {
        let env = arg
            .get_env()
            .map_or_else(|| "—".to_owned(), |e| format!("`{}`", e.to_string_lossy()));
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let default = if defaults.is_empty() {
            "—".to_owned()
        } else {
            format!("`{}`", cell(&defaults.join(",")))
        };
        let help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        out.push_str(&format!(
            "| {} | {env} | {default} | {} |\n",
            flag(arg),
            cell(&help)
        ));
    }
    out
}

/// The settings struct `A` of a binary as a command.
fn args_of<A: Args>(name: &'static str) -> Command {
    A::augment_args(Command::new(name))
}

/// The whole reference.
fn render() -> String {
    let mut doc = format!(
        "# Configuration reference\n\n\
         Every flag of every adpipe binary, generated from the clap definitions by \
         `tests/tests/configuration.rs` (a test fails when this file is stale; \
         `{REGENERATE}` rewrites it). Do not edit by hand.\n\n\
         Each flag with an environment variable also reads it (a flag given on the command \
         line wins), so the same setting works from a shell and from a Kubernetes manifest. \
         `<binary> --help` says the same.\n"
    );
    let mut section = |title: &str, intro: &str, cmd: Command| {
        doc.push_str(&format!("\n## {title}\n\n"));
        if !intro.is_empty() {
            doc.push_str(intro);
            doc.push_str("\n\n");
        }
        doc.push_str(&table(cmd));
    };
    section(
        "Every stage: the runtime",
        "`bronze`, `silver`, `gold`, `rule-evaluator`, `notification-sender` and \
         `audit-writer` run on `runtime` and all take these flags (`runtime::RuntimeArgs`), \
         besides their own below.",
        args_of::<runtime::RuntimeArgs>("runtime"),
    );
    let stage = "Besides the runtime's flags:";
    section(
        "`bronze`",
        stage,
        args_of::<bronze::stage::BronzeRules>("bronze"),
    );
    section(
        "`silver`",
        stage,
        args_of::<silver::stage::SilverRules>("silver"),
    );
    section(
        "`gold`",
        stage,
        args_of::<gold::stage::GoldSettings>("gold"),
    );
    section(
        "`rule-evaluator`",
        stage,
        args_of::<rule_evaluator::stage::RuleArgs>("rule-evaluator"),
    );
    section(
        "`notification-sender`",
        stage,
        args_of::<notification_sender::stage::NotifySettings>("notification-sender"),
    );
    section(
        "`audit-writer`",
        stage,
        args_of::<audit_writer::stage::AuditSettings>("audit-writer"),
    );
    section(
        "`connector`",
        "The connector does not run on the runtime; these are all its flags.",
        connector::args::Args::command(),
    );
    section(
        "`schema-registry`",
        "",
        schema_registry::args::Args::command(),
    );
    section(
        "`pipelinectl`",
        "The flags every command shares (given before or after the command); each \
         command's own flags: `pipelinectl <command> --help`.",
        args_of::<pipelinectl::Global>("pipelinectl"),
    );
    doc
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("docs")
        .join("configuration.md")
}

#[test]
fn configuration_reference_is_current() {
    let want = render();
    let path = path();
    if std::env::var("UPDATE_DOCS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("docs/ has a parent")).expect("docs/");
        std::fs::write(&path, &want).expect("write docs/configuration.md");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != want {
        let first = have
            .lines()
            .zip(want.lines())
            .position(|(h, w)| h != w)
            .unwrap_or_else(|| have.lines().count().min(want.lines().count()));
        panic!(
            "docs/configuration.md is stale; run `{REGENERATE}` to regenerate it.\n\
             First difference at line {}:\n  file: {}\n  code: {}",
            first + 1,
            have.lines().nth(first).unwrap_or("(end of file)"),
            want.lines().nth(first).unwrap_or("(end of file)"),
        );
    }
}

#[test]
fn each_binary_s_flags_are_rows_with_their_environment_variables() {
    let doc = render();
    for (flag, env) in [
        ("--redis-url", "REDIS_URL"),
        ("--database-url", "GOLD_DATABASE_URL"),
        ("--database-url", "RULES_DATABASE_URL"),
        ("--smtp-url", "NOTIFY_SMTP_URL"),
        ("--database-url", "AUDIT_DATABASE_URL"),
        ("--seed", "SIM_SEED"),
        ("--listen", "SCHEMA_REGISTRY_LISTEN"),
        ("--timeout-secs", "PIPELINECTL_TIMEOUT_SECS"),
    ] {
        assert!(
            doc.lines()
                .any(|l| l.starts_with(&format!("| `{flag}` | `{env}` |"))),
            "no row for {flag} / {env}"
        );
    }
}

#[test]
fn the_readme_links_the_reference() {
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    assert!(
        readme.contains("docs/configuration.md"),
        "README.md should link docs/configuration.md as the configuration reference"
    );
}
