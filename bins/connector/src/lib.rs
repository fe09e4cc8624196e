//! The connector (`connector`): produces `connector.data.raw` from a simulator of DSP and
//! booking reports ([`sim`]) or from report files ([`files`]), through [`produce`]; the
//! simulator also publishes the bookings and channels of what it simulates ([`config`]).

pub mod args;
pub mod config;
pub mod files;
pub mod produce;
pub mod sim;
