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
//! - Disk work (`disk.rs`) runs on a blocking thread per session (and a
//!   commit thread that syncs its batches of small files), fed through
//!   bounded queues: the network is read while the disk is written. The
//!   thread starts with the session's first entry (a session that only
//!   connected holds none), and at most `--max-transfers` sessions have one
//!   at once: the next is told the server is busy.
//! - One writer per partial file (`session.rs`): a second session for the
//!   same file waits for the first to finish (then finds the file there),
//!   and takes over from one whose sender is gone, or silent for 3 s
//!   (`STALL`).
//!
//! Memory per session is bounded, whatever the sender does: under 90 MiB at
//! the defaults in the worst case (every path of the longest length), a few
//! MiB for a usual session:
//! - received data waiting for the disk: 8 jobs (`QUEUE`) of at most 2 MiB
//!   (a 1 MiB piece of a big file, or small files and their paths up to
//!   [`wire::SMALL`] and one more), plus one in the hands of each side: ≤ 20 MiB;
//! - answers waiting for the sender to read them: 8 batches (`REPLY_QUEUE`) of
//!   at most 256 frames (a path or message each, ≤ 4 KiB): ≤ 10 MiB;
//! - small files written and waiting for their sync: 4 MiB (`STAGED_TEXT`,
//!   `disk/small.rs`) of paths and answers per batch, one batch staged and
//!   one being synced: ≤ 10 MiB (their data is on disk already);
//! - the directories the session created: `--max-dirs` of them, under 450
//!   bytes each (a name is at most 255 bytes): ≤ 45 MiB at the default
//!   [`DEFAULT_MAX_DIRS`]. A directory named again costs nothing.

pub mod client;
mod disk;
mod session;
pub mod wire;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use self::disk::{Disk, Head, Job, Jobs, Opened, SmallFile, disk_gone};
use self::session::{Session, Writers};
use self::wire::{Frame, Hash, SMALL};
use crate::auth::{self, Throttle};
use crate::frames::FrameReader;
use crate::{Conn, Service};

/// The token handshake files speaks first ([`crate::auth`]).
pub const HANDSHAKE: auth::Protocol = auth::Protocol {
    name: "files",
    context: b"sockit-files-v1",
    error_type: wire::ERROR_TYPE,
    last_type: wire::LAST_TYPE,
};

/// Default for [`FilesConfig::max_size`]: 16 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 16 << 30;
/// Default for [`FilesConfig::partial_ttl`]: a day.
pub const DEFAULT_PARTIAL_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default for [`FilesConfig::max_transfers`]: well below the runtime's 512
/// blocking threads, which the rest of the server needs too.
pub const DEFAULT_MAX_TRANSFERS: usize = 64;
/// Default for [`FilesConfig::transfers_per_address`]: one address (an IPv6
/// /64) cannot take every transfer slot.
pub const DEFAULT_TRANSFERS_PER_ADDRESS: usize = 8;
/// Default for [`FilesConfig::max_dirs`].
pub const DEFAULT_MAX_DIRS: usize = 100_000;
/// Small files wait for one sync of the filesystem in batches of at most
/// this many (each holds a descriptor until then; fewer when the
/// open-file limit is low), or 64 MiB (`disk/small.rs`).
const BATCH_FILES: usize = 4096;
/// Data pieces queued between the network and the disk, per session.
const QUEUE: usize = 8;
/// Batches of answers queued for the sender, per session.
const REPLY_QUEUE: usize = 8;
/// Partial directories are swept at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// What to do when a file of that name is already there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
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
    /// Sessions receiving at once (each has a disk thread); more are
    /// refused with "server busy" (`--max-transfers`).
    pub max_transfers: usize,
    /// Directories one session may create; entries that need more are
    /// refused (`--max-dirs`).
    pub max_dirs: usize,
    /// Transfers one address may have at once (`--max-transfers-per-address`).
    pub transfers_per_address: usize,
    /// Token handshakes one address may have open at once
    /// ([`Throttle`]).
    pub handshakes_per_address: u32,
}

/// The files service.
#[derive(Debug)]
pub struct Files {
    config: FilesConfig,
    throttle: Throttle,
    /// Partial files being written now, by key: one writer each.
    writers: Writers,
    /// One permit per session with a disk thread.
    transfers: Arc<Semaphore>,
    /// And one place of its address's.
    per_address: Arc<crate::acl::PerAddress>,
    last_sweep: AtomicU64,
    started: Instant,
}

impl Files {
    /// A files service.
    pub fn new(config: FilesConfig) -> Self {
        Files {
            transfers: Arc::new(Semaphore::new(config.max_transfers)),
            per_address: crate::acl::PerAddress::new(config.transfers_per_address),
            throttle: Throttle::new(config.handshakes_per_address),
            config,
            writers: Writers::default(),
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

/// A hasher that has taken the first `n` bytes of `file`, which is left
/// positioned at `n`: for a resumed file, on both sides, and for comparing
/// with a copy already there.
pub fn hash_prefix(file: &mut std::fs::File, n: u64) -> io::Result<blake3::Hasher> {
    hash_prefix_with(file, n, || Ok(()))
}

/// [`hash_prefix`], calling `tick` every MiB: it may stop the work with an
/// error.
fn hash_prefix_with(
    file: &mut std::fs::File,
    n: u64,
    mut tick: impl FnMut() -> io::Result<()>,
) -> io::Result<blake3::Hasher> {
    use std::io::{Read, Seek, SeekFrom};
    let mut hasher = blake3::Hasher::new();
    file.seek(SeekFrom::Start(0))?;
    let mut left = n;
    while left > 0 {
        let read = std::io::copy(&mut (&mut *file).take(left.min(1 << 20)), &mut hasher)?;
        if read == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file is shorter than expected"));
        }
        left -= read;
        tick()?;
    }
    Ok(hasher)
}

/// Small files per sync: each holds a descriptor until its batch is synced
/// and named, and a session has two batches in hand (one staged, one
/// syncing). A session alone takes batches of an eighth of the open-file
/// limit (at most [`BATCH_FILES`]); sessions at once share what is left of
/// the server's budget, down to [`MIN_BATCH_FILES`] each.
fn batch_files() -> usize {
    crate::sys::open_file_limit().map_or(BATCH_FILES, |n| (n / 8).clamp(MIN_BATCH_FILES, BATCH_FILES))
}

/// The smallest batch of small files a session syncs at once.
const MIN_BATCH_FILES: usize = 16;

/// Descriptors a session's disk side holds besides its batches: the
/// receiving and partial directories, a big file, the last directory it
/// looked up and two on a walk down a path.
const DISK_DESCRIPTORS: usize = 6;
/// Descriptors a staged small file may hold: its own, and its directory's
/// (shared with the files next to it, but a sender may put each file in a
/// directory of its own).
const STAGED_DESCRIPTORS: usize = 2;

impl Service for Files {
    async fn serve(&self, mut conn: Conn) -> io::Result<()> {
        let token = self.config.token.as_deref();
        // Entries the client pipelined behind its proof are in `rest`.
        let Some(rest) = auth::accept(&mut conn, &HANDSHAKE, token, &self.throttle, 0, true).await? else {
            return Ok(());
        };
        let (descriptors, peer) = (conn.descriptors(), conn.peer());
        let (rd, mut wr) = tokio::io::split(conn);
        let mut rd = FrameReader::<_, Frame>::new(rd, rest);
        // Until the first entry, the session holds a task and its socket
        // only: no thread, no transfer slot.
        let first = match rd.recv().await? {
            None => return Ok(()),
            Some(Frame::End) => return write_frames(&mut wr, &[Frame::Bye]).await,
            Some(f) => f,
        };
        let max = self.config.max_transfers;
        let per_address = self.config.transfers_per_address;
        let slot = match (self.per_address.take(peer), self.transfers.clone().try_acquire_owned()) {
            (None, _) => Err(format!(
                "server busy: your address has {per_address} transfers going already; finish one, then try again"
            )),
            (_, Err(_)) => Err(format!("server busy: {max} transfers at once; try again later")),
            // The disk side's files come out of the server's open-file
            // budget, as connections do.
            (Some(place), Ok(permit)) => {
                // Two batches in hand: one staged, one syncing.
                let per_batch_file = 2 * STAGED_DESCRIPTORS;
                let want = DISK_DESCRIPTORS + per_batch_file * batch_files();
                match descriptors.reserve_up_to(want, DISK_DESCRIPTORS + per_batch_file * MIN_BATCH_FILES) {
                    None => Err("server busy: out of open files; try again later".to_string()),
                    Some((fds, n)) => Ok(((permit, place), fds, (n - DISK_DESCRIPTORS) / per_batch_file)),
                }
            }
        };
        let permit = match slot {
            Ok(p) => p,
            Err(why) => {
                warn!(max_transfers = max, "refused: {why}");
                let _ = write_frames(&mut wr, &[Frame::Error(why)]).await;
                linger(&mut rd, &mut wr).await;
                return Ok(());
            }
        };
        let session = Session::new();
        let (jobs, job_queue) = disk::job_queue(QUEUE);
        let (reply_tx, mut replies) = mpsc::channel::<Vec<Frame>>(REPLY_QUEUE);
        let (permit, fds, batch) = permit;
        let disk = Disk::open(&self.config, self.writers.clone(), session.clone(), reply_tx.clone(), batch)?;
        let sweep = self.sweep_due().then_some(self.config.partial_ttl);
        // Cancelled when the disk thread ends, however: the reader stops too.
        let disk_done = CancellationToken::new();
        let done_guard = disk_done.clone().drop_guard();
        // The disk side logs in the connection's span, as the rest does.
        let span = tracing::Span::current();
        let worker = tokio::task::spawn_blocking(move || {
            let _slot = (permit, fds);
            let _done = done_guard;
            span.in_scope(|| disk.run(job_queue, sweep))
        });
        let stop = session.stop.clone();
        let writer = async move {
            let mut buf = BytesMut::new();
            while let Some(frames) = replies.recv().await {
                buf.clear();
                frames.iter().for_each(|f| f.encode(&mut buf));
                while let Ok(frames) = replies.try_recv() {
                    frames.iter().for_each(|f| f.encode(&mut buf));
                }
                // A sender that reads no answers must not keep the disk
                // side, and the file it holds, once another session has
                // taken that file over: the write is given up then, which
                // closes the answers' queue under the threads that wait on
                // it.
                tokio::select! {
                    biased;
                    written = wr.write_all(&buf) => written?,
                    _ = stop.cancelled() => return Err(taken_over()),
                }
            }
            wr.flush().await?;
            io::Result::Ok(wr)
        };
        // The reader owns the job queue: when it stops, the disk thread
        // finishes, which closes the replies, which ends the writer. It
        // stops when the disk thread ends first, or when another session
        // takes over this one's file.
        let reader = async {
            let read = tokio::select! {
                biased;
                r = receive(&mut rd, jobs, reply_tx, first, &session) => r,
                _ = disk_done.cancelled() => Err(disk_gone()),
                _ = session.stop.cancelled() => Err(taken_over()),
            };
            if read.is_err() {
                session.set_gone();
            }
            read
        };
        let (read, written) = tokio::join!(reader, writer);
        let disk_result = worker.await.map_err(io::Error::other)?;
        let mut wr = written?;
        if let Err(e) = disk_result.and(read) {
            linger(&mut rd, &mut wr).await;
            return Err(e);
        }
        Ok(())
    }
}

/// Why the network side of a session stops when another session took its
/// file over.
fn taken_over() -> io::Error {
    io::Error::other("stopped: another session took over its file")
}

async fn write_frames<W: tokio::io::AsyncWrite + Unpin>(wr: &mut W, frames: &[Frame]) -> io::Result<()> {
    let mut buf = BytesMut::new();
    frames.iter().for_each(|f| f.encode(&mut buf));
    wr.write_all(&buf).await?;
    wr.flush().await
}

/// Lets an error frame reach the sender before the close: stops writing,
/// and drains what the sender still sends for a moment (closing with its
/// data unread would reset the connection, and the frame could be lost).
async fn linger<R: tokio::io::AsyncRead + Unpin, W: tokio::io::AsyncWrite + Unpin>(
    rd: &mut FrameReader<R, Frame>,
    wr: &mut W,
) {
    let _ = wr.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while rd.chunk(1 << 20).await.is_ok_and(|c| !c.is_empty()) {}
    })
    .await;
}

/// Reads entries and file data off the connection and hands them to the
/// disk thread, until End or until the client or the disk thread goes. The
/// disk thread's decision on a big file comes back here, once: this side
/// tells the sender (through `replies`, behind every earlier answer, which
/// the disk thread sent before deciding) and reads what comes next by it.
async fn receive<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut FrameReader<R, Frame>,
    jobs: Jobs,
    replies: mpsc::Sender<Vec<Frame>>,
    first: Frame,
    session: &Session,
) -> io::Result<()> {
    let mut carried = Some(first);
    loop {
        let frame = match carried.take() {
            Some(f) => f,
            None => rd
                .recv()
                .await?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the sender left before End"))?,
        };
        session.touch();
        match frame {
            Frame::Dir { meta, path } => jobs.send(Job::Dir { meta, path }).await?,
            Frame::File { size, meta, flags, path } if size <= SMALL => {
                // Small files already in the buffer travel to the disk
                // thread together: one hand-over for many files.
                let mut batch = Vec::new();
                let mut bytes = 0;
                let mut next = Some(Frame::File { size, meta, flags, path });
                while let Some(Frame::File { size, meta, flags, path }) = next {
                    let data = rd.exact(size as usize).await?;
                    let hash = expect_done(rd).await?;
                    // Paths count too: a batch of many tiny files with long
                    // names is held to the same size.
                    bytes += size + path.len() as u64;
                    let intact = *blake3::hash(&data).as_bytes() == hash;
                    batch.push(SmallFile { head: Head { size, meta, flags, path }, data, hash, intact });
                    next = None;
                    if batch.len() < BATCH_FILES && bytes < SMALL {
                        match rd.buffered().map_err(crate::frames::invalid)? {
                            Some(f @ Frame::File { size, .. }) if size <= SMALL => next = Some(f),
                            Some(other) => {
                                jobs.send(Job::Small(std::mem::take(&mut batch))).await?;
                                carried = Some(other);
                            }
                            None => {}
                        }
                    }
                }
                if !batch.is_empty() {
                    jobs.send(Job::Small(batch)).await?;
                }
            }
            Frame::File { size, meta, flags, path } => {
                let (tx, mut answer) = oneshot::channel();
                jobs.send(Job::Open { head: Head { size, meta, flags, path }, answer: tx }).await?;
                loop {
                    let opened = answer.await.map_err(|_| disk_gone())?;
                    let told = replies.send(vec![opened.frame()]).await;
                    told.map_err(|_| io::Error::other("stopped: the connection closed"))?;
                    match opened {
                        Opened::Send(offset) => {
                            let mut left = size - offset;
                            while left > 0 {
                                let piece = rd.chunk(left.min(1 << 20) as usize).await?;
                                session.touch();
                                left -= piece.len() as u64;
                                jobs.send(Job::Data(piece)).await?;
                            }
                            let hash = expect_done(rd).await?;
                            jobs.send(Job::Finish(hash)).await?;
                        }
                        Opened::Exists(_) => match rd.expect().await? {
                            Frame::Skip => jobs.send(Job::Skip).await?,
                            Frame::Proceed => {
                                let (tx, rx) = oneshot::channel();
                                jobs.send(Job::Proceed { answer: tx }).await?;
                                answer = rx;
                                continue;
                            }
                            other => return Err(unexpected(&other, "Skip or Proceed")),
                        },
                        Opened::Refused(..) => {}
                    }
                    break;
                }
            }
            Frame::End => return jobs.send(Job::End).await,
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
