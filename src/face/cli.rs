//! Command-line parsing only: no I/O, no IPC. Each subcommand's flags live on the subcommand.

use clap::{Parser, Subcommand};

pub use crate::commands::clean::CleanArgs;
pub use crate::commands::recv::RecvArgs;
pub use crate::commands::send::SendArgs;
pub use crate::commands::status::StatusArgs;

const ABOUT: &str = "Move files between processes on one host through System V shared memory";

#[derive(Debug, Parser)]
#[command(
    name = "shmxfer",
    version,
    about = ABOUT,
    propagate_version = true,
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a channel and write each received file
    #[command(after_long_help = RECV_EXAMPLES)]
    Recv(RecvArgs),
    /// Send files (or stdin) to the receiver
    #[command(after_long_help = SEND_EXAMPLES)]
    Send(SendArgs),
    /// Remove a channel's leftover IPC objects, safely
    #[command(after_long_help = CLEAN_EXAMPLES)]
    Clean(CleanArgs),
    /// List System V IPC objects, like ipcs, and shmxfer's channels
    #[command(after_long_help = STATUS_EXAMPLES)]
    Status(StatusArgs),
    /// Print a shell completion script
    Completions {
        /// bash, zsh, fish, elvish or powershell
        #[arg(value_parser = parse_shell)]
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff) on stdout: shmxfer(1), or a subcommand's (shmxfer-send(1)…)
    Man {
        /// The subcommand whose page to print (recv, send, clean, status)
        #[arg(value_parser = ["recv", "send", "clean", "status"], conflicts_with = "dir")]
        page: Option<String>,
        /// Write every page (shmxfer.1, shmxfer-recv.1, …) into DIR instead
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

pub(crate) const RECV_EXAMPLES: &str = "Examples:
  shmxfer recv -m                 serve your channel, verify with MD5
  shmxfer recv --dir in --keep-name
  shmxfer recv --key camera       serve the channel named camera
  shmxfer recv --stdout | tar x   receive one file onto stdout
  shmxfer recv --keep-path        recreate trees sent with send -r
  shmxfer recv --json | jq -r .path
  mkdir -p thumbs; shmxfer recv --exec convert {} -thumbnail 200x200 thumbs/{/}";
pub(crate) const SEND_EXAMPLES: &str = "Examples:
  shmxfer send -m photo.jpg       send one file, verified with MD5
  shmxfer send a.jpg b.jpg c.jpg  several files, each as its own
  shmxfer send -r photos          a whole tree (recv --keep-path recreates it)
  shmxfer send --key camera x.jpg to the channel named camera
  tar c dir | shmxfer send --name dir.tar -";
pub(crate) const CLEAN_EXAMPLES: &str = "Examples:
  shmxfer clean                   remove your channel if its receiver is gone
  shmxfer clean --stale           remove every dead shmxfer channel on the host
  shmxfer clean --legacy          remove the original system's objects (keys 42, 44)";
pub(crate) const STATUS_EXAMPLES: &str = "Examples:
  shmxfer status                  every IPC object, and shmxfer's channels
  shmxfer status -m -p            shared memory only, with creator and last pids
  shmxfer status -s -i 5          semaphore set 5: each value, waiters, last pid
  shmxfer status -u               how much of each kind is in use
  shmxfer status --json | jq .channels";

/// A shell completions are made for. Said in our own words: clap's "similar value" would
/// offer zsh's script to a tcsh user, whose shell cannot read it.
fn parse_shell(s: &str) -> Result<clap_complete::Shell, String> {
    use clap::ValueEnum;
    let known = "bash, zsh, fish, elvish or powershell";
    match s {
        "tcsh" | "csh" => Err(format!(
            "no completion script for {s}: the generator knows {known} (tcsh users: run `shmxfer --help`)"
        )),
        _ => clap_complete::Shell::from_str(s, true)
            .map_err(|_| format!("`{s}` is not a shell completions are made for: give {known}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
