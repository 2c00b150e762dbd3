//! Sending files to a receiver: [`Sender`] connects to the channel at a key, takes its turn,
//! and sends files, readers or byte slices, each one committed by the receiver (and verified
//! with MD5 if asked) before the call returns. To send many files faster, post them instead
//! ([`Sender::post_path`] and the like) and collect their [`Verdict`]s: a file is then posted
//! while the receiver still commits the one before, so neither side waits for the other.
//!
//! ```
//! use shmxfer::{Key, SendOptions, Sender};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let key = Key(0x5e00_0004 + (std::process::id() & 0x3f_ffff) * 8);
//! # let dir = tempfile::tempdir()?;
//! # let photo = dir.path().join("photo.jpg");
//! # std::fs::write(&photo, b"not really a photo")?;
//! # let (mut rx, _) = shmxfer::Receiver::bind(key, &Default::default())?;
//! # let server = std::thread::spawn(move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! #     while let shmxfer::Event::File(f) = rx.next_event()? {
//! #         let name = String::from_utf8_lossy(f.name()).into_owned();
//! #         f.receive_to(&mut std::io::sink(), &mut |_| true)?.commit(name.as_ref())?;
//! #     }
//! #     Ok(())
//! # });
//! // `key` is where a receiver serves (`shmxfer recv --key …`, or a Receiver).
//! let mut tx = Sender::connect(key, &SendOptions { md5: true, ..Default::default() })?;
//! let sent = tx.send_path(&photo)?;
//! println!("the receiver committed it as {}", String::from_utf8_lossy(&sent.name));
//! tx.send_bytes(b"notes.txt", b"hello")?;
//! // A reader of unknown length: a stream, sized by its last chunk.
//! tx.send_reader(b"stream.txt", &mut &b"from a pipe"[..], None)?;
//! // Many files: post them (each goes while the receiver commits the ones before), then read
//! // their verdicts, in posting order.
//! for i in 0..20 {
//!     tx.post_bytes(format!("part{i}").as_bytes(), b"a part");
//! }
//! for v in tx.flush() {
//!     v.result?;
//! }
//! tx.finish()?;
//! # server.join().unwrap().unwrap();
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, trace};

use crate::mechanisms::digest::Md5;
use crate::mechanisms::runtime;
use crate::mechanisms::text::{errno_text, escape_path, io_text};
use crate::protocols::frame::{
    self, Abort, Address, Desc, DescKind, FrameError, Meta, Op, Request, SenderEnd, Status,
    Trailer, hex,
};

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

struct Quiet;
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

/// A file posted whole whose answer is still to come.
struct Awaited {
    ticket: u64,
    file: u32,
    label: PathBuf,
    total: u64,
    digest: Option<[u8; 16]>,
    t: Instant,
}

/// How many files a sender has in flight at most: posted while the receiver still commits the
/// ones before. When that many are, it waits for the older half of their answers at once, so it
/// sleeps (and the receiver spends a wake-up on it) once per half a window, not once per file.
const WINDOW: usize = frame::LANES as usize;

/// A connection to a receiver, holding the channel for all its files: senders queue in the
/// kernel and take turns, so files of two senders never interleave. Dropping it (or
/// [`Sender::finish`]) hands the channel to the next sender.
pub struct Sender {
    ch: Arc<SenderEnd>,
    session: u32,
    /// The number of the last file we asked the receiver to take (every request counts).
    file: u32,
    md5: bool,
    observer: Box<dyn Observer + Send>,
    done: bool,
    /// The files we may have in flight (posted whole, answer to come): 1 or [`WINDOW`].
    window: usize,
    /// Files posted whole whose answer is still to come, oldest first.
    awaited: VecDeque<Awaited>,
    /// Verdicts not yet taken by the caller, in posting order.
    verdicts: VecDeque<Verdict>,
    /// The last ticket handed out.
    tickets: u64,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sender(key {}, session {})", self.ch.key, self.session)
    }
}

impl Sender {
    /// Connects to the receiver at `key` and waits for our turn.
    ///
    /// # Errors
    /// No receiver (or it died), a key holding something else, permission denied, a receiver
    /// of another user than `opts.owner` or serving another name than `addr`'s, or
    /// `opts.wait` running out: each a [`SendError::Frame`] naming the key.
    pub fn connect(addr: impl Into<Address>, opts: &SendOptions) -> Result<Sender, SendError> {
        let addr = addr.into();
        let key = addr.key;
        let deadline = opts.wait.map(|w| Instant::now() + w);
        let owner = opts.owner.unwrap_or_else(crate::os::geteuid);
        let stall = frame::StallWatch {
            limit: opts.wait,
            hook: opts.on_stall.clone(),
        };
        let ch = Arc::new(
            connect(&addr, owner, deadline, &opts.cancel)?
                .with_stall_watch(stall)
                .with_cancel(opts.cancel.clone()),
        );
        debug!(key = %key, "waiting for our turn: semop GATE -1, SENDER +1 (undo)");
        let t = Instant::now();
        let session = ch.admit(deadline).map_err(|e| match e {
            FrameError::TimedOut { .. } if ch.receiver_stopped() => {
                ch.stopped_error(opts.wait.unwrap_or_default())
            }
            FrameError::TimedOut { key, .. } => FrameError::TimedOut {
                key,
                what: "our turn (another sender holds the channel)",
                secs: opts.wait.map_or(0.0, |w| w.as_secs_f64()),
            },
            e => e,
        })?;
        debug!(
            session,
            waited_ms = t.elapsed().as_millis() as u64,
            "admitted: took the gate"
        );
        let md5 = opts.md5 || ch.info.require_md5;
        Ok(Sender {
            ch,
            session,
            file: 0,
            md5,
            observer: Box::new(Quiet),
            done: false,
            window: WINDOW,
            awaited: VecDeque::new(),
            verdicts: VecDeque::new(),
            tickets: 0,
        })
    }

    /// What stops this sender (the token its [`SendOptions`] gave).
    pub fn cancel(&self) -> &runtime::Cancel {
        self.ch.cancel()
    }

    /// The channel, for a watcher of the receiver's liveness.
    #[allow(dead_code)] // The command line's watcher of a blocking input.
    pub(crate) fn channel(&self) -> Arc<SenderEnd> {
        self.ch.clone()
    }

    /// Whether files are verified with MD5 (asked for, or required by the receiver).
    pub fn md5(&self) -> bool {
        self.md5
    }

    /// Reports each file's progress to `o` from now on.
    pub fn set_observer(&mut self, o: Box<dyn Observer + Send>) {
        self.observer = o;
    }

    /// Lets up to `files` files (1 to 8; default 8) be in flight when they are posted: files
    /// are posted while the receiver still commits the ones before. With 1, each `post_*`
    /// returns once its file's verdict is in, as each `send_*` does.
    pub fn set_window(&mut self, files: usize) {
        self.window = files.clamp(1, WINDOW);
    }

    /// Sends the file at `path` under its last component's name, with its mode and mtime,
    /// and returns once the receiver committed it.
    ///
    /// # Errors
    /// The input cannot be opened or read, or changed while sent; the receiver refused or
    /// failed it; or the channel failed ([`SendError::is_fatal`]: no later file can go).
    pub fn send_path(&mut self, path: &Path) -> Result<Sent, SendError> {
        let t = self.post_path(path);
        self.verdict_of(t)
    }

    /// Sends the file at `path` under `name`, which may be a relative path (`photos/a.jpg`,
    /// as `send -r` sends a tree) for a receiver that recreates paths; one that does not
    /// keeps its last component.
    ///
    /// # Errors
    /// [`SendError::BadPath`] for a name the protocol cannot carry; then as
    /// [`Sender::send_path`].
    pub fn send_path_as(&mut self, path: &Path, name: &[u8]) -> Result<Sent, SendError> {
        let t = self.post_path_as(path, name);
        self.verdict_of(t)
    }

    /// Sends an open file (a pipe, a terminal, a regular file) under `name`. `size`, if
    /// given, is checked: the file must hold exactly that many bytes.
    ///
    /// # Errors
    /// As [`Sender::send_path`].
    pub fn send_file(
        &mut self,
        name: &[u8],
        file: &File,
        size: Option<u64>,
    ) -> Result<Sent, SendError> {
        let t = self.post_file(name, file, size);
        self.verdict_of(t)
    }

    /// Sends everything `reader` yields under `name`; `size`, if given, is checked.
    ///
    /// # Errors
    /// As [`Sender::send_path`].
    pub fn send_reader(
        &mut self,
        name: &[u8],
        reader: &mut dyn Read,
        size: Option<u64>,
    ) -> Result<Sent, SendError> {
        let label = PathBuf::from(std::ffi::OsStr::from_bytes(name));
        let t = self.post(Offer::new(&label, name, Input::Reader(reader), size));
        self.verdict_of(t)
    }

    /// Sends `bytes` under `name`.
    ///
    /// # Errors
    /// The receiver refused or failed the file, or the channel failed.
    pub fn send_bytes(&mut self, name: &[u8], bytes: &[u8]) -> Result<Sent, SendError> {
        let t = self.post_bytes(name, bytes);
        self.verdict_of(t)
    }

    /// Posts the file at `path` as [`Sender::send_path`] sends it, but returns once its last
    /// chunk is posted, before the receiver commits it. Returns its ticket: its [`Verdict`]
    /// comes from [`Sender::take_verdicts`] or [`Sender::flush`], in posting order.
    pub fn post_path(&mut self, path: &Path) -> u64 {
        let name = path
            .file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default();
        self.post_path_as(path, &name)
    }

    /// Posts the file at `path` under `name` (see [`Sender::send_path_as`] and
    /// [`Sender::post_path`]).
    pub fn post_path_as(&mut self, path: &Path, name: &[u8]) -> u64 {
        if !name_fits(name) {
            return self.refuse_early(path, SendError::BadPath(path.into()));
        }
        self.observer.phase(Phase::Input, Some(path));
        let opened = open_path(path);
        self.observer.phase(Phase::Idle, None);
        match opened {
            Ok(file) => self.post_opened(path, name, &file),
            Err(e) => self.refuse_early(path, e),
        }
    }

    /// Posts a file the caller opened under `name`, with its mode and mtime, as
    /// [`Sender::post_path_as`] posts the file at a path; `label` names it in its [`Verdict`].
    /// For a caller that checks a file through its descriptor (`fstat`: a regular file, whose
    /// owner and links it trusts) and must send from that very descriptor, never from a path
    /// that may have been swapped meanwhile.
    pub fn post_opened(&mut self, label: &Path, name: &[u8], file: &File) -> u64 {
        if !name_fits(name) {
            return self.refuse_early(label, SendError::BadPath(label.into()));
        }
        match describe(label, file) {
            Ok((size, meta)) => self.post(Offer {
                meta: Some(meta),
                ..Offer::new(label, name, Input::File(file), size)
            }),
            Err(e) => self.refuse_early(label, e),
        }
    }

    /// Posts an open file under `name` (see [`Sender::send_file`] and [`Sender::post_path`]).
    pub fn post_file(&mut self, name: &[u8], file: &File, size: Option<u64>) -> u64 {
        let label = PathBuf::from(std::ffi::OsStr::from_bytes(name));
        self.post(Offer::new(&label, name, Input::File(file), size))
    }

    /// Posts `bytes` under `name` (see [`Sender::post_path`]).
    pub fn post_bytes(&mut self, name: &[u8], bytes: &[u8]) -> u64 {
        let label = PathBuf::from(std::ffi::OsStr::from_bytes(name));
        let size = Some(bytes.len() as u64);
        self.post(Offer::new(&label, name, Input::Bytes(bytes), size))
    }

    /// Records a file that could not even be posted (its input failed to open, say) as
    /// failed with `e`, in its turn among the others; returns its ticket.
    pub fn post_failed(&mut self, label: &Path, e: SendError) -> u64 {
        self.refuse_early(label, e)
    }

    /// The verdicts that are in, oldest first, without waiting for the others.
    pub fn take_verdicts(&mut self) -> Vec<Verdict> {
        self.verdicts.drain(..).collect()
    }

    /// Waits for every posted file's verdict and returns those not yet taken, oldest first.
    pub fn flush(&mut self) -> Vec<Verdict> {
        self.settle_all();
        self.take_verdicts()
    }

    /// Says goodbye, handing the channel to the next sender. Files still in flight are
    /// waited for first; verdicts not taken ([`Sender::flush`]) are dropped.
    ///
    /// # Errors
    /// The channel failed underneath us (a receiver that left after our last file is fine).
    pub fn finish(mut self) -> Result<(), SendError> {
        self.bye()
    }

    fn bye(&mut self) -> Result<(), SendError> {
        if std::mem::replace(&mut self.done, true) {
            return Ok(());
        }
        self.settle_all();
        self.observer.phase(Phase::Done, None);
        match self.ch.send_bye(self.session, self.file.wrapping_add(1)) {
            Ok(()) | Err(FrameError::Removed { .. } | FrameError::ReceiverGone { .. }) => {
                debug!("said goodbye: semop SENDER -1 (undo), REQ +1; released the channel");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until `ticket`'s verdict is in and takes it (others stay for the caller).
    fn verdict_of(&mut self, ticket: u64) -> Result<Sent, SendError> {
        // Every ticket gets a verdict: one not in yet is awaited.
        if let Some(i) = self.awaited.iter().position(|a| a.ticket == ticket) {
            self.settle(i + 1);
        }
        let i = self.verdicts.iter().position(|v| v.ticket == ticket);
        let v = i.and_then(|i| self.verdicts.remove(i));
        v.map_or(Err(SendError::Interrupted(PathBuf::new())), |v| v.result)
    }

    fn next_ticket(&mut self) -> u64 {
        self.tickets += 1;
        self.tickets
    }

    /// A file that failed before it was posted: its verdict follows those of every file
    /// before it.
    fn refuse_early(&mut self, label: &Path, e: SendError) -> u64 {
        let ticket = self.next_ticket();
        self.settle_all();
        self.verdicts.push_back(Verdict {
            ticket,
            label: label.into(),
            result: Err(e),
        });
        ticket
    }

    /// Waits for the answers about the `n` oldest awaited files, all at once (one sleep), and
    /// records their verdicts. If the channel fails meanwhile, each is waited for on its own,
    /// so those answered before the failure still get their verdict.
    fn settle(&mut self, n: usize) {
        let n = n.min(self.awaited.len());
        if let Some(a) = self.awaited.front() {
            self.observer.phase(Phase::Verdict, Some(&a.label));
        }
        let mut how = match n > 1 && self.ch.wait_answers(n as u16).is_ok() {
            true => Answer::Counted,
            false => Answer::Wait,
        };
        let mut committing = None;
        for a in self.awaited.drain(..n) {
            let mut result = verdict(&self.ch, &a, how);
            if let Err(SendError::Frame(e)) = result {
                let c = *committing.get_or_insert_with(|| self.ch.withdraw(a.file));
                result = withdrawn_or_told(&self.ch, &a, c, e);
            }
            if matches!(&result, Err(e) if e.is_fatal()) {
                // The channel failed: the later files' answers are either in their lanes
                // already, or never coming. Waiting for each would only add a slice.
                how = Answer::Left;
            }
            self.verdicts.push_back(Verdict {
                ticket: a.ticket,
                label: a.label,
                result,
            });
        }
        self.observer.phase(Phase::Idle, None);
    }

    fn settle_all(&mut self) {
        self.settle(self.awaited.len());
    }

    fn post(&mut self, o: Offer) -> u64 {
        let label = o.label;
        if self.ch.cancel().is_cancelled() {
            return self.refuse_early(label, SendError::Interrupted(label.into()));
        }
        let ticket = self.next_ticket();
        let t = Instant::now();
        let ran = self.transfer(o);
        self.observer.finish();
        let failure = match ran {
            Ok(Ran::Last(total, digest)) => {
                self.awaited.push_back(Awaited {
                    ticket,
                    file: self.file,
                    label: label.into(),
                    total,
                    digest,
                    t,
                });
                if self.awaited.len() >= self.window {
                    self.settle(self.awaited.len() - self.window / 2);
                }
                return ticket;
            }
            // Answers come in order: the earlier files' first.
            Ok(Ran::Aborted(failure)) => {
                self.settle_all();
                match (
                    await_answer(&self.ch, label, self.file, Answer::Wait),
                    failure,
                ) {
                    (Err(e), _) | (Ok(_), Some(e)) => e,
                    (Ok(answer), None) => refusal(label, answer),
                }
            }
            Err(e) => {
                self.settle_all();
                e
            }
        };
        self.verdicts.push_back(Verdict {
            ticket,
            label: label.into(),
            result: Err(failure),
        });
        ticket
    }

    /// Posts the file's request and then its chunks, without waiting for any answer.
    fn transfer(&mut self, o: Offer) -> Result<Ran, SendError> {
        let Offer {
            label,
            name,
            input,
            size,
            meta,
        } = o;
        self.file += 1;
        let file = self.file;
        // The chunks follow at once: the receiver's answer (committed, or why not) comes after
        // the file's end marker, and a refusal it flags meanwhile stops us at the next chunk.
        // The request is posted before the first chunk is read, not with it: the receiver's
        // waking up (slow on a VM whose idle vCPU halts) then overlaps our read.
        self.ch.send_request(&Request {
            op: Op::File,
            sender_pid: crate::os::getpid(),
            size,
            md5: self.md5,
            meta,
            name: name.to_vec(),
            session: self.session,
            file,
        })?;
        debug!(file = %escape_path(label), number = file, size, md5 = self.md5, "request posted (REQ +1); sending its chunks");
        self.observer.start(&escape_path(label), size);
        let mut x = Transfer {
            ch: &self.ch,
            path: label,
            session: self.session,
            file,
            size,
            hash: self.md5.then(Md5::new),
            buf: Vec::new(),
            total: 0,
            seq: 0,
            stamp: Stamp::of(&input),
            input,
        };
        x.run(&mut *self.observer)
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.bye();
    }
}

/// Opens a path to send: its size (a regular file's; 0 counts as unknown, as /proc files
/// have content and say 0) and metadata.
fn open_path(path: &Path) -> Result<File, SendError> {
    File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => SendError::Missing(path.into()),
        io::ErrorKind::PermissionDenied => SendError::Unreadable(path.into()),
        _ => SendError::Open {
            path: path.into(),
            source: e,
        },
    })
}

/// Whether the protocol can carry `name`: a relative path of at most `MAX_PATH` bytes, no
/// NUL, no component over `MAX_NAME`.
fn name_fits(name: &[u8]) -> bool {
    name.len() <= frame::MAX_PATH
        && !name.contains(&0)
        && name
            .split(|&c| c == b'/')
            .all(|c| c.len() <= frame::MAX_NAME)
}

/// An open file's size (known for a non-empty regular file) and the mode and mtime it is
/// sent with, from `fstat`.
fn describe(path: &Path, f: &File) -> Result<(Option<u64>, Meta), SendError> {
    let md = f.metadata().map_err(|source| SendError::Open {
        path: path.into(),
        source,
    })?;
    if md.is_dir() {
        return Err(SendError::IsDir(path.into()));
    }
    let meta = Meta {
        mode: md.mode() & 0o7777,
        mtime_sec: md.mtime(),
        mtime_nsec: md.mtime_nsec() as u32,
    };
    let size = (md.is_file() && md.len() > 0).then_some(md.len());
    if size.is_some() {
        crate::os::advise_sequential(f);
    }
    Ok((size, meta))
}

/// Attaches to the channel, waiting for a receiver to appear until `deadline` if one is given.
/// There is no kernel event for "a segment appeared at a key", so this one wait polls, and only
/// while nothing else can happen.
/// A receiver caught setting its channel up is waited for even without a deadline.
fn connect(
    addr: &Address,
    owner: u32,
    deadline: Option<Instant>,
    cancel: &runtime::Cancel,
) -> Result<SenderEnd, FrameError> {
    let started = Instant::now();
    let mut grace: Option<Instant> = None;
    loop {
        if cancel.is_cancelled() {
            return Err(FrameError::Interrupted);
        }
        let waiting = deadline.is_some_and(|d| Instant::now() < d);
        match SenderEnd::open(addr, owner) {
            Err(
                FrameError::NoReceiver { .. }
                | FrameError::ReceiverGone { .. }
                | FrameError::Removed { .. },
            ) if waiting => {}
            Err(FrameError::Starting { .. })
                if waiting
                    || *grace.get_or_insert_with(|| Instant::now() + frame::STARTUP_GRACE)
                        > Instant::now() => {}
            // Asked to wait, we did: say so, rather than that nobody was there.
            Err(
                FrameError::NoReceiver { key }
                | FrameError::ReceiverGone { key, .. }
                | FrameError::Removed { key },
            ) if deadline.is_some() => {
                return Err(FrameError::TimedOut {
                    key,
                    what: "a receiver",
                    secs: (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                });
            }
            r => return r,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where a file's bytes come from.
enum Input<'a> {
    /// Read straight into the slot (one copy), or through our buffer with MD5.
    File(&'a File),
    Reader(&'a mut dyn Read),
    Bytes(&'a [u8]),
}

impl Input<'_> {
    /// Reads until `buf` is full or the input ends (or a stop interrupts it).
    fn read_into(
        &mut self,
        buf: &mut [u8],
        done: u64,
        cancel: &runtime::Cancel,
    ) -> io::Result<usize> {
        match self {
            Input::File(f) => read_full(&mut &**f, buf, cancel),
            Input::Reader(r) => read_full(*r, buf, cancel),
            Input::Bytes(b) => {
                let rest = &b[(done as usize).min(b.len())..];
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                Ok(n)
            }
        }
    }
}

/// A file to post: how it is reported, the name it is sent under, where its bytes come from,
/// its size if known and its metadata.
struct Offer<'a, 'i> {
    label: &'a Path,
    name: &'a [u8],
    input: Input<'i>,
    size: Option<u64>,
    meta: Option<Meta>,
}

impl<'a, 'i> Offer<'a, 'i> {
    fn new(label: &'a Path, name: &'a [u8], input: Input<'i>, size: Option<u64>) -> Self {
        Offer {
            label,
            name,
            input,
            size,
            meta: None,
        }
    }
}

/// One file's transfer: the tags its messages carry and how far it got.
struct Transfer<'a, 'i> {
    ch: &'a SenderEnd,
    path: &'a Path,
    session: u32,
    file: u32,
    size: Option<u64>,
    /// With MD5: the digest of what we read (from our own copy of each chunk, never from
    /// the slot, which others may write).
    hash: Option<Md5>,
    /// Our own copy of the current chunk, where it does not go straight into the slot.
    buf: Vec<u8>,
    total: u64,
    seq: u64,
    input: Input<'i>,
    /// A regular file's identity and times before the first read, compared after the last.
    stamp: Option<Stamp>,
}

/// What GNU tar and rsync compare to tell that a file changed while it was read: its inode,
/// size, and modification and change times (to the nanosecond), from `fstat` on the open file.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(input: &Input) -> Option<Stamp> {
        let Input::File(f) = input else {
            return None;
        };
        let m = f.metadata().ok().filter(|m| m.is_file())?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

enum Step {
    More,
    /// The last chunk is posted; the file's digest, if MD5 is checked.
    Last(Option<[u8; 16]>),
    /// An abort is posted: ours (with the error to report), or at the receiver's word.
    Aborted(Option<SendError>),
}

/// How a file's posting ended.
enum Ran {
    /// Its last chunk is posted: its length and digest (with MD5); the answer is to come.
    Last(u64, Option<[u8; 16]>),
    /// An abort is posted: ours (with the error to report), or at the receiver's word.
    Aborted(Option<SendError>),
}

impl Transfer<'_, '_> {
    /// Posts every chunk, or an abort if the file is abandoned (by us or at the receiver's
    /// word). The answer is left to the caller.
    fn run(&mut self, observer: &mut dyn Observer) -> Result<Ran, SendError> {
        loop {
            match self.next_chunk(observer)? {
                Step::More if observer.progress(self.total) => {}
                Step::More => {
                    let slot = self.ch.free_slot()?;
                    self.post(slot, 0, DescKind::Abort(Abort::Interrupted as u32))?;
                    return Ok(Ran::Aborted(Some(SendError::Abandoned(self.path.into()))));
                }
                Step::Last(digest) => return Ok(Ran::Last(self.total, digest)),
                Step::Aborted(failure) => return Ok(Ran::Aborted(failure)),
            }
        }
    }

    /// Takes a free slot and posts the next chunk into it, or an abort: when a stop was
    /// asked for, the receiver flagged a failure, or the input failed or changed.
    fn next_chunk(&mut self, observer: &mut dyn Observer) -> Result<Step, SendError> {
        let slot = self.ch.free_slot()?;
        let abort = if self.ch.cancel().is_cancelled() {
            Some((
                Abort::Interrupted,
                Some(SendError::Interrupted(self.path.into())),
            ))
        } else if self.ch.receiver_failure(self.file).is_some() {
            Some((Abort::ReceiverFailed, None))
        } else {
            observer.phase(Phase::Input, Some(self.path));
            match self.fill(slot) {
                Ok((n, last)) => {
                    observer.phase(Phase::Idle, None);
                    return self.post_data(slot, n, last, observer);
                }
                Err((why, e)) => Some((why, Some(e))),
            }
        };
        let (why, e) = abort.expect("every other path returned");
        observer.phase(Phase::Idle, None);
        self.post(slot, 0, DescKind::Abort(why as u32))?;
        Ok(Step::Aborted(e))
    }

    fn post(&self, slot: usize, len: usize, kind: DescKind) -> Result<(), FrameError> {
        let d = Desc {
            len: len as u64,
            kind,
            session: self.session,
            file: self.file,
            index: self.seq,
        };
        self.ch.post(slot, &d)
    }

    fn post_data(
        &mut self,
        slot: usize,
        n: usize,
        last: bool,
        observer: &mut dyn Observer,
    ) -> Result<Step, SendError> {
        self.total += n as u64;
        trace!(seq = self.seq, n, last, "chunk filled");
        if !last {
            // Hand it over first, then hash our own copy while the receiver drains the slot.
            self.post(slot, n, DescKind::Data)?;
            self.hash_chunk(n);
            self.seq += 1;
            return Ok(Step::More);
        }
        self.hash_chunk(n);
        let digest = self.hash.take().map(Md5::finalize);
        self.ch.set_trailer(&Trailer {
            session: self.session,
            file: self.file,
            bytes: self.total,
            md5: digest.unwrap_or([0; 16]),
        });
        observer.phase(Phase::Verdict, Some(self.path));
        self.post(slot, n, DescKind::Last)?;
        debug!(
            bytes = self.total,
            md5 = digest.as_ref().map(hex),
            "last chunk posted (FULL +1); its answer is to come (ACK -1)"
        );
        Ok(Step::Last(digest))
    }

    /// Fills one slot from the input. Returns its length and whether it is the file's last
    /// chunk, or why the file must be abandoned: a read error, a stop, or a size other than
    /// the announced one.
    /// Hashes the chunk of `n` bytes just placed, from our own copy of it.
    fn hash_chunk(&mut self, n: usize) {
        let Some(ctx) = self.hash.as_mut() else {
            return;
        };
        match &self.input {
            Input::Bytes(b) => ctx.consume(&b[self.total as usize - n..self.total as usize]),
            _ => ctx.consume(&self.buf[..n]),
        }
    }

    /// Places the next `limit` bytes (at most) in `slot`: straight from a file into the
    /// segment (one copy) when nothing needs a copy of our own, else through `buf`.
    fn place(&mut self, slot: usize, limit: usize) -> io::Result<usize> {
        match (&mut self.input, self.hash.is_some()) {
            (Input::File(f), false) => self.ch.fill_slot(slot, f, limit),
            (Input::Bytes(b), _) => {
                let at = (self.total as usize).min(b.len());
                let chunk = &b[at..(at + limit).min(b.len())];
                self.ch.put_slot(slot, chunk);
                Ok(chunk.len())
            }
            (input, _) => {
                if self.buf.len() < limit {
                    self.buf.resize(self.ch.info.slot_size, 0);
                }
                let n = input.read_into(&mut self.buf[..limit], self.total, self.ch.cancel())?;
                self.ch.put_slot(slot, &self.buf[..n]);
                Ok(n)
            }
        }
    }

    fn fill(&mut self, slot: usize) -> Result<(usize, bool), (Abort, SendError)> {
        let path = self.path;
        let limit = match self.size {
            Some(s) => (s - self.total).min(self.ch.info.slot_size as u64) as usize,
            None => self.ch.info.slot_size,
        };
        let read_error = |source: io::Error| {
            if source.kind() == io::ErrorKind::Interrupted {
                (Abort::Interrupted, SendError::Interrupted(path.into()))
            } else {
                (
                    Abort::ReadError,
                    SendError::Read {
                        path: path.into(),
                        source,
                    },
                )
            }
        };
        let size = self.size;
        let changed = |read| {
            (
                Abort::FileChanged,
                SendError::Changed {
                    path: path.into(),
                    announced: size.unwrap_or(0),
                    read,
                },
            )
        };
        let n = self.place(slot, limit).map_err(read_error)?;
        let done = self.total + n as u64;
        let last = match self.size {
            Some(_) if n < limit => return Err(changed(done)),
            // The announced size is reached: one more read tells whether the file grew.
            Some(s) if done == s => {
                match self.input.read_into(&mut [0u8; 1], done, self.ch.cancel()) {
                    Ok(0) => true,
                    Ok(_) => return Err(changed(done + 1)),
                    Err(e) => return Err(read_error(e)),
                }
            }
            Some(_) => false,
            // Streaming: a slot not filled to the brim means EOF (reads loop over short ones).
            None => n < limit,
        };
        // Every byte is read: if the file was written meanwhile (same size or not), what we
        // read may mix two versions, and its last chunk must not go.
        if last && self.stamp.is_some() && Stamp::of(&self.input) != self.stamp {
            return Err((Abort::FileChanged, SendError::ChangedInPlace(path.into())));
        }
        Ok((n, last))
    }
}

/// Reads until `buf` is full or EOF; EINTR is retried unless a stop was asked for.
fn read_full(input: &mut dyn Read, buf: &mut [u8], cancel: &runtime::Cancel) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted && !cancel.is_cancelled() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The receiver's verdict on a file whose last chunk is posted.
fn verdict(ch: &SenderEnd, a: &Awaited, how: Answer) -> Result<Sent, SendError> {
    let answer = await_answer(ch, &a.label, a.file, how)?;
    match answer.status {
        // The receiver reports the digest of the bytes it wrote. Anyone who may write the
        // channel could have changed a slot and the trailer to match each other: only our own
        // digest, compared here, says the committed file holds what we read.
        Status::Committed if a.digest.is_some_and(|d| d != answer.md5) => {
            Err(SendError::CommittedOther {
                path: a.label.clone(),
                ours: hex(&a.digest.unwrap_or([0; 16])),
                theirs: hex(&answer.md5),
                name: answer.name,
            })
        }
        Status::Committed => {
            let secs = a.t.elapsed().as_secs_f64();
            debug!(
                as_name = %crate::mechanisms::text::escape(&answer.name),
                elapsed_ms = (secs * 1e3) as u64,
                mib_per_s = (a.total as f64 / 1048576.0 / secs.max(1e-9)) as u64,
                "committed (ACK -1)"
            );
            Ok(Sent {
                name: answer.name,
                bytes: a.total,
                md5: a.digest,
            })
        }
        Status::Md5Mismatch => Err(SendError::Md5 {
            path: a.label.clone(),
            ours: hex(&a.digest.unwrap_or([0; 16])),
            theirs: hex(&answer.md5),
        }),
        _ => Err(refusal(&a.label, answer)),
    }
}

/// The fate of an awaited file once we gave up waiting (`e`) and withdrew it, the receiver
/// committing file `committing` then: a later file is withdrawn and never committed; the one
/// being committed is answered within a moment (waited for up to [`frame::STOP_SETTLE`]),
/// unless the receiver stopped right there, and then nobody can say.
fn withdrawn_or_told(
    ch: &SenderEnd,
    a: &Awaited,
    committing: u32,
    e: FrameError,
) -> Result<Sent, SendError> {
    if a.file > committing {
        return Err(SendError::Withdrawn {
            path: a.label.clone(),
            source: e,
        });
    }
    let until = Instant::now() + frame::STOP_SETTLE;
    while Instant::now() < until {
        if let (about, Ok(o)) = ch.answer_about(a.file)
            && about == a.file
            && !o.status.is_pending()
        {
            return verdict(ch, a, Answer::Counted);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(SendError::Frame(e))
}

/// How an answer is to be had.
#[derive(Clone, Copy)]
enum Answer {
    /// Already counted (ACK taken): read it.
    Counted,
    /// Wait for it.
    Wait,
    /// The channel failed: only an answer already in the file's lane counts.
    Left,
}

/// The receiver's answer about `file`.
fn await_answer(
    ch: &SenderEnd,
    path: &Path,
    file: u32,
    how: Answer,
) -> Result<frame::Outcome, SendError> {
    let bad = |source| SendError::BadAnswer {
        path: path.into(),
        source,
    };
    let waited = match how {
        Answer::Counted => Ok(()),
        Answer::Wait => ch.wait_answers(1),
        Answer::Left if ch.cancel().is_cancelled() => Err(FrameError::Interrupted),
        Answer::Left => Err(FrameError::ReceiverGone {
            key: ch.key,
            pid: ch.info.receiver_pid,
        }),
    };
    if let Err(e) = waited {
        // A receiver that answered and then went away (or was removed) left its answer in
        // the segment, which stays readable to us: it tells what became of the file.
        return match ch.answer_about(file) {
            (about, Ok(o)) if about == file && !o.status.is_pending() => Ok(o),
            _ => Err(e.into()),
        };
    }
    let (about, outcome) = ch.answer_about(file);
    let outcome = outcome.map_err(bad)?;
    if about != file {
        return Err(bad(frame::HeaderError::Field {
            field: "answer's file number",
            value: about.into(),
        }));
    }
    Ok(outcome)
}

fn refusal(path: &Path, o: frame::Outcome) -> SendError {
    match o.status {
        Status::CannotCreate => SendError::CannotCreate {
            path: path.into(),
            at: o.name,
            errno: o.errno,
        },
        Status::WriteFailed => SendError::WriteFailed {
            path: path.into(),
            errno: o.errno,
        },
        Status::Closed => SendError::Closed(path.into()),
        Status::BadPath => SendError::PathRefused(path.into()),
        status => SendError::Refused {
            path: path.into(),
            status,
        },
    }
}
