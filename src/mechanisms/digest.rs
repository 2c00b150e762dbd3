//! MD5, as `-m` checks it: the digest of a whole file, fed a chunk at a time.

use md5_asm::Digest as _;

/// A running MD5.
#[derive(Clone, Default)]
pub(crate) struct Md5(md5_asm::Md5);

impl Md5 {
    /// A digest of nothing yet.
    pub(crate) fn new() -> Md5 {
        Md5::default()
    }
    /// Feeds the next bytes.
    pub(crate) fn consume(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// The digest of everything fed.
    pub(crate) fn finalize(self) -> [u8; 16] {
        self.0.finalize().into()
    }
}

/// The MD5 of `bytes`.
pub(crate) fn md5(bytes: &[u8]) -> [u8; 16] {
    let mut m = Md5::new();
    m.consume(bytes);
    m.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore)] // The MD5 crate's assembly.
    fn digests_are_md5() {
        assert_eq!(
            crate::mechanisms::wire::hex(&md5(b"")),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        let mut m = Md5::new();
        m.consume(b"The quick brown fox ");
        m.consume(b"jumps over the lazy dog");
        assert_eq!(
            crate::mechanisms::wire::hex(&m.finalize()),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
    }
}
