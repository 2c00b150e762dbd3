//! `--legacy`: the original system's protocol (see ../shared/legacy-protocol.md).

use crate::cli::{RecvArgs, SendArgs};
use crate::sysv::Key;

/// The original system's keys and sizes, fixed by its programs.
pub const CONTENT_KEY: Key = Key(42);
pub const SIZE_KEY: Key = Key(44);
pub const CONTENT_LEN: usize = 5_000_000;
pub const SIZE_LEN: usize = 10;

/// What a shared memory segment is to the original system, by key and size.
pub fn shm_role(key: Key, size: u64) -> Option<&'static str> {
    match (key, size as usize) {
        (CONTENT_KEY, CONTENT_LEN) => Some("legacy-content"),
        (SIZE_KEY, SIZE_LEN) => Some("legacy-size"),
        _ => None,
    }
}

/// What a semaphore set is to the original system: one semaphore at either key.
pub fn sem_role(key: Key, nsems: u32) -> Option<&'static str> {
    match (key, nsems) {
        (CONTENT_KEY, 1) => Some("legacy-content-sem"),
        (SIZE_KEY, 1) => Some("legacy-size-sem"),
        _ => None,
    }
}

pub fn recv(_args: &RecvArgs) -> i32 {
    crate::error("--legacy is not implemented yet");
    crate::exit::USAGE
}

pub fn send(_args: &SendArgs) -> i32 {
    crate::error("--legacy is not implemented yet");
    crate::exit::USAGE
}
