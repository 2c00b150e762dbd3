//! The values flags take: keys, modes, sizes, seconds. Pure; errors say what was wrong.

use crate::mechanisms::wire::{Address, MAX_CHANNEL_NAME};
use crate::sysv::Key;

/// What `--key` takes: a key (decimal or 0x hex), or a channel name (a letter, then up to 63
/// letters, digits, `.`, `_` or `-`), which maps to a key by [`crate::wire::named_key`].
pub fn parse_address(s: &str) -> Result<Address, String> {
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
pub fn parse_key(s: &str) -> Result<Key, String> {
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

/// A user, as `--owner` takes one: a name (looked up through NSS) or a uid.
pub fn parse_user(s: &str) -> Result<u32, String> {
    if let Ok(uid) = s.trim().parse::<u32>() {
        return Ok(uid);
    }
    crate::sysv::uid_by_name(s.trim()).ok_or(format!("no user `{s}`: give a user name or a uid"))
}

/// A group, as `--allow-group` takes one: a name (looked up through NSS) or a gid.
pub fn parse_group(s: &str) -> Result<u32, String> {
    if let Ok(gid) = s.trim().parse::<u32>() {
        return Ok(gid);
    }
    crate::sysv::gid_by_name(s.trim()).ok_or(format!("no group `{s}`: give a group name or a gid"))
}

/// Octal permission bits, as chmod takes them: `600`, `0600`, `0o600`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim_start_matches("0o");
    match u32::from_str_radix(t, 8) {
        Ok(m) if m <= 0o777 && !t.is_empty() => Ok(m),
        Ok(m) if m <= 0o7777 => Err(format!(
            "`{s}` has set-id or sticky bits, which IPC objects do not have: give permission bits only, 0 to 0777 (like 0600 or 0666)"
        )),
        _ => Err(format!("`{s}` is not an octal mode (like 0600 or 0666)")),
    }
}

/// A byte count with an optional K/M/G suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mul) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1usize << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let v = num
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .ok_or(format!("`{s}` is not a size"))?;
    if !(crate::mechanisms::wire::MIN_SLOT..=crate::mechanisms::wire::MAX_SLOT).contains(&v) {
        return Err(format!("slot size {s} is out of range: use 4K to 256M"));
    }
    Ok(v)
}

/// Parses a number of seconds, as `--wait` takes it (0 to 10⁹, fractions allowed).
///
/// # Errors
/// Not a number, or out of range, in words.
pub fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..1e9).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds")),
    }
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

    #[test]
    fn modes_must_be_octal_permission_bits() {
        assert_eq!(parse_mode("0600"), Ok(0o600));
        assert_eq!(parse_mode("666"), Ok(0o666));
        assert!(parse_mode("0800").is_err());
        assert!(parse_mode("1777").is_err());
        assert!(parse_mode("").is_err());
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert!(parse_size("1").is_err());
        assert!(parse_size("1G").is_err());
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
