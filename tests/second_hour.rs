//! A newcomer's second hour: hints that repeat the channel in use, errors in words, a
//! receiver that refuses to serve a directory it cannot write, a closed stdout, and the
//! smaller surprises met on the way.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn every_hint_that_suggests_a_command_carries_the_channel_in_use() {
    let env = Env::new();
    let o = env.send(&["/etc/hostname"]);
    let want = format!("start `shmxfer recv --key {}` first", env.key_arg());
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    let name = format!("hint{}", std::process::id());
    let o = shmxfer(&["send", "--key", &name, "/etc/hostname"]);
    let want = format!("start `shmxfer recv --key {name}` first");
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
    // The original system's keys, both of them, in decimal as the original takes them.
    let (k, s) = (env.key.0 + 2, env.key.0 + 3);
    let o = shmxfer(&[
        "send",
        "--legacy",
        "--key",
        &k.to_string(),
        "--size-key",
        &s.to_string(),
        "/etc/hostname",
    ]);
    let want = format!("shmxfer recv --legacy --key {k} --size-key {s}");
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
}

/// `shmxfer ARGS` as `nobody`, in `/`, with the test's key.
fn nobody(env: &Env, args: &[&str]) -> std::process::Output {
    let mut a = vec![args[0], "--key"];
    let key = env.key_arg();
    a.push(&key);
    a.extend(&args[1..]);
    as_nobody(&a)
}

#[test]
fn errors_that_reach_a_user_are_in_words_without_os_error_numbers() {
    let env = Env::new();
    let check = |o: &std::process::Output, code: i32, words: &str| {
        let err = stderr(o);
        assert_eq!(o.status.code(), Some(code), "{err}");
        assert!(err.contains(words), "{err}");
        assert!(!err.contains("os error"), "{err}");
    };
    let o = run_bounded(
        env.cmd(&["recv", "--dir", "/etc/hostname/sub"]),
        Duration::from_secs(10),
    );
    check(&o, 73, "Not a directory");
    let o = nobody(&env, &["recv", "--dir", "/root/x"]);
    check(&o, 73, "Permission denied");
    let o = shmxfer(&["man", "--dir", "/proc/no/such"]);
    check(&o, 73, "No such file or directory");
    // A full disk: the sender is told in words why its file failed.
    let mnt = env.folder("small");
    let script = format!(
        "mount -t tmpfs -o size=256k tmpfs '{m}' && exec '{BIN}' recv --key {} -q --dir '{m}/out'",
        env.key_arg(),
        m = mnt.display()
    );
    let mut c = std::process::Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _r = Receiver {
        child: Some(c.spawn().unwrap()),
    };
    let big = env.file("big.bin", 1 << 20);
    let mut o = env.send(&["--wait", "10", big.to_str().unwrap()]);
    for _ in 0..3 {
        if o.status.code() != Some(69) {
            break;
        }
        o = env.send(&["--wait", "10", big.to_str().unwrap()]);
    }
    check(&o, 74, "No space left on device");
}

#[test]
fn recv_refuses_a_directory_it_cannot_write_before_it_says_ready() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixDatagram;
    let env = Env::new();
    std::fs::set_permissions(env.dir.path(), PermissionsExt::from_mode(0o755)).unwrap();
    let ro = env.folder("ro");
    std::fs::set_permissions(&ro, PermissionsExt::from_mode(0o555)).unwrap();
    let sock_path = env.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    std::fs::set_permissions(&sock_path, PermissionsExt::from_mode(0o777)).unwrap();
    let mut c = std::process::Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(["recv", "--key", &env.key_arg(), "--dir"])
        .arg(&ro)
        .env("NOTIFY_SOCKET", &sock_path);
    let o = run_bounded(c, Duration::from_secs(10));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(73), "{err}");
    assert!(
        err.contains("cannot create, write and rename files in"),
        "{err}"
    );
    assert!(err.contains("Permission denied"), "{err}");
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let mut said = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        said.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(!said.iter().any(|m| m.contains("READY=1")), "{said:?}");
    assert!(listing(&ro).is_empty(), "{:?}", listing(&ro));
}

#[test]
fn recv_into_a_pipe_whose_reader_left_stops_between_files_with_141() {
    use std::io::BufRead;
    let env = Env::new();
    let mut r = env.recv(&[]);
    let mut out = std::io::BufReader::new(r.child.as_mut().unwrap().stdout.take().unwrap());
    let a = env.file("a.bin", 100_000);
    assert!(env.send(&[a.to_str().unwrap()]).status.success());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("file01"), "{line}");
    drop(out); // `head -1` has had its line
    let b = env.file("b.bin", 100_000);
    let o = env.send(&[b.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "committed before its line could not be told: {}",
        stderr(&o)
    );
    let done = r.wait(Duration::from_secs(10));
    exits(&done, 141);
    // Nothing torn: both files whole, no temporary file left.
    let names = listing(&env.out());
    assert_eq!(names, ["file01.jpg", "file02.jpg"]);
    assert!(same(&a, &env.out().join("file01.jpg")) && same(&b, &env.out().join("file02.jpg")));
}

#[test]
fn status_of_a_key_that_holds_nothing_says_so_and_exits_1() {
    let name = format!("nothing{}", std::process::id());
    let o = shmxfer(&["status", "--key", &name]);
    exits(&o, 1);
    says(&o, "no channel or IPC object at 0x");
    assert!(stderr(&o).contains(&format!("({name})")), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
}

#[test]
fn a_negative_key_and_an_unsupported_shell_are_refused_in_their_own_words() {
    for args in [
        &["send", "--key", "-1", "/etc/hostname"][..],
        &["status", "--key", "-5"],
        &["send", "--legacy", "--size-key", "-44", "/etc/hostname"],
    ] {
        let o = shmxfer(args);
        assert_eq!(o.status.code(), Some(64), "{args:?}");
        assert!(
            stderr(&o).contains("is negative"),
            "{args:?}: {}",
            stderr(&o)
        );
        assert!(
            !stderr(&o).contains("-- -"),
            "clap's tip is wrong here: {}",
            stderr(&o)
        );
    }
    let o = shmxfer(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(64));
    says(&o, "no completion script for tcsh");
    assert!(!stderr(&o).contains("similar value"), "{}", stderr(&o));
}

#[test]
fn status_limits_label_every_size_with_its_unit() {
    let o = shmxfer(&["status", "-l"]);
    let text = stdout(&o);
    for line in text
        .lines()
        .filter(|l| l.contains(" size") || l.contains("memory"))
    {
        assert!(
            line.contains("(bytes)") || line.contains("(kbytes)"),
            "no unit: {line}"
        );
    }
    assert!(text.contains("max seg size (bytes)"), "{text}");
}

#[test]
fn the_top_man_page_lists_each_exit_code_once_and_names_every_file_and_variable() {
    let page = stdout(&shmxfer(&["man"]));
    let exit = &page[page.find("EXIT STATUS").unwrap()..page.find(".SH ENVIRONMENT").unwrap()];
    let codes: Vec<&str> = exit
        .lines()
        .filter_map(|l| l.strip_prefix("\\fB").and_then(|l| l.strip_suffix("\\fR")))
        .collect();
    let mut unique = codes.clone();
    unique.dedup();
    assert_eq!(codes, unique, "a code listed twice: {codes:?}");
    assert!(codes.contains(&"141"), "{codes:?}");
    for needle in [
        "SHMXFER_SPIN_US",
        "STATE_DIRECTORY",
        "legacy\\-",
        ".lock",
        ".sent",
    ] {
        assert!(page.contains(needle), "shmxfer(1) lacks {needle}");
    }
}
