//! `shmxfer send --watch DIR...`: a drop folder. The regular files already in each DIR go
//! first (sorted), then each new file once it is complete: closed after writing
//! (`IN_CLOSE_WRITE`) or moved in (`IN_MOVED_TO`), never one still open for writing. Files go
//! through one `Sender` at a time, posted as `send` posts them; the channel is released
//! whenever the queue is empty, so other senders get their turn. A receiver that goes away is
//! waited for, and what it did not commit goes to the next one. Each file is sent once per
//! run, and not again after a restart: what was committed is listed in `DIR/.shmxfer-sent`
//! (NUL-separated paths), or, with `--remove-source-files`, removed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use super::exit;
use crate::mechanisms::runtime::Cancel;
use crate::mechanisms::text::escape_path;
use crate::mechanisms::wire::Address;
use crate::protocols::frame::FrameError;
use crate::protocols::sender::{SendError, SendOptions, Sender, Verdict};

/// The list of what a watched directory's files were committed as, in the directory itself.
const SENT_LIST: &str = ".shmxfer-sent";

/// One watched tree: its root, and the files of it committed in earlier runs.
struct Root {
    dir: PathBuf,
    /// Sent as `prefix/rel` with `-r` (as `send -r` names a tree), else as the file's name.
    prefix: Vec<u8>,
    sent: HashSet<PathBuf>,
}

/// A file to send: which root, and its path relative to it.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Pending {
    root: usize,
    rel: PathBuf,
}

pub struct Watch {
    roots: Vec<Root>,
    inotify: Inotify,
    /// Which directory each watch is on: its root and its path relative to the root.
    dirs: HashMap<WatchDescriptor, (usize, PathBuf)>,
    queue: VecDeque<Pending>,
    queued: HashSet<Pending>,
    recursive: bool,
    remove: bool,
    quiet: bool,
    json: bool,
}

/// The flags a watched directory's watch listens for.
fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_ONLYDIR
}

impl Watch {
    /// Watches `dirs` (each must be a directory) and queues what they already hold.
    pub fn new(
        dirs: &[PathBuf],
        recursive: bool,
        remove: bool,
        quiet: bool,
        json: bool,
    ) -> Result<Watch, String> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| format!("cannot watch: {}", e.desc()))?;
        let mut w = Watch {
            roots: Vec::new(),
            inotify,
            dirs: HashMap::new(),
            queue: VecDeque::new(),
            queued: HashSet::new(),
            recursive,
            remove,
            quiet,
            json,
        };
        for d in dirs {
            if !d.is_dir() {
                return Err(format!("{}: --watch takes directories", escape_path(d)));
            }
            let prefix = d
                .canonicalize()
                .ok()
                .and_then(|c| c.file_name().map(|n| n.as_bytes().to_vec()))
                .unwrap_or_default();
            let sent = if remove { HashSet::new() } else { read_sent(d) };
            w.roots.push(Root {
                dir: d.clone(),
                prefix,
                sent,
            });
            w.add_dir(w.roots.len() - 1, PathBuf::new());
        }
        Ok(w)
    }

    /// Watches the directory `rel` of root `root` (and, with `-r`, those under it), and
    /// queues the regular files in it, sorted.
    fn add_dir(&mut self, root: usize, rel: PathBuf) {
        let dir = self.roots[root].dir.join(&rel);
        match self.inotify.add_watch(&dir, mask()) {
            Ok(wd) => {
                self.dirs.insert(wd, (root, rel.clone()));
            }
            Err(e) => crate::mechanisms::term::warn(
                self.quiet,
                format_args!("cannot watch {}: {}", escape_path(&dir), e.desc()),
            ),
        }
        let mut entries: Vec<(OsString, bool)> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let t = e.file_type().ok()?;
                (t.is_file() || t.is_dir()).then(|| (e.file_name(), t.is_dir()))
            })
            .collect();
        entries.sort();
        for (name, is_dir) in entries {
            match is_dir {
                true if self.recursive => self.add_dir(root, rel.join(&name)),
                true => {}
                false => self.offer(root, rel.join(&name)),
            }
        }
    }

    /// Queues a file unless it is ours (the sent list, a temporary file), was sent in an
    /// earlier run, or is queued already.
    fn offer(&mut self, root: usize, rel: PathBuf) {
        let name = rel.file_name().map(OsStrExt::as_bytes).unwrap_or_default();
        if name == SENT_LIST.as_bytes() || name.starts_with(b".shmxfer-") {
            return;
        }
        if self.roots[root].sent.contains(&rel) {
            return;
        }
        let p = Pending { root, rel };
        if self.queued.insert(p.clone()) {
            tracing::debug!(file = %escape_path(&self.roots[root].dir.join(&p.rel)), "queued");
            self.queue.push_back(p);
        }
    }

    /// Takes the events that are in (without waiting): complete files are queued, new
    /// directories watched (with `-r`).
    fn take_events(&mut self) {
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for e in events {
                let (Some(name), Some((root, rel))) = (e.name, self.dirs.get(&e.wd).cloned())
                else {
                    continue;
                };
                let rel = rel.join(&name);
                let is_dir = e.mask.contains(AddWatchFlags::IN_ISDIR);
                if is_dir && self.recursive {
                    if e.mask
                        .intersects(AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                    {
                        self.add_dir(root, rel);
                    }
                } else if !is_dir
                    && e.mask
                        .intersects(AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MOVED_TO)
                    && self.roots[root].dir.join(&rel).is_file()
                {
                    self.offer(root, rel);
                }
            }
        }
    }

    /// Sleeps until an event may be in, a stop, or 2 s (a signal interrupts the wait).
    fn wait_events(&self) {
        let mut fds = [nix::poll::PollFd::new(
            self.inotify.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, 2000u16);
    }

    /// Serves the queue until a stop: returns the exit code (130).
    pub fn run(mut self, addr: &Address, opts: &SendOptions) -> i32 {
        let cancel = opts.cancel.clone();
        while !cancel.is_cancelled() {
            self.take_events();
            if self.queue.is_empty() {
                self.wait_events();
                continue;
            }
            let Some(mut tx) = connect(addr, opts, &cancel, self.quiet) else {
                break;
            };
            self.drain(&mut tx);
            // Whatever became of the channel, the next batch connects anew.
            let _ = tx.finish();
        }
        exit::INTERRUPTED
    }

    /// Posts every queued file (and those that come meanwhile) through `tx`, and settles each.
    /// A channel that fails leaves the files it did not commit queued, for the next receiver.
    fn drain(&mut self, tx: &mut Sender) {
        let mut in_flight: HashMap<u64, Pending> = HashMap::new();
        loop {
            self.take_events();
            while let Some(p) = self.queue.pop_front() {
                if tx.cancel().is_cancelled() {
                    self.queue.push_front(p);
                    break;
                }
                let path = self.roots[p.root].dir.join(&p.rel);
                let ticket = tx.post_path_as(&path, &self.name_of(&p));
                in_flight.insert(ticket, p);
                if self.settle(tx.take_verdicts(), &mut in_flight) {
                    break;
                }
            }
            // Every file in flight gets its verdict, also after a failure: an answer the
            // receiver stored before it went away says the file is committed, and it must not
            // go to the next receiver again.
            let failed = self.settle(tx.flush(), &mut in_flight);
            if !in_flight.is_empty() {
                self.queue.extend(in_flight.drain().map(|(_, p)| p));
            }
            self.take_events();
            if failed || tx.cancel().is_cancelled() || self.queue.is_empty() {
                return;
            }
        }
    }

    /// Records each verdict; returns whether the channel failed (its files without a verdict
    /// go back to the queue, for the next receiver).
    fn settle(&mut self, verdicts: Vec<Verdict>, in_flight: &mut HashMap<u64, Pending>) -> bool {
        let mut failed = false;
        for v in verdicts {
            let Some(p) = in_flight.remove(&v.ticket) else {
                continue;
            };
            match v.result {
                Ok(sent) => self.committed(p, &sent.name),
                // Its fate unknown (the receiver went away, or a stop): the next receiver
                // gets it.
                Err(e) if e.is_fatal() => {
                    failed = true;
                    self.queue.push_back(p);
                }
                Err(e) => {
                    // Reported once and left in place; a new version of it comes back through
                    // its next event.
                    crate::mechanisms::term::error(super::send_message(&e));
                    self.queued.remove(&p);
                }
            }
        }
        failed
    }

    /// A file is committed: recorded (or removed), and told on stdout.
    fn committed(&mut self, p: Pending, as_name: &[u8]) {
        self.queued.remove(&p);
        tracing::debug!(file = %escape_path(&p.rel), removed = self.remove, "committed");
        let root = &mut self.roots[p.root];
        let path = root.dir.join(&p.rel);
        if self.remove {
            if let Err(e) = std::fs::remove_file(&path) {
                crate::mechanisms::term::warn(
                    self.quiet,
                    format_args!(
                        "{}: committed, but cannot be removed: {e}",
                        escape_path(&path)
                    ),
                );
            }
        } else {
            let line = [p.rel.as_os_str().as_bytes(), &[0]].concat();
            let appended = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(root.dir.join(SENT_LIST))
                .and_then(|mut f| f.write_all(&line));
            if let Err(e) = appended {
                crate::mechanisms::term::warn(
                    self.quiet,
                    format_args!("cannot record {} as sent: {e}", escape_path(&path)),
                );
            }
            root.sent.insert(p.rel.clone());
        }
        let line = if self.json {
            serde_json::json!({
                "path": path.to_string_lossy(),
                "committed_as": String::from_utf8_lossy(as_name),
                "removed": self.remove,
            })
            .to_string()
        } else if self.quiet {
            return;
        } else {
            format!(
                "{}\t{}",
                escape_path(&path),
                crate::mechanisms::text::escape(as_name)
            )
        };
        crate::mechanisms::term::out_line(&line);
    }

    /// What a file is sent as: its name, or with `-r` its path under the watched directory's
    /// name (as `send -r` names a tree).
    fn name_of(&self, p: &Pending) -> Vec<u8> {
        match self.recursive {
            true => {
                let prefix = &self.roots[p.root].prefix;
                let rel = p.rel.as_os_str().as_bytes();
                match prefix.is_empty() {
                    true => rel.to_vec(),
                    false => [prefix.as_slice(), b"/", rel].concat(),
                }
            }
            false => p
                .rel
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_default(),
        }
    }
}

fn connect(addr: &Address, opts: &SendOptions, cancel: &Cancel, quiet: bool) -> Option<Sender> {
    let mut said = false;
    loop {
        if cancel.is_cancelled() {
            return None;
        }
        match Sender::connect(addr.clone(), opts) {
            Ok(tx) => return Some(tx),
            Err(SendError::Frame(
                FrameError::NoReceiver { .. }
                | FrameError::ReceiverGone { .. }
                | FrameError::Removed { .. }
                | FrameError::Starting { .. },
            )) => {
                if !std::mem::replace(&mut said, true) {
                    crate::mechanisms::term::warn(
                        quiet,
                        format_args!("waiting for a receiver on key {}", addr.key),
                    );
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(SendError::Frame(FrameError::Interrupted)) => return None,
            // Anything else (a receiver taking the key over just now, another user's channel,
            // something foreign at the key) is said once, and waited out.
            Err(e) => {
                if !std::mem::replace(&mut said, true) {
                    crate::mechanisms::term::error(format_args!(
                        "{}; waiting for a receiver on key {}",
                        super::send_message(&e),
                        addr.key
                    ));
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
}

/// The committed paths listed in `dir`'s sent list.
fn read_sent(dir: &Path) -> HashSet<PathBuf> {
    std::fs::read(dir.join(SENT_LIST))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|p| !p.is_empty())
                .map(|p| PathBuf::from(OsString::from_vec(p.to_vec())))
                .collect()
        })
        .unwrap_or_default()
}
