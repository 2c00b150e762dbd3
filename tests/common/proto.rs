//! The native protocol (version 7) as docs/protocol.md gives it, for tests that act as a peer
//! or an attacker: the offsets and encodings are the contract, read here as an outsider would,
//! not borrowed from the crate (a change to one without the other fails these tests).
#![allow(dead_code)]

pub const VERSION: u32 = 7;
pub const CONTROL_LEN: usize = 53248;
pub const INFO_LEN: usize = 128;
/// Control segment: the session (132), answers at 14336 + 512 × lane.
pub const SESSION_OFF: usize = 132;
/// Rendezvous: the ticket and the segment id.
pub const TICKET_OFF: usize = 0;
pub const SEGMENT_OFF: usize = 4;
/// A sender's segment.
pub const SEGMENT_MAGIC: &[u8; 8] = b"SHMXSND\0";
pub const SEG_VERSION_OFF: usize = 8;
pub const SEG_CHANNEL_OFF: usize = 12;
pub const SEG_SESSION_OFF: usize = 16;
pub const REQUESTS_OFF: usize = 24;
pub const POSTED_OFF: usize = 32;
pub const SLOTS_OFF: usize = 1024;
pub const SLOT_DESC_LEN: usize = 32;
pub const RING_OFF: usize = 53248;
pub const REQUEST_LEN: usize = 304;
pub const RESULT_LEN: usize = 296;
pub const LANES: u32 = 8;

/// Semaphore numbers.
pub mod sem {
    pub const GATE: u16 = 0;
    pub const REQ: u16 = 1;
    pub const FULL: u16 = 2;
    pub const EMPTY: u16 = 3;
    pub const ACK: u16 = 4;
    pub const RECEIVER: u16 = 5;
    pub const SENDER: u16 = 6;
}

/// Status codes.
pub mod status {
    pub const COMMITTED: u32 = 2;
    pub const MD5_MISMATCH: u32 = 5;
    pub const BAD_REQUEST: u32 = 7;
    pub const LENGTH_MISMATCH: u32 = 8;
}

pub fn request_off(file: u32) -> usize {
    10240 + 512 * (file % LANES) as usize
}
pub fn path_off(file: u32) -> usize {
    20480 + 4096 * (file % LANES) as usize
}
pub fn trailer_off(file: u32) -> usize {
    9216 + 32 * (file % LANES) as usize
}
pub fn answer_off(file: u32) -> usize {
    14336 + 512 * (file % LANES) as usize
}

fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}
fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}
fn get32(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().unwrap())
}
fn get64(b: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(b[off..off + 8].try_into().unwrap())
}

/// The slot geometry of a channel's info region: (slot size, slot count).
pub fn slots_of(info: &[u8]) -> (usize, u32) {
    (get64(info, 16) as usize, get32(info, 24))
}

/// A file request (op 1) or a goodbye (op 2), `size` `None` for a stream.
pub fn request(
    op: u32,
    name: &[u8],
    size: Option<u64>,
    md5: bool,
    session: u32,
    file: u32,
) -> [u8; REQUEST_LEN] {
    let mut b = [0u8; REQUEST_LEN];
    put32(&mut b, 0, std::process::id());
    put32(&mut b, 4, op);
    put64(&mut b, 8, size.unwrap_or(u64::MAX));
    put32(&mut b, 16, u32::from(md5));
    let n = name.len().min(255);
    put32(&mut b, 36, n as u32);
    b[40..40 + n].copy_from_slice(&name[..n]);
    put32(&mut b, 296, session);
    put32(&mut b, 300, file);
    b
}

/// A slot descriptor: flags 0 data, 1 last, 2 abort (with `code`).
pub fn desc(len: u64, flags: u32, code: u32, session: u32, file: u32, index: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    put64(&mut b, 0, len);
    put32(&mut b, 8, flags);
    put32(&mut b, 12, code);
    put32(&mut b, 16, session);
    put32(&mut b, 20, file);
    put64(&mut b, 24, index);
    b
}

pub fn trailer(session: u32, file: u32, bytes: u64, md5: [u8; 16]) -> [u8; 32] {
    let mut b = [0u8; 32];
    put32(&mut b, 0, session);
    put32(&mut b, 4, file);
    put64(&mut b, 8, bytes);
    b[16..32].copy_from_slice(&md5);
    b
}

/// An answer's outcome (after its status and file number): the receiver's digest.
pub fn answer_md5(outcome: &[u8]) -> [u8; 16] {
    outcome[264..280].try_into().unwrap()
}

/// An info region of the given geometry and ids, magic first (for a forged header).
pub fn info(slot_size: u64, slot_count: u32, rendezvous: i32, semid: i32) -> [u8; INFO_LEN] {
    let mut b = [0u8; INFO_LEN];
    b[..8].copy_from_slice(b"SHMXFER\0");
    put32(&mut b, 8, VERSION);
    put32(&mut b, 12, CONTROL_LEN as u32);
    put64(&mut b, 16, slot_size);
    put32(&mut b, 24, slot_count);
    put32(&mut b, 32, 1);
    put32(&mut b, 36, rendezvous as u32);
    put32(&mut b, 40, semid as u32);
    put32(&mut b, 44, 0o600);
    b
}
