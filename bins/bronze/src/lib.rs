//! The bronze stage (`bronze-processor`): raw DSP report rows read schema-on-read into one
//! common row shape. The rules live in [`stage`], free of Kafka plumbing.

pub mod stage;
