//! The wire layout of a channel and the handshake over it (see docs/protocol.md, which is the
//! contract; change both together).
//!
//! A channel at KEY is the control segment (KEY), the content segment (KEY+1) and one semaphore
//! set (KEY). The control segment is divided into regions, each written by one side only, so no
//! write of one side can clobber the other's:
//!
//! | offset | region   | writer   |
//! |--------|----------|----------|
//! | 0      | info     | receiver, once, magic last |
//! | 128    | request  | sender   |
//! | 512    | trailer  | sender   |
//! | 576    | response | receiver |
//! | 1024   | slots    | sender (one 16-byte descriptor per content slot) |
//!
//! Everything read from shared memory is decoded here with bounds checks before use: the
//! segment at a key is untrusted until its header says otherwise, and even then every length
//! is checked against what the kernel says the segment's size is.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::runtime;
use crate::sysv::{self, Key, Mapping, SemOp, SemSet, Shm, SysvError, WaitError};

pub const MAGIC: [u8; 8] = *b"SHMXFER\0";
/// Version 2 tags every per-file message with its session and file (see docs/protocol.md).
pub const VERSION: u32 = 2;
/// The default channel key: "SHMX" in ASCII. Not 42/44, which the original system uses.
pub const DEFAULT_KEY: Key = Key(0x5348_4d58);
pub const CONTROL_LEN: usize = 16384;
pub const MAX_NAME: usize = 255;
pub const MIN_SLOT: usize = 4096;
pub const MAX_SLOT: usize = 256 << 20;
pub const MAX_SLOTS: u32 = 256;
pub const DEFAULT_SLOT: usize = 1 << 20;
pub const DEFAULT_SLOTS: u32 = 8;
/// How long a wait on the peer sleeps before it checks whether the peer is still alive.
pub const LIVENESS_SLICE: Duration = Duration::from_millis(250);

/// How often an idle receiver checks that its segments are still at their keys. Someone may
/// `ipcrm` them; senders then cannot find the channel, and nothing would wake the receiver to
/// say so. One check costs two `shmget`s; every 2 s is far under the one wake-up per 200 ms
/// that idling allows.
pub const PUBLISHED_CHECK: Duration = Duration::from_secs(2);

const INFO_OFF: usize = 0;
pub const INFO_LEN: usize = 128;
pub const REQUEST_OFF: usize = 128;
pub const REQUEST_LEN: usize = 304;
pub const TRAILER_OFF: usize = 512;
pub const TRAILER_LEN: usize = 32;
pub const RESPONSE_OFF: usize = 576;
pub const STATE_OFF: usize = RESPONSE_OFF;
pub const STATUS_OFF: usize = RESPONSE_OFF + 4;
pub const RESULT_OFF: usize = RESPONSE_OFF + 8;
pub const RESULT_LEN: usize = 288;
pub const PROGRESS_OFF: usize = RESPONSE_OFF + 296;
/// The session the receiver admits next (written before the gate opens).
pub const SESSION_OFF: usize = RESPONSE_OFF + 304;
/// The file that STATUS and the result describe.
pub const FILE_OFF: usize = RESPONSE_OFF + 308;
pub const SLOTS_OFF: usize = 1024;
pub const SLOT_DESC_LEN: usize = 32;

/// Semaphore numbers in the channel's set.
pub mod sem {
    /// 1 while the receiver admits a new sender; a sender takes it to start its session.
    pub const GATE: u16 = 0;
    /// The sender has written a request (a file, or goodbye).
    pub const REQ: u16 = 1;
    /// Filled slots.
    pub const FULL: u16 = 2;
    /// Free slots.
    pub const EMPTY: u16 = 3;
    /// The receiver has answered (accepted, or the file's outcome).
    pub const ACK: u16 = 4;
    /// 1 while the receiver lives: taken with SEM_UNDO, so the kernel zeroes it at its death.
    pub const RECEIVER: u16 = 5;
    /// 1 while an admitted sender lives, likewise.
    pub const SENDER: u16 = 6;
    pub const COUNT: u16 = 7;
}

/// Why a header could not be accepted. Each names what was wrong, for `status` and errors.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("segment of {size} bytes is too small for a shmxfer header ({CONTROL_LEN} bytes)")]
    TooSmall { size: usize },
    #[error("segment does not start with shmxfer's magic")]
    NotShmxfer,
    #[error("segment has shmxfer protocol version {found}; this shmxfer speaks version {VERSION}")]
    Version { found: u32 },
    #[error("invalid {field} in header: {value}")]
    Field { field: &'static str, value: u64 },
}

fn rd_u32(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().unwrap())
}
fn rd_u64(b: &[u8], off: usize) -> u64 {
    u64::from_ne_bytes(b[off..off + 8].try_into().unwrap())
}
fn wr_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}
fn wr_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

/// What the receiver publishes about its channel; written once, before the magic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub slot_size: usize,
    pub slot_count: u32,
    pub require_md5: bool,
    pub receiver_pid: i32,
    pub content_shmid: i32,
    pub semid: i32,
    pub mode: u32,
    pub created: u64,
}

impl Info {
    pub fn ring_len(&self) -> usize {
        self.slot_size * self.slot_count as usize
    }
}

pub fn encode_info(info: &Info) -> [u8; INFO_LEN] {
    let mut b = [0u8; INFO_LEN];
    b[0..8].copy_from_slice(&MAGIC);
    wr_u32(&mut b, 8, VERSION);
    wr_u32(&mut b, 12, CONTROL_LEN as u32);
    wr_u64(&mut b, 16, info.slot_size as u64);
    wr_u32(&mut b, 24, info.slot_count);
    wr_u32(&mut b, 28, u32::from(info.require_md5));
    wr_u32(&mut b, 32, info.receiver_pid as u32);
    wr_u32(&mut b, 36, info.content_shmid as u32);
    wr_u32(&mut b, 40, info.semid as u32);
    wr_u32(&mut b, 44, info.mode);
    wr_u64(&mut b, 48, info.created);
    b
}

/// Decodes the info region of a control segment of `segment_size` bytes (from IPC_STAT).
pub fn decode_info(b: &[u8], segment_size: usize) -> Result<Info, HeaderError> {
    if segment_size < CONTROL_LEN || b.len() < INFO_LEN {
        return Err(HeaderError::TooSmall {
            size: segment_size.min(b.len()),
        });
    }
    if b[0..8] != MAGIC {
        return Err(HeaderError::NotShmxfer);
    }
    let version = rd_u32(b, 8);
    if version != VERSION {
        return Err(HeaderError::Version { found: version });
    }
    let field = |field, value: u64| HeaderError::Field { field, value };
    let control_len = rd_u32(b, 12);
    if control_len as usize != CONTROL_LEN {
        return Err(field("control length", control_len.into()));
    }
    let slot_size = rd_u64(b, 16);
    if !(MIN_SLOT as u64..=MAX_SLOT as u64).contains(&slot_size) {
        return Err(field("slot size", slot_size));
    }
    let slot_count = rd_u32(b, 24);
    if !(1..=MAX_SLOTS).contains(&slot_count) {
        return Err(field("slot count", slot_count.into()));
    }
    let flags = rd_u32(b, 28);
    if flags > 1 {
        return Err(field("flags", flags.into()));
    }
    let mode = rd_u32(b, 44);
    if mode > 0o777 {
        return Err(field("mode", mode.into()));
    }
    Ok(Info {
        slot_size: slot_size as usize,
        slot_count,
        require_md5: flags == 1,
        receiver_pid: rd_u32(b, 32) as i32,
        content_shmid: rd_u32(b, 36) as i32,
        semid: rd_u32(b, 40) as i32,
        mode,
        created: rd_u64(b, 48),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    File,
    Bye,
}

/// The sender's permission bits and modification time, for `recv --preserve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub op: Op,
    pub sender_pid: i32,
    /// `None`: streaming, length unknown until the last chunk.
    pub size: Option<u64>,
    pub md5: bool,
    pub meta: Option<Meta>,
    /// The sender's file name, raw bytes; the receiver sanitizes it before any use.
    pub name: Vec<u8>,
    /// The session the receiver announced when it admitted this sender.
    pub session: u32,
}

const UNKNOWN_SIZE: u64 = u64::MAX;
const REQ_MD5: u32 = 1;
const REQ_META: u32 = 2;

pub fn encode_request(r: &Request) -> [u8; REQUEST_LEN] {
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
    wr_u32(&mut b, 16, flags);
    let name = &r.name[..r.name.len().min(MAX_NAME)];
    wr_u32(&mut b, 36, name.len() as u32);
    b[40..40 + name.len()].copy_from_slice(name);
    wr_u32(&mut b, 296, r.session);
    b
}

pub fn decode_request(b: &[u8]) -> Result<Request, HeaderError> {
    if b.len() < REQUEST_LEN {
        return Err(HeaderError::TooSmall { size: b.len() });
    }
    let field = |field, value: u64| HeaderError::Field { field, value };
    let op = match rd_u32(b, 4) {
        1 => Op::File,
        2 => Op::Bye,
        v => return Err(field("request op", v.into())),
    };
    let flags = rd_u32(b, 16);
    if flags & !(REQ_MD5 | REQ_META) != 0 {
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
    let size = rd_u64(b, 8);
    Ok(Request {
        op,
        sender_pid: rd_u32(b, 0) as i32,
        size: (size != UNKNOWN_SIZE).then_some(size),
        md5: flags & REQ_MD5 != 0,
        meta,
        name: b[40..40 + name_len].to_vec(),
        session: rd_u32(b, 296),
    })
}

/// What the receiver says about the current request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Nothing decided yet (also: the receiver is still taking data).
    Pending,
    Accepted,
    Committed,
    /// The receiver could not create the output file.
    CannotCreate,
    /// Writing the output failed (disk full, file size limit, closed stdout...).
    WriteFailed,
    Md5Mismatch,
    /// The sender aborted; the partial file was discarded.
    Aborted,
    /// The request or a chunk descriptor was malformed.
    BadRequest,
    /// The received length differs from the size the sender announced.
    LengthMismatch,
    /// The receiver takes no more files (`--once` and it has its one).
    Closed,
}

impl Status {
    pub fn code(self) -> u32 {
        self as u32
    }
    pub fn from_code(c: u32) -> Option<Status> {
        use Status::*;
        [
            Pending,
            Accepted,
            Committed,
            CannotCreate,
            WriteFailed,
            Md5Mismatch,
            Aborted,
            BadRequest,
            LengthMismatch,
            Closed,
        ]
        .get(c as usize)
        .copied()
    }
}

/// The receiver's answer about one file: written before each ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    /// The errno behind CannotCreate / WriteFailed, 0 otherwise.
    pub errno: i32,
    /// The name the file got (committed), or the path that failed.
    pub name: Vec<u8>,
    pub md5: [u8; 16],
    pub bytes: u64,
}

pub fn encode_outcome(o: &Outcome) -> [u8; RESULT_LEN] {
    let mut b = [0u8; RESULT_LEN];
    wr_u32(&mut b, 0, o.errno as u32);
    let name = &o.name[..o.name.len().min(MAX_NAME)];
    wr_u32(&mut b, 4, name.len() as u32);
    b[8..8 + name.len()].copy_from_slice(name);
    b[264..280].copy_from_slice(&o.md5);
    wr_u64(&mut b, 280, o.bytes);
    b
}

pub fn decode_outcome(status: u32, b: &[u8]) -> Result<Outcome, HeaderError> {
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
    })
}

/// What a slot descriptor says about its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescKind {
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
pub struct Desc {
    /// As the sender wrote it: check it with [`Desc::len_in`] before use.
    pub len: u64,
    pub kind: DescKind,
    pub session: u32,
    pub file: u32,
    /// The chunk's number within its file, from 0.
    pub index: u64,
}

impl Desc {
    /// The chunk's length, if it fits in a slot of `slot_size` bytes.
    pub fn len_in(&self, slot_size: usize) -> Option<usize> {
        usize::try_from(self.len).ok().filter(|&n| n <= slot_size)
    }
}

const DESC_LAST: u32 = 1;
const DESC_ABORT: u32 = 2;

pub fn encode_desc(d: &Desc) -> [u8; SLOT_DESC_LEN] {
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
pub fn decode_desc(b: &[u8]) -> Result<Desc, HeaderError> {
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
pub struct Trailer {
    pub session: u32,
    pub file: u32,
    pub bytes: u64,
    /// The sender's MD5 of what it read (zeros without MD5).
    pub md5: [u8; 16],
}

pub fn encode_trailer(t: &Trailer) -> [u8; TRAILER_LEN] {
    let mut b = [0u8; TRAILER_LEN];
    wr_u32(&mut b, 0, t.session);
    wr_u32(&mut b, 4, t.file);
    wr_u64(&mut b, 8, t.bytes);
    b[16..32].copy_from_slice(&t.md5);
    b
}

pub fn decode_trailer(b: &[u8; TRAILER_LEN]) -> Trailer {
    Trailer {
        session: rd_u32(b, 0),
        file: rd_u32(b, 4),
        bytes: rd_u64(b, 8),
        md5: b[16..32].try_into().expect("16 bytes"),
    }
}

/// An MD5 digest as 32 lowercase hex digits, as md5sum prints it.
pub fn hex(d: &[u8; 16]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Channel state as the receiver publishes it, for `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Starting = 0,
    Idle = 1,
    Busy = 2,
    Stopping = 3,
}

/// Why a sender gave up on a file, as it tells the receiver in its trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    Interrupted = 1,
    ReadError = 2,
    FileChanged = 3,
    /// The receiver reported a failure mid-transfer; the sender stops sending.
    ReceiverFailed = 4,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("no receiver on key {key}: start `shmxfer recv` first")]
    NoReceiver { key: Key },
    #[error(
        "permission denied on key {key}: the channel belongs to {owner} (mode {mode:04o}); \
         run as {owner}, or have the receiver started with `--mode 0660`/`0666`"
    )]
    PermissionDenied { key: Key, owner: String, mode: u32 },
    #[error(
        "key {key} is in use by something that is not a shmxfer channel ({why}); leaving it alone: choose another --key"
    )]
    Foreign { key: Key, why: String },
    #[error(
        "a receiver (pid {pid}) is already serving key {key}; stop it first, or choose another --key"
    )]
    InUse { key: Key, pid: i32 },
    #[error(
        "the receiver (pid {pid}) on key {key} is still setting its channel up; try again, or wait with --wait SECS"
    )]
    Starting { key: Key, pid: i32 },
    #[error(
        "the receiver (pid {pid}) on key {key} is gone; start `shmxfer recv` again (it takes the key over)"
    )]
    ReceiverGone { key: Key, pid: i32 },
    #[error(
        "the channel on key {key} was removed while in use (ipcrm, or the receiver stopped); start `shmxfer recv` again"
    )]
    Removed { key: Key },
    #[error("the sender went away mid-transfer")]
    SenderGone,
    #[error(
        "timed out after {secs}s waiting for {what} on key {key}; wait longer with --wait SECS, or see `shmxfer status`"
    )]
    TimedOut {
        key: Key,
        what: &'static str,
        secs: f64,
    },
    #[error("interrupted")]
    Interrupted,
    #[error("bad header on key {key}: {source}")]
    Header { key: Key, source: HeaderError },
    #[error("{0}")]
    Sys(#[from] SysvError),
}

impl FrameError {
    fn from_wait(key: Key, e: WaitError) -> FrameError {
        match e {
            WaitError::Sys(e) if e.is_gone() => FrameError::Removed { key },
            WaitError::Sys(e) => FrameError::Sys(e),
            WaitError::TimedOut => FrameError::TimedOut {
                key,
                what: "the peer",
                secs: 0.0,
            },
            WaitError::Interrupted => FrameError::Interrupted,
        }
    }
}

/// How a receiver lays out a channel it creates.
#[derive(Debug, Clone)]
pub struct Config {
    /// Permissions of the channel's objects; the owner needs read and write.
    pub mode: u32,
    pub slot_size: usize,
    pub slot_count: u32,
    /// Every file is verified with MD5, whatever its sender asks.
    pub require_md5: bool,
}

impl Default for Config {
    /// Mode 0600, 8 slots of 1 MiB, MD5 as each sender asks.
    fn default() -> Self {
        Config {
            mode: 0o600,
            slot_size: DEFAULT_SLOT,
            slot_count: DEFAULT_SLOTS,
            require_md5: false,
        }
    }
}

/// What is at a key, as seen without trusting it.
#[derive(Debug)]
pub enum Probe {
    /// No control segment at the key.
    Absent,
    /// A segment is there but it is not (or not yet) a channel we understand.
    Foreign { shmid: i32, why: String },
    /// We may not look at it.
    NoPermission { shmid: i32, uid: u32, mode: u32 },
    /// A shmxfer channel; `alive` says whether its receiver still lives.
    Channel { shmid: i32, info: Info, alive: bool },
    /// A blank segment whose creator lives: a receiver between `shmget` and writing its
    /// magic (`Channel::create` writes it last). Ask again shortly.
    Starting { shmid: i32, pid: i32 },
    /// A blank control segment of our size whose creator is dead and that nobody has
    /// attached, beside a content segment the same process created: a receiver that died
    /// setting up. Safe to reclaim.
    Abandoned { shmid: i32, pid: i32 },
}

/// How long a peer waits for a receiver seen in `Probe::Starting` to finish setting up; it
/// takes milliseconds, so this only bounds a creator that hangs half-way.
pub const STARTUP_GRACE: Duration = Duration::from_secs(2);

/// Looks at the segment at `key` and says what it is, touching nothing.
pub fn probe(key: Key) -> Result<Probe, FrameError> {
    let shm = match Shm::open(key) {
        Ok(s) => s,
        Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(Probe::Absent),
        Err(e) if e.is_permission() => return Ok(no_permission(key)),
        Err(e) => return Err(e.into()),
    };
    let stat = match shm.stat() {
        Ok(s) => s,
        Err(e) if e.is_permission() => return Ok(no_permission(key)),
        Err(e) if e.is_gone() => return Ok(Probe::Absent),
        Err(e) => return Err(e.into()),
    };
    if stat.size < CONTROL_LEN {
        return Ok(Probe::Foreign {
            shmid: shm.id(),
            why: HeaderError::TooSmall { size: stat.size }.to_string(),
        });
    }
    let map = match shm.attach(false) {
        Ok(m) => m,
        Err(e) if e.is_permission() => {
            return Ok(Probe::NoPermission {
                shmid: shm.id(),
                uid: stat.perm.uid,
                mode: stat.perm.mode,
            });
        }
        Err(e) if e.is_gone() => return Ok(Probe::Absent),
        Err(e) => return Err(e.into()),
    };
    let mut head = [0u8; INFO_LEN];
    map.read(INFO_OFF, &mut head)
        .expect("segment is at least CONTROL_LEN");
    let blank = head[..8] == [0; 8];
    match decode_info(&head, map.len()) {
        Err(_) if blank && sysv::process_alive(stat.cpid) => Ok(Probe::Starting {
            shmid: shm.id(),
            pid: stat.cpid,
        }),
        // `stat` was taken before our own attachment.
        Err(_) if blank && stat.nattch == 0 && made_by_a_receiver(key, &stat) => {
            Ok(Probe::Abandoned {
                shmid: shm.id(),
                pid: stat.cpid,
            })
        }
        Ok(info) => {
            let alive = receiver_alive(&info);
            Ok(Probe::Channel {
                shmid: shm.id(),
                info,
                alive,
            })
        }
        Err(e) => Ok(Probe::Foreign {
            shmid: shm.id(),
            why: e.to_string(),
        }),
    }
}

/// Whether a blank control-sized segment at `key` is a receiver's first object: a blank
/// segment alone looks like anybody's (`ipcmk -M`), but a receiver creates the content
/// segment at KEY+1 right after it, so the same creator pid there tells. (A receiver killed
/// between the two `shmget`s leaves a segment only `ipcrm` can tell from a foreign one.)
fn made_by_a_receiver(key: Key, control: &sysv::ShmStat) -> bool {
    control.size == CONTROL_LEN
        && key
            .offset(1)
            .and_then(|k| Shm::open(k).ok())
            .and_then(|s| s.stat().ok())
            .is_some_and(|c| c.cpid == control.cpid && c.perm.cuid == control.perm.cuid)
}

fn no_permission(key: Key) -> Probe {
    let row = sysv::read_table(sysv::Kind::Shm)
        .ok()
        .and_then(|rows| rows.into_iter().find(|r| r.key() == key));
    match row {
        Some(r) => Probe::NoPermission {
            shmid: r.num("shmid") as i32,
            uid: r.num("uid") as u32,
            mode: u32::from_str_radix(r.get("perms").unwrap_or("0"), 8).unwrap_or(0) & 0o777,
        },
        None => Probe::NoPermission {
            shmid: -1,
            uid: u32::MAX,
            mode: 0,
        },
    }
}

/// Whether the channel's receiver lives: its liveness semaphore (zeroed by the kernel when it
/// dies), falling back to its pid where we cannot read the semaphore.
pub fn receiver_alive(info: &Info) -> bool {
    match SemSet::from_id(info.semid).value(sem::RECEIVER) {
        Ok(v) => v > 0,
        Err(e) if e.is_gone() => false,
        Err(_) => sysv::process_alive(info.receiver_pid),
    }
}

/// One object `remove_channel` removed (or, with `dry_run`, would remove), or why it could not.
#[derive(Debug)]
pub struct Removal {
    pub what: String,
    pub result: Result<(), SysvError>,
}

/// Whether we may remove an object with these permissions: IPC_RMID is for its owner, its
/// creator, and root.
fn may_remove(perm: &sysv::Perm) -> bool {
    let me = sysv::geteuid();
    me == 0 || me == perm.uid || me == perm.cuid
}

pub fn removal(
    what: String,
    dry_run: bool,
    stat: sysv::Result<sysv::Perm>,
    remove: impl FnOnce() -> sysv::Result<()>,
) -> Removal {
    let result = match stat {
        // Gone meanwhile (its receiver removed it as it left): what we wanted.
        Err(e) if e.is_gone() => Ok(()),
        Err(e) => Err(e),
        Ok(perm) if dry_run && !may_remove(&perm) => {
            Err(SysvError::denied("IPC_RMID", what.clone()))
        }
        Ok(_) if dry_run => Ok(()),
        Ok(_) => remove().or_else(|e| if e.is_gone() { Ok(()) } else { Err(e) }),
    };
    Removal { what, result }
}

/// Removes a channel's objects (or with `dry_run` only checks that it could): exactly the ones
/// its header names and that sit at the channel's keys, so nothing else is ever touched.
/// Returns one entry per object, with the reason where one could not be removed.
pub fn remove_channel(key: Key, control_shmid: i32, info: &Info, dry_run: bool) -> Vec<Removal> {
    let mut done = Vec::new();
    let sems = SemSet::from_id(info.semid);
    if SemSet::open(key).map(|s| s.id()).ok() == Some(info.semid) {
        done.push(removal(
            format!("semaphore set {} (key {key})", info.semid),
            dry_run,
            sems.stat().map(|s| s.perm),
            || sems.remove(),
        ));
    }
    if let Some(ck) = key.offset(1) {
        let content = Shm::from_id(info.content_shmid);
        if Shm::open(ck).map(|s| s.id()).ok() == Some(info.content_shmid) {
            done.push(removal(
                format!("shared memory {} (key {ck}, content)", info.content_shmid),
                dry_run,
                content.stat().map(|s| s.perm),
                || content.remove(),
            ));
        }
    }
    let control = Shm::from_id(control_shmid);
    done.push(removal(
        format!("shared memory {control_shmid} (key {key}, control)"),
        dry_run,
        control.stat().map(|s| s.perm),
        || control.remove(),
    ));
    done
}

/// Removes what a receiver that died setting up (`Probe::Abandoned`) left at `key`: the blank
/// control segment, the content segment at KEY+1 if the same process created it, and a set
/// of our shape at KEY made by the same user.
pub fn remove_abandoned(key: Key, control_shmid: i32, creator: i32, dry_run: bool) -> Vec<Removal> {
    let mut done = Vec::new();
    let control = Shm::from_id(control_shmid);
    let Ok(cstat) = control.stat() else {
        return done;
    };
    if let Ok(sems) = SemSet::open(key)
        && let Ok(st) = sems.stat()
        && st.nsems == u32::from(sem::COUNT)
        && st.perm.cuid == cstat.perm.cuid
    {
        done.push(removal(
            format!("semaphore set {} (key {key})", sems.id()),
            dry_run,
            Ok(st.perm),
            || sems.remove(),
        ));
    }
    if let Some(ck) = key.offset(1)
        && let Ok(content) = Shm::open(ck)
        && let Ok(st) = content.stat()
        && st.cpid == creator
    {
        done.push(removal(
            format!("shared memory {} (key {ck}, content)", content.id()),
            dry_run,
            Ok(st.perm),
            || content.remove(),
        ));
    }
    done.push(removal(
        format!("shared memory {control_shmid} (key {key}, control)"),
        dry_run,
        Ok(cstat.perm),
        || control.remove(),
    ));
    done
}

/// An attached channel: its three objects, both mappings and the validated header.
#[derive(Debug)]
pub struct Channel {
    pub key: Key,
    pub control_shm: Shm,
    pub content_shm: Shm,
    pub sems: SemSet,
    control: Mapping,
    content: Mapping,
    pub info: Info,
}

impl Channel {
    /// Creates a channel at `key` (the receiver's side). The control segment is created first,
    /// with IPC_EXCL, so it is the key's lock; the magic is written last, so a sender never sees
    /// a half-made channel as ready.
    pub fn create(key: Key, cfg: &Config) -> Result<Channel, FrameError> {
        let content_key = key.offset(1).ok_or(FrameError::Foreign {
            key,
            why: "key+1 overflows".into(),
        })?;
        let ring = cfg.slot_size * cfg.slot_count as usize;
        let control_shm =
            Shm::create(key, CONTROL_LEN, cfg.mode).map_err(|e| create_error(key, e))?;
        let mut undo = runtime::Rollback::default();
        undo.push(move || drop(control_shm.remove()));
        let content_shm =
            Shm::create(content_key, ring, cfg.mode).map_err(|e| create_error(content_key, e))?;
        undo.push(move || drop(content_shm.remove()));
        let sems = SemSet::create(key, sem::COUNT, cfg.mode).map_err(|e| create_error(key, e))?;
        undo.push(move || drop(sems.remove()));
        sems.set(sem::EMPTY, cfg.slot_count as i32)?;
        sems.op(&[SemOp::give(sem::RECEIVER).undo()], None)
            .map_err(|e| FrameError::from_wait(key, e))?;
        let control = control_shm.attach(true)?;
        let content = content_shm.attach(true)?;
        let info = Info {
            slot_size: cfg.slot_size,
            slot_count: cfg.slot_count,
            require_md5: cfg.require_md5,
            receiver_pid: sysv::getpid(),
            content_shmid: content_shm.id(),
            semid: sems.id(),
            mode: cfg.mode,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let head = encode_info(&info);
        control
            .write(8, &head[8..])
            .expect("control segment holds the header");
        std::sync::atomic::fence(Ordering::Release);
        control
            .write(0, &head[..8])
            .expect("control segment holds the header");
        undo.disarm();
        Ok(Channel {
            key,
            control_shm,
            content_shm,
            sems,
            control,
            content,
            info,
        })
    }

    /// Attaches to the channel at `key` (the sender's side), checking every part of it.
    pub fn open(key: Key) -> Result<Channel, FrameError> {
        let (shmid, info) = match probe(key)? {
            Probe::Absent => return Err(FrameError::NoReceiver { key }),
            Probe::Starting { pid, .. } => return Err(FrameError::Starting { key, pid }),
            Probe::Foreign { why, .. } => return Err(FrameError::Foreign { key, why }),
            Probe::NoPermission { uid, mode, .. } => {
                return Err(FrameError::PermissionDenied {
                    key,
                    owner: sysv::user_name(uid),
                    mode,
                });
            }
            Probe::Channel {
                alive: false, info, ..
            } => {
                return Err(FrameError::ReceiverGone {
                    key,
                    pid: info.receiver_pid,
                });
            }
            Probe::Abandoned { pid, .. } => return Err(FrameError::ReceiverGone { key, pid }),
            Probe::Channel { shmid, info, .. } => (shmid, info),
        };
        let control_shm = Shm::from_id(shmid);
        let content_shm = Shm::from_id(info.content_shmid);
        let sems = SemSet::from_id(info.semid);
        let denied = || FrameError::PermissionDenied {
            key,
            owner: sysv::user_name(control_shm.stat().map(|s| s.perm.uid).unwrap_or(u32::MAX)),
            mode: info.mode,
        };
        let gone = |e: SysvError| -> FrameError {
            if e.is_permission() {
                denied()
            } else if e.is_gone() {
                FrameError::Removed { key }
            } else {
                e.into()
            }
        };
        let control = control_shm.attach(true).map_err(gone)?;
        if control.len() < CONTROL_LEN {
            return Err(FrameError::Header {
                key,
                source: HeaderError::TooSmall {
                    size: control.len(),
                },
            });
        }
        let content = content_shm.attach(true).map_err(gone)?;
        // The content segment is found by the id the header names, so confirm it is the one at
        // KEY+1 and big enough for the ring the header describes.
        let content_key_ok = key
            .offset(1)
            .and_then(|k| Shm::open(k).ok())
            .map(|s| s.id())
            == Some(content_shm.id());
        if !content_key_ok || content.len() < info.ring_len() {
            return Err(FrameError::Header {
                key,
                source: HeaderError::Field {
                    field: "content segment",
                    value: content.len() as u64,
                },
            });
        }
        let stat = sems.stat().map_err(gone)?;
        if stat.nsems != u32::from(sem::COUNT) {
            return Err(FrameError::Header {
                key,
                source: HeaderError::Field {
                    field: "semaphore count",
                    value: stat.nsems.into(),
                },
            });
        }
        Ok(Channel {
            key,
            control_shm,
            content_shm,
            sems,
            control,
            content,
            info,
        })
    }

    /// Removes the channel's three objects; existing attachments stay valid until dropped.
    pub fn remove(&self) {
        let _ = self.sems.remove();
        let _ = self.content_shm.remove();
        let _ = self.control_shm.remove();
    }

    fn wait(&self, ops: &[SemOp], timeout: Option<Duration>) -> Result<(), FrameError> {
        self.sems
            .op(ops, timeout)
            .map_err(|e| FrameError::from_wait(self.key, e))
    }

    /// Waits for `ops` in slices, checking between slices that `peer` (a liveness semaphore)
    /// is still up and that we have not been asked to stop.
    /// A sender's waits are not `stoppable`: its main thread decides at the next chunk what
    /// to tell the receiver about a stop, and every wait of a sender ends quickly anyway.
    fn wait_on_peer(&self, ops: &[SemOp], peer: u16, stoppable: bool) -> Result<(), FrameError> {
        loop {
            match self.wait(ops, Some(LIVENESS_SLICE)) {
                Ok(()) => return Ok(()),
                Err(FrameError::TimedOut { .. }) | Err(FrameError::Interrupted) => {}
                Err(e) => return Err(e),
            }
            if stoppable && runtime::stop_requested() {
                return Err(FrameError::Interrupted);
            }
            if self
                .sems
                .value(peer)
                .map_err(|e| FrameError::from_wait(self.key, e.into()))?
                == 0
            {
                return Err(if peer == sem::SENDER {
                    FrameError::SenderGone
                } else {
                    FrameError::ReceiverGone {
                        key: self.key,
                        pid: self.info.receiver_pid,
                    }
                });
            }
        }
    }

    // ---- receiver steps ----

    pub fn set_state(&self, s: State) {
        let _ = self.control.store_u32(STATE_OFF, s as u32);
    }

    /// Opens the gate to one new sender. First the per-session semaphores are reset (no
    /// sender is admitted at this point, so no one else touches them) and the session number
    /// that every message of the next sender must carry is announced.
    pub fn open_gate(&self, session: u32) -> Result<(), FrameError> {
        for (n, v) in [
            (sem::REQ, 0),
            (sem::FULL, 0),
            (sem::ACK, 0),
            (sem::EMPTY, self.info.slot_count as i32),
        ] {
            self.sems
                .set(n, v)
                .map_err(|e| FrameError::from_wait(self.key, e.into()))?;
        }
        self.store_u32(SESSION_OFF, session);
        self.store_u32(FILE_OFF, 0);
        self.store_u32(STATUS_OFF, Status::Pending.code());
        self.store_u64(PROGRESS_OFF, 0);
        self.set_state(State::Idle);
        self.wait(&[SemOp::give(sem::GATE)], None)
    }

    /// Sleeps in the kernel until a sender takes the gate, waking only every `PUBLISHED_CHECK`
    /// to see that the channel is still there to be found; a stop request wakes it at once by
    /// removing the semaphore set.
    pub fn wait_for_sender(&self) -> Result<(), FrameError> {
        loop {
            match self.wait(&[SemOp::zero(sem::GATE)], Some(PUBLISHED_CHECK)) {
                Err(FrameError::TimedOut { .. }) if self.published() => continue,
                Err(FrameError::TimedOut { .. }) => {
                    return Err(FrameError::Removed { key: self.key });
                }
                Err(FrameError::Interrupted) if !runtime::stop_requested() => continue,
                Err(_) if runtime::stop_requested() => return Err(FrameError::Interrupted),
                r => return r,
            }
        }
    }

    /// Whether senders can still find this channel: our segments are the ones at KEY and
    /// KEY+1 (after `ipcrm` they live on for us, attached, but the keys no longer lead to them).
    pub fn published(&self) -> bool {
        let at = |k: Option<Key>| k.and_then(|k| Shm::open(k).ok()).map(|s| s.id());
        at(Some(self.key)) == Some(self.control_shm.id())
            && at(self.key.offset(1)) == Some(self.content_shm.id())
    }

    /// Waits for the admitted sender's next request and decodes it.
    pub fn next_request(&self) -> Result<Result<Request, HeaderError>, FrameError> {
        self.wait_on_peer(&[SemOp::take(sem::REQ)], sem::SENDER, true)?;
        let mut b = [0u8; REQUEST_LEN];
        self.read(REQUEST_OFF, &mut b);
        Ok(decode_request(&b))
    }

    /// Starts file `file` of the session: clears the slot table and the trailer, so nothing an
    /// earlier file left there can pass for this one's, and points the status at the file.
    /// The sender writes neither region before it reads our answer, so no write is lost.
    pub fn begin_file(&self, file: u32) {
        const ZEROS: [u8; SLOT_DESC_LEN * MAX_SLOTS as usize] =
            [0; SLOT_DESC_LEN * MAX_SLOTS as usize];
        self.write(
            SLOTS_OFF,
            &ZEROS[..SLOT_DESC_LEN * self.info.slot_count as usize],
        );
        self.write(TRAILER_OFF, &[0; TRAILER_LEN]);
        self.store_u64(PROGRESS_OFF, 0);
        self.store_u32(STATUS_OFF, Status::Pending.code());
        self.store_u32(FILE_OFF, file);
    }

    /// Publishes an outcome about `file` (0 for a request refused before it became a file)
    /// and wakes the sender.
    pub fn answer(&self, file: u32, o: &Outcome) -> Result<(), FrameError> {
        self.write(RESULT_OFF, &encode_outcome(o));
        self.store_u32(FILE_OFF, file);
        self.store_u32(STATUS_OFF, o.status.code());
        self.wait(&[SemOp::give(sem::ACK)], None)
    }

    /// Marks the current file failed while the sender is still sending, so it stops early.
    pub fn flag_failure(&self, s: Status) {
        self.store_u32(STATUS_OFF, s.code());
    }

    /// Waits for the next filled slot, the `seq`-th of the file, and decodes its descriptor.
    /// Returns the slot (computed here, never read from the segment) and the descriptor.
    pub fn next_desc(&self, seq: u64) -> Result<(usize, Result<Desc, HeaderError>), FrameError> {
        self.wait_on_peer(&[SemOp::take(sem::FULL)], sem::SENDER, true)?;
        let slot = self.slot_of(seq);
        let mut d = [0u8; SLOT_DESC_LEN];
        self.read(SLOTS_OFF + slot * SLOT_DESC_LEN, &mut d);
        Ok((slot, decode_desc(&d)))
    }

    /// Copies `out.len()` bytes of `slot` into our own memory.
    pub fn copy_slot(&self, slot: usize, out: &mut [u8]) {
        self.content
            .read(slot * self.info.slot_size, out)
            .expect("a chunk is never longer than its slot");
    }

    /// The content segment and where `slot` starts in it, for writing a slot out with one copy.
    pub fn slot_source(&self, slot: usize, len: usize) -> sysv::Source<'_> {
        sysv::Source::Shared {
            map: &self.content,
            offset: slot * self.info.slot_size,
            len: len.min(self.info.slot_size),
        }
    }

    /// Hands a drained slot back to the sender and publishes progress.
    pub fn release_slot(&self, done: u64) -> Result<(), FrameError> {
        self.store_u64(PROGRESS_OFF, done);
        self.wait(&[SemOp::give(sem::EMPTY)], None)
    }

    /// The sender's trailer, read after its last descriptor.
    pub fn trailer(&self) -> Trailer {
        let mut b = [0u8; TRAILER_LEN];
        self.read(TRAILER_OFF, &mut b);
        decode_trailer(&b)
    }

    /// After a session: wait until the sender's liveness mark is down (at once after goodbye;
    /// the moment it exits after an abort). Sliced only so a stop request is seen.
    pub fn wait_sender_gone(&self) -> Result<(), FrameError> {
        loop {
            match self.wait(&[SemOp::zero(sem::SENDER)], Some(LIVENESS_SLICE)) {
                Ok(()) => return Ok(()),
                Err(FrameError::TimedOut { .. }) | Err(FrameError::Interrupted)
                    if !runtime::stop_requested() => {}
                Err(_) if runtime::stop_requested() => return Err(FrameError::Interrupted),
                Err(e) => return Err(e),
            }
        }
    }

    // ---- sender steps ----

    /// Takes the gate and marks ourselves alive in one atomic step, waiting up to `deadline`.
    /// Returns the session number our messages must carry.
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
                // The receiver wrote the session before it gave the gate, and changes it only
                // after this session ends.
                Ok(()) => return Ok(self.control.load_u32(SESSION_OFF).unwrap_or(0)),
                Err(FrameError::TimedOut { .. }) | Err(FrameError::Interrupted) => {}
                Err(e) => return Err(e),
            }
            if runtime::stop_requested() {
                return Err(FrameError::Interrupted);
            }
            if !receiver_alive(&self.info) {
                return Err(FrameError::ReceiverGone {
                    key: self.key,
                    pid: self.info.receiver_pid,
                });
            }
        }
    }

    pub fn send_request(&self, r: &Request) -> Result<(), FrameError> {
        self.write(REQUEST_OFF, &encode_request(r));
        self.wait(&[SemOp::give(sem::REQ)], None)
    }

    /// Says goodbye and drops our liveness mark in the same atomic step, so the receiver can
    /// admit the next sender the moment it reads this.
    pub fn send_bye(&self, session: u32) -> Result<(), FrameError> {
        let bye = Request {
            op: Op::Bye,
            sender_pid: sysv::getpid(),
            size: None,
            md5: false,
            meta: None,
            name: Vec::new(),
            session,
        };
        self.write(REQUEST_OFF, &encode_request(&bye));
        self.wait(
            &[SemOp::take(sem::SENDER).undo(), SemOp::give(sem::REQ)],
            None,
        )
    }

    /// Waits for the receiver's answer. Returns the file it is about and the outcome.
    pub fn wait_answer(&self) -> Result<(u32, Result<Outcome, HeaderError>), FrameError> {
        self.wait_on_peer(&[SemOp::take(sem::ACK)], sem::RECEIVER, false)?;
        let mut b = [0u8; RESULT_LEN];
        self.read(RESULT_OFF, &mut b);
        let status = self.control.load_u32(STATUS_OFF).unwrap_or(u32::MAX);
        let file = self.control.load_u32(FILE_OFF).unwrap_or(0);
        Ok((file, decode_outcome(status, &b)))
    }

    /// The receiver's failure verdict on `file` while it is still being sent, if any.
    pub fn receiver_failure(&self, file: u32) -> Option<u32> {
        let status = self.control.load_u32(STATUS_OFF).unwrap_or(0);
        let about = self.control.load_u32(FILE_OFF).unwrap_or(0);
        let pending = [Status::Pending.code(), Status::Accepted.code()];
        (about == file && !pending.contains(&status)).then_some(status)
    }

    /// Waits for a free slot; returns its index in the ring.
    pub fn free_slot(&self, seq: u64) -> Result<usize, FrameError> {
        self.wait_on_peer(&[SemOp::take(sem::EMPTY)], sem::RECEIVER, false)?;
        Ok(self.slot_of(seq))
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
                    if runtime::stop_requested() {
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

    /// Writes the trailer; call before posting the last descriptor.
    pub fn set_trailer(&self, t: &Trailer) {
        self.write(TRAILER_OFF, &encode_trailer(t));
    }

    /// Blocks until the receiver dies or the channel goes away (for a watcher thread).
    pub fn wait_receiver_gone(&self) {
        loop {
            match self.sems.op(&[SemOp::zero(sem::RECEIVER)], None) {
                Err(WaitError::Interrupted) => continue,
                _ => return,
            }
        }
    }

    // ---- field access: every offset below is a constant inside CONTROL_LEN, which the
    // control mapping was checked to hold when the channel was created or opened ----

    fn slot_of(&self, seq: u64) -> usize {
        (seq % u64::from(self.info.slot_count)) as usize
    }
    fn read(&self, off: usize, out: &mut [u8]) {
        self.control
            .read(off, out)
            .expect("fixed field inside the control segment");
    }
    fn write(&self, off: usize, bytes: &[u8]) {
        self.control
            .write(off, bytes)
            .expect("fixed field inside the control segment");
    }
    fn store_u32(&self, off: usize, v: u32) {
        self.control
            .store_u32(off, v)
            .expect("fixed field inside the control segment");
    }
    fn store_u64(&self, off: usize, v: u64) {
        self.control
            .store_u64(off, v)
            .expect("fixed field inside the control segment");
    }
}

/// A read-only look at a channel's live fields for `status`: attaches without writing.
pub struct View {
    control: Mapping,
    pub info: Info,
}

impl View {
    pub fn open(shmid: i32) -> Result<View, FrameError> {
        let control = Shm::from_id(shmid).attach(false)?;
        let mut head = [0u8; INFO_LEN];
        control.read(0, &mut head).map_err(|_| FrameError::Header {
            key: Key(0),
            source: HeaderError::TooSmall {
                size: control.len(),
            },
        })?;
        let info = decode_info(&head, control.len()).map_err(|source| FrameError::Header {
            key: Key(0),
            source,
        })?;
        Ok(View { control, info })
    }
    pub fn state(&self) -> u32 {
        self.control.load_u32(STATE_OFF).unwrap_or(u32::MAX)
    }
    pub fn progress(&self) -> u64 {
        self.control.load_u64(PROGRESS_OFF).unwrap_or(0)
    }
    pub fn request(&self) -> Result<Request, HeaderError> {
        let mut b = [0u8; REQUEST_LEN];
        self.control
            .read(REQUEST_OFF, &mut b)
            .expect("request in bounds");
        decode_request(&b)
    }
}

fn create_error(key: Key, e: SysvError) -> FrameError {
    match e.errno() {
        Some(libc::EEXIST) => FrameError::Foreign {
            key,
            why: "an IPC object already exists at this key and is not part of a shmxfer channel"
                .into(),
        },
        _ if e.is_permission() => FrameError::PermissionDenied {
            key,
            owner: "another user".into(),
            mode: 0,
        },
        _ => FrameError::Sys(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> Info {
        Info {
            slot_size: 1 << 20,
            slot_count: 8,
            require_md5: true,
            receiver_pid: 1234,
            content_shmid: 7,
            semid: 9,
            mode: 0o600,
            created: 1_700_000_000,
        }
    }

    #[test]
    fn info_round_trips() {
        let b = encode_info(&info());
        assert_eq!(decode_info(&b, CONTROL_LEN), Ok(info()));
    }

    #[test]
    fn info_rejects_a_segment_smaller_than_the_header() {
        let b = encode_info(&info());
        assert_eq!(
            decode_info(&b, 100),
            Err(HeaderError::TooSmall { size: 100 })
        );
    }

    #[test]
    fn info_rejects_foreign_magic_and_other_versions() {
        let mut b = encode_info(&info());
        b[0] = b'X';
        assert_eq!(decode_info(&b, CONTROL_LEN), Err(HeaderError::NotShmxfer));
        let mut b = encode_info(&info());
        b[8..12].copy_from_slice(&1u32.to_ne_bytes());
        assert_eq!(
            decode_info(&b, CONTROL_LEN),
            Err(HeaderError::Version { found: 1 })
        );
    }

    #[test]
    fn info_rejects_slot_layouts_out_of_range() {
        for (off, v) in [
            (16usize, 0u64),
            (16, (MAX_SLOT as u64) + 1),
            (24, 0),
            (24, 1000),
        ] {
            let mut b = encode_info(&info());
            if off == 16 {
                b[16..24].copy_from_slice(&v.to_ne_bytes());
            } else {
                b[24..28].copy_from_slice(&(v as u32).to_ne_bytes());
            }
            assert!(
                matches!(decode_info(&b, CONTROL_LEN), Err(HeaderError::Field { .. })),
                "{off}={v}"
            );
        }
    }

    #[test]
    fn request_round_trips_with_and_without_size_and_meta() {
        let r = Request {
            op: Op::File,
            sender_pid: 42,
            size: Some(0),
            md5: true,
            meta: Some(Meta {
                mode: 0o644,
                mtime_sec: -5,
                mtime_nsec: 999_999_999,
            }),
            name: b"photo.jpg".to_vec(),
            session: 77,
        };
        assert_eq!(decode_request(&encode_request(&r)), Ok(r.clone()));
        let s = Request {
            size: None,
            meta: None,
            md5: false,
            op: Op::Bye,
            ..r
        };
        assert_eq!(decode_request(&encode_request(&s)), Ok(s));
    }

    #[test]
    fn request_rejects_overlong_names_and_unknown_ops() {
        let r = Request {
            op: Op::File,
            sender_pid: 1,
            size: None,
            md5: false,
            meta: None,
            name: vec![b'a'; 10],
            session: 1,
        };
        let mut b = encode_request(&r);
        b[36..40].copy_from_slice(&10_000u32.to_ne_bytes());
        assert_eq!(
            decode_request(&b),
            Err(HeaderError::Field {
                field: "name length",
                value: 10_000
            })
        );
        let mut b = encode_request(&r);
        b[4..8].copy_from_slice(&7u32.to_ne_bytes());
        assert!(decode_request(&b).is_err());
    }

    #[test]
    fn encoding_truncates_names_to_the_field() {
        let r = Request {
            op: Op::File,
            sender_pid: 1,
            size: None,
            md5: false,
            meta: None,
            name: vec![b'x'; 1000],
            session: 1,
        };
        assert_eq!(
            decode_request(&encode_request(&r)).unwrap().name.len(),
            MAX_NAME
        );
    }

    #[test]
    fn descriptors_carry_their_file_and_a_length_is_checked_against_the_slot() {
        let d = Desc {
            len: 4097,
            kind: DescKind::Last,
            session: 3,
            file: 9,
            index: 1 << 40,
        };
        let back = decode_desc(&encode_desc(&d)).unwrap();
        assert_eq!(back, d);
        assert_eq!(back.len_in(4096), None);
        assert_eq!(back.len_in(8192), Some(4097));
        let a = Desc {
            len: 0,
            kind: DescKind::Abort(Abort::ReadError as u32),
            ..d
        };
        assert_eq!(decode_desc(&encode_desc(&a)), Ok(a));
    }

    #[test]
    fn descriptors_with_unknown_flags_or_an_abort_with_data_are_refused() {
        let d = Desc {
            len: 10,
            kind: DescKind::Data,
            session: 1,
            file: 1,
            index: 0,
        };
        let mut b = encode_desc(&d);
        b[8..12].copy_from_slice(&4u32.to_ne_bytes());
        assert!(decode_desc(&b).is_err());
        b[8..12].copy_from_slice(&DESC_ABORT.to_ne_bytes());
        assert!(decode_desc(&b).is_err());
        assert!(decode_desc(&b[..10]).is_err());
    }

    #[test]
    fn trailer_round_trips() {
        let t = Trailer {
            session: 7,
            file: 2,
            bytes: u64::MAX - 1,
            md5: [5; 16],
        };
        assert_eq!(decode_trailer(&encode_trailer(&t)), t);
    }

    #[test]
    fn outcome_round_trips_and_rejects_unknown_status() {
        let o = Outcome {
            status: Status::Md5Mismatch,
            errno: 28,
            name: b"file01.jpg".to_vec(),
            md5: [7; 16],
            bytes: 99,
        };
        let b = encode_outcome(&o);
        assert_eq!(decode_outcome(Status::Md5Mismatch.code(), &b), Ok(o));
        assert!(decode_outcome(99, &b).is_err());
    }
}
