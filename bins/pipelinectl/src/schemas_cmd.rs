//! `pipelinectl schemas register|check`: the schemas of schemas/ in the schema registry.

use anyhow::Context;

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

/// `schemas check`.
pub(crate) async fn check(global: &Global) -> Result<(), Failure> {
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
