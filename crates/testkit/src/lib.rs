//! Test support for adpipe: start a real Tansu broker on a free port (killed on drop) or
//! librdkafka's in-process mock cluster ([`MockBroker`]), the
//! Kafka client settings that work well on Tansu, and helpers to await conditions with a
//! deadline instead of sleeping, a PostgreSQL schema per test ([`pg`]) and a `redis-server`
//! behind a password ([`RedisServer`]).
//!
//! Used only as a dev-dependency. The broker binary is installed into `.local/bin` by
//! `scripts/install-tansu.sh` (which `make test` runs first).

pub mod bench;
mod broker;
mod cut;
mod kafka;
mod metrics;
mod mock;
mod paced;
pub mod pg;
mod process;
mod redis;
pub mod secrets;
mod smtp;
mod tls;

pub use broker::{Broker, Storage, free_port, repo_root};
pub use cut::CutProxy;
pub use kafka::{
    TANSU_CLIENT_DEFAULTS, client_config, committed_offsets, create_stage_topics,
    create_stage_topics_with, create_topics, create_topics_with, end_offsets, header,
    produce_in_order, read_records, read_records_with, rewind_group, wait_until,
};
pub use metrics::{counter, counter_total, counter_with_labels, samples};
pub use mock::MockBroker;
pub use paced::{Paced, PacedStream, Sent};
pub use process::StageProcess;
pub use redis::RedisServer;
pub use smtp::{SmtpMessage, SmtpSink};
pub use tls::TlsFront;

/// A number no other call returns in practice (time, process id and a per-call random
/// seed, hashed): it keeps names of consumer groups and schemas apart across tests and runs.
pub(crate) fn unique() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}
