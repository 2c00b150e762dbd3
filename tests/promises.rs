//! The README's promises at their edges: "verified" means the committed file holds the
//! sender's bytes, nothing wedges whatever the semaphores say or however the receiver is
//! stopped, and one signal ends a sender. The hostile user is a process of its own
//! (`tests/hostile_ipc.py`, run as `nobody` on a `--mode 0666` channel), writing the channel's
//! objects directly.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ipc::SemSet;
use common::proto::sem;
use common::*;

/// Runs the hostile helper as `nobody` with `args` (the key is the test's), and waits for it.
fn hostile(env: &Env, args: &[&str]) -> Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hostile_ipc.py");
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "/usr/bin/python3",
        script,
    ])
    .arg(args[0])
    .arg(env.key_arg())
    .args(&args[1..]);
    let o = run_bounded(c, Duration::from_secs(30));
    assert!(o.status.success(), "hostile helper: {}", stderr(&o));
    o
}

/// A child whose stderr is collected as it comes, so a test can wait for a line.
struct Watched {
    child: Child,
    err: Arc<Mutex<String>>,
}

impl Watched {
    fn spawn(c: Command) -> Watched {
        Watched::spawn_with(c, Stdio::null())
    }
    fn spawn_with(mut c: Command, stdin: Stdio) -> Watched {
        c.stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let err = Arc::new(Mutex::new(String::new()));
        let (pipe, sink) = (child.stderr.take().unwrap(), err.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Watched { child, err }
    }
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }
    fn says(&self, what: &str, limit: Duration) -> bool {
        wait_until(limit, || self.stderr().contains(what))
    }
    /// Waits up to `limit` for the exit; returns the code and when it came.
    fn exit_within(&mut self, limit: Duration) -> Option<i32> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Some(s) = self.child.try_wait().unwrap() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A receiver that is continued when the test ends, however it ends (a stopped process
/// ignores SIGTERM until continued).
struct Continue(i32);
impl Drop for Continue {
    fn drop(&mut self) {
        kill(self.0, "CONT");
    }
}

/// `shmxfer send --owner root PATH` as `nobody`, to this test's receiver (root's).
fn nobody_sends(env: &Env, path: &str) -> Output {
    as_nobody(&["send", "--key", &env.key_arg(), "--owner", "root", path])
}

fn sems(env: &Env) -> SemSet {
    SemSet::open(env.key).unwrap()
}

fn open_dir(env: &Env) {
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn another_user_cannot_write_the_bytes_a_sender_is_told_are_verified() {
    let env = Env::new();
    open_dir(&env);
    let input = env.file("photo.jpg", 100_000);
    let r = env.recv(&["--mode", "0666", "--keep-name"]);
    let _cont = Continue(r.pid());
    r.signal("STOP");
    let mut tx = Watched::spawn({
        let mut c = env.cmd(&["send", "-m"]);
        c.arg(&input);
        c
    });
    // The file's one chunk and its trailer are posted: the receiver has not looked yet.
    assert!(
        wait_until(Duration::from_secs(10), || sems(&env)
            .value(sem::FULL)
            .is_ok_and(|v| v >= 1)),
        "the sender never posted its chunk"
    );
    let said = stdout(&hostile(&env, &["tamper"]));
    for part in ["control: denied", "segment: denied", "segment read: denied"] {
        assert!(said.contains(part), "{part}: {said}");
    }
    r.signal("CONT");
    lands_intact(&mut tx, &input, &env.out().join("photo.jpg"));
}

#[test]
fn a_doorbell_silenced_or_rung_by_another_user_delays_a_transfer_by_a_slice_at_most() {
    let env = Env::new();
    open_dir(&env);
    let input = env.file("big.bin", 3 << 20);
    let _r = env.recv(&[
        "--mode",
        "0666",
        "--keep-name",
        "--slot-size",
        "64K",
        "--slots",
        "4",
    ]);
    for (num, value) in [
        (sem::EMPTY, 0),
        (sem::FULL, 0),
        (sem::REQ, 0),
        (sem::ACK, 0),
        (sem::FULL, 5),
        (sem::EMPTY, 30),
    ] {
        let (n, v) = (num.to_string(), value.to_string());
        let attacker = {
            let env_key = env.key_arg();
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hostile_ipc.py");
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .args(["/usr/bin/python3", script, "hold", &env_key, &n, &v, "1"]);
            c.spawn().unwrap()
        };
        let t = Instant::now();
        let o = env.send(&["-m", input.to_str().unwrap()]);
        let took = t.elapsed();
        finish(attacker, Duration::from_secs(10));
        assert_eq!(
            o.status.code(),
            Some(0),
            "sem {num} = {value}: {}",
            stderr(&o)
        );
        assert!(
            same(&input, &env.out().join("big.bin")),
            "sem {num} = {value}"
        );
        // The attacker holds the value for 1 s; what outlives it is bounded by slices.
        assert!(
            took < Duration::from_secs(3),
            "sem {num} = {value}: {took:?}"
        );
        std::fs::remove_file(env.out().join("big.bin")).unwrap();
    }
}

#[test]
fn a_scribbled_header_or_rendezvous_disables_nothing() {
    let env = Env::new();
    open_dir(&env);
    let input = env.file("a.bin", 200_000);
    let _r = env.recv(&["--mode", "0666", "--keep-name"]);
    let said = stdout(&hostile(&env, &["scribble"]));
    assert!(said.contains("control: denied"), "{said}");
    let t = Instant::now();
    let o = env.send(&["-m", "--wait", "5", input.to_str().unwrap()]);
    exits(&o, 0);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(same(&input, &env.out().join("a.bin")));
}

#[test]
fn a_zeroed_receiver_mark_does_not_turn_another_users_sender_away() {
    let env = Env::new();
    open_dir(&env);
    let input = env.file("a.bin", 50_000);
    std::fs::set_permissions(&input, std::fs::Permissions::from_mode(0o644)).unwrap();
    let _r = env.recv(&["--mode", "0666", "--keep-name"]);
    hostile(&env, &["setval", &sem::RECEIVER.to_string(), "0"]);
    let o = nobody_sends(&env, input.to_str().unwrap());
    exits(&o, 0);
    assert!(same(&input, &env.out().join("a.bin")));
    // And the receiver raised its mark again.
    assert!(wait_until(Duration::from_secs(3), || sems(&env)
        .value(sem::RECEIVER)
        .is_ok_and(|v| v == 1)));
}

#[test]
fn a_turn_stolen_at_the_rendezvous_is_never_verified_and_ends_with_the_thief() {
    let env = Env::new();
    open_dir(&env);
    let input = env.file("a.bin", 300_000);
    let _r = env.recv(&["--mode", "0666", "--keep-name"]);
    let thief = {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hostile_ipc.py");
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["/usr/bin/python3", script, "steal", &env.key_arg(), "2"]);
        c.spawn().unwrap()
    };
    std::thread::sleep(Duration::from_millis(300));
    let o = env.send(&["-m", "--wait", "10", input.to_str().unwrap()]);
    let err = stderr(&o);
    match o.status.code() {
        Some(0) => assert!(same(&input, &env.out().join("a.bin")), "{err}"),
        Some(75) => {
            assert!(err.contains("in our place"), "{err}");
            assert!(!env.out().join("a.bin").exists());
        }
        c => panic!("exit {c:?}: {err}"),
    }
    let t = Instant::now();
    finish(thief, Duration::from_secs(10));
    let o = env.send(&["-m", "--wait", "5", input.to_str().unwrap()]);
    exits(&o, 0);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[test]
fn a_sender_that_gave_up_on_a_stopped_receiver_never_has_its_file_committed() {
    let env = Env::new();
    let input = env.file("a.bin", 100_000);
    // Stopped before it admitted anyone: the sender gives up, and the retry is the only copy.
    let r = env.recv(&["--keep-name"]);
    let _cont = Continue(r.pid());
    r.signal("STOP");
    let o = env.send(&["-m", "--wait", "1", input.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(75), "{err}");
    assert!(err.contains("withdrawn"), "{err}");
    r.signal("CONT");
    let o = env.send(&["-m", "--wait", "5", input.to_str().unwrap()]);
    exits(&o, 0);
    let out = r.stop();
    assert_eq!(listing(&env.out()), ["a.bin"], "{}", stderr(&out));
}

#[test]
fn a_file_withdrawn_while_the_receiver_was_stopped_mid_file_is_dropped_when_it_continues() {
    let env = Env::new();
    let r = env.recv(&["--keep-name"]);
    let _cont = Continue(r.pid());
    // The sender is admitted and its request taken; its input (a pipe) holds it back.
    let c = env.cmd(&["send", "-m", "--wait", "1", "--name", "late.bin", "-"]);
    let mut tx = Watched::spawn_with(c, Stdio::piped());
    let mut input = tx.child.stdin.take().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || channel(env.key)
            .and_then(|c| c.transfer)
            .is_some_and(|t| t.name == "late.bin")),
        "the receiver never took the request"
    );
    r.signal("STOP");
    // The whole file follows, then the sender waits for an answer that cannot come in time.
    std::io::Write::write_all(&mut input, &vec![7u8; 50_000]).unwrap();
    drop(input);
    let code = tx.exit_within(Duration::from_secs(10));
    let err = tx.stderr();
    assert_eq!(code, Some(75), "{err}");
    assert!(err.contains("withdrawn"), "{err}");
    r.signal("CONT");
    // It takes the rest of the file, finds it withdrawn, drops it, and waits for the next.
    assert!(wait_until(Duration::from_secs(10), || channel_state(
        env.key
    ) == Some(
        shmxfer::inventory::ChannelState::Idle
    )));
    let out = r.stop();
    assert!(listing(&env.out()).is_empty(), "{}", stderr(&out));
    assert!(stderr(&out).contains("withdrew"), "{}", stderr(&out));
}

#[test]
fn the_senders_uid_reaches_json_and_exec_and_allow_user_refuses_other_users() {
    let env = Env::new();
    open_dir(&env);
    let input = env.file("a.bin", 10_000);
    std::fs::set_permissions(&input, std::fs::Permissions::from_mode(0o644)).unwrap();
    let uids = env.path("uids");
    let r = env.recv(&[
        "--mode",
        "0666",
        "--json",
        "--allow-user",
        "root",
        "-x",
        "sh",
        "-c",
        &format!("echo \"$SHMXFER_SENDER_UID\" >> {}", uids.display()),
        ";",
    ]);
    let o = env.send(&[input.to_str().unwrap()]);
    exits(&o, 0);
    let o = nobody_sends(&env, input.to_str().unwrap());
    exits(&o, 65);
    says(&o, "accepts no files from");
    let out = r.stop();
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{}", stdout(&out));
    assert_eq!(lines[0]["sender_uid"], 0);
    assert_eq!(std::fs::read_to_string(&uids).unwrap(), "0\n");
    says(&out, "nobody (uid 65534)");
}

#[test]
fn a_gate_surplus_left_by_another_user_wedges_nothing() {
    let env = Env::new();
    open_dir(&env);
    let a = env.file("a.bin", 300_000);
    let b = env.file("b.bin", 200_000);
    let _r = env.recv(&["--mode", "0666", "--keep-name"]);
    hostile(&env, &["gate", "1"]);
    for f in [&a, &b] {
        let o = env.send(&[f.to_str().unwrap()]);
        exits(&o, 0);
    }
    assert!(same(&a, &env.out().join("a.bin")));
    assert!(same(&b, &env.out().join("b.bin")));
}

#[test]
fn senders_let_through_a_forged_gate_never_share_a_session() {
    let env = Env::new();
    open_dir(&env);
    let _guard = HangGuard::new(env.key, Duration::from_secs(120));
    let _r = env.recv(&[
        "--mode",
        "0666",
        "--keep-name",
        "--slot-size",
        "64K",
        "--slots",
        "4",
    ]);
    let inputs = batches(&env, "s", 4, 8, 600_000);
    let forger = {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hostile_ipc.py");
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args([
                "/usr/bin/python3",
                script,
                "forge-gate",
                &env.key_arg(),
                "60",
            ]);
        Watched::spawn(c)
    };
    let mut senders: Vec<Watched> = inputs
        .iter()
        .enumerate()
        .map(|(i, files)| {
            let mut c = env.cmd(&["send", "--wait", "30"]);
            if i % 2 == 0 {
                c.arg("-m");
            }
            c.args(files);
            Watched::spawn(c)
        })
        .collect();
    for (s, files) in senders.iter_mut().zip(&inputs) {
        let code = s.exit_within(Duration::from_secs(60));
        assert_eq!(code, Some(0), "a sender failed or hung: {}", s.stderr());
        for f in files {
            let got = env.out().join(f.file_name().unwrap());
            assert!(same(f, &got), "{} arrived with other bytes", got.display());
        }
    }
    drop(forger);
    // Once the forging stops, the channel serves at once.
    let t = Instant::now();
    let o = env.send(&[inputs[0][0].to_str().unwrap()]);
    exits(&o, 0);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn a_file_rewritten_in_place_while_it_is_read_is_never_committed() {
    let env = Env::new();
    let input = env.file("big.bin", 8 << 20);
    let r = env.recv(&["--keep-name", "--slot-size", "64K", "--slots", "4"]);
    let _cont = Continue(r.pid());
    r.signal("STOP");
    let mut tx = Watched::spawn({
        let mut c = env.cmd(&["send"]);
        c.arg(&input);
        c
    });
    // The ring is full: the sender waits for space, having read the first 256 KiB.
    assert!(
        wait_until(Duration::from_secs(10), || sems(&env)
            .value(sem::FULL)
            .is_ok_and(|v| v == 4)),
        "the sender never filled the ring"
    );
    // Same size, new bytes at both ends: one already read, one still to come.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&input)
        .unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"XXXX", 10).unwrap();
    f.write_all_at(b"YYYY", 6 << 20).unwrap();
    drop(f);
    r.signal("CONT");
    let code = tx.exit_within(Duration::from_secs(20));
    let err = tx.stderr();
    assert_eq!(code, Some(65), "{err}");
    assert!(err.contains("changed while it was read"), "{err}");
    assert!(
        !env.out().join("big.bin").exists(),
        "a torn file was committed"
    );
}

#[test]
fn a_stopped_receiver_is_named_within_2s_and_waited_for_until_it_continues() {
    let env = Env::new();
    let input = env.file("big.bin", 4 << 20);
    let r = env.recv(&["--keep-name", "--slot-size", "64K", "--slots", "4"]);
    let _cont = Continue(r.pid());
    // Stopped first (an idle receiver leaves its gate open: the sender is admitted, fills the
    // ring and then waits for it), so the test never races a quick transfer.
    r.signal("STOP");
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(format!("/proc/{}/stat", r.pid())).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|t| t.trim_start().starts_with('T'))
        })
    }));
    let t = Instant::now();
    let mut tx = Watched::spawn({
        let mut c = env.cmd(&["send"]);
        c.arg(&input);
        c
    });
    let said = format!("receiver {} is stopped", r.pid());
    assert!(tx.says(&said, Duration::from_secs(3)), "{}", tx.stderr());
    assert!(t.elapsed() < Duration::from_secs(2) + Duration::from_millis(500));
    let o = shmxfer(&["status", "--json", "--key", &env.key_arg()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["channels"][0]["state"], "stopped", "{v}");
    // Still waiting, not failed: a stopped process may be continued.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(tx.exit_within(Duration::ZERO), None, "{}", tx.stderr());
    r.signal("CONT");
    lands_intact(&mut tx, &input, &env.out().join("big.bin"));
}

#[test]
fn wait_bounds_a_stopped_receiver_with_exit_75_naming_it() {
    let env = Env::new();
    let input = env.file("small.bin", 1000);
    let r = env.recv(&[]);
    let _cont = Continue(r.pid());
    r.signal("STOP");
    let t = Instant::now();
    let o = env.send(&["--wait", "2", input.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(75), "{err}");
    assert!(
        err.contains(&format!("receiver {} is stopped", r.pid())),
        "{err}"
    );
    assert!(err.contains("SIGSTOP"), "{err}");
    assert!(!err.contains("another sender"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
}

/// Sends one `sig` once `ready` holds and returns the exit code, the time from the signal
/// to the exit, and stderr.
fn one_signal(
    mut tx: Watched,
    sig: &str,
    ready: impl FnMut() -> bool,
) -> (Option<i32>, Duration, String) {
    assert!(
        wait_until(Duration::from_secs(10), ready),
        "{}",
        tx.stderr()
    );
    kill(tx.pid(), sig);
    let t = Instant::now();
    let code = tx.exit_within(Duration::from_secs(10));
    (code, t.elapsed(), tx.stderr())
}

#[test]
fn one_signal_ends_a_sender_waiting_for_its_answer_within_2s() {
    for sig in ["TERM", "INT"] {
        let env = Env::new();
        let input = env.file("small.bin", 1000);
        let r = env.recv(&["--keep-name"]);
        let _cont = Continue(r.pid());
        r.signal("STOP");
        let tx = Watched::spawn({
            let mut c = env.cmd(&["send"]);
            c.arg(&input);
            c
        });
        let (code, took, err) = one_signal(tx, sig, || {
            sems(&env).value(sem::FULL).is_ok_and(|v| v >= 1)
        });
        assert_eq!(code, Some(130), "SIG{sig}: {err}");
        assert!(took < Duration::from_secs(2), "SIG{sig}: {took:?}");
        assert!(
            err.contains("small.bin: withdrawn, so the receiver will not commit it: interrupted"),
            "{err}"
        );
        // Withdrawn means never committed, also once the receiver goes on.
        r.signal("CONT");
        let out = r.stop();
        assert!(listing(&env.out()).is_empty(), "SIG{sig}: {}", stderr(&out));
    }
}

#[test]
fn one_signal_ends_a_sender_waiting_for_ring_space_within_2s() {
    let env = Env::new();
    let a = env.file("a.bin", 2 << 20);
    let b = env.file("b.bin", 10);
    let r = env.recv(&["--keep-name", "--slot-size", "64K", "--slots", "4"]);
    let _cont = Continue(r.pid());
    r.signal("STOP");
    let tx = Watched::spawn({
        let mut c = env.cmd(&["send"]);
        c.arg(&a).arg(&b);
        c
    });
    let (code, took, err) = one_signal(tx, "TERM", || {
        sems(&env).value(sem::FULL).is_ok_and(|v| v == 4)
    });
    assert_eq!(code, Some(130), "{err}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(err.contains("b.bin: not sent"), "{err}");
}

#[test]
fn one_signal_ends_a_sender_waiting_for_its_turn_or_a_receiver_within_2s() {
    let env = Env::new();
    let input = env.file("small.bin", 1000);
    // No receiver yet: waiting for one.
    let tx = Watched::spawn({
        let mut c = env.cmd(&["send", "--wait", "60"]);
        c.arg(&input);
        c
    });
    let t = Instant::now();
    let (code, took, err) = one_signal(tx, "TERM", || t.elapsed() > Duration::from_millis(300));
    assert_eq!(code, Some(130), "{err}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // Another sender holds the channel: waiting for our turn.
    let _r = env.recv(&[]);
    let holder = shmxfer::Sender::connect(env.key, &Default::default()).unwrap();
    let tx = Watched::spawn({
        let mut c = env.cmd(&["send"]);
        c.arg(&input);
        c
    });
    let t = Instant::now();
    let (code, took, err) = one_signal(tx, "INT", || t.elapsed() > Duration::from_millis(300));
    assert_eq!(code, Some(130), "{err}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    drop(holder);
}

fn state_seen(o: &Output) -> String {
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(o)));
    v["channels"][0]["state"]
        .as_str()
        .unwrap_or("none")
        .to_string()
}

#[test]
fn a_receiver_mark_zeroed_by_another_user_is_raised_again_and_never_makes_it_removable() {
    let env = Env::new();
    let _r = env.recv(&["--mode", "0666"]);
    let key = env.key_arg();
    let status = ["status", "--json", "--key", key.as_str()];
    assert_eq!(state_seen(&as_nobody(&status)), "idle");
    // Someone zeroes the receiver's liveness mark (semaphore 5).
    hostile(&env, &["setval", "5", "0"]);
    assert_eq!(state_seen(&shmxfer(&status)), "idle", "what the owner sees");
    let o = as_nobody(&["clean", "--stale", "--key", &key]);
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    // The receiver raises its mark again within a second: the other user sees it served.
    assert!(wait_until(Duration::from_secs(3), || state_seen(
        &as_nobody(&status)
    ) == "idle"));
    let o = as_nobody(&["send", "--key", &key, "--owner", "root", "/etc/hostname"]);
    exits(&o, 0);
    assert_eq!(
        state_seen(&shmxfer(&status)),
        "idle",
        "still there, still served"
    );
}

#[test]
fn a_second_signal_ends_a_sender_at_once_and_says_so() {
    let env = Env::new();
    let input = env.file("small.bin", 1000);
    let r = env.recv(&["--keep-name"]);
    let _cont = Continue(r.pid());
    r.signal("STOP");
    let mut tx = Watched::spawn({
        let mut c = env.cmd(&["send"]);
        c.arg(&input);
        c
    });
    assert!(wait_until(Duration::from_secs(10), || sems(&env)
        .value(sem::FULL)
        .is_ok_and(|v| v >= 1)));
    kill(tx.pid(), "TERM");
    kill(tx.pid(), "TERM");
    let t = Instant::now();
    let code = tx.exit_within(Duration::from_secs(10));
    let err = tx.stderr();
    assert_eq!(code, Some(130), "{err}");
    // At once: well before the first signal's 1 s for answers runs out.
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert!(err.contains("interrupted again: ended at once"), "{err}");
}

#[test]
fn senders_of_two_users_in_turn_each_get_their_own_bytes_and_uid() {
    let env = Env::new();
    open_dir(&env);
    let r = env.recv(&["--mode", "0666", "--json", "--keep-name"]);
    let mut expect = Vec::new();
    // The receiver keeps a session's segment for the next sender of the same user; a sender
    // of another user never takes it up, and the next one of the first user may again.
    for (i, nobody) in [false, false, true, true, false, true]
        .into_iter()
        .enumerate()
    {
        let f = env.file(&format!("f{i}.bin"), 200_000 + i * 1000);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let o = match nobody {
            true => as_nobody(&[
                "send",
                "-m",
                "--key",
                &env.key_arg(),
                "--owner",
                "root",
                f.to_str().unwrap(),
            ]),
            false => env.send(&["-m", f.to_str().unwrap()]),
        };
        assert_eq!(o.status.code(), Some(0), "{i}: {}", stderr(&o));
        assert!(same(&f, &env.out().join(format!("f{i}.bin"))), "{i}");
        expect.push(if nobody { 65534 } else { 0 });
    }
    let out = r.stop();
    let uids: Vec<i64> = stdout(&out)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["sender_uid"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(uids, expect);
}

#[test]
fn allow_group_takes_files_only_from_members_of_the_group() {
    let env = Env::new();
    open_dir(&env);
    let input = env.file("a.bin", 10_000);
    std::fs::set_permissions(&input, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = env.recv(&["--mode", "0666", "--allow-group", "root"]);
    let o = env.send(&[input.to_str().unwrap()]);
    exits(&o, 0);
    let o = nobody_sends(&env, input.to_str().unwrap());
    exits(&o, 65);
    let out = r.stop();
    assert_eq!(listing(&env.out()), ["file01.jpg"], "{}", stderr(&out));
}

#[test]
fn senders_of_one_user_racing_for_the_kept_segment_never_share_one() {
    // The receiver keeps each session's segment for the next sender of its user: four at
    // once race to take it up, and at most one may (or none: each then makes its own).
    let env = Env::new();
    let r = env.recv(&["--keep-name", "--slot-size", "64K", "--slots", "4"]);
    let mut sent = Vec::new();
    for round in 0..10 {
        let senders: Vec<_> = (0..4)
            .map(|i| {
                let f = env.file(&format!("r{round}s{i}.bin"), 150_000 + i * 4099 + round * 7);
                let mut c = env.cmd(&["send", "-m", "--wait", "20"]);
                c.arg(&f)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                (f, c.spawn().unwrap())
            })
            .collect();
        for (f, child) in senders {
            let o = finish(child, Duration::from_secs(60));
            exits(&o, 0);
            sent.push(f);
        }
    }
    drop(r);
    for f in &sent {
        assert!(same(f, &env.out().join(f.file_name().unwrap())), "{f:?}");
    }
    assert_eq!(listing(&env.out()).len(), sent.len());
}

/// The sender, once its receiver goes on, exits 0 and its file lands whole.
fn lands_intact(tx: &mut Watched, input: &std::path::Path, landed: &std::path::Path) {
    let code = tx.exit_within(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{}", tx.stderr());
    assert!(same(input, landed));
}
