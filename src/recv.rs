//! `shmxfer recv`: serve a channel; write each file to an unnamed temporary file in DIR and
//! name it only once it is whole (and verified).

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, trace};

use crate::cli::{DirectMode, RecvArgs};
use crate::frame::{
    self, Channel, Config, Desc, DescKind, FrameError, Op, Outcome, Probe, Request, STARTUP_GRACE,
    State, Status, hex,
};
use crate::output::{self, Namer, OutputError, TempFile};
use crate::progress::Progress;
use crate::sysv::Source;
use crate::text::escape;
use crate::{exit, runtime, sysv};

#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl RecvError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RecvError::Output(OutputError::Dir { .. } | OutputError::NotDir(_)) => exit::CANTCREAT,
            RecvError::Output(_) | RecvError::Usage(_) => exit::USAGE,
            RecvError::Frame(e) => e.exit_code(),
        }
    }
}

/// Why one file did not make it; the receiver reports it and goes on serving.
#[derive(Debug)]
enum FileFailure {
    /// Told the sender already; nothing more to do.
    Answered(Status, String),
    /// The channel failed underneath us (sender gone, objects removed, stop requested).
    Channel(FrameError),
}

impl From<FrameError> for FileFailure {
    fn from(e: FrameError) -> Self {
        FileFailure::Channel(e)
    }
}

struct Opts {
    keep_name: bool,
    preserve: bool,
    stdout: bool,
    fsync: bool,
    direct: DirectMode,
    quiet: bool,
    once: bool,
}

pub fn run(args: RecvArgs) -> i32 {
    crate::init_logging(&args.verbosity);
    if args.legacy {
        return crate::legacy::recv(&args);
    }
    match serve(args) {
        Ok(code) => code,
        Err(e) => {
            if !matches!(e, RecvError::Frame(FrameError::Interrupted)) {
                crate::error(&e);
            }
            e.exit_code()
        }
    }
}

/// A mode must leave the owner read and write: the receiver itself works through it.
pub fn check_mode(mode: u32) -> Result<(), RecvError> {
    if mode & 0o600 != 0o600 {
        return Err(RecvError::Usage(format!(
            "--mode {mode:04o} locks the receiver out of its own channel: give the owner read and write (0600, 0660 or 0666)"
        )));
    }
    Ok(())
}

/// The channel being served, for the stop handler (set once it exists).
static CHANNEL: OnceLock<Arc<Channel>> = OnceLock::new();

fn serve(args: RecvArgs) -> Result<i32, RecvError> {
    let key = args.channel.native_key().map_err(RecvError::Usage)?;
    check_mode(args.mode)?;
    let opts = Opts {
        keep_name: args.keep_name,
        preserve: args.preserve,
        stdout: args.stdout,
        fsync: args.fsync,
        direct: args.direct,
        quiet: args.verbosity.quiet,
        once: args.once || args.stdout,
    };
    // Before anything is created: a stop during setup then removes what was made.
    install_stop_handler();
    sysv::ignore_file_size_signal();
    take_key(key, opts.quiet)?;
    let mut namer = if args.stdout {
        None
    } else {
        Some(output::prepare(&args.dir, &args.basename, &args.ext)?)
    };
    let cfg = Config {
        mode: args.mode,
        slot_size: args.slot_size,
        slot_count: args.slots,
        require_md5: args.md5,
    };
    let ch = Arc::new(Channel::create(key, &cfg)?);
    let _owned = Owned(ch.clone());
    let _ = CHANNEL.set(ch.clone());
    if runtime::stop_requested() {
        return Err(FrameError::Interrupted.into());
    }
    debug!(key = %key, pid = sysv::getpid(), slots = cfg.slot_count, slot_size = cfg.slot_size, "channel created; serving");

    let mut tally = Served::default();
    for session in 1u32.. {
        ch.open_gate(session).map_err(stopped)?;
        debug!(
            session,
            "gate open (GATE +1); sleeping until a sender takes it (wait for GATE == 0)"
        );
        ch.wait_for_sender().map_err(stopped)?;
        ch.set_state(State::Busy);
        debug!(session, "a sender took the gate");
        serve_session(&ch, session, &opts, namer.as_mut(), &mut tally)?;
        if tally.closed(&opts) {
            ch.set_state(State::Stopping);
            return Ok(if tally.received > 0 {
                exit::OK
            } else {
                exit::IOERR
            });
        }
        // Whatever ended the session, the next sender comes in only after this one is gone.
        ch.wait_sender_gone().map_err(stopped)?;
    }
    unreachable!("2^32 sessions")
}

/// Files received and failed so far, for `--once`.
#[derive(Default)]
struct Served {
    received: u64,
    failed: bool,
}

impl Served {
    /// Whether the receiver takes no more files: `--once` has its file (or, onto stdout,
    /// its one attempt).
    fn closed(&self, opts: &Opts) -> bool {
        opts.once && (self.received > 0 || (opts.stdout && self.failed))
    }
}

/// Serves one sender's requests until it says goodbye or goes away.
fn serve_session(
    ch: &Channel,
    session: u32,
    opts: &Opts,
    mut namer: Option<&mut Namer>,
    tally: &mut Served,
) -> Result<(), RecvError> {
    let quiet = opts.quiet;
    let mut file = 0u32;
    loop {
        let req = match ch.next_request() {
            Ok(r) => r,
            Err(FrameError::SenderGone) => {
                crate::warn(quiet, "the sender went away before its next request");
                return Ok(());
            }
            Err(e) => return Err(stopped(e).into()),
        };
        let req = match req {
            Ok(r) if r.session == session => r,
            Ok(r) => {
                crate::warn(
                    quiet,
                    format_args!(
                        "a request of session {} in session {session}; refused",
                        r.session
                    ),
                );
                ch.answer(0, &refused(Status::BadRequest))
                    .map_err(stopped)?;
                continue;
            }
            Err(e) => {
                crate::warn(quiet, format_args!("malformed request: {e}; refused"));
                ch.answer(0, &refused(Status::BadRequest))
                    .map_err(stopped)?;
                continue;
            }
        };
        if req.op == Op::Bye {
            debug!("sender said goodbye");
            return Ok(());
        }
        file += 1;
        if tally.closed(opts) {
            ch.answer(file, &refused(Status::Closed)).map_err(stopped)?;
            continue;
        }
        let tags = Tags { session, file };
        match receive_one(ch, tags, &req, opts, namer.as_deref_mut()) {
            Ok(line) => {
                tally.received += 1;
                if !quiet {
                    if opts.stdout {
                        eprintln!("{line}");
                    } else {
                        crate::out_line(&line);
                    }
                }
            }
            Err(FileFailure::Answered(status, why)) => {
                tally.failed = true;
                crate::warn(
                    quiet,
                    format_args!("{}: {why} ({status:?}); discarded", display_name(&req.name)),
                );
            }
            Err(FileFailure::Channel(FrameError::SenderGone)) => {
                tally.failed = true;
                crate::warn(
                    quiet,
                    format_args!(
                        "{}: the sender went away mid-transfer; discarded",
                        display_name(&req.name)
                    ),
                );
                return Ok(());
            }
            Err(FileFailure::Channel(e)) => return Err(stopped(e).into()),
        }
    }
}

/// A wait that failed because we were asked to stop is an interruption, not an error.
fn stopped(e: FrameError) -> FrameError {
    if runtime::stop_requested() {
        FrameError::Interrupted
    } else {
        e
    }
}

/// Removes the channel when the receiver leaves, however it leaves.
struct Owned(Arc<Channel>);

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.set_state(State::Stopping);
        self.0.remove();
    }
}

/// On SIGINT/SIGTERM: set the stop flag and, once the channel exists, remove its semaphore
/// set, which wakes every wait of ours and of the sender at once (EIDRM). The main thread then
/// discards any partial file and removes the rest. If it has not managed within a few seconds
/// (stuck writing to a full pipe), a thread does that itself and ends the process.
fn install_stop_handler() {
    let _ = ctrlc::set_handler(|| {
        runtime::request_stop();
        if let Some(ch) = CHANNEL.get() {
            ch.set_state(State::Stopping);
            let _ = ch.sems.remove();
        }
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(3));
            if let Some(ch) = CHANNEL.get() {
                ch.remove();
            }
            output::remove_partial();
            std::process::exit(exit::INTERRUPTED);
        });
    });
}

/// Makes sure the key is free for us: absent, or a dead receiver's channel (removed with a
/// warning). A live receiver, or anything that is not a shmxfer channel, is left alone.
fn take_key(key: sysv::Key, quiet: bool) -> Result<(), RecvError> {
    // A receiver that is creating its channel right now has not written its magic yet; give it
    // a moment to finish (it then serves, and we are refused) before giving up.
    let started = Instant::now();
    loop {
        match frame::probe(key)? {
            Probe::Absent => return Ok(()),
            Probe::Channel {
                alive: true, info, ..
            } => {
                return Err(FrameError::InUse {
                    key,
                    pid: info.receiver_pid,
                }
                .into());
            }
            Probe::Channel {
                alive: false,
                info,
                shmid,
            } => {
                crate::warn(
                    quiet,
                    format_args!(
                        "the receiver of key {key} (pid {}) died; taking the key over",
                        info.receiver_pid
                    ),
                );
                frame::remove_channel(key, shmid, &info, false);
                return Ok(());
            }
            Probe::Abandoned { shmid, pid } => {
                crate::warn(
                    quiet,
                    format_args!(
                        "a receiver (pid {pid}) died setting up key {key}; taking the key over"
                    ),
                );
                frame::remove_abandoned(key, shmid, pid, false);
                return Ok(());
            }
            Probe::NoPermission { uid, mode, .. } => {
                return Err(FrameError::PermissionDenied {
                    key,
                    owner: sysv::user_name(uid),
                    mode,
                }
                .into());
            }
            Probe::Starting { pid, .. } if started.elapsed() > STARTUP_GRACE => {
                return Err(FrameError::Starting { key, pid }.into());
            }
            Probe::Foreign { why, .. } if started.elapsed() > Duration::from_millis(500) => {
                return Err(FrameError::Foreign { key, why }.into());
            }
            Probe::Foreign { .. } | Probe::Starting { .. } => {
                std::thread::sleep(Duration::from_millis(50))
            }
        }
    }
}

fn refused(status: Status) -> Outcome {
    Outcome {
        status,
        errno: 0,
        name: Vec::new(),
        md5: [0; 16],
        bytes: 0,
    }
}

fn display_name(name: &[u8]) -> String {
    if name.is_empty() {
        "(unnamed)".into()
    } else {
        escape(name)
    }
}

/// The session and file every message about the current file must carry.
#[derive(Clone, Copy, Debug)]
struct Tags {
    session: u32,
    file: u32,
}

/// Where one file's bytes go.
enum Sink {
    Temp(TempFile),
    Stdout(File),
}

impl Sink {
    fn open(opts: &Opts, namer: Option<&Namer>) -> io::Result<Sink> {
        match namer {
            Some(n) if !opts.stdout => TempFile::create(n.dir()).map(Sink::Temp),
            _ => Ok(Sink::Stdout(File::from(
                io::stdout().as_fd().try_clone_to_owned()?,
            ))),
        }
    }
    fn file(&mut self) -> &mut File {
        match self {
            Sink::Temp(t) => &mut t.file,
            Sink::Stdout(file) => file,
        }
    }
    /// How this sink's writes start: a pipe or terminal never goes direct.
    fn pacer(&self, mode: DirectMode) -> Pacer {
        match self {
            Sink::Temp(_) => Pacer::new(mode),
            Sink::Stdout(_) => Pacer::new(DirectMode::Never),
        }
    }
}

/// Receives one file. On success returns the line to print.
fn receive_one(
    ch: &Channel,
    tags: Tags,
    req: &Request,
    opts: &Opts,
    namer: Option<&mut Namer>,
) -> Result<String, FileFailure> {
    let t = Instant::now();
    let md5 = req.md5 || ch.info.require_md5;
    debug!(name = %display_name(&req.name), size = req.size, md5, sender = req.sender_pid, file = tags.file, "request");
    let mut sink = match Sink::open(opts, namer.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            let dir = namer.map(|n| n.dir().to_path_buf()).unwrap_or_default();
            let o = Outcome {
                status: Status::CannotCreate,
                errno: e.raw_os_error().unwrap_or(0),
                name: dir.as_os_str().as_bytes().to_vec(),
                md5: [0; 16],
                bytes: 0,
            };
            ch.answer(tags.file, &o)?;
            return Err(FileFailure::Answered(
                Status::CannotCreate,
                format!(
                    "cannot create a file in {}: {e}",
                    crate::text::escape_path(&dir)
                ),
            ));
        }
    };
    ch.begin_file(tags.file);
    ch.answer(tags.file, &refused(Status::Accepted))?;
    let mut progress = Progress::new(opts.quiet, req.size, display_name(&req.name));
    let result = drain(ch, tags, req, &mut sink, md5, opts.direct, &mut progress);
    drop(progress);
    let (total, digest) = result?;
    let fail = |status: Status, why: String| -> Result<String, FileFailure> {
        let o = Outcome {
            status,
            errno: 0,
            name: Vec::new(),
            md5: digest,
            bytes: total,
        };
        ch.answer(tags.file, &o)?;
        Err(FileFailure::Answered(status, why))
    };
    let trailer = ch.trailer();
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
    if md5 {
        debug!(ours = %hex(&digest), sender = %hex(&trailer.md5), "MD5 verified");
    }
    let name = match sink {
        Sink::Stdout(_) => PathBuf::from("-"),
        Sink::Temp(tmp) => match commit(tmp, req, opts, namer) {
            Ok(p) => p,
            Err(e) => {
                let o = Outcome {
                    status: Status::WriteFailed,
                    errno: e.raw_os_error().unwrap_or(0),
                    name: Vec::new(),
                    md5: digest,
                    bytes: total,
                };
                ch.answer(tags.file, &o)?;
                return Err(FileFailure::Answered(
                    Status::WriteFailed,
                    format!("commit failed: {e}"),
                ));
            }
        },
    };
    let shown = crate::text::escape_path(&name);
    ch.answer(
        tags.file,
        &Outcome {
            status: Status::Committed,
            errno: 0,
            name: name.as_os_str().as_bytes().to_vec(),
            md5: digest,
            bytes: total,
        },
    )?;
    debug!(path = %shown, bytes = total, elapsed_ms = t.elapsed().as_millis() as u64, "committed; answered (ACK +1)");
    Ok(if md5 {
        format!("{shown}\t{total}\t{}", hex(&digest))
    } else {
        format!("{shown}\t{total}")
    })
}

/// Applies metadata, optionally syncs, and names the temporary file without ever replacing
/// an existing file.
fn commit(
    mut tmp: TempFile,
    req: &Request,
    opts: &Opts,
    namer: Option<&mut Namer>,
) -> io::Result<PathBuf> {
    if let (true, Some(m)) = (opts.preserve, req.meta) {
        // Never create set-id files for a peer we do not know: permission bits only.
        tmp.file
            .set_permissions(std::fs::Permissions::from_mode(m.mode & 0o777))?;
        let t = if m.mtime_sec >= 0 {
            SystemTime::UNIX_EPOCH + Duration::new(m.mtime_sec as u64, m.mtime_nsec)
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(m.mtime_sec.unsigned_abs())
                + Duration::from_nanos(m.mtime_nsec.into())
        };
        tmp.file.set_modified(t)?;
    }
    if opts.fsync {
        tmp.file.sync_all()?;
    }
    let namer = namer.expect("a file sink always has a namer");
    let kept = if opts.keep_name {
        output::safe_name(&req.name)
    } else {
        None
    };
    let path = namer.commit(&mut tmp, kept.as_ref())?;
    if opts.fsync {
        File::open(namer.dir())?.sync_all()?;
    }
    Ok(path)
}

/// How the chunk loop ended: at the file's last chunk, or at the sender's abort.
enum End {
    Complete,
    SenderAborted(u32),
}

/// Picks the write path of one file: the page cache, or around it with O_DIRECT
/// (`--direct=WHEN`). In `auto` a file starts in the page cache, as with cp. When a window of
/// whole-slot writes runs slower than 2 GB/s (well under memory speed, so page allocation
/// costs more than the copy: a VM whose host takes freed memory back, or dirty-page
/// throttling), the next few slots go O_DIRECT as a probe, and the rest of the file goes direct
/// if the probe ran at least 1.25 times as fast. A lost probe (a slow disk, or one unlucky
/// write) is tried again only after 32 MiB, then 64, 128…, so it costs little either way.
/// Pure: fed lengths and times, unit-tested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pacer {
    /// Page cache, timing whole-slot writes; `skip` bytes go untimed first (after `losses`
    /// lost probes).
    Watching {
        page_cache: Tally,
        skip: u64,
        losses: u32,
    },
    /// Direct writes being timed, to be compared with the page-cache window that triggered
    /// the probe.
    Probing {
        page_cache: Tally,
        direct: Tally,
        losses: u32,
    },
    /// O_DIRECT for the rest of the file (or until a write cannot be aligned).
    Direct,
    /// Page cache for the rest of the file.
    Buffered,
}

/// Bytes written and the nanoseconds they took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    bytes: u64,
    nanos: u64,
}

impl Tally {
    fn add(self, bytes: u64, nanos: u64) -> Tally {
        Tally {
            bytes: self.bytes + bytes,
            nanos: self.nanos.saturating_add(nanos),
        }
    }
    /// Whether this ran at least `num/den` times as fast as `other`, in integers.
    fn faster(self, other: Tally, num: u128, den: u128) -> bool {
        den * u128::from(self.bytes) * u128::from(other.nanos)
            >= num * u128::from(other.bytes) * u128::from(self.nanos)
    }
    fn mb_per_s(self) -> u64 {
        (u128::from(self.bytes) * 1000 / u128::from(self.nanos.max(1))) as u64
    }
}

impl Pacer {
    /// Page-cache bytes timed before judging: long enough to average out one descheduling.
    const WINDOW: u64 = 8 << 20;
    /// Direct bytes timed before judging: the first direct write pays for more than its share.
    const PROBE: u64 = 4 << 20;
    /// Page-cache bytes written after a first lost probe before the next; doubles each time.
    const BACKOFF: u64 = 32 << 20;
    /// Below this the page cache is slow: 2 GB/s, 2 bytes per nanosecond.
    const SLOW: Tally = Tally { bytes: 2, nanos: 1 };

    fn new(mode: DirectMode) -> Self {
        match mode {
            DirectMode::Auto => Self::watching(0, 0),
            DirectMode::Always => Pacer::Direct,
            DirectMode::Never => Pacer::Buffered,
        }
    }

    fn watching(skip: u64, losses: u32) -> Self {
        Pacer::Watching {
            page_cache: Tally::default(),
            skip,
            losses,
        }
    }

    /// Whether the next write goes direct; `fits` says it meets O_DIRECT's alignment. A write
    /// that does not fit is the file's tail or an odd slot size: the rest stays buffered.
    fn wants_direct(&mut self, fits: bool) -> bool {
        if !fits {
            *self = Pacer::Buffered;
        }
        matches!(self, Pacer::Probing { .. } | Pacer::Direct)
    }

    /// Accounts one write of `len` bytes that took `ns`, made the way `wants_direct` said.
    fn record(&mut self, len: u64, ns: u64) {
        *self = match *self {
            Pacer::Watching { skip, losses, .. } if skip > 0 => {
                Self::watching(skip.saturating_sub(len), losses)
            }
            Pacer::Watching {
                page_cache, losses, ..
            } => {
                let page_cache = page_cache.add(len, ns);
                if page_cache.bytes < Self::WINDOW {
                    Pacer::Watching {
                        page_cache,
                        skip: 0,
                        losses,
                    }
                } else if !page_cache.faster(Self::SLOW, 1, 1) {
                    let direct = Tally::default();
                    Pacer::Probing {
                        page_cache,
                        direct,
                        losses,
                    }
                } else {
                    // Fast so far; memory can turn dear mid-file, so keep watching.
                    Self::watching(0, losses)
                }
            }
            Pacer::Probing {
                page_cache,
                direct,
                losses,
            } => {
                let direct = direct.add(len, ns);
                if direct.bytes < Self::PROBE {
                    Pacer::Probing {
                        page_cache,
                        direct,
                        losses,
                    }
                } else if direct.faster(page_cache, 5, 4) {
                    Pacer::Direct
                } else {
                    Self::watching(Self::BACKOFF << losses.min(16), losses + 1)
                }
            }
            settled => settled,
        };
    }

    /// The filesystem refused O_DIRECT: page cache for the rest of the file.
    fn refused(&mut self) {
        *self = Pacer::Buffered;
    }
}

/// The output file, written through the page cache or around it as its `Pacer` decides.
struct PacedFile<'a> {
    file: &'a mut File,
    pacer: Pacer,
    /// O_DIRECT is set on the descriptor.
    direct: bool,
    /// Bytes written so far: the file offset, which O_DIRECT needs aligned too.
    offset: u64,
}

impl<'a> PacedFile<'a> {
    fn new(file: &'a mut File, pacer: Pacer) -> Self {
        PacedFile {
            file,
            pacer,
            direct: false,
            offset: 0,
        }
    }

    fn write_all(&mut self, src: Source) -> io::Result<()> {
        let aligned = |n: u64| n.is_multiple_of(sysv::DIRECT_ALIGN as u64);
        let len = src.len();
        let fits =
            src.is_aligned(sysv::DIRECT_ALIGN) && aligned(len as u64) && aligned(self.offset);
        let want = self.pacer.wants_direct(fits);
        if want != self.direct {
            match sysv::set_direct(self.file, want) {
                Ok(()) => self.direct = want,
                // A filesystem without O_DIRECT says EINVAL here.
                Err(_) if want => self.pacer.refused(),
                Err(e) => return Err(e),
            }
        }
        let before = self.pacer;
        let t = Instant::now();
        let mut done = 0;
        while done < len {
            match src.write_once(self.file, done) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Some filesystems take F_SETFL O_DIRECT and refuse the write itself; a short
                // direct write leaves the rest unaligned. Either way the page cache takes over.
                Err(e) if self.direct && e.kind() == io::ErrorKind::InvalidInput => {
                    sysv::set_direct(self.file, false)?;
                    self.direct = false;
                    self.pacer.refused();
                }
                Err(e) => return Err(e),
            }
        }
        self.offset += len as u64;
        let nanos = t.elapsed().as_nanos() as u64;
        self.pacer.record(len as u64, nanos);
        match (before, self.pacer) {
            (Pacer::Watching { .. }, Pacer::Probing { page_cache, .. }) => debug!(
                page_cache_mb_s = page_cache.mb_per_s(),
                offset = self.offset,
                "page cache is slow; probing O_DIRECT"
            ),
            (Pacer::Probing { direct, .. }, after) if !matches!(after, Pacer::Probing { .. }) => {
                debug!(
                    direct_mb_s = direct.add(len as u64, nanos).mb_per_s(),
                    direct = after == Pacer::Direct,
                    "O_DIRECT probed"
                )
            }
            _ => {}
        }
        Ok(())
    }
}

/// Writes slots to the output. The first write error is kept and the rest of the file is
/// still taken (not written), so the sender is never left blocked; it is told to stop through
/// the status field.
struct Writer<'a> {
    ch: &'a Channel,
    out: PacedFile<'a>,
    error: Option<io::Error>,
}

impl Writer<'_> {
    fn put(&mut self, src: Source) {
        if self.error.is_none()
            && let Err(e) = self.out.write_all(src)
        {
            self.ch.flag_failure(Status::WriteFailed);
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
        let v = vec![0u8; len + sysv::DIRECT_ALIGN];
        let at = v.as_ptr().align_offset(sysv::DIRECT_ALIGN);
        SlotBuf { v, at, len }
    }
    fn get(&mut self, n: usize) -> &mut [u8] {
        &mut self.v[self.at..self.at + n.min(self.len)]
    }
}

/// The chunk loop's state for one file: its tags, what arrived, and the first failure met
/// (after which the rest of the file is taken but not written, until its end marker).
struct Drain<'a> {
    ch: &'a Channel,
    tags: Tags,
    size: Option<u64>,
    total: u64,
    failure: Option<(Status, String)>,
}

impl Drain<'_> {
    fn fail(&mut self, status: Status, why: String) {
        if self.failure.is_none() {
            self.ch.flag_failure(status);
            self.failure = Some((status, why));
        }
    }

    /// Takes the file's descriptors in ring order until its last chunk or its abort. Every
    /// descriptor taken is balanced by a slot handed back, so when this returns the ring is
    /// empty and the next file starts clean. `each` gets each good chunk's slot and length
    /// and must hand the slot back; anything else is handed back here.
    fn run(
        &mut self,
        progress: &mut Progress,
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
            progress.set(self.total);
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
fn buffer_count(ch: &Channel) -> usize {
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
    ch: &Channel,
    tags: Tags,
    req: &Request,
    sink: &mut Sink,
    md5: bool,
    direct: DirectMode,
    progress: &mut Progress,
) -> Result<(u64, [u8; 16]), FileFailure> {
    let mut d = Drain {
        ch,
        tags,
        size: req.size,
        total: 0,
        failure: None,
    };
    let pacer = sink.pacer(direct);
    let mut writer = Writer {
        ch,
        out: PacedFile::new(sink.file(), pacer),
        error: None,
    };
    let mut ctx = md5.then(md5::Context::new);
    let one_slot = req.size.is_some_and(|s| s <= ch.info.slot_size as u64);
    let end = match ctx.as_mut() {
        None => d.run(progress, |slot, n, total| {
            writer.put(ch.slot_source(slot, n));
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
    ch: &Channel,
    d: &mut Drain,
    progress: &mut Progress,
    ctx: &mut md5::Context,
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
    ch: &Channel,
    d: Drain,
    write_error: Option<io::Error>,
    end: End,
    ctx: Option<md5::Context>,
) -> Result<(u64, [u8; 16]), FileFailure> {
    let total = d.total;
    let answer = |status: Status, errno: i32, why: String| -> Result<_, FileFailure> {
        let o = Outcome {
            status,
            errno,
            name: Vec::new(),
            md5: [0; 16],
            bytes: total,
        };
        ch.answer(d.tags.file, &o)?;
        Err(FileFailure::Answered(status, why))
    };
    if let Some(e) = write_error {
        let errno = e.raw_os_error().unwrap_or(libc::EIO);
        return answer(Status::WriteFailed, errno, format!("write failed: {e}"));
    }
    if let Some((status, why)) = d.failure {
        return answer(status, 0, why);
    }
    match end {
        End::Complete => Ok((total, ctx.map(|c| c.finalize().0).unwrap_or([0; 16]))),
        End::SenderAborted(code) => {
            let why = match code {
                1 => "the sender was interrupted",
                2 => "the sender could not read its file",
                3 => "the file changed while it was sent",
                _ => "the sender aborted",
            };
            answer(Status::Aborted, 0, why.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Feeds `slots` whole-slot writes of 1 MiB, each taking `nanos`.
    fn feed(p: &mut Pacer, slots: u64, nanos: u64) -> Vec<bool> {
        (0..slots)
            .map(|_| {
                let direct = p.wants_direct(true);
                p.record(MIB, nanos);
                direct
            })
            .collect()
    }

    #[test]
    fn auto_stays_in_the_page_cache_while_it_runs_at_memory_speed() {
        let mut p = Pacer::new(DirectMode::Auto);
        // 0.2 ms per MiB: 5 GB/s, what a page-cache copy costs on a host.
        assert!(feed(&mut p, 64, 200_000).iter().all(|d| !d));
        assert!(matches!(p, Pacer::Watching { losses: 0, .. }));
    }

    #[test]
    fn auto_probes_a_slow_page_cache_and_goes_direct_when_the_probe_is_faster() {
        let mut p = Pacer::new(DirectMode::Auto);
        // 2.4 ms per MiB: the page cache on memory the host took back.
        assert!(feed(&mut p, 8, 2_400_000).iter().all(|d| !d));
        assert!(matches!(p, Pacer::Probing { .. }));
        // The probe's slots take 0.5 ms each: direct from here on, whatever it then costs.
        assert_eq!(feed(&mut p, 4, 500_000), [true; 4]);
        assert_eq!(p, Pacer::Direct);
        assert!(feed(&mut p, 4, 9_000_000).iter().all(|d| *d));
    }

    #[test]
    fn auto_keeps_the_page_cache_when_direct_is_no_faster() {
        let mut p = Pacer::new(DirectMode::Auto);
        feed(&mut p, 8, 2_000_000);
        // A slow disk: the direct probe takes 10 ms a slot.
        assert_eq!(feed(&mut p, 4, 10_000_000), [true; 4]);
        // Probes again only after 32 MiB, then after 64 MiB: one slot in ten at most.
        let d = feed(&mut p, 32 + 8, 2_000_000);
        assert!(d.iter().all(|d| !d));
        assert_eq!(feed(&mut p, 4, 10_000_000), [true; 4]);
        assert!(feed(&mut p, 64 + 7, 2_000_000).iter().all(|d| !d));
        assert!(matches!(p, Pacer::Watching { losses: 2, .. }));
        // A little faster is not enough: leaving the page cache must pay for itself.
        let mut p = Pacer::new(DirectMode::Auto);
        feed(&mut p, 8, 2_000_000);
        feed(&mut p, 4, 1_700_000);
        assert!(matches!(p, Pacer::Watching { losses: 1, .. }));
    }

    #[test]
    fn auto_judges_each_window_afresh_so_a_late_slowdown_is_caught() {
        let mut p = Pacer::new(DirectMode::Auto);
        feed(&mut p, 100, 200_000);
        // Within two windows of slow writes it probes.
        let slow = (1..=16).find(|_| {
            feed(&mut p, 1, 3_000_000);
            matches!(p, Pacer::Probing { .. })
        });
        assert!(slow.is_some(), "{p:?}");
    }

    #[test]
    fn a_write_that_cannot_be_aligned_ends_direct_writes_for_the_file() {
        let mut p = Pacer::new(DirectMode::Always);
        assert!(p.wants_direct(true));
        assert!(!p.wants_direct(false));
        assert!(!p.wants_direct(true));
        let mut p = Pacer::new(DirectMode::Always);
        p.refused();
        assert!(!p.wants_direct(true));
        let mut p = Pacer::new(DirectMode::Never);
        assert!(feed(&mut p, 32, 50_000_000).iter().all(|d| !d));
    }

    /// A page-aligned buffer of `len` bytes of a pattern, as a slot would be.
    fn aligned_pattern(len: usize, seed: u8) -> (Vec<u8>, usize) {
        let mut v = vec![0u8; len + sysv::DIRECT_ALIGN];
        let at = v.as_ptr().align_offset(sysv::DIRECT_ALIGN);
        for (i, b) in v[at..at + len].iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
        }
        (v, at)
    }

    #[test]
    fn a_file_switched_to_direct_mid_way_is_byte_identical() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut file = File::create(&path).unwrap();
        let mut expected = Vec::new();
        {
            // Forced into a probe that wins: page cache, then direct, then a buffered tail.
            let mut out = PacedFile::new(&mut file, Pacer::new(DirectMode::Auto));
            for seed in 0..3u8 {
                let (v, at) = aligned_pattern(64 << 10, seed);
                out.write_all(Source::Own(&v[at..at + (64 << 10)])).unwrap();
                expected.extend_from_slice(&v[at..at + (64 << 10)]);
            }
            out.pacer = Pacer::Probing {
                page_cache: Tally {
                    bytes: Pacer::WINDOW,
                    nanos: u64::MAX / 8,
                },
                direct: Tally {
                    bytes: Pacer::PROBE,
                    nanos: 0,
                },
                losses: 0,
            };
            for seed in 3..6u8 {
                let (v, at) = aligned_pattern(64 << 10, seed);
                out.write_all(Source::Own(&v[at..at + (64 << 10)])).unwrap();
                expected.extend_from_slice(&v[at..at + (64 << 10)]);
            }
            // The filesystem of the target dir may not take O_DIRECT; then all went buffered.
            assert!(out.pacer == Pacer::Direct || out.pacer == Pacer::Buffered);
            let (v, at) = aligned_pattern(5000, 9);
            out.write_all(Source::Own(&v[at..at + 5000])).unwrap();
            expected.extend_from_slice(&v[at..at + 5000]);
            assert_eq!(out.pacer, Pacer::Buffered);
            assert!(!out.direct);
        }
        drop(file);
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }
}
