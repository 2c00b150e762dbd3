//! Command-line parsing only: no I/O, no IPC. Each subcommand's flags live on the subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::sysv::Key;

const ABOUT: &str = "Move files between processes on one host through System V shared memory";

#[derive(Debug, Parser)]
#[command(name = "shmxfer", version, about = ABOUT, propagate_version = true)]
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
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout
    Man,
}

const RECV_EXAMPLES: &str = "Examples:
  shmxfer recv -m                 serve the default channel, verify with MD5
  shmxfer recv --dir in --keep-name
  shmxfer recv --stdout | tar x   receive one file onto stdout";
const SEND_EXAMPLES: &str = "Examples:
  shmxfer send -m photo.jpg       send one file, verified with MD5
  shmxfer send a.jpg b.jpg c.jpg  several files, each as its own
  tar c dir | shmxfer send --name dir.tar -";
const CLEAN_EXAMPLES: &str = "Examples:
  shmxfer clean                   remove the default channel if its receiver is gone
  shmxfer clean --stale           remove every dead shmxfer channel on the host
  shmxfer clean --legacy          remove the original system's objects (keys 42, 44)";
const STATUS_EXAMPLES: &str = "Examples:
  shmxfer status                  every IPC object, and shmxfer's channels
  shmxfer status -m -p            shared memory only, with creator and last pids
  shmxfer status --json | jq .channels";

/// Flags every subcommand that talks to a channel shares.
#[derive(Debug, Args, Clone)]
pub struct ChannelArgs {
    /// Channel key, decimal or 0x hex [env: SHMXFER_KEY] [default: 0x53484d58; 42 with --legacy]
    #[arg(long, value_parser = parse_key)]
    pub key: Option<Key>,
    /// With --legacy: the size segment's key [default: 44]
    #[arg(long, value_parser = parse_key, requires = "legacy")]
    pub size_key: Option<Key>,
}

impl ChannelArgs {
    /// The native channel key: --key, else SHMXFER_KEY, else the default. (The environment
    /// variable is read here, not by clap, because it must not apply in --legacy mode.)
    pub fn native_key(&self) -> Result<Key, String> {
        if let Some(k) = self.key {
            return Ok(k);
        }
        match std::env::var("SHMXFER_KEY") {
            Ok(v) if !v.is_empty() => parse_key(&v).map_err(|e| format!("SHMXFER_KEY: {e}")),
            _ => Ok(crate::frame::DEFAULT_KEY),
        }
    }

    /// The original system's (content key, size key).
    pub fn legacy_keys(&self) -> (Key, Key) {
        (
            self.key.unwrap_or(crate::legacy::CONTENT_KEY),
            self.size_key.unwrap_or(crate::legacy::SIZE_KEY),
        )
    }
}

#[derive(Debug, Args, Clone)]
pub struct Verbosity {
    /// Log each step of the handshake on stderr (-vv: every chunk)
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Print nothing but errors
    #[arg(short, long)]
    pub quiet: bool,
}

pub use crate::pacer::DirectMode;

#[derive(Debug, Args)]
pub struct RecvArgs {
    #[command(flatten)]
    pub channel: ChannelArgs,
    /// Directory for received files (created if missing)
    #[arg(long, default_value = "output")]
    pub dir: PathBuf,
    /// Base name of output files
    #[arg(long, default_value = "file")]
    pub basename: String,
    /// Extension of output files
    #[arg(long, default_value = ".jpg")]
    pub ext: String,
    /// Name each file as the sender named it (made safe; never overwrites)
    #[arg(long)]
    pub keep_name: bool,
    /// Apply the sender's permission bits and mtime, as `cp -p` does
    #[arg(long)]
    pub preserve: bool,
    /// Exit after one file
    #[arg(long)]
    pub once: bool,
    /// Write the one received file to stdout (implies --once)
    #[arg(long, conflicts_with_all = ["keep_name", "preserve", "fsync"])]
    pub stdout: bool,
    /// fsync each file and its directory before reporting it committed
    #[arg(long)]
    pub fsync: bool,
    /// When to write around the page cache with O_DIRECT: auto switches a large file over
    /// when the page cache proves slower than direct writes; --direct alone means always
    #[arg(
        long,
        value_name = "WHEN",
        value_enum,
        num_args = 0..=1,
        require_equals = true,
        default_value = "auto",
        default_missing_value = "always",
        conflicts_with = "stdout"
    )]
    pub direct: DirectMode,
    /// Permissions of the channel's IPC objects, octal
    #[arg(long, default_value = "0600", value_parser = parse_mode)]
    pub mode: u32,
    /// Size of one slot of the content ring (K, M suffixes)
    #[arg(long, value_parser = parse_size, default_value = "1M")]
    pub slot_size: usize,
    /// Number of slots in the content ring
    #[arg(long, default_value_t = crate::frame::DEFAULT_SLOTS, value_parser = clap::value_parser!(u32).range(1..=crate::frame::MAX_SLOTS as i64))]
    pub slots: u32,
    /// Verify every file with MD5, whatever the sender asks
    #[arg(short = 'm', long = "md5-check")]
    pub md5: bool,
    /// Speak the original system's protocol (keys 42/44)
    #[arg(long)]
    pub legacy: bool,
    #[command(flatten)]
    pub verbosity: Verbosity,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub channel: ChannelArgs,
    /// Wait up to SECS for a receiver to appear and for our turn
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub wait: Option<f64>,
    /// Name to send for stdin (`-`), for `recv --keep-name`
    #[arg(long, default_value = "stdin")]
    pub name: String,
    /// Verify every file with MD5
    #[arg(short = 'm', long = "md5-check")]
    pub md5: bool,
    /// Speak the original system's protocol (keys 42/44)
    #[arg(long)]
    pub legacy: bool,
    #[command(flatten)]
    pub verbosity: Verbosity,
    /// Files to send; `-` is stdin
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CleanArgs {
    #[command(flatten)]
    pub channel: ChannelArgs,
    /// Remove every shmxfer channel whose receiver is dead, and nothing else
    #[arg(long, conflicts_with = "force")]
    pub stale: bool,
    /// Remove the original system's four objects (keys 42 and 44)
    #[arg(long, conflicts_with = "stale")]
    pub legacy: bool,
    /// Remove the channel even though its receiver is alive
    #[arg(long)]
    pub force: bool,
    /// Print what would be removed; remove nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    #[command(flatten)]
    pub verbosity: Verbosity,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Show only the channel at this key (decimal or 0x hex)
    #[arg(long, value_parser = parse_key)]
    pub key: Option<Key>,
    /// Shared memory segments
    #[arg(short = 'm', long)]
    pub shm: bool,
    /// Semaphore sets
    #[arg(short = 's', long)]
    pub sem: bool,
    /// Message queues
    #[arg(short = 'q', long)]
    pub queues: bool,
    /// Attach, detach and change times
    #[arg(short = 't', long)]
    pub time: bool,
    /// Creator and last-operation pids
    #[arg(short = 'p', long)]
    pub pid: bool,
    /// The kernel's IPC limits
    #[arg(short = 'l', long)]
    pub limits: bool,
    /// Sizes in bytes, not human-readable
    #[arg(short = 'b', long)]
    pub bytes: bool,
    /// One JSON object for scripts (schema: docs/status-json.md)
    #[arg(long, conflicts_with_all = ["time", "pid", "limits"])]
    pub json: bool,
}

/// A key in decimal or 0x hex, in 1..=0xfffffffe (0 is IPC_PRIVATE; the content segment sits at
/// KEY+1, which must not wrap).
pub fn parse_key(s: &str) -> Result<Key, String> {
    let t = s.trim();
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

/// Octal permission bits, as chmod takes them: `600`, `0600`, `0o600`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim_start_matches("0o");
    match u32::from_str_radix(t, 8) {
        Ok(m) if m <= 0o777 && !t.is_empty() => Ok(m),
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
    if !(crate::frame::MIN_SLOT..=crate::frame::MAX_SLOT).contains(&v) {
        return Err(format!("slot size {s} is out of range: use 4K to 256M"));
    }
    Ok(v)
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..1e9).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a number of seconds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
