//! Typed payloads, one module per topic, mirroring `schemas/` field for field and in order.

pub mod alerts;
pub mod audit;
pub mod bronze;
pub mod common;
pub mod config;
pub mod etl;
pub mod gold;
pub mod raw;
pub mod silver;
