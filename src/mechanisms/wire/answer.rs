//! The receiver's answer about a file: its status and outcome.

use super::*;

/// What the receiver says about the current request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    /// Nothing decided yet (also: the receiver is still taking data).
    Pending = 0,
    /// The receiver is taking the file (set when it reads the request; the sender sends its
    /// chunks without waiting for it).
    Accepted = 1,
    /// The file is written and named.
    Committed = 2,
    /// The receiver could not create the output file.
    CannotCreate = 3,
    /// Writing the output failed (disk full, file size limit, closed stdout...).
    WriteFailed = 4,
    /// The MD5 of what arrived differs from the sender's.
    Md5Mismatch = 5,
    /// The sender aborted; the partial file was discarded.
    Aborted = 6,
    /// The request or a chunk descriptor was malformed.
    BadRequest = 7,
    /// The received length differs from the size the sender announced.
    LengthMismatch = 8,
    /// The receiver takes no more files (`--once` and it has its one).
    Closed = 9,
    /// The receiver recreates relative paths (`--keep-path`) and this one is unsafe: absolute,
    /// with an empty, `.` or `..` component, or a NUL.
    BadPath = 10,
    /// The sender withdrew the file (it gave up waiting, or was stopped) before the receiver
    /// committed it: it was dropped.
    Withdrawn = 11,
    /// The receiver accepts files only from the users and groups it names
    /// (`--allow-user`, `--allow-group`), and not from this sender's.
    NotAllowed = 12,
}

impl Status {
    /// Whether nothing is decided about the file yet (pending, or being taken).
    pub fn is_pending(self) -> bool {
        matches!(self, Status::Pending | Status::Accepted)
    }
    /// The status as stored in the segment.
    pub fn code(self) -> u32 {
        self as u32
    }
    /// The status stored as `c`, if it is one.
    pub fn from_code(c: u32) -> Option<Status> {
        use Status::*;
        Some(match c {
            0 => Pending,
            1 => Accepted,
            2 => Committed,
            3 => CannotCreate,
            4 => WriteFailed,
            5 => Md5Mismatch,
            6 => Aborted,
            7 => BadRequest,
            8 => LengthMismatch,
            9 => Closed,
            10 => BadPath,
            11 => Withdrawn,
            12 => NotAllowed,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Status {
    /// The status in words, for messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Pending => "no answer yet",
            Status::Accepted => "taken, not yet answered",
            Status::Committed => "committed",
            Status::CannotCreate => "it could not create the output file",
            Status::WriteFailed => "it could not write the file",
            Status::Md5Mismatch => "the MD5 of what arrived differs from the sender's",
            Status::Aborted => "the sender abandoned the file",
            Status::BadRequest => "the request or a chunk was malformed",
            Status::LengthMismatch => "it received another length than announced",
            Status::Closed => "it takes no more files",
            Status::BadPath => "the relative path is unsafe",
            Status::Withdrawn => "the sender withdrew it",
            Status::NotAllowed => "it accepts no files from this sender's user",
        })
    }
}

/// The receiver's answer about one file: written before each ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The verdict.
    pub status: Status,
    /// The errno behind CannotCreate / WriteFailed, 0 otherwise.
    pub errno: i32,
    /// The name the file got (committed), or the path that failed.
    pub name: Vec<u8>,
    /// The receiver's MD5 of what it wrote (zeros without MD5).
    pub md5: [u8; 16],
    /// The bytes it received.
    pub bytes: u64,
    /// The sender segment the answer is about: a sender believes an answer only if it names
    /// its own segment.
    pub segment: i32,
    /// That segment's creator's uid, as the kernel keeps it.
    pub sender_uid: u32,
}

/// Encodes an outcome (its status and file number go before it in the answer).
pub(crate) fn encode_outcome(o: &Outcome) -> [u8; RESULT_LEN] {
    let mut b = [0u8; RESULT_LEN];
    wr_u32(&mut b, 0, o.errno as u32);
    let name = &o.name[..o.name.len().min(MAX_NAME)];
    wr_u32(&mut b, 4, name.len() as u32);
    b[8..8 + name.len()].copy_from_slice(name);
    b[264..280].copy_from_slice(&o.md5);
    wr_u64(&mut b, 280, o.bytes);
    wr_u32(&mut b, 288, o.segment as u32);
    wr_u32(&mut b, 292, o.sender_uid);
    b
}

/// Decodes an outcome read with its `status`.
///
/// # Errors
/// An unknown status, or a region too small.
pub(crate) fn decode_outcome(status: u32, b: &[u8]) -> Result<Outcome, HeaderError> {
    if b.len() < RESULT_LEN {
        return Err(HeaderError::TooSmall { size: b.len() });
    }
    let status = Status::from_code(status).ok_or(HeaderError::Field {
        field: "status",
        value: status.into(),
    })?;
    let name_len = rd_u32(b, 4) as usize;
    if name_len > MAX_NAME {
        return Err(HeaderError::Field {
            field: "result name length",
            value: name_len as u64,
        });
    }
    Ok(Outcome {
        status,
        errno: rd_u32(b, 0) as i32,
        name: b[8..8 + name_len].to_vec(),
        md5: b[264..280].try_into().unwrap(),
        bytes: rd_u64(b, 280),
        segment: rd_u32(b, 288) as i32,
        sender_uid: rd_u32(b, 292),
    })
}
