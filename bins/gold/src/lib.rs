//! The gold stage (`gold-processor`): keyed aggregates per org and campaign, joined with
//! bookings, with derived pacing, margin and efficiency metrics. The metric formulas and
//! aggregation periods live in [`formulas`], the stage's logic in [`stage`], its state in
//! PostgreSQL behind [`store`], written in batches by [`batch`].

pub mod batch;
pub mod fixtures;
pub mod formulas;
pub mod metrics;
pub mod stage;
pub mod store;
