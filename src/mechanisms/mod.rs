//! Mechanisms the protocols and commands share.

pub(crate) mod digest;
pub mod output;
pub mod pacer;
pub mod parse;
pub(crate) mod runtime;
pub(crate) mod term;
pub(crate) mod text;
pub mod wire;
