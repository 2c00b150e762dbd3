//! `shmxfer status`: every System V IPC object on the host, read from the kernel's own tables
//! (`/proc/sysvipc`, as util-linux does), with shmxfer's channels and the original system's
//! objects marked, and a section on each channel's state.

use std::fmt::Write as _;

use clap::Args;

use crate::protocols::inventory::{
    ChannelRow, ChannelState, InventoryError, MsgRow, Parts, Role, SemRow, ShmRow, Snapshot,
    snapshot,
};
use crate::shared::exit;
use crate::shared::wire::Address;
use crate::sysv::{self, Key};

/// Why `status` failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The kernel's tables could not be read.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// The JSON could not be written.
    #[error("cannot write JSON: {0}")]
    Json(serde_json::Error),
}

pub fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if n < 1024 {
        return n.to_string();
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1}{}", UNITS[u])
}

/// Unix seconds as a UTC date and time ("not set" for 0, as ipcs says).
pub fn when(t: i64) -> String {
    if t == 0 {
        return "not set".into();
    }
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

pub fn run(args: StatusArgs) -> super::Outcome {
    let all = !(args.shm || args.sem || args.queues);
    if args.limits {
        let mut out = String::new();
        limits(&mut out, all, &args);
        let _ = crate::shared::term::out_line(out.trim_end_matches('\n'));
        return Ok(exit::OK);
    }
    // The channels' states are read only in the full view: listing objects never attaches.
    let parts = Parts {
        shm: all || args.shm,
        sem: (all || args.sem) && (!args.pid || args.json),
        msg: all || args.queues,
        channels: all && !args.time && !args.pid,
    };
    let mut snap = snapshot(parts).map_err(StatusError::from)?;
    if let Some(k) = args.key.as_ref().map(|a| a.key) {
        let near = |key: u32| key == k.0 || Some(Key(key)) == k.offset(1);
        if let Some(v) = snap.shm.as_mut() {
            v.retain(|r| near(r.key));
        }
        if let Some(v) = snap.sem.as_mut() {
            v.retain(|r| near(r.key));
        }
        if let Some(v) = snap.msg.as_mut() {
            v.retain(|r| near(r.key));
        }
        if let Some(v) = snap.channels.as_mut() {
            v.retain(|c| c.key == k.0);
        }
    }
    if args.json {
        let text = serde_json::to_string_pretty(&snap).map_err(StatusError::Json)?;
        crate::shared::term::out_line(&text);
        return Ok(exit::OK);
    }
    let mut out = String::new();
    render(&mut out, &snap, &args);
    // One write: into a closed pipe it fails once, quietly.
    let _ = crate::shared::term::out_line(out.trim_end_matches('\n'));
    Ok(exit::OK)
}

fn size(n: u64, bytes: bool) -> String {
    if bytes { n.to_string() } else { human(n) }
}

/// One column of a view: its header, its least width, and how a row shows in it (`bytes`:
/// sizes in bytes rather than human units).
struct Column<R> {
    name: &'static str,
    width: usize,
    cell: fn(&R, bool) -> String,
}

const fn col<R>(name: &'static str, width: usize, cell: fn(&R, bool) -> String) -> Column<R> {
    Column { name, width, cell }
}

/// Writes one section as ipcs lays it out: a title, a header row, then one row per object,
/// each column left-aligned. A column is as wide as its widest cell, so a long value never
/// shifts the columns after it.
fn section<R>(out: &mut String, title: &str, cols: &[Column<R>], rows: &[R], bytes: bool) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| (c.cell)(r, bytes)).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let widest = cells
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0);
            c.width.max(c.name.len()).max(widest)
        })
        .collect();
    let line = |cells: &mut dyn Iterator<Item = String>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join(" ").trim_end().to_string()
    };
    let _ = writeln!(out, "------ {title} --------");
    let _ = writeln!(
        out,
        "{}",
        line(&mut cols.iter().map(|c| c.name.to_string()))
    );
    for r in cells {
        let _ = writeln!(out, "{}", line(&mut r.into_iter()));
    }
    let _ = writeln!(out);
}

fn hex_key(k: u32) -> String {
    format!("0x{k:08x}")
}

/// What an object is to shmxfer or to the original system, for the last column.
fn mark(role: Option<Role>) -> String {
    match role {
        Some(r @ (Role::Legacy(_) | Role::LegacySem(_))) => {
            format!("original system ({})", &r.name()["legacy-".len()..])
        }
        Some(r) => format!("shmxfer {}", r.name()),
        None => String::new(),
    }
}

const MSG: &[Column<MsgRow>] = &[
    col("key", 10, |r, _| hex_key(r.key)),
    col("msqid", 10, |r, _| r.id.to_string()),
    col("owner", 10, |r, _| r.owner.clone()),
    col("perms", 10, |r, _| r.perms.clone()),
    col("used-bytes", 12, |r, b| size(r.used_bytes, b)),
    col("messages", 10, |r, _| r.messages.to_string()),
];
const MSG_TIME: &[Column<MsgRow>] = &[
    col("msqid", 10, |r, _| r.id.to_string()),
    col("owner", 10, |r, _| r.owner.clone()),
    col("perms", 10, |r, _| r.perms.clone()),
    col("send", 20, |r, _| when(r.stime)),
    col("recv", 20, |r, _| when(r.rtime)),
    col("change", 20, |r, _| when(r.ctime)),
];
const MSG_PID: &[Column<MsgRow>] = &[
    col("msqid", 10, |r, _| r.id.to_string()),
    col("owner", 10, |r, _| r.owner.clone()),
    col("lspid", 10, |r, _| r.lspid.to_string()),
    col("lrpid", 10, |r, _| r.lrpid.to_string()),
];
const SHM: &[Column<ShmRow>] = &[
    col("key", 10, |r, _| hex_key(r.key)),
    col("shmid", 10, |r, _| r.id.to_string()),
    col("owner", 10, |r, _| r.owner.clone()),
    col("perms", 10, |r, _| r.perms.clone()),
    col("bytes", 10, |r, b| size(r.bytes, b)),
    col("nattch", 10, |r, _| r.nattch.to_string()),
    col("status", 12, |r, _| r.status.join(",")),
    col("what", 0, |r, _| mark(r.role)),
];
const SHM_TIME: &[Column<ShmRow>] = &[
    col("shmid", 10, |r, _| r.id.to_string()),
    col("owner", 10, |r, _| r.owner.clone()),
    col("attached", 20, |r, _| when(r.atime)),
    col("detached", 20, |r, _| when(r.dtime)),
    col("changed", 20, |r, _| when(r.ctime)),
];
const SHM_PID: &[Column<ShmRow>] = &[
    col("shmid", 10, |r, _| r.id.to_string()),
    col("owner", 10, |r, _| r.owner.clone()),
    col("cpid", 10, |r, _| r.cpid.to_string()),
    col("lpid", 10, |r, _| r.lpid.to_string()),
];
const SEM: &[Column<SemRow>] = &[
    col("key", 10, |r, _| hex_key(r.key)),
    col("semid", 10, |r, _| r.id.to_string()),
    col("owner", 10, |r, _| r.owner.clone()),
    col("perms", 10, |r, _| r.perms.clone()),
    col("nsems", 10, |r, _| r.nsems.to_string()),
    col("what", 0, |r, _| mark(r.role)),
];
const SEM_TIME: &[Column<SemRow>] = &[
    col("semid", 10, |r, _| r.id.to_string()),
    col("owner", 10, |r, _| r.owner.clone()),
    col("last-op", 20, |r, _| when(r.otime)),
    col("last-changed", 20, |r, _| when(r.ctime)),
];
const CHANNELS: &[Column<ChannelRow>] = &[
    col("key", 10, |c, _| hex_key(c.key)),
    col("name", 0, |c, _| {
        c.name
            .as_deref()
            .map_or("-".into(), |n| crate::shared::text::escape(n.as_bytes()))
    }),
    col("owner", 10, |c, _| c.owner.clone()),
    col("state", 8, |c, _| c.state.to_string()),
    col("receiver", 10, |c, _| match c.state {
        ChannelState::Stale => format!("{} (dead)", c.receiver_pid),
        _ => c.receiver_pid.to_string(),
    }),
    col("mode", 6, |c, _| c.mode.clone()),
    col("slots", 12, |c, b| {
        format!("{} x {}", c.slot_count, size(c.slot_size, b))
    }),
    col("transfer", 0, |c, b| {
        c.transfer.as_ref().map_or(String::new(), |t| {
            // Progress is read live: never show more done than the total.
            let done = t.total.map_or(t.bytes_done, |n| t.bytes_done.min(n));
            let total = t.total.map_or("?".into(), |n| size(n, b));
            format!(
                "{} {}/{total} from pid {}",
                crate::shared::text::escape(t.name.as_bytes()),
                size(done, b),
                t.sender_pid
            )
        })
    }),
];

/// The object sections and the channels, in the layout the flags ask for (`-t` times, `-p`
/// pids, else the default; `-m`/`-s`/`-q` pick sections).
fn render(out: &mut String, s: &Snapshot, a: &StatusArgs) {
    let b = a.bytes;
    fn pick<'c, R>(
        a: &StatusArgs,
        time: &'c [Column<R>],
        pid: &'c [Column<R>],
        default: &'c [Column<R>],
    ) -> &'c [Column<R>] {
        if a.time {
            time
        } else if a.pid {
            pid
        } else {
            default
        }
    }
    if let Some(msg) = &s.msg {
        section(
            out,
            "Message Queues",
            pick(a, MSG_TIME, MSG_PID, MSG),
            msg,
            b,
        );
    }
    if let Some(shm) = &s.shm {
        let cols = pick(a, SHM_TIME, SHM_PID, SHM);
        section(out, "Shared Memory Segments", cols, shm, b);
    }
    // ipcs -p has no semaphore section: semaphores keep no creator or last pid per set.
    if let Some(sem) = &s.sem {
        let cols = if a.time { SEM_TIME } else { SEM };
        section(out, "Semaphore Arrays", cols, sem, b);
    }
    if let Some(channels) = s.channels.as_ref().filter(|c| !c.is_empty()) {
        section(out, "shmxfer channels", CHANNELS, channels, b);
    }
}

fn read_limit(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// What `ipcs -l` shows, from /proc/sys/kernel.
fn limits(out: &mut String, all: bool, a: &StatusArgs) {
    let num = |n: &str| read_limit(n).parse::<u64>().ok();
    let sz = |v: Option<u64>| v.map_or("?".into(), |v| size(v, a.bytes));
    if all || a.queues {
        let _ = writeln!(out, "------ Messages Limits --------");
        let _ = writeln!(out, "max queues system wide = {}", read_limit("msgmni"));
        let _ = writeln!(
            out,
            "max size of message (bytes) = {}",
            read_limit("msgmax")
        );
        let _ = writeln!(
            out,
            "default max size of queue (bytes) = {}\n",
            read_limit("msgmnb")
        );
    }
    if all || a.shm {
        let page = sysv::page_size();
        let _ = writeln!(out, "------ Shared Memory Limits --------");
        let _ = writeln!(out, "max number of segments = {}", read_limit("shmmni"));
        let _ = writeln!(out, "max seg size = {}", sz(num("shmmax")));
        let _ = writeln!(
            out,
            "max total shared memory = {}",
            sz(num("shmall").map(|p| p.saturating_mul(page)))
        );
        let _ = writeln!(out, "min seg size (bytes) = 1\n");
    }
    if all || a.sem {
        let sem = read_limit("sem");
        let f: Vec<&str> = sem.split_whitespace().collect();
        let g = |i: usize| f.get(i).copied().unwrap_or("?");
        let _ = writeln!(out, "------ Semaphore Limits --------");
        let _ = writeln!(out, "max number of arrays = {}", g(3));
        let _ = writeln!(out, "max semaphores per array = {}", g(0));
        let _ = writeln!(out, "max semaphores system wide = {}", g(1));
        let _ = writeln!(out, "max ops per semop call = {}", g(2));
        let _ = writeln!(out, "semaphore max value = 32767\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_human_unless_asked_for_bytes() {
        assert_eq!(human(10), "10");
        assert_eq!(human(8192), "8.0K");
        assert_eq!(human(5_000_000), "4.8M");
        assert_eq!(size(5_000_000, true), "5000000");
    }

    #[test]
    fn times_render_as_utc_dates() {
        assert_eq!(when(0), "not set");
        assert_eq!(when(1_700_000_000), "2023-11-14 22:13:20");
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Show only the channel at this key (decimal or 0x hex) or of this name
    #[arg(long, value_parser = crate::shared::parse::parse_address, value_name = "KEY|NAME")]
    pub key: Option<Address>,
    /// Shared memory segments
    #[arg(short = 'm', long)]
    pub shm: bool,
    /// Semaphore sets
    #[arg(short = 's', long)]
    pub sem: bool,
    /// Message queues
    #[arg(short = 'q', long)]
    pub queues: bool,
    /// Attach, detach and change times
    #[arg(short = 't', long)]
    pub time: bool,
    /// Creator and last-operation pids
    #[arg(short = 'p', long)]
    pub pid: bool,
    /// The kernel's IPC limits
    #[arg(short = 'l', long)]
    pub limits: bool,
    /// Sizes in bytes, not human-readable
    #[arg(short = 'b', long)]
    pub bytes: bool,
    /// One JSON object for scripts (schema: docs/status-json.md)
    #[arg(long, conflicts_with_all = ["time", "pid", "limits"])]
    pub json: bool,
}
