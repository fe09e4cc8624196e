//! The connector (`connector`): produces `connector.data.raw` from a simulator of DSP and
//! booking reports ([`sim`]) or from report files ([`files`]), through [`produce`].

pub mod args;
pub mod files;
pub mod produce;
pub mod sim;
