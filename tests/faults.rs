//! Faults injected for real: killed peers, racing senders, objects removed underneath, a file
//! size limit, a file that changes while it is sent. Each asserts a generous bound only to
//! catch a hang; the measured times are printed (run with --nocapture) for the notes.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use shmxfer::inventory;

const HANG: Duration = Duration::from_secs(10);

fn channel_state(env: &Env) -> Option<serde_json::Value> {
    let snap = inventory::snapshot(inventory::Parts::ALL).ok()?;
    let c = snap.channels?.into_iter().find(|c| c.key == env.key.0)?;
    Some(serde_json::to_value(c).unwrap())
}

/// Starts a sender reading from a pipe we hold: it stays mid-transfer until we let go.
fn streaming_sender(env: &Env, first: usize) -> (Child, std::process::ChildStdin) {
    let (child, mut stdin) = spawn_fed(env.cmd(&["send", "--name", "stream.bin", "-"]));
    stdin.write_all(&pattern(first, 3)).unwrap();
    (child, stdin)
}

fn wait_busy(env: &Env, at_least: u64) {
    assert!(
        wait_until(HANG, || channel_state(env).is_some_and(|c| c["state"]
            == "busy"
            && c["transfer"]["bytes_done"].as_u64().unwrap_or(0) >= at_least)),
        "transfer never got going"
    );
}

fn no_partials(env: &Env) -> bool {
    listing(&env.out()).iter().all(|n| !n.starts_with('.'))
}

fn sender_dies_mid_transfer(sig: &str) {
    let env = Env::new();
    let _r = env.recv(&[]);
    let (child, stdin) = streaming_sender(&env, 3 << 20);
    let _g = PidGuard(child.id() as i32);
    wait_busy(&env, 1 << 20);
    let t = Instant::now();
    kill(child.id(), sig);
    // Keep stdin open: at EOF the sender could finish the file before its handler runs.
    assert!(wait_until(HANG, || channel_state(&env)
        .is_some_and(|c| c["state"] == "idle")
        && no_partials(&env)));
    let noticed = t.elapsed();
    let f = env.file("next", 1000);
    let o = env.send(&[f.to_str().unwrap()]);
    exits(&o, 0);
    eprintln!(
        "receiver recovered {noticed:?} after SIG{sig} to the sender; next send took {:?}",
        t.elapsed() - noticed
    );
    // A dead sender is noticed within a liveness slice (250 ms): seconds only on a hang.
    assert!(noticed < Duration::from_secs(5), "{noticed:?}");
    assert_eq!(
        listing(&env.out()),
        ["file01.jpg"],
        "only the next file may be there"
    );
    assert!(same(&f, &env.out().join("file01.jpg")));
    drop(stdin);
    let o = finish(child, HANG);
    assert!(!o.status.success());
}

#[test]
fn a_stop_reaches_a_sender_blocked_on_a_silent_pipe_at_once_and_is_reported() {
    // The pipe stays open and silent: only the signal can get the sender out of its read.
    let env = Env::new();
    let _r = env.recv(&[]);
    let (child, stdin) = streaming_sender(&env, 100 << 10);
    let _g = PidGuard(child.id() as i32);
    wait_busy(&env, 0);
    assert!(
        wait_until(Duration::from_secs(10), || blocked_in(
            child.id() as i32,
            libc::SYS_read
        )),
        "the sender never blocked reading its pipe"
    );
    let t = Instant::now();
    kill(child.id(), "TERM");
    let ended = wait_until(HANG, || {
        channel_state(&env).is_some_and(|c| c["state"] == "idle")
    });
    let took = t.elapsed();
    let o = finish(child, HANG);
    drop(stdin);
    assert!(ended, "the receiver never got the channel back");
    exits(&o, 130);
    // Settled by the main thread (it told the receiver), not by the 2 s watchdog, which says
    // "interrupted while reading".
    says(&o, "stream.bin: interrupted; it was not sent");
    assert!(listing(&env.out()).is_empty());
    eprintln!("settled {took:?} after SIGTERM");
    // One signal ends a send within 2 s (README): more is a hang.
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[test]
fn receiver_discards_and_recovers_when_the_sender_is_killed() {
    sender_dies_mid_transfer("KILL");
}

#[test]
fn receiver_discards_and_recovers_when_the_sender_is_interrupted() {
    sender_dies_mid_transfer("INT");
}

#[test]
fn receiver_discards_and_recovers_when_the_sender_is_terminated() {
    sender_dies_mid_transfer("TERM");
}

#[test]
fn senders_fail_fast_when_the_receiver_is_killed_and_a_new_receiver_takes_over() {
    let env = Env::new();
    let r = env.recv(&[]);
    // One sender blocked in read(2) on its own stdin mid-transfer, one queued behind it.
    let (streaming, stdin) = streaming_sender(&env, 2 << 20);
    let _g1 = PidGuard(streaming.id() as i32);
    wait_busy(&env, 1 << 20);
    let f = env.file("queued", 1000);
    let mut c = env.cmd(&["send", f.to_str().unwrap()]);
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let queued = c.spawn().unwrap();
    let _g2 = PidGuard(queued.id() as i32);
    // Queued: it connected and sleeps on the gate (a sender that never connected would also
    // exit 69, but saying there is no receiver).
    assert!(
        wait_until(Duration::from_secs(10), || ipc::SemSet::open(env.key)
            .and_then(|s| s.waiting(proto::sem::GATE))
            .is_ok_and(|n| n >= 1)),
        "the second sender never queued for the gate"
    );
    let t = Instant::now();
    r.signal("KILL");
    let a = finish(streaming, HANG);
    let ta = t.elapsed();
    let b = finish(queued, HANG);
    let tb = t.elapsed();
    drop(stdin);
    eprintln!(
        "after SIGKILL to the receiver: streaming sender exited in {ta:?}, queued sender in {tb:?}"
    );
    let gone = format!("the receiver (pid {}) on key", r.pid());
    for o in [&a, &b] {
        assert_eq!(o.status.code(), Some(69), "{}", stderr(o));
        assert!(
            stderr(o).contains(&gone) && stderr(o).contains("is gone"),
            "{}",
            stderr(o)
        );
    }
    // Fast: within a liveness slice or two (measured in milliseconds); seconds only on a hang.
    assert!(tb < Duration::from_secs(3), "{ta:?} {tb:?}");
    // A new receiver takes the key over without `clean`.
    let r2 = env.recv(&[]);
    let o = env.send(&[f.to_str().unwrap()]);
    exits(&o, 0);
    let out = r2.stop();
    says(&out, "taking the key over");
}

#[test]
fn after_the_receiver_dies_each_file_of_a_send_arrived_whole_or_is_named() {
    // Files are in flight when the receiver is killed: each must be in its output whole, or
    // named on stderr (the one whose fate is unknown with the error, the rest "not sent").
    let env = Env::new();
    // --fsync makes each commit slow enough that the send is still going when the kill comes.
    let r = env.recv(&["--keep-name", "--fsync"]);
    let files: Vec<_> = (0..150)
        .map(|i| env.file(&format!("f{i:03}"), 300_000 + i))
        .collect();
    let mut c = env.cmd(&["send"]);
    c.args(&files)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let child = c.spawn().unwrap();
    let _g = PidGuard(child.id() as i32);
    let arrived = || std::fs::read_dir(env.out()).map_or(0, |d| d.count());
    assert!(wait_until(HANG, || arrived() >= 10));
    r.signal("KILL");
    let o = finish(child, HANG);
    exits(&o, 69);
    let err = stderr(&o);
    let named = |name: &str| err.lines().any(|l| l.contains(&format!("/{name}: ")));
    let mut more = 0;
    for l in err.lines() {
        if let Some(n) = l
            .split("and ")
            .nth(1)
            .and_then(|t| t.strip_suffix(" more not sent"))
        {
            more = n.parse::<usize>().unwrap();
        }
    }
    let mut missing = 0;
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        let out = env.out().join(name);
        if out.exists() {
            assert!(same(&out, f), "{name} arrived with other bytes");
            assert!(!err.contains(&format!("/{name}: not sent")), "{err}");
        } else if !named(name) {
            missing += 1;
        }
    }
    // Past the first 20 "not sent", the rest are counted, not named.
    assert_eq!(missing, more, "files neither arrived nor named:\n{err}");
}

#[test]
fn racing_senders_each_file_arrives_once_and_whole() {
    let env = Env::new();
    let r = env.recv(&["-m"]);
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    let mut children = Vec::new();
    for s in 0..4 {
        let mut files = Vec::new();
        for i in 0..10 {
            let len = 1 + (s * 7919 + i * 104_729) % 3_000_000;
            let p = env.path(&format!("s{s}-{i}"));
            let data = pattern(len, (s * 10 + i) as u8);
            *expected
                .entry(format!("{:x}", md5::compute(&data)))
                .or_default() += 1;
            std::fs::write(&p, data).unwrap();
            files.push(p);
        }
        let mut c = env.cmd(&["send", "-m"]);
        c.args(&files)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        children.push(c.spawn().unwrap());
    }
    for c in children {
        let o = finish(c, Duration::from_secs(60));
        exits(&o, 0);
    }
    drop(r);
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    let names = listing(&env.out());
    assert_eq!(names.len(), 40, "{names:?}");
    for n in names {
        *got.entry(format!(
            "{:x}",
            md5::compute(std::fs::read(env.out().join(n)).unwrap())
        ))
        .or_default() += 1;
    }
    assert_eq!(got, expected);
}

fn ids(env: &Env) -> (i32, i32, i32) {
    let ch = channel_state(env).unwrap();
    (
        ch["control_id"].as_i64().unwrap() as i32,
        ch["rendezvous_id"].as_i64().unwrap() as i32,
        ch["sem_id"].as_i64().unwrap() as i32,
    )
}

#[test]
fn removing_the_semaphores_under_an_idle_receiver_ends_it_with_an_error() {
    let env = Env::new();
    let r = env.recv(&[]);
    let (_, _, sem) = ids(&env);
    Command::new("ipcrm")
        .args(["-s", &sem.to_string()])
        .status()
        .unwrap();
    let out = r.wait(HANG);
    exits(&out, 69);
    assert!(stderr(&out).contains("removed"), "{}", stderr(&out));
    assert!(
        ipc::Shm::open(env.key).is_err(),
        "the receiver left its segments"
    );
}

#[test]
fn removing_only_the_segments_under_an_idle_receiver_ends_it_within_seconds() {
    // Senders can no longer find the channel, and nothing would wake the receiver to tell it.
    let env = Env::new();
    let r = env.recv(&[]);
    let (control, _, _) = ids(&env);
    let t = Instant::now();
    Command::new("ipcrm")
        .args(["-m", &control.to_string()])
        .status()
        .unwrap();
    let out = r.wait(HANG);
    let took = t.elapsed();
    println!("idle receiver noticed its segment gone in {took:?}");
    // It looks every second (docs/protocol.md, "No busy waiting").
    assert!(took < Duration::from_secs(5), "{took:?}");
    exits(&out, 69);
    assert!(stderr(&out).contains("removed"), "{}", stderr(&out));
    assert!(ipc::SemSet::open(env.key).is_err(), "semaphores left");
    assert!(
        ipc::Shm::open(shmxfer::Key(env.key.0 + 1)).is_err(),
        "rendezvous segment left"
    );
}

#[test]
fn removing_the_channel_mid_transfer_fails_both_sides_cleanly() {
    let env = Env::new();
    let r = env.recv(&[]);
    let (child, stdin) = streaming_sender(&env, 2 << 20);
    let _g = PidGuard(child.id() as i32);
    wait_busy(&env, 1 << 20);
    let (control, content, sem) = ids(&env);
    Command::new("ipcrm")
        .args([
            "-m",
            &control.to_string(),
            "-m",
            &content.to_string(),
            "-s",
            &sem.to_string(),
        ])
        .status()
        .unwrap();
    let o = finish(child, HANG);
    drop(stdin);
    exits(&o, 69);
    let out = r.wait(HANG);
    exits(&out, 69);
    assert!(no_partials(&env), "{:?}", listing(&env.out()));
}

#[test]
fn a_file_size_limit_fails_the_transfer_and_the_receiver_keeps_serving() {
    let env = Env::new();
    let mut c = Command::new("prlimit");
    c.arg("--fsize=1000000")
        .arg(BIN)
        .args(["recv", "--key", &env.key_arg(), "--dir"])
        .arg(env.out());
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let _r = Receiver {
        child: Some(c.spawn().unwrap()),
    };
    let big = env.file("big", 3_000_000);
    let o = env.send(&["--wait", "10", big.to_str().unwrap()]);
    exits(&o, 74);
    assert!(stderr(&o).contains("File too large"), "{}", stderr(&o));
    assert!(no_partials(&env));
    let small = env.file("small", 1000);
    let o = env.send(&[small.to_str().unwrap()]);
    exits(&o, 0);
    assert_eq!(listing(&env.out()), ["file01.jpg"]);
}

fn file_changes_while_sent(change: impl FnOnce(&std::path::Path)) {
    let env = Env::new();
    let r = env.recv(&["--slot-size", "64K", "--slots", "2"]);
    let f = env.file("moving", 20 << 20);
    // Freeze the receiver with its gate open: the sender gets in, announces the size and then
    // waits for an answer, so the file can be changed at a known point.
    r.signal("STOP");
    let mut c = env.cmd(&["send", f.to_str().unwrap()]);
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let child = c.spawn().unwrap();
    let _g = PidGuard(child.id() as i32);
    // The request is posted, and both slots are full: the sender waits for ring space.
    let sems = ipc::SemSet::open(env.key).unwrap();
    assert!(wait_until(HANG, || sems
        .value(proto::sem::FULL)
        .is_ok_and(|v| v == 2)
        && sems.value(proto::sem::REQ).is_ok_and(|v| v == 1)));
    change(&f);
    r.signal("CONT");
    let o = finish(child, Duration::from_secs(30));
    exits(&o, 65);
    says(&o, "changed while it was read");
    assert!(wait_until(HANG, || channel_state(&env)
        .is_some_and(|c| c["state"] == "idle")));
    assert!(listing(&env.out()).is_empty(), "{:?}", listing(&env.out()));
}

#[test]
fn a_file_that_shrinks_while_sent_is_reported_and_not_written() {
    file_changes_while_sent(|f| {
        std::fs::File::options()
            .write(true)
            .open(f)
            .unwrap()
            .set_len(10 << 20)
            .unwrap()
    });
}

#[test]
fn a_file_that_grows_while_sent_is_reported_and_not_written() {
    file_changes_while_sent(|f| {
        std::fs::File::options()
            .append(true)
            .open(f)
            .unwrap()
            .write_all(b"more")
            .unwrap()
    });
}

#[test]
fn sigterm_to_the_receiver_mid_transfer_discards_the_partial_and_tells_the_sender() {
    let env = Env::new();
    let r = env.recv(&[]);
    let (child, stdin) = streaming_sender(&env, 2 << 20);
    let _g = PidGuard(child.id() as i32);
    wait_busy(&env, 1 << 20);
    let t = Instant::now();
    let out = r.stop();
    exits(&out, 130);
    let o = finish(child, HANG);
    let told = t.elapsed();
    eprintln!("sender told {told:?} after SIGTERM to the receiver");
    // The receiver removes its semaphores at once, which wakes the sender: seconds are a hang.
    assert!(told < Duration::from_secs(5), "{told:?}");
    drop(stdin);
    exits(&o, 69);
    assert!(listing(&env.out()).is_empty(), "{:?}", listing(&env.out()));
    assert!(absent(env.key));
}
