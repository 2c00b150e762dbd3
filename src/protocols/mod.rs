//! The protocols: the native channel and the original system's.

pub mod frame;
pub mod inventory;
pub mod legacy;
pub mod receiver;
pub mod sender;
