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
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;

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

// ---------------------------------------------------------------- the consumer

/// What the caller did with a file a producer published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Took {
    /// Written; `stop`: serve no more (after the reply).
    Kept {
        /// Whether to serve no more files after this one.
        stop: bool,
    },
    /// Could not be written: a producer checking MD5 gets an impossible digest.
    Failed,
}

/// The consumer's side: it creates the four objects (and removes them when dropped) and
/// serves producers, one at a time.
pub struct Consumer {
    ch: Arc<Legacy>,
    /// The dead consumer whose leftovers were removed to start, if any.
    predecessor: Option<i32>,
}

/// Lets a stop handler wake a serving consumer (and, as a last resort, remove its objects).
#[derive(Clone)]
pub struct Stopper(Arc<Legacy>);

impl Stopper {
    /// Cancels the consumer's waits, and removes the semaphore sets, which wakes every wait
    /// of the consumer at once (EIDRM).
    pub fn wake(&self) {
        self.0.cancel.cancel();
        let _ = self.0.size_sem.remove();
        let _ = self.0.content_sem.remove();
    }
    /// Removes all four objects.
    pub fn remove(&self) {
        self.0.remove();
    }
}

impl Consumer {
    /// Creates the four objects as the original consumer does (mode `mode`, values 0).
    ///
    /// A consumer killed without a chance to clean up (SIGKILL) leaves its objects behind. If
    /// they are provably a dead consumer's (of our user, of the original's shapes, nothing
    /// attached, their creator gone), they are removed and made anew, as a native receiver
    /// takes over a dead one's channel ([`Consumer::predecessor`] tells).
    ///
    /// # Errors
    /// The objects exist already and are not provably a dead consumer's (another consumer, a
    /// stopped one, another user's leftovers), permission, the kernel.
    pub fn create(content_key: Key, size_key: Key, mode: u32) -> Result<Consumer, LegacyError> {
        match Legacy::create(content_key, size_key, mode) {
            Ok(ch) => Ok(Consumer {
                ch: Arc::new(ch),
                predecessor: None,
            }),
            Err(LegacyError::InUse { .. }) => {
                let Some((pid, leftovers)) = dead_consumer(content_key, size_key) else {
                    return Err(LegacyError::InUse {
                        content: content_key,
                        size: size_key,
                    });
                };
                for remove in leftovers {
                    remove();
                }
                Ok(Consumer {
                    ch: Arc::new(Legacy::create(content_key, size_key, mode)?),
                    predecessor: Some(pid),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The pid of the dead consumer whose leftovers [`Consumer::create`] removed, if it did.
    pub fn predecessor(&self) -> Option<i32> {
        self.predecessor
    }

    /// A handle that stops [`Consumer::serve`] from another thread or a signal handler.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.ch.clone())
    }

    /// Serves producers until `take` says stop or the objects go. Each published file is
    /// handed to `take` (a copy of our own: the digest we reply, with `md5`, is of exactly
    /// these bytes); `note` hears of what was noticed and repaired on the way.
    ///
    /// # Errors
    /// A stop ([`LegacyError::Interrupted`]), the objects removed, the kernel.
    pub fn serve(
        &self,
        md5: bool,
        take: &mut dyn FnMut(&[u8]) -> Took,
        note: &mut dyn FnMut(String),
    ) -> Result<(), LegacyError> {
        serve(&self.ch, md5, take, note)
    }
}

/// A removal of one leftover object.
type Leftover = Box<dyn FnOnce()>;

/// Whether the objects at the keys are what a dead consumer of ours left: each of the
/// original's shape, made and owned by our user, neither segment attached by anyone, and
/// their creator (the segments' `shm_cpid`, one process) gone. Then its pid, and how to
/// remove each object. A stopped consumer is still attached, another user's objects are
/// theirs, and anything else at the keys is not ours to judge: `None`.
fn dead_consumer(content_key: Key, size_key: Key) -> Option<(i32, Vec<Leftover>)> {
    let me = crate::os::geteuid();
    let ours = |p: sysv::Perm| p.uid == me && p.cuid == me;
    let mut creator = None;
    let mut leftovers: Vec<Leftover> = Vec::new();
    for (key, len) in [(content_key, CONTENT_LEN), (size_key, SIZE_LEN)] {
        let Ok(shm) = Shm::open(key) else { continue };
        let st = shm.stat().ok()?;
        if st.size != len || !ours(st.perm) || st.nattch != 0 {
            return None;
        }
        if creator.is_some_and(|c| c != st.cpid) {
            return None;
        }
        creator = Some(st.cpid);
        leftovers.push(Box::new(move || drop(shm.remove())));
    }
    for key in [content_key, size_key] {
        let Ok(set) = SemSet::open(key) else { continue };
        let st = set.stat().ok()?;
        if st.nsems != 1 || !ours(st.perm) {
            return None;
        }
        leftovers.push(Box::new(move || drop(set.remove())));
    }
    let pid = creator?;
    (pid > 0 && !crate::os::process_alive(pid)).then_some((pid, leftovers))
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.ch.remove();
    }
}

/// The consumer's loop. Its invariant: at the top of each round we hold the content
/// semaphore. A producer takes the size semaphore and then queues for the content one; we hand
/// it over only once our own take is queued right behind it, so when the producer releases the
/// content (size and bytes written) the kernel gives it to us inside the producer's own
/// `semop`, however late we are scheduled, and its take-back for the hash ~3 ms later queues
/// behind us. Idle we sleep in a wait-for-zero on the size semaphore: no spinning, no polling.
/// A semaphore is never reset: one that a dead producer held is given back on its behalf, once
/// the kernel's records show nobody alive could give it back.
fn serve(
    ch: &Legacy,
    md5: bool,
    take: &mut dyn FnMut(&[u8]) -> Took,
    note: &mut dyn FnMut(String),
) -> Result<(), LegacyError> {
    // As the original consumer does once: size "0" and the size semaphore released. The
    // content semaphore was created at 0: it is ours.
    ch.size.write(0, &encode_size(0));
    ch.op(ch.size_sem, &[SemOp::give(0)], None)?;
    debug!(content = %ch.content_key, size = %ch.size_key, "legacy objects created; waiting for a producer");
    loop {
        let mut field = [0u8; SIZE_LEN];
        ch.size.read(0, &mut field);
        match decode_size(&field) {
            Some(0) => {
                let why = ch.wait_for_producer()?;
                ch.pass_content(why, note)?;
            }
            size => {
                // A producer published a file and released the content to us. Nobody writes
                // the size field while we hold the content semaphore.
                ch.size.write(0, &encode_size(0));
                let Some(size) = size else {
                    note(format!(
                        "ignored a malformed size field \"{}\"",
                        crate::mechanisms::text::escape(&field)
                    ));
                    continue;
                };
                if receive(ch, size, md5, take) {
                    return Ok(());
                }
                ch.pass_content(Pass::Reply, note)?;
            }
        }
    }
}

/// Takes one published file: hands a copy to `take` and, with `md5`, writes the digest reply.
/// Returns whether to stop.
fn receive(ch: &Legacy, size: usize, md5: bool, take: &mut dyn FnMut(&[u8]) -> Took) -> bool {
    let mut bytes = vec![0u8; size];
    ch.content.read(0, &mut bytes);
    let took = take(&bytes);
    if md5 {
        // The reply the producer reads; after a local failure an impossible digest, so a
        // producer checking MD5 reports the failure instead of success.
        let reply = match took {
            Took::Kept { .. } => hex(&digest::md5(&bytes)),
            Took::Failed => "0".repeat(32),
        };
        let mut r = reply.into_bytes();
        r.push(0);
        ch.content.write(0, &r);
    }
    matches!(took, Took::Kept { stop: true })
}

/// Why we hand the content semaphore over.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pass {
    /// A producer took the size semaphore and will queue for the content one.
    Arrival,
    /// We wrote a file (and the reply): its producer takes the content back to read the reply,
    /// if it checks MD5.
    Reply,
}

/// How long to wait between looks at the queue while a hand-over is due: short at first (a
/// producer queues within microseconds of taking the size semaphore), then longer.
fn backoff(round: u32) -> Duration {
    Duration::from_micros(50u64 << round.min(7))
}

impl Legacy {
    /// Idle: sleeps until a producer takes the size semaphore (wait-for-zero), waking every
    /// 2 s only to notice a stop request, or a producer queued for the content semaphore while
    /// nobody holds the size one. That is one waiting for its MD5 reply after another took it
    /// (two original producers at once can swap replies): left queued, it would wait for
    /// ever, so it is handed the content semaphore like any reply's taker.
    fn wait_for_producer(&self) -> Result<Pass, LegacyError> {
        loop {
            match self.op(self.size_sem, &[SemOp::zero(0)], Some(IDLE_CHECK)) {
                Ok(()) => return Ok(Pass::Arrival),
                Err(LegacyError::TimedOut { .. } | LegacyError::Interrupted)
                    if !self.cancel.is_cancelled() =>
                {
                    if self.content_sem.waiting(0)? >= 1 && self.size_sem.value(0)? > 0 {
                        return Ok(Pass::Reply);
                    }
                }
                Err(_) if self.cancel.is_cancelled() => {
                    return Err(LegacyError::Interrupted);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Producers attached to the segments besides us: every producer attaches both before it
    /// takes a semaphore, and the kernel detaches a producer that dies.
    fn producers_attached(&self) -> u64 {
        self.size_shm
            .stat()
            .map_or(0, |s| s.nattch.saturating_sub(1))
    }

    /// Hands the content semaphore (which we hold) to the producer queued for it, with our own
    /// take queued right behind, and returns once we hold it again. If nobody comes for it
    /// (`Reply` to a producer that does not check MD5, or an `Arrival` whose producer died
    /// holding the size semaphore), we keep it.
    fn pass_content(&self, why: Pass, note: &mut dyn FnMut(String)) -> Result<(), LegacyError> {
        if !self.wait_for_taker(why, note)? {
            return Ok(());
        }
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::channel();
            let sem = self.content_sem;
            scope.spawn(move || {
                let _ = tx.send(sem.op(&[SemOp::take(0)], None));
            });
            // Our take must be queued behind the producer's before we give the semaphore up.
            let t = Instant::now();
            while self.content_sem.waiting(0)? < 2 && t.elapsed() < Duration::from_secs(1) {
                std::thread::sleep(Duration::from_micros(20));
            }
            self.op(self.content_sem, &[SemOp::give(0)], None)?;
            self.await_content(&rx, note)
        })
    }

    /// Waits until someone is queued for the content semaphore. Returns false if nobody will
    /// come: no producer is left that could.
    fn wait_for_taker(&self, why: Pass, note: &mut dyn FnMut(String)) -> Result<bool, LegacyError> {
        let mut suspect = false;
        let mut checked = Instant::now();
        for round in 0u32.. {
            if self.content_sem.waiting(0)? >= 1 {
                return Ok(true);
            }
            if self.cancel.is_cancelled() {
                return Err(LegacyError::Interrupted);
            }
            let attached = self.producers_attached();
            match why {
                // A producer that does not check MD5 exits right after its release.
                Pass::Reply if attached == 0 => return Ok(false),
                Pass::Reply => {}
                Pass::Arrival if self.size_sem.value(0)? > 0 => return Ok(false),
                // Nobody alive holds the size semaphore if every attached producer is queued
                // for it: its holder died. Seen twice, a slice apart, it is given back.
                Pass::Arrival if checked.elapsed() >= SLICE => {
                    checked = Instant::now();
                    let dead = attached <= self.size_sem.waiting(0)? as u64;
                    if dead && suspect {
                        note("a producer died holding the size semaphore; released it for the next one".into());
                        self.op(self.size_sem, &[SemOp::give(0)], None)?;
                        return Ok(false);
                    }
                    suspect = dead;
                }
                Pass::Arrival => {}
            }
            std::thread::sleep(backoff(round));
        }
        unreachable!()
    }

    /// After our hand-over: waits for our queued take to complete. If the producer that took
    /// the semaphore dies holding it (the original dies so when it cannot decode a reply), we
    /// give it back on its behalf: our take then completes, and whatever it left is discarded.
    fn await_content(
        &self,
        rx: &std::sync::mpsc::Receiver<Result<(), WaitError>>,
        note: &mut dyn FnMut(String),
    ) -> Result<(), LegacyError> {
        let me = crate::os::getpid();
        let mut gave_back = false;
        loop {
            match rx.recv_timeout(SLICE) {
                Ok(Ok(())) => break,
                Ok(Err(e)) => return Err(self.wait_error(e, None)),
                Err(_) => {}
            }
            if self.cancel.is_cancelled() {
                return Err(LegacyError::Interrupted);
            }
            // Taken, and the last to touch it (the one it was handed to: the kernel records
            // the waiter whose take it completes) is dead. Looked up anew each slice: the
            // semaphore may pass through several producers (two at once swap their turns),
            // and any of them may die holding it.
            let holder = self.content_sem.last_pid(0)?;
            if self.content_sem.value(0)? == 0
                && holder != me
                && !crate::os::process_running(holder)
            {
                note(format!(
                    "a producer (pid {holder}) died holding the content semaphore; released it"
                ));
                self.op(self.content_sem, &[SemOp::give(0)], None)?;
                gave_back = true;
            }
        }
        if gave_back {
            // Whatever the dead producer wrote is not a file.
            self.size.write(0, &encode_size(0));
        }
        Ok(())
    }

    fn wait_error(&self, e: WaitError, timeout: Option<Duration>) -> LegacyError {
        match e {
            WaitError::Sys(e) if e.is_gone() => LegacyError::Removed,
            WaitError::Sys(e) => e.into(),
            WaitError::TimedOut => LegacyError::TimedOut {
                secs: timeout.map_or(0.0, |t| t.as_secs_f64()),
            },
            WaitError::Interrupted => LegacyError::Interrupted,
        }
    }
}

// ---------------------------------------------------------------- the producer

/// The producer's side: attached to a consumer's four objects.
pub struct Producer {
    ch: Legacy,
    /// Told once per file when it waits for another of shmxfer's producers.
    on_wait: Option<WaitHook>,
}

/// What a producer calls when a file waits for another of shmxfer's producers.
pub type WaitHook = Box<dyn Fn(&Path) + Send + Sync>;

impl Producer {
    /// Attaches to the consumer's objects, waiting for them to appear until `deadline`.
    ///
    /// # Errors
    /// No consumer, objects of another shape, permission.
    pub fn connect(
        content_key: Key,
        size_key: Key,
        deadline: Option<Instant>,
    ) -> Result<Producer, LegacyError> {
        Ok(Producer {
            ch: connect(content_key, size_key, deadline)?,
            on_wait: None,
        })
    }

    /// Calls `f` with the turn lock's path when a file has to wait for another of shmxfer's
    /// producers (once per file).
    pub fn on_wait(&mut self, f: WaitHook) {
        self.on_wait = Some(f);
    }

    /// Stops this producer's waits when `cancel` is cancelled.
    pub fn set_cancel(&mut self, cancel: Cancel) {
        self.ch.cancel = cancel;
    }

    /// Hands `data` (1 to 5,000,000 bytes) to the consumer and, with `md5`, checks its reply.
    /// `path` names the file in errors.
    ///
    /// # Errors
    /// [`LegacyError::Size`] for empty or oversized `data`; the consumer went away,
    /// `deadline` ran out, a stop, an MD5 disagreement.
    pub fn send(
        &self,
        path: &Path,
        data: &[u8],
        md5: bool,
        deadline: Option<Instant>,
    ) -> Result<(), LegacyError> {
        // The original's size field cannot say 0, and its segment holds 5,000,000 bytes.
        if data.is_empty() || data.len() > CONTENT_LEN {
            return Err(LegacyError::Size {
                path: path.into(),
                size: data.len() as u64,
            });
        }
        // The original protocol cannot tell two producers apart: one may release the content
        // semaphore to the other instead of the consumer. shmxfer's producers take turns
        // through a lock of their own, which the original consumer never sees.
        let bound =
            deadline.map(|d| (d, d.saturating_duration_since(Instant::now()).as_secs_f64()));
        let mut waiting = |p: &Path| {
            if let Some(f) = &self.on_wait {
                f(p);
            }
        };
        let _turn = producer_lock(self.ch.content_key, bound, &self.ch.cancel, &mut waiting)?;
        send_one(&self.ch, path, data, md5, deadline)
    }
}

/// Where shmxfer's producers for the consumer at `content_key` take turns: a lock file in
/// `/dev/shm` (shared memory's own tmpfs, seen by every process that shares the IPC namespace
/// on an ordinary host), held with `flock` for one file's whole hand-over, released by the
/// kernel if we die. The holder removes the file before it lets go, so none is left behind;
/// a sender that locked a file someone removed meanwhile (the path now names another file, or
/// none) locks anew. `/dev/shm` is writable by everyone: the path is opened without following
/// a link and without blocking, and used only if it is a regular file of our own; anything
/// else is an error that names it and its owner. Waiting for another producer's turn is said
/// once (`waiting`), bounded by `deadline`, and sleeps between looks.
fn producer_lock(
    content_key: Key,
    deadline: Option<(Instant, f64)>,
    cancel: &Cancel,
    waiting: &mut dyn FnMut(&Path),
) -> Result<Turn, LegacyError> {
    use nix::fcntl::{Flock, FlockArg};
    use std::os::unix::fs::MetadataExt;
    let path = PathBuf::from(format!(
        "/dev/shm/.shmxfer-legacy-{:08x}.lock",
        content_key.0
    ));
    let same = |f: &fs::File| {
        let (Ok(a), Ok(b)) = (f.metadata(), fs::symlink_metadata(&path)) else {
            return false;
        };
        (a.dev(), a.ino()) == (b.dev(), b.ino())
    };
    let mut said = false;
    for round in 0u32.. {
        let file = open_lock(&path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) if same(&lock) => return Ok(Turn { _lock: lock, path }),
            // Removed by the holder we waited for: lock the one at the path now.
            Ok(_) => continue,
            Err(_) => {}
        }
        if cancel.is_cancelled() {
            return Err(LegacyError::Interrupted);
        }
        if let Some((d, secs)) = deadline
            && Instant::now() >= d
        {
            return Err(LegacyError::TurnTimedOut { path, secs });
        }
        if !std::mem::replace(&mut said, true) {
            waiting(&path);
        }
        // Turns last milliseconds: look again soon, then less often.
        std::thread::sleep(Duration::from_micros(500u64 << round.min(6)));
    }
    unreachable!()
}

/// Opens (or makes, mode 0600) the turn lock: never through a link, never blocking on a FIFO,
/// and only a regular file of ours.
fn open_lock(path: &Path) -> Result<fs::File, LegacyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let refuse = |why: String| LegacyError::Lock {
        path: path.into(),
        why,
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| {
            // What is there says more than the errno, which depends on the host's
            // fs.protected_* settings (ELOOP, or EACCES for another user's file).
            let what = fs::symlink_metadata(path).ok().and_then(|m| unfit(&m));
            refuse(what.unwrap_or_else(|| crate::mechanisms::text::io_text(&e)))
        })?;
    let md = file
        .metadata()
        .map_err(|e| refuse(crate::mechanisms::text::io_text(&e)))?;
    match unfit(&md) {
        Some(why) => Err(refuse(why)),
        None => Ok(file),
    }
}

/// Why a file is not one to take turns through: not a regular file of ours.
fn unfit(md: &fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    // Looked up (NSS) only to be said: a fit file, met on every look at the lock, needs none.
    let owner = || crate::os::user_name(md.uid());
    let t = md.file_type();
    if t.is_symlink() {
        Some(format!("a symbolic link (of {})", owner()))
    } else if !t.is_file() {
        Some(format!("not a regular file (of {})", owner()))
    } else if md.uid() != crate::os::geteuid() {
        Some(format!("a file of {}, not yours", owner()))
    } else {
        None
    }
}

/// Our turn among shmxfer's producers: the lock file is removed, then unlocked, when it ends.
struct Turn {
    /// Held, not read: dropping it unlocks.
    _lock: nix::fcntl::Flock<fs::File>,
    path: PathBuf,
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Before the lock goes (with the field, after this): a sender waiting on this file
        // then finds the path gone or another file's, and locks anew.
        let _ = fs::remove_file(&self.path);
    }
}

/// Reads the whole file (at most 5,000,000 bytes), refusing sizes the protocol cannot carry
/// before any semaphore is touched.
pub fn read_input(path: &Path) -> Result<Vec<u8>, LegacyError> {
    let input = |source| LegacyError::Input {
        path: path.into(),
        source,
    };
    let mut data = Vec::new();
    if path.as_os_str() == "-" {
        io::stdin()
            .take(CONTENT_LEN as u64 + 1)
            .read_to_end(&mut data)
            .map_err(input)?;
    } else {
        let f = fs::File::open(path).map_err(input)?;
        let md = f.metadata().map_err(input)?;
        if md.is_dir() {
            return Err(input(io::Error::from_raw_os_error(libc::EISDIR)));
        }
        if md.len() > CONTENT_LEN as u64 {
            return Err(LegacyError::Size {
                path: path.into(),
                size: md.len(),
            });
        }
        f.take(CONTENT_LEN as u64 + 1)
            .read_to_end(&mut data)
            .map_err(input)?;
    }
    if data.is_empty() || data.len() > CONTENT_LEN {
        return Err(LegacyError::Size {
            path: path.into(),
            size: data.len() as u64,
        });
    }
    Ok(data)
}

fn connect(
    content_key: Key,
    size_key: Key,
    deadline: Option<Instant>,
) -> Result<Legacy, LegacyError> {
    loop {
        match Legacy::open(content_key, size_key) {
            Err(LegacyError::NoConsumer { .. }) if deadline.is_some_and(|d| Instant::now() < d) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

fn send_one(
    ch: &Legacy,
    path: &Path,
    data: &[u8],
    md5: bool,
    deadline: Option<Instant>,
) -> Result<(), LegacyError> {
    // The consumer made the content segment and stays attached to it while it lives: its pid
    // alone could be reused, its attachment (in the kernel's map of that process) cannot.
    let content = ch.content_shm.stat()?;
    let (consumer, shmid) = (content.cpid, ch.content_shm.id());
    let gone = || (!crate::os::process_attached(consumer, shmid)).then_some(consumer);
    // Left over by a consumer that died: said as such before any wait (the full check, the
    // consumer's map, is for the waits; a dead pid is enough to tell here).
    if !crate::os::process_running(consumer) {
        return Err(LegacyError::ConsumerDead {
            pid: consumer,
            content: ch.content_key,
            size: ch.size_key,
        });
    }
    let t = Instant::now();
    ch.wait(ch.size_sem, SemOp::take(0).undo(), deadline, &gone)?;
    if let Err(e) = ch.wait(ch.content_sem, SemOp::take(0).undo(), deadline, &gone) {
        let _ = ch.op(ch.size_sem, &[SemOp::give(0).undo()], None);
        return Err(e);
    }
    debug!(
        waited_ms = t.elapsed().as_millis() as u64,
        "took both semaphores"
    );
    // The content first, then its size: if we die anywhere from here on, SEM_UNDO gives both
    // semaphores back, and a consumer that then reads a size finds every byte of it written.
    ch.content.write(0, data);
    ch.size.write(0, &encode_size(data.len()));
    ch.op(ch.size_sem, &[SemOp::give(0).undo()], None)?;
    // Hand the content over only to a consumer already blocked on it, so our take-back for
    // the hash (below) cannot overtake it. There is no event for "someone waits", so this one
    // step polls, briefly, while the consumer reads the size.
    let poll_until = Instant::now() + Duration::from_secs(10);
    while ch.content_sem.waiting(0).unwrap_or(1) < 1 {
        if let Some(pid) = gone() {
            let _ = ch.op(ch.content_sem, &[SemOp::give(0).undo()], None);
            return Err(LegacyError::ConsumerGone { pid });
        }
        if Instant::now() > poll_until || ch.cancel.is_cancelled() {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    ch.op(ch.content_sem, &[SemOp::give(0).undo()], None)?;
    debug!(bytes = data.len(), "content released to the consumer");
    match md5 {
        true => take_back_digest(ch, path, data, deadline, &gone),
        false => Ok(()),
    }
}

/// With MD5: takes the content semaphore back, reads the consumer's digest of what it wrote,
/// and compares it with ours.
fn take_back_digest(
    ch: &Legacy,
    path: &Path,
    data: &[u8],
    deadline: Option<Instant>,
    gone: &dyn Fn() -> Option<i32>,
) -> Result<(), LegacyError> {
    ch.wait(ch.content_sem, SemOp::take(0).undo(), deadline, gone)?;
    let mut reply = [0u8; 32];
    ch.content.read(0, &mut reply);
    ch.op(ch.content_sem, &[SemOp::give(0).undo()], None)?;
    let ours = hex(&digest::md5(data));
    if reply != ours.as_bytes() {
        return Err(LegacyError::Md5 {
            path: path.into(),
            ours,
            theirs: reply.to_vec(),
        });
    }
    debug!(md5 = %ours, "consumer's digest matches");
    Ok(())
}

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
