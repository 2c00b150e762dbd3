//! `shmxfer status`: every System V IPC object on the host, read from the kernel's own tables
//! (`/proc/sysvipc`, as util-linux does), with shmxfer's channels and the original system's
//! objects marked, and a section on each channel's state.

use std::fmt::Write as _;

use serde::Serialize;

use crate::frame::{self, State, View};
use crate::sysv::{self, Key, Kind, TableRow};
use crate::{exit, legacy};
use clap::Args;

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot read the kernel's IPC tables ({path}): {source}; is /proc mounted?")]
    Proc {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("cannot write JSON: {0}")]
    Json(serde_json::Error),
}

#[derive(Debug, Serialize)]
pub struct ShmRow {
    pub key: u32,
    pub id: i32,
    pub owner: String,
    pub uid: u32,
    pub perms: String,
    pub bytes: u64,
    pub nattch: u64,
    pub cpid: i32,
    pub lpid: i32,
    pub atime: i64,
    pub dtime: i64,
    pub ctime: i64,
    /// "dest" once marked for removal, "locked" with SHM_LOCK.
    pub status: Vec<&'static str>,
    /// What the object is to shmxfer: "control", "content", "legacy-content", "legacy-size".
    pub role: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct SemRow {
    pub key: u32,
    pub id: i32,
    pub owner: String,
    pub uid: u32,
    pub perms: String,
    pub nsems: u32,
    pub otime: i64,
    pub ctime: i64,
    pub role: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct MsgRow {
    pub key: u32,
    pub id: i32,
    pub owner: String,
    pub uid: u32,
    pub perms: String,
    pub used_bytes: u64,
    pub messages: u64,
    pub lspid: i32,
    pub lrpid: i32,
    pub stime: i64,
    pub rtime: i64,
    pub ctime: i64,
}

#[derive(Debug, Serialize)]
pub struct Transfer {
    pub name: String,
    pub bytes_done: u64,
    pub total: Option<u64>,
    pub sender_pid: i32,
}

/// A channel's state as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelState {
    /// The receiver is creating the channel.
    Starting,
    /// The receiver lives and waits for a sender.
    Idle,
    /// A sender is admitted.
    Busy,
    /// The receiver is leaving.
    Stopping,
    /// The receiver is dead: `shmxfer clean` removes the channel.
    Stale,
}

impl std::fmt::Display for ChannelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            ChannelState::Starting => "starting",
            ChannelState::Idle => "idle",
            ChannelState::Busy => "busy",
            ChannelState::Stopping => "stopping",
            ChannelState::Stale => "stale",
        };
        f.write_str(s)
    }
}

#[derive(Debug, Serialize)]
pub struct ChannelRow {
    pub key: u32,
    pub state: ChannelState,
    pub receiver_pid: i32,
    pub mode: String,
    pub slot_size: u64,
    pub slot_count: u32,
    pub require_md5: bool,
    pub control_id: i32,
    pub content_id: i32,
    pub sem_id: i32,
    pub transfer: Option<Transfer>,
}

#[derive(Debug, Serialize)]
pub struct Snapshot {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm: Option<Vec<ShmRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sem: Option<Vec<SemRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg: Option<Vec<MsgRow>>,
    /// Only in the full view: reading a channel's state means attaching its control segment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<ChannelRow>>,
}

/// Which parts of the host's IPC a snapshot covers.
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    pub shm: bool,
    pub sem: bool,
    pub msg: bool,
    /// The channels' states: the only part that attaches (read-only) to anything.
    pub channels: bool,
}

impl Parts {
    /// Everything, channels included.
    pub const ALL: Parts = Parts {
        shm: true,
        sem: true,
        msg: true,
        channels: true,
    };
}

fn table(kind: Kind) -> Result<Vec<TableRow>, StatusError> {
    sysv::read_table(kind).map_err(|source| StatusError::Proc {
        path: kind.path(),
        source,
    })
}

fn perms(r: &TableRow) -> u32 {
    u32::from_str_radix(r.get("perms").unwrap_or("0"), 8).unwrap_or(0)
}

/// Reads the kernel's tables for the `parts` asked for. Listing objects touches nothing (the
/// tables are files in /proc, and roles are told by shape); only the channels' states attach,
/// read-only, to each segment that could be a channel's control segment.
pub fn snapshot(parts: Parts) -> Result<Snapshot, StatusError> {
    let shm_rows = table(Kind::Shm)?;
    let sem_rows = table(Kind::Sem)?;
    let channels = parts.channels.then(|| channels(&shm_rows));
    let roles = Roles {
        shm: &shm_rows,
        sem: &sem_rows,
    };
    Ok(Snapshot {
        shm: parts
            .shm
            .then(|| shm_rows.iter().map(|r| shm_row(r, &roles)).collect()),
        sem: parts
            .sem
            .then(|| sem_rows.iter().map(|r| sem_row(r, &roles)).collect()),
        msg: match parts.msg {
            true => Some(table(Kind::Msg)?.iter().map(msg_row).collect()),
            false => None,
        },
        channels,
    })
}

/// Every segment of a control segment's size that decodes as a channel. Attached read-only
/// and decoded with every check: a foreign or corrupt segment is just not a channel.
fn channels(shm: &[TableRow]) -> Vec<ChannelRow> {
    shm.iter()
        .filter(|r| r.num("size") as usize == frame::CONTROL_LEN)
        .filter_map(|r| {
            let id = r.num("shmid") as i32;
            View::open(id).ok().map(|v| channel_row(r.key(), id, &v))
        })
        .collect()
}

/// What each object is to shmxfer (a channel's part) or to the original system, told by shape
/// from the tables alone: a channel is a control-sized segment at K with a set of 7
/// semaphores at K and a segment at K+1.
struct Roles<'a> {
    shm: &'a [TableRow],
    sem: &'a [TableRow],
}

impl Roles<'_> {
    fn segment_at(&self, key: Key) -> Option<u64> {
        (key.0 != 0)
            .then(|| self.shm.iter().find(|r| r.key() == key))
            .flatten()
            .map(|r| r.num("size") as u64)
    }
    fn nsems_at(&self, key: Key) -> Option<u32> {
        (key.0 != 0)
            .then(|| self.sem.iter().find(|r| r.key() == key))
            .flatten()
            .map(|r| r.num("nsems") as u32)
    }
    /// Whether K is a channel's key by shape.
    fn channel_at(&self, key: Key) -> bool {
        self.segment_at(key) == Some(frame::CONTROL_LEN as u64)
            && self.nsems_at(key) == Some(u32::from(frame::sem::COUNT))
            && key.offset(1).and_then(|k| self.segment_at(k)).is_some()
    }
    fn shm(&self, key: Key, size: u64) -> Option<&'static str> {
        if self.channel_at(key) {
            Some("control")
        } else if key.0 > 1 && self.channel_at(Key(key.0 - 1)) {
            Some("content")
        } else {
            legacy::shm_role(size, self.nsems_at(key) == Some(1))
        }
    }
    fn sem(&self, key: Key, nsems: u32) -> Option<&'static str> {
        if self.channel_at(key) {
            return Some("semaphores");
        }
        legacy::sem_role(nsems, self.segment_at(key))
    }
}

fn shm_row(r: &TableRow, roles: &Roles) -> ShmRow {
    let p = perms(r);
    let mut status = Vec::new();
    if p & 0o1000 != 0 {
        status.push("dest");
    }
    if p & 0o2000 != 0 {
        status.push("locked");
    }
    let id = r.num("shmid") as i32;
    ShmRow {
        key: r.key().0,
        id,
        owner: sysv::user_name(r.num("uid") as u32),
        uid: r.num("uid") as u32,
        perms: format!("{:o}", p & 0o777),
        bytes: r.num("size") as u64,
        nattch: r.num("nattch") as u64,
        cpid: r.num("cpid") as i32,
        lpid: r.num("lpid") as i32,
        atime: r.num("atime"),
        dtime: r.num("dtime"),
        ctime: r.num("ctime"),
        status,
        role: roles.shm(r.key(), r.num("size") as u64),
    }
}

fn sem_row(r: &TableRow, roles: &Roles) -> SemRow {
    let id = r.num("semid") as i32;
    let nsems = r.num("nsems") as u32;
    SemRow {
        key: r.key().0,
        id,
        owner: sysv::user_name(r.num("uid") as u32),
        uid: r.num("uid") as u32,
        perms: format!("{:o}", perms(r) & 0o777),
        nsems,
        otime: r.num("otime"),
        ctime: r.num("ctime"),
        role: roles.sem(r.key(), nsems),
    }
}

fn msg_row(r: &TableRow) -> MsgRow {
    MsgRow {
        key: r.key().0,
        id: r.num("msqid") as i32,
        owner: sysv::user_name(r.num("uid") as u32),
        uid: r.num("uid") as u32,
        perms: format!("{:o}", perms(r) & 0o777),
        used_bytes: r.num("cbytes") as u64,
        messages: r.num("qnum") as u64,
        lspid: r.num("lspid") as i32,
        lrpid: r.num("lrpid") as i32,
        stime: r.num("stime"),
        rtime: r.num("rtime"),
        ctime: r.num("ctime"),
    }
}

fn channel_row(key: Key, control_id: i32, view: &View) -> ChannelRow {
    let info = &view.info;
    let alive = frame::receiver_alive(info);
    let raw_state = view.state();
    let state = match (alive, raw_state) {
        (false, _) => ChannelState::Stale,
        (true, s) if s == State::Busy as u32 => ChannelState::Busy,
        (true, s) if s == State::Idle as u32 => ChannelState::Idle,
        (true, s) if s == State::Stopping as u32 => ChannelState::Stopping,
        (true, _) => ChannelState::Starting,
    };
    let transfer = (state == ChannelState::Busy)
        .then(|| view.request().ok())
        .flatten()
        .filter(|r| r.op == frame::Op::File)
        .map(|r| Transfer {
            name: String::from_utf8_lossy(&r.name).into_owned(),
            bytes_done: view.progress(),
            total: r.size,
            sender_pid: r.sender_pid,
        });
    ChannelRow {
        key: key.0,
        state,
        receiver_pid: info.receiver_pid,
        mode: format!("{:o}", info.mode),
        slot_size: info.slot_size as u64,
        slot_count: info.slot_count,
        require_md5: info.require_md5,
        control_id,
        content_id: info.content_shmid,
        sem_id: info.semid,
        transfer,
    }
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
        let _ = crate::term::out_line(out.trim_end_matches('\n'));
        return Ok(exit::OK);
    }
    // The channels' states are read only in the full view: listing objects never attaches.
    let parts = Parts {
        shm: all || args.shm,
        sem: (all || args.sem) && (!args.pid || args.json),
        msg: all || args.queues,
        channels: all && !args.time && !args.pid,
    };
    let mut snap = snapshot(parts)?;
    if let Some(k) = args.key {
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
        crate::term::out_line(&text);
        return Ok(exit::OK);
    }
    let mut out = String::new();
    render(&mut out, &snap, &args);
    // One write: into a closed pipe it fails once, quietly.
    let _ = crate::term::out_line(out.trim_end_matches('\n'));
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
fn mark(role: Option<&str>) -> String {
    match role {
        Some(r) if r.starts_with("legacy-") => format!("original system ({})", &r[7..]),
        Some(r) => format!("shmxfer {r}"),
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
                crate::text::escape(t.name.as_bytes()),
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
    /// Show only the channel at this key (decimal or 0x hex)
    #[arg(long, value_parser = crate::shared::parse::parse_key)]
    pub key: Option<Key>,
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
