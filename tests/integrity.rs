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
    match shmxfer::frame::probe(env.key) {
        Ok(shmxfer::frame::Probe::Channel {
            alive: true, shmid, ..
        }) => shmxfer::frame::View::open(shmid)
            .is_ok_and(|v| v.state() == shmxfer::frame::State::Idle as u32),
        _ => false,
    }
}
