//! Generates the `Topic` and `ConsumerGroup` enums from `topic-config.yaml`, so topic and group
//! names exist in exactly one place and a typo in code is a compile error.

use std::{collections::BTreeSet, env, fmt::Write as _, fs, path::PathBuf};

#[derive(serde::Deserialize)]
struct File {
    topics: Vec<Topic>,
}

#[derive(serde::Deserialize)]
struct Topic {
    name: String,
    #[serde(default)]
    consumer_groups: Vec<String>,
}

fn camel(name: &str) -> String {
    name.split(['.', '-', '_'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let path = manifest.join("../../topic-config.yaml");
    println!("cargo:rerun-if-changed={}", path.display());
    let text = fs::read_to_string(&path).expect("read topic-config.yaml");
    let file: File = serde_yaml_ng::from_str(&text).expect("parse topic-config.yaml");

    let mut out = String::new();
    out.push_str("/// Every topic of `topic-config.yaml` (DLQ side topics are derived, see [`Topic::dlq`]).\n");
    out.push_str(
        "#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]\npub enum Topic {\n",
    );
    for t in &file.topics {
        writeln!(out, "    /// `{}`", t.name).ok();
        writeln!(out, "    {},", camel(&t.name)).ok();
    }
    out.push_str("}\n\nimpl Topic {\n    /// All topics, in the order of `topic-config.yaml`.\n    pub const ALL: &'static [Topic] = &[\n");
    for t in &file.topics {
        writeln!(out, "        Topic::{},", camel(&t.name)).ok();
    }
    out.push_str("    ];\n\n    /// The topic's name on the broker.\n    pub const fn name(self) -> &'static str {\n        match self {\n");
    for t in &file.topics {
        writeln!(
            out,
            "            Topic::{} => {:?},",
            camel(&t.name),
            t.name
        )
        .ok();
    }
    out.push_str("        }\n    }\n}\n\n");

    let groups: BTreeSet<&str> = file
        .topics
        .iter()
        .flat_map(|t| t.consumer_groups.iter().map(String::as_str))
        .collect();
    out.push_str("/// Every consumer group named in `topic-config.yaml`.\n");
    out.push_str("#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]\npub enum ConsumerGroup {\n");
    for g in &groups {
        writeln!(out, "    /// `{g}`").ok();
        writeln!(out, "    {},", camel(g)).ok();
    }
    out.push_str("}\n\nimpl ConsumerGroup {\n    /// All consumer groups, sorted by name.\n    pub const ALL: &'static [ConsumerGroup] = &[\n");
    for g in &groups {
        writeln!(out, "        ConsumerGroup::{},", camel(g)).ok();
    }
    out.push_str("    ];\n\n    /// The group id used on the broker.\n    pub const fn name(self) -> &'static str {\n        match self {\n");
    for g in &groups {
        writeln!(out, "            ConsumerGroup::{} => {:?},", camel(g), g).ok();
    }
    out.push_str("        }\n    }\n}\n");

    let dest = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("generated.rs");
    fs::write(dest, out).expect("write generated.rs");
}
