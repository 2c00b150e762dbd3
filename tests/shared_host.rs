//! Several users on one kernel's IPC namespace: per-user default channels, named channels, no
//! file handed to another user's receiver unless asked, and liveness nobody can forge. The
//! other user is real: `nobody`, through setpriv.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ipc::{Mapping, SemOp, SemSet, Shm};
use common::proto::sem;
use common::*;
use shmxfer::Key;

const NOBODY: u32 = 65534;

/// `shmxfer ARGS` as nobody, in `dir` (made writable for it).
fn nobody(dir: &std::path::Path, args: &[&str]) -> Command {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(args)
        .current_dir(dir)
        .env_remove("SHMXFER_KEY");
    c
}

/// Starts `c` (a receiver) and waits until a live channel is at `key`.
fn serving(mut c: Command, key: Key) -> Receiver {
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let r = Receiver {
        child: Some(c.spawn().unwrap()),
    };
    let up = wait_until(Duration::from_secs(10), || common::serving(key));
    assert!(up, "the receiver never came up at {key}");
    r
}

fn status_json(key: &str) -> serde_json::Value {
    let o = shmxfer(&["status", "--json", "--key", key]);
    exits(&o, 0);
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn files_go_to_another_users_receiver_only_when_that_user_is_named() {
    let env = Env::new();
    let _r = serving(
        nobody(
            env.dir.path(),
            &[
                "recv",
                "--key",
                &env.key_arg(),
                "--mode",
                "0666",
                "--dir",
                "out",
            ],
        ),
        env.key,
    );
    let f = env.file("secret.pdf", 5000);
    // Root is no exception: the file would be nobody's.
    let o = env.send(&[f.to_str().unwrap()]);
    exits(&o, 77);
    let err = stderr(&o);
    assert!(
        err.contains("runs as nobody") && err.contains("--owner nobody"),
        "{err}"
    );
    assert!(listing(&env.out()).is_empty());
    // Named by name, then by uid: handed over, and owned by nobody.
    for owner in ["nobody", "65534"] {
        let o = env.send(&["--owner", owner, f.to_str().unwrap()]);
        assert!(o.status.success(), "{owner}: {}", stderr(&o));
    }
    assert_eq!(listing(&env.out()), ["file01.jpg", "file02.jpg"]);
    let md = std::fs::metadata(env.out().join("file01.jpg")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&md), NOBODY);
    let o = env.send(&["--owner", "no-such-user-here", f.to_str().unwrap()]);
    exits(&o, 64);
}

#[test]
fn each_user_has_a_default_channel_of_their_own() {
    let (root_key, nobody_key) = (user_key(0), user_key(NOBODY));
    // This test uses the real defaults: only when nothing is there.
    for k in [root_key, nobody_key] {
        if !absent(k) || Shm::open(Key(k.0 + 1)).is_ok() {
            eprintln!("skipped: the default key {k} is in use");
            return;
        }
    }
    let (_g1, _g2) = (KeyGuard::new(root_key), KeyGuard::new(nobody_key));
    let env = Env::new();
    let root_out = env.path("root-out");
    let _root = serving(
        bin(&["recv", "--dir", root_out.to_str().unwrap()]),
        root_key,
    );
    let _nobody = serving(
        nobody(env.dir.path(), &["recv", "--dir", "nobody-out"]),
        nobody_key,
    );
    let f = env.file("a.txt", 100);
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = shmxfer(&["send", f.to_str().unwrap()]);
    exits(&o, 0);
    let o = run_bounded(
        nobody(env.dir.path(), &["send", f.to_str().unwrap()]),
        Duration::from_secs(20),
    );
    exits(&o, 0);
    assert_eq!(listing(&root_out), ["file01.jpg"]);
    assert_eq!(listing(&env.path("nobody-out")), ["file01.jpg"]);
    let j = status_json(&format!("{:#x}", nobody_key.0));
    assert_eq!(j["channels"][0]["owner"], "nobody", "{j}");
    assert_eq!(j["channels"][0]["uid"], NOBODY, "{j}");
}

#[test]
fn named_channels_meet_by_name_and_refuse_a_key_that_serves_another() {
    let (name, key, _g) = own_name("named");
    let env = Env::new();
    let r = serving(
        bin(&["recv", "--key", &name, "--dir", env.out().to_str().unwrap()]),
        key,
    );
    let f = env.file("photo.jpg", 3000);
    let o = shmxfer(&["send", "--key", &name, f.to_str().unwrap()]);
    exits(&o, 0);
    assert_eq!(listing(&env.out()), ["file01.jpg"]);
    let j = status_json(&name);
    assert_eq!(j["channels"][0]["name"], name.as_str(), "{j}");
    // The same key by number reaches the same channel.
    let o = shmxfer(&[
        "send",
        "--key",
        &format!("{:#x}", key.0),
        f.to_str().unwrap(),
    ]);
    exits(&o, 0);
    drop(r);
    // A receiver serving that key by number is not the channel of that name.
    let _r = serving(
        bin(&[
            "recv",
            "--key",
            &format!("{:#x}", key.0),
            "--dir",
            env.out().to_str().unwrap(),
        ]),
        key,
    );
    let o = shmxfer(&["send", "--key", &name, f.to_str().unwrap()]);
    exits(&o, 69);
    assert!(stderr(&o).contains("serves no name"), "{}", stderr(&o));
    let o = shmxfer(&["recv", "--key", &name, "--dir", "x"]);
    exits(&o, 75);
    assert!(stderr(&o).contains("shares its key"), "{}", stderr(&o));
}

#[test]
fn a_forged_liveness_mark_never_makes_a_live_receiver_look_dead() {
    let env = Env::new();
    let _r = env.recv(&["--mode", "0666"]);
    let sems = SemSet::open(env.key).unwrap();
    // What anyone allowed to write the channel can do: zero the receiver's mark.
    sems.set(sem::RECEIVER, 0).unwrap();
    let o = shmxfer(&["clean", "--stale", "--key", &env.key_arg()]);
    exits(&o, 0);
    assert!(Shm::open(env.key).is_ok() && SemSet::open(env.key).is_ok());
    let j = status_json(&env.key_arg());
    assert_eq!(j["channels"][0]["state"], "idle", "{j}");
    let f = env.file("a.bin", 200_000);
    let o = env.send(&["-m", f.to_str().unwrap()]);
    exits(&o, 0);
    assert_eq!(listing(&env.out()), ["file01.jpg"]);
}

#[test]
fn a_forged_header_is_never_taken_for_a_dead_channel() {
    let env = Env::new();
    let _r = env.recv(&["--mode", "0666"]);
    let control: Mapping = Shm::open(env.key).unwrap().attach(true).unwrap();
    let mut real = [0u8; 4];
    control.read(40, &mut real).unwrap();
    // The header's semaphore-set id, pointed at a set nobody holds.
    let decoy = SemSet::create(Key(env.key.0 + 2), 7, 0o600).unwrap();
    control.write(40, &decoy.id().to_ne_bytes()).unwrap();
    let o = shmxfer(&["clean", "--stale", "--key", &env.key_arg()]);
    let still = Shm::open(env.key).is_ok() && SemSet::open(env.key).is_ok();
    decoy.remove().unwrap();
    exits(&o, 0);
    assert!(still, "clean --stale removed a live channel");
    let j = status_json(&env.key_arg());
    assert!(j["channels"].as_array().unwrap().is_empty(), "{j}");
    let f = env.file("a.bin", 1000);
    let o = env.send(&[f.to_str().unwrap()]);
    exits(&o, 76);
    // Put back, the channel serves again: nothing was taken down.
    control.write(40, &real).unwrap();
    let o = env.send(&[f.to_str().unwrap()]);
    exits(&o, 0);
}

#[test]
fn a_channel_left_busy_by_a_forged_sender_recovers_within_two_seconds() {
    let env = Env::new();
    let _r = env.recv(&["--mode", "0666"]);
    let sems = SemSet::open(env.key).unwrap();
    // Take the gate and raise the sender's mark by hand, then never send a thing: the mark
    // records us, and we have not attached the channel.
    sems.op(&[SemOp::take(sem::GATE)], Some(Duration::from_secs(5)))
        .unwrap();
    sems.set(sem::SENDER, 1).unwrap();
    let t = Instant::now();
    let f = env.file("a.bin", 1000);
    let o = env.send(&["--wait", "10", f.to_str().unwrap()]);
    exits(&o, 0);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(listing(&env.out()), ["file01.jpg"]);
}

#[test]
fn a_name_taken_by_another_user_is_named_with_its_owner_and_pid() {
    let (name, key, _g) = own_name("taken");
    let env = Env::new();
    let r = serving(
        nobody(env.dir.path(), &["recv", "--key", &name, "--dir", "out"]),
        key,
    );
    // Another user still (not root, who may look at anything): uid 65533.
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65533", "--regid=65533", "--clear-groups", BIN])
        .args(["recv", "--key", &name, "--dir", "/nonexistent/x"])
        .env_remove("SHMXFER_KEY");
    let o = run_bounded(c, Duration::from_secs(20));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(75), "{err}");
    let pid = r.child.as_ref().unwrap().id();
    // setpriv execs the receiver: same pid.
    assert!(
        err.contains(&format!("is taken by nobody (pid {pid})")),
        "{err}"
    );
    assert!(err.contains("pick another name"), "{err}");
    assert!(!err.contains("--mode"), "{err}");
}

#[test]
fn another_users_private_channel_is_listed_as_unknown_and_its_stale_one_is_not_yours() {
    let env = Env::new();
    // A root receiver, mode 0600: nobody may not read it.
    let r = env.recv(&[]);
    let key = env.key_arg();
    let o = as_nobody(&["status", "--json", "--key", &key]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["channels"][0]["state"], "unknown", "{j}");
    assert_eq!(j["channels"][0]["owner"], "root", "{j}");
    assert_eq!(j["channels"][0]["receiver_pid"], r.pid(), "{j}");
    // Killed, the channel is stale: the kernel's table says so to anyone, and nobody is told
    // it is there and not theirs.
    r.signal("KILL");
    let _ = r.wait(Duration::from_secs(10));
    let o = as_nobody(&["status", "--json", "--key", &key]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["channels"][0]["state"], "stale", "{j}");
    let o = as_nobody(&["clean", "--stale", "--key", &key]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(77), "{err}");
    assert!(err.contains("a stale channel of root"), "{err}");
    assert!(err.contains("not yours to remove: only root can"), "{err}");
    assert!(err.contains("could not be removed"), "{err}");
    // A dry run says what would happen, not what did.
    let o = as_nobody(&["clean", "--stale", "--dry-run", "--key", &key]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(77), "{err}");
    assert!(err.contains("1 object(s) would not be removed"), "{err}");
    assert!(!err.contains("could not"), "{err}");
    assert!(Shm::open(env.key).is_ok(), "still there");
}
