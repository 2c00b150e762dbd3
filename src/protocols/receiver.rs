//! Receiving files: [`Receiver`] serves a channel at a key; each [`Event::File`] is a file a
//! sender offers, which the caller takes into a file of its choosing
//! ([`Incoming::receive`]) and then names ([`Received::commit`]): the sender's call returns
//! only once the caller committed it.
//!
//! This is `shmxfer recv` in a few lines: files go to `DIR/file01.jpg`, `file02.jpg`, …
//! through a temporary file that is named only once it is whole.
//!
//! ```
//! use shmxfer::output::{self, TempFile};
//! use shmxfer::{Config, DirectMode, Event, Key, Receiver};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let key = Key(0x5e00_0002 + (std::process::id() & 0x3f_ffff) * 8);
//! let mut names = output::prepare(dir.path(), "file", ".jpg")?;
//! let (mut rx, _takeover) = Receiver::bind(key, &Config::default())?;
//! # let tx = std::thread::spawn(move || {
//! #     let mut tx = shmxfer::Sender::connect(key, &Default::default())?;
//! #     tx.send_bytes(b"photo.jpg", &[7u8; 3000])?;
//! #     tx.finish()
//! # });
//! loop {
//!     let incoming = match rx.next_event()? {
//!         Event::File(incoming) => incoming,
//!         Event::SessionEnd => break, // a server would wait for the next sender instead
//!         Event::Notice(n) => { eprintln!("{n}"); continue }
//!     };
//!     let mut tmp = TempFile::create(names.dir())?;
//!     let received = match incoming.receive(&mut tmp.file, DirectMode::Auto, &mut |_| true) {
//!         Ok(r) => r,
//!         Err(e) => { eprintln!("a file failed: {e}"); continue } // the sender was told
//!     };
//!     match names.commit(&mut tmp, None) {
//!         Ok(path) => received.commit(&path)?,
//!         Err(e) => received.fail(&e)?,
//!     }
//! }
//! # tx.join().unwrap()?;
//! assert_eq!(std::fs::read(dir.path().join("file01.jpg"))?, [7u8; 3000]);
//! # Ok(())
//! # }
//! ```

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, trace};

use crate::mechanisms::digest::Md5;
use crate::mechanisms::pacer::{DirectMode, PacedFile, Pacer};
use crate::mechanisms::text::escape;
use crate::protocols::frame::{
    self, Abort, Address, Admission, Config, Desc, DescKind, FrameError, Meta, Op, Outcome, Probe,
    ReceiverEnd, Request, STARTUP_GRACE, SenderId, State, Status, hex,
};
use crate::sysv::Source;

/// Why a file did not make it (the sender was told), or the channel failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file failed; the sender has been told why and the receiver goes on serving.
    #[error("{why}; discarded")]
    Answered {
        /// What the sender was told.
        status: Status,
        /// Why, in words.
        why: String,
    },
    /// The channel failed underneath (the sender went away, objects removed, a stop).
    #[error(transparent)]
    Channel(#[from] FrameError),
}

/// What serving a channel yields.
#[derive(Debug)]
pub enum Event<'r> {
    /// A sender offers a file: take it, or refuse it.
    File(Incoming<'r>),
    /// A sender's session ended (it said goodbye, or went away); the next event may be
    /// another sender's.
    SessionEnd,
    /// Something was refused or noticed (a malformed request, a sender gone between files, a
    /// file dropped unanswered); the receiver goes on serving.
    Notice(String),
}

/// A channel being served. It is removed when this is dropped.
pub struct Receiver {
    ch: Arc<ReceiverEnd>,
    session: u32,
    file: u32,
    /// A sender is admitted.
    in_session: bool,
    /// The session ended and `SessionEnd` is still to be said.
    ended: bool,
    /// What the sender is still owed for the last file offered: the caller may drop an
    /// `Incoming` or a `Received` without answering, and the sender must not wait for ever.
    owed: Owed,
}

/// An answer still owed for a file the caller dropped.
#[derive(Clone, Copy, Debug, Default)]
enum Owed {
    #[default]
    Nothing,
    /// An `Incoming` dropped unanswered: its chunks are still coming.
    Chunks(Tags, Option<u64>),
    /// A `Received` dropped: every chunk is taken, only the answer is missing.
    Answer(Tags),
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Receiver(key {}, session {})", self.ch.key, self.session)
    }
}

impl Receiver {
    /// Creates the channel at `key`, taking the key over from a dead receiver (the returned
    /// notice says so).
    ///
    /// # Errors
    /// A live receiver serves the key, or the key holds something that is not a shmxfer
    /// channel, or another user's channel, or the kernel refused an object.
    pub fn bind(
        addr: impl Into<Address>,
        cfg: &Config,
    ) -> Result<(Receiver, Option<String>), FrameError> {
        let addr = addr.into();
        let key = addr.key;
        let note = take_key(&addr)?;
        let ch = Arc::new(ReceiverEnd::create(&addr, cfg)?);
        debug!(key = %key, pid = crate::os::getpid(), slots = cfg.slot_count, slot_size = cfg.slot_size, "channel created; serving");
        let rx = Receiver {
            ch,
            session: 0,
            file: 0,
            in_session: false,
            ended: false,
            owed: Owed::Nothing,
        };
        Ok((rx, note))
    }

    /// The channel, for a stop handler (removing its semaphore set wakes every wait).
    #[allow(dead_code)] // The command line's stop handler; a library caller has `Cancel`.
    pub(crate) fn channel(&self) -> Arc<ReceiverEnd> {
        self.ch.clone()
    }

    /// Waits for the next event: sleeps in the kernel while no sender comes.
    ///
    /// # Errors
    /// The channel was removed underneath us, or a stop was requested
    /// ([`FrameError::Interrupted`]).
    pub fn next_event(&mut self) -> Result<Event<'_>, FrameError> {
        let ch = self.ch.clone();
        self.next_inner().map_err(|e| stopped(&ch, e))
    }

    fn next_inner(&mut self) -> Result<Event<'_>, FrameError> {
        if std::mem::take(&mut self.ended) {
            return Ok(Event::SessionEnd);
        }
        if let Some(note) = self.settle_owed()? {
            return Ok(Event::Notice(note));
        }
        while !self.in_session {
            match self.admit()? {
                Some(note) if note.is_empty() => continue,
                Some(note) => return Ok(Event::Notice(note)),
                None => {}
            }
        }
        let req = match self.ch.next_request(self.file.wrapping_add(1)) {
            Ok(r) => r,
            Err(FrameError::SenderGone) => {
                self.end_session();
                return Ok(Event::Notice(
                    "the sender went away before its next request".into(),
                ));
            }
            Err(e) => return Err(e),
        };
        let req = match req {
            Ok(r) if r.op == Op::Bye && r.session == self.session => {
                debug!("sender said goodbye");
                self.end_session();
                return Ok(Event::SessionEnd);
            }
            Ok(r) if r.session == self.session && r.file == self.file.wrapping_add(1) => r,
            Ok(r) => {
                self.ch
                    .refuse_request(self.file.wrapping_add(1), &refused(Status::BadRequest))?;
                return Ok(Event::Notice(format!(
                    "a request of session {} file {} where session {} file {} was due; refused",
                    r.session,
                    r.file,
                    self.session,
                    self.file.wrapping_add(1)
                )));
            }
            Err(e) => {
                self.ch
                    .refuse_request(self.file.wrapping_add(1), &refused(Status::BadRequest))?;
                return Ok(Event::Notice(format!("malformed request: {e}; refused")));
            }
        };
        self.file = req.file;
        let tags = Tags {
            session: self.session,
            file: self.file,
        };
        self.owed = Owed::Chunks(tags, req.size);
        Ok(Event::File(Incoming {
            rx: self,
            req,
            tags,
        }))
    }

    /// Opens the gate to the next sender and sleeps until one takes it (after the previous
    /// sender is gone: at once after its goodbye). Returns what to say if the segment its
    /// taker named was refused (the session then ends at once).
    fn admit(&mut self) -> Result<Option<String>, FrameError> {
        if self.session > 0 {
            self.ch.wait_sender_gone()?;
        }
        self.session += 1;
        self.file = 0;
        self.ch.open_gate(self.session)?;
        debug!(
            session = self.session,
            "gate open (GATE +1); sleeping until a sender takes it (wait for GATE == 0)"
        );
        match self.ch.wait_for_sender()? {
            Admission::Admitted(who) => {
                self.ch.set_state(State::Busy);
                debug!(
                    session = self.session,
                    uid = who.uid,
                    pid = who.pid,
                    "a sender took the gate; its segment is admitted"
                );
                self.in_session = true;
                Ok(None)
            }
            Admission::Refused(why) if why.is_empty() => {
                debug!(
                    session = self.session,
                    "the ticket was taken and no segment named"
                );
                Ok(Some(String::new()))
            }
            Admission::Refused(why) => Ok(Some(format!(
                "session {}: refused the sender segment named at the rendezvous: {why}",
                self.session
            ))),
        }
    }

    fn end_session(&mut self) {
        self.in_session = false;
    }

    /// Fails a file the caller dropped without answering (its chunks taken and dropped first,
    /// if they were still coming), so its sender goes on. Returns what to tell the caller.
    fn settle_owed(&mut self) -> Result<Option<String>, FrameError> {
        let tags = match std::mem::take(&mut self.owed) {
            Owed::Nothing => return Ok(None),
            Owed::Chunks(tags, size) => {
                match drop_chunks(&self.ch, tags, size, Status::WriteFailed) {
                    Err(FrameError::SenderGone) => {
                        self.sender_left();
                        return Ok(Some(format!(
                            "file {} was dropped unanswered; its sender went away",
                            tags.file
                        )));
                    }
                    r => r?,
                }
                tags
            }
            Owed::Answer(tags) => tags,
        };
        self.ch.answer(tags.file, &refused(Status::WriteFailed))?;
        Ok(Some(format!(
            "file {} was dropped unanswered; its sender was told it failed",
            tags.file
        )))
    }

    /// The sender went away mid-file: the session is over, and the next event says so.
    fn sender_left(&mut self) {
        self.end_session();
        self.ended = true;
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.ch.set_state(State::Stopping);
        self.ch.remove();
    }
}

/// A wait that failed because we were asked to stop is an interruption, not an error.
fn stopped(ch: &ReceiverEnd, e: FrameError) -> FrameError {
    if ch.cancel().is_cancelled() {
        FrameError::Interrupted
    } else {
        e
    }
}

/// A file a sender offers. Answer it ([`Incoming::receive`] then [`Received::commit`] or
/// [`Received::fail`], or [`Incoming::refuse`]): one dropped unanswered is failed for its
/// sender at the next [`Receiver::next_event`] (its chunks taken and dropped first), which
/// then yields a [`Event::Notice`], so the sender never waits for ever.
pub struct Incoming<'r> {
    rx: &'r mut Receiver,
    req: Request,
    tags: Tags,
}

impl std::fmt::Debug for Incoming<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Incoming({})", escape(&self.req.name))
    }
}

impl<'r> Incoming<'r> {
    /// The sender's name for the file: raw bytes, untrusted (see `output::safe_name`).
    pub fn name(&self) -> &[u8] {
        &self.req.name
    }
    /// The announced size; `None` for a stream of unknown length.
    pub fn size(&self) -> Option<u64> {
        self.req.size
    }
    /// The sender's permission bits and mtime, if it sent them.
    pub fn meta(&self) -> Option<Meta> {
        self.req.meta
    }
    /// Whether the file is verified with MD5 (the sender asked, or the channel requires it).
    pub fn md5(&self) -> bool {
        self.req.md5 || self.rx.ch.info.require_md5
    }
    /// The sender's pid, as it says (untrusted).
    pub fn sender_pid(&self) -> i32 {
        self.req.sender_pid
    }
    /// The sender as the kernel knows it: the creator of the segment its bytes come from,
    /// which no other user can forge.
    pub fn sender(&self) -> SenderId {
        self.rx.ch.sender().unwrap_or(SenderId {
            uid: u32::MAX,
            gid: u32::MAX,
            pid: 0,
        })
    }

    /// Refuses the file with `status` (say `Status::Closed`). The sender sends a file's first
    /// chunks without waiting to hear it accepted: they are taken and dropped, up to its end
    /// marker (the sender stops at the next chunk once it sees the refusal), before it is told.
    ///
    /// # Errors
    /// The sender went away or the channel failed.
    pub fn refuse(self, status: Status) -> Result<(), FrameError> {
        self.refuse_with(refused(status))
    }

    /// Refuses the file because no output could be created in `at`.
    ///
    /// # Errors
    /// As [`Incoming::refuse`].
    pub fn cannot_create(self, at: &Path, e: &io::Error) -> Result<(), FrameError> {
        self.refuse_with(Outcome {
            status: Status::CannotCreate,
            errno: crate::mechanisms::output::errno_of(e).unwrap_or(libc::EIO),
            name: at.as_os_str().as_bytes().to_vec(),
            md5: [0; 16],
            bytes: 0,
            segment: 0,
            sender_uid: 0,
        })
    }

    fn refuse_with(self, o: Outcome) -> Result<(), FrameError> {
        let Incoming { rx, req, tags } = self;
        rx.owed = Owed::Nothing;
        let r = drop_chunks(&rx.ch, tags, req.size, o.status)
            .and_then(|()| rx.ch.answer(tags.file, &o))
            .map_err(|e| stopped(&rx.ch, e));
        if matches!(r, Err(FrameError::SenderGone)) {
            rx.sender_left();
        }
        r
    }

    /// Accepts the file and writes it to `out` (the way `direct` says), reporting the bytes
    /// received so far to `progress`, which returns whether to go on: `false` stops taking
    /// this file (the rest of it is drained unwritten, and the sender hears it failed). Returns
    /// it whole and verified; the sender still waits for [`Received::commit`] or
    /// [`Received::fail`].
    ///
    /// # Errors
    /// [`FileError::Answered`]: the file failed (the sender aborted, a write failed, sizes or
    /// digests disagree) and the sender was told; [`FileError::Channel`]: the sender went
    /// away or the channel failed.
    pub fn receive(
        self,
        out: &mut File,
        direct: DirectMode,
        progress: &mut dyn FnMut(u64) -> bool,
    ) -> Result<Received<'r>, FileError> {
        self.take(
            Sink::File(PacedFile::new(out, Pacer::new(direct))),
            progress,
        )
    }

    /// As [`Incoming::receive`], into any writer: a `Vec<u8>`, a socket, a pipe to another
    /// program. Each chunk is copied out of shared memory before it is written (a file given
    /// to `receive` is written straight from it, one copy fewer).
    ///
    /// # Errors
    /// As [`Incoming::receive`]; a failed write is [`FileError::Answered`] with
    /// [`Status::WriteFailed`].
    pub fn receive_to(
        self,
        sink: &mut (dyn Write + Send),
        progress: &mut dyn FnMut(u64) -> bool,
    ) -> Result<Received<'r>, FileError> {
        self.take(
            Sink::Any {
                w: sink,
                buf: Vec::new(),
            },
            progress,
        )
    }

    fn take(
        self,
        out: Sink,
        progress: &mut dyn FnMut(u64) -> bool,
    ) -> Result<Received<'r>, FileError> {
        let Incoming { rx, req, tags } = self;
        rx.owed = Owed::Nothing;
        let r = receive_into(&rx.ch, tags, &req, out, progress).map_err(|e| match e {
            FileError::Channel(c) => FileError::Channel(stopped(&rx.ch, c)),
            answered => answered,
        });
        if matches!(r, Err(FileError::Channel(FrameError::SenderGone))) {
            rx.sender_left();
        }
        let (bytes, md5) = r?;
        rx.owed = Owed::Answer(tags);
        Ok(Received {
            rx,
            tags,
            bytes,
            md5,
        })
    }
}

/// Takes a file we will not keep: flags `status` at once, so the sender stops at its next
/// chunk, and takes and drops its chunks up to its end marker, so the answer that follows
/// leaves nothing of this file in the ring.
fn drop_chunks(
    ch: &ReceiverEnd,
    tags: Tags,
    size: Option<u64>,
    status: Status,
) -> Result<(), FrameError> {
    ch.take_file(tags.file);
    let mut d = Drain::new(ch, tags, size);
    d.fail(status, String::new());
    d.run(&mut |_| true, |_, _, total| ch.release_slot(total))
        .map(drop)
}

/// Tells the sender that `file` failed (`status`, with the errno and what we got of it), and
/// returns the matching error.
fn fail_file<T>(
    ch: &ReceiverEnd,
    file: u32,
    status: Status,
    errno: i32,
    md5: [u8; 16],
    bytes: u64,
    why: String,
) -> Result<T, FileError> {
    let o = Outcome {
        status,
        errno,
        name: Vec::new(),
        md5,
        bytes,
        segment: 0,
        sender_uid: 0,
    };
    ch.answer(file, &o)?;
    Err(FileError::Answered { status, why })
}

/// A file received whole (and verified): the sender waits to hear where it went.
#[derive(Debug)]
pub struct Received<'r> {
    rx: &'r mut Receiver,
    tags: Tags,
    /// Bytes received and written.
    pub bytes: u64,
    /// The digest of the bytes written, when MD5 was checked (the sender's agreed).
    pub md5: Option<[u8; 16]>,
}

impl Received<'_> {
    /// Whether the file may still be committed: false once its sender withdrew it (it gave up
    /// waiting, or was stopped, and reports the file not sent). Call right before the commit:
    /// from the call on, a sender that withdraws waits for this file's answer instead.
    pub fn may_commit(&self) -> bool {
        self.rx.ch.may_commit(self.tags.file)
    }

    /// Tells the sender the file was dropped because it withdrew it.
    ///
    /// # Errors
    /// The channel failed.
    pub fn withdrawn(self) -> Result<(), FrameError> {
        self.tell(Status::Withdrawn, 0, Vec::new())
    }

    /// Tells the sender the file is committed under `name`.
    ///
    /// # Errors
    /// The channel failed.
    pub fn commit(self, name: &Path) -> Result<(), FrameError> {
        self.tell(Status::Committed, 0, name.as_os_str().as_bytes().to_vec())
    }

    /// Tells the sender the file could not be kept (the commit failed with `e`).
    ///
    /// # Errors
    /// The channel failed.
    pub fn fail(self, e: &io::Error) -> Result<(), FrameError> {
        self.tell(
            Status::WriteFailed,
            crate::mechanisms::output::errno_of(e).unwrap_or(libc::EIO),
            Vec::new(),
        )
    }

    fn tell(self, status: Status, errno: i32, name: Vec<u8>) -> Result<(), FrameError> {
        self.rx.owed = Owed::Nothing;
        let o = Outcome {
            status,
            errno,
            name,
            md5: self.md5.unwrap_or([0; 16]),
            bytes: self.bytes,
            segment: 0,
            sender_uid: 0,
        };
        let ch = &self.rx.ch;
        ch.answer(self.tags.file, &o).map_err(|e| stopped(ch, e))
    }
}

/// Takes the file, drains it into `out` and checks it: its length against the announced
/// size and the trailer, its digest against the sender's. Returns the length and digest.
fn receive_into(
    ch: &ReceiverEnd,
    tags: Tags,
    req: &Request,
    out: Sink,
    progress: &mut dyn FnMut(u64) -> bool,
) -> Result<(u64, Option<[u8; 16]>), FileError> {
    let t = Instant::now();
    let md5 = req.md5 || ch.info.require_md5;
    debug!(name = %escape(&req.name), size = req.size, md5, sender = req.sender_pid, file = tags.file, "request");
    ch.take_file(tags.file);
    let (total, digest) = drain(ch, tags, req, out, md5, progress)?;
    let fail = |status, why| fail_file(ch, tags.file, status, 0, digest, total, why);
    let trailer = ch.trailer(tags.file);
    if (trailer.session, trailer.file) != (tags.session, tags.file) {
        return fail(Status::BadRequest, "the trailer is another file's".into());
    }
    if req.size.is_some_and(|s| s != total) || trailer.bytes != total {
        let why = format!(
            "received {total} bytes, the sender announced {:?}/{}",
            req.size, trailer.bytes
        );
        return fail(Status::LengthMismatch, why);
    }
    if md5 && digest != trailer.md5 {
        let why = format!(
            "MD5 mismatch: got {}, sender has {}",
            hex(&digest),
            hex(&trailer.md5)
        );
        return fail(Status::Md5Mismatch, why);
    }
    debug!(
        bytes = total,
        md5 = md5.then(|| hex(&digest)),
        elapsed_ms = t.elapsed().as_millis() as u64,
        "received whole"
    );
    Ok((total, md5.then_some(digest)))
}

/// Makes sure the key is free for us: absent, or a dead receiver's channel (removed; the
/// returned notice says so). A live receiver, or anything that is not a shmxfer channel, is
/// left alone.
fn take_key(addr: &Address) -> Result<Option<String>, FrameError> {
    let key = addr.key;
    // A receiver that is creating its channel right now has not written its magic yet; give it
    // a moment to finish (it then serves, and we are refused) before giving up.
    let started = Instant::now();
    loop {
        match frame::probe(key)? {
            Probe::Absent => return Ok(None),
            Probe::Channel {
                alive: true,
                info,
                owner,
                ..
            } => {
                return Err(FrameError::InUse {
                    key,
                    pid: info.receiver_pid,
                    owner: crate::os::user_name(owner),
                    serves: in_use_by(addr, &info),
                });
            }
            Probe::Channel {
                alive: false,
                info,
                shmid,
                ..
            } => {
                frame::remove_channel(key, shmid, &info, false);
                return Ok(Some(format!(
                    "the receiver of key {key} (pid {}) died; taking the key over",
                    info.receiver_pid
                )));
            }
            Probe::Abandoned { shmid, pid } => {
                frame::remove_abandoned(key, shmid, pid, false);
                return Ok(Some(format!(
                    "a receiver (pid {pid}) died setting up key {key}; taking the key over"
                )));
            }
            // Another user's channel (or object) at our key: not ours to serve or take over.
            Probe::NoPermission { uid, pid, .. } => {
                return Err(FrameError::Taken {
                    key,
                    owner: crate::os::user_name(uid),
                    pid,
                });
            }
            Probe::Starting { pid, .. } if started.elapsed() > STARTUP_GRACE => {
                return Err(FrameError::Starting { key, pid });
            }
            Probe::Foreign { why, .. } if started.elapsed() > Duration::from_millis(500) => {
                return Err(FrameError::Foreign { key, why });
            }
            Probe::Foreign { .. } | Probe::Starting { .. } => {
                std::thread::sleep(Duration::from_millis(50))
            }
        }
    }
}

/// What a live receiver at our key serves, when we asked for a name.
fn in_use_by(addr: &Address, info: &frame::Info) -> String {
    match &addr.name {
        Some(n) if info.name != n.as_bytes() => format!(
            " as {} (\"{n}\" shares its key: choose another name)",
            frame::serves(info)
        ),
        Some(_) => format!(" as {}", frame::serves(info)),
        None => String::new(),
    }
}

fn refused(status: Status) -> Outcome {
    Outcome {
        status,
        errno: 0,
        name: Vec::new(),
        md5: [0; 16],
        bytes: 0,
        segment: 0,
        sender_uid: 0,
    }
}

/// The session and file every message about the current file must carry.
#[derive(Clone, Copy, Debug)]
struct Tags {
    session: u32,
    file: u32,
}

/// How the chunk loop ended: at the file's last chunk, or at the sender's abort.
enum End {
    Complete,
    SenderAborted(u32),
}

/// Writes slots to the output. The first write error is kept and the rest of the file is
/// still taken (not written), so the sender is never left blocked; it is told to stop through
/// the status field.
struct Writer<'a, 'o> {
    ch: &'a ReceiverEnd,
    file: u32,
    out: Sink<'o>,
    error: Option<io::Error>,
}

/// Where a file's bytes go: a file, paced (written from shared memory by the kernel, one copy),
/// or any writer of the caller's (each slot copied out first: no view of shared memory leaves
/// `sysv`).
enum Sink<'a> {
    File(PacedFile<'a>),
    Any {
        w: &'a mut (dyn Write + Send),
        buf: Vec<u8>,
    },
}

impl Sink<'_> {
    fn write_all(&mut self, src: Source) -> io::Result<()> {
        match (self, src) {
            (Sink::File(f), src) => f.write_all(src),
            (Sink::Any { w, .. }, Source::Own(b)) => w.write_all(b),
            (Sink::Any { w, buf }, Source::Shared { map, offset, len }) => {
                buf.resize(len, 0);
                map.read(offset, buf).map_err(io::Error::other)?;
                w.write_all(buf)
            }
        }
    }
}

impl Writer<'_, '_> {
    fn put(&mut self, src: Source) {
        if self.error.is_none()
            && let Err(e) = self.out.write_all(src)
        {
            self.ch.flag_failure(self.file, Status::WriteFailed);
            self.error = Some(e);
        }
    }
}

/// A buffer of our own for one slot, page-aligned so it can be written with O_DIRECT.
struct SlotBuf {
    v: Vec<u8>,
    at: usize,
    len: usize,
}

impl SlotBuf {
    fn new(len: usize) -> SlotBuf {
        let v = vec![0u8; len + crate::os::DIRECT_ALIGN];
        let at = v.as_ptr().align_offset(crate::os::DIRECT_ALIGN);
        SlotBuf { v, at, len }
    }
    fn get(&mut self, n: usize) -> &mut [u8] {
        &mut self.v[self.at..self.at + n.min(self.len)]
    }
}

/// The chunk loop's state for one file: its tags, what arrived, and the first failure met
/// (after which the rest of the file is taken but not written, until its end marker).
struct Drain<'a> {
    ch: &'a ReceiverEnd,
    tags: Tags,
    size: Option<u64>,
    total: u64,
    failure: Option<(Status, String)>,
}

impl<'a> Drain<'a> {
    fn new(ch: &'a ReceiverEnd, tags: Tags, size: Option<u64>) -> Drain<'a> {
        Drain {
            ch,
            tags,
            size,
            total: 0,
            failure: None,
        }
    }

    fn fail(&mut self, status: Status, why: String) {
        if self.failure.is_none() {
            self.ch.flag_failure(self.tags.file, status);
            self.failure = Some((status, why));
        }
    }

    /// Takes the file's descriptors in ring order until its last chunk or its abort. Every
    /// descriptor taken is balanced by a slot handed back, so when this returns nothing of
    /// this file is left in the ring (the next file's chunks may already follow it). `each` gets each good chunk's slot and length
    /// and must hand the slot back; anything else is handed back here.
    fn run(
        &mut self,
        progress: &mut dyn FnMut(u64) -> bool,
        mut each: impl FnMut(usize, usize, u64) -> Result<(), FrameError>,
    ) -> Result<End, FrameError> {
        let slot_size = self.ch.info.slot_size;
        for seq in 0u64.. {
            let (slot, desc) = self.ch.next_desc(seq)?;
            let d = match desc {
                Ok(d) if (d.session, d.file) == (self.tags.session, self.tags.file) => d,
                Ok(d) => {
                    self.fail(
                        Status::BadRequest,
                        format!("a chunk of session {} file {}", d.session, d.file),
                    );
                    self.ch.release_slot(self.total)?;
                    continue;
                }
                Err(e) => {
                    self.fail(Status::BadRequest, format!("bad chunk: {e}"));
                    self.ch.release_slot(self.total)?;
                    continue;
                }
            };
            trace!(seq, len = d.len, kind = ?d.kind, "chunk");
            if let DescKind::Abort(code) = d.kind {
                self.ch.release_slot(self.total)?;
                return Ok(End::SenderAborted(code));
            }
            let len = self.check(&d, seq, slot_size);
            match len {
                Some(n) if self.failure.is_none() => each(slot, n, self.total)?,
                _ => self.ch.release_slot(self.total)?,
            }
            if !progress(self.total) && self.failure.is_none() {
                // The caller stops taking this file: the sender hears it failed, and stops.
                self.fail(
                    Status::WriteFailed,
                    "stopped by the receiving program".into(),
                );
            }
            if d.kind == DescKind::Last {
                return Ok(End::Complete);
            }
        }
        unreachable!("2^64 chunks")
    }

    /// Accounts a data descriptor; returns its length if it is well-formed.
    fn check(&mut self, d: &Desc, seq: u64, slot_size: usize) -> Option<usize> {
        if d.index != seq {
            self.fail(
                Status::BadRequest,
                format!("chunk {} where {seq} was due", d.index),
            );
            return None;
        }
        let Some(n) = d.len_in(slot_size) else {
            self.fail(
                Status::BadRequest,
                format!("a chunk of {} bytes in a {slot_size}-byte slot", d.len),
            );
            return None;
        };
        self.total += n as u64;
        if self.size.is_some_and(|s| self.total > s) {
            self.fail(
                Status::LengthMismatch,
                format!("more bytes than the {:?} announced", self.size),
            );
        }
        Some(n)
    }
}

/// How many slot buffers of our own the MD5 path keeps: enough for the writer thread to lag
/// a few slots behind, within a few MiB.
fn buffer_count(ch: &ReceiverEnd) -> usize {
    ((8 << 20) / ch.info.slot_size).clamp(2, ch.info.slot_count as usize)
}

/// Takes chunks until the file's end marker, writing them to the sink, then answers for the
/// failures it met. Returns the length and digest of a whole file.
///
/// With MD5, each slot is first copied into memory of our own and handed back at once; the
/// digest and the write are both of that copy, so the digest we report is of the bytes we
/// wrote, whoever writes the segment meanwhile. A second thread writes while this one copies
/// and hashes. Without MD5 each slot is written straight from shared memory (one copy).
fn drain(
    ch: &ReceiverEnd,
    tags: Tags,
    req: &Request,
    out: Sink,
    md5: bool,
    progress: &mut dyn FnMut(u64) -> bool,
) -> Result<(u64, [u8; 16]), FileError> {
    let mut d = Drain::new(ch, tags, req.size);
    let mut writer = Writer {
        ch,
        file: tags.file,
        out,
        error: None,
    };
    let mut ctx = md5.then(Md5::new);
    let one_slot = req.size.is_some_and(|s| s <= ch.info.slot_size as u64);
    let end = match ctx.as_mut() {
        None => d.run(progress, |slot, n, total| {
            ch.with_slot(slot, n, |s| writer.put(s));
            ch.release_slot(total)
        })?,
        Some(ctx) if one_slot => {
            let mut buf = SlotBuf::new(ch.info.slot_size);
            d.run(progress, |slot, n, total| {
                let b = buf.get(n);
                ch.copy_slot(slot, b);
                ch.release_slot(total)?;
                ctx.consume(&*b);
                writer.put(Source::Own(b));
                Ok(())
            })?
        }
        Some(ctx) => copy_hash_and_write(ch, &mut d, progress, ctx, &mut writer)?,
    };
    finish(ch, d, writer.error, end, ctx)
}

/// The MD5 path for files of several slots: this thread copies each slot out, hands it back
/// and hashes the copy; a writer thread writes the copies.
fn copy_hash_and_write(
    ch: &ReceiverEnd,
    d: &mut Drain,
    progress: &mut dyn FnMut(u64) -> bool,
    ctx: &mut Md5,
    writer: &mut Writer,
) -> Result<End, FrameError> {
    use std::sync::mpsc;
    let count = buffer_count(ch);
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = mpsc::sync_channel::<(SlotBuf, usize)>(count);
        let (free_tx, free_rx) = mpsc::channel::<SlotBuf>();
        for _ in 0..count {
            let _ = free_tx.send(SlotBuf::new(ch.info.slot_size));
        }
        scope.spawn(move || {
            for (mut buf, n) in full_rx {
                writer.put(Source::Own(buf.get(n)));
                // Once the file's end marker is taken nobody wants buffers back: not an error.
                let _ = free_tx.send(buf);
            }
        });
        let end = d.run(progress, |slot, n, total| {
            let mut buf = free_rx
                .recv()
                .expect("the writer thread hands every buffer back");
            let b = buf.get(n);
            ch.copy_slot(slot, b);
            ch.release_slot(total)?;
            ctx.consume(&*b);
            let _ = full_tx.send((buf, n));
            Ok(())
        });
        drop(full_tx);
        end
    })
}

/// Answers for a file whose end marker came: our own failure first (the sender may have
/// aborted because we flagged it), then the sender's abort.
fn finish(
    ch: &ReceiverEnd,
    d: Drain,
    write_error: Option<io::Error>,
    end: End,
    ctx: Option<Md5>,
) -> Result<(u64, [u8; 16]), FileError> {
    let total = d.total;
    let answer =
        |status, errno, why| fail_file(ch, d.tags.file, status, errno, [0; 16], total, why);
    if let Some(e) = write_error {
        let errno = crate::mechanisms::output::errno_of(&e).unwrap_or(libc::EIO);
        let why = format!("write failed: {}", crate::mechanisms::text::io_text(&e));
        return answer(Status::WriteFailed, errno, why);
    }
    if let Some((status, why)) = d.failure {
        return answer(status, 0, why);
    }
    match end {
        End::Complete => Ok((total, ctx.map(Md5::finalize).unwrap_or([0; 16]))),
        End::SenderAborted(code) => {
            let why = match Abort::from_code(code) {
                Some(Abort::Interrupted) => "the sender was interrupted",
                Some(Abort::ReadError) => "the sender could not read its file",
                Some(Abort::FileChanged) => "the file changed while it was read",
                Some(Abort::ReceiverFailed) | None => "the sender aborted",
            };
            answer(Status::Aborted, 0, why.into())
        }
    }
}
