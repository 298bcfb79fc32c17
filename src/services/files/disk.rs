//! The files service's disk side: everything that touches the filesystem,
//! on one blocking thread per session (and a second that syncs batches of
//! small files), fed by the session's network side in `mod.rs`.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use tokio::sync::mpsc;
use tracing::{info, warn};

mod big;
mod commit;
mod dirs;

use self::big::Incoming;
use self::dirs::Dirs;

use self::commit::{Staged, StagedFile, Tmp, commit, discard};
use super::wire::{self, FLAG_RENAME, Frame, Hash, Meta, PARTIAL_DIR, SMALL};
use super::{BATCH_BYTES, Busy, FilesConfig, Head, Job, LINGER, Policy, STAGED_TEXT, Session, SmallFile};
use crate::units::format_size;

/// Where a name leads, once checked.
struct Target {
    parent: Arc<OwnedFd>,
    name: Vec<u8>,
    shown: Vec<u8>,
    replace: bool,
}

/// A directory files go in.
#[derive(Clone)]
struct Parent {
    fd: Arc<OwnedFd>,
    /// Made by this session.
    fresh: bool,
}

/// A refusal of one entry: the sender is told, the session goes on.
struct Refusal(String);

/// The session's disk side: everything that touches the filesystem.
pub(super) struct Disk {
    root: OwnedFd,
    partial: Arc<OwnedFd>,
    committing: Option<std::thread::JoinHandle<io::Result<()>>>,
    dir: PathBuf,
    policy: Policy,
    max_size: u64,
    busy: Busy,
    /// This session, as other sessions see it.
    session: Arc<Session>,
    replies: mpsc::Sender<Vec<Frame>>,
    outbox: RefCell<Vec<Frame>>,
    last_dir: RefCell<Option<(Vec<u8>, Parent)>>,
    /// Directories this session created: nothing was in them but what it
    /// put there, so a new name needs no look first; and they take the
    /// sender's modes and times at the end (no other directory does).
    dirs: RefCell<Dirs>,
    batch_files: usize,
    staged: Vec<Staged>,
    staged_bytes: u64,
    /// Bytes of paths and answers in `staged`.
    staged_text: usize,
    staged_since: Option<Instant>,
    runtime: tokio::runtime::Handle,
    /// End was done: the session finished whole.
    ended: bool,
    pending: Option<Head>,
    incoming: Option<Incoming>,
}

impl Disk {
    pub(super) fn open(
        config: &FilesConfig,
        busy: Busy,
        session: Arc<Session>,
        replies: mpsc::Sender<Vec<Frame>>,
        batch_files: usize,
    ) -> io::Result<Disk> {
        let ctx = |what: &str| {
            let dir = config.dir.display().to_string();
            let what = what.to_string();
            move |e: io::Error| io::Error::new(e.kind(), format!("{what} {dir}: {e}"))
        };
        std::fs::create_dir_all(&config.dir).map_err(ctx("cannot create the receiving directory"))?;
        let root = rustix::fs::open(&config.dir, dir_flags(), Mode::empty())
            .map_err(|e| ctx("cannot open the receiving directory")(e.into()))?;
        let partial = match rustix::fs::mkdirat(&root, PARTIAL_DIR, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {
                rustix::fs::openat(&root, PARTIAL_DIR, dir_flags(), Mode::empty())
                    .map_err(|e| ctx("cannot open the partial-file directory in")(e.into()))?
            }
            Err(e) => return Err(ctx("cannot create the partial-file directory in")(e.into())),
        };
        Ok(Disk {
            root,
            partial: Arc::new(partial),
            committing: None,
            dir: config.dir.clone(),
            policy: config.policy,
            max_size: config.max_size,
            busy,
            session,
            replies,
            outbox: Default::default(),
            last_dir: Default::default(),
            dirs: RefCell::new(Dirs::new(config.max_dirs)),
            batch_files,
            staged: Vec::new(),
            staged_bytes: 0,
            staged_text: 0,
            staged_since: None,
            runtime: tokio::runtime::Handle::current(),
            ended: false,
            pending: None,
            incoming: None,
        })
    }

    /// Queues an answer; they go out in batches ([`Disk::send_replies`]).
    fn reply(&self, f: Frame) -> io::Result<()> {
        let full = {
            let mut out = self.outbox.borrow_mut();
            out.push(f);
            out.len() >= 256
        };
        if full { self.send_replies() } else { Ok(()) }
    }

    /// Sends the queued answers: before every wait, so none is held back.
    fn send_replies(&self) -> io::Result<()> {
        let out = std::mem::take(&mut *self.outbox.borrow_mut());
        if out.is_empty() {
            return Ok(());
        }
        // A sender that reads no answers (its side of the connection
        // gone quiet) must not keep this thread, and the file it holds,
        // once another session has taken that over.
        self.runtime.block_on(async {
            tokio::select! {
                biased;
                sent = self.replies.send(out) => sent.map_err(|_| io::Error::other("the connection closed")),
                _ = self.session.stop.cancelled() => Err(taken_over()),
            }
        })
    }

    pub(super) fn run(mut self, mut jobs: mpsc::Receiver<Job>, sweep: Option<Duration>) -> io::Result<()> {
        if let Some(ttl) = sweep {
            self.sweep(ttl);
        }
        let result = self.work(&mut jobs);
        // A big file cut short stays for a resume; its key goes now, for
        // whoever sends it again.
        self.incoming = None;
        let result = result.and_then(|()| self.join_commit());
        // Ended by another session that took over its file: say so (the
        // queue closing looks like a sender that left).
        let result = match result {
            Ok(()) if !self.ended && self.session.stop.is_cancelled() => Err(taken_over()),
            other => other,
        };
        // Small files not yet synced and named are not kept; a big one
        // stays for resume (its key is released by the guard).
        for s in std::mem::take(&mut self.staged) {
            if let Staged::File(f) = s {
                discard(&self.partial, &f.tmp);
            }
        }
        if let Err(e) = &result {
            let _ = self.reply(Frame::Error(e.to_string()));
        }
        let _ = self.send_replies();
        result
    }

    fn work(&mut self, jobs: &mut mpsc::Receiver<Job>) -> io::Result<()> {
        loop {
            let job = match jobs.try_recv() {
                Ok(job) => job,
                Err(_) => {
                    // Nothing queued: wait a little for more (a burst of
                    // small files shares one sync), then answer what is
                    // staged rather than hold the sender's replies.
                    self.send_replies()?;
                    let next = match self.staged_since {
                        Some(since) => {
                            let wait = (since + LINGER).saturating_duration_since(Instant::now());
                            self.runtime
                                .block_on(async { tokio::time::timeout(wait, jobs.recv()).await.ok().flatten() })
                        }
                        None => None,
                    };
                    if let Some(job) = next {
                        if self.dispatch(job)? {
                            return Ok(());
                        }
                        continue;
                    }
                    self.flush(false)?;
                    self.send_replies()?;
                    match jobs.blocking_recv() {
                        Some(job) => job,
                        None => return Ok(()),
                    }
                }
            };
            if self.dispatch(job)? {
                return Ok(());
            }
        }
    }

    /// Does one job; true at End.
    fn dispatch(&mut self, job: Job) -> io::Result<bool> {
        // Small files and directories keep their answers in order through
        // the staged batch; a big file waits for it to be named.
        if !matches!(job, Job::Small { .. } | Job::Dir { .. }) {
            self.flush(true)?;
        }
        match job {
            Job::Dir { meta, path } => {
                let answer = self.make_dir(&path, meta).map(|()| Frame::Stored(path));
                self.answer(answer.unwrap_or_else(|Refusal(why)| Frame::Refused(why)))?;
            }
            Job::Small(files) => {
                for f in files {
                    self.small(f)?;
                }
            }
            Job::Open { head, answer } => {
                let opened = self.open_big(head, false)?;
                self.send_replies()?;
                let _ = answer.send(opened);
            }
            Job::Proceed { answer } => {
                let head = self.pending.take().ok_or_else(|| io::Error::other("Proceed without Exists"))?;
                let opened = self.open_big(head, true)?;
                self.send_replies()?;
                let _ = answer.send(opened);
            }
            Job::Skip => self.pending = None,
            Job::Data(piece) => self.write_piece(&piece)?,
            Job::Finish(hash) => self.finish_big(hash)?,
            Job::End => {
                self.finish_dirs();
                self.reply(Frame::Bye)?;
                self.ended = true;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The directory a file goes in, created when missing; the last one
    /// is kept, since files of one directory come one after another.
    fn parent_dir(&self, path: &[u8], dirs: &[&[u8]]) -> Result<Parent, Refusal> {
        let key = dirs.join(&b'/');
        if let Some((k, parent)) = &*self.last_dir.borrow()
            && *k == key
        {
            return Ok(parent.clone());
        }
        let fd = Arc::new(self.walk(path, dirs, true)?);
        let parent = Parent { fresh: self.dirs.borrow().created(dirs), fd };
        *self.last_dir.borrow_mut() = Some((key, parent.clone()));
        Ok(parent)
    }

    /// Creates a directory (and its parents), confined; it takes the
    /// sender's mode and time at the end only if this session created it.
    fn make_dir(&mut self, path: &[u8], meta: Meta) -> Result<(), Refusal> {
        let parts = wire::check_path(path).map_err(|e| refusal(path, e))?;
        self.walk(path, &parts, true)?;
        self.dirs.get_mut().set_meta(&parts, meta);
        Ok(())
    }

    /// Opens the directory `parts` names under the root, creating missing
    /// ones if asked (and remembering them); never follows a symlink.
    fn walk(&self, path: &[u8], parts: &[&[u8]], create: bool) -> Result<OwnedFd, Refusal> {
        let mut cur = rustix::io::dup(&self.root).map_err(|e| refusal(path, e))?;
        for (i, part) in parts.iter().enumerate() {
            let next = match rustix::fs::openat(&cur, *part, dir_flags(), Mode::empty()) {
                Err(rustix::io::Errno::NOENT) if create => {
                    let mut dirs = self.dirs.borrow_mut();
                    if dirs.room_for(&parts[..=i]).is_err() {
                        return Err(Refusal(format!(
                            "{}: this session made {} directories, the server's limit (--max-dirs); \
                             send again to store the rest",
                            show(path),
                            dirs.max()
                        )));
                    }
                    match rustix::fs::mkdirat(&cur, *part, Mode::from_raw_mode(0o755)) {
                        Ok(()) => dirs.record_created(&parts[..=i]).expect("room checked"),
                        Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(refusal(path, io_with(e, "cannot create a directory"))),
                    }
                    rustix::fs::openat(&cur, *part, dir_flags(), Mode::empty())
                }
                other => other,
            };
            cur = next.map_err(|e| match e {
                rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => Refusal(format!(
                    "{}: '{}' on the server is a symlink or not a directory; refusing to follow it",
                    show(path),
                    String::from_utf8_lossy(part)
                )),
                e => refusal(path, e),
            })?;
        }
        Ok(cur)
    }

    /// Where a file entry goes, by the policy and the sender's flag; or why
    /// not; `Err(Ok(hash))` when a file of that size is there and the
    /// sender should decide.
    fn target(&self, head: &Head, proceed: bool) -> Result<Result<Target, Hash>, Refusal> {
        let parts = wire::check_path(&head.path).map_err(|e| refusal(&head.path, e))?;
        if head.size > self.max_size {
            return Err(Refusal(format!(
                "{}: {} is over the server's --max-size {}",
                show(&head.path),
                indicatif::HumanBytes(head.size),
                format_size(self.max_size)
            )));
        }
        let (dirs, name) = parts.split_at(parts.len() - 1);
        let Parent { fd: parent, fresh } = self.parent_dir(&head.path, dirs)?;
        let name = name[0].to_vec();
        // A small file's data is here already: in a directory this session
        // made, a name taken anyway (a path sent twice) is caught by the
        // link failing, not by a look first. A big one is looked for, to
        // spare sending it.
        let look = !fresh || head.size > SMALL || self.policy != Policy::Refuse || head.flags & FLAG_RENAME != 0;
        let existing = match look.then(|| rustix::fs::statat(&parent, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)) {
            None | Some(Err(rustix::io::Errno::NOENT)) => None,
            Some(Err(e)) => return Err(refusal(&head.path, e)),
            Some(Ok(st)) => Some(st),
        };
        let Some(st) = existing else {
            return Ok(Ok(Target { parent, name, shown: head.path.clone(), replace: false }));
        };
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile | FileType::Symlink => {}
            FileType::Directory => {
                return Err(Refusal(format!("{}: is a directory on the server", show(&head.path))));
            }
            _ => {
                return Err(Refusal(format!(
                    "{}: is a device, FIFO or socket on the server; refusing to touch it",
                    show(&head.path)
                )));
            }
        }
        let regular = FileType::from_raw_mode(st.st_mode) == FileType::RegularFile;
        if !proceed && regular && st.st_size as u64 == head.size {
            let hash = hash_at(&parent, &name).map_err(|e| refusal(&head.path, e))?;
            return Ok(Err(hash));
        }
        if self.policy == Policy::Rename || head.flags & FLAG_RENAME != 0 {
            for n in 1..=9999 {
                let candidate = wire::numbered(&name, n);
                if let Err(rustix::io::Errno::NOENT) =
                    rustix::fs::statat(&parent, candidate.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                {
                    let mut shown = head.path[..head.path.len() - name.len()].to_vec();
                    shown.extend_from_slice(&candidate);
                    return Ok(Ok(Target { parent, name: candidate, shown, replace: false }));
                }
            }
            return Err(Refusal(format!("{}: no free name left", show(&head.path))));
        }
        if self.policy == Policy::Overwrite {
            return Ok(Ok(Target { parent, name, shown: head.path.clone(), replace: true }));
        }
        Err(Refusal(differs(&head.path)))
    }

    fn small(&mut self, SmallFile { head, data, hash, intact }: SmallFile) -> io::Result<()> {
        if !intact {
            return self.answer(Frame::Refused(format!(
                "{}: BLAKE3 mismatch: the data changed in transit or on the sender; send it again",
                show(&head.path)
            )));
        }
        let t = match self.target(&head, false) {
            Err(Refusal(why)) => return self.answer(Frame::Refused(why)),
            Ok(Err(theirs)) if theirs == hash => return self.answer(Frame::Same),
            Ok(Err(_)) => match self.target(&head, true) {
                Err(Refusal(why)) => return self.answer(Frame::Refused(why)),
                Ok(t) => t.expect("proceeding never asks"),
            },
            Ok(Ok(t)) => t,
        };
        // Unnamed, it may have its final mode from the start.
        let unnamed = rustix::fs::openat(
            &t.parent,
            ".",
            OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC,
            Mode::from_raw_mode(head.meta.mode & 0o777),
        );
        let (tmp, opened) = match unnamed {
            Ok(fd) => (Tmp::Unnamed(File::from(fd)), Ok(())),
            Err(_) => {
                let name = format!("tmp-{}", random_hex());
                let fd = rustix::fs::openat(
                    &self.partial,
                    name.as_str(),
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                );
                (Tmp::Named(name), fd.map(|fd| drop(File::from(fd))).map_err(io::Error::from))
            }
        };
        let written = opened.and_then(|()| {
            let named;
            let mut f = match &tmp {
                Tmp::Unnamed(f) => f,
                Tmp::Named(name) => {
                    named = File::from(rustix::fs::openat(
                        &self.partial,
                        name.as_str(),
                        OFlags::WRONLY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )?);
                    &named
                }
            };
            f.write_all(&data)?;
            let moded = matches!(tmp, Tmp::Unnamed(_)) && head.meta.mode & 0o777 & umask() == 0;
            set_meta(f, &head.meta, !moded)
        });
        if let Err(e) = written {
            discard(&self.partial, &tmp);
            let e = describe_disk_error(&head.path, e, &self.dir);
            if is_full(&e) {
                return Err(e);
            }
            warn!(file = %show(&head.path), error = %e, "not stored");
            return self.answer(Frame::Refused(e.to_string()));
        }
        self.staged_bytes += head.size;
        self.staged_text += t.name.len() + t.shown.len();
        self.staged_since.get_or_insert_with(Instant::now);
        self.staged.push(Staged::File(StagedFile {
            tmp,
            parent: t.parent,
            name: t.name,
            shown: t.shown,
            replace: t.replace,
            size: head.size,
            hash,
        }));
        if self.staged.len() >= self.batch_files || self.staged_bytes >= BATCH_BYTES || self.staged_text >= STAGED_TEXT
        {
            // Synced on another thread while this one writes the next batch.
            self.flush(false)?;
        }
        Ok(())
    }

    /// Answers a small file's entry in its turn: after the staged ones.
    fn answer(&mut self, f: Frame) -> io::Result<()> {
        if self.staged.is_empty() && self.committing.is_none() {
            return self.reply(f);
        }
        self.staged_text += text_len(&f);
        self.staged.push(Staged::Answer(f));
        if self.staged.len() >= self.batch_files || self.staged_text >= STAGED_TEXT {
            // A long run of answers behind one small file is held to the
            // same bound as the files.
            self.flush(false)?;
        }
        Ok(())
    }

    /// Syncs the staged small files with one sync of the filesystem, then
    /// names each and syncs their directories, on a thread of its own;
    /// with `wait`, until that is done (before any other answer is sent).
    fn flush(&mut self, wait: bool) -> io::Result<()> {
        self.join_commit()?;
        if !self.staged.is_empty() {
            self.send_replies()?;
            let batch = std::mem::take(&mut self.staged);
            self.staged_bytes = 0;
            self.staged_text = 0;
            self.staged_since = None;
            let (partial, replies, span) = (self.partial.clone(), self.replies.clone(), tracing::Span::current());
            self.committing = Some(std::thread::spawn(move || span.in_scope(|| commit(batch, &partial, &replies))));
        }
        if wait { self.join_commit() } else { Ok(()) }
    }

    fn join_commit(&mut self) -> io::Result<()> {
        match self.committing.take() {
            Some(t) => t.join().unwrap_or_else(|_| Err(io::Error::other("the sync thread failed"))),
            None => Ok(()),
        }
    }

    /// A failed write: a full disk ends the session (the sender is
    /// streaming and cannot be stopped otherwise); anything else refuses
    /// the one file.
    fn disk_error(&self, path: &[u8], e: io::Error) -> io::Result<()> {
        let e = describe_disk_error(path, e, &self.dir);
        if is_full(&e) {
            return Err(e);
        }
        warn!(file = %show(path), error = %e, "not stored");
        self.reply(Frame::Refused(e.to_string()))
    }

    /// Sets the directories' modes and times last, deepest first, so that
    /// neither a read-only mode nor the files stored in them get in the way.
    /// Only directories this session created take the sender's metadata:
    /// one that was there keeps its own.
    fn finish_dirs(&mut self) {
        let mut dirs = std::mem::replace(self.dirs.get_mut(), Dirs::new(0));
        dirs.drain_finished(|path, meta| {
            if let Ok(parts) = wire::check_path(path)
                && let Ok(fd) = self.walk(path, &parts, false)
            {
                let _ = set_meta(&fd, &meta, true);
            }
        });
        *self.dirs.get_mut() = dirs;
    }

    /// Deletes small-file temporaries of dead sessions and partial files
    /// older than `ttl`.
    fn sweep(&self, ttl: Duration) {
        let Ok(entries) = std::fs::read_dir(self.dir.join(PARTIAL_DIR)) else { return };
        let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let age = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
            let limit = if name.starts_with("tmp-") { Duration::from_secs(3600) } else { ttl };
            let key = name.trim_end_matches(".part");
            if age.is_some_and(|a| a >= limit) && !busy.contains_key(key) {
                info!(partial = %name, "expired; deleted");
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// The bytes of text (a path, a message) an answer holds.
fn text_len(f: &Frame) -> usize {
    match f {
        Frame::Stored(t) => t.len(),
        Frame::Refused(t) | Frame::Error(t) => t.len(),
        _ => 0,
    }
}

/// Why a session ended when another took over its file.
fn taken_over() -> io::Error {
    io::Error::other(
        "another connection took over the file this one was receiving (this one had stalled, or its sender was \
         gone); run the same command again to resume",
    )
}

fn is_full(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// A path for messages and logs.
fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).escape_debug().to_string()
}

fn refusal(path: &[u8], e: impl std::fmt::Display) -> Refusal {
    Refusal(format!("{}: {e}", show(path)))
}

fn io_with(e: rustix::io::Errno, what: &str) -> io::Error {
    let e = io::Error::from(e);
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn describe_disk_error(path: &[u8], e: io::Error, dir: &std::path::Path) -> io::Error {
    match e.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => io::Error::new(
            e.kind(),
            format!(
                "{}: the server's disk is full ({e}) in {}; nothing was kept; free space there and send again",
                show(path),
                dir.display()
            ),
        ),
        _ => io::Error::new(e.kind(), format!("{}: cannot write on the server: {e}", show(path))),
    }
}

/// Sets permissions (without set-id and sticky bits) and modification time.
/// Sets the mode (if `mode`) and modification time.
fn set_meta(fd: impl AsFd, meta: &Meta, mode: bool) -> io::Result<()> {
    if mode {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(meta.mode & 0o777))?;
    }
    let mtime = Timespec { tv_sec: meta.mtime, tv_nsec: meta.mtime_ns as _ };
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let atime = Timespec { tv_sec: now.as_secs() as i64, tv_nsec: now.subsec_nanos() as _ };
    rustix::fs::futimens(&fd, &Timestamps { last_access: atime, last_modification: mtime })?;
    Ok(())
}

/// Why a file is not stored over a different one of its name.
fn differs(path: &[u8]) -> String {
    format!(
        "{}: exists on the server and differs; send with --rename to keep both, or the server needs --overwrite",
        show(path)
    )
}

/// The process's umask, from `/proc/self/status` (reading it with
/// `umask(2)` would change it for a moment); all bits when unknown.
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
            .unwrap_or(0o777)
    })
}

/// The BLAKE3 of the regular file `name` in `dir`.
fn hash_at(dir: &OwnedFd, name: &[u8]) -> io::Result<Hash> {
    let fd = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::from(fd))?;
    Ok(*hasher.finalize().as_bytes())
}

fn random_hex() -> String {
    let mut b = [0u8; 12];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
