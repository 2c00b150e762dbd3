//! Man pages: shmxfer(1) and one per subcommand (shmxfer-send(1)…), from the same clap
//! definitions as `--help`, with the sections clap does not know: EXIT STATUS, ENVIRONMENT,
//! FILES, EXAMPLES, SEE ALSO.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::CommandFactory;

use super::cli;

const SUBCOMMANDS: [&str; 4] = ["recv", "send", "clean", "status"];

const EXIT_STATUS: &[(&str, &str)] = &[
    ("0", "success"),
    (
        "1",
        "several files failed for different reasons; recv --once --exec: the command failed; status -i: no such id",
    ),
    ("64", "usage error: a bad flag or value, conflicting flags"),
    (
        "65",
        "data error: MD5 mismatch, a file changed while sent, a malformed transfer, a relative path the receiver refused",
    ),
    (
        "66",
        "an input missing, unreadable, a directory (without -r), or too large for --legacy",
    ),
    (
        "69",
        "no receiver (or it went away), or none serves the name asked for",
    ),
    ("71", "unexpected system error"),
    ("73", "the output directory or file cannot be created"),
    (
        "74",
        "writing the output failed (disk full, file size limit)",
    ),
    (
        "75",
        "try again later: the key is served by a live receiver, --wait ran out, clean of a live channel",
    ),
    (
        "76",
        "the key holds something that is not a shmxfer channel of this version (left alone)",
    ),
    (
        "77",
        "permission denied, or the receiver runs as another user and send --owner did not name them",
    ),
    ("130", "stopped by SIGINT or SIGTERM"),
];

/// Escapes text for roff: backslashes, hyphens (so they copy as ASCII), and a leading dot.
fn roff(s: &str) -> String {
    let t = s.replace('\\', "\\e").replace('-', "\\-");
    match t.starts_with('.') || t.starts_with('\'') {
        true => format!("\\&{t}"),
        false => t,
    }
}

/// The sections after clap's own for the page of `sub` (`None`: the top page).
fn extra(sub: Option<&str>) -> String {
    let mut out = String::from(".SH \"EXIT STATUS\"\n");
    for (code, what) in EXIT_STATUS {
        out += &format!(".TP\n\\fB{code}\\fR\n{}\n", roff(what));
    }
    out += ".SH ENVIRONMENT\n";
    if sub != Some("status") {
        out += ".TP\n\\fBSHMXFER_KEY\\fR\nThe channel (a key or a name) when \\-\\-key is not given; not with \\-\\-legacy.\n";
    }
    out += ".TP\n\\fBNO_COLOR\\fR\nWhen set and not empty, no colour on stderr.\n";
    out += ".SH FILES\n";
    out += ".TP\n\\fB/proc/sysvipc/shm\\fR, \\fB/proc/sysvipc/sem\\fR, \\fB/proc/sysvipc/msg\\fR\nThe kernel's IPC tables, read as ipcs reads them.\n";
    if matches!(sub, None | Some("recv")) {
        out += ".TP\n\\fIDIR\\fB/.shmxfer\\-\\fIPID\\fB\\-\\fIN\\fB.part\\fR\nA file being received where the filesystem has no O_TMPFILE; named only when whole.\n";
    }
    if matches!(sub, None | Some("status")) {
        out += ".TP\n\\fB/proc/sys/kernel/shmmax\\fR, \\fBshmall\\fR, \\fBshmmni\\fR, \\fBsem\\fR, \\fBmsg*\\fR\nThe limits status \\-l shows.\n";
    }
    let examples = match sub {
        Some("recv") => cli::RECV_EXAMPLES,
        Some("send") => cli::SEND_EXAMPLES,
        Some("clean") => cli::CLEAN_EXAMPLES,
        Some("status") => cli::STATUS_EXAMPLES,
        _ => "Examples:\n  shmxfer recv -m &\n  shmxfer send -m photo.jpg\n  shmxfer status",
    };
    out += ".SH EXAMPLES\n.nf\n";
    for line in examples.lines().skip(1) {
        out += &format!("{}\n", roff(line.trim_start()));
    }
    out += ".fi\n.SH \"SEE ALSO\"\n";
    let mut see: Vec<String> = SUBCOMMANDS
        .iter()
        .filter(|s| Some(**s) != sub)
        .map(|s| format!("\\fBshmxfer\\-{s}\\fR(1)"))
        .collect();
    if sub.is_some() {
        see.insert(0, "\\fBshmxfer\\fR(1)".into());
    }
    see.extend([
        "\\fBipcs\\fR(1)".into(),
        "\\fBipcrm\\fR(1)".into(),
        "\\fBsysvipc\\fR(7)".into(),
    ]);
    out += &see.join(", ");
    out += "\n";
    out
}

/// A subcommand's page name (clap wants it static).
fn page_name(sub: &str) -> &'static str {
    match sub {
        "recv" => "shmxfer-recv",
        "send" => "shmxfer-send",
        "clean" => "shmxfer-clean",
        _ => "shmxfer-status",
    }
}

/// The page of `sub` (`None`: shmxfer(1)) as roff.
pub fn page(sub: Option<&str>) -> io::Result<Vec<u8>> {
    let top = cli::Cli::command();
    let cmd = match sub {
        Some(s) => top
            .find_subcommand(s)
            .cloned()
            .ok_or_else(|| io::Error::other(format!("no subcommand {s}")))?
            .name(page_name(s))
            .bin_name(format!("shmxfer {s}"))
            .version(env!("CARGO_PKG_VERSION")),
        None => top,
    };
    let man = clap_mangen::Man::new(cmd);
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    man.render_synopsis_section(&mut buf)?;
    man.render_description_section(&mut buf)?;
    man.render_options_section(&mut buf)?;
    if sub.is_none() {
        man.render_subcommands_section(&mut buf)?;
    }
    buf.write_all(extra(sub).as_bytes())?;
    man.render_version_section(&mut buf)?;
    Ok(buf)
}

/// Writes every page into `dir`; returns the paths written.
pub fn write_all(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for sub in std::iter::once(None).chain(SUBCOMMANDS.iter().map(|s| Some(*s))) {
        let name = match sub {
            Some(s) => format!("shmxfer-{s}.1"),
            None => "shmxfer.1".into(),
        };
        let path = dir.join(name);
        std::fs::write(&path, page(sub)?)?;
        written.push(path);
    }
    Ok(written)
}
