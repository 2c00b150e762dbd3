//! Bad input: each gets a clear message and its documented exit code, and nothing is destroyed.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::ipc::Shm;
use common::*;
use shmxfer::Key;

fn as_nobody(env: &Env, args: &[&str]) -> std::process::Output {
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .arg(args[0]);
    c.args(["--key", &env.key_arg()])
        .args(&args[1..])
        .current_dir(env.dir.path())
        .env_remove("SHMXFER_KEY");
    run_bounded(c, Duration::from_secs(20))
}

#[test]
fn another_users_0600_channel_is_permission_denied_naming_owner_and_mode() {
    let env = Env::new();
    let _r = env.recv(&[]);
    let f = env.file("a", 10);
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = as_nobody(&env, &["send", f.to_str().unwrap()]);
    exits(&o, 77);
    let err = stderr(&o);
    assert!(
        err.contains("permission denied") && err.contains("root") && err.contains("--mode"),
        "{err}"
    );
}

#[test]
fn a_0666_channel_serves_another_user_and_an_unreadable_file_is_refused() {
    let env = Env::new();
    let _r = env.recv(&["--mode", "0666"]);
    let ok = env.file("ok", 10);
    std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o644)).unwrap();
    let secret = env.file("secret", 10);
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = as_nobody(
        &env,
        &[
            "send",
            "--owner",
            "root",
            secret.to_str().unwrap(),
            ok.to_str().unwrap(),
        ],
    );
    exits(&o, 66);
    says(&o, "secret: permission denied");
    assert_eq!(listing(&env.out()), ["file01.jpg"]);
}

#[test]
fn an_output_directory_that_cannot_be_created_is_refused() {
    let env = Env::new();
    let blocker = env.file("plainfile", 1);
    for dir in [blocker.join("sub"), "/proc/shmxfer-nope".into()] {
        let mut c = env.cmd(&["recv", "--dir"]);
        c.arg(&dir);
        let o = run_bounded(c, Duration::from_secs(10));
        exits(&o, 73);
        says(&o, "cannot create output directory");
    }
    assert!(
        Shm::open(env.key).is_err(),
        "a refused receiver left a channel"
    );
}

fn refuses_foreign(make: impl FnOnce(Key) -> Shm, expect: &str) {
    let env = Env::new();
    let shm = make(env.key);
    let o = run_bounded(env.cmd(&["recv", "--dir", "out"]), Duration::from_secs(10));
    exits(&o, 76);
    assert!(stderr(&o).contains(expect), "{}", stderr(&o));
    let f = env.file("a", 5);
    let o = env.send(&[f.to_str().unwrap()]);
    exits(&o, 76);
    let o = run_bounded(env.cmd(&["clean", "--force"]), Duration::from_secs(10));
    exits(&o, 76);
    // Left alone: same id, still there, contents untouched.
    assert_eq!(Shm::open(env.key).unwrap().id(), shm.id());
}

/// A segment of `len` bytes at `k` with shmxfer's magic and protocol version `v`.
fn header_of_version(k: Key, len: usize, v: u32) -> Shm {
    let s = Shm::create(k, len, 0o600).unwrap();
    let m = s.attach(true).unwrap();
    m.write(0, b"SHMXFER\0").unwrap();
    m.write(8, &v.to_ne_bytes()).unwrap();
    s
}

#[test]
fn a_segment_too_small_for_the_header_is_left_alone() {
    refuses_foreign(|k| Shm::create(k, 100, 0o600).unwrap(), "too small");
}

#[test]
fn a_segment_without_the_magic_is_left_alone() {
    refuses_foreign(
        |k| {
            let s = Shm::create(k, proto::CONTROL_LEN, 0o600).unwrap();
            s.attach(true)
                .unwrap()
                .write(0, b"PGSQL\0\0\0somebody else's")
                .unwrap();
            s
        },
        "magic",
    );
}

#[test]
fn a_header_of_another_protocol_version_is_left_alone() {
    refuses_foreign(|k| header_of_version(k, proto::CONTROL_LEN, 1), "version 1");
}

#[test]
fn a_version_4_channel_of_its_own_size_is_told_by_its_version() {
    // Version 4's control segment was 16384 bytes; what its user must hear is the version.
    refuses_foreign(
        |k| header_of_version(k, 16384, 4),
        "protocol version 4; this shmxfer speaks version 7",
    );
}

#[test]
fn a_version_6_channel_is_told_by_its_version() {
    // Version 6 had the layout of today's control segment, written by senders too.
    refuses_foreign(
        |k| header_of_version(k, proto::CONTROL_LEN, 6),
        "protocol version 6; this shmxfer speaks version 7",
    );
}

#[test]
fn usage_errors_exit_64_with_a_message() {
    let env = Env::new();
    for args in [
        vec!["recv", "--key", "0"],
        vec!["recv", "--key", "0xffffffff"],
        vec!["recv", "--key", "-5"],
        vec!["recv", "--mode", "0999"],
        vec!["recv", "--mode", "rw"],
        vec!["recv", "--stdout", "--keep-name"],
        vec!["recv", "--direct=sometimes"],
        vec!["recv", "--stdout", "--direct"],
        vec!["recv", "-v", "-q"],
        vec!["recv", "--slot-size", "1"],
        vec!["recv", "--slot-size", "5001"],
        vec!["recv", "--basename", "a/b"],
        vec!["send"],
        vec!["send", "--wait", "soon", "x"],
        vec!["send", "--name", "", "-"],
        vec!["clean", "--stale", "--force"],
        vec!["status", "--json", "-l"],
        vec!["bogus"],
    ] {
        let mut c = Command::new(BIN);
        c.args(&args)
            .current_dir(env.dir.path())
            .env_remove("SHMXFER_KEY")
            .stdin(Stdio::null());
        let o = run_bounded(c, Duration::from_secs(10));
        assert_eq!(o.status.code(), Some(64), "{args:?}: {}", stderr(&o));
        assert!(
            !stderr(&o).is_empty() && !stderr(&o).contains("panicked"),
            "{args:?}"
        );
    }
    let mut c = Command::new(BIN);
    c.env("SHMXFER_KEY", "ban ana").args(["send", "x"]);
    let o = run_bounded(c, Duration::from_secs(10));
    exits(&o, 64);
}

#[test]
fn a_receiver_caught_setting_up_is_waited_for_and_never_called_foreign() {
    let env = Env::new();
    // A blank control segment whose creator (this test) lives: a receiver between shmget and
    // writing its magic, frozen there.
    let shm = Shm::create(env.key, proto::CONTROL_LEN, 0o600).unwrap();
    let f = env.file("a", 5);
    for args in [
        vec!["send", f.to_str().unwrap()],
        vec!["clean"],
        vec!["recv", "--dir", "out"],
    ] {
        let t = std::time::Instant::now();
        let o = run_bounded(env.cmd(&args), Duration::from_secs(20));
        assert_eq!(o.status.code(), Some(75), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("still setting its channel up"),
            "{args:?}: {}",
            stderr(&o)
        );
        if args[0] != "clean" {
            assert!(
                t.elapsed() >= Duration::from_millis(1500),
                "{args:?} did not wait"
            );
        }
    }
    assert_eq!(Shm::open(env.key).unwrap().id(), shm.id());
}

#[test]
fn clean_as_another_user_reports_each_object_it_could_not_remove() {
    let env = Env::new();
    let r = env.recv(&["--mode", "0666"]);
    for extra in [&["--force"][..], &["--force", "--dry-run"]] {
        let mut args = vec!["clean"];
        args.extend(extra);
        let o = as_nobody(&env, &args);
        assert_eq!(o.status.code(), Some(77), "{extra:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.matches("permission denied").count(), 3, "{err}");
        assert!(err.contains("run clean as that user"), "{err}");
        assert!(!stdout(&o).contains("remove"), "{}", stdout(&o));
    }
    assert!(Shm::open(env.key).is_ok() && ipc::SemSet::open(env.key).is_ok());
    drop(r);
}

#[test]
fn a_mode_that_locks_the_owner_out_is_a_usage_error() {
    let env = Env::new();
    for mode in ["0", "0200", "0444", "0066"] {
        let o = run_bounded(
            env.cmd(&["recv", "--dir", "out", "--mode", mode]),
            Duration::from_secs(10),
        );
        assert_eq!(o.status.code(), Some(64), "--mode {mode}: {}", stderr(&o));
        says(&o, "locks the receiver out");
        assert!(Shm::open(env.key).is_err());
    }
}

#[test]
fn stdin_twice_or_a_name_without_stdin_is_a_usage_error_before_anything_is_sent() {
    let env = Env::new();
    let r = env.recv(&["--keep-name"]);
    let f = env.file("a.bin", 10);
    for args in [vec!["-", "-"], vec!["--name", "x.bin", f.to_str().unwrap()]] {
        let o = env.send(&args);
        assert_eq!(o.status.code(), Some(64), "{args:?}: {}", stderr(&o));
    }
    drop(r);
    assert!(listing(&env.out()).is_empty(), "{:?}", listing(&env.out()));
}

#[test]
fn direct_takes_its_value_with_or_without_an_equals_sign() {
    let env = Env::new();
    for args in [
        vec!["--direct", "never", "--once"],
        vec!["--direct=always", "--once"],
        vec!["--direct", "--once"],
    ] {
        let r = env.recv(&args);
        let f = env.file("d.bin", 70_000);
        let o = env.send(&[f.to_str().unwrap()]);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let out = r.wait(Duration::from_secs(10));
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn a_refused_receiver_creates_no_directory_and_a_file_as_dir_is_named_so() {
    let env = Env::new();
    let _r = env.recv(&[]);
    let o = run_bounded(
        env.cmd(&["recv", "--dir", "never-made"]),
        Duration::from_secs(10),
    );
    exits(&o, 75);
    assert!(!env.path("never-made").exists());
    let other = Env::new();
    std::fs::write(other.path("ok.txt"), b"").unwrap();
    let o = run_bounded(
        other.cmd(&["recv", "--dir", "ok.txt"]),
        Duration::from_secs(10),
    );
    exits(&o, 73);
    assert!(stderr(&o).contains("not a directory"), "{}", stderr(&o));
}

#[test]
fn a_channel_its_living_creator_left_with_its_mark_up_is_a_gone_receiver_not_a_wait() {
    // A sender trusts a raised liveness mark and a living creator pid at connect (a quick
    // check); only the creator's map tells that it no longer holds the channel. The sender
    // must still end, in its first waits, with the receiver gone.
    let env = Env::new();
    // What a receiver makes (docs/protocol.md), made here, and detached: the objects and our
    // liveness mark (undone only when we exit) stay.
    let ctl = Shm::create(env.key, proto::CONTROL_LEN, 0o600).unwrap();
    let rdv = Shm::create(Key(env.key.0 + 1), 4096, 0o600).unwrap();
    let sems = common::ipc::SemSet::create(env.key, 7, 0o600).unwrap();
    sems.op(
        &[common::ipc::SemOp::give(proto::sem::RECEIVER).undo()],
        None,
    )
    .unwrap();
    sems.set(proto::sem::GATE, 1).unwrap();
    let m = ctl.attach(true).unwrap();
    m.write(0, &proto::info(1 << 20, 8, rdv.id(), sems.id()))
        .unwrap();
    m.store_u32(128, 1).unwrap();
    rdv.attach(true)
        .unwrap()
        .store_u32(proto::TICKET_OFF, 1)
        .unwrap();
    drop(m);
    let f = env.file("a", 100_000);
    let started = std::time::Instant::now();
    let o = env.send(&[f.to_str().unwrap()]);
    exits(&o, 69);
    assert!(stderr(&o).contains("is gone"), "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(10));
}
