//! The seed's consumer on shmxfer's library: `consumer KEY DIR` serves KEY and writes each
//! received file to DIR/file01.jpg, file02.jpg, … (never over an existing one), printing one
//! line per file. Stop it with Ctrl-C.

use std::process::ExitCode;

use shmxfer::frame::Config;
use shmxfer::output::{self, TempFile};
use shmxfer::pacer::DirectMode;
use shmxfer::receiver::{Event, Receiver};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [key, dir] = args.as_slice() else {
        eprintln!("usage: consumer KEY DIR");
        return ExitCode::from(64);
    };
    match run(key, dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("consumer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(key: &str, dir: &str) -> Result<(), Box<dyn std::error::Error>> {
    let key = shmxfer::parse::parse_key(key)?;
    let mut names = output::prepare(dir.as_ref(), "file", ".jpg")?;
    let (mut rx, _) = Receiver::bind(key, &Config::default())?;
    // Ctrl-C: removing the semaphore set wakes the wait with an interruption; the receiver is
    // then dropped, which removes the channel.
    let ch = rx.channel();
    ctrlc::set_handler(move || {
        shmxfer::runtime::request_stop();
        let _ = ch.sems.remove();
    })?;
    loop {
        let incoming = match rx.next_event() {
            Ok(Event::File(incoming)) => incoming,
            Ok(_) => continue,
            Err(shmxfer::frame::FrameError::Interrupted) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut tmp = TempFile::create(names.dir())?;
        let received = match incoming.receive(&mut tmp.file, DirectMode::Auto, &mut |_| {}) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("consumer: a file failed: {e}");
                continue;
            }
        };
        match names.commit(&mut tmp, None) {
            Ok(path) => {
                println!("{}\t{}", path.display(), received.bytes);
                received.commit(&path)?;
            }
            Err(e) => received.fail(&e)?,
        }
    }
}
