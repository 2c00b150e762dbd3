//! How a sender connects and what it reports: options, a sent file, the observer of its
//! progress, a posted file's verdict.

use super::*;

/// How a [`Sender`] connects and sends.
#[derive(Debug, Clone, Default)]
pub struct SendOptions {
    /// Verify every file with MD5 (the receiver may require it anyway).
    pub md5: bool,
    /// Wait up to this long for a receiver to appear and for our turn; `None`: fail at once
    /// without a receiver, wait for the turn as long as the receiver lives.
    pub wait: Option<Duration>,
    /// The uid the receiver must run as; `None`: ours (effective). A receiver of any other
    /// user is refused ([`FrameError::OtherOwner`]): what it receives is its user's.
    pub owner: Option<u32>,
    /// Told when the receiver is found stopped (SIGSTOP, Ctrl-Z), and when it continues. A
    /// stopped receiver is waited for until it continues, or for `wait` if that is given
    /// ([`FrameError::ReceiverStopped`]).
    pub on_stall: Option<frame::StallHook>,
    /// Stops the sender when cancelled: at its next chunk (the file in hand is abandoned) or
    /// wait slice; files whose last chunk is posted get 1 s more for their answers.
    pub cancel: runtime::Cancel,
}

/// What the receiver said about a committed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The path the receiver committed it under (its own name for it: raw bytes).
    pub name: Vec<u8>,
    /// Bytes the receiver committed.
    pub bytes: u64,
    /// The digest both sides agreed on, when MD5 was checked.
    pub md5: Option<[u8; 16]>,
}

/// Told how a file's transfer goes (a progress bar, say), and asked whether to go on, as the
/// receiver's `progress` callbacks are. Every method has a default that does nothing (and goes
/// on).
pub trait Observer {
    /// A file starts: a label for it and its size, if known.
    fn start(&mut self, _label: &str, _size: Option<u64>) {}
    /// Bytes handed to the receiver so far; `false` abandons this file (the receiver discards
    /// it, its verdict is [`SendError::Abandoned`]) and the sender goes on with the next.
    fn progress(&mut self, _done: u64) -> bool {
        true
    }
    /// The file is over, however it ended.
    fn finish(&mut self) {}
    /// What the sender is doing now, and with which file: a program that may have to end the
    /// process while the sender is stuck (in a read of a silent pipe, say) can then tell the
    /// truth about that file.
    fn phase(&mut self, _phase: Phase, _file: Option<&Path>) {}
}

/// What a [`Sender`] is doing, as its [`Observer`] hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Between files: nothing of a file is in flight.
    Idle,
    /// Opening or reading an input: it may block for ever (a FIFO, a slow pipe), and its file
    /// is not committed, whatever happens next.
    Input,
    /// The file's last chunk is posted: the receiver has every byte and may be committing it.
    Verdict,
    /// Every file is settled; the sender said goodbye.
    Done,
}

pub(super) struct Quiet;
impl Observer for Quiet {}

/// What became of one posted file.
#[derive(Debug)]
pub struct Verdict {
    /// The number its `post_*` call returned.
    pub ticket: u64,
    /// The file's path, or the name it was sent under.
    pub label: PathBuf,
    /// Committed, or why not.
    pub result: Result<Sent, SendError>,
}
