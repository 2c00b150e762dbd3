//! The kernel's SysV objects as the tests touch them: a few thin wrappers over `libc`, written
//! here rather than borrowed from the crate, whose syscall layer is private. A test that acts
//! as a peer or an attacker speaks the protocol as docs/protocol.md gives it, through these.
#![allow(dead_code, unsafe_code)]

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use shmxfer::Key;

fn check(r: i32) -> io::Result<i32> {
    match r {
        -1 => Err(io::Error::last_os_error()),
        r => Ok(r),
    }
}

/// A shared memory segment by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shm(i32);

/// What `IPC_STAT` says of a segment.
#[derive(Debug, Clone, Copy)]
pub struct ShmStat {
    pub size: usize,
    pub uid: u32,
    pub cuid: u32,
    pub mode: u32,
    pub cpid: i32,
    pub lpid: i32,
    pub nattch: u64,
}

impl Shm {
    pub fn open(key: Key) -> io::Result<Shm> {
        // SAFETY: shmget takes integers only.
        check(unsafe { libc::shmget(key.0 as libc::key_t, 0, 0) }).map(Shm)
    }
    pub fn create(key: Key, size: usize, mode: u32) -> io::Result<Shm> {
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | mode as i32;
        // SAFETY: as above.
        check(unsafe { libc::shmget(key.0 as libc::key_t, size, flags) }).map(Shm)
    }
    pub fn create_private(size: usize, mode: u32) -> io::Result<Shm> {
        // SAFETY: as above.
        check(unsafe { libc::shmget(libc::IPC_PRIVATE, size, libc::IPC_CREAT | mode as i32) })
            .map(Shm)
    }
    pub fn from_id(id: i32) -> Shm {
        Shm(id)
    }
    pub fn id(&self) -> i32 {
        self.0
    }
    pub fn stat(&self) -> io::Result<ShmStat> {
        // SAFETY: shmid_ds is plain data; IPC_STAT fills the buffer we own.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        check(unsafe { libc::shmctl(self.0, libc::IPC_STAT, &mut ds) })?;
        Ok(ShmStat {
            size: ds.shm_segsz,
            uid: ds.shm_perm.uid,
            cuid: ds.shm_perm.cuid,
            mode: u32::from(ds.shm_perm.mode) & 0o777,
            cpid: ds.shm_cpid,
            lpid: ds.shm_lpid,
            nattch: ds.shm_nattch,
        })
    }
    pub fn remove(&self) -> io::Result<()> {
        // SAFETY: IPC_RMID ignores the buffer.
        check(unsafe { libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) }).map(drop)
    }
    pub fn attach(&self, writable: bool) -> io::Result<Mapping> {
        let len = self.stat()?.size;
        let flags = if writable { 0 } else { libc::SHM_RDONLY };
        // SAFETY: the kernel picks the address; nothing of ours is touched.
        let p = unsafe { libc::shmat(self.0, std::ptr::null(), flags) };
        if p as isize == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: NonNull::new(p.cast()).expect("shmat never maps at 0"),
            len,
        })
    }
}

/// An attachment; every access is checked against the segment's size, and goes through
/// atomics (another process writes it at any moment).
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is shared memory; every access below is atomic.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub fn len(&self) -> usize {
        self.len
    }
    fn inside(&self, off: usize, n: usize) -> io::Result<()> {
        match off.checked_add(n) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(io::Error::from_raw_os_error(libc::EFAULT)),
        }
    }
    fn byte(&self, i: usize) -> &std::sync::atomic::AtomicU8 {
        // SAFETY: i is inside the mapping (checked by the callers); AtomicU8 has byte alignment.
        unsafe { &*self.ptr.as_ptr().add(i).cast() }
    }
    pub fn read(&self, off: usize, out: &mut [u8]) -> io::Result<()> {
        self.inside(off, out.len())?;
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.byte(off + i).load(Ordering::Relaxed);
        }
        Ok(())
    }
    pub fn write(&self, off: usize, data: &[u8]) -> io::Result<()> {
        self.inside(off, data.len())?;
        for (i, b) in data.iter().enumerate() {
            self.byte(off + i).store(*b, Ordering::Relaxed);
        }
        std::sync::atomic::fence(Ordering::Release);
        Ok(())
    }
    fn word<T>(&self, off: usize) -> io::Result<&T> {
        self.inside(off, std::mem::size_of::<T>())?;
        if !off.is_multiple_of(std::mem::size_of::<T>()) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: inside the mapping and aligned (the mapping is page-aligned).
        Ok(unsafe { &*self.ptr.as_ptr().add(off).cast::<T>() })
    }
    pub fn load_u32(&self, off: usize) -> io::Result<u32> {
        Ok(self.word::<AtomicU32>(off)?.load(Ordering::Acquire))
    }
    pub fn store_u32(&self, off: usize, v: u32) -> io::Result<()> {
        self.word::<AtomicU32>(off)?.store(v, Ordering::Release);
        Ok(())
    }
    pub fn swap_u32(&self, off: usize, v: u32) -> io::Result<u32> {
        Ok(self.word::<AtomicU32>(off)?.swap(v, Ordering::AcqRel))
    }
    pub fn load_u64(&self, off: usize) -> io::Result<u64> {
        Ok(self.word::<AtomicU64>(off)?.load(Ordering::Acquire))
    }
    pub fn store_u64(&self, off: usize, v: u64) -> io::Result<()> {
        self.word::<AtomicU64>(off)?.store(v, Ordering::Release);
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the address shmat gave us, detached once.
        unsafe { libc::shmdt(self.ptr.as_ptr().cast()) };
    }
}

/// One operation of a `semop`.
#[derive(Debug, Clone, Copy)]
pub struct SemOp {
    pub num: u16,
    pub op: i16,
    pub flags: i16,
}

impl SemOp {
    pub fn take(num: u16) -> SemOp {
        SemOp {
            num,
            op: -1,
            flags: 0,
        }
    }
    pub fn give(num: u16) -> SemOp {
        SemOp {
            num,
            op: 1,
            flags: 0,
        }
    }
    pub fn zero(num: u16) -> SemOp {
        SemOp {
            num,
            op: 0,
            flags: 0,
        }
    }
    pub fn undo(mut self) -> SemOp {
        self.flags |= libc::SEM_UNDO as i16;
        self
    }
    pub fn nowait(mut self) -> SemOp {
        self.flags |= libc::IPC_NOWAIT as i16;
        self
    }
}

/// A semaphore set by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemSet(i32);

/// What `IPC_STAT` says of a set.
#[derive(Debug, Clone, Copy)]
pub struct SemStat {
    pub nsems: u64,
    pub otime: i64,
    pub uid: u32,
    pub cuid: u32,
}

impl SemSet {
    pub fn open(key: Key) -> io::Result<SemSet> {
        // SAFETY: semget takes integers only.
        check(unsafe { libc::semget(key.0 as libc::key_t, 0, 0) }).map(SemSet)
    }
    pub fn create(key: Key, nsems: u16, mode: u32) -> io::Result<SemSet> {
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | mode as i32;
        // SAFETY: as above.
        check(unsafe { libc::semget(key.0 as libc::key_t, i32::from(nsems), flags) }).map(SemSet)
    }
    pub fn from_id(id: i32) -> SemSet {
        SemSet(id)
    }
    pub fn id(&self) -> i32 {
        self.0
    }
    fn ctl(&self, num: u16, cmd: i32) -> io::Result<i32> {
        // SAFETY: GETVAL, GETPID, GETNCNT and GETZCNT take no argument.
        check(unsafe { libc::semctl(self.0, i32::from(num), cmd) })
    }
    pub fn value(&self, num: u16) -> io::Result<i32> {
        self.ctl(num, libc::GETVAL)
    }
    pub fn last_pid(&self, num: u16) -> io::Result<i32> {
        self.ctl(num, libc::GETPID)
    }
    pub fn waiting(&self, num: u16) -> io::Result<i32> {
        self.ctl(num, libc::GETNCNT)
    }
    pub fn zero_waiting(&self, num: u16) -> io::Result<i32> {
        self.ctl(num, libc::GETZCNT)
    }
    pub fn set(&self, num: u16, value: i32) -> io::Result<()> {
        // SAFETY: SETVAL takes the value as its fourth argument (an int in the union).
        check(unsafe { libc::semctl(self.0, i32::from(num), libc::SETVAL, value) }).map(drop)
    }
    pub fn stat(&self) -> io::Result<SemStat> {
        // SAFETY: semid_ds is plain data; IPC_STAT fills the buffer we own.
        let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        check(unsafe { libc::semctl(self.0, 0, libc::IPC_STAT, &mut ds) })?;
        Ok(SemStat {
            nsems: ds.sem_nsems as u64,
            otime: ds.sem_otime,
            uid: ds.sem_perm.uid,
            cuid: ds.sem_perm.cuid,
        })
    }
    pub fn remove(&self) -> io::Result<()> {
        // SAFETY: IPC_RMID takes no argument.
        check(unsafe { libc::semctl(self.0, 0, libc::IPC_RMID) }).map(drop)
    }
    /// `semtimedop` (`None`: wait without end); a timeout is `ErrorKind::WouldBlock` or
    /// `EAGAIN`, as the kernel says it.
    pub fn op(&self, ops: &[SemOp], timeout: Option<Duration>) -> io::Result<()> {
        let mut bufs: Vec<libc::sembuf> = ops
            .iter()
            .map(|o| libc::sembuf {
                sem_num: o.num,
                sem_op: o.op,
                sem_flg: o.flags,
            })
            .collect();
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs() as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let tsp = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        loop {
            // SAFETY: the buffers live for the call; the kernel reads them only.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_semtimedop,
                    self.0,
                    bufs.as_mut_ptr(),
                    bufs.len(),
                    tsp,
                )
            };
            match r {
                -1 if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
                -1 => return Err(io::Error::last_os_error()),
                _ => return Ok(()),
            }
        }
    }
}
