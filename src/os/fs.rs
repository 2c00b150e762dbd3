//! The few file-system calls output needs: renames and links that never replace, O_DIRECT,
//! read-ahead advice, directories opened without following links.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Renames `from` to `to` unless `to` exists (then fails with `AlreadyExists`). Falls back to
/// link + unlink on filesystems without RENAME_NOREPLACE.
pub(crate) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_from = std::ffi::CString::new(from.as_os_str().as_bytes())?;
    let c_to = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both paths are NUL-terminated C strings that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            std::fs::hard_link(from, to)?;
            std::fs::remove_file(from)
        }
        _ => Err(err),
    }
}

/// Gives an unnamed (`O_TMPFILE`) file the name `to`, failing with `AlreadyExists` rather
/// than replace anything there. Through `/proc/self/fd`, which needs no privilege; where /proc
/// is not mounted, with `AT_EMPTY_PATH`, which works where we are privileged enough for it.
pub(crate) fn link_unnamed(file: &File, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let proc_path = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let to = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    match linkat(libc::AT_FDCWD, &proc_path, &to, libc::AT_SYMLINK_FOLLOW) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            linkat(file.as_raw_fd(), c"", &to, libc::AT_EMPTY_PATH)
        }
        r => r,
    }
}

fn linkat(dirfd: i32, from: &std::ffi::CStr, to: &std::ffi::CStr, flags: i32) -> io::Result<()> {
    // SAFETY: both paths are NUL-terminated C strings that outlive the call; `dirfd` is
    // AT_FDCWD or a descriptor the caller holds open.
    let r = unsafe { libc::linkat(dirfd, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), flags) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The size of a memory page (`shmall` counts pages), 4096 where the system does not say.
pub(crate) fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(4096)
}

/// What O_DIRECT writes must be aligned to (buffer address, length and file offset); 4096
/// covers both 512- and 4096-byte logical blocks.
pub(crate) const DIRECT_ALIGN: usize = 4096;

/// Turns O_DIRECT on or off for an open file (Linux lets F_SETFL change it). Fails with
/// EINVAL where the filesystem does not support it.
pub(crate) fn set_direct(file: &File, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFL takes no argument and only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: F_SETFL takes an int of flags; it changes only this descriptor's status flags.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Tells the kernel we read `file` front to back once, so it reads ahead aggressively.
pub(crate) fn advise_sequential(file: &File) {
    // SAFETY: posix_fadvise only takes an fd and integers; failure is harmless (advice only).
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
}

/// Opens the directory `name` inside the directory `parent`, creating it first if it is not
/// there, and never following a symlink (nor anything else that is not a directory) in its
/// place: `ELOOP` or `ENOTDIR` then. The descriptor pins the directory, so later paths
/// through it (`/proc/self/fd/N/…`) cannot be redirected by a rename or a planted link.
pub(crate) fn open_subdir(
    parent: &std::os::fd::OwnedFd,
    name: &std::ffi::OsStr,
) -> io::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    match nix::sys::stat::mkdirat(parent, name, Mode::from_bits_truncate(0o777)) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
    Ok(nix::fcntl::openat(parent, name, flags, Mode::empty())?)
}
