//! `shmxfer clean`: remove a channel's leftover IPC objects, and never anything that is not
//! shmxfer's (or, with `--legacy`, the original system's). Every object it could not remove
//! is reported with the reason.

use crate::commands::exit;
use crate::protocols::frame::{self, FrameError, Probe, Removal};
use crate::protocols::legacy;
use crate::sysv::{self, Key, SemSet, Shm, SysvError};
use clap::Args;

use super::{ChannelArgs, Verbosity};

#[derive(Debug, thiserror::Error)]
pub enum CleanError {
    #[error(
        "the receiver (pid {pid}) of key {key} is alive; stop it, or use --force to remove its channel anyway"
    )]
    Alive { key: Key, pid: i32 },
    #[error("key {key} holds a segment that is not a shmxfer channel ({why}); leaving it alone")]
    Foreign { key: Key, why: String },
    #[error(
        "the original system's segment at key {key} is attached by {nattch} process(es) (a consumer is running); stop it, or use --force"
    )]
    LegacyInUse { key: Key, nattch: u64 },
    #[error(
        "key {key} serves {serves}, not \"{wanted}\": nothing removed (two names can share a key; name the one it serves, or give the key as a number)"
    )]
    OtherName {
        key: Key,
        serves: String,
        wanted: String,
    },
    #[error(
        "{count} object(s) {} (see above)",
        if *dry_run { "would not be removed" } else { "could not be removed" }
    )]
    NotRemoved {
        count: usize,
        permission: bool,
        dry_run: bool,
    },
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(
        "cannot read the kernel's IPC tables: {}",
        crate::mechanisms::text::io_text(.0)
    )]
    Proc(std::io::Error),
}

impl CleanError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CleanError::Alive { .. } | CleanError::LegacyInUse { .. } => exit::TEMPFAIL,
            CleanError::Foreign { .. } => exit::PROTOCOL,
            CleanError::OtherName { .. } => exit::UNAVAILABLE,
            CleanError::NotRemoved {
                permission: true, ..
            } => exit::NOPERM,
            CleanError::NotRemoved { .. } => exit::OSERR,
            CleanError::Frame(e) => exit::of_frame(e),
            CleanError::Proc(_) => exit::OSERR,
        }
    }
}

pub fn run(args: CleanArgs) -> super::Outcome {
    let found = if args.legacy {
        let keys = args.channel.legacy_keys().map_err(super::Error::Usage)?;
        clean_legacy(&args, keys)?
    } else if args.stale {
        clean_stale(&args)?
    } else {
        let addr = args.channel.native().map_err(super::Error::Usage)?;
        clean_key(&addr, &args)?
    };
    report(found, &args)?;
    Ok(exit::OK)
}

/// What a clean did: lines to print, and the objects it tried to remove.
#[derive(Default)]
struct Outcome {
    notes: Vec<String>,
    removals: Vec<Removal>,
    /// Stale channels of other users, which we may not remove.
    not_yours: Vec<String>,
}

/// Prints one line per object removed (or that would be), one error per object that could not
/// be, and fails if any could not.
fn report(o: Outcome, args: &CleanArgs) -> Result<(), CleanError> {
    let quiet = args.verbosity.quiet;
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut stdout_open = !quiet;
    let mut failed = 0;
    let mut permission = true;
    for r in &o.removals {
        match &r.result {
            Ok(()) => {
                if stdout_open {
                    stdout_open = crate::commands::term::out_line(&format!("{verb} {}", r.what));
                }
            }
            Err(e) => {
                failed += 1;
                permission &= e.is_permission();
                crate::commands::term::error(cannot_remove(&r.what, e, args.dry_run));
            }
        }
    }
    for n in o.notes {
        if stdout_open {
            stdout_open = crate::commands::term::out_line(&n);
        }
    }
    for n in &o.not_yours {
        crate::commands::term::error(n);
    }
    if failed > 0 || !o.not_yours.is_empty() {
        return Err(CleanError::NotRemoved {
            count: failed + o.not_yours.len(),
            permission,
            dry_run: args.dry_run,
        });
    }
    Ok(())
}

fn cannot_remove(what: &str, e: &SysvError, dry_run: bool) -> String {
    let verb = if dry_run {
        "would not be allowed to remove"
    } else {
        "cannot remove"
    };
    if e.is_permission() {
        format!(
            "{verb} {what}: permission denied (only its owner, its creator or root may); run clean as that user"
        )
    } else if e.is_gone() {
        format!("{verb} {what}: it is already gone")
    } else {
        format!("{verb} {what}: {e}")
    }
}

fn clean_key(
    addr: &crate::mechanisms::wire::Address,
    args: &CleanArgs,
) -> Result<Outcome, CleanError> {
    let key = addr.key;
    let removals = match frame::probe(key)? {
        Probe::Absent => {
            return Ok(Outcome {
                notes: vec![format!("nothing to clean on key {key}")],
                ..Outcome::default()
            });
        }
        Probe::Foreign { why, .. } => return Err(CleanError::Foreign { key, why }),
        Probe::Starting { pid, .. } => return Err(FrameError::Starting { key, pid }.into()),
        Probe::NoPermission { uid, mode, .. } => {
            return Err(FrameError::denied(key, uid, mode).into());
        }
        // A name asked for is a name to match, as `send` matches it: the key may serve another.
        Probe::Channel { info, .. }
            if addr
                .name
                .as_ref()
                .is_some_and(|n| n.as_bytes() != info.name.as_slice()) =>
        {
            return Err(CleanError::OtherName {
                key,
                serves: frame::serves(&info),
                wanted: addr.name.clone().unwrap_or_default(),
            });
        }
        Probe::Channel {
            alive: true, info, ..
        } if !args.force => {
            return Err(CleanError::Alive {
                key,
                pid: info.receiver_pid,
            });
        }
        Probe::Channel { shmid, info, .. } => {
            frame::remove_channel(key, shmid, &info, args.dry_run)
        }
        Probe::Abandoned { shmid, pid } => frame::remove_abandoned(key, shmid, pid, args.dry_run),
    };
    Ok(Outcome {
        removals,
        ..Outcome::default()
    })
}

/// Every channel on the host whose receiver is dead, and what receivers that died setting up
/// left; live channels and foreign segments stay.
fn clean_stale(args: &CleanArgs) -> Result<Outcome, CleanError> {
    let rows = sysv::read_table(sysv::Kind::Shm).map_err(CleanError::Proc)?;
    let mut out = Outcome::default();
    for r in rows
        .iter()
        .filter(|r| r.num("size") as usize == frame::CONTROL_LEN)
        .filter(|r| args.channel.key.as_ref().is_none_or(|a| r.key() == a.key))
    {
        let key = r.key();
        match frame::probe(key) {
            Ok(Probe::Channel {
                alive: false,
                shmid,
                info,
                ..
            }) => out
                .removals
                .extend(frame::remove_channel(key, shmid, &info, args.dry_run)),
            Ok(Probe::Abandoned { shmid, pid }) => {
                out.removals
                    .extend(frame::remove_abandoned(key, shmid, pid, args.dry_run))
            }
            // Another user's channel we may not look into: the kernel's table still tells
            // whether its creator is gone and nobody is attached.
            Ok(Probe::NoPermission { uid, pid, .. })
                if r.num("nattch") == 0 && !crate::os::process_alive(pid) =>
            {
                let owner = crate::os::user_name(uid);
                let who = match uid {
                    0 => "root".to_string(),
                    _ => format!("{owner} or root"),
                };
                out.not_yours.push(format!(
                    "key {key}: a stale channel of {owner} (its receiver, pid {pid}, is gone), not yours to remove: only {who} can (`shmxfer clean --stale --key {key}` as {})",
                    if uid == 0 { "root" } else { "them" }
                ));
            }
            _ => {}
        }
    }
    if out.removals.is_empty() && out.not_yours.is_empty() {
        out.notes.push("no stale shmxfer channels".into());
    }
    Ok(out)
}

/// The original system's four objects, as its cleanup.py removed them: each only if its key
/// and shape (size, semaphore count) are the original's. A dry run lists them even while a
/// consumer runs.
fn clean_legacy(
    args: &CleanArgs,
    (content_key, size_key): (Key, Key),
) -> Result<Outcome, CleanError> {
    let mut out = Outcome::default();
    for (key, len) in [
        (content_key, legacy::CONTENT_LEN),
        (size_key, legacy::SIZE_LEN),
    ] {
        let Ok(shm) = Shm::open(key) else { continue };
        let stat = shm.stat().map_err(FrameError::from)?;
        if stat.size != len {
            out.notes.push(format!(
                "left key {key}: a {}-byte segment is not the original system's",
                stat.size
            ));
            continue;
        }
        // A dry run answers as the real run would: a consumer running is a refusal (75), as a
        // live receiver is for a native channel.
        if stat.nattch > 0 && !args.force {
            return Err(CleanError::LegacyInUse {
                key,
                nattch: stat.nattch,
            });
        }
        out.removals.push(removal(
            format!("shared memory {} (key {key})", shm.id()),
            args.dry_run,
            stat.perm,
            || shm.remove(),
        ));
    }
    for key in [content_key, size_key] {
        let Ok(set) = SemSet::open(key) else { continue };
        let stat = set.stat().map_err(FrameError::from)?;
        if stat.nsems != 1 {
            out.notes.push(format!(
                "left key {key}: a set of {} semaphores is not the original system's",
                stat.nsems
            ));
            continue;
        }
        out.removals.push(removal(
            format!("semaphore set {} (key {key})", set.id()),
            args.dry_run,
            stat.perm,
            || set.remove(),
        ));
    }
    if out.removals.is_empty() && out.notes.is_empty() {
        out.notes.push(format!(
            "nothing of the original system to clean (keys {content_key}, {size_key})"
        ));
    }
    Ok(out)
}

fn removal(
    what: String,
    dry_run: bool,
    perm: sysv::Perm,
    remove: impl FnOnce() -> sysv::Result<()>,
) -> Removal {
    frame::removal(what, dry_run, Ok(perm), remove)
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    #[command(flatten)]
    pub channel: ChannelArgs,
    /// Remove every shmxfer channel whose receiver is dead, and nothing else
    #[arg(long, conflicts_with = "force")]
    pub stale: bool,
    /// Remove the original system's four objects (keys 42 and 44)
    #[arg(long, conflicts_with = "stale")]
    pub legacy: bool,
    /// Remove the channel even though its receiver is alive
    #[arg(long)]
    pub force: bool,
    /// Print what would be removed; remove nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    #[command(flatten)]
    pub verbosity: Verbosity,
}
