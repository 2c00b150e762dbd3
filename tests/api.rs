//! The library API: the seed's two programs rewritten on it (examples/) against the CLI, and
//! a sender and a receiver in one process.

mod common;

use std::io::Cursor;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use shmxfer::{Cancel, Config, DirectMode, Event, Incoming, Receiver, SendOptions, Sender};

/// An example program built beside the binary (`cargo test` builds the examples).
fn example(name: &str) -> PathBuf {
    let bin = PathBuf::from(BIN);
    bin.parent().unwrap().join("examples").join(name)
}

#[test]
fn the_example_consumer_takes_what_shmxfer_send_sends() {
    let env = Env::new();
    let mut c = Command::new(example("consumer"));
    c.arg(env.key_arg())
        .arg(env.out())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let r = Receiver_::spawn(c, &env);
    let a = env.file("a.bin", 3 << 20);
    let b = env.file("b.bin", 0);
    let o = env.send(&["-m", a.to_str().unwrap(), b.to_str().unwrap()]);
    exits(&o, 0);
    let out = r.stop();
    exits(&out, 0);
    assert!(
        ipc::Shm::open(env.key).is_err(),
        "Ctrl-C must remove the channel"
    );
    assert_eq!(listing(&env.out()), ["file01.jpg", "file02.jpg"]);
    assert!(same(&env.out().join("file01.jpg"), &a));
    assert!(same(&env.out().join("file02.jpg"), &b));
    assert_eq!(stdout(&out).lines().count(), 2, "{}", stdout(&out));
}

#[test]
fn the_example_producer_feeds_shmxfer_recv() {
    let env = Env::new();
    let r = env.recv(&["--keep-name", "-m"]);
    let files: Vec<_> = [0usize, 1, 1 << 20, (5 << 20) + 3]
        .iter()
        .enumerate()
        .map(|(i, &n)| env.file(&format!("f{i}"), n))
        .collect();
    let mut c = Command::new(example("producer"));
    c.arg(env.key_arg()).args(&files);
    let o = run_bounded(c, Duration::from_secs(60));
    exits(&o, 0);
    drop(r);
    for f in &files {
        let name = f.file_name().unwrap();
        assert!(same(&env.out().join(name), f), "{name:?}");
    }
    // Without a receiver it fails, saying why.
    let env2 = Env::new();
    let mut c = Command::new(example("producer"));
    c.arg(env2.key_arg()).arg(&files[0]);
    let o = run_bounded(c, Duration::from_secs(20));
    assert!(!o.status.success());
    says(&o, &format!("no receiver on key {:#010x}", env2.key.0));
}

#[test]
fn a_sender_and_a_receiver_in_one_process_move_bytes_readers_and_paths() {
    let env = Env::new();
    let cfg = Config {
        slot_size: 64 << 10,
        ..Config::default()
    };
    let dir = env.dir.path().to_path_buf();
    let serve = serve(env.key, &cfg, move |inc| {
        let name = String::from_utf8(inc.name().to_vec()).unwrap();
        let path = dir.join(format!("got-{name}"));
        let mut f = std::fs::File::create(&path).unwrap();
        match inc.receive(&mut f, DirectMode::Never, &mut |_| true) {
            Ok(r) => {
                let got = (name, r.bytes, r.md5.is_some());
                r.commit(&path).unwrap();
                got
            }
            Err(e) => (format!("{name}: {e}"), 0, false),
        }
    });
    let opts = SendOptions {
        md5: true,
        wait: Some(Duration::from_secs(10)),
        ..SendOptions::default()
    };
    let mut tx = Sender::connect(env.key, &opts).unwrap();
    let bytes = pattern(200_000, 1);
    let sent = tx.send_bytes(b"bytes.bin", &bytes).unwrap();
    assert_eq!(sent.md5, Some(md5::compute(&bytes).0));
    assert!(sent.name.ends_with(b"got-bytes.bin"));
    let streamed = pattern(300_001, 2);
    tx.send_reader(b"stream.bin", &mut Cursor::new(streamed.clone()), None)
        .unwrap();
    tx.send_bytes(b"empty.bin", b"").unwrap();
    let p = env.file("path.bin", 70_000);
    tx.send_path(&p).unwrap();
    // A reader shorter than it claims is refused, and the sender goes on.
    let e = tx
        .send_reader(b"liar.bin", &mut Cursor::new(vec![0u8; 10]), Some(100))
        .unwrap_err();
    assert!(!e.is_fatal(), "{e}");
    tx.finish().unwrap();
    let got = serve.join().unwrap();
    assert_eq!(
        got,
        [
            ("bytes.bin".to_string(), 200_000, true),
            ("stream.bin".into(), 300_001, true),
            ("empty.bin".into(), 0, true),
            ("path.bin".into(), 70_000, true),
            (
                "liar.bin: the file changed while it was read; discarded".into(),
                0,
                false
            ),
        ]
    );
    assert_eq!(std::fs::read(env.path("got-stream.bin")).unwrap(), streamed);
    assert!(same(&env.path("got-path.bin"), &p));
}

#[test]
fn a_file_refused_while_its_chunks_are_in_flight_costs_only_itself() {
    // The sender does not wait to hear a file accepted: a refusal meets chunks already in
    // the ring. A small ring of small slots makes every file many chunks.
    let env = Env::new();
    let _hang = HangGuard::new(env.key, Duration::from_secs(60));
    let cfg = Config {
        slot_size: 4096,
        slot_count: 2,
        ..Config::default()
    };
    let serve = serve(env.key, &cfg, |inc| match inc.name() {
        b"refused" => {
            inc.refuse(shmxfer::Status::BadPath).unwrap();
            None
        }
        b"no-room" => {
            let e = std::io::Error::from_raw_os_error(libc::ENOSPC);
            inc.cannot_create(std::path::Path::new("/out"), &e).unwrap();
            None
        }
        // A caller that drops a file without answering (an early return, a `?`) costs its
        // sender that file only: the next event fails it.
        b"dropped" => None,
        b"dropped-whole" => {
            let _unanswered = inc.receive_to(&mut Vec::new(), &mut |_| true).unwrap();
            None
        }
        _ => keep(inc),
    });
    let mut tx = connect(&env);
    let files: Vec<Vec<u8>> = (0..6).map(|i| pattern(100_000 + i, i as u8)).collect();
    tx.send_bytes(b"a", &files[0]).unwrap();
    let e = tx.send_bytes(b"refused", &files[1]).unwrap_err();
    assert!(e.to_string().contains("refused its relative path"), "{e}");
    assert!(!e.is_fatal());
    tx.send_bytes(b"b", &files[2]).unwrap();
    let e = tx.send_bytes(b"no-room", &files[3]).unwrap_err();
    assert!(e.to_string().contains("could not create"), "{e}");
    // A refusal of a stream of unknown length, and of a one-chunk file.
    let e = tx
        .send_reader(b"refused", &mut Cursor::new(files[4].clone()), None)
        .unwrap_err();
    assert!(!e.is_fatal(), "{e}");
    tx.send_bytes(b"refused", b"tiny").unwrap_err();
    for name in [&b"dropped"[..], b"dropped-whole"] {
        let e = tx.send_bytes(name, &files[1]).unwrap_err();
        assert!(e.to_string().contains("failed to write"), "{e}");
    }
    tx.send_bytes(b"c", &files[5]).unwrap();
    tx.finish().unwrap();
    let got: Vec<Vec<u8>> = serve.join().unwrap().into_iter().flatten().collect();
    assert!(
        got == [files[0].clone(), files[2].clone(), files[5].clone()],
        "a file arrived with other bytes"
    );
}

#[test]
fn posted_files_get_one_verdict_each_in_posting_order() {
    // Files are posted while earlier ones are still being committed: more files than lanes,
    // with failures of every kind among them, must each get their own verdict, in order.
    let env = Env::new();
    let _hang = HangGuard::new(env.key, Duration::from_secs(60));
    let cfg = Config {
        slot_size: 64 << 10,
        ..Config::default()
    };
    let serve = serve(env.key, &cfg, |inc| match inc.name() {
        b"refused" => {
            inc.refuse(shmxfer::Status::BadPath).unwrap();
            None
        }
        _ => keep(inc),
    });
    let mut tx = connect(&env);
    let files: Vec<Vec<u8>> = (0..30).map(|i| pattern(1000 * i + 7, i as u8)).collect();
    let mut tickets = Vec::new();
    let mut verdicts = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let t = match i {
            5 | 17 => tx.post_bytes(b"refused", f),
            9 => tx.post_path(&env.path("missing")),
            // One that changes size on the way: too short for what it claims.
            21 => tx.post_file(
                b"short",
                &std::fs::File::open(env.file("s", 10)).unwrap(),
                Some(99),
            ),
            _ => tx.post_bytes(format!("f{i}").as_bytes(), f),
        };
        tickets.push(t);
        verdicts.extend(tx.take_verdicts());
    }
    verdicts.extend(tx.flush());
    tx.finish().unwrap();
    assert_eq!(
        verdicts.iter().map(|v| v.ticket).collect::<Vec<_>>(),
        tickets
    );
    for (i, v) in verdicts.iter().enumerate() {
        match (i, &v.result) {
            (5 | 17, Err(e)) => assert!(e.to_string().contains("refused its relative path"), "{e}"),
            (9, Err(e)) => assert!(e.to_string().contains("missing"), "{i}: {e}"),
            (21, Err(e)) => assert!(e.to_string().contains("changed"), "{i}: {e}"),
            (_, Ok(sent)) => assert_eq!(sent.bytes, files[i].len() as u64, "{i}"),
            (i, r) => panic!("file {i}: {r:?}"),
        }
    }
    let got: Vec<Vec<u8>> = serve.join().unwrap().into_iter().flatten().collect();
    let want: Vec<Vec<u8>> = (0..30)
        .filter(|i| ![5, 9, 17, 21].contains(i))
        .map(|i| files[i].clone())
        .collect();
    assert!(got == want, "a file arrived with other bytes");
}

#[test]
fn files_committed_before_the_receiver_left_are_reported_committed() {
    // The receiver commits three files and then goes away with more in flight: their answers
    // are still in the segment, so the sender says they arrived, and that the rest did not.
    let env = Env::new();
    let _hang = HangGuard::new(env.key, Duration::from_secs(60));
    let (mut rx, _) = Receiver::bind(env.key, &Config::default()).unwrap();
    let server = std::thread::spawn(move || {
        for _ in 0..3 {
            match rx.next_event().unwrap() {
                Event::File(inc) => {
                    let r = inc.receive_to(&mut std::io::sink(), &mut |_| true).unwrap();
                    r.commit(std::path::Path::new("kept")).unwrap();
                }
                _ => panic!("a file was due"),
            }
        }
        // Dropping the receiver removes the channel.
    });
    let mut tx = connect(&env);
    for i in 0..6 {
        tx.post_bytes(format!("f{i}").as_bytes(), &pattern(50_000, i));
    }
    let verdicts = tx.flush();
    server.join().unwrap();
    assert_eq!(verdicts.len(), 6);
    for v in &verdicts[..3] {
        assert!(v.result.is_ok(), "{:?}", v.result);
    }
    for v in &verdicts[3..] {
        assert!(
            matches!(&v.result, Err(e) if e.is_fatal()),
            "{:?}",
            v.result
        );
    }
}

/// Receives an offered file into memory and commits it; a file that fails on the way (answered
/// already) is `None`.
fn keep(inc: Incoming<'_>) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    let r = inc.receive_to(&mut v, &mut |_| true).ok()?;
    r.commit(std::path::Path::new("kept")).unwrap();
    Some(v)
}

/// A sender to `env`'s receiver, waiting up to 10 s for it.
fn connect(env: &Env) -> Sender {
    let opts = SendOptions {
        wait: Some(Duration::from_secs(10)),
        ..SendOptions::default()
    };
    Sender::connect(env.key, &opts).unwrap()
}

/// Serves `key` from a thread of its own until the first sender says goodbye, handing each
/// offered file to `each`; the thread returns what `each` returned, in order.
fn serve<T: Send + 'static>(
    key: shmxfer::Key,
    cfg: &Config,
    mut each: impl FnMut(Incoming<'_>) -> T + Send + 'static,
) -> std::thread::JoinHandle<Vec<T>> {
    let (mut rx, _) = Receiver::bind(key, cfg).unwrap();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        loop {
            match rx.next_event().unwrap() {
                Event::File(inc) => got.push(each(inc)),
                Event::SessionEnd => return got,
                Event::Notice(n) if n.contains("dropped unanswered") => {}
                Event::Notice(n) => panic!("{n}"),
            }
        }
    })
}

/// A child receiver that is not `shmxfer recv` (the example), stopped with SIGINT when
/// dropped, as Ctrl-C would.
struct Receiver_ {
    child: Option<std::process::Child>,
}

impl Receiver_ {
    fn spawn(mut c: Command, env: &Env) -> Receiver_ {
        let r = Receiver_ {
            child: Some(c.spawn().unwrap()),
        };
        assert!(wait_until(Duration::from_secs(10), || serving(env.key)));
        r
    }
    fn stop(mut self) -> std::process::Output {
        let c = self.child.take().unwrap();
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(c.id().to_string())
            .status();
        finish(c, Duration::from_secs(10))
    }
}

impl Drop for Receiver_ {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn two_senders_in_one_program_are_cancelled_independently() {
    let (env_a, env_b) = (Env::new(), Env::new());
    // A's receiver binds and never takes anything: A waits for an answer until cancelled.
    let (_rx_a, _) = Receiver::bind(env_a.key, &Config::default()).unwrap();
    let (mut rx_b, _) = Receiver::bind(env_b.key, &Config::default()).unwrap();
    let serve_b = std::thread::spawn(move || {
        let mut n = 0;
        while let Ok(Event::File(inc)) = rx_b.next_event() {
            let r = inc.receive_to(&mut std::io::sink(), &mut |_| true).unwrap();
            r.commit("b".as_ref()).unwrap();
            n += 1;
        }
        n
    });
    let (cancel_a, cancel_b) = (Cancel::new(), Cancel::new());
    let opts_a = SendOptions {
        cancel: cancel_a.clone(),
        ..SendOptions::default()
    };
    // A's receiver never opens its gate (it takes no event): A waits for its turn.
    let a = std::thread::spawn(move || {
        let t = std::time::Instant::now();
        let r = Sender::connect(env_a.key, &opts_a)
            .and_then(|mut tx| tx.send_bytes(b"a", b"never taken").map(|_| ()));
        (r.map_err(|e| e.to_string()), t.elapsed(), env_a)
    });
    std::thread::sleep(Duration::from_millis(300));
    cancel_a.cancel();
    let (r, took, _env_a) = a.join().unwrap();
    assert_eq!(r, Err("interrupted".to_string()));
    assert!(took < Duration::from_secs(3), "{took:?}");
    // B was not cancelled by A's token: it sends after A's cancel.
    let opts_b = SendOptions {
        cancel: cancel_b,
        ..SendOptions::default()
    };
    let mut tx = Sender::connect(env_b.key, &opts_b).unwrap();
    for _ in 0..3 {
        tx.send_bytes(b"b", b"goes through").unwrap();
    }
    tx.finish().unwrap();
    drop(serve_b);
}
