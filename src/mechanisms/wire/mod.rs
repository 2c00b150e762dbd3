//! The wire format of a channel: the layout of its three segments and a pure `encode_*` /
//! `decode_*` pair for each region (docs/protocol.md is the contract; change both together).
//! Nothing here touches IPC, so all of it is unit- and property-tested on plain bytes.
//!
//! Each segment has one writer, and the kernel enforces it: the receiver's control segment
//! (at KEY, writable by its owner only), each sender's own segment (private, writable by its
//! creator only), and between them the small rendezvous (at KEY+1, writable by all the channel
//! lets in), which holds only the admission ticket and the admitted sender's segment id.
//!
//! | segment | offset | region   |
//! |---------|--------|----------|
//! | control | 0      | info (once, magic last) |
//! | control | 128    | response: state, session, counters, the admitted sender |
//! | control | 14336  | answers, one per lane |
//! | sender  | 0      | the sender's header and counters |
//! | sender  | 1024   | slots (one 32-byte descriptor per content slot) |
//! | sender  | 9216   | trailers, one per lane |
//! | sender  | 10240  | requests, one per lane |
//! | sender  | 20480  | paths, one per lane |
//! | sender  | 53248  | the ring of content slots |
//!
//! A sender has up to [`LANES`] files in flight (it posts files while the receiver still
//! commits earlier ones), so everything about one file lives in its own lane ([`Lane`]).

use crate::sysv::Key;

/// The first 8 bytes of every channel's control segment, written last by its receiver.
pub(crate) const MAGIC: [u8; 8] = *b"SHMXFER\0";
/// Version 2 tagged every per-file message with its session and file; version 3 added the
/// channel's name (in the info region) and relative paths (the path region); version 4 numbers
/// files in the request and sends a file's chunks without waiting to hear it accepted; version 5
/// lets a sender post files before the earlier ones are answered (per-file regions in lanes);
/// version 6 admits exactly one sender per session, whatever the gate's value (the admission
/// ticket); version 7 gives each party memory only it can write (the receiver's control
/// segment, each sender's own segment) and makes the semaphores doorbells over counters. See
/// docs/protocol.md.
pub(crate) const VERSION: u32 = 7;
/// The first key of the per-user default channels: user `uid`'s is
/// `USER_KEYS + 2 × (uid mod 2²³)` ([`user_key`]). Keys are even, so a channel's two keys (K for
/// the control segment and the semaphores, K+1 for the content) are its own; distinct for every
/// uid below 8,388,608; never 42 or 44 (the original system's).
pub(crate) const USER_KEYS: u32 = 0x5300_0000;
/// The first key of named channels: a name's is `NAMED_KEYS + 2 × (FNV-1a₃₂(name) mod 2²³)`
/// ([`named_key`]), even like the users' and in a range of its own.
pub(crate) const NAMED_KEYS: u32 = 0x4e00_0000;
/// The longest channel name.
pub(crate) const MAX_CHANNEL_NAME: usize = 64;

/// User `uid`'s default channel key (see [`USER_KEYS`]).
pub(crate) fn user_key(uid: u32) -> Key {
    Key(USER_KEYS + 2 * (uid & 0x7f_ffff))
}

/// The key a channel name maps to (see [`NAMED_KEYS`]). Two names may share a key: the
/// receiver records its name in the header, and a peer asking for another name is refused.
pub(crate) fn named_key(name: &str) -> Key {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    Key(NAMED_KEYS + 2 * (h & 0x7f_ffff))
}

/// A channel as its user names it: a key, and the name it came from if it came from one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The key.
    pub key: Key,
    /// The channel's name (the receiver records it; a sender checks it).
    pub name: Option<String>,
}

impl Address {
    /// The channel named `name`, at its key: `0x4e000000 + 2 × (FNV-1a₃₂(name) mod 2²³)`
    /// (docs/protocol.md, "Objects").
    pub fn named(name: &str) -> Address {
        Address {
            key: named_key(name),
            name: Some(name.to_string()),
        }
    }
}

impl Address {
    /// User `uid`'s own channel, the one `shmxfer` uses without `--key`:
    /// `0x53000000 + 2 × (uid mod 2²³)`, so two users' default channels never meet.
    pub fn of_user(uid: u32) -> Address {
        Address::from(user_key(uid))
    }
}

impl From<Key> for Address {
    fn from(key: Key) -> Address {
        Address { key, name: None }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(n) => write!(f, "\"{n}\" (key {})", self.key),
            None => write!(f, "{}", self.key),
        }
    }
}
/// The control segment's size: a segment at a channel's key of any other size is not one.
pub(crate) const CONTROL_LEN: usize = 53248;
/// The longest file name a request or an outcome carries (Linux's NAME_MAX).
pub(crate) const MAX_NAME: usize = 255;
/// The smallest content slot.
pub(crate) const MIN_SLOT: usize = 4096;
/// The largest content slot.
pub(crate) const MAX_SLOT: usize = 256 << 20;
/// The most slots a ring may have (the slot table's capacity).
pub(crate) const MAX_SLOTS: u32 = 256;
/// The default slot size: 1 MiB.
pub(crate) const DEFAULT_SLOT: usize = 1 << 20;
/// The default number of slots.
pub(crate) const DEFAULT_SLOTS: u32 = 8;
/// Where the info region starts.
pub(crate) const INFO_OFF: usize = 0;
/// The info region's length.
pub(crate) const INFO_LEN: usize = 128;
/// The request region's length.
pub(crate) const REQUEST_LEN: usize = 304;
/// The trailer's length.
pub(crate) const TRAILER_LEN: usize = 32;
/// Where the receiver's response region starts.
pub(crate) const RESPONSE_OFF: usize = 128;
/// The channel's [`State`] (u32).
pub(crate) const STATE_OFF: usize = RESPONSE_OFF;
/// The session the receiver admits next (written before the gate opens).
pub(crate) const SESSION_OFF: usize = RESPONSE_OFF + 4;
/// The file the receiver is taking (0: none yet this session), for `status`.
pub(crate) const CURRENT_OFF: usize = RESPONSE_OFF + 8;
/// The admitted sender's segment id (i32; -1: none, or refused), once the receiver checked it.
pub(crate) const ADMITTED_OFF: usize = RESPONSE_OFF + 12;
/// [`ADMITTED_OFF`] before the receiver has looked at a sender's segment this session.
pub(crate) const NOT_ADMITTED: i32 = -2;
/// [`ADMITTED_OFF`] when the receiver refused the segment named at the rendezvous.
pub(crate) const REFUSED: i32 = -1;
/// Bytes the receiver has taken of the current file (u64), for `status`.
pub(crate) const PROGRESS_OFF: usize = RESPONSE_OFF + 16;
/// The admitted sender's uid: its segment's creator (`shm_perm.cuid`), which no one can forge.
pub(crate) const SENDER_UID_OFF: usize = RESPONSE_OFF + 24;
/// Answers given this session (u32): the truth behind the ACK doorbell.
pub(crate) const ANSWERED_OFF: usize = RESPONSE_OFF + 28;
/// Slots drained and handed back this session (u64): the truth behind the EMPTY doorbell.
pub(crate) const CONSUMED_OFF: usize = RESPONSE_OFF + 32;
/// The file the receiver is committing (u32): stored before it checks the sender's
/// withdrawal, so that of the two, one sees the other (see [`WITHDRAWN_OFF`]).
pub(crate) const COMMITTING_OFF: usize = RESPONSE_OFF + 40;
/// The admitted sender's pid as the receiver's namespace sees it (its segment's `shm_cpid`).
pub(crate) const SENDER_PID_OFF: usize = RESPONSE_OFF + 44;
/// In the control segment: a copy of the request being taken, for `status` (which cannot
/// read the sender's segment).
pub(crate) const SHOWN_REQUEST_OFF: usize = 1024;
/// In the control segment: a copy of the path region of the request being taken.
pub(crate) const SHOWN_PATH_OFF: usize = 20480;
/// A sender segment the receiver kept attached after its session (i32; -1: none), for the next
/// sender of the same user to take up again: its pages are already the receiver's to read, and
/// a new one's cost a page fault and a page's zeroing each, on every send.
pub(crate) const SPARE_OFF: usize = RESPONSE_OFF + 48;
/// That segment's creator's uid: only a sender of that uid may take it up.
pub(crate) const SPARE_UID_OFF: usize = RESPONSE_OFF + 52;
/// The outcome's length (in an answer, after its status and file number).
pub(crate) const RESULT_LEN: usize = 296;

/// The rendezvous segment's size: the only memory of a channel that senders write in common.
pub(crate) const RDV_LEN: usize = 4096;
/// In the rendezvous: the admission ticket, the next session's number while the gate is open
/// and nobody has claimed it, 0 once a sender took it (with an atomic swap: of two senders let
/// through the gate at once, only one gets the number).
pub(crate) const TICKET_OFF: usize = 0;
/// In the rendezvous: the segment id of the sender that took the ticket (i32), written after.
pub(crate) const SEGMENT_OFF: usize = 4;

/// The first 8 bytes of a sender's own segment.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"SHMXSND\0";
/// In a sender's segment: the version it speaks (u32, [`VERSION`]).
pub(crate) const SEG_VERSION_OFF: usize = 8;
/// In a sender's segment: the control segment id of the channel it is for (i32): a receiver
/// never reads a segment made for another channel.
pub(crate) const SEG_CHANNEL_OFF: usize = 12;
/// In a sender's segment: the session it was admitted to (u32), written after it took the
/// ticket; the receiver admits the segment only if it names the session.
pub(crate) const SEG_SESSION_OFF: usize = 16;
/// In a sender's segment: every file numbered this or more is withdrawn (u32; 0: none).
/// The sender stores it, fences, then reads [`COMMITTING_OFF`]; the receiver stores that,
/// fences, then reads this: so either the sender learns the file is being committed, or the
/// receiver learns it is withdrawn and drops it.
pub(crate) const WITHDRAWN_OFF: usize = 20;
/// In a sender's segment: requests posted this session (u32), the truth behind REQ.
pub(crate) const REQUESTS_OFF: usize = 24;
/// In a sender's segment: descriptors posted this session (u64), the truth behind FULL.
pub(crate) const POSTED_OFF: usize = 32;
/// Where a sender's ring of content slots starts in its segment (page-aligned).
pub(crate) const RING_OFF: usize = 53248;
/// Where the slot table (one descriptor per content slot) starts.
pub(crate) const SLOTS_OFF: usize = 1024;
/// The path region's length: a 4-byte length, then the path.
pub(crate) const PATH_LEN: usize = 4096;
/// The longest relative path a request carries.
pub(crate) const MAX_PATH: usize = PATH_LEN - 4;
/// How many files a sender may have in flight: posted, their answer still to come.
pub(crate) const LANES: u32 = 8;

/// The copy of the per-file regions (request, path, trailer, answer) that a file uses: file F
/// of a session uses lane F mod [`LANES`]. A sender reads file F's answer before it posts file
/// F + LANES, which reuses F's lane, so no lane is written while its reader still needs it. A
/// goodbye uses the lane of the file that would have come next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lane(usize);

impl Lane {
    /// The lane file `file` uses.
    pub(crate) fn of(file: u32) -> Lane {
        Lane((file % LANES) as usize)
    }
    /// Where this lane's request starts.
    pub(crate) fn request_off(self) -> usize {
        10240 + 512 * self.0
    }
    /// Where this lane's path region starts.
    pub(crate) fn path_off(self) -> usize {
        20480 + PATH_LEN * self.0
    }
    /// Where this lane's trailer starts.
    pub(crate) fn trailer_off(self) -> usize {
        9216 + TRAILER_LEN * self.0
    }
    /// Where this lane's answer starts: its status (u32), the file it is about (u32), then the
    /// outcome.
    pub(crate) fn answer_off(self) -> usize {
        14336 + 512 * self.0
    }
}

/// One slot descriptor's length.
pub(crate) const SLOT_DESC_LEN: usize = 32;

/// Semaphore numbers in the channel's set.
pub(crate) mod sem {
    /// 1 while the receiver admits a new sender; a sender takes it to start its session.
    pub(crate) const GATE: u16 = 0;
    /// The sender has written a request (a file, or goodbye).
    pub(crate) const REQ: u16 = 1;
    /// Filled slots.
    pub(crate) const FULL: u16 = 2;
    /// Free slots.
    pub(crate) const EMPTY: u16 = 3;
    /// The receiver has answered: a file's outcome, or a malformed request refused.
    pub(crate) const ACK: u16 = 4;
    /// 1 while the receiver lives: taken with SEM_UNDO, so the kernel zeroes it at its death.
    pub(crate) const RECEIVER: u16 = 5;
    /// 1 while an admitted sender lives, likewise.
    pub(crate) const SENDER: u16 = 6;
    /// Semaphores in a channel's set.
    pub(crate) const COUNT: u16 = 7;
}

/// Why a header could not be accepted. Each names what was wrong, for `status` and errors.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("segment of {size} bytes is too small for a shmxfer header ({CONTROL_LEN} bytes)")]
    /// The segment or region is too small to hold what it should.
    TooSmall {
        /// The size found.
        size: usize,
    },
    #[error("segment does not start with shmxfer's magic")]
    /// The magic is not there (yet).
    NotShmxfer,
    #[error("segment has shmxfer protocol version {found}; this shmxfer speaks version {VERSION}")]
    /// Another protocol version.
    Version {
        /// The version found.
        found: u32,
    },
    #[error("invalid {field} in header: {value}")]
    /// A field holds a value out of range.
    Field {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
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

mod answer;
mod info;
mod request;
mod ring;

pub use answer::Status;
pub(crate) use answer::*;
pub(crate) use info::*;
pub use request::Meta;
pub(crate) use request::*;
pub(crate) use ring::*;

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers on the wire are the contract (docs/protocol.md), not declaration order.
    #[test]
    fn every_wire_code_has_the_value_the_protocol_gives_it() {
        let statuses = [
            (Status::Pending, 0),
            (Status::Accepted, 1),
            (Status::Committed, 2),
            (Status::CannotCreate, 3),
            (Status::WriteFailed, 4),
            (Status::Md5Mismatch, 5),
            (Status::Aborted, 6),
            (Status::BadRequest, 7),
            (Status::LengthMismatch, 8),
            (Status::Closed, 9),
            (Status::BadPath, 10),
            (Status::Withdrawn, 11),
            (Status::NotAllowed, 12),
        ];
        for (s, code) in statuses {
            assert_eq!(s.code(), code, "{s:?}");
            assert_eq!(Status::from_code(code), Some(s));
        }
        assert_eq!(Status::from_code(13), None);
        let aborts = [
            (Abort::Interrupted, 1),
            (Abort::ReadError, 2),
            (Abort::FileChanged, 3),
            (Abort::ReceiverFailed, 4),
        ];
        for (a, code) in aborts {
            assert_eq!(a as u32, code, "{a:?}");
            assert_eq!(Abort::from_code(code), Some(a));
        }
        assert_eq!(Abort::from_code(0), None);
        assert_eq!((Op::File as u32, Op::Bye as u32), (1, 2));
        let states = [
            (State::Starting, 0),
            (State::Idle, 1),
            (State::Busy, 2),
            (State::Stopping, 3),
        ];
        for (st, code) in states {
            assert_eq!(st as u32, code, "{st:?}");
        }
        assert_eq!((DESC_LAST, DESC_ABORT), (1, 2));
    }

    #[test]
    fn every_region_of_every_segment_lies_apart_inside_it() {
        let apart = |mut regions: Vec<(usize, usize)>, end: usize| {
            regions.sort();
            for w in regions.windows(2) {
                assert!(w[0].0 + w[0].1 <= w[1].0, "{:?} overlaps {:?}", w[0], w[1]);
            }
            let (last, len) = regions[regions.len() - 1];
            assert!(last + len <= end, "{last}+{len} passes {end}");
        };
        // The receiver's control segment.
        let mut control = vec![
            (0, INFO_LEN),
            (RESPONSE_OFF, SPARE_UID_OFF + 4 - RESPONSE_OFF),
            (SHOWN_REQUEST_OFF, REQUEST_LEN),
            (SHOWN_PATH_OFF, PATH_LEN),
        ];
        // A sender's own segment, up to its ring.
        let mut sender = vec![
            (0, 8),
            (SEG_VERSION_OFF, 4),
            (SEG_CHANNEL_OFF, 4),
            (SEG_SESSION_OFF, 4),
            (WITHDRAWN_OFF, 4),
            (REQUESTS_OFF, 4),
            (POSTED_OFF, 8),
            (SLOTS_OFF, SLOT_DESC_LEN * MAX_SLOTS as usize),
        ];
        for f in 0..LANES {
            let l = Lane::of(f);
            sender.push((l.request_off(), REQUEST_LEN));
            sender.push((l.path_off(), PATH_LEN));
            sender.push((l.trailer_off(), TRAILER_LEN));
            control.push((l.answer_off(), 8 + RESULT_LEN));
        }
        apart(control, CONTROL_LEN);
        apart(sender, RING_OFF);
        apart(vec![(TICKET_OFF, 4), (SEGMENT_OFF, 4)], RDV_LEN);
        assert_eq!(RING_OFF % 4096, 0, "the ring starts on a page");
        // Files take the lanes in turn, and the lane after the last is the first again.
        assert_eq!(Lane::of(1), Lane::of(1 + LANES));
        assert_ne!(Lane::of(1), Lane::of(2));
    }

    fn info() -> Info {
        Info {
            slot_size: 1 << 20,
            slot_count: 8,
            require_md5: true,
            receiver_pid: 1234,
            rendezvous_shmid: 7,
            semid: 9,
            mode: 0o600,
            created: 1_700_000_000,
            name: b"camera".to_vec(),
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)] // 70,000 keys: minutes under Miri, for safe code.
    fn default_keys_are_distinct_even_and_clear_of_the_legacy_keys() {
        let keys: std::collections::HashSet<u32> = (0..70_000).map(|uid| user_key(uid).0).collect();
        assert_eq!(keys.len(), 70_000);
        assert!(keys.iter().all(|k| k % 2 == 0 && *k != 42 && *k != 44));
        assert_eq!(user_key(0), Key(0x5300_0000));
        assert_eq!(user_key(65534), Key(0x5300_0000 + 131_068));
        // No user's K+1 is another's K, and no named key is a user's.
        assert!(keys.iter().all(|k| !keys.contains(&(k + 1))));
        assert!(!keys.contains(&named_key("camera").0));
    }

    #[test]
    fn names_hash_to_fixed_even_keys() {
        // FNV-1a of "camera" is 0x9ebe984e: the key docs/protocol.md works out.
        assert_eq!(named_key("camera"), Key(0x4e7d_309c));
        assert_eq!(named_key("a").0 % 2, 0);
        assert_ne!(named_key("camera"), named_key("camera2"));
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
            file: 3,
        };
        assert_eq!(decode_request(&encode_request(&r), &[]), Ok(r.clone()));
        let s = Request {
            size: None,
            meta: None,
            md5: false,
            op: Op::Bye,
            ..r
        };
        assert_eq!(decode_request(&encode_request(&s), &[]), Ok(s));
    }

    #[test]
    fn a_relative_path_travels_whole_in_the_path_region() {
        let r = Request {
            op: Op::File,
            sender_pid: 1,
            size: Some(3),
            md5: false,
            meta: None,
            name: b"photos/2026/a b.jpg".to_vec(),
            session: 1,
            file: 1,
        };
        let req = encode_request(&r);
        let path = encode_path(&r);
        assert_eq!(&req[40..47], b"a b.jpg");
        assert_eq!(decode_request(&req, &path), Ok(r.clone()));
        // A path length past the region is refused, not read.
        let mut bad = path.clone();
        bad[..4].copy_from_slice(&5000u32.to_ne_bytes());
        assert!(decode_request(&req, &bad).is_err());
        assert!(
            encode_path(&Request {
                name: b"plain".to_vec(),
                ..r
            })
            .is_empty()
        );
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
            file: 1,
        };
        let mut b = encode_request(&r);
        b[36..40].copy_from_slice(&10_000u32.to_ne_bytes());
        assert_eq!(
            decode_request(&b, &[]),
            Err(HeaderError::Field {
                field: "name length",
                value: 10_000
            })
        );
        let mut b = encode_request(&r);
        b[4..8].copy_from_slice(&7u32.to_ne_bytes());
        assert!(decode_request(&b, &[]).is_err());
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
            file: 1,
        };
        assert_eq!(
            decode_request(&encode_request(&r), &[]).unwrap().name.len(),
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
            segment: 42,
            sender_uid: 65534,
        };
        let b = encode_outcome(&o);
        assert_eq!(decode_outcome(Status::Md5Mismatch.code(), &b), Ok(o));
        assert!(decode_outcome(99, &b).is_err());
    }
}
