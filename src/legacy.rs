//! `--legacy`: the original system's protocol (see ../shared/legacy-protocol.md).

use crate::cli::{RecvArgs, SendArgs};

pub fn recv(_args: &RecvArgs) -> i32 {
    crate::error("--legacy is not implemented yet");
    crate::exit::USAGE
}

pub fn send(_args: &SendArgs) -> i32 {
    crate::error("--legacy is not implemented yet");
    crate::exit::USAGE
}
