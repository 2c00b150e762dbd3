//! What transfers share at run time: the cancel token that stops their waits, and the
//! rollback of a half-made multi-object creation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// A request to stop one transfer's waits: a [`crate::Sender`] or [`crate::Receiver`] checks
/// its own token between wait slices (every 250 ms at most), so two in one program are
/// stopped independently. Clones share the request.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
    noticed: Arc<OnceLock<Instant>>,
}

impl Cancel {
    /// A token nobody has cancelled yet.
    pub fn new() -> Cancel {
        Cancel::default()
    }

    /// Asks every holder of this token (and its clones) to stop.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// The flag itself, for whoever sets it where nothing else may run (a signal handler:
    /// the `shmxfer` command installs one that does only this).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    /// How long ago a wait first noticed the stop (`None` without one): a sender's waits go
    /// on for a short while after it, to hear the answers of files already posted whole.
    pub(crate) fn age(&self) -> Option<Duration> {
        self.is_cancelled()
            .then(|| self.noticed.get_or_init(Instant::now).elapsed())
    }
}

/// Undoes, in reverse order, the steps of a multi-object creation that fails partway (so a
/// half-made channel never outlives the error); `disarm` once every step succeeded.
#[derive(Default)]
pub(crate) struct Rollback(Vec<Box<dyn FnOnce()>>);

impl Rollback {
    /// Adds a step's undo, run before the ones pushed earlier.
    pub(crate) fn push(&mut self, undo: impl FnOnce() + 'static) {
        self.0.push(Box::new(undo));
    }
    /// Every step succeeded: undo nothing.
    pub(crate) fn disarm(mut self) {
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
