//! shmxfer: move files between processes on one host through System V shared memory.
//!
//! The `shmxfer` command is a thin face over this library; a program can do what it does
//! without spawning it:
//! - [`Receiver`] serves a channel at a key and hands each offered file to the caller, who
//!   takes it into a file ([`Incoming::receive`]) or any writer ([`Incoming::receive_to`]) and
//!   then names it ([`Received::commit`]); [`output`] picks names (`file01.jpg`,
//!   `file02.jpg`, …) and commits temporary files as `recv` does;
//! - [`Sender`] connects to the receiver at a key and sends paths, any [`std::io::Read`] of
//!   known or unknown length, or byte slices, each verified with MD5 if asked and committed by
//!   the receiver before the call returns (or posts them, up to 8 in flight, and collects their
//!   [`Verdict`]s);
//! - [`inventory::snapshot`] lists the host's IPC objects and shmxfer's channels (what
//!   `shmxfer status` shows) as typed values;
//! - [`legacy`] speaks the original Python/C system's protocol, either side.
//!
//! Each [`Sender`] and [`Receiver`] is stopped by its own [`Cancel`] token (given in
//! [`SendOptions`] or [`Config`]); nothing in the library reads a process-wide flag or
//! installs a signal handler. Errors are typed, name the key, path or errno that explains
//! them, and leave advice and exit codes to the program.
//!
//! `examples/producer.rs` and `examples/consumer.rs` are the original system's two programs
//! on this API, a few dozen lines each.
//!
//! # Example: both ends in one program
//!
//! ```
//! use shmxfer::{Config, Event, Key, Receiver, SendOptions, Sender};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A key of this process's own (a real program takes one from its user, as a number or a
//! // name: `"camera".parse::<shmxfer::Address>()`); a channel uses its key and the next.
//! let key = Key(0x5e00_0000 + (std::process::id() & 0x3f_ffff) * 8);
//! // The channel exists from here on, and is removed when `rx` is dropped.
//! let (mut rx, _) = Receiver::bind(key, &Config::default())?;
//! let sender = std::thread::spawn(move || -> Result<(), shmxfer::SendError> {
//!     let opts = SendOptions { md5: true, ..SendOptions::default() };
//!     let mut tx = Sender::connect(key, &opts)?;
//!     let sent = tx.send_bytes(b"hello.txt", b"hello, world\n")?;
//!     assert_eq!(sent.name, b"kept/hello.txt");
//!     tx.finish()
//! });
//! let mut got = Vec::new();
//! loop {
//!     match rx.next_event()? {
//!         Event::File(incoming) => {
//!             assert_eq!(incoming.name(), b"hello.txt");
//!             let received = incoming.receive_to(&mut got, &mut |_| true)?;
//!             assert!(received.md5.is_some());
//!             // The sender's call returns once this says where the file went.
//!             received.commit("kept/hello.txt".as_ref())?;
//!         }
//!         Event::SessionEnd => break,
//!         Event::Notice(n) => eprintln!("{n}"),
//!     }
//! }
//! sender.join().expect("the sender thread")?;
//! assert_eq!(got, b"hello, world\n");
//! # Ok(())
//! # }
//! ```
//!
//! # Layers
//!
//! One folder each, top to bottom; each imports only from the layers below it
//! (docs/architecture.md): the command line (`face`, `commands`: parsing, printing, exit
//! codes; private), the protocols (the native channel's sender and receiver, the listing,
//! the original system's protocol), the mechanisms (the wire codec, output naming and
//! commit, write pacing, cancellation, escaping) and `sysv` (libc calls as owned types, the
//! only module allowed `unsafe`). Only what this page lists is the library's API: everything
//! else is private to the crate. The command line is the binary's own (`src/main.rs` compiles
//! these modules and its own on top), as ripgrep keeps its core.

#![deny(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![warn(unreachable_pub)]

mod mechanisms;
#[allow(unsafe_code)]
mod os;
mod protocols;
#[allow(unsafe_code)]
mod sysv;

pub use mechanisms::output;
pub use mechanisms::pacer::DirectMode;
pub use mechanisms::parse::AddressError;
pub use mechanisms::runtime::Cancel;
pub use mechanisms::wire::{Address, HeaderError, Meta, Status};
pub use protocols::frame::{Config, FrameError, Stall, StallHook};
pub use protocols::receiver::{Event, FileError, Incoming, Received, Receiver};
pub use protocols::sender::{Observer, Phase, SendError, SendOptions, Sender, Sent, Verdict};
pub use protocols::{inventory, legacy};
pub use sysv::{Key, SysvError};

/// What another crate cannot name: the command line and every internal. Each block must fail
/// to compile (`cargo test --doc` checks it).
#[cfg(doctest)]
mod internals_are_private {
    /// ```compile_fail
    /// let _ = shmxfer::main;
    /// ```
    /// ```compile_fail
    /// use shmxfer::sysv::Shm;
    /// ```
    /// ```compile_fail
    /// use shmxfer::sysv::SemSet;
    /// ```
    /// ```compile_fail
    /// use shmxfer::sysv::Mapping;
    /// ```
    /// ```compile_fail
    /// use shmxfer::frame::Channel;
    /// ```
    /// ```compile_fail
    /// use shmxfer::protocols::frame::Channel;
    /// ```
    /// ```compile_fail
    /// use shmxfer::sysv::Fixed;
    /// ```
    /// ```compile_fail
    /// let _ = shmxfer::sysv::stop_on_signals;
    /// ```
    /// ```compile_fail
    /// let _ = shmxfer::os::stop_on_signals;
    /// ```
    /// ```compile_fail
    /// use shmxfer::Sender;
    /// fn f(s: &Sender) { let _ = s.channel(); }
    /// ```
    /// ```
    /// // The API itself is nameable (this block must compile).
    /// use shmxfer::{Receiver, Sender, inventory, legacy, output};
    /// ```
    fn names() {}
}
