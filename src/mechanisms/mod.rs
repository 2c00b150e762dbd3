//! Mechanisms the protocols and commands share.

pub(crate) mod digest;
pub mod output;
pub(crate) mod pacer;
pub(crate) mod parse;
pub(crate) mod runtime;
pub(crate) mod text;
pub(crate) mod wire;
