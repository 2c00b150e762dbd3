//! `status` against ipcs/ipcmk, and `clean`'s refusals and removals.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// An object made by ipcmk, removed by id when dropped.
struct Made {
    kind: char,
    id: i32,
}

/// The key ipcs shows for an object of ours, by id.
fn key_of(flag: &str, id: i32) -> String {
    ipcs_row(flag, id)[0].clone()
}

impl Made {
    fn new(args: &[&str], kind: char) -> Made {
        let o = Command::new("ipcmk").args(args).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        let id = text.split(':').nth(1).unwrap().trim().parse().unwrap();
        Made { kind, id }
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        let _ = Command::new("ipcrm")
            .arg(format!("-{}", self.kind))
            .arg(self.id.to_string())
            .status();
    }
}

fn status_json(args: &[&str]) -> Value {
    let o = run_bounded(
        {
            let mut c = Command::new(BIN);
            c.arg("status").arg("--json").args(args);
            c
        },
        Duration::from_secs(20),
    );
    exits(&o, 0);
    serde_json::from_slice(&o.stdout).unwrap()
}

/// ipcs's row for an id: (key, owner, perms, size-or-count).
fn ipcs_row(flag: &str, id: i32) -> Vec<String> {
    let o = Command::new("ipcs").arg(flag).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .find(|f| f.len() > 4 && f[0].starts_with("0x") && f[1] == id.to_string())
        .unwrap_or_else(|| panic!("ipcs {flag} has no id {id}"))
}

#[test]
fn ipcmk_objects_appear_with_the_ids_keys_and_sizes_ipcs_reports() {
    let shm = Made::new(&["-M", "12345", "-p", "0640"], 'm');
    let sem = Made::new(&["-S", "3"], 's');
    let msg = Made::new(&["-Q"], 'q');
    let j = status_json(&[]);
    let find = |kind: &str, id: i32| -> Value {
        j[kind]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{kind} {id} missing"))
    };
    let r = find("shm", shm.id);
    let row = ipcs_row("-m", shm.id);
    assert_eq!(format!("0x{:08x}", r["key"].as_u64().unwrap()), row[0]);
    assert_eq!(r["owner"], row[2].as_str());
    assert_eq!(r["perms"], row[3].as_str());
    assert_eq!(r["bytes"].as_u64().unwrap().to_string(), row[4]);
    assert_eq!(r["nattch"].as_u64().unwrap().to_string(), row[5]);
    let r = find("sem", sem.id);
    let row = ipcs_row("-s", sem.id);
    assert_eq!(format!("0x{:08x}", r["key"].as_u64().unwrap()), row[0]);
    assert_eq!(r["nsems"].as_u64().unwrap().to_string(), row[4]);
    let r = find("msg", msg.id);
    let row = ipcs_row("-q", msg.id);
    assert_eq!(format!("0x{:08x}", r["key"].as_u64().unwrap()), row[0]);
    assert_eq!(r["used_bytes"].as_u64().unwrap().to_string(), row[4]);
    assert_eq!(r["messages"].as_u64().unwrap().to_string(), row[5]);

    // The plain listing agrees with lsipc too.
    let o = Command::new("lsipc")
        .args(["-m", "--noheadings", "-o", "ID,KEY,SIZE", "--bytes"])
        .output()
        .unwrap();
    let lsipc = String::from_utf8_lossy(&o.stdout);
    let line = lsipc
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&shm.id.to_string()))
        .unwrap();
    assert!(line.contains("12345"), "{line}");
    let o = shmxfer(&["status", "-m", "-b"]);
    let text = stdout(&o);
    assert!(
        text.lines()
            .any(|l| l.contains(&shm.id.to_string()) && l.contains("12345") && l.contains("640")),
        "{text}"
    );
}

#[test]
fn a_live_channel_is_idle_and_marked_in_every_section() {
    let env = Env::new();
    let r = env.recv(&[]);
    let j = status_json(&["--key", &env.key_arg()]);
    let ch = &j["channels"][0];
    assert_eq!(ch["state"], "idle");
    assert_eq!(ch["receiver_pid"], r.pid());
    assert_eq!(ch["key"], env.key.0);
    assert_eq!(ch["mode"], "600");
    let roles: Vec<_> = j["shm"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["role"].clone())
        .collect();
    assert!(
        roles.contains(&Value::from("control")) && roles.contains(&Value::from("rendezvous")),
        "{roles:?}"
    );
    assert_eq!(j["sem"][0]["role"], "semaphores");
}

#[test]
fn a_busy_channel_shows_the_file_and_progress() {
    let env = Env::new();
    let _r = env.recv(&[]);
    let mut c = env.cmd(&["send", "--name", "slow.bin", "-"]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let _g = PidGuard(child.id() as i32);
    let mut stdin = child.stdin.take().unwrap();
    use std::io::Write;
    // Two slots' worth, then hold the pipe open: the transfer stays in flight.
    stdin.write_all(&vec![7u8; 3 << 20]).unwrap();
    let mut seen = Value::Null;
    assert!(
        wait_until(Duration::from_secs(10), || {
            seen = status_json(&["--key", &env.key_arg()])["channels"][0].clone();
            seen["state"] == "busy"
                && seen["transfer"]["bytes_done"].as_u64().unwrap_or(0) >= 1 << 20
        }),
        "{seen}"
    );
    assert_eq!(seen["transfer"]["name"], "slow.bin");
    assert_eq!(seen["transfer"]["sender_pid"], child.id() as i64);
    assert_eq!(seen["transfer"]["sender_uid"], 0);
    assert_eq!(seen["transfer"]["sender_user"], "root");
    assert!(seen["transfer"]["total"].is_null());
    let text = stdout(&shmxfer(&["status", "--key", &env.key_arg()]));
    assert!(
        text.contains(&format!("from root (pid {})", child.id())),
        "{text}"
    );
    drop(stdin);
    let o = finish(child, Duration::from_secs(20));
    exits(&o, 0);
}

#[test]
fn a_killed_receivers_channel_is_stale_and_clean_removes_it() {
    let env = Env::new();
    let r = env.recv(&[]);
    let pid = r.pid();
    r.signal("KILL");
    let out = r.wait(Duration::from_secs(10));
    assert!(!out.status.success());
    let j = status_json(&["--key", &env.key_arg()]);
    assert_eq!(j["channels"][0]["state"], "stale");
    assert_eq!(j["channels"][0]["receiver_pid"], pid, "{j}");
    let o = run_bounded(env.cmd(&["clean", "--dry-run"]), Duration::from_secs(10));
    assert!(stdout(&o).contains("would remove"), "{}", stdout(&o));
    assert!(ipc::Shm::open(env.key).is_ok(), "dry run removed something");
    let o = run_bounded(env.cmd(&["clean"]), Duration::from_secs(10));
    removed(&o, 3);
    assert!(absent(env.key));
}

#[test]
fn clean_refuses_a_live_channel_unless_forced() {
    let env = Env::new();
    let r = env.recv(&[]);
    let o = run_bounded(env.cmd(&["clean"]), Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(75));
    assert!(stderr(&o).contains(&r.pid().to_string()), "{}", stderr(&o));
    assert!(ipc::Shm::open(env.key).is_ok());
    let o = run_bounded(env.cmd(&["clean", "--force"]), Duration::from_secs(10));
    assert!(o.status.success());
    // The receiver notices its channel is gone and ends with an error, not a hang.
    let out = r.wait(Duration::from_secs(10));
    exits(&out, 69);
}

#[test]
fn clean_stale_removes_dead_channels_only_and_never_foreign_objects() {
    let size = proto::CONTROL_LEN.to_string();
    let foreign = Made::new(&["-M", &size], 'm');
    let foreign_sem = Made::new(&["-S", "7"], 's');
    let live = Env::new();
    let _r = live.recv(&[]);
    let dead = Env::new();
    let d = dead.recv(&[]);
    d.signal("KILL");
    d.wait(Duration::from_secs(10));
    // Scoped to each of this test's keys in turn: a test never sweeps the whole host.
    for key in [
        dead.key_arg(),
        live.key_arg(),
        key_of("-m", foreign.id),
        key_of("-s", foreign_sem.id),
    ] {
        if key == "0x00000000" {
            continue;
        }
        let o = shmxfer(&["clean", "--stale", "--key", &key]);
        assert!(o.status.success(), "{key}: {}", stderr(&o));
    }
    assert!(ipc::Shm::open(dead.key).is_err());
    assert!(ipc::Shm::open(live.key).is_ok());
    assert!(ipc::Shm::from_id(foreign.id).stat().is_ok());
    assert!(ipc::SemSet::from_id(foreign_sem.id).stat().is_ok());
}

#[test]
fn clean_leaves_a_foreign_segment_at_the_key_alone() {
    let env = Env::new();
    let shm = ipc::Shm::create(env.key, 8192, 0o600).unwrap();
    // Not blank: a blank one made by a live process is a receiver setting up (bad_input.rs).
    shm.attach(true).unwrap().write(0, b"another app").unwrap();
    let o = run_bounded(env.cmd(&["clean", "--force"]), Duration::from_secs(10));
    exits(&o, 76);
    assert!(shm.stat().is_ok());
}

#[test]
fn clean_with_nothing_there_says_so_and_succeeds() {
    let env = Env::new();
    let o = run_bounded(env.cmd(&["clean"]), Duration::from_secs(10));
    assert!(o.status.success());
    assert!(stdout(&o).contains("nothing to clean"));
}

#[test]
fn status_into_a_closed_pipe_ends_quietly() {
    let _many: Vec<Made> = (0..20).map(|_| Made::new(&["-M", "4096"], 'm')).collect();
    let script = format!(
        "{BIN} status | (exec 0<&-; true); a=${{PIPESTATUS[0]}}; {BIN} status --json | head -c 1 >/dev/null; b=${{PIPESTATUS[0]}}; \
         test $a = 0 && test $b = 0"
    );
    let o = Command::new("bash").arg("-c").arg(script).output().unwrap();
    assert!(
        o.status.success(),
        "status exited non-zero into a closed pipe"
    );
    assert_eq!(stderr(&o), "", "status wrote to stderr on a closed pipe");
}

#[test]
fn limits_times_and_pids_render_like_ipcs() {
    let shm = Made::new(&["-M", "4096"], 'm');
    let o = shmxfer(&["status", "-l", "-b"]);
    assert!(o.status.success());
    let shmmax = std::fs::read_to_string("/proc/sys/kernel/shmmax").unwrap();
    assert!(
        stdout(&o).contains(&format!("max seg size (bytes) = {}", shmmax.trim())),
        "{}",
        stdout(&o)
    );
    let sem = std::fs::read_to_string("/proc/sys/kernel/sem").unwrap();
    let arrays = sem.split_whitespace().nth(3).unwrap();
    assert!(
        stdout(&o).contains(&format!("max number of arrays = {arrays}")),
        "{}",
        stdout(&o)
    );
    let o = shmxfer(&["status", "-m", "-t"]);
    let line = stdout(&o)
        .lines()
        .find(|l| l.starts_with(&shm.id.to_string()))
        .map(String::from)
        .unwrap();
    assert!(line.contains("not set"), "never attached: {line}");
    let o = shmxfer(&["status", "-m", "-p"]);
    let cpid = String::from_utf8(
        Command::new("ipcs")
            .args(["-m", "-p"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let theirs = cpid
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&shm.id.to_string()))
        .unwrap();
    let ours = stdout(&o)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&shm.id.to_string()))
        .map(String::from)
        .unwrap();
    assert_eq!(
        theirs.split_whitespace().collect::<Vec<_>>()[2..],
        ours.split_whitespace().collect::<Vec<_>>()[2..]
    );
}

#[test]
fn a_receiver_whose_stdout_reader_left_stops_quietly_between_files_with_141() {
    let env = Env::new();
    let shell = env
        .piped_recv("--dir out | head -n 1 >/dev/null; echo \"recv exited ${PIPESTATUS[0]}\" >&2");
    let f = env.file("a", 10);
    // `head` leaves after the first line; the receiver stops at the first line it cannot
    // write, after committing that file: later sends find no receiver.
    let mut sent = 0;
    for i in 0..6 {
        // The first waits for the receiver to come up; the others must not wait for one.
        let o = match i {
            0 => env.send(&["--wait", "10", f.to_str().unwrap()]),
            _ => env.send(&[f.to_str().unwrap()]),
        };
        match o.status.code() {
            Some(0) => sent += 1,
            Some(69) => break,
            other => panic!("{other:?}: {}", stderr(&o)),
        }
    }
    assert!((2..6).contains(&sent), "{sent} sent");
    let out = finish(shell, Duration::from_secs(10));
    let err = stderr(&out);
    assert!(err.contains("recv exited 141"), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    // Every file committed is whole, and none is left half-made.
    let names = listing(&env.out());
    assert_eq!(names.len(), sent, "{names:?}");
    for n in names {
        assert!(same(&f, &env.out().join(n)));
    }
}

/// The last pid to attach or detach the channel's control segment (/proc/sysvipc/shm).
fn control_lpid(env: &Env) -> i64 {
    i64::from(ipc::Shm::open(env.key).unwrap().stat().unwrap().lpid)
}

#[test]
fn listing_objects_never_attaches_to_them_and_json_keeps_to_the_kinds_asked_for() {
    let env = Env::new();
    let _r = env.recv(&[]);
    for args in [
        &["-m"][..],
        &["-s"],
        &["-q"],
        &["-m", "-t"],
        &["-p"],
        &["-m", "--json"],
        &["-s", "--json"],
    ] {
        // Other tests' full views may attach meanwhile: what counts is that ours never did.
        let mut c = Command::new(BIN);
        c.arg("status")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = c.spawn().unwrap();
        let pid = i64::from(child.id());
        let o = finish(child, Duration::from_secs(10));
        assert!(o.status.success(), "{args:?}");
        assert_ne!(
            control_lpid(&env),
            pid,
            "status {args:?} attached to the segment"
        );
    }
    // The check can see an attachment: the full view attaches (read-only). (Another test's
    // view may attach right after ours, so a few tries.)
    let seen = (0..10).any(|_| {
        let mut c = Command::new(BIN);
        c.args(["status", "--key", &env.key_arg()])
            .stdout(Stdio::null());
        let child = c.spawn().unwrap();
        let pid = i64::from(child.id());
        finish(child, Duration::from_secs(10));
        control_lpid(&env) == pid
    });
    assert!(seen, "the full view never showed as an attachment");
    let j = status_json(&["-m"]);
    assert!(
        j.get("shm").is_some() && j.get("sem").is_none() && j.get("channels").is_none(),
        "{j}"
    );
    let j = status_json(&["-s", "-q"]);
    assert!(
        j.get("sem").is_some() && j.get("msg").is_some() && j.get("shm").is_none(),
        "{j}"
    );
    // Shmxfer's objects are still marked, by shape.
    let j = status_json(&["-m", "-s", "--key", &env.key_arg()]);
    let role_at = |kind: &str, key: u32| {
        j[kind]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .map(|r| r["role"].clone())
    };
    assert_eq!(role_at("shm", env.key.0), Some("control".into()), "{j}");
    assert_eq!(
        role_at("shm", env.key.0 + 1),
        Some("rendezvous".into()),
        "{j}"
    );
    assert_eq!(role_at("sem", env.key.0), Some("semaphores".into()), "{j}");
    let j = status_json(&["--key", &env.key_arg()]);
    assert_eq!(j["channels"].as_array().map(Vec::len), Some(1), "{j}");
}

/// The rows of a table whose first field is a number, split on whitespace.
fn numeric_rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .filter(|f| f.first().is_some_and(|x| x.parse::<u64>().is_ok()))
        .collect()
}

#[test]
fn status_i_shows_each_semaphore_as_ipcs_s_i_does() {
    let set = Made::new(&["-S", "3"], 's');
    let sems = ipc::SemSet::from_id(set.id);
    sems.set(1, 5).unwrap();
    let o = shmxfer(&["status", "-s", "-i", &set.id.to_string()]);
    exits(&o, 0);
    let theirs = Command::new("ipcs")
        .args(["-s", "-i", &set.id.to_string()])
        .output()
        .unwrap();
    let theirs = numeric_rows(&String::from_utf8_lossy(&theirs.stdout));
    assert_eq!(numeric_rows(&stdout(&o)), theirs, "{}", stdout(&o));
    assert_eq!(theirs[1][1], "5");
    // No such id: a clear error, exit 1.
    let o = shmxfer(&["status", "-i", "2147483647"]);
    exits(&o, 1);
    says(&o, "no IPC object with id");
}

#[test]
fn status_u_counts_what_ipcs_u_counts() {
    let _set = Made::new(&["-S", "2"], 's');
    let _seg = Made::new(&["-M", "10000"], 'm');
    let pick = |text: &str, label: &str| {
        text.lines()
            .find(|l| l.starts_with(label))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
    };
    // Other tests make and remove objects meanwhile: the two must agree at some moment.
    let agree = (0..50).any(|_| {
        let ours = stdout(&shmxfer(&["status", "-u"]));
        let theirs = Command::new("ipcs").arg("-u").output().unwrap();
        let theirs = String::from_utf8_lossy(&theirs.stdout).into_owned();
        let same = [
            "used arrays",
            "allocated semaphores",
            "segments allocated",
            "pages allocated",
        ]
        .iter()
        .all(|l| pick(&ours, l).is_some() && pick(&ours, l) == pick(&theirs, l));
        if !same {
            std::thread::sleep(Duration::from_millis(50));
        }
        same
    });
    assert!(agree, "{}", stdout(&shmxfer(&["status", "-u"])));
}

#[test]
fn status_c_names_creators_and_owners_as_ipcs_c() {
    let seg = Made::new(&["-M", "4096", "-p", "0640"], 'm');
    let row = |text: &str| {
        numeric_rows(text)
            .into_iter()
            .find(|f| f[0] == seg.id.to_string())
            .unwrap()
    };
    let ours = row(&stdout(&shmxfer(&["status", "-m", "-c"])));
    let theirs = Command::new("ipcs").args(["-m", "-c"]).output().unwrap();
    let theirs = row(&String::from_utf8_lossy(&theirs.stdout));
    // ipcs -c: shmid perms cuid cgid uid gid; ours: shmid owner perms cuid cgid uid gid.
    assert_eq!(ours[2..], theirs[1..], "{ours:?} vs {theirs:?}");
}

#[test]
fn format_flags_combine_and_sizes_are_bytes_unless_human() {
    let seg = Made::new(&["-M", "8192"], 'm');
    let _set = Made::new(&["-S", "1"], 's');
    let o = shmxfer(&["status", "-t", "-p"]);
    let text = stdout(&o);
    let header = text
        .lines()
        .skip_while(|l| !l.starts_with("------ Shared Memory"))
        .nth(1)
        .unwrap();
    for c in ["attached", "changed", "cpid", "lpid"] {
        assert!(header.contains(c), "{header}");
    }
    // -t applies to semaphore sets, so they stay; -p alone would drop them, as ipcs does.
    assert!(text.contains("------ Semaphore Arrays Times"), "{text}");
    assert!(!stdout(&shmxfer(&["status", "-p"])).contains("Semaphore"));
    let bytes = |args: &[&str]| {
        stdout(&shmxfer(args))
            .lines()
            .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            .find(|f| f.get(1) == Some(&seg.id.to_string()))
            .map(|f| f[4].clone())
    };
    assert_eq!(bytes(&["status", "-m"]).as_deref(), Some("8192"));
    assert_eq!(bytes(&["status", "-m", "-b"]).as_deref(), Some("8192"));
    let human = stdout(&shmxfer(&["status", "-m", "--human"]));
    let line = human
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(&seg.id.to_string()))
        .unwrap();
    assert!(line.contains("8.0K"), "{line}");
}
