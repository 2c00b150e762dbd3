//! `shmxfer recv`: the command. The channel is the library's [`Receiver`]; this module
//! picks where each file goes (an unnamed temporary file in DIR, named only once whole and
//! verified, or stdout), prints one record per file, and turns signals into a clean exit.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use super::hooks::{Committed, Hooks};
use super::progress::Progress;
use crate::commands::exit;
use crate::mechanisms::output::{self, Namer, OutputError, RelPath, Subdir, TempFile};
use crate::mechanisms::pacer::DirectMode;
use crate::mechanisms::runtime;
use crate::mechanisms::text::{escape, escape_path};
use crate::protocols::frame::{Config, FrameError, ReceiverEnd, SenderId, State, Status, hex};
use crate::protocols::legacy::{Consumer, LegacyError, Took};
use crate::protocols::receiver::{Event, FileError, Incoming, Received, Receiver};
use clap::Args;

use super::{ChannelArgs, Verbosity};

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
            RecvError::Output(
                OutputError::Dir { .. } | OutputError::NotDir(_) | OutputError::Unwritable { .. },
            ) => exit::CANTCREAT,
            RecvError::Output(_) | RecvError::Usage(_) => exit::USAGE,
            RecvError::Frame(e) => exit::of_frame(e),
        }
    }
}

struct Opts {
    dir: PathBuf,
    keep_name: bool,
    keep_path: bool,
    json: bool,
    preserve: bool,
    stdout: bool,
    fsync: bool,
    direct: DirectMode,
    quiet: bool,
    once: bool,
    /// `--allow-user` / `--allow-group`: whom files are taken from (empty: anyone the
    /// channel's mode lets in).
    allow: Allow,
}

impl Opts {
    /// The native receiver's options, from its flags.
    fn of(args: &RecvArgs) -> Opts {
        Opts {
            dir: args.dir.clone(),
            keep_name: args.keep_name,
            keep_path: args.keep_path,
            json: args.json,
            preserve: args.preserve,
            stdout: args.stdout,
            fsync: args.fsync,
            direct: args.direct.into(),
            quiet: args.verbosity.quiet,
            once: args.once || args.stdout,
            allow: Allow {
                users: args.allow_user.clone(),
                groups: args.allow_group.clone(),
            },
        }
    }
}

/// The senders a receiver takes files from, by the uid and gid the kernel records for the
/// segment their bytes come from.
#[derive(Debug, Default, Clone)]
struct Allow {
    users: Vec<u32>,
    groups: Vec<u32>,
}

impl Allow {
    fn admits(&self, who: SenderId) -> bool {
        (self.users.is_empty() && self.groups.is_empty())
            || self.users.contains(&who.uid)
            || self
                .groups
                .iter()
                .any(|&g| g == who.gid || crate::commands::users::user_in_group(who.uid, g))
    }
}

pub fn run(args: RecvArgs) -> super::Outcome {
    crate::commands::term::init_logging(args.verbosity.verbose);
    if args.legacy {
        return legacy(&args);
    }
    match serve(args) {
        // A stop needs no words: the receiver removed its objects and leaves.
        Err(RecvError::Frame(FrameError::Interrupted)) => {
            Err(super::Error::Said(exit::INTERRUPTED))
        }
        r => Ok(r?),
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

/// The service manager's socket (`NOTIFY_SOCKET`), for the stop handler too.
static NOTIFY: OnceLock<super::notify::Notifier> = OnceLock::new();

fn notifier() -> &'static super::notify::Notifier {
    NOTIFY.get_or_init(super::notify::Notifier::from_env)
}

/// The channel being served, for the stop handler (set once it exists).
static CHANNEL: OnceLock<Arc<ReceiverEnd>> = OnceLock::new();

/// `--basename` names every output file: an empty one is a mistake, not a request for
/// names like `01.jpg`.
fn check_basename(b: &str) -> Result<(), RecvError> {
    if b.is_empty() {
        return Err(RecvError::Usage(
            "--basename must not be empty: every output name starts with it (default `file`)"
                .into(),
        ));
    }
    Ok(())
}

fn serve(args: RecvArgs) -> Result<i32, RecvError> {
    check_basename(&args.basename)?;
    if args.stdout && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        // As gzip: a file's raw bytes on a terminal are noise, and may be escape sequences.
        return Err(RecvError::Usage(
            "--stdout refuses to write a file's bytes to a terminal: redirect it (`> FILE`) or pipe it (`| tar x`)".into(),
        ));
    }
    let addr = args.channel.native().map_err(RecvError::Usage)?;
    check_mode(args.mode)?;
    let opts = Opts::of(&args);
    // Before anything is created: a stop during setup then removes what was made.
    let cancel = runtime::Cancel::new();
    install_stop_handler(cancel.clone());
    crate::os_cli::ignore_file_size_signal();
    let cfg = Config {
        mode: args.mode,
        slot_size: args.slot_size,
        slot_count: args.slots,
        require_md5: args.md5,
        cancel: cancel.clone(),
    };
    let (mut rx, takeover) = Receiver::bind(addr, &cfg)?;
    let _ = CHANNEL.set(rx.channel());
    if let Some(note) = takeover {
        crate::commands::term::warn(opts.quiet, note);
    }
    if cancel.is_cancelled() {
        return Err(FrameError::Interrupted.into());
    }
    let mut namer = if args.stdout {
        None
    } else {
        Some(output::prepare(&args.dir, &args.basename, &args.ext)?)
    };
    let hooks = args
        .exec
        .clone()
        .map(|cmd| Hooks::start(cmd, usize::from(args.jobs), args.json));
    let mut tally = Served::default();
    notifier().send(&format!(
        "READY=1\nMAINPID={}\nSTATUS=serving key {}, 0 files committed",
        crate::os::getpid(),
        rx.channel().key
    ));
    let r = serve_files(&mut rx, &opts, namer.as_mut(), hooks.as_ref(), &mut tally);
    notifier().stopping();
    notifier().status(true, || {
        format!("stopping, {}", super::notify::committed(tally.received))
    });
    drop(rx);
    let failed = end_hooks(hooks, r.is_err());
    match r? {
        exit::OK if failed > 0 => Ok(exit::FAILURE),
        code => Ok(code),
    }
}

/// Ends the `--exec` commands: on a stop (or a failure), within `HOOK_GRACE` (the stop
/// handler's watchdog lets it finish); else after every queued one ran. Returns how many
/// failed.
fn end_hooks(hooks: Option<Hooks>, stopping: bool) -> usize {
    match hooks {
        Some(h) if stopping => {
            FINISHING.store(true, std::sync::atomic::Ordering::SeqCst);
            h.stop(HOOK_GRACE)
        }
        Some(h) => h.finish(),
        None => 0,
    }
}

/// How long a stopping receiver waits for its running `--exec` commands: well inside the 10 s
/// a container runtime gives between SIGTERM and SIGKILL.
const HOOK_GRACE: Duration = Duration::from_secs(5);

/// Set once the main thread is waiting for `--exec` commands on a stop: the stop handler's
/// watchdog then lets it finish instead of ending the process.
static FINISHING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The receiver's loop: each offered file taken, until `--once` is done or the channel fails.
fn serve_files(
    rx: &mut Receiver,
    opts: &Opts,
    mut namer: Option<&mut Namer>,
    hooks: Option<&Hooks>,
    tally: &mut Served,
) -> Result<i32, RecvError> {
    loop {
        ensure_dir(opts, namer.as_deref(), tally)?;
        tally.make_spare(opts, namer.as_deref());
        match rx.next_event()? {
            Event::File(incoming) => {
                if let Some(c) = take_file(incoming, opts, namer.as_deref_mut(), tally)?
                    && !announce(&c, opts, hooks)
                {
                    // Nobody reads our records any more (`recv | head -1`): stop as `yes`
                    // does when `head` has had enough, between files, so none is left torn.
                    rx.channel().set_state(State::Stopping);
                    return Ok(exit::PIPE);
                }
            }
            Event::SessionEnd if tally.closed(opts) => {
                rx.channel().set_state(State::Stopping);
                return Ok(if tally.received > 0 {
                    exit::OK
                } else {
                    exit::IOERR
                });
            }
            Event::SessionEnd => {}
            Event::Notice(n) => crate::commands::term::warn(opts.quiet, n),
        }
    }
}

/// Tells about a committed file: its record (a tab-separated line, or `--json`'s object) and
/// its `--exec` command. Returns false when stdout is a pipe nobody reads any more.
fn announce(c: &Committed, opts: &Opts, hooks: Option<&Hooks>) -> bool {
    let mut open = true;
    if opts.json {
        if let Ok(line) = serde_json::to_string(c) {
            open = crate::commands::term::out_line(&line);
        }
    } else if !opts.quiet {
        let record = record(&c.path, c.size, c.md5.as_deref());
        if opts.stdout {
            eprintln!("{record}");
        } else {
            open = crate::commands::term::out_line(&record);
        }
    }
    if let Some(h) = hooks {
        h.run(c.clone());
    }
    open
}

/// The serving loop's state: files received and failed so far (for `--once`), and the next
/// file's temporary file, made ahead.
#[derive(Default)]
struct Served {
    received: u64,
    failed: bool,
    spare: Option<TempFile>,
}

impl Served {
    /// Whether the receiver takes no more files: `--once` has its file (or, onto stdout,
    /// its one attempt).
    fn closed(&self, opts: &Opts) -> bool {
        opts.once && (self.received > 0 || (opts.stdout && self.failed))
    }

    /// Creates the next file's temporary file while we wait for its request: creating a file is
    /// most of a small file's cost to us (on ext4 without a journal, inodes deleted within the
    /// last minute are skipped one by one), and done here it overlaps the sender's preparing
    /// its next file instead of following it. Only an unnamed (`O_TMPFILE`) file is kept
    /// waiting: it leaves nothing behind, whatever happens. A failure is met again, and
    /// reported, when a file comes.
    fn make_spare(&mut self, opts: &Opts, namer: Option<&Namer>) {
        let Some(n) = namer else { return };
        if self.spare.is_some() || opts.stdout || self.closed(opts) {
            return;
        }
        self.spare = TempFile::create(n.dir()).ok().filter(TempFile::is_unnamed);
    }
}

/// Takes one offered file into its sink and commits it; a file that fails is reported and
/// the receiver goes on. Only a failing channel is an error.
fn take_file(
    incoming: Incoming,
    opts: &Opts,
    namer: Option<&mut Namer>,
    tally: &mut Served,
) -> Result<Option<Committed>, RecvError> {
    let shown = display_name(incoming.name());
    let Some((incoming, rel)) = screen(incoming, opts, tally, &shown)? else {
        return Ok(None);
    };
    ensure_dir(opts, namer.as_deref(), tally)?;
    let mut sink = match Sink::open(opts, namer.as_deref(), &mut tally.spare) {
        Ok(s) => s,
        Err(e) => return cannot_create(incoming, &e, opts, tally, &shown).map(|()| None),
    };
    let name = incoming.name().to_vec();
    let (meta, pid, uid) = (
        incoming.meta(),
        incoming.sender_pid(),
        incoming.sender().uid,
    );
    let mut bar = Progress::new(opts.quiet || opts.json, incoming.size(), shown.clone());
    let direct = match opts.stdout {
        true => DirectMode::Never,
        false => opts.direct,
    };
    let received = incoming.receive(sink.file(), direct, &mut |done| {
        bar.set(done);
        true
    });
    drop(bar);
    let Some(received) = settle(received, &shown, opts, tally) else {
        return Ok(None);
    };
    let to = Target { name: &name, rel };
    let Some((path, received)) = name_it(sink, received?, &to, meta, opts, namer, tally, &shown)?
    else {
        return Ok(None);
    };
    let (size, md5) = (received.bytes, received.md5);
    received.commit(&path)?;
    tally.received += 1;
    notifier().status(false, || {
        let n = super::notify::committed(tally.received);
        format!("{n}; the last: {}", escape_path(&path))
    });
    Ok(Some(Committed {
        path,
        name,
        size,
        md5: md5.map(|d| hex(&d)),
        sender_pid: pid,
        sender_uid: uid,
        mtime: meta.map(|m| m.mtime_sec as f64 + f64::from(m.mtime_nsec) / 1e9),
    }))
}

/// Refuses a file for which no output file could be made in DIR, and says why.
fn cannot_create(
    incoming: Incoming,
    e: &std::io::Error,
    opts: &Opts,
    tally: &mut Served,
    shown: &str,
) -> Result<(), RecvError> {
    tally.failed = true;
    gone_is_no_error(incoming.cannot_create(&opts.dir, e), shown, opts)?;
    let why = format!(
        "cannot create a file in {}: {}",
        escape_path(&opts.dir),
        crate::mechanisms::text::io_text(e)
    );
    crate::commands::term::warn(opts.quiet, format_args!("{shown}: {why}; discarded"));
    Ok(())
}

/// Refuses, before a byte of it is taken, a file `--once` has no room for, one from a sender
/// `--allow-user`/`--allow-group` do not name, or one whose relative path `--keep-path` finds
/// unsafe (each said on stderr); else returns it with its checked relative path, if kept.
fn screen<'r>(
    incoming: Incoming<'r>,
    opts: &Opts,
    tally: &Served,
    shown: &str,
) -> Result<Option<(Incoming<'r>, Option<RelPath>)>, RecvError> {
    if tally.closed(opts) {
        gone_is_no_error(incoming.refuse(Status::Closed), shown, opts)?;
        return Ok(None);
    }
    let sender = incoming.sender();
    if !opts.allow.admits(sender) {
        gone_is_no_error(incoming.refuse(Status::NotAllowed), shown, opts)?;
        let note = format!(
            "{shown}: refused: its sender is user {} (uid {}), whom --allow-user/--allow-group do not name",
            crate::os::user_name(sender.uid),
            sender.uid
        );
        crate::commands::term::warn(opts.quiet, note);
        return Ok(None);
    }
    match (opts.keep_path, output::rel_path(incoming.name())) {
        (true, Err(why)) => {
            gone_is_no_error(incoming.refuse(Status::BadPath), shown, opts)?;
            let note = format!("{shown}: refused: its path has {why} (--keep-path)");
            crate::commands::term::warn(opts.quiet, note);
            Ok(None)
        }
        (true, Ok(rel)) => Ok(Some((incoming, Some(rel)))),
        (false, _) => Ok(Some((incoming, None))),
    }
}

/// Gives a file received whole its name (stdout has none to give), unless its sender withdrew
/// it meanwhile or the commit fails: then the sender is told, and it is said on stderr.
#[allow(clippy::too_many_arguments)]
fn name_it<'r>(
    sink: Sink,
    received: Received<'r>,
    to: &Target,
    meta: Option<crate::mechanisms::wire::Meta>,
    opts: &Opts,
    namer: Option<&mut Namer>,
    tally: &mut Served,
    shown: &str,
) -> Result<Option<(PathBuf, Received<'r>)>, RecvError> {
    let tmp = match sink {
        Sink::Stdout(_) => return Ok(Some((PathBuf::from("-"), received))),
        Sink::Temp(tmp) => tmp,
    };
    if !received.may_commit() {
        received.withdrawn()?;
        let note = format!("{shown}: its sender withdrew it before the commit; discarded");
        crate::commands::term::warn(opts.quiet, note);
        return Ok(None);
    }
    match commit(tmp, to, meta, opts, namer) {
        Ok(p) => Ok(Some((p, received))),
        Err(e) => {
            tally.failed = true;
            received.fail(&e)?;
            let note = format!("{shown}: commit failed: {e}; discarded");
            crate::commands::term::warn(opts.quiet, note);
            Ok(None)
        }
    }
}

/// A refusal takes the refused file's chunks up to its end marker: a sender that goes away
/// meanwhile has ended its own session (the next event says so), not the receiver.
fn gone_is_no_error(r: Result<(), FrameError>, shown: &str, opts: &Opts) -> Result<(), FrameError> {
    match r {
        Err(FrameError::SenderGone) => {
            let note = format!("{shown}: the sender went away before its refused file ended");
            crate::commands::term::warn(opts.quiet, note);
            Ok(())
        }
        r => r,
    }
}

/// A file's receipt, or `None` after reporting why it failed (the sender was told).
fn settle<'r>(
    r: Result<Received<'r>, FileError>,
    shown: &str,
    opts: &Opts,
    tally: &mut Served,
) -> Option<Result<Received<'r>, FrameError>> {
    match r {
        Ok(r) => Some(Ok(r)),
        Err(FileError::Answered { why, .. }) => {
            tally.failed = true;
            let note = format!("{shown}: {why}; discarded");
            crate::commands::term::warn(opts.quiet, note);
            None
        }
        Err(FileError::Channel(FrameError::SenderGone)) => {
            tally.failed = true;
            let note = format!("{shown}: the sender went away mid-transfer; discarded");
            crate::commands::term::warn(opts.quiet, note);
            None
        }
        Err(FileError::Channel(e)) => Some(Err(e)),
    }
}

/// One committed file's line: path (escaped), size, and the MD5 (hex) when checked, by tabs.
fn record(path: &Path, bytes: u64, md5: Option<&str>) -> String {
    match md5 {
        Some(d) => format!("{}\t{bytes}\t{d}", escape_path(path)),
        None => format!("{}\t{bytes}", escape_path(path)),
    }
}

/// What a second SIGINT/SIGTERM says before it ends the receiver at once.
const AGAIN: &[u8] =
    b"shmxfer: error: interrupted again: ended at once; a file in flight was not committed\n";

/// On SIGINT/SIGTERM: set the stop flag and, once the channel exists, remove its semaphore
/// set, which wakes every wait of ours and of the sender at once (EIDRM). The main thread then
/// discards any partial file and removes the rest. If it has not managed within a few seconds
/// (stuck writing to a full pipe), a thread does that itself and ends the process.
fn install_stop_handler(cancel: runtime::Cancel) {
    let _ = crate::os_cli::on_stop(cancel.flag(), AGAIN, exit::INTERRUPTED, move || {
        notifier().stopping();
        if let Some(ch) = CHANNEL.get() {
            ch.set_state(State::Stopping);
            let _ = ch.sems.remove();
        }
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(3));
            // Waiting for --exec commands is progress, bounded by its own grace.
            if FINISHING.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(HOOK_GRACE + Duration::from_secs(2));
            }
            if let Some(ch) = CHANNEL.get() {
                ch.remove();
            }
            output::remove_partial();
            std::process::exit(exit::INTERRUPTED);
        });
    });
}

fn display_name(name: &[u8]) -> String {
    if name.is_empty() {
        "(unnamed)".into()
    } else {
        escape(name)
    }
}

/// Where one file's bytes go.
enum Sink {
    Temp(TempFile),
    Stdout(File),
}

impl Sink {
    fn open(opts: &Opts, namer: Option<&Namer>, spare: &mut Option<TempFile>) -> io::Result<Sink> {
        if let Some(t) = spare.take() {
            return Ok(Sink::Temp(t));
        }
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
}

/// Where a received file goes: the sender's name for it, and with `--keep-path` its checked
/// relative path.
struct Target<'a> {
    name: &'a [u8],
    rel: Option<RelPath>,
}

/// Applies metadata, optionally syncs, and names the temporary file without ever replacing
/// an existing file.
fn commit(
    mut tmp: TempFile,
    to: &Target,
    meta: Option<crate::protocols::frame::Meta>,
    opts: &Opts,
    namer: Option<&mut Namer>,
) -> io::Result<PathBuf> {
    if let (true, Some(m)) = (opts.preserve, meta) {
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
    if let Some(rel) = &to.rel {
        let at = Subdir::open(namer.dir(), &rel.dirs)?;
        let path = namer.commit_at(&mut tmp, &at, &rel.name)?;
        if opts.fsync {
            at.sync()?;
        }
        return Ok(path);
    }
    let kept = if opts.keep_name {
        output::safe_name(to.name)
    } else {
        None
    };
    let path = match namer.commit(&mut tmp, kept.as_ref()) {
        // DIR was removed since the file was started (its unnamed temporary file can still
        // be linked into a new DIR on the same filesystem): made again, as at start-up.
        Err(e) if e.kind() == io::ErrorKind::NotFound && !namer.dir().exists() => {
            std::fs::create_dir_all(namer.dir())?;
            namer.commit(&mut tmp, kept.as_ref())?
        }
        r => r?,
    };
    if opts.fsync {
        File::open(namer.dir())?.sync_all()?;
    }
    Ok(path)
}

/// Makes DIR again if it was removed under a running receiver (`rm -rf DIR`), saying so once
/// each time; a DIR that cannot be made again ends the receiver (73).
fn ensure_dir(opts: &Opts, namer: Option<&Namer>, tally: &mut Served) -> Result<(), RecvError> {
    let Some(dir) = namer.map(Namer::dir).filter(|d| !d.is_dir()) else {
        return Ok(());
    };
    // A temporary file made ahead lives in the removed directory.
    tally.spare = None;
    std::fs::create_dir_all(dir).map_err(|source| OutputError::Dir {
        dir: dir.into(),
        source,
    })?;
    crate::commands::term::warn(
        opts.quiet,
        format_args!(
            "the output directory {} was removed; made it again",
            escape_path(dir)
        ),
    );
    Ok(())
}

// ---------------------------------------------------------------- recv --legacy

/// `recv --legacy`: the original consumer's part, with output named as natively and told as
/// natively (a record, or `--json`'s object, and `--exec`). The original protocol carries no
/// name, metadata or sender: flags that need them are refused, not ignored.
fn legacy(args: &RecvArgs) -> super::Outcome {
    let (consumer, mut namer) = legacy_consumer(args)?;
    let stop_seen = legacy_stop_handler(&consumer);
    let opts = Opts {
        dir: args.dir.clone(),
        keep_name: false,
        keep_path: false,
        json: args.json,
        preserve: false,
        stdout: false,
        fsync: args.fsync,
        direct: args.direct.into(),
        quiet: args.verbosity.quiet,
        once: args.once,
        allow: Allow::default(),
    };
    let hooks = args
        .exec
        .clone()
        .map(|cmd| Hooks::start(cmd, usize::from(args.jobs), args.json));
    let mut pipe_gone = false;
    let mut take = |bytes: &[u8]| match write_out(bytes, &mut namer, opts.fsync) {
        Ok(path) => {
            // A closed stdout ends the consumer between files, as natively.
            pipe_gone = !announce(
                &legacy_committed(path, bytes, args.md5),
                &opts,
                hooks.as_ref(),
            );
            Took::Kept {
                stop: args.once || pipe_gone,
            }
        }
        Err(e) => {
            let why = crate::mechanisms::text::io_text(&e);
            let note = format!("could not write a received file: {why}; discarded");
            crate::commands::term::warn(opts.quiet, note);
            Took::Failed
        }
    };
    let r = consumer.serve(args.md5, &mut take, &mut |n| {
        crate::commands::term::warn(opts.quiet, n)
    });
    drop(consumer);
    let failed = end_hooks(hooks, r.is_err());
    match r {
        Ok(()) if pipe_gone => Ok(exit::PIPE),
        Ok(()) if failed > 0 => Ok(exit::FAILURE),
        Ok(()) => Ok(exit::OK),
        Err(LegacyError::Interrupted | LegacyError::Removed) if stop_seen.is_cancelled() => {
            Err(super::Error::Said(exit::INTERRUPTED))
        }
        Err(e) => Err(e.into()),
    }
}

/// The original system's consumer at the keys `args` name, and the namer of its output,
/// after refusing the flags the original protocol cannot serve (64).
fn legacy_consumer(args: &RecvArgs) -> Result<(Consumer, Namer), super::Error> {
    if args.stdout || args.keep_name || args.keep_path || args.preserve {
        return Err(super::Error::Usage(
            "--stdout, --keep-name, --keep-path and --preserve need the native protocol (the original carries no name)".into(),
        ));
    }
    check_mode(args.mode)?;
    check_basename(&args.basename)?;
    let namer = output::prepare(&args.dir, &args.basename, &args.ext).map_err(RecvError::from)?;
    let (content_key, size_key) = args.channel.legacy_keys().map_err(RecvError::Usage)?;
    crate::os_cli::ignore_file_size_signal();
    let consumer = Consumer::create(content_key, size_key, args.mode)?;
    if let Some(pid) = consumer.predecessor() {
        crate::commands::term::warn(
            args.verbosity.quiet,
            format_args!(
                "a consumer (pid {pid}) had died on keys {content_key}/{size_key}; removed what it left and took the keys over"
            ),
        );
    }
    Ok((consumer, namer))
}

/// On SIGINT/SIGTERM: the consumer's waits end (its token, and a wake-up); if it has not
/// finished within 3 s, its objects are removed and the process ends. Returns the token.
fn legacy_stop_handler(consumer: &Consumer) -> runtime::Cancel {
    let stopper = consumer.stopper();
    let stop = runtime::Cancel::new();
    let seen = stop.clone();
    let _ = crate::os_cli::on_stop(stop.flag(), AGAIN, exit::INTERRUPTED, move || {
        stopper.wake();
        std::thread::sleep(Duration::from_secs(3));
        if !FINISHING.load(std::sync::atomic::Ordering::SeqCst) {
            stopper.remove();
            std::process::exit(exit::INTERRUPTED);
        }
    });
    seen
}

/// A file the original protocol delivered, as `--json` and `--exec` tell it: its name is the
/// one it got (the original carries none), and no sender.
fn legacy_committed(path: PathBuf, bytes: &[u8], md5: bool) -> Committed {
    Committed {
        name: path
            .file_name()
            .map(|n| std::os::unix::ffi::OsStrExt::as_bytes(n).to_vec())
            .unwrap_or_default(),
        path,
        size: bytes.len() as u64,
        md5: md5.then(|| hex(&crate::mechanisms::digest::md5(bytes))),
        sender_pid: 0,
        sender_uid: u32::MAX,
        mtime: None,
    }
}

/// Writes one file as native recv does: an unnamed temporary file, named without replacing
/// (with `fsync`, the file and then its directory synced before it is told as committed).
fn write_out(bytes: &[u8], namer: &mut Namer, fsync: bool) -> io::Result<PathBuf> {
    use std::io::Write;
    let mut tmp = TempFile::create(namer.dir())?;
    tmp.file.write_all(bytes)?;
    if fsync {
        tmp.file.sync_all()?;
    }
    let path = namer.commit(&mut tmp, None)?;
    if fsync {
        File::open(namer.dir())?.sync_all()?;
    }
    Ok(path)
}

/// `--direct`'s values (the library's [`DirectMode`], as the command line spells it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DirectArg {
    /// Through the page cache, switching a large file to O_DIRECT if that measures faster
    Auto,
    /// O_DIRECT for every whole slot (the unaligned tail goes through the page cache)
    Always,
    /// Always through the page cache, as cp does
    Never,
}

impl From<DirectArg> for DirectMode {
    fn from(d: DirectArg) -> DirectMode {
        match d {
            DirectArg::Auto => DirectMode::Auto,
            DirectArg::Always => DirectMode::Always,
            DirectArg::Never => DirectMode::Never,
        }
    }
}

#[derive(Debug, Args)]
pub struct RecvArgs {
    #[command(flatten)]
    pub channel: ChannelArgs,
    /// Directory for received files (created if missing)
    #[arg(long, value_hint = clap::ValueHint::DirPath, default_value = "output")]
    pub dir: PathBuf,
    /// Base name of output files
    #[arg(long, value_hint = clap::ValueHint::Other, default_value = "file")]
    pub basename: String,
    /// Extension of output files
    #[arg(long, value_hint = clap::ValueHint::Other, default_value = ".jpg")]
    pub ext: String,
    /// Name each file as the sender named it (made safe; never overwrites)
    #[arg(long)]
    pub keep_name: bool,
    /// Recreate the sender's relative paths (`send -r`) under --dir, safely: never outside it,
    /// never through a symlink; an unsafe path is refused
    #[arg(long, conflicts_with = "stdout")]
    pub keep_path: bool,
    /// One JSON object per committed file on stdout, instead of the tab-separated line
    /// (fields: path, name, size, md5 when verified, sender_pid, sender_uid, mtime when sent)
    #[arg(long, conflicts_with = "stdout")]
    pub json: bool,
    /// Run CMD once per committed file, after the commit; `{}` in an argument is the file's
    /// path, `{/}` its name. Takes the rest of the command line (end it with `;` to add flags
    /// after). The environment has SHMXFER_PATH, _NAME, _SIZE, _MD5, _SENDER_PID,
    /// _SENDER_UID, _MTIME
    #[arg(
        short = 'x',
        long,
        value_name = "CMD",
        num_args = 1..,
        value_hint = clap::ValueHint::CommandName,
        allow_hyphen_values = true,
        value_terminator = ";",
        conflicts_with = "stdout"
    )]
    pub exec: Option<Vec<std::ffi::OsString>>,
    /// With --exec: run up to N commands at once (default: one at a time, in arrival order)
    #[arg(long, value_hint = clap::ValueHint::Other, value_name = "N", default_value_t = 1, requires = "exec", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Apply the sender's permission bits and mtime, as `cp -p` does
    #[arg(long)]
    pub preserve: bool,
    /// Exit after one file
    #[arg(long)]
    pub once: bool,
    /// Write the one received file to stdout (implies --once)
    #[arg(long, conflicts_with_all = ["keep_name", "preserve", "fsync"])]
    pub stdout: bool,
    /// fsync each file and its directory before reporting it committed
    #[arg(long)]
    pub fsync: bool,
    /// When to write around the page cache with O_DIRECT: auto switches a large file over
    /// when the page cache proves slower than direct writes; --direct alone means always
    #[arg(
        long,
        value_name = "WHEN",
        value_enum,
        num_args = 0..=1,
        default_value = "auto",
        default_missing_value = "always",
        conflicts_with_all = ["stdout", "legacy"]
    )]
    pub direct: DirectArg,
    /// Take files only from these users (names or uids, comma-separated): the user the kernel
    /// records as the creator of the sender's segment, which no one can forge. Others' files
    /// are refused, and their senders told why
    #[arg(long, value_hint = clap::ValueHint::Username, value_name = "USER,…", value_delimiter = ',', value_parser = crate::commands::args::parse_user, conflicts_with = "legacy")]
    pub allow_user: Vec<u32>,
    /// Take files only from members of these groups (names or gids, comma-separated), as the
    /// kernel records the sender's group and the group database lists members
    #[arg(long, value_hint = clap::ValueHint::Other, value_name = "GROUP,…", value_delimiter = ',', value_parser = crate::commands::args::parse_group, conflicts_with = "legacy")]
    pub allow_group: Vec<u32>,
    /// Permissions of the channel's IPC objects, octal
    #[arg(long, value_hint = clap::ValueHint::Other, default_value = "0600", value_parser = crate::commands::args::parse_mode)]
    pub mode: u32,
    /// Size of one slot of the content ring (K, M suffixes)
    #[arg(long, value_hint = clap::ValueHint::Other, value_parser = crate::commands::args::parse_size, default_value = "1M", conflicts_with = "legacy")]
    pub slot_size: usize,
    /// Number of slots in the content ring
    #[arg(long, value_hint = clap::ValueHint::Other, default_value_t = crate::protocols::frame::DEFAULT_SLOTS, value_parser = clap::value_parser!(u32).range(1..=crate::protocols::frame::MAX_SLOTS as i64), conflicts_with = "legacy")]
    pub slots: u32,
    /// Verify every file with MD5, whatever the sender asks
    #[arg(short = 'm', long = "md5-check")]
    pub md5: bool,
    /// Serve as the original system's C consumer (keys 42/44 unless --key/--size-key)
    #[arg(long)]
    pub legacy: bool,
    #[command(flatten)]
    pub verbosity: Verbosity,
}
