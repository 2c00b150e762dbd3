//! Man pages: shmxfer(1) and one per subcommand (shmxfer-send(1)…), from the same clap
//! definitions as `--help`, with the sections clap does not know: EXIT STATUS, ENVIRONMENT,
//! FILES, EXAMPLES, SEE ALSO.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::CommandFactory;

use super::cli;

const SUBCOMMANDS: [&str; 4] = ["recv", "send", "clean", "status"];

/// Every exit code, and which pages list it (`*`: every page; else the subcommands').
const EXIT_STATUS: &[(&str, &[&str], &str)] = &[
    ("0", &["*"], "success"),
    ("1", &["send"], "several files failed for different reasons"),
    ("1", &["recv"], "recv --once --exec: the command failed"),
    (
        "1",
        &["status"],
        "status -i: no such id; status --key: nothing at that key",
    ),
    (
        "64",
        &["*"],
        "usage error: a bad flag or value, conflicting flags",
    ),
    (
        "65",
        &["send"],
        "data error: MD5 mismatch (the receiver's, or the committed file's digest not the sender's), a file that changed while it was read, a malformed transfer, a relative path the receiver refused",
    ),
    (
        "66",
        &["send"],
        "an input missing, unreadable, a directory (without -r), or too large for --legacy; a --watch DIR missing",
    ),
    (
        "69",
        &["send"],
        "no receiver (or it went away), or none serves the name asked for; --legacy: the consumer is gone",
    ),
    (
        "69",
        &["recv"],
        "the channel was removed while in use (ipcrm)",
    ),
    (
        "69",
        &["clean"],
        "the key serves another name than the one given",
    ),
    (
        "71",
        &["*"],
        "unexpected system error; a kernel IPC limit that leaves no room for the channel (named, with what to do)",
    ),
    (
        "73",
        &["recv"],
        "the output directory or file cannot be created, or files cannot be created, written and renamed in it",
    ),
    (
        "73",
        &["send"],
        "send --watch: the sent list cannot be made or is not one to trust (another user's, a link, writable by others), or another watcher uses it",
    ),
    (
        "74",
        &["send", "recv"],
        "writing the output failed (disk full, file size limit)",
    ),
    (
        "75",
        &["recv"],
        "try again later: the key is served by a live receiver, or taken by another user",
    ),
    (
        "75",
        &["send"],
        "try again later: --wait ran out (also for a receiver stopped with SIGSTOP)",
    ),
    (
        "75",
        &["clean"],
        "the channel's receiver is alive (use --force)",
    ),
    (
        "76",
        &["recv", "send", "clean"],
        "the key holds something that is not a shmxfer channel of this version, or another channel's second key (left alone)",
    ),
    (
        "77",
        &["recv"],
        "permission denied on the channel at the key",
    ),
    (
        "77",
        &["send"],
        "permission denied; the receiver runs as another user and --owner did not name them",
    ),
    (
        "77",
        &["clean"],
        "not allowed to remove an object (another user's), or another user's stale channel",
    ),
    ("130", &["recv", "send"], "stopped by SIGINT or SIGTERM"),
    (
        "141",
        &["recv", "send"],
        "stdout was a pipe whose reader went away (recv | head -1): stopped between files",
    ),
];

/// The codes on the page of `sub` (`None`: every code, each once per meaning).
fn exit_codes(sub: Option<&str>) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for (code, pages, what) in EXIT_STATUS {
        let on = match sub {
            None => true,
            Some(s) => pages.iter().any(|p| *p == "*" || *p == s),
        };
        if !on {
            continue;
        }
        // shmxfer(1) lists each code once, with what it means for each command.
        let what = match (sub, pages.first()) {
            (None, Some(p)) if *p != "*" && !what.starts_with(p) => {
                format!("{}: {what}", pages.join(", "))
            }
            _ => what.to_string(),
        };
        match out.last_mut() {
            Some((c, w)) if c == code => *w = format!("{w}; {what}"),
            _ => out.push((code, what)),
        }
    }
    out
}

/// SYNOPSIS as people read it: each option with its value (`--wait SECS`), the positional
/// arguments as their names (`FILE...`).
fn synopsis(cmd: &clap::Command, name: &str) -> String {
    let mut parts = vec![format!("\\fB{}\\fR", roff(name))];
    for a in cmd.get_arguments() {
        if a.is_hide_set() {
            continue;
        }
        let value = a
            .get_value_names()
            .map(|v| {
                v.iter()
                    .map(|n| format!(" \\fI{}\\fR", roff(n)))
                    .collect::<String>()
            })
            .filter(|_| a.get_action().takes_values())
            .unwrap_or_default();
        if a.is_positional() {
            let many = matches!(a.get_num_args(), Some(r) if r.max_values() > 1);
            let v = a.get_value_names().and_then(|v| v.first().cloned());
            let n = v.map_or_else(|| a.get_id().to_string().to_uppercase(), |v| v.to_string());
            let dots = if many { "..." } else { "" };
            parts.push(match a.is_required_set() {
                true => format!("\\fI{}\\fR{dots}", roff(&n)),
                false => format!("[\\fI{}\\fR{dots}]", roff(&n)),
            });
            continue;
        }
        let flags: Vec<String> = a
            .get_short()
            .map(|c| format!("\\fB\\-{c}\\fR"))
            .into_iter()
            .chain(a.get_long().map(|l| format!("\\fB\\-\\-{}\\fR", roff(l))))
            .collect();
        if !flags.is_empty() {
            parts.push(format!("[{}{value}]", flags.join("|")));
        }
    }
    parts.join(" ")
}

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
    for (code, what) in exit_codes(sub) {
        out += &format!(".TP\n\\fB{code}\\fR\n{}\n", roff(&what));
    }
    out += ".SH ENVIRONMENT\n";
    if sub != Some("status") {
        out += ".TP\n\\fBSHMXFER_KEY\\fR\nThe channel (a key or a name) when \\-\\-key is not given; not with \\-\\-legacy.\n";
    }
    if matches!(sub, None | Some("recv")) {
        out += ".TP\n\\fBSHMXFER_SPIN_US\\fR\nMicroseconds the receiver's handshake waits of a transfer first retry without sleeping (default 0: off); see docs/protocol.md.\n";
    }
    if matches!(sub, None | Some("send")) {
        out += ".TP\n\\fBSTATE_DIRECTORY\\fR, \\fBXDG_STATE_HOME\\fR, \\fBHOME\\fR\nWhere send \\-\\-watch keeps its sent list when no \\-\\-state is given, the first that is set.\n";
    }
    out += ".TP\n\\fBNO_COLOR\\fR\nWhen set and not empty, no colour on stderr.\n";
    out += ".SH FILES\n";
    out += ".TP\n\\fB/proc/sysvipc/shm\\fR, \\fB/proc/sysvipc/sem\\fR, \\fB/proc/sysvipc/msg\\fR\nThe kernel's IPC tables, read as ipcs reads them.\n";
    if matches!(sub, None | Some("recv")) {
        out += ".TP\n\\fIDIR\\fB/.shmxfer\\-\\fIPID\\fB\\-\\fIN\\fB.part\\fR\nA file being received where the filesystem has no O_TMPFILE; named only when whole.\n";
    }
    if matches!(sub, None | Some("send")) {
        out += ".TP\n\\fB$STATE_DIRECTORY\\fR, \\fB$XDG_STATE_HOME/shmxfer/\\fR, \\fB~/.local/state/shmxfer/\\fR\\fBwatch\\-\\fINAME\\fB\\-\\fIHASH\\fB.sent\\fR\nsend \\-\\-watch's sent list when no \\-\\-state is given: the identities of the files committed.\n";
        out += ".TP\n\\fB/dev/shm/.shmxfer\\-legacy\\-\\fIKKKKKKKK\\fB.lock\\fR\nsend \\-\\-legacy's turn lock (K: the content key in hex), held while one file is handed over and removed by its holder.\n";
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

/// The COMMANDS section of shmxfer(1): each subcommand with its page where it has one
/// (`completions` and `man` are described here; `help` is clap's and left out).
fn commands_section(cmd: &clap::Command) -> String {
    let mut out = String::from(".SH COMMANDS\n");
    for c in cmd.get_subcommands().filter(|c| c.get_name() != "help") {
        let name = c.get_name();
        let head = match SUBCOMMANDS.contains(&name) {
            true => format!("\\fBshmxfer\\-{name}\\fR(1)"),
            false => format!("\\fBshmxfer {name}\\fR"),
        };
        let about = c.get_about().map(|a| a.to_string()).unwrap_or_default();
        out += &format!(".TP\n{head}\n{}\n", roff(&about));
    }
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
    let shown = match sub {
        Some(s) => format!("shmxfer {s}"),
        None => "shmxfer".into(),
    };
    let synopsis = match sub {
        Some(_) => synopsis(&cmd, &shown),
        None => "\\fBshmxfer\\fR [\\fB\\-h\\fR|\\fB\\-\\-help\\fR] [\\fB\\-V\\fR|\\fB\\-\\-version\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR...]".into(),
    };
    let man = clap_mangen::Man::new(cmd.clone());
    let mut buf = Vec::new();
    man.render_title(&mut buf)?;
    man.render_name_section(&mut buf)?;
    buf.write_all(format!(".SH SYNOPSIS\n{synopsis}\n").as_bytes())?;
    man.render_description_section(&mut buf)?;
    man.render_options_section(&mut buf)?;
    if sub.is_none() {
        buf.write_all(commands_section(&cmd).as_bytes())?;
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
