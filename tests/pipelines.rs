//! Receivers that feed something: `recv --exec`, `send -r` with `recv --keep-path`, and
//! `recv --json`.

mod common;

use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

use common::*;
use shmxfer::{SendError, SendOptions, Sender};

/// A tree with nested directories, an empty file, names with spaces, a symlink and a FIFO.
fn tree(env: &Env) -> std::path::PathBuf {
    let t = env.path("tree");
    std::fs::create_dir_all(t.join("sub dir/deeper")).unwrap();
    std::fs::write(t.join("a.txt"), pattern(5000, 1)).unwrap();
    std::fs::write(t.join("empty"), b"").unwrap();
    std::fs::write(t.join("sub dir/b c.bin"), pattern(300_000, 2)).unwrap();
    std::fs::write(t.join("sub dir/deeper/d"), pattern(10, 3)).unwrap();
    symlink(t.join("a.txt"), t.join("link")).unwrap();
    assert!(
        std::process::Command::new("mkfifo")
            .arg(t.join("fifo"))
            .status()
            .unwrap()
            .success()
    );
    t
}

fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[test]
fn a_tree_sent_with_r_is_recreated_with_keep_path_and_reported_as_json() {
    let env = Env::new();
    let t = tree(&env);
    let r = env.recv(&["--keep-path", "--json", "-m"]);
    let o = env.send(&["-r", t.to_str().unwrap()]);
    exits(&o, 0);
    let err = stderr(&o);
    assert!(err.contains("link: a symbolic link"), "{err}");
    assert!(err.contains("fifo: not a regular file"), "{err}");
    for rel in ["a.txt", "empty", "sub dir/b c.bin", "sub dir/deeper/d"] {
        assert!(
            same(&env.out().join("tree").join(rel), &t.join(rel)),
            "{rel}"
        );
    }
    assert!(!env.out().join("tree/link").exists());
    // -L follows the link: a file like any other.
    let o = env.send(&["-r", "-L", t.to_str().unwrap()]);
    exits(&o, 0);
    assert!(same(&env.out().join("tree/link"), &t.join("a.txt")));
    let out = r.stop();
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 4 + 5, "{lines:?}");
    let first = &lines[0];
    assert_eq!(first["name"], "tree/a.txt");
    assert_eq!(
        first["path"],
        env.out().join("tree/a.txt").to_str().unwrap()
    );
    assert_eq!(first["size"], 5000);
    assert_eq!(first["md5"].as_str().unwrap().len(), 32);
    assert!(first["sender_pid"].as_i64().unwrap() > 0);
    assert!(first["mtime"].as_f64().unwrap() > 1e9);
    // The second send met the first's files: never replaced, numbered beside them.
    assert!(
        lines
            .iter()
            .any(|l| l["path"].as_str().unwrap().ends_with("tree/a-1.txt"))
    );
}

#[test]
fn without_keep_path_a_tree_lands_flat_under_counter_names() {
    let env = Env::new();
    let t = tree(&env);
    let _r = env.recv(&[]);
    let o = env.send(&["-r", t.to_str().unwrap()]);
    exits(&o, 0);
    assert_eq!(
        listing(&env.out()),
        ["file01.jpg", "file02.jpg", "file03.jpg", "file04.jpg"]
    );
    let o = env.send(&[t.to_str().unwrap()]);
    exits(&o, 66);
    assert!(stderr(&o).contains("with -r"), "{}", stderr(&o));
}

#[test]
fn a_hostile_relative_path_is_refused_and_nothing_lands_outside_dir() {
    let env = Env::new();
    let _r = env.recv(&["--keep-path"]);
    let opts = SendOptions {
        wait: Some(Duration::from_secs(10)),
        ..SendOptions::default()
    };
    let mut tx = Sender::connect(env.key, &opts).unwrap();
    for bad in [
        &b"../escape.txt"[..],
        b"a/../../escape.txt",
        b"/tmp/escape.txt",
        b"a//b",
        b"a/./b",
        b"dir/",
        b"x/.shmxfer-1-1.part",
    ] {
        let e = tx.send_bytes(bad, b"payload").unwrap_err();
        assert!(
            matches!(e, SendError::PathRefused(_)),
            "{}: {e}",
            String::from_utf8_lossy(bad)
        );
    }
    // The channel still serves: a good path goes through.
    tx.send_bytes(b"ok/fine.txt", b"payload").unwrap();
    tx.finish().unwrap();
    assert!(!env.path("escape.txt").exists() && !std::path::Path::new("/tmp/escape.txt").exists());
    assert_eq!(listing(&env.out()), ["ok"]);
    assert_eq!(listing(&env.out().join("ok")), ["fine.txt"]);
}

#[test]
fn a_symlink_planted_in_the_output_tree_is_never_followed() {
    let env = Env::new();
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(env.out()).unwrap();
    symlink(&outside, env.out().join("tree")).unwrap();
    let t = env.path("tree");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(t.join("x"), b"secret").unwrap();
    let _r = env.recv(&["--keep-path"]);
    let o = env.send(&["-r", t.to_str().unwrap()]);
    exits(&o, 74);
    assert!(listing(&outside).is_empty(), "{:?}", listing(&outside));
}

#[test]
fn exec_runs_after_each_commit_and_a_failing_command_does_not_stop_the_receiver() {
    let env = Env::new();
    let log = env.path("log");
    let script = format!(
        "printf '%s|%s|%s|%s|%s\\n' \"$1\" \"$2\" \"$SHMXFER_NAME\" \"$SHMXFER_SIZE\" \"$SHMXFER_MD5\" >> {}; \
         test -s \"$SHMXFER_PATH\" && [ \"$SHMXFER_SIZE\" != 3 ]",
        log.display()
    );
    let r = env.recv(&[
        "--keep-name",
        "-m",
        "--exec",
        "sh",
        "-c",
        &script,
        "sh",
        "{}",
        "{/}",
    ]);
    let good = env.file("good one.txt", 10);
    let bad = env.file("bad.txt", 3);
    let o = env.send(&[bad.to_str().unwrap(), good.to_str().unwrap()]);
    exits(&o, 0);
    let t = Instant::now();
    while std::fs::read_to_string(&log).map_or(0, |l| l.lines().count()) < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the commands never ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = r.stop();
    let err = stderr(&out);
    assert!(
        err.contains("--exec: sh for") && err.contains("failed: exit status: 1"),
        "{err}"
    );
    let lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let path = env.out().join("good one.txt");
    let md5 = format!("{:x}", md5::compute(std::fs::read(&path).unwrap()));
    assert_eq!(
        lines[1],
        format!("{}|good one.txt|good one.txt|10|{md5}", path.display())
    );
}

#[test]
fn jobs_run_commands_at_once_and_once_exits_nonzero_after_a_failed_command() {
    let env = Env::new();
    // Each command marks its start and waits for the other's: only together can both end.
    let script = format!(
        "touch {d}/started-$SHMXFER_SIZE; for i in $(seq 100); do [ $(ls {d} | grep -c started) -ge 2 ] && exit 0; sleep 0.05; done; exit 1",
        d = env.dir.path().join("marks").display()
    );
    std::fs::create_dir_all(env.path("marks")).unwrap();
    let r = env.recv(&["--jobs", "2", "--exec", "sh", "-c", &script]);
    let (a, b) = (env.file("a", 1), env.file("b", 2));
    let o = env.send(&[a.to_str().unwrap(), b.to_str().unwrap()]);
    exits(&o, 0);
    let t = Instant::now();
    while listing(&env.path("marks")).len() < 2 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Both commands started; a stop now waits for them (they end at once) before it ends.
    let out = r.stop();
    assert!(!stderr(&out).contains("failed"), "{}", stderr(&out));

    let mut c = env.cmd(&["recv", "--once", "--dir", "once", "--exec", "false"]);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    let up = wait_until(Duration::from_secs(10), || serving(env.key));
    assert!(up);
    let o = env.send(&[a.to_str().unwrap()]);
    exits(&o, 0);
    let out = finish(child, Duration::from_secs(20));
    exits(&out, 1);
}

#[test]
fn a_stopping_receiver_waits_boundedly_for_a_hanging_command_and_says_so() {
    let env = Env::new();
    let r = env.recv(&["--exec", "sleep", "60"]);
    let f = env.file("a", 1);
    let o = env.send(&[f.to_str().unwrap()]);
    exits(&o, 0);
    assert!(
        wait_until(Duration::from_secs(10), || has_child(r.pid(), "sleep")),
        "the command never started"
    );
    let t = Instant::now();
    r.signal("TERM");
    let mut r = r;
    let out = finish(r.child.take().unwrap(), Duration::from_secs(30));
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
    exits(&out, 130);
    let err = stderr(&out);
    assert!(
        err.contains("waiting up to 5s for 1 running --exec"),
        "{err}"
    );
    assert!(err.contains("still running: terminated it"), "{err}");
}

#[test]
fn recv_tells_a_service_manager_it_is_ready_what_it_did_and_that_it_stops() {
    use std::os::unix::net::UnixDatagram;
    let env = Env::new();
    let sock_path = env.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut c = env.cmd(&["recv", "--dir"]);
    c.arg(env.out())
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let r = Receiver {
        child: Some(c.spawn().unwrap()),
    };
    let mut buf = [0u8; 4096];
    let mut next = || {
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = next();
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(ready.contains(&format!("MAINPID={}", r.pid())), "{ready}");
    // Ready means a sender gets through at once.
    let f = env.file("a.bin", 10);
    let o = env.send(&[f.to_str().unwrap()]);
    exits(&o, 0);
    let status = next();
    assert!(status.starts_with("STATUS=1 file committed;"), "{status}");
    r.signal("TERM");
    let stopping = next();
    assert!(stopping.contains("STOPPING=1"), "{stopping}");
    let out = r.wait(Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(130));
    // Whatever came after: STOPPING once, and the count in words.
    sock.set_nonblocking(true).unwrap();
    let mut rest = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        rest.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        !rest.iter().any(|m| m.contains("STOPPING=1")),
        "sent twice: {rest:?}"
    );
    assert!(
        rest.iter()
            .any(|m| m.contains("STATUS=stopping, 1 file committed")),
        "{rest:?}"
    );
}
