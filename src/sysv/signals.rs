//! Signals: the stop handler (a safe API over an async-signal-safe handler of our own),
//! SIGXFSZ ignored, `_exit`.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Exceeding RLIMIT_FSIZE raises SIGXFSZ, which kills by default; ignored, write(2) fails
/// with EFBIG instead and the receiver can report it and go on serving.
pub fn ignore_file_size_signal() {
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
/// The flag the first signal sets: an `Arc<AtomicBool>` turned into a pointer that is never
/// freed, so the handler may use it at any time.
static STOP_FLAG: std::sync::atomic::AtomicPtr<AtomicBool> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());
/// What the second signal writes to stderr before it ends the process, and with what code:
/// set before the handler is installed, only read inside it.
static LAST_WORDS: std::sync::atomic::AtomicPtr<u8> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());
static LAST_WORDS_LEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static LAST_CODE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(130);

/// The handler: async-signal-safe by construction (atomics, write(2), _exit), so installing it
/// is safe for any caller.
extern "C" fn on_stop_signal(_: libc::c_int) {
    if STOP_SIGNALS_SEEN.fetch_add(1, Ordering::SeqCst) == 0 {
        let flag = STOP_FLAG.load(Ordering::SeqCst);
        if !flag.is_null() {
            // SAFETY: `flag` came from `Arc::into_raw` in `stop_on_signals` and is never
            // released, so it points at a live AtomicBool; an atomic store is
            // async-signal-safe.
            unsafe { &*flag }.store(true, Ordering::SeqCst);
        }
        return;
    }
    let words = LAST_WORDS.load(Ordering::SeqCst);
    let len = LAST_WORDS_LEN.load(Ordering::SeqCst);
    if !words.is_null() {
        // SAFETY: `words` and `len` describe a `&'static [u8]` (stored together in
        // `stop_on_signals` before the handler was installed); write(2) is async-signal-safe.
        unsafe { libc::write(libc::STDERR_FILENO, words.cast(), len) };
    }
    exit_now(LAST_CODE.load(Ordering::SeqCst));
}

/// On SIGINT, SIGTERM and SIGHUP, sets `flag` (a cancel token's, say), in a handler that runs
/// in the thread the signal interrupts, with no helper thread (a thread is a measurable share
/// of a short-lived process's time: docs/benchmarks.md, "Design choices"). Without `SA_RESTART`, so a blocking `read` or
/// `semop` of that thread returns `EINTR`. A second signal writes `last_words` to stderr and
/// ends the process at once with `code`. Meant to be called once per process; a later call
/// replaces the flag (the earlier one is kept alive, never freed).
///
/// # Errors
/// `sigaction` failed.
pub fn stop_on_signals(
    flag: std::sync::Arc<AtomicBool>,
    last_words: &'static [u8],
    code: i32,
) -> io::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    LAST_WORDS_LEN.store(last_words.len(), Ordering::SeqCst);
    LAST_WORDS.store(last_words.as_ptr().cast_mut(), Ordering::SeqCst);
    LAST_CODE.store(code, Ordering::SeqCst);
    STOP_FLAG.store(std::sync::Arc::into_raw(flag).cast_mut(), Ordering::SeqCst);
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
pub fn block_stop_signals() {
    let mut set = nix::sys::signal::SigSet::empty();
    for sig in STOP_SIGNALS {
        set.add(sig);
    }
    let _ = set.thread_block();
}

/// Ends the process at once with `code`, running nothing else (safe inside a signal handler,
/// unlike `std::process::exit`).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and takes no pointers; the process ends here.
    unsafe { libc::_exit(code) }
}
