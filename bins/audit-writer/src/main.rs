//! `audit-writer`: the audit-writer stage binary (audit.events → the audit store in
//! PostgreSQL, with the retention job).

use audit_writer::stage::{AuditSettings, AuditWriter};

fn main() {
    runtime::run::<AuditWriter, AuditSettings>(
        "audit-writer: audit.events into PostgreSQL in batched transactions, idempotent by \
         event_id, with the retention job (invalid events to audit.events.dlq)",
        |settings| Ok(AuditWriter::new(settings)),
    );
}
