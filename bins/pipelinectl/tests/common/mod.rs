//! What pipelinectl's tests share: the binary run with the given arguments and none of its
//! settings inherited from the test's environment, and its output as text for messages.
#![allow(dead_code)]

use std::{ffi::OsStr, process::Output};

/// Environment variables pipelinectl reads that a test must not inherit.
const SETTINGS: [&str; 12] = [
    "KAFKA_BOOTSTRAP_SERVERS",
    "SCHEMA_REGISTRY_URL",
    "SCHEMAS_AGAINST",
    "SCHEMAS_HISTORY",
    "SCHEMAS_LEVEL",
    "SCHEMAS_REPO",
    "DLQ_CODE",
    "DLQ_ORG",
    "DLQ_SINCE",
    "DLQ_UNTIL",
    "DLQ_LIMIT",
    "DLQ_MAX_REPLAYS",
];

/// Run `pipelinectl args…` to completion.
pub(crate) fn pipelinectl<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pipelinectl"));
    cmd.args(args);
    for var in SETTINGS {
        cmd.env_remove(var);
    }
    cmd.output().expect("pipelinectl runs")
}

/// Its stdout and stderr, for assertion messages.
pub(crate) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
