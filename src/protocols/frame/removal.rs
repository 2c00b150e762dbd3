//! Removal of exactly a channel's objects (or what a receiver killed during setup left),
//! for `clean`: never an object that is not provably the channel's.

use super::*;
use crate::sysv::{self, Key, SemSet, Shm, SysvError};

/// One object `remove_channel` removed (or, with `dry_run`, would remove), or why it could not.
/// (`clean`, in the command line, reports each; the library's own removals only remove.)
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) struct Removal {
    /// The object, as `clean` names it ("control segment 0x… (shmid 12)").
    pub what: String,
    /// Removed, or why not.
    pub result: Result<(), SysvError>,
}

/// Whether we may remove an object with these permissions: IPC_RMID is for its owner, its
/// creator, and root.
pub(super) fn may_remove(perm: &sysv::Perm) -> bool {
    let me = crate::os::geteuid();
    me == 0 || me == perm.uid || me == perm.cuid
}

/// Removes one object (or, with `dry_run`, checks that we may) and says how it went. `stat`
/// is the object's permissions; an object gone meanwhile counts as removed.
pub(crate) fn removal(
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
pub(crate) fn remove_channel(
    key: Key,
    control_shmid: i32,
    info: &Info,
    dry_run: bool,
) -> Vec<Removal> {
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
        let rdv = Shm::from_id(info.rendezvous_shmid);
        if Shm::open(ck).map(|s| s.id()).ok() == Some(info.rendezvous_shmid) {
            done.push(removal(
                format!(
                    "shared memory {} (key {ck}, rendezvous)",
                    info.rendezvous_shmid
                ),
                dry_run,
                rdv.stat().map(|s| s.perm),
                || rdv.remove(),
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
/// control segment, the rendezvous segment at KEY+1 if the same process created it, and a set
/// of our shape at KEY made by the same user.
pub(crate) fn remove_abandoned(
    key: Key,
    control_shmid: i32,
    creator: i32,
    dry_run: bool,
) -> Vec<Removal> {
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
        && let Ok(rdv) = Shm::open(ck)
        && let Ok(st) = rdv.stat()
        && st.cpid == creator
    {
        done.push(removal(
            format!("shared memory {} (key {ck}, rendezvous)", rdv.id()),
            dry_run,
            Ok(st.perm),
            || rdv.remove(),
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
