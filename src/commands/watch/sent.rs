//! The sent list: which versions of which files a drop folder has had committed, so that a
//! restarted watcher sends none of them again. It is state, not a file in the folder: it
//! lives where the watcher's user keeps state (`--state FILE`, else `$STATE_DIRECTORY`,
//! `$XDG_STATE_HOME/shmxfer` or `~/.local/state/shmxfer`), is opened without following a
//! link, and is used only when it is a regular file of that user that nobody else may
//! write. An entry is a file's identity (device, inode, size and mtime), not its name: a new
//! file under an old name is sent, a file renamed inside the folder is not sent again.
//!
//! On disk: one record per committed file, `DEV INO SIZE MTIME_S MTIME_NS PATH`, each ended
//! by a NUL (paths may hold newlines); a record cut short by a crash is ignored. Appended as
//! files are committed, rewritten (a new file renamed over the old) when it holds more
//! entries for files that are gone than for files still there.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;

use crate::mechanisms::text::escape_path;

/// What tells one version of a file from another, as the sent list keys it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ident {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
}

/// The list, open and locked (one watcher per list).
pub struct SentList {
    path: PathBuf,
    parent: OwnedFd,
    name: OsString,
    file: Flock<File>,
    ids: HashMap<Ident, Vec<u8>>,
    /// Records appended since the list was last written whole, and how many it held then.
    appended: usize,
    written: usize,
    /// Whether the list was empty when opened (a first run: an old in-folder list may seed it).
    fresh: bool,
}

/// Where the list of a watcher of `dirs` (their full paths) goes when no `--state` is given:
/// the service's state directory under systemd, else the user's (XDG), made if missing (mode
/// 0700). The name is the first folder's, with a digest of all their full paths.
pub fn default_path(dirs: &[PathBuf]) -> Result<PathBuf, String> {
    let var = |v: &str| std::env::var_os(v).filter(|s| !s.is_empty());
    let base = if let Some(s) = var("STATE_DIRECTORY") {
        let first = s
            .as_bytes()
            .split(|&c| c == b':')
            .next()
            .unwrap_or_default();
        PathBuf::from(std::ffi::OsStr::from_bytes(first))
    } else if let Some(x) = var("XDG_STATE_HOME").filter(|x| Path::new(x).is_absolute()) {
        Path::new(&x).join("shmxfer")
    } else if let Some(h) = var("HOME") {
        Path::new(&h).join(".local/state/shmxfer")
    } else {
        return Err(
            "no state directory for the sent list ($STATE_DIRECTORY, $XDG_STATE_HOME and $HOME are unset): give --state FILE"
                .into(),
        );
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&base)
        .map_err(|e| {
            format!(
                "{}: cannot make the state directory: {}; give --state FILE",
                escape_path(&base),
                crate::mechanisms::text::io_text(&e)
            )
        })?;
    let mut all = Vec::new();
    for d in dirs {
        all.extend_from_slice(d.as_os_str().as_bytes());
        all.push(0);
    }
    let digest = crate::mechanisms::wire::hex(&crate::mechanisms::digest::md5(&all));
    let stem: String = dirs
        .first()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "root".into())
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                true => c,
                false => '_',
            },
        )
        .take(40)
        .collect();
    Ok(base.join(format!("watch-{stem}-{}.sent", &digest[..12])))
}

impl std::fmt::Debug for SentList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SentList({}, {} entries)",
            escape_path(&self.path),
            self.ids.len()
        )
    }
}

impl SentList {
    /// Opens (or creates, mode 0600) the list at `path` and locks it.
    ///
    /// # Errors
    /// A message saying why, and what to do: a link, a special file, a file of another user
    /// or one others may write, another watcher holding it, or an I/O error.
    pub fn open(path: &Path) -> Result<SentList, String> {
        let shown = escape_path(path);
        let name = path
            .file_name()
            .ok_or_else(|| format!("--state {shown}: give a file, not a directory"))?
            .to_os_string();
        let parent_path = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let parent = nix::fcntl::open(
            parent_path,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| format!("{}: {}", escape_path(parent_path), e.desc()))?;
        // Locked, and still the file at the path (a rewrite may have renamed a new one over
        // it between our open and our lock): the lock file dance.
        for _ in 0..8 {
            let file = open_checked(&parent, &name, &shown)?;
            let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(f) => f,
                Err((_, Errno::EWOULDBLOCK)) => {
                    return Err(format!(
                        "{shown}: another `shmxfer send --watch` uses this sent list; stop it, or give this one its own --state FILE"
                    ));
                }
                Err((_, e)) => return Err(format!("{shown}: cannot lock: {}", e.desc())),
            };
            if still_at(&parent, &name, &file) {
                return SentList::load(path, parent, name, file);
            }
        }
        Err(format!(
            "{shown}: keeps being replaced; give another --state FILE"
        ))
    }

    fn load(
        path: &Path,
        parent: OwnedFd,
        name: OsString,
        mut file: Flock<File>,
    ) -> Result<SentList, String> {
        let mut raw = Vec::new();
        file.read_to_end(&mut raw).map_err(|e| {
            format!(
                "{}: {}",
                escape_path(path),
                crate::mechanisms::text::io_text(&e)
            )
        })?;
        let ids: HashMap<Ident, Vec<u8>> =
            raw.split(|&c| c == 0).filter_map(parse_record).collect();
        let written = ids.len();
        Ok(SentList {
            path: path.to_path_buf(),
            parent,
            name,
            file,
            fresh: raw.is_empty(),
            ids,
            appended: 0,
            written,
        })
    }

    /// Where the list is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the list was empty when opened.
    pub fn fresh(&self) -> bool {
        self.fresh
    }

    pub fn contains(&self, id: &Ident) -> bool {
        self.ids.contains_key(id)
    }

    /// Records that the version `id` of the file at `rel` was committed.
    pub fn record(&mut self, id: Ident, rel: &[u8]) -> std::io::Result<()> {
        if self.ids.insert(id, rel.to_vec()).is_none() {
            self.appended += 1;
        }
        self.file.write_all(&record(&id, rel))
    }

    /// Whether enough was appended since the last rewrite that pruning may pay.
    pub fn wants_pruning(&self) -> bool {
        self.appended > self.written.max(1024)
    }

    /// Keeps only the entries of files still there (`present`), rewriting the list if any
    /// went.
    pub fn keep_only(&mut self, present: &dyn Fn(&Ident) -> bool) -> Result<(), String> {
        let before = self.ids.len();
        self.ids.retain(|id, _| present(id));
        self.appended = 0;
        self.written = self.ids.len();
        if self.ids.len() == before {
            return Ok(());
        }
        self.rewrite().map_err(|e| {
            format!(
                "{}: cannot rewrite: {}",
                escape_path(&self.path),
                crate::mechanisms::text::io_text(&e)
            )
        })
    }

    /// Writes the list whole into a new file and renames it over the old one, so that a
    /// crash leaves one or the other, never half of one.
    fn rewrite(&mut self) -> std::io::Result<()> {
        let tmp = OsString::from(format!(
            ".{}.new-{}",
            self.name.to_string_lossy(),
            std::process::id()
        ));
        let _ = nix::unistd::unlinkat(
            &self.parent,
            tmp.as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        let flags = OFlag::O_WRONLY
            | OFlag::O_CREAT
            | OFlag::O_EXCL
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_APPEND;
        let fd = nix::fcntl::openat(
            &self.parent,
            tmp.as_os_str(),
            flags,
            Mode::from_bits_truncate(0o600),
        )?;
        let mut f = File::from(fd);
        let mut all = Vec::new();
        for (id, rel) in &self.ids {
            all.extend_from_slice(&record(id, rel));
        }
        f.write_all(&all)?;
        f.sync_data()?;
        let f = Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e)?;
        nix::fcntl::renameat(
            &self.parent,
            tmp.as_os_str(),
            &self.parent,
            self.name.as_os_str(),
        )?;
        self.file = f;
        Ok(())
    }
}

/// Opens the list through its directory's descriptor: never a link, never blocking (a FIFO
/// there must not wedge the watcher), and only a regular file of ours nobody else may write.
fn open_checked(parent: &OwnedFd, name: &OsString, shown: &str) -> Result<File, String> {
    let flags = OFlag::O_RDWR
        | OFlag::O_CREAT
        | OFlag::O_APPEND
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::openat(parent, name.as_os_str(), flags, Mode::from_bits_truncate(0o600))
        .map_err(|e| match e {
            Errno::ELOOP => format!(
                "{shown}: the sent list is a symbolic link; refusing to follow it: remove it, or give --state FILE"
            ),
            e => format!("{shown}: cannot open the sent list: {}", e.desc()),
        })?;
    let file = File::from(fd);
    let md = file
        .metadata()
        .map_err(|e| format!("{shown}: {}", crate::mechanisms::text::io_text(&e)))?;
    let me = crate::os::geteuid();
    let why = if !md.file_type().is_file() {
        Some("is not a regular file".to_string())
    } else if md.uid() != me {
        Some(format!(
            "belongs to {}, not to you",
            crate::os::user_name(md.uid())
        ))
    } else if md.mode() & 0o022 != 0 {
        Some(format!(
            "may be written by others (mode {:04o})",
            md.mode() & 0o7777
        ))
    } else {
        None
    };
    match why {
        Some(why) => Err(format!(
            "{shown}: the sent list {why}; a watcher trusts only its own: remove it, or give --state FILE"
        )),
        None => Ok(file),
    }
}

/// Whether `name` in `parent` is still the file we hold (not replaced since we opened it).
fn still_at(parent: &OwnedFd, name: &OsString, held: &File) -> bool {
    let Ok(md) = held.metadata() else {
        return false;
    };
    nix::sys::stat::fstatat(
        parent.as_fd(),
        name.as_os_str(),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .is_ok_and(|st| st.st_dev == md.dev() && st.st_ino == md.ino())
}

fn record(id: &Ident, rel: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{} {} {} {} {} ",
        id.dev, id.ino, id.size, id.mtime.0, id.mtime.1
    )
    .into_bytes();
    r.extend_from_slice(rel);
    r.push(0);
    r
}

fn parse_record(r: &[u8]) -> Option<(Ident, Vec<u8>)> {
    let mut parts = r.splitn(6, |&c| c == b' ');
    let mut num = || std::str::from_utf8(parts.next()?).ok();
    let dev = num()?.parse().ok()?;
    let ino = num()?.parse().ok()?;
    let size = num()?.parse().ok()?;
    let mtime = (num()?.parse().ok()?, num()?.parse().ok()?);
    let rel = parts.next()?.to_vec();
    Some((
        Ident {
            dev,
            ino,
            size,
            mtime,
        },
        rel,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> Ident {
        Ident {
            dev: 1,
            ino: n,
            size: 10 * n,
            mtime: (1_700_000_000, n as i64),
        }
    }

    #[test]
    fn a_list_keeps_what_was_recorded_across_opens_and_prunes_what_is_gone() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("sent");
        let mut l = SentList::open(&p).unwrap();
        assert!(l.fresh());
        l.record(id(1), b"a with space\nand newline").unwrap();
        l.record(id(2), b"sub/b").unwrap();
        // A second watcher on the same list is refused while the first holds it.
        let e = SentList::open(&p).unwrap_err();
        assert!(e.contains("another `shmxfer send --watch`"), "{e}");
        drop(l);
        // A record cut short by a crash is ignored.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"1 3 30")
            .unwrap();
        let mut l = SentList::open(&p).unwrap();
        assert!(!l.fresh());
        assert!(l.contains(&id(1)) && l.contains(&id(2)) && !l.contains(&id(3)));
        l.keep_only(&|i| i.ino == 2).unwrap();
        drop(l);
        let l = SentList::open(&p).unwrap();
        assert!(!l.contains(&id(1)) && l.contains(&id(2)));
        assert_eq!(
            std::fs::metadata(&p).unwrap().mode() & 0o777,
            0o600,
            "a rewrite keeps the list private"
        );
    }

    #[test]
    fn a_list_that_is_a_link_or_writable_by_others_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("elsewhere");
        std::fs::write(&target, b"").unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = SentList::open(&link).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        let open = t.path().join("open");
        std::fs::write(&open, b"").unwrap();
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        let e = SentList::open(&open).unwrap_err();
        assert!(e.contains("may be written by others (mode 0666)"), "{e}");
        let fifo = t.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let e = SentList::open(&fifo).unwrap_err();
        assert!(e.contains("is not a regular file"), "{e}");
    }
}
