//! One stop mechanism for every command (docs/architecture.md, "Signals and liveness"): a
//! SIGINT or SIGTERM ends each within 2 s with exit 130, having removed what it made.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn spawn(mut c: std::process::Command) -> Child {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.spawn().unwrap()
}

fn signal(child: &Child, sig: &str) {
    kill(child.id(), sig);
}

/// Sends `sig` and returns the exit code and how long it took to come.
fn stop(child: Child, sig: &str) -> (Option<i32>, Duration, String) {
    let t = Instant::now();
    signal(&child, sig);
    let out = finish(child, Duration::from_secs(10));
    (out.status.code(), t.elapsed(), stderr(&out))
}

#[test]
fn recv_stops_on_one_signal_and_removes_its_channel() {
    for sig in ["INT", "TERM"] {
        let env = Env::new();
        let mut r = env.recv(&[]);
        let child = r.child.take().unwrap();
        let (code, took, err) = stop(child, sig);
        assert_eq!(code, Some(130), "SIG{sig}: {err}");
        assert!(took < Duration::from_secs(2), "SIG{sig}: {took:?}");
        assert!(absent(env.key), "SIG{sig}: objects left");
    }
}

#[test]
fn recv_legacy_stops_on_one_signal_and_removes_its_objects() {
    for sig in ["INT", "TERM"] {
        let env = Env::new();
        let (_, child) = legacy_consumer(&env);
        let (code, took, err) = stop(child, sig);
        assert_eq!(code, Some(130), "SIG{sig}: {err}");
        assert!(took < Duration::from_secs(2), "SIG{sig}: {took:?}");
        assert!(absent(env.key) && absent(shmxfer::Key(env.key.0 + 1)));
    }
}

#[test]
fn send_legacy_waiting_on_a_stopped_consumer_stops_on_one_signal() {
    let env = Env::new();
    let (size_key, consumer) = legacy_consumer(&env);
    signal(&consumer, "STOP");
    let f = env.file("a.bin", 1000);
    let mut c = env.cmd(&["send", "--legacy", "--size-key", &size_key]);
    c.arg(&f);
    let tx = spawn(c);
    // It waits for the stopped consumer's hand-over, in a semop.
    assert!(wait_until(Duration::from_secs(10), || blocked_in(
        tx.id() as i32,
        libc::SYS_semtimedop
    ) || blocked_in(
        tx.id() as i32,
        libc::SYS_nanosleep
    ) || blocked_in(
        tx.id() as i32,
        libc::SYS_clock_nanosleep
    )));
    let (code, took, err) = stop(tx, "INT");
    signal(&consumer, "CONT");
    let (ended, _, _) = stop(consumer, "TERM");
    assert_eq!(ended, Some(130));
    assert_eq!(code, Some(130), "{err}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(listing(&env.out()).is_empty());
}

/// A `recv --legacy` on the Env's key and the next as its size key, once it takes files (the
/// size semaphore at 1), with that size key as an argument.
fn legacy_consumer(env: &Env) -> (String, Child) {
    let size_key = format!("{:#x}", env.key.0 + 1);
    let mut c = env.cmd(&["recv", "--legacy", "--size-key", &size_key, "--dir"]);
    c.arg(env.out());
    let child = spawn(c);
    assert!(wait_until(Duration::from_secs(10), || ipc::SemSet::open(
        shmxfer::Key(env.key.0 + 1)
    )
    .and_then(|s| s.value(0))
    .is_ok_and(|v| v == 1)));
    (size_key, child)
}
