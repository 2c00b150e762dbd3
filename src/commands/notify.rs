//! The systemd notify protocol, for `recv` run as a service (`Type=notify`): when
//! `NOTIFY_SOCKET` names a Unix datagram socket (a path, or `@name` for an abstract one), the
//! receiver says `READY=1` once its channel is up, `STATUS=…` as files are committed, and
//! `STOPPING=1` when asked to stop. One datagram each, no dependency; without the variable,
//! nothing is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where the service manager listens, if it does.
pub struct Notifier {
    to: Option<(UnixDatagram, SocketAddr)>,
    /// When the last `STATUS=` went: at most one per [`STATUS_EVERY`] (a datagram per file
    /// would be a syscall per file).
    last: Mutex<Option<Instant>>,
    stopped: std::sync::atomic::AtomicBool,
}

/// "1 file committed", "2 files committed".
pub fn committed(n: u64) -> String {
    match n {
        1 => "1 file committed".into(),
        n => format!("{n} files committed"),
    }
}

/// How often a busy receiver updates its status line.
const STATUS_EVERY: Duration = Duration::from_millis(250);

impl Notifier {
    /// From `NOTIFY_SOCKET`; a variable that names no usable socket is as none.
    pub fn from_env() -> Notifier {
        let to = std::env::var("NOTIFY_SOCKET").ok().and_then(|s| {
            let addr = match s.strip_prefix('@') {
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    SocketAddr::from_abstract_name(name.as_bytes()).ok()?
                }
                None => SocketAddr::from_pathname(&s).ok()?,
            };
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        Notifier {
            to,
            last: Mutex::new(None),
            stopped: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Sends `msg` (newline-separated `KEY=value` lines); failures are ignored, as the
    /// protocol wants: a service manager that went away must not stop the receiver.
    pub fn send(&self, msg: &str) {
        if let Some((sock, addr)) = &self.to {
            let _ = sock.send_to_addr(msg.as_bytes(), addr);
        }
    }

    /// `STOPPING=1`, once however many paths get there (the stop handler and the main
    /// thread's end both do).
    pub fn stopping(&self) {
        if !self.stopped.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.send("STOPPING=1");
        }
    }

    /// A `STATUS=` line (made only if it goes), unless one went less than [`STATUS_EVERY`]
    /// ago (`force`: anyway).
    pub fn status(&self, force: bool, line: impl FnOnce() -> String) {
        if self.to.is_none() {
            return;
        }
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if !force && last.is_some_and(|t| t.elapsed() < STATUS_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        self.send(&format!("STATUS={}", line()));
    }
}
