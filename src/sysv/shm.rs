//! Shared memory segments: [`Shm`] by id, [`Mapping`] (an attachment, every access
//! bounds-checked and atomic), [`Fixed`] (a header checked once), [`Source`].

use std::ffi::c_void;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use super::*;

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

    /// Creates a private segment (`IPC_PRIVATE`: no key leads to it; others find it only by
    /// the id we hand them).
    pub fn create_private(size: usize, mode: u32) -> Result<Shm> {
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as i32;
        // SAFETY: as in `create`.
        let id = unsafe { libc::shmget(libc::IPC_PRIVATE, size, flags) };
        if id < 0 {
            return Err(SysvError::last("shmget", Target::Key(Key(0))));
        }
        Ok(Shm { id })
    }

    /// Gives the segment to `uid` with permission bits `mode` (`IPC_SET`). Its creator keeps
    /// the right to remove it and to set it again; attachments made before keep their access.
    pub fn set_owner(&self, uid: u32, mode: u32) -> Result<()> {
        // SAFETY: shmid_ds is plain old data; zeroed is a valid value for every field.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: IPC_STAT writes one shmid_ds into the buffer we own for the call's duration.
        if unsafe { libc::shmctl(self.id, libc::IPC_STAT, &mut ds) } < 0 {
            return Err(SysvError::last("shmctl(IPC_STAT)", Target::Id(self.id)));
        }
        ds.shm_perm.uid = uid;
        ds.shm_perm.mode = (mode & 0o777) as _;
        // SAFETY: IPC_SET reads uid, gid and mode from the buffer we own for the call's duration.
        if unsafe { libc::shmctl(self.id, libc::IPC_SET, &mut ds) } < 0 {
            return Err(SysvError::last("shmctl(IPC_SET)", Target::Id(self.id)));
        }
        Ok(())
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
                cgid: ds.shm_perm.cgid,
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
        let base = self.ptr.as_ptr().wrapping_add(offset);
        let head = base.align_offset(8).min(out.len());
        let (h, rest) = out.split_at_mut(head);
        for (k, b) in h.iter_mut().enumerate() {
            // SAFETY: in bounds (the caller's promise); a byte is always aligned, and an
            // atomic may be written by others meanwhile.
            *b = unsafe { AtomicU8::from_ptr(base.add(k)) }.load(Ordering::Relaxed);
        }
        let words = base.wrapping_add(head).cast::<u64>();
        let tail = base.wrapping_add(head + rest.len() / 8 * 8);
        let mut chunks = rest.chunks_exact_mut(8);
        for (k, c) in (&mut chunks).enumerate() {
            // SAFETY: in bounds (the caller's promise) and 8-aligned (`head` aligned it).
            let v = unsafe { AtomicU64::from_ptr(words.add(k)) }.load(Ordering::Relaxed);
            c.copy_from_slice(&v.to_ne_bytes());
        }
        for (k, b) in chunks.into_remainder().iter_mut().enumerate() {
            // SAFETY: as for the head.
            *b = unsafe { AtomicU8::from_ptr(tail.add(k)) }.load(Ordering::Relaxed);
        }
    }

    /// Copies `data` to `offset` with relaxed atomic stores, as [`Mapping::copy_out`] reads.
    ///
    /// # Safety
    /// `offset..offset + data.len()` must lie inside the mapping.
    unsafe fn copy_in(&self, offset: usize, data: &[u8]) {
        assert!(self.writable, "write to a read-only attachment");
        let base = self.ptr.as_ptr().wrapping_add(offset);
        let head = base.align_offset(8).min(data.len());
        let (h, rest) = data.split_at(head);
        for (k, b) in h.iter().enumerate() {
            // SAFETY: as in `copy_out`, on a writable attachment (asserted).
            unsafe { AtomicU8::from_ptr(base.add(k)) }.store(*b, Ordering::Relaxed);
        }
        let words = base.wrapping_add(head).cast::<u64>();
        let chunks = rest.chunks_exact(8);
        let tail_bytes = chunks.remainder();
        for (k, c) in chunks.enumerate() {
            let v = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
            // SAFETY: as in `copy_out`, on a writable attachment (asserted).
            unsafe { AtomicU64::from_ptr(words.add(k)) }.store(v, Ordering::Relaxed);
        }
        let tail = base.wrapping_add(head + rest.len() / 8 * 8);
        for (k, b) in tail_bytes.iter().enumerate() {
            // SAFETY: as for the head.
            unsafe { AtomicU8::from_ptr(tail.add(k)) }.store(*b, Ordering::Relaxed);
        }
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
