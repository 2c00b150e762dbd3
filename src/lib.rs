//! shmxfer: move files between processes on one host through System V shared memory.
//!
//! The `shmxfer` command is a thin face over this library; a program can do what it does
//! without spawning it:
//! - [`receiver::Receiver`] serves a channel at a key and hands each offered file to the
//!   caller, who takes it into a file ([`receiver::Incoming::receive`]) or any writer
//!   ([`receiver::Incoming::receive_to`]) and then names it ([`receiver::Received::commit`]);
//!   [`output`] picks names (`file01.jpg`, `file02.jpg`, …) and commits temporary files as
//!   `recv` does;
//! - [`sender::Sender`] connects to the receiver at a key and sends paths, any [`std::io::Read`]
//!   of known or unknown length, or byte slices, each verified with MD5 if asked and committed
//!   by the receiver before the call returns;
//! - [`inventory::snapshot`] lists the host's IPC objects and shmxfer's channels (what
//!   `shmxfer status` shows) as typed values;
//! - [`legacy`] speaks the original Python/C system's protocol, either side.
//!
//! `examples/producer.rs` and `examples/consumer.rs` are the original system's two programs
//! on this API, a few dozen lines each.
//!
//! # Example: both ends in one program
//!
//! ```
//! use shmxfer::frame::Config;
//! use shmxfer::receiver::{Event, Receiver};
//! use shmxfer::sender::{SendOptions, Sender};
//! use shmxfer::sysv::Key;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A key of this process's own (a real program takes one from its user); a channel
//! // uses its key and the next.
//! let key = Key(0x5e00_0000 + (std::process::id() & 0x3f_ffff) * 8);
//! // The channel exists from here on, and is removed when `rx` is dropped.
//! let (mut rx, _) = Receiver::bind(key, &Config::default())?;
//! let sender = std::thread::spawn(move || -> Result<(), shmxfer::sender::SendError> {
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
//!             let received = incoming.receive_to(&mut got, &mut |_| {})?;
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
//! (docs/architecture.md):
//! - `face` (private but for [`main`]): parsing, dispatch, printing, exit codes;
//! - `commands` (private): `send`, `recv`, `status`, `clean`: parsing, a call into this
//!   library, printing;
//! - [`protocols`]: the native channel ([`frame`], [`sender`], [`receiver`]), the listing
//!   ([`inventory`]) and the original system's protocol ([`legacy`]);
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
