//! Exit codes, after sysexits.h (documented in the README).

/// Success: every file sent or received.
pub const OK: i32 = 0;
/// Some files of several failed for differing reasons.
pub const FAILURE: i32 = 1;
/// A bad command line.
pub const USAGE: i32 = 64;
/// MD5 mismatch, a file that changed while sent, a malformed transfer.
pub const DATAERR: i32 = 65;
/// An input file is missing, unreadable or a directory.
pub const NOINPUT: i32 = 66;
/// No receiver, or it went away.
pub const UNAVAILABLE: i32 = 69;
/// The kernel's IPC tables could not be read.
pub const OSERR: i32 = 71;
/// The output file or directory cannot be created.
pub const CANTCREAT: i32 = 73;
/// Reading or writing failed (disk full, file size limit...).
pub const IOERR: i32 = 74;
/// Key in use by a live receiver, or --wait ran out: try again later.
pub const TEMPFAIL: i32 = 75;
/// The key holds something that is not a shmxfer channel of our version.
pub const PROTOCOL: i32 = 76;
/// Permission denied on a channel or an object.
pub const NOPERM: i32 = 77;
/// Stopped by SIGINT or SIGTERM.
pub const INTERRUPTED: i32 = 130;
