//! The producer's side: attached to a consumer's four objects, one file at a time, taking
//! turns with shmxfer's other producers through a lock file.

use std::time::{Duration, Instant};

use tracing::debug;

use super::*;

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
