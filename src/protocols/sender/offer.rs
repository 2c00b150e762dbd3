//! What a sender offers: an input (a path, an open file, a reader, bytes), checked and
//! described before its request is posted.

use super::*;

/// Opens a path to send: its size (a regular file's; 0 counts as unknown, as /proc files
/// have content and say 0) and metadata.
pub(super) fn open_path(path: &Path) -> Result<File, SendError> {
    File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => SendError::Missing(path.into()),
        io::ErrorKind::PermissionDenied => SendError::Unreadable(path.into()),
        _ => SendError::Open {
            path: path.into(),
            source: e,
        },
    })
}

/// Whether the protocol can carry `name`: a relative path of at most `MAX_PATH` bytes, no
/// NUL, no component over `MAX_NAME`.
pub(super) fn name_fits(name: &[u8]) -> bool {
    name.len() <= frame::MAX_PATH
        && !name.contains(&0)
        && name
            .split(|&c| c == b'/')
            .all(|c| c.len() <= frame::MAX_NAME)
}

/// An open file's size (known for a non-empty regular file) and the mode and mtime it is
/// sent with, from `fstat`.
pub(super) fn describe(path: &Path, f: &File) -> Result<(Option<u64>, Meta), SendError> {
    let md = f.metadata().map_err(|source| SendError::Open {
        path: path.into(),
        source,
    })?;
    if md.is_dir() {
        return Err(SendError::IsDir(path.into()));
    }
    let meta = Meta {
        mode: md.mode() & 0o7777,
        mtime_sec: md.mtime(),
        mtime_nsec: md.mtime_nsec() as u32,
    };
    let size = (md.is_file() && md.len() > 0).then_some(md.len());
    if size.is_some() {
        crate::os::advise_sequential(f);
    }
    Ok((size, meta))
}

/// Where a file's bytes come from.
pub(super) enum Input<'a> {
    /// Read straight into the slot (one copy), or through our buffer with MD5.
    File(&'a File),
    Reader(&'a mut dyn Read),
    Bytes(&'a [u8]),
}

impl Input<'_> {
    /// Reads until `buf` is full or the input ends (or a stop interrupts it).
    pub(super) fn read_into(
        &mut self,
        buf: &mut [u8],
        done: u64,
        cancel: &runtime::Cancel,
    ) -> io::Result<usize> {
        match self {
            Input::File(f) => read_full(&mut &**f, buf, cancel),
            Input::Reader(r) => read_full(*r, buf, cancel),
            Input::Bytes(b) => {
                let rest = &b[(done as usize).min(b.len())..];
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                Ok(n)
            }
        }
    }
}

/// A file to post: how it is reported, the name it is sent under, where its bytes come from,
/// its size if known and its metadata.
pub(super) struct Offer<'a, 'i> {
    pub(super) label: &'a Path,
    pub(super) name: &'a [u8],
    pub(super) input: Input<'i>,
    pub(super) size: Option<u64>,
    pub(super) meta: Option<Meta>,
}

impl<'a, 'i> Offer<'a, 'i> {
    pub(super) fn new(
        label: &'a Path,
        name: &'a [u8],
        input: Input<'i>,
        size: Option<u64>,
    ) -> Self {
        Offer {
            label,
            name,
            input,
            size,
            meta: None,
        }
    }
}
