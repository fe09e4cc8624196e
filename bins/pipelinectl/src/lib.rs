//! `pipelinectl`'s library part: the global flags ([`Global`]), shared by the binary and the
//! configuration reference generated from the clap definitions.

mod global;

pub use global::Global;
