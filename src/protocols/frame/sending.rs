//! The sender's steps of the handshake, as a type of their own.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::*;
use crate::mechanisms::runtime;
use crate::sysv::{self, SemOp, WaitError};

/// The sender's end of a channel: it attaches to a receiver's channel, and only it can take
/// the sender's steps (take its turn, post requests and chunks, read answers).
#[derive(Debug)]
pub struct SenderEnd(Channel);

impl std::ops::Deref for SenderEnd {
    type Target = Channel;
    fn deref(&self) -> &Channel {
        &self.0
    }
}

impl SenderEnd {
    /// Attaches to the channel at `addr`, checking every part of it, that it serves the name
    /// asked for (if any), and that its receiver runs as `owner`.
    ///
    /// # Errors
    /// No receiver, a foreign or corrupt channel, permission, another owner or name.
    pub fn open(addr: &Address, owner: u32) -> Result<SenderEnd, FrameError> {
        Channel::open(addr, owner).map(SenderEnd)
    }

    /// Sets how this end waits out a stopped receiver.
    pub fn with_stall_watch(self, w: StallWatch) -> SenderEnd {
        SenderEnd(self.0.with_stall_watch(w))
    }

    /// Sets what stops this end's waits.
    pub fn with_cancel(self, c: runtime::Cancel) -> SenderEnd {
        SenderEnd(self.0.with_cancel(c))
    }

    /// Takes the gate and marks ourselves alive in one atomic step, waiting up to `deadline`,
    /// then claims the admission ticket. Returns the session number our messages must carry.
    ///
    /// The gate alone cannot make a session ours: anyone who may write the channel can add
    /// to it, and then two senders pass. So the one that swaps the ticket out (the session
    /// number, left by the receiver) is admitted and closes the gate behind it (set to 0,
    /// which also wakes the receiver if a surplus kept it above 0); one that finds no ticket
    /// drops its mark and queues again.
    pub fn admit(&self, deadline: Option<Instant>) -> Result<u32, FrameError> {
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
    /// again, and we queue anew).
    fn claim(&self) -> Result<Option<u32>, FrameError> {
        let session = self.control.swap_u32(TICKET_OFF, 0);
        if session == 0 {
            // Without waiting: a SETVAL meanwhile (which also clears our undo) may have taken
            // the mark down already.
            match self.wait(&[SemOp::take(sem::SENDER).undo().nowait()], None) {
                Ok(()) | Err(FrameError::TimedOut { .. }) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        self.sems
            .set(sem::GATE, 0)
            .map_err(|e| FrameError::from_wait(self.key, e.into()))?;
        self.ring.store(0, Ordering::Relaxed);
        Ok(Some(session))
    }

    /// Writes a request and posts it (the sender's side).
    ///
    /// # Errors
    /// The channel was removed.
    pub fn send_request(&self, r: &Request) -> Result<(), FrameError> {
        let at = Lane::of(r.file);
        // The path first: the request that points at it is posted after.
        let path = encode_path(r);
        if !path.is_empty() {
            self.write(at.path_off(), &path);
        }
        self.write(at.request_off(), &encode_request(r));
        self.wait(&[SemOp::give(sem::REQ)], None)
    }

    /// Says goodbye (in place of file `due`, the one that would have come next: every earlier
    /// one answered) and drops our liveness mark in the same atomic step, so the receiver can
    /// admit the next sender the moment it reads this.
    pub fn send_bye(&self, session: u32, due: u32) -> Result<(), FrameError> {
        let bye = Request {
            op: Op::Bye,
            sender_pid: sysv::getpid(),
            size: None,
            md5: false,
            meta: None,
            name: Vec::new(),
            session,
            file: 0,
        };
        self.write(Lane::of(due).request_off(), &encode_request(&bye));
        self.wait(
            &[SemOp::take(sem::SENDER).undo(), SemOp::give(sem::REQ)],
            None,
        )
    }

    /// Waits until the receiver has given `n` more answers (ACK -n, one sleep for all of
    /// them: the kernel wakes us only when all are in). Answers come in request order; read
    /// each with [`Channel::answer_about`].
    pub fn wait_answers(&self, n: u16) -> Result<(), FrameError> {
        // The answer comes after the receiver's write and commit, long enough that polling for
        // it would only take a CPU the receiver's writes may need: sleep at once.
        let take = SemOp {
            op: -(n.clamp(1, LANES as u16) as i16),
            ..SemOp::take(sem::ACK)
        };
        self.wait_on_peer(&[take], sem::RECEIVER)
    }

    /// The answer in `file`'s lane, once [`Channel::wait_answers`] counted it: the file it is
    /// about and the outcome.
    pub fn answer_about(&self, file: u32) -> (u32, Result<Outcome, HeaderError>) {
        let at = Lane::of(file).answer_off();
        let mut b = [0u8; RESULT_LEN];
        self.read(at + 8, &mut b);
        let status = self.control.load_u32(at);
        let about = self.control.load_u32(at + 4);
        (about, decode_outcome(status, &b))
    }

    /// The receiver's failure verdict on `file` while it is still being sent, if any.
    pub fn receiver_failure(&self, file: u32) -> Option<u32> {
        // The number first: the receiver stores it after the status (see `take_file`).
        let at = Lane::of(file).answer_off();
        let about = self.control.load_u32(at + 4);
        let status = self.control.load_u32(at);
        let pending = Status::from_code(status).is_some_and(Status::is_pending);
        (about == file && !pending).then_some(status)
    }

    /// Waits for a free slot; returns its index in the ring (the next in ring order).
    pub fn free_slot(&self) -> Result<usize, FrameError> {
        self.wait_on_peer(&[SemOp::take(sem::EMPTY)], sem::RECEIVER)?;
        Ok(self.next_slot())
    }

    /// Reads up to `limit` bytes (at most a slot) from `file` straight into `slot`, looping
    /// over short reads (pipes) until the slot is full or EOF. Returns the bytes placed.
    pub fn fill_slot(
        &self,
        slot: usize,
        file: &std::fs::File,
        limit: usize,
    ) -> std::io::Result<usize> {
        let base = slot * self.info.slot_size;
        let want = limit.min(self.info.slot_size);
        let mut got = 0;
        while got < want {
            match self.content.read_from(file, base + got, want - got) {
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

    /// Copies bytes of our own into `slot`.
    pub fn put_slot(&self, slot: usize, bytes: &[u8]) {
        self.content
            .write(
                slot * self.info.slot_size,
                &bytes[..bytes.len().min(self.info.slot_size)],
            )
            .expect("a slot lies inside the ring");
    }

    /// Publishes a filled slot (or an abort) with its descriptor.
    pub fn post(&self, slot: usize, d: &Desc) -> Result<(), FrameError> {
        self.write(SLOTS_OFF + slot * SLOT_DESC_LEN, &encode_desc(d));
        self.wait(&[SemOp::give(sem::FULL)], None)
    }

    /// Writes the trailer of file `t.file`; call before posting its last descriptor.
    pub fn set_trailer(&self, t: &Trailer) {
        self.write(Lane::of(t.file).trailer_off(), &encode_trailer(t));
    }

    /// Waits up to `limit` for the receiver to die or the channel to go away (for a watcher
    /// thread); returns whether it did.
    pub fn receiver_gone_within(&self, limit: Duration) -> bool {
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
