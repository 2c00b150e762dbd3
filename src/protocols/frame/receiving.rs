//! The receiver's steps of the handshake, as a type of their own.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;
use crate::sysv::{self, Key, SemOp, Shm};

/// The receiver's end of a channel: it creates the channel, and only it can take the
/// receiver's steps (open the gate, take requests and chunks, answer).
#[derive(Debug)]
pub struct ReceiverEnd(Channel);

impl std::ops::Deref for ReceiverEnd {
    type Target = Channel;
    fn deref(&self) -> &Channel {
        &self.0
    }
}

impl ReceiverEnd {
    /// Creates a channel at `addr` ([`Channel`]'s creation: the control segment first, the
    /// magic last).
    ///
    /// # Errors
    /// The key is taken, the kernel refused (limits, permission).
    pub fn create(addr: &Address, cfg: &Config) -> Result<ReceiverEnd, FrameError> {
        Channel::create(addr, cfg).map(ReceiverEnd)
    }

    /// Publishes the channel's state for `status`.
    pub fn set_state(&self, s: State) {
        self.control.store_u32(STATE_OFF, s as u32);
    }

    /// Opens the gate to one new sender. First the per-session semaphores are reset (no
    /// sender is admitted at this point, so no one else touches them) and the session number
    /// that every message of the next sender must carry is announced, once as information and
    /// once as the admission ticket that exactly one sender can take.
    pub fn open_gate(&self, session: u32) -> Result<(), FrameError> {
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
        self.clear_ring();
        self.ring.store(0, Ordering::Relaxed);
        self.store_u32(SESSION_OFF, session);
        self.store_u32(TICKET_OFF, session);
        self.store_u32(CURRENT_OFF, 0);
        for file in 0..LANES {
            let at = Lane::of(file).answer_off();
            self.store_u32(at, Status::Pending.code());
            self.store_u32(at + 4, 0);
        }
        self.store_u64(PROGRESS_OFF, 0);
        self.set_state(State::Idle);
        // Set, never added to: a surplus someone else gave the gate is gone with this.
        self.sems
            .set(sem::GATE, 1)
            .map_err(|e| FrameError::from_wait(self.key, e.into()))
    }

    /// Sleeps in the kernel until a sender takes the gate, waking only every `PUBLISHED_CHECK`
    /// to see that the channel is still there to be found, and whether it was cancelled (a
    /// program that must stop at once also removes the semaphore set, which wakes it).
    ///
    /// The ticket is the truth, the gate only its doorbell: a sender that swapped the ticket
    /// out is admitted, even if our own `GATE = 1` came after its `GATE = 0` (someone who may
    /// write the semaphores set the gate while we wrote the ticket, and a sender passed it
    /// then); and a gate at 0 with the ticket still there was set by someone who took no
    /// ticket: it is opened again.
    pub fn wait_for_sender(&self) -> Result<(), FrameError> {
        loop {
            if self.control.load_u32(TICKET_OFF) == 0 {
                return Ok(());
            }
            let r = self.wait(&[SemOp::zero(sem::GATE)], Some(PUBLISHED_CHECK));
            if r.is_err() && self.cancel.is_cancelled() {
                return Err(FrameError::Interrupted);
            }
            match r {
                Ok(()) if self.control.load_u32(TICKET_OFF) != 0 => {
                    self.sems
                        .set(sem::GATE, 1)
                        .map_err(|e| FrameError::from_wait(self.key, e.into()))?;
                }
                Err(FrameError::TimedOut { .. }) if self.published() => continue,
                Err(FrameError::TimedOut { .. }) => {
                    return Err(FrameError::Removed { key: self.key });
                }
                Err(FrameError::Interrupted) => continue,
                r => return r,
            }
        }
    }

    /// Whether senders can still find this channel: our segments are the ones at KEY and
    /// KEY+1 (after `ipcrm` they live on for us, attached, but the keys no longer lead to them).
    pub fn published(&self) -> bool {
        let at = |k: Option<Key>| k.and_then(|k| Shm::open(k).ok()).map(|s| s.id());
        at(Some(self.key)) == Some(self.control_shm.id())
            && at(self.key.offset(1)) == Some(self.content_shm.id())
    }

    /// Waits for the admitted sender's next request, which is due to be file `due` (or a
    /// goodbye in its place), and decodes it.
    pub fn next_request(&self, due: u32) -> Result<Result<Request, HeaderError>, FrameError> {
        self.wait_on_peer_spinning(&[SemOp::take(sem::REQ)], sem::SENDER, spin_budget())?;
        let at = Lane::of(due);
        let mut b = [0u8; REQUEST_LEN];
        self.read(at.request_off(), &mut b);
        let mut path = [0u8; PATH_LEN];
        self.read(at.path_off(), &mut path);
        Ok(decode_request(&b, &path))
    }

    /// Takes file `file` of the session: points its answer at it, marked "accepted", so that
    /// a failure flagged later is about this file. The status is stored before the file number
    /// and the sender reads them the other way round, so it never pairs this file's number with
    /// the final status of the file a lane's turn before, whose answer this one reuses.
    pub fn take_file(&self, file: u32) {
        let at = Lane::of(file).answer_off();
        self.store_u64(PROGRESS_OFF, 0);
        self.store_u32(CURRENT_OFF, file);
        self.store_u32(at, Status::Accepted.code());
        self.store_u32(at + 4, file);
    }

    /// Clears the slot table and the trailers, so nothing a dead session left there can pass
    /// for the next one's. Called at the start of a session, before the gate opens. (Within a
    /// session the ring is never cleared: the next file's chunks may already be in it. Tags
    /// keep one file's messages from passing for another's.)
    fn clear_ring(&self) {
        const ZEROS: [u8; SLOT_DESC_LEN * MAX_SLOTS as usize] =
            [0; SLOT_DESC_LEN * MAX_SLOTS as usize];
        self.write(
            SLOTS_OFF,
            &ZEROS[..SLOT_DESC_LEN * self.info.slot_count as usize],
        );
        for file in 0..LANES {
            self.write(Lane::of(file).trailer_off(), &[0; TRAILER_LEN]);
        }
    }

    /// Publishes an outcome about `file` and counts it (ACK +1). The sender reads the answer
    /// about a file before it posts the next file of the same lane, which reuses this one.
    pub fn answer(&self, file: u32, o: &Outcome) -> Result<(), FrameError> {
        self.answer_at(Lane::of(file), file, o)
    }

    /// Refuses the request due as file `due` that was malformed (about file 0: it never
    /// became a file).
    pub fn refuse_request(&self, due: u32, o: &Outcome) -> Result<(), FrameError> {
        self.answer_at(Lane::of(due), 0, o)
    }

    fn answer_at(&self, at: Lane, file: u32, o: &Outcome) -> Result<(), FrameError> {
        let at = at.answer_off();
        self.write(at + 8, &encode_outcome(o));
        self.store_u32(at + 4, file);
        self.store_u32(at, o.status.code());
        self.wait(&[SemOp::give(sem::ACK)], None)
    }

    /// Marks `file` failed while the sender is still sending it, so it stops early.
    pub fn flag_failure(&self, file: u32, s: Status) {
        self.store_u32(Lane::of(file).answer_off(), s.code());
    }

    /// Waits for the next filled slot, the `seq`-th of its file, and decodes its descriptor.
    /// Returns the slot (the next in ring order, counted here, never read from the segment)
    /// and the descriptor.
    pub fn next_desc(&self, seq: u64) -> Result<(usize, Result<Desc, HeaderError>), FrameError> {
        // The first chunks of a file follow the handshake at once: worth catching awake. Later
        // ones take a slot's copy to come, and a wait for them sleeps at once.
        let spin = if seq < 2 {
            spin_budget()
        } else {
            Duration::ZERO
        };
        self.wait_on_peer_spinning(&[SemOp::take(sem::FULL)], sem::SENDER, spin)?;
        let slot = self.next_slot();
        let mut d = [0u8; SLOT_DESC_LEN];
        self.read(SLOTS_OFF + slot * SLOT_DESC_LEN, &mut d);
        Ok((slot, decode_desc(&d)))
    }

    /// Copies `out.len()` bytes of `slot` into our own memory.
    pub fn copy_slot(&self, slot: usize, out: &mut [u8]) {
        self.content
            .read(slot * self.info.slot_size, out)
            .expect("a chunk is never longer than its slot");
    }

    /// The content segment and where `slot` starts in it, for writing a slot out with one copy.
    pub fn slot_source(&self, slot: usize, len: usize) -> sysv::Source<'_> {
        sysv::Source::Shared {
            map: &self.content,
            offset: slot * self.info.slot_size,
            len: len.min(self.info.slot_size),
        }
    }

    /// Hands a drained slot back to the sender and publishes progress.
    pub fn release_slot(&self, done: u64) -> Result<(), FrameError> {
        self.store_u64(PROGRESS_OFF, done);
        self.wait(&[SemOp::give(sem::EMPTY)], None)
    }

    /// The sender's trailer for `file`, read after its last descriptor.
    pub fn trailer(&self, file: u32) -> Trailer {
        let mut b = [0u8; TRAILER_LEN];
        self.read(Lane::of(file).trailer_off(), &mut b);
        decode_trailer(&b)
    }

    /// After a session: wait until the sender's liveness mark is down (at once after goodbye;
    /// the moment it exits after an abort). Sliced only so a stop request is seen.
    pub fn wait_sender_gone(&self) -> Result<(), FrameError> {
        loop {
            match self.wait(&[SemOp::zero(sem::SENDER)], Some(LIVENESS_SLICE)) {
                Ok(()) => return Ok(()),
                Err(_) if self.cancel.is_cancelled() => return Err(FrameError::Interrupted),
                Err(FrameError::TimedOut { .. }) | Err(FrameError::Interrupted) => {}
                Err(e) => return Err(e),
            }
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
