//! Where received files go, for the native and the legacy receiver alike: output names that
//! never replace a file, temporary files that are never mistaken for output (nor output for
//! them), and the commit that turns one into the other.
//!
//! A file being received lives in an unnamed `O_TMPFILE` in DIR and gets its name only when it
//! is whole, by `linkat`, which fails rather than replace. Where the filesystem has no
//! `O_TMPFILE`, it lives in `.shmxfer-<pid>-<n>.part` (created with `O_EXCL`, so a planted
//! symlink is never followed) and is renamed without replace.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The longest file name Linux takes.
pub(crate) const MAX_NAME: usize = 255;

#[derive(Debug, thiserror::Error)]
/// Why the output directory or the naming options cannot be used.
#[non_exhaustive]
pub enum OutputError {
    #[error(
        "cannot create output directory {}: {}",
        crate::mechanisms::text::escape_path(dir),
        crate::mechanisms::text::io_text(source)
    )]
    /// The directory could not be created.
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    #[error(
        "cannot create, write and rename files in {}: {}",
        crate::mechanisms::text::escape_path(dir),
        crate::mechanisms::text::io_text(source)
    )]
    /// Files cannot be made in the directory (permissions, a read-only or full filesystem).
    Unwritable {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    #[error("{}: not a directory", crate::mechanisms::text::escape_path(.0))]
    /// The path exists and is not a directory.
    NotDir(PathBuf),
    #[error("the base name must be a plain name without `/`")]
    /// The base name is empty or holds `/`.
    BadBasename,
    #[error("the extension must not contain `/`")]
    /// The extension holds `/`.
    BadExt,
}

/// Checks the naming options, creates DIR, removes dead receivers' temporary files in it and
/// returns the namer that picks output names there.
pub fn prepare(dir: &Path, basename: &str, ext: &str) -> Result<Namer, OutputError> {
    if basename.is_empty() || basename.contains('/') {
        return Err(OutputError::BadBasename);
    }
    if ext.contains('/') {
        return Err(OutputError::BadExt);
    }
    if dir.exists() && !dir.is_dir() {
        return Err(OutputError::NotDir(dir.into()));
    }
    fs::create_dir_all(dir).map_err(|source| OutputError::Dir {
        dir: dir.into(),
        source,
    })?;
    remove_dead_partials(dir);
    check_writable(dir).map_err(|source| OutputError::Unwritable {
        dir: dir.into(),
        source,
    })?;
    let ext = if ext.is_empty() || ext.starts_with('.') {
        ext.to_string()
    } else {
        format!(".{ext}")
    };
    Namer::scan(dir, basename, &ext).map_err(|source| OutputError::Dir {
        dir: dir.into(),
        source,
    })
}

/// Makes a file as a receiver makes one where there is no `O_TMPFILE` (hidden, `O_EXCL`),
/// writes a byte, renames it without replacing, and removes it: a directory where any of
/// that fails would fail every file, so it is refused before a sender is served.
fn check_writable(dir: &Path) -> io::Result<()> {
    let pid = crate::os::getpid();
    let (a, b) = (
        dir.join(format!(".shmxfer-{pid}-4294967294.part")),
        dir.join(format!(".shmxfer-{pid}-4294967295.part")),
    );
    let tried = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&a)?;
        std::io::Write::write_all(&mut f, b"x")?;
        drop(f);
        crate::os::rename_noreplace(&a, &b)
    })();
    let _ = fs::remove_file(&a);
    let _ = fs::remove_file(&b);
    tried
}

/// Named temporary file of the transfer in flight, for a signal path to remove if the main
/// thread cannot get there in time. (An `O_TMPFILE` needs no such care: it has no name.)
static PARTIAL: Mutex<Option<PathBuf>> = Mutex::new(None);

fn set_partial(p: Option<PathBuf>) {
    if let Ok(mut g) = PARTIAL.lock() {
        *g = p;
    }
}

/// Removes the named temporary file in flight, if there is one (for a stop handler).
pub fn remove_partial() {
    if let Some(p) = PARTIAL.lock().ok().and_then(|g| g.clone()) {
        let _ = fs::remove_file(p);
    }
}

/// A file being received: unnamed until [`Namer::commit`] names it, removed if dropped first.
#[derive(Debug)]
pub struct TempFile {
    /// The open file, to write into.
    pub file: File,
    /// The fallback's name; `None` for an `O_TMPFILE`.
    named: Option<PathBuf>,
    published: bool,
}

impl TempFile {
    /// Creates the temporary file in `dir`.
    pub fn create(dir: &Path) -> io::Result<TempFile> {
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o666)
            .open(dir)
        {
            Ok(file) => {
                return Ok(TempFile {
                    file,
                    named: None,
                    published: false,
                });
            }
            // No O_TMPFILE on this filesystem (or kernel): a hidden named file instead.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {}
            Err(e) => return Err(e),
        }
        let mut n = 0u32;
        loop {
            let path = dir.join(format!(".shmxfer-{}-{n}.part", crate::os::getpid()));
            // create_new is O_CREAT|O_EXCL, which never follows a symlink planted at the path.
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o666)
                .open(&path)
            {
                Ok(file) => {
                    set_partial(Some(path.clone()));
                    return Ok(TempFile {
                        file,
                        named: Some(path),
                        published: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the file has no name at all (`O_TMPFILE`): it vanishes with the process, so it
    /// can be made ahead of need.
    pub fn is_unnamed(&self) -> bool {
        self.named.is_none()
    }

    /// Gives the file the name `to`, unless something exists there (then `AlreadyExists`).
    fn publish(&mut self, to: &Path) -> io::Result<()> {
        match &self.named {
            None => crate::os::link_unnamed(&self.file, to)?,
            Some(p) => crate::os::rename_noreplace(p, to)?,
        }
        self.published = true;
        if self.named.is_some() {
            set_partial(None);
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let (Some(p), false) = (&self.named, self.published) {
            let _ = fs::remove_file(p);
            set_partial(None);
        }
    }
}

/// The sender's name made safe to create in DIR: its last path component, without NULs, its
/// control characters replaced by `_`, and never `.`, `..`, empty, or a name a receiver would
/// take for its temporary file (then `None`: the counter name is used).
pub fn safe_name(raw: &[u8]) -> Option<OsString> {
    let last = raw.rsplit(|&b| b == b'/').next().unwrap_or(&[]);
    let clean: Vec<u8> = last
        .iter()
        .copied()
        .filter(|&b| b != 0)
        .map(on_disk)
        .take(MAX_NAME)
        .collect();
    if clean.is_empty() || clean == b"." || clean == b".." || looks_temporary(&clean) {
        return None;
    }
    Some(OsString::from_vec(clean))
}

/// A sender's relative path (`send -r`), checked for `recv --keep-path`: the directories to
/// recreate under DIR, and the file's name.
#[derive(Debug, PartialEq, Eq)]
pub struct RelPath {
    /// The directories, outermost first (none for a plain name).
    pub dirs: Vec<OsString>,
    /// The file's name.
    pub name: OsString,
}

/// Checks a sender's relative path before anything of it is created: never absolute, no
/// empty, `.` or `..` component, no NUL, no component over 255 bytes, and a file name that is
/// not shaped like a temporary file.
///
/// # Errors
/// What is wrong with it, in words.
pub fn rel_path(raw: &[u8]) -> Result<RelPath, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("an absolute path");
    }
    if raw.contains(&0) {
        return Err("a NUL byte");
    }
    let mut parts = Vec::new();
    for p in raw.split(|&c| c == b'/') {
        match p {
            [] => return Err("an empty component"),
            b"." | b".." => return Err("a `.` or `..` component"),
            p if p.len() > MAX_NAME => return Err("a component over 255 bytes"),
            p => parts.push(OsString::from_vec(p.iter().copied().map(on_disk).collect())),
        }
    }
    let name = parts.pop().ok_or("an empty path")?;
    if looks_temporary(name.as_bytes()) {
        return Err("a temporary file's name");
    }
    Ok(RelPath { dirs: parts, name })
}

/// A directory under DIR for a relative path, recreated one component at a time without
/// following a symlink, and held open: a link planted in DIR (or swapped in meanwhile) can
/// never redirect a write outside it.
#[derive(Debug)]
pub struct Subdir {
    fd: std::os::fd::OwnedFd,
    shown: PathBuf,
}

impl Subdir {
    /// Opens DIR's subdirectory `dirs`, creating what is missing.
    ///
    /// # Errors
    /// A component cannot be created, or something other than a directory (a symlink, a file)
    /// is in its place: it is not followed.
    pub fn open(dir: &Path, dirs: &[OsString]) -> io::Result<Subdir> {
        let mut fd = std::os::fd::OwnedFd::from(File::open(dir)?);
        let mut shown = dir.to_path_buf();
        for d in dirs {
            shown.push(d);
            fd = crate::os::open_subdir(&fd, d).map_err(|e| match e.raw_os_error() {
                Some(errno @ (libc::ELOOP | libc::ENOTDIR)) => io::Error::new(
                    e.kind(),
                    InTheWay {
                        shown: crate::mechanisms::text::escape_path(&shown),
                        errno,
                    },
                ),
                _ => e,
            })?;
        }
        Ok(Subdir { fd, shown })
    }

    /// A path to the directory itself, through its descriptor.
    fn via(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// Flushes the directory's entries to disk (`--fsync`).
    ///
    /// # Errors
    /// As `fsync(2)`.
    pub fn sync(&self) -> io::Result<()> {
        File::open(self.via())?.sync_all()
    }
}

/// Whether a name is in the temporary files' namespace: `.shmxfer-…part`. Such a name is
/// never committed, so a later receiver's clean-up can never take output for a dead
/// receiver's temporary file.
fn looks_temporary(name: &[u8]) -> bool {
    name.starts_with(b".shmxfer-") && name.ends_with(b".part")
}

/// `photo.jpg`, then `photo-1.jpg`, `photo-2.jpg`... (a leading dot is not an extension).
pub(crate) fn numbered(name: &OsString, n: u64) -> OsString {
    if n == 0 {
        return name.clone();
    }
    let b = name.as_bytes();
    let suffix = format!("-{n}");
    let dot = b.iter().rposition(|&c| c == b'.').filter(|&i| i > 0);
    // An "extension" too long to keep beside the suffix is just part of the stem.
    let split = dot
        .filter(|&i| b.len() - i + suffix.len() < MAX_NAME)
        .unwrap_or(b.len());
    let (stem, ext) = b.split_at(split);
    // Shorten the stem so the suffix survives within NAME_MAX; a clash still cannot overwrite.
    let keep = stem.len().min(MAX_NAME - suffix.len() - ext.len());
    let mut v = stem[..keep].to_vec();
    v.extend_from_slice(suffix.as_bytes());
    v.extend_from_slice(ext);
    OsString::from_vec(v)
}

/// A receiver killed with SIGKILL cannot delete a named temporary file; the next one to use
/// DIR does. A file counts as a dead receiver's only if its name is exactly a temporary
/// file's, its receiver pid is dead, it is ours (same owner) and it has no other link (a
/// committed file never has such a name, see [`safe_name`]).
fn remove_dead_partials(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let me = crate::os::geteuid();
    for e in entries.flatten() {
        let Some(pid) = partial_owner(e.file_name().as_bytes()) else {
            continue;
        };
        let ours = e
            .path()
            .symlink_metadata()
            .is_ok_and(|m| m.is_file() && m.uid() == me && m.nlink() == 1);
        if ours && !crate::os::process_alive(pid) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// The pid in `.shmxfer-<pid>-<n>.part` or `.shmxfer-legacy-<pid>.part` (older receivers'
/// name), and nothing else.
pub(crate) fn partial_owner(name: &[u8]) -> Option<i32> {
    let rest = name.strip_prefix(b".shmxfer-")?.strip_suffix(b".part")?;
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    let pid = match rest.strip_prefix(b"legacy-") {
        Some(pid) if digits(pid) => pid,
        Some(_) => return None,
        None => {
            let (pid, n) = rest.split_at(rest.iter().position(|&b| b == b'-')?);
            if !digits(pid) || !digits(&n[1..]) {
                return None;
            }
            pid
        }
    };
    std::str::from_utf8(pid).ok()?.parse().ok()
}

/// Picks `DIR/<basename><NN><ext>` names, continuing after the highest one already in DIR so a
/// restarted receiver never overwrites earlier output.
#[derive(Debug)]
pub struct Namer {
    dir: PathBuf,
    basename: String,
    ext: String,
    next: u64,
    /// For each kept name (per directory, under `--keep-path`), the suffix to try first: the
    /// one after the last that worked. A name that recurs (`IMG_0001.JPG`, `stdin`) then costs
    /// one try, not one per earlier copy.
    suffixes: std::collections::HashMap<(PathBuf, OsString), u64>,
}

/// How many kept names a [`Namer`] remembers the next suffix of; past that it forgets them
/// all and finds each again (once) by trying, so a receiver that runs for months stays small.
const REMEMBERED_NAMES: usize = 65_536;

impl Namer {
    /// A namer for `dir` that numbers after the highest `basenameNN.ext` already there, so a
    /// restart never overwrites earlier output.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn scan(dir: &Path, basename: &str, ext: &str) -> io::Result<Namer> {
        let mut max = 0u64;
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            if let Some(n) = counter_of(name.as_bytes(), basename.as_bytes(), ext.as_bytes()) {
                max = max.max(n);
            }
        }
        Ok(Namer {
            suffixes: std::collections::HashMap::new(),
            dir: dir.into(),
            basename: basename.into(),
            ext: ext.into(),
            next: max.saturating_add(1),
        })
    }

    /// The output directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn counter_path(&self) -> PathBuf {
        self.dir
            .join(format!("{}{:02}{}", self.basename, self.next, self.ext))
    }

    /// Names `tmp` `name` in `at` (then `name-1`, `name-2`…), never replacing a file. Returns
    /// its path as DIR/dirs/name.
    ///
    /// # Errors
    /// The link fails (`EXDEV` if `at` is on another filesystem than DIR).
    pub fn commit_at(
        &mut self,
        tmp: &mut TempFile,
        at: &Subdir,
        name: &OsString,
    ) -> io::Result<PathBuf> {
        let mut attempt = 0;
        loop {
            let n = numbered(name, attempt);
            match tmp.publish(&at.via().join(&n)) {
                Ok(()) => {
                    self.remember(at.shown.clone(), name, attempt);
                    return Ok(at.shown.join(n));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    attempt = self.next_suffix(&at.shown, name, attempt);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Names `tmp`: `kept` (made safe by [`safe_name`]) then `kept-1`, `kept-2`…, or without
    /// one the next counter name; never replacing a file (another receiver may write into DIR
    /// too). Returns the name it got.
    pub fn commit(&mut self, tmp: &mut TempFile, kept: Option<&OsString>) -> io::Result<PathBuf> {
        let mut attempt = 0u64;
        loop {
            let path = match kept {
                Some(n) => self.dir.join(numbered(n, attempt)),
                None => {
                    let p = self.counter_path();
                    self.next += 1;
                    p
                }
            };
            match tmp.publish(&path) {
                Ok(()) => {
                    if let Some(n) = kept {
                        self.remember(self.dir.clone(), n, attempt);
                    }
                    return Ok(path);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    attempt = match kept {
                        Some(n) => self.next_suffix(&self.dir.clone(), n, attempt),
                        None => attempt + 1,
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The suffix to try after `tried` was taken: the plain name is always tried first (the
    /// directory may have been emptied), and when it is taken, the suffix after the last one
    /// that worked, so a recurring name costs two tries, not one per earlier copy.
    fn next_suffix(&self, dir: &Path, name: &OsString, tried: u64) -> u64 {
        match tried {
            0 => self.first_suffix(dir, name).max(1),
            t => t + 1,
        }
    }

    /// The suffix after the last one that worked for `name` in `dir` (0: none yet).
    fn first_suffix(&self, dir: &Path, name: &OsString) -> u64 {
        self.suffixes
            .get(&(dir.to_path_buf(), name.clone()))
            .copied()
            .unwrap_or(0)
    }

    /// `name` in `dir` was committed with suffix `used`: the next copy tries the one after.
    fn remember(&mut self, dir: PathBuf, name: &OsString, used: u64) {
        if used == 0 {
            return;
        }
        if self.suffixes.len() >= REMEMBERED_NAMES {
            self.suffixes.clear();
        }
        self.suffixes.insert((dir, name.clone()), used + 1);
    }
}

fn counter_of(name: &[u8], base: &[u8], ext: &[u8]) -> Option<u64> {
    let digits = name.strip_prefix(base)?.strip_suffix(ext)?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, .. proptest::prelude::ProptestConfig::default() })]
    #[test]
    #[cfg_attr(miri, ignore)] // Files, or a property test of safe code: no unsafe of ours to check.
    fn a_kept_name_is_always_one_safe_component(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..10_000)) {
        if let Some(n) = safe_name(&raw) {
            use std::os::unix::ffi::OsStrExt;
            let b = n.as_bytes();
            proptest::prop_assert!(!b.is_empty() && b.len() <= MAX_NAME);
            proptest::prop_assert!(!b.contains(&b'/') && !b.contains(&0));
            proptest::prop_assert!(!b.iter().any(|&c| c < 0x20 || c == 0x7f), "a control character on disk");
            proptest::prop_assert!(b != b"." && b != b"..");
            proptest::prop_assert!(partial_owner(b).is_none());
            let dir = std::path::Path::new("/some/dir");
            let joined = dir.join(&n);
            proptest::prop_assert_eq!(joined.parent(), Some(dir));
            for k in 1..3 {
                let m = numbered(&n, k);
                proptest::prop_assert!(!m.as_bytes().contains(&b'/') && m.len() <= MAX_NAME);
            }
        }
    }

    }

    #[test]
    fn relative_paths_are_checked_before_use() {
        let ok = rel_path(b"photos/2026/a b.jpg").unwrap();
        assert_eq!(ok.dirs, [OsString::from("photos"), OsString::from("2026")]);
        assert_eq!(ok.name, OsString::from("a b.jpg"));
        assert_eq!(rel_path(b"plain").unwrap().dirs.len(), 0);
        for bad in [
            &b"/etc/passwd"[..],
            b"../x",
            b"a/../../x",
            b"a//b",
            b"a/./b",
            b"a/",
            b"",
            b"a\0b",
            b"d/.shmxfer-1-2.part",
        ] {
            assert!(rel_path(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn hostile_names_stay_inside_dir() {
        assert_eq!(safe_name(b"../../etc/passwd"), Some("passwd".into()));
        assert_eq!(safe_name(b"/abs/path/photo.jpg"), Some("photo.jpg".into()));
        assert_eq!(safe_name(b".."), None);
        assert_eq!(safe_name(b"a/.."), None);
        assert_eq!(safe_name(b"dir/"), None);
        assert_eq!(safe_name(b""), None);
        assert_eq!(safe_name(b"a\0b"), Some("ab".into()));
        assert_eq!(safe_name(b"\0"), None);
        assert_eq!(
            safe_name(&[0xff, 0xfe]).map(|s| s.into_vec()),
            Some(vec![0xff, 0xfe])
        );
    }

    #[test]
    fn a_name_shaped_like_a_temporary_file_is_never_kept() {
        assert_eq!(safe_name(b".shmxfer-999999-0.part"), None);
        assert_eq!(safe_name(b"x/.shmxfer-legacy-1.part"), None);
        assert_eq!(
            safe_name(b".shmxfer-notes.txt"),
            Some(".shmxfer-notes.txt".into())
        );
    }

    #[test]
    fn clashing_names_get_a_number_before_the_extension() {
        let n: OsString = "photo.jpg".into();
        assert_eq!(numbered(&n, 0), "photo.jpg");
        assert_eq!(numbered(&n, 2), "photo-2.jpg");
        assert_eq!(numbered(&".bashrc".into(), 1), ".bashrc-1");
        assert_eq!(numbered(&"README".into(), 1), "README-1");
        assert!(numbered(&OsString::from("x".repeat(255)), 7).len() <= 255);
    }

    #[test]
    #[cfg_attr(miri, ignore)] // Files, or a property test of safe code: no unsafe of ours to check.
    fn temporary_files_name_their_receiver_exactly() {
        assert_eq!(partial_owner(b".shmxfer-1234-0.part"), Some(1234));
        assert_eq!(partial_owner(b".shmxfer-legacy-77.part"), Some(77));
        assert_eq!(partial_owner(b".shmxfer-x.part"), None);
        assert_eq!(partial_owner(b".shmxfer-12-0-1.part"), None);
        assert_eq!(partial_owner(b".shmxfer-12.part"), None);
        assert_eq!(partial_owner(b"file01.jpg"), None);
    }

    #[test]
    #[cfg_attr(miri, ignore)] // Files, or a property test of safe code: no unsafe of ours to check.
    fn counter_continues_after_the_highest_existing_file() {
        assert_eq!(counter_of(b"file07.jpg", b"file", b".jpg"), Some(7));
        assert_eq!(counter_of(b"file123.jpg", b"file", b".jpg"), Some(123));
        assert_eq!(counter_of(b"file.jpg", b"file", b".jpg"), None);
        assert_eq!(counter_of(b"file1a.jpg", b"file", b".jpg"), None);
        assert_eq!(counter_of(b"other01.jpg", b"file", b".jpg"), None);
    }

    #[test]
    #[cfg_attr(miri, ignore)] // Files, or a property test of safe code: no unsafe of ours to check.
    fn a_temporary_file_has_no_name_until_committed_and_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"old").unwrap();
        let mut namer = Namer::scan(dir.path(), "file", ".jpg").unwrap();
        let mut t = TempFile::create(dir.path()).unwrap();
        use std::io::Write;
        t.file.write_all(b"new").unwrap();
        let p = namer.commit(&mut t, Some(&"a.txt".into())).unwrap();
        assert_eq!(p, dir.path().join("a-1.txt"));
        assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"old");
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["a-1.txt", "a.txt"]);
    }
}

/// Something other than a directory (a symlink, a file) where `--keep-path` wants one: never
/// followed. Keeps the errno (ELOOP or ENOTDIR), which the sender is told.
#[derive(Debug)]
struct InTheWay {
    shown: String,
    errno: i32,
}

impl std::fmt::Display for InTheWay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is not a directory (a symlink or a file is in the way; never followed)",
            self.shown
        )
    }
}

impl std::error::Error for InTheWay {}

/// The errno behind an output error, also where a message of ours wraps it.
pub(crate) fn errno_of(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        e.get_ref()
            .and_then(|i| i.downcast_ref::<InTheWay>())
            .map(|w| w.errno)
    })
}

/// A byte of a sender's name as it goes on disk: control characters (newline, tab, ESC, DEL…)
/// become `_`, so no file name can break a line of `ls`, a shell loop or a log, or carry an
/// escape sequence to a terminal; every other byte stays (UTF-8 included).
fn on_disk(b: u8) -> u8 {
    if b < 0x20 || b == 0x7f { b'_' } else { b }
}
