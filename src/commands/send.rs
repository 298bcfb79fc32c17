//! `sockit send PATH… --to ENDPOINT`: the file transfer client.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{IsTerminal, Read, Write};
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
use crate::frames::{FrameReader, FrameStream};
use crate::services::files::hash_prefix;
use crate::services::files::wire::{FLAG_RENAME, Frame, Hash, MAX_PATH, Meta, SMALL};
use crate::units::parse_duration;

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
    #[arg(long, value_name = "BYTES", value_parser = crate::units::parse_size)]
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

/// Everything the paths name, parents before children; warnings for what
/// is skipped.
fn collect(paths: &[PathBuf]) -> anyhow::Result<(Vec<Entry>, Vec<String>)> {
    let (mut entries, mut warnings) = (Vec::new(), Vec::new());
    for path in paths {
        let m = std::fs::metadata(path).with_context(|| format!("{}", path.display()))?;
        let name = match path.file_name() {
            Some(n) => n.to_owned(),
            None => std::fs::canonicalize(path)?
                .file_name()
                .map(|n| n.to_owned())
                .with_context(|| format!("{}: cannot send the root directory by that name", path.display()))?,
        };
        walk(path, name.as_bytes().to_vec(), &m, &mut entries, &mut warnings)?;
    }
    Ok((entries, warnings))
}

fn walk(
    path: &Path,
    rel: Vec<u8>,
    m: &std::fs::Metadata,
    entries: &mut Vec<Entry>,
    warnings: &mut Vec<String>,
) -> anyhow::Result<()> {
    if rel.len() > MAX_PATH {
        warnings.push(format!("{}: path too long; skipped", path.display()));
        return Ok(());
    }
    let ft = m.file_type();
    if ft.is_file() {
        entries.push(Entry::File { rel, meta: meta_of(m), size: m.len(), src: path.to_owned() });
    } else if ft.is_dir() {
        entries.push(Entry::Dir { rel: rel.clone(), meta: meta_of(m) });
        let mut children: Vec<_> = std::fs::read_dir(path)
            .with_context(|| format!("{}", path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}", path.display()))?;
        children.sort_by_key(|c| c.file_name());
        for child in children {
            let cm = child.metadata().with_context(|| format!("{}", child.path().display()))?;
            let mut crel = rel.clone();
            crel.push(b'/');
            crel.extend_from_slice(child.file_name().as_bytes());
            if cm.file_type().is_symlink() {
                warnings.push(format!("{}: symlink; skipped", child.path().display()));
                continue;
            }
            walk(&child.path(), crel, &cm, entries, warnings)?;
        }
    } else {
        warnings.push(format!("{}: not a regular file or directory; skipped", path.display()));
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
            Some(Ok(Frame::Error(why))) => bail!("the server ended the session: {why}"),
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
                    let (a, b) =
                        (String::from_utf8_lossy(&p.rel).into_owned(), String::from_utf8_lossy(&name).into_owned());
                    self.bars.suspend(|| eprintln!("sockit: {a} stored as {b}"));
                    self.report.renamed.push((a, b));
                }
            }
            Frame::Same => self.report.same += 1,
            Frame::Refused(why) => {
                self.bars.suspend(|| eprintln!("sockit: not stored: {why}"));
                self.report.refused.push(why);
            }
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

    fn send_all(&mut self, entries: Vec<Entry>) -> anyhow::Result<()> {
        for entry in entries {
            match entry {
                Entry::Dir { rel, meta } => {
                    self.report.dirs += 1;
                    self.frame(&Frame::Dir { meta, path: rel.clone() })?;
                    self.pending.push_back(Pending { rel, dir: true });
                }
                Entry::File { rel, meta, size, src } => {
                    self.report.files += 1;
                    self.overall.set_message(String::from_utf8_lossy(&rel).into_owned());
                    if size <= SMALL && self.small(&rel, meta, &src)? {
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
    fn small(&mut self, rel: &[u8], meta: Meta, src: &Path) -> anyhow::Result<bool> {
        let data = match std::fs::read(src) {
            Ok(d) => d,
            Err(e) => {
                self.refuse_locally(format!("{}: {e}", src.display()));
                return Ok(true);
            }
        };
        if data.len() as u64 > SMALL {
            return Ok(false);
        }
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
                    Frame::Refused(why) => {
                        self.bars.suspend(|| eprintln!("sockit: not stored: {why}"));
                        self.report.refused.push(why);
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
            let mismatch = matches!(&f, Frame::Refused(why) if why.contains("BLAKE3 mismatch"));
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
                    Ok(Frame::Error(why)) => bail!("the server ended the session: {why}"),
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
    let (entries, warnings) = collect(&args.paths)?;
    for w in &warnings {
        eprintln!("sockit: warning: {w}");
    }
    let tls = args.tls.client(&args.to)?;
    let stream = args.to.connect_with(Some(args.wait), tls.as_ref()).await?;
    let mut frames = FrameStream::<_, Frame>::new(stream);
    auth::login(&mut frames, &args.to, args.token_file.as_deref(), args.wait).await?;
    let (stream, rest) = frames.into_parts();
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
    let total: u64 = entries.iter().map(|e| if let Entry::File { size, .. } = e { *size } else { 0 }).sum();
    let target =
        if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bars = MultiProgress::with_draw_target(target);
    let overall = bars.add(ProgressBar::new(total));
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
            report: Report { bytes_total: total, ..Report::default() },
            overall,
            bars,
            buf: Vec::with_capacity(PIECE),
        };
        let r = s.send_all(entries);
        s.overall.finish_and_clear();
        let _ = s.out.shutdown();
        (r, s.report)
    });
    let (result, report) = tokio::select! {
        done = sending => done?,
        _ = interrupted => {
            eprintln!("\nsockit: interrupted; run the same command again to resume (big files go on where they stopped)");
            return Ok(130);
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
            "warnings": warnings,
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
    Ok(if report.refused.is_empty() { 0 } else { 1 })
}
