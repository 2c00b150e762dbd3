//! The native channel: what is at a key ([`probe`]), and the handshake over a channel's three
//! objects ([`Channel`], one method per step). The bytes themselves are [`crate::mechanisms::wire`]'s;
//! docs/protocol.md is the contract.
//!
//! A channel at KEY is the control segment (KEY), the content segment (KEY+1) and one semaphore
//! set (KEY). Everything read from shared memory is copied out and decoded by `wire` before
//! use: the segment at a key is untrusted until its header says otherwise, and even then every
//! length is checked against what the kernel says the segment's size is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use crate::mechanisms::wire::*;

use crate::mechanisms::runtime;
use crate::sysv::{self, Fixed, Key, Mapping, SemOp, SemSet, Shm, SysvError, WaitError};

/// How long a wait on the peer sleeps before it checks whether the peer is still alive.
pub const LIVENESS_SLICE: Duration = Duration::from_millis(250);

/// How often an idle receiver checks that its segments are still at their keys. Someone may
/// `ipcrm` them; senders then cannot find the channel, and nothing would wake the receiver to
/// say so. One check costs two `shmget`s; every 2 s is far under the one wake-up per 200 ms
/// that idling allows.
pub const PUBLISHED_CHECK: Duration = Duration::from_secs(2);

/// How long a sender's waits go on once a stop was asked for: long enough for a working
/// receiver to answer the files whose last byte is posted, short enough that one SIGINT or
/// SIGTERM ends a send within 2 s whatever the receiver does.
pub const STOP_SETTLE: Duration = Duration::from_secs(1);

/// What a sender's wait saw of its receiver's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// The receiver is stopped (SIGSTOP, Ctrl-Z): nothing moves until it is continued.
    Stopped {
        /// Its pid, as our PID namespace sees it.
        pid: i32,
    },
    /// The receiver was continued after a [`Stall::Stopped`].
    Continued {
        /// Its pid.
        pid: i32,
    },
}

/// Told when a sender's receiver is stopped or continued.
#[derive(Clone)]
pub struct StallHook(pub std::sync::Arc<dyn Fn(Stall) + Send + Sync>);

impl std::fmt::Debug for StallHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StallHook")
    }
}

/// How a sender waits out a stopped receiver: how long at most (`None`: until it is continued,
/// or a stop is asked for), and whom to tell.
#[derive(Debug, Clone, Default)]
pub struct StallWatch {
    /// The longest wait for a stopped receiver.
    pub limit: Option<Duration>,
    /// Told when the receiver is found stopped, and when it is continued.
    pub hook: Option<StallHook>,
}

impl FrameError {
    /// Permission denied on the channel at `key`, naming its owner (by uid) and mode.
    pub fn denied(key: Key, uid: u32, mode: u32) -> FrameError {
        FrameError::PermissionDenied {
            key,
            owner: sysv::user_name(uid),
            mode,
        }
    }
}

#[derive(Debug, thiserror::Error)]
/// Why a channel could not be created, found, or used. Each message names the key and says
/// what to do next.
#[non_exhaustive]
pub enum FrameError {
    #[error("no receiver on key {key}")]
    /// Nothing at the key: no receiver was started there.
    NoReceiver {
        /// The channel's key.
        key: Key,
    },
    #[error("permission denied on key {key}: the channel belongs to {owner} (mode {mode:04o})")]
    /// The channel's objects do not let us in.
    PermissionDenied {
        /// The channel's key.
        key: Key,
        /// Who owns the channel (a user name, or a uid).
        owner: String,
        /// The channel's permission bits.
        mode: u32,
    },
    #[error(
        "key {key} is in use by something that is not a shmxfer channel ({why}); leaving it alone"
    )]
    /// Something that is not a shmxfer channel is at the key: never touched.
    Foreign {
        /// The key.
        key: Key,
        /// What was found there.
        why: String,
    },
    #[error("a receiver (pid {pid}, user {owner}) is already serving key {key}{serves}")]
    /// A live receiver already serves the key.
    InUse {
        /// The key.
        key: Key,
        /// That receiver's pid.
        pid: i32,
        /// Its user.
        owner: String,
        /// What it serves, when a name was asked for (` as "a" (names "a" and "b" share the
        /// key: choose another name)`), else empty.
        serves: String,
    },
    #[error(
        "the receiver on key {key} runs as {owner} (uid {uid}), not as you: what you send would be theirs"
    )]
    /// The receiver runs as another user than the sender expects: files are not handed to a
    /// stranger unless asked.
    OtherOwner {
        /// The key.
        key: Key,
        /// The receiver's user (name, or uid).
        owner: String,
        /// Its uid.
        uid: u32,
    },
    #[error(
        "no receiver serves \"{wanted}\": key {key} serves {serves} (the key is shared: start the receiver with another name)"
    )]
    /// The channel at the key serves another name (or none): two names share a key, or a
    /// receiver serves the key by number.
    OtherName {
        /// The key.
        key: Key,
        /// What the channel serves, as its header says.
        serves: String,
        /// The name asked for.
        wanted: String,
    },
    #[error("the receiver (pid {pid}) on key {key} is still setting its channel up")]
    /// A receiver is still creating the channel at the key.
    Starting {
        /// The key.
        key: Key,
        /// The creating receiver's pid.
        pid: i32,
    },
    #[error("the receiver (pid {pid}) on key {key} is gone")]
    /// The receiver died: its channel is stale.
    ReceiverGone {
        /// The key.
        key: Key,
        /// The dead receiver's pid.
        pid: i32,
    },
    #[error("the channel on key {key} was removed while in use (ipcrm, or the receiver stopped)")]
    /// The channel's objects were removed under us.
    Removed {
        /// The key.
        key: Key,
    },
    #[error("the receiver (pid {pid}) on key {key} has been stopped (SIGSTOP/Ctrl-Z) for {secs}s")]
    /// The receiver stayed stopped (SIGSTOP, Ctrl-Z) longer than the sender would wait.
    ReceiverStopped {
        /// The key.
        key: Key,
        /// The stopped receiver's pid (as our PID namespace sees it).
        pid: i32,
        /// How long we waited for it to continue.
        secs: f64,
    },
    #[error("the sender went away mid-transfer")]
    /// The admitted sender died or left mid-file (the receiver's side).
    SenderGone,
    #[error("timed out after {secs}s waiting for {what} on key {key}")]
    /// A deadline passed.
    TimedOut {
        /// The key.
        key: Key,
        /// What we waited for ("the receiver", "the gate"…).
        what: &'static str,
        /// How long we waited.
        secs: f64,
    },
    #[error("interrupted")]
    /// A stop was asked for (the channel's [`crate::runtime::Cancel`]).
    Interrupted,
    #[error("bad header on key {key}: {source}")]
    /// The control segment's header failed a check.
    Header {
        /// The key.
        key: Key,
        /// Which check.
        source: HeaderError,
    },
    #[error("{0}")]
    /// A SysV call failed.
    Sys(#[from] SysvError),
}

impl FrameError {
    fn from_wait(key: Key, e: WaitError) -> FrameError {
        match e {
            WaitError::Sys(e) if e.is_gone() => FrameError::Removed { key },
            WaitError::Sys(e) => FrameError::Sys(e),
            WaitError::TimedOut => FrameError::TimedOut {
                key,
                what: "the peer",
                secs: 0.0,
            },
            WaitError::Interrupted => FrameError::Interrupted,
        }
    }
}

/// How a receiver lays out a channel it creates.
#[derive(Debug, Clone)]
pub struct Config {
    /// Permissions of the channel's objects; the owner needs read and write.
    pub mode: u32,
    /// Bytes per content slot (4 KiB to 256 MiB).
    pub slot_size: usize,
    /// How many slots the ring has (1 to 256).
    pub slot_count: u32,
    /// Every file is verified with MD5, whatever its sender asks.
    pub require_md5: bool,
    /// Stops the receiver's waits when cancelled: its next event is then
    /// [`FrameError::Interrupted`].
    pub cancel: runtime::Cancel,
}

impl Default for Config {
    /// Mode 0600, 8 slots of 1 MiB, MD5 as each sender asks, a token nobody cancelled.
    fn default() -> Self {
        Config {
            mode: 0o600,
            slot_size: DEFAULT_SLOT,
            slot_count: DEFAULT_SLOTS,
            require_md5: false,
            cancel: runtime::Cancel::default(),
        }
    }
}

/// How long a receiver's handshake wait mid-transfer polls before it sleeps:
/// `SHMXFER_SPIN_US` microseconds, default 0 (never). Same-run A/Bs here went both ways
/// (docs/benchmarks.md, round four), so the default stays the plain sleep.
fn spin_budget() -> Duration {
    static SPIN: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *SPIN.get_or_init(|| {
        let us = std::env::var("SHMXFER_SPIN_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Duration::from_micros(us.min(10_000))
    })
}

/// What is at a key, as seen without trusting it.
#[derive(Debug)]
pub enum Probe {
    /// No control segment at the key.
    Absent,
    /// A segment is there but it is not (or not yet) a channel we understand.
    Foreign {
        /// The segment's id.
        shmid: i32,
        /// Why it is not a channel.
        why: String,
    },
    /// We may not look at it.
    NoPermission {
        /// The segment's id.
        shmid: i32,
        /// Its owner.
        uid: u32,
        /// Its permission bits.
        mode: u32,
    },
    /// A shmxfer channel whose parts are the ones its header names, all made by one user;
    /// `alive` says whether its receiver still lives.
    Channel {
        /// The control segment's id.
        shmid: i32,
        /// Its validated header.
        info: Info,
        /// Whether the receiver lives (from kernel facts: see [`serving`]).
        alive: bool,
        /// The uid that created the channel's objects: the receiver's user.
        owner: u32,
    },
    /// A blank segment whose creator lives: a receiver between `shmget` and writing its
    /// magic (`Channel::create` writes it last). Ask again shortly.
    Starting {
        /// The segment's id.
        shmid: i32,
        /// Its creator, alive.
        pid: i32,
    },
    /// A blank control segment of our size whose creator is dead and that nobody has
    /// attached, beside a content segment the same process created: a receiver that died
    /// setting up. Safe to reclaim.
    Abandoned {
        /// The segment's id.
        shmid: i32,
        /// Its creator, dead.
        pid: i32,
    },
}

/// How long a peer waits for a receiver seen in `Probe::Starting` to finish setting up; it
/// takes milliseconds, so this only bounds a creator that hangs half-way.
pub const STARTUP_GRACE: Duration = Duration::from_secs(2);

/// Looks at the segment at `key` and says what it is, touching nothing.
pub fn probe(key: Key) -> Result<Probe, FrameError> {
    probe_judging(key, Judge::Exact)
}

/// How a probe judges whether a channel's receiver still serves it.
#[derive(Clone, Copy)]
enum Judge {
    /// From the kernel's facts alone ([`serving`]): for `status`, `clean` and a receiver
    /// deciding whether it may take a key over, where a live receiver must never look dead.
    Exact,
    /// A sender about to connect: its liveness mark up and its pid alive is taken as
    /// serving without reading the receiver's map, which costs a one-file `send` about 4%
    /// of its time. Only a forged mark makes this wrong, and then the sender's first wait
    /// makes the exact check after one slice and reports the receiver gone.
    Sender,
}

fn probe_judging(key: Key, judge: Judge) -> Result<Probe, FrameError> {
    let shm = match Shm::open(key) {
        Ok(s) => s,
        Err(e) if e.errno() == Some(libc::ENOENT) => return Ok(Probe::Absent),
        Err(e) if e.is_permission() => return Ok(no_permission(key)),
        Err(e) => return Err(e.into()),
    };
    let stat = match shm.stat() {
        Ok(s) => s,
        Err(e) if e.is_permission() => return Ok(no_permission(key)),
        Err(e) if e.is_gone() => return Ok(Probe::Absent),
        Err(e) => return Err(e.into()),
    };
    if stat.size < INFO_LEN {
        return Ok(Probe::Foreign {
            shmid: shm.id(),
            why: HeaderError::TooSmall { size: stat.size }.to_string(),
        });
    }
    let map = match shm.attach(false) {
        Ok(m) => m,
        Err(e) if e.is_permission() => {
            return Ok(Probe::NoPermission {
                shmid: shm.id(),
                uid: stat.perm.uid,
                mode: stat.perm.mode,
            });
        }
        Err(e) if e.is_gone() => return Ok(Probe::Absent),
        Err(e) => return Err(e.into()),
    };
    let size = map.len();
    // The header alone, read from a segment of any size: another version's control segment
    // may be smaller than ours, and its version is what to report.
    let mut head = [0u8; INFO_LEN];
    if read_head(&map, &mut head).is_err() {
        return Ok(Probe::Foreign {
            shmid: shm.id(),
            why: HeaderError::TooSmall { size }.to_string(),
        });
    }
    let blank = head[..8] == [0; 8] && size >= CONTROL_LEN;
    match decode_info(&head, size) {
        Err(_) if blank && sysv::process_alive(stat.cpid) => Ok(Probe::Starting {
            shmid: shm.id(),
            pid: stat.cpid,
        }),
        // `stat` was taken before our own attachment.
        Err(_) if blank && stat.nattch == 0 && made_by_a_receiver(key, &stat) => {
            Ok(Probe::Abandoned {
                shmid: shm.id(),
                pid: stat.cpid,
            })
        }
        Ok(info) => Ok(channel(key, shm.id(), &stat, info, judge)),
        Err(e) => Ok(Probe::Foreign {
            shmid: shm.id(),
            why: e.to_string(),
        }),
    }
}

/// Whether a blank control-sized segment at `key` is a receiver's first object: a blank
/// segment alone looks like anybody's (`ipcmk -M`), but a receiver creates the content
/// segment at KEY+1 right after it, so the same creator pid there tells. (A receiver killed
/// between the two `shmget`s leaves a segment only `ipcrm` can tell from a foreign one.)
fn made_by_a_receiver(key: Key, control: &sysv::ShmStat) -> bool {
    control.size == CONTROL_LEN
        && key
            .offset(1)
            .and_then(|k| Shm::open(k).ok())
            .and_then(|s| s.stat().ok())
            .is_some_and(|c| c.cpid == control.cpid && c.perm.cuid == control.perm.cuid)
}

fn no_permission(key: Key) -> Probe {
    let row = sysv::read_table(sysv::Kind::Shm)
        .ok()
        .and_then(|rows| rows.into_iter().find(|r| r.key() == key));
    match row {
        Some(r) => Probe::NoPermission {
            shmid: r.num("shmid") as i32,
            uid: r.num("uid") as u32,
            mode: u32::from_str_radix(r.get("perms").unwrap_or("0"), 8).unwrap_or(0) & 0o777,
        },
        None => Probe::NoPermission {
            shmid: -1,
            uid: u32::MAX,
            mode: 0,
        },
    }
}

/// What a decoded header at `key` is: a channel if the parts it names are the ones at the
/// keys, made by the control segment's creator; anything else is foreign or corrupt, never a
/// dead channel (a dead channel's parts are removable, so a forged header must not make one).
fn channel(key: Key, shmid: i32, stat: &sysv::ShmStat, mut info: Info, judge: Judge) -> Probe {
    // The receiver's pid as the kernel gives it to us (the control segment's creator,
    // translated into our PID namespace), not the one it wrote about itself, which is its own
    // namespace's view (pid 1 in a container).
    info.receiver_pid = stat.cpid;
    if let Err(why) = check_parts(key, stat, &info) {
        return Probe::Foreign { shmid, why };
    }
    let sems = SemSet::from_id(info.semid);
    let marked = || sems.value(sem::RECEIVER).is_ok_and(|v| v > 0);
    let alive = match judge {
        Judge::Sender if marked() && sysv::process_alive(stat.cpid) => true,
        _ => serving(shmid, stat, &sems),
    };
    Probe::Channel {
        shmid,
        info,
        alive,
        owner: stat.perm.cuid,
    }
}

/// Checks that the semaphore set at KEY and the segment at KEY+1 are the ones the header
/// names, and that the control segment's creator made them too.
fn check_parts(key: Key, control: &sysv::ShmStat, info: &Info) -> Result<(), String> {
    let sems = SemSet::open(key).map_err(|e| format!("no semaphore set at the key ({e})"))?;
    if sems.id() != info.semid {
        return Err(format!(
            "its header names semaphore set {} but the set at the key is {}",
            info.semid,
            sems.id()
        ));
    }
    let content = key
        .offset(1)
        .and_then(|k| Shm::open(k).ok())
        .ok_or("no content segment at key+1")?;
    if content.id() != info.content_shmid {
        return Err(format!(
            "its header names content segment {} but the one at key+1 is {}",
            info.content_shmid,
            content.id()
        ));
    }
    let sem_stat = sems.stat();
    if let Ok(s) = &sem_stat
        && s.nsems != u32::from(sem::COUNT)
    {
        return Err(format!(
            "its semaphore set has {} semaphores, not {}",
            s.nsems,
            sem::COUNT
        ));
    }
    let sem_creator = sem_stat.map(|s| s.perm.cuid);
    let content_creator = content.stat().map(|s| s.perm.cuid);
    match (sem_creator, content_creator) {
        (Ok(a), Ok(b)) if a == control.perm.cuid && b == control.perm.cuid => Ok(()),
        (Ok(_), Ok(_)) => Err("its parts were made by different users".into()),
        (Err(e), _) | (_, Err(e)) => Err(format!("its parts cannot be checked ({e})")),
    }
}

/// Whether the receiver that created the control segment `shmid` still serves it, from facts
/// only the kernel keeps: its creator lives and has it attached (a receiver stays attached
/// for life). Semaphore values and the header are not trusted here: anyone allowed to write
/// the channel can set them, and a live receiver must never look dead (it would be removed
/// as stale). Only where the creator's map is closed to us (another user's process, without
/// privilege) or its pid is outside our PID namespace do we fall back to its liveness
/// semaphore, which the kernel zeroes when the receiver dies.
pub fn serving(shmid: i32, stat: &sysv::ShmStat, sems: &SemSet) -> bool {
    match sysv::attached(stat.cpid, shmid) {
        Some(attached) => attached,
        None => {
            let mark = match sems.value(sem::RECEIVER) {
                Ok(v) => v > 0,
                Err(e) => !e.is_gone(),
            };
            mark && (stat.cpid <= 0 || sysv::process_alive(stat.cpid))
        }
    }
}

/// One object `remove_channel` removed (or, with `dry_run`, would remove), or why it could not.
#[derive(Debug)]
pub struct Removal {
    /// The object, as `clean` names it ("control segment 0x… (shmid 12)").
    pub what: String,
    /// Removed, or why not.
    pub result: Result<(), SysvError>,
}

/// Whether we may remove an object with these permissions: IPC_RMID is for its owner, its
/// creator, and root.
fn may_remove(perm: &sysv::Perm) -> bool {
    let me = sysv::geteuid();
    me == 0 || me == perm.uid || me == perm.cuid
}

/// Removes one object (or, with `dry_run`, checks that we may) and says how it went. `stat`
/// is the object's permissions; an object gone meanwhile counts as removed.
pub fn removal(
    what: String,
    dry_run: bool,
    stat: sysv::Result<sysv::Perm>,
    remove: impl FnOnce() -> sysv::Result<()>,
) -> Removal {
    let result = match stat {
        // Gone meanwhile (its receiver removed it as it left): what we wanted.
        Err(e) if e.is_gone() => Ok(()),
        Err(e) => Err(e),
        Ok(perm) if dry_run && !may_remove(&perm) => Err(SysvError::denied("IPC_RMID")),
        Ok(_) if dry_run => Ok(()),
        Ok(_) => remove().or_else(|e| if e.is_gone() { Ok(()) } else { Err(e) }),
    };
    Removal { what, result }
}

/// Removes a channel's objects (or with `dry_run` only checks that it could): exactly the ones
/// its header names and that sit at the channel's keys, so nothing else is ever touched.
/// Returns one entry per object, with the reason where one could not be removed.
pub fn remove_channel(key: Key, control_shmid: i32, info: &Info, dry_run: bool) -> Vec<Removal> {
    let mut done = Vec::new();
    let sems = SemSet::from_id(info.semid);
    if SemSet::open(key).map(|s| s.id()).ok() == Some(info.semid) {
        done.push(removal(
            format!("semaphore set {} (key {key})", info.semid),
            dry_run,
            sems.stat().map(|s| s.perm),
            || sems.remove(),
        ));
    }
    if let Some(ck) = key.offset(1) {
        let content = Shm::from_id(info.content_shmid);
        if Shm::open(ck).map(|s| s.id()).ok() == Some(info.content_shmid) {
            done.push(removal(
                format!("shared memory {} (key {ck}, content)", info.content_shmid),
                dry_run,
                content.stat().map(|s| s.perm),
                || content.remove(),
            ));
        }
    }
    let control = Shm::from_id(control_shmid);
    done.push(removal(
        format!("shared memory {control_shmid} (key {key}, control)"),
        dry_run,
        control.stat().map(|s| s.perm),
        || control.remove(),
    ));
    done
}

/// Removes what a receiver that died setting up (`Probe::Abandoned`) left at `key`: the blank
/// control segment, the content segment at KEY+1 if the same process created it, and a set
/// of our shape at KEY made by the same user.
pub fn remove_abandoned(key: Key, control_shmid: i32, creator: i32, dry_run: bool) -> Vec<Removal> {
    let mut done = Vec::new();
    let control = Shm::from_id(control_shmid);
    let Ok(cstat) = control.stat() else {
        return done;
    };
    if let Ok(sems) = SemSet::open(key)
        && let Ok(st) = sems.stat()
        && st.nsems == u32::from(sem::COUNT)
        && st.perm.cuid == cstat.perm.cuid
    {
        done.push(removal(
            format!("semaphore set {} (key {key})", sems.id()),
            dry_run,
            Ok(st.perm),
            || sems.remove(),
        ));
    }
    if let Some(ck) = key.offset(1)
        && let Ok(content) = Shm::open(ck)
        && let Ok(st) = content.stat()
        && st.cpid == creator
    {
        done.push(removal(
            format!("shared memory {} (key {ck}, content)", content.id()),
            dry_run,
            Ok(st.perm),
            || content.remove(),
        ));
    }
    done.push(removal(
        format!("shared memory {control_shmid} (key {key}, control)"),
        dry_run,
        Ok(cstat.perm),
        || control.remove(),
    ));
    done
}

/// An attached channel: its three objects, both mappings and the validated header.
#[derive(Debug)]
pub struct Channel {
    /// The channel's key (the control segment and the semaphores; content at key + 1).
    pub key: Key,
    /// The control segment.
    pub control_shm: Shm,
    /// The content segment (the ring of slots).
    pub content_shm: Shm,
    /// The channel's semaphores ([`sem`]).
    pub sems: SemSet,
    control: Control,
    content: Mapping,
    /// The validated header.
    pub info: Info,
    /// Our place in the ring, counted from the session's start: both sides take slots in the
    /// same order, each counting for itself, so a file's chunks go on where the previous file's
    /// ended (its last slots may still be being drained).
    ring: AtomicU64,
    /// A sender's way with a stopped receiver.
    stall: StallWatch,
    /// Since when our receiver has been seen stopped.
    stopped_since: std::sync::Mutex<Option<Instant>>,
    /// What stops our waits.
    cancel: runtime::Cancel,
}

impl Channel {
    /// Creates a channel at `key` (the receiver's side). The control segment is created first,
    /// with IPC_EXCL, so it is the key's lock; the magic is written last, so a sender never sees
    /// a half-made channel as ready.
    pub fn create(addr: &Address, cfg: &Config) -> Result<Channel, FrameError> {
        let key = addr.key;
        let content_key = key.offset(1).ok_or(FrameError::Foreign {
            key,
            why: "key+1 overflows".into(),
        })?;
        let ring = cfg.slot_size * cfg.slot_count as usize;
        let control_shm =
            Shm::create(key, CONTROL_LEN, cfg.mode).map_err(|e| create_error(key, e))?;
        let mut undo = runtime::Rollback::default();
        undo.push(move || drop(control_shm.remove()));
        let content_shm =
            Shm::create(content_key, ring, cfg.mode).map_err(|e| create_error(content_key, e))?;
        undo.push(move || drop(content_shm.remove()));
        let sems = SemSet::create(key, sem::COUNT, cfg.mode).map_err(|e| create_error(key, e))?;
        undo.push(move || drop(sems.remove()));
        sems.set(sem::EMPTY, cfg.slot_count as i32)?;
        sems.op(&[SemOp::give(sem::RECEIVER).undo()], None)
            .map_err(|e| FrameError::from_wait(key, e))?;
        let control = control(control_shm.attach(true)?)
            .map_err(|source| FrameError::Header { key, source })?;
        let content = content_shm.attach(true)?;
        // Once here, rather than a page fault at a time in the first transfers.
        content.populate();
        let info = Info {
            slot_size: cfg.slot_size,
            slot_count: cfg.slot_count,
            require_md5: cfg.require_md5,
            receiver_pid: sysv::getpid(),
            content_shmid: content_shm.id(),
            semid: sems.id(),
            mode: cfg.mode,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            name: addr.name.clone().unwrap_or_default().into_bytes(),
        };
        let head = encode_info(&info);
        // The magic last, with a release store that `read_head`'s acquire load pairs with: a
        // reader that sees the magic sees every field written before it.
        control.write(8, &head[8..]);
        control.store_u64(INFO_OFF, u64::from_ne_bytes(MAGIC));
        undo.disarm();
        Ok(Channel {
            key,
            control_shm,
            content_shm,
            sems,
            control,
            content,
            info,
            ring: AtomicU64::new(0),
            stall: StallWatch::default(),
            stopped_since: std::sync::Mutex::new(None),
            cancel: cfg.cancel.clone(),
        })
    }

    /// Attaches to the channel at `addr` (the sender's side), checking every part of it, that
    /// it serves the name asked for (if any), and that its receiver runs as `owner`: files
    /// are never handed to another user's receiver unless that user is named.
    pub fn open(addr: &Address, owner: u32) -> Result<Channel, FrameError> {
        let key = addr.key;
        let (shmid, info) = match probe_judging(key, Judge::Sender)? {
            Probe::Absent => return Err(FrameError::NoReceiver { key }),
            Probe::Starting { pid, .. } => return Err(FrameError::Starting { key, pid }),
            Probe::Foreign { why, .. } => return Err(FrameError::Foreign { key, why }),
            Probe::NoPermission { uid, mode, .. } => {
                return Err(FrameError::denied(key, uid, mode));
            }
            Probe::Channel {
                alive: false, info, ..
            } => {
                return Err(FrameError::ReceiverGone {
                    key,
                    pid: info.receiver_pid,
                });
            }
            Probe::Abandoned { pid, .. } => return Err(FrameError::ReceiverGone { key, pid }),
            Probe::Channel {
                shmid,
                info,
                owner: uid,
                ..
            } => {
                check_peer(addr, &info, uid, owner)?;
                (shmid, info)
            }
        };
        let control_shm = Shm::from_id(shmid);
        let content_shm = Shm::from_id(info.content_shmid);
        let sems = SemSet::from_id(info.semid);
        let denied = || FrameError::PermissionDenied {
            key,
            owner: sysv::user_name(control_shm.stat().map(|s| s.perm.uid).unwrap_or(u32::MAX)),
            mode: info.mode,
        };
        let gone = |e: SysvError| -> FrameError {
            if e.is_permission() {
                denied()
            } else if e.is_gone() {
                FrameError::Removed { key }
            } else {
                e.into()
            }
        };
        let control = control(control_shm.attach(true).map_err(gone)?)
            .map_err(|source| FrameError::Header { key, source })?;
        let content = content_shm.attach(true).map_err(gone)?;
        // The probe found the content segment at KEY+1 to be the one the header names; it must
        // also hold the ring the header describes.
        if content.len() < info.ring_len() {
            return Err(FrameError::Header {
                key,
                source: HeaderError::Field {
                    field: "content segment",
                    value: content.len() as u64,
                },
            });
        }
        Ok(Channel {
            key,
            control_shm,
            content_shm,
            sems,
            control,
            content,
            info,
            ring: AtomicU64::new(0),
            stall: StallWatch::default(),
            stopped_since: std::sync::Mutex::new(None),
            cancel: runtime::Cancel::default(),
        })
    }

    /// Removes the channel's three objects; existing attachments stay valid until dropped.
    pub fn remove(&self) {
        let _ = self.sems.remove();
        let _ = self.content_shm.remove();
        let _ = self.control_shm.remove();
    }

    fn wait(&self, ops: &[SemOp], timeout: Option<Duration>) -> Result<(), FrameError> {
        self.sems
            .op(ops, timeout)
            .map_err(|e| FrameError::from_wait(self.key, e))
    }

    /// Tries `ops` without blocking for a few microseconds: mid-transfer the peer usually
    /// answers that fast, and catching it awake spares both sides a sleep and a cross-CPU
    /// wake-up. Returns whether the operation took place.
    fn poll_briefly(&self, ops: &[SemOp], spin: Duration) -> Result<bool, FrameError> {
        let mut nowait = [SemOp::zero(0); 4];
        let n = ops.len().min(4);
        for (d, o) in nowait.iter_mut().zip(ops) {
            *d = o.nowait();
        }
        let t = Instant::now();
        loop {
            match self.sems.op(&nowait[..n], None) {
                Ok(()) => return Ok(true),
                Err(WaitError::TimedOut) if t.elapsed() < spin => std::hint::spin_loop(),
                Err(WaitError::TimedOut) | Err(WaitError::Interrupted) => return Ok(false),
                Err(e) => return Err(FrameError::from_wait(self.key, e)),
            }
        }
    }

    /// Waits for `ops` in slices, checking between slices that `peer` (a liveness semaphore)
    /// is still up and that we have not been asked to stop. The receiver's waits end at once
    /// on a stop; a sender's go on for [`STOP_SETTLE`] after it (the answers of files already
    /// posted whole are worth waiting that long for), and watch for a stopped receiver.
    fn wait_on_peer(&self, ops: &[SemOp], peer: u16) -> Result<(), FrameError> {
        self.wait_on_peer_spinning(ops, peer, Duration::ZERO)
    }

    /// As [`Channel::wait_on_peer`], polling for `spin` first (see [`Channel::poll_briefly`]).
    fn wait_on_peer_spinning(
        &self,
        ops: &[SemOp],
        peer: u16,
        spin: Duration,
    ) -> Result<(), FrameError> {
        if !spin.is_zero() && self.poll_briefly(ops, spin)? {
            return Ok(());
        }
        loop {
            let slice = match peer == sem::RECEIVER {
                true => self.sender_slice()?,
                false => LIVENESS_SLICE,
            };
            match self.wait(ops, Some(slice)) {
                Ok(()) => return Ok(()),
                Err(FrameError::TimedOut { .. }) | Err(FrameError::Interrupted) => {}
                Err(e) => return Err(e),
            }
            if peer == sem::SENDER {
                if self.cancel.is_cancelled() {
                    return Err(FrameError::Interrupted);
                }
                if !self.sender_alive()? {
                    return Err(FrameError::SenderGone);
                }
                continue;
            }
            if !self.receiver_alive() {
                return Err(FrameError::ReceiverGone {
                    key: self.key,
                    pid: self.info.receiver_pid,
                });
            }
            self.check_stall()?;
        }
    }

    /// The next slice of a sender's wait: [`LIVENESS_SLICE`], or what is left of
    /// [`STOP_SETTLE`] once a stop was asked for (then, past it, [`FrameError::Interrupted`]).
    fn sender_slice(&self) -> Result<Duration, FrameError> {
        match self.cancel.age() {
            None => Ok(LIVENESS_SLICE),
            Some(age) => match STOP_SETTLE.checked_sub(age) {
                Some(left) if !left.is_zero() => Ok(left.min(LIVENESS_SLICE)),
                _ => Err(FrameError::Interrupted),
            },
        }
    }

    /// A sender's look at its receiver's process between slices: stopped (SIGSTOP, Ctrl-Z)
    /// is said once through the stall hook, and waited out up to the stall limit.
    fn check_stall(&self) -> Result<(), FrameError> {
        let pid = match self.control_shm.stat() {
            Ok(s) => s.cpid,
            Err(_) => return Ok(()),
        };
        let mut since = self.stopped_since.lock().unwrap_or_else(|e| e.into_inner());
        let tell = |s| {
            if let Some(h) = &self.stall.hook {
                (h.0)(s);
            }
        };
        if !sysv::process_stopped(pid) {
            if since.take().is_some() {
                tell(Stall::Continued { pid });
            }
            return Ok(());
        }
        let t = *since.get_or_insert_with(|| {
            tell(Stall::Stopped { pid });
            Instant::now()
        });
        match self.stall.limit {
            Some(limit) if t.elapsed() >= limit => Err(FrameError::ReceiverStopped {
                key: self.key,
                pid,
                secs: (t.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            }),
            _ => Ok(()),
        }
    }

    /// Sets how this (sender's) channel waits out a stopped receiver.
    pub fn with_stall_watch(mut self, w: StallWatch) -> Channel {
        self.stall = w;
        self
    }

    /// Sets what stops this (sender's) channel's waits.
    pub fn with_cancel(mut self, c: runtime::Cancel) -> Channel {
        self.cancel = c;
        self
    }

    /// What stops this channel's waits.
    pub fn cancel(&self) -> &runtime::Cancel {
        &self.cancel
    }

    // ---- receiver steps ----

    /// Publishes the channel's state for `status`.
    pub fn set_state(&self, s: State) {
        self.control.store_u32(STATE_OFF, s as u32);
    }

    /// Opens the gate to one new sender. First the per-session semaphores are reset (no
    /// sender is admitted at this point, so no one else touches them) and the session number
    /// that every message of the next sender must carry is announced, once as information and
    /// once as the admission ticket that exactly one sender can take.
    pub fn open_gate(&self, session: u32) -> Result<(), FrameError> {
        for (n, v) in [
            (sem::REQ, 0),
            (sem::FULL, 0),
            (sem::ACK, 0),
            (sem::EMPTY, self.info.slot_count as i32),
        ] {
            self.sems
                .set(n, v)
                .map_err(|e| FrameError::from_wait(self.key, e.into()))?;
        }
        self.clear_ring();
        self.ring.store(0, Ordering::Relaxed);
        self.store_u32(SESSION_OFF, session);
        self.store_u32(TICKET_OFF, session);
        self.store_u32(CURRENT_OFF, 0);
        for file in 0..LANES {
            let at = Lane::of(file).answer_off();
            self.store_u32(at, Status::Pending.code());
            self.store_u32(at + 4, 0);
        }
        self.store_u64(PROGRESS_OFF, 0);
        self.set_state(State::Idle);
        // Set, never added to: a surplus someone else gave the gate is gone with this.
        self.sems
            .set(sem::GATE, 1)
            .map_err(|e| FrameError::from_wait(self.key, e.into()))
    }

    /// Sleeps in the kernel until a sender takes the gate, waking only every `PUBLISHED_CHECK`
    /// to see that the channel is still there to be found, and whether it was cancelled (a
    /// program that must stop at once also removes the semaphore set, which wakes it).
    pub fn wait_for_sender(&self) -> Result<(), FrameError> {
        loop {
            let r = self.wait(&[SemOp::zero(sem::GATE)], Some(PUBLISHED_CHECK));
            if r.is_err() && self.cancel.is_cancelled() {
                return Err(FrameError::Interrupted);
            }
            match r {
                Err(FrameError::TimedOut { .. }) if self.published() => continue,
                Err(FrameError::TimedOut { .. }) => {
                    return Err(FrameError::Removed { key: self.key });
                }
                Err(FrameError::Interrupted) => continue,
                r => return r,
            }
        }
    }

    /// Whether senders can still find this channel: our segments are the ones at KEY and
    /// KEY+1 (after `ipcrm` they live on for us, attached, but the keys no longer lead to them).
    pub fn published(&self) -> bool {
        let at = |k: Option<Key>| k.and_then(|k| Shm::open(k).ok()).map(|s| s.id());
        at(Some(self.key)) == Some(self.control_shm.id())
            && at(self.key.offset(1)) == Some(self.content_shm.id())
    }

    /// Waits for the admitted sender's next request, which is due to be file `due` (or a
    /// goodbye in its place), and decodes it.
    pub fn next_request(&self, due: u32) -> Result<Result<Request, HeaderError>, FrameError> {
        self.wait_on_peer_spinning(&[SemOp::take(sem::REQ)], sem::SENDER, spin_budget())?;
        let at = Lane::of(due);
        let mut b = [0u8; REQUEST_LEN];
        self.read(at.request_off(), &mut b);
        let mut path = [0u8; PATH_LEN];
        self.read(at.path_off(), &mut path);
        Ok(decode_request(&b, &path))
    }

    /// Takes file `file` of the session: points its answer at it, marked "accepted", so that
    /// a failure flagged later is about this file. The status is stored before the file number
    /// and the sender reads them the other way round, so it never pairs this file's number with
    /// the final status of the file a lane's turn before, whose answer this one reuses.
    pub fn take_file(&self, file: u32) {
        let at = Lane::of(file).answer_off();
        self.store_u64(PROGRESS_OFF, 0);
        self.store_u32(CURRENT_OFF, file);
        self.store_u32(at, Status::Accepted.code());
        self.store_u32(at + 4, file);
    }

    /// Clears the slot table and the trailers, so nothing a dead session left there can pass
    /// for the next one's. Called at the start of a session, before the gate opens. (Within a
    /// session the ring is never cleared: the next file's chunks may already be in it. Tags
    /// keep one file's messages from passing for another's.)
    fn clear_ring(&self) {
        const ZEROS: [u8; SLOT_DESC_LEN * MAX_SLOTS as usize] =
            [0; SLOT_DESC_LEN * MAX_SLOTS as usize];
        self.write(
            SLOTS_OFF,
            &ZEROS[..SLOT_DESC_LEN * self.info.slot_count as usize],
        );
        for file in 0..LANES {
            self.write(Lane::of(file).trailer_off(), &[0; TRAILER_LEN]);
        }
    }

    /// Publishes an outcome about `file` and counts it (ACK +1). The sender reads the answer
    /// about a file before it posts the next file of the same lane, which reuses this one.
    pub fn answer(&self, file: u32, o: &Outcome) -> Result<(), FrameError> {
        self.answer_at(Lane::of(file), file, o)
    }

    /// Refuses the request due as file `due` that was malformed (about file 0: it never
    /// became a file).
    pub fn refuse_request(&self, due: u32, o: &Outcome) -> Result<(), FrameError> {
        self.answer_at(Lane::of(due), 0, o)
    }

    fn answer_at(&self, at: Lane, file: u32, o: &Outcome) -> Result<(), FrameError> {
        let at = at.answer_off();
        self.write(at + 8, &encode_outcome(o));
        self.store_u32(at + 4, file);
        self.store_u32(at, o.status.code());
        self.wait(&[SemOp::give(sem::ACK)], None)
    }

    /// Marks `file` failed while the sender is still sending it, so it stops early.
    pub fn flag_failure(&self, file: u32, s: Status) {
        self.store_u32(Lane::of(file).answer_off(), s.code());
    }

    /// Waits for the next filled slot, the `seq`-th of its file, and decodes its descriptor.
    /// Returns the slot (the next in ring order, counted here, never read from the segment)
    /// and the descriptor.
    pub fn next_desc(&self, seq: u64) -> Result<(usize, Result<Desc, HeaderError>), FrameError> {
        // The first chunks of a file follow the handshake at once: worth catching awake. Later
        // ones take a slot's copy to come, and a wait for them sleeps at once.
        let spin = if seq < 2 {
            spin_budget()
        } else {
            Duration::ZERO
        };
        self.wait_on_peer_spinning(&[SemOp::take(sem::FULL)], sem::SENDER, spin)?;
        let slot = self.next_slot();
        let mut d = [0u8; SLOT_DESC_LEN];
        self.read(SLOTS_OFF + slot * SLOT_DESC_LEN, &mut d);
        Ok((slot, decode_desc(&d)))
    }

    /// Copies `out.len()` bytes of `slot` into our own memory.
    pub fn copy_slot(&self, slot: usize, out: &mut [u8]) {
        self.content
            .read(slot * self.info.slot_size, out)
            .expect("a chunk is never longer than its slot");
    }

    /// The content segment and where `slot` starts in it, for writing a slot out with one copy.
    pub fn slot_source(&self, slot: usize, len: usize) -> sysv::Source<'_> {
        sysv::Source::Shared {
            map: &self.content,
            offset: slot * self.info.slot_size,
            len: len.min(self.info.slot_size),
        }
    }

    /// Hands a drained slot back to the sender and publishes progress.
    pub fn release_slot(&self, done: u64) -> Result<(), FrameError> {
        self.store_u64(PROGRESS_OFF, done);
        self.wait(&[SemOp::give(sem::EMPTY)], None)
    }

    /// The sender's trailer for `file`, read after its last descriptor.
    pub fn trailer(&self, file: u32) -> Trailer {
        let mut b = [0u8; TRAILER_LEN];
        self.read(Lane::of(file).trailer_off(), &mut b);
        decode_trailer(&b)
    }

    /// After a session: wait until the sender's liveness mark is down (at once after goodbye;
    /// the moment it exits after an abort). Sliced only so a stop request is seen.
    pub fn wait_sender_gone(&self) -> Result<(), FrameError> {
        loop {
            match self.wait(&[SemOp::zero(sem::SENDER)], Some(LIVENESS_SLICE)) {
                Ok(()) => return Ok(()),
                Err(_) if self.cancel.is_cancelled() => return Err(FrameError::Interrupted),
                Err(FrameError::TimedOut { .. }) | Err(FrameError::Interrupted) => {}
                Err(e) => return Err(e),
            }
            // A mark nobody alive holds (set with SETVAL by someone who left) would keep the
            // channel busy for ever: take it down ourselves.
            if !self.sender_alive()? {
                self.sems
                    .set(sem::SENDER, 0)
                    .map_err(|e| FrameError::from_wait(self.key, e.into()))?;
                return Ok(());
            }
        }
    }

    // ---- sender steps ----

    /// Takes the gate and marks ourselves alive in one atomic step, waiting up to `deadline`,
    /// then claims the admission ticket. Returns the session number our messages must carry.
    ///
    /// The gate alone cannot make a session ours: anyone who may write the channel can add
    /// to it, and then two senders pass. So the one that swaps the ticket out (the session
    /// number, left by the receiver) is admitted and closes the gate behind it (set to 0,
    /// which also wakes the receiver if a surplus kept it above 0); one that finds no ticket
    /// drops its mark and queues again.
    pub fn admit(&self, deadline: Option<Instant>) -> Result<u32, FrameError> {
        let ops = [SemOp::take(sem::GATE), SemOp::give(sem::SENDER).undo()];
        loop {
            let left = match deadline {
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(l) if !l.is_zero() => Some(l.min(LIVENESS_SLICE)),
                    _ => {
                        return Err(FrameError::TimedOut {
                            key: self.key,
                            what: "our turn",
                            secs: 0.0,
                        });
                    }
                },
                None => Some(LIVENESS_SLICE),
            };
            match self.wait(&ops, left) {
                Ok(()) => match self.claim()? {
                    Some(session) => return Ok(session),
                    None => continue,
                },
                Err(FrameError::TimedOut { .. }) | Err(FrameError::Interrupted) => {}
                Err(e) => return Err(e),
            }
            if self.cancel.is_cancelled() {
                return Err(FrameError::Interrupted);
            }
            if !self.receiver_alive() {
                return Err(FrameError::ReceiverGone {
                    key: self.key,
                    pid: self.info.receiver_pid,
                });
            }
            self.check_stall()?;
        }
    }

    /// Past the gate: the session if we took its ticket, else `None` (our mark is dropped
    /// again, and we queue anew).
    fn claim(&self) -> Result<Option<u32>, FrameError> {
        let session = self.control.swap_u32(TICKET_OFF, 0);
        if session == 0 {
            // Without waiting: a SETVAL meanwhile (which also clears our undo) may have taken
            // the mark down already.
            match self.wait(&[SemOp::take(sem::SENDER).undo().nowait()], None) {
                Ok(()) | Err(FrameError::TimedOut { .. }) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        self.sems
            .set(sem::GATE, 0)
            .map_err(|e| FrameError::from_wait(self.key, e.into()))?;
        self.ring.store(0, Ordering::Relaxed);
        Ok(Some(session))
    }

    /// Writes a request and posts it (the sender's side).
    ///
    /// # Errors
    /// The channel was removed.
    pub fn send_request(&self, r: &Request) -> Result<(), FrameError> {
        let at = Lane::of(r.file);
        // The path first: the request that points at it is posted after.
        let path = encode_path(r);
        if !path.is_empty() {
            self.write(at.path_off(), &path);
        }
        self.write(at.request_off(), &encode_request(r));
        self.wait(&[SemOp::give(sem::REQ)], None)
    }

    /// Says goodbye (in place of file `due`, the one that would have come next: every earlier
    /// one answered) and drops our liveness mark in the same atomic step, so the receiver can
    /// admit the next sender the moment it reads this.
    pub fn send_bye(&self, session: u32, due: u32) -> Result<(), FrameError> {
        let bye = Request {
            op: Op::Bye,
            sender_pid: sysv::getpid(),
            size: None,
            md5: false,
            meta: None,
            name: Vec::new(),
            session,
            file: 0,
        };
        self.write(Lane::of(due).request_off(), &encode_request(&bye));
        self.wait(
            &[SemOp::take(sem::SENDER).undo(), SemOp::give(sem::REQ)],
            None,
        )
    }

    /// Waits until the receiver has given `n` more answers (ACK -n, one sleep for all of
    /// them: the kernel wakes us only when all are in). Answers come in request order; read
    /// each with [`Channel::answer_about`].
    pub fn wait_answers(&self, n: u16) -> Result<(), FrameError> {
        // The answer comes after the receiver's write and commit, long enough that polling for
        // it would only take a CPU the receiver's writes may need: sleep at once.
        let take = SemOp {
            op: -(n.clamp(1, LANES as u16) as i16),
            ..SemOp::take(sem::ACK)
        };
        self.wait_on_peer(&[take], sem::RECEIVER)
    }

    /// The answer in `file`'s lane, once [`Channel::wait_answers`] counted it: the file it is
    /// about and the outcome.
    pub fn answer_about(&self, file: u32) -> (u32, Result<Outcome, HeaderError>) {
        let at = Lane::of(file).answer_off();
        let mut b = [0u8; RESULT_LEN];
        self.read(at + 8, &mut b);
        let status = self.control.load_u32(at);
        let about = self.control.load_u32(at + 4);
        (about, decode_outcome(status, &b))
    }

    /// The receiver's failure verdict on `file` while it is still being sent, if any.
    pub fn receiver_failure(&self, file: u32) -> Option<u32> {
        // The number first: the receiver stores it after the status (see `take_file`).
        let at = Lane::of(file).answer_off();
        let about = self.control.load_u32(at + 4);
        let status = self.control.load_u32(at);
        let pending = Status::from_code(status).is_some_and(Status::is_pending);
        (about == file && !pending).then_some(status)
    }

    /// Waits for a free slot; returns its index in the ring (the next in ring order).
    pub fn free_slot(&self) -> Result<usize, FrameError> {
        self.wait_on_peer(&[SemOp::take(sem::EMPTY)], sem::RECEIVER)?;
        Ok(self.next_slot())
    }

    /// Reads up to `limit` bytes (at most a slot) from `file` straight into `slot`, looping
    /// over short reads (pipes) until the slot is full or EOF. Returns the bytes placed.
    pub fn fill_slot(
        &self,
        slot: usize,
        file: &std::fs::File,
        limit: usize,
    ) -> std::io::Result<usize> {
        let base = slot * self.info.slot_size;
        let want = limit.min(self.info.slot_size);
        let mut got = 0;
        while got < want {
            match self.content.read_from(file, base + got, want - got) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    if self.cancel.is_cancelled() {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    /// Copies bytes of our own into `slot`.
    pub fn put_slot(&self, slot: usize, bytes: &[u8]) {
        self.content
            .write(
                slot * self.info.slot_size,
                &bytes[..bytes.len().min(self.info.slot_size)],
            )
            .expect("a slot lies inside the ring");
    }

    /// Publishes a filled slot (or an abort) with its descriptor.
    pub fn post(&self, slot: usize, d: &Desc) -> Result<(), FrameError> {
        self.write(SLOTS_OFF + slot * SLOT_DESC_LEN, &encode_desc(d));
        self.wait(&[SemOp::give(sem::FULL)], None)
    }

    /// Writes the trailer of file `t.file`; call before posting its last descriptor.
    pub fn set_trailer(&self, t: &Trailer) {
        self.write(Lane::of(t.file).trailer_off(), &encode_trailer(t));
    }

    /// Waits up to `limit` for the receiver to die or the channel to go away (for a watcher
    /// thread); returns whether it did.
    pub fn receiver_gone_within(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.sems.op(&[SemOp::zero(sem::RECEIVER)], Some(left)) {
                Err(WaitError::Interrupted | WaitError::TimedOut) => continue,
                Err(_) => return true,
                // Anyone allowed to write the channel can zero the mark: believe it only if
                // the kernel's facts agree.
                Ok(()) if !self.receiver_alive() => return true,
                Ok(()) => std::thread::sleep(LIVENESS_SLICE.min(left)),
            }
        }
    }

    /// Whether our receiver's process is stopped (SIGSTOP, Ctrl-Z) now.
    pub fn receiver_stopped(&self) -> bool {
        self.control_shm
            .stat()
            .is_ok_and(|s| sysv::process_stopped(s.cpid))
    }

    /// The error for a stopped receiver that we waited `waited` for.
    pub fn stopped_error(&self, waited: Duration) -> FrameError {
        FrameError::ReceiverStopped {
            key: self.key,
            pid: self.control_shm.stat().map_or(0, |s| s.cpid),
            secs: (waited.as_secs_f64() * 10.0).round() / 10.0,
        }
    }

    /// Whether our receiver still serves the channel ([`serving`]).
    pub fn receiver_alive(&self) -> bool {
        match self.control_shm.stat() {
            Ok(stat) => serving(self.control_shm.id(), &stat, &self.sems),
            Err(e) => !e.is_gone(),
        }
    }

    /// Whether the admitted sender lives: its mark is up and the process that last set it
    /// (the sender takes it with SEM_UNDO; a forger's SETVAL records the forger) lives with
    /// the channel attached, where the kernel lets us tell.
    fn sender_alive(&self) -> Result<bool, FrameError> {
        let gone = |e: SysvError| FrameError::from_wait(self.key, e.into());
        if self.sems.value(sem::SENDER).map_err(gone)? == 0 {
            return Ok(false);
        }
        let holder = self.sems.last_pid(sem::SENDER).map_err(gone)?;
        Ok(sysv::attached(holder, self.control_shm.id()) != Some(false))
    }

    /// The next slot in ring order; every taken FULL (receiver) or EMPTY (sender) is one.
    fn next_slot(&self) -> usize {
        let n = self.ring.fetch_add(1, Ordering::Relaxed);
        (n % u64::from(self.info.slot_count)) as usize
    }
    fn read(&self, off: usize, out: &mut [u8]) {
        self.control.read(off, out);
    }
    fn write(&self, off: usize, bytes: &[u8]) {
        self.control.write(off, bytes);
    }
    fn store_u32(&self, off: usize, v: u32) {
        self.control.store_u32(off, v);
    }
    fn store_u64(&self, off: usize, v: u64) {
        self.control.store_u64(off, v);
    }
}

/// Copies a channel's info region out: the magic first, with an acquire load (the receiver
/// stores it last, with release), then the rest, so the fields read belong to the magic seen.
fn read_head(map: &Mapping, head: &mut [u8; INFO_LEN]) -> Result<(), sysv::OutOfBounds> {
    let magic = map.load_u64(INFO_OFF)?;
    map.read(INFO_OFF + 8, &mut head[8..])?;
    head[..8].copy_from_slice(&magic.to_ne_bytes());
    Ok(())
}

/// A control segment's attachment, checked once to hold `CONTROL_LEN` bytes: every field is at
/// a constant offset inside it, so no access can fall outside, and none returns an error.
type Control = Fixed<CONTROL_LEN>;

/// Checks an attachment's size once, as [`Control`] wants.
fn control(m: Mapping) -> Result<Control, HeaderError> {
    Fixed::new(m).map_err(|e| HeaderError::TooSmall { size: e.size })
}

/// A read-only look at a channel's live fields for `status`: attaches without writing.
pub struct View {
    control: Control,
    /// The validated header.
    pub info: Info,
    /// The segment's `IPC_STAT` when it was opened.
    stat: sysv::ShmStat,
}

impl View {
    /// Attaches read-only to the segment `shmid` and validates its header.
    ///
    /// # Errors
    /// The segment is gone, unreadable, or not a channel.
    pub fn open(shmid: i32) -> Result<View, FrameError> {
        let header = |source| FrameError::Header {
            key: Key(0),
            source,
        };
        let shm = Shm::from_id(shmid);
        let stat = shm.stat()?;
        let control = control(shm.attach(false)?).map_err(header)?;
        let mut head = [0u8; INFO_LEN];
        read_head(control.mapping(), &mut head)
            .map_err(|e| header(HeaderError::TooSmall { size: e.size }))?;
        let mut info = decode_info(&head, control.mapping().len()).map_err(header)?;
        // As in `probe`: the pid the kernel translates into our namespace.
        info.receiver_pid = stat.cpid;
        Ok(View {
            control,
            info,
            stat,
        })
    }

    /// What the channel this view shows is, judged as [`probe`] judges one (its parts
    /// checked against the keys, its receiver's liveness from kernel facts), without
    /// attaching again.
    pub fn judge(&self, key: Key) -> Probe {
        channel(
            key,
            self.control.mapping().id(),
            &self.stat,
            self.info.clone(),
            Judge::Exact,
        )
    }
    /// The published state ([`State`] as a number; anything else is "starting").
    pub fn state(&self) -> u32 {
        self.control.load_u32(STATE_OFF)
    }
    /// Bytes the receiver has taken of the current file.
    pub fn progress(&self) -> u64 {
        self.control.load_u64(PROGRESS_OFF)
    }
    /// The request of the file the receiver is taking (the first one's, before it takes any).
    ///
    /// # Errors
    /// It does not decode (none yet, or torn).
    pub fn request(&self) -> Result<Request, HeaderError> {
        let at = Lane::of(self.control.load_u32(CURRENT_OFF).max(1));
        let mut b = [0u8; REQUEST_LEN];
        self.control.read(at.request_off(), &mut b);
        let mut path = [0u8; PATH_LEN];
        self.control.read(at.path_off(), &mut path);
        decode_request(&b, &path)
    }
}

/// What a channel serves, for messages: its name, or that it has none.
pub fn serves(info: &Info) -> String {
    match info.name.is_empty() {
        true => "no name (a channel by number)".into(),
        false => format!("\"{}\"", crate::mechanisms::text::escape(&info.name)),
    }
}

/// Refuses a channel that serves another name than `addr` asks for, or whose receiver runs as
/// another user than `owner`.
fn check_peer(addr: &Address, info: &Info, uid: u32, owner: u32) -> Result<(), FrameError> {
    if let Some(wanted) = &addr.name
        && info.name != wanted.as_bytes()
    {
        return Err(FrameError::OtherName {
            key: addr.key,
            serves: serves(info),
            wanted: wanted.clone(),
        });
    }
    if uid != owner {
        return Err(FrameError::OtherOwner {
            key: addr.key,
            owner: sysv::user_name(uid),
            uid,
        });
    }
    Ok(())
}

fn create_error(key: Key, e: SysvError) -> FrameError {
    match e.errno() {
        Some(libc::EEXIST) => FrameError::Foreign {
            key,
            why: "an IPC object already exists at this key and is not part of a shmxfer channel"
                .into(),
        },
        _ if e.is_permission() => FrameError::PermissionDenied {
            key,
            owner: "another user".into(),
            mode: 0,
        },
        _ => FrameError::Sys(e),
    }
}
