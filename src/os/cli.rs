//! The system calls only the command line makes: signals (the stop handler, a safe API over
//! an async-signal-safe handler of our own; SIGXFSZ ignored; `_exit`) and read leases (is a
//! file still open for writing?). Only the binary compiles this file (`src/main.rs`), so the
//! library carries none of it.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Exceeding RLIMIT_FSIZE raises SIGXFSZ, which kills by default; ignored, write(2) fails
/// with EFBIG instead and the receiver can report it and go on serving.
pub(crate) fn ignore_file_size_signal() {
    // SAFETY: setting a standard signal's disposition to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
}

/// The signals that ask a process to stop: Ctrl-C, a supervisor's TERM, a closed terminal.
const STOP_SIGNALS: [nix::sys::signal::Signal; 3] = [
    nix::sys::signal::Signal::SIGINT,
    nix::sys::signal::Signal::SIGTERM,
    nix::sys::signal::Signal::SIGHUP,
];

/// How many stop signals (SIGINT, SIGTERM, SIGHUP) arrived since [`stop_on_signals`].
static STOP_SIGNALS_SEEN: AtomicU32 = AtomicU32::new(0);

/// What the handler acts on: the flag the first signal sets, and what the second writes to
/// stderr before it ends the process, with what code.
struct Stop {
    flag: std::sync::Arc<AtomicBool>,
    last_words: &'static [u8],
    code: i32,
    /// The write end of a pipe a stop thread reads (`on_stop`), or -1: one byte wakes it.
    wake: libc::c_int,
}

/// The handler's one word: a pointer to a [`Stop`] that is never freed, published whole with
/// one release store, so the handler (one acquire load) never sees half of one call's words
/// and half of another's.
static STOP: std::sync::atomic::AtomicPtr<Stop> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

/// The handler: async-signal-safe by construction (atomics, write(2), _exit), so installing it
/// is safe for any caller.
extern "C" fn on_stop_signal(_: libc::c_int) {
    let stop = STOP.load(Ordering::Acquire);
    if stop.is_null() {
        return;
    }
    // SAFETY: `stop` came from `Box::leak` in `stop_on_signals` and is never freed, so it
    // points at a live, never again written `Stop` for the rest of the process.
    let stop = unsafe { &*stop };
    if STOP_SIGNALS_SEEN.fetch_add(1, Ordering::SeqCst) == 0 {
        // An atomic store is async-signal-safe.
        stop.flag.store(true, Ordering::SeqCst);
        if stop.wake >= 0 {
            // SAFETY: one byte from a static to a pipe we own (never closed); write(2) is
            // async-signal-safe. A full pipe cannot happen: one byte per process.
            unsafe { libc::write(stop.wake, b"!".as_ptr().cast(), 1) };
        }
        return;
    }
    // SAFETY: a `&'static [u8]`'s pointer and length; write(2) is async-signal-safe.
    unsafe {
        libc::write(
            libc::STDERR_FILENO,
            stop.last_words.as_ptr().cast(),
            stop.last_words.len(),
        )
    };
    exit_now(stop.code);
}

/// On SIGINT, SIGTERM and SIGHUP, sets `flag` (a cancel token's, say), in a handler that runs
/// in the thread the signal interrupts, with no helper thread (a thread is a measurable share
/// of a short-lived process's time: docs/benchmarks.md, "Design choices"). Without
/// `SA_RESTART`, so a blocking `read` or `semop` of that thread returns `EINTR`. A second
/// signal writes `last_words` to stderr and ends the process at once with `code`. Meant to be
/// called once per process; a later call replaces what the handler acts on (the earlier one is
/// kept alive, never freed).
///
/// # Errors
/// `sigaction` failed.
pub(crate) fn stop_on_signals(
    flag: std::sync::Arc<AtomicBool>,
    last_words: &'static [u8],
    code: i32,
) -> io::Result<()> {
    install(Stop {
        flag,
        last_words,
        code,
        wake: -1,
    })
}

/// As [`stop_on_signals`], and at the first signal `then` runs on a thread of its own (one
/// that sleeps in `read(2)` until then: no wake-ups while idle), for a command whose stop is
/// more than a flag: a receiver removes its semaphores at once, which wakes every wait, and
/// ends the process itself if its main thread is stuck. The one mechanism for every command:
/// an async-signal-safe handler; the work that is not is done here, outside it.
pub(crate) fn on_stop(
    flag: std::sync::Arc<AtomicBool>,
    last_words: &'static [u8],
    code: i32,
    then: impl FnOnce() + Send + 'static,
) -> io::Result<()> {
    use std::io::Read;
    // Close-on-exec: an --exec command must not hold it.
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let mut read_end = File::from(read_end);
    std::thread::spawn(move || {
        block_stop_signals();
        let mut byte = [0u8; 1];
        loop {
            match read_end.read(&mut byte) {
                Ok(1) => return then(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => return,
            }
        }
    });
    install(Stop {
        flag,
        last_words,
        code,
        // Kept open for the rest of the process: the handler may write at any time.
        wake: std::os::fd::IntoRawFd::into_raw_fd(write_end),
    })
}

fn install(stop: Stop) -> io::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let stop = Box::leak(Box::new(stop));
    STOP.store(stop, Ordering::Release);
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in STOP_SIGNALS {
        // SAFETY: the handler is async-signal-safe (see `on_stop_signal`), which is what
        // sigaction requires of it.
        unsafe { sigaction(sig, &action) }.map_err(io::Error::from)?;
    }
    Ok(())
}

/// Blocks the stop signals in the calling thread, so that they reach the main thread (and
/// interrupt what it is blocked in) rather than a helper thread.
pub(crate) fn block_stop_signals() {
    let mut set = nix::sys::signal::SigSet::empty();
    for sig in STOP_SIGNALS {
        set.add(sig);
    }
    let _ = set.thread_block();
}

/// Ends the process at once with `code`, running nothing else (safe inside a signal handler,
/// unlike `std::process::exit`).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and takes no pointers; the process ends here.
    unsafe { libc::_exit(code) }
}

/// Whether some process has `file` open for writing, as the kernel tells whoever may take a
/// read lease on it (the file's owner, or a holder of `CAP_LEASE`): `Some(true)` when the
/// lease is refused because a writer has the file open (`EAGAIN`), `Some(false)` when it was
/// granted (it is released at once), `None` where we may not take one (another user's file,
/// a filesystem without leases). `file` must be open read-only.
pub(crate) fn open_for_writing(file: &File) -> Option<bool> {
    ignore_lease_breaks();
    // SAFETY: F_SETLEASE takes an int and acts only on the lease of this descriptor's open
    // file description, which we own; no memory is passed.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) };
    if r == 0 {
        // SAFETY: as above; F_UNLCK drops the lease just taken.
        unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
        return Some(false);
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => Some(true),
        _ => None,
    }
}

/// A writer that opens a file in the instant we hold a lease on it makes the kernel send us
/// SIGIO, whose default action ends the process: we hold leases for two syscalls and take no
/// other SIGIO, so it is ignored once, before the first lease.
fn ignore_lease_breaks() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use nix::sys::signal::{SigHandler, Signal, signal};
        // SAFETY: SIG_IGN runs no code in the handler; nothing in shmxfer waits for SIGIO.
        let _ = unsafe { signal(Signal::SIGIO, SigHandler::SigIgn) };
    });
}
