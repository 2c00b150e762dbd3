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
pub(crate) struct Shm {
    id: i32,
}

#[derive(Debug, Clone, Copy)]
/// What `shmctl(IPC_STAT)` says about a segment.
pub(crate) struct ShmStat {
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
    pub(crate) fn create(key: Key, size: usize, mode: u32) -> Result<Shm> {
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
    pub(crate) fn create_private(size: usize, mode: u32) -> Result<Shm> {
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
    pub(crate) fn set_owner(&self, uid: u32, mode: u32) -> Result<()> {
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
    pub(crate) fn open(key: Key) -> Result<Shm> {
        // SAFETY: as in `create`.
        let id = unsafe { libc::shmget(key.raw(), 0, 0) };
        if id < 0 {
            return Err(SysvError::last("shmget", Target::Key(key)));
        }
        Ok(Shm { id })
    }

    /// The segment with this id (nothing is checked: a later call fails if it is gone).
    pub(crate) fn from_id(id: i32) -> Shm {
        Shm { id }
    }

    /// The segment's id, as `ipcs` shows it.
    pub(crate) fn id(&self) -> i32 {
        self.id
    }

    /// The segment's size, owner, mode and pids (`IPC_STAT`).
    ///
    /// # Errors
    /// The segment is gone, or we may not read it.
    pub(crate) fn stat(&self) -> Result<ShmStat> {
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
    pub(crate) fn remove(&self) -> Result<()> {
        // SAFETY: IPC_RMID ignores the buffer argument.
        if unsafe { libc::shmctl(self.id, libc::IPC_RMID, std::ptr::null_mut()) } < 0 {
            return Err(SysvError::last("shmctl(IPC_RMID)", Target::Id(self.id)));
        }
        Ok(())
    }

    /// Attaches the whole segment. Its length comes from `IPC_STAT`, never from its contents.
    pub(crate) fn attach(&self, writable: bool) -> Result<Mapping> {
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
            #[cfg(test)]
            heap: None,
        })
    }
}

/// An attached segment. Every access is bounds-checked against the size the kernel reported,
/// so a peer that writes nonsense into the segment can make us read nonsense but never make us
/// touch memory outside it.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    id: i32,
    /// In unit tests, a mapping may stand on a heap buffer of ours instead of a segment
    /// (`Mapping::heap`), so that Miri can check every copy and atomic path.
    #[cfg(test)]
    heap: Option<NonNull<[AtomicU64]>>,
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

/// A load of shared memory with acquire semantics, made as a relaxed load and then an acquire
/// fence: an acquire load may be compiled to a read-modify-write on some targets, which a
/// read-only attachment (`SHM_RDONLY`) forbids; a relaxed load and a fence are allowed on any
/// memory and order what follows the same way.
fn acquired<T>(v: T) -> T {
    std::sync::atomic::fence(Ordering::Acquire);
    v
}

/// An access that would fall outside the mapping, or a copy that does not start at a multiple
/// of 8 (copies go by aligned words).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("access of {len} bytes at offset {offset} is outside a {size}-byte segment")]
pub(crate) struct OutOfBounds {
    /// Where the access started.
    pub offset: usize,
    /// How many bytes it wanted.
    pub len: usize,
    /// The mapping's size.
    pub size: usize,
}

impl Mapping {
    /// The mapping's size: the segment's real size when it was attached.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
    /// The id of the attached segment.
    pub(crate) fn id(&self) -> i32 {
        self.id
    }

    /// As [`Mapping::check`], and `offset` a multiple of 8: copies go by aligned words.
    fn check_copy(&self, offset: usize, len: usize) -> std::result::Result<(), OutOfBounds> {
        self.check(offset, len)?;
        match offset.is_multiple_of(8) {
            true => Ok(()),
            false => Err(OutOfBounds {
                offset,
                len,
                size: self.len,
            }),
        }
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
    pub(crate) fn read(
        &self,
        offset: usize,
        out: &mut [u8],
    ) -> std::result::Result<(), OutOfBounds> {
        self.check_copy(offset, out.len())?;
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
    pub(crate) fn write(&self, offset: usize, data: &[u8]) -> std::result::Result<(), OutOfBounds> {
        self.check_copy(offset, data.len())?;
        // SAFETY: checked just above.
        unsafe { self.copy_in(offset, data) };
        Ok(())
    }

    /// Copies `out.len()` bytes from `offset` (a multiple of 8) with relaxed atomic loads of
    /// whole aligned words: a word that lies wholly inside the mapping is always read as one
    /// u64 (its bytes past `out` are read and dropped), and only the last bytes of a mapping
    /// whose size is not a multiple of 8, which no word covers, are read as single bytes. So
    /// every address is accessed at one width, whatever the call: Rust's memory model forbids
    /// racing accesses of different sizes to the same bytes.
    ///
    /// # Safety
    /// `offset` must be a multiple of 8 and `offset..offset + out.len()` inside the mapping.
    unsafe fn copy_out(&self, offset: usize, out: &mut [u8]) {
        let base = self.ptr.as_ptr().wrapping_add(offset);
        let whole = self.words_from(offset, out.len());
        let (w, tail) = out.split_at_mut(whole);
        let word = |k: usize| {
            // SAFETY: word k lies inside the mapping (`words_from`) and is 8-aligned (offset
            // is, and the mapping starts on a page or a u64); an atomic may be written by
            // others meanwhile.
            unsafe { AtomicU64::from_ptr(base.cast::<u64>().add(k)) }.load(Ordering::Relaxed)
        };
        // Whole words at a fixed length (a copy the compiler makes one move), then the part
        // of the last word that `out` wants.
        let mut chunks = w.chunks_exact_mut(8);
        for (k, c) in (&mut chunks).enumerate() {
            c.copy_from_slice(&word(k).to_ne_bytes());
        }
        let last = chunks.into_remainder();
        let n = last.len();
        if n > 0 {
            last.copy_from_slice(&word(whole / 8).to_ne_bytes()[..n]);
        }
        for (k, b) in tail.iter_mut().enumerate() {
            // SAFETY: inside the mapping (the caller's promise); a byte is always aligned.
            *b = unsafe { AtomicU8::from_ptr(base.add(whole + k)) }.load(Ordering::Relaxed);
        }
    }

    /// Copies `data` to `offset` (a multiple of 8) as [`Mapping::copy_out`] reads: whole words,
    /// the last one padded with zeros (so up to 7 bytes after `data` become 0: every region
    /// of the wire layout is a multiple of 8 long, and ends where a word does), and single
    /// bytes only past the last whole word of the mapping.
    ///
    /// # Safety
    /// As for [`Mapping::copy_out`].
    unsafe fn copy_in(&self, offset: usize, data: &[u8]) {
        assert!(self.writable, "write to a read-only attachment");
        let base = self.ptr.as_ptr().wrapping_add(offset);
        let whole = self.words_from(offset, data.len());
        let (w, tail) = data.split_at(whole);
        let store = |k: usize, v: u64| {
            // SAFETY: as in `copy_out`, on a writable attachment (asserted).
            unsafe { AtomicU64::from_ptr(base.cast::<u64>().add(k)) }.store(v, Ordering::Relaxed);
        };
        let chunks = w.chunks_exact(8);
        let last = chunks.remainder();
        for (k, c) in chunks.enumerate() {
            store(k, u64::from_ne_bytes(c.try_into().expect("8 bytes")));
        }
        if !last.is_empty() {
            let mut padded = [0u8; 8];
            padded[..last.len()].copy_from_slice(last);
            store(whole / 8, u64::from_ne_bytes(padded));
        }
        for (k, b) in tail.iter().enumerate() {
            // SAFETY: as in `copy_out`.
            unsafe { AtomicU8::from_ptr(base.add(whole + k)) }.store(*b, Ordering::Relaxed);
        }
    }

    /// How many of the `len` bytes from `offset` go by words: all of them, rounded up to a
    /// whole word, except where that word would pass the mapping's end.
    fn words_from(&self, offset: usize, len: usize) -> usize {
        // Words wholly inside the mapping from `offset` on cover `room` bytes.
        let room = (self.len - offset) / 8 * 8;
        len.min(room)
    }

    fn atomic_u64(&self, offset: usize) -> std::result::Result<&AtomicU64, OutOfBounds> {
        self.check(offset, 8)?;
        // SAFETY: checked just above.
        Ok(unsafe { self.atomic_u64_at(offset) })
    }

    #[cfg(test)]
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
    pub(crate) fn load_u64(&self, offset: usize) -> std::result::Result<u64, OutOfBounds> {
        Ok(acquired(self.atomic_u64(offset)?.load(Ordering::Relaxed)))
    }
    #[cfg(test)]
    /// A single field another process may be reading concurrently (release).
    ///
    /// # Errors
    /// [`OutOfBounds`] if the field is not inside the mapping.
    pub(crate) fn store_u64(&self, offset: usize, v: u64) -> std::result::Result<(), OutOfBounds> {
        assert!(self.writable, "write to a read-only attachment");
        self.atomic_u64(offset)?.store(v, Ordering::Release);
        Ok(())
    }
    #[cfg(test)]
    /// As [`Mapping::load_u64`], for 4 bytes.
    ///
    /// # Errors
    /// [`OutOfBounds`] if the field is not inside the mapping.
    pub(crate) fn load_u32(&self, offset: usize) -> std::result::Result<u32, OutOfBounds> {
        Ok(acquired(self.atomic_u32(offset)?.load(Ordering::Relaxed)))
    }
    #[cfg(test)]
    /// As [`Mapping::store_u64`], for 4 bytes.
    ///
    /// # Errors
    /// [`OutOfBounds`] if the field is not inside the mapping.
    pub(crate) fn store_u32(&self, offset: usize, v: u32) -> std::result::Result<(), OutOfBounds> {
        assert!(self.writable, "write to a read-only attachment");
        self.atomic_u32(offset)?.store(v, Ordering::Release);
        Ok(())
    }

    /// Whether the address of `offset` in the mapping is a multiple of `align` (a power of
    /// two), as O_DIRECT wants of a buffer.
    pub(crate) fn is_aligned(&self, offset: usize, align: usize) -> bool {
        (self.ptr.as_ptr() as usize)
            .wrapping_add(offset)
            .is_multiple_of(align)
    }

    /// One write(2) from the segment to `file` (one copy: shared memory to the page cache or,
    /// with O_DIRECT, to the device). Returns the bytes written; EINTR comes back as an error.
    pub(crate) fn write_to(&self, file: &File, offset: usize, len: usize) -> io::Result<usize> {
        // SAFETY: the kernel reads `len` bytes at `p`, inside the mapping (checked by
        // `kernel_copy`); no Rust reference to them exists.
        self.kernel_copy(offset, len, |p| unsafe {
            libc::write(file.as_raw_fd(), p, len)
        })
    }

    /// One read(2) from `file` straight into the segment (one copy: page cache to shared
    /// memory). EINTR comes back as an error, so the caller can look at its stop flag.
    pub(crate) fn read_from(&self, file: &File, offset: usize, len: usize) -> io::Result<usize> {
        assert!(self.writable, "write to a read-only attachment");
        // SAFETY: the kernel writes `len` bytes at `p`, inside a writable mapping (asserted,
        // and checked by `kernel_copy`); no Rust reference to them exists.
        self.kernel_copy(offset, len, |p| unsafe {
            libc::read(file.as_raw_fd(), p, len)
        })
    }

    /// A copy the kernel makes between a file and `offset..offset + len` of the mapping, which
    /// must lie inside it: `call` gets the range's address and returns what read(2) or
    /// write(2) returned.
    fn kernel_copy(
        &self,
        offset: usize,
        len: usize,
        call: impl FnOnce(*mut c_void) -> isize,
    ) -> io::Result<usize> {
        self.check(offset, len).map_err(io::Error::other)?;
        let n = call(self.ptr.as_ptr().wrapping_add(offset).cast::<c_void>());
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

/// A mapping checked once to hold at least `N` bytes, for a header's fixed-offset fields:
/// an access inside the first `N` bytes needs no further check and cannot fail. The offsets
/// are the protocol's constants, so one past `N` is a bug in the caller, and panics.
pub(crate) struct Fixed<const N: usize>(Mapping);

impl<const N: usize> Fixed<N> {
    /// Wraps `map` if it holds `N` bytes.
    ///
    /// # Errors
    /// [`OutOfBounds`] (with the mapping's real size) if it is smaller.
    pub(crate) fn new(map: Mapping) -> std::result::Result<Self, OutOfBounds> {
        map.check(0, N)?;
        Ok(Fixed(map))
    }

    /// The whole mapping, for accesses past the fixed part (each checked).
    pub(crate) fn mapping(&self) -> &Mapping {
        &self.0
    }

    fn inside(offset: usize, len: usize) {
        assert!(
            offset.checked_add(len).is_some_and(|end| end <= N),
            "field of {len} bytes at {offset} is outside the {N}-byte header"
        );
    }

    /// Copies the field at `offset` (a multiple of 8, as every region of the layout starts)
    /// out.
    pub(crate) fn read(&self, offset: usize, out: &mut [u8]) {
        Self::inside(offset, out.len());
        assert!(offset.is_multiple_of(8), "a copy at {offset}");
        // SAFETY: inside the first N bytes (asserted), which the mapping holds (checked in new).
        unsafe { self.0.copy_out(offset, out) }
    }

    /// Copies `data` into the field at `offset` (a multiple of 8; see [`Mapping::write`]).
    pub(crate) fn write(&self, offset: usize, data: &[u8]) {
        Self::inside(offset, data.len());
        assert!(offset.is_multiple_of(8), "a copy at {offset}");
        // SAFETY: as in `read`.
        unsafe { self.0.copy_in(offset, data) }
    }

    /// Loads a field that another process may be updating (acquire).
    pub(crate) fn load_u32(&self, offset: usize) -> u32 {
        Self::inside(offset, 4);
        // SAFETY: as in `read`.
        acquired(unsafe { self.0.atomic_u32_at(offset) }.load(Ordering::Relaxed))
    }

    /// Loads a field that another process may be updating (acquire).
    pub(crate) fn load_u64(&self, offset: usize) -> u64 {
        Self::inside(offset, 8);
        // SAFETY: as in `read`.
        acquired(unsafe { self.0.atomic_u64_at(offset) }.load(Ordering::Relaxed))
    }

    /// Stores a field that another process may be reading (release).
    pub(crate) fn store_u32(&self, offset: usize, v: u32) {
        Self::inside(offset, 4);
        assert!(self.0.writable, "write to a read-only attachment");
        // SAFETY: as in `read`.
        unsafe { self.0.atomic_u32_at(offset) }.store(v, Ordering::Release);
    }

    /// Takes the field's value and leaves `v` in its place, in one atomic step (acquire and
    /// release): of two processes swapping the same field, exactly one sees its old value.
    pub(crate) fn swap_u32(&self, offset: usize, v: u32) -> u32 {
        Self::inside(offset, 4);
        assert!(self.0.writable, "write to a read-only attachment");
        // SAFETY: as in `read`.
        unsafe { self.0.atomic_u32_at(offset) }.swap(v, Ordering::AcqRel)
    }

    /// Stores a field that another process may be reading (release).
    pub(crate) fn store_u64(&self, offset: usize, v: u64) {
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
pub(crate) enum Source<'a> {
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
    pub(crate) fn len(&self) -> usize {
        match self {
            Source::Own(b) => b.len(),
            Source::Shared { len, .. } => *len,
        }
    }
    /// Whether the bytes start at a multiple of `align`.
    pub(crate) fn is_aligned(&self, align: usize) -> bool {
        match self {
            Source::Own(b) => (b.as_ptr() as usize).is_multiple_of(align),
            Source::Shared { map, offset, .. } => map.is_aligned(*offset, align),
        }
    }
    /// One write(2) of the bytes from `skip` on; returns how many were written.
    pub(crate) fn write_once(&self, file: &File, skip: usize) -> io::Result<usize> {
        use std::io::Write;
        let past = || io::Error::from_raw_os_error(libc::EINVAL);
        match self {
            Source::Own(b) => (&*file).write(b.get(skip..).ok_or_else(past)?),
            Source::Shared { map, offset, len } => {
                let from = offset.checked_add(skip).ok_or_else(past)?;
                map.write_to(file, from, len.checked_sub(skip).ok_or_else(past)?)
            }
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        #[cfg(test)]
        if let Some(words) = self.heap {
            // SAFETY: `words` came from `Box::leak` in `Mapping::heap` and is freed only here.
            drop(unsafe { Box::from_raw(words.as_ptr()) });
            return;
        }
        // SAFETY: `ptr` came from shmat and is detached exactly once, here; no borrow of the
        // mapping can outlive `self`.
        unsafe { libc::shmdt(self.ptr.as_ptr().cast::<c_void>()) };
    }
}

#[cfg(test)]
impl Mapping {
    /// A mapping over a zeroed heap buffer of `len` bytes, for unit tests under Miri: copies,
    /// loads and stores run exactly as on an attached segment.
    pub(crate) fn heap(len: usize, writable: bool) -> Mapping {
        let words: Box<[AtomicU64]> = (0..len.div_ceil(8)).map(|_| AtomicU64::new(0)).collect();
        // Owned through the raw pointer from here on (freed in `Drop`), so that no move of a
        // `Box` invalidates the pointer every access derives from. The words live in
        // `UnsafeCell`s, so writing them through it is allowed.
        let words = NonNull::from(Box::leak(words));
        Mapping {
            ptr: words.cast::<u8>(),
            len,
            writable,
            id: -1,
            heap: Some(words),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn copies_round_trip_at_every_word_offset_and_length_up_to_the_mappings_last_byte() {
        // 69 bytes: the last 5 lie past the last whole word, and go byte by byte.
        let map = Mapping::heap(69, true);
        let data = pattern(69);
        for off in (0..69).step_by(8) {
            for len in 0..=69 - off {
                map.write(off, &data[..len]).unwrap();
                let mut back = vec![0u8; len];
                map.read(off, &mut back).unwrap();
                assert_eq!(back, &data[..len], "offset {off}, length {len}");
            }
        }
    }

    #[test]
    fn a_write_pads_its_last_word_with_zeros_and_never_passes_the_mapping() {
        let map = Mapping::heap(21, true);
        map.write(0, &[0xff; 21]).unwrap();
        map.write(0, &[1, 2, 3]).unwrap();
        let mut back = [0u8; 21];
        map.read(0, &mut back).unwrap();
        assert_eq!(&back[..8], &[1, 2, 3, 0, 0, 0, 0, 0]);
        assert_eq!(&back[8..], &[0xff; 13]);
        // The last 5 bytes are past the last whole word: written one by one, exactly.
        map.write(16, &[9, 9]).unwrap();
        map.read(16, &mut back[..5]).unwrap();
        assert_eq!(&back[..5], &[9, 9, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn copies_outside_the_mapping_or_off_a_word_are_refused() {
        let map = Mapping::heap(64, true);
        let mut b = [0u8; 8];
        assert!(map.read(60, &mut b).is_err());
        assert!(map.write(64, &[1]).is_err());
        assert!(map.read(usize::MAX, &mut b).is_err());
        assert!(map.read(4, &mut b).is_err(), "not at a multiple of 8");
        assert!(map.write(3, &[1]).is_err());
        assert!(map.read(64, &mut []).is_ok(), "nothing, at the end");
    }

    #[test]
    fn words_load_and_store_at_their_width_and_refuse_what_lies_outside() {
        let map = Mapping::heap(24, true);
        map.store_u64(8, u64::MAX - 1).unwrap();
        map.store_u32(16, 7).unwrap();
        map.store_u32(20, 9).unwrap();
        assert_eq!(map.load_u64(8), Ok(u64::MAX - 1));
        assert_eq!((map.load_u32(16), map.load_u32(20)), (Ok(7), Ok(9)));
        assert!(map.load_u64(20).is_err());
        assert!(map.store_u32(24, 1).is_err());
        let fixed = Fixed::<24>::new(map).unwrap();
        assert_eq!(fixed.swap_u32(16, 0), 7);
        assert_eq!(fixed.load_u32(16), 0);
    }

    #[test]
    #[should_panic(expected = "read-only")]
    fn a_read_only_mapping_is_never_written() {
        let map = Mapping::heap(16, false);
        let _ = map.write(0, &[1]);
    }

    #[test]
    fn a_fixed_header_is_as_long_as_it_says_or_refused() {
        assert!(Fixed::<32>::new(Mapping::heap(16, true)).is_err());
        let f = Fixed::<32>::new(Mapping::heap(40, true)).unwrap();
        f.write(8, b"header");
        let mut b = [0u8; 6];
        f.read(8, &mut b);
        assert_eq!(&b, b"header");
    }

    #[test]
    fn threads_copying_and_storing_the_same_words_race_only_in_value() {
        // Under Miri this checks that concurrent copies and word accesses are all atomic and
        // of one width per address: no data race, no mixed-size access.
        let map = std::sync::Arc::new(Mapping::heap(64, true));
        let writer = {
            let map = map.clone();
            std::thread::spawn(move || {
                for i in 0..20u8 {
                    map.write(0, &[i; 32]).unwrap();
                    map.store_u64(32, u64::from(i)).unwrap();
                }
            })
        };
        for _ in 0..20 {
            let mut b = [0u8; 32];
            map.read(0, &mut b).unwrap();
            let _ = map.load_u64(32);
        }
        writer.join().unwrap();
    }

    #[test]
    fn a_shared_source_never_reads_past_its_range() {
        let map = Mapping::heap(64, true);
        let src = Source::Shared {
            map: &map,
            offset: 8,
            len: 16,
        };
        assert_eq!(src.len(), 16);
        let own = Source::Own(&[1, 2, 3]);
        assert_eq!(own.len(), 3);
        #[cfg(not(miri))]
        {
            let null = File::create("/dev/null").unwrap();
            assert!(src.write_once(&null, 17).is_err(), "skip past the range");
            assert!(own.write_once(&null, 4).is_err());
            assert_eq!(own.write_once(&null, 1).unwrap(), 2);
        }
    }
}
