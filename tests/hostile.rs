//! A sender that writes garbage into the control segment must not make the receiver panic,
//! read or write out of bounds, write outside DIR, or stop serving.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use shmxfer::frame::{self, Desc, DescKind, Lane, Meta, Op, Request, Status, sem};
use shmxfer::sysv::{Key, Mapping, SemOp, SemSet, Shm};

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    // Each decoder is fed valid encodings with up to four bytes overwritten (none, a fifth of
    // the time: then it must decode to what was encoded), so the bounds checked on what it
    // accepts are reached, not only "no panic" on noise.

    #[test]
    fn info_decoding_bounds_what_it_accepts(info in info(), size in prop_oneof![Just(frame::CONTROL_LEN), 0usize..70_000], muts in mutations(frame::INFO_LEN)) {
        let mut b = frame::encode_info(&info);
        let clean = mutate(&mut b, &muts);
        match frame::decode_info(&b, size) {
            Ok(i) => {
                prop_assert!(size >= frame::CONTROL_LEN);
                prop_assert!((frame::MIN_SLOT..=frame::MAX_SLOT).contains(&i.slot_size));
                prop_assert!((1..=frame::MAX_SLOTS).contains(&i.slot_count));
                prop_assert!(i.name.len() <= shmxfer::wire::MAX_CHANNEL_NAME);
                if clean {
                    prop_assert_eq!(i, info);
                }
            }
            Err(_) => prop_assert!(!clean || size < frame::CONTROL_LEN),
        }
    }

    #[test]
    fn request_decoding_bounds_names_and_metadata(r in request(), muts in mutations(frame::REQUEST_LEN)) {
        let mut b = frame::encode_request(&r);
        let clean = mutate(&mut b, &muts);
        match frame::decode_request(&b, &frame::encode_path(&r)) {
            Ok(d) => {
                prop_assert!(d.name.len() <= frame::MAX_PATH);
                prop_assert!(d.name.split(|&c| c == b'/').all(|c| c.len() <= frame::MAX_NAME));
                prop_assert!(d.meta.is_none_or(|m| m.mode <= 0o7777 && m.mtime_nsec < 1_000_000_000));
                if clean {
                    prop_assert_eq!(d, r);
                }
            }
            Err(e) => prop_assert!(!clean, "{e}"),
        }
    }

    #[test]
    fn chunk_decoding_never_yields_more_than_a_slot(d in desc(), slot in 4096usize..(1 << 20), muts in mutations(frame::SLOT_DESC_LEN)) {
        let mut b = frame::encode_desc(&d);
        let clean = mutate(&mut b, &muts);
        match frame::decode_desc(&b) {
            Ok(c) => {
                prop_assert!(c.len_in(slot).is_none_or(|n| n <= slot));
                prop_assert!(!matches!(c.kind, DescKind::Abort(_)) || c.len == 0);
                if clean {
                    prop_assert_eq!(c, d);
                }
            }
            Err(e) => prop_assert!(!clean, "{e}"),
        }
    }

    #[test]
    fn outcome_decoding_bounds_names(o in outcome(), muts in mutations(frame::RESULT_LEN), status_noise in prop_oneof![Just(None), any::<u32>().prop_map(Some)]) {
        let mut b = frame::encode_outcome(&o);
        let clean = mutate(&mut b, &muts) && status_noise.is_none();
        match frame::decode_outcome(status_noise.unwrap_or(o.status.code()), &b) {
            Ok(d) => {
                prop_assert!(d.name.len() <= frame::MAX_NAME);
                if clean {
                    prop_assert_eq!(d, o);
                }
            }
            Err(e) => prop_assert!(!clean, "{e}"),
        }
    }

    #[test]
    fn a_kept_name_is_always_one_safe_component(raw in proptest::collection::vec(any::<u8>(), 0..10_000)) {
        if let Some(n) = shmxfer::output::safe_name(&raw) {
            use std::os::unix::ffi::OsStrExt;
            let b = n.as_bytes();
            prop_assert!(!b.is_empty() && b.len() <= frame::MAX_NAME);
            prop_assert!(!b.contains(&b'/') && !b.contains(&0));
            prop_assert!(!b.iter().any(|&c| c < 0x20 || c == 0x7f), "a control character on disk");
            prop_assert!(b != b"." && b != b"..");
            prop_assert!(shmxfer::output::partial_owner(b).is_none());
            let dir = Path::new("/some/dir");
            let joined = dir.join(&n);
            prop_assert_eq!(joined.parent(), Some(dir));
            for k in 1..3 {
                let m = shmxfer::output::numbered(&n, k);
                prop_assert!(!m.as_bytes().contains(&b'/') && m.len() <= frame::MAX_NAME);
            }
        }
    }

    #[test]
    fn valid_requests_survive_encoding(name in proptest::collection::vec(any::<u8>(), 0..255), size in proptest::option::of(0u64..u64::MAX), md5 in any::<bool>()) {
        let r = Request { op: Op::File, sender_pid: 7, size, md5, meta: Some(Meta { mode: 0o644, mtime_sec: 1, mtime_nsec: 2 }), name, session: 9, file: 4 };
        prop_assert_eq!(frame::decode_request(&frame::encode_request(&r), &frame::encode_path(&r)), Ok(r));
    }
}

/// Up to four (offset, byte) overwrites inside `len` bytes; none a fifth of the time.
fn mutations(len: usize) -> impl Strategy<Value = Vec<(usize, u8)>> {
    prop_oneof![
        1 => Just(Vec::new()),
        4 => proptest::collection::vec((0..len, any::<u8>()), 1..=4),
    ]
}

/// Applies `muts`; returns whether the bytes are still the valid encoding.
fn mutate(b: &mut [u8], muts: &[(usize, u8)]) -> bool {
    let before = b.to_vec();
    for &(i, v) in muts {
        b[i] = v;
    }
    *b == before[..]
}

fn info() -> impl Strategy<Value = frame::Info> {
    (
        frame::MIN_SLOT..=frame::MAX_SLOT,
        1..=frame::MAX_SLOTS,
        any::<bool>(),
        (
            any::<i32>(),
            any::<i32>(),
            any::<i32>(),
            0u32..0o1000,
            any::<u64>(),
        ),
        proptest::collection::vec(any::<u8>(), 0..=shmxfer::wire::MAX_CHANNEL_NAME),
    )
        .prop_map(
            |(
                slot_size,
                slot_count,
                require_md5,
                (receiver_pid, rendezvous_shmid, semid, mode, created),
                name,
            )| frame::Info {
                slot_size,
                slot_count,
                require_md5,
                receiver_pid,
                rendezvous_shmid,
                semid,
                mode,
                created,
                name,
            },
        )
}

fn request() -> impl Strategy<Value = Request> {
    (
        proptest::collection::vec(
            any::<u8>().prop_filter("no NUL or /", |c| *c != 0 && *c != b'/'),
            1..=255,
        ),
        proptest::option::of(0u64..u64::MAX),
        any::<bool>(),
        proptest::option::of((0u32..=0o7777, any::<i64>(), 0u32..1_000_000_000)),
        (any::<i32>(), any::<u32>(), any::<u32>()),
    )
        .prop_map(
            |(name, size, md5, meta, (sender_pid, session, file))| Request {
                op: Op::File,
                sender_pid,
                size,
                md5,
                meta: meta.map(|(mode, mtime_sec, mtime_nsec)| Meta {
                    mode,
                    mtime_sec,
                    mtime_nsec,
                }),
                name,
                session,
                file,
            },
        )
}

fn desc() -> impl Strategy<Value = Desc> {
    (
        prop_oneof![
            Just(DescKind::Data),
            Just(DescKind::Last),
            (1u32..=4).prop_map(DescKind::Abort)
        ],
        0u64..(1 << 21),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
    )
        .prop_map(|(kind, len, session, file, index)| Desc {
            len: if matches!(kind, DescKind::Abort(_)) {
                0
            } else {
                len
            },
            kind,
            session,
            file,
            index,
        })
}

fn outcome() -> impl Strategy<Value = frame::Outcome> {
    (
        (0u32..=12).prop_map(|c| Status::from_code(c).unwrap()),
        any::<i32>(),
        proptest::collection::vec(any::<u8>(), 0..=frame::MAX_NAME),
        any::<[u8; 16]>(),
        any::<u64>(),
        any::<(i32, u32)>(),
    )
        .prop_map(
            |(status, errno, name, md5, bytes, (segment, sender_uid))| frame::Outcome {
                status,
                errno,
                name,
                md5,
                bytes,
                segment,
                sender_uid,
            },
        )
}

/// A sender written against the raw segments, free to lie: it makes its own segment as the
/// protocol's senders do (private, written by it alone) and says anything in it.
struct Hostile {
    sems: SemSet,
    ctl: Mapping,
    seg: Mapping,
    _shm: Shm,
    slot_size: usize,
    slots: usize,
    session: u32,
    /// The number of our last request (every file request counts, as the receiver counts).
    file: std::cell::Cell<u32>,
    /// The number due when we last posted a request: where the receiver reads it and answers.
    due: std::cell::Cell<u32>,
    /// Our place in the ring, counted from the session's start, as the receiver counts.
    ring: std::cell::Cell<u64>,
}

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

impl Hostile {
    fn connect(key: Key) -> Hostile {
        let sems = SemSet::open(key).unwrap();
        let ctl_shm = Shm::open(key).unwrap();
        let ctl = ctl_shm.attach(false).unwrap();
        let rdv = Shm::open(Key(key.0 + 1)).unwrap().attach(true).unwrap();
        let mut head = [0u8; frame::INFO_LEN];
        ctl.read(0, &mut head).unwrap();
        let info = frame::decode_info(&head, ctl.len()).unwrap();
        let shm = Shm::create_private(info.segment_len(), 0o600).unwrap();
        let seg = shm.attach(true).unwrap();
        shm.remove().unwrap();
        seg.write(0, &frame::SEGMENT_MAGIC).unwrap();
        seg.store_u32(frame::SEG_VERSION_OFF, frame::VERSION)
            .unwrap();
        seg.store_u32(frame::SEG_CHANNEL_OFF, ctl_shm.id() as u32)
            .unwrap();
        sems.op(
            &[SemOp::take(sem::GATE), SemOp::give(sem::SENDER).undo()],
            WAIT,
        )
        .unwrap();
        // Admitted as the protocol admits: by taking the ticket (the receiver goes by it, not
        // by the gate), alone here, so a load and a store will do for the swap; then our
        // segment, stamped with the session, named at the rendezvous.
        let session = rdv.load_u32(frame::TICKET_OFF).unwrap();
        assert_ne!(session, 0, "the ticket was taken");
        rdv.store_u32(frame::TICKET_OFF, 0).unwrap();
        seg.store_u32(frame::SEG_SESSION_OFF, session).unwrap();
        rdv.store_u32(frame::SEGMENT_OFF, shm.id() as u32).unwrap();
        sems.set(sem::GATE, 0).unwrap();
        Hostile {
            sems,
            ctl,
            seg,
            _shm: shm,
            slot_size: info.slot_size,
            slots: info.slot_count as usize,
            session,
            file: std::cell::Cell::new(0),
            due: std::cell::Cell::new(1),
            ring: std::cell::Cell::new(0),
        }
    }
    fn count_request(&self) {
        let n = self.seg.load_u32(frame::REQUESTS_OFF).unwrap();
        self.seg.store_u32(frame::REQUESTS_OFF, n + 1).unwrap();
        self.sems.op(&[SemOp::give(sem::REQ)], None).unwrap();
    }
    /// Posts `bytes` as the request due next (one more than the last one taken).
    fn request_raw(&self, bytes: &[u8]) {
        let due = self.file.get() + 1;
        self.due.set(due);
        self.seg.write(Lane::of(due).request_off(), bytes).unwrap();
        self.count_request();
    }
    /// Asks for the next file; its chunks follow without waiting for an answer.
    fn request(&self, name: &[u8], size: Option<u64>, md5: bool) {
        let r = Request {
            op: Op::File,
            sender_pid: std::process::id() as i32,
            size,
            md5,
            meta: None,
            name: name.to_vec(),
            session: self.session,
            file: self.file.get() + 1,
        };
        let path = frame::encode_path(&r);
        if !path.is_empty() {
            self.seg.write(Lane::of(r.file).path_off(), &path).unwrap();
        }
        self.request_raw(&frame::encode_request(&r));
        self.file.set(r.file);
    }
    /// The status the receiver shows for the current file (live while it is sent).
    fn status(&self) -> u32 {
        self.ctl
            .load_u32(Lane::of(self.file.get()).answer_off())
            .unwrap()
    }
    fn answer(&self) -> (u32, frame::Outcome) {
        self.sems
            .op(&[SemOp::take(sem::ACK)], WAIT)
            .expect("the receiver never answered");
        let at = Lane::of(self.due.get()).answer_off();
        let status = self.ctl.load_u32(at).unwrap();
        let mut b = [0u8; frame::RESULT_LEN];
        self.ctl.read(at + 8, &mut b).unwrap();
        (status, frame::decode_outcome(status, &b).unwrap())
    }
    /// A descriptor of the current file.
    fn desc(&self, len: u64, kind: DescKind, index: u64) -> [u8; frame::SLOT_DESC_LEN] {
        frame::encode_desc(&Desc {
            len,
            kind,
            session: self.session,
            file: self.file.get(),
            index,
        })
    }
    /// Posts a chunk in the next slot of the ring.
    fn chunk_raw(&self, desc: [u8; frame::SLOT_DESC_LEN], data: &[u8]) {
        self.sems.op(&[SemOp::take(sem::EMPTY)], WAIT).unwrap();
        let slot = (self.ring.get() % self.slots as u64) as usize;
        self.ring.set(self.ring.get() + 1);
        self.seg
            .write(frame::RING_OFF + slot * self.slot_size, data)
            .unwrap();
        self.seg
            .write(frame::SLOTS_OFF + slot * frame::SLOT_DESC_LEN, &desc)
            .unwrap();
        let n = self.seg.load_u64(frame::POSTED_OFF).unwrap();
        self.seg.store_u64(frame::POSTED_OFF, n + 1).unwrap();
        self.sems.op(&[SemOp::give(sem::FULL)], None).unwrap();
    }
    fn trailer(&self, md5: [u8; 16], bytes: u64) {
        let t = frame::Trailer {
            session: self.session,
            file: self.file.get(),
            bytes,
            md5,
        };
        self.seg
            .write(Lane::of(t.file).trailer_off(), &frame::encode_trailer(&t))
            .unwrap();
    }
    fn bye(&self) {
        let r = Request {
            op: Op::Bye,
            sender_pid: 1,
            size: None,
            md5: false,
            meta: None,
            name: vec![],
            session: self.session,
            file: 0,
        };
        self.seg
            .write(
                Lane::of(self.file.get() + 1).request_off(),
                &frame::encode_request(&r),
            )
            .unwrap();
        let n = self.seg.load_u32(frame::REQUESTS_OFF).unwrap();
        self.seg.store_u32(frame::REQUESTS_OFF, n + 1).unwrap();
        self.sems
            .op(
                &[SemOp::take(sem::SENDER).undo(), SemOp::give(sem::REQ)],
                None,
            )
            .unwrap();
    }
}

#[test]
fn a_lying_sender_gets_refusals_and_the_receiver_keeps_serving() {
    let env = Env::new();
    let r = env.recv(&["--keep-name", "--slot-size", "64K"]);
    let h = Hostile::connect(env.key);

    // Garbage instead of a request.
    h.request_raw(&pattern(frame::REQUEST_LEN, 1));
    assert_eq!(h.answer().0, Status::BadRequest.code());
    let mut huge_name = frame::encode_request(&Request {
        op: Op::File,
        sender_pid: 1,
        size: None,
        md5: false,
        meta: None,
        name: vec![b'a'; 10],
        session: h.session,
        file: 1,
    });
    huge_name[36..40].copy_from_slice(&10_000u32.to_ne_bytes());
    h.request_raw(&huge_name);
    assert_eq!(h.answer().0, Status::BadRequest.code());
    // A file number out of turn (the first is 1) is refused before any chunk is taken.
    for file in [0, 2, u32::MAX] {
        h.request_raw(&frame::encode_request(&Request {
            op: Op::File,
            sender_pid: 1,
            size: Some(1),
            md5: false,
            meta: None,
            name: b"early".to_vec(),
            session: h.session,
            file,
        }));
        let (status, _) = h.answer();
        assert_eq!(status, Status::BadRequest.code(), "file {file}");
    }

    // A chunk that claims more than its slot.
    h.request(b"x", None, false);
    h.chunk_raw(h.desc(u64::MAX - 3, DescKind::Last, 0), b"0123456789");
    assert_eq!(h.answer().0, Status::BadRequest.code());

    // A wrong digest: discarded, and the receiver's own digest comes back.
    h.request(b"md5.bin", Some(10), true);
    h.trailer([0xaa; 16], 10);
    h.chunk_raw(h.desc(10, DescKind::Last, 0), b"0123456789");
    let (status, o) = h.answer();
    assert_eq!(status, Status::Md5Mismatch.code());
    assert_eq!(o.md5, md5::compute(b"0123456789").0);

    // Fewer bytes than announced.
    h.request(b"short.bin", Some(100), false);
    h.trailer([0; 16], 10);
    h.chunk_raw(h.desc(10, DescKind::Last, 0), b"0123456789");
    assert_eq!(h.answer().0, Status::LengthMismatch.code());

    // A name that tries to climb out of DIR lands inside it.
    for name in [
        &b"../../escaped"[..],
        b"/tmp/abs\0olute",
        b"..",
        b"a/../../b",
    ] {
        h.request(name, Some(3), false);
        h.trailer([0; 16], 3);
        h.chunk_raw(h.desc(3, DescKind::Last, 0), b"abc");
        assert_eq!(h.answer().0, Status::Committed.code());
    }
    h.bye();
    drop(h);

    // Still serving.
    let f = env.file("after", 1000);
    let o = env.send(&[f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    drop(r);
    // `/tmp/abs\0olute` keeps its last component without the NUL; `..` gets a counter name.
    assert_eq!(
        listing(&env.out()),
        ["absolute", "after", "b", "escaped", "file01.jpg"]
    );
    // DIR is env/out: `../../escaped` would land two levels up, beside env's own directory.
    let two_up = env.dir.path().parent().unwrap().join("escaped");
    assert!(!two_up.exists() && !env.dir.path().join("escaped").exists());
}

#[test]
fn status_shows_a_corrupt_channel_header_as_foreign_without_crashing() {
    let env = Env::new();
    let s = Shm::create(env.key, frame::CONTROL_LEN, 0o600).unwrap();
    let m = s.attach(true).unwrap();
    let mut info = frame::encode_info(&frame::Info {
        slot_size: 1 << 20,
        slot_count: 8,
        require_md5: false,
        receiver_pid: 1,
        rendezvous_shmid: 12345678,
        semid: 87654321,
        mode: 0o600,
        created: 0,
        name: Vec::new(),
    });
    info[24..28].copy_from_slice(&100_000u32.to_ne_bytes());
    m.write(0, &info).unwrap();
    let mut c = std::process::Command::new(BIN);
    c.args(["status", "--json", "--key", &env.key_arg()]);
    let o = run_bounded(c, Duration::from_secs(10));
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["channels"].as_array().unwrap().len(), 0);
    assert_eq!(j["shm"][0]["role"], serde_json::Value::Null);
}

#[test]
fn a_stray_descriptor_or_a_bad_digest_costs_only_its_own_file() {
    let env = Env::new();
    let r = env.recv(&["--keep-name", "--slot-size", "64K", "--slots", "4"]);
    let h = Hostile::connect(env.key);
    let slot = 64 << 10;

    // Three slots under a wrong digest: refused once the last one is in.
    h.request(b"bad-md5.bin", Some(3 * slot as u64), true);
    h.trailer([0xaa; 16], 3 * slot as u64);
    for i in 0..3u64 {
        let kind = if i == 2 {
            DescKind::Last
        } else {
            DescKind::Data
        };
        h.chunk_raw(h.desc(slot as u64, kind, i), &pattern(slot, i as u8));
    }
    assert_eq!(h.answer().0, Status::Md5Mismatch.code());

    // A descriptor that names another file: the receiver flags the file failed and takes
    // every descriptor up to the sender's abort, handing each slot back.
    h.request(b"stray.bin", None, false);
    let mut stray = h.desc(100, DescKind::Data, 0);
    stray[20..24].copy_from_slice(&(h.file.get() + 7).to_ne_bytes());
    h.chunk_raw(stray, b"stale bytes of another file");
    assert!(wait_until(Duration::from_secs(5), || h.status()
        == Status::BadRequest.code()));
    h.chunk_raw(h.desc(0, DescKind::Abort(4), 1), b"");
    assert_eq!(h.answer().0, Status::BadRequest.code());

    // The ring is clean: a two-slot file right after arrives whole.
    let good = pattern(slot + 10, 9);
    h.request(b"good.bin", Some(good.len() as u64), false);
    h.trailer([0; 16], good.len() as u64);
    h.chunk_raw(h.desc(slot as u64, DescKind::Data, 0), &good[..slot]);
    h.chunk_raw(h.desc(10, DescKind::Last, 1), &good[slot..]);
    assert_eq!(h.answer().0, Status::Committed.code());
    h.bye();
    drop(h);
    drop(r);
    assert_eq!(listing(&env.out()), ["good.bin"]);
    assert_eq!(std::fs::read(env.out().join("good.bin")).unwrap(), good);
}

#[test]
fn a_reported_md5_is_always_the_md5_of_the_bytes_written() {
    let env = Env::new();
    let r = env.recv(&["--keep-name", "-m", "--slot-size", "64K"]);
    let h = Hostile::connect(env.key);
    let (a, b) = (vec![b'A'; 60_000], vec![b'B'; 60_000]);
    let digest_a = md5::compute(&a).0;
    for i in 0..40u64 {
        h.request(format!("f{i}").as_bytes(), Some(a.len() as u64), true);
        h.trailer(digest_a, a.len() as u64);
        // Posts all-A bytes with their honest digest, then rewrites the slot to B while the
        // receiver works on it.
        h.chunk_raw(h.desc(a.len() as u64, DescKind::Last, 0), &a);
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_micros(i * 5) {}
        h.seg.write(frame::RING_OFF, &b).unwrap();
        let status = h.answer().0;
        assert!(
            status == Status::Committed.code() || status == Status::Md5Mismatch.code(),
            "{status}"
        );
    }
    h.bye();
    drop(h);
    let out = r.stop();
    for line in stdout(&out).lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let written = std::fs::read(f[0]).unwrap();
        assert_eq!(
            format!("{:x}", md5::compute(&written)),
            f[2],
            "{} was reported under a digest of other bytes",
            f[0]
        );
    }
}
