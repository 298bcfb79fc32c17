//! Small files: each written whole to a temporary as it comes (nameless
//! where the filesystem allows), staged in a batch, and committed by the
//! session's one commit thread: one `syncfs` for the whole batch, then each
//! file named and its directory synced, and every entry of the batch
//! answered in order. The disk thread stages the next batch meanwhile.
//!
//! The batch owns the order of small entries' answers: an answer given
//! while files are staged or committing waits for them.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::info;

use super::{Frame, Hash, Head, Outbox, Target, differs, hash_at, random_hex, set_meta, show};
use crate::sys::fs as sysfs;

/// Small files wait for one sync in batches of at most this many bytes
/// (or the batch's file count).
const BATCH_BYTES: u64 = 64 << 20;
/// Paths and answers held for one batch of small files (and the answers
/// queued behind it), in bytes: past it the batch is synced.
const STAGED_TEXT: usize = 4 << 20;
/// How long staged small files may wait for more to share their sync.
const LINGER: Duration = Duration::from_millis(10);

/// What a small file's entry waits for: its sync and name, or (when it was
/// answered at once) only its turn, so answers keep the entries' order.
enum Staged {
    File(StagedFile),
    Answer(Frame),
}

/// A small file written and waiting for the batch's sync.
struct StagedFile {
    tmp: Tmp,
    target: Target,
    size: u64,
    hash: Hash,
}

/// Where a small file waits for its sync: an unnamed file in its target
/// directory (`O_TMPFILE`: it has no name until it is whole, and vanishes
/// in a crash), or, on filesystems without that, a named one in the
/// partial directory.
enum Tmp {
    Unnamed(File),
    Named(String),
}

/// A small file written to its temporary, ready to stage.
pub(super) struct Written(Tmp);

/// The small files of a session between written and named.
pub(super) struct Batch {
    staged: Vec<Staged>,
    /// Bytes of data in `staged`.
    bytes: u64,
    /// Bytes of paths and answers in `staged`.
    text: usize,
    /// When the first of `staged` came.
    since: Option<Instant>,
    /// Files per sync, at most (each holds descriptors until then).
    max_files: usize,
    /// Where named temporaries go.
    partial: Arc<OwnedFd>,
    /// The commit thread's way to the sender, until it starts.
    replies: mpsc::Sender<Vec<Frame>>,
    /// Started with the first batch: a session of big files has none.
    committer: Option<Committer>,
    /// A batch is with the commit thread, not yet answered for.
    in_flight: bool,
}

/// The session's commit thread, and its two queues: batches to it, one
/// at a time, and how each went back.
struct Committer {
    batches: std_mpsc::SyncSender<Vec<Staged>>,
    done: std_mpsc::Receiver<io::Result<()>>,
    thread: JoinHandle<()>,
}

impl Batch {
    /// An empty batch of at most `max_files` files; named temporaries go
    /// in `partial`, answers to `replies`.
    pub(super) fn new(max_files: usize, partial: Arc<OwnedFd>, replies: mpsc::Sender<Vec<Frame>>) -> Batch {
        Batch {
            staged: Vec::new(),
            bytes: 0,
            text: 0,
            since: None,
            max_files,
            partial,
            replies,
            committer: None,
            in_flight: false,
        }
    }

    /// When the staged files have waited long enough for company, if any
    /// are staged.
    pub(super) fn due(&self) -> Option<Instant> {
        self.since.map(|s| s + LINGER)
    }

    /// Writes a small file's data to a temporary, whole, with its time
    /// and mode. An error means nothing of it was kept.
    pub(super) fn write(&self, target: &Target, head: &Head, data: &[u8]) -> io::Result<Written> {
        let mode = head.meta.mode & 0o777;
        let (tmp, written) = match sysfs::create_unnamed_in(&*target.parent, mode) {
            Ok(f) => {
                // Unnamed, it has its final mode from the start, unless the
                // umask took bits off.
                let w = write_whole(&f, data, head, mode & crate::sys::umask() != 0);
                (Tmp::Unnamed(f), w)
            }
            Err(_) => {
                let name = format!("tmp-{}", random_hex());
                let w = sysfs::create_new_at(&*self.partial, name.as_bytes(), 0o600)
                    .and_then(|f| write_whole(&f, data, head, true));
                (Tmp::Named(name), w)
            }
        };
        match written {
            Ok(()) => Ok(Written(tmp)),
            Err(e) => {
                discard(&self.partial, &tmp);
                Err(e)
            }
        }
    }

    /// Stages a written small file of `size` bytes for the next sync,
    /// which starts when the batch is full.
    pub(super) fn stage(
        &mut self,
        Written(tmp): Written,
        target: Target,
        size: u64,
        hash: Hash,
        out: &mut Outbox,
    ) -> io::Result<()> {
        self.bytes += size;
        self.text += target.name.len() + target.shown.len();
        self.since.get_or_insert_with(Instant::now);
        self.staged.push(Staged::File(StagedFile { tmp, target, size, hash }));
        if self.staged.len() >= self.max_files || self.bytes >= BATCH_BYTES || self.text >= STAGED_TEXT {
            // Synced on the commit thread while this one writes the next
            // batch.
            self.flush(false, out)?;
        }
        Ok(())
    }

    /// Answers a small entry in its turn: after the staged ones.
    pub(super) fn answer(&mut self, f: Frame, out: &mut Outbox) -> io::Result<()> {
        if self.staged.is_empty() && !self.in_flight {
            return out.push(f);
        }
        self.text += text_len(&f);
        self.staged.push(Staged::Answer(f));
        if self.staged.len() >= self.max_files || self.text >= STAGED_TEXT {
            // A long run of answers behind one small file is held to the
            // same bound as the files.
            self.flush(false, out)?;
        }
        Ok(())
    }

    /// Hands the staged files to the commit thread once the batch before
    /// them is done (the answers so far go out first); with `wait`, waits
    /// for them too (before any other answer is sent).
    pub(super) fn flush(&mut self, wait: bool, out: &mut Outbox) -> io::Result<()> {
        self.wait()?;
        if !self.staged.is_empty() {
            out.send()?;
            let batch = std::mem::take(&mut self.staged);
            (self.bytes, self.text, self.since) = (0, 0, None);
            let committer = match &mut self.committer {
                Some(c) => c,
                None => self.committer.insert(Committer::start(self.partial.clone(), self.replies.clone())?),
            };
            committer.batches.send(batch).map_err(|_| io::Error::other("the sync thread ended"))?;
            self.in_flight = true;
        }
        if wait { self.wait() } else { Ok(()) }
    }

    /// Waits for the batch with the commit thread, if any.
    fn wait(&mut self) -> io::Result<()> {
        match &self.committer {
            Some(c) if std::mem::take(&mut self.in_flight) => {
                c.done.recv().unwrap_or_else(|_| Err(io::Error::other("the sync thread failed")))
            }
            _ => Ok(()),
        }
    }

    /// Ends the batch at the end of the session: waits for the batch with
    /// the commit thread (its answers go before any last word), drops the
    /// staged files that were not synced (not kept: the sender did not
    /// hear of them), and ends the thread.
    pub(super) fn close(&mut self) -> io::Result<()> {
        let waited = self.wait();
        for s in std::mem::take(&mut self.staged) {
            if let Staged::File(f) = s {
                discard(&self.partial, &f.tmp);
            }
        }
        if let Some(c) = self.committer.take() {
            drop(c.batches);
            let _ = c.thread.join();
        }
        waited
    }
}

impl Committer {
    /// Starts the commit thread, in the session's span.
    fn start(partial: Arc<OwnedFd>, replies: mpsc::Sender<Vec<Frame>>) -> io::Result<Committer> {
        // One batch at a time: the disk thread waits for the last one
        // before it hands over the next.
        let (batches, todo) = std_mpsc::sync_channel::<Vec<Staged>>(1);
        let (done_tx, done) = std_mpsc::channel();
        let span = tracing::Span::current();
        let thread = std::thread::Builder::new().name("sockit-commit".into()).spawn(move || {
            let _span = span.entered();
            for batch in todo {
                let r = commit(batch, &partial, &replies);
                let failed = r.is_err();
                if done_tx.send(r).is_err() || failed {
                    return;
                }
            }
        })?;
        Ok(Committer { batches, done, thread })
    }
}

/// Writes a small file's data, then its time (and mode if asked).
fn write_whole(mut f: &File, data: &[u8], head: &Head, mode: bool) -> io::Result<()> {
    f.write_all(data)?;
    set_meta(f, &head.meta, mode)
}

/// Syncs a batch of small files and names them, answering each entry in
/// order.
fn commit(batch: Vec<Staged>, partial: &OwnedFd, replies: &mpsc::Sender<Vec<Frame>>) -> io::Result<()> {
    let failed = |e: io::Error| io::Error::new(e.kind(), format!("sync failed: {e}"));
    if batch.iter().any(|s| matches!(s, Staged::File(_))) {
        sysfs::sync_filesystem(partial).map_err(failed)?;
    }
    let mut synced: Vec<Arc<OwnedFd>> = Vec::new();
    let log = crate::logging::batch();
    let mut answers = Vec::with_capacity(batch.len());
    for s in batch {
        let s = match s {
            Staged::Answer(f) => {
                answers.push(f);
                continue;
            }
            Staged::File(s) => s,
        };
        let t = &s.target;
        match place(partial, &s) {
            Ok(()) => {
                if !synced.iter().any(|d| Arc::ptr_eq(d, &t.parent)) {
                    sysfs::sync_dir(&*t.parent).map_err(failed)?;
                    synced.push(t.parent.clone());
                }
                info!(file = %show(&t.shown), bytes = s.size, "stored");
                answers.push(Frame::Stored(s.target.shown));
            }
            Err(e) => {
                discard(partial, &s.tmp);
                // Taken since it was looked at (or, in a directory this
                // session made, not looked at): the same file is fine.
                answers.push(match e.kind() {
                    io::ErrorKind::AlreadyExists if hash_at(&t.parent, &t.name).is_ok_and(|h| h == s.hash) => {
                        Frame::Same
                    }
                    io::ErrorKind::AlreadyExists => Frame::Refused(super::wire::Reason::Taken, differs(&t.shown)),
                    _ => Frame::refused(format!("{}: {e}", show(&t.shown))),
                });
            }
        }
    }
    drop(log); // the lines before the answers
    replies.blocking_send(answers).map_err(|_| io::Error::other("the connection closed"))
}

/// Gives a synced small file its name: never over an existing file unless
/// the policy replaces.
fn place(partial: &OwnedFd, s: &StagedFile) -> io::Result<()> {
    let t = &s.target;
    match &s.tmp {
        Tmp::Named(tmp) => sysfs::rename_at(partial, tmp.as_bytes(), &*t.parent, &t.name, t.replace),
        Tmp::Unnamed(f) if !t.replace => sysfs::link_unnamed(f, &*t.parent, &t.name),
        Tmp::Unnamed(f) => {
            // A link never replaces: link under a hidden name, then rename
            // that over the old file.
            let hidden = format!(".sockit-tmp-{}", random_hex());
            sysfs::link_unnamed(f, &*t.parent, hidden.as_bytes())?;
            sysfs::rename_at(&*t.parent, hidden.as_bytes(), &*t.parent, &t.name, true).inspect_err(|_| {
                let _ = sysfs::remove_at(&*t.parent, hidden.as_bytes());
            })
        }
    }
}

/// Drops a small file's temporary data.
fn discard(partial: &OwnedFd, tmp: &Tmp) {
    if let Tmp::Named(name) = tmp {
        let _ = sysfs::remove_at(partial, name.as_bytes());
    }
}

/// The bytes of text (a path, a message) an answer holds.
fn text_len(f: &Frame) -> usize {
    match f {
        Frame::Stored(t) => t.len(),
        Frame::Refused(_, t) | Frame::Error(t) => t.len(),
        _ => 0,
    }
}
