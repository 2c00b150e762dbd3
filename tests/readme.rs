//! The README and docs say what the program does: their commands run as written, and the
//! words and keys they quote are the program's.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

#[test]
fn the_readme_installs_with_the_tested_lock_file() {
    let text = readme();
    let installs: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("cargo install"))
        .collect();
    assert!(!installs.is_empty());
    for l in installs {
        assert!(l.contains("--locked"), "ignores Cargo.lock: {l}");
    }
}

#[test]
fn the_readme_exec_example_runs_as_written() {
    let env = Env::new();
    let line = readme()
        .lines()
        .find(|l| l.contains("--exec convert"))
        .expect("the --exec example")
        .to_string();
    // A stand-in for ImageMagick's convert: writes its last argument from its first.
    let bin = env.folder("bin");
    std::fs::write(
        bin.join("convert"),
        "#!/bin/sh\nfor a; do last=$a; done\ncp \"$1\" \"$last\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        bin.join("convert"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let script = line.replace(
        "shmxfer recv",
        &format!("exec '{BIN}' recv --key {} -q", env.key_arg()),
    );
    let mut c = std::process::Command::new("sh");
    c.args(["-c", &script])
        .current_dir(env.dir.path())
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let r = Receiver {
        child: Some(c.spawn().unwrap()),
    };
    let f = env.file("photo.jpg", 5000);
    let o = env.send(&["--wait", "10", f.to_str().unwrap()]);
    exits(&o, 0);
    assert!(wait_until(Duration::from_secs(10), || env
        .path("thumbs/photo.jpg")
        .exists()));
    let out = r.stop();
    assert!(!stderr(&out).contains("--exec"), "{}", stderr(&out));
}

#[test]
fn the_words_the_readme_quotes_are_the_programs() {
    let text = readme();
    assert!(text.contains("\"changed while it was read\""));
    let path = std::path::PathBuf::from("a.txt");
    for e in [
        shmxfer::SendError::ChangedInPlace(path.clone()),
        shmxfer::SendError::Changed {
            path,
            announced: 10,
            read: 12,
        },
    ] {
        assert!(e.to_string().contains("changed while it was read"), "{e}");
    }
}

/// The keys of every object in `v`'s arrays, by array.
fn keys(v: &serde_json::Value, array: &str) -> BTreeSet<String> {
    v[array]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|o| o.as_object().unwrap().keys().cloned())
        .collect()
}

#[test]
fn the_status_json_example_has_the_programs_keys() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/status-json.md"))
        .unwrap();
    let example = &doc[doc.find("```json").unwrap() + 7..];
    let example: serde_json::Value =
        serde_json::from_str(&example[..example.find("```").unwrap()]).unwrap();
    let env = Env::new();
    let r = env.recv(&[]);
    // A message queue of our own, so that the `msg` array has an entry to compare.
    let made = std::process::Command::new("ipcmk")
        .arg("-Q")
        .output()
        .unwrap();
    let qid: String = String::from_utf8_lossy(&made.stdout)
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let o = shmxfer(&["status", "--json"]);
    let _ = std::process::Command::new("ipcrm")
        .args(["-q", &qid])
        .status();
    let real: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    drop(r);
    for array in ["shm", "sem", "msg", "channels"] {
        let (shown, made) = (keys(&example, array), keys(&real, array));
        for k in &shown {
            assert!(
                made.contains(k),
                "{array}[].{k} is in the doc, not in the output"
            );
        }
        for k in made.difference(&shown) {
            assert!(
                doc.contains(&format!("`{array}[].{k}`")) || doc.contains(&format!(".{k}`")),
                "{array}[].{k} is in the output, and the doc says nothing of it"
            );
        }
    }
}
