//! `shmxfer recv`: serve a channel; write each file to a hidden temporary file in DIR and
//! rename it into place only once it is whole (and verified).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, trace};

use crate::cli::{DirectMode, RecvArgs};
use crate::frame::{
    self, Channel, ChunkError, Config, FrameError, Op, Outcome, Probe, Request, STARTUP_GRACE,
    State, Status, hex,
};
use crate::progress::Progress;
use crate::{exit, sysv};

#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    #[error("cannot create output directory {}: {source}", dir.display())]
    Dir { dir: PathBuf, source: io::Error },
    #[error("--basename must be a plain name without `/`")]
    BadBasename,
    #[error("--ext must not contain `/`")]
    BadExt,
    #[error("{0}")]
    Usage(String),
    #[error("the receiver of key {key} (pid {pid}) died; taking the key over")]
    Takeover { key: sysv::Key, pid: i32 },
    #[error(transparent)]
    Frame(#[from] FrameError),
}

impl RecvError {
    pub fn exit_code(&self) -> i32 {
        match self {
            RecvError::Dir { .. } => exit::CANTCREAT,
            RecvError::BadBasename | RecvError::BadExt | RecvError::Usage(_) => exit::USAGE,
            RecvError::Takeover { .. } => exit::OK,
            RecvError::Frame(e) => e.exit_code(),
        }
    }
}

/// Why one file did not make it; the receiver reports it and goes on serving.
#[derive(Debug)]
enum FileFailure {
    /// Told the sender already; nothing more to do.
    Answered(Status, String),
    /// The sender aborted because it is exiting (signal): its session is over.
    Leaving(String),
    /// The channel failed underneath us (sender gone, objects removed, stop requested).
    Channel(FrameError),
}

impl From<FrameError> for FileFailure {
    fn from(e: FrameError) -> Self {
        FileFailure::Channel(e)
    }
}

/// Temporary file of the transfer in flight, for the signal path to remove if the main thread
/// cannot get there in time.
static PARTIAL: Mutex<Option<PathBuf>> = Mutex::new(None);

struct Opts {
    dir: PathBuf,
    keep_name: bool,
    preserve: bool,
    stdout: bool,
    fsync: bool,
    direct: DirectMode,
    quiet: bool,
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

/// Creates DIR and the namer that picks output names in it; shared with `--legacy`.
pub fn prepare_output(dir: &Path, basename: &str, ext: &str) -> Result<Namer, RecvError> {
    if basename.is_empty() || basename.contains('/') {
        return Err(RecvError::BadBasename);
    }
    if ext.contains('/') {
        return Err(RecvError::BadExt);
    }
    fs::create_dir_all(dir).map_err(|source| RecvError::Dir {
        dir: dir.into(),
        source,
    })?;
    remove_dead_partials(dir);
    let ext = if ext.is_empty() || ext.starts_with('.') {
        ext.to_string()
    } else {
        format!(".{ext}")
    };
    Namer::scan(dir, basename, &ext).map_err(|source| RecvError::Dir {
        dir: dir.into(),
        source,
    })
}

fn serve(args: RecvArgs) -> Result<i32, RecvError> {
    let key = args.channel.native_key().map_err(RecvError::Usage)?;
    let once = args.once || args.stdout;
    let quiet = args.verbosity.quiet;
    let mut namer = if args.stdout {
        None
    } else {
        Some(prepare_output(&args.dir, &args.basename, &args.ext)?)
    };
    let opts = Opts {
        dir: args.dir.clone(),
        keep_name: args.keep_name,
        preserve: args.preserve,
        stdout: args.stdout,
        fsync: args.fsync,
        direct: args.direct,
        quiet,
    };

    sysv::ignore_file_size_signal();
    take_key(key, quiet)?;
    let cfg = Config {
        mode: args.mode,
        slot_size: args.slot_size,
        slot_count: args.slots,
        require_md5: args.md5,
    };
    let ch = Arc::new(Channel::create(key, &cfg)?);
    let _owned = Owned(ch.clone());
    install_stop_handler(ch.clone());
    debug!(key = %key, pid = sysv::getpid(), slots = cfg.slot_count, slot_size = cfg.slot_size, "channel created; serving");

    let mut received = 0u64;
    let mut failed = false;
    loop {
        ch.open_gate().map_err(stopped)?;
        debug!("gate open (GATE +1); sleeping until a sender takes it (wait for GATE == 0)");
        ch.wait_for_sender().map_err(stopped)?;
        ch.set_state(State::Busy);
        debug!("a sender took the gate");
        loop {
            let req = match ch.next_request() {
                Ok(r) => r,
                Err(FrameError::SenderGone) => {
                    crate::warn(quiet, "the sender went away before its next request");
                    break;
                }
                Err(e) => return Err(stopped(e).into()),
            };
            let req = match req {
                Ok(r) => r,
                Err(e) => {
                    crate::warn(quiet, format_args!("malformed request: {e}; refused"));
                    ch.answer(&refused(Status::BadRequest)).map_err(stopped)?;
                    continue;
                }
            };
            if req.op == Op::Bye {
                debug!("sender said goodbye");
                break;
            }
            if once && (received > 0 || (opts.stdout && failed)) {
                ch.answer(&refused(Status::Closed)).map_err(stopped)?;
                continue;
            }
            match receive_one(&ch, &req, &opts, namer.as_mut()) {
                Ok(line) => {
                    received += 1;
                    if !quiet {
                        if opts.stdout {
                            eprintln!("{line}");
                        } else {
                            crate::out_line(&line);
                        }
                    }
                }
                Err(FileFailure::Answered(status, why)) => {
                    failed = true;
                    crate::warn(
                        quiet,
                        format_args!("{}: {why} ({status:?}); discarded", display_name(&req.name)),
                    );
                }
                Err(FileFailure::Leaving(why)) => {
                    failed = true;
                    crate::warn(
                        quiet,
                        format_args!("{}: {why}; discarded", display_name(&req.name)),
                    );
                    break;
                }
                Err(FileFailure::Channel(FrameError::SenderGone)) => {
                    failed = true;
                    crate::warn(
                        quiet,
                        format_args!(
                            "{}: the sender went away mid-transfer; discarded",
                            display_name(&req.name)
                        ),
                    );
                    break;
                }
                Err(FileFailure::Channel(e)) => return Err(stopped(e).into()),
            }
        }
        if once && (received > 0 || (opts.stdout && failed)) {
            ch.set_state(State::Stopping);
            return Ok(if received > 0 { exit::OK } else { exit::IOERR });
        }
        // Whatever ended the session, the next sender comes in only after this one is gone.
        ch.wait_sender_gone().map_err(stopped)?;
    }
}

/// A wait that failed because we were asked to stop is an interruption, not an error.
fn stopped(e: FrameError) -> FrameError {
    if crate::stop_requested() {
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

/// On SIGINT/SIGTERM: flag the stop and remove the semaphore set, which wakes every wait of
/// ours and of the sender at once (EIDRM). The main thread then discards any partial file and
/// removes the rest. If it has not managed within a few seconds (stuck writing to a full
/// pipe), this thread does that itself and ends the process.
fn install_stop_handler(ch: Arc<Channel>) {
    let _ = ctrlc::set_handler(move || {
        crate::request_stop();
        ch.set_state(State::Stopping);
        let _ = ch.sems.remove();
        std::thread::sleep(Duration::from_secs(3));
        ch.remove();
        if let Some(p) = PARTIAL.lock().ok().and_then(|g| g.clone()) {
            let _ = fs::remove_file(p);
        }
        std::process::exit(exit::INTERRUPTED);
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
                    RecvError::Takeover {
                        key,
                        pid: info.receiver_pid,
                    },
                );
                frame::remove_channel(key, shmid, &info, false);
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
        String::from_utf8_lossy(name).escape_debug().to_string()
    }
}

/// Where one file's bytes go.
enum Sink {
    Temp { file: File, path: PathBuf },
    Stdout(File),
}

impl Sink {
    fn file(&mut self) -> &mut File {
        match self {
            Sink::Temp { file, .. } | Sink::Stdout(file) => file,
        }
    }
    /// How this sink's writes start: a pipe or terminal never goes direct.
    fn pacer(&self, mode: DirectMode) -> Pacer {
        match self {
            Sink::Temp { .. } => Pacer::new(mode),
            Sink::Stdout(_) => Pacer::new(DirectMode::Never),
        }
    }
    fn discard(self) {
        if let Sink::Temp { path, .. } = self {
            let _ = fs::remove_file(&path);
            set_partial(None);
        }
    }
}

fn set_partial(p: Option<PathBuf>) {
    if let Ok(mut g) = PARTIAL.lock() {
        *g = p;
    }
}

fn open_sink(opts: &Opts) -> io::Result<Sink> {
    if opts.stdout {
        return Ok(Sink::Stdout(File::from(
            io::stdout().as_fd().try_clone_to_owned()?,
        )));
    }
    let mut n = 0u32;
    loop {
        let path = opts
            .dir
            .join(format!(".shmxfer-{}-{n}.part", sysv::getpid()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(&path)
        {
            Ok(file) => {
                set_partial(Some(path.clone()));
                return Ok(Sink::Temp { file, path });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Receives one file. On success returns the line to print.
fn receive_one(
    ch: &Channel,
    req: &Request,
    opts: &Opts,
    namer: Option<&mut Namer>,
) -> Result<String, FileFailure> {
    let t = Instant::now();
    let md5 = req.md5 || ch.info.require_md5;
    debug!(name = %display_name(&req.name), size = req.size, md5, sender = req.sender_pid, "request");
    let mut sink = match open_sink(opts) {
        Ok(s) => s,
        Err(e) => {
            let at = opts.dir.as_os_str().as_bytes().to_vec();
            let o = Outcome {
                status: Status::CannotCreate,
                errno: e.raw_os_error().unwrap_or(0),
                name: at,
                md5: [0; 16],
                bytes: 0,
            };
            ch.answer(&o)?;
            return Err(FileFailure::Answered(
                Status::CannotCreate,
                format!("cannot create a file in {}: {e}", opts.dir.display()),
            ));
        }
    };
    ch.answer(&refused(Status::Accepted))?;
    let mut progress = Progress::new(opts.quiet, req.size, display_name(&req.name));
    let result = drain(ch, req, &mut sink, md5, opts.direct, &mut progress);
    drop(progress);
    let (total, digest) = match result {
        Ok(v) => v,
        Err(f) => {
            sink.discard();
            return Err(f);
        }
    };
    let fail = |sink: Sink,
                status: Status,
                errno: i32,
                md5: [u8; 16],
                why: String|
     -> Result<String, FileFailure> {
        sink.discard();
        ch.answer(&Outcome {
            status,
            errno,
            name: Vec::new(),
            md5,
            bytes: total,
        })?;
        Err(FileFailure::Answered(status, why))
    };
    let (their_md5, their_count) = ch.sender_trailer();
    if req.size.is_some_and(|s| s != total) || their_count != total {
        return fail(
            sink,
            Status::LengthMismatch,
            0,
            digest,
            format!(
                "received {total} bytes, the sender announced {:?}/{their_count}",
                req.size
            ),
        );
    }
    if md5 && digest != their_md5 {
        return fail(
            sink,
            Status::Md5Mismatch,
            0,
            digest,
            format!(
                "MD5 mismatch: got {}, sender has {}",
                hex(&digest),
                hex(&their_md5)
            ),
        );
    }
    if md5 {
        debug!(ours = %hex(&digest), sender = %hex(&their_md5), "MD5 verified");
    }
    let name = match sink {
        Sink::Stdout(_) => "-".into(),
        Sink::Temp { file, path, .. } => match commit(file, &path, req, opts, namer) {
            Ok(p) => {
                set_partial(None);
                p
            }
            Err(e) => {
                let _ = fs::remove_file(&path);
                set_partial(None);
                let errno = e.raw_os_error().unwrap_or(0);
                ch.answer(&Outcome {
                    status: Status::WriteFailed,
                    errno,
                    name: Vec::new(),
                    md5: digest,
                    bytes: total,
                })?;
                return Err(FileFailure::Answered(
                    Status::WriteFailed,
                    format!("commit failed: {e}"),
                ));
            }
        },
    };
    let shown = name.display().to_string();
    ch.answer(&Outcome {
        status: Status::Committed,
        errno: 0,
        name: name.as_os_str().as_bytes().to_vec(),
        md5: digest,
        bytes: total,
    })?;
    debug!(path = %shown, bytes = total, elapsed_ms = t.elapsed().as_millis() as u64, "committed; answered (ACK +1)");
    Ok(if md5 {
        format!("{shown}\t{total}\t{}", hex(&digest))
    } else {
        format!("{shown}\t{total}")
    })
}

/// How the chunk loop ended, before anything is answered.
enum End {
    Complete,
    SenderAborted(u32),
    BadChunk(frame::HeaderError),
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

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let aligned = |n: u64| n.is_multiple_of(sysv::DIRECT_ALIGN as u64);
        let fits =
            aligned(bytes.as_ptr() as u64) && aligned(bytes.len() as u64) && aligned(self.offset);
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
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.file.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = &rest[n..],
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
        self.offset += bytes.len() as u64;
        let nanos = t.elapsed().as_nanos() as u64;
        self.pacer.record(bytes.len() as u64, nanos);
        match (before, self.pacer) {
            (Pacer::Watching { .. }, Pacer::Probing { page_cache, .. }) => debug!(
                page_cache_mb_s = page_cache.mb_per_s(),
                offset = self.offset,
                "page cache is slow; probing O_DIRECT"
            ),
            (Pacer::Probing { direct, .. }, after) if !matches!(after, Pacer::Probing { .. }) => {
                debug!(
                    direct_mb_s = direct.add(bytes.len() as u64, nanos).mb_per_s(),
                    direct = after == Pacer::Direct,
                    "O_DIRECT probed"
                )
            }
            _ => {}
        }
        Ok(())
    }
}

/// Writes slots to the output and hands each back to the sender. The first write error is
/// kept and the rest of the file is still taken (not written), so the sender is never left
/// blocked; it is told to stop through the status field.
struct Writer<'a> {
    ch: &'a Channel,
    out: PacedFile<'a>,
    error: Option<io::Error>,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8], total: u64) -> Result<(), FrameError> {
        if self.error.is_none()
            && let Err(e) = self.out.write_all(bytes)
        {
            self.ch.flag_failure(Status::WriteFailed);
            self.error = Some(e);
        }
        self.ch.release_slot(total)
    }
}

/// Takes chunks until the last one, writing each straight from shared memory to the sink,
/// then answers for the failures it met. Returns the length and digest of a whole file.
fn drain(
    ch: &Channel,
    req: &Request,
    sink: &mut Sink,
    md5: bool,
    direct: DirectMode,
    progress: &mut Progress,
) -> Result<(u64, [u8; 16]), FileFailure> {
    let mut ctx = md5.then(md5::Context::new);
    let mut total = 0u64;
    let mut flagged = false;
    let pacer = sink.pacer(direct);
    let mut writer = Writer {
        ch,
        out: PacedFile::new(sink.file(), pacer),
        error: None,
    };
    // With MD5 on a file of several slots, a second thread writes and releases each slot while
    // this one hashes the next: write(2) into the page cache can block, and hashing need not
    // wait for it. Without MD5 there is nothing to overlap.
    let overlap = md5 && req.size.is_none_or(|s| s > ch.info.slot_size as u64);
    let end = if overlap {
        std::thread::scope(|scope| -> Result<End, FrameError> {
            let (tx, rx) =
                std::sync::mpsc::sync_channel::<(&[u8], u64)>(ch.info.slot_count as usize);
            let w = &mut writer;
            let handle = scope.spawn(move || -> Result<(), FrameError> {
                for (bytes, total) in rx {
                    w.put(bytes, total)?;
                }
                Ok(())
            });
            let end = take_chunks(
                ch,
                req,
                &mut total,
                &mut flagged,
                progress,
                &mut ctx,
                |bytes, total| {
                    // A closed channel means the writer failed; its error is reported at join.
                    let _ = tx.send((bytes, total));
                    Ok(())
                },
            );
            drop(tx);
            handle.join().expect("writer thread panicked")?;
            end
        })?
    } else {
        take_chunks(
            ch,
            req,
            &mut total,
            &mut flagged,
            progress,
            &mut ctx,
            |bytes, total| writer.put(bytes, total),
        )?
    };
    // Our own failure explains an abort the sender made because we flagged it.
    if let Some(e) = writer.error {
        return Err(answer_write_failure(ch, e, total)?);
    }
    if flagged {
        ch.answer(&refused(Status::LengthMismatch))?;
        return Err(FileFailure::Answered(
            Status::LengthMismatch,
            format!("more bytes than the {:?} announced", req.size),
        ));
    }
    match end {
        End::Complete => Ok((total, ctx.map(|c| c.finalize().0).unwrap_or([0; 16]))),
        End::SenderAborted(code) => {
            ch.answer(&refused(Status::Aborted))?;
            if code == frame::Abort::Interrupted as u32 {
                return Err(FileFailure::Leaving("the sender was interrupted".into()));
            }
            let why = match code {
                2 => "the sender could not read its file",
                3 => "the file changed while it was sent",
                _ => "the sender aborted",
            };
            Err(FileFailure::Answered(Status::Aborted, why.into()))
        }
        End::BadChunk(e) => {
            ch.answer(&refused(Status::BadRequest))?;
            Err(FileFailure::Answered(
                Status::BadRequest,
                format!("bad chunk: {e}"),
            ))
        }
    }
}

/// The chunk loop: waits for each filled slot, hashes it (with MD5 on) and passes its bytes and
/// the running total on.
fn take_chunks<'c>(
    ch: &'c Channel,
    req: &Request,
    total: &mut u64,
    flagged: &mut bool,
    progress: &mut Progress,
    ctx: &mut Option<md5::Context>,
    mut each: impl FnMut(&'c [u8], u64) -> Result<(), FrameError>,
) -> Result<End, FrameError> {
    let mut index = 0u64;
    loop {
        let (chunk, bytes) = match ch.next_chunk(index)? {
            Ok(c) => c,
            Err(ChunkError::Aborted(code)) => return Ok(End::SenderAborted(code)),
            Err(ChunkError::Bad(e)) => return Ok(End::BadChunk(e)),
        };
        trace!(index, len = chunk.len, last = chunk.last, "chunk");
        *total += chunk.len as u64;
        if req.size.is_some_and(|s| *total > s) && !*flagged {
            ch.flag_failure(Status::LengthMismatch);
            *flagged = true;
        }
        if let Some(c) = ctx.as_mut() {
            c.consume(bytes);
        }
        each(bytes, *total)?;
        progress.set(*total);
        index += 1;
        if chunk.last {
            return Ok(End::Complete);
        }
    }
}

fn answer_write_failure(ch: &Channel, e: io::Error, total: u64) -> Result<FileFailure, FrameError> {
    let errno = e.raw_os_error().unwrap_or(libc::EIO);
    ch.answer(&Outcome {
        status: Status::WriteFailed,
        errno,
        name: Vec::new(),
        md5: [0; 16],
        bytes: total,
    })?;
    Ok(FileFailure::Answered(
        Status::WriteFailed,
        format!("write failed: {e}"),
    ))
}

/// Applies metadata, optionally syncs, and renames the temporary file to its final name
/// without ever replacing an existing file.
fn commit(
    file: File,
    tmp: &Path,
    req: &Request,
    opts: &Opts,
    namer: Option<&mut Namer>,
) -> io::Result<PathBuf> {
    if let (true, Some(m)) = (opts.preserve, req.meta) {
        // Never create set-id files for a peer we do not know: permission bits only.
        file.set_permissions(fs::Permissions::from_mode(m.mode & 0o777))?;
        let t = if m.mtime_sec >= 0 {
            SystemTime::UNIX_EPOCH + Duration::new(m.mtime_sec as u64, m.mtime_nsec)
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(m.mtime_sec.unsigned_abs())
                + Duration::from_nanos(m.mtime_nsec.into())
        };
        file.set_modified(t)?;
    }
    if opts.fsync {
        file.sync_all()?;
    }
    drop(file);
    let namer = namer.expect("a file sink always has a namer");
    let kept = if opts.keep_name {
        safe_name(&req.name)
    } else {
        None
    };
    let path = match kept {
        // The sender's name, then `-1`, `-2`...: never an existing file.
        Some(n) => {
            let mut attempt = 0u64;
            loop {
                let candidate = opts.dir.join(numbered(&n, attempt));
                match sysv::rename_noreplace(tmp, &candidate) {
                    Ok(()) => break candidate,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => attempt += 1,
                    Err(e) => return Err(e),
                }
            }
        }
        None => namer.commit(tmp)?,
    };
    if opts.fsync {
        File::open(&opts.dir)?.sync_all()?;
    }
    Ok(path)
}

/// The sender's name made safe to create in DIR: its last path component, without NULs, and
/// never `.`, `..` or empty (then `None`: the counter name is used).
pub fn safe_name(raw: &[u8]) -> Option<OsString> {
    let last = raw.rsplit(|&b| b == b'/').next().unwrap_or(&[]);
    let clean: Vec<u8> = last
        .iter()
        .copied()
        .filter(|&b| b != 0)
        .take(frame::MAX_NAME)
        .collect();
    if clean.is_empty() || clean == b"." || clean == b".." {
        return None;
    }
    Some(OsString::from_vec(clean))
}

/// `photo.jpg`, then `photo-1.jpg`, `photo-2.jpg`... (a leading dot is not an extension).
pub fn numbered(name: &OsString, n: u64) -> OsString {
    if n == 0 {
        return name.clone();
    }
    let b = name.as_bytes();
    let suffix = format!("-{n}");
    let dot = b.iter().rposition(|&c| c == b'.').filter(|&i| i > 0);
    // An "extension" too long to keep beside the suffix is just part of the stem.
    let split = dot
        .filter(|&i| b.len() - i + suffix.len() < frame::MAX_NAME)
        .unwrap_or(b.len());
    let (stem, ext) = b.split_at(split);
    // Shorten the stem so the suffix survives within NAME_MAX; a clash still cannot overwrite.
    let keep = stem.len().min(frame::MAX_NAME - suffix.len() - ext.len());
    let mut v = stem[..keep].to_vec();
    v.extend_from_slice(suffix.as_bytes());
    v.extend_from_slice(ext);
    OsString::from_vec(v)
}

/// A receiver killed with SIGKILL cannot delete its temporary file; the next one to use DIR
/// does, for every `.shmxfer-*.part` whose receiver pid is dead (a live one's is left alone).
fn remove_dead_partials(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if let Some(pid) = partial_owner(name.as_bytes())
            && !sysv::process_alive(pid)
        {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// The pid in `.shmxfer-<pid>-<n>.part` or `.shmxfer-legacy-<pid>.part`.
pub fn partial_owner(name: &[u8]) -> Option<i32> {
    let rest = name.strip_prefix(b".shmxfer-")?.strip_suffix(b".part")?;
    let rest = rest.strip_prefix(b"legacy-").unwrap_or(rest);
    let digits: Vec<u8> = rest
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Picks `DIR/<basename><NN><ext>` names, continuing after the highest one already in DIR so a
/// restarted receiver never overwrites earlier output.
#[derive(Debug)]
pub struct Namer {
    dir: PathBuf,
    basename: String,
    ext: String,
    next: u64,
}

impl Namer {
    pub fn scan(dir: &Path, basename: &str, ext: &str) -> io::Result<Namer> {
        let mut max = 0u64;
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            if let Some(n) = counter_of(name.as_bytes(), basename.as_bytes(), ext.as_bytes()) {
                max = max.max(n);
            }
        }
        Ok(Namer {
            dir: dir.into(),
            basename: basename.into(),
            ext: ext.into(),
            next: max.saturating_add(1),
        })
    }
    pub fn path(&self) -> PathBuf {
        self.dir
            .join(format!("{}{:02}{}", self.basename, self.next, self.ext))
    }
    /// Renames `tmp` to the next free counter name, never replacing a file (another receiver
    /// may write into DIR too), and returns that name.
    pub fn commit(&mut self, tmp: &Path) -> io::Result<PathBuf> {
        loop {
            let path = self.path();
            self.next += 1;
            match sysv::rename_noreplace(tmp, &path) {
                Ok(()) => return Ok(path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn counter_of(name: &[u8], base: &[u8], ext: &[u8]) -> Option<u64> {
    let digits = name.strip_prefix(base)?.strip_suffix(ext)?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_stay_inside_dir() {
        assert_eq!(safe_name(b"../../etc/passwd"), Some("passwd".into()));
        assert_eq!(safe_name(b"/abs/path/photo.jpg"), Some("photo.jpg".into()));
        assert_eq!(safe_name(b".."), None);
        assert_eq!(safe_name(b"a/.."), None);
        assert_eq!(safe_name(b"dir/"), None);
        assert_eq!(safe_name(b""), None);
        assert_eq!(safe_name(b"a\0b"), Some("ab".into()));
        assert_eq!(safe_name(b"\0"), None);
        assert_eq!(
            safe_name(&[0xff, 0xfe]).map(|s| s.into_vec()),
            Some(vec![0xff, 0xfe])
        );
    }

    #[test]
    fn clashing_names_get_a_number_before_the_extension() {
        let n: OsString = "photo.jpg".into();
        assert_eq!(numbered(&n, 0), "photo.jpg");
        assert_eq!(numbered(&n, 2), "photo-2.jpg");
        assert_eq!(numbered(&".bashrc".into(), 1), ".bashrc-1");
        assert_eq!(numbered(&"README".into(), 1), "README-1");
        assert!(numbered(&OsString::from("x".repeat(255)), 7).len() <= 255);
    }

    #[test]
    fn temporary_files_name_their_receiver() {
        assert_eq!(partial_owner(b".shmxfer-1234-0.part"), Some(1234));
        assert_eq!(partial_owner(b".shmxfer-legacy-77.part"), Some(77));
        assert_eq!(partial_owner(b".shmxfer-x.part"), None);
        assert_eq!(partial_owner(b"file01.jpg"), None);
    }

    #[test]
    fn counter_continues_after_the_highest_existing_file() {
        assert_eq!(counter_of(b"file07.jpg", b"file", b".jpg"), Some(7));
        assert_eq!(counter_of(b"file123.jpg", b"file", b".jpg"), Some(123));
        assert_eq!(counter_of(b"file.jpg", b"file", b".jpg"), None);
        assert_eq!(counter_of(b"file1a.jpg", b"file", b".jpg"), None);
        assert_eq!(counter_of(b"other01.jpg", b"file", b".jpg"), None);
    }

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
                out.write_all(&v[at..at + (64 << 10)]).unwrap();
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
                out.write_all(&v[at..at + (64 << 10)]).unwrap();
                expected.extend_from_slice(&v[at..at + (64 << 10)]);
            }
            // The filesystem of the target dir may not take O_DIRECT; then all went buffered.
            assert!(out.pacer == Pacer::Direct || out.pacer == Pacer::Buffered);
            let (v, at) = aligned_pattern(5000, 9);
            out.write_all(&v[at..at + 5000]).unwrap();
            expected.extend_from_slice(&v[at..at + 5000]);
            assert_eq!(out.pacer, Pacer::Buffered);
            assert!(!out.direct);
        }
        drop(file);
        assert_eq!(fs::read(&path).unwrap(), expected);
    }
}
