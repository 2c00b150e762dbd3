//! Exit codes, after sysexits.h (documented in the README), and the one table that maps the
//! library's typed errors to them.

use crate::protocols::frame::FrameError;
use crate::protocols::legacy::LegacyError;
use crate::protocols::sender::SendError;

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
/// Stdout was a pipe whose reader went away (`recv | head -1`): what a shell reports for a
/// command killed by SIGPIPE, as `yes | head` ends.
pub const PIPE: i32 = 141;
/// Stopped by SIGINT or SIGTERM.
pub const INTERRUPTED: i32 = 130;

/// The exit code a channel failure ends a command with.
pub fn of_frame(e: &FrameError) -> i32 {
    use FrameError::*;
    match e {
        NoReceiver { .. } | ReceiverGone { .. } | Removed { .. } => UNAVAILABLE,
        PermissionDenied { .. } | OtherOwner { .. } => NOPERM,
        Taken { .. } => TEMPFAIL,
        OtherName { .. } => UNAVAILABLE,
        Foreign { .. } | Header { .. } => PROTOCOL,
        InUse { .. }
        | Starting { .. }
        | TimedOut { .. }
        | ReceiverStopped { .. }
        | NotAdmitted { .. } => TEMPFAIL,
        SenderGone => IOERR,
        Interrupted => INTERRUPTED,
        Sys(_) | Limit { .. } => OSERR,
    }
}

/// The exit code for a file that failed (or a channel failure met while sending it).
pub fn of_send(e: &SendError) -> i32 {
    use SendError::*;
    match e {
        Missing(_) | Unreadable(_) | IsDir(_) | Open { .. } => NOINPUT,
        Read { .. } | WriteFailed { .. } => IOERR,
        Changed { .. }
        | ChangedInPlace(_)
        | Md5 { .. }
        | CommittedOther { .. }
        | Refused { .. }
        | BadAnswer { .. }
        | PathRefused(_) => DATAERR,
        BadPath(_) => NOINPUT,
        CannotCreate { .. } => CANTCREAT,
        Closed(_) => UNAVAILABLE,
        Interrupted(_) => INTERRUPTED,
        Abandoned(_) => FAILURE,
        Frame(f) | Withdrawn { source: f, .. } => of_frame(f),
    }
}

/// The exit code for a legacy transfer's failure.
pub fn of_legacy(e: &LegacyError) -> i32 {
    use LegacyError::*;
    match e {
        NoConsumer { .. } | ConsumerDead { .. } | ConsumerGone { .. } | Removed => UNAVAILABLE,
        InUse { .. } | TimedOut { .. } | TurnTimedOut { .. } => TEMPFAIL,
        Lock { .. } => NOPERM,
        Foreign { .. } => PROTOCOL,
        Size { .. } | Input { .. } => NOINPUT,
        Md5 { .. } => DATAERR,
        Permission { .. } => NOPERM,
        Interrupted => INTERRUPTED,
        Sys(_) => OSERR,
    }
}
