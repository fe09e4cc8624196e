//! The silver stage (`silver-processor`): turns bronze's text rows into typed, validated and
//! quality-scored rows. The rules live in [`stage`], free of Kafka plumbing.

pub mod stage;
