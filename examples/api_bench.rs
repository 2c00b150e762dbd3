//! For tests/bench.sh: `api_bench KEY N SIZE` sends N files of SIZE bytes from memory, in one
//! process through the library (posting each, collecting the verdicts), to the receiver on KEY,
//! and prints the time per file in ms.
//! `api_bench --floor DIR N SIZE` instead writes the same files into DIR itself, the way the
//! receiver does (an unnamed temporary file, written, then linked under the next counter
//! name): the receiver's share of the work alone, the floor for the first figure.
//! `api_bench --sessions KEY N` connects N times without sending anything (admission, the
//! sender's own segment made and handed over, goodbye) and prints the time per session in µs.

use std::time::Instant;

use shmxfer::{SendOptions, Sender};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let (n, size): (usize, usize) = match a[0] == "--sessions" {
        true => (a[2].parse().expect("N"), 0),
        false => (
            a[a.len() - 2].parse().expect("N"),
            a[a.len() - 1].parse().expect("SIZE"),
        ),
    };
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let t = Instant::now();
    if a[0] == "--sessions" {
        let key = a[1].parse::<shmxfer::Address>().expect("KEY");
        for _ in 0..n {
            let tx = Sender::connect(key.clone(), &SendOptions::default()).expect("connect");
            tx.finish().expect("goodbye");
        }
        println!("{:.1}", t.elapsed().as_secs_f64() * 1e6 / n as f64);
        return;
    }
    if a[0] == "--floor" {
        let dir = std::path::Path::new(&a[1]);
        let mut namer = shmxfer::output::prepare(dir, "file", ".jpg").expect("DIR");
        for _ in 0..n {
            let mut tmp = shmxfer::output::TempFile::create(dir).expect("create");
            std::io::Write::write_all(&mut tmp.file, &data).expect("write");
            namer.commit(&mut tmp, None).expect("link");
        }
    } else {
        let key = a[0].parse::<shmxfer::Address>().expect("KEY");
        let mut tx = Sender::connect(key, &SendOptions::default()).expect("connect");
        // Posted, not sent one by one: each file goes while the receiver commits the one
        // before; every verdict is checked before the clock stops.
        if let Ok(w) = std::env::var("API_BENCH_WINDOW") {
            tx.set_window(w.parse().expect("API_BENCH_WINDOW"));
        }
        let mut verdicts = Vec::new();
        for i in 0..n {
            tx.post_bytes(format!("api{i}").as_bytes(), &data);
            verdicts.extend(tx.take_verdicts());
        }
        verdicts.extend(tx.flush());
        assert_eq!(verdicts.len(), n);
        for v in verdicts {
            v.result.expect("committed");
        }
        tx.finish().expect("goodbye");
    }
    println!("{:.3}", t.elapsed().as_secs_f64() * 1e3 / n as f64);
}
