//! How bytes from a peer are shown: names in records, on the terminal and in errors are
//! escaped the way `ls --quoting-style=escape` (`ls -b`) does, so a name can neither forge a
//! record (tab, newline) nor reach the terminal raw (ESC).

/// `name` with backslash, control characters and bytes that are not UTF-8 escaped: `\t`,
/// `\n`, `\\`, and `\ooo` (octal) for the rest. Printable text, non-ASCII letters included,
/// stays as it is.
pub(crate) fn escape(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\{b:03o}"));
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\{b:03o}"));
        }
    }
    out
}

/// A path, escaped as [`escape`] does.
pub(crate) fn escape_path(p: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    escape(p.as_os_str().as_bytes())
}

/// What an errno means, in words (`strerror`), without Rust's " (os error N)": for a
/// message to people, as coreutils words its own. A path in the way of `--keep-path` is said
/// as such.
pub(crate) fn errno_text(errno: i32) -> String {
    match errno {
        libc::ELOOP | libc::ENOTDIR => {
            "a symlink or a file is in the way of its directory (never followed)".into()
        }
        0 => "unknown error".into(),
        e => nix::errno::Errno::from_raw(e).desc().to_string(),
    }
}

/// An I/O error in words: its errno's text where it has one, else its own message.
pub(crate) fn io_text(e: &std::io::Error) -> String {
    crate::sysv::io_words(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_forge_records_or_reach_the_terminal_raw() {
        assert_eq!(
            escape(b"report.pdf\t1\t0000\nOTHER.pdf"),
            "report.pdf\\t1\\t0000\\nOTHER.pdf"
        );
        assert_eq!(escape(b"\x1b[31mred"), "\\033[31mred");
        assert_eq!(escape(b"back\\slash"), "back\\\\slash");
        assert_eq!(escape(b"del\x7f"), "del\\177");
        assert_eq!(escape(&[b'a', 0xff, b'b']), "a\\377b");
        assert_eq!(escape("photo é.jpg".as_bytes()), "photo é.jpg");
        // A C1 control character in UTF-8 is escaped byte by byte.
        assert_eq!(escape("x\u{9b}y".as_bytes()), "x\\302\\233y");
    }
}
