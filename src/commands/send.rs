//! `sockit send PATH… --to ENDPOINT`: the file transfer client.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::BytesMut;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use super::tls_args::TlsClientArgs;
use crate::auth;
use crate::endpoint::Endpoint;
use crate::error::ExitCode;
use crate::frames::FrameReader;
use crate::services::files::HANDSHAKE;
use crate::services::files::hash_prefix;
use crate::services::files::wire::{FLAG_RENAME, Frame, Hash, MAX_PATH, Meta, Reason, SMALL};
use crate::text::{clean, clean_bytes};
use crate::units::{parse_duration, size_in};

/// What `--limit-rate` may be, in bytes per second.
const LIMIT_RATE_RANGE: std::ops::RangeInclusive<u64> = 1..=1 << 40;

/// Arguments of `sockit send`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Sends files and directory trees (recursively: relative paths, permissions
and modification times kept) to `sockit serve files`, which checks each
file's BLAKE3 end to end and stores it under its name only when it is
whole. Run the same command again after an interruption: big files resume
where they stopped, and files already there and identical are skipped.
Symlinks and device files inside directories are skipped, with a warning.

Examples:
  sockit send report.pdf photos/ --to 127.0.0.1:7080
  sockit send big.iso --to tls://host:7080 --tls-fingerprint AB:CD:… --token-file token
  sockit send notes.txt --to 127.0.0.1:7080 --rename      keep both if the name is taken
  sockit send dir/ --to 127.0.0.1:7080 --json              one JSON summary on stdout

Exit codes: 0 everything stored (or already there), 1 something was not,
2 bad usage, 3 could not connect, 5 TLS failed, 6 authentication refused.")]
pub struct SendArgs {
    /// Files and directories to send.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// The files server.
    #[arg(long, value_name = "ENDPOINT", default_value = "127.0.0.1:7080")]
    pub to: Endpoint,

    /// Read the token from this file (else SOCKIT_TOKEN), if the server
    /// asks for one.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// If a different file of the same name is on the server, store this
    /// one as `name (1).ext` instead of failing.
    #[arg(long)]
    pub rename: bool,

    /// Give up connecting, or waiting for the server's greeting, after this long.
    #[arg(short = 'w', long = "wait", value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub wait: Duration,

    /// Send at most this many bytes per second (e.g. 20MiB), to leave
    /// bandwidth for others.
    #[arg(long, value_name = "BYTES", value_parser = size_in(LIMIT_RATE_RANGE))]
    pub limit_rate: Option<u64>,

    /// Print one JSON object with the summary on stdout instead of prose.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub tls: TlsClientArgs,
}

/// One thing to send.
#[derive(Debug)]
enum Entry {
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
enum Found {
    Entry(Entry),
    /// Left out on purpose (a symlink, a device): a warning.
    Skipped(String),
    /// Could not be read: counts as not sent.
    Unreadable(String),
}

/// The paths as given, each with the name it is sent under and its
/// metadata: checked before connecting, so a typo fails at once.
fn roots(paths: &[PathBuf]) -> anyhow::Result<Vec<(PathBuf, Vec<u8>, std::fs::Metadata)>> {
    paths
        .iter()
        .map(|path| {
            let m = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
            let name = match path.file_name() {
                Some(n) => n.to_owned(),
                None => std::fs::canonicalize(path)?
                    .file_name()
                    .map(|n| n.to_owned())
                    .with_context(|| format!("{}: cannot send the root directory by that name", path.display()))?,
            };
            Ok((path.clone(), name.as_bytes().to_vec(), m))
        })
        .collect()
}

/// Walks the trees on a thread of its own, handing over what it finds in
/// batches as it goes: sending starts with the first files, not after the
/// last stat.
fn spawn_walk(roots: Vec<(PathBuf, Vec<u8>, std::fs::Metadata)>) -> std::sync::mpsc::Receiver<Vec<Found>> {
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
struct Report {
    files: u64,
    dirs: u64,
    stored: u64,
    same: u64,
    refused: Vec<String>,
    bytes_total: u64,
    bytes_sent: u64,
    renamed: Vec<(String, String)>,
    warnings: Vec<String>,
}

/// An entry sent whose final answer has not come yet.
struct Pending {
    rel: Vec<u8>,
    dir: bool,
}

/// The sending side, on a blocking thread: file reads, hashing and socket
/// writes are one straight loop.
struct Sender<W: Write> {
    out: W,
    wbuf: BytesMut,
    replies: mpsc::Receiver<Result<Frame, String>>,
    pending: VecDeque<Pending>,
    rename: bool,
    limit_rate: Option<u64>,
    report: Report,
    overall: ProgressBar,
    bars: MultiProgress,
    buf: Vec<u8>,
}

const WRITE_BATCH: usize = 256 * 1024;
const PIECE: usize = 1 << 20;

impl<W: Write> Sender<W> {
    fn frame(&mut self, f: &Frame) -> anyhow::Result<()> {
        f.encode(&mut self.wbuf);
        if self.wbuf.len() >= WRITE_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if !self.wbuf.is_empty() {
            self.out.write_all(&self.wbuf).map_err(lost)?;
            self.wbuf.clear();
        }
        self.out.flush().map_err(lost)
    }

    fn next_reply(&mut self) -> anyhow::Result<Frame> {
        match self.replies.blocking_recv() {
            Some(Ok(Frame::Error(why))) => bail!("the server ended the session: {}", clean(&why)),
            Some(Ok(f)) => Ok(f),
            Some(Err(e)) => bail!("connection lost: {e}; run the same command again to resume"),
            None => bail!("connection lost; run the same command again to resume"),
        }
    }

    /// Takes a final answer for the oldest pending entry.
    fn settle(&mut self, f: Frame) -> anyhow::Result<()> {
        let p = self.pending.pop_front().context("protocol error: an answer nobody asked for")?;
        match f {
            Frame::Stored(_) if p.dir => {}
            Frame::Stored(name) => {
                self.report.stored += 1;
                if name != p.rel {
                    let (a, b) = (clean_bytes(&p.rel), clean_bytes(&name));
                    self.bars.suspend(|| eprintln!("sockit: {a} stored as {b}"));
                    self.report.renamed.push((a, b));
                }
            }
            Frame::Same => self.report.same += 1,
            Frame::Refused(_, why) => self.refused(&why),
            other => bail!("protocol error: unexpected {other:?}"),
        }
        Ok(())
    }

    /// Waits until every pending entry is answered, and returns the next frame.
    fn answer(&mut self) -> anyhow::Result<Frame> {
        self.flush()?;
        loop {
            let f = self.next_reply()?;
            if self.pending.is_empty() {
                return Ok(f);
            }
            self.settle(f)?;
        }
    }

    fn send_all(&mut self, found: std::sync::mpsc::Receiver<Vec<Found>>) -> anyhow::Result<()> {
        for f in found.into_iter().flatten() {
            let entry = match f {
                Found::Entry(e) => e,
                Found::Skipped(w) => {
                    self.bars.suspend(|| eprintln!("sockit: warning: {w}"));
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
                    self.overall.inc_length(size);
                    self.overall.set_message(String::from_utf8_lossy(&rel).into_owned());
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
            f => bail!("protocol error: expected Bye, got {f:?}"),
        }
    }

    /// Sends a small file without waiting; false if it grew past small.
    fn small(&mut self, rel: &[u8], meta: Meta, src: &Path, size: u64) -> anyhow::Result<bool> {
        let data = match File::open(src).and_then(|f| read_small(f, size)) {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(false),
            Err(e) => {
                self.refuse_locally(format!("{}: {e}", src.display()));
                return Ok(true);
            }
        };
        let hash = *blake3::hash(&data).as_bytes();
        let flags = if self.rename { FLAG_RENAME } else { 0 };
        self.frame(&Frame::File { size: data.len() as u64, meta, flags, path: rel.to_vec() })?;
        self.wbuf.extend_from_slice(&data);
        self.frame(&Frame::Done(hash))?;
        self.pending.push_back(Pending { rel: rel.to_vec(), dir: false });
        self.overall.inc(data.len() as u64);
        self.report.bytes_sent += data.len() as u64;
        Ok(true)
    }

    /// The server refused an entry: its words, made safe to print.
    fn refused(&mut self, why: &str) {
        let why = clean(why).into_owned();
        self.bars.suspend(|| eprintln!("sockit: not stored: {why}"));
        self.report.refused.push(why);
    }

    fn refuse_locally(&mut self, why: String) {
        self.bars.suspend(|| eprintln!("sockit: not sent: {why}"));
        self.report.refused.push(why);
    }

    /// Sends a big file, resuming where the server has it; retries once
    /// from the start when the server's partial data did not match.
    fn big(&mut self, rel: Vec<u8>, meta: Meta, src: &Path) -> anyhow::Result<()> {
        let mut file = match File::open(src) {
            Ok(f) => f,
            Err(e) => {
                self.refuse_locally(format!("{}: {e}", src.display()));
                return Ok(());
            }
        };
        let size = file.metadata()?.len();
        let flags = if self.rename { FLAG_RENAME } else { 0 };
        for attempt in 0..2 {
            self.frame(&Frame::File { size, meta, flags, path: rel.clone() })?;
            let mut answer = self.answer()?;
            let offset = loop {
                match answer {
                    Frame::Send(offset) if offset <= size => break offset,
                    Frame::Exists(theirs) => {
                        let ours = hash_file(&mut file, size, &self.overall)?;
                        if ours == theirs {
                            self.frame(&Frame::Skip)?;
                            self.report.same += 1;
                            self.overall.inc(size);
                            return Ok(());
                        }
                        self.frame(&Frame::Proceed)?;
                        answer = self.answer()?;
                    }
                    Frame::Refused(_, why) => {
                        self.refused(&why);
                        return Ok(());
                    }
                    other => bail!("protocol error: unexpected {other:?}"),
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
                self.bars.suspend(|| eprintln!("sockit: the server's partial data did not match; sending again whole"));
                self.overall.set_position(self.overall.position().saturating_sub(size));
                continue;
            }
            return self.settle(f);
        }
        Ok(())
    }

    /// Sends the bytes from `offset`; returns the BLAKE3 of the whole file.
    fn stream(&mut self, file: &mut File, rel: &[u8], size: u64, offset: u64) -> anyhow::Result<Hash> {
        self.flush()?;
        let bar = self.bars.insert_before(&self.overall, ProgressBar::new(size));
        bar.set_style(style("  {msg:30!} [{bar:25}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"));
        bar.set_message(String::from_utf8_lossy(rel).into_owned());
        let mut hasher = hash_prefix(file, offset)?;
        if offset > 0 {
            bar.set_position(offset);
            self.overall.inc(offset);
            bar.reset_eta();
        }
        let mut left = size - offset;
        let began = Instant::now();
        let piece = self.limit_rate.map_or(PIECE, |r| (r as usize / 10).clamp(1, PIECE));
        while left > 0 {
            if let Some(rate) = self.limit_rate {
                let due = Duration::from_secs_f64((size - offset - left) as f64 / rate.max(1) as f64);
                std::thread::sleep(due.saturating_sub(began.elapsed()));
            }
            let want = left.min(piece as u64) as usize;
            self.buf.resize(want, 0);
            let n = file.read(&mut self.buf[..want])?;
            if n == 0 {
                bail!(
                    "{}: the file shrank while it was being sent; the server keeps what it got: send again to finish",
                    String::from_utf8_lossy(rel)
                );
            }
            hasher.update(&self.buf[..n]);
            self.out.write_all(&self.buf[..n]).map_err(lost)?;
            left -= n as u64;
            bar.inc(n as u64);
            self.overall.inc(n as u64);
            self.report.bytes_sent += n as u64;
            // An error from the server (a full disk) stops the stream.
            if let Ok(f) = self.replies.try_recv() {
                match f {
                    Ok(Frame::Error(why)) => bail!("the server ended the session: {}", clean(&why)),
                    Ok(f) => bail!("protocol error: unexpected {f:?} during file data"),
                    Err(e) => bail!("connection lost: {e}; run the same command again to resume"),
                }
            }
        }
        bar.finish_and_clear();
        Ok(*hasher.finalize().as_bytes())
    }
}

fn hash_file(file: &mut File, size: u64, bar: &ProgressBar) -> anyhow::Result<Hash> {
    bar.set_message("comparing with the copy on the server");
    Ok(*hash_prefix(file, size)?.finalize().as_bytes())
}

fn lost(e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("connection lost: {e}; run the same command again to resume")
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("valid template").progress_chars("=> ")
}

/// Runs `sockit send`.
pub async fn run(args: SendArgs) -> anyhow::Result<i32> {
    // The walk goes on while connecting and while the first files are sent.
    let found = spawn_walk(roots(&args.paths)?);
    let tls = args.tls.client(&args.to)?;
    let mut stream = args.to.connect_with(Some(args.wait), tls.as_ref()).await?;
    let token_file = args.token_file.as_deref();
    // Into the library's error, whose exit code main finds (6 for a refusal).
    let rest =
        auth::login(&mut stream, &HANDSHAKE, &args.to, token_file, args.wait).await.map_err(crate::Error::from)?.rest;
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
    let target =
        if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bars = MultiProgress::with_draw_target(target);
    let overall = bars.add(ProgressBar::new(0));
    overall.set_style(style("{msg:32!} [{bar:25}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"));
    let out = SyncIoBridge::new(wr);
    let rename = args.rename;
    let started = Instant::now();
    let interrupted = super::shutdown_signal();
    let sending = tokio::task::spawn_blocking(move || {
        let mut s = Sender {
            out,
            wbuf: BytesMut::with_capacity(WRITE_BATCH * 2),
            replies,
            pending: VecDeque::new(),
            rename,
            limit_rate: args.limit_rate,
            report: Report::default(),
            overall,
            bars,
            buf: Vec::with_capacity(PIECE),
        };
        let r = s.send_all(found);
        s.overall.finish_and_clear();
        let _ = s.out.shutdown();
        (r, s.report)
    });
    let (result, report) = tokio::select! {
        done = sending => done?,
        _ = interrupted => {
            eprintln!("\nsockit: interrupted; run the same command again to resume (big files go on where they stopped)");
            return Ok(ExitCode::Interrupted.code());
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let rate = report.bytes_sent as f64 / secs.max(1e-9);
    if args.json {
        let v = serde_json::json!({
            "ok": result.is_ok() && report.refused.is_empty(),
            "files": report.files,
            "dirs": report.dirs,
            "stored": report.stored,
            "same": report.same,
            "refused": report.refused.len(),
            "errors": report.refused.iter().cloned().chain(result.as_ref().err().map(|e| format!("{e:#}"))).collect::<Vec<_>>(),
            "renamed": report.renamed.iter().map(|(a, b)| serde_json::json!({"from": a, "to": b})).collect::<Vec<_>>(),
            "bytes_total": report.bytes_total,
            "bytes_sent": report.bytes_sent,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "bytes_per_sec": rate.round(),
            "warnings": report.warnings,
        });
        super::print_stdout(format!("{v}\n").as_bytes())?;
    }
    result?;
    if !args.json {
        let mut what = format!("{} stored", report.stored);
        if report.same > 0 {
            what += &format!(", {} already there (identical)", report.same);
        }
        if !report.refused.is_empty() {
            what += &format!(", {} not stored", report.refused.len());
        }
        eprintln!(
            "sent {} file{} ({what}){}: {} in {:.2} s ({}/s)",
            report.files,
            if report.files == 1 { "" } else { "s" },
            if report.dirs > 0 {
                format!(" in {} director{}", report.dirs, if report.dirs == 1 { "y" } else { "ies" })
            } else {
                String::new()
            },
            HumanBytes(report.bytes_sent),
            secs,
            HumanBytes(rate as u64)
        );
    }
    Ok(if report.refused.is_empty() { ExitCode::Ok } else { ExitCode::Failure }.code())
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
