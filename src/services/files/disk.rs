//! The files service's disk side: everything that touches the filesystem,
//! fed by the session's network side in `mod.rs`.
//!
//! Three threads per session, one owner for each decision, std channels
//! between them:
//! - the network side (async) reads frames and hands them over as
//!   [`Job`]s in arrival order, through [`Jobs`]: a std channel bounded by a
//!   semaphore that it awaits, so a full queue never blocks a runtime
//!   thread. The disk's answer to a big file ([`Opened`]) comes back to it
//!   once, and it is the one that tells the sender and acts on it.
//! - the disk thread ([`Disk::run`], a blocking task) owns the receiving
//!   tree (`tree.rs`), the big file being written (`big.rs`), the small
//!   files being staged (`small.rs`) and the order of the answers
//!   ([`Outbox`]). It waits on the job queue, with a timeout while staged
//!   small files linger for company.
//! - the commit thread, started with a session's first batch of small
//!   files and living as long as the session, syncs and names one batch at
//!   a time and answers for it.
//!
//! Answers go to the network side's writer through a bounded channel, and
//! a thread that sends one blocks while the sender reads slowly; when
//! another session takes this one's file over, the writer gives up, which
//! closes the channel and frees both threads.

use std::fs::{File, FileTimes, Permissions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::{info, warn};

mod big;
mod dirs;
mod small;
mod tree;

use self::big::{Finished, Incoming, Opening};
use self::dirs::Dirs;
use self::small::Batch;
use self::tree::{Target, Tree, Where};
use super::session::{Claim, KEY_WAIT, Session, Writer, Writers};
use super::wire::{self, FLAG_RENAME, Frame, Hash, Meta, PARTIAL_DIR, Reason, SMALL};
use super::{FilesConfig, Policy, hash_prefix_with};
use crate::sys::fs as sysfs;

/// Answers gathered before they go to the writer as one batch.
const OUTBOX_FRAMES: usize = 256;

/// Work for the session's disk thread, in the order frames arrived.
pub(super) enum Job {
    /// A directory entry.
    Dir { meta: Meta, path: Vec<u8> },
    /// Small files, each whole.
    Small(Vec<SmallFile>),
    /// A big file's entry: where it goes comes back on `answer`.
    Open { head: Head, answer: oneshot::Sender<Opened> },
    /// The sender goes on over a file of the same size that differs.
    Proceed { answer: oneshot::Sender<Opened> },
    /// The sender skips a file that is there already.
    Skip,
    /// A piece of the big file's data.
    Data(Bytes),
    /// The big file's end, with the sender's BLAKE3.
    Finish(Hash),
    /// The session's end.
    End,
}

/// A small file as received, whole: its hash is checked on the network
/// side, so that the disk thread only writes.
pub(super) struct SmallFile {
    pub(super) head: Head,
    pub(super) data: Bytes,
    /// The sender's BLAKE3 of it.
    pub(super) hash: Hash,
    /// Whether the data has that hash.
    pub(super) intact: bool,
}

/// A file entry as announced.
pub(super) struct Head {
    pub(super) size: u64,
    pub(super) meta: Meta,
    pub(super) flags: u8,
    pub(super) path: Vec<u8>,
}

/// The disk thread's decision on a big file: the network side tells the
/// sender, and reads what comes next by it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Opened {
    /// Send the data from this offset.
    Send(u64),
    /// A file of that size is there with this BLAKE3: skip or proceed?
    Exists(Hash),
    /// Not stored: the reason on the wire, and why.
    Refused(Reason, String),
}

impl Opened {
    /// The frame that tells the sender.
    pub(super) fn frame(&self) -> Frame {
        match self {
            Opened::Send(offset) => Frame::Send(*offset),
            Opened::Exists(hash) => Frame::Exists(*hash),
            Opened::Refused(reason, why) => Frame::Refused(*reason, why.clone()),
        }
    }
}

/// A job and its place in the queue, given back when the disk thread takes
/// it.
type Queued = (Job, OwnedSemaphorePermit);

/// The network side's end of the job queue.
pub(super) struct Jobs {
    tx: std_mpsc::Sender<Queued>,
    room: Arc<Semaphore>,
}

/// The disk thread's end of the job queue.
pub(super) struct JobQueue {
    rx: std_mpsc::Receiver<Queued>,
    room: Arc<Semaphore>,
}

/// A job queue that holds at most `depth` jobs.
pub(super) fn job_queue(depth: usize) -> (Jobs, JobQueue) {
    let (tx, rx) = std_mpsc::channel();
    let room = Arc::new(Semaphore::new(depth));
    (Jobs { tx, room: room.clone() }, JobQueue { rx, room })
}

impl Jobs {
    /// Hands a job to the disk thread, waiting (without blocking a thread)
    /// while the queue is full; fails once the disk thread has ended.
    pub(super) async fn send(&self, job: Job) -> io::Result<()> {
        let place = self.room.clone().acquire_owned().await.map_err(|_| disk_gone())?;
        self.tx.send((job, place)).map_err(|_| disk_gone())
    }
}

impl JobQueue {
    /// A job if one is queued. A job's place in the queue is free as soon
    /// as it is taken.
    fn try_recv(&self) -> Result<Job, std_mpsc::TryRecvError> {
        self.rx.try_recv().map(|(job, _place)| job)
    }

    /// The next job, waiting until `deadline` at most.
    fn recv_until(&self, deadline: Instant) -> Result<Job, std_mpsc::RecvTimeoutError> {
        self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).map(|(job, _place)| job)
    }

    /// The next job; an error once the network side stopped sending.
    fn recv(&self) -> Result<Job, std_mpsc::RecvError> {
        self.rx.recv().map(|(job, _place)| job)
    }
}

impl Drop for JobQueue {
    fn drop(&mut self) {
        // The network side stops waiting for room at once.
        self.room.close();
    }
}

/// Why the network side stops: the disk side is gone.
pub(super) fn disk_gone() -> io::Error {
    io::Error::other("stopped: the disk side ended the session")
}

/// Answers on their way to the sender, in order: gathered, and sent as one
/// batch when there are many, and before every wait so none is held back.
pub(super) struct Outbox {
    frames: Vec<Frame>,
    tx: mpsc::Sender<Vec<Frame>>,
}

impl Outbox {
    fn new(tx: mpsc::Sender<Vec<Frame>>) -> Outbox {
        Outbox { frames: Vec::new(), tx }
    }

    /// Queues an answer.
    pub(super) fn push(&mut self, f: Frame) -> io::Result<()> {
        self.frames.push(f);
        if self.frames.len() >= OUTBOX_FRAMES { self.send() } else { Ok(()) }
    }

    /// Sends the queued answers to the writer, waiting while its queue is
    /// full (a sender that reads slowly); fails when the writer has ended.
    pub(super) fn send(&mut self) -> io::Result<()> {
        if self.frames.is_empty() {
            return Ok(());
        }
        let frames = std::mem::take(&mut self.frames);
        self.tx.blocking_send(frames).map_err(|_| io::Error::other("the connection closed"))
    }
}

/// A refusal of one entry: the sender is told, the session goes on.
struct Refusal(Reason, String);

impl Refusal {
    /// A refusal a sender cannot act on by itself.
    fn other(why: String) -> Refusal {
        Refusal(Reason::Other, why)
    }

    /// A different file of that name is there.
    fn taken(path: &[u8]) -> Refusal {
        Refusal(Reason::Taken, differs(path))
    }
}

/// The session's disk side: everything that touches the filesystem.
pub(super) struct Disk {
    tree: Tree,
    partial: Arc<OwnedFd>,
    /// The receiving directory, for messages and the sweep.
    dir: PathBuf,
    out: Outbox,
    batch: Batch,
    /// This session, as other sessions see it.
    session: Arc<Session>,
    writers: Writers,
    /// A big file the sender is deciding about (it was told `Exists`).
    pending: Option<Head>,
    /// The big file being received, and the right to write it.
    incoming: Option<(Box<Incoming>, Writer)>,
}

impl Disk {
    /// Opens the receiving directory (created when missing) and its
    /// partial directory; answers go to `replies`, small files are synced
    /// `batch_files` at most at once.
    pub(super) fn open(
        config: &FilesConfig,
        writers: Writers,
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
        let root = sysfs::open_dir(&config.dir).map_err(ctx("cannot open the receiving directory"))?;
        let partial = match sysfs::make_dir_at(&root, PARTIAL_DIR.as_bytes(), 0o700) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(ctx("cannot create the partial-file directory in")(e));
            }
            _ => sysfs::open_dir_at(&root, PARTIAL_DIR.as_bytes())
                .map_err(ctx("cannot open the partial-file directory in"))?,
        };
        let partial = Arc::new(partial);
        Ok(Disk {
            tree: Tree::new(root, Dirs::new(config.max_dirs), config.policy, config.max_size),
            batch: Batch::new(batch_files, partial.clone(), replies.clone()),
            out: Outbox::new(replies),
            partial,
            dir: config.dir.clone(),
            session,
            writers,
            pending: None,
            incoming: None,
        })
    }

    /// Does the session's jobs (after sweeping old partial files if
    /// `sweep` says how old), and says why it ended to the sender if it
    /// failed.
    pub(super) fn run(mut self, jobs: JobQueue, sweep: Option<Duration>) -> io::Result<()> {
        if let Some(ttl) = sweep {
            self.sweep(ttl);
        }
        let worked = self.work(&jobs);
        drop(jobs);
        // A big file cut short stays for a resume; its key goes now, for
        // whoever sends it again.
        self.incoming = None;
        let closed = self.batch.close();
        let result = match worked.and_then(|ended| closed.map(|()| ended)) {
            // Ended by another session that took over its file: say so
            // (the queue closing looks like a sender that left).
            Ok(false) | Err(_) if self.session.stop.is_cancelled() => Err(taken_over()),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            let _ = self.out.push(Frame::Error(e.to_string()));
        }
        let _ = self.out.send();
        result
    }

    /// Does jobs as they come: true at End, false when the network side
    /// stopped sending.
    fn work(&mut self, jobs: &JobQueue) -> io::Result<bool> {
        loop {
            let job = match jobs.try_recv() {
                Ok(job) => job,
                Err(_) => {
                    // Nothing queued: wait a little for more (a burst of
                    // small files shares one sync), then answer what is
                    // staged rather than hold the sender's replies.
                    self.out.send()?;
                    match self.batch.due().and_then(|due| jobs.recv_until(due).ok()) {
                        Some(job) => job,
                        None => {
                            self.batch.flush(false, &mut self.out)?;
                            self.out.send()?;
                            match jobs.recv() {
                                Ok(job) => job,
                                Err(_) => return Ok(false),
                            }
                        }
                    }
                }
            };
            if self.dispatch(job)? {
                return Ok(true);
            }
        }
    }

    /// Does one job; true at End.
    fn dispatch(&mut self, job: Job) -> io::Result<bool> {
        // Small files and directories keep their answers in order through
        // the staged batch; anything else waits for it to be named.
        if !matches!(job, Job::Small(_) | Job::Dir { .. }) {
            self.batch.flush(true, &mut self.out)?;
        }
        match job {
            Job::Dir { meta, path } => {
                let answer = match self.tree.make_dir(&path, meta) {
                    Ok(()) => Frame::Stored(path),
                    Err(Refusal(reason, why)) => Frame::Refused(reason, why),
                };
                self.batch.answer(answer, &mut self.out)?;
            }
            Job::Small(files) => {
                for f in files {
                    self.small(f)?;
                }
            }
            Job::Open { head, answer } => {
                let opened = self.open_big(head, false)?;
                // Every earlier answer is on its way before this one.
                self.out.send()?;
                let _ = answer.send(opened);
            }
            Job::Proceed { answer } => {
                let head = self.pending.take().ok_or_else(|| io::Error::other("Proceed without Exists"))?;
                let opened = self.open_big(head, true)?;
                self.out.send()?;
                let _ = answer.send(opened);
            }
            Job::Skip => self.pending = None,
            Job::Data(piece) => self.write_piece(&piece)?,
            Job::Finish(hash) => self.finish_big(hash)?,
            Job::End => {
                self.tree.finish_dirs();
                self.out.push(Frame::Bye)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn small(&mut self, SmallFile { head, data, hash, intact }: SmallFile) -> io::Result<()> {
        if !intact {
            let why = format!(
                "{}: BLAKE3 mismatch: the data changed in transit or on the sender; send it again",
                show(&head.path)
            );
            return self.batch.answer(Frame::Refused(Reason::Mismatch, why), &mut self.out);
        }
        let target = match self.tree.target(&head, false) {
            Ok(Where::To(t)) => t,
            Ok(Where::Taken(theirs)) if theirs == hash => return self.batch.answer(Frame::Same, &mut self.out),
            // Its data is here already: no need to ask the sender.
            Ok(Where::Taken(_)) => match self.tree.target(&head, true) {
                Ok(Where::To(t)) => t,
                Ok(Where::Taken(_)) => {
                    return self.batch.answer(Frame::Refused(Reason::Taken, differs(&head.path)), &mut self.out);
                }
                Err(Refusal(reason, why)) => return self.batch.answer(Frame::Refused(reason, why), &mut self.out),
            },
            Err(Refusal(reason, why)) => return self.batch.answer(Frame::Refused(reason, why), &mut self.out),
        };
        match self.batch.write(&target, &head, &data) {
            Ok(written) => self.batch.stage(written, target, head.size, hash, &mut self.out),
            Err(e) => {
                let why = self.not_stored(&head.path, e)?;
                self.batch.answer(Frame::refused(why), &mut self.out)
            }
        }
    }

    /// Where a big file goes, or the answer that it goes nowhere (yet).
    fn place_big(&mut self, head: Head, proceed: bool) -> Result<(Target, Head), Opened> {
        match self.tree.target(&head, proceed) {
            Ok(Where::To(t)) => Ok((t, head)),
            Ok(Where::Taken(hash)) => {
                self.pending = Some(head);
                Err(Opened::Exists(hash))
            }
            Err(Refusal(reason, why)) => Err(Opened::Refused(reason, why)),
        }
    }

    fn open_big(&mut self, head: Head, proceed: bool) -> io::Result<Opened> {
        let (target, head) = match self.place_big(head, proceed) {
            Ok(x) => x,
            Err(answer) => return Ok(answer),
        };
        let key = big::partial_key(&head);
        // Answers so far go out before a wait.
        self.out.send()?;
        let (writer, target, head) = match self.writers.claim(&key, &self.session) {
            Claim::Busy => {
                return Ok(Opened::Refused(
                    Reason::Other,
                    format!(
                        "{}: another connection has been receiving this file for over {} s and still is; \
                     try again when it is done",
                        show(&head.path),
                        KEY_WAIT.as_secs()
                    ),
                ));
            }
            Claim::Held(writer, false) => (writer, target, head),
            // Another session had it: it may be there now, whole.
            Claim::Held(writer, true) => match self.place_big(head, proceed) {
                Ok((target, head)) => (writer, target, head),
                Err(answer) => return Ok(answer),
            },
        };
        let path = head.path.clone();
        // What is already there is hashed first. It may be much: this
        // session is busy, not stalled, meanwhile.
        let session = &self.session;
        let opened = Incoming::open(&self.partial, &key, head, target, || {
            session.touch();
            if session.stop.is_cancelled() { Err(taken_over()) } else { Ok(()) }
        });
        match opened {
            Ok(Opening::Ready(inc)) => {
                let offset = inc.offset();
                self.incoming = Some((inc, writer));
                Ok(Opened::Send(offset))
            }
            Ok(Opening::Refused(why)) => Ok(Opened::Refused(Reason::Other, why)),
            Err(_) if self.session.stop.is_cancelled() => Err(taken_over()),
            Err(e) => self.not_stored(&path, e).map(|why| Opened::Refused(Reason::Other, why)),
        }
    }

    fn write_piece(&mut self, piece: &[u8]) -> io::Result<()> {
        if self.session.stop.is_cancelled() {
            return Err(taken_over());
        }
        self.session.touch();
        let Some((inc, _)) = &mut self.incoming else {
            return Err(io::Error::other("file data outside a file"));
        };
        let written = self.session.in_disk(|| inc.write(piece));
        if let Err(e) = written
            && let Some((inc, _writer)) = self.incoming.take()
        {
            let e = describe_disk_error(inc.path(), e, &self.dir);
            inc.discard(&self.partial);
            return Err(e);
        }
        Ok(())
    }

    fn finish_big(&mut self, hash: Hash) -> io::Result<()> {
        let (inc, _writer) = self.incoming.take().ok_or_else(|| io::Error::other("Done outside a file"))?;
        let path = inc.path().to_vec();
        self.session.touch();
        let session = &self.session;
        match inc.finish(&self.partial, hash, |store| session.in_disk(store)) {
            Finished::Answer(f) => self.out.push(f),
            Finished::Failed(e) => {
                let why = self.not_stored(&path, e)?;
                self.out.push(Frame::refused(why))
            }
        }
    }

    /// A failed write: a full disk ends the session (the sender is
    /// streaming and cannot be stopped otherwise); anything else refuses
    /// the one file, and this says why.
    fn not_stored(&self, path: &[u8], e: io::Error) -> io::Result<String> {
        let e = describe_disk_error(path, e, &self.dir);
        if is_full(&e) {
            return Err(e);
        }
        warn!(file = %show(path), error = %e, "not stored");
        Ok(e.to_string())
    }

    /// Deletes small-file temporaries of dead sessions and partial files
    /// older than `ttl`.
    fn sweep(&self, ttl: Duration) {
        let Ok(entries) = std::fs::read_dir(self.dir.join(PARTIAL_DIR)) else { return };
        let held = self.writers.held();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let age = entry.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
            let limit = if name.starts_with("tmp-") { Duration::from_secs(3600) } else { ttl };
            let key = name.trim_end_matches(".part");
            if age.is_some_and(|a| a >= limit) && !held.contains(key) {
                info!(partial = %name, "expired; deleted");
                let _ = std::fs::remove_file(entry.path());
            }
        }
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

/// A path for messages and logs.
fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).escape_debug().to_string()
}

fn refusal(path: &[u8], e: impl std::fmt::Display) -> Refusal {
    Refusal::other(format!("{}: {e}", show(path)))
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

/// Sets the modification time (and the access time to now), and, if
/// `mode`, the permissions (without set-id and sticky bits).
fn set_meta(f: &File, meta: &Meta, mode: bool) -> io::Result<()> {
    if mode {
        f.set_permissions(Permissions::from_mode(meta.mode & 0o777))?;
    }
    let secs = Duration::from_secs(meta.mtime.unsigned_abs());
    let whole = if meta.mtime >= 0 { UNIX_EPOCH.checked_add(secs) } else { UNIX_EPOCH.checked_sub(secs) };
    let mtime = whole.and_then(|t| t.checked_add(Duration::from_nanos(meta.mtime_ns.into()))).unwrap_or(UNIX_EPOCH);
    f.set_times(FileTimes::new().set_accessed(SystemTime::now()).set_modified(mtime))
}

/// Why a file is not stored over a different one of its name.
fn differs(path: &[u8]) -> String {
    format!(
        "{}: exists on the server and differs; send with --rename to keep both, or the server needs --overwrite",
        show(path)
    )
}

/// The BLAKE3 of the regular file `name` in `dir`.
fn hash_at(dir: &OwnedFd, name: &[u8]) -> io::Result<Hash> {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(sysfs::open_read_at(dir, name)?)?;
    Ok(*hasher.finalize().as_bytes())
}

fn random_hex() -> String {
    let mut b = [0u8; 12];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[test]
    fn a_full_job_queue_waits_without_blocking_and_fails_once_the_disk_side_is_gone() {
        let (jobs, queue) = job_queue(2);
        assert!(matches!(jobs.send(Job::Skip).now_or_never(), Some(Ok(()))));
        assert!(matches!(jobs.send(Job::Skip).now_or_never(), Some(Ok(()))));
        assert!(jobs.send(Job::End).now_or_never().is_none(), "full: the sender waits, and no thread blocks");
        assert!(matches!(queue.try_recv(), Ok(Job::Skip)));
        assert!(matches!(jobs.send(Job::End).now_or_never(), Some(Ok(()))), "a job taken frees its place");
        drop(queue);
        assert!(matches!(jobs.send(Job::Skip).now_or_never(), Some(Err(_))), "the disk side is gone");
    }

    #[test]
    fn small_files_and_answers_come_back_in_order_over_several_batches() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Arc::new(sysfs::open_dir(tmp.path()).unwrap());
        sysfs::make_dir_at(&*root, PARTIAL_DIR.as_bytes(), 0o700).unwrap();
        let partial = Arc::new(sysfs::open_dir_at(&*root, PARTIAL_DIR.as_bytes()).unwrap());
        let (tx, mut rx) = mpsc::channel(64);
        let mut out = Outbox::new(tx.clone());
        // Two entries a batch: five files and five answers make five
        // batches, each synced on the one commit thread.
        let mut batch = Batch::new(2, partial, tx);
        let mut want = Vec::new();
        for i in 0..5 {
            let name = format!("f{i}").into_bytes();
            let meta = Meta { mode: 0o640, mtime: 1_000_000_000 + i, mtime_ns: 7 };
            let head = Head { size: 2, meta, flags: 0, path: name.clone() };
            let target = Target { parent: root.clone(), name: name.clone(), shown: name.clone(), replace: false };
            let written = batch.write(&target, &head, b"hi").unwrap();
            batch.stage(written, target, 2, *blake3::hash(b"hi").as_bytes(), &mut out).unwrap();
            batch.answer(Frame::refused(format!("r{i}")), &mut out).unwrap();
            want.extend([Frame::Stored(name), Frame::refused(format!("r{i}"))]);
        }
        batch.flush(true, &mut out).unwrap();
        out.send().unwrap();
        batch.close().unwrap();
        let mut got = Vec::new();
        while let Ok(frames) = rx.try_recv() {
            got.extend(frames);
        }
        assert_eq!(got, want);
        for i in 0..5 {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(tmp.path().join(format!("f{i}"))).unwrap();
            assert_eq!((m.len(), m.mode() & 0o777, m.mtime(), m.mtime_nsec()), (2, 0o640, 1_000_000_000 + i, 7));
        }
    }
}
