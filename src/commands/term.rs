//! How shmxfer talks on its standard streams: errors and warnings on stderr (in colour only on
//! a terminal without NO_COLOR), records on stdout (a closed pipe ends them quietly), and
//! `-v` logging.

use std::io::{IsTerminal, Write};

/// Whether escape codes may go to stderr: a terminal, and NO_COLOR unset.
pub(crate) fn color_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `-v` turns on tracing events with timestamps on stderr; without it nothing is installed,
/// so disabled events cost one relaxed load.
pub(crate) fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => return,
        1 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(color_stderr())
        .with_max_level(level)
        .with_target(false)
        .try_init();
}

/// Prints an error the way every shmxfer error looks.
pub(crate) fn error(msg: impl std::fmt::Display) {
    let (on, off) = if color_stderr() {
        ("\x1b[1;31m", "\x1b[0m")
    } else {
        ("", "")
    };
    eprintln!("shmxfer: {on}error:{off} {msg}");
}

pub(crate) fn warn(quiet: bool, msg: impl std::fmt::Display) {
    if !quiet {
        let (on, off) = if color_stderr() {
            ("\x1b[1;33m", "\x1b[0m")
        } else {
            ("", "")
        };
        eprintln!("shmxfer: {on}warning:{off} {msg}");
    }
}

/// Writes a line to stdout. A closed pipe (`| head`) is not an error: it returns false and
/// the caller stops printing, quietly.
pub(crate) fn out_line(line: &str) -> bool {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|_| out.flush()) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => false,
        Err(e) => {
            error(format_args!(
                "writing to stdout: {}",
                crate::mechanisms::text::io_text(&e)
            ));
            false
        }
    }
}
