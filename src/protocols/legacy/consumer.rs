//! The consumer's side: the four objects made, and producers served one file at a time.

use std::sync::Arc;

use tracing::debug;

use super::handover::{Holder, Pass, SizeTurn, Writer, swapped};
use super::*;

/// What the caller did with a file a producer published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Took {
    /// Written; `stop`: serve no more (after the reply).
    Kept {
        /// Whether to serve no more files after this one.
        stop: bool,
    },
    /// Could not be written: a producer checking MD5 gets an impossible digest.
    Failed,
}

/// The consumer's side: it creates the four objects (and removes them when dropped) and
/// serves producers, one at a time.
pub struct Consumer {
    ch: Arc<Legacy>,
    /// The dead consumer whose leftovers were removed to start, if any.
    predecessor: Option<i32>,
}

/// Lets a stop handler wake a serving consumer (and, as a last resort, remove its objects).
#[derive(Clone)]
pub struct Stopper(Arc<Legacy>);

impl Stopper {
    /// Cancels the consumer's waits, and removes the semaphore sets, which wakes every wait
    /// of the consumer at once (EIDRM).
    pub fn wake(&self) {
        self.0.cancel.cancel();
        let _ = self.0.size_sem.remove();
        let _ = self.0.content_sem.remove();
    }
    /// Removes all four objects.
    pub fn remove(&self) {
        self.0.remove();
    }
}

impl Consumer {
    /// Creates the four objects as the original consumer does (mode `mode`, values 0).
    ///
    /// A consumer killed without a chance to clean up (SIGKILL) leaves its objects behind. If
    /// they are provably a dead consumer's (of our user, of the original's shapes, nothing
    /// attached, their creator gone), they are removed and made anew, as a native receiver
    /// takes over a dead one's channel ([`Consumer::predecessor`] tells).
    ///
    /// # Errors
    /// The objects exist already and are not provably a dead consumer's (another consumer, a
    /// stopped one, another user's leftovers), permission, the kernel.
    pub fn create(content_key: Key, size_key: Key, mode: u32) -> Result<Consumer, LegacyError> {
        match Legacy::create(content_key, size_key, mode) {
            Ok(ch) => Ok(Consumer {
                ch: Arc::new(ch),
                predecessor: None,
            }),
            Err(LegacyError::InUse { .. }) => {
                let Some((pid, leftovers)) = dead_consumer(content_key, size_key) else {
                    return Err(LegacyError::InUse {
                        content: content_key,
                        size: size_key,
                    });
                };
                for remove in leftovers {
                    remove();
                }
                Ok(Consumer {
                    ch: Arc::new(Legacy::create(content_key, size_key, mode)?),
                    predecessor: Some(pid),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The pid of the dead consumer whose leftovers [`Consumer::create`] removed, if it did.
    pub fn predecessor(&self) -> Option<i32> {
        self.predecessor
    }

    /// A handle that stops [`Consumer::serve`] from another thread or a signal handler.
    pub fn stopper(&self) -> Stopper {
        Stopper(self.ch.clone())
    }

    /// Serves producers until `take` says stop or the objects go. Each published file is
    /// handed to `take` (a copy of our own: the digest we reply, with `md5`, is of exactly
    /// these bytes); `note` hears of what was noticed and repaired on the way.
    ///
    /// # Errors
    /// A stop ([`LegacyError::Interrupted`]), the objects removed, the kernel.
    pub fn serve(
        &self,
        md5: bool,
        take: &mut dyn FnMut(&[u8]) -> Took,
        note: &mut dyn FnMut(String),
    ) -> Result<(), LegacyError> {
        serve(&self.ch, md5, take, note)
    }
}

/// A removal of one leftover object.
type Leftover = Box<dyn FnOnce()>;

/// Whether the objects at the keys are what a dead consumer of ours left: each of the
/// original's shape, made and owned by our user, neither segment attached by anyone, and
/// their creator (the segments' `shm_cpid`, one process) gone. Then its pid, and how to
/// remove each object. A stopped consumer is still attached, another user's objects are
/// theirs, and anything else at the keys is not ours to judge: `None`.
fn dead_consumer(content_key: Key, size_key: Key) -> Option<(i32, Vec<Leftover>)> {
    let me = crate::os::geteuid();
    let ours = |p: sysv::Perm| p.uid == me && p.cuid == me;
    let mut creator = None;
    let mut leftovers: Vec<Leftover> = Vec::new();
    for (key, len) in [(content_key, CONTENT_LEN), (size_key, SIZE_LEN)] {
        let Ok(shm) = Shm::open(key) else { continue };
        let st = shm.stat().ok()?;
        if st.size != len || !ours(st.perm) || st.nattch != 0 {
            return None;
        }
        if creator.is_some_and(|c| c != st.cpid) {
            return None;
        }
        creator = Some(st.cpid);
        leftovers.push(Box::new(move || drop(shm.remove())));
    }
    for key in [content_key, size_key] {
        let Ok(set) = SemSet::open(key) else { continue };
        let st = set.stat().ok()?;
        if st.nsems != 1 || !ours(st.perm) {
            return None;
        }
        leftovers.push(Box::new(move || drop(set.remove())));
    }
    let pid = creator?;
    (pid > 0 && !crate::os::process_alive(pid)).then_some((pid, leftovers))
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.ch.remove();
    }
}

/// The consumer's loop. Its invariant: at the top of each round we hold the content
/// semaphore. A producer takes the size semaphore and then queues for the content one; we hand
/// it over only once our own take is queued right behind it, so when the producer releases the
/// content (size and bytes written) the kernel gives it to us inside the producer's own
/// `semop`, however late we are scheduled, and its take-back for the hash ~3 ms later queues
/// behind us. Idle we sleep in a wait-for-zero on the size semaphore: no spinning, no polling.
/// A semaphore is never reset: one that a dead producer held is given back on its behalf, once
/// the kernel's records show nobody alive could give it back.
fn serve(
    ch: &Legacy,
    md5: bool,
    take: &mut dyn FnMut(&[u8]) -> Took,
    note: &mut dyn FnMut(String),
) -> Result<(), LegacyError> {
    // As the original consumer does once: size "0" and the size semaphore released. The
    // content semaphore was created at 0: it is ours.
    ch.size.write(0, &encode_size(0));
    ch.op(ch.size_sem, &[SemOp::give(0)], None)?;
    debug!(content = %ch.content_key, size = %ch.size_key, "legacy objects created; waiting for a producer");
    let mut turn = SizeTurn::default();
    // Who held the content semaphore in the last hand-over.
    let mut holder = Holder::Unknown;
    loop {
        let mut field = [0u8; SIZE_LEN];
        ch.size.read(0, &mut field);
        match decode_size(&field) {
            Some(0) => {
                turn.release(ch)?;
                let why = ch.wait_for_producer()?;
                if md5 && why == Pass::Arrival {
                    turn.queue(ch);
                }
                holder = ch.pass_content(why, None, note)?;
            }
            size => {
                // A producer published a file and released the content to us. Nobody writes
                // the size field while we hold the content semaphore.
                ch.size.write(0, &encode_size(0));
                let Some(size) = size else {
                    note(format!(
                        "ignored a malformed size field \"{}\"",
                        crate::mechanisms::text::escape(&field)
                    ));
                    continue;
                };
                let step = if md5 {
                    let writer = turn.writer(ch, std::mem::replace(&mut holder, Holder::Unknown));
                    debug!(size, ?writer, held = turn.held(), "a file arrived");
                    answer(ch, &mut turn, size, writer, take, note)?
                } else {
                    let mut bytes = vec![0u8; size];
                    ch.content.read(0, &mut bytes);
                    match take(&bytes) {
                        Took::Kept { stop: true } => Step::Stop,
                        _ => Step::Go(ch.pass_content(Pass::Reply, None, note)?),
                    }
                };
                match step {
                    Step::Stop => return Ok(()),
                    Step::Go(h) => holder = h,
                }
            }
        }
    }
}

/// Where serving goes after a file.
enum Step {
    /// Serve no more.
    Stop,
    /// On, after a hand-over with this holder.
    Go(Holder),
}

/// The digest reply's place while no reply is due: an impossible digest, valid text.
const NO_DIGEST: [u8; 33] = *b"00000000000000000000000000000000\0";

/// Takes one file published by `writer`, with MD5, in two hand-overs.
///
/// First our take is queued at once, before the writer comes back for its reply (~3 ms),
/// and the content is handed to those already queued: stale readers (who read no digest) and
/// at most one producer holding the size semaphore, who writes the next file. If one does,
/// the reply is lost: the file is not kept, and the next is taken.
///
/// Otherwise the file is kept only if its writer is sure to read its own digest: queued for
/// the content, with no producer ahead of it that writes ([`Legacy::reply_reaches`]). Then the
/// file goes to `take`, the digest (an impossible one if `take` failed) is written, and the
/// content is handed over again. A file not kept is said in a line naming the pids; its
/// producer reads an impossible digest and fails, and sends it again.
fn answer(
    ch: &Legacy,
    turn: &mut SizeTurn,
    size: usize,
    writer: Writer,
    take: &mut dyn FnMut(&[u8]) -> Took,
    note: &mut dyn FnMut(String),
) -> Result<Step, LegacyError> {
    let mut bytes = vec![0u8; size];
    ch.content.read(0, &mut bytes);
    // Hashed while its producer is still on its way back for the reply.
    let digest = hex(&digest::md5(&bytes));
    let content = ch.content_sem.id();
    let w = match writer {
        Writer::Known(w) => Some(w),
        Writer::Unknown(_) | Writer::Unseen => None,
    };
    // Nobody can write before the writer reads: we hold the size semaphore, or the writer
    // is queued already (the reply's check sees to any producer queued ahead of it).
    let safe = turn.held() || w.is_some_and(|w| crate::os::sleeping_on_semaphores(w, content));
    if !safe {
        let early = ch.queue_take(false);
        ch.content.write(0, &NO_DIGEST);
        let overwriter = early.sole.filter(|_| early.writer);
        // Queued now and gone after the hand-over: it read the impossible digest.
        let queued = w.is_some_and(|w| crate::os::sleeping_on_semaphores(w, content));
        let holder = ch.pass_content(Pass::Reply, Some(early), note)?;
        let mut field = [0u8; SIZE_LEN];
        ch.size.read(0, &mut field);
        let read_none = queued && w.is_some_and(|w| !crate::os::sleeping_on_semaphores(w, content));
        if overwriter.is_some() || decode_size(&field) != Some(0) || read_none {
            let why = match (overwriter, read_none) {
                (None, true) => "its producer came for its reply before it was written".into(),
                (b, _) => swapped(b.unwrap_or(0), w),
            };
            note(format!("a file of {size} bytes not kept: {why}"));
            turn.queue(ch);
            return Ok(Step::Go(holder));
        }
    }
    reply(ch, turn, &bytes, &digest, writer, take, note)
}

/// The second hand-over of [`answer`]: the file is kept if its reply reaches its writer.
fn reply(
    ch: &Legacy,
    turn: &mut SizeTurn,
    bytes: &[u8],
    digest: &str,
    writer: Writer,
    take: &mut dyn FnMut(&[u8]) -> Took,
    note: &mut dyn FnMut(String),
) -> Result<Step, LegacyError> {
    let protected = turn.held();
    let took = match ch.reply_reaches(writer, protected) {
        Ok(()) => take(bytes),
        Err(why) => {
            note(format!("a file of {} bytes not kept: {why}", bytes.len()));
            Took::Failed
        }
    };
    match took {
        Took::Kept { .. } => ch.content.write(0, &[digest.as_bytes(), b"\0"].concat()),
        Took::Failed => ch.content.write(0, &NO_DIGEST),
    }
    if took == (Took::Kept { stop: true }) {
        return Ok(Step::Stop);
    }
    // Nobody queued: its writer is gone, and nobody else comes while we hold the content.
    let holder = match ch.content_sem.waiting(0)? {
        0 => Holder::Unknown,
        _ => ch.pass_content(Pass::Reply, None, note)?,
    };
    // Held since before this file arrived, our turn protected its reply: given back once
    // the reply is read.
    if protected {
        turn.release(ch)?;
    }
    // The next producer may have its turn already: ours comes after it.
    turn.queue(ch);
    Ok(Step::Go(holder))
}
