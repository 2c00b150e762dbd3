//! The command line's value parsers (clap `value_parser`s): users, groups, modes, sizes and
//! seconds as a person types them, each error in words.

/// A user, as `--owner` takes one: a name (looked up through NSS) or a uid.
pub(crate) fn parse_user(s: &str) -> Result<u32, String> {
    if let Ok(uid) = s.trim().parse::<u32>() {
        return Ok(uid);
    }
    super::users::uid_by_name(s.trim()).ok_or(format!("no user `{s}`: give a user name or a uid"))
}

/// A group, as `--allow-group` takes one: a name (looked up through NSS) or a gid.
pub(crate) fn parse_group(s: &str) -> Result<u32, String> {
    if let Ok(gid) = s.trim().parse::<u32>() {
        return Ok(gid);
    }
    super::users::gid_by_name(s.trim()).ok_or(format!("no group `{s}`: give a group name or a gid"))
}

/// Octal permission bits, as chmod takes them: `600`, `0600`, `0o600`.
pub(crate) fn parse_mode(s: &str) -> Result<u32, String> {
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
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
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
    if !v.is_multiple_of(8) {
        return Err(format!("slot size {s} is not a multiple of 8 bytes"));
    }
    Ok(v)
}

/// Parses a number of seconds, as `--wait` takes it (0 to 10⁹, fractions allowed).
///
/// # Errors
/// Not a number, or out of range, in words.
pub(crate) fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..1e9).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
