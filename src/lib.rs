//! shmxfer: move files between processes on one host through System V shared memory.
//!
//! As a library: [`sender::Sender`] sends paths, readers and byte slices to a receiver;
//! [`receiver::Receiver`] serves a channel and hands each offered file to the caller to write
//! and name; [`inventory::snapshot`] lists IPC objects and channels as typed values.
//!
//! The layers, one folder each, top to bottom; each imports only from the layers below it
//! (docs/architecture.md):
//! - [`face`]: parsing ([`cli`]), dispatch, printing, exit codes;
//! - [`commands`]: `send`, `recv`, `status`, `clean`;
//! - [`protocols`]: the native channel ([`frame`], [`sender`], [`receiver`]) and the original
//!   system's ([`legacy`]);
//! - [`shared`]: the pure wire codec ([`wire`]), output naming and commit ([`output`]), the
//!   write pacing ([`pacer`]), the stop flag ([`runtime`]), escaping ([`text`]), exit codes;
//! - [`sysv`]: libc calls as owned types, the only module allowed `unsafe`.
//!
//! The paths at the crate root (`shmxfer::frame`, `shmxfer::sender`, …) are the same modules.

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub(crate) mod commands;
pub mod face;
pub mod protocols;
pub mod shared;
#[allow(unsafe_code)]
pub mod sysv;

pub use face::main;
pub use protocols::{frame, inventory, legacy, receiver, sender};
pub use shared::{exit, output, pacer, parse, runtime, text, wire};
