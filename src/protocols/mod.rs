//! The protocols: the native channel and the original system's.

pub(crate) mod frame;
pub mod inventory;
pub mod legacy;
pub(crate) mod receiver;
pub(crate) mod sender;
