//! Integrity: a file that arrives is the file that was sent. Each failure mid-file is followed
//! by more files in the same `send`, which must arrive byte-identical or be refused.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Every file in DIR is byte-identical to the input of the same name in `inputs`.
fn all_identical(out: &Path, inputs: &Path) {
    for name in listing(out) {
        assert!(
            !name.starts_with(".shmxfer-"),
            "temporary file left: {name}"
        );
        let got = std::fs::read(out.join(&name)).unwrap();
        let want = std::fs::read(inputs.join(&name)).unwrap();
        assert!(got == want, "{name} arrived with wrong bytes");
    }
}

#[test]
fn after_the_receivers_file_size_limit_the_next_files_of_the_send_arrive_whole() {
    for round in 0..4 {
        let env = Env::new();
        let big = env.file("big.bin", 20 << 20);
        let small = env.file("small.bin", 300 << 10);
        let tiny = env.file("tiny.bin", 5);
        let mut c = Command::new("prlimit");
        c.arg("--fsize=2000000")
            .arg(BIN)
            .args(["recv", "--key", &env.key_arg(), "--dir"])
            .arg(env.out())
            .args(["--keep-name", "--slot-size", "64K", "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let r = Receiver {
            child: Some(c.spawn().unwrap()),
        };
        assert!(wait_until(Duration::from_secs(10), || is_idle(&env)));
        let o = env.send(&[
            big.to_str().unwrap(),
            small.to_str().unwrap(),
            tiny.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(74), "round {round}: {}", stderr(&o));
        drop(r);
        all_identical(&env.out(), env.dir.path());
        assert_eq!(
            listing(&env.out()),
            ["small.bin", "tiny.bin"],
            "round {round}"
        );
    }
}

fn is_idle(env: &Env) -> bool {
    channel_state(env.key) == Some(shmxfer::inventory::ChannelState::Idle)
}

/// Starts `shmxfer recv --keep-name` (with `extra`) on env's key, writing into `dir`.
fn receiver_into(env: &Env, dir: &Path, extra: &[&str]) -> Receiver {
    let mut c = env.cmd(&["recv", "--dir"]);
    c.arg(dir)
        .args(["--keep-name", "--slot-size", "64K", "-q"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let r = Receiver {
        child: Some(c.spawn().unwrap()),
    };
    assert!(wait_until(Duration::from_secs(10), || is_idle(env)));
    r
}

#[test]
fn after_an_input_that_shrinks_mid_file_the_next_files_arrive_whole() {
    let env = Env::new();
    let r = receiver_into(&env, &env.out(), &[]);
    let small = env.file("small.bin", 300 << 10);
    let tiny = env.file("tiny.bin", 5);
    for round in 0..3 {
        let big = env.file("big.bin", 40 << 20);
        let mut c = env.cmd(&["send", "-m"]);
        c.args([&big, &small, &tiny])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = c.spawn().unwrap();
        // Shrink it once the transfer is under way.
        assert!(wait_until(Duration::from_secs(10), || busy(&env)));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&big)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let o = finish(child, Duration::from_secs(60));
        assert_eq!(o.status.code(), Some(65), "round {round}: {}", stderr(&o));
        says(&o, "changed while it was read");
    }
    drop(r);
    let names = listing(&env.out());
    assert!(!names.iter().any(|n| n.starts_with("big")), "{names:?}");
    three_rounds_of_two_landed(&env.out(), &names, &small, &tiny);
}

fn busy(env: &Env) -> bool {
    channel(env.key).is_some_and(|c| {
        c.state == shmxfer::inventory::ChannelState::Busy
            && c.transfer.is_some_and(|t| t.bytes_done > 0)
    })
}

#[test]
fn after_the_senders_read_error_the_next_file_of_the_send_arrives_whole() {
    let env = Env::new();
    let r = receiver_into(&env, &env.out(), &[]);
    let a = env.file("a.bin", 200 << 10);
    let b = env.file("b.bin", 700 << 10);
    // Reading a directory fails with EISDIR: a read error on the file's first chunk.
    let mut c = env.cmd(&["send", "--name", "stdin.bin"]);
    c.arg(&a).arg("-").arg(&b);
    c.stdin(std::fs::File::open(env.dir.path()).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let o = finish(c.spawn().unwrap(), Duration::from_secs(30));
    exits(&o, 74);
    assert!(stderr(&o).contains("read failed"), "{}", stderr(&o));
    drop(r);
    assert_eq!(listing(&env.out()), ["a.bin", "b.bin"]);
    all_identical(&env.out(), env.dir.path());
}

/// A small tmpfs mounted for one test, unmounted when dropped (root only).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.into()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn after_a_full_disk_the_next_files_of_the_send_arrive_whole_once_there_is_room() {
    let env = Env::new();
    let Some(disk) = Tmpfs::mount(&env.path("disk"), "3m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let r = receiver_into(&env, &disk.0, &[]);
    let big = env.file("big.bin", 20 << 20);
    let small = env.file("small.bin", 300 << 10);
    let tiny = env.file("tiny.bin", 5);
    for round in 0..3 {
        let o = env.send(&[
            big.to_str().unwrap(),
            small.to_str().unwrap(),
            tiny.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(74), "round {round}: {}", stderr(&o));
        assert!(stderr(&o).contains("No space left"), "{}", stderr(&o));
    }
    drop(r);
    let names = listing(&disk.0);
    three_rounds_of_two_landed(&disk.0, &names, &small, &tiny);
}

#[test]
fn removing_the_output_directory_mid_file_makes_it_again_and_loses_nothing() {
    let env = Env::new();
    let r = receiver_into(&env, &env.out(), &[]);
    let big = env.file("big.bin", 60 << 20);
    let small = env.file("small.bin", 300 << 10);
    let mut c = env.cmd(&["send"]);
    c.args([&big, &small])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    assert!(wait_until(Duration::from_secs(10), || busy(&env)));
    std::fs::remove_dir_all(env.out()).unwrap();
    // The file in flight is written to its unnamed temporary file, which survives the
    // directory; the receiver makes DIR again and names it there, then takes the next.
    let o = finish(child, Duration::from_secs(60));
    exits(&o, 0);
    drop(r);
    assert_eq!(listing(&env.out()), ["big.bin", "small.bin"]);
    assert!(same(&env.out().join("big.bin"), &big));
    assert!(same(&env.out().join("small.bin"), &small));
}

/// Waits for a child whose output we do not collect, killing it if it outlives `limit`.
fn exit_code_within(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let ok = wait_until(limit, || child.try_wait().unwrap().is_some());
    if !ok {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the sender hung for {limit:?} after SIGINT");
    }
    child.wait().unwrap().code()
}

#[test]
fn sigint_while_opening_a_fifo_never_commits_it_even_with_a_stuck_stderr() {
    use std::io::Write;
    let env = Env::new();
    let r = receiver_into(&env, &env.out(), &["-m"]);
    let a = env.file("a.txt", 3000);
    let fifo = env.path("b.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // The sender's stderr is a pipe nobody reads, already full: any print blocks for ever.
    let (reader, mut full) = std::io::pipe().unwrap();
    full.write_all(&vec![b'x'; 65536]).unwrap();
    let mut c = env.cmd(&["send", "-m"]);
    c.arg(&a)
        .arg(&fifo)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(full);
    let mut child = c.spawn().unwrap();
    assert!(wait_until(Duration::from_secs(10), || env
        .out()
        .join("a.txt")
        .exists()));
    // Now blocked opening the FIFO.
    assert!(
        wait_until(Duration::from_secs(10), || blocked_in(
            child.id() as i32,
            libc::SYS_openat
        )),
        "the sender never blocked opening the FIFO"
    );
    kill(child.id(), "INT");
    // Delivered: nothing pending for the process any more (its handler ran).
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{}/status", child.id())).is_ok_and(|s| {
            s.lines()
                .filter(|l| l.starts_with("SigPnd:") || l.starts_with("ShdPnd:"))
                .all(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .is_some_and(|v| v.trim_start_matches('0').is_empty())
                })
        })
    }));
    // A writer comes and goes without writing a byte: the sender's open returns.
    {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
    }
    let code = exit_code_within(&mut child, Duration::from_secs(10));
    assert_eq!(code, Some(130));
    // Nothing for b.fifo, and the channel is clean for the next sender.
    let c_txt = env.file("c.txt", 2000);
    let o = env.send(&["-m", c_txt.to_str().unwrap()]);
    exits(&o, 0);
    drop(r);
    drop(reader);
    assert_eq!(listing(&env.out()), ["a.txt", "c.txt"]);
    all_identical(&env.out(), env.dir.path());
}

/// The input a committed `--keep-name` file came from: its name without the `-N` a clash adds.
fn source_of(name: &str) -> String {
    let (stem, ext) = name.split_once('.').unwrap_or((name, ""));
    let stem = match stem.rsplit_once('-') {
        Some((s, n)) if n.chars().all(|c| c.is_ascii_digit()) => s,
        _ => stem,
    };
    if ext.is_empty() {
        stem.into()
    } else {
        format!("{stem}.{ext}")
    }
}

#[test]
fn hundreds_of_random_interrupts_between_files_never_commit_wrong_bytes() {
    let env = Env::new();
    let r = receiver_into(&env, &env.out(), &[]);
    let a = env.file("a.bin", 20 << 10);
    let e = env.path("e.bin");
    std::fs::write(&e, b"").unwrap();
    // The same size as a.bin, other bytes: a stale trailer would pass its length check.
    let b = env.file("bb.bin", 20 << 10);
    let secret = env.file("secret.txt", 4000);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d ^ u64::from(std::process::id());
    let mut rand = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let (mut interrupted, mut sent) = (0, 0);
    for i in 0..300 {
        // Many files per send: many moments between two files for a signal to land in.
        let args: Vec<&std::path::PathBuf> = match i % 3 {
            0 => vec![&a, &e, &e, &e, &e, &e, &e, &e, &e, &e],
            1 => vec![&a, &b, &a, &b, &a, &b, &a, &b],
            _ => vec![&b, &e, &b, &e],
        };
        let mut c = env.cmd(&["send", "--wait", "20"]);
        if i % 2 == 1 {
            c.arg("-m");
        }
        c.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Every third round another sender shares the channel, undisturbed.
        let other = (i % 3 == 2).then(|| {
            let mut c = env.cmd(&["send", "--wait", "20"]);
            c.arg(&secret)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            c.spawn().unwrap()
        });
        let mut child = c.spawn().unwrap();
        std::thread::sleep(Duration::from_micros(rand(9000)));
        kill(child.id(), "INT");
        match exit_code_within(&mut child, Duration::from_secs(20)) {
            Some(0) => sent += 1,
            _ => interrupted += 1,
        }
        if let Some(mut o) = other {
            assert_eq!(exit_code_within(&mut o, Duration::from_secs(20)), Some(0));
        }
    }
    drop(r);
    eprintln!("{sent} sends finished before their SIGINT, {interrupted} were interrupted");
    assert!(
        interrupted > 30,
        "the interrupts came too late to test anything"
    );
    for name in listing(&env.out()) {
        let src = env.dir.path().join(source_of(&name));
        assert!(
            same(&env.out().join(&name), &src),
            "{name} holds another file's bytes"
        );
    }
}

#[test]
fn names_with_tabs_newlines_and_escapes_cannot_forge_records_or_reach_the_terminal() {
    let env = Env::new();
    let mut c = env.cmd(&["recv", "--dir"]);
    c.arg(env.out())
        .args(["--keep-name", "-m"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let r = Receiver {
        child: Some(c.spawn().unwrap()),
    };
    assert!(wait_until(Duration::from_secs(10), || is_idle(&env)));
    let forged = "report.pdf\t1\t00000000000000000000000000000000\nOTHER.pdf";
    let ansi = "\x1b[31mred.txt";
    for name in [forged, ansi] {
        std::fs::write(env.path(name), b"payload").unwrap();
        let o = env.send(&[env.path(name).to_str().unwrap()]);
        exits(&o, 0);
    }
    let out = r.stop();
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text:?}");
    for l in &lines {
        assert_eq!(l.matches('\t').count(), 2, "{l:?}");
        assert!(!l.contains('\x1b'), "{l:?}");
    }
    assert!(
        lines[0].ends_with(&format!(
            "report.pdf_1_{}_OTHER.pdf\t7\t{:x}",
            "0".repeat(32),
            md5::compute(b"payload")
        )),
        "{:?}",
        lines[0]
    );
    assert!(lines[1].contains("_[31mred.txt\t"), "{:?}", lines[1]);
    // On disk, the control characters became `_`: no name of a file breaks a line of `ls`.
    let kept = [
        "_[31mred.txt",
        "report.pdf_1_00000000000000000000000000000000_OTHER.pdf",
    ];
    assert_eq!(listing(&env.out()), kept);
}

#[test]
fn a_name_shaped_like_a_temporary_file_is_committed_under_another_name_and_survives() {
    let env = Env::new();
    let r = receiver_into(&env, &env.out(), &[]);
    let f = env.path(".shmxfer-999999-0.part");
    std::fs::write(&f, b"real data").unwrap();
    let o = env.send(&[f.to_str().unwrap()]);
    exits(&o, 0);
    drop(r);
    assert_eq!(listing(&env.out()), ["file01.jpg"]);
    // The next receiver on DIR cleans dead receivers' temporary files: not this one.
    let r = receiver_into(&env, &env.out(), &[]);
    drop(r);
    assert_eq!(
        std::fs::read(env.out().join("file01.jpg")).unwrap(),
        b"real data"
    );
}

/// Runs this test binary's `make_blank_segment_helper` in a child, which then exits: a blank
/// control segment at `key` and a content segment whose creator is dead, as a receiver killed
/// during setup leaves them.
fn blank_segment_with_dead_creator(key: shmxfer::Key) {
    let o = Command::new(std::env::current_exe().unwrap())
        .args(["make_blank_segment_helper", "--exact", "--nocapture"])
        .env("SHMXFER_TEST_BLANK_KEY", key.0.to_string())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(ipc::Shm::open(key).is_ok());
}

#[test]
fn make_blank_segment_helper() {
    if let Ok(k) = std::env::var("SHMXFER_TEST_BLANK_KEY") {
        // What a receiver creates first: its control segment, then the content segment.
        let key = shmxfer::Key(k.parse().unwrap());
        ipc::Shm::create(key, proto::CONTROL_LEN, 0o600).unwrap();
        ipc::Shm::create(shmxfer::Key(key.0 + 1), 1 << 20, 0o600).unwrap();
    }
}

#[test]
fn a_blank_segment_whose_creator_died_is_reclaimed_by_recv_and_clean() {
    let env = Env::new();
    blank_segment_with_dead_creator(env.key);
    let f = env.file("a.bin", 10);
    let o = env.send(&[f.to_str().unwrap()]);
    exits(&o, 69);
    let o = run_bounded(env.cmd(&["clean", "--stale"]), Duration::from_secs(10));
    exits(&o, 0);
    assert!(
        stdout(&o).contains("removed shared memory"),
        "{}",
        stdout(&o)
    );
    assert!(ipc::Shm::open(env.key).is_err());
    blank_segment_with_dead_creator(env.key);
    let r = receiver_into(&env, &env.out(), &[]);
    let o = env.send(&[f.to_str().unwrap()]);
    exits(&o, 0);
    drop(r);
    assert_eq!(listing(&env.out()), ["a.bin"]);
}

#[test]
fn a_receiver_stopped_during_setup_leaves_nothing_behind() {
    let env = Env::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    for _ in 0..60 {
        let mut c = env.cmd(&["recv", "--dir"]);
        c.arg(env.out()).stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_micros(x % 4000));
        kill(child.id(), "TERM");
        let _ = exit_code_within(&mut child, Duration::from_secs(10));
        assert!(
            ipc::Shm::open(env.key).is_err() && ipc::SemSet::open(env.key).is_err(),
            "a stopped receiver left objects at its key"
        );
    }
}

#[test]
fn a_receiver_that_leaves_after_its_last_commit_does_not_fail_the_sender() {
    // `--once` removes its channel right after answering "committed": the sender's watcher
    // sees the receiver go while the main thread is about to succeed.
    for _ in 0..40 {
        let env = Env::new();
        let r = receiver_into(&env, &env.out(), &["--once"]);
        let f = env.file("one.bin", 1000);
        let o = env.send(&[f.to_str().unwrap()]);
        exits(&o, 0);
        let _ = r.wait(Duration::from_secs(10));
    }
}

/// Three rounds each landed the small and the tiny file, whole, and nothing else.
fn three_rounds_of_two_landed(dir: &Path, names: &[String], small: &Path, tiny: &Path) {
    assert_eq!(names.len(), 6, "{names:?}");
    for n in names {
        let src = if n.starts_with("small") { small } else { tiny };
        assert!(same(&dir.join(n), src), "{n} differs");
    }
}
