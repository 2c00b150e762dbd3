//! Thin owned wrappers over System V IPC (and the few other syscalls shmxfer needs), called
//! through `libc`. This is the only module with `unsafe`; everything above it sees safe types:
//! a [`Mapping`] detaches on drop and bounds-checks every access, a [`SemSet`] knows its id.

use std::ffi::c_void;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// A System V IPC key. Keys are 32-bit; `ipcs` prints them as unsigned hex, `/proc/sysvipc`
/// as signed decimal, so we keep the unsigned value and convert at the edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(pub u32);

impl Key {
    /// The key as libc's `key_t` (the same bits, signed).
    pub fn raw(self) -> libc::key_t {
        self.0 as libc::key_t
    }
    /// The key `n` above this one, or `None` where it would wrap to `IPC_PRIVATE`.
    pub fn offset(self, n: u32) -> Option<Key> {
        self.0.checked_add(n).filter(|&k| k != 0).map(Key)
    }
    /// A key as `/proc/sysvipc` prints it (signed decimal).
    pub fn from_raw(raw: i64) -> Key {
        Key(raw as i32 as u32)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:08x}", self.0)
    }
}

/// What a failed call was doing and to which object, with the errno that explains it.
#[derive(Debug, thiserror::Error)]
#[error("{call}({target}): {source}")]
pub struct SysvError {
    /// The call that failed, as `semctl(IPC_STAT)`.
    pub call: &'static str,
    /// The key or id it was called on.
    pub target: Target,
    #[source]
    /// The errno.
    pub source: io::Error,
}

#[derive(Debug, Clone, Copy)]
/// What a failed call was called on.
pub enum Target {
    /// An object looked up by key.
    Key(Key),
    /// An object by its id.
    Id(i32),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Key(k) => write!(f, "key {k}"),
            Target::Id(id) => write!(f, "id {id}"),
        }
    }
}

impl SysvError {
    fn last(call: &'static str, target: Target) -> SysvError {
        SysvError {
            call,
            target,
            source: io::Error::last_os_error(),
        }
    }
    /// A permission failure found without making the call (a dry run).
    pub fn denied(call: &'static str) -> SysvError {
        SysvError {
            call,
            target: Target::Id(-1),
            source: io::Error::from_raw_os_error(libc::EPERM),
        }
    }
    /// The errno behind the failure.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
    /// The object is gone (removed by `ipcrm`, a peer, or RemoveIPC) or never existed.
    pub fn is_gone(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::EIDRM) | Some(libc::EINVAL) | Some(libc::ENOENT)
        )
    }
    /// Whether the kernel refused for lack of permission (EACCES, EPERM).
    pub fn is_permission(&self) -> bool {
        matches!(self.errno(), Some(libc::EACCES) | Some(libc::EPERM))
    }
}

/// A SysV call's result.
pub type Result<T> = std::result::Result<T, SysvError>;

/// Owner, mode and times common to every IPC object, as `IPC_STAT` reports them.
#[derive(Debug, Clone, Copy)]
pub struct Perm {
    /// The owner's uid.
    pub uid: u32,
    /// The owner's gid.
    pub gid: u32,
    /// The creator's uid (the owner may have been changed since).
    pub cuid: u32,
    /// The permission bits (`0o777` part only).
    pub mode: u32,
}

/// A shared memory segment by id. Removing it does not unmap existing attachments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shm {
    id: i32,
}

#[derive(Debug, Clone, Copy)]
/// What `shmctl(IPC_STAT)` says about a segment.
pub struct ShmStat {
    /// The segment's real size: check every number read from it against this.
    pub size: usize,
    /// Owner and mode.
    pub perm: Perm,
    /// The creator's pid, as the kernel translates it into our PID namespace.
    pub cpid: i32,
    /// The pid of the last attach or detach.
    pub lpid: i32,
    /// How many attachments it has.
    pub nattch: u64,
}

impl Shm {
    /// Creates a new segment at `key`; fails with EEXIST if one is there already.
    pub fn create(key: Key, size: usize, mode: u32) -> Result<Shm> {
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as i32;
        // SAFETY: shmget takes plain integers and touches no memory of ours.
        let id = unsafe { libc::shmget(key.raw(), size, flags) };
        if id < 0 {
            return Err(SysvError::last("shmget", Target::Key(key)));
        }
        Ok(Shm { id })
    }

    /// Looks up the existing segment at `key`.
    pub fn open(key: Key) -> Result<Shm> {
        // SAFETY: as in `create`.
        let id = unsafe { libc::shmget(key.raw(), 0, 0) };
        if id < 0 {
            return Err(SysvError::last("shmget", Target::Key(key)));
        }
        Ok(Shm { id })
    }

    /// The segment with this id (nothing is checked: a later call fails if it is gone).
    pub fn from_id(id: i32) -> Shm {
        Shm { id }
    }

    /// The segment's id, as `ipcs` shows it.
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The segment's size, owner, mode and pids (`IPC_STAT`).
    ///
    /// # Errors
    /// The segment is gone, or we may not read it.
    pub fn stat(&self) -> Result<ShmStat> {
        // SAFETY: shmid_ds is plain old data; zeroed is a valid value for every field.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: IPC_STAT writes one shmid_ds into the buffer we own for the call's duration.
        if unsafe { libc::shmctl(self.id, libc::IPC_STAT, &mut ds) } < 0 {
            return Err(SysvError::last("shmctl(IPC_STAT)", Target::Id(self.id)));
        }
        Ok(ShmStat {
            size: ds.shm_segsz,
            perm: Perm {
                uid: ds.shm_perm.uid,
                gid: ds.shm_perm.gid,
                cuid: ds.shm_perm.cuid,
                mode: u32::from(ds.shm_perm.mode) & 0o777,
            },
            cpid: ds.shm_cpid,
            lpid: ds.shm_lpid,
            nattch: ds.shm_nattch,
        })
    }

    /// Marks the segment for removal; it disappears once the last process detaches.
    pub fn remove(&self) -> Result<()> {
        // SAFETY: IPC_RMID ignores the buffer argument.
        if unsafe { libc::shmctl(self.id, libc::IPC_RMID, std::ptr::null_mut()) } < 0 {
            return Err(SysvError::last("shmctl(IPC_RMID)", Target::Id(self.id)));
        }
        Ok(())
    }

    /// Attaches the whole segment. Its length comes from `IPC_STAT`, never from its contents.
    pub fn attach(&self, writable: bool) -> Result<Mapping> {
        let size = self.stat()?.size;
        let flags = if writable { 0 } else { libc::SHM_RDONLY };
        // SAFETY: a null address lets the kernel choose where to map; nothing of ours is touched.
        let ptr = unsafe { libc::shmat(self.id, std::ptr::null(), flags) };
        if ptr as isize == -1 {
            return Err(SysvError::last("shmat", Target::Id(self.id)));
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).expect("shmat never maps at address 0");
        Ok(Mapping {
            ptr,
            len: size,
            writable,
            id: self.id,
        })
    }
}

/// An attached segment. Every access is bounds-checked against the size the kernel reported,
/// so a peer that writes nonsense into the segment can make us read nonsense but never make us
/// touch memory outside it.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    id: i32,
}

// What sharing a mapping relies on. Within this process, every access to the segment's bytes
// goes through atomics (word-wise copies, `load_*`/`store_*`), so two threads that touch the
// same bytes at once race only in value, never in the sense of Rust's memory model: no data
// race, whatever safe code does. Across processes, Rust's model has nothing to say: another
// process (or the kernel, in `read_from`/`write_to`) may write any byte at any moment. We rely
// on what the hardware gives shared memory: aligned loads and stores of up to 8 bytes are
// single-copy atomic, and our acquire/release pairs order what the semaphores do not. So a
// peer writing nonsense makes us read nonsense (which every decoder checks), never touch
// memory outside the segment.
// SAFETY: as above; the mapping is valid from every thread until `Drop`.
unsafe impl Send for Mapping {}
// SAFETY: as above: `&Mapping` only exposes atomic accesses and kernel copies.
unsafe impl Sync for Mapping {}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mapping(shmid {}, {} bytes)", self.id, self.len)
    }
}

/// An access that would fall outside the mapping.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("access of {len} bytes at offset {offset} is outside a {size}-byte segment")]
pub struct OutOfBounds {
    /// Where the access started.
    pub offset: usize,
    /// How many bytes it wanted.
    pub len: usize,
    /// The mapping's size.
    pub size: usize,
}

impl Mapping {
    /// Gives every page of a writable mapping its memory now (`MADV_POPULATE_WRITE`, Linux
    /// 5.14+), so that transfers do not take a page fault per page they touch first. Best
    /// effort: a kernel that refuses it gives each page on first touch, as without it.
    pub fn populate(&self) {
        const MADV_POPULATE_WRITE: libc::c_int = 23;
        if self.writable {
            // SAFETY: the range is exactly our own mapping, and populating pages changes no
            // byte of it.
            unsafe { libc::madvise(self.ptr.as_ptr().cast(), self.len, MADV_POPULATE_WRITE) };
        }
    }

    /// The mapping's size: the segment's real size when it was attached.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether the mapping has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The id of the attached segment.
    pub fn id(&self) -> i32 {
        self.id
    }

    fn check(&self, offset: usize, len: usize) -> std::result::Result<(), OutOfBounds> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(OutOfBounds {
                offset,
                len,
                size: self.len,
            }),
        }
    }

    /// Copies bytes out of the segment.
    ///
    /// # Errors
    /// [`OutOfBounds`] if the range is not inside the mapping.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> std::result::Result<(), OutOfBounds> {
        self.check(offset, out.len())?;
        // SAFETY: checked just above.
        unsafe { self.copy_out(offset, out) };
        Ok(())
    }

    /// Copies bytes into the segment.
    ///
    /// # Errors
    /// [`OutOfBounds`] if the range is not inside the mapping.
    ///
    /// # Panics
    /// On a read-only attachment: writing through one is a bug in the caller.
    pub fn write(&self, offset: usize, data: &[u8]) -> std::result::Result<(), OutOfBounds> {
        self.check(offset, data.len())?;
        // SAFETY: checked just above.
        unsafe { self.copy_in(offset, data) };
        Ok(())
    }

    /// Copies `out.len()` bytes from `offset` with relaxed atomic loads: 8 bytes at a time
    /// where aligned, single bytes at the ends.
    ///
    /// # Safety
    /// `offset..offset + out.len()` must lie inside the mapping.
    unsafe fn copy_out(&self, offset: usize, out: &mut [u8]) {
        let n = out.len();
        let mut i = 0;
        while i < n {
            let at = offset + i;
            if at.is_multiple_of(8) && n - i >= 8 {
                // SAFETY: in bounds (the caller's promise) and 8-aligned (the mapping is
                // page-aligned); an atomic may be written by others meanwhile.
                let v = unsafe { self.atomic_u64_at(at) }.load(Ordering::Relaxed);
                out[i..i + 8].copy_from_slice(&v.to_ne_bytes());
                i += 8;
            } else {
                // SAFETY: in bounds (the caller's promise); a byte is always aligned.
                out[i] = unsafe { self.atomic_u8_at(at) }.load(Ordering::Relaxed);
                i += 1;
            }
        }
    }

    /// Copies `data` to `offset` with relaxed atomic stores, as [`Mapping::copy_out`] reads.
    ///
    /// # Safety
    /// `offset..offset + data.len()` must lie inside the mapping.
    unsafe fn copy_in(&self, offset: usize, data: &[u8]) {
        assert!(self.writable, "write to a read-only attachment");
        let n = data.len();
        let mut i = 0;
        while i < n {
            let at = offset + i;
            if at.is_multiple_of(8) && n - i >= 8 {
                let v = u64::from_ne_bytes(data[i..i + 8].try_into().expect("8 bytes"));
                // SAFETY: as in `copy_out`, on a writable attachment (asserted).
                unsafe { self.atomic_u64_at(at) }.store(v, Ordering::Relaxed);
                i += 8;
            } else {
                // SAFETY: as in `copy_out`, on a writable attachment (asserted).
                unsafe { self.atomic_u8_at(at) }.store(data[i], Ordering::Relaxed);
                i += 1;
            }
        }
    }

    /// # Safety
    /// `offset` must lie inside the mapping.
    unsafe fn atomic_u8_at(&self, offset: usize) -> &AtomicU8 {
        // SAFETY: in bounds (the caller's promise); AtomicU8 has the layout of u8, and an
        // atomic may be written by others while we hold a reference to it.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU8>() }
    }

    fn atomic_u64(&self, offset: usize) -> std::result::Result<&AtomicU64, OutOfBounds> {
        self.check(offset, 8)?;
        // SAFETY: checked just above.
        Ok(unsafe { self.atomic_u64_at(offset) })
    }

    fn atomic_u32(&self, offset: usize) -> std::result::Result<&AtomicU32, OutOfBounds> {
        self.check(offset, 4)?;
        // SAFETY: checked just above.
        Ok(unsafe { self.atomic_u32_at(offset) })
    }

    /// # Safety
    /// `offset..offset + 8` must lie inside the mapping.
    unsafe fn atomic_u64_at(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8), "unaligned atomic at {offset}");
        // SAFETY: in bounds (the caller's promise) and 8-aligned (shmat returns page-aligned
        // memory); AtomicU64 has the layout of u64, every bit pattern is valid, and an atomic
        // may be written by others while we hold a reference to it.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// # Safety
    /// `offset..offset + 4` must lie inside the mapping.
    unsafe fn atomic_u32_at(&self, offset: usize) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4), "unaligned atomic at {offset}");
        // SAFETY: as in `atomic_u64_at`, for 4 bytes.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    /// A single field another process may be updating concurrently (progress, status).
    pub fn load_u64(&self, offset: usize) -> std::result::Result<u64, OutOfBounds> {
        Ok(self.atomic_u64(offset)?.load(Ordering::Acquire))
    }
    /// A single field another process may be reading concurrently (release).
    ///
    /// # Errors
    /// [`OutOfBounds`] if the field is not inside the mapping.
    pub fn store_u64(&self, offset: usize, v: u64) -> std::result::Result<(), OutOfBounds> {
        assert!(self.writable, "write to a read-only attachment");
        self.atomic_u64(offset)?.store(v, Ordering::Release);
        Ok(())
    }
    /// As [`Mapping::load_u64`], for 4 bytes.
    ///
    /// # Errors
    /// [`OutOfBounds`] if the field is not inside the mapping.
    pub fn load_u32(&self, offset: usize) -> std::result::Result<u32, OutOfBounds> {
        Ok(self.atomic_u32(offset)?.load(Ordering::Acquire))
    }
    /// As [`Mapping::store_u64`], for 4 bytes.
    ///
    /// # Errors
    /// [`OutOfBounds`] if the field is not inside the mapping.
    pub fn store_u32(&self, offset: usize, v: u32) -> std::result::Result<(), OutOfBounds> {
        assert!(self.writable, "write to a read-only attachment");
        self.atomic_u32(offset)?.store(v, Ordering::Release);
        Ok(())
    }

    /// Whether the address of `offset` in the mapping is a multiple of `align` (a power of
    /// two), as O_DIRECT wants of a buffer.
    pub fn is_aligned(&self, offset: usize, align: usize) -> bool {
        (self.ptr.as_ptr() as usize)
            .wrapping_add(offset)
            .is_multiple_of(align)
    }

    /// One write(2) from the segment to `file` (one copy: shared memory to the page cache or,
    /// with O_DIRECT, to the device). Returns the bytes written; EINTR comes back as an error.
    pub fn write_to(&self, file: &File, offset: usize, len: usize) -> io::Result<usize> {
        self.check(offset, len).map_err(io::Error::other)?;
        // SAFETY: the source range is inside the mapping (checked above); the kernel reads it
        // and no Rust reference to it exists.
        let n = unsafe {
            libc::write(
                file.as_raw_fd(),
                self.ptr.as_ptr().add(offset).cast::<c_void>(),
                len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// One read(2) from `file` straight into the segment (one copy: page cache to shared
    /// memory). EINTR comes back as an error, so the caller can look at its stop flag.
    pub fn read_from(&self, file: &File, offset: usize, len: usize) -> io::Result<usize> {
        assert!(self.writable, "write to a read-only attachment");
        self.check(offset, len).map_err(io::Error::other)?;
        // SAFETY: the destination range is inside a writable mapping (checked above); the
        // kernel writes it and no Rust reference to it exists.
        let n = unsafe {
            libc::read(
                file.as_raw_fd(),
                self.ptr.as_ptr().add(offset).cast::<c_void>(),
                len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// A mapping checked once to hold at least `N` bytes, for a header's fixed-offset fields:
/// an access inside the first `N` bytes needs no further check and cannot fail. The offsets
/// are the protocol's constants, so one past `N` is a bug in the caller, and panics.
pub struct Fixed<const N: usize>(Mapping);

impl<const N: usize> Fixed<N> {
    /// Wraps `map` if it holds `N` bytes.
    ///
    /// # Errors
    /// [`OutOfBounds`] (with the mapping's real size) if it is smaller.
    pub fn new(map: Mapping) -> std::result::Result<Self, OutOfBounds> {
        map.check(0, N)?;
        Ok(Fixed(map))
    }

    /// The whole mapping, for accesses past the fixed part (each checked).
    pub fn mapping(&self) -> &Mapping {
        &self.0
    }

    fn inside(offset: usize, len: usize) {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= N),
            "field of {len} bytes at {offset} is outside the {N}-byte header"
        );
    }

    /// Copies the field at `offset` out.
    pub fn read(&self, offset: usize, out: &mut [u8]) {
        Self::inside(offset, out.len());
        // SAFETY: inside the first N bytes (asserted), which the mapping holds (checked in new).
        unsafe { self.0.copy_out(offset, out) }
    }

    /// Copies `data` into the field at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) {
        Self::inside(offset, data.len());
        // SAFETY: as in `read`.
        unsafe { self.0.copy_in(offset, data) }
    }

    /// Loads a field that another process may be updating (acquire).
    pub fn load_u32(&self, offset: usize) -> u32 {
        Self::inside(offset, 4);
        // SAFETY: as in `read`.
        unsafe { self.0.atomic_u32_at(offset) }.load(Ordering::Acquire)
    }

    /// Loads a field that another process may be updating (acquire).
    pub fn load_u64(&self, offset: usize) -> u64 {
        Self::inside(offset, 8);
        // SAFETY: as in `read`.
        unsafe { self.0.atomic_u64_at(offset) }.load(Ordering::Acquire)
    }

    /// Stores a field that another process may be reading (release).
    pub fn store_u32(&self, offset: usize, v: u32) {
        Self::inside(offset, 4);
        assert!(self.0.writable, "write to a read-only attachment");
        // SAFETY: as in `read`.
        unsafe { self.0.atomic_u32_at(offset) }.store(v, Ordering::Release);
    }

    /// Takes the field's value and leaves `v` in its place, in one atomic step (acquire and
    /// release): of two processes swapping the same field, exactly one sees its old value.
    pub fn swap_u32(&self, offset: usize, v: u32) -> u32 {
        Self::inside(offset, 4);
        assert!(self.0.writable, "write to a read-only attachment");
        // SAFETY: as in `read`.
        unsafe { self.0.atomic_u32_at(offset) }.swap(v, Ordering::AcqRel)
    }

    /// Stores a field that another process may be reading (release).
    pub fn store_u64(&self, offset: usize, v: u64) {
        Self::inside(offset, 8);
        assert!(self.0.writable, "write to a read-only attachment");
        // SAFETY: as in `read`.
        unsafe { self.0.atomic_u64_at(offset) }.store(v, Ordering::Release);
    }
}

impl<const N: usize> fmt::Debug for Fixed<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fixed<{N}>({:?})", self.0)
    }
}

/// Bytes to write out: our own, or a range of a shared segment (which never becomes a Rust
/// slice, since another process may write it at any moment).
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// Bytes in our own memory.
    Own(&'a [u8]),
    /// A range of a shared segment, copied out only by the kernel or a byte copy.
    Shared {
        /// The attachment.
        map: &'a Mapping,
        /// Where the range starts.
        offset: usize,
        /// Its length (checked against the mapping at each use).
        len: usize,
    },
}

impl Source<'_> {
    /// How many bytes.
    pub fn len(&self) -> usize {
        match self {
            Source::Own(b) => b.len(),
            Source::Shared { len, .. } => *len,
        }
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether the bytes start at a multiple of `align`.
    pub fn is_aligned(&self, align: usize) -> bool {
        match self {
            Source::Own(b) => (b.as_ptr() as usize).is_multiple_of(align),
            Source::Shared { map, offset, .. } => map.is_aligned(*offset, align),
        }
    }
    /// One write(2) of the bytes from `skip` on; returns how many were written.
    pub fn write_once(&self, file: &File, skip: usize) -> io::Result<usize> {
        use std::io::Write;
        match self {
            Source::Own(b) => (&*file).write(&b[skip..]),
            Source::Shared { map, offset, len } => map.write_to(file, offset + skip, len - skip),
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from shmat and is detached exactly once, here; no borrow of the
        // mapping can outlive `self`.
        unsafe { libc::shmdt(self.ptr.as_ptr().cast::<c_void>()) };
    }
}

/// One operation of a `semop` call.
#[derive(Debug, Clone, Copy)]
pub struct SemOp {
    /// The semaphore's number in its set.
    pub num: u16,
    /// Negative: take; positive: give; 0: wait for zero.
    pub op: i16,
    /// `SEM_UNDO`, `IPC_NOWAIT`.
    pub flags: i16,
}

impl SemOp {
    /// Take one (blocks while the value is 0).
    pub fn take(num: u16) -> SemOp {
        SemOp {
            num,
            op: -1,
            flags: 0,
        }
    }
    /// Give one back.
    pub fn give(num: u16) -> SemOp {
        SemOp {
            num,
            op: 1,
            flags: 0,
        }
    }
    /// Block until the value is 0.
    pub fn zero(num: u16) -> SemOp {
        SemOp {
            num,
            op: 0,
            flags: 0,
        }
    }
    /// The kernel reverses this operation if the process dies: how liveness is tracked.
    pub fn undo(mut self) -> SemOp {
        self.flags |= libc::SEM_UNDO as i16;
        self
    }
    /// Fail with EAGAIN instead of blocking.
    pub fn nowait(mut self) -> SemOp {
        self.flags |= libc::IPC_NOWAIT as i16;
        self
    }
}

/// Why a semaphore wait ended without the operation taking place.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("timed out")]
    /// The deadline passed first.
    TimedOut,
    #[error("interrupted by a signal")]
    /// A signal arrived (the caller looks at its stop flag).
    Interrupted,
    #[error(transparent)]
    /// The call failed (the set was removed, permission).
    Sys(#[from] SysvError),
}

#[derive(Debug, Clone, Copy)]
/// What `semctl(IPC_STAT)` says about a set.
pub struct SemStat {
    /// How many semaphores it has.
    pub nsems: u32,
    /// Owner and mode.
    pub perm: Perm,
    /// When the last `semop` ran (Unix seconds; 0: never).
    pub otime: i64,
    /// When the set was created or last changed.
    pub ctime: i64,
}

/// A semaphore set by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemSet {
    id: i32,
}

impl SemSet {
    /// Creates a set of `nsems` semaphores, all 0, at `key`.
    ///
    /// # Errors
    /// EEXIST if an object is already there; EACCES, ENOSPC.
    pub fn create(key: Key, nsems: u16, mode: u32) -> Result<SemSet> {
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as i32;
        // SAFETY: semget takes plain integers.
        let id = unsafe { libc::semget(key.raw(), i32::from(nsems), flags) };
        if id < 0 {
            return Err(SysvError::last("semget", Target::Key(key)));
        }
        Ok(SemSet { id })
    }

    /// Opens the set at `key`.
    ///
    /// # Errors
    /// ENOENT if there is none; EACCES.
    pub fn open(key: Key) -> Result<SemSet> {
        // SAFETY: semget takes plain integers.
        let id = unsafe { libc::semget(key.raw(), 0, 0) };
        if id < 0 {
            return Err(SysvError::last("semget", Target::Key(key)));
        }
        Ok(SemSet { id })
    }

    /// The set with this id (nothing is checked: a later call fails if it is gone).
    pub fn from_id(id: i32) -> SemSet {
        SemSet { id }
    }

    /// The set's id, as `ipcs` shows it.
    pub fn id(&self) -> i32 {
        self.id
    }

    /// The set's size, owner, mode and times (`IPC_STAT`).
    ///
    /// # Errors
    /// The set is gone, or we may not read it.
    pub fn stat(&self) -> Result<SemStat> {
        // SAFETY: semid_ds is plain old data; zeroed is valid.
        let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: IPC_STAT takes a `struct semid_ds *` as its fourth (union semun) argument and
        // writes one struct into our buffer.
        if unsafe { libc::semctl(self.id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) } < 0 {
            return Err(SysvError::last("semctl(IPC_STAT)", Target::Id(self.id)));
        }
        Ok(SemStat {
            nsems: ds.sem_nsems as u32,
            perm: Perm {
                uid: ds.sem_perm.uid,
                gid: ds.sem_perm.gid,
                cuid: ds.sem_perm.cuid,
                mode: u32::from(ds.sem_perm.mode) & 0o777,
            },
            otime: ds.sem_otime,
            ctime: ds.sem_ctime,
        })
    }

    fn ctl(&self, num: u16, cmd: i32, name: &'static str) -> Result<i32> {
        // SAFETY: GETVAL/GETNCNT/GETZCNT/GETPID take no fourth argument.
        let v = unsafe { libc::semctl(self.id, i32::from(num), cmd) };
        if v < 0 {
            return Err(SysvError::last(name, Target::Id(self.id)));
        }
        Ok(v)
    }

    /// A semaphore's value.
    ///
    /// # Errors
    /// The set is gone, or we may not read it.
    pub fn value(&self, num: u16) -> Result<i32> {
        self.ctl(num, libc::GETVAL, "semctl(GETVAL)")
    }
    /// How many processes are blocked taking this semaphore.
    pub fn waiting(&self, num: u16) -> Result<i32> {
        self.ctl(num, libc::GETNCNT, "semctl(GETNCNT)")
    }
    /// How many processes are blocked waiting for this semaphore to be 0.
    pub fn zero_waiting(&self, num: u16) -> Result<i32> {
        self.ctl(num, libc::GETZCNT, "semctl(GETZCNT)")
    }
    /// The pid of the last process to operate on this semaphore.
    pub fn last_pid(&self, num: u16) -> Result<i32> {
        self.ctl(num, libc::GETPID, "semctl(GETPID)")
    }

    /// Sets a value outright. This also clears every process's undo adjustment for that
    /// semaphore, so never use it on one that is taken with SEM_UNDO.
    pub fn set(&self, num: u16, value: i32) -> Result<()> {
        // SAFETY: SETVAL takes an int (the `val` member of union semun) as its fourth argument;
        // on Linux that union is passed like an int.
        if unsafe { libc::semctl(self.id, i32::from(num), libc::SETVAL, value) } < 0 {
            return Err(SysvError::last("semctl(SETVAL)", Target::Id(self.id)));
        }
        Ok(())
    }

    /// Performs all `ops` atomically, blocking up to `timeout` (forever with `None`).
    pub fn op(
        &self,
        ops: &[SemOp],
        timeout: Option<Duration>,
    ) -> std::result::Result<(), WaitError> {
        let buf = |o: &SemOp| libc::sembuf {
            sem_num: o.num,
            sem_op: o.op,
            sem_flg: o.flags,
        };
        // On the stack for the few operations every caller passes (at most 3): a transfer
        // makes several semops per file, none of which needs the allocator.
        let mut few = [buf(&SemOp::zero(0)); 8];
        let mut many = Vec::new();
        let bufs: &mut [libc::sembuf] = if ops.len() <= few.len() {
            for (b, o) in few.iter_mut().zip(ops) {
                *b = buf(o);
            }
            &mut few[..ops.len()]
        } else {
            many.extend(ops.iter().map(buf));
            &mut many
        };
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: semtimedop reads `bufs.len()` sembufs and at most one timespec, all of which
        // live on our stack or heap for the duration of the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_semtimedop,
                self.id,
                bufs.as_mut_ptr(),
                bufs.len(),
                ts_ptr,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let err = SysvError::last("semop", Target::Id(self.id));
        match err.errno() {
            Some(libc::EAGAIN) => Err(WaitError::TimedOut),
            Some(libc::EINTR) => Err(WaitError::Interrupted),
            _ => Err(WaitError::Sys(err)),
        }
    }

    /// Removes the set: every process blocked on it wakes with EIDRM.
    ///
    /// # Errors
    /// The set is gone already, or we may not remove it.
    pub fn remove(&self) -> Result<()> {
        // SAFETY: IPC_RMID takes no fourth argument.
        if unsafe { libc::semctl(self.id, 0, libc::IPC_RMID) } < 0 {
            return Err(SysvError::last("semctl(IPC_RMID)", Target::Id(self.id)));
        }
        Ok(())
    }
}

// ---- the few non-IPC syscalls the commands need, kept here so `unsafe` stays in one file ----

/// Whether a process with this pid exists and is not a zombie (EPERM means it exists but is
/// not ours).
pub fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission; nothing is delivered.
    let r = unsafe { libc::kill(pid, 0) };
    let exists = r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    // A zombie still answers signal 0, but has let go of everything and never acts again:
    // what it held (a semaphore it took without SEM_UNDO) is as good as a dead process's.
    exists && !matches!(process_state(pid), Some(b'Z' | b'X'))
}

/// Whether process `pid` has the segment `shmid` attached, from the kernel's map of the
/// process (a SysV segment shows as `/SYSV<key>` with the shmid in the inode column); a dead
/// or reused pid has no such mapping. `None` where nobody can tell: a pid outside our PID
/// namespace (0), or a live process whose map is closed to us (another user's, without
/// privilege).
pub fn attached(pid: i32, shmid: i32) -> Option<bool> {
    if pid <= 0 {
        return None;
    }
    match read_proc(&format!("/proc/{pid}/maps")) {
        Ok(maps) => Some(maps.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 6 && f[5].starts_with("/SYSV") && f[4] == shmid.to_string()
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(false),
        Err(_) if !process_alive(pid) => Some(false),
        Err(_) => None,
    }
}

/// Whether process `pid` is stopped (SIGSTOP, Ctrl-Z) or stopped by a tracer: state `T` or
/// `t` in `/proc/PID/stat`, which every user may read. A process that does not exist, or
/// whose state cannot be read, is not stopped.
pub fn process_stopped(pid: i32) -> bool {
    matches!(process_state(pid), Some(b'T' | b't'))
}

/// The state letter of process `pid` from `/proc/PID/stat` (`R`, `S`, `T`, `Z`…), if it can
/// be read.
fn process_state(pid: i32) -> Option<u8> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name (in parentheses) may hold anything, spaces and `)` included: the state
    // is the first field after the last `)`.
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat.get(close + 2).copied()
}

/// Reads a /proc file in large reads (its size says 0, so `read_to_string` would start with
/// tiny ones, each of which makes the kernel format the file again).
fn read_proc(path: &str) -> io::Result<String> {
    use std::io::Read;
    let mut f = File::open(path)?;
    let mut buf = Vec::with_capacity(64 << 10);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        match f.read(&mut chunk)? {
            0 => break,
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// As [`attached`], taking a live process whose map we cannot read as attached.
pub fn process_attached(pid: i32, shmid: i32) -> bool {
    attached(pid, shmid).unwrap_or_else(|| process_alive(pid))
}

/// Renames `from` to `to` unless `to` exists (then fails with `AlreadyExists`). Falls back to
/// link + unlink on filesystems without RENAME_NOREPLACE.
pub fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_from = std::ffi::CString::new(from.as_os_str().as_bytes())?;
    let c_to = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both paths are NUL-terminated C strings that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        _ => Err(err),
    }
}

/// Gives an unnamed (`O_TMPFILE`) file the name `to`, failing with `AlreadyExists` rather
/// than replace anything there. Through `/proc/self/fd`, which needs no privilege; where /proc
/// is not mounted, with `AT_EMPTY_PATH`, which works where we are privileged enough for it.
pub fn link_unnamed(file: &File, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let proc_path = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let to = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    match linkat(libc::AT_FDCWD, &proc_path, &to, libc::AT_SYMLINK_FOLLOW) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            linkat(file.as_raw_fd(), c"", &to, libc::AT_EMPTY_PATH)
        }
        r => r,
    }
}

fn linkat(dirfd: i32, from: &std::ffi::CStr, to: &std::ffi::CStr, flags: i32) -> io::Result<()> {
    // SAFETY: both paths are NUL-terminated C strings that outlive the call; `dirfd` is
    // AT_FDCWD or a descriptor the caller holds open.
    let r = unsafe { libc::linkat(dirfd, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), flags) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The size of a memory page (`shmall` counts pages), 4096 where the system does not say.
pub fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(4096)
}

/// The effective user id.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// What O_DIRECT writes must be aligned to (buffer address, length and file offset); 4096
/// covers both 512- and 4096-byte logical blocks.
pub const DIRECT_ALIGN: usize = 4096;

/// Turns O_DIRECT on or off for an open file (Linux lets F_SETFL change it). Fails with
/// EINVAL where the filesystem does not support it.
pub fn set_direct(file: &File, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFL takes no argument and only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: F_SETFL takes an int of flags; it changes only this descriptor's status flags.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Tells the kernel we read `file` front to back once, so it reads ahead aggressively.
pub fn advise_sequential(file: &File) {
    // SAFETY: posix_fadvise only takes an fd and integers; failure is harmless (advice only).
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
}

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
/// in the thread the signal interrupts, with no helper thread (a thread costs a short-lived
/// process here about 7% of its run time). Without `SA_RESTART`, so a blocking `read` or
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

/// This process's pid.
pub fn getpid() -> i32 {
    std::process::id() as i32
}

// ---- the kernel's own tables (/proc/sysvipc), read the way util-linux reads them ----

/// One row of `/proc/sysvipc/{shm,sem,msg}`, by column name.
#[derive(Debug, Clone)]
pub struct TableRow {
    fields: Vec<(String, String)>,
}

impl TableRow {
    /// A column's text.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// A column as a number (0 if it is missing or not one).
    pub fn num(&self, name: &str) -> i64 {
        self.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
    /// The row's `key` column.
    pub fn key(&self) -> Key {
        Key::from_raw(self.num("key"))
    }
}

/// Parses a `/proc/sysvipc` table: a header line of column names, then one row per object.
pub fn parse_table(text: &str) -> Vec<TableRow> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let names: Vec<&str> = header.split_whitespace().collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| TableRow {
            fields: names
                .iter()
                .map(|n| n.to_string())
                .zip(l.split_whitespace().map(String::from))
                .collect(),
        })
        .collect()
}

/// Which kernel table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Shared memory segments.
    Shm,
    /// Semaphore sets.
    Sem,
    /// Message queues.
    Msg,
}

impl Kind {
    /// The kernel's table for this kind.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Shm => "/proc/sysvipc/shm",
            Kind::Sem => "/proc/sysvipc/sem",
            Kind::Msg => "/proc/sysvipc/msg",
        }
    }
}

/// Reads one of the kernel's tables.
///
/// # Errors
/// The file cannot be read (no /proc, or no SysV IPC in this kernel).
pub fn read_table(kind: Kind) -> io::Result<Vec<TableRow>> {
    Ok(parse_table(&std::fs::read_to_string(kind.path())?))
}

/// The user name for a uid, through NSS as `ls` and `ipcs` look it up (local files, LDAP,
/// systemd's dynamic users…); the number where there is none.
pub fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

/// Opens the directory `name` inside the directory `parent`, creating it first if it is not
/// there, and never following a symlink (nor anything else that is not a directory) in its
/// place: `ELOOP` or `ENOTDIR` then. The descriptor pins the directory, so later paths
/// through it (`/proc/self/fd/N/…`) cannot be redirected by a rename or a planted link.
pub fn open_subdir(
    parent: &std::os::fd::OwnedFd,
    name: &std::ffi::OsStr,
) -> io::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    match nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(0o777)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    Ok(nix::fcntl::openat(parent, name, flags, Mode::empty())?)
}

/// The group name for a gid, through NSS; the number where there is none.
pub fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    }
}

/// The uid of the user called `name`, through NSS.
pub fn uid_by_name(name: &str) -> Option<u32> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Some(u.uid.as_raw()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_named_through_nss_and_numbered_when_unknown() {
        assert_eq!(user_name(0), "root");
        assert_eq!(user_name(4_000_000_000), "4000000000");
    }

    #[test]
    fn proc_keys_are_read_as_unsigned() {
        assert_eq!(Key::from_raw(-356559210).to_string(), "0xeabf5696");
        assert_eq!(Key::from_raw(42).0, 42);
    }

    #[test]
    fn key_offset_never_wraps_to_ipc_private() {
        assert_eq!(Key(0xffff_ffff).offset(1), None);
        assert_eq!(Key(5).offset(1), Some(Key(6)));
    }

    #[test]
    fn table_rows_are_read_by_column_name() {
        let t = "       key      shmid perms       size\n        42          7   600    5000000\n";
        let rows = parse_table(t);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].num("shmid"), 7);
        assert_eq!(rows[0].get("perms"), Some("600"));
        assert_eq!(rows[0].key(), Key(42));
    }
}
