//! A sender's request (a file to take, or goodbye) and its path region.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// What a request asks for.
#[repr(u32)]
pub(crate) enum Op {
    /// Take a file.
    File = 1,
    /// The sender is done: the receiver admits the next one.
    Bye = 2,
}

/// The sender's permission bits and modification time, for `recv --preserve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// The permission bits.
    pub mode: u32,
    /// The modification time's seconds.
    pub mtime_sec: i64,
    /// Its nanoseconds.
    pub mtime_nsec: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// A sender's request: a file to take, or goodbye.
pub(crate) struct Request {
    /// What it asks.
    pub op: Op,
    /// The sender's pid, as it wrote it.
    pub sender_pid: i32,
    /// `None`: streaming, length unknown until the last chunk.
    pub size: Option<u64>,
    /// Whether the sender asks for MD5 verification.
    pub md5: bool,
    /// The file's mode and mtime, when the sender sends them.
    pub meta: Option<Meta>,
    /// The sender's file name, raw bytes; the receiver sanitizes it before any use.
    pub name: Vec<u8>,
    /// The session the receiver announced when it admitted this sender.
    pub session: u32,
    /// The file's number within the session: 1 for the first request, then one more for each
    /// request (0 in a goodbye). Every chunk of the file carries it.
    pub file: u32,
}

const UNKNOWN_SIZE: u64 = u64::MAX;
const REQ_MD5: u32 = 1;
const REQ_META: u32 = 2;
/// The name is a relative path: whole in the path region, its last component in the request.
const REQ_PATH: u32 = 4;

/// Encodes a request.
pub(crate) fn encode_request(r: &Request) -> [u8; REQUEST_LEN] {
    let mut b = [0u8; REQUEST_LEN];
    wr_u32(&mut b, 0, r.sender_pid as u32);
    wr_u32(&mut b, 4, if r.op == Op::File { 1 } else { 2 });
    wr_u64(&mut b, 8, r.size.unwrap_or(UNKNOWN_SIZE));
    let mut flags = 0;
    if r.md5 {
        flags |= REQ_MD5;
    }
    if let Some(m) = r.meta {
        flags |= REQ_META;
        wr_u32(&mut b, 20, m.mode);
        wr_u64(&mut b, 24, m.mtime_sec as u64);
        wr_u32(&mut b, 32, m.mtime_nsec);
    }
    let name = match r.name.iter().rposition(|&c| c == b'/') {
        Some(i) => {
            flags |= REQ_PATH;
            &r.name[i + 1..]
        }
        None => &r.name[..],
    };
    wr_u32(&mut b, 16, flags);
    let name = &name[..name.len().min(MAX_NAME)];
    wr_u32(&mut b, 36, name.len() as u32);
    b[40..40 + name.len()].copy_from_slice(name);
    wr_u32(&mut b, 296, r.session);
    wr_u32(&mut b, 300, r.file);
    b
}

/// The path region for a request whose name is a relative path (it holds a `/`): its length,
/// then its bytes (at most [`MAX_PATH`]); empty for a plain name, which needs none.
pub(crate) fn encode_path(r: &Request) -> Vec<u8> {
    if !r.name.contains(&b'/') {
        return Vec::new();
    }
    let path = &r.name[..r.name.len().min(MAX_PATH)];
    let mut b = (path.len() as u32).to_ne_bytes().to_vec();
    b.extend_from_slice(path);
    b
}

/// Decodes a request, checking every field; `path` is the path region, read only when the
/// request says its name is a path.
///
/// # Errors
/// A region is too small, or a field is out of range (an unknown op, a name too long).
pub(crate) fn decode_request(b: &[u8], path: &[u8]) -> Result<Request, HeaderError> {
    if b.len() < REQUEST_LEN {
        return Err(HeaderError::TooSmall { size: b.len() });
    }
    let field = |field, value: u64| HeaderError::Field { field, value };
    let op = match rd_u32(b, 4) {
        c if c == Op::File as u32 => Op::File,
        c if c == Op::Bye as u32 => Op::Bye,
        v => return Err(field("request op", v.into())),
    };
    let flags = rd_u32(b, 16);
    if flags & !(REQ_MD5 | REQ_META | REQ_PATH) != 0 {
        return Err(field("request flags", flags.into()));
    }
    let meta = if flags & REQ_META != 0 {
        let mode = rd_u32(b, 20);
        let mtime_nsec = rd_u32(b, 32);
        if mode > 0o7777 {
            return Err(field("file mode", mode.into()));
        }
        if mtime_nsec >= 1_000_000_000 {
            return Err(field("mtime nanoseconds", mtime_nsec.into()));
        }
        Some(Meta {
            mode,
            mtime_sec: rd_u64(b, 24) as i64,
            mtime_nsec,
        })
    } else {
        None
    };
    let name_len = rd_u32(b, 36) as usize;
    if name_len > MAX_NAME {
        return Err(field("name length", name_len as u64));
    }
    let name = if flags & REQ_PATH != 0 {
        decode_path(path)?
    } else {
        b[40..40 + name_len].to_vec()
    };
    let size = rd_u64(b, 8);
    Ok(Request {
        op,
        sender_pid: rd_u32(b, 0) as i32,
        size: (size != UNKNOWN_SIZE).then_some(size),
        md5: flags & REQ_MD5 != 0,
        meta,
        name,
        session: rd_u32(b, 296),
        file: rd_u32(b, 300),
    })
}

fn decode_path(b: &[u8]) -> Result<Vec<u8>, HeaderError> {
    if b.len() < 4 {
        return Err(HeaderError::TooSmall { size: b.len() });
    }
    let len = rd_u32(b, 0) as usize;
    if len > MAX_PATH || 4 + len > b.len() {
        return Err(HeaderError::Field {
            field: "path length",
            value: len as u64,
        });
    }
    Ok(b[4..4 + len].to_vec())
}
