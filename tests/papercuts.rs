//! What a newcomer meets first: inputs checked before anything else, messages in words
//! (no Rust internals), flags worded as what they are, a receiver's stdout kept for its
//! records, and commands that cannot be tricked by a sender's names.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn a_missing_input_is_named_with_exit_66_before_any_receiver_is_looked_for() {
    let env = Env::new();
    // No receiver runs at this key.
    let o = env.send(&["no-such.jpg"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(66), "{err}");
    assert!(err.contains("no-such.jpg: no such file"), "{err}");
    assert!(!err.contains("receiver"), "{err}");
    // With a receiver, the others still go, and the missing one is named.
    let _r = env.recv(&["--keep-name"]);
    let a = env.file("a.bin", 10);
    let o = env.send(&["no-such.jpg", a.to_str().unwrap()]);
    exits(&o, 66);
    assert!(same(&a, &env.out().join("a.bin")));
}

#[test]
fn the_receivers_write_errors_reach_the_sender_in_words() {
    let env = Env::new();
    let mut c = Command::new("prlimit");
    c.args([
        "--fsize=100000",
        BIN,
        "recv",
        "--key",
        &env.key_arg(),
        "--dir",
    ])
    .arg(env.out())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let _g = PidGuard(child.id() as i32);
    assert!(wait_until(Duration::from_secs(10), || serving(env.key)));
    let big = env.file("big.bin", 300_000);
    let o = env.send(&[big.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(74), "{err}");
    assert!(err.contains("File too large"), "{err}");
    assert!(!err.contains("os error"), "{err}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_symlink_in_the_way_of_keep_path_is_named_not_reported_as_success() {
    let env = Env::new();
    std::fs::create_dir_all(env.out()).unwrap();
    std::os::unix::fs::symlink("/tmp", env.out().join("photos")).unwrap();
    let _r = env.recv(&["--keep-path"]);
    let tree = env.folder("photos");
    std::fs::write(tree.join("a.jpg"), b"a").unwrap();
    let o = env.send(&["-r", tree.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(74), "{err}");
    assert!(err.contains("a symlink or a file is in the way"), "{err}");
    assert!(
        !err.contains("Success") && !err.contains("os error"),
        "{err}"
    );
}

#[test]
fn flags_are_refused_in_words_that_fit_them() {
    let o = shmxfer(&["recv", "--basename", "", "--key", "0x7b000000"]);
    assert_eq!(o.status.code(), Some(64));
    says(&o, "--basename must not be empty");
    let o = shmxfer(&["recv", "--mode", "1777", "--key", "0x7b000000"]);
    assert_eq!(o.status.code(), Some(64));
    says(&o, "set-id or sticky bits");
    // A flag given twice is as given once (as in most Unix tools).
    let o = shmxfer(&["status", "-m", "-m", "--json", "--json"]);
    exits(&o, 0);
}

#[test]
fn with_json_the_commands_output_goes_to_stderr_and_stdout_stays_json() {
    let env = Env::new();
    let done = env.path("done");
    let script = format!("echo hello from the command; touch {}", done.display());
    let r = env.recv(&["--json", "--exec", "sh", "-c", &script, ";"]);
    let f = env.file("a.bin", 10);
    let o = env.send(&[f.to_str().unwrap()]);
    exits(&o, 0);
    // The command has run (its last act): its line is on the receiver's stderr.
    assert!(wait_until(Duration::from_secs(10), || done.exists()));
    let out = r.stop();
    let stdout = stdout(&out);
    for line in stdout.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
    }
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    says(&out, "hello from the command");
}

#[test]
fn recv_stdout_refuses_a_terminal() {
    let env = Env::new();
    let cmd = format!("{BIN} recv --stdout --key {}", env.key_arg());
    let mut c = Command::new("script");
    c.args(["-qec", &cmd, "/dev/null"]);
    let o = run_bounded(c, Duration::from_secs(20));
    let all = format!("{}{}", stdout(&o), stderr(&o));
    assert_eq!(o.status.code(), Some(64), "{all}");
    assert!(
        all.contains("refuses to write a file's bytes to a terminal"),
        "{all}"
    );
    assert!(ipc::Shm::open(env.key).is_err(), "no channel was made");
}

#[test]
fn status_lists_channels_by_key() {
    let envs: Vec<Env> = (0..3).map(|_| Env::new()).collect();
    // Started in descending key order.
    let _rs: Vec<Receiver> = envs.iter().rev().map(|e| e.recv(&[])).collect();
    let o = shmxfer(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let all = json_keys(&v, "channels");
    let keys: Vec<u64> = all
        .iter()
        .copied()
        .filter(|k| envs.iter().any(|e| u64::from(e.key.0) == *k))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys.len(), 3, "{v}");
    assert_eq!(keys, sorted);
    assert!(all.windows(2).all(|w| w[0] <= w[1]), "{all:?}");
}

#[test]
fn the_crate_is_dual_licensed_with_both_texts_and_packages_without_warnings() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let manifest = std::fs::read_to_string(format!("{dir}/Cargo.toml")).unwrap();
    assert!(manifest.contains(r#"license = "MIT OR Apache-2.0""#));
    for f in ["LICENSE-MIT", "LICENSE-APACHE"] {
        let text = std::fs::read_to_string(format!("{dir}/{f}")).unwrap();
        assert!(text.len() > 1000, "{f}");
    }
    for field in ["readme", "keywords", "categories", "documentation"] {
        assert!(manifest.contains(&format!("\n{field} = ")), "{field}");
    }
}

#[test]
fn a_removed_output_directory_is_made_again_and_files_keep_landing() {
    let env = Env::new();
    let r = env.recv(&["--keep-name"]);
    let [a, b] = [env.file("a.bin", 1000), env.file("b.bin", 2000)];
    assert!(env.send(&[a.to_str().unwrap()]).status.success());
    std::fs::remove_dir_all(env.out()).unwrap();
    // Idle when it went: the temporary file made ahead was in the removed directory.
    let o = env.send(&[b.to_str().unwrap()]);
    exits(&o, 0);
    assert!(same(&b, &env.out().join("b.bin")));
    std::fs::remove_dir_all(env.out()).unwrap();
    let o = env.send(&[a.to_str().unwrap()]);
    exits(&o, 0);
    assert!(same(&a, &env.out().join("a.bin")));
    let out = r.stop();
    says(&out, "was removed; made it again");
}

#[test]
fn an_output_directory_that_cannot_be_made_again_ends_the_receiver_with_73() {
    let env = Env::new();
    let r = env.recv(&[]);
    let a = env.file("a.bin", 1000);
    std::fs::remove_dir_all(env.out()).unwrap();
    // A file where the directory was: it cannot be made again.
    std::fs::write(env.out(), b"in the way").unwrap();
    let _ = env.send(&[a.to_str().unwrap()]);
    let out = r.wait(Duration::from_secs(20));
    exits(&out, 73);
    says(&out, "cannot create output directory");
}

#[test]
fn clean_by_name_removes_only_the_channel_of_that_name() {
    let (name, key, _g) = own_name("clean");
    let env = Env::new();
    // A receiver serving that key by number, killed: its channel is stale, and not NAME's.
    let mut c = bin(&["recv", "--key", &format!("{:#x}", key.0), "--dir"]);
    c.arg(env.out()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    assert!(wait_until(Duration::from_secs(10), || serving(key)));
    let _ = child.kill();
    let _ = child.wait();
    let o = shmxfer(&["clean", "--key", &name]);
    exits(&o, 69);
    assert!(stderr(&o).contains("serves no name"), "{}", stderr(&o));
    assert!(ipc::Shm::open(key).is_ok(), "nothing was removed");
    let o = shmxfer(&["clean", "--key", &format!("{:#x}", key.0)]);
    exits(&o, 0);
    assert!(ipc::Shm::open(key).is_err());
}

#[test]
fn a_channels_second_key_is_named_as_such_by_recv_and_send_at_once() {
    let env = Env::new();
    let _below = KeyGuard::new(shmxfer::Key(env.key.0 - 1));
    let _r = env.recv(&[]);
    let plus = format!("{:#x}", env.key.0 + 1);
    let o = shmxfer(&["recv", "--key", &plus, "--dir", env.out().to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(76), "{err}");
    assert!(
        err.contains(&format!(
            "it is the rendezvous segment of the shmxfer channel at {:#010x}",
            env.key.0
        )),
        "{err}"
    );
    assert!(!err.contains("--wait"), "recv has no --wait: {err}");
    let t = std::time::Instant::now();
    let o = shmxfer(&["send", "--wait", "2", "--key", &plus, "/etc/hostname"]);
    exits(&o, 76);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // The key below: its content segment would be this channel's own key.
    let minus = format!("{:#x}", env.key.0 - 1);
    let o = shmxfer(&[
        "recv",
        "--key",
        &minus,
        "--dir",
        env.out().to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(76), "{err}");
    assert!(
        err.contains("it is the control segment of the shmxfer channel at"),
        "{err}"
    );
    assert!(
        ipc::Shm::open(shmxfer::Key(env.key.0 - 1)).is_err(),
        "rolled back"
    );
}

#[test]
fn a_stop_ends_commands_that_ignore_sigterm_with_their_children_and_lists_those_not_run() {
    let env = Env::new();
    let marks = env.folder("marks");
    let script = format!(
        "trap '' TERM; sleep 60 & echo $! > {}/child.$SHMXFER_SIZE; wait",
        marks.display()
    );
    let r = env.recv(&["--keep-name", "--exec", "sh", "-c", &script, ";"]);
    let (a, b) = (env.file("a.bin", 1), env.file("b.bin", 2));
    let o = env.send(&[a.to_str().unwrap(), b.to_str().unwrap()]);
    exits(&o, 0);
    assert!(wait_until(Duration::from_secs(10), || marks
        .join("child.1")
        .exists()));
    let grandchild: i32 = std::fs::read_to_string(marks.join("child.1"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _g = PidGuard(grandchild);
    let t = std::time::Instant::now();
    let out = r.stop();
    let took = t.elapsed();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(took < Duration::from_secs(9), "{took:?}: {err}");
    assert!(err.contains("--exec not run (stopped first) for:"), "{err}");
    assert!(err.contains("b.bin"), "{err}");
    assert!(err.contains("ignored SIGTERM: killed it"), "{err}");
    // Its own child went with it (the whole process group).
    assert!(
        wait_until(Duration::from_secs(2), || !std::path::Path::new(&format!(
            "/proc/{grandchild}"
        ))
        .exists()
            || std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                .is_ok_and(|s| s.contains(") Z "))),
        "the command's child outlived it"
    );
}

#[test]
fn kept_names_reach_the_disk_without_control_characters() {
    let env = Env::new();
    let _r = env.recv(&["--keep-name", "-q"]);
    let f = env.file("plain", 5);
    let mut c = env.cmd(&["send", "--name", "evil\nname\x1b[31m\t.txt", "-"]);
    c.stdin(std::fs::File::open(&f).unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let o = finish(c.spawn().unwrap(), Duration::from_secs(20));
    exits(&o, 0);
    assert_eq!(listing(&env.out()), ["evil_name_[31m_.txt"]);
}

#[test]
fn the_progress_bar_never_shows_a_rate_it_has_not_measured() {
    let env = Env::new();
    let big = env.file("big.bin", 8 << 20);
    let r = env.recv(&["--slot-size", "64K", "--slots", "4"]);
    // Stopped a while: the bar appears (after 200 ms) with bytes already in the ring.
    r.signal("STOP");
    let cmd = format!("{BIN} send --key {} {}", env.key_arg(), big.display());
    let mut c = Command::new("script");
    c.args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    // The bar is up (it comes after 200 ms) while the sender waits for ring space: the ring
    // is full, the receiver stopped. Only then does the receiver go on.
    let screen_pid = child.id() as i32;
    assert!(wait_until(Duration::from_secs(10), || {
        let sender = descendants_named(screen_pid, "shmxfer");
        sender.is_some_and(|p| blocked_in(p, libc::SYS_semtimedop))
    }));
    std::thread::sleep(Duration::from_millis(400));
    r.signal("CONT");
    let o = finish(child, Duration::from_secs(30));
    let screen = stdout(&o);
    assert!(o.status.success(), "{screen}");
    // Every rate drawn is one a transfer through this machine's memory can have had.
    let rates = drawn_rates(&screen);
    assert!(!rates.is_empty(), "a rate was drawn: {screen:?}");
    for (v, unit) in rates {
        let per_s = v * match unit.as_str() {
            "B" => 1.0,
            "KiB" => 1024.0,
            "MiB" => 1048576.0,
            "GiB" => 1073741824.0,
            _ => f64::INFINITY,
        };
        assert!(per_s < 50.0 * 1073741824.0, "{v} {unit}/s: {screen:?}");
    }
}

/// The rates a progress bar drew on the screen: each number before `B/s`, `KiB/s`, `MiB/s`…
fn drawn_rates(screen: &str) -> Vec<(f64, String)> {
    let mut out = Vec::new();
    for (i, _) in screen.match_indices("/s") {
        let before = &screen[..i];
        let unit: String = before
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let rest = before[..before.len() - unit.len()].trim_end();
        let num: String = rest
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if let Ok(v) = num.parse::<f64>() {
            out.push((v, unit));
        }
    }
    out
}

/// The pid of a process named `comm` below `pid` (its child, or its child's child).
fn descendants_named(pid: i32, comm: &str) -> Option<i32> {
    let children = |p: i32| -> Vec<i32> {
        std::fs::read_to_string(format!("/proc/{p}/task/{p}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .collect()
    };
    let name = |p: i32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
    let mut todo = children(pid);
    while let Some(p) = todo.pop() {
        if name(p).trim() == comm {
            return Some(p);
        }
        todo.extend(children(p));
    }
    None
}

#[test]
fn thousands_of_copies_of_one_kept_name_cost_the_same_per_file_to_the_last() {
    // Cameras reuse IMG_0001.JPG, `send -` defaults to `stdin`: each copy must not probe every
    // earlier one. Only the ratio of the last thousand to the first is judged, generously:
    // probing one by one makes it grow with the count (the 5th thousand probes 4,000 names).
    let env = Env::new();
    let _r = env.recv(&["--keep-name", "-q"]);
    let mut tx = shmxfer::Sender::connect(env.key, &Default::default()).unwrap();
    let mut per_thousand = Vec::new();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        for _ in 0..1000 {
            tx.post_bytes(b"IMG_0001.JPG", b"x");
        }
        for v in tx.flush() {
            v.result.unwrap();
        }
        per_thousand.push(t.elapsed());
    }
    assert_eq!(listing(&env.out()).len(), 5000);
    assert!(env.out().join("IMG_0001-4999.JPG").exists());
    // A consumer that moves each file away gets the plain name again.
    std::fs::remove_file(env.out().join("IMG_0001.JPG")).unwrap();
    tx.send_bytes(b"IMG_0001.JPG", b"y").unwrap();
    assert_eq!(std::fs::read(env.out().join("IMG_0001.JPG")).unwrap(), b"y");
    tx.send_bytes(b"IMG_0001.JPG", b"z").unwrap();
    assert!(env.out().join("IMG_0001-5000.JPG").exists());
    tx.finish().unwrap();
    let (first, last) = (per_thousand[0], per_thousand[4]);
    assert!(
        last < first * 4 + Duration::from_millis(200),
        "the last thousand took {last:?}, the first {first:?}"
    );
}
