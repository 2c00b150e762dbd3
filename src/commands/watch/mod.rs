//! `shmxfer send --watch DIR...`: a drop folder, safe where others may write and losing
//! nothing. Each DIR is held by descriptor ([`folder`]); a file goes once it is complete:
//! closed after writing or moved in (inotify), or, found by looking (at startup, in a new
//! directory under `-r`), once unchanged for the settle time; and never while a writer has
//! it open, where the kernel can tell us (a read lease). Only regular files with one name
//! are sent, from the descriptor that was checked. Each version goes once: what was
//! committed is kept in a sent list outside the folder ([`sent`]), keyed on identity. With
//! `--remove-source-files`, a committed file is removed only if it is still the version
//! that was sent. Files go through one `Sender` at a time, posted as `send` posts them; the
//! channel is released whenever the queue is empty, and a receiver that goes away is waited
//! for: what it did not commit goes to the next one.

mod folder;
mod sent;

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use folder::{Folder, Name, Opened, Removal, Seen, Stamp};
use sent::SentList;

use super::exit;
use crate::mechanisms::runtime::Cancel;
use crate::mechanisms::text::escape_path;
use crate::mechanisms::wire::Address;
use crate::protocols::frame::FrameError;
use crate::protocols::sender::{SendError, SendOptions, Sender, Verdict};

/// What the command line asks of a watcher.
pub struct Options {
    pub recursive: bool,
    pub remove: bool,
    pub quiet: bool,
    pub json: bool,
    pub allow_hardlinks: bool,
    /// How long a file found by looking must stay unchanged before it goes.
    pub settle: Duration,
    /// The sent list; `None` for the default place.
    pub state: Option<PathBuf>,
}

/// One watched tree: sent as `prefix/rel` with `-r` (as `send -r` names a tree), else as
/// the file's name.
struct Root {
    prefix: Vec<u8>,
    /// Its directory's slot in the folder.
    slot: usize,
}

pub struct Watch {
    folder: Folder,
    roots: Vec<Root>,
    sent: SentList,
    /// Complete files waiting for the channel, oldest first (a name once).
    queue: VecDeque<Name>,
    queued: HashSet<Name>,
    /// Files found by looking, or changed while sent: their last stamp and when they are due.
    settling: HashMap<Name, (Stamp, Instant)>,
    opts: Options,
    /// Stdout is a pipe nobody reads any more: the watcher stops, as `yes | head` does.
    stdout_gone: bool,
}

impl Watch {
    /// Opens and watches `dirs`, opens the sent list, and lets what the folders hold settle.
    pub fn new(dirs: &[PathBuf], opts: Options) -> Result<Watch, super::Error> {
        let mut folder = Folder::new(opts.recursive, opts.allow_hardlinks, opts.quiet)
            .map_err(|m| super::Error::Start(exit::OSERR, m))?;
        let mut roots = Vec::new();
        let mut found = Vec::new();
        let mut full = Vec::new();
        for d in dirs {
            let (slot, seen) = folder
                .add_root(roots.len(), d)
                .map_err(|e| watch_error(d, e))?;
            let canonical = d.canonicalize().unwrap_or_else(|_| d.clone());
            let prefix = canonical
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_default();
            roots.push(Root { prefix, slot });
            full.push(canonical);
            found.extend(seen);
        }
        let state = match &opts.state {
            Some(s) => s.clone(),
            None => {
                sent::default_path(&full).map_err(|m| super::Error::Start(exit::CANTCREAT, m))?
            }
        };
        let sent = SentList::open(&state).map_err(|m| super::Error::Start(exit::CANTCREAT, m))?;
        tracing::debug!(list = %escape_path(sent.path()), "the sent list");
        let mut w = Watch {
            folder,
            roots,
            sent,
            queue: VecDeque::new(),
            queued: HashSet::new(),
            settling: HashMap::new(),
            opts,
            stdout_gone: false,
        };
        w.start(found);
        Ok(w)
    }

    /// What the folders held at startup: entries of files no longer there leave the sent
    /// list; the rest settle, unless sent before.
    fn start(&mut self, found: Vec<Seen>) {
        if self.sent.fresh() {
            self.adopt_old_lists(&found);
        }
        self.keep_only(&found);
        for s in found {
            self.seen(s);
        }
    }

    /// A first run over folders that version 0.1 watched: the files its in-folder lists name
    /// count as sent, in the versions there now.
    fn adopt_old_lists(&mut self, found: &[Seen]) {
        let mut by_path: HashMap<(usize, PathBuf), Stamp> = HashMap::new();
        for s in found {
            if let Seen::Found(n, st) = s {
                by_path.insert(self.folder.rel(n), *st);
            }
        }
        for (r, root) in self.roots.iter().enumerate() {
            let raw = match self.folder.old_list(root.slot) {
                Ok(Some(raw)) => raw,
                Ok(None) => continue,
                Err(m) => {
                    crate::commands::term::warn(self.opts.quiet, m);
                    continue;
                }
            };
            for rel in raw.split(|&c| c == 0).filter(|p| !p.is_empty()) {
                let rel = PathBuf::from(std::ffi::OsStr::from_bytes(rel));
                if let Some(st) = by_path.get(&(r, rel.clone())) {
                    let _ = self.sent.record(st.ident(), rel.as_os_str().as_bytes());
                }
            }
        }
    }

    /// Takes in what the folders said.
    fn seen(&mut self, s: Seen) {
        match s {
            Seen::Complete(n) => {
                self.settling.remove(&n);
                self.enqueue(n);
            }
            Seen::Modified(n) => {
                if let Some((_, due)) = self.settling.get_mut(&n) {
                    *due = Instant::now() + self.opts.settle;
                }
            }
            Seen::Found(n, st) => {
                if self.queued.contains(&n) {
                    return;
                }
                if self.sent.contains(&st.ident()) {
                    // Committed by a run that was stopped before it could remove it.
                    if self.opts.remove {
                        let _ = self.folder.remove_if_same(&n, &st);
                    }
                    return;
                }
                let due = Instant::now() + self.opts.settle;
                self.settling.entry(n).or_insert((st, due));
            }
            Seen::Overflow => {
                tracing::info!("the kernel dropped events: looking at every directory again");
                for s in self.folder.look_again() {
                    self.seen(s);
                }
            }
        }
    }

    fn enqueue(&mut self, n: Name) {
        if self.queued.insert(n.clone()) {
            tracing::debug!(file = %escape_path(&self.folder.shown(&n)), "queued");
            self.queue.push_back(n);
        }
    }

    /// Takes the events that are in, and queues the settling files that are due: those
    /// unchanged since they were last looked at (a changed one starts its clock again).
    fn tick(&mut self) {
        for s in self.folder.events() {
            self.seen(s);
        }
        let now = Instant::now();
        let due: Vec<Name> = self
            .settling
            .iter()
            .filter(|(_, (_, t))| *t <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for n in due {
            let Some((was, _)) = self.settling.remove(&n) else {
                continue;
            };
            // Gone meanwhile: nothing to send.
            if let Ok(st) = self.folder.stat(&n) {
                let now_st = Stamp::of_stat(&st);
                if now_st.same_version(&was) {
                    self.enqueue(n);
                } else {
                    self.settling.insert(n, (now_st, now + self.opts.settle));
                }
            }
        }
    }

    /// How long the idle wait may last: until the next settling file is due, 2 s at most.
    fn idle_ms(&self) -> u16 {
        let now = Instant::now();
        let next = self
            .settling
            .values()
            .map(|(_, t)| t.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(2));
        next.min(Duration::from_secs(2)).as_millis() as u16 + 1
    }

    /// Serves the queue until a stop: returns the exit code (130).
    pub fn run(mut self, addr: &Address, opts: &SendOptions) -> i32 {
        let cancel = opts.cancel.clone();
        while !cancel.is_cancelled() {
            if self.stdout_gone {
                return exit::PIPE;
            }
            self.tick();
            if self.queue.is_empty() {
                self.folder.wait(self.idle_ms());
                continue;
            }
            let Some(mut tx) = connect(addr, opts, &cancel, self.opts.quiet) else {
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
        let mut in_flight: HashMap<u64, (Name, Stamp)> = HashMap::new();
        loop {
            self.tick();
            while let Some(n) = self.queue.pop_front() {
                if tx.cancel().is_cancelled() || self.stdout_gone {
                    self.queue.push_front(n);
                    break;
                }
                self.queued.remove(&n);
                if let Some((t, stamp)) = self.post(tx, &n) {
                    in_flight.insert(t, (n, stamp));
                }
                if self.settle(tx.take_verdicts(), &mut in_flight) {
                    break;
                }
            }
            // Every file in flight gets its verdict, also after a failure: an answer the
            // receiver stored before it went away says the file is committed, and it must not
            // go to the next receiver again.
            let failed = self.settle(tx.flush(), &mut in_flight);
            for (_, (n, _)) in in_flight.drain() {
                self.enqueue(n);
            }
            self.tick();
            if failed || tx.cancel().is_cancelled() || self.queue.is_empty() || self.stdout_gone {
                return;
            }
        }
    }

    /// Opens a queued file and posts it, unless it is not one to send (said once), was sent
    /// before, or still has a writer (it settles again). Returns its ticket and stamp.
    fn post(&mut self, tx: &mut Sender, n: &Name) -> Option<(u64, Stamp)> {
        let (file, stamp) = match self.folder.open(n) {
            Opened::File(f, st) => (f, st),
            Opened::Gone | Opened::Skip => return None,
            Opened::Failed(e) => {
                crate::commands::term::error(super::send_message(&e));
                return None;
            }
        };
        if self.sent.contains(&stamp.ident()) {
            return None;
        }
        if crate::os_cli::open_for_writing(&file) == Some(true) {
            tracing::debug!(file = %escape_path(&self.folder.shown(n)), "still open for writing: settling");
            self.settling
                .insert(n.clone(), (stamp, Instant::now() + self.opts.settle));
            return None;
        }
        let t = tx.post_opened(&self.folder.shown(n), &self.name_of(n), &file);
        Some((t, stamp))
    }

    /// Records each verdict; returns whether the channel failed (its files without a verdict
    /// go back to the queue, for the next receiver).
    fn settle(
        &mut self,
        verdicts: Vec<Verdict>,
        in_flight: &mut HashMap<u64, (Name, Stamp)>,
    ) -> bool {
        let mut failed = false;
        for v in verdicts {
            let Some((n, stamp)) = in_flight.remove(&v.ticket) else {
                continue;
            };
            match v.result {
                Ok(sent) => self.committed(n, stamp, &sent.name),
                // Its fate unknown (the receiver went away, or a stop): the next receiver
                // gets it.
                Err(e) if e.is_fatal() => {
                    failed = true;
                    self.enqueue(n);
                }
                // Changed while it was read: the new version goes once it settles.
                Err(SendError::Changed { .. } | SendError::ChangedInPlace(_)) => {
                    tracing::info!(file = %escape_path(&self.folder.shown(&n)), "changed while it was read: sent again once it settles");
                    let due = Instant::now() + self.opts.settle;
                    self.settling.insert(n, (stamp, due));
                }
                // Reported once and left in place; a new version of it comes back through
                // its next event.
                Err(e) => crate::commands::term::error(super::send_message(&e)),
            }
        }
        failed
    }

    /// A file is committed: recorded as sent, removed if asked (and still the version sent),
    /// and told on stdout.
    fn committed(&mut self, n: Name, stamp: Stamp, as_name: &[u8]) {
        let shown = self.folder.shown(&n);
        let (_, rel) = self.folder.rel(&n);
        if let Err(e) = self.sent.record(stamp.ident(), rel.as_os_str().as_bytes()) {
            crate::commands::term::warn(
                self.opts.quiet,
                format_args!(
                    "cannot record {} as sent in {}: {}",
                    escape_path(&shown),
                    escape_path(self.sent.path()),
                    crate::mechanisms::text::io_text(&e)
                ),
            );
        }
        let removed = self.opts.remove && self.remove(&n, &stamp);
        tracing::debug!(file = %escape_path(&shown), removed, "committed");
        self.tell(&shown, as_name, removed);
        if self.sent.wants_pruning() {
            self.prune();
        }
    }

    /// Removes a committed file if it is still the version sent; a newer one is queued.
    fn remove(&mut self, n: &Name, stamp: &Stamp) -> bool {
        let shown = self.folder.shown(n);
        match self.folder.remove_if_same(n, stamp) {
            Removal::Removed => true,
            Removal::Gone => false,
            Removal::Changed => {
                tracing::info!(file = %escape_path(&shown), "changed since it was sent: kept, and sent again once it settles");
                if let Ok(st) = self.folder.stat(n) {
                    let due = Instant::now() + self.opts.settle;
                    self.settling.insert(n.clone(), (Stamp::of_stat(&st), due));
                }
                false
            }
            Removal::Failed(e) => {
                crate::commands::term::warn(
                    self.opts.quiet,
                    format_args!(
                        "{}: committed, but cannot be removed: {}",
                        escape_path(&shown),
                        e.desc()
                    ),
                );
                false
            }
        }
    }

    fn tell(&mut self, shown: &std::path::Path, as_name: &[u8], removed: bool) {
        let line = if self.opts.json {
            serde_json::json!({
                "path": shown.to_string_lossy(),
                "committed_as": String::from_utf8_lossy(as_name),
                "removed": removed,
            })
            .to_string()
        } else if self.opts.quiet {
            return;
        } else {
            format!(
                "{}\t{}",
                escape_path(shown),
                crate::mechanisms::text::escape(as_name)
            )
        };
        self.stdout_gone |= !crate::commands::term::out_line(&line);
    }

    /// Drops the sent list's entries of files no longer in the folders.
    fn prune(&mut self) {
        let found = self.folder.look_again();
        self.keep_only(&found);
    }

    /// Keeps in the sent list only the files among `found`.
    fn keep_only(&mut self, found: &[Seen]) {
        let present: HashSet<sent::Ident> = found
            .iter()
            .filter_map(|s| match s {
                Seen::Found(_, st) => Some(st.ident()),
                _ => None,
            })
            .collect();
        if let Err(m) = self.sent.keep_only(&|id| present.contains(id)) {
            crate::commands::term::warn(self.opts.quiet, m);
        }
    }

    /// What a file is sent as: its name, or with `-r` its path under the watched directory's
    /// name (as `send -r` names a tree).
    fn name_of(&self, n: &Name) -> Vec<u8> {
        if !self.opts.recursive {
            return n.name.as_bytes().to_vec();
        }
        let (root, rel) = self.folder.rel(n);
        let prefix = &self.roots[root].prefix;
        let rel = rel.as_os_str().as_bytes();
        match prefix.is_empty() {
            true => rel.to_vec(),
            false => [prefix.as_slice(), b"/", rel].concat(),
        }
    }
}

/// A watched directory that cannot be opened: missing is a missing input (66), as for
/// `send`; anything else is said in words.
fn watch_error(d: &std::path::Path, e: nix::errno::Errno) -> super::Error {
    use nix::errno::Errno;
    let shown = escape_path(d);
    match e {
        Errno::ENOENT => super::Error::Start(exit::NOINPUT, format!("{shown}: no such directory")),
        Errno::ENOTDIR => super::Error::Start(
            exit::USAGE,
            format!("{shown}: not a directory (--watch takes directories)"),
        ),
        Errno::EACCES => super::Error::Start(exit::NOINPUT, format!("{shown}: permission denied")),
        e => super::Error::Start(exit::NOINPUT, format!("{shown}: {}", e.desc())),
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
                    crate::commands::term::warn(
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
                    crate::commands::term::error(format_args!(
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
