//! The audit writer (`audit-writer`): writes `audit.events` into PostgreSQL in batches, keyed
//! by `event_id` so redelivery never duplicates a row. The store lives in [`store`], the
//! batching of concurrent records into one transaction in [`batcher`], and the stage (the
//! runtime's `Processor`, with the retention job) in [`stage`].

pub mod batcher;
pub mod stage;
pub mod store;
