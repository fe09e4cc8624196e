//! The schema files of `schemas/`, embedded so binaries need no schema directory at run time.
//! A test checks this list against the directory, so a new file cannot be forgotten.

macro_rules! schema_files {
    ($($path:literal),* $(,)?) => {
        /// `(path relative to schemas/, file text)` for every `.avsc` file.
        pub const EMBEDDED_FILES: &[(&str, &str)] = &[
            $(($path, include_str!(concat!("../../../schemas/", $path)))),*
        ];
    };
}

schema_files!(
    "common/metadata.avsc",
    "common/entity.avsc",
    "connector/data-raw.avsc",
    "bronze/data-cleaned.avsc",
    "silver/data-processed.avsc",
    "gold/data-ready.avsc",
    "rules/alerts.avsc",
    "rules/alerts-v2.avsc",
    "config/changes.avsc",
    "etl/execution.avsc",
    "audit/events.avsc",
);
