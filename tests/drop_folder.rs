//! `send --watch` on a folder others may write, as a root watcher meets it: a hostile local
//! user (`nobody`) plants links, FIFOs, hard links and lists, and swaps files and
//! directories while the watcher is busy; and writers that are merely slow or unlucky. Nothing
//! outside the folder is read, written or removed; each complete version of each file
//! arrives once; nothing wedges. None of this may rest on `fs.protected_symlinks` or
//! `fs.protected_regular`: the attacks work through renames inside the folder.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// A test's drop folder (mode 1777, as a shared spool), a root-only file and directory
/// outside it, and a place of nobody's own to prepare things in.
struct Spool {
    env: Env,
    drop: PathBuf,
    secret: PathBuf,
    secret_dir: PathBuf,
    scratch: PathBuf,
}

const SECRET: &[u8] = b"ROOT ONLY: never leaves this host\n";

impl Spool {
    fn new() -> Spool {
        let env = Env::new();
        std::fs::set_permissions(env.dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
        let drop = env.path("drop");
        let scratch = env.path("scratch");
        for (d, mode) in [(&drop, 0o1777), (&scratch, 0o777)] {
            std::fs::create_dir(d).unwrap();
            std::fs::set_permissions(d, PermissionsExt::from_mode(mode)).unwrap();
        }
        let secret = env.path("secret");
        std::fs::write(&secret, SECRET).unwrap();
        std::fs::set_permissions(&secret, PermissionsExt::from_mode(0o600)).unwrap();
        let secret_dir = env.path("secret-dir");
        std::fs::create_dir(&secret_dir).unwrap();
        std::fs::write(secret_dir.join("victim.txt"), SECRET).unwrap();
        std::fs::set_permissions(&secret_dir, PermissionsExt::from_mode(0o700)).unwrap();
        Spool {
            env,
            drop,
            secret,
            secret_dir,
            scratch,
        }
    }

    /// A root `send --watch` of the folder, its output collected as it comes.
    fn watcher(&self, extra: &[&str]) -> Watcher {
        let mut c = self.env.cmd(&["send", "--watch", "--settle", "0.3"]);
        c.args(extra)
            .arg(&self.drop)
            .env("XDG_STATE_HOME", self.env.path("state"));
        Watcher::spawn(c)
    }

    /// Runs `script` with `sh` as `nobody`, in the scratch folder; it must succeed.
    fn nobody(&self, script: &str) {
        sh_as_nobody(script, &self.scratch);
    }

    /// Whether `name` arrives within 10 s.
    fn lands(&self, name: &str) -> bool {
        wait_until(Duration::from_secs(10), || self.arrived(name).is_some())
    }

    fn arrived(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.env.out().join(name)).ok()
    }

    /// Whether any file received holds the secret.
    fn leaked(&self) -> bool {
        listing(&self.env.out())
            .iter()
            .any(|n| self.arrived(n).is_some_and(|b| b == SECRET))
    }

    fn secret_intact(&self) -> bool {
        std::fs::read(&self.secret).is_ok_and(|b| b == SECRET)
            && std::fs::read(self.secret_dir.join("victim.txt")).is_ok_and(|b| b == SECRET)
    }
}

/// A watcher child whose stdout and stderr are collected as they come.
struct Watcher {
    child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
}

impl Watcher {
    fn spawn(mut c: Command) -> Watcher {
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let collect = |pipe: Box<dyn std::io::Read + Send>| {
            let sink = Arc::new(Mutex::new(String::new()));
            let s = sink.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut g = s.lock().unwrap();
                    g.push_str(&line);
                    g.push('\n');
                }
            });
            sink
        };
        let out = collect(Box::new(child.stdout.take().unwrap()));
        let err = collect(Box::new(child.stderr.take().unwrap()));
        Watcher { child, out, err }
    }
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    fn err(&self) -> String {
        self.err.lock().unwrap().clone()
    }
    fn out(&self) -> String {
        self.out.lock().unwrap().clone()
    }
    /// Waits until stderr holds `what`.
    fn said(&self, what: &str) -> bool {
        wait_until(Duration::from_secs(10), || self.err().contains(what))
    }
    /// Waits until it has posted a file and waits for the receiver's answer.
    fn awaits_answer(&self) -> bool {
        wait_until(Duration::from_secs(10), || {
            blocked_in(self.pid(), libc::SYS_semtimedop)
        })
    }
    /// SIGINT; its exit code and how long it took.
    fn interrupt(mut self) -> (Option<i32>, Duration, String) {
        let t = Instant::now();
        kill(self.pid(), "INT");
        let ok = wait_until(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        let took = t.elapsed();
        if !ok {
            let _ = self.child.kill();
        }
        let code = self.child.wait().unwrap().code();
        std::thread::sleep(Duration::from_millis(50));
        (code, took, self.err())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display())
}

#[test]
fn a_symlink_moved_in_is_skipped_with_a_line_and_its_target_never_sent() {
    let s = Spool::new();
    let _r = s.env.recv(&["--keep-name", "-q"]);
    let w = s.watcher(&[]);
    s.nobody(&format!(
        "ln -s {} l.txt && mv l.txt {}/l.txt && echo mine > {}/ok.txt",
        q(&s.secret),
        q(&s.drop),
        q(&s.drop)
    ));
    assert!(s.lands("ok.txt"));
    assert!(w.said("l.txt: a symbolic link; not sent"), "{}", w.err());
    // Each committed file is told on stdout: the skipped one is not among them.
    assert!(wait_until(Duration::from_secs(5), || w
        .out()
        .contains("ok.txt\t")));
    assert!(!w.out().contains("l.txt"), "{}", w.out());
    let (code, _, err) = w.interrupt();
    assert_eq!(code, Some(130), "{err}");
    assert!(!s.leaked(), "{:?}", listing(&s.env.out()));
    assert_eq!(
        err.matches("l.txt: a symbolic link").count(),
        1,
        "said once: {err}"
    );
}

#[test]
fn a_sent_list_planted_in_the_folder_is_neither_followed_nor_trusted() {
    let s = Spool::new();
    // A link where version 0.1 kept its list, and a list of nobody's own naming its report.
    let victim = s.env.path("victim");
    s.nobody(&format!(
        "ln -s {} {}/.shmxfer-sent && echo report > {}/report.pdf",
        q(&victim),
        q(&s.drop),
        q(&s.drop)
    ));
    let _r = s.env.recv(&["--keep-name", "-q"]);
    let w = s.watcher(&[]);
    assert!(s.lands("report.pdf"));
    drop(w);
    assert!(
        !victim.exists(),
        "created or appended to outside the folder"
    );
    std::fs::remove_file(s.drop.join(".shmxfer-sent")).unwrap();
    std::fs::remove_file(s.drop.join("report.pdf")).unwrap();

    // A regular list of another user, in a fresh state: not read, not written.
    let s = Spool::new();
    s.nobody(&format!(
        "printf 'report.pdf\\0' > {d}/.shmxfer-sent && echo theirs > {d}/report.pdf",
        d = q(&s.drop)
    ));
    let before = std::fs::read(s.drop.join(".shmxfer-sent")).unwrap();
    let _r = s.env.recv(&["--keep-name", "-q"]);
    let w = s.watcher(&[]);
    assert!(s.lands("report.pdf"), "{}", w.err());
    assert!(
        w.said(".shmxfer-sent: not a regular file of yours"),
        "{}",
        w.err()
    );
    drop(w);
    assert_eq!(std::fs::read(s.drop.join(".shmxfer-sent")).unwrap(), before);
}

#[test]
fn a_fifo_for_the_list_or_for_a_queued_file_never_wedges_the_watcher() {
    let s = Spool::new();
    s.nobody(&format!("mkfifo {}/.shmxfer-sent", q(&s.drop)));
    let r = s.env.recv(&["--keep-name", "-q"]);
    let w = s.watcher(&[]);
    // Busy with a.txt (the receiver stopped), while b.txt is closed and then swapped for a
    // FIFO.
    r.signal("STOP");
    std::fs::write(s.drop.join("a.txt"), b"a").unwrap();
    assert!(w.awaits_answer());
    s.nobody(&format!(
        "echo b > {d}/b.txt && mkfifo f && mv f {d}/b.txt",
        d = q(&s.drop)
    ));
    r.signal("CONT");
    std::fs::write(s.drop.join("c.txt"), b"c").unwrap();
    assert!(s.lands("c.txt"));
    assert!(w.said("b.txt: a FIFO; not sent"), "{}", w.err());
    let (code, took, err) = w.interrupt();
    assert_eq!(code, Some(130), "{err}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(s.arrived("a.txt").as_deref(), Some(&b"a"[..]));
    assert!(s.arrived("b.txt").is_none());
}

#[test]
fn a_closed_file_swapped_for_a_link_while_the_watcher_is_busy_is_not_followed() {
    let s = Spool::new();
    let r = s.env.recv(&["--keep-name", "-q"]);
    let w = s.watcher(&[]);
    r.signal("STOP");
    std::fs::write(s.drop.join("a.txt"), b"a").unwrap();
    assert!(w.awaits_answer());
    s.nobody(&format!(
        "echo harmless > {d}/b.txt && ln -s {} l && mv l {d}/b.txt",
        q(&s.secret),
        d = q(&s.drop)
    ));
    r.signal("CONT");
    assert!(w.said("b.txt: a symbolic link; not sent"), "{}", w.err());
    assert!(s.lands("a.txt"));
    drop(w);
    assert!(!s.leaked());
}

#[test]
fn with_r_a_linked_directory_is_not_watched_and_a_swapped_one_loses_nothing_outside() {
    let s = Spool::new();
    // Linked in before the start, and after it.
    s.nobody(&format!(
        "mkdir {d}/sub && ln -s {} {d}/before",
        q(&s.secret_dir),
        d = q(&s.drop)
    ));
    let r = s.env.recv(&["--keep-path", "-q"]);
    let w = s.watcher(&["-r", "--remove-source-files"]);
    assert!(w.said("before: a symbolic link; not sent"), "{}", w.err());
    s.nobody(&format!("ln -s {} {}/after", q(&s.secret_dir), q(&s.drop)));
    assert!(w.said("after: a symbolic link; not sent"), "{}", w.err());
    // sub/victim.txt is picked up; while its answer is awaited, sub becomes a link to a
    // root-only directory holding a file of the same name.
    r.signal("STOP");
    s.nobody(&format!("echo mine > {}/sub/victim.txt", q(&s.drop)));
    assert!(w.awaits_answer());
    s.nobody(&format!(
        "mv {d}/sub sub.old && ln -s {} {d}/sub",
        q(&s.secret_dir),
        d = q(&s.drop)
    ));
    r.signal("CONT");
    assert!(wait_until(Duration::from_secs(10), || {
        !s.scratch.join("sub.old/victim.txt").exists()
    }));
    std::thread::sleep(Duration::from_millis(500));
    let (code, _, err) = w.interrupt();
    assert_eq!(code, Some(130), "{err}");
    assert!(s.secret_intact(), "removed or changed outside the folder");
    assert!(!s.leaked());
    let got: Vec<String> = listing(&s.env.out().join("drop/sub"));
    assert_eq!(got, ["victim.txt"], "sent once");
}

#[test]
fn a_file_with_a_second_name_is_refused_unless_allowed() {
    let s = Spool::new();
    // On hosts with fs.protected_hardlinks=0 another user can link a root-only file into the
    // folder; the watcher cannot tell that apart from any other second name.
    std::fs::write(s.env.path("twice"), b"two names").unwrap();
    std::fs::hard_link(s.env.path("twice"), s.drop.join("linked.txt")).unwrap();
    let _r = s.env.recv(&["--keep-name", "-q"]);
    let w = s.watcher(&[]);
    assert!(
        w.said("linked.txt: has 2 hard links; not sent (--allow-hardlinks"),
        "{}",
        w.err()
    );
    drop(w);
    assert!(s.arrived("linked.txt").is_none());
    let w = s.watcher(&["--allow-hardlinks"]);
    assert!(s.lands("linked.txt"));
    drop(w);
}

/// Writes `pieces` chunks of `size` bytes to `path`, `gap` apart, holding it open; returns
/// what was written.
fn write_slowly(path: &Path, pieces: u8, size: usize, gap: Duration) -> Vec<u8> {
    let mut f = std::fs::File::create(path).unwrap();
    let mut all = Vec::new();
    for i in 0..pieces {
        let chunk = vec![b'a' + i; size];
        f.write_all(&chunk).unwrap();
        all.extend_from_slice(&chunk);
        std::thread::sleep(gap);
    }
    all
}

#[test]
fn a_file_still_written_at_startup_goes_once_whole_and_is_not_removed_meanwhile() {
    let s = Spool::new();
    let _r = s.env.recv(&["--keep-name", "-q"]);
    let path = s.drop.join("growing.log");
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || {
            // Pauses longer than the settle time: only the lease tells it is still open.
            write_slowly(&path, 6, 10_000, Duration::from_millis(400))
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let w = s.watcher(&["--remove-source-files"]);
    std::thread::sleep(Duration::from_millis(1000));
    assert!(path.exists(), "removed while written");
    assert!(s.arrived("growing.log").is_none(), "sent while written");
    let whole = writer.join().unwrap();
    assert!(wait_until(Duration::from_secs(10), || !path.exists()));
    let (code, _, err) = w.interrupt();
    assert_eq!(code, Some(130), "{err}");
    assert!(s.arrived("growing.log") == Some(whole), "growing.log whole");
    assert_eq!(listing(&s.env.out()), ["growing.log"]);
    assert!(!err.contains("changed"), "{err}");
}

#[test]
fn a_tree_copied_in_under_r_arrives_whole_once_without_errors() {
    let s = Spool::new();
    let src = s.env.path("tree");
    for d in ["a", "a/b"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    let mut want = Vec::new();
    for i in 0..12 {
        let rel = format!("{}/f{i:02}", ["a", "a/b"][i % 2]);
        std::fs::write(src.join(&rel), pattern(300_000 + i * 7, i as u8)).unwrap();
        want.push(rel);
    }
    let _r = s.env.recv(&["--keep-path", "-q"]);
    let w = s.watcher(&["-r"]);
    // A subdirectory whose file is still being written when the watcher first looks at it.
    std::fs::create_dir(s.drop.join("slow")).unwrap();
    let slow = write_slowly(
        &s.drop.join("slow/part"),
        4,
        50_000,
        Duration::from_millis(250),
    );
    let cp = Command::new("cp")
        .arg("-r")
        .arg(src.join("a"))
        .arg(&s.drop)
        .status()
        .unwrap();
    assert!(cp.success());
    let out = s.env.out().join("drop");
    assert!(wait_until(Duration::from_secs(20), || {
        want.iter().all(|r| out.join(r).exists()) && out.join("slow/part").exists()
    }));
    std::thread::sleep(Duration::from_millis(600));
    let (code, _, err) = w.interrupt();
    assert_eq!(code, Some(130), "{err}");
    assert!(!err.contains("error"), "{err}");
    for r in &want {
        assert!(same(&src.join(r), &out.join(r)), "{r}");
    }
    assert!(
        std::fs::read(out.join("slow/part")).unwrap() == slow,
        "slow/part whole"
    );
    assert_eq!(listing(&out.join("slow")), ["part"], "once");
    assert_eq!(
        listing(&out.join("a")).len(),
        7,
        "once each: {:?}",
        listing(&out.join("a"))
    );
}

#[test]
fn a_newer_version_moved_over_a_name_goes_after_the_one_in_flight_and_a_queued_one_goes_new() {
    let s = Spool::new();
    let r = s.env.recv(&["--keep-name", "-q"]);
    let w = s.watcher(&["--remove-source-files"]);
    r.signal("STOP");
    std::fs::write(s.drop.join("x.txt"), b"x version 1").unwrap();
    assert!(w.awaits_answer());
    // In flight: a newer x.txt moved over it. Queued: q.txt, then a newer one over it.
    std::fs::write(s.env.path("x2"), b"x version 2").unwrap();
    std::fs::rename(s.env.path("x2"), s.drop.join("x.txt")).unwrap();
    std::fs::write(s.drop.join("q.txt"), b"q version 1").unwrap();
    std::fs::write(s.env.path("q2"), b"q version 2").unwrap();
    std::fs::rename(s.env.path("q2"), s.drop.join("q.txt")).unwrap();
    r.signal("CONT");
    assert!(
        wait_until(Duration::from_secs(10), || {
            !s.drop.join("x.txt").exists() && !s.drop.join("q.txt").exists()
        }),
        "{:?} {}",
        listing(&s.drop),
        w.err()
    );
    drop(w);
    assert_eq!(s.arrived("x.txt").as_deref(), Some(&b"x version 1"[..]));
    assert_eq!(s.arrived("x-1.txt").as_deref(), Some(&b"x version 2"[..]));
    let q: Vec<Vec<u8>> = listing(&s.env.out())
        .iter()
        .filter(|n| n.starts_with('q'))
        .filter_map(|n| s.arrived(n))
        .collect();
    assert!(
        q.contains(&b"q version 2".to_vec()),
        "the newer version went"
    );
}

#[test]
fn a_new_file_under_a_name_already_sent_is_sent_and_a_restart_resends_nothing() {
    let s = Spool::new();
    let _r = s.env.recv(&["--keep-name", "-q"]);
    std::fs::write(s.drop.join("x.txt"), b"first").unwrap();
    let w = s.watcher(&[]);
    assert!(s.lands("x.txt"));
    std::fs::remove_file(s.drop.join("x.txt")).unwrap();
    std::fs::write(s.drop.join("x.txt"), b"again").unwrap();
    assert!(s.lands("x-1.txt"));
    // Stopped as a service is (SIGINT): every answer is recorded before it exits.
    assert_eq!(w.interrupt().0, Some(130));
    // Restarted: the version there now was sent; a renamed one is the same file.
    std::fs::rename(s.drop.join("x.txt"), s.drop.join("y.txt")).unwrap();
    let w = s.watcher(&[]);
    std::fs::write(s.drop.join("later.txt"), b"later").unwrap();
    assert!(s.lands("later.txt"));
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(w.interrupt().0, Some(130));
    assert_eq!(listing(&s.env.out()), ["later.txt", "x-1.txt", "x.txt"]);
    assert_eq!(s.arrived("x-1.txt").as_deref(), Some(&b"again"[..]));
    // The first x.txt is gone: a third start drops its entry, and keeps the two still there.
    let w = s.watcher(&[]);
    let entries = || {
        let dir = s.env.path("state/shmxfer");
        let list = std::fs::read(dir.join(&listing(&dir)[0])).unwrap_or_default();
        list.split(|&c| c == 0).filter(|e| !e.is_empty()).count()
    };
    assert!(
        wait_until(Duration::from_secs(10), || entries() == 2),
        "{}",
        entries()
    );
    drop(w);
}

#[test]
fn a_sent_list_of_version_0_1_in_the_folder_seeds_the_first_run_when_it_is_the_watchers_own() {
    let s = Spool::new();
    std::fs::write(s.drop.join("old.txt"), b"sent by 0.1").unwrap();
    std::fs::write(s.drop.join(".shmxfer-sent"), b"old.txt\0").unwrap();
    std::fs::write(s.drop.join("new.txt"), b"new").unwrap();
    let _r = s.env.recv(&["--keep-name", "-q"]);
    let w = s.watcher(&[]);
    assert!(s.lands("new.txt"));
    std::thread::sleep(Duration::from_millis(600));
    drop(w);
    assert!(
        s.arrived("old.txt").is_none(),
        "sent again after an upgrade"
    );
}

#[test]
fn the_sent_list_lives_in_the_state_directory_and_one_others_may_write_is_refused() {
    let s = Spool::new();
    let _r = s.env.recv(&["--keep-name", "-q"]);
    std::fs::write(s.drop.join("a.txt"), b"a").unwrap();
    let w = s.watcher(&[]);
    assert!(s.lands("a.txt"));
    drop(w);
    let lists = listing(&s.env.path("state/shmxfer"));
    assert_eq!(lists.len(), 1, "{lists:?}");
    assert!(lists[0].starts_with("watch-drop-") && lists[0].ends_with(".sent"));
    assert!(
        !s.drop.join(".shmxfer-sent").exists(),
        "nothing written into the folder"
    );
    // A list another user may write, or a link, is refused before anything is sent.
    let state = s.env.path("theirs.sent");
    std::fs::write(&state, b"").unwrap();
    std::fs::set_permissions(&state, PermissionsExt::from_mode(0o666)).unwrap();
    let o = s.env.send(&[
        "--watch",
        "--state",
        state.to_str().unwrap(),
        s.drop.to_str().unwrap(),
    ]);
    exits(&o, 73);
    says(&o, "may be written by others (mode 0666)");
    let link = s.env.path("link.sent");
    std::os::unix::fs::symlink(s.env.path("elsewhere"), &link).unwrap();
    let o = s.env.send(&[
        "--watch",
        "--state",
        link.to_str().unwrap(),
        s.drop.to_str().unwrap(),
    ]);
    exits(&o, 73);
    assert!(!s.env.path("elsewhere").exists());
    // A folder that does not exist is a missing input, as for `send`.
    let o = s
        .env
        .send(&["--watch", "--state", "x.sent", "/nonexistent/drop"]);
    exits(&o, 66);
    says(&o, "/nonexistent/drop: no such directory");
}

#[test]
fn one_sigint_ends_the_watcher_within_2_s_while_it_awaits_a_stopped_receiver() {
    let s = Spool::new();
    let r = s.env.recv(&["--keep-name", "-q"]);
    let w = s.watcher(&[]);
    r.signal("STOP");
    std::fs::write(s.drop.join("a.txt"), b"a").unwrap();
    assert!(w.awaits_answer());
    let (code, took, err) = w.interrupt();
    r.signal("CONT");
    assert_eq!(code, Some(130), "{err}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn without_r_a_subdirectory_is_said_to_be_skipped_once() {
    let s = Spool::new();
    std::fs::create_dir(s.drop.join("before")).unwrap();
    let _r = s.env.recv(&["--keep-name", "-q"]);
    let w = s.watcher(&[]);
    assert!(
        w.said("before: a directory; not sent (-r watches subdirectories)"),
        "{}",
        w.err()
    );
    std::fs::create_dir(s.drop.join("after")).unwrap();
    std::fs::write(s.drop.join("after/inner.txt"), b"x").unwrap();
    // Hidden files are where rsync and editors write before they rename: never sent.
    std::fs::write(s.drop.join(".partial.txt"), b"h").unwrap();
    std::fs::write(s.drop.join("top.txt"), b"t").unwrap();
    assert!(s.lands("top.txt"));
    let (_, _, err) = w.interrupt();
    assert_eq!(err.matches("before: a directory").count(), 1, "{err}");
    assert!(s.arrived("inner.txt").is_none());
    assert!(s.arrived(".partial.txt").is_none());
}

#[test]
fn a_watcher_whose_stdout_reader_left_stops_between_files_with_141() {
    use std::io::BufRead;
    let s = Spool::new();
    let _r = s.env.recv(&["--keep-name", "-q"]);
    let mut c = s.env.cmd(&["send", "--watch", "--settle", "0.3"]);
    c.arg(&s.drop)
        .env("XDG_STATE_HOME", s.env.path("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut w = c.spawn().unwrap();
    let _g = PidGuard(w.id() as i32);
    let mut out = std::io::BufReader::new(w.stdout.take().unwrap());
    std::fs::write(s.drop.join("a.txt"), b"a").unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("a.txt"), "{line}");
    drop(out); // `head -1` has had its line
    for name in ["b.txt", "c.txt"] {
        std::fs::write(s.drop.join(name), name).unwrap();
    }
    assert!(wait_until(Duration::from_secs(10), || {
        w.try_wait().ok().flatten().is_some()
    }));
    assert_eq!(w.wait().unwrap().code(), Some(141));
    // The file whose line could not be written was committed; none is torn.
    assert_eq!(s.arrived("b.txt").as_deref(), Some(&b"b.txt"[..]));
}

#[test]
fn a_file_rewritten_while_it_is_sent_is_not_committed_torn_and_goes_again_once_settled() {
    use std::os::unix::fs::FileExt;
    let s = Spool::new();
    let r = s
        .env
        .recv(&["--keep-name", "-q", "--slot-size", "64K", "--slots", "4"]);
    let w = s.watcher(&[]);
    // Mid-file: the receiver stopped, the watcher waits for ring space.
    r.signal("STOP");
    let path = s.drop.join("big.bin");
    std::fs::write(&path, pattern(4 << 20, 1)).unwrap();
    assert!(w.awaits_answer());
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(b"REWRITTEN", 3 << 20).unwrap();
    drop(f);
    let whole = std::fs::read(&path).unwrap();
    r.signal("CONT");
    assert!(
        wait_until(Duration::from_secs(20), || s.arrived("big.bin")
            == Some(whole.clone())),
        "{}",
        w.err()
    );
    std::thread::sleep(Duration::from_millis(600));
    let (code, _, err) = w.interrupt();
    assert_eq!(code, Some(130), "{err}");
    assert_eq!(listing(&s.env.out()), ["big.bin"], "once, and never torn");
    assert!(!err.contains("error"), "a notice, not an error: {err}");
}
