//! shmxfer: move files between processes on one host through System V shared memory.
//!
//! As a library: [`sender::Sender`] sends paths, readers and byte slices to a receiver;
//! [`receiver::Receiver`] serves a channel and hands each offered file to the caller to write
//! and name; [`status::snapshot`] lists IPC objects and channels as typed values.
//!
//! Layers, top to bottom (see docs/architecture.md): the face ([`cli`], and the command
//! modules [`send`], [`recv`], [`status`], [`clean`]); the protocols ([`sender`],
//! [`receiver`] and [`frame`] for the native channel, [`legacy`] for the original one);
//! shared mechanisms ([`output`], [`pacer`], [`runtime`], [`text`]); and [`sysv`], the only
//! module allowed `unsafe`.

#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod clean;
pub mod cli;
pub mod frame;
pub mod legacy;
pub mod output;
pub mod pacer;
pub mod progress;
pub mod receiver;
pub mod recv;
pub mod runtime;
pub mod send;
pub mod sender;
pub mod status;
#[allow(unsafe_code)]
pub mod sysv;
pub mod text;

use std::io::{IsTerminal, Write};

use clap::{CommandFactory, Parser};

/// Exit codes, after sysexits.h (documented in the README).
pub mod exit {
    pub const OK: i32 = 0;
    /// Some files of several failed for differing reasons.
    pub const FAILURE: i32 = 1;
    pub const USAGE: i32 = 64;
    /// MD5 mismatch, a file that changed while sent, a malformed transfer.
    pub const DATAERR: i32 = 65;
    /// An input file is missing, unreadable or a directory.
    pub const NOINPUT: i32 = 66;
    /// No receiver, or it went away.
    pub const UNAVAILABLE: i32 = 69;
    pub const OSERR: i32 = 71;
    /// The output file or directory cannot be created.
    pub const CANTCREAT: i32 = 73;
    /// Reading or writing failed (disk full, file size limit...).
    pub const IOERR: i32 = 74;
    /// Key in use by a live receiver, or --wait ran out: try again later.
    pub const TEMPFAIL: i32 = 75;
    /// The key holds something that is not a shmxfer channel of our version.
    pub const PROTOCOL: i32 = 76;
    pub const NOPERM: i32 = 77;
    /// Stopped by SIGINT or SIGTERM.
    pub const INTERRUPTED: i32 = 130;
}

/// Whether escape codes may go to stderr: a terminal, and NO_COLOR unset.
pub fn color_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `-v` turns on tracing events with timestamps on stderr; without it nothing is installed,
/// so disabled events cost one relaxed load.
pub fn init_logging(v: &cli::Verbosity) {
    let level = match v.verbose {
        0 => return,
        1 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(color_stderr())
        .with_max_level(level)
        .with_target(false)
        .try_init();
}

/// Prints an error the way every shmxfer error looks.
pub fn error(msg: impl std::fmt::Display) {
    let (on, off) = if color_stderr() {
        ("\x1b[1;31m", "\x1b[0m")
    } else {
        ("", "")
    };
    eprintln!("shmxfer: {on}error:{off} {msg}");
}

pub fn warn(quiet: bool, msg: impl std::fmt::Display) {
    if !quiet {
        let (on, off) = if color_stderr() {
            ("\x1b[1;33m", "\x1b[0m")
        } else {
            ("", "")
        };
        eprintln!("shmxfer: {on}warning:{off} {msg}");
    }
}

/// Writes a line to stdout. A closed pipe (`| head`) is not an error: it returns false and
/// the caller stops printing, quietly.
pub fn out_line(line: &str) -> bool {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|_| out.flush()) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => false,
        Err(e) => {
            error(format_args!("writing to stdout: {e}"));
            false
        }
    }
}

/// Parses the command line and runs the command; returns the exit code.
pub fn main() -> i32 {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    match cli.command {
        cli::Command::Recv(a) => recv::run(a),
        cli::Command::Send(a) => send::run(a),
        cli::Command::Clean(a) => clean::run(a),
        cli::Command::Status(a) => status::run(a),
        cli::Command::Completions { shell } => {
            let mut cmd = cli::Cli::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "shmxfer", &mut buf);
            write_all_stdout(&buf)
        }
        cli::Command::Man => {
            let mut buf = Vec::new();
            match clap_mangen::Man::new(cli::Cli::command()).render(&mut buf) {
                Ok(()) => write_all_stdout(&buf),
                Err(e) => {
                    error(e);
                    exit::OSERR
                }
            }
        }
    }
}

fn write_all_stdout(buf: &[u8]) -> i32 {
    let mut out = std::io::stdout().lock();
    match out.write_all(buf).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            error(format_args!("writing to stdout: {e}"));
            exit::IOERR
        }
        _ => exit::OK,
    }
}

impl frame::FrameError {
    pub fn exit_code(&self) -> i32 {
        use frame::FrameError::*;
        match self {
            NoReceiver { .. } | ReceiverGone { .. } | Removed { .. } => exit::UNAVAILABLE,
            PermissionDenied { .. } => exit::NOPERM,
            Foreign { .. } | Header { .. } => exit::PROTOCOL,
            InUse { .. } | Starting { .. } | TimedOut { .. } => exit::TEMPFAIL,
            SenderGone => exit::IOERR,
            Interrupted => exit::INTERRUPTED,
            Sys(_) => exit::OSERR,
        }
    }
}
