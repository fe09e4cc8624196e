//! adpipe's events: the envelope and typed payloads of every topic, their Avro encoding in
//! Confluent wire format, and the schema registry client with its schema cache.
//!
//! No Kafka here: this crate turns bytes into typed events and back. Every malformed input
//! becomes a typed [`DecodeError`] with a stable code, never a panic.

pub mod codec;
pub mod error;
pub mod event;
pub mod evolution;
mod fast;
pub mod payload;
pub mod registry;
pub mod values;
pub mod wire;

pub use codec::{Codec, SchemaUsage};
pub use error::{DecodeError, EncodeError, RegistryError};
pub use event::{Event, EventMetadata, Payload, Source};
pub use registry::RegistryClient;
pub use values::{Date, Dec, Id, Money, Ratio, Timestamp};

#[cfg(test)]
mod tests;
