//! The other system calls shmxfer makes (files, processes, users), as thin safe wrappers:
//! System V IPC is `sysv`'s. This and `sysv` are the only modules allowed `unsafe`. (The
//! calls only the command line makes, signals and leases, are `os/cli.rs`, which only the
//! binary compiles.)

mod fs;
mod process;

pub(crate) use fs::*;
pub(crate) use process::*;
