//! Processes and users: liveness, attachment, stopped state (from `/proc`), pids and uids,
//! names through NSS.

use std::fs::File;
use std::io;

/// Whether a process with this pid exists (EPERM means it exists but is not ours). One
/// `kill(pid, 0)`: cheap enough for a connecting sender. A zombie counts as existing; where
/// that matters, see [`process_running`].
pub(crate) fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission; nothing is delivered.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether process `pid` exists and is not a zombie. A zombie still answers signal 0, but has
/// let go of everything and never acts again: what it held without `SEM_UNDO` (the original
/// producer's semaphores) is as good as a dead process's. Reads `/proc/PID/stat`, so it is
/// for the legacy protocol's checks, not for every connecting sender.
pub(crate) fn process_running(pid: i32) -> bool {
    process_alive(pid) && !matches!(process_state(pid), Some(b'Z' | b'X'))
}

/// Whether process `pid` has the segment `shmid` attached, from the kernel's map of the
/// process (a SysV segment shows as `/SYSV<key>` with the shmid in the inode column); a dead
/// or reused pid has no such mapping. `None` where nobody can tell: a pid outside our PID
/// namespace (0), or a live process whose map is closed to us (another user's, without
/// privilege).
pub(crate) fn attached(pid: i32, shmid: i32) -> Option<bool> {
    if pid <= 0 {
        return None;
    }
    match read_proc(&format!("/proc/{pid}/maps")) {
        Ok(maps) => Some(maps.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 6 && f[5].starts_with("/SYSV") && f[4] == shmid.to_string()
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(false),
        Err(_) if !process_alive(pid) => Some(false),
        Err(_) => None,
    }
}

/// Whether process `pid` is stopped (SIGSTOP, Ctrl-Z) or stopped by a tracer: state `T` or
/// `t` in `/proc/PID/stat`, which every user may read. A process that does not exist, or
/// whose state cannot be read, is not stopped.
pub(crate) fn process_stopped(pid: i32) -> bool {
    matches!(process_state(pid), Some(b'T' | b't'))
}

/// Whether a thread of process `pid` sleeps on the System V semaphore set `semid` in
/// `semop(2)` or `semtimedop(2)`, from `/proc/PID/task/TID/syscall`. The kernel shows a call's
/// arguments only while the thread sleeps in it (a runnable one reads `running`), and a thread
/// asleep in a semaphore call is queued on that set. False when gone; `None` when closed to us
/// (another user's process, without privilege).
pub(crate) fn asleep_on_semaphores(pid: i32, semid: i32) -> Option<bool> {
    if pid <= 0 {
        return Some(false);
    }
    let tasks = match std::fs::read_dir(format!("/proc/{pid}/task")) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(false),
        Err(_) => return None,
    };
    let mut closed = false;
    for t in tasks.flatten() {
        match std::fs::read_to_string(t.path().join("syscall")) {
            Ok(line) if semop_on(&line) == Some(semid) => return Some(true),
            Ok(_) => {}
            Err(e) => closed |= e.kind() == io::ErrorKind::PermissionDenied,
        }
    }
    (!closed).then_some(false)
}

/// As [`asleep_on_semaphores`], taking what we may not see as not asleep.
pub(crate) fn sleeping_on_semaphores(pid: i32, semid: i32) -> bool {
    asleep_on_semaphores(pid, semid) == Some(true)
}

/// The processes (other than this one) with a thread asleep on the System V semaphore set
/// `semid`, as [`sleeping_on_semaphores`] tells, among all we may look at.
pub(crate) fn sleepers_on_semaphores(semid: i32) -> Vec<i32> {
    let me = getpid();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && sleeping_on_semaphores(pid, semid))
        .collect()
}

/// The set a `/proc/…/syscall` line shows a semaphore call on.
fn semop_on(line: &str) -> Option<i32> {
    let mut fields = line.split_whitespace();
    let nr: libc::c_long = fields.next()?.parse().ok()?;
    if nr != libc::SYS_semop && nr != libc::SYS_semtimedop {
        return None;
    }
    let semid = fields.next()?.strip_prefix("0x")?;
    i32::try_from(u64::from_str_radix(semid, 16).ok()?).ok()
}

/// The state letter of process `pid` from `/proc/PID/stat` (`R`, `S`, `T`, `Z`…), if it can
/// be read.
fn process_state(pid: i32) -> Option<u8> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name (in parentheses) may hold anything, spaces and `)` included: the state
    // is the first field after the last `)`.
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat.get(close + 2).copied()
}

/// Reads a /proc file in large reads (its size says 0, so `read_to_string` would start with
/// tiny ones, each of which makes the kernel format the file again).
fn read_proc(path: &str) -> io::Result<String> {
    use std::io::Read;
    let mut f = File::open(path)?;
    let mut buf = Vec::with_capacity(64 << 10);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        match f.read(&mut chunk)? {
            0 => break,
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// As [`attached`], taking a live process whose map we cannot read as attached.
pub(crate) fn process_attached(pid: i32, shmid: i32) -> bool {
    attached(pid, shmid).unwrap_or_else(|| process_alive(pid))
}

/// The effective user id.
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// This process's pid.
pub(crate) fn getpid() -> i32 {
    std::process::id() as i32
}

/// The user name for a uid, through NSS as `ls` and `ipcs` look it up (local files, LDAP,
/// systemd's dynamic users…); the number where there is none.
pub(crate) fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore)] // NSS, through libc.
    fn users_are_named_through_nss_and_numbered_when_unknown() {
        assert_eq!(user_name(0), "root");
        assert_eq!(user_name(4_000_000_000), "4000000000");
    }
}
