//! What is at a key ([`probe`]), trusting nothing: a channel (alive or not, ours or
//! another user's), one being set up, one abandoned during setup, or something foreign.

use std::time::Duration;

use super::*;
use crate::sysv::{self, Key, SemSet, Shm};

/// What is at a key, as seen without trusting it.
#[derive(Debug)]
pub(crate) enum Probe {
    /// No control segment at the key.
    Absent,
    /// A segment is there but it is not (or not yet) a channel we understand.
    Foreign {
        /// The segment's id.
        #[allow(dead_code)] // `clean` and `status` (the command line) name it.
        shmid: i32,
        /// Why it is not a channel.
        why: String,
    },
    /// We may not look at it.
    NoPermission {
        /// The segment's id.
        #[allow(dead_code)] // As above.
        shmid: i32,
        /// Its owner.
        uid: u32,
        /// Its permission bits.
        mode: u32,
        /// Its creator's pid (as our PID namespace sees it; 0 outside it).
        pid: i32,
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
        #[allow(dead_code)] // As above.
        shmid: i32,
        /// Its creator, alive.
        pid: i32,
    },
    /// A blank control segment of our size whose creator is dead and that nobody has
    /// attached, beside a rendezvous segment the same process created: a receiver that died
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
pub(crate) const STARTUP_GRACE: Duration = Duration::from_secs(2);

/// Looks at the segment at `key` and says what it is, touching nothing.
pub(crate) fn probe(key: Key) -> Result<Probe, FrameError> {
    probe_judging(key, Judge::Exact)
}

/// How a probe judges whether a channel's receiver still serves it.
#[derive(Clone, Copy)]
pub(super) enum Judge {
    /// From the kernel's facts alone ([`serving`]): for `status`, `clean` and a receiver
    /// deciding whether it may take a key over, where a live receiver must never look dead.
    Exact,
    /// A sender about to connect: its liveness mark up and its pid alive is taken as
    /// serving without reading the receiver's map, a measurable share of a one-file `send`
    /// (docs/benchmarks.md, "Design choices"). Only a forged mark makes this wrong, and then the sender's first wait
    /// makes the exact check after one slice and reports the receiver gone.
    Sender,
}

pub(super) fn probe_judging(key: Key, judge: Judge) -> Result<Probe, FrameError> {
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
                pid: stat.cpid,
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
    Ok(judge_header(key, shm.id(), &stat, &head, size, judge))
}

/// What a segment at `key` whose header reads `head` is: a channel (judged), another channel's
/// rendezvous, a receiver setting up or one that died doing so, or something foreign.
fn judge_header(
    key: Key,
    shmid: i32,
    stat: &sysv::ShmStat,
    head: &[u8; INFO_LEN],
    size: usize,
    judge: Judge,
) -> Probe {
    let blank = head[..8] == [0; 8] && size >= CONTROL_LEN;
    let decoded = decode_info(head, size);
    if decoded.is_err()
        && let Some(channel) = rendezvous_of(key, shmid)
    {
        return Probe::Foreign {
            shmid,
            why: format!(
                "it is the rendezvous segment of the shmxfer channel at {channel} (a channel uses its key and the next)"
            ),
        };
    }
    match decoded {
        Err(_) if blank && crate::os::process_alive(stat.cpid) => Probe::Starting {
            shmid,
            pid: stat.cpid,
        },
        // `stat` was taken before our own attachment.
        Err(_) if blank && stat.nattch == 0 && made_by_a_receiver(key, stat) => Probe::Abandoned {
            shmid,
            pid: stat.cpid,
        },
        Ok(info) => judge_channel(key, shmid, stat, info, judge),
        Err(e) => Probe::Foreign {
            shmid,
            why: e.to_string(),
        },
    }
}

/// Whether a blank control-sized segment at `key` is a receiver's first object: a blank
/// segment alone looks like anybody's (`ipcmk -M`), but a receiver creates the content
/// segment at KEY+1 right after it, so the same creator pid there tells. (A receiver killed
/// between the two `shmget`s leaves a segment only `ipcrm` can tell from a foreign one.)
pub(super) fn made_by_a_receiver(key: Key, control: &sysv::ShmStat) -> bool {
    control.size == CONTROL_LEN
        && key
            .offset(1)
            .and_then(|k| Shm::open(k).ok())
            .and_then(|s| s.stat().ok())
            .is_some_and(|c| c.cpid == control.cpid && c.perm.cuid == control.perm.cuid)
}

pub(super) fn no_permission(key: Key) -> Probe {
    let row = sysv::read_table(sysv::Kind::Shm)
        .ok()
        .and_then(|rows| rows.into_iter().find(|r| r.key() == key));
    match row {
        Some(r) => Probe::NoPermission {
            shmid: r.num("shmid") as i32,
            uid: r.num("uid") as u32,
            mode: u32::from_str_radix(r.get("perms").unwrap_or("0"), 8).unwrap_or(0) & 0o777,
            pid: r.num("cpid") as i32,
        },
        None => Probe::NoPermission {
            shmid: -1,
            uid: u32::MAX,
            mode: 0,
            pid: 0,
        },
    }
}

/// What a decoded header at `key` is: a channel if the parts it names are the ones at the
/// keys, made by the control segment's creator; anything else is foreign or corrupt, never a
/// dead channel (a dead channel's parts are removable, so a forged header must not make one).
pub(super) fn judge_channel(
    key: Key,
    shmid: i32,
    stat: &sysv::ShmStat,
    mut info: Info,
    judge: Judge,
) -> Probe {
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
        Judge::Sender if marked() && crate::os::process_alive(stat.cpid) => true,
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
pub(super) fn check_parts(key: Key, control: &sysv::ShmStat, info: &Info) -> Result<(), String> {
    let sems = SemSet::open(key).map_err(|e| format!("no semaphore set at the key ({e})"))?;
    if sems.id() != info.semid {
        return Err(format!(
            "its header names semaphore set {} but the set at the key is {}",
            info.semid,
            sems.id()
        ));
    }
    let rdv = key
        .offset(1)
        .and_then(|k| Shm::open(k).ok())
        .ok_or("no rendezvous segment at key+1")?;
    if rdv.id() != info.rendezvous_shmid {
        return Err(format!(
            "its header names rendezvous segment {} but the one at key+1 is {}",
            info.rendezvous_shmid,
            rdv.id()
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
    let rdv_creator = rdv.stat().map(|s| s.perm.cuid);
    match (sem_creator, rdv_creator) {
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
pub(crate) fn serving(shmid: i32, stat: &sysv::ShmStat, sems: &SemSet) -> bool {
    serving_by(crate::os::attached(stat.cpid, shmid), stat, sems)
}

/// As [`serving`], given what the creator's map said (`None`: it could not be read).
pub(super) fn serving_by(attached: Option<bool>, stat: &sysv::ShmStat, sems: &SemSet) -> bool {
    match attached {
        Some(attached) => attached,
        None => {
            let mark = match sems.value(sem::RECEIVER) {
                Ok(v) => v > 0,
                Err(e) => !e.is_gone(),
            };
            mark && (stat.cpid <= 0 || crate::os::process_alive(stat.cpid))
        }
    }
}

/// The key of the channel whose rendezvous segment `shmid` (found at `key`) is: the segment at
/// `key - 1` is a channel's control segment whose header names `shmid`. A segment at a
/// channel's K+1 is blank, as one being set up is: this tells the two apart.
fn rendezvous_of(key: Key, shmid: i32) -> Option<Key> {
    let below = Key(key.0.checked_sub(1).filter(|&k| k != 0)?);
    let map = Shm::open(below).ok()?.attach(false).ok()?;
    let mut head = [0u8; INFO_LEN];
    read_head(&map, &mut head).ok()?;
    let info = decode_info(&head, map.len()).ok()?;
    (info.rendezvous_shmid == shmid).then_some(below)
}
