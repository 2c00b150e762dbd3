//! The channel both ends attach to: its objects, mappings and validated header, the waits
//! (sliced, with liveness checks between slices) and the accesses every step is made of.
//! Each end's steps are a type of its own ([`super::ReceiverEnd`], [`super::SenderEnd`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::mechanisms::runtime;
use crate::sysv::{self, Fixed, Key, Mapping, SemOp, SemSet, Shm, SysvError, WaitError};

/// An attached channel: its three objects, the mappings and the validated header, and the
/// sender segment of the session (ours, for a sender; the admitted sender's, for a receiver).
#[derive(Debug)]
pub(crate) struct Channel {
    /// The channel's key (the control segment and the semaphores; the rendezvous at key + 1).
    pub key: Key,
    /// The control segment: only the receiver writes it.
    pub control_shm: Shm,
    /// The rendezvous segment: the ticket and the admitted sender's segment id.
    pub rendezvous_shm: Shm,
    /// The channel's semaphores ([`sem`]): doorbells over the owners' counters.
    pub sems: SemSet,
    pub(super) control: Control,
    pub(super) rendezvous: Rendezvous,
    /// The sender segment of the session: written only by the sender that made it.
    pub(super) seg: std::sync::RwLock<Option<Arc<Segment>>>,
    /// The receiver's: the last session's segment, kept for the next sender of its user.
    pub(super) spare: std::sync::Mutex<Option<Arc<Segment>>>,
    /// The validated header.
    pub info: Info,
    /// Our place in the ring, counted from the session's start: both sides take slots in the
    /// same order, each counting for itself, so a file's chunks go on where the previous file's
    /// ended (its last slots may still be being drained).
    pub(super) ring: AtomicU64,
    /// What we took of the peer's events this session (requests, or answers), counted here.
    pub(super) taken: AtomicU32,
    /// Descriptors the receiver handed back this session (its side: the truth it publishes).
    pub(super) consumed: AtomicU64,
    /// The session we are in (0: none yet).
    pub(super) session: AtomicU32,
    /// A sender's way with a stopped receiver.
    pub(super) stall: StallWatch,
    /// Since when our receiver has been seen stopped.
    pub(super) stopped_since: std::sync::Mutex<Option<Instant>>,
    /// Since when our receiver's mark has been seen down while its process lives.
    pub(super) doubted_since: std::sync::Mutex<Option<Instant>>,
    /// What stops our waits.
    pub(super) cancel: runtime::Cancel,
}

/// A sender's own segment: its requests, paths, descriptors, trailers and ring. Its creator
/// alone may write it (mode 0400 once made, given to the receiver's user to read); a receiver
/// attaches it read-only after checking that with `IPC_STAT`.
#[derive(Debug)]
pub(super) struct Segment {
    pub(super) shm: Shm,
    pub(super) map: Fixed<RING_OFF>,
    /// Its creator's uid (`shm_perm.cuid`): who sends, as the kernel keeps it.
    pub(super) uid: u32,
    /// Its creator's gid.
    pub(super) gid: u32,
    /// Its creator's pid, as our PID namespace sees it (0 outside it).
    pub(super) pid: i32,
}

impl Segment {
    /// Where slot `slot` starts in the segment, if it is one of the ring's.
    pub(super) fn slot_off(&self, info: &Info, slot: usize) -> Option<usize> {
        (slot < info.slot_count as usize)
            .then(|| slot.checked_mul(info.slot_size)?.checked_add(RING_OFF))
            .flatten()
    }
}

/// An end of a channel: a newtype over the `Channel` core that only that end's steps extend,
/// and that reads the core's fields and shared steps through `Deref`.
macro_rules! end {
    ($end:ident) => {
        impl std::ops::Deref for $end {
            type Target = Channel;
            fn deref(&self) -> &Channel {
                &self.0
            }
        }
    };
}
pub(super) use end;

/// Whom a wait waits on: the receiver, or the sender (how to tell it lives).
pub(super) enum Peer<'a> {
    Receiver,
    Sender(&'a dyn Fn() -> Result<bool, FrameError>),
}

/// A wait on a doorbell: the semaphore, how many events, and the counter that is the truth.
pub(super) struct Bell<'a> {
    pub sem: u16,
    pub n: u32,
    /// Events the peer has published and we have not taken.
    pub avail: &'a dyn Fn() -> u32,
    pub peer: Peer<'a>,
}

/// How long a receiver whose liveness mark is down while its process lives is doubted before
/// it is called gone: anyone who may write the channel can zero the mark, and the receiver
/// raises it again within a second ([`super::ReceiverEnd::reassert`]).
pub(super) const DOUBT: Duration = Duration::from_secs(2);

/// The channel at `addr` as a sender finds it: its control segment's id and header, if it is
/// a live channel that serves what `addr` asks for and whose receiver runs as `owner`.
fn probe_for_sender(addr: &Address, owner: u32) -> Result<(i32, Info, u32), FrameError> {
    let key = addr.key;
    let since = Instant::now();
    loop {
        return match probe_judging(key, Judge::Sender)? {
            Probe::Absent => Err(FrameError::NoReceiver { key }),
            Probe::Starting { pid, .. } => Err(FrameError::Starting { key, pid }),
            Probe::Foreign { why, .. } => Err(FrameError::Foreign { key, why }),
            Probe::NoPermission { uid, mode, .. } => Err(FrameError::denied(key, uid, mode)),
            Probe::Channel {
                alive: false,
                info,
                shmid,
                ..
            } => {
                let pid = Shm::from_id(shmid).stat().map_or(0, |s| s.cpid);
                if crate::os::process_alive(pid) && since.elapsed() < DOUBT {
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                Err(FrameError::ReceiverGone {
                    key,
                    pid: info.receiver_pid,
                })
            }
            Probe::Abandoned { pid, .. } => Err(FrameError::ReceiverGone { key, pid }),
            Probe::Channel {
                shmid,
                info,
                owner: uid,
                ..
            } => {
                check_peer(addr, &info, uid, owner)?;
                Ok((shmid, info, uid))
            }
        };
    }
}

/// Refuses a ring no sender could use: slots of 4 KiB to 256 MiB, a multiple of 8 bytes (slots
/// are copied by aligned words), 1 to 256 of them; the header would say the same to senders.
fn check_config(key: Key, cfg: &Config) -> Result<(), FrameError> {
    let bad = |field, value| FrameError::Header {
        key,
        source: HeaderError::Field { field, value },
    };
    if !(MIN_SLOT..=MAX_SLOT).contains(&cfg.slot_size) || !cfg.slot_size.is_multiple_of(8) {
        return Err(bad("slot size", cfg.slot_size as u64));
    }
    if !(1..=MAX_SLOTS).contains(&cfg.slot_count) {
        return Err(bad("slot count", cfg.slot_count.into()));
    }
    Ok(())
}

/// The header a receiver creating a channel at `addr` with `cfg` publishes.
fn new_info(addr: &Address, cfg: &Config, rendezvous_shmid: i32, semid: i32) -> Info {
    Info {
        slot_size: cfg.slot_size,
        slot_count: cfg.slot_count,
        require_md5: cfg.require_md5,
        receiver_pid: crate::os::getpid(),
        rendezvous_shmid,
        semid,
        mode: cfg.mode,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        name: addr.name.clone().unwrap_or_default().into_bytes(),
    }
}

/// The rendezvous's attachment, checked once to hold `RDV_LEN` bytes.
pub(super) type Rendezvous = Fixed<RDV_LEN>;

impl Segment {
    /// Adds one to the u32 counter at `off`, which only this segment's creator writes.
    pub(super) fn count_u32(&self, off: usize) {
        self.map
            .store_u32(off, self.map.load_u32(off).wrapping_add(1));
    }

    /// As [`Segment::count_u32`], for a u64 counter.
    pub(super) fn count_u64(&self, off: usize) {
        self.map
            .store_u64(off, self.map.load_u64(off).wrapping_add(1));
    }

    /// Makes a sender's segment for `ch`: created private and owner-only, attached for writing,
    /// stamped, then given to the receiver's user (`receiver_uid`) with mode 0400, so that from
    /// then on nobody but root can attach it for writing, and only the receiver's user (and
    /// root) can read it. It is marked for removal at once: the kernel frees it when the last
    /// of us and the receiver detaches, however we end.
    fn create(ch: &Channel, receiver_uid: u32) -> Result<Segment, FrameError> {
        if let Some(seg) = Segment::take_up(ch, receiver_uid) {
            return Ok(seg);
        }
        let len = ch.info.segment_len();
        let shm = Shm::create_private(len, 0o600)
            .map_err(|e| create_error(ch.key, e, "sender segment", len))?;
        let made = (|| -> Result<Segment, FrameError> {
            let map = Fixed::new(shm.attach(true)?).map_err(|e| FrameError::Header {
                key: ch.key,
                source: HeaderError::TooSmall { size: e.size },
            })?;
            map.write(0, &SEGMENT_MAGIC);
            map.store_u32(SEG_VERSION_OFF, VERSION);
            map.store_u32(SEG_CHANNEL_OFF, ch.control_shm.id() as u32);
            shm.set_owner(receiver_uid, 0o400)?;
            Ok(Segment {
                shm,
                map,
                uid: crate::os::geteuid(),
                gid: 0,
                pid: crate::os::getpid(),
            })
        })();
        let _ = shm.remove();
        made
    }

    /// Takes up the segment the receiver kept from its last session, if a sender of our own
    /// uid made it and nobody but the receiver has it attached: made writable to its creator's
    /// uid again for the instant of our attach, then 0400 as before. Of two of our senders that
    /// try at once, neither keeps it (each finds a third attachment, and makes its own).
    /// `None`: make a new one.
    fn take_up(ch: &Channel, receiver_uid: u32) -> Option<Segment> {
        let id = ch.control.load_u32(SPARE_OFF) as i32;
        let me = crate::os::geteuid();
        if id < 0 || ch.control.load_u32(SPARE_UID_OFF) != me {
            return None;
        }
        let shm = Shm::from_id(id);
        let fits = |s: &sysv::ShmStat, n| {
            s.perm.cuid == me && s.size == ch.info.segment_len() && s.nattch == n
        };
        if !shm.stat().is_ok_and(|s| fits(&s, 1)) {
            return None;
        }
        shm.set_owner(receiver_uid, 0o600).ok()?;
        let map = shm.attach(true);
        let _ = shm.set_owner(receiver_uid, 0o400);
        let map = Fixed::<RING_OFF>::new(map.ok()?).ok()?;
        let mut magic = [0u8; 8];
        map.read(0, &mut magic);
        let ours = shm.stat().is_ok_and(|s| fits(&s, 2))
            && magic == SEGMENT_MAGIC
            && map.load_u32(SEG_CHANNEL_OFF) == ch.control_shm.id() as u32;
        ours.then_some(Segment {
            shm,
            map,
            uid: me,
            gid: 0,
            pid: crate::os::getpid(),
        })
    }

    /// Attaches the segment `id` that a sender named at the rendezvous for `session`, read
    /// only, if the kernel and the segment say it is one: nobody but its creator may write it
    /// (no write bit for group or others, and it was made writable by none but its creator),
    /// its size is the one this channel's senders make, and its creator stamped it for this
    /// channel and this session. Anything else is refused with the reason (empty where there
    /// is nothing to say: the segment is gone with its sender).
    pub(super) fn admit(
        ch: &Channel,
        id: i32,
        session: u32,
        spare: Option<Arc<Segment>>,
    ) -> Result<Arc<Segment>, String> {
        let shm = Shm::from_id(id);
        let st = shm.stat().map_err(|e| match e.is_gone() {
            // Its sender already went away (its segment goes with it): nothing to say.
            true => String::new(),
            false => format!("segment {id}: {e}"),
        })?;
        if st.perm.mode & 0o022 != 0 {
            return Err(format!(
                "segment {id} is writable by others (mode {:04o})",
                st.perm.mode
            ));
        }
        if st.size != ch.info.segment_len() {
            return Err(format!(
                "segment {id} holds {} bytes, not the {} a sender's does",
                st.size,
                ch.info.segment_len()
            ));
        }
        // The last session's, taken up again: already attached (read-only) here.
        let seg = match spare.filter(|s| s.shm.id() == id) {
            Some(s) => s,
            None => {
                let map = shm
                    .attach(false)
                    .map_err(|e| format!("segment {id}: {e}"))?;
                let map = Fixed::<RING_OFF>::new(map).map_err(|e| format!("segment {id}: {e}"))?;
                Arc::new(Segment {
                    shm,
                    map,
                    uid: st.perm.cuid,
                    gid: st.perm.cgid,
                    // The last to attach before us: its sender, also when it took it up.
                    pid: st.lpid,
                })
            }
        };
        let map = &seg.map;
        let mut magic = [0u8; 8];
        map.read(0, &mut magic);
        let stamped = magic == SEGMENT_MAGIC
            && map.load_u32(SEG_VERSION_OFF) == VERSION
            && map.load_u32(SEG_CHANNEL_OFF) == ch.control_shm.id() as u32
            && map.load_u32(SEG_SESSION_OFF) == session;
        if !stamped {
            return Err(format!(
                "segment {id} (of uid {}) is not a sender's for this channel and session {session}",
                st.perm.cuid
            ));
        }
        Ok(seg)
    }
}

impl Channel {
    /// Creates a channel at `key` (the receiver's side). The control segment is created first,
    /// with IPC_EXCL, so it is the key's lock; the magic is written last, so a sender never sees
    /// a half-made channel as ready. The control segment is the receiver's alone: the channel's
    /// mode less every write bit but the owner's.
    pub(super) fn create(addr: &Address, cfg: &Config) -> Result<Channel, FrameError> {
        let key = addr.key;
        check_config(key, cfg)?;
        let rdv_key = key.offset(1).ok_or(FrameError::Foreign {
            key,
            why: "key+1 overflows".into(),
        })?;
        let control_shm = Shm::create(key, CONTROL_LEN, cfg.mode & !0o022)
            .map_err(|e| create_error(key, e, "control segment", CONTROL_LEN))?;
        let mut undo = runtime::Rollback::default();
        undo.push(move || drop(control_shm.remove()));
        // Every sender makes a segment of its own holding the ring: if the kernel's limits
        // leave no room for one, say so now rather than to every sender.
        let seg_len = RING_OFF + cfg.slot_size * cfg.slot_count as usize;
        Shm::create_private(seg_len, 0o600)
            .and_then(|s| s.remove())
            .map_err(|e| create_error(key, e, "sender segment", seg_len))?;
        let rendezvous_shm = Shm::create(rdv_key, RDV_LEN, cfg.mode)
            .map_err(|e| create_error(rdv_key, e, "rendezvous segment", RDV_LEN))?;
        undo.push(move || drop(rendezvous_shm.remove()));
        let sems = SemSet::create(key, sem::COUNT, cfg.mode)
            .map_err(|e| create_error(key, e, "semaphore set", 0))?;
        undo.push(move || drop(sems.remove()));
        sems.set(sem::EMPTY, cfg.slot_count as i32)?;
        sems.op(&[SemOp::give(sem::RECEIVER).undo()], None)
            .map_err(|e| FrameError::from_wait(key, e))?;
        let control = control(control_shm.attach(true)?)
            .map_err(|source| FrameError::Header { key, source })?;
        let rendezvous =
            Fixed::new(rendezvous_shm.attach(true)?).map_err(|e| FrameError::Header {
                key,
                source: HeaderError::TooSmall { size: e.size },
            })?;
        let info = new_info(addr, cfg, rendezvous_shm.id(), sems.id());
        let head = encode_info(&info);
        control.store_u32(ADMITTED_OFF, NOT_ADMITTED as u32);
        control.store_u32(SPARE_OFF, u32::MAX);
        // The magic last, with a release store that `read_head`'s acquire load pairs with: a
        // reader that sees the magic sees every field written before it.
        control.write(8, &head[8..]);
        control.store_u64(INFO_OFF, u64::from_ne_bytes(MAGIC));
        undo.disarm();
        Ok(Channel::new(
            key,
            (control_shm, control),
            (rendezvous_shm, rendezvous),
            sems,
            info,
            cfg.cancel.clone(),
        ))
    }

    fn new(
        key: Key,
        (control_shm, control): (Shm, Control),
        (rendezvous_shm, rendezvous): (Shm, Rendezvous),
        sems: SemSet,
        info: Info,
        cancel: runtime::Cancel,
    ) -> Channel {
        Channel {
            key,
            control_shm,
            rendezvous_shm,
            sems,
            control,
            rendezvous,
            seg: std::sync::RwLock::new(None),
            spare: std::sync::Mutex::new(None),
            info,
            ring: AtomicU64::new(0),
            taken: AtomicU32::new(0),
            consumed: AtomicU64::new(0),
            session: AtomicU32::new(0),
            stall: StallWatch::default(),
            stopped_since: std::sync::Mutex::new(None),
            doubted_since: std::sync::Mutex::new(None),
            cancel,
        }
    }

    /// The sender segment of the session, if there is one.
    pub(super) fn seg(&self) -> Option<Arc<Segment>> {
        self.seg.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(super) fn set_seg(&self, s: Option<Arc<Segment>>) {
        *self.seg.write().unwrap_or_else(|e| e.into_inner()) = s;
    }

    /// Attaches to the channel at `addr` (the sender's side), checking every part of it, that
    /// it serves the name asked for (if any), and that its receiver runs as `owner`: files
    /// are never handed to another user's receiver unless that user is named. Then makes the
    /// sender's own segment, kept for the whole session.
    pub(super) fn open(addr: &Address, owner: u32) -> Result<(Channel, Arc<Segment>), FrameError> {
        let key = addr.key;
        // The receiver's uid: the one that created its objects, as the probe found it.
        let (shmid, info, receiver_uid) = probe_for_sender(addr, owner)?;
        let control_shm = Shm::from_id(shmid);
        let rendezvous_shm = Shm::from_id(info.rendezvous_shmid);
        let sems = SemSet::from_id(info.semid);
        let gone = |e: SysvError| -> FrameError {
            if e.is_permission() {
                FrameError::denied(key, receiver_uid, info.mode)
            } else if e.is_gone() {
                FrameError::Removed { key }
            } else {
                e.into()
            }
        };
        let control = control(control_shm.attach(false).map_err(gone)?)
            .map_err(|source| FrameError::Header { key, source })?;
        let rendezvous = Fixed::new(rendezvous_shm.attach(true).map_err(gone)?).map_err(|e| {
            FrameError::Header {
                key,
                source: HeaderError::Field {
                    field: "rendezvous segment",
                    value: e.size as u64,
                },
            }
        })?;
        let ch = Channel::new(
            key,
            (control_shm, control),
            (rendezvous_shm, rendezvous),
            sems,
            info,
            runtime::Cancel::default(),
        );
        let own = Arc::new(Segment::create(&ch, receiver_uid)?);
        ch.set_seg(Some(own.clone()));
        Ok((ch, own))
    }

    /// Removes the channel's three objects; existing attachments stay valid until dropped.
    pub(crate) fn remove(&self) {
        let _ = self.sems.remove();
        let _ = self.rendezvous_shm.remove();
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

    /// Waits until the peer's counter shows `n` more events than we took (`avail` counts
    /// them), sleeping on the doorbell `bell` in slices. The doorbell is only a hint: anyone
    /// who may write the channel can ring it or silence it, so after every wake and every slice
    /// the counter, which only the peer can write, decides. A ring with nothing behind it
    /// sends us back to sleep; a silenced one costs at most a slice, and the tokens it lost are
    /// given back so later waits do not pay again. Between slices: liveness, stops, stalls.
    pub(super) fn wait_for_peer(&self, bell: Bell<'_>, spin: Duration) -> Result<(), FrameError> {
        let take = SemOp {
            op: -(bell.n.clamp(1, i16::MAX as u32) as i16),
            ..SemOp::take(bell.sem)
        };
        if !spin.is_zero() && self.poll_briefly(&[take], spin)? && (bell.avail)() >= bell.n {
            return Ok(());
        }
        let mut checked = Instant::now();
        loop {
            let slice = match bell.peer {
                Peer::Receiver => self.sender_slice()?,
                Peer::Sender(_) => LIVENESS_SLICE,
            };
            let rang = match self.wait(&[take], Some(slice)) {
                Ok(()) => true,
                Err(FrameError::TimedOut { .. }) | Err(FrameError::Interrupted) => false,
                Err(e) => return Err(e),
            };
            let have = (bell.avail)();
            if have >= bell.n {
                if !rang {
                    self.restore_tokens(bell.sem, have - bell.n);
                }
                return Ok(());
            }
            if rang && checked.elapsed() < slice && !self.cancel.is_cancelled() {
                continue;
            }
            checked = Instant::now();
            self.between_slices(&bell.peer)?;
        }
    }

    /// After a silenced doorbell: gives it back the tokens for the `owed` events that are in
    /// and not yet taken, less what it holds. A few too many (the peer rang meanwhile) only
    /// make a later wait look once more at the counter.
    fn restore_tokens(&self, bell: u16, owed: u32) {
        let held = self.sems.value(bell).unwrap_or(0).max(0) as u32;
        let add = owed.saturating_sub(held).min(i16::MAX as u32) as i16;
        if add > 0 {
            let _ = self.sems.op(
                &[SemOp {
                    op: add,
                    ..SemOp::give(bell)
                }],
                None,
            );
        }
    }

    /// What a wait checks between slices: a receiver, that its sender lives and it was not
    /// asked to stop; a sender, that its receiver lives, admitted it, and is not stopped.
    fn between_slices(&self, peer: &Peer<'_>) -> Result<(), FrameError> {
        match peer {
            Peer::Sender(alive) => {
                if self.cancel.is_cancelled() {
                    return Err(FrameError::Interrupted);
                }
                self.reassert();
                if !alive()? {
                    return Err(FrameError::SenderGone);
                }
                Ok(())
            }
            Peer::Receiver => {
                if !self.receiver_alive() {
                    return Err(FrameError::ReceiverGone {
                        key: self.key,
                        pid: self.info.receiver_pid,
                    });
                }
                self.check_admitted()?;
                self.check_stall()
            }
        }
    }

    /// Raises the receiver's liveness mark again if someone took it down (a SETVAL also drops
    /// our undo of it; the new `+1` comes with a new one). The receiver's, between slices.
    pub(super) fn reassert(&self) {
        if self.sems.value(sem::RECEIVER).is_ok_and(|v| v == 0) {
            let _ = self.sems.op(&[SemOp::give(sem::RECEIVER).undo()], None);
        }
    }

    /// A sender's check that the receiver admitted its own segment to the session: someone
    /// who may write the rendezvous can name another segment there after we took the ticket.
    pub(super) fn check_admitted(&self) -> Result<(), FrameError> {
        let session = self.session.load(Ordering::Relaxed);
        let ours = self.seg().map(|s| s.shm.id());
        if session == 0 || self.control.load_u32(SESSION_OFF) != session {
            return Ok(());
        }
        match self.control.load_u32(ADMITTED_OFF) as i32 {
            NOT_ADMITTED => Ok(()),
            id if Some(id) == ours => Ok(()),
            id => Err(FrameError::NotAdmitted {
                key: self.key,
                segment: id,
            }),
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
        if !crate::os::process_stopped(pid) {
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
    pub(crate) fn cancel(&self) -> &runtime::Cancel {
        &self.cancel
    }

    /// Whether our receiver's process is stopped (SIGSTOP, Ctrl-Z) now.
    pub(crate) fn receiver_stopped(&self) -> bool {
        self.control_shm
            .stat()
            .is_ok_and(|s| crate::os::process_stopped(s.cpid))
    }

    /// The error for a stopped receiver that we waited `waited` for.
    pub(crate) fn stopped_error(&self, waited: Duration) -> FrameError {
        FrameError::ReceiverStopped {
            key: self.key,
            pid: self.control_shm.stat().map_or(0, |s| s.cpid),
            secs: (waited.as_secs_f64() * 10.0).round() / 10.0,
        }
    }

    /// Whether our receiver still serves the channel ([`serving`]). Where only its mark and
    /// its pid tell (another user's receiver), a mark down beside a living pid is doubted for
    /// [`DOUBT`] first: anyone who may write the channel can zero the mark, and the receiver
    /// raises it again within a second.
    pub(crate) fn receiver_alive(&self) -> bool {
        let stat = match self.control_shm.stat() {
            Ok(stat) => stat,
            Err(e) => return !e.is_gone(),
        };
        let mut since = self.doubted_since.lock().unwrap_or_else(|e| e.into_inner());
        // The creator's map, read once: it decides, and its absence is what allows doubt.
        let attached = crate::os::attached(stat.cpid, self.control_shm.id());
        if super::probe::serving_by(attached, &stat, &self.sems) {
            *since = None;
            return true;
        }
        let doubt = attached.is_none() && crate::os::process_alive(stat.cpid);
        doubt && since.get_or_insert_with(Instant::now).elapsed() < DOUBT
    }

    /// Whether the admitted sender lives. Once its segment is admitted: it is still attached
    /// to it (the kernel's count, which nobody else can raise: only its creator and we may
    /// attach it). Before: its mark is up and the process that last set it (the sender takes
    /// it with SEM_UNDO; a forger's SETVAL records the forger) lives with the channel attached,
    /// where the kernel lets us tell.
    pub(super) fn sender_alive(&self) -> Result<bool, FrameError> {
        let gone = |e: SysvError| FrameError::from_wait(self.key, e.into());
        if let Some(seg) = self.seg() {
            return Ok(seg.shm.stat().is_ok_and(|s| s.nattch >= 2));
        }
        if self.sems.value(sem::SENDER).map_err(gone)? == 0 {
            return Ok(false);
        }
        let holder = self.sems.last_pid(sem::SENDER).map_err(gone)?;
        Ok(crate::os::attached(holder, self.control_shm.id()) != Some(false))
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
    pub(super) fn load_u32(&self, off: usize) -> u32 {
        self.control.load_u32(off)
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
