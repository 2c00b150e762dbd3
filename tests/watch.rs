//! `send --watch DIR`: a drop folder, as a camera, scanner or exporter fills one. Files
//! already there go first; a new file goes once complete (closed, or moved in), never half
//! written; a receiver that restarts is waited for and loses nothing; a restarted watcher
//! sends nothing twice; one signal ends it.

mod common;

use std::io::Write;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `send --watch` on `dir` with `extra` flags, its stdout and stderr piped.
fn watcher(env: &Env, dir: &std::path::Path, extra: &[&str]) -> Child {
    let mut c = env.cmd(&["send", "--watch"]);
    // The sent list goes in the test's own directory, never in the host's home.
    c.args(extra)
        .env("XDG_STATE_HOME", env.path("state"))
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.spawn().unwrap()
}

fn arrived(env: &Env, name: &str, want: &[u8]) -> bool {
    std::fs::read(env.out().join(name)).is_ok_and(|b| b == want)
}

fn stop(child: Child) -> (Option<i32>, Duration, String) {
    let (code, took, err, _) = stop_with_output(child);
    (code, took, err)
}

/// As [`stop`], with stdout too.
fn stop_with_output(mut child: Child) -> (Option<i32>, Duration, String, String) {
    let t = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let ok = wait_until(Duration::from_secs(5), || {
        child.try_wait().ok().flatten().is_some()
    });
    let took = t.elapsed();
    if !ok {
        let _ = child.kill();
    }
    let o = child.wait_with_output().unwrap();
    (o.status.code(), took, stderr(&o), stdout(&o))
}

#[test]
fn a_drop_folder_sends_what_is_there_then_each_file_once_complete() {
    let env = Env::new();
    let drop_dir = env.folder("drop");
    std::fs::write(drop_dir.join("before.txt"), b"there first").unwrap();
    // No receiver yet: the watcher says it waits, then sends once one is up.
    let w = watcher(&env, &drop_dir, &[]);
    let _g = PidGuard(w.id() as i32);
    // Once settled, the file is queued and the watcher sleeps between looks for a receiver.
    assert!(wait_until(Duration::from_secs(10), || blocked_in(
        w.id() as i32,
        libc::SYS_clock_nanosleep
    )));
    let _r = env.recv(&["--keep-name", "-q"]);
    assert!(wait_until(Duration::from_secs(10), || arrived(
        &env,
        "before.txt",
        b"there first"
    )));
    // Written slowly, in pieces: nothing arrives until it is closed, then all of it.
    let mut f = std::fs::File::create(drop_dir.join("slow.bin")).unwrap();
    for i in 0..5u8 {
        f.write_all(&[i; 1000]).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !env.out().join("slow.bin").exists(),
            "sent while still open"
        );
    }
    drop(f);
    let whole: Vec<u8> = (0..5u8).flat_map(|i| [i; 1000]).collect();
    assert!(wait_until(Duration::from_secs(10), || arrived(
        &env, "slow.bin", &whole
    )));
    // Moved in from the same filesystem: complete at once.
    std::fs::write(env.path("moved.txt"), b"moved in").unwrap();
    std::fs::rename(env.path("moved.txt"), drop_dir.join("moved.txt")).unwrap();
    assert!(wait_until(Duration::from_secs(10), || arrived(
        &env,
        "moved.txt",
        b"moved in"
    )));
    let (code, took, err) = stop(w);
    assert_eq!(code, Some(130), "{err}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(err.contains("waiting for a receiver on key"), "{err}");
    assert_eq!(
        listing(&env.out()),
        ["before.txt", "moved.txt", "slow.bin"],
        "each once"
    );
}

#[test]
fn a_burst_goes_through_one_process_and_a_restarted_receiver_loses_nothing() {
    let env = Env::new();
    let drop_dir = env.folder("drop");
    let r = env.recv(&["--keep-name", "-q"]);
    let w = watcher(&env, &drop_dir, &[]);
    let _g = PidGuard(w.id() as i32);
    for i in 0..1000 {
        std::fs::write(drop_dir.join(format!("f{i:04}")), format!("file {i}")).unwrap();
    }
    // The receiver goes away mid-burst (SIGKILL: files in flight, answers lost) and comes back.
    assert!(wait_until(Duration::from_secs(20), || listing(&env.out())
        .len()
        >= 200));
    r.signal("KILL");
    let _ = r.wait(Duration::from_secs(10));
    let _r2 = env.recv(&["--keep-name", "-q"]);
    // Every file, whole and under its own name (waited for by name: a count could be made
    // up by a second copy while one is still to come).
    let all =
        || (0..1000).all(|i| arrived(&env, &format!("f{i:04}"), format!("file {i}").as_bytes()));
    assert!(
        wait_until(Duration::from_secs(60), all),
        "{} arrived",
        listing(&env.out()).len()
    );
    let (code, _, err) = stop(w);
    assert_eq!(code, Some(130), "{code:?} {err}");
    // One sent twice shows as NAME-1. The README allows one: a file the receiver committed in
    // the instant before its SIGKILL, without answering, goes to the next receiver too.
    let names = listing(&env.out());
    assert!(
        (1000..=1001).contains(&names.len()),
        "{:?}",
        &names[..names.len().min(20)]
    );
}

#[test]
fn remove_source_files_removes_only_what_was_committed_and_a_restart_resends_nothing() {
    let env = Env::new();
    let drop_dir = env.folder("drop");
    std::fs::write(drop_dir.join("a.txt"), b"a").unwrap();
    let _r = env.recv(&["--keep-name", "-q", "--mode", "0666"]);
    // A file the receiver refuses stays where it was: unreadable to the sender.
    let locked = drop_dir.join("locked.txt");
    std::fs::write(&locked, b"secret").unwrap();
    let w = {
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
            .args([
                "send",
                "--key",
                &env.key_arg(),
                "--owner",
                "root",
                "--watch",
            ])
            .args(["--remove-source-files", "--json"])
            .env("XDG_STATE_HOME", env.path("nobody-state"))
            .arg(&drop_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::fs::set_permissions(
            env.dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        std::fs::set_permissions(
            &drop_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        c.spawn().unwrap()
    };
    let _g = PidGuard(w.id() as i32);
    let _ = _r;
    assert!(wait_until(Duration::from_secs(10), || arrived(
        &env, "a.txt", b"a"
    )));
    assert!(wait_until(Duration::from_secs(5), || !drop_dir
        .join("a.txt")
        .exists()));
    let o = {
        let (code, _, err, out) = stop_with_output(w);
        (code, err, out)
    };
    assert_eq!(o.0, Some(130), "{}", o.1);
    // --json: one object per committed file, and nothing else, on stdout.
    let lines: Vec<serde_json::Value> =
        o.2.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect();
    assert_eq!(lines.len(), 1, "{}", o.2);
    assert!(
        lines[0]["path"].as_str().unwrap().ends_with("drop/a.txt"),
        "{}",
        o.2
    );
    assert_eq!(lines[0]["removed"], true, "{}", o.2);
    assert!(o.1.contains("locked.txt: permission denied"), "{}", o.1);
    assert!(locked.exists(), "a file that failed is left in place");
    assert!(!env.out().join("locked.txt").exists());

    // Without --remove-source-files, a restarted watcher sends nothing it sent before.
    let drop2 = env.folder("drop2");
    std::fs::write(drop2.join("once.txt"), b"once").unwrap();
    let w = watcher(&env, &drop2, &[]);
    assert!(wait_until(Duration::from_secs(10), || arrived(
        &env, "once.txt", b"once"
    )));
    let _ = stop(w);
    let w = watcher(&env, &drop2, &[]);
    std::fs::write(drop2.join("later.txt"), b"later").unwrap();
    assert!(wait_until(Duration::from_secs(10), || arrived(
        &env,
        "later.txt",
        b"later"
    )));
    let _ = stop(w);
    assert!(!env.out().join("once-1.txt").exists(), "sent twice");
    assert!(
        drop2.join("once.txt").exists(),
        "kept without --remove-source-files"
    );
}

#[test]
fn with_r_new_subdirectories_are_watched_and_paths_go_as_send_r_sends_them() {
    let env = Env::new();
    let drop_dir = env.path("drop");
    std::fs::create_dir_all(drop_dir.join("old")).unwrap();
    std::fs::write(drop_dir.join("old/a.txt"), b"a").unwrap();
    let _r = env.recv(&["--keep-path", "-q"]);
    let w = watcher(&env, &drop_dir, &["-r"]);
    let _g = PidGuard(w.id() as i32);
    assert!(wait_until(Duration::from_secs(10), || arrived(
        &env,
        "drop/old/a.txt",
        b"a"
    )));
    std::fs::create_dir_all(drop_dir.join("new/deeper")).unwrap();
    // The watch on a new directory starts when its creation is seen: give it a file after.
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::write(drop_dir.join("new/deeper/b.txt"), b"b").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        arrived(&env, "drop/new/deeper/b.txt", b"b")
    }));
    let (code, _, err) = stop(w);
    assert_eq!(code, Some(130), "{err}");
}
