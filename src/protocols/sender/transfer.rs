//! One file's transfer: its request, its chunks into the ring, its identity checked before
//! and after it is read, its end marker.

use super::*;

/// One file's transfer: the tags its messages carry and how far it got.
pub(super) struct Transfer<'a, 'i> {
    pub(super) ch: &'a SenderEnd,
    pub(super) path: &'a Path,
    pub(super) session: u32,
    pub(super) file: u32,
    pub(super) size: Option<u64>,
    /// With MD5: the digest of what we read (from our own copy of each chunk, never from
    /// the slot, which others may write).
    pub(super) hash: Option<Md5>,
    /// Our own copy of the current chunk, where it does not go straight into the slot.
    pub(super) buf: Vec<u8>,
    pub(super) total: u64,
    pub(super) seq: u64,
    pub(super) input: Input<'i>,
    /// A regular file's identity and times before the first read, compared after the last.
    pub(super) stamp: Option<Stamp>,
}

/// What GNU tar and rsync compare to tell that a file changed while it was read: its inode,
/// size, and modification and change times (to the nanosecond), from `fstat` on the open file.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Stamp {
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) size: u64,
    pub(super) mtime: (i64, i64),
    pub(super) ctime: (i64, i64),
}

impl Stamp {
    pub(super) fn of(input: &Input) -> Option<Stamp> {
        let Input::File(f) = input else {
            return None;
        };
        let m = f.metadata().ok().filter(|m| m.is_file())?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

pub(super) enum Step {
    More,
    /// The last chunk is posted; the file's digest, if MD5 is checked.
    Last(Option<[u8; 16]>),
    /// An abort is posted: ours (with the error to report), or at the receiver's word.
    Aborted(Option<SendError>),
}

/// How a file's posting ended.
pub(super) enum Ran {
    /// Its last chunk is posted: its length and digest (with MD5); the answer is to come.
    Last(u64, Option<[u8; 16]>),
    /// An abort is posted: ours (with the error to report), or at the receiver's word.
    Aborted(Option<SendError>),
}

impl Transfer<'_, '_> {
    /// Posts every chunk, or an abort if the file is abandoned (by us or at the receiver's
    /// word). The answer is left to the caller.
    pub(super) fn run(&mut self, observer: &mut dyn Observer) -> Result<Ran, SendError> {
        loop {
            match self.next_chunk(observer)? {
                Step::More if observer.progress(self.total) => {}
                Step::More => {
                    let slot = self.ch.free_slot()?;
                    self.post(slot, 0, DescKind::Abort(Abort::Interrupted as u32))?;
                    return Ok(Ran::Aborted(Some(SendError::Abandoned(self.path.into()))));
                }
                Step::Last(digest) => return Ok(Ran::Last(self.total, digest)),
                Step::Aborted(failure) => return Ok(Ran::Aborted(failure)),
            }
        }
    }

    /// Takes a free slot and posts the next chunk into it, or an abort: when a stop was
    /// asked for, the receiver flagged a failure, or the input failed or changed.
    pub(super) fn next_chunk(&mut self, observer: &mut dyn Observer) -> Result<Step, SendError> {
        let slot = self.ch.free_slot()?;
        let abort = if self.ch.cancel().is_cancelled() {
            Some((
                Abort::Interrupted,
                Some(SendError::Interrupted(self.path.into())),
            ))
        } else if self.ch.receiver_failure(self.file).is_some() {
            Some((Abort::ReceiverFailed, None))
        } else {
            observer.phase(Phase::Input, Some(self.path));
            match self.fill(slot) {
                Ok((n, last)) => {
                    observer.phase(Phase::Idle, None);
                    return self.post_data(slot, n, last, observer);
                }
                Err((why, e)) => Some((why, Some(e))),
            }
        };
        let (why, e) = abort.expect("every other path returned");
        observer.phase(Phase::Idle, None);
        self.post(slot, 0, DescKind::Abort(why as u32))?;
        Ok(Step::Aborted(e))
    }

    pub(super) fn post(&self, slot: usize, len: usize, kind: DescKind) -> Result<(), FrameError> {
        let d = Desc {
            len: len as u64,
            kind,
            session: self.session,
            file: self.file,
            index: self.seq,
        };
        self.ch.post(slot, &d)
    }

    pub(super) fn post_data(
        &mut self,
        slot: usize,
        n: usize,
        last: bool,
        observer: &mut dyn Observer,
    ) -> Result<Step, SendError> {
        self.total += n as u64;
        trace!(seq = self.seq, n, last, "chunk filled");
        if !last {
            // Hand it over first, then hash our own copy while the receiver drains the slot.
            self.post(slot, n, DescKind::Data)?;
            self.hash_chunk(n);
            self.seq += 1;
            return Ok(Step::More);
        }
        self.hash_chunk(n);
        let digest = self.hash.take().map(Md5::finalize);
        self.ch.set_trailer(&Trailer {
            session: self.session,
            file: self.file,
            bytes: self.total,
            md5: digest.unwrap_or([0; 16]),
        });
        observer.phase(Phase::Verdict, Some(self.path));
        self.post(slot, n, DescKind::Last)?;
        debug!(
            bytes = self.total,
            md5 = digest.as_ref().map(hex),
            "last chunk posted (FULL +1); its answer is to come (ACK -1)"
        );
        Ok(Step::Last(digest))
    }

    /// Fills one slot from the input. Returns its length and whether it is the file's last
    /// chunk, or why the file must be abandoned: a read error, a stop, or a size other than
    /// the announced one.
    /// Hashes the chunk of `n` bytes just placed, from our own copy of it.
    pub(super) fn hash_chunk(&mut self, n: usize) {
        let Some(ctx) = self.hash.as_mut() else {
            return;
        };
        match &self.input {
            Input::Bytes(b) => ctx.consume(&b[self.total as usize - n..self.total as usize]),
            _ => ctx.consume(&self.buf[..n]),
        }
    }

    /// Places the next `limit` bytes (at most) in `slot`: straight from a file into the
    /// segment (one copy) when nothing needs a copy of our own, else through `buf`.
    pub(super) fn place(&mut self, slot: usize, limit: usize) -> io::Result<usize> {
        match (&mut self.input, self.hash.is_some()) {
            (Input::File(f), false) => self.ch.fill_slot(slot, f, limit),
            (Input::Bytes(b), _) => {
                let at = (self.total as usize).min(b.len());
                let chunk = &b[at..(at + limit).min(b.len())];
                self.ch.put_slot(slot, chunk);
                Ok(chunk.len())
            }
            (input, _) => {
                if self.buf.len() < limit {
                    self.buf.resize(self.ch.info.slot_size, 0);
                }
                let n = input.read_into(&mut self.buf[..limit], self.total, self.ch.cancel())?;
                self.ch.put_slot(slot, &self.buf[..n]);
                Ok(n)
            }
        }
    }

    pub(super) fn fill(&mut self, slot: usize) -> Result<(usize, bool), (Abort, SendError)> {
        let path = self.path;
        let limit = match self.size {
            Some(s) => (s - self.total).min(self.ch.info.slot_size as u64) as usize,
            None => self.ch.info.slot_size,
        };
        let read_error = |source: io::Error| {
            if source.kind() == io::ErrorKind::Interrupted {
                (Abort::Interrupted, SendError::Interrupted(path.into()))
            } else {
                (
                    Abort::ReadError,
                    SendError::Read {
                        path: path.into(),
                        source,
                    },
                )
            }
        };
        let size = self.size;
        let changed = |read| {
            (
                Abort::FileChanged,
                SendError::Changed {
                    path: path.into(),
                    announced: size.unwrap_or(0),
                    read,
                },
            )
        };
        let n = self.place(slot, limit).map_err(read_error)?;
        let done = self.total + n as u64;
        let last = match self.size {
            Some(_) if n < limit => return Err(changed(done)),
            // The announced size is reached: one more read tells whether the file grew.
            Some(s) if done == s => {
                match self.input.read_into(&mut [0u8; 1], done, self.ch.cancel()) {
                    Ok(0) => true,
                    Ok(_) => return Err(changed(done + 1)),
                    Err(e) => return Err(read_error(e)),
                }
            }
            Some(_) => false,
            // Streaming: a slot not filled to the brim means EOF (reads loop over short ones).
            None => n < limit,
        };
        // Every byte is read: if the file was written meanwhile (same size or not), what we
        // read may mix two versions, and its last chunk must not go.
        if last && self.stamp.is_some() && Stamp::of(&self.input) != self.stamp {
            return Err((Abort::FileChanged, SendError::ChangedInPlace(path.into())));
        }
        Ok((n, last))
    }
}

/// Reads until `buf` is full or EOF; EINTR is retried unless a stop was asked for.
pub(super) fn read_full(
    input: &mut dyn Read,
    buf: &mut [u8],
    cancel: &runtime::Cancel,
) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted && !cancel.is_cancelled() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
