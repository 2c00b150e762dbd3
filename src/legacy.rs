//! `--legacy`: the original system's protocol (../shared/legacy-protocol.md; summarized in
//! docs/protocol.md), so either half of that system can be paired with shmxfer.
//!
//! Four objects: content segment (5,000,000 bytes) and a one-semaphore set at the content key
//! (42), size segment (10 bytes) and a one-semaphore set at the size key (44). Sizes are ASCII
//! decimal with a NUL; `0` means "nothing pending"; the MD5 reply is 32 lowercase hex digits at
//! offset 0 of the content segment.

use std::cell::Cell;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;

use crate::cli::{RecvArgs, SendArgs};
use crate::exit;
use crate::frame::hex;
use crate::output::{self, Namer, TempFile};
use crate::sysv::{self, Key, Mapping, SemOp, SemSet, Shm, SysvError, WaitError};

/// The original system's keys and sizes, fixed by its programs.
pub const CONTENT_KEY: Key = Key(42);
pub const SIZE_KEY: Key = Key(44);
pub const CONTENT_LEN: usize = 5_000_000;
pub const SIZE_LEN: usize = 10;
/// How long one wait on the peer lasts before we check that the peer still lives.
const SLICE: Duration = Duration::from_millis(250);

/// What a shared memory segment is to the original system, by shape: the original is
/// configured by editing its keys, so the key says nothing. A segment of 5,000,000 or 10 bytes
/// with a one-semaphore set at the same key is its content or size segment.
pub fn shm_role(size: u64, one_sem_at_key: bool) -> Option<&'static str> {
    match (size as usize, one_sem_at_key) {
        (CONTENT_LEN, true) => Some("legacy-content"),
        (SIZE_LEN, true) => Some("legacy-size"),
        _ => None,
    }
}

/// What a semaphore set is to the original system: one semaphore beside a segment of the
/// original's shape (`segment_at_key`: that segment's size).
pub fn sem_role(nsems: u32, segment_at_key: Option<u64>) -> Option<&'static str> {
    match (nsems, segment_at_key.map(|s| s as usize)) {
        (1, Some(CONTENT_LEN)) => Some("legacy-content-sem"),
        (1, Some(SIZE_LEN)) => Some("legacy-size-sem"),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    #[error(
        "no consumer on keys {content}/{size}: start the original `./consumer` (or `shmxfer recv --legacy`) first"
    )]
    NoConsumer { content: Key, size: Key },
    #[error(
        "the original system's objects already exist at keys {content}/{size}: another consumer runs, or one died; `shmxfer clean --legacy` removes leftovers"
    )]
    InUse { content: Key, size: Key },
    #[error("key {key} holds a {what}, not the original system's: leaving it alone")]
    Foreign { key: Key, what: String },
    #[error("{}: {} bytes; the original protocol carries 1 to 5,000,000 bytes (0 means \"nothing\"): use native mode (without --legacy)", path.display(), size)]
    Size { path: PathBuf, size: u64 },
    #[error("{}: {source}", path.display())]
    Input { path: PathBuf, source: io::Error },
    #[error("{}: MD5 mismatch: sent {ours}, the consumer replied {theirs:?} (does it run with -m too?)", path.display())]
    Md5 {
        path: PathBuf,
        ours: String,
        theirs: String,
    },
    #[error("the consumer (pid {pid}) went away mid-transfer")]
    ConsumerGone { pid: i32 },
    #[error("timed out after {secs}s waiting for the consumer")]
    TimedOut { secs: f64 },
    #[error("the original system's objects were removed while in use")]
    Removed,
    #[error("permission denied on the original system's objects (keys {content}/{size})")]
    Permission { content: Key, size: Key },
    #[error("interrupted")]
    Interrupted,
    #[error(transparent)]
    Sys(#[from] SysvError),
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

    pub fn exit_code(&self) -> i32 {
        use LegacyError::*;
        match self {
            NoConsumer { .. } | ConsumerGone { .. } | Removed => exit::UNAVAILABLE,
            InUse { .. } | TimedOut { .. } => exit::TEMPFAIL,
            Foreign { .. } => exit::PROTOCOL,
            Size { .. } | Input { .. } => exit::NOINPUT,
            Md5 { .. } => exit::DATAERR,
            Permission { .. } => exit::NOPERM,
            Interrupted => exit::INTERRUPTED,
            Sys(_) => exit::OSERR,
        }
    }
}

/// The size field: ASCII decimal and a NUL, as the original writes it.
pub fn encode_size(n: usize) -> Vec<u8> {
    let mut v = n.to_string().into_bytes();
    v.push(0);
    v
}

/// Reads the size field: digits up to the first NUL (or the field's end), at most
/// 5,000,000. `Some(0)` is "nothing pending"; `None` is garbage.
pub fn decode_size(b: &[u8]) -> Option<usize> {
    let digits = b.split(|&c| c == 0).next().unwrap_or(&[]);
    if digits.is_empty() || digits.len() > 7 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    (n <= CONTENT_LEN).then_some(n)
}

/// The four objects, attached.
struct Legacy {
    content_key: Key,
    size_key: Key,
    content_shm: Shm,
    size_shm: Shm,
    content_sem: SemSet,
    size_sem: SemSet,
    content: Mapping,
    size: Mapping,
}

impl Legacy {
    /// Creates the four objects as the original consumer does (mode 0600, values 0).
    fn create(content_key: Key, size_key: Key, mode: u32) -> Result<Legacy, LegacyError> {
        let in_use = |e| LegacyError::from_sys(e, content_key, size_key);
        let mut undo = crate::runtime::Rollback::default();
        let content_shm = Shm::create(content_key, CONTENT_LEN, mode).map_err(in_use)?;
        undo.push(move || drop(content_shm.remove()));
        let size_shm = Shm::create(size_key, SIZE_LEN, mode).map_err(in_use)?;
        undo.push(move || drop(size_shm.remove()));
        let content_sem = SemSet::create(content_key, 1, mode).map_err(in_use)?;
        undo.push(move || drop(content_sem.remove()));
        let size_sem = SemSet::create(size_key, 1, mode).map_err(in_use)?;
        undo.push(move || drop(size_sem.remove()));
        let content = content_shm.attach(true)?;
        let size = size_shm.attach(true)?;
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
        })
    }

    /// Attaches to existing objects (the producer's side), checking their shapes.
    fn open(content_key: Key, size_key: Key) -> Result<Legacy, LegacyError> {
        let missing = |e| LegacyError::from_sys(e, content_key, size_key);
        let content_shm = Shm::open(content_key).map_err(missing)?;
        let size_shm = Shm::open(size_key).map_err(missing)?;
        let content_sem = SemSet::open(content_key).map_err(missing)?;
        let size_sem = SemSet::open(size_key).map_err(missing)?;
        let content = content_shm.attach(true).map_err(missing)?;
        let size = size_shm.attach(true).map_err(missing)?;
        for (key, map, want) in [
            (content_key, &content, CONTENT_LEN),
            (size_key, &size, SIZE_LEN),
        ] {
            if map.len() < want {
                return Err(LegacyError::Foreign {
                    key,
                    what: format!("{}-byte segment", map.len()),
                });
            }
        }
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
        })
    }

    fn remove(&self) {
        let _ = self.size_sem.remove();
        let _ = self.content_sem.remove();
        let _ = self.size_shm.remove();
        let _ = self.content_shm.remove();
    }

    fn op(&self, set: SemSet, ops: &[SemOp], timeout: Option<Duration>) -> Result<(), LegacyError> {
        set.op(ops, timeout).map_err(|e| match e {
            WaitError::Sys(e) if e.is_gone() => LegacyError::Removed,
            WaitError::Sys(e) => e.into(),
            WaitError::TimedOut => LegacyError::TimedOut {
                secs: timeout.map_or(0.0, |t| t.as_secs_f64()),
            },
            WaitError::Interrupted => LegacyError::Interrupted,
        })
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
            if crate::runtime::stop_requested() {
                return Err(LegacyError::Interrupted);
            }
            if let Some(pid) = alive() {
                return Err(LegacyError::ConsumerGone { pid });
            }
        }
    }
}

// ---------------------------------------------------------------- recv --legacy

pub fn recv(args: &RecvArgs) -> i32 {
    if args.stdout || args.keep_name || args.preserve {
        crate::error(
            "--stdout, --keep-name and --preserve need the native protocol (the original carries no name)",
        );
        return exit::USAGE;
    }
    let mut namer = match output::prepare(&args.dir, &args.basename, &args.ext) {
        Ok(n) => n,
        Err(e) => {
            let e = crate::recv::RecvError::from(e);
            crate::error(&e);
            return e.exit_code();
        }
    };
    let (content_key, size_key) = args.channel.legacy_keys();
    sysv::ignore_file_size_signal();
    let ch = match Legacy::create(content_key, size_key, args.mode) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            crate::error(&e);
            return e.exit_code();
        }
    };
    let guard = ch.clone();
    let _ = ctrlc::set_handler(move || {
        crate::runtime::request_stop();
        // Removing the sets wakes every wait of ours at once (EIDRM).
        let _ = guard.size_sem.remove();
        let _ = guard.content_sem.remove();
        std::thread::sleep(Duration::from_secs(3));
        guard.remove();
        std::process::exit(exit::INTERRUPTED);
    });
    let r = serve(&ch, args, &mut namer);
    ch.remove();
    match r {
        Ok(()) => exit::OK,
        Err(LegacyError::Interrupted | LegacyError::Removed)
            if crate::runtime::stop_requested() =>
        {
            exit::INTERRUPTED
        }
        Err(e) => {
            crate::error(&e);
            e.exit_code()
        }
    }
}

fn serve(ch: &Legacy, args: &RecvArgs, namer: &mut Namer) -> Result<(), LegacyError> {
    let quiet = args.verbosity.quiet;
    // As the original consumer does once: size "0", both semaphores released.
    ch.size
        .write(0, &encode_size(0))
        .expect("size segment holds the field");
    ch.op(ch.size_sem, &[SemOp::give(0)], None)?;
    ch.op(ch.content_sem, &[SemOp::give(0)], None)?;
    debug!(content = %ch.content_key, size = %ch.size_key, "legacy objects created; waiting for a producer");
    loop {
        // Idle: the size semaphore stays released and we sleep until a producer takes it
        // (wait-for-zero). No spinning, no polling, no timeout.
        match ch.op(ch.size_sem, &[SemOp::zero(0)], None) {
            Err(LegacyError::Interrupted) if !crate::runtime::stop_requested() => continue,
            r => r?,
        }
        let t = Instant::now();
        // The producer holds the size semaphore while it writes the size: take it when it
        // lets go. If the producer dies holding it (the original wedged for good here), the
        // last pid to touch the semaphore is dead and we reset instead.
        let seen = Cell::new(0);
        let producer_dead = || producer_dead(ch, &seen);
        match ch.wait(ch.size_sem, SemOp::take(0), None, &producer_dead) {
            Err(LegacyError::ConsumerGone { pid }) => {
                crate::warn(
                    quiet,
                    format_args!("a producer (pid {pid}) died holding the semaphores; reset"),
                );
                reset(ch)?;
                continue;
            }
            r => r?,
        }
        let mut field = [0u8; SIZE_LEN];
        ch.size.read(0, &mut field).expect("size field in bounds");
        let size = decode_size(&field);
        ch.size
            .write(0, &encode_size(0))
            .expect("size field in bounds");
        ch.op(ch.size_sem, &[SemOp::give(0)], None)?;
        let Some(size) = size.filter(|&n| n > 0) else {
            if size.is_none() {
                crate::warn(
                    quiet,
                    format_args!(
                        "ignored a malformed size field {:?}",
                        String::from_utf8_lossy(&field)
                    ),
                );
            }
            continue;
        };
        debug!(size, "size read; waiting for the content");
        // Straight into a blocking take: the kernel hands us the content semaphore the moment
        // the producer releases it, so its quick take-back for the hash cannot win.
        match ch.wait(ch.content_sem, SemOp::take(0), None, &producer_dead) {
            Err(LegacyError::ConsumerGone { pid }) => {
                crate::warn(
                    quiet,
                    format_args!(
                        "a producer (pid {pid}) died holding the content semaphore; reset"
                    ),
                );
                reset(ch)?;
                continue;
            }
            r => r?,
        }
        // A copy of our own: the digest we reply is of exactly the bytes we write.
        let mut bytes = vec![0u8; size];
        ch.content
            .read(0, &mut bytes)
            .expect("size checked against the segment");
        let digest = md5::compute(&bytes).0;
        let result = write_out(&bytes, namer);
        if args.md5 {
            // The reply the producer reads; on a local failure an impossible digest, so a
            // producer checking MD5 reports the failure instead of success.
            let reply = if result.is_ok() {
                hex(&digest)
            } else {
                "0".repeat(32)
            };
            let mut r = reply.into_bytes();
            r.push(0);
            ch.content.write(0, &r).expect("reply fits");
        }
        ch.op(ch.content_sem, &[SemOp::give(0)], None)?;
        match result {
            Ok(path) => {
                debug!(path = %path.display(), size, elapsed_ms = t.elapsed().as_millis() as u64, "committed");
                if !quiet {
                    let line = if args.md5 {
                        format!("{}\t{size}\t{}", path.display(), hex(&digest))
                    } else {
                        format!("{}\t{size}", path.display())
                    };
                    crate::out_line(&line);
                }
                if args.once || args.stdout {
                    return Ok(());
                }
            }
            Err(e) => crate::warn(
                quiet,
                format_args!("could not write a received file: {e}; discarded"),
            ),
        }
    }
}

/// Whether the producer we wait for died holding the semaphores. The original producer uses
/// no SEM_UNDO, so the semaphores' last pids are the only trace of it; our own waits update
/// them too (so ours is skipped), and for a moment after a producer's first take the other
/// one can still name an earlier producer, so a pid counts as dead only when seen dead on two
/// checks in a row (a slice apart).
fn producer_dead(ch: &Legacy, seen: &Cell<i32>) -> Option<i32> {
    let me = sysv::getpid();
    let dead = [ch.size_sem, ch.content_sem]
        .iter()
        .filter_map(|s| s.last_pid(0).ok())
        .find(|&p| p > 0 && p != me && !sysv::process_alive(p));
    match dead {
        Some(p) if seen.get() == p => Some(p),
        other => {
            seen.set(other.unwrap_or(0));
            None
        }
    }
}

/// After a producer died holding the semaphores: back to the idle state.
fn reset(ch: &Legacy) -> Result<(), LegacyError> {
    ch.size
        .write(0, &encode_size(0))
        .expect("size field in bounds");
    for set in [ch.size_sem, ch.content_sem] {
        set.set(0, 1).map_err(|e| {
            if e.is_gone() {
                LegacyError::Removed
            } else {
                e.into()
            }
        })?;
    }
    Ok(())
}

/// Writes one file as native recv does: an unnamed temporary file, named without replacing.
fn write_out(bytes: &[u8], namer: &mut Namer) -> io::Result<PathBuf> {
    let mut tmp = TempFile::create(namer.dir())?;
    tmp.file.write_all(bytes)?;
    namer.commit(&mut tmp, None)
}

// ---------------------------------------------------------------- send --legacy

pub fn send(args: &SendArgs) -> i32 {
    let (content_key, size_key) = args.channel.legacy_keys();
    let deadline = args
        .wait
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    // Every semaphore we take, we take with SEM_UNDO: if we die or are interrupted at any
    // point, the kernel gives it back. The original producer wedged its consumer for good.
    let _ = ctrlc::set_handler(|| {
        crate::error("interrupted");
        std::process::exit(exit::INTERRUPTED);
    });
    let mut code = exit::OK;
    let mut ch: Option<Legacy> = None;
    for path in &args.files {
        let data = match read_input(path) {
            Ok(d) => d,
            Err(e) => {
                crate::error(&e);
                code = merge(code, e.exit_code());
                continue;
            }
        };
        if ch.is_none() {
            ch = match connect(content_key, size_key, deadline) {
                Ok(c) => Some(c),
                Err(e) => {
                    crate::error(&e);
                    return e.exit_code();
                }
            };
        }
        let c = ch.as_ref().expect("connected above");
        match send_one(c, path, &data, args.md5, deadline) {
            Ok(()) => {}
            Err(e @ LegacyError::Md5 { .. }) => {
                crate::error(&e);
                code = merge(code, e.exit_code());
            }
            Err(e) => {
                crate::error(&e);
                return e.exit_code();
            }
        }
    }
    code
}

fn merge(code: i32, new: i32) -> i32 {
    if code == exit::OK || code == new {
        new
    } else {
        exit::FAILURE
    }
}

/// Reads the whole file (at most 5,000,000 bytes), refusing sizes the protocol cannot carry
/// before any semaphore is touched.
fn read_input(path: &Path) -> Result<Vec<u8>, LegacyError> {
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
    // The consumer made the content segment; its creator pid is how we tell it is alive.
    let consumer = ch.content_shm.stat()?.cpid;
    let gone = || (!sysv::process_alive(consumer)).then_some(consumer);
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
    ch.size
        .write(0, &encode_size(data.len()))
        .expect("size field fits");
    ch.op(ch.size_sem, &[SemOp::give(0).undo()], None)?;
    ch.content
        .write(0, data)
        .expect("size checked against the segment");
    // Hand the content over only to a consumer already blocked on it, so our take-back for
    // the hash (below) cannot overtake it. There is no event for "someone waits", so this one
    // step polls, briefly, while the consumer reads the size.
    let poll_until = Instant::now() + Duration::from_secs(10);
    while ch.content_sem.waiting(0).unwrap_or(1) < 1 {
        if let Some(pid) = gone() {
            let _ = ch.op(ch.content_sem, &[SemOp::give(0).undo()], None);
            return Err(LegacyError::ConsumerGone { pid });
        }
        if Instant::now() > poll_until || crate::runtime::stop_requested() {
            break;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    ch.op(ch.content_sem, &[SemOp::give(0).undo()], None)?;
    debug!(bytes = data.len(), "content released to the consumer");
    if !md5 {
        return Ok(());
    }
    ch.wait(ch.content_sem, SemOp::take(0).undo(), deadline, &gone)?;
    let mut reply = [0u8; 32];
    ch.content.read(0, &mut reply).expect("reply in bounds");
    ch.op(ch.content_sem, &[SemOp::give(0).undo()], None)?;
    let ours = hex(&md5::compute(data).0);
    if reply != ours.as_bytes() {
        return Err(LegacyError::Md5 {
            path: path.into(),
            ours,
            theirs: String::from_utf8_lossy(&reply).into_owned(),
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
