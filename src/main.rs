//! The `shmxfer` command: the command line (`face`: parsing, man pages, completions;
//! `commands`: each subcommand, its messages and exit codes) over the library's modules, which
//! this binary compiles itself, so that nothing of the command line is the library's API.
//! Dead code in the library's modules is the library crate's to report: here they are only
//! partly used.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod commands;
mod face;
#[allow(dead_code)]
mod mechanisms;
#[allow(unsafe_code, dead_code)]
mod os;
#[allow(unsafe_code)]
#[path = "os/cli.rs"]
mod os_cli;
// The library's re-exports the binary does not use are checked in the library.
#[allow(dead_code, unused_imports)]
mod protocols;
#[allow(unsafe_code, dead_code)]
mod sysv;

fn main() {
    std::process::exit(face::main());
}
