//! `--legacy` against stand-ins for the original producer and consumer, written from
//! ../shared/legacy-protocol.md and the programs' behaviour: plain -1/+1 semaphore operations,
//! no SEM_UNDO, both segments attached before any semaphore is taken, and the producer taking
//! the content semaphore back 3 ms after releasing it with its CPU busy all the while (its
//! `import hashlib`), then dying holding it if the reply does not decode as text.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ipc::{Mapping, SemOp, SemSet, Shm};
use common::*;
use shmxfer::Key;

/// The original size segment's text (legacy-protocol.md): decimal digits, then a NUL.
fn encode_size(n: usize) -> Vec<u8> {
    format!("{n}\0").into_bytes()
}

/// The size a size segment holds: digits up to the first NUL; `None` for anything else.
fn decode_size(b: &[u8]) -> Option<usize> {
    let digits = b.split(|&c| c == 0).next()?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

const T: Option<Duration> = Some(Duration::from_secs(20));

/// The original producer takes the content semaphore back 3 ms after releasing it; on two
/// cores, sibling tests moving megabytes can keep the receiver off the CPU that long. Test
/// binaries run one at a time, so serializing this binary's tests gives each the machine.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn busy(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

struct Objects {
    content_sem: SemSet,
    size_sem: SemSet,
    content: Mapping,
    size: Mapping,
}

fn attach(ck: Key, sk: Key) -> Objects {
    Objects {
        content_sem: SemSet::open(ck).unwrap(),
        size_sem: SemSet::open(sk).unwrap(),
        content: Shm::open(ck).unwrap().attach(true).unwrap(),
        size: Shm::open(sk).unwrap().attach(true).unwrap(),
    }
}

/// The original producer, step by step.
fn producer(ck: Key, sk: Key, data: &[u8], md5: bool) -> Result<(), String> {
    let o = attach(ck, sk);
    o.size_sem
        .op(&[SemOp::take(0)], T)
        .map_err(|e| e.to_string())?;
    o.content_sem
        .op(&[SemOp::take(0)], T)
        .map_err(|e| e.to_string())?;
    o.size.write(0, &encode_size(data.len())).unwrap();
    o.size_sem.op(&[SemOp::give(0)], None).unwrap();
    o.content.write(0, data).unwrap();
    o.content_sem.op(&[SemOp::give(0)], None).unwrap();
    if md5 {
        // `import hashlib`: 3 ms on the CPU, not asleep. A sleeping stand-in lets the CPU go
        // idle and the receiver run, and hides the race the real producer loses.
        busy(Duration::from_millis(3));
        o.content_sem
            .op(&[SemOp::take(0)], T)
            .map_err(|e| e.to_string())?;
        // As the original: `content_memory.read()` copies the whole segment, then the reply
        // is decoded and the file hashed, all before the release.
        let mut whole = vec![0u8; 5_000_000];
        o.content.read(0, &mut whole).unwrap();
        let mut reply = [0u8; 32];
        reply.copy_from_slice(&whole[..32]);
        if std::str::from_utf8(&reply).is_err() {
            // The original decodes the reply before it releases: it dies holding the
            // semaphore. As a child process, so does the stand-in.
            if std::env::var_os("SHMXFER_STANDIN_PRODUCE").is_some() {
                std::process::exit(3);
            }
            return Err(
                "undecodable reply (the original would die holding the content semaphore)".into(),
            );
        }
        let want = format!("{:x}", md5::compute(data));
        o.content_sem.op(&[SemOp::give(0)], None).unwrap();
        if reply != want.as_bytes() {
            return Err(format!("md5 mismatch: {}", String::from_utf8_lossy(&reply)));
        }
    }
    Ok(())
}

/// The four objects, made and set up as the original consumer does at its start.
fn create_as_the_original_consumer(ck: Key, sk: Key) -> Objects {
    Shm::create(ck, 5_000_000, 0o600).unwrap();
    Shm::create(sk, 10, 0o600).unwrap();
    SemSet::create(ck, 1, 0o600).unwrap();
    SemSet::create(sk, 1, 0o600).unwrap();
    let o = attach(ck, sk);
    o.size.write(0, &encode_size(0)).unwrap();
    o.size_sem.op(&[SemOp::give(0)], None).unwrap();
    o.content_sem.op(&[SemOp::give(0)], None).unwrap();
    o
}

/// The original consumer: creates the four objects and serves `files` transfers, returning
/// what it received. It spins on the size semaphore like the original, with a short sleep.
fn consumer(
    ck: Key,
    sk: Key,
    md5: bool,
    files: usize,
    ready: std::sync::mpsc::Sender<()>,
) -> Vec<Vec<u8>> {
    consumer_after(ck, sk, md5, files, ready, None)
}

/// The consumer, set up at once but serving only once `go` says so (if given).
fn consumer_after(
    ck: Key,
    sk: Key,
    md5: bool,
    files: usize,
    ready: std::sync::mpsc::Sender<()>,
    go: Option<std::sync::mpsc::Receiver<()>>,
) -> Vec<Vec<u8>> {
    let Objects {
        content_sem,
        size_sem,
        content,
        size,
    } = create_as_the_original_consumer(ck, sk);
    ready.send(()).unwrap();
    if let Some(go) = go {
        go.recv().unwrap();
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < files && Instant::now() < deadline {
        size_sem.op(&[SemOp::take(0)], T).unwrap();
        let mut f = [0u8; 10];
        size.read(0, &mut f).unwrap();
        let n = decode_size(&f).unwrap();
        size.write(0, &encode_size(0)).unwrap();
        size_sem.op(&[SemOp::give(0)], None).unwrap();
        if n == 0 {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        content_sem.op(&[SemOp::take(0)], T).unwrap();
        let mut bytes = vec![0u8; n];
        content.read(0, &mut bytes).unwrap();
        if md5 {
            content
                .write(0, format!("{:x}\0", md5::compute(&bytes)).as_bytes())
                .unwrap();
        }
        content_sem.op(&[SemOp::give(0)], None).unwrap();
        got.push(bytes);
    }
    // The objects stay until the test's key guards remove them: the original consumer never
    // leaves while a producer may still be reading its reply.
    let _ = (size_sem, content_sem);
    got
}

/// `shmxfer send --legacy` on the test's own keys.
fn legacy_send(ck: Key, sk: Key) -> Command {
    let mut c = bin(&[
        "send",
        "--legacy",
        "--key",
        &ck.0.to_string(),
        "--size-key",
        &sk.0.to_string(),
    ]);
    c.stdin(Stdio::null());
    c
}

/// What a legacy test holds until its end: the turn among legacy tests, and the size key.
struct Held(
    #[allow(dead_code)] std::sync::MutexGuard<'static, ()>,
    #[allow(dead_code)] KeyGuard,
);

/// A legacy test's channel: its content key (the Env's) and a size key of its own. The
/// returned values drop in reverse, so the Env's objects go before the turn passes on.
fn legacy_env() -> (Held, Env, Key, Key) {
    let serial = serial();
    let env = Env::new();
    // Env's own guard covers KEY and KEY+1; the size key gets a guard of its own.
    let sk = Key(env.key.0 + 2);
    let ck = env.key;
    (Held(serial, KeyGuard::new(sk)), env, ck, sk)
}

/// Starts the consumer `c`, and returns once it serves: the size semaphore at `sk` released.
fn serving_consumer_at(mut c: Command, sk: Key) -> Receiver {
    let r = Receiver {
        child: Some(c.spawn().unwrap()),
    };
    assert!(wait_until(Duration::from_secs(10), || SemSet::open(sk)
        .and_then(|s| s.value(0))
        .is_ok_and(|v| v == 1)));
    r
}

fn legacy_recv(env: &Env, ck: Key, sk: Key, extra: &[&str]) -> Receiver {
    let mut c = Command::new(BIN);
    c.args([
        "recv",
        "--legacy",
        "--key",
        &ck.0.to_string(),
        "--size-key",
        &sk.0.to_string(),
        "--dir",
    ]);
    c.arg(env.out())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    serving_consumer_at(c, sk)
}

#[test]
fn the_original_producer_feeds_recv_legacy_with_and_without_md5() {
    for md5 in [false, true] {
        let (_held, env, ck, sk) = legacy_env();
        let r = legacy_recv(&env, ck, sk, if md5 { &["-m"] } else { &[] });
        let sizes = [1usize, 1000, 65_537, 5_000_000];
        for (i, &n) in sizes.iter().enumerate() {
            producer(ck, sk, &pattern(n, i as u8), md5)
                .unwrap_or_else(|e| panic!("{n} bytes, md5 {md5}: {e}"));
            // One producer process per file, as the original is used: the next one starts
            // tens of milliseconds later, never before the consumer took the last hand-over.
            let name = env.out().join(format!("file{:02}.jpg", i + 1));
            assert!(wait_until(Duration::from_secs(10), || name.exists()));
        }
        let out = r.stop();
        assert_eq!(out.status.code(), Some(130));
        for (i, &n) in sizes.iter().enumerate() {
            let got = std::fs::read(env.out().join(format!("file{:02}.jpg", i + 1))).unwrap();
            assert_eq!(
                (got.len(), md5::compute(&got)),
                (n, md5::compute(pattern(n, i as u8))),
                "file {i}, md5 {md5}"
            );
        }
        assert!(
            Shm::open(ck).is_err() && Shm::open(sk).is_err(),
            "SIGTERM must remove the objects"
        );
        assert!(SemSet::open(ck).is_err() && SemSet::open(sk).is_err());
    }
}

#[test]
fn the_producers_quick_hash_take_back_never_wins_the_hand_over() {
    let (_held, env, ck, sk) = legacy_env();
    let _r = legacy_recv(&env, ck, sk, &["-m"]);
    let mut failed = 0;
    for i in 0..30 {
        if producer(ck, sk, &pattern(200_000 + i, i as u8), true).is_err() {
            failed += 1;
        }
        let name = env.out().join(format!("file{:02}.jpg", i + 1));
        assert!(wait_until(Duration::from_secs(10), || name.exists()));
    }
    assert_eq!(
        failed, 0,
        "{failed} of 30 transfers read their own bytes as the hash"
    );
}

#[test]
fn an_idle_legacy_receiver_uses_no_cpu() {
    let (_held, env, ck, sk) = legacy_env();
    let r = legacy_recv(&env, ck, sk, &[]);
    let ticks = || {
        let s = std::fs::read_to_string(format!("/proc/{}/stat", r.pid())).unwrap();
        let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let before = ticks();
    std::thread::sleep(Duration::from_secs(1));
    assert!(ticks() - before <= 1, "an idle receiver spun");
}

#[test]
fn send_legacy_feeds_the_original_consumer_with_and_without_md5() {
    for md5 in [false, true] {
        let (_held, env, ck, sk) = legacy_env();
        let sizes = [1usize, 1000, 65_537, 5_000_000];
        let (tx, rx) = std::sync::mpsc::channel();
        let consumer = std::thread::spawn(move || consumer(ck, sk, md5, 4, tx));
        rx.recv().unwrap();
        let files: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let p = env.path(&format!("in{i}"));
                std::fs::write(&p, pattern(n, i as u8)).unwrap();
                p
            })
            .collect();
        let mut c = legacy_send(ck, sk);
        if md5 {
            c.arg("-m");
        }
        c.args(&files);
        let o = run_bounded(c, Duration::from_secs(60));
        assert!(o.status.success(), "md5 {md5}: {}", stderr(&o));
        let got = consumer.join().unwrap();
        assert_eq!(got.len(), 4);
        for (i, &n) in sizes.iter().enumerate() {
            assert_eq!(
                (got[i].len(), md5::compute(&got[i])),
                (n, md5::compute(pattern(n, i as u8))),
                "file {i}, md5 {md5}"
            );
        }
    }
}

#[test]
fn send_legacy_refuses_sizes_the_protocol_cannot_carry_touching_no_semaphore() {
    let (_held, env, ck, sk) = legacy_env();
    let (tx, rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel();
    // Set up but not yet serving: nothing else touches the semaphores while we look.
    let consumer = std::thread::spawn(move || consumer_after(ck, sk, false, 1, tx, Some(go_rx)));
    rx.recv().unwrap();
    let values = || -> Vec<(i32, i32)> {
        [ck, sk]
            .iter()
            .map(|k| {
                let s = SemSet::open(*k).unwrap();
                (s.value(0).unwrap(), s.last_pid(0).unwrap())
            })
            .collect()
    };
    let before_values = values();
    let before: Vec<_> = [ck, sk]
        .iter()
        .map(|k| SemSet::open(*k).unwrap().stat().unwrap().otime)
        .collect();
    let empty = env.file("empty", 0);
    let big = env.file("big", 5_000_001);
    for f in [&empty, &big] {
        let mut c = legacy_send(ck, sk);
        c.arg(f);
        let o = run_bounded(c, Duration::from_secs(10));
        exits(&o, 66);
        says(&o, "1 to 5,000,000 bytes");
    }
    let after: Vec<_> = [ck, sk]
        .iter()
        .map(|k| SemSet::open(*k).unwrap().stat().unwrap().otime)
        .collect();
    assert_eq!(before, after, "a refused file touched a semaphore");
    assert_eq!(
        before_values,
        values(),
        "a refused file touched a semaphore"
    );
    go_tx.send(()).unwrap();
    // The consumer still serves: one good file.
    let ok = env.file("ok", 10);
    let mut c = legacy_send(ck, sk);
    c.arg(&ok);
    assert!(run_bounded(c, Duration::from_secs(20)).status.success());
    assert_eq!(consumer.join().unwrap(), vec![pattern(10, 2)]);
}

#[test]
fn send_legacy_without_a_consumer_says_to_start_one() {
    let (_held, env, ck, sk) = legacy_env();
    let f = env.file("a", 10);
    let mut c = legacy_send(ck, sk);
    c.arg(&f);
    let o = run_bounded(c, Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(69));
    assert!(stderr(&o).contains("consumer"), "{}", stderr(&o));
}

/// Run as a child process: takes both semaphores as the original producer does, then dies.
#[test]
fn stand_in_dying_producer() {
    let Ok(keys) = std::env::var("SHMXFER_STANDIN_DIE") else {
        return;
    };
    let k: Vec<u32> = keys.split(',').map(|s| s.parse().unwrap()).collect();
    let o = attach(Key(k[0]), Key(k[1]));
    o.size_sem.op(&[SemOp::take(0)], T).unwrap();
    o.content_sem.op(&[SemOp::take(0)], T).unwrap();
    std::process::exit(0);
}

#[test]
fn a_producer_that_dies_holding_the_semaphores_does_not_wedge_recv_legacy() {
    let (_held, env, ck, sk) = legacy_env();
    let _r = legacy_recv(&env, ck, sk, &[]);
    let st = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "stand_in_dying_producer", "--nocapture"])
        .env("SHMXFER_STANDIN_DIE", format!("{},{}", ck.0, sk.0))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let t = Instant::now();
    producer(ck, sk, b"after", false).unwrap();
    let name = env.out().join("file01.jpg");
    assert!(wait_until(Duration::from_secs(10), || name.exists()));
    eprintln!(
        "next producer went through {:?} after one died holding the semaphores",
        t.elapsed()
    );
    assert_eq!(
        std::fs::read(env.out().join("file01.jpg")).unwrap(),
        b"after"
    );
}

#[test]
fn status_marks_the_original_systems_objects_and_clean_legacy_removes_them() {
    // On keys of its own (the original is configured by editing its keys; 42/44 may belong
    // to somebody else on this host): status knows the objects by their shape.
    let (_held, env, ck, sk) = legacy_env();
    let (ck_arg, sk_arg) = (format!("{:#x}", ck.0), format!("{:#x}", sk.0));
    let legacy_args = ["--key", &ck_arg, "--size-key", &sk_arg];
    let mut c = Command::new(BIN);
    c.args(["recv", "--legacy", "--dir"])
        .arg(env.out())
        .args(legacy_args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let r = serving_consumer_at(c, sk);
    let o = shmxfer(&["status", "--key", &ck_arg]);
    assert!(
        stdout(&o).contains("original system (content)"),
        "{}",
        stdout(&o)
    );
    let o = shmxfer(&["status", "--key", &sk_arg, "--json"]);
    assert!(stdout(&o).contains("legacy-size"), "{}", stdout(&o));
    // A consumer is attached: clean --legacy refuses without --force, and a dry run says
    // what the real run would (75), as for a native channel with a live receiver.
    let clean = |extra: &[&str]| {
        let mut a = vec!["clean", "--legacy"];
        a.extend(legacy_args);
        a.extend(extra);
        shmxfer(&a)
    };
    let o = clean(&[]);
    exits(&o, 75);
    let o = clean(&["--dry-run"]);
    exits(&o, 75);
    says(&o, "a consumer is running");
    let o = clean(&["--dry-run", "--force"]);
    exits(&o, 0);
    assert_eq!(
        stdout(&o).matches("would remove").count(),
        4,
        "{}",
        stdout(&o)
    );
    let live = env_native_dry_run_code();
    assert_eq!(live, Some(75), "the native rule is the same");
    r.signal("KILL");
    r.wait(Duration::from_secs(10));
    let o = clean(&[]);
    removed(&o, 4);
    assert!(Shm::open(ck).is_err() && SemSet::open(sk).is_err());
}

#[test]
fn recv_legacy_never_follows_a_symlink_planted_in_its_directory() {
    let (_held, env, ck, sk) = legacy_env();
    std::fs::create_dir_all(env.out()).unwrap();
    let target = env.path("precious");
    std::fs::write(&target, b"must stay").unwrap();
    let r = legacy_recv(&env, ck, sk, &[]);
    // Every name a temporary file of this receiver could have, planted as a symlink.
    let pid = r.pid();
    for name in [
        format!(".shmxfer-legacy-{pid}.part"),
        format!(".shmxfer-{pid}-0.part"),
    ] {
        std::os::unix::fs::symlink(&target, env.out().join(name)).unwrap();
    }
    producer(ck, sk, b"producer bytes", false).unwrap();
    assert!(wait_until(Duration::from_secs(10), || env
        .out()
        .join("file01.jpg")
        .exists()));
    drop(r);
    assert_eq!(std::fs::read(&target).unwrap(), b"must stay");
    let f = env.out().join("file01.jpg");
    assert!(std::fs::symlink_metadata(&f).unwrap().is_file());
    assert_eq!(std::fs::read(&f).unwrap(), b"producer bytes");
}

/// Run as a child process (SHMXFER_STANDIN_PRODUCE=ck,sk,path,md5): the original producer,
/// with its start-up time, for tests that kill it at random points.
#[test]
fn stand_in_producer() {
    let Ok(args) = std::env::var("SHMXFER_STANDIN_PRODUCE") else {
        return;
    };
    let a: Vec<&str> = args.split(',').collect();
    let data = std::fs::read(a[2]).unwrap();
    // The interpreter's start-up and imports, on the CPU.
    busy(Duration::from_millis(5));
    let md5 = a[3] == "1";
    match producer(
        Key(a[0].parse().unwrap()),
        Key(a[1].parse().unwrap()),
        &data,
        md5,
    ) {
        Ok(()) => std::process::exit(0),
        Err(_) => std::process::exit(1),
    }
}

fn spawn_producer(ck: Key, sk: Key, path: &std::path::Path, md5: bool) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "stand_in_producer",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            "SHMXFER_STANDIN_PRODUCE",
            format!("{},{},{},{}", ck.0, sk.0, path.display(), u8::from(md5)),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Files in DIR whose bytes are `want`.
fn count_holding(dir: &std::path::Path, want: &[u8]) -> usize {
    listing(dir)
        .iter()
        .filter(|n| std::fs::read(dir.join(n)).is_ok_and(|b| b == want))
        .count()
}

#[test]
fn two_hundred_md5_hand_overs_in_a_row_are_never_lost_idle_or_under_load() {
    let (_held, env, ck, sk) = legacy_env();
    let r = legacy_recv(&env, ck, sk, &["-m"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut failed = Vec::new();
    for i in 0..200usize {
        // The second half runs with the other core busy too.
        if i == 100 {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            });
        }
        let data = pattern(if i % 2 == 0 { 1 } else { 100_000 }, i as u8);
        if let Err(e) = producer(ck, sk, &data, true) {
            failed.push(format!("{i}: {e}"));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ok = wait_until(Duration::from_secs(10), || listing(&env.out()).len() == 200);
    let out = r.stop();
    assert!(ok, "{failed:?} {}", stderr(&out));
    assert!(
        failed.is_empty(),
        "{} of 200 hand-overs lost: {failed:?}",
        failed.len()
    );
}

#[test]
fn producers_killed_anywhere_or_disagreeing_on_md5_never_stop_the_next_ones() {
    let (_held, env, ck, sk) = legacy_env();
    let r = legacy_recv(&env, ck, sk, &["-q"]);
    let binary = env.file("binary.bin", 300_000);
    let mut x: u64 = 0x9e37_79b9 ^ u64::from(std::process::id());
    let mut next = 0u8;
    for round in 0..40u64 {
        if round % 4 == 3 {
            // -m against a receiver without it: the producer reads its own binary bytes as
            // the reply and dies holding the content semaphore.
            let mut p = spawn_producer(ck, sk, &binary, true);
            let _ = p.wait();
        } else {
            let mut p = spawn_producer(ck, sk, &binary, round % 2 == 0);
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            std::thread::sleep(Duration::from_micros(x % 12_000));
            let _ = p.kill();
            let _ = p.wait();
        }
        // Every producer after it lands.
        for _ in 0..3 {
            next = next.wrapping_add(1);
            let data = pattern(1000 + usize::from(next), next);
            producer(ck, sk, &data, false)
                .unwrap_or_else(|e| panic!("round {round}: a producer after a fault failed: {e}"));
            assert!(
                wait_until(Duration::from_secs(10), || count_holding(&env.out(), &data)
                    == 1),
                "round {round}: a producer's file after a fault never arrived"
            );
        }
    }
    drop(r);
}

/// A consumer stand-in that serves until `stop`: spins on the size semaphore like the
/// original, and records every file it writes.
fn serving_consumer(
    ck: Key,
    sk: Key,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ready: std::sync::mpsc::Sender<()>,
) -> Vec<Vec<u8>> {
    let Objects {
        content_sem,
        size_sem,
        content,
        size,
    } = create_as_the_original_consumer(ck, sk);
    ready.send(()).unwrap();
    let mut got = Vec::new();
    let slice = Some(Duration::from_millis(50));
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if size_sem.op(&[SemOp::take(0)], slice).is_err() {
            continue;
        }
        let mut f = [0u8; 10];
        size.read(0, &mut f).unwrap();
        let n = decode_size(&f).unwrap_or(0);
        size.write(0, &encode_size(0)).unwrap();
        size_sem.op(&[SemOp::give(0)], None).unwrap();
        if n == 0 {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        while content_sem.op(&[SemOp::take(0)], slice).is_err() {}
        let mut bytes = vec![0u8; n];
        content.read(0, &mut bytes).unwrap();
        content_sem.op(&[SemOp::give(0)], None).unwrap();
        got.push(bytes);
    }
    got
}

#[test]
fn send_legacy_killed_anywhere_never_leaves_a_torn_file_at_the_consumer() {
    let (_held, env, ck, sk) = legacy_env();
    let inputs: Vec<_> = (0..3)
        .map(|i| env.file(&format!("in{i}"), 3_000_000 + i * 1000))
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let s = stop.clone();
    let consumer = std::thread::spawn(move || serving_consumer(ck, sk, s, tx));
    rx.recv().unwrap();
    let mut x: u64 = 0x2545_f491 ^ u64::from(std::process::id());
    for i in 0..200usize {
        let mut c = legacy_send(ck, sk);
        c.arg(&inputs[i % 3])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Up to 12 ms: a debug build under a loaded suite takes most of that to start.
        std::thread::sleep(Duration::from_micros(x % 12_000));
        let _ = child.kill();
        let _ = child.wait();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let got = consumer.join().unwrap();
    // A sender killed holding its turn leaves the (unlocked) lock file: ours to remove.
    let _ = std::fs::remove_file(format!("/dev/shm/.shmxfer-legacy-{:08x}.lock", ck.0));
    let wanted: Vec<Vec<u8>> = inputs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let torn = got.iter().filter(|g| !wanted.contains(g)).count();
    eprintln!("{} files written by the consumer, {torn} torn", got.len());
    assert!(
        got.len() > 10,
        "too few sends got far enough to test anything"
    );
    assert_eq!(
        torn,
        0,
        "{torn} of {} files the consumer wrote are torn",
        got.len()
    );
}

#[test]
fn an_md5_disagreement_names_both_digests_and_never_prints_the_peers_raw_bytes() {
    let (_held, env, ck, sk) = legacy_env();
    // A consumer without -m: the "reply" is the file's own first bytes.
    let (tx, rx) = std::sync::mpsc::channel();
    let consumer = std::thread::spawn(move || consumer(ck, sk, false, 1, tx));
    rx.recv().unwrap();
    let f = env.path("ansi.bin");
    let mut data = b"\x1b[2J\x1b[31mgotcha\n\t".to_vec();
    data.extend(pattern(100, 1));
    std::fs::write(&f, &data).unwrap();
    let mut c = legacy_send(ck, sk);
    c.arg("-m").arg(&f);
    let o = run_bounded(c, Duration::from_secs(20));
    consumer.join().unwrap();
    exits(&o, 65);
    let err = stderr(&o);
    assert!(!err.contains('\x1b') && err.contains("\\033[2J"), "{err:?}");
    assert!(err.contains(&format!("{:x}", md5::compute(&data))), "{err}");
}

#[test]
fn two_legacy_senders_at_once_lose_no_file() {
    let (_held, env, ck, sk) = legacy_env();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let s = stop.clone();
    let consumer = std::thread::spawn(move || serving_consumer(ck, sk, s, tx));
    rx.recv().unwrap();
    let batches = batches(&env, "b", 2, 15, 50_000);
    let senders: Vec<_> = batches
        .iter()
        .map(|files| {
            let mut c = legacy_send(ck, sk);
            c.args(files).stdout(Stdio::piped()).stderr(Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    let outs: Vec<_> = senders
        .into_iter()
        .map(|c| finish(c, Duration::from_secs(60)))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let got = consumer.join().unwrap();
    for (o, files) in outs.iter().zip(&batches) {
        assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
        for f in files {
            let want = std::fs::read(f).unwrap();
            assert!(
                got.contains(&want),
                "{} was reported sent but never arrived ({} files arrived)",
                f.display(),
                got.len()
            );
        }
    }
    assert_eq!(got.len(), 30, "every file arrives once");
    assert!(
        !std::path::Path::new(&format!("/dev/shm/.shmxfer-legacy-{:08x}.lock", ck.0)).exists(),
        "the senders' lock file is left behind"
    );
}

#[test]
fn recv_legacy_tells_files_as_json_runs_exec_and_refuses_what_it_cannot_do() {
    let (_held, env, ck, sk) = legacy_env();
    for flag in [
        &["--keep-path"][..],
        &["--keep-name"],
        &["--preserve"],
        &["--slots", "4"],
    ] {
        let mut c = Command::new(BIN);
        c.args(["recv", "--legacy", "--key", &ck.0.to_string()])
            .args(["--size-key", &sk.0.to_string()])
            .args(flag)
            .arg("--dir")
            .arg(env.out());
        let o = run_bounded(c, Duration::from_secs(10));
        assert_eq!(o.status.code(), Some(64), "{flag:?}: {}", stderr(&o));
    }
    let marks = env.folder("marks");
    let r = legacy_recv(
        &env,
        ck,
        sk,
        &[
            "-m",
            "--json",
            "--exec",
            "sh",
            "-c",
            // Copied aside, then renamed: the mark appears whole, when the command is done.
            "cp \"$SHMXFER_PATH\" \"$0/.copy\" && mv \"$0/.copy\" \"$0/$SHMXFER_SIZE\"",
            marks.to_str().unwrap(),
            ";",
        ],
    );
    let f = env.file("photo.jpg", 12_345);
    let mut c = legacy_send(ck, sk);
    c.arg("-m").arg(&f);
    let o = run_bounded(c, Duration::from_secs(20));
    exits(&o, 0);
    assert!(wait_until(Duration::from_secs(10), || marks
        .join("12345")
        .exists()));
    assert!(
        same(&f, &marks.join("12345")),
        "the command ran on the committed file"
    );
    let out = r.stop();
    let line = stdout(&out);
    let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(v["size"], 12345, "{line}");
    assert_eq!(
        v["md5"],
        format!("{:x}", md5::compute(std::fs::read(&f).unwrap())),
        "{line}"
    );
    assert!(
        v["path"].as_str().unwrap().ends_with("file01.jpg"),
        "{line}"
    );
}

#[test]
fn send_legacy_facing_a_dead_consumers_leftovers_says_the_consumer_is_gone() {
    let (_held, env, ck, sk) = legacy_env();
    let r = legacy_recv(&env, ck, sk, &[]);
    let pid = r.pid();
    r.signal("KILL");
    drop(r);
    let f = env.file("a.bin", 1000);
    let mut c = legacy_send(ck, sk);
    c.arg(&f);
    let o = run_bounded(c, Duration::from_secs(20));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(69), "{err}");
    assert!(err.contains(&format!("consumer (pid {pid})")), "{err}");
    assert!(err.contains("is gone"), "{err}");
    assert!(!err.contains("mid-transfer"), "{err}");
}

#[test]
fn md5_producers_at_once_swap_replies_at_worst_and_none_waits_for_ever() {
    let (_held, env, ck, sk) = legacy_env();
    let _r = legacy_recv(&env, ck, sk, &["-m", "-q"]);
    let a = env.file("a.bin", 200_000);
    let b = env.file("b.bin", 300_000);
    for round in 0..6 {
        let ps = [
            spawn_producer(ck, sk, &a, true),
            spawn_producer(ck, sk, &b, true),
        ];
        for mut p in ps {
            let ended = wait_until(Duration::from_secs(6), || {
                p.try_wait().ok().flatten().is_some()
            });
            let state = sem_state(ck, sk);
            let _ = p.kill();
            let _ = p.wait();
            assert!(
                ended,
                "round {round}: a producer waited for its reply for 6 s ({state})"
            );
        }
        let mut p = spawn_producer(ck, sk, &a, true);
        let ended = wait_until(Duration::from_secs(10), || {
            p.try_wait().ok().flatten().is_some_and(|s| s.success())
        });
        let _ = p.kill();
        let _ = p.wait();
        assert!(ended, "round {round}: a lone producer did not get through");
    }
}

/// The two semaphores' values, waiters and last pids, for a failure's message.
fn sem_state(ck: Key, sk: Key) -> String {
    let one = |k: Key| {
        SemSet::open(k).map_or("gone".into(), |s| {
            format!(
                "value {:?} ncount {:?} zcount {:?} last pid {:?}",
                s.value(0).ok(),
                s.waiting(0).ok(),
                s.zero_waiting(0).ok(),
                s.last_pid(0).ok()
            )
        })
    };
    format!("content: {}; size: {}", one(ck), one(sk))
}

/// What `clean --dry-run` answers for a native channel whose receiver lives.
fn env_native_dry_run_code() -> Option<i32> {
    let env = Env::new();
    let _r = env.recv(&[]);
    run_bounded(env.cmd(&["clean", "--dry-run"]), Duration::from_secs(10))
        .status
        .code()
}

#[test]
fn a_killed_recv_legacy_is_taken_over_by_the_next_and_a_stopped_one_is_not() {
    let (_held, env, ck, sk) = legacy_env();
    let r = legacy_recv(&env, ck, sk, &[]);
    // Stopped, it is still attached: the next one is refused and the first left alone.
    r.signal("STOP");
    let mut c = Command::new(BIN);
    c.args(["recv", "--legacy", "--key", &ck.0.to_string()])
        .args(["--size-key", &sk.0.to_string(), "--dir"])
        .arg(env.out());
    let o = run_bounded(c, Duration::from_secs(10));
    exits(&o, 75);
    r.signal("CONT");
    // Killed, it leaves its objects: the next takes the keys over, says so, and serves.
    let pid = r.pid();
    r.signal("KILL");
    drop(r);
    assert!(
        Shm::open(ck).is_ok(),
        "the dead consumer's objects are left"
    );
    let r2 = legacy_recv(&env, ck, sk, &[]);
    // The dead consumer's size semaphore was up too: wait for the new objects.
    let new_pid = r2.pid();
    assert!(wait_until(Duration::from_secs(10), || {
        Shm::open(ck)
            .and_then(|s| s.stat())
            .is_ok_and(|st| st.cpid == new_pid)
            && SemSet::open(sk).and_then(|s| s.value(0)).unwrap_or(0) == 1
    }));
    let f = env.file("a.bin", 1000);
    let mut c = legacy_send(ck, sk);
    c.arg(&f);
    let o = run_bounded(c, Duration::from_secs(20));
    exits(&o, 0);
    let out = r2.stop();
    let err = stderr(&out);
    assert!(
        err.contains(&format!("a consumer (pid {pid}) had died")),
        "{err}"
    );
    assert_eq!(listing(&env.out()), ["file01.jpg"]);
}

/// Removes a path in /dev/shm when dropped (a lock planted or held by a test).
struct Planted(std::path::PathBuf);

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_turn_lock_that_is_a_link_a_fifo_or_another_users_is_refused_at_once_and_a_held_one_within_wait()
 {
    let (_held, env, ck, sk) = legacy_env();
    let _r = legacy_recv(&env, ck, sk, &[]);
    let lock = std::path::PathBuf::from(format!("/dev/shm/.shmxfer-legacy-{:08x}.lock", ck.0));
    let _planted = Planted(lock.clone());
    let f = env.file("a.bin", 1000);
    let send = || {
        let mut c = legacy_send(ck, sk);
        c.args(["--wait", "1"]).arg(&f);
        let t = Instant::now();
        let o = run_bounded(c, Duration::from_secs(20));
        (o, t.elapsed())
    };
    let secret = env.path("secret");
    std::fs::write(&secret, b"root only").unwrap();
    let l = lock.display().to_string();
    for (plant, why) in [
        (
            format!("ln -s {} {l}", secret.display()),
            "a symbolic link (of nobody)",
        ),
        (format!("mkfifo {l}"), "not a regular file (of nobody)"),
        (
            format!("echo x > {l}; chmod 666 {l}"),
            "a file of nobody, not yours",
        ),
    ] {
        let _ = std::fs::remove_file(&lock);
        sh_as_nobody(&plant, std::path::Path::new("/"));
        let (o, took) = send();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(77), "{plant}: {err}");
        assert!(err.contains(why) && err.contains(&l), "{plant}: {err}");
        assert!(took < Duration::from_secs(2), "{plant}: {took:?}");
        assert_eq!(std::fs::read(&secret).unwrap(), b"root only");
    }
    // Held by another of our producers: said once, waited for up to --wait, then 75.
    let _ = std::fs::remove_file(&lock);
    let held = std::fs::File::create(&lock).unwrap();
    let held = nix::fcntl::Flock::lock(held, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let (o, took) = send();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(75), "{err}");
    assert_eq!(err.matches("has its turn").count(), 1, "{err}");
    assert!(err.contains("waiting for our turn"), "{err}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    drop(held);
    assert!(listing(&env.out()).is_empty());
}

#[test]
fn status_shows_a_legacy_channels_consumer_its_state_and_both_halves_at_either_key() {
    let (_held, env, ck, sk) = legacy_env();
    let r = legacy_recv(&env, ck, sk, &[]);
    let json = |key: Key| -> serde_json::Value {
        let o = shmxfer(&["status", "--json", "--key", &key.0.to_string()]);
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)))
    };
    for key in [ck, sk] {
        let j = json(key);
        let row = &j["legacy"][0];
        assert_eq!(row["content_key"], ck.0, "{j}");
        assert_eq!(row["size_key"], sk.0, "{j}");
        assert_eq!(row["receiver_pid"], r.pid(), "{j}");
        assert_eq!(row["state"], "idle", "{j}");
        // Both halves' objects, whichever key was asked for.
        let keys = json_keys(&j, "shm");
        assert!(
            keys.contains(&u64::from(ck.0)) && keys.contains(&u64::from(sk.0)),
            "{j}"
        );
        assert_eq!(j["sem"].as_array().unwrap().len(), 2, "{j}");
    }
    let text = stdout(&shmxfer(&["status", "--key", &sk.0.to_string()]));
    assert!(text.contains("original system channels"), "{text}");
    assert!(text.contains(&r.pid().to_string()), "{text}");
    r.signal("STOP");
    assert!(wait_until(Duration::from_secs(5), || json(ck)["legacy"][0]
        ["state"]
        == "stopped"));
    r.signal("CONT");
    let pid = r.pid();
    r.signal("KILL");
    drop(r);
    let j = json(ck);
    assert_eq!(j["legacy"][0]["state"], "stale", "{j}");
    assert_eq!(j["legacy"][0]["receiver_pid"], pid, "{j}");
}

/// `n` stand-in producers with MD5 at once, each sending its share of 60 files and sending a
/// file again until its producer exits 0, as the seed's users retry. Returns the first-try
/// successes and all attempts.
fn producers_at_once(env: &Env, ck: Key, sk: Key, n: usize) -> (usize, usize) {
    let files: Vec<_> = (0..60)
        .map(|i| env.file(&format!("p{n}_{i:02}"), 20_000 + i * 1_009))
        .collect();
    let shares: Vec<Vec<std::path::PathBuf>> = (0..n)
        .map(|p| files.iter().skip(p).step_by(n).cloned().collect())
        .collect();
    let counts = std::thread::scope(|s| {
        let runs: Vec<_> = shares
            .iter()
            .map(|share| {
                s.spawn(move || {
                    let (mut first, mut attempts) = (0, 0);
                    for f in share {
                        for attempt in 0.. {
                            assert!(attempt < 40, "{}: 40 attempts failed", f.display());
                            let mut p = spawn_producer(ck, sk, f, true);
                            let ok = wait_until(Duration::from_secs(30), || {
                                p.try_wait().ok().flatten().is_some()
                            });
                            let _ = p.kill();
                            let code = p.wait().unwrap().code();
                            assert!(
                                ok,
                                "{}: a producer hung ({})",
                                f.display(),
                                sem_state(ck, sk)
                            );
                            attempts += 1;
                            if code == Some(0) {
                                first += usize::from(attempt == 0);
                                break;
                            }
                        }
                    }
                    (first, attempts)
                })
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().unwrap())
            .collect::<Vec<_>>()
    });
    // Every file committed exactly once: a file committed for a producer that then failed
    // would be committed again by its retry.
    for f in &files {
        let want = std::fs::read(f).unwrap();
        assert_eq!(count_holding(&env.out(), &want), 1, "{}", f.display());
    }
    assert_eq!(listing(&env.out()).len(), 60, "nothing else was committed");
    counts
        .iter()
        .fold((0, 0), |(f, a), &(f2, a2)| (f + f2, a + a2))
}

#[test]
fn md5_producers_at_once_have_each_file_committed_once_and_only_when_told_verified() {
    for n in [2, 4] {
        let (_held, env, ck, sk) = legacy_env();
        let log = env.path("exec.log");
        let exec = ["--exec", "sh", "-c", "echo \"$SHMXFER_PATH\" >> \"$0\""];
        let mut flags = vec!["-m", "--json"];
        flags.extend(exec);
        flags.extend([log.to_str().unwrap(), ";"]);
        let r = legacy_recv(&env, ck, sk, &flags);
        let (first, attempts) = producers_at_once(&env, ck, sk, n);
        let out = r.stop();
        // --json and --exec hear of kept files only.
        assert_eq!(stdout(&out).lines().count(), 60, "{}", stdout(&out));
        let ran = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(ran.lines().count(), 60, "{ran}");
        eprintln!(
            "{n} producers: 60 files, {first} verified at the first try, {attempts} attempts"
        );
        let err = stderr(&out);
        let dropped = err.matches("not kept").count();
        assert_eq!(
            dropped,
            attempts - 60,
            "a drop said per failed attempt: {err}"
        );
    }
}

#[test]
fn a_consumer_that_may_not_see_its_producers_threads_still_keeps_their_md5_files() {
    // `recv --legacy -m` as nobody cannot read root's /proc/PID/task/*/syscall: it judges by
    // the queue's count, and a lone producer's files are kept and verified as before.
    let (_held, _env, ck, sk) = legacy_env();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(["recv", "--legacy", "-m", "-q", "--key", &ck.0.to_string()])
        .args(["--size-key", &sk.0.to_string(), "--dir"])
        .arg(dir.path())
        .current_dir("/")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let r = serving_consumer_at(c, sk);
    for i in 0..5u8 {
        let data = pattern(10_000 + usize::from(i), i);
        producer(ck, sk, &data, true).unwrap_or_else(|e| panic!("file {i}: {e}"));
        assert_eq!(count_holding(dir.path(), &data), 1, "file {i}");
    }
    let out = r.stop();
    assert!(!stderr(&out).contains("not kept"), "{}", stderr(&out));
}

#[test]
fn a_producer_without_md5_still_has_its_files_kept_by_an_md5_consumer() {
    // It never comes back for a reply, so it cannot have read another's: kept, as the
    // original consumer keeps it.
    let (_held, env, ck, sk) = legacy_env();
    let r = legacy_recv(&env, ck, sk, &["-m"]);
    for i in 0..3u8 {
        let data = pattern(30_000 + usize::from(i), i);
        producer(ck, sk, &data, false).unwrap_or_else(|e| panic!("file {i}: {e}"));
        assert!(
            wait_until(Duration::from_secs(10), || count_holding(&env.out(), &data)
                == 1),
            "file {i}"
        );
    }
    let out = r.stop();
    assert!(!stderr(&out).contains("not kept"), "{}", stderr(&out));
}
