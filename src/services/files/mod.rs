//! `files`: receives files and directory trees from `sockit send`, and
//! never shows a partial or corrupt file under its final name.
//!
//! - Every file is written to a temporary file inside the receiving
//!   directory, its BLAKE3 compared with the sender's, fsynced, and only
//!   then renamed into place (then the directory is fsynced).
//! - Files over [`wire::SMALL`] are written to `.sockit-partial/<key>.part`,
//!   where the key names the path, size and time of the sender's file; an
//!   interrupted transfer resumes from there. Partial files expire after
//!   `--partial-ttl`.
//! - Names are confined to the directory: besides the rules of
//!   [`wire::check_path`], every directory on the way is opened without
//!   following symlinks, and a device, FIFO or socket is never written.
//! - Disk work runs on a blocking thread per session, fed through bounded
//!   queues: the network is read while the disk is written, and a stalled
//!   disk or client holds memory to a few MiB.

pub mod wire;

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, Timespec, Timestamps};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use self::wire::{FLAG_RENAME, Frame, Hash, Meta, PARTIAL_DIR, SMALL};
use crate::auth::{self, Throttle};
use crate::frames::{FrameReader, FrameStream};
use crate::units::format_size;
use crate::{Conn, Service};

/// Default for [`FilesConfig::max_size`]: 16 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 16 << 30;
/// Default for [`FilesConfig::partial_ttl`]: a day.
pub const DEFAULT_PARTIAL_TTL: Duration = Duration::from_secs(24 * 3600);
/// Small files wait for one sync of the filesystem in batches of at most
/// this many (each holds a descriptor until then; fewer when the
/// open-file limit is low), or [`BATCH_BYTES`].
const BATCH_FILES: usize = 4096;
const BATCH_BYTES: u64 = 64 << 20;
/// Directories one session may create: their modes and times are kept
/// in memory until the end.
const MAX_DIRS: usize = 1_000_000;
/// How long staged small files may wait for more to share their sync.
const LINGER: Duration = Duration::from_millis(10);
/// Data pieces queued between the network and the disk, per session.
const QUEUE: usize = 8;
/// A big file's data is handed to the disk's writeback every this many bytes.
const WRITEBACK: u64 = 32 << 20;
/// Partial directories are swept at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// What to do when a file of that name is already there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// Tell the sender (it may ask for a new name with `--rename`).
    #[default]
    Refuse,
    /// Replace it.
    Overwrite,
    /// Store the new one as `name (1).ext`.
    Rename,
}

/// How the files service stores what it receives.
#[derive(Clone, Debug)]
pub struct FilesConfig {
    /// Where files go; created when missing.
    pub dir: PathBuf,
    /// The shared secret; `None` admits anyone who can connect (or, over
    /// TLS with client certificates, whoever has one).
    pub token: Option<Vec<u8>>,
    /// When the name is taken.
    pub policy: Policy,
    /// The largest file accepted.
    pub max_size: u64,
    /// Partial files untouched for this long are deleted.
    pub partial_ttl: Duration,
}

/// The files service.
#[derive(Debug)]
pub struct Files {
    config: FilesConfig,
    throttle: Throttle,
    /// Partial files being written now, by key: one writer each.
    busy: Arc<Mutex<HashSet<String>>>,
    last_sweep: AtomicU64,
    started: Instant,
}

impl Files {
    /// A files service.
    pub fn new(config: FilesConfig) -> Self {
        Files {
            config,
            throttle: Throttle::default(),
            busy: Arc::default(),
            last_sweep: AtomicU64::new(u64::MAX),
            started: Instant::now(),
        }
    }

    fn sweep_due(&self) -> bool {
        let now = self.started.elapsed().as_secs();
        let last = self.last_sweep.load(Ordering::Relaxed);
        (last == u64::MAX || now.saturating_sub(last) >= SWEEP_EVERY.as_secs())
            && self.last_sweep.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }
}

/// Work for the session's disk thread, in the order frames arrived.
enum Job {
    Dir { meta: Meta, path: Vec<u8> },
    Small(Vec<(Head, Bytes, Hash)>),
    Open { head: Head, answer: oneshot::Sender<Opened> },
    Proceed { answer: oneshot::Sender<Opened> },
    Skip,
    Data(Bytes),
    Finish(Hash),
    End,
}

/// A file entry as announced.
struct Head {
    size: u64,
    meta: Meta,
    flags: u8,
    path: Vec<u8>,
}

/// The disk thread's first answer to a big file.
#[derive(Debug, PartialEq, Eq)]
enum Opened {
    Send(u64),
    Exists,
    Refused,
}

impl Service for Files {
    async fn serve(&self, conn: Conn) -> io::Result<()> {
        let mut s = FrameStream::<Conn, Frame>::new(conn);
        if !auth::accept(&mut s, self.config.token.as_deref(), &self.throttle, 0, true).await? {
            return Ok(());
        }
        let (conn, rest) = s.into_parts();
        let (rd, mut wr) = tokio::io::split(conn);
        let mut rd = FrameReader::<_, Frame>::new(rd, rest);
        let (jobs, job_rx) = mpsc::channel(QUEUE);
        let (reply_tx, mut replies) = mpsc::channel::<Vec<Frame>>(64);
        let disk = Disk::open(&self.config, self.busy.clone(), reply_tx)?;
        let sweep = self.sweep_due().then_some(self.config.partial_ttl);
        let worker = tokio::task::spawn_blocking(move || disk.run(job_rx, sweep));
        let writer = async move {
            let mut buf = BytesMut::new();
            while let Some(frames) = replies.recv().await {
                buf.clear();
                frames.iter().for_each(|f| f.encode(&mut buf));
                while let Ok(frames) = replies.try_recv() {
                    frames.iter().for_each(|f| f.encode(&mut buf));
                }
                wr.write_all(&buf).await?;
            }
            wr.flush().await?;
            io::Result::Ok(wr)
        };
        // The reader owns the job queue: when it stops, the disk thread
        // finishes, which closes the replies, which ends the writer.
        let (read, written) = tokio::join!(receive(&mut rd, jobs), writer);
        let disk_result = worker.await.map_err(io::Error::other)?;
        let mut wr = written?;
        if let Err(e) = disk_result.and(read) {
            // Let the error frame reach the sender before the close: stop
            // writing, and drain what it still sends for a moment.
            let _ = wr.shutdown().await;
            let _ = tokio::time::timeout(Duration::from_secs(2), rd.chunk(1 << 20)).await;
            return Err(e);
        }
        Ok(())
    }
}

/// Reads entries and file data off the connection and hands them to the
/// disk thread, until End or until the client or the disk thread goes.
async fn receive<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut FrameReader<R, Frame>,
    jobs: mpsc::Sender<Job>,
) -> io::Result<()> {
    let gone = || io::Error::other("stopped: the disk side ended the session");
    let send = |job| async { jobs.send(job).await.map_err(|_| gone()) };
    let mut carried = None;
    loop {
        let frame = match carried.take() {
            Some(f) => f,
            None => rd
                .recv()
                .await?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the sender left before End"))?,
        };
        match frame {
            Frame::Dir { meta, path } => send(Job::Dir { meta, path }).await?,
            Frame::File { size, meta, flags, path } if size <= SMALL => {
                // Small files already in the buffer travel to the disk
                // thread together: one hand-over for many files.
                let mut batch = Vec::new();
                let mut bytes = 0;
                let mut next = Some(Frame::File { size, meta, flags, path });
                while let Some(Frame::File { size, meta, flags, path }) = next {
                    let data = rd.exact(size as usize).await?;
                    let hash = expect_done(rd).await?;
                    bytes += size;
                    batch.push((Head { size, meta, flags, path }, data, hash));
                    next = None;
                    if batch.len() < BATCH_FILES && bytes < SMALL {
                        match rd.buffered().map_err(crate::frames::invalid)? {
                            Some(f @ Frame::File { size, .. }) if size <= SMALL => next = Some(f),
                            Some(other) => {
                                send(Job::Small(std::mem::take(&mut batch))).await?;
                                carried = Some(other);
                            }
                            None => {}
                        }
                    }
                }
                if !batch.is_empty() {
                    send(Job::Small(batch)).await?;
                }
            }
            Frame::File { size, meta, flags, path } => {
                let (tx, mut answer) = oneshot::channel();
                send(Job::Open { head: Head { size, meta, flags, path }, answer: tx }).await?;
                loop {
                    match answer.await.map_err(|_| gone())? {
                        Opened::Send(offset) => {
                            let mut left = size - offset;
                            while left > 0 {
                                let piece = rd.chunk(left.min(1 << 20) as usize).await?;
                                left -= piece.len() as u64;
                                send(Job::Data(piece)).await?;
                            }
                            let hash = expect_done(rd).await?;
                            send(Job::Finish(hash)).await?;
                        }
                        Opened::Exists => match rd.expect().await? {
                            Frame::Skip => send(Job::Skip).await?,
                            Frame::Proceed => {
                                let (tx, rx) = oneshot::channel();
                                send(Job::Proceed { answer: tx }).await?;
                                answer = rx;
                                continue;
                            }
                            other => return Err(unexpected(&other, "Skip or Proceed")),
                        },
                        Opened::Refused => {}
                    }
                    break;
                }
            }
            Frame::End => return send(Job::End).await,
            other => return Err(unexpected(&other, "an entry or End")),
        }
    }
}

async fn expect_done<R: tokio::io::AsyncRead + Unpin>(rd: &mut FrameReader<R, Frame>) -> io::Result<Hash> {
    match rd.expect().await? {
        Frame::Done(hash) => Ok(hash),
        other => Err(unexpected(&other, "Done")),
    }
}

fn unexpected(f: &Frame, wanted: &str) -> io::Error {
    let name = format!("{f:?}");
    let name = name.split(['(', ' ', '{']).next().unwrap_or("");
    io::Error::new(io::ErrorKind::InvalidData, format!("protocol error: got {name}, expected {wanted}"))
}

/// What a small file's entry waits for: its sync and name, or (when it was
/// answered at once) only its turn, so answers keep the entries' order.
enum Staged {
    File(StagedFile),
    Answer(Frame),
}

/// A small file written and waiting for the batch's sync.
struct StagedFile {
    tmp: Tmp,
    parent: Arc<OwnedFd>,
    name: Vec<u8>,
    shown: Vec<u8>,
    replace: bool,
    size: u64,
}

/// Where a small file waits for its sync: an unnamed file in its target
/// directory (`O_TMPFILE`: it has no name until it is whole, and vanishes
/// in a crash), or, on filesystems without that, a named one in the
/// partial directory.
enum Tmp {
    Unnamed(File),
    Named(String),
}

/// A big file being received.
struct Incoming {
    head: Head,
    file: File,
    key: String,
    hasher: blake3::Hasher,
    parent: Arc<OwnedFd>,
    name: Vec<u8>,
    shown: Vec<u8>,
    replace: bool,
    resumed_from: u64,
    started: Instant,
    /// Bytes written since writeback was last started.
    unflushed: u64,
    _busy: BusyGuard,
}

/// Releases a partial file's key when its writer ends.
struct BusyGuard(Arc<Mutex<HashSet<String>>>, String);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1);
    }
}

/// Where a name leads, once checked.
struct Target {
    parent: Arc<OwnedFd>,
    name: Vec<u8>,
    shown: Vec<u8>,
    replace: bool,
}

/// A refusal of one entry: the sender is told, the session goes on.
struct Refusal(String);

/// The session's disk side: everything that touches the filesystem.
struct Disk {
    root: OwnedFd,
    partial: Arc<OwnedFd>,
    committing: Option<std::thread::JoinHandle<io::Result<()>>>,
    dir: PathBuf,
    policy: Policy,
    max_size: u64,
    busy: Arc<Mutex<HashSet<String>>>,
    replies: mpsc::Sender<Vec<Frame>>,
    outbox: std::cell::RefCell<Vec<Frame>>,
    last_dir: std::cell::RefCell<Option<(Vec<u8>, Arc<OwnedFd>)>>,
    batch_files: usize,
    staged: Vec<Staged>,
    staged_bytes: u64,
    staged_since: Option<Instant>,
    runtime: tokio::runtime::Handle,
    dirs: Vec<(Vec<u8>, Meta)>,
    pending: Option<Head>,
    incoming: Option<Incoming>,
}

impl Disk {
    fn open(
        config: &FilesConfig,
        busy: Arc<Mutex<HashSet<String>>>,
        replies: mpsc::Sender<Vec<Frame>>,
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
            replies,
            outbox: Default::default(),
            last_dir: Default::default(),
            batch_files: rustix::process::getrlimit(rustix::process::Resource::Nofile)
                .current
                .map_or(BATCH_FILES, |n| (n as usize / 8).clamp(16, BATCH_FILES)),
            staged: Vec::new(),
            staged_bytes: 0,
            staged_since: None,
            runtime: tokio::runtime::Handle::current(),
            dirs: Vec::new(),
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
        self.replies.blocking_send(out).map_err(|_| io::Error::other("the connection closed"))
    }

    fn run(mut self, mut jobs: mpsc::Receiver<Job>, sweep: Option<Duration>) -> io::Result<()> {
        if let Some(ttl) = sweep {
            self.sweep(ttl);
        }
        let result = self.work(&mut jobs).and_then(|()| self.join_commit());
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
        if !matches!(job, Job::Small { .. }) {
            self.flush(true)?;
        }
        match job {
            Job::Dir { meta, path } => {
                let answer = if self.dirs.len() >= MAX_DIRS {
                    Err(Refusal(format!("{}: over {MAX_DIRS} directories in one session", show(&path))))
                } else {
                    self.make_dir(&path)
                };
                let answer = answer.map(|()| {
                    self.dirs.push((path.clone(), meta));
                    Frame::Stored(path)
                });
                self.reply(answer.unwrap_or_else(|Refusal(why)| Frame::Refused(why)))?;
            }
            Job::Small(files) => {
                for (head, data, hash) in files {
                    self.small(head, data, hash)?;
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
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The directory a file goes in, created when missing; the last one
    /// is kept, since files of one directory come one after another.
    fn parent_dir(&self, path: &[u8], dirs: &[&[u8]]) -> Result<Arc<OwnedFd>, Refusal> {
        let key = dirs.join(&b'/');
        if let Some((k, fd)) = &*self.last_dir.borrow()
            && *k == key
        {
            return Ok(fd.clone());
        }
        let fd = Arc::new(self.walk(path, dirs, true)?);
        *self.last_dir.borrow_mut() = Some((key, fd.clone()));
        Ok(fd)
    }

    /// Creates a directory (and its parents), confined.
    fn make_dir(&self, path: &[u8]) -> Result<(), Refusal> {
        let parts = wire::check_path(path).map_err(|e| refusal(path, e))?;
        self.walk(path, &parts, true).map(drop)
    }

    /// Opens the directory `parts` names under the root, creating missing
    /// ones if asked; never follows a symlink.
    fn walk(&self, path: &[u8], parts: &[&[u8]], create: bool) -> Result<OwnedFd, Refusal> {
        let mut cur = rustix::io::dup(&self.root).map_err(|e| refusal(path, e))?;
        for part in parts {
            let next = match rustix::fs::openat(&cur, *part, dir_flags(), Mode::empty()) {
                Err(rustix::io::Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&cur, *part, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
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
        let parent = self.parent_dir(&head.path, dirs)?;
        let name = name[0].to_vec();
        let existing = match rustix::fs::statat(&parent, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => None,
            Err(e) => return Err(refusal(&head.path, e)),
            Ok(st) => Some(st),
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
        Err(Refusal(format!(
            "{}: exists on the server and differs; send with --rename to keep both, or the server needs --overwrite",
            show(&head.path)
        )))
    }

    fn small(&mut self, head: Head, data: Bytes, hash: Hash) -> io::Result<()> {
        if *blake3::hash(&data).as_bytes() != hash {
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
        let unnamed = rustix::fs::openat(
            &t.parent,
            ".",
            OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
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
            set_meta(f, &head.meta)
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
        self.staged_since.get_or_insert_with(Instant::now);
        self.staged.push(Staged::File(StagedFile {
            tmp,
            parent: t.parent,
            name: t.name,
            shown: t.shown,
            replace: t.replace,
            size: head.size,
        }));
        if self.staged.len() >= self.batch_files || self.staged_bytes >= BATCH_BYTES {
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
        self.staged.push(Staged::Answer(f));
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

    fn open_big(&mut self, head: Head, proceed: bool) -> io::Result<Opened> {
        let t = match self.target(&head, proceed) {
            Err(Refusal(why)) => {
                self.reply(Frame::Refused(why))?;
                return Ok(Opened::Refused);
            }
            Ok(Err(hash)) => {
                self.pending = Some(head);
                self.reply(Frame::Exists(hash))?;
                return Ok(Opened::Exists);
            }
            Ok(Ok(t)) => t,
        };
        let key = partial_key(&head);
        // A sender run again at once after being killed may come before
        // its old connection is noticed gone: give that a moment.
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.busy.lock().unwrap_or_else(|e| e.into_inner()).contains(&key) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let guard = {
            let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            if !busy.insert(key.clone()) {
                drop(busy);
                self.reply(Frame::Refused(format!(
                    "{}: another connection is receiving this file now; try again when it is done",
                    show(&head.path)
                )))?;
                return Ok(Opened::Refused);
            }
            BusyGuard(self.busy.clone(), key.clone())
        };
        let part = format!("{key}.part");
        let opened = (|| {
            let fd = rustix::fs::openat(
                &self.partial,
                part.as_str(),
                OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            let mut file = File::from(fd);
            let mut have = file.metadata()?.len();
            if have > head.size {
                file.set_len(0)?;
                have = 0;
            }
            let mut hasher = blake3::Hasher::new();
            if have > 0 {
                // What is already here counts toward the end-to-end hash.
                file.seek(SeekFrom::Start(0))?;
                hasher.update_reader((&mut file).take(have))?;
            }
            file.seek(SeekFrom::Start(have))?;
            io::Result::Ok((file, hasher, have))
        })();
        let (file, hasher, have) = match opened {
            Ok(x) => x,
            Err(e) => return self.disk_error(&head.path, e).map(|()| Opened::Refused),
        };
        let need = head.size - have;
        if let Ok(vfs) = rustix::fs::fstatvfs(&file)
            && vfs.f_bavail.saturating_mul(vfs.f_frsize) < need
        {
            drop(file);
            let _ = rustix::fs::unlinkat(&self.partial, part.as_str(), AtFlags::empty());
            self.reply(Frame::Refused(format!(
                "{}: not enough space on the server: {} needed, {} free",
                show(&head.path),
                indicatif::HumanBytes(need),
                indicatif::HumanBytes(vfs.f_bavail.saturating_mul(vfs.f_frsize))
            )))?;
            return Ok(Opened::Refused);
        }
        if have > 0 {
            info!(file = %show(&head.path), from = have, "resuming");
        }
        self.reply(Frame::Send(have))?;
        self.incoming = Some(Incoming {
            file,
            key,
            hasher,
            parent: t.parent,
            name: t.name,
            shown: t.shown,
            replace: t.replace,
            resumed_from: have,
            started: Instant::now(),
            unflushed: 0,
            _busy: guard,
            head,
        });
        Ok(Opened::Send(have))
    }

    fn write_piece(&mut self, piece: &[u8]) -> io::Result<()> {
        let inc = self.incoming.as_mut().ok_or_else(|| io::Error::other("file data outside a file"))?;
        inc.hasher.update(piece);
        if let Err(e) = inc.file.write_all(piece) {
            let inc = self.incoming.take().expect("checked");
            let _ = rustix::fs::unlinkat(&self.partial, format!("{}.part", inc.key).as_str(), AtFlags::empty());
            return Err(describe_disk_error(&inc.head.path, e, &self.dir));
        }
        inc.unflushed += piece.len() as u64;
        if inc.unflushed >= WRITEBACK {
            // Start writing what came so far to disk now, so the fsync at
            // the end has little left to do and dirty pages stay bounded.
            inc.unflushed = 0;
            // SAFETY: sync_file_range only reads its integer arguments; the
            // descriptor is open for as long as `inc.file` lives.
            unsafe {
                libc::sync_file_range(std::os::fd::AsRawFd::as_raw_fd(&inc.file), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
        Ok(())
    }

    fn finish_big(&mut self, hash: Hash) -> io::Result<()> {
        let inc = self.incoming.take().ok_or_else(|| io::Error::other("Done outside a file"))?;
        let part = format!("{}.part", inc.key);
        if *inc.hasher.finalize().as_bytes() != hash {
            let _ = rustix::fs::unlinkat(&self.partial, part.as_str(), AtFlags::empty());
            warn!(file = %show(&inc.head.path), resumed_from = inc.resumed_from, "BLAKE3 mismatch; partial data dropped");
            return self.reply(Frame::Refused(format!(
                "{}: BLAKE3 mismatch{}: nothing was stored; send it again",
                show(&inc.head.path),
                if inc.resumed_from > 0 { " (the partial data on the server did not match)" } else { "" }
            )));
        }
        let flags = if inc.replace { RenameFlags::empty() } else { RenameFlags::NOREPLACE };
        let stored = (|| {
            set_meta(&inc.file, &inc.head.meta)?;
            inc.file.sync_all()?;
            rustix::fs::renameat_with(&self.partial, part.as_str(), &inc.parent, inc.name.as_slice(), flags)?;
            rustix::fs::fsync(&inc.parent)?;
            io::Result::Ok(())
        })();
        match stored {
            Ok(()) => {
                let secs = inc.started.elapsed().as_secs_f64();
                info!(
                    file = %show(&inc.shown),
                    bytes = inc.head.size,
                    resumed_from = inc.resumed_from,
                    mib_per_s = ((inc.head.size - inc.resumed_from) as f64 / secs.max(1e-6) / 1048576.0) as u64,
                    "stored"
                );
                self.reply(Frame::Stored(inc.shown))
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::EXIST.raw_os_error()) => {
                let _ = rustix::fs::unlinkat(&self.partial, part.as_str(), AtFlags::empty());
                self.reply(Frame::Refused(format!(
                    "{}: appeared on the server meanwhile; send again",
                    show(&inc.shown)
                )))
            }
            Err(e) => {
                let _ = rustix::fs::unlinkat(&self.partial, part.as_str(), AtFlags::empty());
                self.disk_error(&inc.head.path, e)
            }
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
    fn finish_dirs(&mut self) {
        for (path, meta) in std::mem::take(&mut self.dirs).into_iter().rev() {
            if let Ok(parts) = wire::check_path(&path)
                && let Ok(fd) = self.walk(&path, &parts, false)
            {
                let _ = set_meta(&fd, &meta);
            }
        }
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
            if age.is_some_and(|a| a >= limit) && !busy.contains(key) {
                info!(partial = %name, "expired; deleted");
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Syncs a batch of small files and names them, answering each entry in
/// order.
fn commit(batch: Vec<Staged>, partial: &OwnedFd, replies: &mpsc::Sender<Vec<Frame>>) -> io::Result<()> {
    if batch.iter().any(|s| matches!(s, Staged::File(_))) {
        rustix::fs::syncfs(partial).map_err(|e| io_with(e, "sync failed"))?;
    }
    let mut synced: Vec<Arc<OwnedFd>> = Vec::new();
    let mut answers = Vec::with_capacity(batch.len());
    for s in batch {
        let s = match s {
            Staged::Answer(f) => {
                answers.push(f);
                continue;
            }
            Staged::File(s) => s,
        };
        match place(partial, &s) {
            Ok(()) => {
                if !synced.iter().any(|d| Arc::ptr_eq(d, &s.parent)) {
                    rustix::fs::fsync(&*s.parent).map_err(|e| io_with(e, "sync failed"))?;
                    synced.push(s.parent.clone());
                }
                info!(file = %show(&s.shown), bytes = s.size, "stored");
                answers.push(Frame::Stored(s.shown));
            }
            Err(e) => {
                discard(partial, &s.tmp);
                let why = match e {
                    rustix::io::Errno::EXIST => "appeared on the server meanwhile; send again".to_string(),
                    e => io::Error::from(e).to_string(),
                };
                answers.push(Frame::Refused(format!("{}: {why}", show(&s.shown))));
            }
        }
    }
    replies.blocking_send(answers).map_err(|_| io::Error::other("the connection closed"))
}

/// Gives a synced small file its name: never over an existing file unless
/// the policy replaces.
fn place(partial: &OwnedFd, s: &StagedFile) -> Result<(), rustix::io::Errno> {
    let noreplace = if s.replace { RenameFlags::empty() } else { RenameFlags::NOREPLACE };
    match &s.tmp {
        Tmp::Named(tmp) => rustix::fs::renameat_with(partial, tmp.as_str(), &*s.parent, s.name.as_slice(), noreplace),
        Tmp::Unnamed(f) => {
            // An empty path names the open file itself (where the kernel
            // allows it: recent ones, or root); else through /proc.
            let link = |name: &[u8]| match rustix::fs::linkat(f, "", &*s.parent, name, AtFlags::EMPTY_PATH) {
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::PERM | rustix::io::Errno::INVAL) => {
                    let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(f));
                    rustix::fs::linkat(rustix::fs::CWD, proc_path.as_str(), &*s.parent, name, AtFlags::SYMLINK_FOLLOW)
                }
                other => other,
            };
            if !s.replace {
                return link(&s.name);
            }
            // linkat never replaces: link under a hidden name, then rename
            // that over the old file.
            let hidden = format!(".sockit-tmp-{}", random_hex());
            link(hidden.as_bytes())?;
            rustix::fs::renameat(&*s.parent, hidden.as_str(), &*s.parent, s.name.as_slice()).inspect_err(|_| {
                let _ = rustix::fs::unlinkat(&*s.parent, hidden.as_str(), AtFlags::empty());
            })
        }
    }
}

/// Drops a small file's temporary data.
fn discard(partial: &OwnedFd, tmp: &Tmp) {
    if let Tmp::Named(name) = tmp {
        let _ = rustix::fs::unlinkat(partial, name.as_str(), AtFlags::empty());
    }
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
fn set_meta(fd: impl AsFd, meta: &Meta) -> io::Result<()> {
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(meta.mode & 0o777))?;
    let mtime = Timespec { tv_sec: meta.mtime, tv_nsec: meta.mtime_ns as _ };
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let atime = Timespec { tv_sec: now.as_secs() as i64, tv_nsec: now.subsec_nanos() as _ };
    rustix::fs::futimens(&fd, &Timestamps { last_access: atime, last_modification: mtime })?;
    Ok(())
}

/// The BLAKE3 of the regular file `name` in `dir`.
fn hash_at(dir: &OwnedFd, name: &[u8]) -> io::Result<Hash> {
    let fd = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::from(fd))?;
    Ok(*hasher.finalize().as_bytes())
}

/// The name of a big file's partial data: the same path, size and time
/// from the sender give the same key, so a second send finds it.
fn partial_key(head: &Head) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"sockit-partial-v1");
    h.update(&head.size.to_be_bytes());
    h.update(&head.meta.mtime.to_be_bytes());
    h.update(&head.meta.mtime_ns.to_be_bytes());
    h.update(&head.path);
    h.finalize().to_hex()[..32].to_string()
}

fn random_hex() -> String {
    let mut b = [0u8; 12];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}
