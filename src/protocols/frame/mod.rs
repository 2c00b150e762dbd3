//! The native channel: what is at a key (`probe`), and the handshake over a channel's three
//! objects ([`Channel`]), each end's steps a type of its own ([`ReceiverEnd`], [`SenderEnd`]). The bytes themselves are [`crate::mechanisms::wire`]'s;
//! docs/protocol.md is the contract.
//!
//! A channel at KEY is the control segment (KEY), the rendezvous segment (KEY+1) and one semaphore
//! set (KEY). Everything read from shared memory is copied out and decoded by `wire` before
//! use: the segment at a key is untrusted until its header says otherwise, and even then every
//! length is checked against what the kernel says the segment's size is.

use std::time::Duration;

pub(crate) use crate::mechanisms::wire::*;

mod channel;
mod probe;
mod receiving;
mod removal;
mod sending;
mod view;

pub(crate) use channel::Channel;
pub(crate) use probe::*;
pub(crate) use receiving::{Admission, ReceiverEnd, SenderId};
pub(crate) use removal::*;
pub(crate) use sending::SenderEnd;
pub(crate) use view::View;

use channel::{Control, control, read_head};
use probe::{Judge, judge_channel, probe_judging};

use crate::mechanisms::runtime;
use crate::sysv::{self, Key, SysvError, WaitError};

/// How long a wait on the peer sleeps before it checks whether the peer is still alive.
pub(crate) const LIVENESS_SLICE: Duration = Duration::from_millis(250);

/// How often an idle receiver checks that its segments are still at their keys (someone may
/// `ipcrm` them; senders then cannot find the channel, and nothing would wake the receiver to
/// say so) and raises its liveness mark again if someone took it down. One check costs two
/// `shmget`s and a `semctl`; once a second is far under the one wake-up per 200 ms that
/// idling allows, and within the 2 s a sender gives a mark that is down.
pub(crate) const PUBLISHED_CHECK: Duration = Duration::from_secs(1);

/// How long a sender's waits go on once a stop was asked for: long enough for a working
/// receiver to answer the files whose last byte is posted, short enough that one SIGINT or
/// SIGTERM ends a send within 2 s whatever the receiver does.
pub(crate) const STOP_SETTLE: Duration = Duration::from_secs(1);

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
pub(crate) struct StallWatch {
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
            owner: crate::os::user_name(uid),
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
    #[error("key {key} is taken by {owner} (pid {pid}), whose objects there only they may use")]
    /// Another user's objects are at the key a receiver wants: not ours to serve or take over.
    Taken {
        /// The key.
        key: Key,
        /// Their owner (a user name, or a uid).
        owner: String,
        /// Their creator's pid (0 outside our PID namespace).
        pid: i32,
    },
    #[error("key {key} holds no shmxfer channel of its own: {why}; leaving it alone")]
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
    #[error("no receiver serves \"{wanted}\": key {key} serves {serves}")]
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
    #[error("cannot create the channel's {object} at key {key}: {why}")]
    /// The kernel's IPC limits do not leave room for the channel.
    Limit {
        /// The key.
        key: Key,
        /// What could not be created: `control segment`, `rendezvous segment`, `semaphore set`.
        object: &'static str,
        /// Its size in bytes (a segment's), 0 for a semaphore set.
        size: usize,
        /// The limit met: `kernel.shmmax`, `kernel.shmmni`, `kernel.shmall`, `kernel.sem`, or
        /// `memory`.
        limit: &'static str,
        /// What the limit is and what was asked for.
        why: String,
    },
    #[error(
        "the receiver on key {key} admitted segment {segment} in our place: someone who may write the channel named another sender's segment after we took our turn; try again"
    )]
    /// The receiver took another segment than ours for our session (or refused ours).
    NotAdmitted {
        /// The key.
        key: Key,
        /// The segment it admitted (-1: it refused the one named).
        segment: i32,
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
    /// A stop was asked for (the channel's [`crate::Cancel`]).
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
/// `SHMXFER_SPIN_US` microseconds, default 0 (never). Same-run A/Bs went both ways
/// (docs/benchmarks.md, "Design choices"), so the default stays the plain sleep.
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

/// What a channel serves, for messages: its name, or that it has none.
pub(crate) fn serves(info: &Info) -> String {
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
            owner: crate::os::user_name(uid),
            uid,
        });
    }
    Ok(())
}

fn create_error(key: Key, e: SysvError, object: &'static str, size: usize) -> FrameError {
    match e.errno() {
        Some(libc::EEXIST) => FrameError::Foreign {
            key,
            why: match probe(key) {
                // Our rendezvous segment's key is another channel's own key.
                Ok(Probe::Channel { .. }) => format!(
                    "it is the control segment of the shmxfer channel at {key}; a channel at {} would need it for its rendezvous segment",
                    Key(key.0 - 1)
                ),
                _ => {
                    "an IPC object already exists at this key and is not part of a shmxfer channel"
                        .into()
                }
            },
        },
        _ if e.is_permission() => FrameError::PermissionDenied {
            key,
            owner: "another user".into(),
            mode: 0,
        },
        Some(errno @ (libc::ENOSPC | libc::EINVAL | libc::ENOMEM)) => {
            let shm = e.call.starts_with("shmget");
            match limit_reached(errno, shm, size) {
                Some((limit, why)) => FrameError::Limit {
                    key,
                    object,
                    size,
                    limit,
                    why,
                },
                None => FrameError::Sys(e),
            }
        }
        _ => FrameError::Sys(e),
    }
}

/// Which of the kernel's IPC limits a creation that failed with `errno` met, as PostgreSQL
/// names it: the sysctl, and what it says. `size` is the segment's size in bytes.
fn limit_reached(errno: i32, shm: bool, size: usize) -> Option<(&'static str, String)> {
    let num = |n: &str| sysv::kernel_limit(n).and_then(|v| v.parse::<u64>().ok());
    let count = |kind| sysv::read_table(kind).map(|t| t.len()).unwrap_or(0);
    match (shm, errno) {
        (true, libc::EINVAL) => Some((
            "kernel.shmmax",
            format!(
                "{size} bytes is more than one segment may hold here (kernel.shmmax = {})",
                num("shmmax").map_or("?".into(), |v| v.to_string())
            ),
        )),
        (true, libc::ENOSPC)
            if num("shmmni").is_some_and(|m| count(sysv::Kind::Shm) as u64 >= m) =>
        {
            Some((
                "kernel.shmmni",
                format!(
                    "the kernel's limit on shared memory segments is reached ({} in use, kernel.shmmni = {})",
                    count(sysv::Kind::Shm),
                    num("shmmni").unwrap_or(0)
                ),
            ))
        }
        (true, libc::ENOSPC) => Some((
            "kernel.shmall",
            format!(
                "{size} more bytes would pass the kernel's limit on all shared memory (kernel.shmall = {} pages of {} bytes)",
                num("shmall").map_or("?".into(), |v| v.to_string()),
                crate::os::page_size()
            ),
        )),
        (true, libc::ENOMEM) => Some((
            "memory",
            format!("the system has no memory left for {size} bytes of shared memory"),
        )),
        (false, libc::ENOSPC) => {
            let sem = sysv::kernel_limit("sem").unwrap_or_default();
            let f: Vec<&str> = sem.split_whitespace().collect();
            Some((
                "kernel.sem",
                format!(
                    "the kernel's limit on semaphore sets (SEMMNI, the 4th field of kernel.sem: {}) or on semaphores (SEMMNS, the 2nd: {}) is reached ({} sets in use)",
                    f.get(3).unwrap_or(&"?"),
                    f.get(1).unwrap_or(&"?"),
                    count(sysv::Kind::Sem)
                ),
            ))
        }
        _ => None,
    }
}
