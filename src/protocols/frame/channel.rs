//! The channel both ends attach to: its objects, mappings and validated header, the waits
//! (sliced, with liveness checks between slices) and the accesses every step is made of.
//! Each end's steps are a type of its own ([`super::ReceiverEnd`], [`super::SenderEnd`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::mechanisms::runtime;
use crate::sysv::{self, Fixed, Key, Mapping, SemOp, SemSet, Shm, SysvError, WaitError};

/// An attached channel: its three objects, both mappings and the validated header.
#[derive(Debug)]
pub struct Channel {
    /// The channel's key (the control segment and the semaphores; content at key + 1).
    pub key: Key,
    /// The control segment.
    pub control_shm: Shm,
    /// The content segment (the ring of slots).
    pub content_shm: Shm,
    /// The channel's semaphores ([`sem`]).
    pub sems: SemSet,
    pub(super) control: Control,
    pub(super) content: Mapping,
    /// The validated header.
    pub info: Info,
    /// Our place in the ring, counted from the session's start: both sides take slots in the
    /// same order, each counting for itself, so a file's chunks go on where the previous file's
    /// ended (its last slots may still be being drained).
    pub(super) ring: AtomicU64,
    /// A sender's way with a stopped receiver.
    pub(super) stall: StallWatch,
    /// Since when our receiver has been seen stopped.
    pub(super) stopped_since: std::sync::Mutex<Option<Instant>>,
    /// What stops our waits.
    pub(super) cancel: runtime::Cancel,
}

impl Channel {
    /// Creates a channel at `key` (the receiver's side). The control segment is created first,
    /// with IPC_EXCL, so it is the key's lock; the magic is written last, so a sender never sees
    /// a half-made channel as ready.
    pub(super) fn create(addr: &Address, cfg: &Config) -> Result<Channel, FrameError> {
        let key = addr.key;
        let content_key = key.offset(1).ok_or(FrameError::Foreign {
            key,
            why: "key+1 overflows".into(),
        })?;
        let ring = cfg.slot_size * cfg.slot_count as usize;
        let control_shm = Shm::create(key, CONTROL_LEN, cfg.mode)
            .map_err(|e| create_error(key, e, "control segment", CONTROL_LEN))?;
        let mut undo = runtime::Rollback::default();
        undo.push(move || drop(control_shm.remove()));
        let content_shm = Shm::create(content_key, ring, cfg.mode)
            .map_err(|e| create_error(content_key, e, "content segment", ring))?;
        undo.push(move || drop(content_shm.remove()));
        let sems = SemSet::create(key, sem::COUNT, cfg.mode)
            .map_err(|e| create_error(key, e, "semaphore set", 0))?;
        undo.push(move || drop(sems.remove()));
        sems.set(sem::EMPTY, cfg.slot_count as i32)?;
        sems.op(&[SemOp::give(sem::RECEIVER).undo()], None)
            .map_err(|e| FrameError::from_wait(key, e))?;
        let control = control(control_shm.attach(true)?)
            .map_err(|source| FrameError::Header { key, source })?;
        let content = content_shm.attach(true)?;
        // Once here, rather than a page fault at a time in the first transfers.
        content.populate();
        let info = Info {
            slot_size: cfg.slot_size,
            slot_count: cfg.slot_count,
            require_md5: cfg.require_md5,
            receiver_pid: sysv::getpid(),
            content_shmid: content_shm.id(),
            semid: sems.id(),
            mode: cfg.mode,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            name: addr.name.clone().unwrap_or_default().into_bytes(),
        };
        let head = encode_info(&info);
        // The magic last, with a release store that `read_head`'s acquire load pairs with: a
        // reader that sees the magic sees every field written before it.
        control.write(8, &head[8..]);
        control.store_u64(INFO_OFF, u64::from_ne_bytes(MAGIC));
        undo.disarm();
        Ok(Channel {
            key,
            control_shm,
            content_shm,
            sems,
            control,
            content,
            info,
            ring: AtomicU64::new(0),
            stall: StallWatch::default(),
            stopped_since: std::sync::Mutex::new(None),
            cancel: cfg.cancel.clone(),
        })
    }

    /// Attaches to the channel at `addr` (the sender's side), checking every part of it, that
    /// it serves the name asked for (if any), and that its receiver runs as `owner`: files
    /// are never handed to another user's receiver unless that user is named.
    pub(super) fn open(addr: &Address, owner: u32) -> Result<Channel, FrameError> {
        let key = addr.key;
        let (shmid, info) = match probe_judging(key, Judge::Sender)? {
            Probe::Absent => return Err(FrameError::NoReceiver { key }),
            Probe::Starting { pid, .. } => return Err(FrameError::Starting { key, pid }),
            Probe::Foreign { why, .. } => return Err(FrameError::Foreign { key, why }),
            Probe::NoPermission { uid, mode, .. } => {
                return Err(FrameError::denied(key, uid, mode));
            }
            Probe::Channel {
                alive: false, info, ..
            } => {
                return Err(FrameError::ReceiverGone {
                    key,
                    pid: info.receiver_pid,
                });
            }
            Probe::Abandoned { pid, .. } => return Err(FrameError::ReceiverGone { key, pid }),
            Probe::Channel {
                shmid,
                info,
                owner: uid,
                ..
            } => {
                check_peer(addr, &info, uid, owner)?;
                (shmid, info)
            }
        };
        let control_shm = Shm::from_id(shmid);
        let content_shm = Shm::from_id(info.content_shmid);
        let sems = SemSet::from_id(info.semid);
        let denied = || FrameError::PermissionDenied {
            key,
            owner: sysv::user_name(control_shm.stat().map(|s| s.perm.uid).unwrap_or(u32::MAX)),
            mode: info.mode,
        };
        let gone = |e: SysvError| -> FrameError {
            if e.is_permission() {
                denied()
            } else if e.is_gone() {
                FrameError::Removed { key }
            } else {
                e.into()
            }
        };
        let control = control(control_shm.attach(true).map_err(gone)?)
            .map_err(|source| FrameError::Header { key, source })?;
        let content = content_shm.attach(true).map_err(gone)?;
        // The probe found the content segment at KEY+1 to be the one the header names; it must
        // also hold the ring the header describes.
        if content.len() < info.ring_len() {
            return Err(FrameError::Header {
                key,
                source: HeaderError::Field {
                    field: "content segment",
                    value: content.len() as u64,
                },
            });
        }
        Ok(Channel {
            key,
            control_shm,
            content_shm,
            sems,
            control,
            content,
            info,
            ring: AtomicU64::new(0),
            stall: StallWatch::default(),
            stopped_since: std::sync::Mutex::new(None),
            cancel: runtime::Cancel::default(),
        })
    }

    /// Removes the channel's three objects; existing attachments stay valid until dropped.
    pub fn remove(&self) {
        let _ = self.sems.remove();
        let _ = self.content_shm.remove();
        let _ = self.control_shm.remove();
    }

    pub(super) fn wait(&self, ops: &[SemOp], timeout: Option<Duration>) -> Result<(), FrameError> {
        self.sems
            .op(ops, timeout)
            .map_err(|e| FrameError::from_wait(self.key, e))
    }

    /// Tries `ops` without blocking for a few microseconds: mid-transfer the peer usually
    /// answers that fast, and catching it awake spares both sides a sleep and a cross-CPU
    /// wake-up. Returns whether the operation took place.
    pub(super) fn poll_briefly(&self, ops: &[SemOp], spin: Duration) -> Result<bool, FrameError> {
        let mut nowait = [SemOp::zero(0); 4];
        let n = ops.len().min(4);
        for (d, o) in nowait.iter_mut().zip(ops) {
            *d = o.nowait();
        }
        let t = Instant::now();
        loop {
            match self.sems.op(&nowait[..n], None) {
                Ok(()) => return Ok(true),
                Err(WaitError::TimedOut) if t.elapsed() < spin => std::hint::spin_loop(),
                Err(WaitError::TimedOut) | Err(WaitError::Interrupted) => return Ok(false),
                Err(e) => return Err(FrameError::from_wait(self.key, e)),
            }
        }
    }

    /// Waits for `ops` in slices, checking between slices that `peer` (a liveness semaphore)
    /// is still up and that we have not been asked to stop. The receiver's waits end at once
    /// on a stop; a sender's go on for [`STOP_SETTLE`] after it (the answers of files already
    /// posted whole are worth waiting that long for), and watch for a stopped receiver.
    pub(super) fn wait_on_peer(&self, ops: &[SemOp], peer: u16) -> Result<(), FrameError> {
        self.wait_on_peer_spinning(ops, peer, Duration::ZERO)
    }

    /// As [`Channel::wait_on_peer`], polling for `spin` first (see [`Channel::poll_briefly`]).
    pub(super) fn wait_on_peer_spinning(
        &self,
        ops: &[SemOp],
        peer: u16,
        spin: Duration,
    ) -> Result<(), FrameError> {
        if !spin.is_zero() && self.poll_briefly(ops, spin)? {
            return Ok(());
        }
        loop {
            let slice = match peer == sem::RECEIVER {
                true => self.sender_slice()?,
                false => LIVENESS_SLICE,
            };
            match self.wait(ops, Some(slice)) {
                Ok(()) => return Ok(()),
                Err(FrameError::TimedOut { .. }) | Err(FrameError::Interrupted) => {}
                Err(e) => return Err(e),
            }
            if peer == sem::SENDER {
                if self.cancel.is_cancelled() {
                    return Err(FrameError::Interrupted);
                }
                if !self.sender_alive()? {
                    return Err(FrameError::SenderGone);
                }
                continue;
            }
            if !self.receiver_alive() {
                return Err(FrameError::ReceiverGone {
                    key: self.key,
                    pid: self.info.receiver_pid,
                });
            }
            self.check_stall()?;
        }
    }

    /// The next slice of a sender's wait: [`LIVENESS_SLICE`], or what is left of
    /// [`STOP_SETTLE`] once a stop was asked for (then, past it, [`FrameError::Interrupted`]).
    pub(super) fn sender_slice(&self) -> Result<Duration, FrameError> {
        match self.cancel.age() {
            None => Ok(LIVENESS_SLICE),
            Some(age) => match STOP_SETTLE.checked_sub(age) {
                Some(left) if !left.is_zero() => Ok(left.min(LIVENESS_SLICE)),
                _ => Err(FrameError::Interrupted),
            },
        }
    }

    /// A sender's look at its receiver's process between slices: stopped (SIGSTOP, Ctrl-Z)
    /// is said once through the stall hook, and waited out up to the stall limit.
    pub(super) fn check_stall(&self) -> Result<(), FrameError> {
        let pid = match self.control_shm.stat() {
            Ok(s) => s.cpid,
            Err(_) => return Ok(()),
        };
        let mut since = self.stopped_since.lock().unwrap_or_else(|e| e.into_inner());
        let tell = |s| {
            if let Some(h) = &self.stall.hook {
                (h.0)(s);
            }
        };
        if !sysv::process_stopped(pid) {
            if since.take().is_some() {
                tell(Stall::Continued { pid });
            }
            return Ok(());
        }
        let t = *since.get_or_insert_with(|| {
            tell(Stall::Stopped { pid });
            Instant::now()
        });
        match self.stall.limit {
            Some(limit) if t.elapsed() >= limit => Err(FrameError::ReceiverStopped {
                key: self.key,
                pid,
                secs: (t.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            }),
            _ => Ok(()),
        }
    }

    /// Sets how this (sender's) channel waits out a stopped receiver.
    pub(super) fn with_stall_watch(mut self, w: StallWatch) -> Channel {
        self.stall = w;
        self
    }

    /// Sets what stops this (sender's) channel's waits.
    pub(super) fn with_cancel(mut self, c: runtime::Cancel) -> Channel {
        self.cancel = c;
        self
    }

    /// What stops this channel's waits.
    pub fn cancel(&self) -> &runtime::Cancel {
        &self.cancel
    }

    /// Whether our receiver's process is stopped (SIGSTOP, Ctrl-Z) now.
    pub fn receiver_stopped(&self) -> bool {
        self.control_shm
            .stat()
            .is_ok_and(|s| sysv::process_stopped(s.cpid))
    }

    /// The error for a stopped receiver that we waited `waited` for.
    pub fn stopped_error(&self, waited: Duration) -> FrameError {
        FrameError::ReceiverStopped {
            key: self.key,
            pid: self.control_shm.stat().map_or(0, |s| s.cpid),
            secs: (waited.as_secs_f64() * 10.0).round() / 10.0,
        }
    }

    /// Whether our receiver still serves the channel ([`serving`]).
    pub fn receiver_alive(&self) -> bool {
        match self.control_shm.stat() {
            Ok(stat) => serving(self.control_shm.id(), &stat, &self.sems),
            Err(e) => !e.is_gone(),
        }
    }

    /// Whether the admitted sender lives: its mark is up and the process that last set it
    /// (the sender takes it with SEM_UNDO; a forger's SETVAL records the forger) lives with
    /// the channel attached, where the kernel lets us tell.
    pub(super) fn sender_alive(&self) -> Result<bool, FrameError> {
        let gone = |e: SysvError| FrameError::from_wait(self.key, e.into());
        if self.sems.value(sem::SENDER).map_err(gone)? == 0 {
            return Ok(false);
        }
        let holder = self.sems.last_pid(sem::SENDER).map_err(gone)?;
        Ok(sysv::attached(holder, self.control_shm.id()) != Some(false))
    }

    /// The next slot in ring order; every taken FULL (receiver) or EMPTY (sender) is one.
    pub(super) fn next_slot(&self) -> usize {
        let n = self.ring.fetch_add(1, Ordering::Relaxed);
        (n % u64::from(self.info.slot_count)) as usize
    }
    pub(super) fn read(&self, off: usize, out: &mut [u8]) {
        self.control.read(off, out);
    }
    pub(super) fn write(&self, off: usize, bytes: &[u8]) {
        self.control.write(off, bytes);
    }
    pub(super) fn store_u32(&self, off: usize, v: u32) {
        self.control.store_u32(off, v);
    }
    pub(super) fn store_u64(&self, off: usize, v: u64) {
        self.control.store_u64(off, v);
    }
}

/// Copies a channel's info region out: the magic first, with an acquire load (the receiver
/// stores it last, with release), then the rest, so the fields read belong to the magic seen.
pub(super) fn read_head(map: &Mapping, head: &mut [u8; INFO_LEN]) -> Result<(), sysv::OutOfBounds> {
    let magic = map.load_u64(INFO_OFF)?;
    map.read(INFO_OFF + 8, &mut head[8..])?;
    head[..8].copy_from_slice(&magic.to_ne_bytes());
    Ok(())
}

/// A control segment's attachment, checked once to hold `CONTROL_LEN` bytes: every field is at
/// a constant offset inside it, so no access can fall outside, and none returns an error.
pub(super) type Control = Fixed<CONTROL_LEN>;

/// Checks an attachment's size once, as [`Control`] wants.
pub(super) fn control(m: Mapping) -> Result<Control, HeaderError> {
    Fixed::new(m).map_err(|e| HeaderError::TooSmall { size: e.size })
}
