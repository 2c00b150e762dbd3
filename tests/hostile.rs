//! A sender that writes garbage into its segment must not make the receiver panic, read or
//! write out of bounds, write outside DIR, or stop serving. (The decoders' own bounds are
//! property-tested beside them, in `src/mechanisms/wire/fuzz.rs`.)

mod common;

use std::time::Duration;

use common::ipc::{Mapping, SemOp, SemSet, Shm};
use common::proto::{self, sem, status as st};
use common::*;
use shmxfer::Key;

/// A sender written against the raw segments from docs/protocol.md, free to lie: it makes its
/// own segment as the protocol's senders do (private, written by it alone) and says anything
/// in it.
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
        let mut head = [0u8; proto::INFO_LEN];
        ctl.read(0, &mut head).unwrap();
        let (slot_size, slots) = proto::slots_of(&head);
        let shm = Shm::create_private(proto::RING_OFF + slot_size * slots as usize, 0o600).unwrap();
        let seg = shm.attach(true).unwrap();
        shm.remove().unwrap();
        seg.write(0, proto::SEGMENT_MAGIC).unwrap();
        seg.store_u32(proto::SEG_VERSION_OFF, proto::VERSION)
            .unwrap();
        seg.store_u32(proto::SEG_CHANNEL_OFF, ctl_shm.id() as u32)
            .unwrap();
        sems.op(
            &[SemOp::take(sem::GATE), SemOp::give(sem::SENDER).undo()],
            WAIT,
        )
        .unwrap();
        // Admitted as the protocol admits: by taking the ticket (the receiver goes by it, not
        // by the gate); then our segment, stamped with the session, named at the rendezvous.
        assert_ne!(
            rdv.swap_u32(proto::TICKET_OFF, 0).unwrap(),
            0,
            "the ticket was taken"
        );
        let session = ctl.load_u32(proto::SESSION_OFF).unwrap();
        seg.store_u32(proto::SEG_SESSION_OFF, session).unwrap();
        rdv.store_u32(proto::SEGMENT_OFF, shm.id() as u32).unwrap();
        sems.set(sem::GATE, 0).unwrap();
        Hostile {
            sems,
            ctl,
            seg,
            _shm: shm,
            slot_size,
            slots: slots as usize,
            session,
            file: std::cell::Cell::new(0),
            due: std::cell::Cell::new(1),
            ring: std::cell::Cell::new(0),
        }
    }
    fn count_request(&self) {
        let n = self.seg.load_u32(proto::REQUESTS_OFF).unwrap();
        self.seg.store_u32(proto::REQUESTS_OFF, n + 1).unwrap();
        self.sems.op(&[SemOp::give(sem::REQ)], None).unwrap();
    }
    /// Posts `bytes` as the request due next (one more than the last one taken).
    fn request_raw(&self, bytes: &[u8]) {
        let due = self.file.get() + 1;
        self.due.set(due);
        self.seg.write(proto::request_off(due), bytes).unwrap();
        self.count_request();
    }
    /// Asks for the next file; its chunks follow without waiting for an answer.
    fn request(&self, name: &[u8], size: Option<u64>, md5: bool) {
        let file = self.file.get() + 1;
        self.request_raw(&proto::request(1, name, size, md5, self.session, file));
        self.file.set(file);
    }
    /// The status the receiver shows for the current file (live while it is sent).
    fn status(&self) -> u32 {
        self.ctl
            .load_u32(proto::answer_off(self.file.get()))
            .unwrap()
    }
    /// The next answer: its status and the receiver's digest.
    fn answer(&self) -> (u32, [u8; 16]) {
        self.sems
            .op(&[SemOp::take(sem::ACK)], WAIT)
            .expect("the receiver never answered");
        let at = proto::answer_off(self.due.get());
        let status = self.ctl.load_u32(at).unwrap();
        let mut b = [0u8; proto::RESULT_LEN];
        self.ctl.read(at + 8, &mut b).unwrap();
        (status, proto::answer_md5(&b))
    }
    /// A descriptor of the current file: flags 0 data, 1 last, 2 abort.
    fn desc(&self, len: u64, flags: u32, index: u64) -> [u8; proto::SLOT_DESC_LEN] {
        let code = if flags == 2 { 4 } else { 0 };
        proto::desc(len, flags, code, self.session, self.file.get(), index)
    }
    /// Posts a chunk in the next slot of the ring.
    fn chunk_raw(&self, desc: [u8; proto::SLOT_DESC_LEN], data: &[u8]) {
        self.sems.op(&[SemOp::take(sem::EMPTY)], WAIT).unwrap();
        let slot = (self.ring.get() % self.slots as u64) as usize;
        self.ring.set(self.ring.get() + 1);
        self.seg
            .write(proto::RING_OFF + slot * self.slot_size, data)
            .unwrap();
        self.seg
            .write(proto::SLOTS_OFF + slot * proto::SLOT_DESC_LEN, &desc)
            .unwrap();
        let n = self.seg.load_u64(proto::POSTED_OFF).unwrap();
        self.seg.store_u64(proto::POSTED_OFF, n + 1).unwrap();
        self.sems.op(&[SemOp::give(sem::FULL)], None).unwrap();
    }
    fn trailer(&self, md5: [u8; 16], bytes: u64) {
        let file = self.file.get();
        self.seg
            .write(
                proto::trailer_off(file),
                &proto::trailer(self.session, file, bytes, md5),
            )
            .unwrap();
    }
    fn bye(&self) {
        let due = self.file.get() + 1;
        self.seg
            .write(
                proto::request_off(due),
                &proto::request(2, b"", None, false, self.session, 0),
            )
            .unwrap();
        let n = self.seg.load_u32(proto::REQUESTS_OFF).unwrap();
        self.seg.store_u32(proto::REQUESTS_OFF, n + 1).unwrap();
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
    h.request_raw(&pattern(proto::REQUEST_LEN, 1));
    assert_eq!(h.answer().0, st::BAD_REQUEST);
    let mut huge_name = proto::request(1, &[b'a'; 10], None, false, h.session, 1);
    huge_name[36..40].copy_from_slice(&10_000u32.to_ne_bytes());
    h.request_raw(&huge_name);
    assert_eq!(h.answer().0, st::BAD_REQUEST);
    // A file number out of turn (the first is 1) is refused before any chunk is taken.
    for file in [0, 2, u32::MAX] {
        h.request_raw(&proto::request(
            1,
            b"early",
            Some(1),
            false,
            h.session,
            file,
        ));
        let (status, _) = h.answer();
        assert_eq!(status, st::BAD_REQUEST, "file {file}");
    }

    // A chunk that claims more than its slot.
    h.request(b"x", None, false);
    h.chunk_raw(h.desc(u64::MAX - 3, 1, 0), b"0123456789");
    assert_eq!(h.answer().0, st::BAD_REQUEST);

    // A wrong digest: discarded, and the receiver's own digest comes back.
    h.request(b"md5.bin", Some(10), true);
    h.trailer([0xaa; 16], 10);
    h.chunk_raw(h.desc(10, 1, 0), b"0123456789");
    let (status, digest) = h.answer();
    assert_eq!(status, st::MD5_MISMATCH);
    assert_eq!(digest, md5::compute(b"0123456789").0);

    // Fewer bytes than announced.
    h.request(b"short.bin", Some(100), false);
    h.trailer([0; 16], 10);
    h.chunk_raw(h.desc(10, 1, 0), b"0123456789");
    assert_eq!(h.answer().0, st::LENGTH_MISMATCH);

    // A name that tries to climb out of DIR lands inside it.
    for name in [
        &b"../../escaped"[..],
        b"/tmp/abs\0olute",
        b"..",
        b"a/../../b",
    ] {
        h.request(name, Some(3), false);
        h.trailer([0; 16], 3);
        h.chunk_raw(h.desc(3, 1, 0), b"abc");
        assert_eq!(h.answer().0, st::COMMITTED);
    }
    h.bye();
    drop(h);

    // Still serving.
    let f = env.file("after", 1000);
    let o = env.send(&[f.to_str().unwrap()]);
    exits(&o, 0);
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
    let s = Shm::create(env.key, proto::CONTROL_LEN, 0o600).unwrap();
    let m = s.attach(true).unwrap();
    let mut info = proto::info(1 << 20, 8, 12345678, 87654321);
    info[24..28].copy_from_slice(&100_000u32.to_ne_bytes());
    m.write(0, &info).unwrap();
    let mut c = std::process::Command::new(BIN);
    c.args(["status", "--json", "--key", &env.key_arg()]);
    let o = run_bounded(c, Duration::from_secs(10));
    exits(&o, 0);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["channels"].as_array().unwrap().len(), 0);
    assert_eq!(j["shm"][0]["role"], serde_json::Value::Null);
    // And a sender calls it foreign, and leaves it alone.
    let f = env.file("a", 5);
    let o = env.send(&[f.to_str().unwrap()]);
    exits(&o, 76);
    says(&o, "holds no shmxfer channel");
    assert!(Shm::open(env.key).is_ok());
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
        let last = u32::from(i == 2);
        h.chunk_raw(h.desc(slot as u64, last, i), &pattern(slot, i as u8));
    }
    assert_eq!(h.answer().0, st::MD5_MISMATCH);

    // A descriptor that names another file: the receiver flags the file failed and takes
    // every descriptor up to the sender's abort, handing each slot back.
    h.request(b"stray.bin", None, false);
    let mut stray = h.desc(100, 0, 0);
    stray[20..24].copy_from_slice(&(h.file.get() + 7).to_ne_bytes());
    h.chunk_raw(stray, b"stale bytes of another file");
    assert!(wait_until(Duration::from_secs(5), || h.status() == st::BAD_REQUEST));
    h.chunk_raw(h.desc(0, 2, 1), b"");
    assert_eq!(h.answer().0, st::BAD_REQUEST);

    // The ring is clean: a two-slot file right after arrives whole.
    let good = pattern(slot + 10, 9);
    h.request(b"good.bin", Some(good.len() as u64), false);
    h.trailer([0; 16], good.len() as u64);
    h.chunk_raw(h.desc(slot as u64, 0, 0), &good[..slot]);
    h.chunk_raw(h.desc(10, 1, 1), &good[slot..]);
    assert_eq!(h.answer().0, st::COMMITTED);
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
        h.chunk_raw(h.desc(a.len() as u64, 1, 0), &a);
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_micros(i * 5) {}
        h.seg.write(proto::RING_OFF, &b).unwrap();
        let status = h.answer().0;
        assert!(
            status == st::COMMITTED || status == st::MD5_MISMATCH,
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
