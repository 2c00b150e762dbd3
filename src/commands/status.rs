//! `shmxfer status`: every System V IPC object on the host, read from the kernel's own tables
//! (`/proc/sysvipc`, as util-linux does), with shmxfer's channels and the original system's
//! objects marked, and a section on each channel's state.

use std::fmt::Write as _;

use clap::Args;

use crate::commands::{exit, users};
use crate::mechanisms::wire::Address;
use crate::os;
use crate::protocols::inventory::{
    ChannelRow, ChannelState, InventoryError, LegacyRow, MsgRow, Object, Parts, Role, SemRow,
    ShmRow, Snapshot, semaphores, snapshot,
};
use crate::sysv::Key;

impl StatusError {
    /// The exit code `status` ends with for this.
    pub fn exit_code(&self) -> i32 {
        match self {
            StatusError::NoSuchId(_) | StatusError::NothingAt(_) => exit::FAILURE,
            StatusError::Read(_, e) if e.is_permission() => exit::NOPERM,
            StatusError::Json(_) => exit::IOERR,
            _ => exit::OSERR,
        }
    }
}

/// Why `status` failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The kernel's tables could not be read.
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    /// The JSON could not be written.
    #[error("cannot write JSON: {0}")]
    Json(serde_json::Error),
    /// `-i ID` matched no object.
    #[error("no IPC object with id {0} (of the kinds asked for): see `shmxfer status` for the ids")]
    NoSuchId(i32),
    /// `--key` matched no object and no channel.
    #[error("no channel or IPC object at {}", describe_key(.0))]
    NothingAt(crate::mechanisms::wire::Address),
    /// A semaphore set could not be read.
    #[error("cannot read semaphore set {0}: {1}")]
    Read(i32, crate::sysv::SysvError),
}

/// A key as the user gave it: `0x… (NAME)` for a name.
fn describe_key(a: &crate::mechanisms::wire::Address) -> String {
    match &a.name {
        Some(n) => format!("{} ({n})", a.key),
        None => a.key.to_string(),
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
    let mut out = String::new();
    if args.limits {
        // ipcs's own layout, blank lines included, so the two can be compared line for line.
        limits(&mut out, all, &args);
        out.push('\n');
        let _ = crate::commands::term::out_line(out.strip_suffix('\n').unwrap_or(&out));
        return Ok(exit::OK);
    } else if args.summary {
        summary(&mut out, all, &args)?;
    } else if let Some(id) = args.id {
        detail(&mut out, id, all, &args)?;
    } else {
        let snap = listing(all, &args)?;
        if args.json {
            let text = serde_json::to_string_pretty(&snap).map_err(StatusError::Json)?;
            crate::commands::term::out_line(&text);
            return Ok(exit::OK);
        }
        render(&mut out, &snap, &args);
    }
    // One write: into a closed pipe it fails once, quietly.
    let _ = crate::commands::term::out_line(out.trim_end_matches('\n'));
    Ok(exit::OK)
}

/// The objects (and, in the default view, the channels) the flags ask for, `--key`'s only.
fn listing(all: bool, args: &StatusArgs) -> Result<Snapshot, StatusError> {
    let groups = args.time || args.pid || args.creator;
    // The channels' states are read only in the default view: listing objects never attaches.
    let parts = Parts {
        shm: all || args.shm,
        // ipcs -p has no semaphore section: a set keeps no creator or last pid of its own.
        sem: (all || args.sem) && (args.json || !args.pid || args.time || args.creator),
        msg: all || args.queues,
        channels: all && !groups,
    };
    let mut snap = snapshot(parts)?;
    if let Some(k) = args.key.as_ref().map(|a| a.key) {
        // The original system's channel has two keys of any values: both halves are shown.
        let partner = snap.legacy_partner(k);
        let near =
            |key: u32| key == k.0 || Some(Key(key)) == k.offset(1) || partner == Some(Key(key));
        if let Some(v) = snap.shm.as_mut() {
            v.retain(|r| near(r.object.key));
        }
        if let Some(v) = snap.sem.as_mut() {
            v.retain(|r| near(r.object.key));
        }
        if let Some(v) = snap.msg.as_mut() {
            v.retain(|r| near(r.object.key));
        }
        if let Some(v) = snap.channels.as_mut() {
            v.retain(|c| c.key == k.0);
        }
        if let Some(v) = snap.legacy.as_mut() {
            v.retain(|c| c.content_key == k.0 || c.size_key == Some(k.0));
        }
        let none = |n: Option<usize>| n.unwrap_or(0) == 0;
        if none(snap.shm.as_ref().map(Vec::len))
            && none(snap.sem.as_ref().map(Vec::len))
            && none(snap.msg.as_ref().map(Vec::len))
            && none(snap.channels.as_ref().map(Vec::len))
            && none(snap.legacy.as_ref().map(Vec::len))
            && let Some(a) = &args.key
        {
            // As `ipcs -i` fails on an id it does not know.
            return Err(StatusError::NothingAt(a.clone()));
        }
    }
    Ok(snap)
}

fn size(n: u64, human_units: bool) -> String {
    if human_units { human(n) } else { n.to_string() }
}

/// One column of a view: its header, its least width, and how a row shows in it (`human`:
/// sizes in human units rather than bytes).
struct Column<R> {
    name: &'static str,
    width: usize,
    cell: fn(&R, bool) -> String,
}

// By hand: a derive would ask `R: Copy`, and only the fn pointer is copied.
impl<R> Clone for Column<R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<R> Copy for Column<R> {}

const fn col<R>(name: &'static str, width: usize, cell: fn(&R, bool) -> String) -> Column<R> {
    Column { name, width, cell }
}

/// Writes one section as ipcs lays it out: a title, a header row, then one row per object,
/// each column left-aligned. A column is as wide as its widest cell, so a long value never
/// shifts the columns after it.
fn section<R>(out: &mut String, title: &str, cols: &[Column<R>], rows: &[R], human: bool) {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| (c.cell)(r, human)).collect())
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

/// The column groups of one kind: the columns its default view adds to the identity (key,
/// id, owner, perms), and the groups `-t`, `-p`, `-c` add to the short identity (id, owner).
/// ipcs shows only the last of those flags; here they combine, in that order.
struct Views<R: 'static> {
    id: &'static str,
    default: &'static [Column<R>],
    time: &'static [Column<R>],
    pid: &'static [Column<R>],
}

/// A row of one of the three object sections.
trait ObjectRow {
    fn object(&self) -> &Object;
}

macro_rules! object_rows {
    ($($r:ty),*) => {$(
        impl ObjectRow for $r {
            fn object(&self) -> &Object {
                &self.object
            }
        }
    )*};
}
object_rows!(MsgRow, ShmRow, SemRow);

impl<R: ObjectRow> Views<R> {
    fn pick(&self, a: &StatusArgs) -> Vec<Column<R>> {
        let id = col(self.id, 10, |r: &R, _| r.object().id.to_string());
        let owner = col("owner", 10, |r: &R, _| r.object().owner.clone());
        let perms = col("perms", 10, |r: &R, _| r.object().perms.clone());
        if !(a.time || a.pid || a.creator) {
            let key = col("key", 10, |r: &R, _| hex_key(r.object().key));
            return [key, id, owner, perms]
                .into_iter()
                .chain(self.default.iter().copied())
                .collect();
        }
        // The creator group, the same for every kind (as `ipcs -c`: names where NSS knows them).
        let creator = [
            perms,
            col("cuid", 10, |r: &R, _| os::user_name(r.object().cuid)),
            col("cgid", 10, |r: &R, _| users::group_name(r.object().cgid)),
            col("uid", 10, |r: &R, _| os::user_name(r.object().uid)),
            col("gid", 10, |r: &R, _| users::group_name(r.object().gid)),
        ];
        let groups: [(bool, &[Column<R>]); 3] = [
            (a.time, self.time),
            (a.pid, self.pid),
            (a.creator, &creator),
        ];
        let extra = groups
            .iter()
            .filter(|(on, _)| *on)
            .flat_map(|(_, g)| g.iter().copied());
        [id, owner].into_iter().chain(extra).collect()
    }
}

const MSG: Views<MsgRow> = Views {
    id: "msqid",
    default: &[
        col("used-bytes", 12, |r, h| size(r.used_bytes, h)),
        col("messages", 10, |r, _| r.messages.to_string()),
    ],
    time: &[
        col("send", 20, |r, _| when(r.stime)),
        col("recv", 20, |r, _| when(r.rtime)),
        col("change", 20, |r, _| when(r.ctime)),
    ],
    pid: &[
        col("lspid", 10, |r, _| r.lspid.to_string()),
        col("lrpid", 10, |r, _| r.lrpid.to_string()),
    ],
};
const SHM: Views<ShmRow> = Views {
    id: "shmid",
    default: &[
        col("bytes", 10, |r, h| size(r.bytes, h)),
        col("nattch", 10, |r, _| r.nattch.to_string()),
        col("status", 12, |r, _| r.status.join(",")),
        col("what", 0, |r, _| mark(r.role)),
    ],
    time: &[
        col("attached", 20, |r, _| when(r.atime)),
        col("detached", 20, |r, _| when(r.dtime)),
        col("changed", 20, |r, _| when(r.ctime)),
    ],
    pid: &[
        col("cpid", 10, |r, _| r.cpid.to_string()),
        col("lpid", 10, |r, _| r.lpid.to_string()),
    ],
};
const SEM: Views<SemRow> = Views {
    id: "semid",
    default: &[
        col("nsems", 10, |r, _| r.nsems.to_string()),
        col("what", 0, |r, _| mark(r.role)),
    ],
    time: &[
        col("last-op", 20, |r, _| when(r.otime)),
        col("last-changed", 20, |r, _| when(r.ctime)),
    ],
    pid: &[],
};
fn receiver(state: ChannelState, pid: i32) -> String {
    match state {
        ChannelState::Stale => format!("{pid} (dead)"),
        _ => pid.to_string(),
    }
}

const LEGACY: &[Column<LegacyRow>] = &[
    col("content key", 10, |c, _| hex_key(c.content_key)),
    col("size key", 10, |c, _| {
        c.size_key.map_or("-".into(), hex_key)
    }),
    col("owner", 10, |c, _| c.owner.clone()),
    col("state", 8, |c, _| c.state.to_string()),
    col("receiver", 10, |c, _| receiver(c.state, c.receiver_pid)),
];

const CHANNELS: &[Column<ChannelRow>] = &[
    col("key", 10, |c, _| hex_key(c.key)),
    col("name", 0, |c, _| {
        c.name.as_deref().map_or("-".into(), |n| {
            crate::mechanisms::text::escape(n.as_bytes())
        })
    }),
    col("owner", 10, |c, _| c.owner.clone()),
    col("state", 8, |c, _| c.state.to_string()),
    col("receiver", 10, |c, _| receiver(c.state, c.receiver_pid)),
    col("mode", 6, |c, _| c.mode.clone()),
    col("slots", 12, |c, h| match c.slot_count {
        // A channel we may not read: its layout is in its header.
        0 => "?".into(),
        n => format!("{n} x {}", size(c.slot_size, h)),
    }),
    col("transfer", 0, |c, h| {
        c.transfer.as_ref().map_or(String::new(), |t| {
            // Progress is read live: never show more done than the total.
            let done = t.total.map_or(t.bytes_done, |n| t.bytes_done.min(n));
            let total = t.total.map_or("?".into(), |n| size(n, h));
            format!(
                "{} {}/{total} from {} (pid {})",
                crate::mechanisms::text::escape(t.name.as_bytes()),
                size(done, h),
                t.sender_user,
                t.sender_pid
            )
        })
    }),
];

/// The object sections and the channels, with the column groups the flags ask for.
fn render(out: &mut String, s: &Snapshot, a: &StatusArgs) {
    let h = a.human;
    let titled = |base: &'static str| -> String {
        match (a.time, a.pid, a.creator) {
            (false, false, false) => base.to_string(),
            (t, p, c) => {
                let mut g = Vec::new();
                t.then(|| g.push("Times"));
                p.then(|| g.push("PIDs"));
                c.then(|| g.push("Creators/Owners"));
                format!("{base} {}", g.join(", "))
            }
        }
    };
    if let Some(msg) = &s.msg {
        section(out, &titled("Message Queues"), &MSG.pick(a), msg, h);
    }
    if let Some(shm) = &s.shm {
        section(out, &titled("Shared Memory Segments"), &SHM.pick(a), shm, h);
    }
    if let Some(sem) = &s.sem {
        section(out, &titled("Semaphore Arrays"), &SEM.pick(a), sem, h);
    }
    if let Some(channels) = s.channels.as_ref().filter(|c| !c.is_empty()) {
        section(out, "shmxfer channels", CHANNELS, channels, h);
    }
    if let Some(legacy) = s.legacy.as_ref().filter(|c| !c.is_empty()) {
        section(out, "original system channels", LEGACY, legacy, h);
    }
}

fn read_limit(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// What `ipcs -l -b` shows, from /proc/sys/kernel, line for line: sizes in bytes, labelled
/// so (or, with `--human`, in K/M/G).
fn limits(out: &mut String, all: bool, a: &StatusArgs) {
    let num = |n: &str| read_limit(n).parse::<u64>().ok();
    let sz = |v: Option<u64>| v.map_or("?".into(), |v| size(v, a.human));
    let unit = if a.human { "" } else { " (bytes)" };
    if all || a.queues {
        let _ = writeln!(out, "\n------ Messages Limits --------");
        let _ = writeln!(out, "max queues system wide = {}", read_limit("msgmni"));
        let _ = writeln!(out, "max size of message{unit} = {}", sz(num("msgmax")));
        let _ = writeln!(
            out,
            "default max size of queue{unit} = {}",
            sz(num("msgmnb"))
        );
    }
    if all || a.shm {
        let page = crate::os::page_size();
        // shmall counts pages; where pages × page size overflows, the largest whole number of
        // pages, as ipcs shows it.
        let total = num("shmall").map(|p| p.checked_mul(page).unwrap_or(u64::MAX / page * page));
        let _ = writeln!(out, "\n------ Shared Memory Limits --------");
        let _ = writeln!(out, "max number of segments = {}", read_limit("shmmni"));
        let _ = writeln!(out, "max seg size{unit} = {}", sz(num("shmmax")));
        let _ = writeln!(out, "max total shared memory{unit} = {}", sz(total));
        let _ = writeln!(out, "min seg size{unit} = 1");
    }
    if all || a.sem {
        let sem = read_limit("sem");
        let f: Vec<&str> = sem.split_whitespace().collect();
        let g = |i: usize| f.get(i).copied().unwrap_or("?");
        let _ = writeln!(out, "\n------ Semaphore Limits --------");
        let _ = writeln!(out, "max number of arrays = {}", g(3));
        let _ = writeln!(out, "max semaphores per array = {}", g(0));
        let _ = writeln!(out, "max semaphores system wide = {}", g(1));
        let _ = writeln!(out, "max ops per semop call = {}", g(2));
        let _ = writeln!(out, "semaphore max value = 32767");
    }
}

/// What `ipcs -u` shows: how much of each kind is in use, from the kernel's tables.
fn summary(out: &mut String, all: bool, a: &StatusArgs) -> Result<(), StatusError> {
    let parts = Parts {
        shm: all || a.shm,
        sem: all || a.sem,
        msg: all || a.queues,
        channels: false,
    };
    let s = snapshot(parts)?;
    if let Some(msg) = &s.msg {
        let used: u64 = msg.iter().map(|r| r.used_bytes).sum();
        let headers: u64 = msg.iter().map(|r| r.messages).sum();
        let _ = writeln!(out, "------ Messages Status --------");
        let _ = writeln!(out, "allocated queues = {}", msg.len());
        let _ = writeln!(out, "used headers = {headers}");
        let _ = writeln!(out, "used space = {}\n", size_bytes(used, a.human));
    }
    if let Some(shm) = &s.shm {
        let page = crate::os::page_size().max(1);
        let pages = |n: u64| n.div_ceil(page);
        let _ = writeln!(out, "------ Shared Memory Status --------");
        let _ = writeln!(out, "segments allocated {}", shm.len());
        let _ = writeln!(
            out,
            "pages allocated {}",
            shm.iter().map(|r| pages(r.bytes)).sum::<u64>()
        );
        let _ = writeln!(
            out,
            "pages resident  {}",
            shm.iter().map(|r| r.rss / page).sum::<u64>()
        );
        let _ = writeln!(
            out,
            "pages swapped   {}\n",
            shm.iter().map(|r| r.swap / page).sum::<u64>()
        );
    }
    if let Some(sem) = &s.sem {
        let _ = writeln!(out, "------ Semaphore Status --------");
        let _ = writeln!(out, "used arrays = {}", sem.len());
        let _ = writeln!(
            out,
            "allocated semaphores = {}\n",
            sem.iter().map(|r| u64::from(r.nsems)).sum::<u64>()
        );
    }
    Ok(())
}

fn size_bytes(n: u64, human_units: bool) -> String {
    match human_units {
        true => human(n),
        false => format!("{n} bytes"),
    }
}

/// What `ipcs -i ID` shows: one object in detail (a semaphore set with each semaphore's
/// value, waiters and last pid). Searches the kinds asked for (all without -m/-s/-q).
fn detail(out: &mut String, id: i32, all: bool, a: &StatusArgs) -> Result<(), StatusError> {
    let parts = Parts {
        shm: all || a.shm,
        sem: all || a.sem,
        msg: all || a.queues,
        channels: false,
    };
    let s = snapshot(parts)?;
    let mut found = false;
    let ids = |v: u32, k: u32| format!("uid={v}\t gid={k}");
    for r in s.shm.iter().flatten().filter(|r| r.object.id == id) {
        found = true;
        shm_detail(out, r, a.human, &ids);
    }
    for r in s.sem.iter().flatten().filter(|r| r.object.id == id) {
        found = true;
        sem_detail(out, r, &ids)?;
    }
    for r in s.msg.iter().flatten().filter(|r| r.object.id == id) {
        found = true;
        msg_detail(out, r, &ids);
    }
    match found {
        true => Ok(()),
        false => Err(StatusError::NoSuchId(id)),
    }
}

/// The owner and creator line of `ipcs -i`: `uid=… gid=…` (as `ids` writes them), cuid, cgid.
fn owners(o: &Object, ids: &dyn Fn(u32, u32) -> String) -> String {
    format!("{}\t cuid={}\t cgid={}", ids(o.uid, o.gid), o.cuid, o.cgid)
}

/// One segment as `ipcs -m -i` shows it, and what it is to shmxfer.
fn shm_detail(out: &mut String, r: &ShmRow, human: bool, ids: &dyn Fn(u32, u32) -> String) {
    let id = r.object.id;
    let _ = writeln!(out, "\nShared memory Segment shmid={id}");
    let _ = writeln!(out, "{}", owners(&r.object, ids));
    let _ = writeln!(
        out,
        "mode={}\t bytes={}\t nattch={}\t status={}",
        r.object.perms,
        size(r.bytes, human),
        r.nattch,
        r.status.join(",")
    );
    let _ = writeln!(out, "cpid={}\t lpid={}", r.cpid, r.lpid);
    let _ = writeln!(
        out,
        "att_time={}\ndet_time={}\nchange_time={}",
        when(r.atime),
        when(r.dtime),
        when(r.ctime)
    );
    let _ = writeln!(out, "what={}\n", mark(r.role));
}

/// One message queue as `ipcs -q -i` shows it.
fn msg_detail(out: &mut String, r: &MsgRow, ids: &dyn Fn(u32, u32) -> String) {
    let _ = writeln!(out, "\nMessage Queue msqid={}", r.object.id);
    let _ = writeln!(out, "{}\t mode={}", owners(&r.object, ids), r.object.perms);
    let _ = writeln!(
        out,
        "cbytes={}\t qnum={}\t lspid={}\t lrpid={}",
        r.used_bytes, r.messages, r.lspid, r.lrpid
    );
    let _ = writeln!(
        out,
        "send_time={}\nrcv_time={}\nchange_time={}\n",
        when(r.stime),
        when(r.rtime),
        when(r.ctime)
    );
}

fn sem_detail(
    out: &mut String,
    r: &SemRow,
    ids: &dyn Fn(u32, u32) -> String,
) -> Result<(), StatusError> {
    let values = semaphores(r.object.id, r.nsems).map_err(|e| StatusError::Read(r.object.id, e))?;
    let _ = writeln!(out, "\nSemaphore Array semid={}", r.object.id);
    let _ = writeln!(out, "{}", owners(&r.object, ids));
    let _ = writeln!(
        out,
        "mode={}\t nsems={}\t what={}",
        r.object.perms,
        r.nsems,
        mark(r.role)
    );
    let _ = writeln!(out, "otime={}\nctime={}", when(r.otime), when(r.ctime));
    let _ = writeln!(
        out,
        "{:<10} {:<10} {:<10} {:<10} pid",
        "semnum", "value", "ncount", "zcount"
    );
    for v in values {
        let _ = writeln!(
            out,
            "{:<10} {:<10} {:<10} {:<10} {}",
            v.num, v.value, v.ncount, v.zcount, v.pid
        );
    }
    let _ = writeln!(out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_human_unless_asked_for_bytes() {
        assert_eq!(human(10), "10");
        assert_eq!(human(8192), "8.0K");
        assert_eq!(human(5_000_000), "4.8M");
        assert_eq!(size(5_000_000, false), "5000000");
        assert_eq!(size(5_000_000, true), "4.8M");
    }

    #[test]
    fn times_render_as_utc_dates() {
        assert_eq!(when(0), "not set");
        assert_eq!(when(1_700_000_000), "2023-11-14 22:13:20");
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Show only the objects and the channel at this key (decimal or 0x hex) or of this name
    #[arg(long, value_hint = clap::ValueHint::Other, value_parser = crate::mechanisms::parse::parse_address, value_name = "KEY|NAME", allow_hyphen_values = true)]
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
    /// Add the attach, detach, operation and change times (combines with -p and -c)
    #[arg(short = 't', long)]
    pub time: bool,
    /// Add the creator and last-operation pids (combines with -t and -c)
    #[arg(short = 'p', long)]
    pub pid: bool,
    /// Add the creators and owners: users and groups (combines with -t and -p)
    #[arg(short = 'c', long)]
    pub creator: bool,
    /// The kernel's IPC limits
    #[arg(short = 'l', long, conflicts_with_all = ["summary", "id"])]
    pub limits: bool,
    /// A summary of what is in use, as `ipcs -u`
    #[arg(short = 'u', long, conflicts_with = "id")]
    pub summary: bool,
    /// Details of the object with this id (a semaphore set with each semaphore's value,
    /// waiters and last pid); -m, -s or -q narrow the search
    #[arg(short = 'i', long, value_hint = clap::ValueHint::Other, value_name = "ID")]
    pub id: Option<i32>,
    /// Sizes in bytes (the default, as ipcs)
    #[arg(short = 'b', long, conflicts_with = "human")]
    pub bytes: bool,
    /// Sizes in human units (K, M, G: powers of 1024)
    #[arg(long)]
    pub human: bool,
    /// One JSON object for scripts, every field of the kinds asked for (schema:
    /// docs/status-json.md)
    #[arg(long, conflicts_with_all = ["time", "pid", "creator", "limits", "summary", "id", "human"])]
    pub json: bool,
}
