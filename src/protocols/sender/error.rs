//! Why a file was not sent: [`SendError`], each naming the path, key or errno.

use super::*;

#[derive(Debug, thiserror::Error)]
/// Why a file was not sent, or the channel failed. Each message names the file.
#[non_exhaustive]
pub enum SendError {
    #[error("{}: no such file", escape_path(.0))]
    /// The file does not exist.
    Missing(PathBuf),
    #[error("{}: permission denied", escape_path(.0))]
    /// The file may not be read.
    Unreadable(PathBuf),
    #[error("{}: is a directory", escape_path(.0))]
    /// The path is a directory.
    IsDir(PathBuf),
    #[error("{}: {}", escape_path(path), io_text(source))]
    /// The file could not be opened.
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    #[error(
        "{}: read failed: {}; nothing was written",
        escape_path(path),
        io_text(source)
    )]
    /// Reading failed mid-file: the receiver discarded what it had.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    #[error(
        "{}: the file changed while it was read ({announced} bytes announced, {read} read); nothing was written, send it again",
        escape_path(path)
    )]
    /// The file's size changed while it was sent: the receiver discarded it.
    Changed {
        /// The file.
        path: PathBuf,
        /// The size we announced.
        announced: u64,
        /// What we read.
        read: u64,
    },
    #[error(
        "{}: the file changed while it was read (its size, times or inode moved); nothing was written, send it again",
        escape_path(.0)
    )]
    /// The file was rewritten in place while it was read (same size, new mtime or ctime), or
    /// replaced: what was read may mix two versions, so the receiver discarded it.
    ChangedInPlace(PathBuf),
    #[error(
        "{}: MD5 mismatch: sent {ours}, the receiver got {theirs}; it discarded the file",
        escape_path(path)
    )]
    /// The receiver's MD5 differs from ours: it discarded the file.
    Md5 {
        /// The file.
        path: PathBuf,
        /// Our digest, in hex.
        ours: String,
        /// The receiver's, in hex.
        theirs: String,
    },
    #[error(
        "{}: MD5 mismatch: sent {ours}, but the receiver committed bytes whose MD5 is {theirs} (as {}): someone else wrote the channel; that copy is not this file",
        escape_path(path),
        crate::mechanisms::text::escape(name)
    )]
    /// The receiver committed bytes whose digest differs from ours: the channel was written
    /// by someone else meanwhile, and the committed copy is not this file.
    CommittedOther {
        /// The file.
        path: PathBuf,
        /// Our digest, in hex.
        ours: String,
        /// The digest of what the receiver committed, in hex.
        theirs: String,
        /// Where the receiver committed it (raw).
        name: Vec<u8>,
    },
    #[error("{}: the receiver could not create its output file ({}): {}", escape_path(path), crate::mechanisms::text::escape(at), errno_text(*errno))]
    /// The receiver could not create its output file.
    CannotCreate {
        /// The file.
        path: PathBuf,
        /// The receiver's path that failed, raw.
        at: Vec<u8>,
        /// The receiver's errno.
        errno: i32,
    },
    #[error("{}: the receiver failed to write the file: {}; it discarded the partial file", escape_path(path), errno_text(*errno))]
    /// The receiver could not write the file (disk full, size limit…).
    WriteFailed {
        /// The file.
        path: PathBuf,
        /// The receiver's errno.
        errno: i32,
    },
    #[error("{}: the receiver takes one file only and already has it; nothing was sent", escape_path(.0))]
    /// The receiver takes no more files (`--once`).
    Closed(PathBuf),
    #[error("{}: the receiver refused it: {status}", escape_path(path))]
    /// The receiver refused the file for another reason.
    Refused {
        /// The file.
        path: PathBuf,
        /// What it answered.
        status: Status,
    },
    #[error(
        "{}: the receiver answered with a malformed header: {source}",
        escape_path(path)
    )]
    /// The receiver's answer did not decode.
    BadAnswer {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        source: frame::HeaderError,
    },
    #[error("{}: its relative path cannot be sent: every component must be 1 to 255 bytes without NUL, and the path at most 4092 bytes", escape_path(.0))]
    /// The name to send under is not a relative path the protocol carries.
    BadPath(PathBuf),
    #[error("{}: the receiver refused its relative path (it recreates relative paths, and never an absolute one or one with an empty, `.` or `..` component)", escape_path(.0))]
    /// The receiver refused the file's relative path as unsafe.
    PathRefused(PathBuf),
    #[error("{}: abandoned by the sending program; the receiver discarded what it had", escape_path(.0))]
    /// The [`Observer`] abandoned the file: the receiver discarded what it had.
    Abandoned(PathBuf),
    #[error("{}: interrupted; it was not sent (the receiver discarded what it had)", escape_path(.0))]
    /// A stop was asked for mid-file: the receiver discarded what it had.
    Interrupted(PathBuf),
    #[error(
        "{}: withdrawn, so the receiver will not commit it: {source}",
        escape_path(path)
    )]
    /// We gave up on the file (a timeout, a stop, a stopped receiver) before the receiver
    /// began to commit it, and withdrew it: it is never committed, and may be sent again.
    Withdrawn {
        /// The file.
        path: PathBuf,
        /// Why we gave up.
        source: FrameError,
    },
    #[error(transparent)]
    /// The channel failed (no receiver, removed, permission, timeout…).
    Frame(#[from] FrameError),
}

impl SendError {
    /// Whether the channel itself failed (or a stop came), so no later file can go either.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            SendError::Frame(_)
                | SendError::BadAnswer { .. }
                | SendError::Interrupted(_)
                | SendError::Withdrawn { .. }
        )
    }
}
