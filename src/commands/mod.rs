//! The commands: each takes its parsed flags (its own `Args`, composed by the face's clap
//! definition), calls the library and reports.

pub mod clean;
pub mod exit;
pub mod recv;
pub mod send;
pub mod status;

mod args;
mod hooks;
mod notify;
mod progress;
pub(crate) mod term;
mod tree;
mod users;
mod watch;

use crate::protocols::frame::FrameError;
use crate::protocols::sender::SendError;

use clap::Args;

use crate::mechanisms::wire::Address;
use crate::sysv::Key;

/// Flags every subcommand that talks to a channel shares.
#[derive(Debug, Args, Clone)]
pub struct ChannelArgs {
    /// Channel: a key (decimal or 0x hex) or a name [env: SHMXFER_KEY] [default: your own,
    /// from your uid; 42 with --legacy]
    #[arg(long, value_hint = clap::ValueHint::Other, value_parser = crate::mechanisms::parse::parse_address, value_name = "KEY|NAME", allow_hyphen_values = true)]
    pub key: Option<Address>,
    /// With --legacy: the size segment's key [default: 44]
    #[arg(long, value_hint = clap::ValueHint::Other, value_parser = crate::mechanisms::parse::parse_key, requires = "legacy", allow_hyphen_values = true)]
    pub size_key: Option<Key>,
}

impl ChannelArgs {
    /// The native channel: --key, else SHMXFER_KEY, else the user's own default key (from the
    /// effective uid). (The environment variable is read here, not by clap, because it must
    /// not apply in --legacy mode.)
    pub fn native(&self) -> Result<Address, String> {
        let addr = self.resolve()?;
        let flags = match &addr.name {
            Some(n) => format!(" --key {n}"),
            None if addr.key == Address::of_user(crate::os::geteuid()).key => String::new(),
            None => format!(" --key {}", addr.key),
        };
        let _ = CHANNEL_FLAGS.set(flags);
        Ok(addr)
    }

    fn resolve(&self) -> Result<Address, String> {
        if let Some(a) = &self.key {
            return Ok(a.clone());
        }
        match std::env::var("SHMXFER_KEY") {
            Ok(v) if !v.is_empty() => {
                crate::mechanisms::parse::parse_address(&v).map_err(|e| format!("SHMXFER_KEY: {e}"))
            }
            _ => Ok(Address::of_user(crate::os::geteuid())),
        }
    }

    /// The original system's (content key, size key): numbers only, as the original takes.
    pub fn legacy_keys(&self) -> Result<(Key, Key), String> {
        let content = match &self.key {
            Some(Address { name: Some(n), .. }) => {
                return Err(format!(
                    "--legacy takes a numeric --key (the original system knows no names), not `{n}`"
                ));
            }
            Some(a) => a.key,
            None => crate::protocols::legacy::CONTENT_KEY,
        };
        let size = self.size_key.unwrap_or(crate::protocols::legacy::SIZE_KEY);
        let mut flags = String::new();
        if content != crate::protocols::legacy::CONTENT_KEY {
            flags += &format!(" --key {}", content.0);
        }
        if size != crate::protocols::legacy::SIZE_KEY {
            flags += &format!(" --size-key {}", size.0);
        }
        let _ = CHANNEL_FLAGS.set(flags);
        Ok((content, size))
    }
}

/// How the user named the channel, as the flags a suggested command must repeat
/// (` --key camera`; empty for the default channel), set once the command line is read: a
/// hint that dropped them would point at another channel, as a `git` hint that dropped the
/// remote would.
static CHANNEL_FLAGS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The channel flags of this command (see [`CHANNEL_FLAGS`]).
pub fn channel_flags() -> &'static str {
    CHANNEL_FLAGS.get().map_or("", String::as_str)
}

#[derive(Debug, Args, Clone)]
pub struct Verbosity {
    /// Log each step on stderr, with timestamps (-vv: more detail)
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Print nothing but errors
    #[arg(short, long)]
    pub quiet: bool,
}

/// Why a command failed. The face prints it once and exits with its code; a command prints
/// only its records and the fate of each file of several.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Recv(#[from] recv::RecvError),
    #[error(transparent)]
    Send(#[from] crate::protocols::sender::SendError),
    #[error(transparent)]
    Clean(#[from] clean::CleanError),
    #[error(transparent)]
    Status(#[from] status::StatusError),
    #[error(transparent)]
    Legacy(#[from] crate::protocols::legacy::LegacyError),
    #[error("{0}")]
    Usage(String),
    /// A command that could not start, with its exit code and what to do.
    #[error("{1}")]
    Start(i32, String),
    /// Already said (by another thread that is ending the process, or a stop, which needs no
    /// words): only the exit code is left.
    #[error("")]
    Said(i32),
}

impl Error {
    /// What to print: the library's message, with what to do next on the command line (the
    /// library's errors name no flags; the commands know them).
    pub fn message(&self) -> String {
        match self {
            Error::Send(e) => send_message(e),
            Error::Recv(recv::RecvError::Frame(f)) => frame_message(f),
            Error::Recv(recv::RecvError::Output(o)) => output_message(o),
            Error::Legacy(e) => legacy_message(e),
            e => e.to_string(),
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Recv(e) => e.exit_code(),
            Error::Send(e) => exit::of_send(e),
            Error::Clean(e) => e.exit_code(),
            Error::Status(e) => e.exit_code(),
            Error::Legacy(e) => exit::of_legacy(e),
            Error::Usage(_) => exit::USAGE,
            Error::Start(code, _) => *code,
            Error::Said(code) => *code,
        }
    }
    /// Whether there is anything to print.
    pub fn is_said(&self) -> bool {
        matches!(self, Error::Said(_))
    }
}

/// A channel error with the command-line advice that goes with it.
pub fn frame_message(f: &FrameError) -> String {
    let advice = match f {
        FrameError::PermissionDenied { owner, .. } => {
            format!("; run as {owner}, or have the receiver started with `--mode 0660`/`0666`")
        }
        FrameError::Foreign { .. } => ": choose another --key".into(),
        FrameError::InUse { .. } => "; stop it first, or choose another --key".into(),
        FrameError::OtherOwner { owner, .. } => {
            format!("; if you mean to hand your files to {owner}, send with `--owner {owner}`")
        }
        FrameError::Starting { .. } => "; try again, or wait with --wait SECS".into(),
        FrameError::NoReceiver { .. } => {
            format!(": start `shmxfer recv{}` first", channel_flags())
        }
        FrameError::Taken { .. } => ": pick another name or key (--key)".into(),
        FrameError::OtherName { .. } => {
            " (the key is shared: start the receiver with another name)".into()
        }
        FrameError::ReceiverGone { .. } => format!(
            "; start `shmxfer recv{}` again (it takes the key over)",
            channel_flags()
        ),
        FrameError::Removed { .. } => format!("; start `shmxfer recv{}` again", channel_flags()),
        FrameError::Limit { limit, object, .. } => match *limit {
            "kernel.shmmax" if *object == "control segment" => format!(
                "; raise the limit to at least {} bytes (sysctl kernel.shmmax)",
                crate::protocols::frame::CONTROL_LEN
            ),
            "kernel.sem" => "; `shmxfer status -u` shows what is in use: remove objects nobody uses (`shmxfer clean --stale`, ipcrm), or raise the limit (sysctl kernel.sem)".into(),
            "kernel.shmmax" => "; choose a smaller ring (--slot-size, --slots), or raise the limit (sysctl kernel.shmmax)".into(),
            "memory" => "; choose a smaller ring (--slot-size, --slots)".into(),
            "kernel.shmmni" => "; `shmxfer status -u` shows what is in use: remove segments nobody uses (`shmxfer clean --stale`, ipcrm), or raise the limit (sysctl kernel.shmmni)".into(),
            l => format!("; `shmxfer status -u` shows what is in use: remove segments nobody uses (`shmxfer clean --stale`, ipcrm), choose a smaller ring (--slot-size, --slots), or raise the limit (sysctl {l})"),
        },
        FrameError::ReceiverStopped { pid, .. } => {
            format!("; continue it with `kill -CONT {pid}`, or wait longer with --wait SECS")
        }
        FrameError::TimedOut { .. } => {
            "; wait longer with --wait SECS, or see `shmxfer status`".into()
        }
        _ => String::new(),
    };
    format!("{f}{advice}")
}

/// A send error with the command-line advice that goes with it.
pub fn send_message(e: &SendError) -> String {
    match e {
        SendError::Frame(f) => frame_message(f),
        SendError::IsDir(_) => {
            format!(
                "{e}: send it with -r (`recv --keep-path` recreates it), or `tar c DIR | shmxfer send -`"
            )
        }
        e => e.to_string(),
    }
}

fn legacy_message(e: &crate::protocols::legacy::LegacyError) -> String {
    use crate::protocols::legacy::LegacyError;
    match e {
        LegacyError::Size { .. } => format!("{e}: use native mode (without --legacy)"),
        LegacyError::NoConsumer { .. } => {
            format!(
                "{e}: start the original `./consumer` (or `shmxfer recv --legacy{}`) first",
                channel_flags()
            )
        }
        LegacyError::InUse { .. } => {
            format!(
                "{e}; `shmxfer clean --legacy{}` removes leftovers",
                channel_flags()
            )
        }
        LegacyError::ConsumerDead { .. } => format!(
            "{e}: start the consumer again (it needs the keys free: `shmxfer clean --legacy{}` removes the leftovers)",
            channel_flags()
        ),
        e => e.to_string(),
    }
}

fn output_message(e: &crate::mechanisms::output::OutputError) -> String {
    use crate::mechanisms::output::OutputError;
    match e {
        OutputError::NotDir(_) => format!("--dir {e}"),
        OutputError::Unwritable { .. } => {
            format!("{e}: give a --dir this user may write, or run as one who may")
        }
        OutputError::BadBasename => "--basename must be a plain name without `/`".into(),
        OutputError::BadExt => "--ext must not contain `/`".into(),
        e => e.to_string(),
    }
}

/// What a command returns: its exit code when it ran (0, or the code of the files that
/// failed, each already reported), or why it failed as a whole.
pub type Outcome = Result<i32, Error>;
