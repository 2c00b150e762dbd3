//! A receiver in its own PID namespace (as in a container sharing the host's IPC namespace):
//! transfers work, and every pid shmxfer shows is the one the caller's namespace knows.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The pids of `pid`'s children.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

#[test]
fn a_receiver_in_its_own_pid_namespace_is_shown_with_the_pid_the_host_knows() {
    let env = Env::new();
    let mut c = Command::new("unshare");
    // --kill-child: the receiver dies with unshare, so a failing test leaves no process.
    c.args([
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        BIN,
        "recv",
        "--key",
    ])
    .arg(env.key_arg())
    .arg("--dir")
    .arg(env.out())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let Ok(child) = c.spawn() else {
        eprintln!("skipped: no unshare");
        return;
    };
    let unshare = child.id();
    let r = Receiver { child: Some(child) };
    let up = wait_until(Duration::from_secs(10), || {
        matches!(
            shmxfer::frame::probe(env.key),
            Ok(shmxfer::frame::Probe::Channel { alive: true, .. })
        )
    });
    if !up {
        eprintln!("skipped: cannot make a PID namespace here (needs root)");
        return;
    }
    let receiver = children(unshare);
    assert_eq!(receiver.len(), 1, "{receiver:?}");
    let host_pid = receiver[0];

    let f = env.file("a.bin", 300_000);
    let o = env.send(&["-m", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));

    let mut c = Command::new(BIN);
    c.args(["status", "--json", "--key", &env.key_arg()]);
    let o = run_bounded(c, Duration::from_secs(10));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["channels"][0]["receiver_pid"], host_pid, "{j}");

    let o = run_bounded(
        env.cmd(&["recv", "--dir", "other"]),
        Duration::from_secs(10),
    );
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("(pid {host_pid}, user root)")),
        "{}",
        stderr(&o)
    );
    // SIGTERM to the receiver itself (unshare does not pass it on).
    let _ = Command::new("kill").arg(host_pid.to_string()).status();
    let _ = r.wait(Duration::from_secs(10));
    assert_eq!(listing(&env.out()), ["file01.jpg"]);
    assert!(same(&env.out().join("file01.jpg"), &f));
}
