//! The face: command-line parsing (`cli`), dispatch to the commands, and the one place where
//! errors, warnings and records are printed and a command's outcome becomes an exit code.

pub(crate) mod cli;
mod man;

use std::io::Write;

use clap::{CommandFactory, Parser};

use crate::commands;
use crate::commands::exit;
use crate::commands::term::error;

/// `shmxfer man [PAGE]` prints a page; `--dir DIR` writes them all and lists them.
fn man_pages(page: Option<&str>, dir: Option<&std::path::Path>) -> commands::Outcome {
    let cannot = |e: std::io::Error, what: String| {
        error(format_args!(
            "{what}: {}",
            crate::mechanisms::text::io_text(&e)
        ));
        commands::Error::Said(exit::CANTCREAT)
    };
    match dir {
        Some(d) => {
            let shown = crate::mechanisms::text::escape_path(d);
            let written = man::write_all(d)
                .map_err(|e| cannot(e, format!("cannot write man pages into {shown}")))?;
            for p in written {
                crate::commands::term::out_line(&crate::mechanisms::text::escape_path(&p));
            }
            Ok(exit::OK)
        }
        None => {
            let buf =
                man::page(page).map_err(|e| cannot(e, "cannot render the man page".into()))?;
            Ok(write_all_stdout(&buf))
        }
    }
}

/// Parses the command line and runs the command; returns the exit code.
pub fn main() -> i32 {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    let outcome = match cli.command {
        cli::Command::Recv(a) => commands::recv::run(a),
        cli::Command::Send(a) => commands::send::run(a),
        cli::Command::Clean(a) => commands::clean::run(a),
        cli::Command::Status(a) => commands::status::run(a),
        cli::Command::Completions { shell } => {
            let mut cmd = cli::Cli::command();
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, "shmxfer", &mut buf);
            Ok(write_all_stdout(&buf))
        }
        cli::Command::Man { page, dir } => man_pages(page.as_deref(), dir.as_deref()),
    };
    // The one place a command's failure is printed and becomes the exit code.
    match outcome {
        Ok(code) => code,
        Err(e) => {
            if !e.is_said() {
                error(e.message());
            }
            e.exit_code()
        }
    }
}

fn write_all_stdout(buf: &[u8]) -> i32 {
    let mut out = std::io::stdout().lock();
    match out.write_all(buf).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            error(format_args!(
                "writing to stdout: {}",
                crate::mechanisms::text::io_text(&e)
            ));
            exit::IOERR
        }
        _ => exit::OK,
    }
}
