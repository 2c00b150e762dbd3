//! Users and groups by name, through NSS, as the command line takes them (`--owner`,
//! `--allow-user`, `--allow-group`) and shows them.

/// The group name for a gid, through NSS; the number where there is none.
pub(crate) fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)) {
        Ok(Some(g)) => g.name,
        _ => gid.to_string(),
    }
}

/// The uid of the user called `name`, through NSS.
pub(crate) fn uid_by_name(name: &str) -> Option<u32> {
    match nix::unistd::User::from_name(name) {
        Ok(Some(u)) => Some(u.uid.as_raw()),
        _ => None,
    }
}

/// The gid of the group called `name`, through NSS.
pub(crate) fn gid_by_name(name: &str) -> Option<u32> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Some(g.gid.as_raw()),
        _ => None,
    }
}

/// Whether user `uid` belongs to group `gid`, as NSS says: its primary group, or a member.
pub(crate) fn user_in_group(uid: u32, gid: u32) -> bool {
    let user = match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u,
        _ => return false,
    };
    if user.gid.as_raw() == gid {
        return true;
    }
    matches!(
        nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid)),
        Ok(Some(g)) if g.mem.contains(&user.name)
    )
}
