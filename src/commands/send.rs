//! `shmxfer send`: the command. The transfer itself is the library's [`Sender`]; this
//! module reads the command line, turns signals and a dying receiver into the right report,
//! draws progress, and says what happened to each file.

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::progress::Progress;
use super::tree;
use crate::commands::exit;
use crate::mechanisms::runtime;
use crate::mechanisms::text::escape_path;
use crate::protocols::frame::{self, FrameError, SenderEnd};
use crate::protocols::legacy::{self, LegacyError, Producer};
use crate::protocols::sender::Phase;
use crate::protocols::sender::{Observer, SendError, SendOptions, Sender, Verdict};
use clap::Args;

use super::{ChannelArgs, Verbosity};

/// Set by whichever thread reports the end, so the end is reported once.
static EXITING: AtomicBool = AtomicBool::new(false);

fn claim_exit() -> bool {
    !EXITING.swap(true, Ordering::SeqCst)
}

/// Every file of the send, set once before the first, for a thread that ends the process
/// while the main thread is stuck; with the index of the one in hand and the exit code of
/// those before it (two atomic stores per file, nothing formatted on the way).
static PLAN: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
static IN_HAND: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static CODE_SO_FAR: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// The code to end with after `failed`, and one `FILE: not sent` line per file after the
/// one in hand (at most 20, then how many more).
fn ending(failed: i32) -> (i32, String) {
    let code = CODE_SO_FAR.load(Ordering::SeqCst);
    let plan = PLAN.get().map_or(&[][..], Vec::as_slice);
    let rest = plan
        .get(IN_HAND.load(Ordering::SeqCst) + 1..)
        .unwrap_or(&[]);
    let mut lines: Vec<String> = rest
        .iter()
        .take(20)
        .map(|p| format!("{}: not sent", escape_path(p)))
        .collect();
    if rest.len() > 20 {
        lines.push(format!("… and {} more not sent", rest.len() - 20));
    }
    (merge(code, failed), lines.join("\n"))
}

/// How long after SIGINT/SIGTERM the main thread has to settle the file in hand before the
/// process ends anyway (it may be blocked reading a pipe or opening a FIFO).
const STOP_GRACE: Duration = Duration::from_secs(2);

/// SIGINT/SIGTERM/SIGHUP only set the stop flag (a second one ends the process at once), and
/// interrupt what the main thread is blocked in: it tells the receiver at the next chunk,
/// collects its answer and reports. Dying is always safe, since the kernel drops our liveness
/// mark and the receiver discards a file whose last chunk never came. The handler runs in
/// the main thread: no thread of its own (docs/benchmarks.md, "Design choices").
fn install_stop_handler(cancel: &runtime::Cancel) {
    let _ = crate::os_cli::stop_on_signals(
        cancel.flag(),
        b"shmxfer: error: interrupted again: ended at once; the files in flight may or may not have been committed\n",
        exit::INTERRUPTED,
    );
}

/// Ends the process when the main thread has not settled a stop within `STOP_GRACE`: it is
/// stuck where a signal does not get it out (opening a FIFO, which std retries, or a read
/// the signal came just before). Called from the watcher thread, which runs whenever an input
/// can block; a send of regular files never blocks without end (its waits are sliced).
fn stop_overdue() -> ! {
    if claim_exit() {
        let msg = match phase::get() {
            (phase::INPUT, f) => format!("interrupted while reading {f}; it was not sent"),
            (phase::VERDICT, f) => format!(
                "interrupted while the receiver committed {f}: it had every byte; check its output before sending it again"
            ),
            _ => "interrupted".into(),
        };
        let (code, rest) = ending(exit::INTERRUPTED);
        report_and_exit(with_rest(msg, &rest), code);
    }
    std::process::exit(exit::INTERRUPTED);
}

fn with_rest(msg: String, rest: &str) -> String {
    match rest.is_empty() {
        true => msg,
        false => format!("{msg}\n{rest}"),
    }
}

/// Prints `msg` (each line as an error) from a thread of its own (stderr may be a full pipe)
/// and exits soon after.
fn report_and_exit(msg: String, code: i32) -> ! {
    std::thread::spawn(move || {
        for line in msg.lines() {
            crate::commands::term::error(line);
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    std::process::exit(code);
}

/// The progress bar, as a [`Sender`] observer.
struct Bar {
    quiet: bool,
    bar: Option<Progress>,
}

impl Observer for Bar {
    fn start(&mut self, label: &str, size: Option<u64>) {
        self.bar = Some(Progress::new(self.quiet, size, label));
    }
    fn progress(&mut self, done: u64) -> bool {
        if let Some(b) = self.bar.as_mut() {
            b.set(done);
        }
        true
    }
    fn finish(&mut self) {
        self.bar = None;
    }
    fn phase(&mut self, p: Phase, file: Option<&Path>) {
        phase::set(p, file);
    }
}

pub fn run(args: SendArgs) -> super::Outcome {
    crate::commands::term::init_logging(args.verbosity.verbose);
    if args.legacy {
        return legacy(&args);
    }
    if args.name.is_empty() || args.name.len() > frame::MAX_NAME || args.name.contains('/') {
        return Err(super::Error::Usage(
            "--name must be a file name of 1 to 255 bytes without `/`".into(),
        ));
    }
    check_stdin_use(&args)?;
    let addr = args.channel.native().map_err(super::Error::Usage)?;
    let cancel = runtime::Cancel::new();
    install_stop_handler(&cancel);
    let opts = SendOptions {
        md5: args.md5,
        wait: args.wait.map(Duration::from_secs_f64),
        owner: args.owner,
        on_stall: Some(stall_hook(args.verbosity.quiet)),
        cancel: cancel.clone(),
    };
    if args.watch {
        let w = super::watch::Watch::new(
            &args.files,
            super::watch::Options {
                recursive: args.recursive,
                remove: args.remove_source_files,
                quiet: args.verbosity.quiet,
                json: args.json,
                allow_hardlinks: args.allow_hardlinks,
                settle: Duration::from_secs_f64(args.settle),
                state: args.state.clone(),
            },
        )?;
        return Ok(w.run(&addr, &opts));
    }
    // Inputs first, as cp does: a missing file is said as such, receiver or not.
    let (items, code) = check_inputs(items(&args), args.recursive);
    if items.is_empty() {
        return Ok(code);
    }
    let mut tx = Sender::connect(addr, &opts).map_err(fail)?;
    // Only a read that can block for ever (a pipe, a FIFO, a terminal) needs a thread to
    // notice the receiver dying meanwhile; regular files are read in bounded time.
    let may_block = items.iter().any(Item::may_block);
    if may_block {
        watch_receiver(tx.channel(), cancel.clone());
    }
    tx.set_observer(Box::new(Bar {
        quiet: args.verbosity.quiet,
        bar: None,
    }));
    let code = send_all(&mut tx, &args, &items, may_block, code);
    match tx.finish() {
        Err(e) if code == exit::OK => Err(fail(e)),
        _ => Ok(code),
    }
}

/// Says on stderr that the receiver is stopped (once, when it is found so), and that it
/// continued: a send that waits on a stopped process must not look wedged.
fn stall_hook(quiet: bool) -> frame::StallHook {
    frame::StallHook(Arc::new(move |s| match s {
        frame::Stall::Stopped { pid } => crate::commands::term::warn(
            quiet,
            format_args!(
                "receiver {pid} is stopped (SIGSTOP/Ctrl-Z); waiting for it to continue (`kill -CONT {pid}`)"
            ),
        ),
        frame::Stall::Continued { pid } => {
            crate::commands::term::warn(quiet, format_args!("receiver {pid} continued"))
        }
    }))
}

/// `-` (stdin) can be sent once, and `--name` names only it: anything else is a usage error,
/// not something to ignore.
fn check_stdin_use(args: &SendArgs) -> Result<(), super::Error> {
    let stdin = args.files.iter().filter(|p| p.as_os_str() == "-").count();
    if stdin > 1 {
        return Err(super::Error::Usage(
            "stdin (`-`) can be sent only once per send".into(),
        ));
    }
    if stdin == 0 && args.name != DEFAULT_STDIN_NAME {
        return Err(super::Error::Usage(
            "--name names stdin: give `-` among the files, or drop --name".into(),
        ));
    }
    Ok(())
}

/// The name stdin is sent under without `--name`.
const DEFAULT_STDIN_NAME: &str = "stdin";

/// One thing to send: stdin, a path under its own name, or a file of a tree (`-r`) under its
/// relative path.
enum Item {
    Stdin(PathBuf),
    Path(PathBuf),
    InTree(tree::Entry),
}

impl Item {
    /// Whether reading it may block without end: stdin, or anything but a regular file.
    fn may_block(&self) -> bool {
        match self {
            Item::Stdin(_) => true,
            Item::Path(p) => std::fs::metadata(p).is_ok_and(|m| !m.is_file()),
            Item::InTree(_) => false,
        }
    }

    fn path(&self) -> &Path {
        match self {
            Item::Stdin(p) | Item::Path(p) => p,
            Item::InTree(e) => &e.path,
        }
    }
}

/// The command line's FILEs as items, each `-r` directory expanded; what a walk skipped is
/// said on stderr. Returns the items and the exit code so far (a tree that could not be read
/// whole is a failure).
fn items(args: &SendArgs) -> (Vec<Item>, i32) {
    let (mut v, mut code) = (Vec::new(), exit::OK);
    for p in &args.files {
        if p.as_os_str() == "-" {
            v.push(Item::Stdin(p.clone()));
        } else if args.recursive && p.is_dir() {
            let w = tree::walk(p, args.dereference);
            for s in &w.skipped {
                crate::commands::term::warn(args.verbosity.quiet, format_args!("skipped {s}"));
            }
            if w.unreadable > 0 {
                code = exit::NOINPUT;
            }
            v.extend(w.files.into_iter().map(Item::InTree));
        } else {
            v.push(Item::Path(p.clone()));
        }
    }
    (v, code)
}

/// Reports, in order, the inputs that cannot be sent at all (missing, unreadable, a
/// directory without `-r`) and leaves them out; returns the rest and the exit code so far.
/// Special files (FIFOs, devices) are not opened here: opening one may block.
fn check_inputs((items, mut code): (Vec<Item>, i32), recursive: bool) -> (Vec<Item>, i32) {
    let mut kept = Vec::with_capacity(items.len());
    for item in items {
        let Item::Path(p) = &item else {
            kept.push(item);
            continue;
        };
        let e = match std::fs::metadata(p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Some(SendError::Missing(p.clone())),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                Some(SendError::Unreadable(p.clone()))
            }
            Err(source) => Some(SendError::Open {
                path: p.clone(),
                source,
            }),
            Ok(m) if m.is_dir() && !recursive => Some(SendError::IsDir(p.clone())),
            Ok(m)
                if m.is_file()
                    && nix::unistd::access(p, nix::unistd::AccessFlags::R_OK).is_err() =>
            {
                Some(SendError::Unreadable(p.clone()))
            }
            Ok(_) => None,
        };
        match e {
            Some(e) => {
                crate::commands::term::error(super::send_message(&e));
                code = merge(code, exit::of_send(&e));
            }
            None => kept.push(item),
        }
    }
    (kept, code)
}

/// Sends each item in turn; returns the exit code. A failure of one file is reported and the
/// next is tried; a failure of the channel, or a stop, ends the send. Each file is posted while
/// the receiver still commits the one before, unless an input can block: then one file at a
/// time, so that the file in hand is the only one a stuck read can leave unsettled.
fn send_all(
    tx: &mut Sender,
    args: &SendArgs,
    items: &[Item],
    may_block: bool,
    mut code: i32,
) -> i32 {
    let _ = PLAN.set(items.iter().map(|i| i.path().to_path_buf()).collect());
    if may_block {
        tx.set_window(1);
    }
    for (i, item) in items.iter().enumerate() {
        IN_HAND.store(i, Ordering::SeqCst);
        CODE_SO_FAR.store(code, Ordering::SeqCst);
        post_one(tx, item, &args.name);
        let stopped = tx.cancel().is_cancelled();
        if let Some(end) = report(tx.take_verdicts(), items, i + 1, stopped, &mut code) {
            return end;
        }
    }
    let verdicts = tx.flush();
    let stopped = tx.cancel().is_cancelled();
    report(verdicts, items, items.len(), stopped, &mut code).unwrap_or(code)
}

/// Says what became of each file whose verdict is in, `posted` files being posted so far (a
/// verdict's ticket is its item's place, from 1). Returns the exit code if the send must end:
/// the channel failed, or a stop came and no file is left in flight. After such an end, the
/// files in flight behind the one that met it are each named with what is known of them.
fn report(
    verdicts: Vec<Verdict>,
    items: &[Item],
    posted: usize,
    stopped: bool,
    code: &mut i32,
) -> Option<i32> {
    let (mut ended, mut seen): (Option<usize>, usize) = (None, 0);
    for v in verdicts {
        seen = seen.max(v.ticket as usize);
        let label = v.label;
        // A channel's failure does not name the file it met: we do (whether the receiver
        // committed it before it went away, nobody can tell us).
        let (e, named) = match v.result {
            Ok(_) if ended.is_some() => continue,
            Ok(_) if !stopped => continue,
            // A later file in flight reports the stop itself.
            Ok(_) if (v.ticket as usize) < posted => continue,
            Ok(_) => (SendError::Frame(FrameError::Interrupted), false),
            Err(e @ SendError::Frame(_)) => (e, true),
            Err(e) => (e, false),
        };
        let stopped = matches!(e, SendError::Frame(FrameError::Interrupted));
        if ended.is_some() && !stopped {
            // Behind a channel that failed: its answer never came.
            crate::commands::term::error(format_args!("{}: not sent", escape_path(&label)));
            continue;
        }
        let fatal = e.is_fatal();
        if fatal && ended.is_none() && !claim_exit() {
            // Another thread is ending the process with its own report.
            std::thread::sleep(Duration::from_secs(1));
            return Some(exit::of_send(&e));
        }
        match named {
            true => crate::commands::term::error(format_args!(
                "{}: {}",
                escape_path(&label),
                fate_message(&e)
            )),
            false => crate::commands::term::error(super::send_message(&e)),
        }
        *code = merge(*code, exit::of_send(&e));
        if fatal {
            ended = Some(ended.unwrap_or(0).max(v.ticket as usize));
        }
    }
    ended?;
    // Every file after the last one named here: posted but never answered, or never posted.
    not_sent(items.get(seen..).unwrap_or(&[]));
    Some(*code)
}

/// What to say of a file whose last byte was posted when the channel failed or a stop came.
fn fate_message(e: &SendError) -> String {
    match e {
        SendError::Frame(FrameError::Interrupted) => {
            "interrupted before the receiver's answer came: it may have been committed; check the receiver's output".into()
        }
        e => super::send_message(e),
    }
}

/// The exit code of a send so far, after one more failure: its own code if all failures
/// agree, else 1 (a stop is always 130).
fn merge(code: i32, failed: i32) -> i32 {
    match code {
        _ if failed == exit::INTERRUPTED => failed,
        exit::OK => failed,
        c if c == failed => c,
        _ => exit::FAILURE,
    }
}

/// Says which files a send that ends early leaves unsent, one line each (the first 20 of a
/// long list, then how many more).
fn not_sent(rest: &[Item]) {
    for i in rest.iter().take(20) {
        crate::commands::term::error(format_args!("{}: not sent", escape_path(i.path())));
    }
    if rest.len() > 20 {
        let more = rest.len() - 20;
        crate::commands::term::error(format_args!("… and {more} more not sent"));
    }
}

/// Posts one item: a path, a tree's file under its relative path, or stdin under `--name`.
fn post_one(tx: &mut Sender, item: &Item, stdin_name: &str) {
    match item {
        Item::Path(p) => drop(tx.post_path(p)),
        Item::InTree(e) => drop(tx.post_path_as(&e.path, &e.name)),
        Item::Stdin(p) => match io::stdin().as_fd().try_clone_to_owned() {
            Ok(fd) => {
                let stdin = std::fs::File::from(fd);
                // A regular file on stdin has a size to check; a pipe or terminal streams.
                let size = stdin
                    .metadata()
                    .ok()
                    .filter(|m| m.is_file())
                    .map(|m| m.len());
                tx.post_file(stdin_name.as_bytes(), &stdin, size);
            }
            Err(source) => {
                let e = SendError::Open {
                    path: p.clone(),
                    source,
                };
                tx.post_failed(p, e);
            }
        },
    }
}

/// The error for the face to print, unless another thread is ending the process with its own
/// report.
fn fail(e: SendError) -> super::Error {
    if claim_exit() {
        e.into()
    } else {
        super::Error::Said(exit::of_send(&e))
    }
}

/// A sender may sit in read(2) on a slow pipe, or in open(2) of a FIFO, while the receiver
/// dies; nothing in the main thread would notice. This thread sleeps in the kernel until the
/// receiver's liveness semaphore drops (or the set is removed). If the main thread is then in
/// such a read, it ends the process: that file cannot arrive. Anywhere else, the main thread's
/// own sliced waits notice within a slice and report what happened to each file. It also
/// ends the process when a stop is not settled within `STOP_GRACE` ([`stop_overdue`]).
fn watch_receiver(ch: Arc<SenderEnd>, cancel: runtime::Cancel) {
    std::thread::spawn(move || {
        // The stop signals must interrupt the main thread's read, not this thread's wait.
        crate::os_cli::block_stop_signals();
        let mut stop_seen: Option<Instant> = None;
        while !ch.receiver_gone_within(WATCH_SLICE) {
            if cancel.is_cancelled()
                && stop_seen.get_or_insert_with(Instant::now).elapsed() >= STOP_GRACE
            {
                stop_overdue();
            }
        }
        let (p, file) = phase::get();
        if p == phase::INPUT && claim_exit() {
            let gone = FrameError::ReceiverGone {
                key: ch.key,
                pid: ch.info.receiver_pid,
            };
            let (code, rest) = ending(exit::UNAVAILABLE);
            report_and_exit(
                with_rest(
                    format!("{}; {file} was not sent", super::frame_message(&gone)),
                    &rest,
                ),
                code,
            );
        }
    });
}

/// How often the watcher looks at the stop flag while it waits for the receiver to die.
const WATCH_SLICE: Duration = Duration::from_millis(250);

// ---------------------------------------------------------------- send --legacy

/// `send --legacy`: the original producer's part, for each file in turn. A file the protocol
/// cannot carry is refused before any semaphore is touched.
fn legacy(args: &SendArgs) -> super::Outcome {
    let (content_key, size_key) = args.channel.legacy_keys().map_err(super::Error::Usage)?;
    let deadline = args
        .wait
        .map(|s| std::time::Instant::now() + Duration::from_secs_f64(s));
    // Every semaphore the producer takes, it takes with SEM_UNDO: if we die or are
    // interrupted at any point, the kernel gives it back.
    let _ = crate::os_cli::on_stop(
        runtime::Cancel::new().flag(),
        b"",
        exit::INTERRUPTED,
        || {
            crate::commands::term::error("interrupted");
            std::process::exit(exit::INTERRUPTED);
        },
    );
    let mut code = exit::OK;
    let mut producer: Option<Producer> = None;
    for path in &args.files {
        let data = match legacy::read_input(path) {
            Ok(d) => d,
            Err(e) => {
                let failed = exit::of_legacy(&e);
                crate::commands::term::error(super::Error::Legacy(e).message());
                code = merge(code, failed);
                continue;
            }
        };
        let p = match producer.take() {
            Some(p) => p,
            None => {
                let mut p = Producer::connect(content_key, size_key, deadline)?;
                let quiet = args.verbosity.quiet;
                p.on_wait(Box::new(move |lock| {
                    crate::commands::term::warn(
                        quiet,
                        format_args!(
                            "another `shmxfer send --legacy` has its turn (lock {}); waiting",
                            escape_path(lock)
                        ),
                    )
                }));
                p
            }
        };
        match p.send(path, &data, args.md5, deadline) {
            Ok(()) => {}
            Err(e @ LegacyError::Md5 { .. }) => {
                crate::commands::term::error(&e);
                code = merge(code, exit::of_legacy(&e));
            }
            Err(e) => return Err(e.into()),
        }
        producer = Some(p);
    }
    Ok(code)
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub channel: ChannelArgs,
    /// Wait up to SECS for a receiver to appear and for our turn
    #[arg(long, value_hint = clap::ValueHint::Other, value_name = "SECS", value_parser = crate::commands::args::parse_secs)]
    pub wait: Option<f64>,
    /// Hand the files to a receiver running as USER (name or uid) [default: only your own]
    #[arg(long, value_hint = clap::ValueHint::Username, value_name = "USER", value_parser = crate::commands::args::parse_user, conflicts_with = "legacy")]
    pub owner: Option<u32>,
    /// Name to send for stdin (`-`), for `recv --keep-name`
    #[arg(long, value_hint = clap::ValueHint::Other, default_value = "stdin")]
    pub name: String,
    /// Verify every file with MD5
    #[arg(short = 'm', long = "md5-check")]
    pub md5: bool,
    /// Send as the original system's Python producer (keys 42/44 unless --key/--size-key)
    #[arg(long)]
    pub legacy: bool,
    /// Send every regular file under each directory FILE, sorted, each under its path
    /// relative to the directory's parent (from inside it for `.`); `recv --keep-path`
    /// recreates the tree. Symlinks and special files are skipped with a warning
    #[arg(short = 'r', long, conflicts_with = "legacy")]
    pub recursive: bool,
    /// With -r: follow symlinks (a link back to a directory above is still skipped)
    #[arg(short = 'L', long, requires = "recursive")]
    pub dereference: bool,
    /// Watch each DIR (a drop folder): send each regular file in it once it is complete
    /// (closed after writing, moved in, or unchanged for --settle), until SIGINT/SIGTERM;
    /// waits for a receiver whenever there is none. What was committed is kept in a sent
    /// list (--state) and not sent again
    #[arg(long, conflicts_with_all = ["legacy", "name"])]
    pub watch: bool,
    /// With --watch: remove each file once the receiver committed it, if it is still the
    /// version sent (and only then)
    #[arg(long, requires = "watch")]
    pub remove_source_files: bool,
    /// With --watch: how long a file found by looking (at startup, in a new directory) must
    /// stay unchanged before it is sent
    #[arg(long, requires = "watch", value_name = "SECS", default_value = "1", value_hint = clap::ValueHint::Other, value_parser = crate::commands::args::parse_secs)]
    pub settle: f64,
    /// With --watch: the sent list [default: $STATE_DIRECTORY, $XDG_STATE_HOME/shmxfer or
    /// ~/.local/state/shmxfer, one file per set of DIRs]
    #[arg(long, requires = "watch", value_name = "FILE", value_hint = clap::ValueHint::FilePath)]
    pub state: Option<PathBuf>,
    /// With --watch: send files that have more than one name (hard links); without it they
    /// are skipped, since a hard link can name a file its maker may not read
    #[arg(long, requires = "watch")]
    pub allow_hardlinks: bool,
    /// With --watch: one JSON object per committed file on stdout (path, committed_as, removed)
    #[arg(long, requires = "watch")]
    pub json: bool,
    /// Files to send; `-` is stdin
    #[arg(required = true, value_name = "FILE", value_hint = clap::ValueHint::AnyPath)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub verbosity: Verbosity,
}

/// What the main thread is doing with the file in hand (as the sender's observer hears it), for a watcher thread or a stop handler
/// that ends the process and must tell the truth about that file.
mod phase {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU8, Ordering};

    use crate::protocols::sender::Phase;

    pub const IDLE: u8 = 0;
    pub const INPUT: u8 = 1;
    pub const VERDICT: u8 = 2;
    pub const DONE: u8 = 3;

    static PHASE: AtomicU8 = AtomicU8::new(IDLE);
    static FILE: Mutex<String> = Mutex::new(String::new());

    /// Publishes the phase (and, with `file`, which file), as the sender's observer hears it.
    pub fn set(p: Phase, file: Option<&std::path::Path>) {
        let p = match p {
            Phase::Input => INPUT,
            Phase::Verdict => VERDICT,
            Phase::Done => DONE,
            _ => IDLE,
        };
        if let (Some(f), Ok(mut g)) = (file, FILE.lock()) {
            *g = crate::mechanisms::text::escape_path(f);
        }
        PHASE.store(p, Ordering::SeqCst);
    }
    /// The phase and the last file published.
    pub fn get() -> (u8, String) {
        let f = FILE.lock().map(|g| g.clone()).unwrap_or_default();
        (PHASE.load(Ordering::SeqCst), f)
    }
}
