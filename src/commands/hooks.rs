//! `recv --exec`: a command run once per committed file, after the commit, never on a partial
//! file. Workers (`--jobs N`, default 1) take the files in arrival order from a queue, so the
//! receiver never waits for a command: a sender's exit means "committed", not "processed".

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::mechanisms::text::{escape, escape_path};

/// One committed file, as `--json` prints it and `--exec` sees it.
#[derive(Debug, Clone, Serialize)]
pub struct Committed {
    /// Where it was committed.
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    /// The sender's name for it (a relative path with `send -r`).
    #[serde(serialize_with = "lossy_bytes")]
    pub name: Vec<u8>,
    /// Its size.
    pub size: u64,
    /// Its MD5 in hex, when verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// The sender's pid, as it says.
    pub sender_pid: i32,
    /// The sender's uid, as the kernel records it (the creator of the segment the bytes came
    /// from); u32::MAX where the protocol has none (`--legacy`).
    #[serde(skip_serializing_if = "is_unknown_uid")]
    pub sender_uid: u32,
    /// The sender's mtime (Unix seconds, fractional), when it sent one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtime: Option<f64>,
}

fn is_unknown_uid(uid: &u32) -> bool {
    *uid == u32::MAX
}

fn lossy_path<S: serde::Serializer>(p: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

fn lossy_bytes<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

impl Committed {
    /// The environment a command gets: `SHMXFER_PATH`, `_NAME`, `_SIZE`, `_SENDER_PID`, and
    /// `_SENDER_UID`, `_MD5`, `_MTIME` when known.
    fn env(&self) -> Vec<(&'static str, OsString)> {
        let mut v = vec![
            ("SHMXFER_PATH", self.path.clone().into_os_string()),
            ("SHMXFER_NAME", OsString::from_vec(self.name.clone())),
            ("SHMXFER_SIZE", self.size.to_string().into()),
            ("SHMXFER_SENDER_PID", self.sender_pid.to_string().into()),
        ];
        if self.sender_uid != u32::MAX {
            v.push(("SHMXFER_SENDER_UID", self.sender_uid.to_string().into()));
        }
        if let Some(m) = &self.md5 {
            v.push(("SHMXFER_MD5", m.into()));
        }
        if let Some(t) = self.mtime {
            v.push(("SHMXFER_MTIME", t.to_string().into()));
        }
        v
    }
}

/// `{}` in an argument becomes the committed path, `{/}` its file name.
fn substitute(arg: &OsStr, c: &Committed) -> OsString {
    // A sender chooses names: one starting with `-` would read as an option to the command.
    // As `find -execdir` does, such a name goes as `./-name` (the same file).
    let dashed = |b: &[u8]| -> Vec<u8> {
        match b.first() {
            Some(b'-') => [b"./".as_slice(), b].concat(),
            _ => b.to_vec(),
        }
    };
    let path = dashed(c.path.as_os_str().as_bytes());
    let base = dashed(c.path.file_name().map_or(&path[..], |n| n.as_bytes()));
    let (path, base) = (&path[..], &base[..]);
    let (a, mut out) = (arg.as_bytes(), Vec::new());
    let mut i = 0;
    while i < a.len() {
        if a[i..].starts_with(b"{/}") {
            out.extend_from_slice(base);
            i += 3;
        } else if a[i..].starts_with(b"{}") {
            out.extend_from_slice(path);
            i += 2;
        } else {
            out.push(a[i]);
            i += 1;
        }
    }
    OsString::from_vec(out)
}

/// The command runner: a queue and `jobs` workers.
pub struct Hooks {
    tx: Option<mpsc::Sender<Committed>>,
    /// The queue's other end, shared with the workers: a stop drains what no worker took.
    rx: Arc<Mutex<mpsc::Receiver<Committed>>>,
    workers: Vec<JoinHandle<()>>,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    failed: AtomicUsize,
    /// Files taken off the queue and not yet done, by the pid running for each.
    running: Mutex<HashMap<u32, PathBuf>>,
    /// Set on a stop: workers take nothing more off the queue.
    stopping: std::sync::atomic::AtomicBool,
    /// Files never started because of a stop.
    skipped: Mutex<Vec<PathBuf>>,
    /// The commands' stdout goes to our stderr (`--json` owns stdout).
    stdout_to_stderr: std::sync::atomic::AtomicBool,
}

impl Hooks {
    /// Starts `jobs` workers for `cmd` (program, then arguments).
    /// With `stdout_to_stderr` (under `--json`, whose stdout is a stream of objects), the
    /// commands write their standard output to the receiver's stderr.
    pub fn start(cmd: Vec<OsString>, jobs: usize, stdout_to_stderr: bool) -> Hooks {
        let (tx, rx) = mpsc::channel::<Committed>();
        let rx = Arc::new(Mutex::new(rx));
        let state = Arc::new(State::default());
        let cmd = Arc::new(cmd);
        state
            .stdout_to_stderr
            .store(stdout_to_stderr, Ordering::SeqCst);
        let workers = (0..jobs.max(1))
            .map(|_| {
                let (rx, state, cmd) = (rx.clone(), state.clone(), cmd.clone());
                std::thread::spawn(move || worker(&rx, &state, &cmd))
            })
            .collect();
        Hooks {
            tx: Some(tx),
            rx,
            workers,
            state,
        }
    }

    /// Queues the command for a committed file.
    pub fn run(&self, c: Committed) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(c);
        }
    }

    /// Waits for every queued command (the receiver ended on its own: `--once`). Returns how
    /// many failed.
    pub fn finish(mut self) -> usize {
        drop(self.tx.take());
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.state.failed.load(Ordering::SeqCst)
    }

    /// On a stop: starts nothing more (and says which files' commands will not run), waits up
    /// to `bound` for the commands running, then sends their process groups SIGTERM, and
    /// SIGKILL a second later; says what it does on stderr. Returns how many failed.
    pub fn stop(mut self, bound: Duration) -> usize {
        self.state.stopping.store(true, Ordering::SeqCst);
        drop(self.tx.take());
        // Queued files no worker took (every worker busy): never to run. An idle worker holds
        // the queue's lock and moves them to `skipped` itself.
        if let Ok(rx) = self.rx.try_lock() {
            while let Ok(c) = rx.try_recv() {
                if let Ok(mut s) = self.state.skipped.lock() {
                    s.push(c.path);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        self.say_skipped();
        let running = self.state.running.lock().map(|r| r.len()).unwrap_or(0);
        if running > 0 {
            crate::commands::term::warn(
                false,
                format_args!(
                    "waiting up to {}s for {running} running --exec command(s)",
                    bound.as_secs()
                ),
            );
        }
        let done = |h: &Hooks, limit: Duration| {
            let t = Instant::now();
            while t.elapsed() < limit && h.workers.iter().any(|w| !w.is_finished()) {
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        done(&self, bound);
        self.signal_running(nix::sys::signal::Signal::SIGTERM, "terminated it");
        done(&self, Duration::from_secs(1));
        self.signal_running(
            nix::sys::signal::Signal::SIGKILL,
            "it ignored SIGTERM: killed it",
        );
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.state.failed.load(Ordering::SeqCst)
    }

    /// Signals the process group of every command still running (each runs in a group of
    /// its own, so what it started goes too).
    fn signal_running(&self, sig: nix::sys::signal::Signal, what: &str) {
        if let Ok(r) = self.state.running.lock() {
            for (pid, path) in r.iter() {
                crate::commands::term::warn(
                    false,
                    format_args!("--exec for {} still running: {what}", escape_path(path)),
                );
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(*pid as i32), sig);
            }
        }
    }

    fn say_skipped(&self) {
        if let Ok(s) = self.state.skipped.lock()
            && !s.is_empty()
        {
            let list: Vec<String> = s.iter().map(|p| escape_path(p)).collect();
            crate::commands::term::warn(
                false,
                format_args!("--exec not run (stopped first) for: {}", list.join(", ")),
            );
        }
    }
}

fn worker(rx: &Mutex<mpsc::Receiver<Committed>>, state: &State, cmd: &[OsString]) {
    loop {
        let next = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(c) = next else { return };
        if state.stopping.load(Ordering::SeqCst) {
            if let Ok(mut s) = state.skipped.lock() {
                s.push(c.path);
            }
            continue;
        }
        if !run_one(state, cmd, &c) {
            state.failed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The command for one file: its environment, no stdin, a process group of its own, and its
/// stdout on our stderr when ours carries records.
fn command_for(
    state: &State,
    program: &OsStr,
    argv: impl Iterator<Item = OsString>,
    c: &Committed,
) -> Command {
    let mut command = Command::new(program);
    // The service manager's socket is the receiver's to speak on, not its commands'.
    command
        .args(argv)
        .envs(c.env())
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null());
    // A group of its own: a stop signals the command and whatever it started, and a Ctrl-C
    // at the terminal reaches the receiver, which decides.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    if state.stdout_to_stderr.load(Ordering::SeqCst) {
        use std::os::fd::AsFd;
        if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
            command.stdout(Stdio::from(fd));
        }
    }
    command
}

/// Runs the command for one file, reporting a failure on stderr; returns whether it succeeded.
fn run_one(state: &State, cmd: &[OsString], c: &Committed) -> bool {
    let mut argv = cmd.iter().map(|a| substitute(a, c));
    let Some(program) = argv.next() else {
        return false;
    };
    let shown = escape(program.as_bytes());
    let child = command_for(state, &program, argv, c).spawn();
    let mut child = match child {
        Ok(ch) => ch,
        Err(e) => {
            crate::commands::term::warn(
                false,
                format_args!(
                    "--exec: cannot run {shown} for {}: {}",
                    escape_path(&c.path),
                    crate::mechanisms::text::io_text(&e)
                ),
            );
            return false;
        }
    };
    if let Ok(mut r) = state.running.lock() {
        r.insert(child.id(), c.path.clone());
    }
    let status = child.wait();
    if let Ok(mut r) = state.running.lock() {
        r.remove(&child.id());
    }
    match status {
        Ok(s) if s.success() => true,
        Ok(s) => {
            crate::commands::term::warn(
                false,
                format_args!("--exec: {shown} for {} failed: {s}", escape_path(&c.path)),
            );
            false
        }
        Err(e) => {
            crate::commands::term::warn(
                false,
                format_args!("--exec: {shown}: {}", crate::mechanisms::text::io_text(&e)),
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_become_the_path_and_the_file_name() {
        let c = Committed {
            path: "out/photos/a b.jpg".into(),
            name: b"photos/a b.jpg".to_vec(),
            size: 3,
            md5: None,
            sender_pid: 1,
            sender_uid: 0,
            mtime: None,
        };
        assert_eq!(substitute(OsStr::new("{}"), &c), "out/photos/a b.jpg");
        assert_eq!(
            substitute(OsStr::new("thumbs/{/}.png"), &c),
            "thumbs/a b.jpg.png"
        );
        assert_eq!(substitute(OsStr::new("x{y}z"), &c), "x{y}z");
    }

    #[test]
    fn a_name_starting_with_a_dash_never_reads_as_an_option() {
        let c = Committed {
            path: "out/-rf".into(),
            name: b"-rf".to_vec(),
            size: 3,
            md5: None,
            sender_pid: 1,
            sender_uid: 0,
            mtime: None,
        };
        assert_eq!(substitute(OsStr::new("{/}"), &c), "./-rf");
        assert_eq!(substitute(OsStr::new("{}"), &c), "out/-rf");
        let d = Committed {
            path: "-out/x".into(),
            ..c
        };
        assert_eq!(substitute(OsStr::new("{}"), &d), "./-out/x");
    }
}
