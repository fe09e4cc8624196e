//! `gold`: the gold-processor stage binary (silver.data.processed + config.changes →
//! gold.data.ready, state in PostgreSQL).

use gold::stage::{Gold, GoldSettings};

fn main() {
    runtime::run::<Gold, GoldSettings>(
        "gold-processor: daily, weekly and monthly aggregates joined with bookings, with \
         pacing, margin and efficiency metrics (silver.data.processed + config.changes -> \
         gold.data.ready)",
        |settings| Ok(Gold::new(settings)),
    );
}
