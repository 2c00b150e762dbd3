//! What every command shares at run time: the stop flag that SIGINT/SIGTERM set, and the
//! rollback of a half-made multi-object creation.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Set once SIGINT or SIGTERM arrived; long waits check it between slices.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
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
    pub fn push(&mut self, undo: impl FnOnce() + 'static) {
        self.0.push(Box::new(undo));
    }
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
