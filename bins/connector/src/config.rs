//! The simulator's configuration on `config.changes`: before each pass's rows, the bookings
//! and the in-app channel of what it simulates ([`crate::sim::config_items`]), published
//! like `pipelinectl config apply` does — validated by construction, at each key's next
//! version, and only when different from the key's latest value, each with its
//! `config.changed` audit record (actor: the `connector` service).

use config_log::{Change, Publisher, ReadOptions};
use envelope::payload::config::ConfigOp;

use crate::sim::{SimConfig, config_items};

/// What one publish did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConfigTotals {
    /// Changes published.
    pub published: usize,
    /// Items already current on the topic (not published again).
    pub unchanged: usize,
}

/// Publish the configuration of `sim` that `config.changes` does not hold yet.
pub async fn publish(
    publisher: &Publisher,
    codec: &envelope::Codec,
    read: &ReadOptions,
    sim: &SimConfig,
) -> Result<ConfigTotals, config_log::ConfigLogError> {
    let snapshot = config_log::read(codec, read).await?;
    let changes = config_items(sim)
        .into_iter()
        .map(|(org_id, item)| Change {
            org_id,
            op: ConfigOp::Upsert,
            item,
            reason: Some("simulated".to_owned()),
        })
        .collect();
    let mut totals = ConfigTotals::default();
    for planned in config_log::plan(&snapshot, changes, true) {
        if planned.unchanged {
            totals.unchanged += 1;
        } else {
            publisher.publish(&planned).await?;
            totals.published += 1;
        }
    }
    Ok(totals)
}
