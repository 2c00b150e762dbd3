//! The values flags take: keys, modes, sizes, seconds. Pure; errors say what was wrong.

use crate::mechanisms::wire::{Address, MAX_CHANNEL_NAME};
use crate::sysv::Key;

/// What `--key` takes: a key (decimal or 0x hex), or a channel name (a letter, then up to 63
/// letters, digits, `.`, `_` or `-`), which maps to a key by [`crate::wire::named_key`].
pub(crate) fn parse_address(s: &str) -> Result<Address, String> {
    let t = s.trim();
    let named = t.starts_with(|c: char| c.is_ascii_alphabetic())
        && !t.starts_with("0x")
        && !t.starts_with("0X");
    if !named {
        return parse_key(s).map(Address::from);
    }
    let ok = t.len() <= MAX_CHANNEL_NAME
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    match ok {
        true => Ok(Address::named(t)),
        false => Err(format!(
            "`{s}` is not a key or a channel name: give a number (decimal or 0x hex), or a name of a letter and up to {} letters, digits, `.`, `_` or `-`",
            MAX_CHANNEL_NAME - 1
        )),
    }
}

/// A key in decimal or 0x hex, in 1..=0xfffffffe (0 is IPC_PRIVATE; the content segment sits at
/// KEY+1, which must not wrap).
pub(crate) fn parse_key(s: &str) -> Result<Key, String> {
    let t = s.trim();
    if t.starts_with('-') && t.len() > 1 {
        // ipcmk and the original system print keys as unsigned; a negative one is a typo or
        // a signed print of a key over 0x7fffffff.
        return Err(format!(
            "key {s} is negative: keys are 1 to 0xfffffffe (as `ipcs` prints them, in hex)"
        ));
    }
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else {
        t.parse::<u64>()
    }
    .map_err(|_| format!("`{s}` is not a key: give a decimal number or 0x hex"))?;
    if v == 0 || v >= 0xffff_ffff {
        return Err(format!("key {s} is out of range: use 1 to 0xfffffffe"));
    }
    Ok(Key(v as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_a_number_and_a_name_is_a_word() {
        assert_eq!(parse_address("0x10").unwrap(), Address::from(Key(16)));
        assert_eq!(parse_address("42").unwrap(), Address::from(Key(42)));
        let a = parse_address("camera").unwrap();
        assert_eq!(a.name.as_deref(), Some("camera"));
        assert_eq!(a.key, crate::mechanisms::wire::named_key("camera"));
        for bad in ["0xZZ", "ban ana", "a/b", "-x", "", &"a".repeat(65)] {
            assert!(parse_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_parse_in_decimal_and_hex_within_range() {
        assert_eq!(parse_key("42"), Ok(Key(42)));
        assert_eq!(parse_key("0x2A"), Ok(Key(42)));
        assert!(parse_key("0").is_err());
        assert!(parse_key("0xffffffff").is_err());
        assert!(parse_key("-1").is_err());
        assert!(parse_key("0x1ffffffff").is_err());
        assert!(parse_key("forty").is_err());
    }
}

/// Why a string is not a channel's address (a key or a name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AddressError(pub String);

impl std::str::FromStr for Address {
    type Err = AddressError;
    /// What `--key` takes: a key (decimal or `0x` hex, 1 to 0xfffffffe) or a name (a letter,
    /// then up to 63 letters, digits, `.`, `_` or `-`).
    fn from_str(s: &str) -> Result<Address, AddressError> {
        parse_address(s).map_err(AddressError)
    }
}
