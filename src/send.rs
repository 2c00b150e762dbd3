//! `shmxfer send`: stream each file through the channel's slot ring, and succeed only once the
//! receiver says it committed the file.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::{debug, trace};

use crate::cli::SendArgs;
use crate::frame::{
    self, Abort, Channel, Desc, DescKind, FrameError, Meta, Op, Request, Status, Trailer, hex,
};
use crate::progress::Progress;
use crate::text::escape_path;
use crate::{exit, runtime, sysv};

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{}: no such file", escape_path(.0))]
    Missing(PathBuf),
    #[error("{}: permission denied", escape_path(.0))]
    Unreadable(PathBuf),
    #[error("{}: is a directory; send the files in it, or `tar c DIR | shmxfer send -`", escape_path(.0))]
    IsDir(PathBuf),
    #[error("{}: {source}", escape_path(path))]
    Open { path: PathBuf, source: io::Error },
    #[error("{}: read failed: {source}; nothing was written", escape_path(path))]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{}: the file changed while it was sent ({announced} bytes announced, {read} read); nothing was written, send it again",
        escape_path(path)
    )]
    Changed {
        path: PathBuf,
        announced: u64,
        read: u64,
    },
    #[error(
        "{}: MD5 mismatch: sent {ours}, the receiver got {theirs}; it discarded the file",
        escape_path(path)
    )]
    Md5 {
        path: PathBuf,
        ours: String,
        theirs: String,
    },
    #[error("{}: the receiver could not create its output file ({}): {}", escape_path(path), crate::text::escape(at), io::Error::from_raw_os_error(*errno))]
    CannotCreate {
        path: PathBuf,
        at: Vec<u8>,
        errno: i32,
    },
    #[error("{}: the receiver failed to write the file: {}; it discarded the partial file", escape_path(path), io::Error::from_raw_os_error(*errno))]
    WriteFailed { path: PathBuf, errno: i32 },
    #[error("{}: the receiver takes one file only (--once) and already has it; nothing was sent", escape_path(.0))]
    Closed(PathBuf),
    #[error(
        "{}: the receiver refused the transfer ({status:?})",
        escape_path(path)
    )]
    Refused { path: PathBuf, status: Status },
    #[error(
        "{}: the receiver answered with a malformed header: {source}",
        escape_path(path)
    )]
    BadAnswer {
        path: PathBuf,
        source: frame::HeaderError,
    },
    #[error("{}: interrupted; it was not sent (the receiver discarded what it had)", escape_path(.0))]
    Interrupted(PathBuf),
    #[error("--name must be a file name of 1 to 255 bytes without `/`")]
    BadName,
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl SendError {
    pub fn exit_code(&self) -> i32 {
        use SendError::*;
        match self {
            Missing(_) | Unreadable(_) | IsDir(_) | Open { .. } => exit::NOINPUT,
            Read { .. } | WriteFailed { .. } => exit::IOERR,
            Changed { .. } | Md5 { .. } | Refused { .. } | BadAnswer { .. } => exit::DATAERR,
            CannotCreate { .. } => exit::CANTCREAT,
            Closed(_) => exit::UNAVAILABLE,
            BadName => exit::USAGE,
            Interrupted(_) => exit::INTERRUPTED,
            Frame(e) => e.exit_code(),
        }
    }
    /// Whether the channel itself failed, so no later file can go either.
    fn is_fatal(&self) -> bool {
        matches!(
            self,
            SendError::Frame(_) | SendError::BadAnswer { .. } | SendError::Interrupted(_)
        )
    }
}

/// What the main thread is doing, for the watcher thread and the stop handler, which must
/// tell the truth about the file in hand if they end the process.
mod phase {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU8, Ordering};

    /// Between files: nothing of a file is in flight.
    pub const IDLE: u8 = 0;
    /// Opening or reading an input: it may block for ever (a FIFO, a slow pipe), and its file
    /// is not committed, whatever happens next.
    pub const INPUT: u8 = 1;
    /// The last chunk is posted: the receiver has every byte and may be committing it.
    pub const VERDICT: u8 = 2;
    /// Every file is settled.
    pub const DONE: u8 = 3;

    static PHASE: AtomicU8 = AtomicU8::new(IDLE);
    static FILE: Mutex<String> = Mutex::new(String::new());

    pub fn set(p: u8, file: Option<&std::path::Path>) {
        if let (Some(f), Ok(mut g)) = (file, FILE.lock()) {
            *g = crate::text::escape_path(f);
        }
        PHASE.store(p, Ordering::SeqCst);
    }
    pub fn get() -> (u8, String) {
        let f = FILE.lock().map(|g| g.clone()).unwrap_or_default();
        (PHASE.load(Ordering::SeqCst), f)
    }
}

/// Set by whichever thread reports the end, so the end is reported once.
static EXITING: AtomicBool = AtomicBool::new(false);

fn claim_exit() -> bool {
    !EXITING.swap(true, Ordering::SeqCst)
}

/// How long after SIGINT/SIGTERM the main thread has to settle the file in hand before the
/// process ends anyway (it may be blocked reading a pipe or opening a FIFO).
const STOP_GRACE: Duration = Duration::from_secs(2);

/// SIGINT/SIGTERM only set the stop flag: the main thread tells the receiver at the next
/// chunk, collects its answer and reports. If it cannot within `STOP_GRACE`, or at a second
/// signal, the process ends: dying is always safe, since the kernel drops our liveness mark
/// and the receiver discards a file whose last chunk never came.
fn install_stop_handler() {
    let _ = ctrlc::set_handler(|| {
        if runtime::request_stop() {
            std::process::exit(exit::INTERRUPTED);
        }
        std::thread::spawn(|| {
            std::thread::sleep(STOP_GRACE);
            if claim_exit() {
                let msg = match phase::get() {
                    (phase::INPUT, f) => format!("interrupted while reading {f}; it was not sent"),
                    (phase::VERDICT, f) => format!(
                        "interrupted while the receiver committed {f}: it had every byte; check its output before sending it again"
                    ),
                    _ => "interrupted".into(),
                };
                report_and_exit(msg, exit::INTERRUPTED);
            }
            std::process::exit(exit::INTERRUPTED);
        });
    });
}

/// Prints `msg` from a thread of its own (stderr may be a full pipe) and exits soon after.
fn report_and_exit(msg: String, code: i32) -> ! {
    std::thread::spawn(move || crate::error(msg));
    std::thread::sleep(Duration::from_millis(100));
    std::process::exit(code);
}

pub fn run(args: SendArgs) -> i32 {
    crate::init_logging(&args.verbosity);
    if args.legacy {
        return crate::legacy::send(&args);
    }
    if args.name.is_empty() || args.name.len() > frame::MAX_NAME || args.name.contains('/') {
        crate::error(SendError::BadName);
        return exit::USAGE;
    }
    let key = match args.channel.native_key() {
        Ok(k) => k,
        Err(e) => {
            crate::error(e);
            return exit::USAGE;
        }
    };
    let deadline = args
        .wait
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    install_stop_handler();

    let ch = match connect(key, deadline) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            crate::error(&e);
            return e.exit_code();
        }
    };
    watch_receiver(ch.clone());

    debug!(key = %key, "waiting for our turn: semop GATE -1, SENDER +1 (undo)");
    let t = Instant::now();
    let session = match ch.admit(deadline) {
        Ok(s) => s,
        Err(e) => {
            let e = match e {
                FrameError::TimedOut { key, .. } => FrameError::TimedOut {
                    key,
                    what: "our turn (another sender holds the channel)",
                    secs: args.wait.unwrap_or(0.0),
                },
                e => e,
            };
            return fail(&e.into());
        }
    };
    debug!(
        session,
        waited_ms = t.elapsed().as_millis() as u64,
        "admitted: took the gate"
    );
    let code = send_all(&ch, session, &args);
    phase::set(phase::DONE, None);
    match ch.send_bye(session) {
        // Every file is settled already; a receiver that left meanwhile (`--once`) is fine.
        Ok(()) | Err(FrameError::Removed { .. } | FrameError::ReceiverGone { .. }) => {}
        Err(e) if code == exit::OK => return fail(&e.into()),
        Err(_) => {}
    }
    debug!("said goodbye: semop SENDER -1 (undo), REQ +1; released the channel");
    code
}

/// Sends each file in turn; returns the exit code. A failure of one file is reported and the
/// next is tried; a failure of the channel, or a stop, ends the send.
fn send_all(ch: &Channel, session: u32, args: &SendArgs) -> i32 {
    let md5 = args.md5 || ch.info.require_md5;
    let mut code = exit::OK;
    for (i, path) in args.files.iter().enumerate() {
        let result = if runtime::stop_requested() {
            Err(SendError::Interrupted(path.clone()))
        } else {
            send_one(ch, session, path, &args.name, md5, args.verbosity.quiet)
        };
        let e = match result {
            Ok(()) if !runtime::stop_requested() => continue,
            Ok(()) => SendError::Frame(FrameError::Interrupted),
            Err(e) => e,
        };
        if !e.is_fatal() {
            crate::error(&e);
        } else if claim_exit() {
            crate::error(&e);
            let rest: Vec<String> = args.files[i + 1..].iter().map(|p| escape_path(p)).collect();
            if !rest.is_empty() {
                crate::error(format_args!("not sent: {}", rest.join(", ")));
            }
            return e.exit_code();
        } else {
            // Another thread is ending the process with its own report.
            std::thread::sleep(Duration::from_secs(1));
            return e.exit_code();
        }
        code = if code == exit::OK || code == e.exit_code() {
            e.exit_code()
        } else {
            exit::FAILURE
        };
    }
    code
}

fn fail(e: &SendError) -> i32 {
    if claim_exit() {
        crate::error(e);
    }
    e.exit_code()
}

/// Attaches to the channel, waiting for a receiver to appear until `deadline` if one is given.
/// There is no kernel event for "a segment appeared at a key", so this one wait polls, and only
/// while nothing else can happen.
/// A receiver caught setting its channel up is waited for even without a deadline.
fn connect(key: sysv::Key, deadline: Option<Instant>) -> Result<Channel, FrameError> {
    let mut grace: Option<Instant> = None;
    loop {
        if runtime::stop_requested() {
            return Err(FrameError::Interrupted);
        }
        let waiting = deadline.is_some_and(|d| Instant::now() < d);
        match Channel::open(key) {
            Err(
                FrameError::NoReceiver { .. }
                | FrameError::ReceiverGone { .. }
                | FrameError::Removed { .. },
            ) if waiting => {}
            Err(FrameError::Starting { .. })
                if waiting
                    || *grace.get_or_insert_with(|| Instant::now() + frame::STARTUP_GRACE)
                        > Instant::now() => {}
            r => return r,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A sender may sit in read(2) on a slow pipe, or in open(2) of a FIFO, while the receiver
/// dies; nothing in the main thread would notice. This thread sleeps in the kernel until the
/// receiver's liveness semaphore drops (or the set is removed). If the main thread is then in
/// such a read, it ends the process: that file cannot arrive. Anywhere else, the main thread's
/// own sliced waits notice within a slice and report what happened to each file.
fn watch_receiver(ch: Arc<Channel>) {
    std::thread::spawn(move || {
        ch.wait_receiver_gone();
        let (p, file) = phase::get();
        if p == phase::INPUT && claim_exit() {
            let gone = FrameError::ReceiverGone {
                key: ch.key,
                pid: ch.info.receiver_pid,
            };
            report_and_exit(format!("{gone}; {file} was not sent"), exit::UNAVAILABLE);
        }
    });
}

fn open_input(path: &Path) -> Result<(File, Option<u64>, Option<Meta>), SendError> {
    if path.as_os_str() == "-" {
        let fd = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| SendError::Open {
                path: path.into(),
                source,
            })?;
        let f = File::from(fd);
        let md = f.metadata().ok();
        let size = md.as_ref().filter(|m| m.is_file()).map(|m| m.len());
        return Ok((f, size, None));
    }
    let f = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => SendError::Missing(path.into()),
        io::ErrorKind::PermissionDenied => SendError::Unreadable(path.into()),
        _ => SendError::Open {
            path: path.into(),
            source: e,
        },
    })?;
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
    // /proc and sysfs files say 0 bytes and still have content: a zero size is streamed as
    // "length unknown", which also sends a truly empty file correctly.
    let size = (md.is_file() && md.len() > 0).then_some(md.len());
    if size.is_some() {
        sysv::advise_sequential(&f);
    }
    Ok((f, size, Some(meta)))
}

/// One file's transfer: the tags its messages carry and how far it got.
struct Transfer<'a> {
    ch: &'a Channel,
    path: &'a Path,
    session: u32,
    file: u32,
    size: Option<u64>,
    /// With MD5: our own copy of each chunk, hashed before it goes into the slot, so the
    /// digest is of what we read, whatever happens to shared memory after.
    hash: Option<(md5::Context, Vec<u8>)>,
    total: u64,
    seq: u64,
}

fn send_one(
    ch: &Channel,
    session: u32,
    path: &Path,
    stdin_name: &str,
    md5: bool,
    quiet: bool,
) -> Result<(), SendError> {
    phase::set(phase::INPUT, Some(path));
    let (input, size, meta) = open_input(path)?;
    phase::set(phase::IDLE, None);
    if runtime::stop_requested() {
        return Err(SendError::Interrupted(path.into()));
    }
    let name = if path.as_os_str() == "-" {
        stdin_name.as_bytes().to_vec()
    } else {
        path.file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_default()
    };
    let t = Instant::now();
    ch.send_request(&Request {
        op: Op::File,
        sender_pid: sysv::getpid(),
        size,
        md5,
        meta,
        name,
        session,
    })?;
    debug!(file = %escape_path(path), size, md5, "request posted (REQ +1); waiting for the receiver to accept (ACK -1)");
    let (file, answer) = await_answer(ch, path, None)?;
    if answer.status != Status::Accepted {
        return Err(refusal(path, answer));
    }
    let mut x = Transfer {
        ch,
        path,
        session,
        file,
        size,
        hash: md5.then(|| (md5::Context::new(), vec![0u8; ch.info.slot_size])),
        total: 0,
        seq: 0,
    };
    let mut progress = Progress::new(quiet, size, escape_path(path));
    let failure = loop {
        match x.next_chunk(&input)? {
            Step::More => progress.set(x.total),
            Step::Last(digest) => {
                drop(progress);
                return x.verdict(digest, t);
            }
            Step::Aborted(failure) => break failure,
        }
    };
    drop(progress);
    // We abandoned the file (or the receiver asked us to): its answer comes next.
    let (_, answer) = await_answer(ch, path, Some(file))?;
    match failure {
        Some(f) => Err(f),
        None => Err(refusal(path, answer)),
    }
}

enum Step {
    More,
    /// The last chunk is posted; the file's digest.
    Last([u8; 16]),
    /// An abort is posted: ours (with the error to report), or at the receiver's word.
    Aborted(Option<SendError>),
}

impl Transfer<'_> {
    /// Takes a free slot and posts the next chunk into it, or an abort: when a stop was
    /// asked for, the receiver flagged a failure, or the input failed or changed.
    fn next_chunk(&mut self, input: &File) -> Result<Step, SendError> {
        let slot = self.ch.free_slot(self.seq)?;
        let abort = if runtime::stop_requested() {
            Some((
                Abort::Interrupted,
                Some(SendError::Interrupted(self.path.into())),
            ))
        } else if self.ch.receiver_failure(self.file).is_some() {
            Some((Abort::ReceiverFailed, None))
        } else {
            phase::set(phase::INPUT, Some(self.path));
            match self.fill(slot, input) {
                Ok((n, last)) => {
                    phase::set(phase::IDLE, None);
                    return self.post_data(slot, n, last);
                }
                Err((why, e)) => Some((why, Some(e))),
            }
        };
        let (why, e) = abort.expect("every other path returned");
        phase::set(phase::IDLE, None);
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

    fn post_data(&mut self, slot: usize, n: usize, last: bool) -> Result<Step, SendError> {
        self.total += n as u64;
        trace!(seq = self.seq, n, last, "chunk filled");
        if !last {
            // Hand it over first, then hash our own copy while the receiver drains the slot.
            self.post(slot, n, DescKind::Data)?;
            if let Some((ctx, buf)) = self.hash.as_mut() {
                ctx.consume(&buf[..n]);
            }
            self.seq += 1;
            return Ok(Step::More);
        }
        let digest = self
            .hash
            .take()
            .map(|(mut c, buf)| {
                c.consume(&buf[..n]);
                c.finalize().0
            })
            .unwrap_or([0; 16]);
        self.ch.set_trailer(&Trailer {
            session: self.session,
            file: self.file,
            bytes: self.total,
            md5: digest,
        });
        phase::set(phase::VERDICT, Some(self.path));
        self.post(slot, n, DescKind::Last)?;
        debug!(bytes = self.total, md5 = %hex(&digest), "last chunk posted (FULL +1); waiting for the commit (ACK -1)");
        Ok(Step::Last(digest))
    }

    /// The receiver's verdict on a file whose last chunk is posted.
    fn verdict(&self, digest: [u8; 16], t: Instant) -> Result<(), SendError> {
        let (_, answer) = await_answer(self.ch, self.path, Some(self.file))?;
        phase::set(phase::IDLE, None);
        match answer.status {
            Status::Committed => {
                let secs = t.elapsed().as_secs_f64();
                debug!(
                    as_name = %crate::text::escape(&answer.name),
                    elapsed_ms = (secs * 1e3) as u64,
                    mib_per_s = (self.total as f64 / 1048576.0 / secs.max(1e-9)) as u64,
                    "committed (ACK -1)"
                );
                Ok(())
            }
            Status::Md5Mismatch => Err(SendError::Md5 {
                path: self.path.into(),
                ours: hex(&digest),
                theirs: hex(&answer.md5),
            }),
            _ => Err(refusal(self.path, answer)),
        }
    }

    /// Fills one slot from the input. Returns its length and whether it is the file's last
    /// chunk, or why the file must be abandoned: a read error, a stop, or a size other than
    /// the announced one.
    fn fill(&mut self, slot: usize, input: &File) -> Result<(usize, bool), (Abort, SendError)> {
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
        let n = match &mut self.hash {
            None => self.ch.fill_slot(slot, input, limit).map_err(read_error)?,
            Some((_, buf)) => {
                let n = read_full(input, &mut buf[..limit]).map_err(read_error)?;
                self.ch.put_slot(slot, &buf[..n]);
                n
            }
        };
        let done = self.total + n as u64;
        match self.size {
            Some(_) if n < limit => Err(changed(done)),
            // The announced size is reached: one more read tells whether the file grew.
            Some(s) if done == s => match read_full(input, &mut [0u8; 1]) {
                Ok(0) => Ok((n, true)),
                Ok(_) => Err(changed(done + 1)),
                Err(e) => Err(read_error(e)),
            },
            Some(_) => Ok((n, false)),
            // Streaming: a slot not filled to the brim means EOF (reads loop over short ones).
            None => Ok((n, n < limit)),
        }
    }
}

/// Reads until `buf` is full or EOF; EINTR is retried unless a stop was asked for.
fn read_full(mut input: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted && !runtime::stop_requested() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Waits for the receiver's answer; `file` is the file it must be about (None: the answer
/// to a request, which names the file the receiver assigned).
fn await_answer(
    ch: &Channel,
    path: &Path,
    file: Option<u32>,
) -> Result<(u32, frame::Outcome), SendError> {
    let bad = |source| SendError::BadAnswer {
        path: path.into(),
        source,
    };
    let (about, outcome) = ch.wait_answer()?;
    let outcome = outcome.map_err(bad)?;
    if file.is_some_and(|f| f != about) {
        return Err(bad(frame::HeaderError::Field {
            field: "answer's file number",
            value: about.into(),
        }));
    }
    Ok((about, outcome))
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
        status => SendError::Refused {
            path: path.into(),
            status,
        },
    }
}
