//! The seed's consumer on shmxfer's library: `consumer KEY DIR` serves KEY and writes each
//! received file to DIR/file01.jpg, file02.jpg, … (never over an existing one), printing one
//! line per file. Stop it with Ctrl-C.

use std::process::ExitCode;

use shmxfer::output::{self, TempFile};
use shmxfer::{Address, Cancel, Config, DirectMode, Event, FrameError, Receiver};

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
    let key: Address = key.parse()?;
    let mut names = output::prepare(dir.as_ref(), "file", ".jpg")?;
    // Ctrl-C cancels the receiver's waits (within 2 s); it is then dropped, which removes the
    // channel.
    let cancel = Cancel::new();
    let stop = cancel.clone();
    ctrlc::set_handler(move || stop.cancel())?;
    let (mut rx, _) = Receiver::bind(
        key,
        &Config {
            cancel,
            ..Config::default()
        },
    )?;
    loop {
        let incoming = match rx.next_event() {
            Ok(Event::File(incoming)) => incoming,
            Ok(_) => continue,
            Err(FrameError::Interrupted) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut tmp = TempFile::create(names.dir())?;
        let received = match incoming.receive(&mut tmp.file, DirectMode::Auto, &mut |_| true) {
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
