//! Test helpers: a unique key per test, a receiver child that is always stopped, and a guard
//! that removes every IPC object at the test's keys, also when the test fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub mod ipc;
pub mod proto;

use ipc::{SemSet, Shm};
use shmxfer::Key;
use shmxfer::inventory::{self, ChannelState};

pub const BIN: &str = env!("CARGO_BIN_EXE_shmxfer");

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A key of this test's own: from the process id and a counter, stepping by 4 so KEY+1 (the
/// content segment) never meets another test's key.
pub fn unique_key() -> Key {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    Key(0x6000_0000 | ((std::process::id() & 0xffff) << 12) | ((n & 0x3ff) << 2))
}

/// Removes, when dropped, the IPC objects this test made at KEY and KEY+1: only those at a key
/// that was free when the guard was made (checked per object kind), so created while the test
/// ran, by it or the processes it started (a receiver run as `nobody` included). An object
/// that was there before the test is never touched.
pub struct KeyGuard {
    key: Key,
    /// Per key (KEY, KEY+1): whether a segment and a semaphore set were absent at the start.
    free: [(bool, bool); 2],
}

impl KeyGuard {
    pub fn new(key: Key) -> KeyGuard {
        let free = [key, Key(key.0 + 1)].map(|k| (Shm::open(k).is_err(), SemSet::open(k).is_err()));
        KeyGuard { key, free }
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        for (k, (shm_free, sem_free)) in [self.key, Key(self.key.0 + 1)].into_iter().zip(self.free)
        {
            if let Ok(s) = Shm::open(k)
                && shm_free
            {
                let _ = s.remove();
            }
            if let Ok(s) = SemSet::open(k)
                && sem_free
            {
                let _ = s.remove();
            }
        }
    }
}

/// Removes a key's objects if the test is still running after `limit`: whatever waits on
/// them then fails with `EIDRM`, so a hang becomes a failure (and the test still cleans up).
/// Dropping the guard disarms it.
pub struct HangGuard(Option<std::sync::mpsc::Sender<()>>);

impl HangGuard {
    pub fn new(key: Key, limit: Duration) -> HangGuard {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // Made now, so it knows what was at the key before the test.
        let guard = KeyGuard::new(key);
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!(
                    "still running after {limit:?}: removing key {:#x}'s objects",
                    key.0
                );
                drop(guard);
            } else {
                std::mem::forget(guard);
            }
        });
        HangGuard(Some(tx))
    }
}

impl Drop for HangGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// A temporary directory plus a key, for one test.
pub struct Env {
    pub key: Key,
    pub dir: tempfile::TempDir,
    _guard: KeyGuard,
}

impl Env {
    pub fn new() -> Env {
        let key = unique_key();
        Env {
            key,
            dir: tempfile::tempdir().unwrap(),
            _guard: KeyGuard::new(key),
        }
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    pub fn out(&self) -> PathBuf {
        self.path("out")
    }
    pub fn key_arg(&self) -> String {
        format!("{:#x}", self.key.0)
    }
    /// `shmxfer recv --key KEY REST` in bash, in the scratch folder: REST carries the rest of
    /// the pipeline. Its stderr is piped, its stdout goes nowhere.
    pub fn piped_recv(&self, rest: &str) -> Child {
        Command::new("bash")
            .arg("-c")
            .arg(format!("{BIN} recv --key {} {rest}", self.key_arg()))
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
    /// Makes the folder `name` in the scratch folder.
    pub fn folder(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir(&p).unwrap();
        p
    }
    /// Writes `len` bytes of a repeatable pattern to `name`.
    pub fn file(&self, name: &str, len: usize) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, pattern(len, name.len() as u8)).unwrap();
        p
    }
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg(args[0])
            .arg("--key")
            .arg(self.key_arg())
            .args(&args[1..])
            .current_dir(self.dir.path());
        c.env_remove("SHMXFER_KEY");
        c
    }
    /// Starts a receiver with `args` and waits until its channel is up.
    pub fn recv(&self, args: &[&str]) -> Receiver {
        let mut c = self.cmd(&["recv", "--dir"]);
        c.arg(self.out())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = c.spawn().unwrap();
        let r = Receiver { child: Some(child) };
        // Ready means the gate is open: the receiver published "idle".
        let ready = wait_until(Duration::from_secs(10), || {
            channel_state(self.key) == Some(ChannelState::Idle)
        });
        assert!(ready, "the receiver never came up");
        r
    }
    /// Runs `shmxfer send ARGS`, bounded so a hang fails the test instead of the suite.
    pub fn send(&self, args: &[&str]) -> Output {
        let mut c = self.cmd(&["send"]);
        c.args(args);
        run_bounded(c, Duration::from_secs(60))
    }
}

/// The state of the channel at `key`, as `shmxfer status` would show it (the library's
/// listing), if there is one.
pub fn channel_state(key: Key) -> Option<ChannelState> {
    channel(key).map(|c| c.state)
}

/// The channel at `key` as the library's listing shows it.
pub fn channel(key: Key) -> Option<inventory::ChannelRow> {
    let parts = inventory::Parts {
        channels: true,
        ..inventory::Parts::default()
    };
    inventory::snapshot(parts)
        .ok()?
        .channels?
        .into_iter()
        .find(|c| c.key == key.0)
}

/// Whether a live receiver serves `key` (by the library's listing: anything but stale).
pub fn serving(key: Key) -> bool {
    channel_state(key).is_some_and(|s| s != ChannelState::Stale)
}

/// Whether nothing at all is at `key`.
pub fn absent(key: Key) -> bool {
    ipc::Shm::open(key).is_err() && ipc::SemSet::open(key).is_err()
}

/// The key a channel name hashes to (docs/protocol.md, "Objects").
pub fn named_key(name: &str) -> Key {
    name.parse::<shmxfer::Address>().unwrap().key
}

/// A channel name of this test process's own (`t<pid>-<what>`), its key, and the guard that
/// removes what the test leaves at that key.
pub fn own_name(what: &str) -> (String, Key, KeyGuard) {
    let name = format!("t{}-{what}", std::process::id());
    let key = named_key(&name);
    (name, key, KeyGuard::new(key))
}

/// A user's default key (docs/protocol.md, "Objects").
pub fn user_key(uid: u32) -> Key {
    Key(0x5300_0000 + 2 * (uid % (1 << 23)))
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// `shmxfer ARGS`, with no key from the environment.
pub fn bin(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("SHMXFER_KEY");
    c
}

/// Runs `shmxfer ARGS`, bounded so a hang fails the test.
pub fn shmxfer(args: &[&str]) -> Output {
    run_bounded(bin(args), Duration::from_secs(20))
}

pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Runs a command with no stdin, killing it if it outlives `limit`.
pub fn run_bounded(mut c: Command, limit: Duration) -> Output {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    finish(child, limit)
}

pub fn finish(mut child: Child, limit: Duration) -> Output {
    let t = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "command hung for {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A receiver child: stopped with SIGTERM (then SIGKILL) when dropped.
pub struct Receiver {
    pub child: Option<Child>,
}

impl Receiver {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }
    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
    }
    /// Sends SIGTERM and returns its output.
    pub fn stop(mut self) -> Output {
        self.signal("TERM");
        finish(self.child.take().unwrap(), Duration::from_secs(10))
    }
    /// Waits for it to exit on its own.
    pub fn wait(mut self, limit: Duration) -> Output {
        finish(self.child.take().unwrap(), limit)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            if !wait_until(Duration::from_secs(5), || {
                c.try_wait().ok().flatten().is_some()
            }) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn same(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

/// Files in DIR, sorted, hidden ones included (a leftover temporary file must show).
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Kills a process by pid when dropped (for children whose handle moved to a reader thread).
pub struct PidGuard(pub i32);

impl Drop for PidGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(self.0.to_string())
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether process `pid` is blocked in the system call numbered `nr` (`libc::SYS_read`…),
/// as `/proc/PID/syscall` shows: a state to wait for instead of sleeping.
pub fn blocked_in(pid: i32, nr: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/syscall")).is_ok_and(|s| {
        s.split_whitespace()
            .next()
            .and_then(|n| n.parse::<i64>().ok())
            == Some(nr)
    })
}

/// Whether process `ppid` has a child whose command name is `comm`.
pub fn has_child(ppid: i32, comm: &str) -> bool {
    std::fs::read_dir("/proc").is_ok_and(|d| {
        d.filter_map(Result::ok).any(|e| {
            std::fs::read_to_string(e.path().join("stat")).is_ok_and(|st| {
                let Some(close) = st.rfind(')') else {
                    return false;
                };
                let name = st.find('(').map(|o| &st[o + 1..close]);
                let ppid_field = st[close + 2..].split_whitespace().nth(1);
                name == Some(comm) && ppid_field == Some(&ppid.to_string())
            })
        })
    })
}

/// `shmxfer ARGS` as the user `nobody` (uid 65534), in `/`, bounded.
pub fn as_nobody(args: &[&str]) -> Output {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(args)
        .current_dir("/")
        .env_remove("SHMXFER_KEY");
    run_bounded(c, Duration::from_secs(20))
}

/// Runs `script` with `sh -e` as the user `nobody` (the hostile local user of the tests), in
/// `dir`, bounded; it must succeed.
pub fn sh_as_nobody(script: &str, dir: &Path) {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "/bin/sh",
        "-ec",
    ])
    .arg(script)
    .current_dir(dir);
    let o = run_bounded(c, Duration::from_secs(20));
    assert!(o.status.success(), "as nobody: {script}: {}", stderr(&o));
}

/// Asserts that a command exited with `code`, showing its stderr if not.
#[track_caller]
pub fn exits(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "{}", stderr(o));
}

/// Asserts that a command's stderr says `what`, showing all of it if not.
#[track_caller]
pub fn says(o: &Output, what: &str) {
    let err = stderr(o);
    assert!(err.contains(what), "stderr lacks {what:?}: {err}");
}

/// Sends signal `sig` (`INT`, `STOP`…) to process `pid`, as `kill -SIG PID` does.
/// A process already gone is no error.
pub fn kill(pid: impl std::fmt::Display, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// Starts `c` with its stdin a pipe of ours and its outputs collected.
pub fn spawn_fed(mut c: Command) -> (Child, std::process::ChildStdin) {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

/// `clean` succeeded and said "removed" of exactly `n` objects.
#[track_caller]
pub fn removed(o: &Output, n: usize) {
    assert!(o.status.success(), "{}", stderr(o));
    let said = stdout(o);
    let lines = said.lines().filter(|l| l.starts_with("removed")).count();
    assert_eq!(lines, n, "{said}");
}

/// The `"key"` of every object in `status --json`'s list `list` ("shm", "channels"…).
pub fn json_keys(v: &serde_json::Value, list: &str) -> Vec<u64> {
    let objects = v[list].as_array().map_or(&[][..], |a| a.as_slice());
    objects.iter().filter_map(|o| o["key"].as_u64()).collect()
}

/// `batches` lists of `per` files each, named `{prefix}{b}_{i}`, each a size of its own
/// from `base` up.
pub fn batches(
    env: &Env,
    prefix: &str,
    batches: usize,
    per: usize,
    base: usize,
) -> Vec<Vec<PathBuf>> {
    (0..batches)
        .map(|b| {
            (0..per)
                .map(|i| env.file(&format!("{prefix}{b}_{i:02}"), base + b * 7_001 + i * 13))
                .collect()
        })
        .collect()
}
