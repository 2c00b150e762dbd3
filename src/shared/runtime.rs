//! What every command shares at run time: the stop flag that SIGINT/SIGTERM set, what the
//! main thread is doing (for the threads that may end the process), and the rollback of a
//! half-made multi-object creation.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Set once a stop was asked for ([`request_stop`]) or a stop signal arrived
/// ([`crate::sysv::stop_on_signals`]); long waits check it between slices.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst) || crate::sysv::stop_signals_seen() > 0
}

/// How long ago a stop was first noticed by [`stop_age`]'s callers (not by the signal
/// handler, which may only touch the flag); `None` without a stop.
pub fn stop_age() -> Option<std::time::Duration> {
    static SEEN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    stop_requested().then(|| SEEN.get_or_init(std::time::Instant::now).elapsed())
}

/// Sets the stop flag; returns whether it was set already (a second signal).
pub fn request_stop() -> bool {
    STOP.swap(true, Ordering::SeqCst)
}

/// Undoes, in reverse order, the steps of a multi-object creation that fails partway (so a
/// half-made channel never outlives the error); `disarm` once every step succeeded.
#[derive(Default)]
pub struct Rollback(Vec<Box<dyn FnOnce()>>);

impl Rollback {
    /// Adds a step's undo, run before the ones pushed earlier.
    pub fn push(&mut self, undo: impl FnOnce() + 'static) {
        self.0.push(Box::new(undo));
    }
    /// Every step succeeded: undo nothing.
    pub fn disarm(mut self) {
        self.0.clear();
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        while let Some(f) = self.0.pop() {
            f();
        }
    }
}

/// What the main thread is doing with the file in hand, for a watcher thread or a stop handler
/// that ends the process and must tell the truth about that file.
pub mod phase {
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

    /// Publishes the phase (and, with `file`, which file).
    pub fn set(p: u8, file: Option<&std::path::Path>) {
        if let (Some(f), Ok(mut g)) = (file, FILE.lock()) {
            *g = crate::shared::text::escape_path(f);
        }
        PHASE.store(p, Ordering::SeqCst);
    }
    /// The phase and the last file published.
    pub fn get() -> (u8, String) {
        let f = FILE.lock().map(|g| g.clone()).unwrap_or_default();
        (PHASE.load(Ordering::SeqCst), f)
    }
}
