//! `shmxfer send`: stream each file through the channel's slot ring, and succeed only once the
//! receiver says it committed the file.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tracing::{debug, trace};

use crate::cli::SendArgs;
use crate::frame::{self, Abort, Channel, Chunk, FrameError, Meta, Op, Request, Status, hex};
use crate::progress::Progress;
use crate::{exit, sysv};

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{}: no such file", .0.display())]
    Missing(PathBuf),
    #[error("{}: permission denied", .0.display())]
    Unreadable(PathBuf),
    #[error("{}: is a directory; send the files in it, or `tar c DIR | shmxfer send -`", .0.display())]
    IsDir(PathBuf),
    #[error("{}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("{}: read failed: {source}; nothing was written", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: the file changed while it was sent ({announced} bytes announced, {read} read); nothing was written, send it again", path.display())]
    Changed {
        path: PathBuf,
        announced: u64,
        read: u64,
    },
    #[error("{}: MD5 mismatch: sent {ours}, the receiver got {theirs}; it discarded the file", path.display())]
    Md5 {
        path: PathBuf,
        ours: String,
        theirs: String,
    },
    #[error("{}: the receiver could not create its output file ({}): {}", path.display(), String::from_utf8_lossy(at), io::Error::from_raw_os_error(*errno))]
    CannotCreate {
        path: PathBuf,
        at: Vec<u8>,
        errno: i32,
    },
    #[error("{}: the receiver failed to write the file: {}; it discarded the partial file", path.display(), io::Error::from_raw_os_error(*errno))]
    WriteFailed { path: PathBuf, errno: i32 },
    #[error("{}: the receiver takes one file only (--once) and already has it; nothing was sent", .0.display())]
    Closed(PathBuf),
    #[error("{}: the receiver refused the transfer ({status:?})", path.display())]
    Refused { path: PathBuf, status: Status },
    #[error("{}: the receiver answered with a malformed header: {source}", path.display())]
    BadAnswer {
        path: PathBuf,
        source: frame::HeaderError,
    },
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
            Frame(e) => e.exit_code(),
        }
    }
    /// Whether the channel itself failed, so no later file can go either.
    fn is_fatal(&self) -> bool {
        matches!(self, SendError::Frame(_) | SendError::BadAnswer { .. })
    }
}

/// Set when the process is about to exit, so a second thread does not report the same failure.
static EXITING: AtomicBool = AtomicBool::new(false);
/// Set between admission and goodbye: a signal then tells the receiver before we leave.
static ADMITTED: AtomicBool = AtomicBool::new(false);
static CHANNEL: OnceLock<Arc<Channel>> = OnceLock::new();

fn claim_exit() -> bool {
    !EXITING.swap(true, Ordering::SeqCst)
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

    let _ = ctrlc::set_handler(|| {
        if claim_exit() {
            if let (true, Some(ch)) = (ADMITTED.load(Ordering::SeqCst), CHANNEL.get()) {
                let _ = ch.abort(Abort::Interrupted);
            }
            crate::error("interrupted; the receiver discards the partial file");
        }
        std::process::exit(exit::INTERRUPTED);
    });

    let ch = match connect(key, deadline) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            crate::error(&e);
            return e.exit_code();
        }
    };
    let _ = CHANNEL.set(ch.clone());
    watch_receiver(ch.clone());

    debug!(key = %key, "waiting for our turn: semop GATE -1, SENDER +1 (undo)");
    let t = Instant::now();
    if let Err(e) = ch.admit(deadline) {
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
    ADMITTED.store(true, Ordering::SeqCst);
    debug!(
        waited_ms = t.elapsed().as_millis() as u64,
        "admitted: took the gate"
    );

    let md5 = args.md5 || ch.info.require_md5;
    let mut code = exit::OK;
    for path in &args.files {
        match send_one(&ch, path, &args.name, md5, args.verbosity.quiet) {
            Ok(()) => {}
            Err(e) if e.is_fatal() => return fail(&e),
            Err(e) => {
                crate::error(&e);
                code = if code == exit::OK || code == e.exit_code() {
                    e.exit_code()
                } else {
                    exit::FAILURE
                };
            }
        }
    }
    EXITING.store(true, Ordering::SeqCst);
    match ch.send_bye() {
        // Every file is settled already; a receiver that left meanwhile (`--once`) is fine.
        Ok(()) | Err(FrameError::Removed { .. } | FrameError::ReceiverGone { .. }) => {}
        Err(e) => {
            crate::error(&e);
            return e.exit_code();
        }
    }
    ADMITTED.store(false, Ordering::SeqCst);
    debug!("said goodbye: semop SENDER -1 (undo), REQ +1; released the channel");
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

/// A sender may sit in read(2) on a slow pipe while the receiver dies; nothing in the main
/// thread would notice. This thread sleeps in the kernel until the receiver's liveness
/// semaphore drops (or the set is removed), and then ends the process with the reason.
fn watch_receiver(ch: Arc<Channel>) {
    std::thread::spawn(move || {
        ch.wait_receiver_gone();
        if claim_exit() {
            crate::error(FrameError::ReceiverGone {
                key: ch.key,
                pid: ch.info.receiver_pid,
            });
            std::process::exit(exit::UNAVAILABLE);
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

fn send_one(
    ch: &Channel,
    path: &Path,
    stdin_name: &str,
    md5: bool,
    quiet: bool,
) -> Result<(), SendError> {
    let (file, size, meta) = open_input(path)?;
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
    })?;
    debug!(file = %path.display(), size, md5, "request posted (REQ +1); waiting for the receiver to accept (ACK -1)");
    let answer = await_answer(ch, path)?;
    if answer.status != Status::Accepted {
        return Err(refusal(path, answer));
    }

    let mut ctx = md5.then(md5::Context::new);
    let mut progress = Progress::new(quiet, size, path.display().to_string());
    let mut total: u64 = 0;
    let mut index: u64 = 0;
    let mut failure: Option<SendError> = None;
    loop {
        let rs = ch.receiver_status();
        if rs != Status::Pending.code() && rs != Status::Accepted.code() {
            ch.abort(Abort::ReceiverFailed)?;
            break;
        }
        let slot = ch.free_slot(index)?;
        let (n, last) = match fill(ch, slot, &file, path, size, total) {
            Ok(v) => v,
            Err((why, e)) => {
                ch.abort(why)?;
                failure = Some(e);
                break;
            }
        };
        total += n as u64;
        progress.set(total);
        trace!(index, n, last, "chunk filled");
        if last {
            if let Some(c) = ctx.as_mut() {
                c.consume(ch.slot_bytes(slot, n));
            }
            let digest = ctx.take().map(|c| c.finalize().0).unwrap_or([0; 16]);
            ch.set_trailer(&digest, total);
            ch.post_chunk(slot, Chunk { len: n, last: true })?;
            debug!(bytes = total, md5 = %hex(&digest), "last chunk posted (FULL +1); waiting for the commit (ACK -1)");
            let answer = await_answer(ch, path)?;
            return match answer.status {
                Status::Committed => {
                    let secs = t.elapsed().as_secs_f64();
                    debug!(
                        as_name = %String::from_utf8_lossy(&answer.name),
                        elapsed_ms = (secs * 1e3) as u64,
                        mib_per_s = (total as f64 / 1048576.0 / secs.max(1e-9)) as u64,
                        "committed (ACK -1)"
                    );
                    Ok(())
                }
                Status::Md5Mismatch => Err(SendError::Md5 {
                    path: path.into(),
                    ours: hex(&digest),
                    theirs: hex(&answer.md5),
                }),
                _ => Err(refusal(path, answer)),
            };
        }
        // Not the last chunk: hand it over first, then hash it while the receiver drains it.
        // The slot is not reused before we ask for a free slot again, after hashing.
        ch.post_chunk(
            slot,
            Chunk {
                len: n,
                last: false,
            },
        )?;
        if let Some(c) = ctx.as_mut() {
            c.consume(ch.slot_bytes(slot, n));
        }
        index += 1;
    }
    // We abandoned the file (or the receiver did): collect its answer before the next one.
    let answer = await_answer(ch, path)?;
    match failure {
        Some(f) => Err(f),
        None => Err(refusal(path, answer)),
    }
}

/// Fills one slot from the input. Returns its length and whether it is the file's last chunk,
/// or why the file must be abandoned: a read error, or a size other than the announced one.
fn fill(
    ch: &Channel,
    slot: usize,
    file: &File,
    path: &Path,
    size: Option<u64>,
    total: u64,
) -> Result<(usize, bool), (Abort, SendError)> {
    let limit = match size {
        Some(s) => (s - total).min(ch.info.slot_size as u64) as usize,
        None => ch.info.slot_size,
    };
    let read_error = |source| {
        (
            Abort::ReadError,
            SendError::Read {
                path: path.into(),
                source,
            },
        )
    };
    let changed = |read| {
        let announced = size.unwrap_or(0);
        (
            Abort::FileChanged,
            SendError::Changed {
                path: path.into(),
                announced,
                read,
            },
        )
    };
    let n = ch.fill_slot(slot, file, limit).map_err(read_error)?;
    let done = total + n as u64;
    match size {
        Some(_) if n < limit => Err(changed(done)),
        Some(s) if done == s => {
            // The announced size is reached: one more read tells whether the file grew.
            match (&*file).read(&mut [0u8; 1]) {
                Ok(0) => Ok((n, true)),
                Ok(_) => Err(changed(done + 1)),
                Err(e) => Err(read_error(e)),
            }
        }
        Some(_) => Ok((n, false)),
        // Streaming: a slot not filled to the brim means EOF (fill_slot loops over short reads).
        None => Ok((n, n < limit)),
    }
}

fn await_answer(ch: &Channel, path: &Path) -> Result<frame::Outcome, SendError> {
    ch.wait_answer()?.map_err(|source| SendError::BadAnswer {
        path: path.into(),
        source,
    })
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
