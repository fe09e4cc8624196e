//! The rule evaluator (`rule-evaluator`): evaluates each org's rules against every
//! `gold.data.ready` aggregate and raises or resolves alerts. The rule engine lives in
//! [`rules`], free of Kafka plumbing; the stage in [`stage`], evaluating aggregates in
//! per-lane [`batch`]es, its state in PostgreSQL behind [`store`].

pub mod batch;
mod days;
pub mod fixtures;
pub mod metrics;
pub mod rules;
pub mod stage;
pub mod store;
