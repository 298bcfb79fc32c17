//! The files client: walks the paths, speaks the files wire to a server
//! and keeps the tally. The protocol's sending half, beside the server
//! ([`super`]) and the wire format ([`super::wire`]): a protocol change
//! touches this folder only. Progress goes to a [`Progress`] the caller
//! gives (the binary draws bars with it); failures are [`ClientError`].

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use super::hash_prefix;
use super::wire::{FLAG_RENAME, Frame, Hash, MAX_PATH, Meta, Reason, SMALL};
use crate::frames::FrameReader;
use crate::text::{clean, clean_bytes};

/// Why a send stopped before every entry was answered. (Entries the server
/// refused are not errors: they are in [`Report::refused`].)
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A path given could not be read before connecting.
    #[error("{}: {cause}", path.display())]
    Path {
        /// The path as given.
        path: PathBuf,
        /// The operating system's error.
        cause: io::Error,
    },
    /// A path given names no file (`/`).
    #[error("{}: cannot send the root directory by that name", .0.display())]
    Root(PathBuf),
    /// The connection broke.
    #[error("connection lost{}; run the same command again to resume", .0.as_ref().map(|e| format!(": {e}")).unwrap_or_default())]
    Lost(Option<String>),
    /// The server ended the session with an Error frame (its words, cleaned).
    #[error("the server ended the session: {0}")]
    Ended(String),
    /// The server broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A file shrank while it was sent.
    #[error("{0}: the file shrank while it was being sent; the server keeps what it got: send again to finish")]
    Shrank(String),
    /// Reading a local file failed mid-way.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What happens while sending, for a display to follow.
#[derive(Debug)]
pub enum Event<'a> {
    /// A file joins the total: its name and size.
    Queued {
        /// Its path as sent.
        name: &'a [u8],
        /// Its size in bytes.
        size: u64,
    },
    /// So many more bytes of the total are done (sent, resumed or found
    /// already there).
    Advanced(u64),
    /// A file is sent again whole: so many bytes of the total are undone.
    Rewound(u64),
    /// Hashing a local file to compare it with the server's copy.
    Comparing,
    /// A big file's bytes start to go, from `offset`.
    FileStarted {
        /// Its path as sent.
        name: &'a [u8],
        /// Its size.
        size: u64,
        /// Where the sending starts (more than 0 resumes).
        offset: u64,
    },
    /// So many more of the current big file's bytes are sent (also part of
    /// the total).
    FileAdvanced(u64),
    /// The current big file's bytes are all sent.
    FileFinished,
    /// A line for the person sending (already cleaned), without the
    /// `sockit: ` prefix.
    Note(&'a str),
}

/// Receives [`Event`]s as they happen, on the sending thread.
pub trait Progress: Send + 'static {
    /// Takes one event.
    fn event(&mut self, event: Event<'_>);
}

/// How to send.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// If the name is taken by a different file, store under a new name.
    pub rename: bool,
    /// Send at most this many bytes per second.
    pub limit_rate: Option<u64>,
}

/// The entries to send, found by a walk started with [`walk_paths`].
pub struct Walking(std::sync::mpsc::Receiver<Vec<Found>>);

/// Checks the paths (a typo fails at once, before connecting) and starts
/// walking them on a thread of its own, so sending starts with the first
/// files, not after the last stat.
pub fn walk_paths(paths: &[PathBuf]) -> Result<Walking, ClientError> {
    Ok(Walking(spawn_walk(roots(paths)?)))
}

/// Sends what `walking` finds over `stream`, whose handshake is done
/// (`rest`: what the handshake read past it). Returns how it ended and the
/// tally, which holds what was done even when it failed.
pub async fn send<S, P>(
    stream: S,
    rest: BytesMut,
    walking: Walking,
    options: Options,
    progress: P,
) -> (Result<(), ClientError>, Report)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    P: Progress,
{
    let (rd, wr) = tokio::io::split(stream);
    let (tx, replies) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut rd = FrameReader::<_, Frame>::new(rd, rest);
        loop {
            let item = match rd.recv().await {
                Ok(Some(f)) => Ok(f),
                Ok(None) => Err("the server closed the connection".to_string()),
                Err(e) => Err(e.to_string()),
            };
            let last = item.is_err();
            if tx.send(item).await.is_err() || last {
                return;
            }
        }
    });
    let out = SyncIoBridge::new(wr);
    let sending = tokio::task::spawn_blocking(move || {
        let mut s = Sender {
            out,
            wbuf: BytesMut::with_capacity(WRITE_BATCH * 2),
            replies,
            pending: VecDeque::new(),
            options,
            report: Report::default(),
            progress,
            buf: Vec::with_capacity(PIECE),
        };
        let r = s.send_all(walking.0);
        let _ = s.out.shutdown();
        (r, s.report)
    });
    match sending.await {
        Ok(done) => done,
        Err(e) => (Err(ClientError::Io(io::Error::other(e))), Report::default()),
    }
}

/// One thing to send.
#[derive(Debug)]
pub(crate) enum Entry {
    Dir { rel: Vec<u8>, meta: Meta },
    File { rel: Vec<u8>, meta: Meta, size: u64, src: PathBuf },
}

fn meta_of(m: &std::fs::Metadata) -> Meta {
    Meta {
        mode: m.permissions().mode() & 0o7777,
        mtime: m.mtime(),
        mtime_ns: m.mtime_nsec().clamp(0, 999_999_999) as u32,
    }
}

/// What the walk finds, parents before children.
#[derive(Debug)]
pub(crate) enum Found {
    Entry(Entry),
    /// Left out on purpose (a symlink, a device): a warning.
    Skipped(String),
    /// Could not be read: counts as not sent.
    Unreadable(String),
}

/// The paths as given, each with the name it is sent under and its
/// metadata: checked before connecting, so a typo fails at once.
type Root = (PathBuf, Vec<u8>, std::fs::Metadata);

fn roots(paths: &[PathBuf]) -> Result<Vec<Root>, ClientError> {
    paths
        .iter()
        .map(|path| {
            let m = std::fs::metadata(path).map_err(|cause| ClientError::Path { path: path.clone(), cause })?;
            let name = match path.file_name() {
                Some(n) => n.to_owned(),
                None => std::fs::canonicalize(path)?
                    .file_name()
                    .map(|n| n.to_owned())
                    .ok_or_else(|| ClientError::Root(path.clone()))?,
            };
            Ok((path.clone(), name.as_bytes().to_vec(), m))
        })
        .collect()
}

/// Walks the trees on a thread of its own, handing over what it finds in
/// batches as it goes: sending starts with the first files, not after the
/// last stat.
fn spawn_walk(roots: Vec<Root>) -> std::sync::mpsc::Receiver<Vec<Found>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(WALK_AHEAD);
    std::thread::spawn(move || {
        let mut out = Walk { batch: Vec::with_capacity(WALK_BATCH), tx };
        for (path, rel, m) in roots {
            if walk(&path, rel, &m, &mut out).is_err() {
                return; // the sender is gone
            }
        }
        let _ = out.tx.send(out.batch);
    });
    rx
}

/// Entries handed over together, and how many such batches the walk may
/// be ahead of the sending.
const WALK_BATCH: usize = 256;
const WALK_AHEAD: usize = 16;

/// The walk's output.
struct Walk {
    batch: Vec<Found>,
    tx: std::sync::mpsc::SyncSender<Vec<Found>>,
}

/// The receiving end is gone.
struct Gone;

impl Walk {
    fn send(&mut self, f: Found) -> Result<(), Gone> {
        self.batch.push(f);
        if self.batch.len() >= WALK_BATCH {
            let full = std::mem::replace(&mut self.batch, Vec::with_capacity(WALK_BATCH));
            self.tx.send(full).map_err(|_| Gone)?;
        }
        Ok(())
    }
}

fn walk(path: &Path, rel: Vec<u8>, m: &std::fs::Metadata, out: &mut Walk) -> Result<(), Gone> {
    if rel.len() > MAX_PATH {
        return out.send(Found::Skipped(format!("{}: path too long; skipped", path.display())));
    }
    let ft = m.file_type();
    if ft.is_file() {
        return out.send(Found::Entry(Entry::File { rel, meta: meta_of(m), size: m.len(), src: path.to_owned() }));
    }
    if !ft.is_dir() {
        return out.send(Found::Skipped(format!("{}: not a regular file or directory; skipped", path.display())));
    }
    out.send(Found::Entry(Entry::Dir { rel: rel.clone(), meta: meta_of(m) }))?;
    let mut children: Vec<_> = match std::fs::read_dir(path).and_then(|d| d.collect::<Result<_, _>>()) {
        Ok(c) => c,
        Err(e) => return out.send(Found::Unreadable(format!("{}: {e}", path.display()))),
    };
    children.sort_by_key(|c| c.file_name());
    for child in children {
        let cm = match child.metadata() {
            Ok(cm) => cm,
            Err(e) => {
                out.send(Found::Unreadable(format!("{}: {e}", child.path().display())))?;
                continue;
            }
        };
        if cm.file_type().is_symlink() {
            out.send(Found::Skipped(format!("{}: symlink; skipped", child.path().display())))?;
            continue;
        }
        let mut crel = rel.clone();
        crel.push(b'/');
        crel.extend_from_slice(child.file_name().as_bytes());
        walk(&child.path(), crel, &cm, out)?;
    }
    Ok(())
}

/// What happened, for the summary.
#[derive(Debug, Default)]
pub struct Report {
    /// Files found.
    pub files: u64,
    /// Directories found.
    pub dirs: u64,
    /// Files stored.
    pub stored: u64,
    /// Files already there, identical.
    pub same: u64,
    /// Entries not stored (refused by the server, or unreadable here), each
    /// with why, cleaned.
    pub refused: Vec<String>,
    /// Bytes of all files found.
    pub bytes_total: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Files stored under another name: (sent as, stored as), cleaned.
    pub renamed: Vec<(String, String)>,
    /// Entries left out on purpose (symlinks, devices).
    pub warnings: Vec<String>,
}

/// An entry sent whose final answer has not come yet.
struct Pending {
    rel: Vec<u8>,
    dir: bool,
}

/// The sending side, on a blocking thread: file reads, hashing and socket
/// writes are one straight loop.
struct Sender<W: Write, P> {
    out: W,
    wbuf: BytesMut,
    replies: mpsc::Receiver<Result<Frame, String>>,
    pending: VecDeque<Pending>,
    options: Options,
    report: Report,
    progress: P,
    buf: Vec<u8>,
}

const WRITE_BATCH: usize = 256 * 1024;
const PIECE: usize = 1 << 20;

impl<W: Write, P: Progress> Sender<W, P> {
    fn note(&mut self, line: &str) {
        self.progress.event(Event::Note(line));
    }

    fn frame(&mut self, f: &Frame) -> Result<(), ClientError> {
        f.encode(&mut self.wbuf);
        if self.wbuf.len() >= WRITE_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ClientError> {
        if !self.wbuf.is_empty() {
            self.out.write_all(&self.wbuf).map_err(lost)?;
            self.wbuf.clear();
        }
        self.out.flush().map_err(lost)
    }

    fn next_reply(&mut self) -> Result<Frame, ClientError> {
        match self.replies.blocking_recv() {
            Some(Ok(Frame::Error(why))) => Err(ClientError::Ended(clean(&why).into_owned())),
            Some(Ok(f)) => Ok(f),
            Some(Err(e)) => Err(ClientError::Lost(Some(e))),
            None => Err(ClientError::Lost(None)),
        }
    }

    /// Takes a final answer for the oldest pending entry.
    fn settle(&mut self, f: Frame) -> Result<(), ClientError> {
        let p = self.pending.pop_front().ok_or_else(|| ClientError::Protocol("an answer nobody asked for".into()))?;
        match f {
            Frame::Stored(_) if p.dir => {}
            Frame::Stored(name) => {
                self.report.stored += 1;
                if name != p.rel {
                    let (a, b) = (clean_bytes(&p.rel), clean_bytes(&name));
                    self.note(&format!("{a} stored as {b}"));
                    self.report.renamed.push((a, b));
                }
            }
            Frame::Same => self.report.same += 1,
            Frame::Refused(_, why) => self.refused(&why),
            other => return Err(ClientError::Protocol(format!("unexpected {other:?}"))),
        }
        Ok(())
    }

    /// Waits until every pending entry is answered, and returns the next frame.
    fn answer(&mut self) -> Result<Frame, ClientError> {
        self.flush()?;
        loop {
            let f = self.next_reply()?;
            if self.pending.is_empty() {
                return Ok(f);
            }
            self.settle(f)?;
        }
    }

    fn send_all(&mut self, found: std::sync::mpsc::Receiver<Vec<Found>>) -> Result<(), ClientError> {
        for f in found.into_iter().flatten() {
            let entry = match f {
                Found::Entry(e) => e,
                Found::Skipped(w) => {
                    self.note(&format!("warning: {w}"));
                    self.report.warnings.push(w);
                    continue;
                }
                Found::Unreadable(why) => {
                    self.refuse_locally(why);
                    continue;
                }
            };
            match entry {
                Entry::Dir { rel, meta } => {
                    self.report.dirs += 1;
                    self.frame(&Frame::Dir { meta, path: rel.clone() })?;
                    self.pending.push_back(Pending { rel, dir: true });
                }
                Entry::File { rel, meta, size, src } => {
                    self.report.files += 1;
                    self.report.bytes_total += size;
                    self.progress.event(Event::Queued { name: &rel, size });
                    if size <= SMALL && self.small(&rel, meta, &src, size)? {
                        continue;
                    }
                    self.big(rel, meta, &src)?;
                }
            }
        }
        self.frame(&Frame::End)?;
        match self.answer()? {
            Frame::Bye => self.out.flush().map_err(lost),
            f => Err(ClientError::Protocol(format!("expected Bye, got {f:?}"))),
        }
    }

    /// Sends a small file without waiting; false if it grew past small.
    fn small(&mut self, rel: &[u8], meta: Meta, src: &Path, size: u64) -> Result<bool, ClientError> {
        let data = match File::open(src).and_then(|f| read_small(f, size)) {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(false),
            Err(e) => {
                self.refuse_locally(format!("{}: {e}", src.display()));
                return Ok(true);
            }
        };
        let hash = *blake3::hash(&data).as_bytes();
        let flags = if self.options.rename { FLAG_RENAME } else { 0 };
        self.frame(&Frame::File { size: data.len() as u64, meta, flags, path: rel.to_vec() })?;
        self.wbuf.extend_from_slice(&data);
        self.frame(&Frame::Done(hash))?;
        self.pending.push_back(Pending { rel: rel.to_vec(), dir: false });
        self.progress.event(Event::Advanced(data.len() as u64));
        self.report.bytes_sent += data.len() as u64;
        Ok(true)
    }

    /// The server refused an entry: its words, made safe to print.
    fn refused(&mut self, why: &str) {
        let why = clean(why).into_owned();
        self.note(&format!("not stored: {why}"));
        self.report.refused.push(why);
    }

    fn refuse_locally(&mut self, why: String) {
        self.note(&format!("not sent: {why}"));
        self.report.refused.push(why);
    }

    /// Sends a big file, resuming where the server has it; retries once
    /// from the start when the server's partial data did not match.
    fn big(&mut self, rel: Vec<u8>, meta: Meta, src: &Path) -> Result<(), ClientError> {
        let mut file = match File::open(src) {
            Ok(f) => f,
            Err(e) => {
                self.refuse_locally(format!("{}: {e}", src.display()));
                return Ok(());
            }
        };
        let size = file.metadata()?.len();
        let flags = if self.options.rename { FLAG_RENAME } else { 0 };
        for attempt in 0..2 {
            self.frame(&Frame::File { size, meta, flags, path: rel.clone() })?;
            let mut answer = self.answer()?;
            let offset = loop {
                match answer {
                    Frame::Send(offset) if offset <= size => break offset,
                    Frame::Exists(theirs) => {
                        self.progress.event(Event::Comparing);
                        let ours = *hash_prefix(&mut file, size)?.finalize().as_bytes();
                        if ours == theirs {
                            self.frame(&Frame::Skip)?;
                            self.report.same += 1;
                            self.progress.event(Event::Advanced(size));
                            return Ok(());
                        }
                        self.frame(&Frame::Proceed)?;
                        answer = self.answer()?;
                    }
                    Frame::Refused(_, why) => {
                        self.refused(&why);
                        return Ok(());
                    }
                    other => return Err(ClientError::Protocol(format!("unexpected {other:?}"))),
                }
            };
            let hash = self.stream(&mut file, &rel, size, offset)?;
            self.frame(&Frame::Done(hash))?;
            self.pending.push_back(Pending { rel: rel.clone(), dir: false });
            self.flush()?;
            let f = self.next_reply()?;
            let mismatch = matches!(&f, Frame::Refused(Reason::Mismatch, _));
            if mismatch && offset > 0 && attempt == 0 {
                self.pending.pop_back();
                self.note("the server's partial data did not match; sending again whole");
                self.progress.event(Event::Rewound(size));
                continue;
            }
            return self.settle(f);
        }
        Ok(())
    }

    /// Sends the bytes from `offset`; returns the BLAKE3 of the whole file.
    fn stream(&mut self, file: &mut File, rel: &[u8], size: u64, offset: u64) -> Result<Hash, ClientError> {
        self.flush()?;
        self.progress.event(Event::FileStarted { name: rel, size, offset });
        let mut hasher = hash_prefix(file, offset)?;
        if offset > 0 {
            self.progress.event(Event::Advanced(offset));
        }
        let mut left = size - offset;
        let began = Instant::now();
        let piece = self.options.limit_rate.map_or(PIECE, |r| (r as usize / 10).clamp(1, PIECE));
        while left > 0 {
            if let Some(rate) = self.options.limit_rate {
                let due = Duration::from_secs_f64((size - offset - left) as f64 / rate.max(1) as f64);
                std::thread::sleep(due.saturating_sub(began.elapsed()));
            }
            let want = left.min(piece as u64) as usize;
            self.buf.resize(want, 0);
            let n = file.read(&mut self.buf[..want])?;
            if n == 0 {
                return Err(ClientError::Shrank(String::from_utf8_lossy(rel).into_owned()));
            }
            hasher.update(&self.buf[..n]);
            self.out.write_all(&self.buf[..n]).map_err(lost)?;
            left -= n as u64;
            self.progress.event(Event::FileAdvanced(n as u64));
            self.report.bytes_sent += n as u64;
            // An error from the server (a full disk) stops the stream.
            if let Ok(f) = self.replies.try_recv() {
                match f {
                    Ok(Frame::Error(why)) => return Err(ClientError::Ended(clean(&why).into_owned())),
                    Ok(f) => return Err(ClientError::Protocol(format!("unexpected {f:?} during file data"))),
                    Err(e) => return Err(ClientError::Lost(Some(e))),
                }
            }
        }
        self.progress.event(Event::FileFinished);
        Ok(*hasher.finalize().as_bytes())
    }
}

fn lost(e: io::Error) -> ClientError {
    ClientError::Lost(Some(e.to_string()))
}

/// A small file's bytes, read with as few calls as the kernel allows: a
/// read that stops short at the size the walk saw is the end (a regular
/// file's read is short only there). `None` when it grew past small.
fn read_small(mut f: File, size: u64) -> io::Result<Option<Vec<u8>>> {
    let mut data = vec![0u8; size as usize + 1];
    let mut got = 0;
    loop {
        let want = data.len() - got;
        let n = match f.read(&mut data[got..]) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => r?,
        };
        got += n;
        if n == 0 || (n < want && got as u64 == size) {
            data.truncate(got);
            return Ok(Some(data));
        }
        if got == data.len() {
            if got as u64 > SMALL {
                return Ok(None);
            }
            data.resize((got * 2).min(SMALL as usize + 1), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_reads_take_what_is_there_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let read = |size| read_small(File::open(&path).unwrap(), size).unwrap();
        assert_eq!(read(10).as_deref(), Some(&b"0123456789"[..]), "as the walk saw it");
        assert_eq!(read(4).as_deref(), Some(&b"0123456789"[..]), "grown since");
        assert_eq!(read(20).as_deref(), Some(&b"0123456789"[..]), "shrunk since");
        std::fs::write(&path, vec![7u8; SMALL as usize + 10]).unwrap();
        assert_eq!(read(4), None, "grown past small: sent as a big file");
        assert_eq!(read(0), None);
        std::fs::write(&path, b"").unwrap();
        assert_eq!(read(0).as_deref(), Some(&b""[..]));
    }
}
