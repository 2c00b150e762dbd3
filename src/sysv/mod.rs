//! Thin owned wrappers over System V IPC, called through `libc`. This and `os` (the other
//! system calls) are the only modules with `unsafe`; everything above them sees safe types:
//! a [`Mapping`] detaches on drop and bounds-checks every access, a [`SemSet`] knows its id.

//!
//! By subject: `shm`, `sem`, `tables`; every item is
//! also here at the top, as `crate::sysv::Shm` and so on.

use std::fmt;
use std::io;

mod sem;
mod shm;
mod tables;

pub(crate) use sem::*;
pub(crate) use shm::*;
pub(crate) use tables::*;

/// A System V IPC key. Keys are 32-bit; `ipcs` prints them as unsigned hex, `/proc/sysvipc`
/// as signed decimal, so we keep the unsigned value and convert at the edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(pub u32);

impl Key {
    /// The key as libc's `key_t` (the same bits, signed).
    pub fn raw(self) -> libc::key_t {
        self.0 as libc::key_t
    }
    /// The key `n` above this one, or `None` where it would wrap to `IPC_PRIVATE`.
    pub fn offset(self, n: u32) -> Option<Key> {
        self.0.checked_add(n).filter(|&k| k != 0).map(Key)
    }
    /// A key as `/proc/sysvipc` prints it (signed decimal).
    pub fn from_raw(raw: i64) -> Key {
        Key(raw as i32 as u32)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:08x}", self.0)
    }
}

/// What a failed call was doing and to which object, with the errno that explains it.
#[derive(Debug, thiserror::Error)]
#[error("{call}({target}): {}", io_words(source))]
pub struct SysvError {
    /// The call that failed, as `semctl(IPC_STAT)`.
    pub call: &'static str,
    /// The key or id it was called on.
    pub target: Target,
    #[source]
    /// The errno.
    pub source: io::Error,
}

/// An I/O error in words: its errno's text where it has one (as `strerror` says it; io::Error's
/// Display adds " (os error N)", which is for programmers), else its own message.
pub(crate) fn io_words(e: &io::Error) -> String {
    match (e.raw_os_error(), e.get_ref()) {
        (Some(errno), _) => nix::errno::Errno::from_raw(errno).desc().to_string(),
        (None, Some(inner)) => inner.to_string(),
        (None, None) => e.kind().to_string(),
    }
}

#[derive(Debug, Clone, Copy)]
/// What a failed call was called on.
pub enum Target {
    /// An object looked up by key.
    Key(Key),
    /// An object by its id.
    Id(i32),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Key(k) => write!(f, "key {k}"),
            Target::Id(id) => write!(f, "id {id}"),
        }
    }
}

impl SysvError {
    fn last(call: &'static str, target: Target) -> SysvError {
        SysvError {
            call,
            target,
            source: io::Error::last_os_error(),
        }
    }
    /// A permission failure found without making the call (a dry run).
    pub fn denied(call: &'static str) -> SysvError {
        SysvError {
            call,
            target: Target::Id(-1),
            source: io::Error::from_raw_os_error(libc::EPERM),
        }
    }
    /// The errno behind the failure.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
    /// The object is gone (removed by `ipcrm`, a peer, or RemoveIPC) or never existed.
    pub fn is_gone(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::EIDRM) | Some(libc::EINVAL) | Some(libc::ENOENT)
        )
    }
    /// Whether the kernel refused for lack of permission (EACCES, EPERM).
    pub fn is_permission(&self) -> bool {
        matches!(self.errno(), Some(libc::EACCES) | Some(libc::EPERM))
    }
}

/// A SysV call's result.
pub(crate) type Result<T> = std::result::Result<T, SysvError>;

/// Owner, mode and times common to every IPC object, as `IPC_STAT` reports them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Perm {
    /// The owner's uid.
    pub uid: u32,
    /// The creator's uid (the owner may have been changed since).
    pub cuid: u32,
    /// The creator's gid.
    pub cgid: u32,
    /// The permission bits (`0o777` part only).
    pub mode: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_keys_are_read_as_unsigned() {
        assert_eq!(Key::from_raw(-356559210).to_string(), "0xeabf5696");
        assert_eq!(Key::from_raw(42).0, 42);
    }

    #[test]
    #[cfg_attr(miri, ignore)] // The kernel's: shmget, shmat.
    fn copies_in_and_out_of_a_segment_are_exact_at_every_word_and_length() {
        // IPC_PRIVATE: a segment of this test's own, at no key; removed right away (it lives
        // on, attached, until the mapping is dropped).
        let shm = Shm::create(Key(0), 4096, 0o600).unwrap();
        let map = shm.attach(true).unwrap();
        shm.remove().unwrap();
        let data: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
        for off in (0..17).step_by(8) {
            for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 200] {
                map.write(off, &data[..len]).unwrap();
                let mut back = vec![0u8; len];
                map.read(off, &mut back).unwrap();
                assert_eq!(back, &data[..len], "offset {off}, length {len}");
            }
        }
        assert!(map.write(4090, &data[..7]).is_err());
        assert!(map.write(4088, &data[..9]).is_err());
        assert!(
            map.write(3, &data[..1]).is_err(),
            "copies go by aligned words"
        );
    }

    #[test]
    fn key_offset_never_wraps_to_ipc_private() {
        assert_eq!(Key(0xffff_ffff).offset(1), None);
        assert_eq!(Key(5).offset(1), Some(Key(6)));
    }

    #[test]
    fn table_rows_are_read_by_column_name() {
        let t = "       key      shmid perms       size\n        42          7   600    5000000\n";
        let rows = parse_table(t);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].num("shmid"), 7);
        assert_eq!(rows[0].get("perms"), Some("600"));
        assert_eq!(rows[0].key(), Key(42));
    }
}
