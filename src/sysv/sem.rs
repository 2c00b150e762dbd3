//! Semaphore sets: [`SemSet`] by id, [`SemOp`], `semtimedop` as [`SemSet::op`].

use std::time::Duration;

use super::*;

/// One operation of a `semop` call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SemOp {
    /// The semaphore's number in its set.
    pub num: u16,
    /// Negative: take; positive: give; 0: wait for zero.
    pub op: i16,
    /// `SEM_UNDO`, `IPC_NOWAIT`.
    pub flags: i16,
}

impl SemOp {
    /// Take one (blocks while the value is 0).
    pub(crate) fn take(num: u16) -> SemOp {
        SemOp {
            num,
            op: -1,
            flags: 0,
        }
    }
    /// Give one back.
    pub(crate) fn give(num: u16) -> SemOp {
        SemOp {
            num,
            op: 1,
            flags: 0,
        }
    }
    /// Block until the value is 0.
    pub(crate) fn zero(num: u16) -> SemOp {
        SemOp {
            num,
            op: 0,
            flags: 0,
        }
    }
    /// The kernel reverses this operation if the process dies: how liveness is tracked.
    pub(crate) fn undo(mut self) -> SemOp {
        self.flags |= libc::SEM_UNDO as i16;
        self
    }
    /// Fail with EAGAIN instead of blocking.
    pub(crate) fn nowait(mut self) -> SemOp {
        self.flags |= libc::IPC_NOWAIT as i16;
        self
    }
}

/// Why a semaphore wait ended without the operation taking place.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WaitError {
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
pub(crate) struct SemStat {
    /// How many semaphores it has.
    pub nsems: u32,
    /// Owner and mode.
    pub perm: Perm,
}

/// A semaphore set by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SemSet {
    id: i32,
}

impl SemSet {
    /// Creates a set of `nsems` semaphores, all 0, at `key`.
    ///
    /// # Errors
    /// EEXIST if an object is already there; EACCES, ENOSPC.
    pub(crate) fn create(key: Key, nsems: u16, mode: u32) -> Result<SemSet> {
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
    pub(crate) fn open(key: Key) -> Result<SemSet> {
        // SAFETY: semget takes plain integers.
        let id = unsafe { libc::semget(key.raw(), 0, 0) };
        if id < 0 {
            return Err(SysvError::last("semget", Target::Key(key)));
        }
        Ok(SemSet { id })
    }

    /// The set with this id (nothing is checked: a later call fails if it is gone).
    pub(crate) fn from_id(id: i32) -> SemSet {
        SemSet { id }
    }

    /// The set's id, as `ipcs` shows it.
    pub(crate) fn id(&self) -> i32 {
        self.id
    }

    /// The set's size, owner, mode and times (`IPC_STAT`).
    ///
    /// # Errors
    /// The set is gone, or we may not read it.
    pub(crate) fn stat(&self) -> Result<SemStat> {
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
                cuid: ds.sem_perm.cuid,
                cgid: ds.sem_perm.cgid,
                mode: u32::from(ds.sem_perm.mode) & 0o777,
            },
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
    pub(crate) fn value(&self, num: u16) -> Result<i32> {
        self.ctl(num, libc::GETVAL, "semctl(GETVAL)")
    }
    /// How many processes are blocked taking this semaphore.
    pub(crate) fn waiting(&self, num: u16) -> Result<i32> {
        self.ctl(num, libc::GETNCNT, "semctl(GETNCNT)")
    }
    /// How many processes are blocked waiting for this semaphore to be 0.
    pub(crate) fn zero_waiting(&self, num: u16) -> Result<i32> {
        self.ctl(num, libc::GETZCNT, "semctl(GETZCNT)")
    }
    /// The pid of the last process to operate on this semaphore.
    pub(crate) fn last_pid(&self, num: u16) -> Result<i32> {
        self.ctl(num, libc::GETPID, "semctl(GETPID)")
    }

    /// Sets a value outright. This also clears every process's undo adjustment for that
    /// semaphore, so never use it on one that is taken with SEM_UNDO.
    pub(crate) fn set(&self, num: u16, value: i32) -> Result<()> {
        // SAFETY: SETVAL takes an int (the `val` member of union semun) as its fourth argument;
        // on Linux that union is passed like an int.
        if unsafe { libc::semctl(self.id, i32::from(num), libc::SETVAL, value) } < 0 {
            return Err(SysvError::last("semctl(SETVAL)", Target::Id(self.id)));
        }
        Ok(())
    }

    /// Performs all `ops` atomically, blocking up to `timeout` (forever with `None`).
    pub(crate) fn op(
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
    pub(crate) fn remove(&self) -> Result<()> {
        // SAFETY: IPC_RMID takes no fourth argument.
        if unsafe { libc::semctl(self.id, 0, libc::IPC_RMID) } < 0 {
            return Err(SysvError::last("semctl(IPC_RMID)", Target::Id(self.id)));
        }
        Ok(())
    }
}
