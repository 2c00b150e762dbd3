//! The sender's steps of the handshake, as a type of their own.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::channel::{Bell, Peer, Segment};
use super::*;
use crate::mechanisms::runtime;
use crate::sysv::{SemOp, WaitError};

/// The sender's end of a channel: it attaches to a receiver's channel, and only it can take
/// the sender's steps (take its turn, post requests and chunks, read answers). It holds its
/// own segment for its whole life: every chunk goes through it, with no lock to take.
#[derive(Debug)]
pub(crate) struct SenderEnd(Channel, Arc<Segment>);

super::channel::end!(SenderEnd);

impl SenderEnd {
    /// Attaches to the channel at `addr`, checking every part of it, that it serves the name
    /// asked for (if any), and that its receiver runs as `owner`.
    ///
    /// # Errors
    /// No receiver, a foreign or corrupt channel, permission, another owner or name.
    pub(crate) fn open(addr: &Address, owner: u32) -> Result<SenderEnd, FrameError> {
        Channel::open(addr, owner).map(|(ch, own)| SenderEnd(ch, own))
    }

    /// Sets how this end waits out a stopped receiver.
    pub(crate) fn with_stall_watch(self, w: StallWatch) -> SenderEnd {
        SenderEnd(self.0.with_stall_watch(w), self.1)
    }

    /// Sets what stops this end's waits.
    pub(crate) fn with_cancel(self, c: runtime::Cancel) -> SenderEnd {
        SenderEnd(self.0.with_cancel(c), self.1)
    }

    /// Takes the gate and marks ourselves alive in one atomic step, waiting up to `deadline`,
    /// then claims the admission ticket. Returns the session number our messages must carry.
    ///
    /// The gate alone cannot make a session ours: anyone who may write the channel can add
    /// to it, and then two senders pass. So the one that swaps the ticket out (the session
    /// number, left by the receiver) is admitted and closes the gate behind it (set to 0,
    /// which also wakes the receiver if a surplus kept it above 0); one that finds no ticket
    /// drops its mark and queues again.
    pub(crate) fn admit(&self, deadline: Option<Instant>) -> Result<u32, FrameError> {
        let ops = [SemOp::take(sem::GATE), SemOp::give(sem::SENDER).undo()];
        loop {
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(l) if !l.is_zero() => Some(l.min(LIVENESS_SLICE)),
                    _ => {
                        return Err(FrameError::TimedOut {
                            key: self.key,
                            what: "our turn",
                            secs: 0.0,
                        });
                    }
                },
                None => Some(LIVENESS_SLICE),
            };
            match self.wait(&ops, left) {
                Ok(()) => match self.claim()? {
                    Some(session) => return Ok(session),
                    None => continue,
                },
                Err(FrameError::TimedOut { .. }) | Err(FrameError::Interrupted) => {}
                Err(e) => return Err(e),
            }
            if self.cancel.is_cancelled() {
                return Err(FrameError::Interrupted);
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

    /// Past the gate: the session if we took its ticket, else `None` (our mark is dropped
    /// again, and we queue anew). The winner stamps its segment with the session and names
    /// it at the rendezvous, then closes the gate (which wakes the receiver).
    fn claim(&self) -> Result<Option<u32>, FrameError> {
        // Any value but 0 wins: the session itself is read from the receiver's own segment,
        // so a ticket someone scribbled over costs nothing.
        let ticket = self.rendezvous.swap_u32(TICKET_OFF, 0);
        if ticket == 0 {
            // Without waiting: a SETVAL meanwhile (which also clears our undo) may have taken
            // the mark down already.
            match self.wait(&[SemOp::take(sem::SENDER).undo().nowait()], None) {
                Ok(()) | Err(FrameError::TimedOut { .. }) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        let session = self.load_u32(SESSION_OFF);
        let own = self.own();
        for off in [WITHDRAWN_OFF, REQUESTS_OFF] {
            own.map.store_u32(off, 0);
        }
        own.map.store_u64(POSTED_OFF, 0);
        own.map.store_u32(SEG_SESSION_OFF, session);
        self.rendezvous.store_u32(SEGMENT_OFF, own.shm.id() as u32);
        self.ring.store(0, Ordering::Relaxed);
        self.taken.store(0, Ordering::Relaxed);
        self.session.store(session, Ordering::Relaxed);
        self.sems
            .set(sem::GATE, 0)
            .map_err(|e| FrameError::from_wait(self.key, e.into()))?;
        Ok(Some(session))
    }

    /// Our own segment (made when the channel was opened, kept to the end).
    fn own(&self) -> &Segment {
        &self.1
    }

    /// Writes a request into our segment, counts it and rings REQ.
    ///
    /// # Errors
    /// The channel was removed.
    pub(crate) fn send_request(&self, r: &Request) -> Result<(), FrameError> {
        self.put_request(Lane::of(r.file), r);
        self.wait(&[SemOp::give(sem::REQ)], None)
    }

    /// Writes a request (and its path, first: the request points at it) in lane `at` of our
    /// segment, and counts it.
    fn put_request(&self, at: Lane, r: &Request) {
        let own = self.own();
        let path = encode_path(r);
        if !path.is_empty() {
            own.map.write(at.path_off(), &path);
        }
        own.map.write(at.request_off(), &encode_request(r));
        own.count_u32(REQUESTS_OFF);
    }

    /// Says goodbye (in place of file `due`, the one that would have come next: every earlier
    /// one answered) and drops our liveness mark in the same atomic step, so the receiver can
    /// admit the next sender the moment it reads this.
    pub(crate) fn send_bye(&self, session: u32, due: u32) -> Result<(), FrameError> {
        let bye = Request {
            op: Op::Bye,
            sender_pid: crate::os::getpid(),
            size: None,
            md5: false,
            meta: None,
            name: Vec::new(),
            session,
            file: 0,
        };
        self.put_request(Lane::of(due), &bye);
        self.wait(
            &[SemOp::take(sem::SENDER).undo(), SemOp::give(sem::REQ)],
            None,
        )
    }

    /// Waits until the receiver has given `n` more answers (one sleep for all of them), by
    /// its count of answers. Answers come in request order; read each with
    /// [`SenderEnd::answer_about`].
    pub(crate) fn wait_answers(&self, n: u16) -> Result<(), FrameError> {
        let n = u32::from(n.clamp(1, LANES as u16));
        let avail = || {
            self.load_u32(ANSWERED_OFF)
                .wrapping_sub(self.taken.load(Ordering::Relaxed))
                .min(LANES)
        };
        // The answer comes after the receiver's write and commit, long enough that polling for
        // it would only take a CPU the receiver's writes may need: sleep at once.
        self.wait_for_peer(
            Bell {
                sem: sem::ACK,
                n,
                avail: &avail,
                peer: Peer::Receiver,
            },
            Duration::ZERO,
        )?;
        self.taken.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }

    /// The answer in `file`'s lane, once [`SenderEnd::wait_answers`] counted it: the file it is
    /// about and the outcome. An answer about another sender's segment is not ours, whatever
    /// it says.
    pub(crate) fn answer_about(&self, file: u32) -> (u32, Result<Outcome, HeaderError>) {
        let at = Lane::of(file).answer_off();
        let mut b = [0u8; RESULT_LEN];
        self.read(at + 8, &mut b);
        let status = self.control.load_u32(at);
        let about = self.control.load_u32(at + 4);
        let ours = self.own().shm.id();
        let outcome = decode_outcome(status, &b).and_then(|o| match o.segment == ours {
            true => Ok(o),
            false => Err(HeaderError::Field {
                field: "answer's sender segment",
                value: o.segment as u32 as u64,
            }),
        });
        (about, outcome)
    }

    /// The receiver's failure verdict on `file` while it is still being sent, if any.
    pub(crate) fn receiver_failure(&self, file: u32) -> Option<u32> {
        // The number first: the receiver stores it after the status (see `take_file`).
        let at = Lane::of(file).answer_off();
        let about = self.control.load_u32(at + 4);
        let status = self.control.load_u32(at);
        let pending = Status::from_code(status).is_some_and(Status::is_pending);
        (about == file && !pending).then_some(status)
    }

    /// Waits for a free slot, by the receiver's count of slots handed back; returns its index
    /// in the ring (the next in ring order).
    pub(crate) fn free_slot(&self) -> Result<usize, FrameError> {
        let slots = u64::from(self.info.slot_count);
        let avail = || {
            let used = self
                .ring
                .load(Ordering::Relaxed)
                .saturating_sub(self.control.load_u64(CONSUMED_OFF));
            slots.saturating_sub(used) as u32
        };
        self.wait_for_peer(
            Bell {
                sem: sem::EMPTY,
                n: 1,
                avail: &avail,
                peer: Peer::Receiver,
            },
            Duration::ZERO,
        )?;
        Ok(self.next_slot())
    }

    /// Reads up to `limit` bytes (at most a slot) from `file` straight into `slot`, looping
    /// over short reads (pipes) until the slot is full or EOF. Returns the bytes placed.
    pub(crate) fn fill_slot(
        &self,
        slot: usize,
        file: &std::fs::File,
        limit: usize,
    ) -> std::io::Result<usize> {
        let own = self.own();
        let base = own
            .slot_off(&self.info, slot)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let want = limit.min(self.info.slot_size);
        let mut got = 0;
        while got < want {
            match own.map.mapping().read_from(file, base + got, want - got) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    if self.cancel.is_cancelled() {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    /// Copies bytes of our own into `slot` (at most a slot's worth).
    pub(crate) fn put_slot(&self, slot: usize, bytes: &[u8]) {
        let own = self.own();
        if let Some(base) = own.slot_off(&self.info, slot) {
            let n = bytes.len().min(self.info.slot_size);
            // Inside the segment: the slot is one of the ring's, and n fits in it.
            let _ = own.map.mapping().write(base, &bytes[..n]);
        }
    }

    /// Publishes a filled slot (or an abort) with its descriptor, counts it and rings FULL.
    pub(crate) fn post(&self, slot: usize, d: &Desc) -> Result<(), FrameError> {
        let own = self.own();
        own.map
            .write(SLOTS_OFF + slot * SLOT_DESC_LEN, &encode_desc(d));
        own.count_u64(POSTED_OFF);
        self.wait(&[SemOp::give(sem::FULL)], None)
    }

    /// Writes the trailer of file `t.file`; call before posting its last descriptor.
    pub(crate) fn set_trailer(&self, t: &Trailer) {
        self.own()
            .map
            .write(Lane::of(t.file).trailer_off(), &encode_trailer(t));
    }

    /// Withdraws every file numbered `from` or more that the receiver has not begun to
    /// commit, and returns the file it is committing (0: none yet this session). Files after
    /// that one are never committed: the receiver checks our withdrawal after it publishes the
    /// file it commits, and we read that after we publish the withdrawal, both with a full
    /// fence between, so one of us sees the other.
    pub(crate) fn withdraw(&self, from: u32) -> u32 {
        self.own().map.store_u32(WITHDRAWN_OFF, from.max(1));
        std::sync::atomic::fence(Ordering::SeqCst);
        self.control.load_u32(COMMITTING_OFF)
    }

    /// Waits up to `limit` for the receiver to die or the channel to go away (for a watcher
    /// thread); returns whether it did.
    #[allow(dead_code)] // As `Sender::channel`.
    pub(crate) fn receiver_gone_within(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.sems.op(&[SemOp::zero(sem::RECEIVER)], Some(left)) {
                Err(WaitError::Interrupted | WaitError::TimedOut) => continue,
                Err(_) => return true,
                // Anyone allowed to write the channel can zero the mark: believe it only if
                // the kernel's facts agree.
                Ok(()) if !self.receiver_alive() => return true,
                Ok(()) => std::thread::sleep(LIVENESS_SLICE.min(left)),
            }
        }
    }
}
