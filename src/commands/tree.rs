//! `send -r`: the regular files under a directory, in a stable order, each with the relative
//! path it is sent under (as `cp -r` names them: from the directory's own name, or from
//! inside it when the directory is `.`).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::mechanisms::text::escape_path;

/// A file to send and the name (a relative path) it goes under.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    /// Where it is.
    pub path: PathBuf,
    /// What it is sent as.
    pub name: Vec<u8>,
}

/// What a walk found: the files, and what it left out and why (for stderr).
#[derive(Debug, Default)]
pub struct Walk {
    /// The regular files, sorted by name at each level, depth first.
    pub files: Vec<Entry>,
    /// One line per thing skipped: a symlink (without `follow`), a special file, a loop, a
    /// directory that cannot be read.
    pub skipped: Vec<String>,
    /// How many of those could not be read (errors, not choices).
    pub unreadable: usize,
}

/// Walks `dir`. Symlinks under it are skipped unless `follow` (`-L`); `dir` itself is
/// followed, as the user named it.
pub fn walk(dir: &Path, follow: bool) -> Walk {
    let mut w = Walk::default();
    // `photos/` and `/home/u/photos` go as `photos/…`; `.` and `..` from inside.
    let raw = dir.as_os_str().as_bytes();
    let inside = [&b"."[..], b".."]
        .iter()
        .any(|d| raw == *d || raw.ends_with(&[b"/", *d].concat()));
    let prefix = match (inside, dir.file_name()) {
        (false, Some(n)) => n.as_bytes().to_vec(),
        _ => Vec::new(),
    };
    let mut seen = Vec::new();
    if let Ok(m) = fs::metadata(dir) {
        seen.push((m.dev(), m.ino()));
    }
    visit(dir, &prefix, follow, &mut seen, &mut w);
    w
}

fn join(prefix: &[u8], name: &OsStr) -> Vec<u8> {
    let mut v = prefix.to_vec();
    if !v.is_empty() {
        v.push(b'/');
    }
    v.extend_from_slice(name.as_bytes());
    v
}

fn visit(dir: &Path, prefix: &[u8], follow: bool, seen: &mut Vec<(u64, u64)>, w: &mut Walk) {
    let mut entries: Vec<_> = match fs::read_dir(dir) {
        Ok(rd) => rd.flatten().collect(),
        Err(e) => {
            w.skipped.push(format!(
                "{}: cannot read: {}",
                escape_path(dir),
                crate::mechanisms::text::io_text(&e)
            ));
            w.unreadable += 1;
            return;
        }
    };
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let name = join(prefix, &e.file_name());
        let md = if follow {
            fs::metadata(&path)
        } else {
            fs::symlink_metadata(&path)
        };
        let md = match md {
            Ok(m) => m,
            Err(err) => {
                w.skipped.push(format!(
                    "{}: {}",
                    escape_path(&path),
                    crate::mechanisms::text::io_text(&err)
                ));
                w.unreadable += 1;
                continue;
            }
        };
        let ft = md.file_type();
        if ft.is_symlink() {
            let why = "a symbolic link (-L follows links)";
            w.skipped.push(format!("{}: {why}", escape_path(&path)));
        } else if ft.is_dir() {
            let id = (md.dev(), md.ino());
            if seen.contains(&id) {
                let why = "a link back to a directory above it";
                w.skipped.push(format!("{}: {why}", escape_path(&path)));
                continue;
            }
            seen.push(id);
            visit(&path, &name, follow, seen, w);
            seen.pop();
        } else if ft.is_file() {
            w.files.push(Entry { path, name });
        } else {
            let why = "not a regular file (a FIFO, socket or device)";
            w.skipped.push(format!("{}: {why}", escape_path(&path)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_is_named_from_its_directory_in_a_stable_order() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("photos");
        fs::create_dir_all(d.join("b dir")).unwrap();
        fs::write(d.join("z.jpg"), b"z").unwrap();
        fs::write(d.join("a.jpg"), b"").unwrap();
        fs::write(d.join("b dir/c.jpg"), b"c").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("link")).unwrap();
        let w = walk(&d, false);
        let names: Vec<String> = w
            .files
            .iter()
            .map(|e| String::from_utf8_lossy(&e.name).into_owned())
            .collect();
        assert_eq!(
            names,
            ["photos/a.jpg", "photos/b dir/c.jpg", "photos/z.jpg"]
        );
        assert_eq!(w.skipped.len(), 1, "{:?}", w.skipped);
        assert!(w.skipped[0].contains("symbolic link"));
        // From inside with `.`; with -L the link is a file like any other.
        let inside = walk(&d.join("."), true);
        let names: Vec<&[u8]> = inside.files.iter().map(|e| &e.name[..]).collect();
        assert_eq!(names, [&b"a.jpg"[..], b"b dir/c.jpg", b"link", b"z.jpg"]);
    }
}
