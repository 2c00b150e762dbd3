//! The watched directories, held by descriptor: each is opened once (a subdirectory through
//! its parent's descriptor, never following a link), watched through that descriptor
//! (`/proc/self/fd/N`), and every file in it is looked at, opened and removed relative to it.
//! A rename or a planted link after that cannot point the watcher anywhere else.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use nix::sys::stat::{FileStat, Mode, SFlag};

use super::sent::Ident;
use crate::mechanisms::text::escape_path;
use crate::protocols::sender::SendError;

/// One file in one watched directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Name {
    pub dir: usize,
    pub name: OsString,
}

/// A file's identity and times, from `fstat`: what tells that it changed (tar's and rsync's
/// test), and what must still hold when it is removed after it was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub nlink: u64,
}

impl Stamp {
    pub fn of_stat(s: &FileStat) -> Stamp {
        Stamp {
            dev: s.st_dev,
            ino: s.st_ino,
            size: s.st_size as u64,
            mtime: (s.st_mtime, s.st_mtime_nsec),
            ctime: (s.st_ctime, s.st_ctime_nsec),
            nlink: s.st_nlink,
        }
    }
    fn of_meta(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            nlink: m.nlink(),
        }
    }
    pub fn ident(&self) -> Ident {
        Ident {
            dev: self.dev,
            ino: self.ino,
            size: self.size,
            mtime: self.mtime,
        }
    }
    /// Whether it is the same version of the same file: inode, size and both times.
    pub fn same_version(&self, o: &Stamp) -> bool {
        (self.dev, self.ino, self.size, self.mtime, self.ctime)
            == (o.dev, o.ino, o.size, o.mtime, o.ctime)
    }
}

/// What the directories said.
#[derive(Debug)]
pub enum Seen {
    /// Closed after writing, or moved in: complete, as far as its writer is concerned.
    Complete(Name),
    /// Written to: a file still settling starts its clock again.
    Modified(Name),
    /// Found by looking (at startup, in a new directory, after lost events): it settles first.
    Found(Name, Stamp),
    /// The kernel dropped events: every directory is looked at again.
    Overflow,
}

/// A file opened for sending, or why not.
pub enum Opened {
    File(File, Stamp),
    /// No longer there: nothing to do.
    Gone,
    /// Not a file a drop folder sends (a link, a special file, a file with other names):
    /// one line said so.
    Skip,
    Failed(SendError),
}

/// What became of a removal after a commit.
pub enum Removal {
    Removed,
    /// Another version is there now: it is kept (and sent in its turn).
    Changed,
    Gone,
    Failed(Errno),
}

struct Dir {
    root: usize,
    /// Relative to the root, for naming.
    rel: PathBuf,
    /// As the user would write it, for messages.
    shown: PathBuf,
    fd: OwnedFd,
}

pub struct Folder {
    inotify: Inotify,
    dirs: Vec<Option<Dir>>,
    by_wd: HashMap<WatchDescriptor, usize>,
    /// Each directory held, by (device, inode): one that shows up again (renamed, or looked
    /// at again) is renamed in place, not watched twice.
    held: HashMap<(u64, u64), usize>,
    /// The directories being looked through, outermost first.
    visiting: Vec<usize>,
    recursive: bool,
    allow_hardlinks: bool,
    quiet: bool,
    /// What was already said to be skipped: (directory, name, inode).
    said: HashSet<(usize, OsString, u64)>,
}

fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ONLYDIR
}

/// Where version 0.1 kept its sent list: in the folder.
const OLD_LIST: &str = ".shmxfer-sent";

/// Names a drop folder never sends: hidden ones, where rsync, scp and editors write a file
/// before they rename it into place.
fn ignored(name: &OsStr) -> bool {
    name.as_bytes().starts_with(b".")
}

fn kind(mode: u32) -> &'static str {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR | SFlag::S_IFBLK => "a device",
        SFlag::S_IFDIR => "a directory",
        _ => "not a regular file",
    }
}

fn is_regular(mode: u32) -> bool {
    mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits()
}

fn is_dir(mode: u32) -> bool {
    mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits()
}

impl Folder {
    pub fn new(recursive: bool, allow_hardlinks: bool, quiet: bool) -> Result<Folder, String> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| format!("cannot watch: {}", e.desc()))?;
        Ok(Folder {
            inotify,
            dirs: Vec::new(),
            by_wd: HashMap::new(),
            held: HashMap::new(),
            visiting: Vec::new(),
            recursive,
            allow_hardlinks,
            quiet,
            said: HashSet::new(),
        })
    }

    /// Opens and watches the folder `path` (followed, as the user named it), and returns
    /// what is in it.
    /// Its slot comes back with what was found.
    pub fn add_root(&mut self, root: usize, path: &Path) -> Result<(usize, Vec<Seen>), Errno> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let mut seen = Vec::new();
        let at = self.dirs.len();
        self.adopt(root, PathBuf::new(), path.to_path_buf(), fd, &mut seen);
        Ok((at, seen))
    }

    /// The sent list version 0.1 kept in the folder itself (`DIR/.shmxfer-sent`,
    /// NUL-separated paths), read once to seed the new one, and only if it can be trusted:
    /// a regular file of ours that nobody else may write, not a link.
    pub fn old_list(&self, at: usize) -> Result<Option<Vec<u8>>, String> {
        use std::io::Read;
        let Some(d) = self.dir(at) else {
            return Ok(None);
        };
        let shown = escape_path(&d.shown.join(OLD_LIST));
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC;
        let file = match nix::fcntl::openat(&d.fd, OLD_LIST, flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => return Err(format!("{shown}: a symbolic link; not read")),
            Err(e) => return Err(format!("{shown}: {}; not read", e.desc())),
        };
        let md = file
            .metadata()
            .map_err(|e| format!("{shown}: {}", crate::mechanisms::text::io_text(&e)))?;
        if !md.file_type().is_file() || md.uid() != crate::os::geteuid() || md.mode() & 0o022 != 0 {
            return Err(format!(
                "{shown}: not a regular file of yours that only you may write; not read"
            ));
        }
        let mut raw = Vec::new();
        file.take(64 << 20)
            .read_to_end(&mut raw)
            .map_err(|e| format!("{shown}: {}", crate::mechanisms::text::io_text(&e)))?;
        Ok(Some(raw))
    }

    /// The directory's slot: watched through its descriptor, then looked through.
    fn adopt(
        &mut self,
        root: usize,
        rel: PathBuf,
        shown: PathBuf,
        fd: OwnedFd,
        out: &mut Vec<Seen>,
    ) {
        let at = self.dirs.len();
        if let Ok(st) = nix::sys::stat::fstat(&fd) {
            self.held.insert((st.st_dev, st.st_ino), at);
        }
        let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        match self.inotify.add_watch(Path::new(&proc_path), mask()) {
            Ok(wd) => {
                self.by_wd.insert(wd, at);
            }
            Err(e) => crate::commands::term::warn(
                self.quiet,
                format_args!("cannot watch {}: {}", escape_path(&shown), e.desc()),
            ),
        }
        self.dirs.push(Some(Dir {
            root,
            rel,
            shown,
            fd,
        }));
        self.look(at, out);
    }

    /// Lists directory `at`, sorted: regular files are found, subdirectories watched (with
    /// `-r`), anything else said once.
    fn look(&mut self, at: usize, out: &mut Vec<Seen>) {
        self.visiting.push(at);
        self.look_inside(at, out);
        self.visiting.pop();
    }

    fn look_inside(&mut self, at: usize, out: &mut Vec<Seen>) {
        let Some(d) = &self.dirs[at] else { return };
        let Ok(mut listing) = nix::dir::Dir::openat(
            &d.fd,
            ".",
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            return;
        };
        let mut names: Vec<OsString> = listing
            .iter()
            .flatten()
            .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
            .filter(|n| n != "." && n != ".." && !ignored(n))
            .collect();
        names.sort();
        for name in names {
            let n = Name { dir: at, name };
            match self.stat(&n) {
                Ok(st) if is_dir(st.st_mode) => self.subdir(&n, &st, out),
                Ok(st) if is_regular(st.st_mode) => out.push(Seen::Found(n, Stamp::of_stat(&st))),
                Ok(st) => self.skip(&n, st.st_ino, kind(st.st_mode), ""),
                Err(_) => {}
            }
        }
    }

    /// A directory inside a watched one: watched too with `-r` (opened through its parent,
    /// never through a link), else said once.
    fn subdir(&mut self, n: &Name, st: &FileStat, out: &mut Vec<Seen>) {
        if !self.recursive {
            return self.skip(n, st.st_ino, "a directory", " (-r watches subdirectories)");
        }
        let Some(parent) = &self.dirs[n.dir] else {
            return;
        };
        let (rel, shown) = (parent.rel.join(&n.name), parent.shown.join(&n.name));
        if let Some(&at) = self.held.get(&(st.st_dev, st.st_ino)) {
            // Held already: renamed inside the tree, or looked at again after lost events;
            // or a directory above it mounted here again, which is not walked twice.
            if self.visiting.contains(&at) {
                return self.skip(n, st.st_ino, "a directory above it, mounted again", "");
            }
            if let Some(d) = self.dirs[at].as_mut()
                && !d.rel.as_os_str().is_empty()
            {
                (d.rel, d.shown) = (rel, shown);
            }
            return self.look(at, out);
        }
        let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_RDONLY | OFlag::O_CLOEXEC;
        match nix::fcntl::openat(&parent.fd, n.name.as_os_str(), flags, Mode::empty()) {
            Ok(fd) => {
                let root = parent.root;
                self.adopt(root, rel, shown, fd, out);
            }
            Err(Errno::ELOOP | Errno::ENOTDIR) => self.skip(n, st.st_ino, "a symbolic link", ""),
            Err(_) => {}
        }
    }

    /// Says once that `n` is not sent, and why.
    fn skip(&mut self, n: &Name, ino: u64, what: &str, hint: &str) {
        if self.said.insert((n.dir, n.name.clone(), ino)) {
            crate::commands::term::warn(
                self.quiet,
                format_args!("{}: {what}; not sent{hint}", escape_path(&self.shown(n))),
            );
        }
    }

    /// The events that are in, without waiting.
    pub fn events(&mut self) -> Vec<Seen> {
        let mut out = Vec::new();
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for e in events {
                self.event(e, &mut out);
            }
        }
        out
    }

    fn event(&mut self, e: nix::sys::inotify::InotifyEvent, out: &mut Vec<Seen>) {
        if e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            return out.push(Seen::Overflow);
        }
        let Some(&at) = self.by_wd.get(&e.wd) else {
            return;
        };
        if e.mask.contains(AddWatchFlags::IN_IGNORED) {
            self.by_wd.remove(&e.wd);
            self.held.retain(|_, &mut v| v != at);
            self.dirs[at] = None;
            return;
        }
        let Some(name) = e.name.filter(|n| !ignored(n)) else {
            return;
        };
        let n = Name { dir: at, name };
        let created = AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO;
        if e.mask.contains(AddWatchFlags::IN_ISDIR) {
            if e.mask.intersects(created)
                && let Ok(st) = self.stat(&n)
                && is_dir(st.st_mode)
            {
                self.subdir(&n, &st, out);
            }
        } else if e
            .mask
            .intersects(AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MOVED_TO)
        {
            out.push(Seen::Complete(n));
        } else if e.mask.contains(AddWatchFlags::IN_MODIFY) {
            out.push(Seen::Modified(n));
        } else if e.mask.contains(AddWatchFlags::IN_CREATE) {
            // A link, FIFO or socket made in place is never closed after writing: say now.
            if let Ok(st) = self.stat(&n)
                && !is_regular(st.st_mode)
                && !is_dir(st.st_mode)
            {
                self.skip(&n, st.st_ino, kind(st.st_mode), "");
            }
        }
    }

    /// Every directory looked at again, from the roots (after lost events): the files found,
    /// and any directory missed.
    pub fn look_again(&mut self) -> Vec<Seen> {
        let mut out = Vec::new();
        let roots: Vec<usize> = (0..self.dirs.len())
            .filter(|&at| self.dir(at).is_some_and(|d| d.rel.as_os_str().is_empty()))
            .collect();
        for at in roots {
            self.look(at, &mut out);
        }
        out
    }

    /// Sleeps until an event may be in, a signal, or `ms`.
    pub fn wait(&self, ms: u16) {
        let mut fds = [nix::poll::PollFd::new(
            self.inotify.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, ms);
    }

    fn dir(&self, at: usize) -> Option<&Dir> {
        self.dirs.get(at).and_then(Option::as_ref)
    }

    /// The file's path as the user would write it.
    pub fn shown(&self, n: &Name) -> PathBuf {
        self.dir(n.dir)
            .map(|d| d.shown.join(&n.name))
            .unwrap_or_else(|| PathBuf::from(&n.name))
    }

    /// Its root, and its path relative to the root.
    pub fn rel(&self, n: &Name) -> (usize, PathBuf) {
        self.dir(n.dir)
            .map(|d| (d.root, d.rel.join(&n.name)))
            .unwrap_or_else(|| (0, PathBuf::from(&n.name)))
    }

    /// `lstat` of the file, through its directory.
    pub fn stat(&self, n: &Name) -> Result<FileStat, Errno> {
        let d = self.dir(n.dir).ok_or(Errno::ENOENT)?;
        nix::sys::stat::fstatat(&d.fd, n.name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
    }

    /// Opens the file to send it: only a regular file (checked before and after the open,
    /// on the descriptor that is then sent from), never through a link, never blocking, and
    /// with one name only unless `--allow-hardlinks`.
    pub fn open(&mut self, n: &Name) -> Opened {
        let shown = self.shown(n);
        let st = match self.stat(n) {
            Ok(st) => st,
            Err(Errno::ENOENT | Errno::ENOTDIR) => return Opened::Gone,
            Err(e) => return Opened::Failed(failed(&shown, e)),
        };
        if !is_regular(st.st_mode) {
            return self.skipped(n, st.st_ino, kind(st.st_mode), "");
        }
        let Some(d) = self.dir(n.dir) else {
            return Opened::Gone;
        };
        let flags = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC;
        let file = match nix::fcntl::openat(&d.fd, n.name.as_os_str(), flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(Errno::ENOENT) => return Opened::Gone,
            Err(Errno::ELOOP) => return self.skipped(n, st.st_ino, "a symbolic link", ""),
            Err(e) => return Opened::Failed(failed(&shown, e)),
        };
        let md = match file.metadata() {
            Ok(md) => md,
            Err(e) => {
                return Opened::Failed(SendError::Open {
                    path: shown,
                    source: e,
                });
            }
        };
        let stamp = Stamp::of_meta(&md);
        if !md.file_type().is_file() {
            return self.skipped(n, md.ino(), kind(md.mode()), "");
        }
        if stamp.nlink > 1 && !self.allow_hardlinks {
            let what = format!("has {} hard links", stamp.nlink);
            return self.skipped(n, md.ino(), &what, " (--allow-hardlinks sends such files)");
        }
        Opened::File(file, stamp)
    }

    fn skipped(&mut self, n: &Name, ino: u64, what: &str, hint: &str) -> Opened {
        self.skip(n, ino, what, hint);
        Opened::Skip
    }

    /// Removes the file if it is still the version that was sent (`sent`): rsync's rule for
    /// `--remove-source-files`, on the inode and its times, through the directory's
    /// descriptor.
    pub fn remove_if_same(&self, n: &Name, sent: &Stamp) -> Removal {
        let Some(d) = self.dir(n.dir) else {
            return Removal::Gone;
        };
        match self.stat(n) {
            Ok(st) if Stamp::of_stat(&st).same_version(sent) => {
                match nix::unistd::unlinkat(
                    &d.fd,
                    n.name.as_os_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                ) {
                    Ok(()) => Removal::Removed,
                    Err(e) => Removal::Failed(e),
                }
            }
            Ok(_) => Removal::Changed,
            Err(Errno::ENOENT) => Removal::Gone,
            Err(e) => Removal::Failed(e),
        }
    }
}

fn failed(path: &Path, e: Errno) -> SendError {
    match e {
        Errno::EACCES | Errno::EPERM => SendError::Unreadable(path.into()),
        e => SendError::Open {
            path: path.into(),
            source: e.into(),
        },
    }
}
