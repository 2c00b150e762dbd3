//! Mechanisms the protocols and commands share.

pub mod digest;
pub mod output;
pub mod pacer;
pub mod parse;
pub mod runtime;
pub(crate) mod term;
pub mod text;
pub mod wire;
