//! The receiver's steps of the handshake, as a type of their own.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::channel::{Bell, Peer, Segment};
use super::*;
use crate::sysv::{self, Key, SemOp, Shm};

/// The receiver's end of a channel: it creates the channel, and only it can take the
/// receiver's steps (open the gate, take requests and chunks, answer).
#[derive(Debug)]
pub(crate) struct ReceiverEnd(Channel);

super::channel::end!(ReceiverEnd);

impl ReceiverEnd {
    /// Creates a channel at `addr` ([`Channel`]'s creation: the control segment first, the
    /// magic last).
    ///
    /// # Errors
    /// The key is taken, the kernel refused (limits, permission).
    pub(crate) fn create(addr: &Address, cfg: &Config) -> Result<ReceiverEnd, FrameError> {
        Channel::create(addr, cfg).map(ReceiverEnd)
    }

    /// Publishes the channel's state for `status`.
    pub(crate) fn set_state(&self, s: State) {
        self.control.store_u32(STATE_OFF, s as u32);
    }

    /// Opens the gate to one new sender. First the per-session semaphores and counters are
    /// reset (no sender is admitted at this point: only we and the rendezvous's writers touch
    /// them) and the session number that every message of the next sender must carry is
    /// announced, once as information and once as the admission ticket that exactly one sender
    /// can take.
    pub(crate) fn open_gate(&self, session: u32) -> Result<(), FrameError> {
        for (n, v) in [
            (sem::REQ, 0),
            (sem::FULL, 0),
            (sem::ACK, 0),
            (sem::EMPTY, self.info.slot_count as i32),
        ] {
            self.sems
                .set(n, v)
                .map_err(|e| FrameError::from_wait(self.key, e.into()))?;
        }
        self.ring.store(0, Ordering::Relaxed);
        self.taken.store(0, Ordering::Relaxed);
        self.consumed.store(0, Ordering::Relaxed);
        self.session.store(session, Ordering::Relaxed);
        self.store_u32(ADMITTED_OFF, NOT_ADMITTED as u32);
        for off in [
            CURRENT_OFF,
            SENDER_UID_OFF,
            SENDER_PID_OFF,
            ANSWERED_OFF,
            COMMITTING_OFF,
        ] {
            self.store_u32(off, 0);
        }
        self.store_u64(CONSUMED_OFF, 0);
        self.store_u32(SESSION_OFF, session);
        for file in 0..LANES {
            let at = Lane::of(file).answer_off();
            self.store_u32(at, Status::Pending.code());
            self.store_u32(at + 4, 0);
        }
        self.store_u64(PROGRESS_OFF, 0);
        self.set_state(State::Idle);
        self.rendezvous.store_u32(SEGMENT_OFF, NOT_ADMITTED as u32);
        self.rendezvous.store_u32(TICKET_OFF, session);
        // Set, never added to: a surplus someone else gave the gate is gone with this.
        self.sems
            .set(sem::GATE, 1)
            .map_err(|e| FrameError::from_wait(self.key, e.into()))
    }

    /// Sleeps in the kernel until a sender takes the gate, waking only every `PUBLISHED_CHECK`
    /// to see that the channel is still there to be found, to raise our mark again if someone
    /// took it down, and whether it was cancelled (a program that must stop at once also
    /// removes the semaphore set, which wakes it). Then admits the segment the sender named.
    ///
    /// The ticket is the truth, the gate only its doorbell: a sender that swapped the ticket
    /// out is admitted, even if our own `GATE = 1` came after its `GATE = 0` (someone who may
    /// write the semaphores set the gate while we wrote the ticket, and a sender passed it
    /// then); and a gate at 0 with the ticket still there was set by someone who took no
    /// ticket: it is opened again.
    pub(crate) fn wait_for_sender(&self) -> Result<Admission, FrameError> {
        loop {
            if self.rendezvous.load_u32(TICKET_OFF) == 0 {
                return self.admit_segment();
            }
            let r = self.wait(&[SemOp::zero(sem::GATE)], Some(PUBLISHED_CHECK));
            if r.is_err() && self.cancel.is_cancelled() {
                return Err(FrameError::Interrupted);
            }
            match r {
                Ok(()) if self.rendezvous.load_u32(TICKET_OFF) != 0 => {
                    self.sems
                        .set(sem::GATE, 1)
                        .map_err(|e| FrameError::from_wait(self.key, e.into()))?;
                }
                Err(FrameError::TimedOut { .. }) if self.published() => self.reassert(),
                Err(FrameError::TimedOut { .. }) => {
                    return Err(FrameError::Removed { key: self.key });
                }
                Err(FrameError::Interrupted) => continue,
                r => r?,
            }
        }
    }

    /// The ticket is taken: admits the segment its taker named at the rendezvous, if the
    /// kernel and the segment say it is one ([`Segment::admit`]), and publishes who sends.
    fn admit_segment(&self) -> Result<Admission, FrameError> {
        let session = self.session.load(Ordering::Relaxed);
        let t = std::time::Instant::now();
        // The taker names its segment right after its swap; one that died between the two
        // takes its mark with it.
        let id = loop {
            let id = self.rendezvous.load_u32(SEGMENT_OFF) as i32;
            if id != NOT_ADMITTED || t.elapsed() > LIVENESS_SLICE || !self.sender_alive()? {
                break id;
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.store_u32(SPARE_OFF, u32::MAX);
        match Segment::admit(self, id, session, spare) {
            Ok(seg) => {
                self.store_u32(SENDER_UID_OFF, seg.uid);
                self.store_u32(SENDER_PID_OFF, seg.pid as u32);
                self.store_u32(ADMITTED_OFF, id as u32);
                let who = Admission::Admitted(SenderId {
                    uid: seg.uid,
                    gid: seg.gid,
                    pid: seg.pid,
                });
                self.set_seg(Some(seg));
                Ok(who)
            }
            Err(why) => {
                self.store_u32(ADMITTED_OFF, REFUSED as u32);
                // Wakes an honest sender that took the ticket, to see it was not admitted.
                let _ = self.sems.op(&[SemOp::give(sem::ACK)], None);
                // Someone who took the ticket and named nothing could do it again at once:
                // the next gate opens after a pause, not in a loop as fast as theirs.
                std::thread::sleep(Duration::from_millis(10));
                Ok(Admission::Refused(match id {
                    NOT_ADMITTED => String::new(),
                    _ => why,
                }))
            }
        }
    }

    /// Whether senders can still find this channel: our segments are the ones at KEY and
    /// KEY+1 (after `ipcrm` they live on for us, attached, but the keys no longer lead to them).
    pub(crate) fn published(&self) -> bool {
        let at = |k: Option<Key>| k.and_then(|k| Shm::open(k).ok()).map(|s| s.id());
        at(Some(self.key)) == Some(self.control_shm.id())
            && at(self.key.offset(1)) == Some(self.rendezvous_shm.id())
    }

    /// The admitted sender's segment (the caller admitted one: no request is read before).
    fn peer(&self) -> Result<Arc<Segment>, FrameError> {
        self.seg().ok_or(FrameError::SenderGone)
    }

    /// Waits for the admitted sender's next request, which is due to be file `due` (or a
    /// goodbye in its place), by its count of requests, and decodes it.
    pub(crate) fn next_request(
        &self,
        due: u32,
    ) -> Result<Result<Request, HeaderError>, FrameError> {
        let peer = self.peer()?;
        let avail = || {
            peer.map
                .load_u32(REQUESTS_OFF)
                .wrapping_sub(self.taken.load(Ordering::Relaxed))
                .min(LANES + 1)
        };
        let alive = || self.sender_alive();
        self.wait_for_peer(
            Bell {
                sem: sem::REQ,
                n: 1,
                avail: &avail,
                peer: Peer::Sender(&alive),
            },
            spin_budget(),
        )?;
        self.taken.fetch_add(1, Ordering::Relaxed);
        let at = Lane::of(due);
        let mut b = [0u8; REQUEST_LEN];
        peer.map.read(at.request_off(), &mut b);
        let mut path = [0u8; PATH_LEN];
        peer.map.read(at.path_off(), &mut path);
        // A copy where `status` can read it: the sender's segment is the receiver's to read.
        // Of the path region, its length and what it says is used (most requests: 4 bytes).
        self.write(SHOWN_REQUEST_OFF, &b);
        let used = u32::from_ne_bytes([path[0], path[1], path[2], path[3]]) as usize;
        self.write(
            SHOWN_PATH_OFF,
            &path[..used.saturating_add(4).min(PATH_LEN)],
        );
        Ok(decode_request(&b, &path))
    }

    /// Takes file `file` of the session: points its answer at it, marked "accepted", so that
    /// a failure flagged later is about this file. The status is stored before the file number
    /// and the sender reads them the other way round, so it never pairs this file's number with
    /// the final status of the file a lane's turn before, whose answer this one reuses.
    pub(crate) fn take_file(&self, file: u32) {
        let at = Lane::of(file).answer_off();
        self.store_u64(PROGRESS_OFF, 0);
        self.store_u32(CURRENT_OFF, file);
        self.store_u32(at, Status::Accepted.code());
        self.store_u32(at + 4, file);
    }

    /// Publishes an outcome about `file`, counts it and rings ACK. The sender reads the answer
    /// about a file before it posts the next file of the same lane, which reuses this one.
    pub(crate) fn answer(&self, file: u32, o: &Outcome) -> Result<(), FrameError> {
        self.answer_at(Lane::of(file), file, o)
    }

    /// Refuses the request due as file `due` that was malformed (about file 0: it never
    /// became a file).
    pub(crate) fn refuse_request(&self, due: u32, o: &Outcome) -> Result<(), FrameError> {
        self.answer_at(Lane::of(due), 0, o)
    }

    fn answer_at(&self, at: Lane, file: u32, o: &Outcome) -> Result<(), FrameError> {
        let at = at.answer_off();
        let (segment, sender_uid) = self.seg().map_or((REFUSED, 0), |s| (s.shm.id(), s.uid));
        let o = Outcome {
            segment,
            sender_uid,
            ..o.clone()
        };
        self.write(at + 8, &encode_outcome(&o));
        self.store_u32(at + 4, file);
        self.store_u32(at, o.status.code());
        self.store_u32(ANSWERED_OFF, self.load_u32(ANSWERED_OFF).wrapping_add(1));
        self.wait(&[SemOp::give(sem::ACK)], None)
    }

    /// Marks `file` failed while the sender is still sending it, so it stops early.
    pub(crate) fn flag_failure(&self, file: u32, s: Status) {
        self.store_u32(Lane::of(file).answer_off(), s.code());
    }

    /// Waits for the next filled slot, the `seq`-th of its file, by the sender's count of
    /// descriptors, and decodes its descriptor. Returns the slot (the next in ring order,
    /// counted here, never read from the segment) and the descriptor.
    pub(crate) fn next_desc(
        &self,
        seq: u64,
    ) -> Result<(usize, Result<Desc, HeaderError>), FrameError> {
        // The first chunks of a file follow the handshake at once: worth catching awake. Later
        // ones take a slot's copy to come, and a wait for them sleeps at once.
        let spin = if seq < 2 {
            spin_budget()
        } else {
            Duration::ZERO
        };
        let peer = self.peer()?;
        let avail = || {
            let posted = peer.map.load_u64(POSTED_OFF);
            posted
                .saturating_sub(self.ring.load(Ordering::Relaxed))
                .min(u64::from(MAX_SLOTS)) as u32
        };
        let alive = || self.sender_alive();
        self.wait_for_peer(
            Bell {
                sem: sem::FULL,
                n: 1,
                avail: &avail,
                peer: Peer::Sender(&alive),
            },
            spin,
        )?;
        let slot = self.next_slot();
        let mut d = [0u8; SLOT_DESC_LEN];
        peer.map.read(SLOTS_OFF + slot * SLOT_DESC_LEN, &mut d);
        Ok((slot, decode_desc(&d)))
    }

    /// Copies `out.len()` bytes (at most a slot) of `slot` into our own memory; returns how
    /// many.
    pub(crate) fn copy_slot(&self, slot: usize, out: &mut [u8]) -> usize {
        let n = out.len().min(self.info.slot_size);
        match self
            .seg()
            .and_then(|p| Some((p.slot_off(&self.info, slot)?, p)))
        {
            Some((off, p)) if p.map.mapping().read(off, &mut out[..n]).is_ok() => n,
            _ => 0,
        }
    }

    /// Hands `len` bytes of `slot` (at most a slot) to `use_it` as a range of the sender's
    /// segment, for writing it out with one copy.
    pub(crate) fn with_slot<R>(
        &self,
        slot: usize,
        len: usize,
        use_it: impl FnOnce(sysv::Source<'_>) -> R,
    ) -> R {
        let peer = self.seg();
        match peer
            .as_ref()
            .and_then(|p| Some((p.slot_off(&self.info, slot)?, p)))
        {
            Some((offset, p)) => use_it(sysv::Source::Shared {
                map: p.map.mapping(),
                offset,
                len: len.min(self.info.slot_size),
            }),
            None => use_it(sysv::Source::Own(&[])),
        }
    }

    /// Hands a drained slot back to the sender, counts it and publishes progress.
    pub(crate) fn release_slot(&self, done: u64) -> Result<(), FrameError> {
        self.store_u64(PROGRESS_OFF, done);
        let n = self
            .consumed
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        self.store_u64(CONSUMED_OFF, n);
        self.wait(&[SemOp::give(sem::EMPTY)], None)
    }

    /// The sender's trailer for `file`, read after its last descriptor.
    pub(crate) fn trailer(&self, file: u32) -> Trailer {
        let mut b = [0u8; TRAILER_LEN];
        if let Some(p) = self.seg() {
            p.map.read(Lane::of(file).trailer_off(), &mut b);
        }
        decode_trailer(&b)
    }

    /// Whether `file` may be committed: we publish that we commit it, then look whether its
    /// sender withdrew it (see [`SenderEnd::withdraw`]). False: drop it.
    pub(crate) fn may_commit(&self, file: u32) -> bool {
        self.store_u32(COMMITTING_OFF, file);
        std::sync::atomic::fence(Ordering::SeqCst);
        let withdrawn = self.seg().map_or(1, |p| p.map.load_u32(WITHDRAWN_OFF));
        withdrawn == 0 || file < withdrawn
    }

    /// The admitted sender, as the kernel knows it: its segment's creator.
    pub(crate) fn sender(&self) -> Option<SenderId> {
        self.seg().map(|s| SenderId {
            uid: s.uid,
            gid: s.gid,
            pid: s.pid,
        })
    }

    /// After a session: wait until the sender's liveness mark is down (at once after goodbye;
    /// the moment it exits after an abort). Its segment is kept attached and offered to the
    /// next sender of its user (`SPARE_OFF`), and let go when another is admitted. Sliced only
    /// so a stop request is seen.
    pub(crate) fn wait_sender_gone(&self) -> Result<(), FrameError> {
        let last = self.seg.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(seg) = last {
            self.store_u32(SPARE_UID_OFF, seg.uid);
            self.store_u32(SPARE_OFF, seg.shm.id() as u32);
            *self.spare.lock().unwrap_or_else(|e| e.into_inner()) = Some(seg);
        }
        loop {
            match self.wait(&[SemOp::zero(sem::SENDER)], Some(LIVENESS_SLICE)) {
                Ok(()) => return Ok(()),
                Err(_) if self.cancel.is_cancelled() => return Err(FrameError::Interrupted),
                Err(FrameError::TimedOut { .. }) | Err(FrameError::Interrupted) => {}
                Err(e) => return Err(e),
            }
            self.reassert();
            // A mark nobody alive holds (set with SETVAL by someone who left) would keep the
            // channel busy for ever: take it down ourselves.
            if !self.sender_alive()? {
                self.sems
                    .set(sem::SENDER, 0)
                    .map_err(|e| FrameError::from_wait(self.key, e.into()))?;
                return Ok(());
            }
        }
    }
}

/// Who a receiver admitted, as the kernel knows it: the creator of the segment it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderId {
    /// The sender's (effective) uid when it made its segment.
    pub uid: u32,
    /// Its (effective) gid then.
    pub gid: u32,
    /// Its pid as the receiver's PID namespace sees it (0 outside it).
    pub pid: i32,
}

/// What became of a sender that took the ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Its segment passed every check: the session is its.
    Admitted(SenderId),
    /// The segment named at the rendezvous failed a check (why); nothing of it is read.
    Refused(String),
}
