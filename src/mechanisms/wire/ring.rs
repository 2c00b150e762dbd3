//! The ring's messages: slot descriptors, the trailer, the abort codes; and the channel's
//! published state.

use super::*;

/// What a slot descriptor says about its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DescKind {
    /// A chunk of the file; more follow.
    Data,
    /// The file's last chunk (possibly empty); the trailer is written.
    Last,
    /// No data: the sender abandons the file, for this reason (an [`Abort`] code).
    Abort(u32),
}

/// One content slot's descriptor. Every descriptor names the session, the file and its place
/// in the file, so the receiver never takes a descriptor of another file for one of this file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Desc {
    /// As the sender wrote it: check it with [`Desc::len_in`] before use.
    pub len: u64,
    /// Data, the last chunk, or an abort.
    pub kind: DescKind,
    /// The session the chunk belongs to.
    pub session: u32,
    /// The file, within its session.
    pub file: u32,
    /// The chunk's number within its file, from 0.
    pub index: u64,
}

impl Desc {
    /// The chunk's length, if it fits in a slot of `slot_size` bytes.
    pub(crate) fn len_in(&self, slot_size: usize) -> Option<usize> {
        usize::try_from(self.len).ok().filter(|&n| n <= slot_size)
    }
}

pub(super) const DESC_LAST: u32 = 1;
pub(super) const DESC_ABORT: u32 = 2;

/// Encodes a slot descriptor.
pub(crate) fn encode_desc(d: &Desc) -> [u8; SLOT_DESC_LEN] {
    let mut b = [0u8; SLOT_DESC_LEN];
    wr_u64(&mut b, 0, d.len);
    let (flags, code) = match d.kind {
        DescKind::Data => (0, 0),
        DescKind::Last => (DESC_LAST, 0),
        DescKind::Abort(code) => (DESC_ABORT, code),
    };
    wr_u32(&mut b, 8, flags);
    wr_u32(&mut b, 12, code);
    wr_u32(&mut b, 16, d.session);
    wr_u32(&mut b, 20, d.file);
    wr_u64(&mut b, 24, d.index);
    b
}

/// Decodes a slot descriptor. Its tags and kind are taken as written (the receiver compares
/// them with the file it expects); its length is checked by [`Desc::len_in`].
pub(crate) fn decode_desc(b: &[u8]) -> Result<Desc, HeaderError> {
    if b.len() < SLOT_DESC_LEN {
        return Err(HeaderError::TooSmall { size: b.len() });
    }
    let len = rd_u64(b, 0);
    let kind = match rd_u32(b, 8) {
        0 => DescKind::Data,
        DESC_LAST => DescKind::Last,
        DESC_ABORT if len == 0 => DescKind::Abort(rd_u32(b, 12)),
        flags => {
            return Err(HeaderError::Field {
                field: "chunk flags",
                value: flags.into(),
            });
        }
    };
    Ok(Desc {
        len,
        kind,
        session: rd_u32(b, 16),
        file: rd_u32(b, 20),
        index: rd_u64(b, 24),
    })
}

/// What the sender says about a whole file, written before its last descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trailer {
    /// The session.
    pub session: u32,
    /// The file, within its session.
    pub file: u32,
    /// How many bytes the sender sent.
    pub bytes: u64,
    /// The sender's MD5 of what it read (zeros without MD5).
    pub md5: [u8; 16],
}

/// Encodes a trailer.
pub(crate) fn encode_trailer(t: &Trailer) -> [u8; TRAILER_LEN] {
    let mut b = [0u8; TRAILER_LEN];
    wr_u32(&mut b, 0, t.session);
    wr_u32(&mut b, 4, t.file);
    wr_u64(&mut b, 8, t.bytes);
    b[16..32].copy_from_slice(&t.md5);
    b
}

/// Decodes a trailer (every bit pattern is one; the tags are checked by the caller).
pub(crate) fn decode_trailer(b: &[u8; TRAILER_LEN]) -> Trailer {
    Trailer {
        session: rd_u32(b, 0),
        file: rd_u32(b, 4),
        bytes: rd_u64(b, 8),
        md5: b[16..32].try_into().expect("16 bytes"),
    }
}

/// An MD5 digest as 32 lowercase hex digits, as md5sum prints it.
pub(crate) fn hex(d: &[u8; 16]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Channel state as the receiver publishes it, for `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum State {
    /// Creating the channel (the zeroed segment says it: never stored).
    #[allow(dead_code)]
    Starting = 0,
    /// Waiting for a sender.
    Idle = 1,
    /// A sender is admitted.
    Busy = 2,
    /// Leaving.
    Stopping = 3,
}

/// Why a sender gave up on a file, as it tells the receiver in its trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Abort {
    /// A stop (a signal) reached the sender.
    Interrupted = 1,
    /// Reading the input failed.
    ReadError = 2,
    /// The input's size changed while it was sent.
    FileChanged = 3,
    /// The receiver reported a failure mid-transfer; the sender stops sending.
    ReceiverFailed = 4,
}

impl Abort {
    /// The abort stored as `c`, if it is one.
    pub(crate) fn from_code(c: u32) -> Option<Abort> {
        Some(match c {
            1 => Abort::Interrupted,
            2 => Abort::ReadError,
            3 => Abort::FileChanged,
            4 => Abort::ReceiverFailed,
            _ => return None,
        })
    }
}
