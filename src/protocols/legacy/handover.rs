//! The consumer's hand-overs of the content semaphore, and what the kernel tells of who
//! held it: who wrote a file, and whether its reply reaches it.

use std::time::{Duration, Instant};

use tracing::debug;

use super::*;

/// Our own turn on the size semaphore, with MD5. A producer's reply is lost when another
/// producer takes the size semaphore before the reply is read: that one queues for the
/// content semaphore ahead of the reply's reader, and writes its file over the reply. So as a
/// producer takes its turn, we queue for the size semaphore too. When its release comes to us
/// (we were queued before any other producer), nobody else can take a turn until we give it
/// back, once the reply is read: that producer's reply is safe. Producers already queued are
/// served first, in the kernel's order; with many at once, at least one reply a round is safe.
#[derive(Default)]
pub(super) struct SizeTurn {
    /// Our take, queued in a thread of its own, until it is granted: it answers with the pid
    /// that held the content semaphore as it woke (the writer releases the size semaphore
    /// while it holds the content one).
    pending: Option<std::sync::mpsc::Receiver<Result<i32, WaitError>>>,
    /// We hold the size semaphore.
    held: bool,
    /// What our take's thread read as it woke.
    woke_to: i32,
}

impl SizeTurn {
    /// Queues our take, and returns once it is queued or through (or after 100 ms).
    pub(super) fn queue(&mut self, ch: &Legacy) {
        // Free, nobody's turn to protect: taking it would only hold the next producer up.
        if self.pending.is_some() || self.held || ch.size_sem.value(0).map_or(true, |v| v > 0) {
            return;
        }
        let content = ch.content_sem;
        self.pending = Some(take_in_thread(
            ch.size_sem,
            Duration::from_millis(100),
            move || content.last_pid(0).unwrap_or(0),
        ));
        debug!(waiting = ?ch.size_sem.waiting(0), "queued for the size semaphore");
    }

    /// Whether we hold the size semaphore, once our take's thread has said so.
    pub(super) fn held(&self) -> bool {
        self.held
    }

    /// Hears of our take if the kernel granted it: its thread no longer sleeps on the size
    /// semaphore, and answers within moments.
    pub(super) fn hear(&mut self, ch: &Legacy) -> Result<(), LegacyError> {
        let Some(rx) = &self.pending else {
            return Ok(());
        };
        if crate::os::sleeping_on_semaphores(crate::os::getpid(), ch.size_sem.id()) {
            return Ok(());
        }
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Ok(w)) => {
                debug!(w, "granted the size semaphore");
                (self.held, self.woke_to) = (true, w)
            }
            Ok(Err(e)) => return Err(ch.wait_error(e, None)),
            Err(_) => return Ok(()),
        }
        self.pending = None;
        Ok(())
    }

    /// The writer of the file we hold: the one producer that held the content semaphore in
    /// the hand-over (`holder`), or else the last to release the size semaphore if it is free
    /// ([`Legacy::writer`]; not while we hold it).
    pub(super) fn writer(&mut self, ch: &Legacy, holder: Holder) -> Writer {
        if self.hear(ch).is_err() {
            return Writer::Unknown(None);
        }
        let me = crate::os::getpid();
        match holder {
            Holder::Read(w) => Writer::Known(w),
            // Our thread woke while the one producer ahead of us held the semaphore.
            Holder::Single if self.held && self.woke_to > 0 && self.woke_to != me => {
                Writer::Known(self.woke_to)
            }
            Holder::Unseen => Writer::Unseen,
            _ if self.held => Writer::Unknown(None),
            _ => ch.writer(),
        }
    }

    /// Gives the size semaphore back if we hold it.
    pub(super) fn release(&mut self, ch: &Legacy) -> Result<(), LegacyError> {
        self.hear(ch)?;
        if std::mem::take(&mut self.held) {
            ch.op(ch.size_sem, &[SemOp::give(0)], None)?;
        }
        Ok(())
    }
}

/// Who published the file we hold, as far as the kernel tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Writer {
    /// This pid: the size semaphore is free and its last operation was this producer's
    /// release (nobody can take it and give it back while we hold the content).
    Known(i32),
    /// Not known: another producer took the size semaphore since (this pid, if known).
    Unknown(Option<i32>),
    /// The one producer of the hand-over, whose threads we may not see (another user's,
    /// without privilege): judged by counts, as a lone producer is served.
    Unseen,
}

/// Why a reply cannot reach its producer `w`: `b` holds the size semaphore.
pub(super) fn swapped(b: i32, w: Option<i32>) -> String {
    let w = w.map_or("its producer".to_string(), |w| {
        format!("its producer (pid {w})")
    });
    format!(
        "producer pid {b} took the size semaphore before {w} read its MD5 reply, and writes first (the original producers swap replies); {w} is told it failed"
    )
}

/// How long a producer checking MD5 may take to queue for its reply: the original's ~3 ms of
/// `import hashlib`, with room for a loaded host.
pub(super) const REPLY_QUEUE: Duration = Duration::from_secs(2);

/// Our take of the content semaphore, queued.
pub(super) struct Take {
    pub(super) rx: std::sync::mpsc::Receiver<Result<(), WaitError>>,
    /// How many were queued ahead of it.
    pub(super) ahead: i32,
    /// The one ahead, where it was found asleep; or the producer that may write, ahead.
    pub(super) sole: Option<i32>,
    /// `sole` is the size semaphore's holder, queued ahead of us.
    pub(super) writer: bool,
    /// The one ahead is a process whose threads we may not see.
    pub(super) unseen: bool,
}

/// Who held the content semaphore in a hand-over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Holder {
    /// One producer, this pid.
    Read(i32),
    /// One producer, gone before we read its pid.
    Single,
    /// One producer, whose threads we may not see, gone before we read its pid.
    Unseen,
    /// Several, or none.
    Unknown,
}

/// Why we hand the content semaphore over.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Pass {
    /// A producer took the size semaphore and will queue for the content one.
    Arrival,
    /// We wrote a file (and the reply): its producer takes the content back to read the reply,
    /// if it checks MD5.
    Reply,
}

/// Takes the semaphore of `set` in a thread of its own, which then runs `then` and sends its
/// result; returns once the take is queued (a thread of ours asleep on the set) or through,
/// or after `limit`. Whoever queues after that queues behind it. The thread is not scoped: a
/// take may wait past the function that queued it, and removing the set (as every stop does)
/// ends its wait.
fn take_in_thread<T: Send + 'static>(
    set: SemSet,
    limit: Duration,
    then: impl FnOnce() -> T + Send + 'static,
) -> std::sync::mpsc::Receiver<Result<T, WaitError>> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (tx, rx) = std::sync::mpsc::channel();
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let through = done.clone();
    std::thread::spawn(move || {
        let r = set.op(&[SemOp::take(0)], None);
        through.store(true, Ordering::Release);
        let _ = tx.send(r.map(|()| then()));
    });
    let me = crate::os::getpid();
    let t = Instant::now();
    while !crate::os::sleeping_on_semaphores(me, set.id())
        && !done.load(Ordering::Acquire)
        && t.elapsed() < limit
    {
        std::thread::sleep(Duration::from_micros(20));
    }
    rx
}

/// How long to wait between looks at the queue while a hand-over is due: short at first (a
/// producer queues within microseconds of taking the size semaphore), then longer.
pub(super) fn backoff(round: u32) -> Duration {
    Duration::from_micros(50u64 << round.min(7))
}

impl Legacy {
    /// The producer that wrote the file we just took: the size semaphore's last operator,
    /// if the semaphore is free. Its pid is read before its value, so a take in between shows
    /// as a taken semaphore.
    pub(super) fn writer(&self) -> Writer {
        let (Ok(pid), Ok(value)) = (self.size_sem.last_pid(0), self.size_sem.value(0)) else {
            return Writer::Unknown(None);
        };
        match (value, pid) {
            (1.., pid) if pid > 0 && pid != crate::os::getpid() => Writer::Known(pid),
            (0, pid) if pid > 0 => Writer::Unknown(Some(pid)),
            _ => Writer::Unknown(None),
        }
    }

    /// Whether the digest we write now reaches the file's writer before anyone overwrites
    /// it. Only a producer holding the size semaphore writes the content (a producer reading
    /// its reply only reads), and the kernel serves the content semaphore's queue in order.
    /// So it does if the writer is queued now, and no other producer holds the size semaphore
    /// (we may: `turn_held`), or its holder is not queued yet (it will queue behind). A writer
    /// that ends, or does not queue within [`REPLY_QUEUE`], never read a reply (one that read
    /// the impossible digest in the first hand-over was caught there): it is taken for one
    /// that does not check MD5, and its file is kept, as the original consumer keeps it.
    /// Otherwise the reason, naming the pids.
    pub(super) fn reply_reaches(&self, writer: Writer, turn_held: bool) -> Result<(), String> {
        let w = match writer {
            Writer::Known(w) => w,
            Writer::Unknown(Some(b)) => return Err(swapped(b, None)),
            Writer::Unknown(None) => return Err("its producer is not known".into()),
            // Any pid we may not see: the count judges its queueing.
            Writer::Unseen => 0,
        };
        let content = self.content_sem.id();
        let me = crate::os::getpid();
        let since = Instant::now();
        for round in 0u32.. {
            // A producer whose threads we may not see (another user's) is judged by the
            // count: someone queued for the content is taken for it.
            let queued = match w {
                0 => None,
                w => crate::os::asleep_on_semaphores(w, content),
            }
            .unwrap_or_else(|| self.content_sem.waiting(0).is_ok_and(|n| n > 0));
            let free = turn_held || self.size_sem.value(0).is_ok_and(|v| v > 0);
            if !free {
                // Read after the value: a holder that took it since is read as its taker.
                let b = self.size_sem.last_pid(0).unwrap_or(0);
                return match queued {
                    true if b > 0
                        && b != me
                        && crate::os::asleep_on_semaphores(b, content) == Some(false) =>
                    {
                        Ok(())
                    }
                    _ => Err(swapped(b, (w > 0).then_some(w))),
                };
            }
            if queued {
                return Ok(());
            }
            if self.cancel.is_cancelled() {
                return Err(format!(
                    "stopped before its producer (pid {w}) came for its reply"
                ));
            }
            if (w > 0 && !crate::os::process_running(w)) || since.elapsed() >= REPLY_QUEUE {
                return Ok(());
            }
            std::thread::sleep(backoff(round));
        }
        unreachable!()
    }

    /// Idle: sleeps until a producer takes the size semaphore (wait-for-zero), waking every
    /// 2 s only to notice a stop request, or a producer queued for the content semaphore while
    /// nobody holds the size one. That is one waiting for its MD5 reply after another took it
    /// (two original producers at once can swap replies): left queued, it would wait for
    /// ever, so it is handed the content semaphore like any reply's taker.
    pub(super) fn wait_for_producer(&self) -> Result<Pass, LegacyError> {
        loop {
            match self.op(self.size_sem, &[SemOp::zero(0)], Some(IDLE_CHECK)) {
                Ok(()) => return Ok(Pass::Arrival),
                Err(LegacyError::TimedOut { .. } | LegacyError::Interrupted)
                    if !self.cancel.is_cancelled() =>
                {
                    if self.content_sem.waiting(0)? >= 1 && self.size_sem.value(0)? > 0 {
                        return Ok(Pass::Reply);
                    }
                }
                Err(_) if self.cancel.is_cancelled() => {
                    return Err(LegacyError::Interrupted);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Producers attached to the segments besides us: every producer attaches both before it
    /// takes a semaphore, and the kernel detaches a producer that dies.
    pub(super) fn producers_attached(&self) -> u64 {
        self.size_shm
            .stat()
            .map_or(0, |s| s.nattch.saturating_sub(1))
    }

    /// Hands the content semaphore (which we hold) to the producer queued for it, with our own
    /// take queued right behind, and returns once we hold it again. If nobody comes for it
    /// (`Reply` to a producer that does not check MD5, or an `Arrival` whose producer died
    /// holding the size semaphore), we keep it.
    ///
    /// Returns who held it in between, as far as the kernel tells: when one producer was
    /// queued ahead of our take, the semaphore's last operator read right after our release
    /// is that producer (until it releases to us: then it is us, and not known). A file we
    /// find on our return was written by it.
    pub(super) fn pass_content(
        &self,
        why: Pass,
        early: Option<Take>,
        note: &mut dyn FnMut(String),
    ) -> Result<Holder, LegacyError> {
        let take = match early {
            Some(t) => t,
            None if !self.wait_for_taker(why, note)? => return Ok(Holder::Unknown),
            None => self.queue_take(why == Pass::Arrival),
        };
        self.op(self.content_sem, &[SemOp::give(0)], None)?;
        let first = self.content_sem.last_pid(0)?;
        debug!(?why, ahead = take.ahead, first, "content handed over");
        let writer = take.sole.filter(|_| take.writer);
        self.await_content(&take.rx, writer, note)?;
        let me = crate::os::getpid();
        Ok(match (take.ahead, take.sole) {
            (_, Some(pid)) if take.writer => Holder::Read(pid),
            (1, Some(pid)) => Holder::Read(pid),
            (1, None) if first > 0 && first != me => Holder::Read(first),
            (1, None) if take.unseen => Holder::Unseen,
            (1, None) => Holder::Single,
            _ => Holder::Unknown,
        })
    }

    /// Queues our take of the content semaphore (which we hold), in a thread of its own, and
    /// returns once it is queued: whoever queues later queues behind it. With `identify`, and
    /// one producer ahead of it, looks for that one where it sleeps: once we release, it may
    /// run and release to us before we can read its pid.
    pub(super) fn queue_take(&self, identify: bool) -> Take {
        let me = crate::os::getpid();
        // The producer holding the size semaphore, if queued for the content before our take:
        // the one producer that may write in this hand-over (it cannot release the size
        // semaphore before it holds the content one, so it is still the holder).
        let writer = match (self.size_sem.value(0), self.size_sem.last_pid(0)) {
            (Ok(0), Ok(b)) if b > 0 && b != me => {
                crate::os::sleeping_on_semaphores(b, self.content_sem.id()).then_some(b)
            }
            _ => None,
        };
        // Ours cannot go through: we hold the semaphore.
        let rx = take_in_thread(self.content_sem, Duration::from_secs(1), || ());
        let ahead = self.content_sem.waiting(0).map_or(-1, |n| n - 1);
        let sleepers = match identify && ahead == 1 && writer.is_none() {
            true => Some(self.sleepers_on_content()),
            false => None,
        };
        let sole = match sleepers.as_deref() {
            Some([pid]) => Some(*pid),
            _ => None,
        };
        Take {
            rx,
            ahead,
            sole: writer.or(sole),
            writer: writer.is_some(),
            // One is queued, and we see nobody asleep: another user's producer.
            unseen: sleepers.is_some_and(|s| s.is_empty()),
        }
    }

    /// The producers asleep on the content semaphore. A producer attaches both segments as it
    /// starts, so the last to attach one is the likely newcomer: if it sleeps there, and
    /// only one does, it is that one. Else every process is looked at (a millisecond or two).
    fn sleepers_on_content(&self) -> Vec<i32> {
        let content = self.content_sem.id();
        let likely = [&self.content_shm, &self.size_shm]
            .into_iter()
            .filter_map(|s| s.stat().ok().map(|st| st.lpid))
            .find(|&pid| crate::os::sleeping_on_semaphores(pid, content));
        match likely {
            Some(pid) if self.content_sem.waiting(0).is_ok_and(|n| n == 2) => vec![pid],
            _ => crate::os::sleepers_on_semaphores(content),
        }
    }

    /// Waits until someone is queued for the content semaphore. Returns false if nobody will
    /// come: no producer is left that could.
    pub(super) fn wait_for_taker(
        &self,
        why: Pass,
        note: &mut dyn FnMut(String),
    ) -> Result<bool, LegacyError> {
        let mut suspect = false;
        let mut checked = Instant::now();
        for round in 0u32.. {
            if self.content_sem.waiting(0)? >= 1 {
                return Ok(true);
            }
            if self.cancel.is_cancelled() {
                return Err(LegacyError::Interrupted);
            }
            let attached = self.producers_attached();
            match why {
                // A producer that does not check MD5 exits right after its release.
                Pass::Reply if attached == 0 => return Ok(false),
                Pass::Reply => {}
                Pass::Arrival if self.size_sem.value(0)? > 0 => return Ok(false),
                // Nobody alive holds the size semaphore if every attached producer is queued
                // for it: its holder died. Seen twice, a slice apart, it is given back.
                Pass::Arrival if checked.elapsed() >= SLICE => {
                    checked = Instant::now();
                    // Our own take of the size semaphore, if queued, is no producer's.
                    let ours =
                        crate::os::sleeping_on_semaphores(crate::os::getpid(), self.size_sem.id());
                    let waiting =
                        (self.size_sem.waiting(0)? as u64).saturating_sub(u64::from(ours));
                    let dead = attached <= waiting;
                    if dead && suspect {
                        note("a producer died holding the size semaphore; released it for the next one".into());
                        self.op(self.size_sem, &[SemOp::give(0)], None)?;
                        return Ok(false);
                    }
                    suspect = dead;
                }
                Pass::Arrival => {}
            }
            std::thread::sleep(backoff(round));
        }
        unreachable!()
    }

    /// After our hand-over: waits for our queued take to complete. If the producer that took
    /// the semaphore dies holding it (the original dies so when it cannot decode a reply), we
    /// give it back on its behalf: our take then completes, and whatever it left is discarded.
    pub(super) fn await_content(
        &self,
        rx: &std::sync::mpsc::Receiver<Result<(), WaitError>>,
        writer: Option<i32>,
        note: &mut dyn FnMut(String),
    ) -> Result<(), LegacyError> {
        let me = crate::os::getpid();
        let mut dead = None;
        loop {
            match rx.recv_timeout(SLICE) {
                Ok(Ok(())) => break,
                Ok(Err(e)) => return Err(self.wait_error(e, None)),
                Err(_) => {}
            }
            if self.cancel.is_cancelled() {
                return Err(LegacyError::Interrupted);
            }
            // Taken, and the last to touch it (the one it was handed to: the kernel records
            // the waiter whose take it completes) is dead. Looked up anew each slice: the
            // semaphore may pass through several producers (two at once swap their turns),
            // and any of them may die holding it.
            let holder = self.content_sem.last_pid(0)?;
            if self.content_sem.value(0)? == 0
                && holder != me
                && !crate::os::process_running(holder)
            {
                note(format!(
                    "a producer (pid {holder}) died holding the content semaphore; released it"
                ));
                self.op(self.content_sem, &[SemOp::give(0)], None)?;
                dead = Some(holder);
            }
        }
        // A reader that died left the file it read whole; one that may have been writing
        // did not.
        if dead.is_some() && writer.is_none_or(|w| dead == Some(w)) {
            let mut field = [0u8; SIZE_LEN];
            self.size.read(0, &mut field);
            if let Some(n @ 1..) = decode_size(&field) {
                note(format!(
                    "a file of {n} bytes not kept: its producer is not known to have written it whole"
                ));
            }
            self.size.write(0, &encode_size(0));
        }
        Ok(())
    }

    pub(super) fn wait_error(&self, e: WaitError, timeout: Option<Duration>) -> LegacyError {
        match e {
            WaitError::Sys(e) if e.is_gone() => LegacyError::Removed,
            WaitError::Sys(e) => e.into(),
            WaitError::TimedOut => LegacyError::TimedOut {
                secs: timeout.map_or(0.0, |t| t.as_secs_f64()),
            },
            WaitError::Interrupted => LegacyError::Interrupted,
        }
    }
}
