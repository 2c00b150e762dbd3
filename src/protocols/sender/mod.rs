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

mod error;
mod offer;
mod options;
mod transfer;
mod verdict;

pub use error::SendError;
use offer::*;
use options::Quiet;
pub use options::{Observer, Phase, SendOptions, Sent, Verdict};
use transfer::*;
use verdict::*;

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
