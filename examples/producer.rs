//! The seed's producer on shmxfer's library: `producer KEY FILE...` sends each file to the
//! receiver on KEY and exits 0 once every one is committed there.

use std::process::ExitCode;

use shmxfer::{Address, SendOptions, Sender};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((key, files)) = args.split_first().filter(|(_, f)| !f.is_empty()) else {
        eprintln!("usage: producer KEY FILE...");
        return ExitCode::from(64);
    };
    let key: Address = match key.parse() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("producer: {e}");
            return ExitCode::from(64);
        }
    };
    let mut tx = match Sender::connect(key, &SendOptions::default()) {
        Ok(tx) => tx,
        Err(e) => {
            eprintln!("producer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut ok = true;
    for f in files {
        if let Err(e) = tx.send_path(f.as_ref()) {
            eprintln!("producer: {e}");
            ok = false;
        }
    }
    match (tx.finish(), ok) {
        (Ok(()), true) => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}
