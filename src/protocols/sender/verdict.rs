//! The receiver's answer about a file, and what it means for the sender: committed (and the
//! digest compared), refused, or withdrawn when we gave up.

use super::*;

/// The receiver's verdict on a file whose last chunk is posted.
pub(super) fn verdict(ch: &SenderEnd, a: &Awaited, how: Answer) -> Result<Sent, SendError> {
    let answer = await_answer(ch, &a.label, a.file, how)?;
    match answer.status {
        // The receiver reports the digest of the bytes it wrote. Anyone who may write the
        // channel could have changed a slot and the trailer to match each other: only our own
        // digest, compared here, says the committed file holds what we read.
        Status::Committed if a.digest.is_some_and(|d| d != answer.md5) => {
            Err(SendError::CommittedOther {
                path: a.label.clone(),
                ours: hex(&a.digest.unwrap_or([0; 16])),
                theirs: hex(&answer.md5),
                name: answer.name,
            })
        }
        Status::Committed => {
            let secs = a.t.elapsed().as_secs_f64();
            debug!(
                as_name = %crate::mechanisms::text::escape(&answer.name),
                elapsed_ms = (secs * 1e3) as u64,
                mib_per_s = (a.total as f64 / 1048576.0 / secs.max(1e-9)) as u64,
                "committed (ACK -1)"
            );
            Ok(Sent {
                name: answer.name,
                bytes: a.total,
                md5: a.digest,
            })
        }
        Status::Md5Mismatch => Err(SendError::Md5 {
            path: a.label.clone(),
            ours: hex(&a.digest.unwrap_or([0; 16])),
            theirs: hex(&answer.md5),
        }),
        _ => Err(refusal(&a.label, answer)),
    }
}

/// The fate of an awaited file once we gave up waiting (`e`) and withdrew it, the receiver
/// committing file `committing` then: a later file is withdrawn and never committed; the one
/// being committed is answered within a moment (waited for up to [`frame::STOP_SETTLE`]),
/// unless the receiver stopped right there, and then nobody can say.
pub(super) fn withdrawn_or_told(
    ch: &SenderEnd,
    a: &Awaited,
    committing: u32,
    e: FrameError,
) -> Result<Sent, SendError> {
    if a.file > committing {
        return Err(SendError::Withdrawn {
            path: a.label.clone(),
            source: e,
        });
    }
    let until = Instant::now() + frame::STOP_SETTLE;
    while Instant::now() < until {
        if let (about, Ok(o)) = ch.answer_about(a.file)
            && about == a.file
            && !o.status.is_pending()
        {
            return verdict(ch, a, Answer::Counted);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Err(SendError::Frame(e))
}

/// How an answer is to be had.
#[derive(Clone, Copy)]
pub(super) enum Answer {
    /// Already counted (ACK taken): read it.
    Counted,
    /// Wait for it.
    Wait,
    /// The channel failed: only an answer already in the file's lane counts.
    Left,
}

/// The receiver's answer about `file`.
pub(super) fn await_answer(
    ch: &SenderEnd,
    path: &Path,
    file: u32,
    how: Answer,
) -> Result<frame::Outcome, SendError> {
    let bad = |source| SendError::BadAnswer {
        path: path.into(),
        source,
    };
    let waited = match how {
        Answer::Counted => Ok(()),
        Answer::Wait => ch.wait_answers(1),
        Answer::Left if ch.cancel().is_cancelled() => Err(FrameError::Interrupted),
        Answer::Left => Err(FrameError::ReceiverGone {
            key: ch.key,
            pid: ch.info.receiver_pid,
        }),
    };
    if let Err(e) = waited {
        // A receiver that answered and then went away (or was removed) left its answer in
        // the segment, which stays readable to us: it tells what became of the file.
        return match ch.answer_about(file) {
            (about, Ok(o)) if about == file && !o.status.is_pending() => Ok(o),
            _ => Err(e.into()),
        };
    }
    let (about, outcome) = ch.answer_about(file);
    let outcome = outcome.map_err(bad)?;
    if about != file {
        return Err(bad(frame::HeaderError::Field {
            field: "answer's file number",
            value: about.into(),
        }));
    }
    Ok(outcome)
}

pub(super) fn refusal(path: &Path, o: frame::Outcome) -> SendError {
    match o.status {
        Status::CannotCreate => SendError::CannotCreate {
            path: path.into(),
            at: o.name,
            errno: o.errno,
        },
        Status::WriteFailed => SendError::WriteFailed {
            path: path.into(),
            errno: o.errno,
        },
        Status::Closed => SendError::Closed(path.into()),
        Status::BadPath => SendError::PathRefused(path.into()),
        status => SendError::Refused {
            path: path.into(),
            status,
        },
    }
}
