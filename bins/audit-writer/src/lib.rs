//! The audit writer (`audit-writer`): writes `audit.events` into PostgreSQL in batches, keyed
//! by `event_id` so redelivery never duplicates a row. The store lives in [`store`].

pub mod store;
