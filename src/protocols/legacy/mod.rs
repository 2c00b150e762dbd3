//! `--legacy`: the original system's protocol (../shared/legacy-protocol.md; summarized in
//! docs/protocol.md), so either half of that system can be paired with shmxfer.
//!
//! Four objects: content segment (5,000,000 bytes) and a one-semaphore set at the content key
//! (42), size segment (10 bytes) and a one-semaphore set at the size key (44). Sizes are ASCII
//! decimal with a NUL; `0` means "nothing pending"; the MD5 reply is 32 lowercase hex digits at
//! offset 0 of the content segment.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::mechanisms::digest;
use crate::mechanisms::runtime::Cancel;
use crate::protocols::frame::hex;
use crate::sysv::{self, Fixed, Key, Mapping, SemOp, SemSet, Shm, SysvError, WaitError};

/// The original system's keys and sizes, fixed by its programs.
pub const CONTENT_KEY: Key = Key(42);
/// The original system's size segment key.
pub const SIZE_KEY: Key = Key(44);
/// The original's content segment size: the largest file it carries.
pub(crate) const CONTENT_LEN: usize = 5_000_000;
/// The original's size segment size: a NUL-terminated decimal.
pub(crate) const SIZE_LEN: usize = 10;
/// How long one wait on the peer lasts before we check that the peer still lives.
const SLICE: Duration = Duration::from_millis(250);
/// How often an idle consumer wakes, only to notice a stop request.
const IDLE_CHECK: Duration = Duration::from_secs(2);

/// The original system's two segments, each beside a one-semaphore set at its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The 5,000,000-byte content segment (key 42 by default).
    Content,
    /// The 10-byte size segment (key 44 by default).
    Size,
}

impl Part {
    /// Which of the original's segments one of `size` bytes would be, by shape alone: the
    /// original is configured by editing its keys, so the key says nothing. (A caller also
    /// checks for the one-semaphore set at the same key.)
    pub fn of_size(size: u64) -> Option<Part> {
        match usize::try_from(size) {
            Ok(CONTENT_LEN) => Some(Part::Content),
            Ok(SIZE_LEN) => Some(Part::Size),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
/// Why a transfer with the original system's protocol failed.
#[non_exhaustive]
pub enum LegacyError {
    #[error("no consumer on keys {content}/{size}")]
    /// Nothing at the keys: no consumer runs.
    NoConsumer {
        /// The content key.
        content: Key,
        /// The size key.
        size: Key,
    },
    #[error(
        "the original system's objects already exist at keys {content}/{size}: another consumer runs, or one died"
    )]
    /// The objects exist already (creating them, as a consumer).
    InUse {
        /// The content key.
        content: Key,
        /// The size key.
        size: Key,
    },
    #[error("key {key} holds a {what}, not the original system's: leaving it alone")]
    /// An object of another shape is at one of the keys: never touched.
    Foreign {
        /// That key.
        key: Key,
        /// What is there.
        what: String,
    },
    #[error("{}: {} bytes; the original protocol carries 1 to 5,000,000 bytes (0 means \"nothing\")", path.display(), size)]
    /// The file is empty or over 5,000,000 bytes: the protocol cannot carry it.
    Size {
        /// The file.
        path: PathBuf,
        /// Its size (as far as it was read).
        size: u64,
    },
    #[error(
        "{}: {}",
        crate::mechanisms::text::escape_path(path),
        crate::mechanisms::text::io_text(source)
    )]
    /// The file could not be read.
    Input {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    #[error(
        "{}: MD5 mismatch: sent {ours}, the consumer replied \"{}\" (does it run with -m too?)",
        crate::mechanisms::text::escape_path(path),
        crate::mechanisms::text::escape(theirs)
    )]
    /// The consumer's MD5 reply differs from ours.
    Md5 {
        /// The file.
        path: PathBuf,
        /// Our digest, in hex.
        ours: String,
        /// The consumer's reply, raw.
        theirs: Vec<u8>,
    },
    #[error(
        "the consumer (pid {pid}) that made keys {content}/{size} is gone and left its objects behind"
    )]
    /// The objects at the keys are a dead consumer's leftovers: nobody will take a file.
    ConsumerDead {
        /// The dead consumer's pid.
        pid: i32,
        /// The content key.
        content: Key,
        /// The size key.
        size: Key,
    },
    #[error("the consumer (pid {pid}) went away mid-transfer")]
    /// The consumer died mid-transfer.
    ConsumerGone {
        /// Its pid.
        pid: i32,
    },
    #[error("timed out after {secs}s waiting for the consumer")]
    /// The deadline passed.
    TimedOut {
        /// How long we waited.
        secs: f64,
    },
    #[error(
        "{}: {why}; shmxfer's producers take turns through this file: remove it (`rm {}`) if no `send --legacy` runs",
        crate::mechanisms::text::escape_path(path),
        crate::mechanisms::text::escape_path(path)
    )]
    /// The turn lock's path holds something we will not use: a link, a FIFO or another
    /// special file, another user's file, or one we may not open.
    Lock {
        /// The lock file's path.
        path: PathBuf,
        /// What is wrong with it, naming its owner.
        why: String,
    },
    #[error(
        "timed out after {secs}s waiting for our turn: another shmxfer producer holds {}",
        crate::mechanisms::text::escape_path(path)
    )]
    /// `--wait` ran out while another of shmxfer's producers had its turn.
    TurnTimedOut {
        /// The lock file's path.
        path: PathBuf,
        /// How long we waited.
        secs: f64,
    },
    #[error("the original system's objects were removed while in use")]
    /// The objects were removed under us.
    Removed,
    #[error("permission denied on the original system's objects (keys {content}/{size})")]
    /// The objects do not let us in.
    Permission {
        /// The content key.
        content: Key,
        /// The size key.
        size: Key,
    },
    #[error("interrupted")]
    /// A stop was asked for.
    Interrupted,
    #[error(transparent)]
    /// A SysV call failed.
    Sys(SysvError),
}

impl From<SysvError> for LegacyError {
    /// A set or segment removed under us (a stop, `ipcrm`) is `Removed`.
    fn from(e: SysvError) -> Self {
        if e.is_gone() {
            LegacyError::Removed
        } else {
            LegacyError::Sys(e)
        }
    }
}

impl LegacyError {
    /// What a failed lookup or creation of the four objects means.
    fn from_sys(e: SysvError, content: Key, size: Key) -> LegacyError {
        match e.errno() {
            Some(libc::ENOENT) => LegacyError::NoConsumer { content, size },
            Some(libc::EEXIST) => LegacyError::InUse { content, size },
            _ if e.is_permission() => LegacyError::Permission { content, size },
            _ => e.into(),
        }
    }
}

/// The size field: ASCII decimal and a NUL, as the original writes it.
pub(crate) fn encode_size(n: usize) -> Vec<u8> {
    let mut v = n.to_string().into_bytes();
    v.push(0);
    v
}

/// Reads the size field: digits up to the first NUL (or the field's end), at most
/// 5,000,000. `Some(0)` is "nothing pending"; `None` is garbage.
pub(crate) fn decode_size(b: &[u8]) -> Option<usize> {
    let digits = b.split(|&c| c == 0).next().unwrap_or(&[]);
    if digits.is_empty() || digits.len() > 7 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (n <= CONTENT_LEN).then_some(n)
}

/// Checks once that the segment at `key` holds the original's `N` bytes, so every access to
/// its fields after that is in bounds.
fn shaped<const N: usize>(key: Key, map: Mapping) -> Result<Fixed<N>, LegacyError> {
    Fixed::new(map).map_err(|e| LegacyError::Foreign {
        key,
        what: format!("{}-byte segment", e.size),
    })
}

/// The four objects, attached.
struct Legacy {
    content_key: Key,
    size_key: Key,
    content_shm: Shm,
    size_shm: Shm,
    content_sem: SemSet,
    size_sem: SemSet,
    content: Fixed<CONTENT_LEN>,
    size: Fixed<SIZE_LEN>,
    /// What stops our waits.
    cancel: Cancel,
}

impl Legacy {
    /// Creates the four objects as the original consumer does (mode 0600, values 0).
    fn create(content_key: Key, size_key: Key, mode: u32) -> Result<Legacy, LegacyError> {
        let in_use = |e| LegacyError::from_sys(e, content_key, size_key);
        let mut undo = crate::mechanisms::runtime::Rollback::default();
        let content_shm = Shm::create(content_key, CONTENT_LEN, mode).map_err(in_use)?;
        undo.push(move || drop(content_shm.remove()));
        let size_shm = Shm::create(size_key, SIZE_LEN, mode).map_err(in_use)?;
        undo.push(move || drop(size_shm.remove()));
        let content_sem = SemSet::create(content_key, 1, mode).map_err(in_use)?;
        undo.push(move || drop(content_sem.remove()));
        let size_sem = SemSet::create(size_key, 1, mode).map_err(in_use)?;
        undo.push(move || drop(size_sem.remove()));
        let content = shaped(content_key, content_shm.attach(true)?)?;
        let size = shaped(size_key, size_shm.attach(true)?)?;
        undo.disarm();
        Ok(Legacy {
            content_key,
            size_key,
            content_shm,
            size_shm,
            content_sem,
            size_sem,
            content,
            size,
            cancel: Cancel::new(),
        })
    }

    /// Attaches to existing objects (the producer's side), checking their shapes.
    fn open(content_key: Key, size_key: Key) -> Result<Legacy, LegacyError> {
        let missing = |e| LegacyError::from_sys(e, content_key, size_key);
        let content_shm = Shm::open(content_key).map_err(missing)?;
        let size_shm = Shm::open(size_key).map_err(missing)?;
        let content_sem = SemSet::open(content_key).map_err(missing)?;
        let size_sem = SemSet::open(size_key).map_err(missing)?;
        let content = shaped(content_key, content_shm.attach(true).map_err(missing)?)?;
        let size = shaped(size_key, size_shm.attach(true).map_err(missing)?)?;
        for (key, set) in [(content_key, content_sem), (size_key, size_sem)] {
            let n = set.stat().map_err(missing)?.nsems;
            if n != 1 {
                return Err(LegacyError::Foreign {
                    key,
                    what: format!("set of {n} semaphores"),
                });
            }
        }
        Ok(Legacy {
            content_key,
            size_key,
            content_shm,
            size_shm,
            content_sem,
            size_sem,
            content,
            size,
            cancel: Cancel::new(),
        })
    }

    fn remove(&self) {
        let _ = self.size_sem.remove();
        let _ = self.content_sem.remove();
        let _ = self.size_shm.remove();
        let _ = self.content_shm.remove();
    }

    fn op(&self, set: SemSet, ops: &[SemOp], timeout: Option<Duration>) -> Result<(), LegacyError> {
        set.op(ops, timeout)
            .map_err(|e| self.wait_error(e, timeout))
    }

    /// Takes `op` on `set`, in slices: between slices, gives up if `alive` says the peer died or
    /// a stop was requested, or once `deadline` passes.
    fn wait(
        &self,
        set: SemSet,
        op: SemOp,
        deadline: Option<Instant>,
        alive: &dyn Fn() -> Option<i32>,
    ) -> Result<(), LegacyError> {
        loop {
            let slice = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(l) if !l.is_zero() => l.min(SLICE),
                    _ => return Err(LegacyError::TimedOut { secs: 0.0 }),
                },
                None => SLICE,
            };
            match self.op(set, &[op], Some(slice)) {
                Ok(()) => return Ok(()),
                Err(LegacyError::TimedOut { .. } | LegacyError::Interrupted) => {}
                Err(e) => return Err(e),
            }
            if self.cancel.is_cancelled() {
                return Err(LegacyError::Interrupted);
            }
            if let Some(pid) = alive() {
                return Err(LegacyError::ConsumerGone { pid });
            }
        }
    }
}

mod consumer;
mod handover;
mod producer;

pub use consumer::{Consumer, Stopper, Took};
pub use producer::{Producer, WaitHook, read_input};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_field_is_ascii_decimal_with_a_nul() {
        assert_eq!(encode_size(3_000_000), b"3000000\0");
        assert_eq!(decode_size(b"3000000\0\0\0"), Some(3_000_000));
        assert_eq!(decode_size(b"0\0"), Some(0));
    }

    #[test]
    fn size_field_garbage_and_overflow_are_refused() {
        assert_eq!(decode_size(b"5000001\0"), None);
        assert_eq!(decode_size(b"12a\0"), None);
        assert_eq!(decode_size(b"\0"), None);
        assert_eq!(decode_size(b"9999999999"), None);
        assert_eq!(decode_size(b"-1\0"), None);
    }
}
