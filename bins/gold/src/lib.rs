//! The gold stage (`gold-processor`): keyed aggregates per org and campaign, joined with
//! bookings, with derived pacing, margin and efficiency metrics. The metric formulas and
//! aggregation periods live in [`formulas`], free of Kafka plumbing and I/O.

pub mod formulas;
