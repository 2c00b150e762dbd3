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
    let up = wait_until(Duration::from_secs(10), || serving(env.key));
    if !up {
        eprintln!("skipped: cannot make a PID namespace here (needs root)");
        return;
    }
    let receiver = children(unshare);
    assert_eq!(receiver.len(), 1, "{receiver:?}");
    let host_pid = receiver[0];

    let f = env.file("a.bin", 300_000);
    let o = env.send(&["-m", f.to_str().unwrap()]);
    exits(&o, 0);

    let mut c = Command::new(BIN);
    c.args(["status", "--json", "--key", &env.key_arg()]);
    let o = run_bounded(c, Duration::from_secs(10));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["channels"][0]["receiver_pid"], host_pid, "{j}");

    let o = run_bounded(
        env.cmd(&["recv", "--dir", "other"]),
        Duration::from_secs(10),
    );
    exits(&o, 75);
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

/// Runs `script` (sh) in a private IPC namespace, where the kernel's limits can be lowered
/// without touching the host's; `None` where namespaces cannot be made here.
fn in_private_ipc(script: &str) -> Option<std::process::Output> {
    let mut c = Command::new("unshare");
    c.args(["--ipc", "sh", "-c", script])
        .env("BIN", BIN)
        .env_remove("SHMXFER_KEY");
    let o = run_bounded(c, Duration::from_secs(30));
    let err = stderr(&o);
    (!err.contains("unshare failed")).then_some(o)
}

#[test]
fn a_kernel_limit_that_stops_a_receiver_is_named_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let cases = [
        // (limits to set, the error's words, its advice)
        (
            "echo 4096 > /proc/sys/kernel/shmmax",
            "control segment at key 0x00000100: 53248 bytes is more than one segment may hold here (kernel.shmmax = 4096)",
            "raise the limit to at least 53248 bytes",
        ),
        (
            "echo 100000 > /proc/sys/kernel/shmmax",
            "sender segment at key 0x00000100: 8441856 bytes is more than one segment may hold here (kernel.shmmax = 100000)",
            "choose a smaller ring (--slot-size, --slots)",
        ),
        (
            "echo '250 32000 32 1' > /proc/sys/kernel/sem; ipcmk -S 1 >/dev/null",
            "semaphore set at key 0x00000100: the kernel's limit on semaphore sets (SEMMNI, the 4th field of kernel.sem: 1)",
            "`shmxfer status -u` shows what is in use",
        ),
        (
            "echo 2 > /proc/sys/kernel/shmmni; ipcmk -M 10 >/dev/null; ipcmk -M 10 >/dev/null",
            "the kernel's limit on shared memory segments is reached (2 in use, kernel.shmmni = 2)",
            "raise the limit (sysctl kernel.shmmni)",
        ),
    ];
    for (limits, words, advice) in cases {
        let script = format!(
            "{limits}; \"$BIN\" recv --key 0x100 --dir {d}/out; echo \"exit $?\"; ipcs -m -s | grep -c '^0x00000[12]0'"
        );
        let Some(o) = in_private_ipc(&script) else {
            eprintln!("skipped: no private IPC namespace here");
            return;
        };
        let (out, err) = (stdout(&o), stderr(&o));
        assert!(out.contains("exit 71"), "{limits}: {out} {err}");
        assert!(err.contains(words), "{limits}: {err}");
        assert!(err.contains(advice), "{limits}: {err}");
        assert!(!err.contains("os error"), "{err}");
        // Nothing of the channel is left half-made.
        assert!(out.trim_end().ends_with('0'), "{limits}: {out}");
    }
}

#[test]
fn status_l_is_ipcs_l_b_line_for_line_with_the_namespaces_limits() {
    let script = "echo 123456789 > /proc/sys/kernel/shmmax; echo 7777 > /proc/sys/kernel/shmall; echo '250 32000 32 77' > /proc/sys/kernel/sem; \
        for f in '' -m -s -q; do \"$BIN\" status -l $f > a; ipcs -l -b $f > b; cmp a b || { diff a b; echo DIFF; }; done";
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new("unshare");
    c.args(["--ipc", "sh", "-c", script])
        .env("BIN", BIN)
        .current_dir(dir.path());
    let o = run_bounded(c, Duration::from_secs(30));
    if stderr(&o).contains("unshare failed") {
        eprintln!("skipped: no private IPC namespace here");
        return;
    }
    assert!(!stdout(&o).contains("DIFF"), "{}", stdout(&o));
    exits(&o, 0);
}

#[test]
fn status_stays_linear_in_the_number_of_ipc_objects() {
    // Thousands of segments and sets in a private IPC namespace (a host may hold 32,000), and
    // status timed at two sizes in the same run: linear work grows 4 times from 1,000 to 4,000
    // objects, quadratic work 16 times. Only the ratio is judged, generously.
    let script = r#"
import ctypes, os, subprocess, sys, time
libc = ctypes.CDLL(None, use_errno=True)
open("/proc/sys/kernel/shmmni", "w").write("32000")
open("/proc/sys/kernel/sem", "w").write("250 1024000 32 32000")
def grow(n):
    for _ in range(n):
        if libc.shmget(0, 4096, 0o1600) < 0 or libc.semget(0, 1, 0o1600) < 0:
            sys.exit("cannot create: errno %d" % ctypes.get_errno())
def timed(args):
    best = []
    for _ in range(3):
        t = time.monotonic()
        out = subprocess.run([os.environ["BIN"], "status"] + args, capture_output=True)
        best.append(time.monotonic() - t)
        assert out.returncode == 0, out.stderr
    return sorted(best)[1], out.stdout
grow(1000)
small = [timed(a)[0] for a in (["-m"], ["-u"], ["--json"])]
grow(3000)
large = [timed(a)[0] for a in (["-m"], ["-u"], ["--json"])]
rows = timed(["-m"])[1].decode().count("\n0x00000000")
print("rows", rows)
for s, l in zip(small, large):
    print("ratio %.1f (%.0f ms, %.0f ms)" % (l / s, s * 1e3, l * 1e3))
"#;
    let mut c = Command::new("unshare");
    c.args(["--ipc", "python3", "-c", script]).env("BIN", BIN);
    let o = run_bounded(c, Duration::from_secs(120));
    if stderr(&o).contains("unshare failed") {
        eprintln!("skipped: no private IPC namespace here");
        return;
    }
    let out = stdout(&o);
    eprintln!("{out}");
    exits(&o, 0);
    assert!(out.contains("rows 4000"), "every segment is listed: {out}");
    for line in out.lines().filter(|l| l.starts_with("ratio")) {
        let r: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(r < 10.0, "status grew faster than the objects: {line}");
    }
}
