//! The host's System V IPC objects as typed values: what `shmxfer status` shows, for programs.
//!
//! Read from the kernel's own tables (`/proc/sysvipc`, as util-linux's `ipcs` does), with
//! shmxfer's channels and the original system's objects marked by shape, and each channel's
//! state read from its control segment.
//!
//! ```
//! let snap = shmxfer::inventory::snapshot(shmxfer::inventory::Parts::ALL)?;
//! for c in snap.channels.unwrap_or_default() {
//!     println!("channel 0x{:08x}: {}", c.key, c.state);
//! }
//! # Ok::<(), shmxfer::inventory::InventoryError>(())
//! ```

use serde::Serialize;

use super::frame::{self, FrameError, State, View};
use super::legacy;
use crate::sysv::{self, Key, Kind, TableRow};

#[derive(Debug, thiserror::Error)]
/// Why the host's IPC objects could not be listed.
#[non_exhaustive]
pub enum InventoryError {
    #[error(
        "cannot read the kernel's IPC tables ({path}): {}; is /proc mounted?",
        crate::mechanisms::text::io_text(source)
    )]
    /// A kernel table could not be read.
    Proc {
        /// The table's path.
        path: &'static str,
        /// Why.
        source: std::io::Error,
    },
}

/// What every IPC object has: its key and id, and who owns and who made it.
#[derive(Debug, Clone, Serialize)]
pub struct Object {
    /// The key (0 for IPC_PRIVATE).
    pub key: u32,
    /// The kernel's id, as `ipcs` shows it.
    pub id: i32,
    /// The owner's user name (through NSS), or the uid where there is none.
    pub owner: String,
    /// The owner's uid.
    pub uid: u32,
    /// The owner's gid.
    pub gid: u32,
    /// The creator's uid (the owner may have been changed since; this cannot be).
    pub cuid: u32,
    /// The creator's gid.
    pub cgid: u32,
    /// The permission bits, in octal.
    pub perms: String,
}

#[derive(Debug, Serialize)]
/// A shared memory segment, as `ipcs -m` lists it, with what it is to shmxfer.
pub struct ShmRow {
    /// Its key, id, owner and creator.
    #[serde(flatten)]
    pub object: Object,
    /// The size.
    pub bytes: u64,
    /// Bytes of it resident in memory.
    pub rss: u64,
    /// Bytes of it swapped out.
    pub swap: u64,
    /// How many attachments it has.
    pub nattch: u64,
    /// The creator's pid, as the kernel translates it into our PID namespace.
    pub cpid: i32,
    /// The pid of the last attach or detach.
    pub lpid: i32,
    /// The last attach (Unix seconds; 0: never).
    pub atime: i64,
    /// The last detach (Unix seconds; 0: never).
    pub dtime: i64,
    /// When it was created or last changed (Unix seconds; 0: never).
    pub ctime: i64,
    /// "dest" once marked for removal, "locked" with SHM_LOCK.
    pub status: Vec<&'static str>,
    /// What the segment is to shmxfer or to the original system; `None` for others'.
    pub role: Option<Role>,
}

#[derive(Debug, Serialize)]
/// A semaphore set, as `ipcs -s` lists it, with what it is to shmxfer.
pub struct SemRow {
    /// Its key, id, owner and creator.
    #[serde(flatten)]
    pub object: Object,
    /// How many semaphores it has.
    pub nsems: u32,
    /// The last `semop` (Unix seconds; 0: never).
    pub otime: i64,
    /// When it was created or last changed (Unix seconds; 0: never).
    pub ctime: i64,
    /// What the set is to shmxfer or to the original system; `None` for others'.
    pub role: Option<Role>,
}

#[derive(Debug, Serialize)]
/// A message queue, as `ipcs -q` lists it (shmxfer uses none).
pub struct MsgRow {
    /// Its key, id, owner and creator.
    #[serde(flatten)]
    pub object: Object,
    /// Bytes queued.
    pub used_bytes: u64,
    /// Messages queued.
    pub messages: u64,
    /// The pid of the last send.
    pub lspid: i32,
    /// The pid of the last receive.
    pub lrpid: i32,
    /// The last send (Unix seconds; 0: never).
    pub stime: i64,
    /// The last receive (Unix seconds; 0: never).
    pub rtime: i64,
    /// When it was created or last changed (Unix seconds; 0: never).
    pub ctime: i64,
}

#[derive(Debug, Serialize)]
/// The file a busy channel is receiving.
pub struct Transfer {
    /// The sender's name for the file (lossy UTF-8; escape it before printing).
    pub name: String,
    /// Bytes the receiver has taken so far (read live: may pass `total` for a moment).
    pub bytes_done: u64,
    /// The announced size; `None` for a stream.
    pub total: Option<u64>,
    /// The sender's pid, as it wrote it.
    pub sender_pid: i32,
    /// The sender's uid, as the kernel records it (its segment's creator).
    pub sender_uid: u32,
    /// That user's name (the uid where it has none).
    pub sender_user: String,
}

/// What an IPC object is to shmxfer or to the original system, told by its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A channel's control segment (at the channel's key K).
    Control,
    /// A channel's rendezvous segment (at K+1).
    Rendezvous,
    /// A channel's semaphore set (at K).
    Semaphores,
    /// One of the original system's segments.
    Legacy(legacy::Part),
    /// The semaphore beside one of the original system's segments.
    LegacySem(legacy::Part),
}

impl Role {
    /// The role's name in `status --json` (docs/status-json.md).
    pub fn name(self) -> &'static str {
        use legacy::Part;
        match self {
            Role::Control => "control",
            Role::Rendezvous => "rendezvous",
            Role::Semaphores => "semaphores",
            Role::Legacy(Part::Content) => "legacy-content",
            Role::Legacy(Part::Size) => "legacy-size",
            Role::LegacySem(Part::Content) => "legacy-content-sem",
            Role::LegacySem(Part::Size) => "legacy-size-sem",
        }
    }
}

impl Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
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
    /// The receiver's process is stopped (SIGSTOP, Ctrl-Z): senders wait until it continues.
    Stopped,
    /// Another user's channel that we may not look into (mode 0600): what the kernel's tables
    /// say of it is all we know.
    Unknown,
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
            ChannelState::Stopped => "stopped",
            ChannelState::Unknown => "unknown",
            ChannelState::Stale => "stale",
        };
        f.write_str(s)
    }
}

#[derive(Debug, Serialize)]
/// A shmxfer channel and its receiver's state.
pub struct ChannelRow {
    /// The channel's key.
    pub key: u32,
    /// The name the receiver serves (`--key NAME`); `None` for a channel by number.
    pub name: Option<String>,
    /// The receiver's user (the name through NSS, or the uid): whose files these are.
    pub owner: String,
    /// The receiver's uid (the creator of the channel's objects).
    pub uid: u32,
    /// Its state.
    pub state: ChannelState,
    /// The receiver's pid (the control segment's creator, as the kernel translates it).
    pub receiver_pid: i32,
    /// The channel's permission bits, in octal.
    pub mode: String,
    /// Bytes per content slot.
    pub slot_size: u64,
    /// Slots in the ring.
    pub slot_count: u32,
    /// Whether the receiver verifies every file with MD5.
    pub require_md5: bool,
    /// The control segment's id.
    pub control_id: i32,
    /// The rendezvous segment's id.
    pub rendezvous_id: i32,
    /// The semaphore set's id.
    pub sem_id: i32,
    /// The file being received, when busy.
    pub transfer: Option<Transfer>,
}

#[derive(Debug, Serialize)]
/// The host's IPC objects at one moment; a part not asked for is `None`.
pub struct Snapshot {
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Shared memory segments, when asked for.
    pub shm: Option<Vec<ShmRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Semaphore sets, when asked for.
    pub sem: Option<Vec<SemRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Message queues, when asked for.
    pub msg: Option<Vec<MsgRow>>,
    /// Only in the full view: reading a channel's state means attaching its control segment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<ChannelRow>>,
    /// Only in the full view: the original system's channels (a consumer's two segments and
    /// sets), with their consumer and its state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy: Option<Vec<LegacyRow>>,
    /// The original system's channels' (content key, size key), whatever the parts: how
    /// `status --key` finds the other half, from the same reading of the tables.
    #[serde(skip)]
    legacy_keys: Vec<(Key, Option<Key>)>,
}

impl Snapshot {
    /// The other half of the original system's channel that has a segment at `key` (its size
    /// key for a content key, and the reverse).
    pub fn legacy_partner(&self, key: Key) -> Option<Key> {
        self.legacy_keys
            .iter()
            .find_map(|&(content, size)| match key {
                k if k == content => size,
                k if Some(k) == size => Some(content),
                _ => None,
            })
    }
}

#[derive(Debug, Serialize)]
/// The original system's objects as one channel: the content and size halves a consumer
/// made (paired by their creator), who serves them and in what state.
pub struct LegacyRow {
    /// The content segment's key (42 by default).
    pub content_key: u32,
    /// The size segment's key (44 by default), if the consumer's size segment is there.
    pub size_key: Option<u32>,
    /// The consumer's user.
    pub owner: String,
    /// The consumer's uid.
    pub uid: u32,
    /// `idle` (waiting for a producer), `busy` (a producer holds the size semaphore),
    /// `stopped` (the consumer's process is stopped), `stale` (the consumer is gone),
    /// `unknown` (alive, but its semaphores are not ours to read).
    pub state: ChannelState,
    /// The consumer's pid: the segments' creator, as the kernel translates it.
    pub receiver_pid: i32,
}

/// The original system's channels among the kernel's rows: each content segment of the
/// original's shape beside a one-semaphore set, with the size segment its creator made.
fn legacy_halves<'a>(
    shm: &'a [TableRow],
    roles: &Roles,
) -> Vec<(&'a TableRow, Option<&'a TableRow>)> {
    let role = |r: &TableRow| roles.shm(r.key(), r.num("size") as u64);
    let mut v: Vec<_> = shm
        .iter()
        .filter(|r| role(r) == Some(Role::Legacy(legacy::Part::Content)))
        .map(|c| {
            let size = shm.iter().find(|s| {
                role(s) == Some(Role::Legacy(legacy::Part::Size))
                    && s.num("cpid") == c.num("cpid")
                    && s.num("uid") == c.num("uid")
            });
            (c, size)
        })
        .collect();
    v.sort_by_key(|(c, _)| c.key().0);
    v
}

/// Each of the original system's channels with its consumer and the consumer's state.
fn legacy_rows(halves: &[(&TableRow, Option<&TableRow>)]) -> Vec<LegacyRow> {
    halves
        .iter()
        .map(|&(c, size)| {
            let (cpid, uid) = (c.num("cpid") as i32, c.num("uid") as u32);
            LegacyRow {
                content_key: c.key().0,
                size_key: size.map(|s| s.key().0),
                owner: crate::os::user_name(uid),
                uid,
                state: legacy_state(cpid, c.num("nattch"), size.map(TableRow::key)),
                receiver_pid: cpid,
            }
        })
        .collect()
}

/// A consumer stays attached for life: detached or gone is stale; then its process state,
/// then its size semaphore (taken while a producer hands a file over).
fn legacy_state(cpid: i32, nattch: i64, size_key: Option<Key>) -> ChannelState {
    if nattch == 0 || !crate::os::process_alive(cpid) {
        return ChannelState::Stale;
    }
    if crate::os::process_stopped(cpid) {
        return ChannelState::Stopped;
    }
    match size_key.map(|k| sysv::SemSet::open(k).and_then(|s| s.value(0))) {
        Some(Ok(0)) => ChannelState::Busy,
        Some(Ok(_)) => ChannelState::Idle,
        _ => ChannelState::Unknown,
    }
}

/// Which parts of the host's IPC a snapshot covers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Parts {
    /// Shared memory segments.
    pub shm: bool,
    /// Semaphore sets.
    pub sem: bool,
    /// Message queues.
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

fn table(kind: Kind) -> Result<Vec<TableRow>, InventoryError> {
    sysv::read_table(kind).map_err(|source| InventoryError::Proc {
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
pub fn snapshot(parts: Parts) -> Result<Snapshot, InventoryError> {
    let shm_rows = table(Kind::Shm)?;
    let sem_rows = table(Kind::Sem)?;
    let roles = Roles::new(&shm_rows, &sem_rows);
    let halves = legacy_halves(&shm_rows, &roles);
    let channels = parts
        .channels
        .then(|| channels(&shm_rows, &sem_rows, &roles));
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
        legacy: parts.channels.then(|| legacy_rows(&halves)),
        legacy_keys: halves
            .iter()
            .map(|(c, s)| (c.key(), s.map(TableRow::key)))
            .collect(),
        channels,
    })
}

/// One semaphore of a set, as `ipcs -s -i` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SemValue {
    /// Its number in the set.
    pub num: u16,
    /// Its value.
    pub value: i32,
    /// Processes blocked taking it.
    pub ncount: i32,
    /// Processes blocked waiting for it to be 0.
    pub zcount: i32,
    /// The last process to operate on it (as our PID namespace sees it; 0 outside it).
    pub pid: i32,
}

/// The semaphores of set `id` (`nsems` of them), read with `semctl`, which changes nothing.
///
/// # Errors
/// The set is gone, or we may not read it.
pub fn semaphores(id: i32, nsems: u32) -> Result<Vec<SemValue>, sysv::SysvError> {
    let set = sysv::SemSet::from_id(id);
    (0..nsems.min(u32::from(u16::MAX)) as u16)
        .map(|num| {
            Ok(SemValue {
                num,
                value: set.value(num)?,
                ncount: set.waiting(num)?,
                zcount: set.zero_waiting(num)?,
                pid: set.last_pid(num)?,
            })
        })
        .collect()
}

/// Every segment of a control segment's size that decodes as a channel. Attached read-only
/// and decoded with every check: a foreign or corrupt segment is just not a channel.
fn channels(shm: &[TableRow], sem: &[TableRow], roles: &Roles) -> Vec<ChannelRow> {
    let mut v: Vec<ChannelRow> = shm
        .iter()
        .filter(|r| r.num("size") as usize == frame::CONTROL_LEN)
        .filter_map(|r| {
            let (key, id) = (r.key(), r.num("shmid") as i32);
            match View::open(id) {
                Ok(v) => channel_in(key, id, &v),
                Err(FrameError::Sys(e)) if e.is_permission() => {
                    unreadable_channel(r, shm, sem, roles)
                }
                Err(_) => None,
            }
        })
        .collect();
    // By key, as people look them up (the kernel's table is in slot order).
    v.sort_by_key(|c| c.key);
    v
}

/// A channel we may not look into (another user's, mode 0600), listed from the kernel's
/// tables alone, as `ipcs` lists it: its key, owner, mode, objects and receiver pid (the
/// control segment's creator), in state `unknown`, or `stale` when the kernel's table says
/// as much: nobody attached and the creator gone (what `clean --stale` goes by too).
fn unreadable_channel(
    r: &TableRow,
    shm: &[TableRow],
    sem: &[TableRow],
    roles: &Roles,
) -> Option<ChannelRow> {
    let key = r.key();
    if !roles.channel_at(key) {
        return None;
    }
    let id_at = |rows: &[TableRow], k: Key, col: &str| {
        rows.iter()
            .find(|x| x.key() == k)
            .map_or(-1, |x| x.num(col) as i32)
    };
    let uid = r.num("uid") as u32;
    let cpid = r.num("cpid") as i32;
    let state = match r.num("nattch") == 0 && cpid > 0 && !crate::os::process_alive(cpid) {
        true => ChannelState::Stale,
        false => ChannelState::Unknown,
    };
    Some(ChannelRow {
        key: key.0,
        name: None,
        owner: crate::os::user_name(uid),
        uid,
        state,
        receiver_pid: r.num("cpid") as i32,
        mode: format!(
            "{:o}",
            i64::from_str_radix(r.get("perms")?, 8).ok()? & 0o777
        ),
        slot_size: 0,
        slot_count: 0,
        require_md5: false,
        control_id: r.num("shmid") as i32,
        rendezvous_id: key.offset(1).map_or(-1, |k| id_at(shm, k, "shmid")),
        sem_id: id_at(sem, key, "semid"),
        transfer: None,
    })
}

/// What each object is to shmxfer (a channel's part) or to the original system, told by shape
/// from the tables alone: a channel is a control-sized segment at K with a set of 7
/// semaphores at K and a segment at K+1.
struct Roles {
    /// Segment sizes by key, and semaphore counts by key: indexed once, so that telling every
    /// object's role is linear in the number of objects.
    shm: std::collections::HashMap<u32, u64>,
    sem: std::collections::HashMap<u32, u32>,
}

impl Roles {
    fn new(shm: &[TableRow], sem: &[TableRow]) -> Roles {
        // Key 0 (IPC_PRIVATE) is any number of objects, never a channel's or the original's.
        let keyed = |r: &&TableRow| r.key().0 != 0;
        Roles {
            shm: shm
                .iter()
                .filter(keyed)
                .map(|r| (r.key().0, r.num("size") as u64))
                .collect(),
            sem: sem
                .iter()
                .filter(keyed)
                .map(|r| (r.key().0, r.num("nsems") as u32))
                .collect(),
        }
    }
    fn segment_at(&self, key: Key) -> Option<u64> {
        self.shm.get(&key.0).copied()
    }
    fn nsems_at(&self, key: Key) -> Option<u32> {
        self.sem.get(&key.0).copied()
    }
    /// Whether K is a channel's key by shape.
    fn channel_at(&self, key: Key) -> bool {
        self.segment_at(key) == Some(frame::CONTROL_LEN as u64)
            && self.nsems_at(key) == Some(u32::from(frame::sem::COUNT))
            && key.offset(1).and_then(|k| self.segment_at(k)).is_some()
    }
    fn shm(&self, key: Key, size: u64) -> Option<Role> {
        if self.channel_at(key) {
            Some(Role::Control)
        } else if key.0 > 1 && self.channel_at(Key(key.0 - 1)) {
            Some(Role::Rendezvous)
        } else if self.nsems_at(key) == Some(1) {
            legacy::Part::of_size(size).map(Role::Legacy)
        } else {
            None
        }
    }
    fn sem(&self, key: Key, nsems: u32) -> Option<Role> {
        if self.channel_at(key) {
            return Some(Role::Semaphores);
        }
        let part = self.segment_at(key).and_then(legacy::Part::of_size);
        (nsems == 1).then_some(part).flatten().map(Role::LegacySem)
    }
}

/// The columns every kind's table has; `id` names its id column.
fn object(r: &TableRow, id: &str) -> Object {
    let uid = r.num("uid") as u32;
    Object {
        key: r.key().0,
        id: r.num(id) as i32,
        owner: crate::os::user_name(uid),
        uid,
        gid: r.num("gid") as u32,
        cuid: r.num("cuid") as u32,
        cgid: r.num("cgid") as u32,
        perms: format!("{:o}", perms(r) & 0o777),
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
    ShmRow {
        object: object(r, "shmid"),
        bytes: r.num("size") as u64,
        rss: r.num("rss") as u64,
        swap: r.num("swap") as u64,
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
    let nsems = r.num("nsems") as u32;
    SemRow {
        object: object(r, "semid"),
        nsems,
        otime: r.num("otime"),
        ctime: r.num("ctime"),
        role: roles.sem(r.key(), nsems),
    }
}

fn msg_row(r: &TableRow) -> MsgRow {
    MsgRow {
        object: object(r, "msqid"),
        used_bytes: r.num("cbytes") as u64,
        messages: r.num("qnum") as u64,
        lspid: r.num("lspid") as i32,
        lrpid: r.num("lrpid") as i32,
        stime: r.num("stime"),
        rtime: r.num("rtime"),
        ctime: r.num("ctime"),
    }
}

/// The channel whose control segment `id` at `key` is viewed by `v`, if its parts check out
/// (as a sender checks them: a forged or corrupt header is not listed as a channel, dead or
/// alive). One read-only attachment per channel.
fn channel_in(key: Key, id: i32, v: &View) -> Option<ChannelRow> {
    match v.judge(key) {
        frame::Probe::Channel { alive, owner, .. } => Some(channel_row(key, id, v, alive, owner)),
        _ => None,
    }
}

fn channel_row(key: Key, control_id: i32, view: &View, alive: bool, uid: u32) -> ChannelRow {
    let info = &view.info;
    let raw_state = view.state();
    let state = match (alive, raw_state) {
        (false, _) => ChannelState::Stale,
        (true, _) if crate::os::process_stopped(info.receiver_pid) => ChannelState::Stopped,
        (true, s) if s == State::Busy as u32 => ChannelState::Busy,
        (true, s) if s == State::Idle as u32 => ChannelState::Idle,
        (true, s) if s == State::Stopping as u32 => ChannelState::Stopping,
        (true, _) => ChannelState::Starting,
    };
    let who = view.sender();
    let transfer = (state == ChannelState::Busy)
        .then(|| view.request().ok())
        .flatten()
        .filter(|r| r.op == frame::Op::File)
        .map(|r| Transfer {
            name: String::from_utf8_lossy(&r.name).into_owned(),
            bytes_done: view.progress(),
            total: r.size,
            sender_pid: r.sender_pid,
            sender_uid: who.map_or(u32::MAX, |(uid, _)| uid),
            sender_user: who.map_or("?".into(), |(uid, _)| crate::os::user_name(uid)),
        });
    ChannelRow {
        key: key.0,
        name: (!info.name.is_empty()).then(|| String::from_utf8_lossy(&info.name).into_owned()),
        owner: crate::os::user_name(uid),
        uid,
        state,
        receiver_pid: info.receiver_pid,
        mode: format!("{:o}", info.mode),
        slot_size: info.slot_size as u64,
        slot_count: info.slot_count,
        require_md5: info.require_md5,
        control_id,
        rendezvous_id: info.rendezvous_shmid,
        sem_id: info.semid,
        transfer,
    }
}
