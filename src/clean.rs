//! `shmxfer clean`: remove a channel's leftover IPC objects, and never anything that is not
//! shmxfer's (or, with `--legacy`, the original system's).

use crate::cli::CleanArgs;
use crate::frame::{self, FrameError, Probe};
use crate::sysv::{self, Key, SemSet, Shm};
use crate::{exit, legacy};

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
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("cannot read the kernel's IPC tables: {0}")]
    Proc(std::io::Error),
}

impl CleanError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CleanError::Alive { .. } | CleanError::LegacyInUse { .. } => exit::TEMPFAIL,
            CleanError::Foreign { .. } => exit::PROTOCOL,
            CleanError::Frame(e) => e.exit_code(),
            CleanError::Proc(_) => exit::OSERR,
        }
    }
}

pub fn run(args: CleanArgs) -> i32 {
    let result = if args.legacy {
        clean_legacy(&args)
    } else if args.stale {
        clean_stale(&args)
    } else {
        match args.channel.native_key() {
            Ok(key) => clean_key(key, &args),
            Err(e) => {
                crate::error(e);
                return exit::USAGE;
            }
        }
    };
    match result {
        Ok(lines) => {
            let quiet = args.verbosity.quiet;
            for l in lines {
                if !quiet && !crate::out_line(&l) {
                    break;
                }
            }
            exit::OK
        }
        Err(e) => {
            crate::error(&e);
            e.exit_code()
        }
    }
}

fn verb(dry_run: bool) -> &'static str {
    if dry_run { "would remove" } else { "removed" }
}

fn clean_key(key: Key, args: &CleanArgs) -> Result<Vec<String>, CleanError> {
    match frame::probe(key)? {
        Probe::Absent => Ok(vec![format!("nothing to clean on key {key}")]),
        Probe::Foreign { why, .. } => Err(CleanError::Foreign { key, why }),
        Probe::Starting { pid, .. } => Err(FrameError::Starting { key, pid }.into()),
        Probe::NoPermission { uid, mode, .. } => Err(FrameError::PermissionDenied {
            key,
            owner: sysv::user_name(uid),
            mode,
        }
        .into()),
        Probe::Channel {
            alive: true, info, ..
        } if !args.force => Err(CleanError::Alive {
            key,
            pid: info.receiver_pid,
        }),
        Probe::Channel { shmid, info, .. } => {
            Ok(frame::remove_channel(key, shmid, &info, args.dry_run)
                .into_iter()
                .map(|l| format!("{} {l}", verb(args.dry_run)))
                .collect())
        }
    }
}

/// Every channel on the host whose receiver is dead; live ones and foreign segments stay.
fn clean_stale(args: &CleanArgs) -> Result<Vec<String>, CleanError> {
    let rows = sysv::read_table(sysv::Kind::Shm).map_err(CleanError::Proc)?;
    let mut lines = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.num("size") as usize == frame::CONTROL_LEN)
    {
        let key = r.key();
        if let Ok(Probe::Channel {
            alive: false,
            shmid,
            info,
        }) = frame::probe(key)
        {
            lines.extend(
                frame::remove_channel(key, shmid, &info, args.dry_run)
                    .into_iter()
                    .map(|l| format!("{} {l}", verb(args.dry_run))),
            );
        }
    }
    if lines.is_empty() {
        lines.push("no stale shmxfer channels".into());
    }
    Ok(lines)
}

/// The original system's four objects, as its cleanup.py removed them: each only if its key
/// and shape (size, semaphore count) are the original's.
fn clean_legacy(args: &CleanArgs) -> Result<Vec<String>, CleanError> {
    let mut lines = Vec::new();
    let mut segments = Vec::new();
    let (content_key, size_key) = args.channel.legacy_keys();
    for (key, len) in [
        (content_key, legacy::CONTENT_LEN),
        (size_key, legacy::SIZE_LEN),
    ] {
        let Ok(shm) = Shm::open(key) else { continue };
        let stat = shm.stat().map_err(FrameError::from)?;
        if stat.size != len {
            lines.push(format!(
                "left key {key}: a {}-byte segment is not the original system's",
                stat.size
            ));
            continue;
        }
        if stat.nattch > 0 && !args.force {
            return Err(CleanError::LegacyInUse {
                key,
                nattch: stat.nattch,
            });
        }
        segments.push((key, shm));
    }
    for (key, shm) in segments {
        if args.dry_run || shm.remove().is_ok() {
            lines.push(format!(
                "{} shared memory {} (key {key})",
                verb(args.dry_run),
                shm.id()
            ));
        }
    }
    for key in [content_key, size_key] {
        let Ok(set) = SemSet::open(key) else { continue };
        let stat = set.stat().map_err(FrameError::from)?;
        if stat.nsems != 1 {
            lines.push(format!(
                "left key {key}: a set of {} semaphores is not the original system's",
                stat.nsems
            ));
            continue;
        }
        if args.dry_run || set.remove().is_ok() {
            lines.push(format!(
                "{} semaphore set {} (key {key})",
                verb(args.dry_run),
                set.id()
            ));
        }
    }
    if lines.is_empty() {
        lines.push(format!(
            "nothing of the original system to clean (keys {content_key}, {size_key})"
        ));
    }
    Ok(lines)
}
